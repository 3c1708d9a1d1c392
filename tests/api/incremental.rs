//! Incremental mode through the real server and the real database: changes applied per company,
//! conversions between the modes, builds beside, the schedule's repair, failures that lose nothing,
//! one applier at a time, retention of the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prospect_api::progress::Progress;
use prospect_api::refresh::{
    RefreshMethod, RefreshStatus, RefreshTrigger, build_beside, incremental_round, refresh_all,
};
use prospect_api::views::{Mode, ViewName};

use crate::helpers::{
    ADMIN_TOKEN, TestApp, TestDb, eventually, header, json, quick_refresh_settings, refresh_all_as,
    run, serve_config, spawn_app_with, spawn_configured_app, spawn_instance,
};

async fn spawn_incremental_app() -> TestApp {
    spawn_configured_app(|config| {
        config.maintenance.view_maintenance = Mode::Incremental;
        config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
    })
    .await
}

async fn visible(app: &TestApp, prospect_id: &str) -> bool {
    app.get(&format!("/prospects/{prospect_id}")).await.status() == 200
}

/// The newest log row of `view`: (trigger, status, method, companies_changed, rows_changed).
async fn last_log(
    db: &TestDb,
    view: &str,
) -> (String, String, Option<String>, Option<i64>, Option<i64>) {
    let row = sqlx::query!(
        "SELECT trigger, status, method, companies_changed, rows_changed FROM materialized_view_log
         WHERE view_name = $1 ORDER BY id DESC LIMIT 1",
        view
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (
        row.trigger,
        row.status,
        row.method,
        row.companies_changed,
        row.rows_changed,
    )
}

async fn modes(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar!(r#"SELECT mode AS "mode!" FROM read_models ORDER BY position"#)
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn in_incremental_mode_a_write_is_applied_to_its_company_and_served_with_fresh_headers() {
    let app = spawn_incremental_app().await;
    assert_eq!(modes(&app.db).await, ["incremental"; 3]);
    let before = app.get("/companies/c_0").await;
    let etag = header(&before, "etag");
    assert_eq!(json(before, 200).await["prospect_count"], 2);

    run(&app.db.pool, r#"INSERT INTO "Prospect" ("id", "companyId", "firstName", "department") VALUES ('p_new', 'c_0', 'Newly', 'Legal')"#).await;
    eventually(10, "the new prospect showing up", || visible(&app, "p_new")).await;

    // The counts agree with the rows: all three tables were changed in one transaction.
    let after = app.get("/companies/c_0").await;
    assert_ne!(header(&after, "etag"), etag);
    let age: u64 = header(&after, "x-data-age").parse().unwrap();
    assert!(age <= 2, "age {age}");
    let company = json(after, 200).await;
    assert_eq!(company["prospect_count"], 3);
    assert_eq!(company["department_count"], 2);
    let stale = app
        .get_with("/companies/c_0", &[("if-none-match", &*etag)])
        .await;
    assert_eq!(stale.status(), 200, "the old ETag no longer matches");

    for view in ViewName::ALL {
        let (trigger, status, method, companies, rows) = last_log(&app.db, view.as_str()).await;
        assert_eq!(
            (
                trigger.as_str(),
                status.as_str(),
                method.as_deref(),
                companies
            ),
            ("incremental", "ok", Some("apply"), Some(1)),
            "{view}"
        );
        assert!(rows.unwrap() >= 1, "{view}: {rows:?}");
    }
    assert_eq!(app.db.differences().await, [0, 0, 0]);
    let views = json(app.admin_get("/admin/views").await, 200).await;
    for view in views.as_array().unwrap() {
        assert_eq!(view["mode"], "incremental", "{view}");
        assert_eq!(view["last_refresh"]["method"], "apply", "{view}");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(
            "view_maintenance_mode{view=\"company_prospect_view\",mode=\"incremental\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("view_refreshes_total{view=\"company_summary_view\",trigger=\"incremental\",status=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("incremental_companies_applied_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_notifications_a_write_is_applied_without_waiting_for_a_poll() {
    let app = spawn_configured_app(|config| {
        config.maintenance.view_maintenance = Mode::Incremental;
        config.refresh_notify = true;
        config.refresh_poll_interval = Duration::from_secs(3600);
    })
    .await;
    // A new session, as the writing app's are: it picks up prospect_api.notify when it starts.
    let mut writer = app.db.connection().await;
    run(
        &mut writer,
        r#"INSERT INTO "Prospect" ("id", "companyId") VALUES ('p_notified', 'c_999')"#,
    )
    .await;
    eventually(10, "the notified write showing up", || {
        visible(&app, "p_notified")
    })
    .await;
    let (trigger, _, method, _, _) = last_log(&app.db, "prospect_search_view").await;
    assert_eq!(
        (trigger.as_str(), method.as_deref()),
        ("incremental", Some("apply"))
    );
}

/// Readers that count every status other than 200 until stopped.
fn start_readers(app: &TestApp) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<Vec<u16>>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let readers = (0..4)
        .map(|i| {
            let client = app.client.clone();
            let url = format!(
                "{}{}",
                app.address,
                [
                    "/prospects?limit=5",
                    "/companies",
                    "/search?q=engineer",
                    "/prospects/p_both"
                ][i]
            );
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let status = client.get(&url).send().await.unwrap().status().as_u16();
                    if status != 200 {
                        failures.push(status);
                    }
                }
                failures
            })
        })
        .collect();
    (stop, readers)
}

#[tokio::test]
async fn converting_between_the_modes_keeps_serving_and_keeps_every_index_grant_and_row() {
    let app =
        spawn_configured_app(|config| config.admin_token = Some(ADMIN_TOKEN.parse().unwrap()))
            .await;
    // Roles belong to the whole server: one per test database.
    let reader = format!("{}_reader", app.db.name);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS {reader}; CREATE ROLE {reader}; GRANT SELECT ON company_summary_view TO {reader}"
    )))
    .execute(&app.db.pool)
    .await
    .unwrap();
    let indexes = || async {
        sqlx::query_scalar!(
            r#"SELECT replace(pg_get_indexdef(indexrelid), 'INDEX ' || i.relname || ' ON', 'ON') AS "definition!"
               FROM pg_index JOIN pg_class i ON i.oid = indexrelid
               WHERE indrelid IN ('company_prospect_view'::regclass, 'company_summary_view'::regclass, 'prospect_search_view'::regclass)
               ORDER BY i.relname"#
        )
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
    };
    let granted = || async {
        sqlx::query_scalar!(
            r#"SELECT has_table_privilege($1, 'company_summary_view', 'SELECT') AS "granted!""#,
            reader
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
    };
    let before = indexes().await;
    let page = app.get_json("/prospects?limit=100", 200).await;

    let (stop, readers) = start_readers(&app);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let conversions = app.db.convert(Mode::Incremental).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let back = app.db.convert(Mode::Refresh).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            Vec::<u16>::new(),
            "every read answered 200"
        );
    }

    for conversion in conversions.iter().chain(&back) {
        assert!(
            conversion.rebuilt && conversion.swap_attempts >= 1,
            "{conversion}"
        );
        assert!(conversion.rows.is_some(), "{conversion}");
    }
    assert_eq!(
        conversions
            .iter()
            .map(|c| (c.from, c.to))
            .collect::<Vec<_>>(),
        [(Mode::Refresh, Mode::Incremental); 3]
    );
    assert_eq!(
        indexes().await,
        before,
        "the same indexes, by the same names"
    );
    assert!(granted().await, "the grant survived both conversions");
    assert_eq!(app.get_json("/prospects?limit=100", 200).await, page);
    let converted = sqlx::query!(
        "SELECT view_name, trigger, method FROM materialized_view_log WHERE trigger = 'migrate' ORDER BY id"
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(converted.len(), 6);
    assert!(
        converted
            .iter()
            .all(|r| r.method.as_deref() == Some("build"))
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "REVOKE ALL ON company_summary_view FROM {reader}; DROP ROLE {reader}"
    )))
    .execute(&app.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn an_instance_started_in_incremental_mode_converts_a_served_database_and_its_peer_follows() {
    let app = spawn_configured_app(|_| {}).await;
    assert_eq!(modes(&app.db).await, ["refresh"; 3]);
    let mut config = serve_config(&app.db);
    config.maintenance.view_maintenance = Mode::Incremental;
    let _incremental = spawn_instance(config).await;
    assert_eq!(modes(&app.db).await, ["incremental"; 3]);

    // The first instance, configured for refresh, now applies changes too: it acts on the mode
    // the database is in.
    run(
        &app.db.pool,
        r#"INSERT INTO "Prospect" ("id", "companyId") VALUES ('p_peer', 'c_lonely')"#,
    )
    .await;
    eventually(10, "the write showing up on the first instance", || {
        visible(&app, "p_peer")
    })
    .await;
    assert_eq!(app.db.differences().await, [0, 0, 0]);
}

#[tokio::test]
async fn the_scheduled_repair_finds_and_fixes_writes_the_triggers_could_not_see() {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    let mut config = serve_config(&db);
    config.maintenance.view_maintenance = Mode::Incremental;
    config.refresh_interval = Duration::from_secs(2);
    let app = spawn_app_with(db, config).await;
    app.wait_until_ready().await;

    let before = sqlx::query_scalar!(r#"SELECT pg_current_snapshot()::text AS "snapshot!""#)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    // A bulk load with triggers off (as pg_restore or logical replication apply do it).
    let mut loader = app.db.connection().await;
    sqlx::raw_sql(
        r#"SET session_replication_role = replica;
           INSERT INTO "Prospect" ("id", "companyId", "firstName") VALUES ('p_unseen', 'c_lonely', 'Unseen');
           UPDATE "Company" SET "name" = 'Renamed Unseen' WHERE "id" = 'c_999'"#,
    )
    .execute(&mut loader)
    .await
    .unwrap();
    let recorded = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM base_table_changes
           WHERE NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)"#,
        before
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(recorded, 0, "the triggers did not fire");

    eventually(10, "the scheduled repair", || visible(&app, "p_unseen")).await;
    let (trigger, status, method, _, rows) = last_log(&app.db, "company_summary_view").await;
    assert_eq!(
        (trigger.as_str(), status.as_str(), method.as_deref()),
        ("schedule", "ok", Some("repair"))
    );
    assert!(
        rows.unwrap() >= 2,
        "c_lonely's counts and c_999's name: {rows:?}"
    );
    assert_eq!(app.db.differences().await, [0, 0, 0]);
}

#[tokio::test]
async fn an_apply_that_times_out_is_recorded_and_the_next_one_applies_everything() {
    let app = spawn_configured_app(|config| {
        config.maintenance.view_maintenance = Mode::Incremental;
        config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
        config.refresh.refresh_statement_timeout = Duration::from_millis(500);
    })
    .await;
    // A lock that stops writes to one table (not reads): the apply waits for it until its timeout.
    let blocking = app.db.blocking_writes_to("company_summary_view").await;
    run(
        &app.db.pool,
        r#"INSERT INTO "Prospect" ("id", "companyId") VALUES ('p_late', 'c_999')"#,
    )
    .await;
    eventually(10, "a failed apply in the log", || async {
        last_log(&app.db, "company_summary_view").await.1 == "error"
    })
    .await;
    assert!(
        !visible(&app, "p_late").await,
        "nothing of the failed apply is served"
    );
    let views = json(app.admin_get("/admin/views").await, 200).await;
    let summary = &views[1];
    assert!(
        summary["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("statement timeout"),
        "{summary}"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !metrics.contains("view_refresh_failures_total{view=\"company_summary_view\"} 0"),
        "{metrics}"
    );

    blocking.rollback().await.unwrap();
    eventually(15, "the next apply", || visible(&app, "p_late")).await;
    assert_eq!(app.db.differences().await, [0, 0, 0]);
}

#[tokio::test]
async fn an_apply_whose_connection_dies_loses_nothing() {
    let app = spawn_configured_app(|config| {
        config.maintenance.view_maintenance = Mode::Incremental;
    })
    .await;
    let blocking = app.db.blocking_writes_to("prospect_search_view").await;
    run(
        &app.db.pool,
        r#"UPDATE "Company" SET "name" = 'Killed Mid-Apply' WHERE "id" = 'c_1000'"#,
    )
    .await;
    // The apply is now waiting for the lock, half done; its backend goes away (as in a restart).
    let applier = || {
        app.db
            .waiting_for_a_lock("maintain_incremental_read_models")
    };
    eventually(10, "the apply waiting for the lock", || async {
        applier().await.is_some()
    })
    .await;
    let pid = applier().await.unwrap();
    sqlx::query!("SELECT pg_terminate_backend($1)", pid)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let name = || async {
        app.get_json("/companies/c_1000", 200).await["name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        name().await,
        "Thousand Co",
        "the killed apply changed nothing"
    );
    blocking.rollback().await.unwrap();
    eventually(15, "a later apply", || async {
        name().await == "Killed Mid-Apply"
    })
    .await;
    assert_eq!(app.db.differences().await, [0, 0, 0]);
}

/// One round with `share` as the rebuild share: each model maintained with its method, and the
/// models left to a build.
async fn round(db: &TestDb, share: f64) -> (Vec<(String, Option<String>)>, Vec<ViewName>) {
    let mut settings = quick_refresh_settings();
    settings.incremental_rebuild_share = share;
    let round = incremental_round(&db.pool, RefreshTrigger::Incremental, None, &settings)
        .await
        .unwrap();
    let maintained = round
        .reports
        .into_iter()
        .map(|r| {
            assert_eq!(r.status, RefreshStatus::Ok, "{r:?}");
            (
                r.view.as_str().to_owned(),
                r.method.map(|m| format!("{m:?}").to_lowercase()),
            )
        })
        .collect();
    (maintained, round.to_build)
}

async fn fixture_in_incremental_mode() -> TestDb {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    db.convert(Mode::Incremental).await;
    db
}

fn methods(round: &[(String, Option<String>)]) -> Vec<&str> {
    round.iter().map(|(_, m)| m.as_deref().unwrap()).collect()
}

#[tokio::test]
async fn a_truncate_or_more_than_the_share_of_companies_changing_is_built_beside_and_swapped_in() {
    let db = fixture_in_incremental_mode().await;
    run(&db.pool, r#"ANALYZE "Company""#).await;
    assert_eq!(round(&db, 0.3).await, (vec![], vec![]), "nothing pending");

    db.execute(r#"UPDATE "Company" SET "revenue" = 7 WHERE "id" IN ('c_0', 'c_999')"#)
        .await;
    let (applied, to_build) = round(&db, 0.3).await;
    assert_eq!(
        (methods(&applied), to_build),
        (vec!["apply"; 3], vec![]),
        "2 of 10 companies"
    );
    db.execute(
        r#"UPDATE "Company" SET "revenue" = 8 WHERE "id" IN ('c_0', 'c_999', 'c_1000', 'c_2500')"#,
    )
    .await;
    assert_eq!(
        round(&db, 0.3).await,
        (vec![], ViewName::ALL.to_vec()),
        "4 of 10 companies"
    );
    let mut settings = quick_refresh_settings();
    settings.incremental_rebuild_share = 0.3;
    let built = build_beside(
        &db.pool,
        &ViewName::ALL,
        &[],
        &settings,
        &Progress::hidden("build"),
    )
    .await
    .unwrap();
    assert_eq!(built.len(), 3, "{built:?}");
    let (swapped, _) = round(&db, 0.3).await;
    assert_eq!(methods(&swapped), ["build"; 3]);
    assert_eq!(db.differences().await, [0, 0, 0]);

    db.execute(r#"TRUNCATE "Prospect""#).await;
    assert_eq!(
        round(&db, 1.0).await,
        (vec![], ViewName::ALL.to_vec()),
        "TRUNCATE names no company"
    );
    let reports = refresh_all_as(&db.pool, RefreshTrigger::Cli).await;
    let how: Vec<_> = reports.iter().map(|r| (r.status, r.method)).collect();
    assert_eq!(how, [(RefreshStatus::Ok, Some(RefreshMethod::Build)); 3]);
    assert_eq!(db.differences().await, [0, 0, 0]);
}

#[tokio::test]
async fn refresh_materialized_views_rebuilds_tables_too_but_only_in_read_committed() {
    let db = fixture_in_incremental_mode().await;
    db.execute(r#"DELETE FROM "Prospect" WHERE "id" = 'p_none'"#)
        .await;
    let rows = sqlx::query!(
        r#"SELECT view_name AS "view!", status AS "status!", method FROM refresh_materialized_views()"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let got: Vec<(String, String, Option<String>)> = rows
        .into_iter()
        .map(|r| (r.view, r.status, r.method))
        .collect();
    let expected: Vec<(String, String, Option<String>)> = ViewName::ALL
        .iter()
        .map(|v| {
            (
                v.as_str().to_owned(),
                "ok".to_owned(),
                Some("rebuild".to_owned()),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(db.differences().await, [0, 0, 0]);

    let mut tx = db
        .transaction_with("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await;
    let refused = sqlx::query!("SELECT count(*) FROM refresh_materialized_views()")
        .fetch_one(&mut *tx)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("READ COMMITTED"), "{refused}");
}

#[tokio::test]
async fn a_repair_requested_while_another_process_repairs_waits_and_skips_what_it_did() {
    let db = fixture_in_incremental_mode().await;
    let other = sqlx::PgPool::connect(&db.url).await.unwrap();
    let settings = quick_refresh_settings();
    let (a, b) = tokio::join!(
        refresh_all(&db.pool, RefreshTrigger::Manual, &settings),
        refresh_all(&other, RefreshTrigger::Manual, &settings),
    );
    let statuses: Vec<RefreshStatus> = a
        .unwrap()
        .into_iter()
        .chain(b.unwrap())
        .map(|r| r.status)
        .collect();
    assert!(!statuses.contains(&RefreshStatus::Error), "{statuses:?}");
    assert!(statuses.contains(&RefreshStatus::Ok), "{statuses:?}");
    let rounds = sqlx::query!(
        "SELECT started_at, max(finished_at) AS finished_at FROM materialized_view_log
         WHERE status = 'ok' AND method = 'repair' GROUP BY started_at ORDER BY started_at"
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for pair in rounds.windows(2) {
        assert!(
            pair[0].finished_at.unwrap() <= pair[1].started_at,
            "overlapping rounds"
        );
    }
}

#[tokio::test]
async fn two_instances_in_incremental_mode_apply_one_at_a_time_and_serve_the_same_data() {
    let app = spawn_incremental_app().await;
    let mut config = serve_config(&app.db);
    config.maintenance.view_maintenance = Mode::Incremental;
    let second = spawn_instance(config).await;
    let mut writer = app.db.connection().await;
    for i in 0..30 {
        sqlx::query!(
            r#"INSERT INTO "Prospect" ("id", "companyId", "lastName") VALUES ($1, 'c_2500', 'Pair')"#,
            format!("p_pair_{i}")
        )
        .execute(&mut writer)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(10, "the last write on both instances", || async {
        visible(&app, "p_pair_29").await
            && app
                .client
                .get(format!("{}/prospects/p_pair_29", second.address))
                .send()
                .await
                .unwrap()
                .status()
                == 200
    })
    .await;
    let rounds = sqlx::query!(
        r#"SELECT started_at, max(finished_at) AS "finished_at!", count(*) AS "views!",
                  bool_and(status = 'ok') AS "ok!"
           FROM materialized_view_log WHERE trigger = 'incremental' GROUP BY started_at ORDER BY started_at"#
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(!rounds.is_empty());
    for round in &rounds {
        assert!(
            round.ok && round.views == 3,
            "every round logs all three views, ok"
        );
    }
    for pair in rounds.windows(2) {
        assert!(
            pair[0].finished_at <= pair[1].started_at,
            "overlapping rounds"
        );
    }
    let from_first = app.get_json("/companies/c_2500", 200).await;
    let from_second = app
        .client
        .get(format!("{}/companies/c_2500", second.address))
        .send()
        .await
        .unwrap();
    assert_eq!(json(from_second, 200).await, from_first);
    assert_eq!(from_first["prospect_count"], 32);
}

#[tokio::test]
async fn retention_prunes_old_log_rows_but_keeps_each_views_last_success_and_last_error() {
    let db = fixture_in_incremental_mode().await;
    refresh_all_as(&db.pool, RefreshTrigger::Cli).await;
    // Ten days of history: an old failure per view, then everything aged.
    db.execute(
        "SELECT record_refresh_failure(name, 'schedule', now(), 'an old failure') FROM read_model_catalog;
         UPDATE materialized_view_log SET started_at = started_at - interval '10 days', finished_at = finished_at - interval '10 days';
         UPDATE materialized_view_errors SET occurred_at = occurred_at - interval '10 days';
         INSERT INTO materialized_view_errors (view_name, error_message, occurred_at)
             VALUES ('company_summary_view', 'an older failure', now() - interval '20 days')",
    )
    .await;
    let kept_before = sqlx::query_scalar!(
        r#"SELECT array_agg(log_id ORDER BY log_id) AS "ids!" FROM last_successful_refreshes()"#
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();

    let pruned = sqlx::query!(
        r#"SELECT log_rows AS "log!", error_rows AS "errors!" FROM prune_refresh_log(interval '7 days')"#
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(pruned.log > 0, "older successes pruned");
    assert_eq!(pruned.errors, 1, "only the older failure goes");
    let left = sqlx::query!(
        r#"SELECT view_name AS "view!", count(*) FILTER (WHERE status = 'ok') AS "ok!",
                  count(*) FILTER (WHERE status = 'error') AS "errors!"
           FROM materialized_view_log GROUP BY view_name ORDER BY view_name"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for row in &left {
        assert_eq!((row.ok, row.errors), (1, 1), "{}", row.view);
    }
    let kept_after = sqlx::query_scalar!(
        r#"SELECT array_agg(log_id ORDER BY log_id) AS "ids!" FROM last_successful_refreshes()"#
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        kept_after, kept_before,
        "freshness still reads the same rows"
    );
    assert_eq!(db.count("materialized_view_errors").await, 3);
}

#[tokio::test]
async fn the_server_applies_retention_from_its_setting() {
    let db = fixture_in_incremental_mode().await;
    for _ in 0..3 {
        refresh_all_as(&db.pool, RefreshTrigger::Cli).await;
    }
    db.execute(
        "UPDATE materialized_view_log SET started_at = started_at - interval '2 hours', finished_at = finished_at - interval '2 hours'",
    )
    .await;
    let mut config = serve_config(&db);
    config.maintenance.view_maintenance = Mode::Incremental;
    config.refresh_log_retention = Duration::from_secs(3600);
    let app = spawn_app_with(db, config).await;
    app.wait_until_ready().await;
    eventually(10, "the old rows pruned", || async {
        app.db
            .count("materialized_view_log WHERE finished_at < now() - interval '1 hour'")
            .await
            == 3
    })
    .await;
}
