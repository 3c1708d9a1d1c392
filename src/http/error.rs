//! The one error type of the HTTP layer, rendered as RFC 9457 problem details
//! (`application/problem+json`). Each kind of error says, in one place (`ApiError::describe`),
//! its status, its problem type, what the client is told and what the log is told; internal causes
//! go to the log (by the `log_errors` layer, which finds the error on the response), never to
//! clients.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
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
    /// Parameters well-formed but at odds with the server's state (a name already taken, a role
    /// the access policy does not declare): 409, each named.
    #[error("conflicting parameters")]
    ConflictingParams(Vec<InvalidParam>),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("route not found")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("view {0} is not populated")]
    NotPopulated(ViewName),
    /// `Prefer: min-freshness=now`, and the view did not cover the request's arrival in time.
    #[error("{view} does not cover the request's arrival yet")]
    NotFreshYet {
        view: ViewName,
        timeout: std::time::Duration,
    },
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
    #[error("too many wrong secrets")]
    TooManyWrongTokens { retry_after_secs: u64 },
    /// No credential where one is needed, or one that is wrong, expired or revoked (`invalid`).
    #[error("unauthenticated: {detail}")]
    Unauthenticated { detail: String, invalid: bool },
    /// The caller's role may not do this at all (undeclared, not an admin, or a read model its row
    /// scope cannot be applied to).
    #[error("role refused: {0}")]
    RoleRefused(String),
    /// Parameters naming what the caller's role may not see or use.
    #[error("forbidden parameters")]
    Forbidden(Vec<InvalidParam>),
    #[error("rate limited")]
    RateLimited {
        retry_after_secs: u64,
        per_second: u32,
    },
    #[error("export quota: {detail}")]
    ExportQuota {
        detail: String,
        retry_after_secs: u64,
    },
    /// An export is refused when its audit row cannot be written (fail closed).
    #[error("audit log unwritable: {0}")]
    AuditUnavailable(String),
    #[error("JWT keys unavailable: {0}")]
    KeysUnavailable(String),
    #[error("refresh failed")]
    RefreshFailed(Vec<RefreshReport>),
    #[error("refresher unavailable: {0}")]
    RefreshUnavailable(String),
    /// The failure of an identical request whose query this one waited for (the response cache's
    /// single flight): the same status and problem.
    #[error("{0}")]
    Shared(Arc<ApiError>),
}

/// Everything an error means: what the client gets, and what the log gets.
struct Described {
    status: StatusCode,
    problem_type: &'static str,
    detail: String,
    invalid_params: Vec<InvalidParam>,
    results: Vec<RefreshReport>,
    /// Seconds for `Retry-After`.
    retry_after: Option<u64>,
    /// For the log: the cause and how loudly.
    log: Option<(tracing::Level, String)>,
    /// Set when the request found the database unreachable (the circuit counts these).
    unreachable: bool,
}

impl Described {
    fn new(status: StatusCode, problem_type: &'static str, detail: impl Into<String>) -> Self {
        Described {
            status,
            problem_type,
            detail: detail.into(),
            invalid_params: vec![],
            results: vec![],
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(5),
            log: None,
            unreachable: false,
        }
    }

    /// A problem about `params`, each listed in `invalid_params`; `detail` is given their names.
    fn naming(
        status: StatusCode,
        problem_type: &'static str,
        params: &[InvalidParam],
        detail: impl FnOnce(String) -> String,
    ) -> Self {
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        Described {
            invalid_params: params.to_vec(),
            ..Described::new(status, problem_type, detail(names.join(", ")))
        }
    }

    fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    fn warn(mut self, cause: impl std::fmt::Display) -> Self {
        self.log = Some((tracing::Level::WARN, cause.to_string()));
        self
    }
}

impl ApiError {
    pub fn conflicting(name: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::ConflictingParams(vec![InvalidParam::new(name, reason)])
    }

    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::InvalidParams(vec![InvalidParam::new(name, reason)])
    }

    /// A failure several waiting requests share: the error itself when this is the last holder.
    pub fn shared(error: Arc<ApiError>) -> ApiError {
        Arc::try_unwrap(error).unwrap_or_else(ApiError::Shared)
    }

    fn describe(&self) -> Described {
        use StatusCode as S;
        let unavailable = "urn:prospect-api:problem:database-unavailable";
        match self {
            ApiError::Shared(inner) => inner.describe(),
            ApiError::InvalidParams(params) => {
                let count = if params.len() == 1 {
                    "1 parameter is"
                } else {
                    "some parameters are"
                };
                Described::naming(
                    S::BAD_REQUEST,
                    "urn:prospect-api:problem:invalid-parameters",
                    params,
                    |names| format!("{count} invalid: {names}"),
                )
            }
            ApiError::ConflictingParams(params) => Described::naming(
                S::CONFLICT,
                "urn:prospect-api:problem:conflict",
                params,
                |names| format!("in conflict with this server's state: {names}"),
            ),
            ApiError::NotFound(what) => Described::new(S::NOT_FOUND, "about:blank", what),
            ApiError::NoRoute => Described::new(
                S::NOT_FOUND,
                "about:blank",
                "There is no such endpoint; see /openapi.json or /docs.",
            ),
            ApiError::MethodNotAllowed => Described::new(
                S::METHOD_NOT_ALLOWED,
                "about:blank",
                "This endpoint does not accept that method.",
            ),
            ApiError::NotPopulated(view) => Described::new(
                S::SERVICE_UNAVAILABLE,
                "urn:prospect-api:problem:view-not-populated",
                format!(
                    "The materialized view {view} has never been populated, so there is no data to \
                     serve yet. Its first refresh runs at startup; an admin can also run \
                     `prospect-api refresh`."
                ),
            ),
            ApiError::NotFreshYet { view, timeout } => Described::new(
                S::SERVICE_UNAVAILABLE,
                "urn:prospect-api:problem:not-fresh-yet",
                format!(
                    "Prefer: min-freshness=now asks for data covering every write committed before \
                     this request arrived; {view} did not cover them within {} ms \
                     (READ_YOUR_WRITES_TIMEOUT). The round or refresh that will cover them goes on: retry.",
                    timeout.as_millis()
                ),
            )
            .retry_after(1),
            ApiError::DatabaseUnavailable(cause) => Described {
                unreachable: true,
                ..Described::new(
                    S::SERVICE_UNAVAILABLE,
                    unavailable,
                    "The database is not reachable, or all its connections are busy, right now. \
                     Retry shortly.",
                )
                .warn(format!("database unavailable: {cause}"))
            },
            ApiError::DatabaseAway => Described::new(
                S::SERVICE_UNAVAILABLE,
                unavailable,
                "The database has been unreachable for the last requests. The server is checking \
                 it in the background and serves again as soon as it is back: retry in a second.",
            )
            .retry_after(1),
            ApiError::QueryTimeout => Described::new(
                S::SERVICE_UNAVAILABLE,
                "urn:prospect-api:problem:query-timeout",
                "The query took longer than the server allows. Narrow the filters or retry shortly.",
            )
            .warn("query hit statement_timeout"),
            ApiError::Conflict(cause) => Described::new(
                S::SERVICE_UNAVAILABLE,
                "urn:prospect-api:problem:query-conflict",
                "The database cancelled the query in favour of a conflicting change (replication \
                 or a deadlock). Retry: it will most likely succeed.",
            )
            .retry_after(1)
            .warn(format!("query cancelled by a conflict: {cause}")),
            ApiError::ReplicaUnusable(why) => Described::new(
                S::SERVICE_UNAVAILABLE,
                "urn:prospect-api:problem:replica-unusable",
                format!(
                    "Reads are served only from the replica (REPLICA_FALLBACK=off), and it cannot \
                     serve them now: {why}. Retry shortly."
                ),
            )
            .retry_after(1),
            ApiError::Internal(cause) => Described {
                log: Some((tracing::Level::ERROR, format!("request failed: {cause:?}"))),
                ..Described::new(
                    S::INTERNAL_SERVER_ERROR,
                    "about:blank",
                    "The server failed to handle this request. It has been logged with its \
                     request id.",
                )
            },
            ApiError::AdminDisabled => Described::new(
                S::FORBIDDEN,
                "urn:prospect-api:problem:admin-disabled",
                "The admin endpoints are disabled. Start the server with ADMIN_TOKEN set to a \
                 secret of at least 32 characters (e.g. `openssl rand -hex 32`) and send it as \
                 `Authorization: Bearer <token>`.",
            ),
            ApiError::Unauthorized => Described::new(
                S::UNAUTHORIZED,
                "urn:prospect-api:problem:unauthorized",
                "Send the admin token as `Authorization: Bearer <token>`.",
            ),
            ApiError::TooManyWrongTokens { retry_after_secs } => Described::new(
                S::TOO_MANY_REQUESTS,
                "urn:prospect-api:problem:too-many-wrong-tokens",
                format!(
                    "Too many wrong admin tokens or API keys from this address. Retry after \
                     {retry_after_secs} s with the right one."
                ),
            )
            .retry_after(*retry_after_secs),
            ApiError::Unauthenticated { detail, .. } => Described::new(
                S::UNAUTHORIZED,
                "urn:prospect-api:problem:unauthenticated",
                detail.clone(),
            ),
            ApiError::RoleRefused(detail) => Described::new(
                S::FORBIDDEN,
                "urn:prospect-api:problem:role-refused",
                detail.clone(),
            ),
            ApiError::Forbidden(params) => Described::naming(
                S::FORBIDDEN,
                "urn:prospect-api:problem:forbidden-parameters",
                params,
                |names| format!("Your role may not use: {names}"),
            ),
            ApiError::RateLimited {
                retry_after_secs,
                per_second,
            } => Described::new(
                S::TOO_MANY_REQUESTS,
                "urn:prospect-api:problem:rate-limited",
                format!(
                    "Your role allows {per_second} requests a second per credential. Retry after \
                     {retry_after_secs} s."
                ),
            )
            .retry_after(*retry_after_secs),
            ApiError::ExportQuota {
                detail,
                retry_after_secs,
            } => Described::new(
                S::TOO_MANY_REQUESTS,
                "urn:prospect-api:problem:export-quota",
                detail.clone(),
            )
            .retry_after(*retry_after_secs),
            ApiError::AuditUnavailable(cause) => Described::new(
                S::SERVICE_UNAVAILABLE,
                "urn:prospect-api:problem:audit-unavailable",
                "Exports are refused while the audit log cannot be written: every export of \
                 contact data is recorded. Retry shortly.",
            )
            .warn(format!("the audit log could not be written: {cause}")),
            ApiError::KeysUnavailable(cause) => Described::new(
                S::SERVICE_UNAVAILABLE,
                "urn:prospect-api:problem:keys-unavailable",
                "The keys to verify JWTs could not be loaded from JWT_JWKS. Retry shortly.",
            )
            .warn(format!("JWT_JWKS unavailable: {cause}")),
            ApiError::RefreshFailed(reports) => {
                let failures: Vec<String> = reports
                    .iter()
                    .filter(|r| r.error.is_some())
                    .map(|r| format!("{}: {}", r.view, r.error.as_deref().unwrap_or_default()))
                    .collect();
                Described {
                    results: reports.clone(),
                    ..Described::new(
                        S::INTERNAL_SERVER_ERROR,
                        "urn:prospect-api:problem:refresh-failed",
                        format!(
                            "Refresh failed, the previous data is still served. {}",
                            failures.join("; ")
                        ),
                    )
                }
            }
            ApiError::RefreshUnavailable(cause) => Described::new(
                S::SERVICE_UNAVAILABLE,
                unavailable,
                "The refresh could not run: the database is not reachable. Retry shortly.",
            )
            .warn(format!("refresh could not run: {cause}")),
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

/// Set on a response whose request found the database unreachable: the database circuit counts
/// these, and a GET read from the replica is answered again from the primary.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseWasUnreachable;

/// What the log should say about a response's error (found by `log_errors`).
#[derive(Clone)]
struct LogEntry(tracing::Level, Arc<str>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let described = self.describe();
        // RFC 6750: how to authenticate, and whether the token presented was the problem.
        let challenge = match &self {
            ApiError::Unauthorized => Some("Bearer realm=\"prospect-api admin\""),
            ApiError::Unauthenticated { invalid: true, .. } => {
                Some("Bearer realm=\"prospect-api\", error=\"invalid_token\"")
            }
            ApiError::Unauthenticated { .. } => Some("Bearer realm=\"prospect-api\""),
            _ => None,
        };
        let mut response = problem_response(&Problem {
            problem_type: described.problem_type.to_owned(),
            title: described
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_owned(),
            status: described.status.as_u16(),
            detail: described.detail,
            invalid_params: described.invalid_params,
            results: described.results,
        });
        let headers = response.headers_mut();
        if let Some(seconds) = described.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if described.unreachable {
            response.extensions_mut().insert(DatabaseWasUnreachable);
        }
        if let Some((level, message)) = described.log {
            response
                .extensions_mut()
                .insert(LogEntry(level, message.into()));
        }
        response
    }
}

/// The middleware that logs what errors say for the log, in the request's span.
pub async fn log_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(LogEntry(level, message)) = response.extensions().get::<LogEntry>() {
        match *level {
            tracing::Level::ERROR => tracing::error!("{message}"),
            _ => tracing::warn!("{message}"),
        }
    }
    response
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

#[cfg(test)]
pub(crate) fn rejected(result: Result<(), ApiError>) -> Vec<(String, String)> {
    match result {
        Err(ApiError::InvalidParams(list)) => {
            list.into_iter().map(|p| (p.name, p.reason)).collect()
        }
        other => panic!("expected invalid params, got {other:?}"),
    }
}
