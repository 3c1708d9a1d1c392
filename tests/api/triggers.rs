//! The base-table triggers: notifications, and the change record the refresher catches up from.

use std::time::Duration;

use prospect_api::refresh::RefreshTrigger;
use sqlx::postgres::PgListener;

use crate::helpers::{TestDb, refresh_all_as, run};

async fn next_notification(listener: &mut PgListener) -> serde_json::Value {
    let notification = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("no notification within 5 s")
        .expect("listener failed");
    assert_eq!(notification.channel(), "refresh_views");
    serde_json::from_str(notification.payload()).expect("the payload is JSON")
}

#[tokio::test]
async fn with_notifications_on_every_kind_of_write_to_either_table_notifies_with_table_and_operation()
 {
    let db = TestDb::new().await;
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen("refresh_views").await.unwrap();
    // The writing app's session, with the setting REFRESH_NOTIFY=true puts on the database.
    let mut writer = db.connection().await;
    sqlx::query!("SELECT set_config('prospect_api.notify', 'on', false)")
        .fetch_one(&mut writer)
        .await
        .unwrap();

    let writes: [(&'static str, &str, &str); 8] = [
        (
            r#"INSERT INTO "Company" ("id", "name") VALUES ('c1', 'One')"#,
            "Company",
            "INSERT",
        ),
        (
            r#"UPDATE "Company" SET "name" = 'Uno' WHERE "id" = 'c1'"#,
            "Company",
            "UPDATE",
        ),
        (
            r#"INSERT INTO "Prospect" ("id", "companyId") VALUES ('p1', 'c1')"#,
            "Prospect",
            "INSERT",
        ),
        (
            r#"UPDATE "Prospect" SET "firstName" = 'Ann'"#,
            "Prospect",
            "UPDATE",
        ),
        (r#"DELETE FROM "Prospect""#, "Prospect", "DELETE"),
        (r#"TRUNCATE "Prospect""#, "Prospect", "TRUNCATE"),
        (r#"DELETE FROM "Company""#, "Company", "DELETE"),
        (r#"TRUNCATE "Prospect", "Company""#, "Prospect", "TRUNCATE"),
    ];
    for (sql, table, operation) in writes {
        sqlx::raw_sql(sql).execute(&mut writer).await.unwrap();
        let payload = next_notification(&mut listener).await;
        assert_eq!(
            payload,
            serde_json::json!({ "table": table, "operation": operation }),
            "after {sql}"
        );
    }
    // The last TRUNCATE named both tables: the second notification is for "Company".
    let payload = next_notification(&mut listener).await;
    assert_eq!(
        payload,
        serde_json::json!({ "table": "Company", "operation": "TRUNCATE" })
    );
}

#[tokio::test]
async fn by_default_writes_are_recorded_but_not_notified() {
    let db = TestDb::new().await;
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen("refresh_views").await.unwrap();
    db.execute(r#"INSERT INTO "Company" ("id", "name") VALUES ('c1', 'One')"#)
        .await;
    let heard = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(
        heard.is_err(),
        "no notification without prospect_api.notify = on"
    );
    assert_eq!(db.count("base_table_changes").await, 1);
}

#[tokio::test]
async fn set_change_notifications_turns_notifying_on_for_new_sessions() {
    let db = TestDb::new().await;
    sqlx::query!("SELECT set_change_notifications(true)")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen("refresh_views").await.unwrap();
    let mut new_session = db.connection().await;
    run(
        &mut new_session,
        r#"INSERT INTO "Company" ("id", "name") VALUES ('c1', 'One')"#,
    )
    .await;
    assert_eq!(next_notification(&mut listener).await["table"], "Company");
}

#[tokio::test]
async fn views_need_refresh_until_refreshed_and_again_after_a_write() {
    let db = TestDb::new().await;
    let needing = || async {
        sqlx::query_scalar!(r#"SELECT v AS "v!" FROM views_needing_refresh() v ORDER BY v"#)
            .fetch_all(&db.pool)
            .await
            .unwrap()
    };
    assert_eq!(needing().await.len(), 3, "never refreshed");
    refresh_all_as(&db.pool, RefreshTrigger::Startup).await;
    assert!(needing().await.is_empty());
    db.execute(r#"INSERT INTO "Company" ("id", "name") VALUES ('c1', 'One')"#)
        .await;
    assert_eq!(
        needing().await,
        vec![
            "company_prospect_view",
            "company_summary_view",
            "prospect_search_view"
        ]
    );
    refresh_all_as(&db.pool, RefreshTrigger::Catchup).await;
    assert!(needing().await.is_empty());
}

#[tokio::test]
async fn a_write_committed_after_the_refresh_snapshot_is_still_detected_even_if_it_began_before() {
    let db = TestDb::new().await;
    refresh_all_as(&db.pool, RefreshTrigger::Startup).await;

    // A writer inserts, and is still open while the refresh takes its snapshot...
    let writing = db
        .transaction_with(
            r#"INSERT INTO "Company" ("id", "name") VALUES ('c_slow', 'Slow Writer')"#,
        )
        .await;
    refresh_all_as(&db.pool, RefreshTrigger::Schedule).await;
    // ...then commits: the refreshed views do not contain its row, and the change record knows it.
    writing.commit().await.unwrap();

    assert_eq!(
        db.count("company_summary_view WHERE company_id = 'c_slow'")
            .await,
        0
    );
    assert_eq!(
        db.count("views_needing_refresh()").await,
        3,
        "a timestamp comparison would miss this write; the snapshot comparison does not"
    );
}

#[tokio::test]
async fn the_change_record_keeps_the_companies_each_written_row_touched() {
    let db = TestDb::new().await;
    let writes = [
        r#"INSERT INTO "Company" ("id", "name") VALUES ('c1', 'One'), ('c2', 'Two')"#,
        // A row per written row.
        r#"INSERT INTO "Prospect" ("id", "companyId") SELECT 'p' || i, 'c1' FROM generate_series(1, 50) i"#,
        // A prospect moving between companies touches both.
        r#"UPDATE "Prospect" SET "companyId" = 'c2' WHERE "id" = 'p1'"#,
        r#"UPDATE "Prospect" SET "firstName" = 'Ann' WHERE "id" = 'p2'"#,
        // A statement that changes no row records nothing.
        r#"UPDATE "Prospect" SET "firstName" = 'Nobody' WHERE false"#,
        // A company's new id cascades to its prospects: both tables record the old and new id.
        r#"UPDATE "Company" SET "id" = 'c3' WHERE "id" = 'c2'"#,
        r#"DELETE FROM "Prospect" WHERE "companyId" = 'c1'"#,
        r#"DELETE FROM "Company" WHERE "id" = 'c1'"#,
        // TRUNCATE has no rows to look at: its rows say "every company" (NULL).
        r#"TRUNCATE "Prospect", "Company""#,
    ];
    for sql in writes {
        db.execute(sql).await;
    }
    // Per transaction and table: the companies recorded, and how many rows recorded them.
    let recorded = sqlx::query!(
        r#"SELECT table_name AS "table!", (SELECT array_agg(id ORDER BY id) FROM unnest(company_ids) id) AS companies,
                  count(*) AS "rows!"
           FROM base_table_changes GROUP BY xid, table_name, company_ids ORDER BY xid, table_name DESC, company_ids"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let recorded: Vec<(String, Option<Vec<String>>, i64)> = recorded
        .into_iter()
        .map(|r| (r.table, r.companies, r.rows))
        .collect();
    let row = |table: &str, companies: Option<&[&str]>, rows: i64| {
        let companies = companies.map(|ids| ids.iter().map(|c| c.to_string()).collect());
        (table.to_owned(), companies, rows)
    };
    let expected = vec![
        row("Company", Some(&["c1"]), 1),
        row("Company", Some(&["c2"]), 1),
        row("Prospect", Some(&["c1"]), 50),
        row("Prospect", Some(&["c1", "c2"]), 1),
        row("Prospect", Some(&["c1"]), 1),
        row("Prospect", Some(&["c2", "c3"]), 1),
        row("Company", Some(&["c2", "c3"]), 1),
        row("Prospect", Some(&["c1"]), 49),
        row("Company", Some(&["c1"]), 1),
        row("Prospect", None, 1),
        row("Company", None, 1),
    ];
    assert_eq!(recorded, expected);
}

#[tokio::test]
async fn the_change_record_is_pruned_once_every_view_has_seen_it() {
    let db = TestDb::new().await;
    db.execute(r#"INSERT INTO "Company" ("id", "name") VALUES ('c1', 'One')"#)
        .await;
    db.execute(r#"INSERT INTO "Prospect" ("id", "companyId") VALUES ('p1', 'c1')"#)
        .await;
    refresh_all_as(&db.pool, RefreshTrigger::Notify).await;
    assert_eq!(
        db.count("base_table_changes").await,
        0,
        "every view has seen these changes"
    );
}
