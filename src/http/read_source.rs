//! Where a request's reads go: the extractor picks the server once per request (see `crate::reads`),
//! so that its freshness and its data come from the same one; the middleware answers a GET again
//! from the primary when its reads found the replica unreachable.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use super::error::{ApiError, DatabaseWasUnreachable};
use super::state::AppState;
use crate::reads::{ReadRoute, ReadSource, ReplicaUnusable, Server};

/// The server a request's reads went to, noted by the extractor for the middleware.
#[derive(Clone, Default)]
struct ReadOn(Arc<OnceLock<Server>>);

impl FromRequestParts<AppState> for ReadSource {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let source = if parts.extensions.get::<ForcePrimary>().is_some() {
            state.reads.primary().clone()
        } else {
            state
                .reads
                .choose()
                .cloned()
                .map_err(|ReplicaUnusable(why)| ApiError::ReplicaUnusable(why))?
        };
        if let Some(ReadOn(server)) = parts.extensions.get::<ReadOn>() {
            let _ = server.set(source.server);
        }
        Ok(source)
    }
}

/// A GET (or HEAD) whose reads found the replica unreachable is answered again, from the primary,
/// when falling back is allowed. The monitor moves reads off a replica that stopped within a probe
/// (250 ms), but the requests in flight on it then would fail: this way none does.
pub async fn retry_on_primary(
    State(reads): State<Arc<ReadRoute>>,
    request: Request,
    next: Next,
) -> Response {
    let retryable = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads.falls_back_from_replica() || !retryable {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let retry = parts.clone();
    let read_on = ReadOn::default();
    parts.extensions.insert(read_on.clone());
    let response = next.clone().run(Request::from_parts(parts, body)).await;
    let unreachable = response
        .extensions()
        .get::<DatabaseWasUnreachable>()
        .is_some();
    if !(unreachable && read_on.0.get() == Some(&Server::Replica)) {
        return response;
    }
    tracing::info!("the replica was unreachable for a request: answering it from the primary");
    let mut retry = Request::from_parts(retry, Body::empty());
    retry.extensions_mut().insert(ForcePrimary);
    next.run(retry).await
}

/// Set on a request answered again after the replica failed it: its reads go to the primary.
#[derive(Clone, Copy)]
pub struct ForcePrimary;
