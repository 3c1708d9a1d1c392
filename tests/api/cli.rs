//! The binary's commands, run as a user runs them.

use std::process::{Command, Output};

use sqlx::migrate::MigrateDatabase;

use crate::helpers::TestDb;

fn prospect_api(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prospect-api"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn migrate_creates_the_database_when_it_is_missing() {
    let db = TestDb::empty().await;
    db.pool.close().await;
    sqlx::Postgres::force_drop_database(&db.url).await.unwrap();

    let output = prospect_api(&db.url, &["migrate"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout(&output).contains("schema up to date"),
        "{}",
        stdout(&output)
    );
    assert!(sqlx::Postgres::database_exists(&db.url).await.unwrap());
}

#[tokio::test]
async fn seed_then_refresh_print_what_they_did() {
    let db = TestDb::new().await;
    let seeded = prospect_api(
        &db.url,
        &["seed", "--companies", "50", "--prospects-per-company", "3"],
    );
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    assert!(
        stdout(&seeded).starts_with("seeded 50 companies and "),
        "{}",
        stdout(&seeded)
    );

    let refreshed = prospect_api(&db.url, &["refresh"]);
    assert!(
        refreshed.status.success(),
        "{}",
        String::from_utf8_lossy(&refreshed.stderr)
    );
    let lines: Vec<String> = stdout(&refreshed).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, view) in lines.iter().zip([
        "company_prospect_view",
        "company_summary_view",
        "prospect_search_view",
    ]) {
        assert!(line.starts_with(view) && line.contains(" ok "), "{line}");
    }

    let one = prospect_api(&db.url, &["refresh", "--view", "company_summary_view"]);
    assert!(one.status.success());
    assert_eq!(stdout(&one).lines().count(), 1);
    let logged = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM materialized_view_log WHERE trigger = 'cli' AND status = 'ok'"#)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(logged, 4);
}

#[tokio::test]
async fn an_unknown_view_is_rejected_with_the_valid_names() {
    let output = prospect_api(
        "postgres://postgres@127.0.0.1:5432/unused",
        &["refresh", "--view", "company_view"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown view 'company_view'") && stderr.contains("company_prospect_view"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unreachable_database_gets_a_message_saying_where_and_what_to_do() {
    // Port 9 (discard) on loopback: nothing listens there.
    let output = prospect_api(
        "postgres://someone:hunter2@127.0.0.1:9/prospects",
        &["migrate"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach PostgreSQL at postgres://someone:***@127.0.0.1:9/prospects"),
        "{stderr}"
    );
    assert!(stderr.contains("docker compose up -d db"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password must not be printed"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
