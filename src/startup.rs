//! Building and running the server: `Application::build` prepares the database and binds the
//! listener (port 0 in tests), `run_until_stopped` serves until the given shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::jwt::JwtVerifier;
use crate::access::{Policy, restriction};
use crate::config::{DatabaseConfig, Schedule, ServeConfig};
use crate::db::{self, Connect, prepare_database};
use crate::http::auth::Authenticator;
use crate::http::cursor::CursorSigner;
use crate::http::database_circuit::{self, DatabaseCircuit};
use crate::http::response_cache::ResponseCache;
use crate::http::{self, AppState, HttpSettings, ReadModels};
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::reads::{
    REPLICA_ACQUIRE_TIMEOUT, ReadRoute, ReadSource, ReplicaMonitor, ReplicaSettings, Server,
};
use crate::refresh::{self, ChangeSource, Modes, NotifySettings, Refresher, Retention};
use crate::seed::{self, SeedOptions};

pub struct Application {
    listener: TcpListener,
    router: Router,
    background: Background,
}

/// The refresh machinery that runs beside the server.
struct Background {
    pool: PgPool,
    changes: ChangeSource,
    refresher: Refresher,
    worker: JoinHandle<()>,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    schedule: Schedule,
    retention: Retention,
    notify: NotifySettings,
    /// Probed while the database is away.
    database: Arc<DatabaseCircuit>,
    /// Routes reads by the replica's lag (idle without a replica).
    replica_monitor: ReplicaMonitor,
}

/// How long a refresh that is running at shutdown may take to finish before it is rolled back.
const REFRESH_GRACE: Duration = Duration::from_secs(20);

/// How often the metrics' histograms are drained when nobody scrapes them.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

impl Application {
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Application> {
        Application::build_with(config, ReadModels::all()).await
    }

    /// The application serving `read_models` (every read model of `views`, and any added).
    pub async fn build_with(
        config: &ServeConfig,
        read_models: ReadModels,
    ) -> anyhow::Result<Application> {
        let policy = Arc::new(access_policy(config)?);
        let jwt = JwtVerifier::from_config(&config.access).await?;
        let pool = prepare_database(&config.database).await?;
        if config.demo {
            seed_demo_data_if_empty(&pool).await?;
        }
        let modes = convert_read_models(&pool, config).await?;
        let reads = Arc::new(read_route(config).await?);
        set_change_notifications(&pool, config.refresh_notify).await;
        let cursors = CursorSigner::load(&pool)
            .await
            .context("loading the cursor signing key")?;
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind_addr))?;

        let metrics = Arc::new(Metrics::default());
        let (shutdown, stopping) = watch::channel(false);
        let (refresher, worker) = Refresher::start(
            pool.clone(),
            config.refresh.clone(),
            metrics.clone(),
            modes,
            stopping,
        );
        // Watches the primary: a replica's failures move reads to the primary (or to a 503) instead.
        let database = Arc::new(DatabaseCircuit::new(
            reads.primary().pool.connect_options().as_ref().clone(),
        ));
        let replica_monitor = ReplicaMonitor::start(reads.clone(), pool.clone()).await;
        let state = AppState {
            refresher: refresher.clone(),
            metrics: metrics.clone(),
            auth: Arc::new(Authenticator::new(
                policy,
                config.admin_token.clone(),
                jwt,
                pool.clone(),
                metrics.clone(),
            )),
            reads,
            pool: pool.clone(),
            cursors,
            stale_after_secs: config.effective_stale_after().as_secs(),
            responses: response_cache(&pool, config.response_cache_bytes).await?,
            csv_max_rows: config.csv_max_rows.into(),
            database,
            own_writes_timeout: config.read_your_writes_timeout,
        };
        let settings = HttpSettings {
            request_timeout: config.request_timeout,
            cors_origins: config.cors_origins.clone(),
        };
        let background = Background {
            database: state.database.clone(),
            replica_monitor,
            pool,
            changes: if config.refresh_notify {
                ChangeSource::Notifications(config.database.database_url.clone())
            } else {
                ChangeSource::Polling(config.refresh_poll_interval)
            },
            refresher,
            worker,
            metrics,
            shutdown,
            schedule: config.schedule(),
            retention: Retention {
                refresh_log: config.refresh_log_retention,
                audit_log: config.access.audit_log_retention,
            },
            notify: NotifySettings {
                debounce: config.refresh_debounce,
                max_delay: config.refresh_max_delay,
            },
        };
        Ok(Application {
            listener,
            router: http::router(state, &settings, read_models),
            background,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets requests in flight finish, stops
    /// the schedule and the listener, and gives a running refresh `REFRESH_GRACE` to finish (past
    /// that it is rolled back: its log row is written in the same transaction, so none is left behind).
    /// Views holding no data yet are populated as soon as the listener connects (they answer 503 until
    /// then, and `/readyz` says so).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let address = self.address();
        tracing::info!(
            "serving on http://{address} (API docs: http://{address}/docs, metrics: http://{address}/metrics)"
        );
        let background = self.background;
        let stopping = background.shutdown.subscribe();
        let tasks = [
            tokio::spawn(refresh::run_schedule(
                background.refresher.clone(),
                background.schedule.clone(),
                stopping.clone(),
            )),
            tokio::spawn(refresh::run_change_watcher(
                background.pool.clone(),
                background.changes.clone(),
                background.refresher.clone(),
                background.notify,
                background.metrics.clone(),
                stopping.clone(),
            )),
            tokio::spawn(database_circuit::probe(
                background.database.clone(),
                stopping.clone(),
            )),
            tokio::spawn(background.replica_monitor.run(stopping.clone())),
            tokio::spawn(refresh::run_housekeeping(
                background.pool.clone(),
                background.retention,
                stopping.clone(),
            )),
            tokio::spawn(upkeep_metrics(background.metrics.clone(), stopping)),
        ];
        let served = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        let _ = background.shutdown.send(true);
        for task in tasks {
            let _ = task.await;
        }
        refresh::stop_worker(background.worker, REFRESH_GRACE).await;
        served
    }
}

/// The access policy ACCESS_POLICY names, or none (every read open): only on a loopback address,
/// where nobody but this machine can reach the port.
fn access_policy(config: &ServeConfig) -> anyhow::Result<Policy> {
    let access = &config.access;
    let Some(path) = &access.access_policy else {
        if access.verifies_jwts() {
            anyhow::bail!(
                "JWT_SECRET or JWT_JWKS is set without ACCESS_POLICY: a token's role means nothing \
                 without a policy declaring it. Set ACCESS_POLICY to a policy file (README, \
                 \"Access control\")."
            );
        }
        if !config.bind_addr.ip().is_loopback() {
            anyhow::bail!(
                "refusing to serve contact data on {} without an access policy: anyone who can \
                 reach that address could read and export every row. Set ACCESS_POLICY to a \
                 policy file (README, \"Access control\"), or bind a loopback address such as \
                 127.0.0.1 to try the API out.",
                config.bind_addr
            );
        }
        tracing::warn!(
            "no ACCESS_POLICY: every read is open to anyone who can reach {} (a loopback address); \
             set ACCESS_POLICY before serving anyone else",
            config.bind_addr
        );
        return Ok(Policy::open());
    };
    let policy = Policy::load(path, &restriction::known_columns()).map_err(anyhow::Error::msg)?;
    tracing::info!(
        policy = %path.display(),
        roles = policy.roles().count(),
        anonymous = policy.without_credentials().is_some(),
        "access policy loaded"
    );
    Ok(policy)
}

/// The read-only pools: the primary's alone, or a replica's with the primary's to fall back on. Both
/// are lazy when there is a replica: an instance starts while the replica is down (or has not yet
/// replayed the database), and the primary's read pool holds no connection until reads fall back.
async fn read_route(config: &ServeConfig) -> anyhow::Result<ReadRoute> {
    let settings = &config.database;
    let timeout = config.read_statement_timeout;
    let ttl = config.freshness_cache_ttl;
    let primary_url = &settings.database_url;
    let Some(replica_url) = &config.read_database_url else {
        let pool = db::connect_read(settings, primary_url, timeout, Connect::Now)
            .await
            .with_context(|| format!("connecting the read pool to {primary_url}"))?;
        return Ok(ReadRoute::primary_only(ReadSource::new(
            Server::Primary,
            pool,
            ttl,
        )));
    };
    let primary = db::connect_read(settings, primary_url, timeout, Connect::Lazily).await?;
    let replica_settings = DatabaseConfig {
        acquire_timeout: settings.acquire_timeout.min(REPLICA_ACQUIRE_TIMEOUT),
        ..settings.clone()
    };
    let replica = db::connect_read(&replica_settings, replica_url, timeout, Connect::Lazily)
        .await
        .with_context(|| format!("READ_DATABASE_URL {replica_url}"))?;
    Ok(ReadRoute::with_replica(
        ReadSource::new(Server::Primary, primary, ttl),
        ReadSource::new(Server::Replica, replica, ttl),
        ReplicaSettings {
            max_lag: config.max_replica_lag,
            fallback: config.replica_fallback,
        },
    ))
}

/// Converts the read models to VIEW_MAINTENANCE (a no-op when they are already so) and returns each
/// one's mode.
/// The response cache, told whether text keys compare in Rust as in the database.
async fn response_cache(pool: &PgPool, max_bytes: u64) -> anyhow::Result<Arc<ResponseCache>> {
    let cache = ResponseCache::new(max_bytes);
    cache.set_bytewise(crate::db::text_orders_bytewise(pool).await?);
    Ok(Arc::new(cache))
}

async fn convert_read_models(pool: &PgPool, config: &ServeConfig) -> anyhow::Result<Modes> {
    crate::views::check_catalog(pool).await?;
    let conversions = refresh::convert_all(
        pool,
        config.maintenance.view_maintenance,
        &config.refresh,
        &Progress::new("convert"),
    )
    .await
    .context("converting the read models to VIEW_MAINTENANCE")?;
    for conversion in conversions.iter().filter(|c| c.rebuilt) {
        tracing::info!(%conversion, "read model converted");
    }
    Ok(refresh::modes(pool).await?)
}

async fn seed_demo_data_if_empty(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    if seed::base_tables_hold_data(&mut conn).await? {
        tracing::info!("--demo: the base tables already hold data; not seeding");
        return Ok(());
    }
    let summary = seed::seed(pool, &SeedOptions::DEMO, &Progress::new("--demo seed")).await?;
    tracing::info!(
        companies = summary.companies,
        prospects = summary.prospects,
        seconds = summary.elapsed.as_secs_f64(),
        "--demo: seeded demo data"
    );
    Ok(())
}

/// Tells the base-table triggers whether to NOTIFY (a database-level setting, so it reaches the writing
/// app's new sessions). Needs the right to ALTER DATABASE; without it, say so and carry on: polling
/// finds every change either way, and a listener then hears whatever the setting already says.
async fn set_change_notifications(pool: &PgPool, enabled: bool) {
    if let Err(error) = sqlx::query!("SELECT set_change_notifications($1)", enabled)
        .fetch_one(pool)
        .await
    {
        tracing::warn!(%error, enabled, "could not set prospect_api.notify for this database");
    }
}

/// Drains the metrics' buffered histogram samples now and then, until shutdown.
async fn upkeep_metrics(metrics: Arc<Metrics>, mut stopping: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(METRICS_UPKEEP_EVERY) => metrics.run_upkeep(),
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}
