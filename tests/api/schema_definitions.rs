//! schema/current.sql says what the migrations produce: a database built from it (on the writing
//! app's base tables) and one built by the migrations (and `migrate`'s conversion) hold the same
//! objects, defined the same way.

use std::collections::BTreeMap;

use crate::helpers::TestDb;

/// Every object of the public schema and the staging schema, by kind and name, with its definition
/// as PostgreSQL prints it: columns (in order, with type, nullability, default, identity), constraints,
/// indexes, views, functions, triggers, storage options, the catalog's rows, schemas, extensions.
async fn objects(db: &TestDb) -> BTreeMap<String, String> {
    let rows = sqlx::query!(
        r#"WITH ours AS (SELECT oid FROM pg_namespace WHERE nspname IN ('public', 'prospect_api_staging'))
           SELECT 'column ' || c.relname || '.' || lpad(rank() OVER (PARTITION BY c.oid ORDER BY a.attnum)::text, 3, '0')
                  AS "key!",
                  concat_ws(' ', a.attname, format_type(a.atttypid, a.atttypmod),
                            CASE WHEN a.attnotnull THEN 'not null' END, pg_get_expr(d.adbin, d.adrelid),
                            nullif(a.attidentity::text, ''), nullif(a.attgenerated::text, '')) AS "definition!"
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE c.relnamespace IN (SELECT oid FROM ours) AND c.relkind IN ('r', 'm', 'v')
             AND c.relname <> '_sqlx_migrations' AND a.attnum > 0 AND NOT a.attisdropped
           UNION ALL
           SELECT 'constraint ' || k.conrelid::regclass || '.' || k.conname, pg_get_constraintdef(k.oid)
           FROM pg_constraint k
           WHERE k.connamespace IN (SELECT oid FROM ours) AND k.conrelid <> 0
             AND k.conrelid::regclass::text <> '_sqlx_migrations'
           UNION ALL
           SELECT 'index ' || i.indexname, i.indexdef FROM pg_indexes i
           WHERE i.schemaname IN ('public', 'prospect_api_staging') AND i.tablename <> '_sqlx_migrations'
           UNION ALL
           SELECT 'view ' || c.relname, c.relkind::text || ' ' || pg_get_viewdef(c.oid)
           FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM ours) AND c.relkind IN ('v', 'm')
           UNION ALL
           SELECT 'options ' || c.relname, array_to_string(c.reloptions, ',')
           FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM ours) AND c.reloptions IS NOT NULL
           UNION ALL
           SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                  pg_get_functiondef(p.oid)
           FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM ours) AND p.prokind = 'f'
             AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = p.oid AND e.deptype = 'e')
           UNION ALL
           SELECT 'trigger ' || t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
           WHERE NOT t.tgisinternal
           UNION ALL
           SELECT 'catalog ' || m.name, concat_ws(' ', m.position, m.definition, m.key_columns::text)
           FROM read_model_catalog m
           UNION ALL
           SELECT 'secret ' || s.name, 'present' FROM api_secrets s
           UNION ALL
           SELECT 'schema ' || n.nspname, 'present' FROM pg_namespace n
           WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
           UNION ALL
           SELECT 'extension ' || x.extname, 'present' FROM pg_extension x"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|row| (row.key, row.definition))
        .collect()
}

#[tokio::test]
async fn the_current_definitions_file_is_what_the_migrations_produce() {
    let migrated = TestDb::new().await;
    let described = TestDb::empty().await;
    described
        .execute(include_str!("../../migrations/0001_base_tables.sql"))
        .await;
    described
        .execute(include_str!("../../schema/current.sql"))
        .await;
    let (from_migrations, from_file) = (objects(&migrated).await, objects(&described).await);
    assert!(
        from_migrations.len() > 150,
        "{} objects found",
        from_migrations.len()
    );
    let differing: Vec<String> = from_migrations
        .keys()
        .chain(from_file.keys())
        .filter(|key| from_migrations.get(*key) != from_file.get(*key))
        .map(|key| {
            format!(
                "{key}\n  migrations: {:?}\n  schema/current.sql: {:?}",
                from_migrations.get(key),
                from_file.get(key)
            )
        })
        .collect();
    assert!(
        differing.is_empty(),
        "schema/current.sql differs from the migrations in {} places:\n{}",
        differing.len(),
        differing.join("\n")
    );
}
