//! One refresh of one materialized view (mode `refresh`): its own transaction, its own timeouts, the
//! cross-process advisory lock, and a row in `materialized_view_log` whatever happens.

use chrono::Utc;
use sqlx::PgPool;

use super::report::{
    RefreshMethod, RefreshReport, RefreshStatus, RefreshTrigger, database_message, record_failure,
};
use crate::config::{RefreshSettings, pg_duration};
use crate::db::set_local;
use crate::views::ViewName;

/// Refreshes one materialized view (CONCURRENTLY once populated) in its own transaction and logs it.
///
/// A failed refresh is rolled back, so the previous data stays served, and is then recorded in the log
/// and in `materialized_view_errors`: it is an `Ok(report)` with status `error`. `Err` means the outcome
/// could not even be recorded (the database is unreachable).
#[tracing::instrument(skip(pool, settings), fields(view = %view, trigger = %trigger))]
pub async fn refresh_materialized_view(
    pool: &PgPool,
    view: ViewName,
    trigger: RefreshTrigger,
    settings: &RefreshSettings,
) -> Result<RefreshReport, sqlx::Error> {
    let attempt_started = Utc::now();
    match refresh_in_transaction(pool, view, trigger, settings).await {
        Ok(report) => {
            tracing::info!(status = ?report.status, rows = ?report.rows, duration_ms = ?report.duration_ms, "view refresh finished");
            Ok(report)
        }
        Err(error) => {
            let message = database_message(&error);
            tracing::warn!(error = %message, "view refresh failed; the previous data stays served");
            record_failure(pool, view, trigger, attempt_started, &message).await
        }
    }
}

async fn refresh_in_transaction(
    pool: &PgPool,
    view: ViewName,
    trigger: RefreshTrigger,
    settings: &RefreshSettings,
) -> Result<RefreshReport, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let statement_timeout = pg_duration(settings.refresh_statement_timeout);

    // Waiting for another process's refresh of this view may take as long as that refresh runs, so
    // the advisory lock gets the statement timeout; the view's own lock gets the short lock timeout.
    let waiting = [
        ("lock_timeout", statement_timeout.as_str()),
        ("statement_timeout", statement_timeout.as_str()),
    ];
    set_local(&mut tx, &waiting).await?;
    let requested_at = sqlx::query_scalar!(r#"SELECT clock_timestamp() AS "requested_at!""#)
        .fetch_one(&mut *tx)
        .await?;

    // Held until commit or rollback: released even if this connection goes back to the pool.
    sqlx::query!(
        "SELECT FROM (SELECT pg_advisory_xact_lock(view_refresh_lock_key($1))) l",
        view.as_str()
    )
    .fetch_one(&mut *tx)
    .await?;

    let covered = sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM materialized_view_log
               WHERE view_name = $1 AND status = 'ok' AND started_at >= $2
           ) AS "covered!""#,
        view.as_str(),
        requested_at,
    )
    .fetch_one(&mut *tx)
    .await?;
    if covered {
        tx.rollback().await?;
        tracing::info!(
            "another process refreshed this view while we waited for its lock; skipping"
        );
        return Ok(RefreshReport::skipped(view, requested_at));
    }

    let lock_timeout = pg_duration(settings.refresh_lock_timeout);
    let refreshing = [
        ("lock_timeout", lock_timeout.as_str()),
        ("work_mem", settings.refresh_work_mem.as_str()),
    ];
    set_local(&mut tx, &refreshing).await?;

    let logged = sqlx::query!(
        r#"SELECT id AS "id!", started_at AS "started_at!", duration_ms, row_count
           FROM refresh_view_logged($1, $2)"#,
        view.as_str(),
        trigger.as_str(),
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;

    Ok(RefreshReport {
        view,
        status: RefreshStatus::Ok,
        method: Some(RefreshMethod::Refresh),
        started_at: logged.started_at,
        duration_ms: logged.duration_ms,
        rows: logged.row_count,
        rows_changed: None,
        companies_changed: None,
        error: None,
        log_id: Some(logged.id),
    })
}
