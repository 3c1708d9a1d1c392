//! Keeping the views fresh. `refresher` refreshes one view in one transaction and logs the outcome;
//! everything that decides *when* to refresh (schedule, notifications, admins) calls into it.

mod refresher;

pub use refresher::{
    RefreshReport, RefreshStatus, RefreshTrigger, populate_unpopulated, refresh_all, refresh_view,
};
