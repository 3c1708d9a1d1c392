//! Maintaining the table-backed read models (mode `incremental`): one round brings every one of them up
//! to date in one REPEATABLE READ transaction, so they all reflect the same snapshot (`/companies`
//! counts and `/prospects` rows agree), and logs that snapshot for each. A round applies the pending
//! changes per company, or diffs whole definitions when asked to rebuild (or when the change record
//! cannot say which companies changed, or too many did): see `maintain_incremental_read_models()` in
//! migration 0007.
//!
//! One process at a time maintains them: the round locks `read_model_catalog` before its first
//! snapshot-taking statement (`LOCK` takes none), so its snapshot sees every earlier round. The lock is
//! taken NOWAIT: while another process holds it, an apply has nothing to do here (that process is
//! applying, and the next poll looks again) and a rebuild waits its turn.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::report::{
    RefreshMethod, RefreshReport, RefreshStatus, RefreshTrigger, database_message, record_failure,
};
use crate::config::{RefreshSettings, pg_duration};
use crate::db::set_local;
use crate::views::ViewName;

/// How often a rebuild that found the lock taken tries again.
const RETRY_LOCK_EVERY: Duration = Duration::from_millis(100);

/// One round: the pending changes applied to every table-backed view, and the views in `rebuild`
/// diffed against their whole definition, in one transaction. Returns a report per table-backed view,
/// or none when there was nothing to do (or, for a plain apply, another process is applying).
///
/// A failed round is rolled back (the tables keep serving what they had, and the change record keeps
/// every change for the next round) and recorded for every table-backed view: `Ok` with status
/// `error`. `Err` means the outcome could not even be recorded.
#[tracing::instrument(skip(pool, settings), fields(trigger = %trigger))]
pub async fn round(
    pool: &PgPool,
    trigger: RefreshTrigger,
    rebuild: &[ViewName],
    settings: &RefreshSettings,
) -> Result<Vec<RefreshReport>, sqlx::Error> {
    // A rebuild compares this with the log, so it comes from the database's clock; a plain apply
    // only records it if it fails, as a refresh does, and saves the round trip.
    let requested_at = if rebuild.is_empty() {
        Utc::now()
    } else {
        database_clock(pool).await?
    };
    match round_when_free(pool, trigger, rebuild, settings, requested_at).await {
        Ok(reports) => {
            if !reports.is_empty() {
                tracing::info!(
                    views = reports.len(),
                    rows_changed = reports.iter().filter_map(|r| r.rows_changed).sum::<i64>(),
                    duration_ms = ?reports.last().and_then(|r| r.duration_ms),
                    "incremental round finished"
                );
            }
            Ok(reports)
        }
        Err(error) => {
            let message = database_message(&error);
            tracing::warn!(error = %message, "incremental round failed; its changes stay pending for the next one");
            let mut reports = Vec::new();
            for view in incremental_views(pool).await? {
                reports.push(record_failure(pool, view, trigger, requested_at, &message).await?);
            }
            Ok(reports)
        }
    }
}

/// Runs the round once the lock is free. A plain apply does not wait: whoever holds the lock is
/// applying the same changes. A rebuild waits (up to the statement timeout), then skips the views
/// another process rebuilt after it was requested.
async fn round_when_free(
    pool: &PgPool,
    trigger: RefreshTrigger,
    rebuild: &[ViewName],
    settings: &RefreshSettings,
    requested_at: DateTime<Utc>,
) -> Result<Vec<RefreshReport>, sqlx::Error> {
    let give_up = tokio::time::Instant::now() + settings.refresh_statement_timeout;
    loop {
        match try_round(pool, trigger, rebuild, settings, requested_at).await? {
            Some(reports) => return Ok(reports),
            None if rebuild.is_empty() => return Ok(Vec::new()),
            None if tokio::time::Instant::now() >= give_up => {
                return Err(sqlx::Error::Protocol(
                    "another process kept the incremental maintenance lock past REFRESH_STATEMENT_TIMEOUT".into(),
                ));
            }
            None => tokio::time::sleep(RETRY_LOCK_EVERY).await,
        }
    }
}

/// `None`: another process holds the lock.
async fn try_round(
    pool: &PgPool,
    trigger: RefreshTrigger,
    rebuild: &[ViewName],
    settings: &RefreshSettings,
    requested_at: DateTime<Utc>,
) -> Result<Option<Vec<RefreshReport>>, sqlx::Error> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let locked = sqlx::query!("LOCK TABLE read_model_catalog IN SHARE ROW EXCLUSIVE MODE NOWAIT")
        .execute(&mut *tx)
        .await;
    match locked {
        Err(sqlx::Error::Database(error))
            if error.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
        {
            tx.rollback().await?;
            return Ok(None);
        }
        locked => locked?,
    };
    // The transaction's snapshot is taken here, after the lock. No JIT: a round's statements are
    // planned afresh each time, and compiling them cost more than running them.
    let statement_timeout = pg_duration(settings.refresh_statement_timeout);
    let local = [
        ("statement_timeout", statement_timeout.as_str()),
        ("work_mem", settings.refresh_work_mem.as_str()),
        ("jit", "off"),
    ];
    set_local(&mut tx, &local).await?;
    let still = if rebuild.is_empty() {
        Vec::new()
    } else {
        still_to_rebuild(&mut tx, rebuild, requested_at).await?
    };
    let logged = sqlx::query!(
        r#"SELECT id AS "id!", view_name AS "view_name!", method, started_at AS "started_at!",
                  duration_ms, row_count, rows_changed, companies_changed
           FROM maintain_incremental_read_models($1, $2, $3)"#,
        trigger.as_str(),
        &still,
        settings.incremental_rebuild_share,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut reports: Vec<RefreshReport> = logged
        .into_iter()
        .filter_map(|row| {
            Some(RefreshReport {
                view: row.view_name.parse().ok()?,
                status: RefreshStatus::Ok,
                method: row.method.as_deref().and_then(RefreshMethod::parse),
                started_at: row.started_at,
                duration_ms: row.duration_ms,
                rows: row.row_count,
                rows_changed: row.rows_changed,
                companies_changed: row.companies_changed,
                error: None,
                log_id: Some(row.id),
            })
        })
        .collect();
    // What was asked of the views another process rebuilt meanwhile: that rebuild did it.
    for view in rebuild {
        if !still.iter().any(|name| name == view.as_str()) {
            reports.retain(|report| report.view != *view);
            reports.push(RefreshReport::skipped(*view, requested_at));
        }
    }
    reports.sort_by_key(|report| report.view);
    Ok(Some(reports))
}

const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The views of `rebuild` that no rebuild begun after `requested_at` already covers (another process
/// may have rebuilt them while this request waited for the lock).
async fn still_to_rebuild(
    tx: &mut sqlx::PgConnection,
    rebuild: &[ViewName],
    requested_at: DateTime<Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    let names: Vec<String> = rebuild.iter().map(|v| v.as_str().to_owned()).collect();
    sqlx::query_scalar!(
        r#"SELECT v AS "view!" FROM unnest($1::text[]) v
           WHERE NOT EXISTS (SELECT 1 FROM materialized_view_log l
                             WHERE l.view_name = v AND l.status = 'ok' AND l.method = 'rebuild'
                               AND l.started_at >= $2)"#,
        &names,
        requested_at,
    )
    .fetch_all(tx)
    .await
}

async fn database_clock(pool: &PgPool) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT clock_timestamp() AS "now!""#)
        .fetch_one(pool)
        .await
}

/// The views that are tables now.
pub async fn incremental_views(pool: &PgPool) -> Result<Vec<ViewName>, sqlx::Error> {
    let names = sqlx::query_scalar!(
        r#"SELECT name AS "name!" FROM read_models WHERE mode = 'incremental' ORDER BY position"#
    )
    .fetch_all(pool)
    .await?;
    Ok(names.iter().filter_map(|name| name.parse().ok()).collect())
}
