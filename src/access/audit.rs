//! The audit log (table `audit_log`, append-only): every export and every admin action, with who,
//! what, how much, from where and how it ended; and the daily export quota, reserved in the same
//! database so that it holds across instances.

use std::time::Duration;

use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use super::Caller;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Export,
    Admin,
}

/// How it ended (for an export: `Started` before the first byte, then `Completed` or `Failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Started,
    Completed,
    Failed,
    Refused,
    Ok,
    Error,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Export => "export",
            Action::Admin => "admin",
        }
    }
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        }
    }
}

/// One row of the log.
#[derive(Debug, Clone)]
pub struct Entry {
    pub request_id: Option<String>,
    pub credential: String,
    pub role: String,
    pub action: Action,
    /// The route with its path parameters (`/companies/{company_id}/prospects` as requested).
    pub endpoint: String,
    /// The request's filters after parsing (normalised), as JSON.
    pub filters: Option<serde_json::Value>,
    pub fields: Option<String>,
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    pub client: Option<String>,
    pub outcome: Outcome,
    pub detail: Option<String>,
}

impl Entry {
    /// An entry for what `caller` did at `endpoint`; the rest is filled in by the caller.
    pub fn new(caller: &Caller, action: Action, endpoint: &str, outcome: Outcome) -> Entry {
        Entry {
            request_id: None,
            credential: caller.credential.label(),
            role: caller.role.name.clone(),
            action,
            endpoint: endpoint.to_owned(),
            filters: None,
            fields: None,
            rows: None,
            bytes: None,
            client: caller.client.map(|ip| ip.to_string()),
            outcome,
            detail: None,
        }
    }

    pub fn with_outcome(&self, outcome: Outcome) -> Entry {
        Entry {
            outcome,
            ..self.clone()
        }
    }
}

pub async fn record(db: impl PgExecutor<'_>, entry: &Entry) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO audit_log (request_id, credential, role, action, endpoint, filters, fields,
                                rows, bytes, client, outcome, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        entry.request_id,
        entry.credential,
        entry.role,
        entry.action.as_str(),
        entry.endpoint,
        entry.filters,
        entry.fields,
        entry.rows,
        entry.bytes,
        entry.client,
        entry.outcome.as_str(),
        entry.detail,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Reserves `rows` of `credential`'s allowance of `limit` rows today (UTC): false when they do not
/// fit (and nothing is reserved). Atomic: of two exports that only one fits, one is refused.
pub async fn reserve_export_rows(
    db: impl PgExecutor<'_>,
    credential: &str,
    rows: i64,
    limit: i64,
) -> Result<bool, sqlx::Error> {
    let reserved = sqlx::query_scalar!(
        r#"SELECT reserve_export_rows($1, $2, $3) AS "reserved!""#,
        credential,
        rows,
        limit
    )
    .fetch_one(db)
    .await?;
    Ok(reserved)
}

/// The rows `credential` exported today.
pub async fn exported_today(db: impl PgExecutor<'_>, credential: &str) -> Result<i64, sqlx::Error> {
    let rows = sqlx::query_scalar!(
        "SELECT rows FROM export_quota
         WHERE credential = $1 AND day = (now() AT TIME ZONE 'UTC')::date",
        credential
    )
    .fetch_optional(db)
    .await?;
    Ok(rows.unwrap_or(0))
}

/// Deletes audit rows older than `keep` (and quota rows of past days); the audit rows deleted.
pub async fn prune(pool: &PgPool, keep: Duration) -> Result<i64, sqlx::Error> {
    let deleted = sqlx::query_scalar!(
        r#"SELECT prune_audit_log($1::bigint * interval '1 millisecond') AS "deleted!""#,
        keep.as_millis().min(10_000_000_000_000) as i64,
    )
    .fetch_one(pool)
    .await?;
    sqlx::query!("DELETE FROM export_quota WHERE day < (now() AT TIME ZONE 'UTC')::date - 1")
        .execute(pool)
        .await?;
    Ok(deleted)
}

/// A row of the log, as `GET /admin/audit` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub request_id: Option<String>,
    pub credential: String,
    pub role: String,
    pub action: String,
    pub endpoint: String,
    #[schema(value_type = Option<Object>)]
    pub filters: Option<serde_json::Value>,
    pub fields: Option<String>,
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    pub client: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

/// Which rows `recent` lists: the newest `limit` before `before` (an id), of one credential and
/// one UTC day when given.
#[derive(Debug, Default)]
pub struct AuditFilter {
    pub credential: Option<String>,
    pub day: Option<chrono::NaiveDate>,
    pub before: Option<i64>,
    pub limit: i64,
}

/// The rows `filter` selects, newest first (the `at` and `(credential, at)` indexes bound a day).
pub async fn recent(pool: &PgPool, filter: &AuditFilter) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as!(
        AuditRow,
        "SELECT id, at, request_id, credential, role, action, endpoint, filters, fields, rows,
                bytes, client, outcome, detail
         FROM audit_log
         WHERE ($1::text IS NULL OR credential = $1) AND ($2::bigint IS NULL OR id < $2)
           AND ($3::date IS NULL
                OR (at >= $3::date::timestamp AT TIME ZONE 'UTC'
                    AND at < ($3::date + 1)::timestamp AT TIME ZONE 'UTC'))
         ORDER BY id DESC
         LIMIT $4",
        filter.credential,
        filter.before,
        filter.day,
        filter.limit
    )
    .fetch_all(pool)
    .await
}
