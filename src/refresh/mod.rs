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
