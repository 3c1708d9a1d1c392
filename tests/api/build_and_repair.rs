//! Incremental mode at any size: a table that only its whole definition can bring up to date is
//! built beside the one readers use and swapped in, losing nothing committed meanwhile; a repair
//! walks the companies a range at a time, fixing what the triggers missed while applies go on
//! between ranges. Their progress shows in `/admin/views`, `/metrics` and `read_model_work`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prospect_api::refresh::{
    Progressed, RefreshMethod, RefreshStatus, RefreshTrigger, Repair, incremental_round,
};
use prospect_api::views::{Mode, ViewName};

use crate::helpers::{
    ADMIN_TOKEN, TestApp, TestDb, eventually, json, quick_refresh_settings, run, serve_config,
    spawn_app_with,
};

/// One reader of `/prospects` until stopped: each answer's status and row count, in order.
fn read_until_stopped(
    app: &TestApp,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<(u16, usize)>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let client = app.client.clone();
    let url = format!("{}/prospects?limit=100", app.address);
    let stopping = stop.clone();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stopping.load(Ordering::SeqCst) {
            let response = client.get(&url).send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let rows = body["data"].as_array().map_or(0, Vec::len);
            seen.push((status, rows));
        }
        seen
    });
    (stop, reader)
}

/// The answers as runs: (status, rows, how many in a row).
fn runs(seen: &[(u16, usize)]) -> Vec<(u16, usize, usize)> {
    let mut runs: Vec<(u16, usize, usize)> = Vec::new();
    for (status, rows) in seen {
        match runs.last_mut() {
            Some((s, r, n)) if s == status && r == rows => *n += 1,
            _ => runs.push((*status, *rows, 1)),
        }
    }
    runs
}

async fn work_kinds(app: &TestApp) -> Vec<Option<String>> {
    let views = json(app.admin_get("/admin/views").await, 200).await;
    views
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["work"]["kind"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn data_loaded_into_an_empty_incremental_database_is_built_beside_while_readers_keep_their_answer_and_writes_made_during_the_build_survive()
 {
    let db = TestDb::in_mode(Mode::Incremental).await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    db.execute(r#"ANALYZE "Company""#).await;
    // A writer that holds the companies' table while it writes: the build, whose snapshot cannot
    // see this write, waits for the table, so the write commits during the build.
    let mut writing = db
        .transaction_with(r#"LOCK TABLE "Company" IN ACCESS EXCLUSIVE MODE"#)
        .await;
    run(&mut *writing, r#"INSERT INTO "Company" ("id", "name", "industry") VALUES ('c_during', 'During Build', 'Software')"#).await;
    run(&mut *writing, r#"INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName") VALUES ('p_during', 'c_during', 'Dora', 'During')"#).await;

    let mut config = serve_config(&db);
    config.maintenance.view_maintenance = Mode::Incremental;
    config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
    // Every company of the fixture is new: far more than 5% of them changed.
    config.refresh.incremental_rebuild_share = 0.05;
    let app = spawn_app_with(db, config).await;
    let (stop, reader) = read_until_stopped(&app);

    let building = || async {
        app.db
            .waiting_for_a_lock("build_read_model")
            .await
            .is_some()
    };
    eventually(15, "the build waiting for the companies' table", building).await;
    eventually(10, "the build in /admin/views", || async {
        work_kinds(&app).await == vec![Some("build".to_owned()); 3]
    })
    .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("view_work_in_progress{view=\"company_prospect_view\",kind=\"build\"} 1"),
        "{metrics}"
    );
    writing.commit().await.unwrap();

    eventually(15, "the write made during the build", || async {
        app.get("/prospects/p_during").await.status() == 200
    })
    .await;
    // The list too (a response cached for the old generation is served until this instance's
    // freshness sees the new one), then a little more reading.
    eventually(5, "the list with the data built", || async {
        let page = app.get_json("/prospects?limit=100", 200).await;
        page["data"].as_array().is_some_and(|rows| !rows.is_empty())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = runs(&reader.await.unwrap());
    // The old answer (no rows) until the swap, then the full data, never back: two runs at most.
    assert!(
        seen.iter()
            .all(|(status, _, _)| *status == 200 || *status == 503),
        "{seen:?}"
    );
    let rows: Vec<usize> = seen.iter().map(|(_, rows, _)| *rows).collect();
    assert!(
        matches!(rows.as_slice(), [0, full] | [full] if *full > 0),
        "{seen:?}"
    );
    assert_eq!(app.db.differences().await, [0, 0, 0]);
    let methods = sqlx::query_scalar!(
        r#"SELECT method AS "method!" FROM materialized_view_log l
           JOIN last_successful_refreshes() s ON s.log_id = l.id ORDER BY s.view_name"#
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(
        methods.iter().all(|m| m == "build" || m == "apply"),
        "{methods:?}"
    );
    let built = sqlx::query_scalar!(
        r#"SELECT count(DISTINCT view_name) AS "n!" FROM materialized_view_log
           WHERE method = 'build' AND trigger = 'incremental' AND status = 'ok'"#
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(built, 3);
    let failed = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM materialized_view_log WHERE status = 'error'"#
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        failed, 0,
        "the build waited for the writer's lock past REFRESH_LOCK_TIMEOUT without failing"
    );
    eventually(5, "the build's progress cleared", || async {
        work_kinds(&app).await == vec![None; 3]
    })
    .await;
}

/// Writes the triggers do not see, as a restore or a bulk load with them off makes them.
async fn write_behind_the_triggers_back(db: &TestDb) {
    let mut tx = db
        .transaction_with("SET LOCAL session_replication_role = replica")
        .await;
    run(
        &mut *tx,
        r#"UPDATE "Prospect" SET "lastName" = 'Hidden' WHERE "id" = 'p_both'"#,
    )
    .await;
    run(&mut *tx, r#"DELETE FROM "Prospect" WHERE "id" = 'p_2e9'"#).await;
    run(
        &mut *tx,
        r#"INSERT INTO "Company" ("id", "name") VALUES ('c_zz_hidden', 'Hidden Co')"#,
    )
    .await;
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_repair_walks_the_companies_in_ranges_fixes_what_the_triggers_missed_and_lets_applies_through_between_ranges()
 {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    db.convert(Mode::Incremental).await;
    write_behind_the_triggers_back(&db).await;
    assert_ne!(db.differences().await, [0, 0, 0]);

    let settings = quick_refresh_settings();
    let mut repair = Repair::new(
        ViewName::ALL.to_vec(),
        RefreshTrigger::Manual,
        chrono::Utc::now(),
    )
    .in_ranges_of(3);
    let mut ranges = 0;
    let reports = loop {
        // A write between ranges: the refresher's next apply serves it, the repair never holding
        // the maintenance lock for longer than a range that differs.
        let name = format!("Step {ranges}");
        sqlx::query!(
            r#"UPDATE "Prospect" SET "firstName" = $1 WHERE "id" = 'p_1000'"#,
            name
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let progressed = repair.step(&db.pool, &settings).await.unwrap();
        let round = incremental_round(&db.pool, RefreshTrigger::Incremental, None, &settings)
            .await
            .unwrap();
        assert!(
            round.busy.is_empty() && round.to_build.is_empty(),
            "{round:?}"
        );
        let applied: String = sqlx::query_scalar!(
            r#"SELECT first_name AS "name!" FROM company_prospect_view WHERE prospect_id = 'p_1000'"#
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(applied, name, "the write before range {ranges} is served");
        ranges += 1;
        match progressed {
            Progressed::Continuing(_) => {
                let work = sqlx::query!(
                    r#"SELECT kind, done AS "done!", total AS "total!", chunks AS "chunks!"
                       FROM read_model_work WHERE view_name = 'company_prospect_view'"#
                )
                .fetch_one(&db.pool)
                .await
                .unwrap();
                assert_eq!(
                    (work.kind.as_str(), work.done, work.chunks),
                    ("repair", 3 * ranges, ranges)
                );
                assert!(work.total >= work.done, "{}", work.total);
            }
            Progressed::Finished { reports, .. } => break reports,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        ranges, 4,
        "11 companies in ranges of 3, the last open-ended"
    );
    let outcomes: Vec<_> = reports
        .iter()
        .map(|r| (r.view, r.status, r.method))
        .collect();
    let expected: Vec<_> = ViewName::ALL
        .iter()
        .map(|v| (*v, RefreshStatus::Ok, Some(RefreshMethod::Repair)))
        .collect();
    assert_eq!(outcomes, expected);
    assert_eq!(db.differences().await, [0, 0, 0]);
    let hidden: String = sqlx::query_scalar!(
        r#"SELECT last_name AS "name!" FROM company_prospect_view WHERE prospect_id = 'p_both'"#
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(hidden, "Hidden");
    let left = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM read_model_work"#)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the repair's progress is cleared at its end");
    // The repair's own rounds: one per range that differed (the hidden writes touched two companies
    // apart, and a third at the end), the last one logging the repair.
    let repaired = sqlx::query!(
        r#"SELECT method AS "method!", rows_changed AS "rows!" FROM materialized_view_log
           WHERE view_name = 'company_prospect_view' AND status = 'ok' AND trigger = 'manual' ORDER BY id"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(!repaired.is_empty() && repaired.len() < 4, "{repaired:?}");
    assert_eq!(repaired.last().unwrap().method, "repair");
}
