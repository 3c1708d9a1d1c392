//! Migrations: repeatable, and safe on a database whose app already owns the base tables.

use crate::helpers::{TestDb, refresh_all_ok, scalar};

/// Every column of every relation in the public schema, plus functions and triggers: what a migration
/// run could change.
async fn schema_fingerprint(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar!(
        r#"SELECT format('%s.%s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod)) AS "item!"
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE n.nspname = 'public'
           UNION ALL SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
           UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
           ORDER BY 1"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn applying_the_migrations_twice_changes_nothing() {
    let db = TestDb::new().await;
    let before = schema_fingerprint(&db).await;
    let applied_before = db.count("_sqlx_migrations").await;
    prospect_api::db::migrate(&db.pool).await.unwrap();
    assert_eq!(schema_fingerprint(&db).await, before);
    let applied_after = db.count("_sqlx_migrations").await;
    assert_eq!(applied_before, applied_after);
    assert_eq!(
        applied_after as usize,
        prospect_api::db::MIGRATOR.iter().count()
    );
}

#[tokio::test]
async fn the_migrations_adopt_base_tables_an_app_already_created_and_keep_their_rows() {
    let db = TestDb::empty().await;
    db.execute(include_str!("../fixtures/prisma_tables.sql"))
        .await;
    prospect_api::db::migrate(&db.pool).await.unwrap();

    refresh_all_ok(&db.pool).await;
    let row = sqlx::query!(
        "SELECT full_name, formatted_revenue, prospect_updated_at FROM company_prospect_view WHERE prospect_id = 'app_p1'"
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.full_name.as_deref(), Some("Existing Person"));
    assert_eq!(row.formatted_revenue.as_deref(), Some("2.5M"));
    // TIMESTAMP(3) values hold UTC; the view exposes them as timestamptz at that instant.
    assert_eq!(
        row.prospect_updated_at.unwrap().to_rfc3339(),
        "2024-05-02T08:30:00+00:00"
    );

    // The app's own writes now notify and are recorded.
    db.execute(r#"UPDATE "Prospect" SET "lastName" = 'Persona'"#)
        .await;
    assert_eq!(db.count("views_needing_refresh()").await, 3);
}

/// The `_sqlx_migrations` versions, in order.
async fn applied_versions(db: &TestDb) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// Rewrites a fresh database's history to what sqlx recorded before 0002 to 0015 were squashed into
/// 0016, up to migration `last`: the schema stays (0016 builds what they built; the migrations
/// after it are written to run again harmlessly), the history says it came from them.
async fn pretend_migrated_before_the_squash(db: &TestDb, last: i64) {
    sqlx::query(
        "WITH gone AS (DELETE FROM _sqlx_migrations WHERE version >= 16 RETURNING 1)
         INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
         SELECT v, 'squashed ' || v, now() - (20 - v) * interval '1 day', TRUE, sha384(v::text::bytea), v * 1000
         FROM generate_series(2, $1::bigint) AS v",
    )
    .bind(last)
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_database_migrated_before_the_squash_is_adopted_with_its_schema_and_rows() {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    refresh_all_ok(&db.pool).await;
    let schema = schema_fingerprint(&db).await;
    let rows = r#"SELECT count(*) AS "n!" FROM company_prospect_view"#;
    let rows_before = scalar::<i64>(&db.pool, rows).await;
    assert!(rows_before > 10);
    pretend_migrated_before_the_squash(&db, 15).await;

    prospect_api::db::migrate(&db.pool).await.unwrap();

    // The squash's row, then those of the migrations written since.
    let adopted: Vec<i64> = [1]
        .into_iter()
        .chain(
            prospect_api::db::MIGRATOR
                .iter()
                .map(|m| m.version)
                .filter(|v| *v >= 16),
        )
        .collect();
    assert_eq!(applied_versions(&db).await, adopted);
    let squash = prospect_api::db::MIGRATOR
        .iter()
        .find(|m| m.version == 16)
        .unwrap();
    let (checksum, installed_days_ago, execution_time): (Vec<u8>, f64, i64) = sqlx::query_as(
        "SELECT checksum, extract(epoch FROM now() - installed_on)::float8 / 86400, execution_time
         FROM _sqlx_migrations WHERE version = 16",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(checksum, *squash.checksum);
    // When the last squashed migration was applied, and how long they took together.
    assert_eq!(installed_days_ago.round(), 5.0);
    assert_eq!(execution_time, (2..=15).sum::<i64>() * 1000);
    assert_eq!(schema_fingerprint(&db).await, schema);
    assert_eq!(scalar::<i64>(&db.pool, rows).await, rows_before);

    // Adopted once: the next start finds a history sqlx knows and nothing to do.
    prospect_api::db::migrate(&db.pool).await.unwrap();
    assert_eq!(applied_versions(&db).await, adopted);
}

#[tokio::test]
async fn a_database_that_stopped_part_way_through_the_squashed_migrations_is_refused_untouched() {
    let db = TestDb::new().await;
    pretend_migrated_before_the_squash(&db, 9).await;
    let history = applied_versions(&db).await;

    let error = prospect_api::db::migrate(&db.pool).await.unwrap_err();

    let message = error.to_string();
    assert!(
        message.contains("applied migrations [2, 3, 4, 5, 6, 7, 8, 9]")
            && message.contains("from before the squash"),
        "{message}"
    );
    assert_eq!(applied_versions(&db).await, history);
}
