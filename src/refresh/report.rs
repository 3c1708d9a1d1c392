//! What every way of bringing a read model up to date reports and logs alike: what asked for it,
//! how it went, how it was done, and the record of a failure.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::views::ViewName;

/// What asked for a refresh; stored in the log's `trigger` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefreshTrigger {
    Schedule,
    Notify,
    Poll,
    Manual,
    Startup,
    Cli,
    Catchup,
    /// The applier: changes found in the change record, applied per company.
    Incremental,
    /// A read that asked to see the writes committed before it arrived (`Prefer: min-freshness=now`).
    Read,
}

impl RefreshTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshTrigger::Schedule => "schedule",
            RefreshTrigger::Notify => "notify",
            RefreshTrigger::Poll => "poll",
            RefreshTrigger::Manual => "manual",
            RefreshTrigger::Startup => "startup",
            RefreshTrigger::Cli => "cli",
            RefreshTrigger::Catchup => "catchup",
            RefreshTrigger::Incremental => "incremental",
            RefreshTrigger::Read => "read",
        }
    }
}

impl std::fmt::Display for RefreshTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefreshStatus {
    /// The view was refreshed.
    Ok,
    /// The refresh failed; the previous data is still served.
    Error,
    /// Another process refreshed the view after this request was made, while we waited for its lock:
    /// that refresh already contains everything this one would have.
    Skipped,
}

impl RefreshStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshStatus::Ok => "ok",
            RefreshStatus::Error => "error",
            RefreshStatus::Skipped => "skipped",
        }
    }
}

/// How a view's data was brought up to date (the log's `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefreshMethod {
    /// `REFRESH MATERIALIZED VIEW` (mode `refresh`).
    Refresh,
    /// The rows of the changed companies recomputed (mode `incremental`).
    Apply,
    /// The table diffed against its whole definition (mode `incremental`).
    Rebuild,
    /// Built anew beside the relation readers use (converting between modes, or a table only its
    /// whole definition could bring up to date), then swapped in.
    Build,
    /// A table compared with its definition a range of companies at a time, and repaired (the log
    /// row of the repair's last range).
    Repair,
}

impl RefreshMethod {
    pub fn parse(text: &str) -> Option<RefreshMethod> {
        match text {
            "refresh" => Some(RefreshMethod::Refresh),
            "apply" => Some(RefreshMethod::Apply),
            "rebuild" => Some(RefreshMethod::Rebuild),
            "build" => Some(RefreshMethod::Build),
            "repair" => Some(RefreshMethod::Repair),
            _ => None,
        }
    }
}

/// The outcome of one view's refresh, apply or rebuild, as logged and as the admin endpoint reports it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefreshReport {
    pub view: ViewName,
    pub status: RefreshStatus,
    /// How it was done (for `ok`).
    pub method: Option<RefreshMethod>,
    /// For `ok`, the snapshot time the refreshed data reflects; otherwise when the attempt began.
    pub started_at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    pub rows: Option<i64>,
    /// For an apply or rebuild: rows deleted plus rows inserted (a changed row counts twice).
    pub rows_changed: Option<i64>,
    /// For an apply: the companies whose rows were recomputed.
    pub companies_changed: Option<i64>,
    /// The database's error message, for `error`.
    pub error: Option<String>,
    /// The id of the `materialized_view_log` row (none for `skipped`).
    pub log_id: Option<i64>,
}

impl RefreshReport {
    /// Another process did the work while this request waited for it.
    pub fn skipped(view: ViewName, requested_at: DateTime<Utc>) -> RefreshReport {
        RefreshReport {
            view,
            status: RefreshStatus::Skipped,
            method: None,
            started_at: requested_at,
            duration_ms: None,
            rows: None,
            rows_changed: None,
            companies_changed: None,
            error: None,
            log_id: None,
        }
    }
}

/// The last successful refresh of `view` (what its data reflects), as a report.
pub(super) async fn last_success(
    pool: &PgPool,
    view: ViewName,
) -> Result<Option<RefreshReport>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT l.id, l.method, l.started_at, l.duration_ms, l.row_count, l.rows_changed,
                  l.companies_changed
           FROM last_successful_refreshes() s JOIN materialized_view_log l ON l.id = s.log_id
           WHERE s.view_name = $1"#,
        view.as_str()
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| RefreshReport {
        view,
        status: RefreshStatus::Ok,
        method: row.method.as_deref().and_then(RefreshMethod::parse),
        started_at: row.started_at,
        duration_ms: row.duration_ms,
        rows: row.row_count,
        rows_changed: row.rows_changed,
        companies_changed: row.companies_changed,
        error: None,
        log_id: Some(row.id),
    }))
}

/// Records a failed attempt (after its transaction rolled back) in the log and the error table.
pub(super) async fn record_failure(
    pool: &PgPool,
    view: ViewName,
    trigger: RefreshTrigger,
    attempt_started: DateTime<Utc>,
    message: &str,
) -> Result<RefreshReport, sqlx::Error> {
    let logged = sqlx::query!(
        r#"SELECT id AS "id!", duration_ms FROM record_refresh_failure($1, $2, $3, $4)"#,
        view.as_str(),
        trigger.as_str(),
        attempt_started,
        message,
    )
    .fetch_one(pool)
    .await?;
    Ok(RefreshReport {
        view,
        status: RefreshStatus::Error,
        method: None,
        started_at: attempt_started,
        duration_ms: logged.duration_ms,
        rows: None,
        rows_changed: None,
        companies_changed: None,
        error: Some(message.to_owned()),
        log_id: Some(logged.id),
    })
}

/// The database's own message for a database error (what an admin needs), else sqlx's description.
pub(super) fn database_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}
