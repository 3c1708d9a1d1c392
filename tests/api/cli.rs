//! The binary's commands, run as a user runs them.

use std::process::{Command, Output};

use sqlx::migrate::MigrateDatabase;

use crate::helpers::{TestDb, succeeded};

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
    succeeded(&output);
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
    succeeded(&seeded);
    assert!(
        stdout(&seeded).starts_with("seeded 50 companies and "),
        "{}",
        stdout(&seeded)
    );
    assert_eq!(
        db.count("read_models WHERE NOT populated").await,
        0,
        "seed leaves the read models populated: serve answers at once"
    );
    assert_eq!(
        stdout(&seeded).lines().count(),
        4,
        "the seed line, then one per view"
    );

    let refreshed = prospect_api(&db.url, &["refresh"]);
    succeeded(&refreshed);
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
    assert_eq!(
        db.count("materialized_view_log WHERE trigger = 'cli' AND status = 'ok'")
            .await,
        7,
        "three refreshes by seed, three by refresh, one by refresh --view"
    );
}

#[tokio::test]
async fn in_incremental_mode_refresh_builds_beside_what_a_bulk_load_changed_then_repairs_what_the_triggers_missed()
 {
    let db = TestDb::in_mode(prospect_api::views::Mode::Incremental).await;
    let seeded = prospect_api(
        &db.url,
        &[
            "seed",
            "--companies",
            "40",
            "--prospects-per-company",
            "3",
            "--no-refresh",
        ],
    );
    succeeded(&seeded);
    let built = prospect_api(&db.url, &["refresh"]);
    succeeded(&built);
    let lines: Vec<String> = stdout(&built).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert!(line.contains("table built beside and swapped in"), "{line}");
    }
    db.execute(
        r#"BEGIN; SET LOCAL session_replication_role = replica;
           UPDATE "Prospect" SET "lastName" = 'Behind The Triggers' WHERE "id" = (SELECT min("id") FROM "Prospect");
           COMMIT"#,
    )
    .await;
    let repaired = prospect_api(&db.url, &["refresh", "--view", "company_prospect_view"]);
    succeeded(&repaired);
    let line = stdout(&repaired);
    assert!(
        line.starts_with("company_prospect_view")
            && line.contains("compared with its definition and repaired, 2 rows changed"),
        "{line}"
    );
}

#[tokio::test]
async fn migrate_converts_the_read_models_to_view_maintenance_and_says_what_it_did() {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    let migrate = |mode: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_prospect-api"))
            .arg("migrate")
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .env("VIEW_MAINTENANCE", mode)
            .output()
            .expect("the binary runs");
        succeeded(&output);
        stdout(&output)
    };
    let converted = migrate("incremental");
    let lines: Vec<&str> = converted.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{converted}");
    for line in &lines {
        assert!(
            line.contains("materialized view -> table (incremental)")
                && line.contains("rows built in")
                && line.contains("readers waited"),
            "{line}"
        );
    }
    let again = migrate("incremental");
    assert_eq!(
        again
            .lines()
            .filter(|l| l.contains("incremental (table), as configured"))
            .count(),
        3,
        "{again}"
    );
    let back = migrate("refresh");
    assert_eq!(
        back.lines()
            .filter(|l| l.contains("table -> materialized view (refresh)"))
            .count(),
        3,
        "{back}"
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_prospect-api"))
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .env("VIEW_MAINTENANCE", "sometimes")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("sometimes") && stderr.contains("incremental"),
        "{stderr}"
    );
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

#[test]
fn serve_refuses_to_start_with_an_admin_token_shorter_than_32_characters() {
    let output = Command::new(env!("CARGO_BIN_EXE_prospect-api"))
        .arg("serve")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:9/unused")
        .env("ADMIN_TOKEN", "short-secret-31-characters-long")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 32 characters"), "{stderr}");
    assert!(
        !stderr.contains("short-secret"),
        "the token is not echoed: {stderr}"
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

#[tokio::test]
async fn serve_stops_cleanly_on_sigterm() {
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_prospect-api"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &db.url)
        .env(
            "ADMIN_TOKEN",
            "a-secret-admin-token-that-must-never-be-logged",
        )
        .env("RUST_LOG", "debug")
        .env("LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the server starts");
    // Read the log as it is written: a debug log outgrows the pipe's buffer, and a server blocked
    // writing to a full pipe answers nothing (seen once in CI: the test hung).
    let mut stderr = server.stderr.take().unwrap();
    let log_reader = std::thread::spawn(move || {
        let mut log = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
        log
    });
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    crate::helpers::eventually(20, "the server becoming ready", || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    // An authenticated request, so that the token passes through the server before we read its log.
    let accepted = client
        .post(format!("http://127.0.0.1:{port}/admin/refresh?wait=false"))
        .bearer_auth("a-secret-admin-token-that-must-never-be-logged")
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);

    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "still running 15 s after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let log = log_reader.join().unwrap();
    assert!(
        log.contains("shutdown signal received") && log.contains("\"stopped\""),
        "{log}"
    );
    assert!(
        !log.contains("a-secret-admin-token"),
        "the admin token appears in the log"
    );
    assert!(
        client.get(&url).send().await.is_err(),
        "nothing listens any more"
    );
}

#[tokio::test]
async fn seed_reports_its_progress_as_log_lines_when_not_on_a_terminal() {
    let db = TestDb::empty().await;
    let output = Command::new(env!("CARGO_BIN_EXE_prospect-api"))
        .args([
            "seed",
            "--companies",
            "25000",
            "--prospects-per-company",
            "1",
            "--no-refresh",
        ])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "info")
        .output()
        .expect("the binary runs");
    succeeded(&output);
    let log = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "companies, 10,000 of 25,000 companies (40%), 10,000 rows",
        "companies, 25,000 of 25,000 companies (100%), 25,000 rows",
        "prospects, 10,000 of 25,000 companies (40%)",
        "committing",
    ] {
        assert!(log.contains(expected), "{expected:?} in:\n{log}");
    }
    assert!(
        log.lines().filter(|l| l.contains("elapsed")).count() >= 4,
        "a line per phase at least:\n{log}"
    );
    assert!(!log.contains('\r'), "no terminal redraws in a log:\n{log}");
}

#[tokio::test]
async fn migrate_reports_what_a_conversion_waits_for() {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    crate::helpers::refresh_all_ok(&db.pool).await;
    // A reader holding the view keeps the swap waiting for its lock for a while.
    let mut reader = db.connection().await;
    sqlx::raw_sql("BEGIN; SELECT count(*) FROM company_prospect_view;")
        .execute(&mut reader)
        .await
        .unwrap();
    let migrate = Command::new(env!("CARGO_BIN_EXE_prospect-api"))
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "info")
        .env("VIEW_MAINTENANCE", "incremental")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    sqlx::raw_sql("COMMIT").execute(&mut reader).await.unwrap();
    let output = migrate.wait_with_output().unwrap();
    succeeded(&output);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("company_prospect_view: waiting for a lock") && log.contains("elapsed"),
        "{log}"
    );
}
