//! Shared test setup: a fresh, migrated PostgreSQL database per test on the real server.
//!
//! The server is the one `DATABASE_URL` names (any database on it), or the local default. Each test's
//! database is dropped when the test passes and kept (its name printed) when it fails. Databases left
//! behind by test processes that no longer run are dropped the next time tests start.

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::future::BoxFuture;
use prospect_api::config::{
    AccessConfig, DatabaseConfig, DatabaseUrl, MaintenanceConfig, RefreshSettings, ServeConfig,
};
use prospect_api::http::ReadModels;
use prospect_api::startup::Application;
use prospect_api::views::Mode;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tokio::sync::OnceCell;

const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PREFIX: &str = "prospect_api_test_";

static NEXT_ID: AtomicU32 = AtomicU32::new(0);
static SWEPT: OnceCell<()> = OnceCell::const_new();

/// The URL of any database on the test server (only its host, port and credentials are used).
fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.to_owned())
}

/// `server_url()` pointed at another database on the same server.
fn url_for_database(name: &str) -> String {
    let options =
        PgConnectOptions::from_str(&server_url()).expect("DATABASE_URL is not a valid URL");
    let user = options.get_username();
    let host = options.get_host();
    let port = options.get_port();
    // Keep the password (if any) from the original URL.
    let password = url_password(&server_url());
    match password {
        Some(password) => format!("postgres://{user}:{password}@{host}:{port}/{name}"),
        None => format!("postgres://{user}@{host}:{port}/{name}"),
    }
}

fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p.to_owned())
}

pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A new database as `prospect-api migrate` leaves it: every migration applied, the read models
    /// materialized views built from their definitions (not yet populated).
    pub async fn new() -> TestDb {
        TestDb::in_mode(Mode::Refresh).await
    }

    /// A new database as `prospect-api migrate` leaves it with VIEW_MAINTENANCE=`mode`.
    pub async fn in_mode(mode: Mode) -> TestDb {
        let db = TestDb::empty().await;
        prospect_api::db::migrate(&db.pool)
            .await
            .expect("migrations failed");
        db.convert(mode).await;
        db
    }

    /// Converts the read models to `mode`, as `migrate` and `serve` do.
    pub async fn convert(&self, mode: Mode) -> Vec<prospect_api::refresh::Conversion> {
        prospect_api::refresh::convert_all(
            &self.pool,
            mode,
            &quick_refresh_settings(),
            &prospect_api::progress::Progress::hidden("convert"),
        )
        .await
        .expect("converting the read models failed")
    }

    /// A new database with nothing in it.
    pub async fn empty() -> TestDb {
        SWEPT.get_or_init(sweep_stale_databases).await;
        let name = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        );
        let url = url_for_database(&name);
        if let Err(error) = Postgres::create_database(&url).await {
            panic!(
                "\n\nThe tests need a PostgreSQL server they can create databases on, and could not use \
                 {server}: {error}\n\
                 Start the local one (pg_ctlcluster 15 main start, or `docker compose up -d db`), or \
                 point DATABASE_URL at another server.\n\n",
                server = DatabaseUrl::from_str(&server_url())
                    .map(|u| u.redacted())
                    .unwrap_or_default(),
            );
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .expect("connecting to the test database failed");
        TestDb { pool, name, url }
    }

    /// A configuration pointing at this database, as the binary would build it.
    pub fn config(&self) -> DatabaseConfig {
        DatabaseConfig {
            database_url: self.url.parse().unwrap(),
            pool_size: 8,
            acquire_timeout: std::time::Duration::from_secs(5),
        }
    }

    /// A separate connection, for holding locks or transactions open beside the pool.
    pub async fn connection(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connecting to the test database failed")
    }

    /// A connection to the server's maintenance database (for statements about this database).
    pub async fn server_connection(&self) -> PgConnection {
        PgConnection::connect(&url_for_database("postgres"))
            .await
            .expect("connecting to the server failed")
    }

    /// Runs a fixture: several SQL statements.
    /// Each read model against its definition: rows only in the model plus rows only in the
    /// definition.
    pub async fn differences(&self) -> [i64; 3] {
        let row = sqlx::query!(
            r#"SELECT
                 (SELECT count(*) FROM ((SELECT * FROM company_prospect_view EXCEPT ALL SELECT * FROM company_prospect_view_definition)
                                        UNION ALL (SELECT * FROM company_prospect_view_definition EXCEPT ALL SELECT * FROM company_prospect_view)) x) AS "cpv!",
                 (SELECT count(*) FROM ((SELECT * FROM company_summary_view EXCEPT ALL SELECT * FROM company_summary_view_definition)
                                        UNION ALL (SELECT * FROM company_summary_view_definition EXCEPT ALL SELECT * FROM company_summary_view)) x) AS "summary!",
                 (SELECT count(*) FROM ((SELECT * FROM prospect_search_view EXCEPT ALL SELECT * FROM prospect_search_view_definition)
                                        UNION ALL (SELECT * FROM prospect_search_view_definition EXCEPT ALL SELECT * FROM prospect_search_view)) x) AS "search!""#
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        [row.cpv, row.summary, row.search]
    }

    /// The process id of a backend of this database whose statement contains `statement` and that
    /// waits for a lock.
    pub async fn waiting_for_a_lock(&self, statement: &str) -> Option<i32> {
        sqlx::query_scalar!(
            r#"SELECT pid AS "pid!" FROM pg_stat_activity
               WHERE datname = current_database() AND strpos(query, $1) > 0 AND wait_event_type = 'Lock'
                 AND pid <> pg_backend_pid()"#,
            statement
        )
        .fetch_optional(&self.pool)
        .await
        .unwrap()
    }

    /// How many rows `rows` holds: a relation with its condition (`"materialized_view_log WHERE
    /// trigger = 'read'"`), for the assertions on tables the API does not serve.
    pub async fn count(&self, rows: &'static str) -> i64 {
        let sql = format!("SELECT count(*) FROM {rows}");
        // `rows` is a test's own literal, never a value from outside.
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// A transaction on a connection of its own (outside the pool), begun with `statement`: a lock,
    /// a setting or a write that stays uncommitted while the test goes on, until it is committed,
    /// rolled back or dropped.
    pub async fn transaction_with(
        &self,
        statement: impl sqlx::SqlSafeStr,
    ) -> Transaction<'static, Postgres> {
        let apart = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.url)
            .await
            .unwrap();
        let mut transaction = apart.begin().await.unwrap();
        sqlx::query(statement)
            .execute(&mut *transaction)
            .await
            .unwrap();
        transaction
    }

    /// Holds a SHARE lock on `table` until the returned transaction ends: reads go on, writes to
    /// it (an apply's) wait.
    pub async fn blocking_writes_to(&self, table: &str) -> Transaction<'static, Postgres> {
        let statement = format!("LOCK TABLE {table} IN SHARE MODE");
        self.transaction_with(sqlx::AssertSqlSafe(statement)).await
    }

    /// Holds `company_summary_view`'s ACCESS EXCLUSIVE lock (a plain REFRESH in an open transaction,
    /// as a DBA might leave it) until the returned transaction ends: reads and refreshes of the view
    /// wait.
    pub async fn locking_summary_view(&self) -> Transaction<'static, Postgres> {
        self.transaction_with("REFRESH MATERIALIZED VIEW company_summary_view")
            .await
    }

    pub async fn execute(&self, sql: &'static str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .expect("fixture SQL failed");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: its database {} is kept for inspection",
                self.name
            );
            return;
        }
        let url = self.url.clone();
        // Drop runs inside the test's runtime, which must not be blocked on; a separate thread with its
        // own runtime drops the database (WITH (FORCE) closes the pool's remaining connections).
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = runtime.block_on(Postgres::force_drop_database(&url));
        })
        .join();
    }
}

/// Drops test databases whose creating process is gone.
async fn sweep_stale_databases() {
    let Ok(mut conn) = PgConnection::connect(&server_url()).await else {
        return;
    };
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'prospect\\_api\\_test\\_%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    for name in names {
        let pid = name
            .trim_start_matches(PREFIX)
            .split('_')
            .next()
            .unwrap_or("");
        let alive = !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = Postgres::force_drop_database(&url_for_database(&name)).await;
        }
    }
}

/// Refresh settings with short timeouts, so that a test provoking a lock wait fails fast.
pub fn quick_refresh_settings() -> RefreshSettings {
    RefreshSettings {
        refresh_lock_timeout: std::time::Duration::from_millis(300),
        refresh_statement_timeout: std::time::Duration::from_secs(60),
        refresh_work_mem: "64MB".to_owned(),
        // The fixtures are a few companies: any change would be a large share of them.
        incremental_rebuild_share: 1.0,
        refresh_build_timeout: std::time::Duration::from_secs(60),
    }
}

/// A database with 60 seeded companies of about 4 prospects each (from `seed`) and the fixture's
/// formatting cases, with `extra` written after them, every view refreshed: rows enough to compare
/// Rust's reading of the statements with the statements.
pub async fn seeded_and_fixture(seed: i64, extra: impl AsyncFnOnce(&PgPool)) -> TestDb {
    let db = TestDb::new().await;
    let options = prospect_api::seed::SeedOptions {
        companies: 60,
        prospects_per_company: 4,
        seed,
        replace: false,
    };
    let progress = prospect_api::progress::Progress::hidden("seed");
    prospect_api::seed::seed(&db.pool, &options, &progress)
        .await
        .unwrap();
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    extra(&db.pool).await;
    refresh_all_ok(&db.pool).await;
    db
}

/// Refreshes every view in full with `trigger` and the quick settings: the reports, whatever
/// each one's status.
pub async fn refresh_all_as(
    pool: &PgPool,
    trigger: prospect_api::refresh::RefreshTrigger,
) -> Vec<prospect_api::refresh::RefreshReport> {
    prospect_api::refresh::refresh_all(pool, trigger, &quick_refresh_settings())
        .await
        .unwrap()
}

/// Refreshes every view in full (as the CLI does) and asserts that each one succeeded.
pub async fn refresh_all_ok(pool: &PgPool) -> Vec<prospect_api::refresh::RefreshReport> {
    use prospect_api::refresh::{RefreshStatus, RefreshTrigger};
    let reports = refresh_all_as(pool, RefreshTrigger::Cli).await;
    assert!(
        reports.iter().all(|r| r.status == RefreshStatus::Ok),
        "{reports:?}"
    );
    reports
}

/// Refreshes one view in full with `trigger`, as the refresher would.
pub async fn refresh_one(
    pool: &PgPool,
    view: prospect_api::views::ViewName,
    trigger: prospect_api::refresh::RefreshTrigger,
) -> prospect_api::refresh::RefreshReport {
    prospect_api::refresh::refresh_view(pool, view, trigger, &quick_refresh_settings())
        .await
        .unwrap()
}

/// The real server, on a random port, over a test database.
pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub fn serve_config(db: &TestDb) -> ServeConfig {
    ServeConfig {
        database: db.config(),
        read_database_url: None,
        max_replica_lag: std::time::Duration::from_secs(10),
        replica_fallback: true,
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        read_statement_timeout: std::time::Duration::from_secs(5),
        request_timeout: std::time::Duration::from_secs(10),
        read_your_writes_timeout: std::time::Duration::from_secs(5),
        cors_origins: vec![],
        stale_after: Some(std::time::Duration::from_secs(1800)),
        admin_token: None,
        freshness_cache_ttl: std::time::Duration::from_secs(1),
        response_cache_bytes: 64 << 20,
        csv_max_rows: 100_000,
        refresh_interval: std::time::Duration::ZERO,
        refresh_schedule: None,
        refresh_notify: false,
        refresh_poll_interval: std::time::Duration::from_millis(50),
        refresh_debounce: std::time::Duration::from_millis(100),
        refresh_max_delay: std::time::Duration::from_secs(1),
        refresh_log_retention: std::time::Duration::from_secs(7 * 24 * 3600),
        demo: false,
        access: AccessConfig {
            access_policy: None,
            jwt_secret: None,
            jwt_jwks: None,
            jwt_audience: None,
            jwt_issuer: None,
            jwt_role_claim: "role".to_owned(),
            audit_log_retention: std::time::Duration::from_secs(365 * 24 * 3600),
        },
        maintenance: MaintenanceConfig {
            view_maintenance: Mode::Refresh,
        },
        refresh: quick_refresh_settings(),
    }
}

/// Starts the server over `db` with `config` (see `serve_config`), without waiting for readiness.
pub async fn spawn_app_with(db: TestDb, config: ServeConfig) -> TestApp {
    spawn_app_with_models(db, config, ReadModels::all()).await
}

/// The same, serving `models`.
pub async fn spawn_app_with_models(db: TestDb, config: ServeConfig, models: ReadModels) -> TestApp {
    let mut server = spawn_instance_with(config, models).await;
    TestApp {
        address: server.address.clone(),
        db,
        client: reqwest::Client::new(),
        shutdown: server.shutdown.take(),
    }
}

/// Another server process, sharing a `TestApp`'s database (as instances behind a load balancer do).
pub struct Instance {
    pub address: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Starts one more server with `config`, on its own port.
pub async fn spawn_instance(config: ServeConfig) -> Instance {
    spawn_instance_with(config, ReadModels::all()).await
}

async fn spawn_instance_with(config: ServeConfig, models: ReadModels) -> Instance {
    let app = Application::build_with(&config, models)
        .await
        .expect("the application builds");
    let address = format!("http://{}", app.address());
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Instance {
        address,
        shutdown: Some(shutdown),
    }
}

/// A ready server (views populated) over a database holding the formatting fixture.
pub async fn spawn_app() -> TestApp {
    spawn_configured_app(|_| {}).await
}

/// Like `spawn_app`, with the configuration adjusted first.
pub async fn spawn_configured_app(adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    let mut config = serve_config(&db);
    adjust(&mut config);
    let app = spawn_app_with(db, config).await;
    app.wait_until_ready().await;
    app
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef-0123";

/// A ready server with the admin endpoints enabled (token `ADMIN_TOKEN`).
pub async fn spawn_admin_app() -> TestApp {
    spawn_configured_app(|config| config.admin_token = Some(ADMIN_TOKEN.parse().unwrap())).await
}

/// Waits until `check` holds, polling every 50 ms, for at most `seconds`.
pub async fn eventually<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {seconds} s");
}

impl TestApp {
    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.get_with(path_and_query, &[]).await
    }

    /// A GET with these headers.
    pub async fn get_with(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .get(format!("{}{}", self.address, path_and_query));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request failed")
    }

    /// The JSON body of a GET, which must answer `status` (see `json`).
    pub async fn get_json(&self, path_and_query: &str, status: u16) -> serde_json::Value {
        json(self.get(path_and_query).await, status).await
    }

    /// A GET with the admin token.
    pub async fn admin_get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{}", self.address, path_and_query))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request failed")
    }

    pub async fn wait_until_ready(&self) {
        for _ in 0..200 {
            if self.get("/readyz").await.status() == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready within 10 s");
    }
}

/// Runs one statement of a test's own (a write, a lock, a setting), on a pool or within a
/// transaction, and asserts that it succeeded.
pub async fn run<'c>(executor: impl sqlx::PgExecutor<'c>, sql: &'static str) {
    sqlx::query(sql)
        .execute(executor)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

/// One value of the test database, for assertions on tables the API does not serve (the log, the
/// catalogs): `SELECT count(*) FROM …` and the like, without parameters.
pub async fn scalar<T>(pool: &PgPool, sql: &'static str) -> T
where
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// Asserts that a command succeeded, showing what it printed on stderr when it did not.
#[track_caller]
pub fn succeeded(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `key` of every object in the array `values`, as text.
pub fn strings<'v>(values: &'v serde_json::Value, key: &str) -> Vec<&'v str> {
    values
        .as_array()
        .expect("an array")
        .iter()
        .map(|value| value[key].as_str().expect("a string"))
        .collect()
}

/// A response header that must be there, as text.
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The JSON body of a response, checking its status and its Content-Type (problem+json for errors).
pub async fn json(response: reqwest::Response, expected_status: u16) -> serde_json::Value {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap();
    assert_eq!(status.as_u16(), expected_status, "body: {body}");
    let expected_type = if expected_status < 400 {
        "application/json"
    } else {
        "application/problem+json"
    };
    assert_eq!(content_type.as_deref(), Some(expected_type), "body: {body}");
    serde_json::from_str(&body).expect("the body is JSON")
}

/// The names of the parameters a 400 problem body rejects.
pub async fn rejected_params(response: reqwest::Response) -> Vec<String> {
    let body = json(response, 400).await;
    assert_eq!(body["status"], 400);
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body["invalid_params"]
        .as_array()
        .expect("invalid_params")
        .iter()
        .map(|p| {
            assert!(!p["reason"].as_str().unwrap().is_empty());
            p["name"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// A value for a declared filter that most rows of the test data fail (the extreme of its range, a
/// value no row holds): a filter that is parsed but never reaches the SQL returns every row.
pub fn value_excluding_most_rows(spec: &prospect_api::views::filters::FilterSpec) -> String {
    use prospect_api::views::filters::FilterKind;
    match spec.kind {
        FilterKind::Text | FilterKind::AnyOf | FilterKind::Terms { .. } => {
            "no-such-value".to_owned()
        }
        FilterKind::WholeNumber { min, .. } if spec.name.ends_with("_max") => min.to_string(),
        FilterKind::WholeNumber { max, .. } => max.to_string(),
        FilterKind::Timestamp => "9999-01-01T00:00:00Z".to_owned(),
    }
}

/// A TCP proxy in front of the test PostgreSQL that can be cut, to take the database away from a
/// server without touching PostgreSQL. `down(Away::Refused)` drops every connection through it and
/// stops listening (connection refused, as a database host that went away); `down(Away::Closed)`
/// drops them and closes each new one at once (as a load balancer in front of a database that
/// went away); `up()` lets connections through again, on the same port.
pub struct FlakyProxy {
    pub port: u16,
    state: tokio::sync::watch::Sender<ProxyState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Away {
    Refused,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyState {
    Up,
    Down(Away),
}

impl FlakyProxy {
    pub async fn start(target: std::net::SocketAddr) -> FlakyProxy {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = first.local_addr().unwrap();
        let (state, mut watch) = tokio::sync::watch::channel(ProxyState::Up);
        tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                let current = *watch.borrow_and_update();
                match (current, listener.take()) {
                    (ProxyState::Down(Away::Refused), _) => {} // listener dropped: refused
                    (_, None) => {
                        let socket = tokio::net::TcpSocket::new_v4().unwrap();
                        socket.set_reuseaddr(true).unwrap();
                        socket.bind(address).unwrap();
                        listener = Some(socket.listen(128).unwrap());
                        continue;
                    }
                    (_, Some(open)) => {
                        tokio::select! {
                            accepted = open.accept() => {
                                if let (Ok((inbound, _)), ProxyState::Up) = (accepted, current) {
                                    tokio::spawn(relay(inbound, target, watch.clone()));
                                } // else: closed at once
                            }
                            _ = watch.changed() => {}
                        }
                        listener = Some(open);
                        continue;
                    }
                }
                if watch.changed().await.is_err() {
                    return;
                }
            }
        });
        FlakyProxy {
            port: address.port(),
            state,
        }
    }

    pub fn down(&self, how: Away) {
        self.state.send_replace(ProxyState::Down(how));
    }

    pub fn up(&self) {
        self.state.send_replace(ProxyState::Up);
    }
}

async fn relay(
    mut inbound: tokio::net::TcpStream,
    target: std::net::SocketAddr,
    mut watch: tokio::sync::watch::Receiver<ProxyState>,
) {
    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = watch.wait_for(|state| *state != ProxyState::Up) => {} // cut: both sockets dropped
    }
}

/// A check written once for any read model, run on each (`each_read_model`).
pub trait ModelCheck {
    type Found: Send + 'static;
    fn check<M: prospect_api::views::ReadModel>(pool: PgPool) -> BoxFuture<'static, Self::Found>;
}

/// A read model's path and its check.
pub type CheckOf<T> = (&'static str, fn(PgPool) -> BoxFuture<'static, T>);

/// `C`'s check of every read model the service serves, by its path, ready to run.
pub fn each_read_model<C: ModelCheck>() -> Vec<CheckOf<C::Found>> {
    struct Collect<C: ModelCheck>(Vec<CheckOf<C::Found>>);
    impl<C: ModelCheck> prospect_api::views::ReadModelVisitor for Collect<C> {
        fn visit<M: prospect_api::views::ReadModel>(&mut self) {
            self.0.push((M::API.path, C::check::<M>));
        }
    }
    let mut collect = Collect::<C>(Vec::new());
    prospect_api::views::visit_read_models(&mut collect);
    collect.0
}
