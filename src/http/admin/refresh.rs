//! `POST /admin/refresh` and `GET /admin/views`: bringing views up to date by hand, and their state.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiError, InvalidParam, Problem};
use crate::http::params::{NoParams, QueryParams};
use crate::http::state::AppState;
use crate::refresh::status::{self, ViewStatus};
use crate::refresh::{RefreshReport, RefreshStatus, RefreshTrigger};
use crate::views::ViewName;

/// The optional body of `POST /admin/refresh`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The views to refresh; every view when absent.
    #[schema(value_type = Option<Vec<ViewName>>, min_items = 1)]
    views: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshResults {
    pub results: Vec<RefreshReport>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshAccepted {
    /// The views whose refresh was requested (they run in the background).
    pub accepted: Vec<ViewName>,
}

fn parse_views(body: &[u8]) -> Result<Vec<ViewName>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ViewName::ALL.to_vec());
    }
    // `null` is a body saying nothing, like no body at all.
    let request: Option<RefreshRequest> = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("is not a valid refresh request: {e}")))?;
    let request = request.unwrap_or_default();
    let Some(names) = request.views else {
        return Ok(ViewName::ALL.to_vec());
    };
    if names.is_empty() {
        return Err(ApiError::invalid(
            "views",
            "names no view; omit it to refresh every view",
        ));
    }
    let mut views = Vec::new();
    let mut errors = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match name.parse::<ViewName>() {
            Ok(view) => views.push(view),
            Err(e) => errors.push(InvalidParam::new(format!("views[{i}]"), e.to_string())),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::InvalidParams(errors));
    }
    views.sort(); // the one fixed refresh order
    views.dedup();
    Ok(views)
}

/// Refreshes views now. Waits and reports each view's outcome, or with `?wait=false` answers 202 at once.
#[utoipa::path(
    post, path = "/admin/refresh", tag = "admin",
    params(("wait" = Option<bool>, Query, description = "Wait for the refreshes (default true)")),
    request_body(content = Option<RefreshRequest>, description = "Which views; all when omitted"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every view refreshed (or skipped: another process refreshed it meanwhile)", body = RefreshResults),
        (status = 202, description = "Refreshes requested (wait=false)", body = RefreshAccepted),
        (status = 400, description = "Unknown view or malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "A refresh failed; `results` holds each view's outcome and error", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    mut params: QueryParams,
    body: Bytes,
) -> Result<Response, ApiError> {
    let wait = params
        .parsed::<bool>("wait", "true or false")
        .unwrap_or(true);
    params.finish(&["wait"])?;
    let views = parse_views(&body)?;

    if !wait {
        for view in &views {
            drop(state.refresher.request(*view, RefreshTrigger::Manual));
        }
        return Ok((
            StatusCode::ACCEPTED,
            Json(RefreshAccepted { accepted: views }),
        )
            .into_response());
    }
    let pending: Vec<_> = views
        .iter()
        .map(|view| state.refresher.request(*view, RefreshTrigger::Manual))
        .collect();
    let mut results = Vec::with_capacity(pending.len());
    for outcome in pending {
        let outcome = outcome
            .await
            .unwrap_or_else(|_| Err("the refresher is shutting down".to_owned()));
        results.push(outcome.map_err(ApiError::RefreshUnavailable)?);
    }
    if results.iter().any(|r| r.status == RefreshStatus::Error) {
        return Err(ApiError::RefreshFailed(results));
    }
    Ok(Json(RefreshResults { results }).into_response())
}

/// Each view: populated, rows, size, last successful refresh, last error, data age, refreshing now.
#[utoipa::path(
    get, path = "/admin/views", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, body = Vec<ViewStatus>),
    )
)]
pub async fn views(
    State(state): State<AppState>,
    _: NoParams,
) -> Result<Json<Vec<ViewStatus>>, ApiError> {
    let mut statuses = status::view_statuses(&state.pool).await?;
    let cache = state.responses.figures();
    if cache.enabled {
        for status in &mut statuses {
            status.response_cache = Some(cache.per_view[status.view]);
        }
    }
    Ok(Json(statuses))
}
