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
    let applied_before =
        scalar::<i64>(&db.pool, r#"SELECT count(*) AS "n!" FROM _sqlx_migrations"#).await;
    prospect_api::db::migrate(&db.pool).await.unwrap();
    assert_eq!(schema_fingerprint(&db).await, before);
    let applied_after =
        scalar::<i64>(&db.pool, r#"SELECT count(*) AS "n!" FROM _sqlx_migrations"#).await;
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
    let changed = scalar::<i64>(
        &db.pool,
        r#"SELECT count(*) AS "n!" FROM views_needing_refresh()"#,
    )
    .await;
    assert_eq!(changed, 3);
}
