//! What decides *when* read models are maintained: a fixed schedule (a full refresh in either mode),
//! and changes to the base tables, seen either by polling the change record (the default) or through
//! the triggers' notifications, with a catch-up from the change record whenever watching (re)starts.
//! A change is applied at once to the table-backed views (an incremental apply is cheap and single
//! flight); the materialized views are refreshed after a burst of changes (debounced), and a refresh
//! that fails is asked for again with backoff. Also the retention of the refresh log.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::refresher::{RefreshOutcome, Refresher};
use super::report::{RefreshStatus, RefreshTrigger};
use super::{sleep_until_optional, stopped, vacuum_change_record};
use crate::config::{DatabaseUrl, Schedule};
use crate::metrics::Metrics;
use crate::views::{Mode, ViewName};

pub const CHANNEL: &str = "refresh_views";

/// Requests a full refresh of every view on `schedule` until shutdown. In incremental mode that is a
/// rebuild: it repairs whatever the triggers could not see (writes made with
/// `session_replication_role = replica`, say). A run that comes due while the last still runs
/// joins it (the refresher coalesces requests).
pub async fn run_schedule(
    refresher: Refresher,
    schedule: Schedule,
    mut shutdown: watch::Receiver<bool>,
) {
    while let Some(wait) = schedule.until_next() {
        tokio::select! {
            () = tokio::time::sleep(wait) => refresher.request_all(RefreshTrigger::Schedule),
            () = stopped(&mut shutdown) => return,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct NotifySettings {
    /// Quiet time after the last change of a burst before refreshing.
    pub debounce: Duration,
    /// The longest a burst may postpone the refresh after its first change.
    pub max_delay: Duration,
}

/// How base-table changes are noticed.
#[derive(Debug, Clone)]
pub enum ChangeSource {
    /// LISTEN for the triggers' notifications (REFRESH_NOTIFY=true).
    Notifications(DatabaseUrl),
    /// Read the change record this often (the default: writers pay no NOTIFY at commit).
    Polling(Duration),
}

enum ChangeEvent {
    /// Watching (again): changes made while nobody watched are found in the change record.
    Connected { first: bool },
    /// A notification arrived.
    Notified,
    /// Polling found views behind the base tables; `grew`: the change record grew since last time;
    /// `finished_before`: the jobs this process had finished when the poll began (a refresh that
    /// finished since may have caught up with what the poll saw behind).
    Pending {
        grew: bool,
        behind: Behind,
        finished_before: u64,
    },
    /// The refreshes asked for after a burst finished; `failed`: one of them did not refresh.
    Refreshed { failed: bool },
}

/// Which kinds of view are behind the base tables.
#[derive(Debug, Clone, Copy)]
struct Behind {
    materialized: bool,
    tables: bool,
}

/// Watches for base-table changes until shutdown: applies them to the table-backed views at once, and
/// refreshes the materialized views after a burst of them (debounced, but never later than
/// `max_delay` after its first change); whenever watching (re)starts, brings up to date the views the
/// change record says are behind (at startup that includes views never populated).
pub async fn run_change_watcher(
    pool: PgPool,
    source: ChangeSource,
    refresher: Refresher,
    settings: NotifySettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (events, mut received) = mpsc::channel(256);
    let outcomes = events.clone();
    let (watcher, trigger) = match source {
        ChangeSource::Notifications(url) => (
            tokio::spawn(receive_notifications(url, events, metrics)),
            RefreshTrigger::Notify,
        ),
        ChangeSource::Polling(interval) => (
            tokio::spawn(poll_changes(
                pool.clone(),
                interval,
                refresher.clone(),
                events,
                metrics,
            )),
            RefreshTrigger::Poll,
        ),
    };
    let mut burst: Option<(Instant, Instant)> = None; // (first, last) change
    let mut retry = Backoff::starting_at(FIRST_RETRY);
    let mut retry_at: Option<Instant> = None;
    loop {
        let deadline = burst
            .map(|(first, last)| (last + settings.debounce).min(first + settings.max_delay))
            .into_iter()
            .chain(retry_at)
            .min();
        tokio::select! {
            event = received.recv() => match event {
                Some(ChangeEvent::Notified) => {
                    // Notifications say nothing of modes: the last seen ones decide (a refresh of a
                    // view that has become a table rebuilds it, and the batch updates them).
                    if refresher.modes().contains(&Some(Mode::Incremental)) {
                        refresher.request_apply();
                    }
                    let now = Instant::now();
                    burst = Some((burst.map_or(now, |(first, _)| first), now));
                }
                Some(ChangeEvent::Pending { grew, behind, finished_before }) => {
                    if behind.tables {
                        refresher.request_apply();
                    }
                    if behind.materialized {
                        let now = Instant::now();
                        if grew {
                            burst = Some((burst.map_or(now, |(first, _)| first), now));
                        } else if burst.is_none()
                            && refresher.is_idle()
                            && refresher.finished_jobs() == finished_before
                        {
                            // Behind, nothing new since the last poll. A refresh that is running
                            // or queued will cover it (as at startup), and one that finished
                            // during the poll may have: only an idle refresher that finished
                            // nothing since must be asked again.
                            burst = Some((now, now));
                        }
                    }
                }
                Some(ChangeEvent::Connected { first }) => catch_up(&pool, &refresher, first).await,
                Some(ChangeEvent::Refreshed { failed: false }) => retry.reset(),
                Some(ChangeEvent::Refreshed { failed: true }) => {
                    // The changes are still there: nothing else would ask again until the next one
                    // (with notifications) or the next schedule.
                    retry_at = Some(Instant::now() + retry.next());
                }
                None => break,
            },
            () = sleep_until_optional(deadline) => {
                burst = None;
                retry_at = None;
                let asked = refresher.request_in_mode(Mode::Refresh, trigger);
                tokio::spawn(report_outcomes(asked, outcomes.clone()));
            }
            () = stopped(&mut shutdown) => break,
        }
    }
    watcher.abort();
}

/// Every `interval`, asks whether any view is behind the base tables (and whether the change record
/// grew). A failed poll is logged and retried with backoff.
async fn poll_changes(
    pool: PgPool,
    interval: Duration,
    refresher: Refresher,
    events: mpsc::Sender<ChangeEvent>,
    metrics: Arc<Metrics>,
) {
    if events
        .send(ChangeEvent::Connected { first: true })
        .await
        .is_err()
    {
        return;
    }
    let mut backoff = Backoff::default();
    let mut last_count: Option<i64> = None;
    loop {
        tokio::time::sleep(interval).await;
        let finished_before = refresher.finished_jobs();
        match poll(&pool).await {
            Ok((behind, changes)) => {
                backoff.reset();
                let grew = last_count
                    .zip(changes)
                    .is_some_and(|(last, now)| now > last);
                last_count = changes;
                if behind.materialized || behind.tables {
                    if grew {
                        metrics.record_notification();
                    }
                    if events
                        .send(ChangeEvent::Pending {
                            grew,
                            behind,
                            finished_before,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff.peek(), "polling the change record failed");
                backoff.wait().await;
            }
        }
    }
}

/// Which kinds of view are behind the base tables, and, when a materialized view is, how many changes
/// the record holds (to tell a burst that goes on). The count is a scan: after a bulk load the record
/// holds millions of rows until the tables catch up, which an incremental build does not need
/// counted four times a second.
async fn poll(pool: &PgPool) -> Result<(Behind, Option<i64>), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT COALESCE(bool_or(mode = 'refresh'), false) AS "materialized!",
                  COALESCE(bool_or(mode = 'incremental'), false) AS "tables!"
           FROM read_models_behind()"#
    )
    .fetch_one(pool)
    .await?;
    let behind = Behind {
        materialized: row.materialized,
        tables: row.tables,
    };
    let changes = if behind.materialized {
        let count = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM base_table_changes"#)
            .fetch_one(pool)
            .await?;
        Some(count)
    } else {
        None
    };
    Ok((behind, changes))
}

/// Brings up to date the views whose base data changed since their last refresh: a full refresh of
/// each such materialized view, an apply for the table-backed ones.
async fn catch_up(pool: &PgPool, refresher: &Refresher, first: bool) {
    let trigger = if first {
        RefreshTrigger::Startup
    } else {
        RefreshTrigger::Catchup
    };
    match read_models_behind(pool).await {
        Ok(behind) => {
            if !behind.is_empty() {
                tracing::info!(?behind, %trigger, "bringing up to date the views that are behind the base tables");
            }
            for (view, mode) in behind {
                match mode {
                    Mode::Refresh => drop(refresher.request(view, trigger)),
                    Mode::Incremental => refresher.request_apply(),
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "could not read the change record; the next notification or schedule will refresh")
        }
    }
}

/// The views whose base data changed since their last refresh (or never refreshed), with their mode.
pub async fn read_models_behind(pool: &PgPool) -> Result<Vec<(ViewName, Mode)>, sqlx::Error> {
    let rows = sqlx::query!(r#"SELECT view_name AS "view!", mode FROM read_models_behind()"#)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.view.parse().ok()?, row.mode?.parse().ok()?)))
        .collect())
}

/// How long the logs are kept (zero: for ever).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// REFRESH_LOG_RETENTION (each view's last success and last error are always kept).
    pub refresh_log: Duration,
    /// AUDIT_LOG_RETENTION.
    pub audit_log: Duration,
}

/// How often the housekeeping runs.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

/// Every minute until shutdown: deletes refresh log and error rows older than their retention,
/// keeping each view's last success and last error (`prune_refresh_log()`), audit rows older
/// than theirs (`prune_audit_log()`) and the rows the rounds changed after five minutes, and
/// vacuums the change record. Every instance does it: deleting what another instance already deleted costs nothing, and
/// a vacuum another instance is running is skipped.
pub async fn run_housekeeping(pool: PgPool, keep: Retention, mut shutdown: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(HOUSEKEEPING_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if !keep.refresh_log.is_zero() && let Err(error) = prune_log(&pool, keep.refresh_log).await {
                    tracing::warn!(%error, "pruning the refresh log failed; trying again in a minute");
                }
                if !keep.audit_log.is_zero() {
                    match crate::access::audit::prune(&pool, keep.audit_log).await {
                        Ok(0) => {}
                        Ok(rows) => tracing::info!(rows, "pruned the audit log"),
                        Err(error) => tracing::warn!(%error, "pruning the audit log failed; trying again in a minute"),
                    }
                }
                if let Err(error) = prune_changes(&pool).await {
                    tracing::warn!(%error, "pruning the rounds' changed rows failed; trying again in a minute");
                }
                if let Err(error) = vacuum_change_record(&pool).await {
                    tracing::warn!(%error, "vacuuming the change record failed; trying again in a minute");
                }
            }
            () = stopped(&mut shutdown) => return,
        }
    }
}

/// How long the rows each round changed are kept for the response caches: a cached response older
/// than this is rendered anew.
const KEEP_CHANGES_SECONDS: f64 = 300.0;

async fn prune_changes(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT prune_read_model_changes($1 * interval '1 second') AS "rounds!""#,
        KEEP_CHANGES_SECONDS
    )
    .fetch_one(pool)
    .await?;
    Ok(())
}

async fn prune_log(pool: &PgPool, keep: Duration) -> Result<(), sqlx::Error> {
    let pruned = sqlx::query!(
        r#"SELECT log_rows AS "log_rows!", error_rows AS "error_rows!"
           FROM prune_refresh_log($1::bigint * interval '1 millisecond')"#,
        // Capped (at about 300 years) so that PostgreSQL's interval cannot overflow.
        keep.as_millis().min(10_000_000_000_000) as i64,
    )
    .fetch_one(pool)
    .await?;
    if pruned.log_rows + pruned.error_rows > 0 {
        tracing::info!(
            log_rows = pruned.log_rows,
            error_rows = pruned.error_rows,
            "pruned the refresh log"
        );
    }
    Ok(())
}

/// Owns the `PgListener`: it is never cancelled mid-read, only this task reads from it. A lost
/// connection is re-established (and LISTEN re-issued) before `try_recv` returns `Ok(None)`; if that
/// fails, `try_recv` errs on every call, so we back off and start over.
async fn receive_notifications(
    database_url: DatabaseUrl,
    events: mpsc::Sender<ChangeEvent>,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Backoff::default();
    let mut first = true;
    loop {
        let mut listener = match listen(&database_url).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff.peek(), "cannot LISTEN for base-table changes");
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        if events.send(ChangeEvent::Connected { first }).await.is_err() {
            return;
        }
        first = false;
        loop {
            let event = match listener.try_recv().await {
                Ok(Some(_)) => {
                    metrics.record_notification();
                    ChangeEvent::Notified
                }
                Ok(None) => {
                    tracing::warn!(
                        "the notification connection was lost and re-established; catching up"
                    );
                    ChangeEvent::Connected { first: false }
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff.peek(), "the notification connection failed");
                    backoff.wait().await;
                    break;
                }
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// A failed refresh after a burst is asked for again this long after, doubling up to 30 s.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Waits for the refreshes asked for after a burst and tells the watcher whether all of them refreshed.
async fn report_outcomes(
    asked: Vec<oneshot::Receiver<RefreshOutcome>>,
    events: mpsc::Sender<ChangeEvent>,
) {
    let mut failed = false;
    for outcome in asked {
        failed |= !matches!(outcome.await, Ok(Ok(report)) if report.status != RefreshStatus::Error);
    }
    // A closed channel: the watcher has stopped, and nobody needs to know.
    let _ = events.send(ChangeEvent::Refreshed { failed }).await;
}

/// A listener on its own connection: it neither holds one of the request pool's connections nor
/// reconnects through one of them.
async fn listen(database_url: &DatabaseUrl) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(database_url.expose()).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Exponential backoff up to 30 s.
struct Backoff {
    first: Duration,
    now: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::starting_at(Duration::from_millis(100))
    }
}

impl Backoff {
    fn starting_at(first: Duration) -> Self {
        Backoff { first, now: first }
    }

    /// The wait to use now; the next one is twice as long.
    fn next(&mut self) -> Duration {
        let wait = self.now;
        self.now = (self.now * 2).min(Duration::from_secs(30));
        wait
    }

    fn peek(&self) -> Duration {
        self.now
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next()).await;
    }

    fn reset(&mut self) {
        self.now = self.first;
    }
}
