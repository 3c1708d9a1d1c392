//! How every data response is made: the freshness gate (a 503 while the view was never populated),
//! then the response cache, which renders the body only when it holds no copy that shows the view's
//! current generation (and answers 304 when the client's copy is current), then the freshness
//! headers.

use std::future::Future;
use std::sync::Arc;

use axum::response::Response;
use serde::Serialize;

use super::super::error::ApiError;
use super::super::fields::Fields;
use super::super::freshness::gate;
use super::super::response_cache::Rendered;
use super::super::response_cache::shows::Shows;
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
    let fresh = gate(read, view).await?;
    let response = read
        .state
        .responses
        .respond(
            view,
            fresh.generation(),
            &key,
            &read.headers,
            &read.db.pool,
            render,
        )
        .await?;
    Ok(fresh.apply(response))
}

/// One JSON body (a row, the facets) that `fetch` finds, with only `fields` when given, and what
/// it shows.
pub async fn respond_with_one<T, F>(
    read: &Read,
    view: ViewName,
    key: &str,
    fields: &Fields,
    fetch: F,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: Future<Output = Result<(T, Option<Arc<dyn Shows>>), ApiError>> + Send,
{
    let key = format!("{key}|fields={}", fields.key());
    let render = async move {
        let (value, shows) = fetch.await?;
        let json = if fields.is_all() {
            to_json(SINGLE_BODY_BYTES, &value)?
        } else {
            let selected = fields.select(std::slice::from_ref(&value));
            to_json(0, &selected.map_err(|e| ApiError::Internal(e.into()))?[0])?
        };
        Ok(Rendered {
            json,
            link: None,
            shows,
        })
    };
    respond(read, view, &key, render).await
}

/// The buffer of a single-row response (rows are 0.4 to 1.2 KB).
pub const SINGLE_BODY_BYTES: usize = 1536;

pub fn to_json(capacity: usize, value: &impl Serialize) -> Result<Vec<u8>, ApiError> {
    let mut json = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut json, value).map_err(|error| ApiError::Internal(error.into()))?;
    Ok(json)
}
