//! What decides *when* views are refreshed: a fixed schedule, and notifications from the base-table
//! triggers (debounced), with a catch-up from the change record whenever the listener (re)connects.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::coordinator::Refresher;
use super::refresher::RefreshTrigger;
use super::stopped;
use crate::config::DatabaseUrl;
use crate::metrics::Metrics;
use crate::views::ViewName;

pub const CHANNEL: &str = "refresh_views";

/// Requests a refresh of every view every `interval` (never, for zero) until shutdown.
pub async fn run_schedule(
    refresher: Refresher,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    if interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => refresher.request_all(RefreshTrigger::Schedule),
            () = stopped(&mut shutdown) => return,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct NotifySettings {
    /// Quiet time after the last notification of a burst before refreshing.
    pub debounce: Duration,
    /// The longest a burst may postpone the refresh after its first notification.
    pub max_delay: Duration,
}

enum ListenerEvent {
    /// LISTEN is (again) in place; writes made while it was not may have gone unnotified.
    Connected {
        first: bool,
    },
    Notified,
}

/// Listens on `refresh_views` until shutdown: debounced notifications refresh every view, and each
/// (re)connection refreshes the views the change record says are behind (on the first connection,
/// that includes views never populated).
pub async fn run_listener(
    pool: PgPool,
    database_url: DatabaseUrl,
    refresher: Refresher,
    settings: NotifySettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (events, mut received) = mpsc::channel(256);
    let receiver = tokio::spawn(receive_notifications(database_url, events, metrics));
    let mut burst: Option<(Instant, Instant)> = None; // (first, last) notification
    loop {
        let deadline =
            burst.map(|(first, last)| (last + settings.debounce).min(first + settings.max_delay));
        tokio::select! {
            event = received.recv() => match event {
                Some(ListenerEvent::Notified) => {
                    let now = Instant::now();
                    burst = Some((burst.map_or(now, |(first, _)| first), now));
                }
                Some(ListenerEvent::Connected { first }) => catch_up(&pool, &refresher, first).await,
                None => break,
            },
            () = sleep_until_optional(deadline) => {
                burst = None;
                refresher.request_all(RefreshTrigger::Notify);
            }
            () = stopped(&mut shutdown) => break,
        }
    }
    receiver.abort();
}

async fn sleep_until_optional(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Refreshes the views whose base data changed since their last refresh.
async fn catch_up(pool: &PgPool, refresher: &Refresher, first: bool) {
    let trigger = if first {
        RefreshTrigger::Startup
    } else {
        RefreshTrigger::Catchup
    };
    match views_needing_refresh(pool).await {
        Ok(views) => {
            if !views.is_empty() {
                tracing::info!(?views, %trigger, "refreshing views that are behind the base tables");
            }
            for view in views {
                drop(refresher.request(view, trigger));
            }
        }
        Err(error) => {
            tracing::warn!(%error, "could not read the change record; the next notification or schedule will refresh")
        }
    }
}

pub async fn views_needing_refresh(pool: &PgPool) -> Result<Vec<ViewName>, sqlx::Error> {
    let names = sqlx::query_scalar!(
        r#"SELECT v AS "view!" FROM views_needing_refresh() v
           ORDER BY array_position(refreshable_views(), v)"#
    )
    .fetch_all(pool)
    .await?;
    Ok(names.iter().filter_map(|name| name.parse().ok()).collect())
}

/// Owns the `PgListener`: it is never cancelled mid-read, only this task reads from it. A lost
/// connection is re-established (and LISTEN re-issued) before `try_recv` returns `Ok(None)`; if that
/// fails, `try_recv` errs on every call, so we back off and start over.
async fn receive_notifications(
    database_url: DatabaseUrl,
    events: mpsc::Sender<ListenerEvent>,
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
        if events
            .send(ListenerEvent::Connected { first })
            .await
            .is_err()
        {
            return;
        }
        first = false;
        loop {
            let event = match listener.try_recv().await {
                Ok(Some(_)) => {
                    metrics.record_notification();
                    ListenerEvent::Notified
                }
                Ok(None) => {
                    tracing::warn!(
                        "the notification connection was lost and re-established; catching up"
                    );
                    ListenerEvent::Connected { first: false }
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

/// A listener on its own connection: it neither holds one of the request pool's connections nor
/// reconnects through one of them.
async fn listen(database_url: &DatabaseUrl) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(database_url.expose()).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Exponential backoff from 100 ms to 30 s.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(100))
    }
}

impl Backoff {
    fn peek(&self) -> Duration {
        self.0
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
    }

    fn reset(&mut self) {
        *self = Backoff::default();
    }
}
