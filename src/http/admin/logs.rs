//! The logs an admin reads, each paged on the server (newest first, `before` the last id of the
//! previous page) so that a page stays small however long the log: `GET /admin/refresh/history`,
//! `GET /admin/refresh/timeline` (the last hours of the refresh log in a fixed number of buckets,
//! what the console charts) and `GET /admin/audit`.

use axum::Json;
use axum::extract::State;
use chrono::NaiveDate;
use serde_json::json;

use super::parameters;
use crate::access::audit::{self, AuditFilter, AuditRow};
use crate::http::error::{ApiError, Problem};
use crate::http::openapi::limit_parameter;
use crate::http::page::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::http::params::{QueryParams, parse_limit};
use crate::http::state::AppState;
use crate::refresh::status::{self, HistoryFilter, RefreshLogEntry, Timeline};
use crate::views::ViewName;

/// The timeline's span: a day by default, a week at most.
const DEFAULT_TIMELINE_HOURS: u32 = 24;
const MAX_TIMELINE_HOURS: u32 = 168;
/// Points per view, whatever the span: what a chart can show.
pub const TIMELINE_BUCKETS: i32 = 96;

fn before_parameter(what: &str) -> serde_json::Value {
    json!({
        "name": "before", "in": "query", "required": false,
        "description": format!("Only {what} older than this id (the last id of the previous page)."),
        "schema": {"type": "integer", "format": "int64", "minimum": 1},
    })
}

/// `before`: an id of 1 or more.
fn parse_before(params: &mut QueryParams, what: &str) -> Option<i64> {
    let before = params.parsed::<i64>("before", what);
    if before.is_some_and(|id| id < 1) {
        params.reject("before", format!("{what} is 1 or more"));
    }
    before
}

/// The query of `GET /admin/refresh/history`.
struct HistoryQuery;

impl utoipa::IntoParams for HistoryQuery {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        let view = json!({
            "name": "view", "in": "query", "required": false,
            "description": "Only this view's entries.",
            "schema": {"type": "string", "enum": ViewName::ALL.map(ViewName::as_str)},
        });
        parameters([
            limit_parameter("Entries"),
            view,
            before_parameter("entries"),
        ])
    }
}

/// The refresh log, newest first; pages by `before`.
#[utoipa::path(
    get, path = "/admin/refresh/history", tag = "admin",
    params(HistoryQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = Vec<RefreshLogEntry>),
        (status = 400, description = "Invalid parameters, each named", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    mut params: QueryParams,
) -> Result<Json<Vec<RefreshLogEntry>>, ApiError> {
    let limit = parse_limit(&mut params, DEFAULT_LIMIT, MAX_LIMIT);
    let view = params.parsed::<ViewName>("view", "a view name");
    let before = parse_before(&mut params, "a log entry id");
    params.finish(&["limit", "view", "before"])?;
    let filter = HistoryFilter {
        view,
        before,
        limit,
    };
    Ok(Json(status::history(&state.pool, &filter).await?))
}

/// The query of `GET /admin/refresh/timeline`.
struct TimelineQuery;

impl utoipa::IntoParams for TimelineQuery {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        parameters([json!({
            "name": "hours", "in": "query", "required": false,
            "description": format!("The span, ending now (default {DEFAULT_TIMELINE_HOURS})."),
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TIMELINE_HOURS},
        })])
    }
}

/// The last hours of the refresh log per view, in a fixed number of equal buckets: refreshes,
/// failures, durations and the highest data age in each.
#[utoipa::path(
    get, path = "/admin/refresh/timeline", tag = "admin",
    params(TimelineQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = Timeline),
        (status = 400, description = "Invalid hours", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn timeline(
    State(state): State<AppState>,
    mut params: QueryParams,
) -> Result<Json<Timeline>, ApiError> {
    let hours = params
        .parsed::<u32>("hours", "a whole number of hours")
        .unwrap_or(DEFAULT_TIMELINE_HOURS);
    if !(1..=MAX_TIMELINE_HOURS).contains(&hours) {
        params.reject("hours", format!("must be from 1 to {MAX_TIMELINE_HOURS}"));
    }
    params.finish(&["hours"])?;
    Ok(Json(
        status::timeline(&state.pool, hours, TIMELINE_BUCKETS).await?,
    ))
}

/// The query of `GET /admin/audit`.
struct AuditQuery;

impl utoipa::IntoParams for AuditQuery {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        let credential = json!({
            "name": "credential", "in": "query", "required": false,
            "description": "Only this credential's entries (`key:NAME`, `jwt:SUBJECT`, `admin-token`, `anonymous`).",
            "schema": {"type": "string"},
        });
        let day = json!({
            "name": "day", "in": "query", "required": false,
            "description": "Only entries of this UTC day.",
            "schema": {"type": "string", "format": "date"},
        });
        parameters([
            limit_parameter("Entries"),
            credential,
            day,
            before_parameter("entries"),
        ])
    }
}

/// The audit log, newest first: every export and admin action; pages by `before`.
#[utoipa::path(
    get, path = "/admin/audit", tag = "admin",
    params(AuditQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = Vec<AuditRow>),
        (status = 400, description = "Invalid parameters, each named", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn audit_log(
    State(state): State<AppState>,
    mut params: QueryParams,
) -> Result<Json<Vec<AuditRow>>, ApiError> {
    let limit = parse_limit(&mut params, DEFAULT_LIMIT, MAX_LIMIT);
    let credential = params.one("credential");
    let day = params.parsed::<NaiveDate>("day", "a date (YYYY-MM-DD)");
    let before = parse_before(&mut params, "an audit entry id");
    params.finish(&["limit", "credential", "day", "before"])?;
    let filter = AuditFilter {
        credential,
        day,
        before,
        limit,
    };
    Ok(Json(audit::recent(&state.pool, &filter).await?))
}
