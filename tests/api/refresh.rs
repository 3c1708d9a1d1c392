//! Refreshing views: the log, CONCURRENTLY, failures, the SQL function, and mutual exclusion.

use prospect_api::refresh::{RefreshStatus, RefreshTrigger, refresh_view};
use prospect_api::views::ViewName;

use crate::helpers::{TestDb, quick_refresh_settings, refresh_all_as, refresh_one, run};

async fn db_with_fixture() -> TestDb {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    db
}

async fn clock(db: &TestDb) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar!(r#"SELECT clock_timestamp() AS "now!""#)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_refresh_logs_a_snapshot_time_that_covers_everything_committed_before_it() {
    let db = db_with_fixture().await;
    let committed_at = clock(&db).await;
    let report = refresh_one(&db.pool, ViewName::CompanyProspectView, RefreshTrigger::Cli).await;
    let after = clock(&db).await;

    assert_eq!(report.status, RefreshStatus::Ok);
    let log = sqlx::query!(
        "SELECT view_name, trigger, status, started_at, finished_at, duration_ms, row_count, error_message
         FROM materialized_view_log WHERE id = $1",
        report.log_id.unwrap()
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(log.view_name, "company_prospect_view");
    assert_eq!(log.trigger, "cli");
    assert_eq!(log.status, "ok");
    assert_eq!(log.error_message, None);
    assert!(
        log.started_at >= committed_at,
        "the snapshot is taken after the fixture committed"
    );
    assert!(log.started_at <= log.finished_at && log.finished_at <= after);
    assert_eq!(report.started_at, log.started_at);
    let rows = db.count("company_prospect_view").await;
    assert_eq!(log.row_count, Some(rows));
    assert_eq!(rows, 13, "12 prospects plus the company without prospects");
    assert!(log.duration_ms.unwrap() >= 0);
}

#[tokio::test]
async fn the_first_refresh_populates_and_later_ones_do_not_block_readers() {
    let db = db_with_fixture().await;
    let populated = || async {
        sqlx::query_scalar!(
            r#"SELECT relispopulated AS "p!" FROM pg_class WHERE relname = 'company_summary_view'"#
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    assert!(
        !populated().await,
        "migrations create the views WITH NO DATA"
    );
    let first = refresh_one(
        &db.pool,
        ViewName::CompanySummaryView,
        RefreshTrigger::Startup,
    )
    .await;
    assert_eq!(first.status, RefreshStatus::Ok);
    assert!(populated().await);

    // A reader holds its lock in an open transaction. A plain REFRESH would need an ACCESS EXCLUSIVE
    // lock and time out; REFRESH ... CONCURRENTLY only conflicts with other refreshes.
    let reading = db
        .transaction_with("SELECT count(*) FROM company_summary_view")
        .await;
    let second = refresh_one(
        &db.pool,
        ViewName::CompanySummaryView,
        RefreshTrigger::Manual,
    )
    .await;
    assert_eq!(second.status, RefreshStatus::Ok, "{second:?}");
    reading.rollback().await.unwrap();
}

#[tokio::test]
async fn a_failed_refresh_is_recorded_keeps_the_old_data_and_the_other_views_still_refresh() {
    let db = db_with_fixture().await;
    refresh_all_as(&db.pool, RefreshTrigger::Startup).await;
    db.execute(r#"INSERT INTO "Company" ("id", "name") VALUES ('c_new', 'Newcomer')"#)
        .await;

    // A DBA's plain REFRESH, left open in a transaction, holds the summary view's ACCESS EXCLUSIVE lock:
    // our refresh cannot get the view's lock within the lock timeout.
    let blocking = db.locking_summary_view().await;
    let reports = refresh_all_as(&db.pool, RefreshTrigger::Schedule).await;
    blocking.rollback().await.unwrap();

    let statuses: Vec<(ViewName, RefreshStatus)> =
        reports.iter().map(|r| (r.view, r.status)).collect();
    assert_eq!(
        statuses,
        vec![
            (ViewName::CompanyProspectView, RefreshStatus::Ok),
            (ViewName::CompanySummaryView, RefreshStatus::Error),
            (ViewName::ProspectSearchView, RefreshStatus::Ok),
        ]
    );
    let failure = &reports[1];
    assert!(
        failure.error.as_deref().unwrap().contains("lock timeout"),
        "{failure:?}"
    );

    let recorded = sqlx::query!("SELECT view_name, error_message FROM materialized_view_errors")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].view_name, "company_summary_view");
    assert!(recorded[0].error_message.contains("lock timeout"));
    let logged = sqlx::query!(
        "SELECT status, trigger, error_message, snapshot IS NULL AS no_snapshot FROM materialized_view_log WHERE id = $1",
        failure.log_id.unwrap()
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (logged.status.as_str(), logged.trigger.as_str()),
        ("error", "schedule")
    );
    assert_eq!(logged.no_snapshot, Some(true));

    // The failed view still serves its previous contents; the refreshed one has the new company.
    let in_summary = db
        .count("company_summary_view WHERE company_id = 'c_new'")
        .await;
    let in_company_prospects = db
        .count("company_prospect_view WHERE company_id = 'c_new'")
        .await;
    assert_eq!((in_summary, in_company_prospects), (0, 1));

    // The next attempt succeeds.
    let retry = refresh_one(
        &db.pool,
        ViewName::CompanySummaryView,
        RefreshTrigger::Schedule,
    )
    .await;
    assert_eq!(retry.status, RefreshStatus::Ok);
}

#[tokio::test]
async fn the_sql_function_refreshes_every_view_on_a_fresh_database() {
    let db = TestDb::new().await;
    let rows = sqlx::query!(
        r#"SELECT view_name AS "view_name!", status AS "status!", trigger AS "trigger!" FROM refresh_materialized_views()"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let got: Vec<(String, String, String)> = rows
        .into_iter()
        .map(|r| (r.view_name, r.status, r.trigger))
        .collect();
    let expected: Vec<(String, String, String)> = ViewName::ALL
        .iter()
        .map(|v| (v.as_str().to_owned(), "ok".to_owned(), "sql".to_owned()))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn the_sql_function_records_a_failing_view_and_carries_on_with_the_next() {
    let db = db_with_fixture().await;
    refresh_all_as(&db.pool, RefreshTrigger::Startup).await;

    let blocking = db
        .transaction_with("REFRESH MATERIALIZED VIEW company_prospect_view")
        .await;

    let mut dba = db.connection().await;
    run(&mut dba, "SET lock_timeout = '300ms'").await;
    let rows = sqlx::query!(
        r#"SELECT view_name AS "view_name!", status AS "status!", error_message FROM refresh_materialized_views()"#
    )
    .fetch_all(&mut dba)
    .await
    .unwrap();
    blocking.rollback().await.unwrap();

    let statuses: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.view_name.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("company_prospect_view", "error"),
            ("company_summary_view", "ok"),
            ("prospect_search_view", "ok")
        ]
    );
    assert!(
        rows[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("lock timeout")
    );
    assert_eq!(
        db.count("materialized_view_errors WHERE view_name = 'company_prospect_view'")
            .await,
        1
    );
}

#[tokio::test]
async fn two_refreshers_never_refresh_one_view_at_the_same_time() {
    let db = db_with_fixture().await;
    refresh_all_as(&db.pool, RefreshTrigger::Startup).await;
    // Two independent pools, as two server processes would have.
    let other = sqlx::PgPool::connect(&db.url).await.unwrap();
    let settings = quick_refresh_settings();
    let mut runs = Vec::new();
    for round in 0..4 {
        let (a, b) = tokio::join!(
            refresh_view(
                &db.pool,
                ViewName::CompanyProspectView,
                RefreshTrigger::Notify,
                &settings
            ),
            refresh_view(
                &other,
                ViewName::CompanyProspectView,
                RefreshTrigger::Notify,
                &settings
            ),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.status, RefreshStatus::Error, "round {round}: {a:?}");
        assert_ne!(b.status, RefreshStatus::Error, "round {round}: {b:?}");
        assert!(
            a.status == RefreshStatus::Ok || b.status == RefreshStatus::Ok,
            "round {round}: one of them refreshes"
        );
        runs.push((a, b));
    }
    let intervals = sqlx::query!(
        "SELECT started_at, finished_at FROM materialized_view_log
         WHERE view_name = 'company_prospect_view' AND status = 'ok' ORDER BY started_at"
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        intervals.len() >= 5,
        "the startup refresh plus at least one per round"
    );
    for pair in intervals.windows(2) {
        assert!(
            pair[0].finished_at <= pair[1].started_at,
            "overlapping refreshes: {:?} and {:?}",
            (pair[0].started_at, pair[0].finished_at),
            (pair[1].started_at, pair[1].finished_at)
        );
    }
}
