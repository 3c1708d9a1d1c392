//! The response cache through the real server: a cached body changes as soon as the data it shows
//! changes (a refresh here, an incremental apply, another instance's refresh), distinct requests never
//! share an entry, identical concurrent misses run one query, failures are not cached, and the byte
//! bound holds.

use std::io::Read;
use std::time::Duration;

use prospect_api::views::Mode;
use serde_json::Value;

use crate::helpers::{
    ADMIN_TOKEN, TestApp, eventually, header, json, serve_config, spawn_configured_app,
    spawn_instance, strings,
};

async fn spawn_cached_app(adjust: impl FnOnce(&mut prospect_api::config::ServeConfig)) -> TestApp {
    spawn_configured_app(|config| {
        config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
        adjust(config);
    })
    .await
}

/// This instance's cache counters for `view` from `/admin/views`: (hits, misses, coalesced).
async fn counts(app: &TestApp, view: &str) -> (u64, u64, u64) {
    let views = json(app.admin_get("/admin/views").await, 200).await;
    let status = views
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["view"] == view)
        .unwrap();
    let cache = &status["response_cache"];
    let count = |name: &str| cache[name].as_u64().unwrap();
    (count("hits"), count("misses"), count("coalesced"))
}

/// A metric of `/metrics` without labels.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

/// `POST /admin/refresh` on the instance at `address` (this app's or another's).
async fn refresh(app: &TestApp, address: &str) {
    let response = app
        .client
        .post(format!("{address}/admin/refresh"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn company_name(app: &TestApp) -> String {
    app.get_json("/companies/c_0", 200).await["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_cached_response_changes_with_the_refresh_that_changes_its_data() {
    let app = spawn_cached_app(|_| {}).await;
    let first = app.get_json("/companies?industry=Software", 200).await;
    let again = app.get_json("/companies?industry=Software", 200).await;
    assert_eq!(first, again);
    assert_eq!(counts(&app, "company_summary_view").await, (1, 1, 0));

    app.db
        .execute(r#"UPDATE "Company" SET "name" = 'Renamed Zero' WHERE "id" = 'c_0'"#)
        .await;
    refresh(&app, &app.address).await;
    let after = app.get_json("/companies?industry=Software", 200).await;
    let names: Vec<&str> = strings(&after["data"], "name");
    assert!(names.contains(&"Renamed Zero"), "{names:?}");
    assert_eq!(counts(&app, "company_summary_view").await, (1, 2, 0));
}

#[tokio::test]
async fn a_cached_response_changes_with_an_incremental_apply() {
    let app =
        spawn_cached_app(|config| config.maintenance.view_maintenance = Mode::Incremental).await;
    assert_eq!(company_name(&app).await, "Zero Revenue");
    assert_eq!(company_name(&app).await, "Zero Revenue");
    app.db
        .execute(r#"UPDATE "Company" SET "name" = 'Applied Zero' WHERE "id" = 'c_0'"#)
        .await;
    eventually(10, "the apply shows through the cache", || async {
        company_name(&app).await == "Applied Zero"
    })
    .await;
    let (hits, misses, _) = counts(&app, "company_summary_view").await;
    assert!(hits >= 1 && misses >= 2, "{hits} hits, {misses} misses");
}

#[tokio::test]
async fn a_cached_response_changes_when_another_instance_refreshed() {
    // This instance does not look for changes itself: only the other one refreshes.
    let app =
        spawn_cached_app(|config| config.refresh_poll_interval = Duration::from_secs(3600)).await;
    assert_eq!(company_name(&app).await, "Zero Revenue");
    assert_eq!(company_name(&app).await, "Zero Revenue");
    app.db
        .execute(r#"UPDATE "Company" SET "name" = 'Elsewhere Zero' WHERE "id" = 'c_0'"#)
        .await;
    let mut other_config = serve_config(&app.db);
    other_config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
    let other = spawn_instance(other_config).await;
    refresh(&app, &other.address).await;
    // This instance learns of the other's refresh from the log within FRESHNESS_CACHE_TTL (1 s).
    eventually(5, "the other instance's refresh shows", || async {
        company_name(&app).await == "Elsewhere Zero"
    })
    .await;
}

#[tokio::test]
async fn different_filters_sorts_cursors_and_codings_never_share_an_entry() {
    let app = spawn_cached_app(|_| {}).await;
    let requests = [
        "/prospects?industry=Software",
        "/prospects?industry=Energy",
        "/prospects?industry=Software&sort=-revenue",
        "/prospects?industry=Software&limit=2",
        "/prospects?industry=Software&limit=2&count=exact",
        "/prospects?industry=Software&fields=prospect_id",
        "/prospects?industry=Software&fields=prospect_id,email",
    ];
    let mut bodies = Vec::new();
    for request in requests {
        bodies.push(app.get_json(request, 200).await);
    }
    for (i, a) in bodies.iter().enumerate() {
        for b in &bodies[i + 1..] {
            assert_ne!(a, b, "two requests answered alike");
        }
    }
    let (_, misses, _) = counts(&app, "company_prospect_view").await;
    assert_eq!(misses as usize, bodies.len(), "each request its own entry");

    // The next page (by cursor) is not the first page.
    let first = app
        .get_json("/prospects?industry=Software&limit=2", 200)
        .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .get_json(
            &format!("/prospects?industry=Software&limit=2&cursor={cursor}"),
            200,
        )
        .await;
    assert_ne!(first["data"], second["data"]);

    // Parameter order and repeats are normalized: the same query, the same entry.
    let (hits_before, _, _) = counts(&app, "company_prospect_view").await;
    app.get_json(
        "/prospects?industry=Energy&industry=Software&industry=Energy",
        200,
    )
    .await;
    app.get_json("/prospects?industry=Software&industry=Energy", 200)
        .await;
    let (hits_after, _, _) = counts(&app, "company_prospect_view").await;
    assert_eq!(hits_after, hits_before + 1);

    // gzip and identity are separate entries; the gzip one decompresses to the identity one.
    let plain = app.get("/prospects?industry=Software").await;
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    for _ in 0..2 {
        let gzipped = app
            .get_with(
                "/prospects?industry=Software",
                &[("accept-encoding", "gzip")],
            )
            .await;
        assert_eq!(header(&gzipped, "content-encoding"), "gzip");
        assert!(
            header(&gzipped, "vary")
                .to_lowercase()
                .contains("accept-encoding")
        );
        assert!(gzipped.headers().contains_key("x-data-age"));
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&gzipped.bytes().await.unwrap()[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain);
    }
}

#[tokio::test]
async fn identical_concurrent_misses_run_one_query_and_failures_are_not_cached() {
    let app =
        spawn_cached_app(|config| config.read_statement_timeout = Duration::from_millis(700)).await;

    // While the view is locked, the query times out: a 503, and nothing cached.
    let lock = app.db.locking_summary_view().await;
    let failed = app.get("/companies?country=France").await;
    assert_eq!(failed.status(), 503);
    lock.rollback().await.unwrap();
    let companies = app.get_json("/companies?country=France", 200).await;
    assert!(!companies["data"].as_array().unwrap().is_empty());
    assert_eq!(counts(&app, "company_summary_view").await, (0, 1, 0));

    // Eight identical requests arrive while the view is locked; released in time, they share one query.
    let lock = app.db.locking_summary_view().await;
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (
                app.client.clone(),
                format!("{}/companies?country=Germany", app.address),
            );
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.rollback().await.unwrap();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let (hits, misses, coalesced) = counts(&app, "company_summary_view").await;
    assert_eq!(misses, 2, "one query for the eight");
    assert_eq!(hits + coalesced, 7);
}

#[tokio::test]
async fn the_byte_bound_holds() {
    let bound = 16 * 1024;
    let app = spawn_cached_app(|config| config.response_cache_bytes = bound).await;
    for limit in 1..=40 {
        let response = app.get(&format!("/prospects?limit={limit}")).await;
        assert_eq!(response.status(), 200);
    }
    let held = metric(&app, "response_cache_bytes").await;
    assert!(held > 0.0 && held <= bound as f64, "{held} bytes held");
    assert!(metric(&app, "response_cache_evictions_total").await > 0.0);
    assert_eq!(metric(&app, "response_cache_enabled").await, 1.0);
}

#[tokio::test]
async fn zero_bytes_turns_the_cache_off() {
    let app = spawn_cached_app(|config| config.response_cache_bytes = 0).await;
    let first: Value = app.get_json("/companies", 200).await;
    let second: Value = app.get_json("/companies", 200).await;
    assert_eq!(first, second);
    assert_eq!(metric(&app, "response_cache_enabled").await, 0.0);
    let views = json(app.admin_get("/admin/views").await, 200).await;
    assert!(
        views
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["response_cache"].is_null())
    );
}
