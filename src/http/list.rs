//! What every list endpoint does the same way: verify the cursor, pass the freshness gate, fetch one
//! page (one row more than asked, to know whether another follows), count when asked, and answer
//! with `{data, next_cursor, total}`, a `Link: <…>; rel="next"` header and the freshness headers.
//! Rendered bodies go through the response cache, keyed by the request and the data's generation.

use std::future::Future;

use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use futures_util::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::AppState;
use super::csv_export;
use super::error::ApiError;
use super::error::InvalidParam;
use super::fields::Fields;
use super::freshness::{Gate, gate};
use super::params::{CountMode, Format, PageParams};
use super::response_cache::Rendered;
use crate::reads::ReadSource;
use crate::views::ViewName;

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` (with the same filters and sort) for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// With `count=exact`: how many rows match, over all pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// With `count=estimated`: the query planner's estimate of `total` (instant, approximate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_total: Option<i64>,
}

/// One list endpoint's query: its view, its rows, its sort key.
pub trait Listing: Send + Sync {
    type Row: Serialize + utoipa::ToSchema + Send + Sync;
    type Key: Serialize + DeserializeOwned + Send + Sync;
    /// About the JSON size of one whole row, a little over: a page is written into one buffer of
    /// about its final size rather than one grown by doubling from empty (case (a) at 1M: +2.7%
    /// req/s, bench/RESULTS.md `miss`). The response cache counts the buffer's whole capacity.
    const ROW_BYTES: usize;

    fn view(&self) -> ViewName;
    /// Endpoint, sort and filters: what a cursor is valid for.
    fn scope(&self) -> String;
    fn key_of(&self, row: &Self::Row) -> Self::Key;
    fn fetch(
        &self,
        pool: &PgPool,
        after: Option<&Self::Key>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;
    fn count_exact(&self, pool: &PgPool) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
    fn count_estimate(
        &self,
        pool: &PgPool,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
    /// The name of a CSV export's file.
    const CSV_FILE: &'static str;
    /// At most `limit` rows from the first, in order, as they arrive (for CSV exports).
    fn stream<'a>(
        &'a self,
        pool: &'a PgPool,
        limit: i64,
    ) -> BoxStream<'a, Result<Self::Row, sqlx::Error>>;
}

pub async fn list<L: Listing + 'static>(
    state: &AppState,
    db: &ReadSource,
    request_headers: &HeaderMap,
    uri: &Uri,
    listing: L,
    page: PageParams,
) -> Result<Response, ApiError> {
    if csv_export::wanted(page.format == Format::Csv, request_headers) {
        return export_csv(state, db, request_headers, listing, page).await;
    }
    let scope = listing.scope();
    let after: Option<L::Key> = match &page.cursor {
        Some(cursor) => Some(
            state
                .cursors
                .verify(&scope, cursor)
                .map_err(|e| ApiError::invalid("cursor", e.to_string()))?,
        ),
        None => None,
    };
    let exact_query = format!(
        "{scope}|limit={}|count={:?}|cursor={}|fields={}",
        page.limit,
        page.count,
        page.cursor.as_deref().unwrap_or(""),
        page.fields.key()
    );
    let fresh = match gate(state, db, listing.view(), &exact_query, request_headers).await? {
        Gate::NotModified(response) => return Ok(response),
        Gate::Serve(fresh) => fresh,
    };
    let render = async {
        let mut rows = listing.fetch(&db.pool, after.as_ref(), page.limit).await?;
        let next_cursor = if rows.len() as i64 > page.limit {
            rows.truncate(page.limit as usize);
            rows.last()
                .map(|row| state.cursors.sign(&scope, &listing.key_of(row)))
        } else {
            None
        };
        let (total, estimated_total) = match page.count {
            CountMode::None => (None, None),
            CountMode::Exact => (Some(listing.count_exact(&db.pool).await?), None),
            CountMode::Estimated => (None, Some(listing.count_estimate(&db.pool).await?)),
        };
        let link = next_cursor
            .as_deref()
            .and_then(|cursor| next_link(uri, cursor));
        let json = if page.fields.is_all() {
            let capacity = L::ROW_BYTES * (rows.len() + 1);
            to_json(
                capacity,
                &Page {
                    data: rows,
                    next_cursor,
                    total,
                    estimated_total,
                },
            )?
        } else {
            let data = page
                .fields
                .select(&rows)
                .map_err(|e| ApiError::Internal(e.into()))?;
            to_json(
                0,
                &Page {
                    data,
                    next_cursor,
                    total,
                    estimated_total,
                },
            )?
        };
        Ok(Rendered { json, link })
    };
    let response = state
        .responses
        .respond(
            listing.view(),
            fresh.generation(),
            &exact_query,
            request_headers,
            render,
        )
        .await?;
    Ok(fresh.apply(response))
}

/// Every matching row as CSV, after the freshness gate (an export has freshness headers and an
/// ETag like a page). Paging parameters mean nothing to an export and are refused.
async fn export_csv<L: Listing + 'static>(
    state: &AppState,
    db: &ReadSource,
    request_headers: &HeaderMap,
    listing: L,
    page: PageParams,
) -> Result<Response, ApiError> {
    let paging: Vec<InvalidParam> = [
        ("limit", page.limit_given),
        ("cursor", page.cursor.is_some()),
        ("count", page.count != CountMode::None),
    ]
    .into_iter()
    .filter(|(_, given)| *given)
    .map(|(name, _)| {
        InvalidParam::new(
            name,
            "a CSV export holds every matching row; leave paging out",
        )
    })
    .collect();
    if !paging.is_empty() {
        return Err(ApiError::InvalidParams(paging));
    }
    let request = format!("{}|csv|fields={}", listing.scope(), page.fields.key());
    let fresh = match gate(state, db, listing.view(), &request, request_headers).await? {
        Gate::NotModified(response) => return Ok(response),
        Gate::Serve(fresh) => fresh,
    };
    let response = csv_export::respond(state, db, listing, page.fields, L::CSV_FILE).await?;
    Ok(fresh.apply(response))
}

/// A single-row endpoint: the freshness gate, then `fetch` (only when the client's copy is not
/// current and the response is not cached); `fetch` answers 404 itself when there is no such row.
pub async fn one<T, F>(
    state: &AppState,
    db: &ReadSource,
    request_headers: &HeaderMap,
    view: ViewName,
    path: &str,
    fields: &Fields,
    fetch: impl FnOnce() -> F + Send,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: Future<Output = Result<T, ApiError>> + Send,
{
    let exact_query = format!("{path}|fields={}", fields.key());
    let fresh = match gate(state, db, view, &exact_query, request_headers).await? {
        Gate::NotModified(response) => return Ok(response),
        Gate::Serve(fresh) => fresh,
    };
    let render = async move {
        let row = fetch().await?;
        let json = if fields.is_all() {
            to_json(SINGLE_ROW_BYTES, &row)?
        } else {
            let selected = fields.select(std::slice::from_ref(&row));
            to_json(0, &selected.map_err(|e| ApiError::Internal(e.into()))?[0])?
        };
        Ok(Rendered { json, link: None })
    };
    let response = state
        .responses
        .respond(
            view,
            fresh.generation(),
            &exact_query,
            request_headers,
            render,
        )
        .await?;
    Ok(fresh.apply(response))
}

/// The buffer of a single-row response (rows are 0.4 to 1.2 KB).
const SINGLE_ROW_BYTES: usize = 1536;

fn to_json(capacity: usize, value: &impl Serialize) -> Result<Vec<u8>, ApiError> {
    let mut json = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut json, value).map_err(|error| ApiError::Internal(error.into()))?;
    Ok(json)
}

/// The same request with `cursor` replaced: `<path?query&cursor=…>; rel="next"`.
fn next_link(uri: &Uri, cursor: &str) -> Option<HeaderValue> {
    let mut query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && *pair != "cursor" && !pair.starts_with("cursor="))
        .collect();
    let cursor_pair = format!("cursor={cursor}");
    query.push(&cursor_pair);
    HeaderValue::from_str(&format!(
        "<{}?{}>; rel=\"next\"",
        uri.path(),
        query.join("&")
    ))
    .ok()
}
