//! What every handler can reach.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::auth::Authenticator;
use super::cursor::CursorSigner;
use super::database_circuit::DatabaseCircuit;
use super::response_cache::ResponseCache;
use crate::metrics::Metrics;
use crate::reads::ReadRoute;
use crate::refresh::Refresher;

#[derive(Clone)]
pub struct AppState {
    pub refresher: Refresher,
    pub metrics: Arc<Metrics>,
    /// Who is asking, and what their role may do (every read and admin route).
    pub auth: Arc<Authenticator>,
    /// Where data and freshness reads go: the primary, or a replica watched for lag (read-only
    /// pools, `plan_cache_mode = force_custom_plan`, with a statement timeout). Handlers take the
    /// chosen `ReadSource` as an extractor.
    pub reads: Arc<ReadRoute>,
    /// The primary, for refreshes and the refresh log.
    pub pool: PgPool,
    pub cursors: CursorSigner,
    /// Data older than this is served with `X-Data-Stale: true`.
    pub stale_after_secs: u64,
    /// Whole data responses of the current generations, so that a repeated request runs no query.
    pub responses: Arc<ResponseCache>,
    /// The most rows of one CSV export.
    pub csv_max_rows: i64,
    /// Open while the database is unreachable: requests get a 503 at once.
    pub database: Arc<DatabaseCircuit>,
    /// The longest a request waits to see its own writes (`Prefer: min-freshness=now`).
    pub own_writes_timeout: Duration,
}
