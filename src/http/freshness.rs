//! The freshness gate in front of every data query: it reads how fresh the serving view is, refuses
//! with 503 while the view was never populated, and otherwise hands out the headers the response
//! will carry (a JSON response's ETag and its 304 come from the response cache, which knows the
//! body):
//!
//! - `X-Data-Age`: whole seconds since the snapshot of the view's last successful refresh;
//! - `X-Data-Refreshed-At`: that snapshot time (RFC 3339);
//! - `X-Data-Stale`: `true` once the age exceeds `STALE_AFTER`;
//! - `ETag`: derived from the body by the response cache (so it changes when the body does, not at
//!   every refresh); for a CSV export, which is streamed, from the generation and the query;
//! - `Cache-Control: private, no-cache`: contact data stays out of shared caches, and clients
//!   revalidate (cheaply, thanks to the ETag) before reusing a copy.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::own_writes::OwnWrites;
use super::read_model::request::Read;
use super::response_cache::if_none_match_matches;
use crate::views::ViewName;
use crate::views::freshness::{self, Freshness};

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

/// The freshness of `view` for a response whose body the response cache makes (and tags with an
/// ETag derived from it): the headers, and the generation of the data. A 503 while the view was
/// never populated. A request asking to see its own writes waits for data covering its arrival
/// first (`own_writes`), and reads the freshness afresh.
pub async fn gate(read: &Read, view: ViewName) -> Result<FreshHeaders, ApiError> {
    let (state, db) = (&read.state, &read.db);
    let freshness = match &read.own_writes {
        Some(own_writes) => {
            own_writes.wait_for(state, &db.pool, view).await?;
            freshness::read(&db.pool, view).await?
        }
        None => {
            let prepare = |generation| state.responses.prepare(&db.pool, view, generation);
            db.freshness
                .read(&db.pool, view, state.refresher.generation(view), prepare)
                .await?
        }
    };
    if !freshness.populated {
        return Err(ApiError::NotPopulated(view));
    }
    let mut headers = headers_for(&freshness, state.stale_after_secs);
    if read.own_writes.is_some() {
        let (name, value) = OwnWrites::applied();
        headers.insert(name, value);
    }
    Ok(FreshHeaders {
        headers,
        generation: freshness.last_refresh.as_ref().map(|last| last.log_id),
    })
}

/// As `gate`, for a response streamed as it is read (a CSV export), whose body cannot be hashed
/// before it is sent: its ETag is the generation's and the query's (`query` identifies the
/// request exactly), and a request naming it is answered `304 Not Modified` without the query.
pub async fn gate_tagged(read: &Read, view: ViewName, query: &str) -> Result<Gate, ApiError> {
    let mut fresh = gate(read, view).await?;
    let Some(log_id) = fresh.generation else {
        return Ok(Gate::Serve(fresh));
    };
    let etag = etag(view, log_id, query);
    if if_none_match_matches(&read.headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().extend(fresh.headers);
        response.headers_mut().insert(header::ETAG, etag);
        // As on the 200 it revalidates: a shared cache must keep one copy per content coding.
        response.headers_mut().insert(
            header::VARY,
            HeaderValue::from_static("accept, accept-encoding"),
        );
        return Ok(Gate::NotModified(response));
    }
    fresh.headers.insert(header::ETAG, etag);
    Ok(Gate::Serve(fresh))
}

fn headers_for(freshness: &Freshness, stale_after_secs: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    let Some(last) = &freshness.last_refresh else {
        // Populated outside this service's refresh paths: the age is unknown, so no age and no ETag
        // (an ETag could not change when the data does).
        tracing::warn!(view = %freshness.view, "view is populated but has no successful refresh in the log");
        return headers;
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
    headers
}

fn etag(view: ViewName, log_id: i64, query: &str) -> HeaderValue {
    let digest = Sha256::new()
        .chain_update(view.as_str())
        .chain_update([0])
        .chain_update(log_id.to_be_bytes())
        .chain_update(query)
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_etags_differ_per_query_and_per_refresh() {
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
