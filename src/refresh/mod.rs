//! Keeping the read models fresh, in either mode.
//!
//! - `refresher`: the in-process single-flight worker that every trigger goes through;
//! - `materialized`: one CONCURRENTLY refresh of one materialized view (mode `refresh`), in its own
//!   transaction, logged whatever happens;
//! - `incremental`: one round of incremental maintenance of every table-backed view (mode
//!   `incremental`): pending changes applied per company, builds swapped in, a repair's range;
//! - `full`: a full refresh of some views, each as its mode does it;
//! - `build`: a table-backed view built beside the one readers use, for the next round to swap in;
//! - `repair`: a table-backed view compared with its definition a range of companies at a time;
//! - `work`: the builds and repairs in progress, as every instance sees them;
//! - `watch`: what a backend building a relation is doing (conversions, builds);
//! - `report`: what both modes report and log: trigger, status, method, the record of a failure;
//! - `convert`: converting the read models between the modes (`migrate`, `serve`);
//! - `scheduler`: the triggers (a schedule, changes seen by polling or notification, catch-up after
//!   reconnecting) and the log's retention;
//! - `status`: what admins and `/metrics` read about the views.

mod build;
mod convert;
mod full;
mod incremental;
mod materialized;
mod refresher;
mod repair;
mod report;
mod scheduler;
pub mod status;
mod watch;
pub mod work;

pub use build::{BuildBeside, Built, build_beside};
pub use convert::{Conversion, convert_all};
pub use full::{Modes, modes, refresh_all, refresh_view, refresh_views, refresh_views_reporting};
pub use incremental::{RepairRange, Round, incremental_views, round as incremental_round};
pub use refresher::{RefreshOutcome, Refresher, stop_worker};
pub use repair::{Progressed, Repair};
pub use report::{RefreshMethod, RefreshReport, RefreshStatus, RefreshTrigger};
pub use scheduler::{
    CHANNEL, ChangeSource, NotifySettings, Retention, read_models_behind, run_change_watcher,
    run_housekeeping, run_schedule,
};

/// `base_table_changes` is a queue: every write appends to it, and its rows are deleted once every
/// view has seen them. After a bulk write it holds millions of dead rows that every poll and round
/// scans until a vacuum removes them, and autovacuum may be busy with the base tables themselves for
/// a long while then: measured at 10M prospects, 30 minutes after the seed it had not vacuumed the
/// table (1.1 GB, no live row) and a one-company round took 460 ms instead of 41 ms at 1M. Vacuuming
/// the small table every minute costs milliseconds.
async fn vacuum_change_record(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query!("VACUUM (SKIP_LOCKED) base_table_changes")
        .execute(pool)
        .await?;
    Ok(())
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_optional(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
