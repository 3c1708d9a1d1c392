//! Maintaining the table-backed read models (mode `incremental`): one round brings every one of them up
//! to date in one REPEATABLE READ transaction, so they all reflect the same snapshot (`/companies`
//! counts and `/prospects` rows agree), and logs that snapshot for each. A round applies the pending
//! changes per company, swaps in the models built beside (`build`), recomputes the companies a
//! repair found different (`repair`), and says which models only a build can bring up to date: see
//! `maintain_incremental_read_models()` in schema/current.sql.
//!
//! One process at a time maintains them: the round locks `read_model_catalog` before its first
//! snapshot-taking statement (`LOCK` takes none), so its snapshot sees every earlier round. The lock is
//! taken NOWAIT: while another process holds it, an apply has nothing to do here (that process is
//! applying, and the next poll looks again) and a repair's range waits for the next turn.

use chrono::Utc;
use sqlx::PgPool;

use super::report::{
    RefreshMethod, RefreshReport, RefreshStatus, RefreshTrigger, database_message, record_failure,
};
use crate::config::{RefreshSettings, pg_duration};
use crate::db::set_local;
use crate::views::{PerView, ViewName};

/// What a repair asks of a round: recompute, in `views`, the `companies` a range found different
/// from the definitions.
#[derive(Debug, Clone, Default)]
pub struct RepairRange {
    pub views: Vec<ViewName>,
    pub companies: Vec<String>,
    /// The repair's last range: its round logs method `repair` with the rows the whole repair
    /// changed (`repaired_before`: those of the earlier ranges).
    pub last: bool,
    pub repaired_before: PerView<i64>,
}

/// What a round did.
#[derive(Debug, Default)]
pub struct Round {
    /// The models brought up to date (applied, repaired, swapped in), or failed.
    pub reports: Vec<RefreshReport>,
    /// Left alone: only a build beside can bring them up to date.
    pub to_build: Vec<ViewName>,
    /// Left alone: another session holds their lock (a build beside).
    pub busy: Vec<ViewName>,
    /// Rows the repair's range deleted plus inserted, per model.
    pub repaired: PerView<i64>,
    /// Another process held the maintenance lock: nothing was done.
    pub locked_elsewhere: bool,
}

impl Round {
    pub fn failed(&self) -> bool {
        self.reports
            .iter()
            .any(|r| r.status == RefreshStatus::Error)
    }
}

/// One round: the pending changes applied to every table-backed view, builds waiting swapped in,
/// and `repair`'s range compared with the definitions, in one transaction.
///
/// A failed round is rolled back (the tables keep serving what they had, and the change record keeps
/// every change for the next round) and recorded for every table-backed view: `Ok` with status
/// `error`. `Err` means the outcome could not even be recorded.
#[tracing::instrument(skip_all, fields(trigger = %trigger))]
pub async fn round(
    pool: &PgPool,
    trigger: RefreshTrigger,
    repair: Option<&RepairRange>,
    settings: &RefreshSettings,
) -> Result<Round, sqlx::Error> {
    let requested_at = Utc::now();
    match try_round(pool, trigger, repair, settings).await {
        Ok(round) => {
            if !round.reports.is_empty() {
                tracing::info!(
                    views = round.reports.len(),
                    rows_changed = round.reports.iter().filter_map(|r| r.rows_changed).sum::<i64>(),
                    duration_ms = ?round.reports.last().and_then(|r| r.duration_ms),
                    "incremental round finished"
                );
            }
            Ok(round)
        }
        Err(error) => {
            let message = database_message(&error);
            tracing::warn!(error = %message, "incremental round failed; its changes stay pending for the next one");
            let mut reports = Vec::new();
            for view in incremental_views(pool).await? {
                reports.push(record_failure(pool, view, trigger, requested_at, &message).await?);
            }
            Ok(Round {
                reports,
                ..Round::default()
            })
        }
    }
}

async fn try_round(
    pool: &PgPool,
    trigger: RefreshTrigger,
    repair: Option<&RepairRange>,
    settings: &RefreshSettings,
) -> Result<Round, sqlx::Error> {
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
            return Ok(Round {
                locked_elsewhere: true,
                ..Round::default()
            });
        }
        locked => locked?,
    };
    // The transaction's snapshot is taken here, after the lock.
    set_maintenance_settings(&mut tx, settings).await?;
    let no_repair = RepairRange::default();
    let range = repair.unwrap_or(&no_repair);
    let repair_views: Vec<&str> = range.views.iter().map(|v| v.as_str()).collect();
    let repaired_before = serde_json::Value::Object(
        range
            .repaired_before
            .iter()
            .map(|(view, rows)| (view.as_str().to_owned(), (*rows).into()))
            .collect(),
    );
    let rows = sqlx::query!(
        r#"SELECT view_name AS "view_name!", outcome AS "outcome!", log_id, method, started_at,
                  duration_ms, row_count, rows_changed, companies_changed, repaired
           FROM maintain_incremental_read_models($1, '{}', $2, $3, $4, $5, $6)"#,
        trigger.as_str(),
        settings.incremental_rebuild_share,
        &repair_views as &[&str],
        &range.companies,
        range.last,
        repaired_before,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut round = Round::default();
    for row in rows {
        let Ok(view) = row.view_name.parse::<ViewName>() else {
            continue;
        };
        round.repaired[view] += row.repaired.unwrap_or(0);
        match (row.outcome.as_str(), row.log_id, row.started_at) {
            ("to_build", ..) => round.to_build.push(view),
            ("busy", ..) => round.busy.push(view),
            ("maintained" | "swapped", Some(log_id), Some(started_at)) => {
                round.reports.push(RefreshReport {
                    view,
                    status: RefreshStatus::Ok,
                    method: row.method.as_deref().and_then(RefreshMethod::parse),
                    started_at,
                    duration_ms: row.duration_ms,
                    rows: row.row_count,
                    rows_changed: row.rows_changed,
                    companies_changed: row.companies_changed,
                    error: None,
                    log_id: Some(log_id),
                })
            }
            _ => {} // a repaired range that changed nothing
        }
    }
    round.reports.sort_by_key(|report| report.view);
    Ok(round)
}

impl Round {
    /// Whether it swapped builds in: it then forgot every change they covered (after a bulk load,
    /// millions of dead rows that every poll and round scans until a vacuum removes them).
    pub fn swapped(&self) -> bool {
        self.reports
            .iter()
            .any(|r| r.method == Some(RefreshMethod::Build))
    }
}

const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The views that are tables now.
pub async fn incremental_views(pool: &PgPool) -> Result<Vec<ViewName>, sqlx::Error> {
    let names = sqlx::query_scalar!(
        r#"SELECT name AS "name!" FROM read_models WHERE mode = 'incremental' ORDER BY position"#
    )
    .fetch_all(pool)
    .await?;
    Ok(names.iter().filter_map(|name| name.parse().ok()).collect())
}

/// The settings of a transaction that compares read models with their definitions (a round, a
/// repair's comparison): its timeout and memory. No JIT: these statements are planned afresh each
/// time, and compiling them cost more than running them.
pub(super) async fn set_maintenance_settings(
    conn: &mut sqlx::PgConnection,
    settings: &RefreshSettings,
) -> Result<(), sqlx::Error> {
    let statement_timeout = pg_duration(settings.refresh_statement_timeout);
    let local = [
        ("statement_timeout", statement_timeout.as_str()),
        ("work_mem", settings.refresh_work_mem.as_str()),
        ("jit", "off"),
    ];
    set_local(conn, &local).await
}
