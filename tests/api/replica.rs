//! Reads from a real PostgreSQL streaming replica: a throwaway primary and a physical replica of it
//! (reliability/pg_cluster.py: initdb, pg_basebackup -R, pg_ctl as the `postgres` OS user on free
//! ports), with API instances deployed as behind a load balancer: one on the primary alone, one
//! reading the replica.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prospect_api::config::{DatabaseConfig, ServeConfig};
use prospect_api::views::Mode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{Instance, eventually, header, quick_refresh_settings, run, spawn_instance};

const DATABASE: &str = "prospects";

/// A running primary and replica, stopped and removed on drop.
struct ReplicaCluster {
    dir: String,
    primary_port: u16,
    replica_port: u16,
}

impl ReplicaCluster {
    async fn start() -> ReplicaCluster {
        let out = pg_cluster(&["up"]).await;
        let ports: Value = serde_json::from_str(&out).expect("pg_cluster.py up prints JSON");
        ReplicaCluster {
            dir: ports["dir"].as_str().unwrap().to_owned(),
            primary_port: ports["primary_port"].as_u64().unwrap() as u16,
            replica_port: ports["replica_port"].as_u64().unwrap() as u16,
        }
    }

    fn primary_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{DATABASE}",
            self.primary_port
        )
    }

    fn replica_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{DATABASE}",
            self.replica_port
        )
    }

    async fn stop_replica(&self) {
        pg_cluster(&["stop", &self.dir, "replica"]).await;
    }

    async fn start_replica(&self) {
        pg_cluster(&["start", &self.dir, "replica"]).await;
    }

    /// The primary's database, migrated, holding the formatting fixture.
    async fn prepare_primary(&self) -> PgPool {
        let pool = prospect_api::db::prepare_database(&database_config(&self.primary_url()))
            .await
            .expect("preparing the primary");
        sqlx::raw_sql(include_str!("../fixtures/formatting_cases.sql"))
            .execute(&pool)
            .await
            .expect("the fixture loads");
        pool
    }

    /// A connection pool to the replica's copy (for pausing its replay).
    async fn replica_pool(&self) -> PgPool {
        PgPool::connect(&self.replica_url())
            .await
            .expect("connecting to the replica")
    }
}

impl Drop for ReplicaCluster {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .arg(script())
            .args(["down", &self.dir])
            .output();
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reliability/pg_cluster.py")
}

/// Runs the cluster script off the runtime (servers in this test keep serving meanwhile).
async fn pg_cluster(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script())
            .args(&args)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "pg_cluster.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn database_config(url: &str) -> DatabaseConfig {
    DatabaseConfig {
        database_url: url.parse().unwrap(),
        pool_size: 8,
        acquire_timeout: Duration::from_secs(5),
    }
}

/// An instance over the cluster's primary, reading the replica when `replica` is given.
fn instance_config(cluster: &ReplicaCluster, replica: bool) -> ServeConfig {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }
    let mut config = Cli::parse_from(["serve"]).serve;
    config.database = database_config(&cluster.primary_url());
    config.read_database_url = replica.then(|| cluster.replica_url().parse().unwrap());
    config.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.refresh_interval = Duration::ZERO;
    config.refresh_poll_interval = Duration::from_millis(50);
    config.refresh_debounce = Duration::from_millis(100);
    config.refresh_max_delay = Duration::from_secs(1);
    config.maintenance.view_maintenance = Mode::Incremental;
    config.refresh = quick_refresh_settings();
    config
}

async fn get(instance: &Instance, path: &str) -> reqwest::Response {
    reqwest::get(format!("{}{path}", instance.address))
        .await
        .expect("request failed")
}

/// Where `/readyz` says reads go ("primary", "replica"), or its status when not ready.
async fn reads_from(instance: &Instance) -> String {
    let response = get(instance, "/readyz").await;
    if response.status() != 200 {
        return response.status().as_str().to_owned();
    }
    let body: Value = response.json().await.unwrap();
    body["reads_from"].as_str().unwrap().to_owned()
}

/// A primary with a replica, the primary's pool, and an instance reading the primary.
async fn cluster_with_an_instance_on_the_primary() -> (ReplicaCluster, PgPool, Instance) {
    let cluster = ReplicaCluster::start().await;
    let primary = cluster.prepare_primary().await;
    let on_primary = spawn_instance(instance_config(&cluster, false)).await;
    wait_reading_from(&on_primary, "primary").await;
    (cluster, primary, on_primary)
}

async fn wait_reading_from(instance: &Instance, server: &str) {
    eventually(30, &format!("reads going to the {server}"), || async {
        reads_from(instance).await == server
    })
    .await;
}

/// Until the monitor has taken reads off the replica with nowhere to go (REPLICA_FALLBACK=off).
/// (`/readyz` answering 503 is not enough: a request still routed to a replica that just stopped is
/// a 503 too.)
async fn wait_refusing(instance: &Instance) {
    eventually(30, "reads refused", || async {
        metric(instance, "reads_served_from{server=\"replica\"}").await == Some(0.0)
            && metric(instance, "reads_served_from{server=\"primary\"}").await == Some(0.0)
    })
    .await;
    assert_eq!(reads_from(instance).await, "503");
}

async fn add_prospect(primary: &PgPool, id: &str) {
    sqlx::query(
        r#"INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "email")
           VALUES ($1, 'c_1000', 'Ada', 'Replica', $2)"#,
    )
    .bind(id)
    .bind(format!("{id}@thousand.example"))
    .execute(primary)
    .await
    .unwrap();
}

/// The primary's log: snapshot time of company_prospect_view's latest successful refresh or apply,
/// and its age on the primary's clock.
async fn primary_log(primary: &PgPool) -> (String, f64) {
    sqlx::query_as(
        r#"SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                  extract(epoch FROM clock_timestamp() - started_at)::float8
           FROM last_successful_refreshes() WHERE view_name = 'company_prospect_view'"#,
    )
    .fetch_one(primary)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_reading_the_replica_serves_what_the_replica_holds_with_its_true_age() {
    let (cluster, primary, on_primary) = cluster_with_an_instance_on_the_primary().await;
    let mut config = instance_config(&cluster, true);
    config.max_replica_lag = Duration::from_secs(600);
    let on_replica = spawn_instance(config).await;
    wait_reading_from(&on_replica, "replica").await;

    // With the replica's replay paused, a write reaches the primary's read models but not the replica.
    let replica = cluster.replica_pool().await;
    run(&replica, "SELECT pg_wal_replay_pause()").await;
    add_prospect(&primary, "p_replicated").await;
    eventually(30, "the write served by the primary's instance", || async {
        get(&on_primary, "/prospects/p_replicated").await.status() == 200
    })
    .await;
    let response = get(&on_replica, "/prospects/p_replicated").await;
    assert_eq!(
        response.status(),
        404,
        "the replica's instance reads the replica"
    );
    let paused_at = header(
        &get(&on_replica, "/prospects?limit=1").await,
        "x-data-refreshed-at",
    );
    let (newest, _) = primary_log(&primary).await;
    assert!(
        paused_at < newest,
        "the replica's instance reports the replica's older snapshot ({paused_at}), not the primary's ({newest})"
    );

    // Replay resumes: the write shows up, with the snapshot time and age of the primary's log.
    run(&replica, "SELECT pg_wal_replay_resume()").await;
    // Until the freshness cache's entry (TTL 1 s) from before is read again, the age may be the
    // older snapshot's: too high, never too low.
    eventually(
        30,
        "the write served through the replica with its new age",
        || async {
            let response = get(&on_replica, "/prospects/p_replicated").await;
            response.status() == 200 && header(&response, "x-data-refreshed-at") != paused_at
        },
    )
    .await;
    let response = get(&on_replica, "/prospects/p_replicated").await;
    let (logged_at, logged_age) = primary_log(&primary).await;
    assert_eq!(header(&response, "x-data-refreshed-at"), logged_at);
    let age: f64 = header(&response, "x-data-age").parse().unwrap();
    assert!(
        (age - logged_age).abs() <= 1.5,
        "X-Data-Age {age} against the primary's log {logged_age:.2}"
    );
}

/// Counts the statuses of a steady stream of requests to one instance until stopped.
struct Load {
    running: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Load {
    /// Runs `step` again and again until dropped, counting the steps that succeed and those that fail.
    fn repeat<F, Fut>(mut step: F) -> Load
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let load = Load {
            running: Arc::new(AtomicBool::new(true)),
            ok: Arc::default(),
            failed: Arc::default(),
        };
        let (running, ok, failed) = (load.running.clone(), load.ok.clone(), load.failed.clone());
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let counter = if step().await { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        load
    }

    /// One client reading `instance` without pause.
    fn start(instance: &Instance) -> Load {
        let client = reqwest::Client::new();
        let url = format!("{}/prospects?limit=5&industry=Software", instance.address);
        Load::repeat(move || {
            let request = client.get(&url).send();
            async move { matches!(request.await, Ok(response) if response.status() == 200) }
        })
    }

    /// (answered 200, anything else) so far.
    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

/// Keeps the primary writing WAL (one update every 50 ms) until dropped, so that a paused replica
/// falls behind.
fn keep_writing(primary: PgPool) -> Load {
    Load::repeat(move || {
        let primary = primary.clone();
        async move {
            let written = sqlx::query(
                r#"UPDATE "Prospect" SET "jobTitle" = md5(random()::text) WHERE id = 'p_both'"#,
            )
            .execute(&primary)
            .await
            .is_ok();
            tokio::time::sleep(Duration::from_millis(50)).await;
            written
        }
    })
}

async fn metric(instance: &Instance, name: &str) -> Option<f64> {
    let text = get(instance, "/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .map(|value| value.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_leave_a_stopped_or_lagging_replica_and_come_back_or_answer_503_without_fallback() {
    let (cluster, primary, _on_primary) = cluster_with_an_instance_on_the_primary().await;
    let mut config = instance_config(&cluster, true);
    config.max_replica_lag = Duration::from_secs(1);
    let falling_back = spawn_instance(config.clone()).await;
    config.replica_fallback = false;
    let strict = spawn_instance(config).await;
    wait_reading_from(&falling_back, "replica").await;
    wait_reading_from(&strict, "replica").await;
    assert_eq!(metric(&falling_back, "replica_up").await, Some(1.0));

    // Replay paused under load while the primary keeps writing: the lag passes MAX_REPLICA_LAG.
    let load = Load::start(&falling_back);
    let replica = cluster.replica_pool().await;
    run(&replica, "SELECT pg_wal_replay_pause()").await;
    let writer = keep_writing(primary.clone());
    wait_reading_from(&falling_back, "primary").await;
    let lag = metric(&falling_back, "replica_lag_seconds").await.unwrap();
    assert!(lag > 1.0, "replica_lag_seconds {lag}");
    assert_eq!(
        metric(&falling_back, "reads_served_from{server=\"primary\"}").await,
        Some(1.0)
    );
    wait_refusing(&strict).await;
    let refused = get(&strict, "/prospects?limit=1").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(header(&refused, "retry-after"), "1");
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:prospect-api:problem:replica-unusable");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("MAX_REPLICA_LAG"),
        "{problem}"
    );

    run(&replica, "SELECT pg_wal_replay_resume()").await;
    replica.close().await;
    wait_reading_from(&falling_back, "replica").await;
    wait_reading_from(&strict, "replica").await;
    drop(writer);

    // The replica stopped under load: reads move to the primary, and back once it is up again.
    cluster.stop_replica().await;
    wait_reading_from(&falling_back, "primary").await;
    eventually(10, "replica_up 0", || async {
        metric(&falling_back, "replica_up").await == Some(0.0)
    })
    .await;
    // A request that was waiting for a replica connection when it stopped waits out
    // REPLICA_ACQUIRE_TIMEOUT (1 s; sqlx retries a refused connection until then) and is then
    // answered from the primary; the ones after it go to the primary at once.
    let (ok_before, _) = load.counts();
    eventually(10, "requests served from the primary", || async {
        load.counts().0 > ok_before + 10
    })
    .await;
    wait_refusing(&strict).await;
    let started = std::time::Instant::now();
    let refused = get(&strict, "/prospects?limit=1").await;
    let elapsed = started.elapsed();
    let status = refused.status();
    let body = refused.text().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        elapsed < Duration::from_secs(1),
        "refused at once, not after a timeout: {elapsed:?} {body}"
    );

    cluster.start_replica().await;
    wait_reading_from(&falling_back, "replica").await;
    wait_reading_from(&strict, "replica").await;
    assert_eq!(get(&strict, "/prospects?limit=1").await.status(), 200);
    let (ok, failed) = load.counts();
    assert!(ok > 0);
    // Requests in flight on the replica when it stopped were answered again from the primary.
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(
        metric(&falling_back, "replica_fallbacks_total")
            .await
            .unwrap()
            >= 2.0
    );
}
