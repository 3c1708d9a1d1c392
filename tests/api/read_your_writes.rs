//! Reads that see their own writes (`Prefer: min-freshness=now`): the request waits for the round
//! (incremental mode) or the refresh (refresh mode) covering every write committed before it
//! arrived, and says so; past READ_YOUR_WRITES_TIMEOUT it is a 503 with Retry-After that shows no
//! data. The servers here never look for changes on their own (a poll an hour), so only the
//! request can have brought the write in.

use std::time::Duration;

use prospect_api::config::ServeConfig;
use prospect_api::views::Mode;

use crate::helpers::{TestApp, header, json, spawn_configured_app};

const OWN_WRITES: (&str, &str) = ("prefer", "min-freshness=now");

const WRITE: &str = r#"INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "email")
                       VALUES ('p_own', 'c_0', 'Owen', 'Writes', 'owen@zero.example')"#;

/// A ready server in `mode` that applies or refreshes only when a request asks.
async fn waiting_for_requests(mode: Mode, adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let app = spawn_configured_app(|config| {
        config.maintenance.view_maintenance = mode;
        config.refresh_poll_interval = Duration::from_secs(3600);
        adjust(config);
    })
    .await;
    // Past the look at the change record a server takes as it starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app
}

async fn own_write_is_served(app: &TestApp) {
    let response = app.get_with("/prospects/p_own", &[OWN_WRITES]).await;
    assert_eq!(header(&response, "preference-applied"), "min-freshness=now");
    let prospect = json(response, 200).await;
    assert_eq!(prospect["email"], "owen@zero.example");
}

#[tokio::test]
async fn in_incremental_mode_a_read_waits_for_the_round_covering_its_arrival() {
    let app = waiting_for_requests(Mode::Incremental, |_| {}).await;
    let before = app.get_json("/companies/c_0", 200).await["prospect_count"].clone();
    app.db.execute(WRITE).await;

    own_write_is_served(&app).await;
    // Every read model the request reads waits the same way, lists, counts and CSV too.
    let company = app.get_with("/companies/c_0", &[OWN_WRITES]).await;
    let company = json(company, 200).await;
    assert_eq!(
        company["prospect_count"].as_i64().unwrap(),
        before.as_i64().unwrap() + 1
    );
    let csv = app
        .get_with("/prospects?company_id=c_0&format=csv", &[OWN_WRITES])
        .await;
    assert_eq!(csv.status(), 200);
    assert!(csv.text().await.unwrap().contains("owen@zero.example"));
    let rounds = app
        .db
        .count("materialized_view_log WHERE trigger = 'incremental' AND method = 'apply'")
        .await;
    assert!(rounds >= 1, "the request asked for the round");
}

#[tokio::test]
async fn in_refresh_mode_a_read_asks_for_the_refresh_and_waits_for_it() {
    let app = waiting_for_requests(Mode::Refresh, |_| {}).await;
    app.db.execute(WRITE).await;
    // Without the preference the refresh log's data is served as it is.
    let plain = app.get("/prospects/p_own").await;
    assert_eq!(plain.status(), 404);
    assert!(plain.headers().get("preference-applied").is_none());

    own_write_is_served(&app).await;
    let asked = app.db.count("materialized_view_log WHERE trigger = 'read' AND status = 'ok' AND view_name = 'company_prospect_view'").await;
    assert_eq!(asked, 1, "one refresh, logged as asked for by a read");
    // Covered now: a second such read asks for nothing more.
    own_write_is_served(&app).await;
    assert_eq!(
        app.db
            .count("materialized_view_log WHERE trigger = 'read'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_read_not_covered_in_time_is_a_503_with_retry_after_showing_nothing() {
    let app = waiting_for_requests(Mode::Incremental, |config| {
        config.read_your_writes_timeout = Duration::from_millis(300);
    })
    .await;
    // Another session holds the maintenance lock: no round can run.
    let holding = app
        .db
        .transaction_with("LOCK TABLE read_model_catalog IN SHARE ROW EXCLUSIVE MODE")
        .await;
    app.db.execute(WRITE).await;

    let refused = app.get_with("/prospects/p_own", &[OWN_WRITES]).await;
    assert_eq!(header(&refused, "retry-after"), "1");
    assert!(refused.headers().get("x-data-age").is_none());
    let problem = json(refused, 503).await;
    assert_eq!(problem["type"], "urn:prospect-api:problem:not-fresh-yet");
    assert!(!problem.to_string().contains("owen"), "{problem}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"read_your_writes_total{outcome="timeout"} 1"#),
        "{metrics}"
    );

    holding.rollback().await.unwrap();
    own_write_is_served(&app).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"read_your_writes_total{outcome="covered"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn other_preferences_and_values_are_ignored() {
    let app = waiting_for_requests(Mode::Incremental, |_| {}).await;
    for value in ["min-freshness=yesterday", "min-freshness", "return=minimal"] {
        let response = app.get_with("/prospects", &[("prefer", value)]).await;
        assert_eq!(response.status(), 200, "{value}");
        assert!(
            response.headers().get("preference-applied").is_none(),
            "{value}"
        );
    }
}
