//! Keeping the read models fresh, in either mode.
//!
//! - `refresher`: one CONCURRENTLY refresh of one materialized view (mode `refresh`), in its own
//!   transaction, logged whatever happens; the report and trigger types both modes share;
//! - `incremental`: one round of incremental maintenance of every table-backed view (mode
//!   `incremental`): pending changes applied per company, or whole definitions diffed;
//! - `full`: a full refresh of some views, each as its mode does it;
//! - `convert`: converting the read models between the modes (`migrate`, `serve`);
//! - `coordinator`: the in-process single-flight worker that every trigger goes through;
//! - `scheduler`: the triggers (a schedule, changes seen by polling or notification, catch-up after
//!   reconnecting) and the log's retention;
//! - `status`: what admins and `/metrics` read about the views.

mod convert;
mod coordinator;
mod full;
mod incremental;
mod refresher;
mod scheduler;
pub mod status;

pub use convert::{Conversion, convert_all};
pub use coordinator::{RefreshOutcome, Refresher, stop_worker};
pub use full::{modes, refresh_all, refresh_view, refresh_views};
pub use incremental::round as incremental_round;
pub use refresher::{RefreshMethod, RefreshReport, RefreshStatus, RefreshTrigger};
pub use scheduler::{
    CHANNEL, ChangeSource, NotifySettings, Schedule, read_models_behind, run_change_watcher,
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
