//! Where the API's reads go. Without `READ_DATABASE_URL`, to the primary. With it, to that streaming
//! replica while it answers and its replay lag stays within `MAX_REPLICA_LAG`; otherwise to the
//! primary, or, with `REPLICA_FALLBACK=off`, nowhere (the caller answers 503); and back to the
//! replica once it has caught up to half the bound (so that a lag hovering at the bound does not flip
//! reads back and forth).
//!
//! A request picks its source once and reads both its freshness and its data there, so that
//! `X-Data-Age` is the age of what that server holds: on a replica, replication lag shows up as age.
//! Each source has its own freshness cache for the same reason.
//!
//! Replay lag is measured against the primary rather than read off the replica alone: every
//! `PROBE_EVERY` the monitor notes the primary's flushed WAL position and the time, then asks the
//! replica how far it has replayed; the lag is how long ago the primary was at that position. The
//! usual `now() - pg_last_xact_replay_timestamp()` on the replica overstates lag after an idle spell
//! (the last replayed commit is old though nothing is missing) and reads zero when the replica has
//! stopped receiving WAL altogether.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::views::freshness::FreshnessCache;

/// How often the monitor measures the replica's lag: the lag it reports is at most this much too
/// high, and reads leave a failed replica within about this long.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// The longest one probe of either server may take; a replica that does not answer within it is down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest a request waits for a replica connection (DATABASE_ACQUIRE_TIMEOUT when shorter).
/// A request that needs a new connection just as the replica stops waits this long (sqlx retries a
/// refused connection until then) before it is answered from the primary, or refused: the monitor
/// moves later requests within a probe, but cannot call back one already waiting. Waiting this long
/// for a busy replica likewise sends the request to the primary.
pub const REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    Primary,
    Replica,
}

impl Server {
    pub fn as_str(self) -> &'static str {
        match self {
            Server::Primary => "primary",
            Server::Replica => "replica",
        }
    }
}

/// One server's read-only pool and the freshness read from it.
#[derive(Clone)]
pub struct ReadSource {
    pub server: Server,
    pub pool: PgPool,
    pub freshness: Arc<FreshnessCache>,
}

impl ReadSource {
    pub fn new(server: Server, pool: PgPool, freshness_ttl: Duration) -> ReadSource {
        ReadSource {
            server,
            pool,
            freshness: Arc::new(FreshnessCache::new(freshness_ttl)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ReplicaSettings {
    /// Past this lag reads leave the replica.
    pub max_lag: Duration,
    /// Whether reads go to the primary while the replica cannot serve them (else: 503).
    pub fallback: bool,
}

/// What the monitor last found, for `/readyz` and `/metrics`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplicaStatus {
    /// Whether the replica answered the last probe.
    pub reachable: bool,
    /// How long ago the primary was at the WAL position the replica has replayed; null while unknown
    /// (the replica or the primary did not answer).
    pub lag_seconds: Option<f64>,
    pub max_lag_seconds: f64,
    /// Whether reads go to the primary while the replica cannot serve them.
    pub fallback: bool,
    /// Times reads left the replica since this process started.
    pub fallbacks: u64,
    /// Why the replica is not serving; null while it is.
    pub problem: Option<String>,
}

/// Where reads go, and the replica's state when there is one.
pub struct ReadRoute {
    primary: ReadSource,
    replica: Option<Replica>,
}

struct Replica {
    source: ReadSource,
    settings: ReplicaSettings,
    /// Read by every request; the status below is for reports.
    in_use: AtomicBool,
    status: Mutex<ReplicaStatus>,
}

/// Reads cannot be served: the replica is unusable and falling back is off.
#[derive(Debug, Clone)]
pub struct ReplicaUnusable(pub String);

impl ReadRoute {
    pub fn primary_only(primary: ReadSource) -> ReadRoute {
        ReadRoute {
            primary,
            replica: None,
        }
    }

    /// Reads start on the primary (or nowhere) until the monitor's first probe finds the replica
    /// usable (`ReplicaMonitor::start` measures before serving).
    pub fn with_replica(
        primary: ReadSource,
        replica: ReadSource,
        settings: ReplicaSettings,
    ) -> ReadRoute {
        let status = ReplicaStatus {
            reachable: false,
            lag_seconds: None,
            max_lag_seconds: settings.max_lag.as_secs_f64(),
            fallback: settings.fallback,
            fallbacks: 0,
            problem: Some("not probed yet".to_owned()),
        };
        ReadRoute {
            primary,
            replica: Some(Replica {
                source: replica,
                settings,
                in_use: AtomicBool::new(false),
                status: Mutex::new(status),
            }),
        }
    }

    /// The primary's read-only source (the fallback when there is a replica).
    pub fn primary(&self) -> &ReadSource {
        &self.primary
    }

    /// Whether there is a replica and reads may leave it for the primary (REPLICA_FALLBACK).
    pub fn falls_back_from_replica(&self) -> bool {
        self.replica
            .as_ref()
            .is_some_and(|replica| replica.settings.fallback)
    }

    /// The source for one request.
    pub fn choose(&self) -> Result<&ReadSource, ReplicaUnusable> {
        let Some(replica) = &self.replica else {
            return Ok(&self.primary);
        };
        if replica.in_use.load(Ordering::Relaxed) {
            Ok(&replica.source)
        } else if replica.settings.fallback {
            Ok(&self.primary)
        } else {
            let status = replica.status.lock().expect("never poisoned");
            Err(ReplicaUnusable(
                status
                    .problem
                    .clone()
                    .unwrap_or_else(|| "the replica is not serving".to_owned()),
            ))
        }
    }

    /// Where reads go now: None when nowhere (the replica is unusable and falling back is off).
    pub fn serving(&self) -> Option<Server> {
        self.choose().ok().map(|source| source.server)
    }

    /// The replica's last measured state; None without a replica.
    pub fn replica_status(&self) -> Option<ReplicaStatus> {
        let replica = self.replica.as_ref()?;
        Some(replica.status.lock().expect("never poisoned").clone())
    }

    /// Routes reads by one probe's outcome: the replica's lag (None: unknown, as before the
    /// primary's first sample), or why it could not be probed, in words fit for clients.
    fn record(&self, probe: Result<Option<Duration>, String>) {
        let Some(replica) = &self.replica else {
            return;
        };
        let max_lag = replica.settings.max_lag;
        let (reachable, lag, problem) = match probe {
            Ok(lag) => {
                let problem = lag.filter(|lag| *lag > max_lag).map(|lag| {
                    format!(
                        "the replica lags {:.1} s behind the primary (MAX_REPLICA_LAG {} s)",
                        lag.as_secs_f64(),
                        max_lag.as_secs_f64()
                    )
                });
                (true, lag, problem)
            }
            Err(problem) => (false, None, Some(problem)),
        };
        let was_in_use = replica.in_use.load(Ordering::Relaxed);
        // Back onto the replica only once it is well within the bound.
        let caught_up = lag.is_none_or(|lag| lag <= max_lag / 2);
        let use_it = reachable && problem.is_none() && (was_in_use || caught_up);
        let mut status = replica.status.lock().expect("never poisoned");
        status.reachable = reachable;
        status.lag_seconds = lag.map(|lag| lag.as_secs_f64());
        status.problem = match (problem, use_it) {
            (Some(problem), _) => Some(problem),
            (None, false) => Some("the replica is catching up".to_owned()),
            (None, true) => None,
        };
        if was_in_use && !use_it {
            status.fallbacks += 1;
            let to = if replica.settings.fallback {
                "the primary"
            } else {
                "nowhere (REPLICA_FALLBACK=off: 503)"
            };
            tracing::warn!(
                problem = status.problem.as_deref(),
                "reads leave the replica for {to}"
            );
        } else if !was_in_use && use_it {
            tracing::info!(lag_seconds = status.lag_seconds, "reads go to the replica");
        }
        replica.in_use.store(use_it, Ordering::Relaxed);
    }
}

/// Measures the replica's lag every `PROBE_EVERY` and routes reads by it. It probes the replica over
/// a connection of its own: through the read pool, a probe would queue behind requests under load
/// and time out, and reads would leave a replica that is merely busy.
pub struct ReplicaMonitor {
    route: Arc<ReadRoute>,
    primary: PgPool,
    history: WalHistory,
    connection: Option<PgConnection>,
    /// The last probe error logged, so that an outage is logged once, not every probe.
    last_error: Option<String>,
}

impl ReplicaMonitor {
    /// Measures once, so that reads are routed before the server takes requests.
    pub async fn start(route: Arc<ReadRoute>, primary: PgPool) -> ReplicaMonitor {
        let max_lag = route
            .replica
            .as_ref()
            .map_or(Duration::ZERO, |r| r.settings.max_lag);
        let mut monitor = ReplicaMonitor {
            route,
            primary,
            history: WalHistory::new(max_lag),
            connection: None,
            last_error: None,
        };
        monitor.measure().await;
        monitor
    }

    /// Until shutdown (at once without a replica).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if self.route.replica.is_none() {
            return;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(PROBE_EVERY) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            self.measure().await;
        }
    }

    /// Samples the primary's WAL position, then asks the replica how far it has replayed.
    async fn measure(&mut self) {
        let Some(replica) = &self.route.replica else {
            return;
        };
        if let Ok(Ok(position)) =
            tokio::time::timeout(PROBE_TIMEOUT, flushed_wal(&self.primary)).await
        {
            self.history.note(position, Instant::now());
        }
        let options = replica.source.pool.connect_options();
        let probe =
            match tokio::time::timeout(PROBE_TIMEOUT, replayed_wal(&mut self.connection, &options))
                .await
            {
                Ok(Ok(Some(replayed))) => Ok(self.history.lag(replayed)),
                Ok(Ok(None)) => Ok(Some(Duration::ZERO)),
                Ok(Err(error)) => {
                    // Connection details stay in the log; clients (503 bodies, /readyz) get the gist.
                    let error = error.to_string();
                    if self.last_error.as_ref() != Some(&error) {
                        tracing::warn!(%error, "the replica's probe failed");
                        self.last_error = Some(error);
                    }
                    Err("the replica does not answer".to_owned())
                }
                Err(_) => Err(format!(
                    "the replica did not answer within {} s",
                    PROBE_TIMEOUT.as_secs_f64()
                )),
            };
        if probe.is_err() {
            self.connection = None;
        } else {
            self.last_error = None;
        }
        self.route.record(probe);
    }
}

/// The primary's WAL position up to which a replica can have received everything.
async fn flushed_wal(primary: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::int8 AS "lsn!""#)
        .fetch_one(primary)
        .await
}

/// How far the replica has replayed; None when it is not in recovery: a server of its own (or the
/// primary itself), behind nothing. Connects first when `connection` is None.
async fn replayed_wal(
    connection: &mut Option<PgConnection>,
    options: &PgConnectOptions,
) -> Result<Option<i64>, sqlx::Error> {
    if connection.is_none() {
        *connection = Some(PgConnection::connect_with(options).await?);
    }
    let connection = connection.as_mut().expect("connected above");
    sqlx::query_scalar!(r#"SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8 AS "lsn""#)
        .fetch_one(connection)
        .await
}

/// The primary's flushed WAL positions over the recent past, each with the last time the primary was
/// seen there: enough to tell how long ago it was at any position a replica reports.
struct WalHistory {
    /// Increasing positions.
    samples: VecDeque<(i64, Instant)>,
    /// Samples older than this are dropped; a lag beyond it is reported as at least this.
    horizon: Duration,
}

impl WalHistory {
    fn new(max_lag: Duration) -> WalHistory {
        WalHistory {
            samples: VecDeque::new(),
            horizon: (max_lag * 4).max(Duration::from_secs(60)),
        }
    }

    fn note(&mut self, position: i64, at: Instant) {
        match self.samples.back_mut() {
            Some((last, seen)) if *last >= position => *seen = at,
            _ => self.samples.push_back((position, at)),
        }
        while self.samples.len() > 1
            && self
                .samples
                .front()
                .is_some_and(|(_, seen)| at.duration_since(*seen) > self.horizon)
        {
            self.samples.pop_front();
        }
    }

    /// How long before the latest sample the primary was last at or behind `replayed`: what the
    /// replica misses, in time. None before the first sample.
    fn lag(&self, replayed: i64) -> Option<Duration> {
        let (_, latest) = *self.samples.back()?;
        let caught_up_to = self
            .samples
            .iter()
            .rev()
            .find(|(position, _)| *position <= replayed)
            .or(self.samples.front())
            .map(|(_, seen)| *seen)?;
        Some(latest.duration_since(caught_up_to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_how_long_ago_the_primary_was_where_the_replica_replayed_to() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut history = WalHistory::new(Duration::from_secs(10));
        assert_eq!(history.lag(0), None, "nothing known before a sample");
        history.note(100, at(0));
        history.note(100, at(250)); // idle primary: the same position, seen later
        history.note(180, at(500));
        history.note(300, at(750));
        assert_eq!(history.lag(300), Some(Duration::ZERO), "caught up");
        assert_eq!(
            history.lag(400),
            Some(Duration::ZERO),
            "ahead of the sample"
        );
        assert_eq!(history.lag(180), Some(Duration::from_millis(250)));
        assert_eq!(
            history.lag(150),
            Some(Duration::from_millis(500)),
            "idle spell counts from its end"
        );
        assert_eq!(
            history.lag(10),
            Some(Duration::from_millis(500)),
            "behind every sample: at least as far back as the oldest sample's last sighting"
        );
    }

    #[test]
    fn old_samples_are_dropped_past_the_horizon_but_the_latest_is_kept() {
        let start = Instant::now();
        let mut history = WalHistory::new(Duration::from_secs(1));
        for second in 0..200u64 {
            history.note(second as i64, start + Duration::from_secs(second));
        }
        assert!(history.samples.len() <= 62, "{}", history.samples.len());
        assert_eq!(history.lag(199), Some(Duration::ZERO));
    }
}
