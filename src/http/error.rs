//! The one error type of the HTTP layer, rendered as RFC 9457 problem details
//! (`application/problem+json`). Internal causes are logged, never sent to clients.

use super::database_circuit::DatabaseWasUnreachable;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::refresh::RefreshReport;
use crate::views::ViewName;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One rejected query parameter (or body field) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

impl InvalidParam {
    pub fn new(name: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidParam {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// An RFC 9457 problem details body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI identifying the kind of problem (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For bad input: each offending parameter and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_params: Vec<InvalidParam>,
    /// For a failed admin refresh: the outcome of each view (the failing ones carry the database's
    /// error message).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<RefreshReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid parameters")]
    InvalidParams(Vec<InvalidParam>),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("route not found")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("view {0} is not populated")]
    NotPopulated(ViewName),
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(#[source] sqlx::Error),
    /// Answered without trying: recent requests found the database unreachable (see
    /// `database_circuit`).
    #[error("database away")]
    DatabaseAway,
    #[error("query timed out")]
    QueryTimeout,
    /// The database cancelled the statement for another's sake: a replica applying a change the
    /// query conflicted with (hot standby), or a deadlock. Running it again will do.
    #[error("query cancelled by a conflict: {0}")]
    Conflict(#[source] sqlx::Error),
    /// Reads are served only from the replica (`REPLICA_FALLBACK=off`) and it cannot serve them.
    #[error("replica unusable: {0}")]
    ReplicaUnusable(String),
    #[error("internal error: {0}")]
    Internal(#[source] anyhow::Error),
    #[error("admin endpoints disabled")]
    AdminDisabled,
    #[error("missing or wrong admin token")]
    Unauthorized,
    #[error("too many wrong admin tokens")]
    TooManyWrongTokens { retry_after_secs: u64 },
    #[error("refresh failed")]
    RefreshFailed(Vec<RefreshReport>),
    #[error("refresher unavailable: {0}")]
    RefreshUnavailable(String),
    /// The failure of an identical request whose query this one waited for (the response cache's
    /// single flight): the same status and problem.
    #[error("{0}")]
    Shared(Arc<ApiError>),
}

impl ApiError {
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::InvalidParams(vec![InvalidParam::new(name, reason)])
    }

    /// Whether this error, or the one it shares, is what `test` looks for.
    fn is(&self, test: impl Fn(&ApiError) -> bool) -> bool {
        match self {
            ApiError::Shared(inner) => inner.is(test),
            other => test(other),
        }
    }

    /// A failure several waiting requests share: the error itself when this is the last holder.
    pub fn shared(error: Arc<ApiError>) -> ApiError {
        Arc::try_unwrap(error).unwrap_or_else(ApiError::Shared)
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Shared(inner) => inner.status(),
            ApiError::InvalidParams(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotPopulated(_)
            | ApiError::DatabaseUnavailable(_)
            | ApiError::DatabaseAway
            | ApiError::QueryTimeout
            | ApiError::Conflict(_)
            | ApiError::ReplicaUnusable(_)
            | ApiError::RefreshUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::RefreshFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::AdminDisabled => StatusCode::FORBIDDEN,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooManyWrongTokens { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn problem(&self) -> Problem {
        if let ApiError::Shared(inner) = self {
            return inner.problem();
        }
        let status = self.status();
        let mut results = vec![];
        let (problem_type, detail, invalid_params) = match self {
            ApiError::InvalidParams(params) => (
                "urn:prospect-api:problem:invalid-parameters",
                format!(
                    "{} invalid: {}",
                    if params.len() == 1 { "1 parameter is" } else { "some parameters are" },
                    params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
                params.clone(),
            ),
            ApiError::NotFound(what) => ("about:blank", what.clone(), vec![]),
            ApiError::NoRoute => ("about:blank", "There is no such endpoint; see /openapi.json or /docs.".into(), vec![]),
            ApiError::MethodNotAllowed => ("about:blank", "This endpoint does not accept that method.".into(), vec![]),
            ApiError::NotPopulated(view) => (
                "urn:prospect-api:problem:view-not-populated",
                format!(
                    "The materialized view {view} has never been populated, so there is no data to serve yet. \
                     Its first refresh runs at startup; an admin can also run `prospect-api refresh`."
                ),
                vec![],
            ),
            ApiError::DatabaseUnavailable(_) => (
                "urn:prospect-api:problem:database-unavailable",
                "The database is not reachable, or all its connections are busy, right now. Retry shortly.".into(),
                vec![],
            ),
            ApiError::DatabaseAway => (
                "urn:prospect-api:problem:database-unavailable",
                "The database has been unreachable for the last requests. The server is checking it \
                 in the background and serves again as soon as it is back: retry in a second."
                    .into(),
                vec![],
            ),
            ApiError::QueryTimeout => (
                "urn:prospect-api:problem:query-timeout",
                "The query took longer than the server allows. Narrow the filters or retry shortly.".into(),
                vec![],
            ),
            ApiError::Conflict(_) => (
                "urn:prospect-api:problem:query-conflict",
                "The database cancelled the query in favour of a conflicting change (replication or a \
                 deadlock). Retry: it will most likely succeed."
                    .into(),
                vec![],
            ),
            ApiError::ReplicaUnusable(why) => (
                "urn:prospect-api:problem:replica-unusable",
                format!(
                    "Reads are served only from the replica (REPLICA_FALLBACK=off), and it cannot serve \
                     them now: {why}. Retry shortly."
                ),
                vec![],
            ),
            ApiError::Internal(_) => (
                "about:blank",
                "The server failed to handle this request. It has been logged with its request id.".into(),
                vec![],
            ),
            ApiError::AdminDisabled => (
                "urn:prospect-api:problem:admin-disabled",
                "The admin endpoints are disabled. Start the server with ADMIN_TOKEN set to a secret of at least \
                 32 characters (e.g. `openssl rand -hex 32`) and send it as `Authorization: Bearer <token>`."
                    .into(),
                vec![],
            ),
            ApiError::Unauthorized => (
                "urn:prospect-api:problem:unauthorized",
                "Send the admin token as `Authorization: Bearer <token>`.".into(),
                vec![],
            ),
            ApiError::TooManyWrongTokens { retry_after_secs } => (
                "urn:prospect-api:problem:too-many-wrong-tokens",
                format!(
                    "Too many wrong admin tokens from this address. Retry after {retry_after_secs} s with the right one."
                ),
                vec![],
            ),
            ApiError::RefreshFailed(reports) => {
                results = reports.clone();
                let failures: Vec<String> = reports
                    .iter()
                    .filter(|r| r.error.is_some())
                    .map(|r| format!("{}: {}", r.view, r.error.as_deref().unwrap_or_default()))
                    .collect();
                (
                    "urn:prospect-api:problem:refresh-failed",
                    format!("Refresh failed, the previous data is still served. {}", failures.join("; ")),
                    vec![],
                )
            }
            ApiError::RefreshUnavailable(_) => (
                "urn:prospect-api:problem:database-unavailable",
                "The refresh could not run: the database is not reachable. Retry shortly.".into(),
                vec![],
            ),
            ApiError::Shared(_) => unreachable!("answered by the shared error above"),
        };
        Problem {
            problem_type: problem_type.to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            invalid_params,
            results,
        }
    }
}

/// Sorts database errors into what the client should hear: unavailable, timed out, or internal.
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            // Protocol: the connection broke mid-message, as when a proxy or load balancer in front
            // of a database that went away accepts the connection and closes it at once.
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolClosed => ApiError::DatabaseUnavailable(error),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // query_canceled (statement_timeout)
                Some("57014") => ApiError::QueryTimeout,
                // serialization_failure (a hot standby's conflict with recovery), deadlock_detected
                Some("40001" | "40P01") => ApiError::Conflict(error),
                // admin_shutdown, crash_shutdown, cannot_connect_now, connection failures
                Some("57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006") => {
                    ApiError::DatabaseUnavailable(error)
                }
                _ => ApiError::Internal(error.into()),
            },
            _ => ApiError::Internal(error.into()),
        }
    }
}

impl ApiError {
    /// Internal causes go to the log, never to the client.
    fn log(&self) {
        match self {
            ApiError::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            ApiError::DatabaseUnavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable")
            }
            ApiError::QueryTimeout => tracing::warn!("query hit statement_timeout"),
            ApiError::Conflict(cause) => {
                tracing::warn!(error = %cause, "query cancelled by a conflict")
            }
            ApiError::RefreshUnavailable(cause) => tracing::warn!(%cause, "refresh could not run"),
            ApiError::Shared(inner) => inner.log(),
            _ => {}
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let status = self.status();
        let mut response = problem_response(&self.problem());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let retry_after = if self.is(|e| {
                matches!(
                    e,
                    ApiError::DatabaseAway | ApiError::Conflict(_) | ApiError::ReplicaUnusable(_)
                )
            }) {
                "1"
            } else {
                "5"
            };
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
        }
        if self.is(|e| matches!(e, ApiError::DatabaseUnavailable(_))) {
            response.extensions_mut().insert(DatabaseWasUnreachable);
        }
        if let ApiError::TooManyWrongTokens { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"prospect-api admin\""),
            );
        }
        response
    }
}

pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).expect("a problem always serializes");
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body,
    )
        .into_response()
}

/// The generic problem for a status produced outside our handlers (timeouts, body limits, ...).
pub fn generic_problem(status: StatusCode) -> Problem {
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is larger than the server accepts.",
        StatusCode::SERVICE_UNAVAILABLE => "The server could not answer in time. Retry shortly.",
        StatusCode::REQUEST_TIMEOUT => "The request took too long.",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "The request headers are too large.",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "Send the request body as application/json.",
        _ if status.is_server_error() => "The server failed to handle this request.",
        _ => "The request could not be handled.",
    };
    Problem {
        problem_type: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        invalid_params: vec![],
        results: vec![],
    }
}
