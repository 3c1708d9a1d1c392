//! The freshness gate in front of every data query: it reads how fresh the serving view is, answers
//! `304 Not Modified` without running the query when the client's copy is current, refuses with 503
//! while the view was never populated, and otherwise hands out the headers the response will carry:
//!
//! - `X-Data-Age`: whole seconds since the snapshot of the view's last successful refresh;
//! - `X-Data-Refreshed-At`: that snapshot time (RFC 3339);
//! - `X-Data-Stale`: `true` once the age exceeds `STALE_AFTER`;
//! - `ETag`: changes when the view is refreshed, and differs per query;
//! - `Cache-Control: private, no-cache`: contact data stays out of shared caches, and clients
//!   revalidate (cheaply, thanks to the ETag) before reusing a copy.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::state::AppState;
use crate::reads::ReadSource;
use crate::views::ViewName;
use crate::views::freshness::Freshness;

pub const X_DATA_AGE: HeaderName = HeaderName::from_static("x-data-age");
pub const X_DATA_REFRESHED_AT: HeaderName = HeaderName::from_static("x-data-refreshed-at");
pub const X_DATA_STALE: HeaderName = HeaderName::from_static("x-data-stale");

pub enum Gate {
    /// The client's copy is current: send this 304.
    NotModified(Response),
    /// Run the query, and send its result with these headers.
    Serve(FreshHeaders),
}

pub struct FreshHeaders {
    headers: HeaderMap,
    /// The refresh log id of the data served: what the ETag and the response cache are keyed by.
    /// None when the view was populated outside the log, so that nothing could tell its change.
    generation: Option<i64>,
}

impl FreshHeaders {
    pub fn generation(&self) -> Option<i64> {
        self.generation
    }

    pub fn apply(self, mut response: Response) -> Response {
        response.headers_mut().extend(self.headers);
        response
    }
}

/// `query` identifies the request's query exactly (endpoint and every parameter), so that two
/// different queries never share an ETag.
pub async fn gate(
    state: &AppState,
    db: &ReadSource,
    view: ViewName,
    query: &str,
    request: &HeaderMap,
) -> Result<Gate, ApiError> {
    let freshness = db
        .freshness
        .read(&db.pool, view, state.refresher.generation(view))
        .await?;
    if !freshness.populated {
        return Err(ApiError::NotPopulated(view));
    }
    let (headers, etag) = headers_for(&freshness, query, state.stale_after_secs);
    if let Some(etag) = etag
        && if_none_match_matches(request, &etag)
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().extend(headers);
        // As on the 200 it revalidates: a shared cache must keep one copy per content coding.
        response.headers_mut().insert(
            header::VARY,
            HeaderValue::from_static("accept, accept-encoding"),
        );
        return Ok(Gate::NotModified(response));
    }
    Ok(Gate::Serve(FreshHeaders {
        headers,
        generation: freshness.last_refresh.as_ref().map(|last| last.log_id),
    }))
}

fn headers_for(
    freshness: &Freshness,
    query: &str,
    stale_after_secs: u64,
) -> (HeaderMap, Option<String>) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    let Some(last) = &freshness.last_refresh else {
        // Populated outside this service's refresh paths: the age is unknown, so no age and no ETag
        // (an ETag could not change when the data does).
        tracing::warn!(view = %freshness.view, "view is populated but has no successful refresh in the log");
        return (headers, None);
    };
    let age = last.age_seconds.max(0.0).floor() as u64;
    headers.insert(X_DATA_AGE, HeaderValue::from(age));
    let refreshed_at = last
        .started_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    headers.insert(
        X_DATA_REFRESHED_AT,
        HeaderValue::from_str(&refreshed_at).expect("RFC 3339 is ASCII"),
    );
    headers.insert(
        X_DATA_STALE,
        HeaderValue::from_static(if age > stale_after_secs {
            "true"
        } else {
            "false"
        }),
    );
    let etag = etag(freshness.view, last.log_id, query);
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is ASCII"),
    );
    (headers, Some(etag))
}

fn etag(view: ViewName, log_id: i64, query: &str) -> String {
    let digest = Sha256::new()
        .chain_update(view.as_str())
        .chain_update([0])
        .chain_update(log_id.to_be_bytes())
        .chain_update(query)
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// `If-None-Match` holds `*` or a list of (possibly weak) entity tags.
fn if_none_match_matches(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|value| {
            value
                .split(',')
                .map(str::trim)
                .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let tag = "\"abc\"";
        assert!(if_none_match_matches(&request_with("\"abc\""), tag));
        assert!(if_none_match_matches(
            &request_with("\"x\", W/\"abc\""),
            tag
        ));
        assert!(if_none_match_matches(&request_with("*"), tag));
        assert!(!if_none_match_matches(&request_with("\"abcd\""), tag));
        assert!(!if_none_match_matches(&HeaderMap::new(), tag));
    }

    #[test]
    fn etags_differ_per_query_and_per_refresh() {
        let a = etag(ViewName::CompanyProspectView, 1, "/prospects?industry=A");
        assert_ne!(
            a,
            etag(ViewName::CompanyProspectView, 1, "/prospects?industry=B")
        );
        assert_ne!(
            a,
            etag(ViewName::CompanyProspectView, 2, "/prospects?industry=A")
        );
        assert_ne!(
            a,
            etag(ViewName::CompanySummaryView, 1, "/prospects?industry=A")
        );
        assert_eq!(
            a,
            etag(ViewName::CompanyProspectView, 1, "/prospects?industry=A")
        );
    }
}
