//! Building and running the server: `Application::build` prepares the database and binds the
//! listener (port 0 in tests), `run_until_stopped` serves until the given shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::commands::prepare_database;
use crate::config::{RefreshSettings, ServeConfig};
use crate::db;
use crate::http::cursor::CursorSigner;
use crate::http::{self, AppState, HttpSettings};
use crate::refresh;
use crate::seed::{self, SeedOptions};

pub struct Application {
    listener: TcpListener,
    router: Router,
    pool: PgPool,
    refresh: RefreshSettings,
}

/// Demo data: about 100,000 prospects, a few seconds to generate.
const DEMO: SeedOptions = SeedOptions {
    companies: 10_000,
    prospects_per_company: 10,
    seed: 42,
    replace: false,
};

impl Application {
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Application> {
        let pool = prepare_database(&config.database).await?;
        if config.demo {
            seed_demo_data_if_empty(&pool).await?;
        }
        let read_url = config
            .read_database_url
            .as_ref()
            .unwrap_or(&config.database.database_url);
        let read_pool = db::connect_read(&config.database, read_url, config.read_statement_timeout)
            .await
            .with_context(|| format!("connecting the read pool to {read_url}"))?;
        let state = AppState {
            read_pool,
            pool: pool.clone(),
            cursors: CursorSigner::load(&pool)
                .await
                .context("loading the cursor signing key")?,
            stale_after_secs: config.stale_after.as_secs(),
        };
        let settings = HttpSettings {
            request_timeout: config.request_timeout,
            cors_origins: config.cors_origins.clone(),
        };
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind_addr))?;
        Ok(Application {
            listener,
            router: http::router(state, &settings),
            pool,
            refresh: config.refresh.clone(),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets requests in flight finish.
    /// Views that hold no data yet are populated in the background meanwhile (they answer 503 until
    /// then, and `/readyz` says so).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let address = self.address();
        tracing::info!(
            "serving on http://{address} (API docs: http://{address}/docs, spec: http://{address}/openapi.json)"
        );
        let population = tokio::spawn(populate_views(self.pool.clone(), self.refresh.clone()));
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        population.abort();
        served
    }
}

async fn seed_demo_data_if_empty(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    if seed::base_tables_hold_data(&mut conn).await? {
        tracing::info!("--demo: the base tables already hold data; not seeding");
        return Ok(());
    }
    let summary = seed::seed(pool, &DEMO).await?;
    tracing::info!(
        companies = summary.companies,
        prospects = summary.prospects,
        seconds = summary.elapsed.as_secs_f64(),
        "--demo: seeded demo data"
    );
    Ok(())
}

async fn populate_views(pool: PgPool, settings: RefreshSettings) {
    match refresh::populate_unpopulated(&pool, &settings).await {
        Ok(reports) => {
            for report in reports {
                tracing::info!(view = %report.view, status = ?report.status, rows = ?report.rows, "startup population");
            }
        }
        Err(error) => tracing::error!(%error, "populating the views at startup failed"),
    }
}
