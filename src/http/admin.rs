//! The admin plane: `POST /admin/refresh`, `GET /admin/views`, `GET /admin/refresh/history`,
//! `GET /admin/audit`. Every route here is reachable only through `auth::authenticate` (the router
//! adds it as a layer), which wants an admin role's credential or `ADMIN_TOKEN`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, InvalidParam, Problem};
use super::page::{DEFAULT_LIMIT, MAX_LIMIT};
use super::params::{QueryParams, parse_limit};
use super::state::AppState;
use crate::access::audit::{self, AuditRow};
use crate::refresh::status::{self, RefreshLogEntry, ViewStatus};
use crate::refresh::{RefreshReport, RefreshStatus, RefreshTrigger};
use crate::views::ViewName;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(refresh))
        .routes(routes!(views))
        .routes(routes!(history))
        .routes(routes!(audit_log))
}

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
async fn refresh(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut params = QueryParams::parse(raw.as_deref())?;
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
async fn views(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<ViewStatus>>, ApiError> {
    QueryParams::parse(raw.as_deref())?.finish(&[])?;
    let mut statuses = status::view_statuses(&state.pool).await?;
    let cache = state.responses.figures();
    if cache.enabled {
        for status in &mut statuses {
            status.response_cache = Some(cache.per_view[status.view]);
        }
    }
    Ok(Json(statuses))
}

/// The query of `GET /admin/refresh/history`: `limit`, as on the lists.
struct HistoryQuery;

impl utoipa::IntoParams for HistoryQuery {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        parameters([super::openapi::limit_parameter("Entries")])
    }
}

fn parameters(
    declared: impl IntoIterator<Item = serde_json::Value>,
) -> Vec<utoipa::openapi::path::Parameter> {
    declared
        .into_iter()
        .map(|p| serde_json::from_value(p).expect("an OpenAPI parameter"))
        .collect()
}

/// The refresh log, newest first.
#[utoipa::path(
    get, path = "/admin/refresh/history", tag = "admin",
    params(HistoryQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = Vec<RefreshLogEntry>),
        (status = 400, description = "Invalid limit", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn history(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<RefreshLogEntry>>, ApiError> {
    let mut params = QueryParams::parse(raw.as_deref())?;
    let limit = parse_limit(&mut params, DEFAULT_LIMIT, MAX_LIMIT);
    params.finish(&["limit"])?;
    Ok(Json(status::history(&state.pool, limit).await?))
}

/// The query of `GET /admin/audit`.
struct AuditQuery;

impl utoipa::IntoParams for AuditQuery {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        let limit = super::openapi::limit_parameter("Entries");
        let credential = serde_json::json!({
            "name": "credential", "in": "query", "required": false,
            "description": "Only this credential's entries (`key:NAME`, `jwt:SUBJECT`, `admin-token`, `anonymous`).",
            "schema": {"type": "string"},
        });
        let before = serde_json::json!({
            "name": "before", "in": "query", "required": false,
            "description": "Only entries older than this id (the last id of the previous page).",
            "schema": {"type": "integer", "format": "int64", "minimum": 1},
        });
        parameters([limit, credential, before])
    }
}

/// The audit log, newest first: every export and admin action, pages by `before`.
#[utoipa::path(
    get, path = "/admin/audit", tag = "admin",
    params(AuditQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = Vec<AuditRow>),
        (status = 400, description = "Invalid parameters, each named", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn audit_log(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<AuditRow>>, ApiError> {
    let mut params = QueryParams::parse(raw.as_deref())?;
    let limit = parse_limit(&mut params, DEFAULT_LIMIT, MAX_LIMIT);
    let credential = params.one("credential");
    let before = params.parsed::<i64>("before", "an audit entry id");
    if before.is_some_and(|id| id < 1) {
        params.reject("before", "an audit entry id is 1 or more");
    }
    params.finish(&["limit", "credential", "before"])?;
    let rows = audit::recent(&state.pool, credential.as_deref(), before, limit).await?;
    Ok(Json(rows))
}
