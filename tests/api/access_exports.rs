//! Every export accounted for, over real HTTP against the real database: the daily quota reserved
//! before the first byte (two concurrent exports cannot both pass one that only one fits), an
//! audit row before and after every export, exports refused while the audit log cannot be written,
//! admin actions audited, and the log append-only.

use serde_json::json;
use sqlx::Row;

use crate::access_support::{As, POLICY, jwt, spawn_guarded, unix_now};
use crate::helpers::{ADMIN_TOKEN, eventually, header, json, run, scalar};

/// The audit rows, oldest first: (credential, role, action, endpoint, outcome, rows, bytes).
async fn audit_rows(
    pool: &sqlx::PgPool,
) -> Vec<(
    String,
    String,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
)> {
    sqlx::query(
        "SELECT credential, role, action, endpoint, outcome, rows, bytes FROM audit_log ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|row| {
        (
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
            row.get(5),
            row.get(6),
        )
    })
    .collect()
}

#[tokio::test]
async fn every_export_writes_an_audit_row_before_and_after_with_what_was_sent() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let analyst = As::Bearer(jwt(
        &json!({"sub": "ada", "role": "analyst", "exp": unix_now() + 600}),
    ));
    let response = app
        .get_as(
            &analyst,
            "/prospects?industry=Software&format=csv&fields=first_name,company_name",
        )
        .await;
    assert_eq!(response.status(), 200);
    let request_id = header(&response, "x-request-id");
    let body = response.text().await.unwrap();
    let sent_rows = body.lines().count() as i64 - 1;
    assert!(sent_rows > 0);
    eventually(5, "the export's end recorded", || async {
        audit_rows(&app.db.pool).await.len() == 2
    })
    .await;
    let rows = audit_rows(&app.db.pool).await;
    let started = (
        "jwt:ada".to_owned(),
        "analyst".to_owned(),
        "export".to_owned(),
        "/prospects".to_owned(),
    );
    assert_eq!(
        (
            rows[0].0.clone(),
            rows[0].1.clone(),
            rows[0].2.clone(),
            rows[0].3.clone()
        ),
        started
    );
    assert_eq!(rows[0].4, "started");
    assert_eq!(rows[0].5, Some(sent_rows), "the rows it was about to send");
    assert_eq!(rows[1].4, "completed");
    assert_eq!(rows[1].5, Some(sent_rows));
    assert_eq!(rows[1].6, Some(body.len() as i64));
    let detail = sqlx::query(
        "SELECT request_id, filters, fields, client FROM audit_log WHERE outcome = 'completed'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(detail.get::<String, _>(0), request_id);
    assert_eq!(
        detail.get::<serde_json::Value, _>(1)["industry"],
        json!(["Software"])
    );
    assert_eq!(detail.get::<String, _>(2), "first_name,company_name");
    assert_eq!(detail.get::<String, _>(3), "127.0.0.1");
    // JSON pages are not exports.
    app.get_as(&analyst, "/prospects").await;
    assert_eq!(audit_rows(&app.db.pool).await.len(), 2);
    let metrics = crate::access_support::metrics(&app).await;
    assert!(
        metrics.contains(&format!(
            "exported_rows_total{{role=\"analyst\"}} {sent_rows}"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn two_concurrent_exports_cannot_both_pass_a_quota_only_one_fits() {
    let policy = "[roles.metered]\nexport_rows_per_day = 15\n";
    let app = spawn_guarded(policy, |_| {}).await;
    let who = As::Bearer(jwt(
        &json!({"sub": "bob", "role": "metered", "exp": unix_now() + 600}),
    ));
    // Software has 7 prospects in the fixture: 7 + 7 fit in 15, a third export does not.
    let path = "/prospects?industry=Software&format=csv";
    let matching = app
        .get_as(&As::Bearer(ADMIN_TOKEN.into()), path)
        .await
        .text()
        .await
        .unwrap();
    let per_export = matching.lines().count() - 1;
    assert!(
        per_export * 2 <= 15 && per_export * 3 > 15,
        "{per_export} rows per export"
    );
    let attempts = futures_util::future::join_all((0..3).map(|_| app.get_as(&who, path))).await;
    let mut statuses: Vec<u16> = attempts.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429]);
    let refused = attempts.into_iter().find(|r| r.status() == 429).unwrap();
    assert!(header(&refused, "retry-after").parse::<u64>().unwrap() <= 86_400);
    let problem = json(refused, 429).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("15 rows a day"),
        "{problem}"
    );
    let exported: i64 = scalar(
        &app.db.pool,
        "SELECT rows FROM export_quota WHERE credential = 'jwt:bob'",
    )
    .await;
    assert_eq!(exported, 2 * per_export as i64);
    let refusals: i64 = scalar(
        &app.db.pool,
        "SELECT count(*) FROM audit_log WHERE outcome = 'refused'",
    )
    .await;
    assert_eq!(refusals, 1);
    // Another credential of the role has its own allowance.
    let other = As::Bearer(jwt(
        &json!({"sub": "carol", "role": "metered", "exp": unix_now() + 600}),
    ));
    assert_eq!(app.get_as(&other, path).await.status(), 200);
}

#[tokio::test]
async fn while_the_audit_log_cannot_be_written_exports_are_refused_and_pages_still_served() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let analyst = As::role("analyst");
    run(
        &app.db.pool,
        "ALTER TABLE audit_log RENAME TO audit_log_away",
    )
    .await;
    let refused = app.get_as(&analyst, "/prospects?format=csv").await;
    assert_eq!(refused.status(), 503);
    assert_ne!(header(&refused, "content-type"), "text/csv; charset=utf-8");
    let problem = json(refused, 503).await;
    assert_eq!(
        problem["type"],
        "urn:prospect-api:problem:audit-unavailable"
    );
    assert_eq!(
        app.get_as(&analyst, "/prospects").await.status(),
        200,
        "pages are not exports"
    );
    run(
        &app.db.pool,
        "ALTER TABLE audit_log_away RENAME TO audit_log",
    )
    .await;
    assert_eq!(
        app.get_as(&analyst, "/prospects?format=csv").await.status(),
        200
    );
    let quota: i64 = scalar(&app.db.pool, "SELECT count(*) FROM export_quota").await;
    assert_eq!(quota, 1, "the refused export reserved nothing");
}

#[tokio::test]
async fn admin_actions_are_audited_and_the_log_is_append_only() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let response = app
        .client
        .post(format!("{}/admin/refresh", app.address))
        .bearer_auth(crate::access_support::token("ops"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.get_as(&As::role("ops"), "/admin/views").await; // reading state is no action
    eventually(5, "the admin action recorded", || async {
        !audit_rows(&app.db.pool).await.is_empty()
    })
    .await;
    let rows = audit_rows(&app.db.pool).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str(), rows[0].2.as_str()),
        ("jwt:user-of-ops", "ops", "admin")
    );
    assert_eq!(
        (rows[0].3.as_str(), rows[0].4.as_str()),
        ("/admin/refresh", "ok")
    );

    // Admins read the log, newest first, by credential and by page.
    app.get_as(&As::role("analyst"), "/prospects?format=csv")
        .await
        .text()
        .await
        .unwrap();
    eventually(5, "the export recorded", || async {
        audit_rows(&app.db.pool).await.len() == 3
    })
    .await;
    let listed = json(app.get_as(&As::role("ops"), "/admin/audit").await, 200).await;
    let outcomes: Vec<&str> = crate::helpers::strings(&listed, "outcome");
    assert_eq!(outcomes, ["completed", "started", "ok"]);
    let mine = json(
        app.get_as(&As::role("ops"), "/admin/audit?credential=jwt:user-of-ops")
            .await,
        200,
    )
    .await;
    assert_eq!(crate::helpers::strings(&mine, "action"), ["admin"]);
    let newest = listed[0]["id"].as_i64().unwrap();
    let older = json(
        app.get_as(
            &As::role("ops"),
            &format!("/admin/audit?before={newest}&limit=1"),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(crate::helpers::strings(&older, "outcome"), ["started"]);
    json(app.get_as(&As::role("analyst"), "/admin/audit").await, 403).await;
    json(
        app.get_as(&As::role("ops"), "/admin/audit?before=0").await,
        400,
    )
    .await;
    let rows = audit_rows(&app.db.pool).await;

    for statement in [
        "UPDATE audit_log SET outcome = 'error'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let error = sqlx::query(statement)
            .execute(&app.db.pool)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    let pruned: i64 = scalar(&app.db.pool, "SELECT prune_audit_log(interval '0 seconds')").await;
    assert_eq!(pruned as usize, rows.len(), "only pruning deletes");
}
