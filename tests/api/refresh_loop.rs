//! The views stay fresh by themselves: notifications, debouncing, reconnecting, catching up.

use std::time::Duration;

use crate::helpers::{TestApp, eventually, run, scalar, spawn_app, spawn_configured_app};

/// Refreshes of company_prospect_view that a base-table change caused (noticed by polling or by
/// notification).
async fn notify_refreshes(app: &TestApp) -> i64 {
    app.db.count("materialized_view_log WHERE view_name = 'company_prospect_view' AND trigger IN ('notify', 'poll')").await
}

async fn visible(app: &TestApp, prospect_id: &str) -> bool {
    app.get(&format!("/prospects/{prospect_id}")).await.status() == 200
}

async fn insert_becomes_visible(app: &TestApp, expected_trigger: &str) {
    assert!(!visible(app, "p_new").await);
    // A new session, as the writing app's are: sessions pick up prospect_api.notify when they start.
    let mut writer = app.db.connection().await;
    run(&mut writer, r#"INSERT INTO "Prospect" ("id", "companyId", "firstName") VALUES ('p_new', 'c_0', 'Newly')"#).await;
    eventually(15, "the new prospect showing up", || visible(app, "p_new")).await;
    let response = app.get("/prospects/p_new").await;
    let age: u64 = response.headers()["x-data-age"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(age <= 2, "fresh data after the refresh: {age}");
    let triggers = sqlx::query_scalar!(
        r#"SELECT DISTINCT trigger AS "trigger!" FROM materialized_view_log WHERE trigger IN ('notify', 'poll')"#
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(triggers, vec![expected_trigger.to_owned()]);
}

#[tokio::test]
async fn an_insert_becomes_visible_without_any_manual_call_by_polling() {
    let app = spawn_app().await;
    insert_becomes_visible(&app, "poll").await;
}

#[tokio::test]
async fn an_insert_becomes_visible_without_any_manual_call_by_notification() {
    let app = spawn_configured_app(|config| config.refresh_notify = true).await;
    insert_becomes_visible(&app, "notify").await;
}

#[tokio::test]
async fn a_burst_of_1000_single_row_inserts_causes_only_a_few_refreshes() {
    let app = spawn_app().await;
    let before = notify_refreshes(&app).await;
    for i in 0..1000 {
        sqlx::query!(
            r#"INSERT INTO "Prospect" ("id", "companyId") VALUES ($1, 'c_0')"#,
            format!("burst_{i}")
        )
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    eventually(20, "the last insert of the burst showing up", || {
        visible(&app, "burst_999")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // let any last debounced refresh land
    let refreshes = notify_refreshes(&app).await - before;
    // The burst lasts a few seconds; REFRESH_MAX_DELAY (1 s here) forces a refresh about once a
    // second during it, and single flight adds at most one follow-up per refresh.
    assert!(
        (1..=12).contains(&refreshes),
        "{refreshes} refreshes for 1000 inserts"
    );
}

/// An app refreshing on notifications, 50 ms after the last.
async fn notified_app() -> TestApp {
    spawn_configured_app(|config| {
        config.refresh_notify = true;
        config.refresh_debounce = Duration::from_millis(50);
    })
    .await
}

#[tokio::test]
async fn after_its_connection_is_killed_the_listener_reconnects_and_catches_up_on_missed_writes() {
    let app = notified_app().await;
    let listener_pid = || async {
        sqlx::query_scalar!(
            r#"SELECT pid AS "pid!" FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"#
        )
        .fetch_optional(&app.db.pool)
        .await
        .unwrap()
    };
    eventually(10, "the listener connecting", || async {
        listener_pid().await.is_some()
    })
    .await;
    let pid = listener_pid().await.unwrap();

    // Keep the listener from reconnecting (even as a superuser) while a write happens: its
    // notification goes to no one. The writer's connection is opened before the door closes.
    let mut writer = app.db.connection().await;
    let mut server = app.db.server_connection().await;
    let allow = |allowed: bool| {
        sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS {allowed}",
            app.db.name
        ))
    };
    sqlx::raw_sql(allow(false))
        .execute(&mut server)
        .await
        .unwrap();
    sqlx::query!("SELECT pg_terminate_backend($1)", pid)
        .fetch_one(&mut writer)
        .await
        .unwrap();
    run(&mut writer, r#"INSERT INTO "Prospect" ("id", "companyId", "firstName") VALUES ('p_unheard', 'c_0', 'Unheard')"#).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!visible(&app, "p_unheard").await, "nobody was listening");
    sqlx::raw_sql(allow(true))
        .execute(&mut server)
        .await
        .unwrap();

    // No further write: the reconnected listener finds the change in the change record.
    eventually(15, "the missed write showing up", || {
        visible(&app, "p_unheard")
    })
    .await;
    let catchups = app
        .db
        .count("materialized_view_log WHERE trigger = 'catchup' AND status = 'ok'")
        .await;
    assert!(catchups >= 1);
    assert_ne!(listener_pid().await, Some(pid), "a new listener connection");
}

#[tokio::test]
async fn the_change_record_is_vacuumed_by_the_housekeeping() {
    // Autovacuum may be busy elsewhere after a bulk write: each instance vacuums the queue itself.
    let app = spawn_app().await;
    eventually(10, "a vacuum of base_table_changes", || async {
        sqlx::query_scalar!(
            r#"SELECT vacuum_count > 0 AS "vacuumed!" FROM pg_stat_user_tables
               WHERE relname = 'base_table_changes'"#
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
    })
    .await;
}

#[tokio::test]
async fn a_cron_schedule_refreshes_every_view_at_its_times() {
    let db = crate::helpers::TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    let mut config = crate::helpers::serve_config(&db);
    // Every second (the optional seconds field first), so that the test need not wait a minute.
    config.refresh_schedule = Some(prospect_api::config::parse_cron("* * * * * *").unwrap());
    let app = crate::helpers::spawn_app_with(db, config).await;
    app.wait_until_ready().await;
    crate::helpers::eventually(10, "two scheduled refreshes of every view", || async {
        let scheduled = app
            .db
            .count("materialized_view_log WHERE trigger = 'schedule' AND status = 'ok'")
            .await;
        scheduled >= 6
    })
    .await;
}

#[tokio::test]
async fn a_refresh_that_fails_after_a_notification_is_retried_without_another_write() {
    let app = notified_app().await;
    let failed_refreshes = || {
        scalar::<i64>(
            &app.db.pool,
            r#"SELECT count(*) AS "n!" FROM materialized_view_log
               WHERE view_name = 'company_summary_view' AND trigger = 'notify' AND status = 'error'"#,
        )
    };
    // The summary view's lock is held past the refresh's lock timeout: the refresh the write
    // prompts fails, and no write comes after it to prompt another.
    let blocking = app.db.locking_summary_view().await;
    let mut writer = app.db.connection().await;
    sqlx::raw_sql(r#"INSERT INTO "Company" ("id", "name") VALUES ('c_retried', 'Retried Inc')"#)
        .execute(&mut writer)
        .await
        .unwrap();
    eventually(10, "the refresh failing on the lock", || async {
        failed_refreshes().await > 0
    })
    .await;
    blocking.rollback().await.unwrap();

    eventually(10, "the company showing up after a retry", || async {
        app.get("/companies/c_retried").await.status() == 200
    })
    .await;
}
