//! Connecting to PostgreSQL, creating the database, applying the embedded migrations.

use anyhow::Context;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::{Connection, Postgres};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::{DatabaseConfig, DatabaseUrl};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Creates the database named in `url` when it does not exist. Returns whether it created it.
pub async fn create_database_if_missing(url: &DatabaseUrl) -> Result<bool, sqlx::Error> {
    if Postgres::database_exists(url.expose()).await? {
        return Ok(false);
    }
    Postgres::create_database(url.expose()).await?;
    Ok(true)
}

/// Creates the database if needed, connects and applies pending migrations: what every command that
/// touches data needs first.
pub async fn prepare_database(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let url = &config.database_url;
    let created = create_database_if_missing(url)
        .await
        .map_err(|e| unreachable_database(config, e))?;
    if created {
        tracing::info!(database = %url, "created the database");
    }
    let pool = connect(config)
        .await
        .map_err(|e| unreachable_database(config, e))?;
    migrate(&pool).await.context("applying migrations failed")?;
    Ok(pool)
}

/// The error for a database we cannot reach: where we tried, why, and how to get one.
fn unreachable_database(config: &DatabaseConfig, error: sqlx::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach PostgreSQL at {url}: {error}\n\n\
         Point DATABASE_URL (or --database-url) at a running PostgreSQL 13 or newer, for example:\n  \
         - docker compose up -d db        (the compose file in this repository)\n  \
         - a local install, e.g. apt-get install postgresql, then use {default}",
        url = config.database_url,
        default = crate::config::DEFAULT_DATABASE_URL,
    )
}

/// A pool for `config`, connected eagerly so that a wrong URL fails here and not on first use.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    pool_options(config)
        .connect(config.database_url.expose())
        .await
}

/// A pooled connection idle for longer than this is checked (one round trip) before it is lent.
const CHECK_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Settings shared by both pools. sqlx checks every connection before lending it by default: a
/// round trip per statement that was 9.5% of the API's CPU under load (bench/README.md). As in
/// HikariCP, only connections idle for a while are checked; one in steady use has just proved itself,
/// and one that died anyway fails its statement (a 503) and leaves the pool.
fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.pool_size)
        .acquire_timeout(config.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > CHECK_IF_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Applies every migration not yet applied. Safe to run again: applied ones are skipped.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    adopt_squashed_migrations(pool).await?;
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Migrations 0002 to 0015, squashed into 0016 (its header says why), which builds the schema they
/// built.
const SQUASHED: std::ops::RangeInclusive<i64> = 2..=15;
const SQUASHED_INTO: i64 = 16;

/// A database that applied every squashed migration already has 0016's schema: their rows in
/// `_sqlx_migrations` give way to one for 0016, as if it had run (keeping when they were applied and
/// how long they took), so that sqlx finds a history it knows. Run by every instance that starts;
/// one adopts, the others then find nothing to do.
async fn adopt_squashed_migrations(pool: &PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let history =
        sqlx::query_scalar!(r#"SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS "exists!""#)
            .fetch_one(&mut *tx)
            .await?;
    if !history {
        return Ok(());
    }
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtext('prospect-api: adopt squashed migrations'))"
    )
    .execute(&mut *tx)
    .await?;
    let applied = sqlx::query_scalar!(
        r#"SELECT version AS "version!" FROM _sqlx_migrations
           WHERE version BETWEEN $1 AND $2 AND success ORDER BY version"#,
        SQUASHED.start(),
        SQUASHED.end(),
    )
    .fetch_all(&mut *tx)
    .await?;
    if applied.is_empty() {
        return Ok(());
    }
    if !SQUASHED.eq(applied.iter().copied()) {
        anyhow::bail!(
            "this database applied migrations {applied:?} of the {}..={} that this prospect-api \
             squashed into {SQUASHED_INTO}: migrate it first with a prospect-api from before the \
             squash (git commit da18316 or earlier), then with this one",
            SQUASHED.start(),
            SQUASHED.end(),
        );
    }
    let squash = MIGRATOR
        .iter()
        .find(|m| m.version == SQUASHED_INTO)
        .expect("the squashed migration is embedded");
    sqlx::query!(
        "WITH squashed AS (
             DELETE FROM _sqlx_migrations WHERE version BETWEEN $1 AND $2
             RETURNING installed_on, execution_time
         )
         INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
         SELECT $3, $4, max(installed_on), TRUE, $5, sum(execution_time)::bigint FROM squashed",
        SQUASHED.start(),
        SQUASHED.end(),
        SQUASHED_INTO,
        &*squash.description,
        &*squash.checksum,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        "adopted a database migrated before the squash: migrations {}..={} are now {SQUASHED_INTO}",
        SQUASHED.start(),
        SQUASHED.end()
    );
    Ok(())
}

/// Sets PostgreSQL settings for the rest of the current transaction (as `SET LOCAL` does): its
/// timeouts, its memory.
pub async fn set_local(
    conn: &mut sqlx::PgConnection,
    settings: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    let (names, values): (Vec<&str>, Vec<&str>) = settings.iter().copied().unzip();
    sqlx::query!(
        "SELECT set_config(name, value, true) FROM unnest($1::text[], $2::text[]) AS s(name, value)",
        &names as &[&str],
        &values as &[&str],
    )
    .fetch_all(conn)
    .await?;
    Ok(())
}

/// Whether the database orders text by bytes (a libc `C`, `POSIX` or `C.UTF-8` collation): then Rust
/// orders the read models' text as PostgreSQL does (the response cache relies on it to tell where a
/// changed row falls in a cached page).
pub async fn text_orders_bytewise(pool: &sqlx::PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT datlocprovider = 'c' AND datcollate IN ('C', 'POSIX', 'C.UTF-8', 'C.utf8') AS "bytewise!"
           FROM pg_database WHERE datname = current_database()"#
    )
    .fetch_one(pool)
    .await
}

/// Whether a pool connects before it is returned (so that a wrong URL fails at once) or on first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    Now,
    Lazily,
}

/// What the API's read sessions are called in `pg_stat_activity`.
pub const READ_APPLICATION_NAME: &str = "prospect-api reads";

/// The pool the API reads through. Its sessions are read-only, cancel statements that run past
/// `statement_timeout`, and plan every execution with its actual values (`force_custom_plan`): the
/// list queries use `($n IS NULL OR col = $n)` filters, which only fold away, letting the indexes
/// serve a sorted first page, in a plan made for the values at hand.
pub async fn connect_read(
    config: &DatabaseConfig,
    url: &DatabaseUrl,
    statement_timeout: Duration,
    connect: Connect,
) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url.expose())?
        .application_name(READ_APPLICATION_NAME)
        .options([
            ("default_transaction_read_only", "on".to_owned()),
            ("plan_cache_mode", "force_custom_plan".to_owned()),
            (
                "statement_timeout",
                crate::config::pg_duration(statement_timeout),
            ),
        ]);
    match connect {
        Connect::Now => pool_options(config).connect_with(options).await,
        Connect::Lazily => Ok(pool_options(config).connect_lazy_with(options)),
    }
}
