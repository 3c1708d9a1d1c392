//! How every data response is made: the freshness gate (a 304 without any query when the client's
//! copy is current, a 503 while the view was never populated), then the response cache, which
//! renders the body only when it holds no copy for the view's current generation, then the
//! freshness headers.

use std::future::Future;

use axum::response::Response;
use serde::Serialize;

use super::super::error::ApiError;
use super::super::fields::Fields;
use super::super::freshness::{Gate, gate};
use super::super::response_cache::Rendered;
use super::request::Read;
use crate::views::ViewName;

/// Answers the request that `key` names exactly (endpoint and every parsed parameter) with what
/// `render` makes of `view`'s data.
pub async fn respond<F>(
    read: &Read,
    view: ViewName,
    key: &str,
    render: F,
) -> Result<Response, ApiError>
where
    F: Future<Output = Result<Rendered, ApiError>> + Send,
{
    let key = read.response_key(key);
    let fresh = match gate(&read.state, &read.db, view, &key, &read.headers).await? {
        Gate::NotModified(response) => return Ok(response),
        Gate::Serve(fresh) => fresh,
    };
    let response = read
        .state
        .responses
        .respond(view, fresh.generation(), &key, &read.headers, render)
        .await?;
    Ok(fresh.apply(response))
}

/// One JSON body (a row, the facets) that `fetch` finds, with only `fields` when given.
pub async fn respond_with_one<T, F>(
    read: &Read,
    view: ViewName,
    key: &str,
    fields: &Fields,
    fetch: F,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: Future<Output = Result<T, ApiError>> + Send,
{
    let key = format!("{key}|fields={}", fields.key());
    let render = async move {
        let value = fetch.await?;
        let json = if fields.is_all() {
            to_json(SINGLE_BODY_BYTES, &value)?
        } else {
            let selected = fields.select(std::slice::from_ref(&value));
            to_json(0, &selected.map_err(|e| ApiError::Internal(e.into()))?[0])?
        };
        Ok(Rendered { json, link: None })
    };
    respond(read, view, &key, render).await
}

/// The buffer of a single-row response (rows are 0.4 to 1.2 KB).
const SINGLE_BODY_BYTES: usize = 1536;

pub fn to_json(capacity: usize, value: &impl Serialize) -> Result<Vec<u8>, ApiError> {
    let mut json = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut json, value).map_err(|error| ApiError::Internal(error.into()))?;
    Ok(json)
}
