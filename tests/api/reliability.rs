//! Faults, injected into a real PostgreSQL under real HTTP load: every backend connection
//! terminated, a query past statement_timeout, the pool exhausted by slow queries, a view whose
//! refresh keeps failing, and two instances sharing one database. (Restarting PostgreSQL itself
//! would disturb every other test; `reliability/db_faults.py` does that one.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::helpers::{
    ADMIN_TOKEN, Away, FlakyProxy, TestApp, TestDb, eventually, header, json, serve_config,
    spawn_app_with, spawn_configured_app, spawn_instance,
};

/// What a client saw under load: the statuses, each checked to be a 200 or an honest 503.
type Observed = Vec<u16>;

/// Every non-200 under a fault must be a 503 problem with Retry-After (never a 500, never a hang).
async fn checked_status(response: reqwest::Response, what: &str) -> u16 {
    let status = response.status().as_u16();
    if status != 200 {
        assert_eq!(status, 503, "{what}: {}", response.text().await.unwrap());
        assert!(response.headers().contains_key("retry-after"), "{what}");
        json(response, 503).await;
    }
    status
}

/// `clients` tasks requesting `paths` in turn until `stop` is set.
fn start_load(
    addresses: Vec<String>,
    paths: &'static [&'static str],
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<Observed>> {
    (0..clients)
        .map(|client| {
            let addresses = addresses.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(15))
                    .build()
                    .unwrap();
                let mut seen = Vec::new();
                let mut i = client;
                while !stop.load(Ordering::Relaxed) {
                    let address = &addresses[i % addresses.len()];
                    let path = paths[i % paths.len()];
                    let response = http.get(format!("{address}{path}")).send().await;
                    let response = response.expect("the server answers (no hang, no reset)");
                    seen.push(checked_status(response, path).await);
                    i += 1;
                }
                seen
            })
        })
        .collect()
}

async fn stop_load(stop: &AtomicBool, load: Vec<JoinHandle<Observed>>) -> Observed {
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in load {
        all.extend(task.await.expect("a load task panicked"));
    }
    all
}

const READS: &[&str] = &[
    "/prospects?limit=5",
    "/companies?country=Germany&sort=-prospect_count",
    "/search?q=engineer",
    "/readyz",
];

/// Writes as the other app does, in a session of its own: sessions started after the server set
/// `prospect_api.notify` are the ones whose writes notify.
async fn insert_prospect(writer: &mut sqlx::PgConnection, id: &str) {
    sqlx::query!(
        r#"INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName") VALUES ($1, 'c_0', 'New', 'Person')"#,
        id
    )
    .execute(writer)
    .await
    .unwrap();
}

#[tokio::test]
async fn with_every_backend_terminated_under_load_clients_get_only_503s_and_service_returns_within_5_s()
 {
    let app = spawn_configured_app(|config| config.refresh_notify = true).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(vec![app.address.clone()], READS, 6, stop.clone());

    let mut server = app.db.server_connection().await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let terminated = sqlx::query_scalar!(
            r#"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS "n!"
               FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"#,
            app.db.name
        )
        .fetch_one(&mut server)
        .await
        .unwrap();
        assert!(terminated > 0);
    }
    let database_back = Instant::now();
    eventually(5, "serving again", || async {
        app.get("/prospects?limit=1").await.status() == 200
            && app.get("/readyz").await.status() == 200
    })
    .await;
    let recovered_in = database_back.elapsed();
    let seen = stop_load(&stop, load).await;
    let unavailable = seen.iter().filter(|s| **s == 503).count();
    eprintln!(
        "{} requests, {unavailable} answered 503, serving again {recovered_in:?} after the last termination",
        seen.len()
    );
    assert!(seen.iter().filter(|s| **s == 200).count() > 10);

    // The change listener lost its connection too: it reconnects and a new write still arrives.
    insert_prospect(&mut app.db.connection().await, "p_after_faults").await;
    eventually(10, "the write after the faults is served", || async {
        app.get("/prospects/p_after_faults").await.status() == 200
    })
    .await;
}

#[tokio::test]
async fn a_query_past_statement_timeout_is_a_503_query_timeout_and_the_next_one_is_served() {
    let app = spawn_configured_app(|config| {
        config.read_statement_timeout = Duration::from_millis(300);
    })
    .await;
    // A plain REFRESH holds ACCESS EXCLUSIVE on the view until its transaction ends: reads wait.
    let blocking = app.db.locking_summary_view().await;
    let started = Instant::now();
    let response = app.get("/companies").await;
    assert_eq!(response.headers()["retry-after"], "5");
    let problem = json(response, 503).await;
    assert_eq!(problem["type"], "urn:prospect-api:problem:query-timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    blocking.rollback().await.unwrap();
    app.get_json("/companies", 200).await;
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_within_the_request_timeout_while_healthz_still_answers() {
    let request_timeout = Duration::from_secs(4);
    let app = spawn_configured_app(|config| {
        config.database.pool_size = 2;
        config.database.acquire_timeout = Duration::from_millis(500);
        config.read_statement_timeout = Duration::from_secs(2);
        config.request_timeout = request_timeout;
    })
    .await;
    // A plain REFRESH holds ACCESS EXCLUSIVE on the view until its transaction ends: reads wait.
    let blocking = app.db.locking_summary_view().await;

    let slow: Vec<JoinHandle<(u16, String, Duration)>> = (0..12)
        .map(|_| {
            let client = app.client.clone();
            let url = format!("{}/companies?country=Germany", app.address);
            tokio::spawn(async move {
                let started = Instant::now();
                let response = client.get(url).send().await.unwrap();
                let elapsed = started.elapsed();
                assert!(response.headers().contains_key("retry-after"));
                let problem = json(response, 503).await;
                (503, problem["type"].as_str().unwrap().to_owned(), elapsed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health = Instant::now();
    app.get_json("/healthz", 200).await;
    assert!(health.elapsed() < Duration::from_millis(500));

    let mut kinds = Vec::new();
    for request in slow {
        let (_, kind, elapsed) = request.await.unwrap();
        assert!(
            elapsed < request_timeout + Duration::from_secs(1),
            "{elapsed:?}"
        );
        kinds.push(kind);
    }
    kinds.sort();
    kinds.dedup();
    for kind in &kinds {
        assert!(
            kind == "urn:prospect-api:problem:query-timeout"
                || kind == "urn:prospect-api:problem:database-unavailable",
            "{kinds:?}"
        );
    }
    blocking.rollback().await.unwrap();
    app.get_json("/companies?country=Germany", 200).await;
}

#[tokio::test]
async fn a_view_whose_refresh_keeps_failing_serves_its_last_data_with_a_growing_age_and_says_why() {
    let app = spawn_configured_app(|config| {
        config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
        config.stale_after = Some(Duration::from_secs(2));
    })
    .await;
    let before = app.get("/companies").await;
    let refreshed_at = header(&before, "x-data-refreshed-at");
    assert_eq!(header(&before, "x-data-stale"), "false");
    let rows = json(before, 200).await["data"].clone();

    // A lock on a base table (an app's migration, say) stops the refresh, which must read it, but
    // not the readers, who read only the view.
    let blocking = app
        .db
        .transaction_with(r#"LOCK TABLE "Company" IN ACCESS EXCLUSIVE MODE"#)
        .await;
    for _ in 0..3 {
        let response = app
            .client
            .post(format!("{}/admin/refresh", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(r#"{"views": ["company_summary_view"]}"#)
            .send()
            .await
            .unwrap();
        json(response, 500).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }

    let after = app.get("/companies").await;
    assert_eq!(header(&after, "x-data-refreshed-at"), refreshed_at);
    assert_eq!(header(&after, "x-data-stale"), "true");
    let age: u64 = header(&after, "x-data-age").parse().unwrap();
    assert!(age >= 3, "age {age}");
    assert_eq!(json(after, 200).await["data"], rows);

    let views = json(app.admin_get("/admin/views").await, 200).await;
    let summary = views
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["view"] == "company_summary_view")
        .unwrap();
    assert!(
        summary["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("lock timeout"),
        "{summary}"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("view_refresh_failures_total{view=\"company_summary_view\"} 3"),
        "{metrics}"
    );
    let gauge: f64 = metrics
        .lines()
        .find(|l| l.starts_with("view_data_age_seconds{view=\"company_summary_view\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("a data age gauge for the view");
    assert!(gauge >= 3.0, "{gauge}");
    blocking.rollback().await.unwrap();
}

/// Every refresh-log row of `view` that says "ok", as (started_at, finished_at).
async fn successful_refreshes(
    app: &TestApp,
    view: &str,
) -> Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    sqlx::query!(
        "SELECT started_at, finished_at FROM materialized_view_log
         WHERE view_name = $1 AND status = 'ok' ORDER BY started_at",
        view
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.started_at, r.finished_at))
    .collect()
}

#[tokio::test]
async fn two_instances_under_load_with_notifications_and_manual_refreshes_never_overlap_and_agree()
{
    let app = spawn_configured_app(|config| {
        config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
        config.refresh_notify = true;
    })
    .await;
    let mut second_config = serve_config(&app.db);
    second_config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
    second_config.refresh_notify = true;
    let second = spawn_instance(second_config).await;
    let addresses = vec![app.address.clone(), second.address.clone()];

    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(addresses.clone(), READS, 4, stop.clone());
    let admins: Vec<JoinHandle<()>> = addresses
        .iter()
        .map(|address| {
            let client = app.client.clone();
            let url = format!("{address}/admin/refresh");
            tokio::spawn(async move {
                for _ in 0..4 {
                    let response = client.post(&url).bearer_auth(ADMIN_TOKEN).send().await;
                    json(response.unwrap(), 200).await;
                }
            })
        })
        .collect();
    let mut writer = app.db.connection().await;
    for i in 0..20 {
        insert_prospect(&mut writer, &format!("p_two_{i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for admin in admins {
        admin.await.unwrap();
    }
    let seen = stop_load(&stop, load).await;
    assert!(seen.iter().all(|s| *s == 200), "{seen:?}");

    // Both instances end up serving the same rows from the same refresh.
    let deadline = Instant::now() + Duration::from_secs(15);
    let answers = loop {
        let mut answers = Vec::new();
        for address in &addresses {
            let response = app
                .client
                .get(format!("{address}/prospects?limit=500"))
                .send()
                .await
                .unwrap();
            let refreshed_at = header(&response, "x-data-refreshed-at");
            answers.push((refreshed_at, json(response, 200).await));
        }
        if answers[0] == answers[1] && answers[0].1.to_string().contains("p_two_19") {
            break answers;
        }
        assert!(
            Instant::now() < deadline,
            "the instances did not converge on the last write: {answers:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    for view in [
        "company_prospect_view",
        "company_summary_view",
        "prospect_search_view",
    ] {
        let refreshes = successful_refreshes(&app, view).await;
        assert!(refreshes.len() >= 3, "{view}: {refreshes:?}");
        for pair in refreshes.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{view}: overlapping refreshes {pair:?}"
            );
        }
    }
    // The age both report is measured from a refresh that the log records.
    let served: chrono::DateTime<chrono::Utc> =
        answers[0].0.parse().expect("an RFC 3339 timestamp");
    let logged = successful_refreshes(&app, "company_prospect_view").await;
    assert!(
        logged
            .iter()
            .any(|(started, _)| (*started - served).num_milliseconds().abs() < 1),
        "{served} not among {logged:?}"
    );
}

#[tokio::test]
async fn while_the_database_is_away_requests_are_answered_at_once_and_served_again_when_it_returns()
{
    for how in [Away::Refused, Away::Closed] {
        let db = TestDb::new().await;
        db.execute(include_str!("../fixtures/formatting_cases.sql"))
            .await;
        let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
        let target = format!("{}:{}", options.get_host(), options.get_port());
        let target = tokio::net::lookup_host(&target)
            .await
            .unwrap()
            .next()
            .unwrap();
        let proxy = FlakyProxy::start(target).await;
        let mut config = serve_config(&db);
        let through_proxy = db.url.replacen(
            &format!(":{}/", options.get_port()),
            &format!(":{}/", proxy.port),
            1,
        );
        config.database.database_url = through_proxy.parse().unwrap();
        config.database.acquire_timeout = Duration::from_secs(2);
        let app = spawn_app_with(db, config).await;
        app.wait_until_ready().await;
        assert_eq!(app.get("/prospects?limit=1").await.status(), 200);

        proxy.down(how);
        // Each request a different page, so that none is answered from the response cache.
        let mut answered_at_once = None;
        for limit in 2..20 {
            let response = app.get(&format!("/prospects?limit={limit}")).await;
            assert_eq!(response.status(), 503, "{how:?}: limit={limit}");
            let retry_after = header(&response, "retry-after");
            let body = json(response, 503).await;
            if body["detail"]
                .as_str()
                .unwrap()
                .contains("checking it in the background")
            {
                answered_at_once = Some((limit, retry_after));
                break;
            }
        }
        let (after, retry_after) = answered_at_once.expect("the circuit opened");
        assert!(
            after <= 2 + 3,
            "{how:?}: opened after {} requests",
            after - 2
        );
        assert_eq!(retry_after, "1");
        assert_eq!(
            app.get("/healthz").await.status(),
            200,
            "no database needed"
        );
        assert_eq!(app.get("/readyz").await.status(), 503);

        proxy.up();
        eventually(5, "serving again once the database is back", || async {
            app.get("/prospects?limit=30").await.status() == 200
        })
        .await;
        assert_eq!(app.get("/readyz").await.status(), 200, "{how:?}");
    }
}
