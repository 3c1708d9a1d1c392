//! The extractor that picks, once per request, where its reads go (see `crate::reads`): its
//! freshness and its data then come from the same server.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::reads::{ReadSource, ReplicaUnusable};

impl FromRequestParts<AppState> for ReadSource {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state
            .reads
            .choose()
            .cloned()
            .map_err(|ReplicaUnusable(why)| ApiError::ReplicaUnusable(why))
    }
}
