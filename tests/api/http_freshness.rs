//! Freshness on every data response: X-Data-Age, ETag/304, staleness, 503 before population.

use std::time::Duration;

use prospect_api::refresh::{RefreshReport, RefreshTrigger};
use prospect_api::views::ViewName;
use sqlx::Connection;

use crate::helpers::{
    ADMIN_TOKEN, TestApp, TestDb, eventually, header, json, refresh_one, run, serve_config,
    spawn_app, spawn_app_with, spawn_configured_app,
};

/// Refreshes `company_prospect_view` through a pool of its own, as another instance or a cron job
/// would: the server under test learns of it only from the refresh log.
async fn refresh_from_another_process(app: &TestApp) -> RefreshReport {
    let other = sqlx::PgPool::connect(&app.db.url).await.unwrap();
    refresh_one(
        &other,
        ViewName::CompanyProspectView,
        RefreshTrigger::Schedule,
    )
    .await
}

#[tokio::test]
async fn every_data_endpoint_carries_the_freshness_headers() {
    let app = spawn_app().await;
    for path in [
        "/prospects",
        "/prospects/p_both",
        "/companies",
        "/companies/c_0",
        "/companies/c_0/prospects",
        "/search?q=ada",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let age: u64 = header(&response, "x-data-age").parse().unwrap();
        assert!(age < 60, "{path}: {age}");
        chrono::DateTime::parse_from_rfc3339(&header(&response, "x-data-refreshed-at")).unwrap();
        assert_eq!(header(&response, "x-data-stale"), "false");
        assert!(header(&response, "etag").starts_with('"'));
        assert_eq!(header(&response, "cache-control"), "private, no-cache");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    }
}

#[tokio::test]
async fn x_data_age_follows_a_refresh_made_by_another_process() {
    // Reading the log on every request (no freshness cache): another process's refresh shows at once.
    let app = spawn_configured_app(|config| config.freshness_cache_ttl = Duration::ZERO).await;
    // Another process (its own pool) refreshes the view; this server reads the log it wrote.
    let report = refresh_from_another_process(&app).await;
    let response = app.get("/prospects").await;
    let refreshed_at =
        chrono::DateTime::parse_from_rfc3339(&header(&response, "x-data-refreshed-at")).unwrap();
    assert_eq!(
        refreshed_at.timestamp_millis(),
        report.started_at.timestamp_millis()
    );

    // Pretend every refresh of the view is two hours older: the age says so, and the data is flagged
    // stale.
    run(&app.db.pool, "UPDATE materialized_view_log SET started_at = started_at - interval '2 hours', finished_at = finished_at - interval '2 hours'
         WHERE view_name = 'company_prospect_view'").await;
    let response = app.get("/prospects").await;
    let age: u64 = header(&response, "x-data-age").parse().unwrap();
    assert!((7200..7260).contains(&age), "{age}");
    assert_eq!(header(&response, "x-data-stale"), "true");
    // Other views keep their own age.
    let companies = app.get("/companies").await;
    assert!(header(&companies, "x-data-age").parse::<u64>().unwrap() < 60);
}

#[tokio::test]
async fn a_matching_if_none_match_gets_a_304_until_a_refresh_changes_the_body() {
    let app = spawn_configured_app(|config| {
        config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
        config.freshness_cache_ttl = Duration::from_secs(3600);
    })
    .await;
    let first = app.get("/prospects?industry=Software").await;
    let etag = header(&first, "etag");
    assert_ne!(
        etag,
        header(&app.get("/prospects?industry=Retail").await, "etag"),
        "ETags differ per query"
    );

    let revalidated = app
        .get_with("/prospects?industry=Software", &[("if-none-match", &*etag)])
        .await;
    assert_eq!(revalidated.status(), 304);
    assert_eq!(header(&revalidated, "etag"), etag);
    assert!(revalidated.headers().contains_key("x-data-age"));
    assert!(revalidated.bytes().await.unwrap().is_empty());

    let refresh = || async {
        let refreshed = app
            .client
            .post(format!("{}/admin/refresh", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"views": ["company_prospect_view"]}))
            .send()
            .await
            .unwrap();
        json(refreshed, 200).await;
    };
    // A refresh that changed nothing the page shows leaves its ETag: the client's copy is current.
    refresh().await;
    let unchanged = app
        .get_with("/prospects?industry=Software", &[("if-none-match", &*etag)])
        .await;
    assert_eq!(unchanged.status(), 304);
    assert_ne!(
        header(&unchanged, "x-data-refreshed-at"),
        header(&first, "x-data-refreshed-at"),
        "a newer generation, seen at once by the instance that refreshed"
    );

    // One that changed a row of it changes the ETag.
    run(
        &app.db.pool,
        r#"UPDATE "Prospect" SET "firstName" = 'Renamed' WHERE "id" = 'p_both'"#,
    )
    .await;
    refresh().await;
    let after_refresh = app
        .get_with("/prospects?industry=Software", &[("if-none-match", &*etag)])
        .await;
    assert_eq!(after_refresh.status(), 200);
    assert_ne!(header(&after_refresh, "etag"), etag);
}

#[tokio::test]
async fn with_the_freshness_cache_another_process_refresh_shows_within_its_ttl_and_the_age_keeps_counting()
 {
    let app =
        spawn_configured_app(|config| config.freshness_cache_ttl = Duration::from_secs(2)).await;
    let first = app.get("/prospects").await;
    let first_refreshed_at = header(&first, "x-data-refreshed-at");
    let first_age: u64 = header(&first, "x-data-age").parse().unwrap();

    // While reused, the age still counts from the refresh it names (never too low).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reused = app.get("/prospects").await;
    let reused_age: u64 = header(&reused, "x-data-age").parse().unwrap();
    let refreshed_at =
        chrono::DateTime::parse_from_rfc3339(&header(&reused, "x-data-refreshed-at")).unwrap();
    let true_age = (chrono::Utc::now() - refreshed_at.to_utc()).num_milliseconds() as f64 / 1000.0;
    assert!(reused_age > first_age, "{first_age} then {reused_age}");
    assert!(
        (reused_age as f64 - true_age).abs() < 1.5,
        "{reused_age} vs {true_age}"
    );

    let report = refresh_from_another_process(&app).await;
    let expected = report
        .started_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_ne!(expected, first_refreshed_at);
    let started = std::time::Instant::now();
    eventually(5, "the other process's refresh shows", || async {
        header(&app.get("/prospects").await, "x-data-refreshed-at") == expected
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "seen after {:?}, the TTL is 2 s",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_view_never_populated_answers_503_with_retry_after_until_it_is() {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    // Hold the first view's refresh lock, as a long refresh by another process would: the server's
    // startup population has to wait.
    let mut holder = db.connection().await;
    sqlx::query!("SELECT pg_advisory_lock(view_refresh_lock_key('company_prospect_view'))")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    let config = serve_config(&db);
    let app = spawn_app_with(db, config).await;

    let response = app.get("/prospects").await;
    assert_eq!(header(&response, "retry-after"), "5");
    let problem = json(response, 503).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("company_prospect_view"),
        "{problem}"
    );
    assert_eq!(
        problem["type"],
        "urn:prospect-api:problem:view-not-populated"
    );
    app.get_json("/readyz", 503).await;

    holder.close().await.unwrap();
    app.wait_until_ready().await;
    app.get_json("/prospects", 200).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn while_one_request_reads_a_new_freshness_the_others_keep_the_previous_one_without_waiting()
{
    use prospect_api::views::freshness::FreshnessCache;
    use std::sync::Arc;

    let db = crate::helpers::TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    crate::helpers::refresh_all_ok(&db.pool).await;
    let view = ViewName::CompanyProspectView;
    let cache = Arc::new(FreshnessCache::new(Duration::from_secs(3600)));
    let ready = |_| async { Ok(()) };
    let log_id = |f: prospect_api::views::freshness::Freshness| f.last_refresh.unwrap().log_id;
    let first = log_id(cache.read(&db.pool, view, 0, ready).await.unwrap());

    // This process refreshes (its generation moves on): the next request reads the log anew, and
    // readies what the new generation needs before anyone else is given it.
    crate::helpers::refresh_one(&db.pool, view, RefreshTrigger::Manual).await;
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let reader = {
        let (cache, pool) = (cache.clone(), db.pool.clone());
        tokio::spawn(async move {
            let prepare = |_| async move {
                released.await.ok();
                Ok(())
            };
            cache.read(&pool, view, 1, prepare).await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let meanwhile = tokio::time::timeout(
        Duration::from_millis(500),
        cache.read(&db.pool, view, 1, ready),
    )
    .await
    .expect("no wait for the read under way")
    .unwrap();
    assert_eq!(log_id(meanwhile), first, "the previous freshness meanwhile");

    release.send(()).unwrap();
    let second = log_id(reader.await.unwrap());
    assert!(second > first);
    let after = cache.read(&db.pool, view, 1, ready).await.unwrap();
    assert_eq!(log_id(after), second, "the new one, once ready");
}
