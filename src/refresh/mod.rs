//! Keeping the views fresh.
//!
//! - `refresher`: one refresh of one view, in its own transaction, logged whatever happens;
//! - `coordinator`: the in-process single-flight worker per view that every trigger goes through;
//! - `scheduler`: the triggers (a schedule, debounced notifications, catch-up after reconnecting);
//! - `status`: what admins and `/metrics` read about the views.

mod coordinator;
mod refresher;
mod scheduler;
pub mod status;

pub use coordinator::{RefreshOutcome, Refresher, stop_workers};
pub use refresher::{RefreshReport, RefreshStatus, RefreshTrigger, refresh_all, refresh_view};
pub use scheduler::{
    CHANNEL, ChangeSource, NotifySettings, run_change_watcher, run_schedule, views_needing_refresh,
};

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
