//! Demo data: deterministic, realistic in shape, and never written over existing data by accident.

use prospect_api::progress::Progress;
use prospect_api::seed::{SeedError, SeedOptions, SeedSummary};

use crate::helpers::TestDb;

async fn seed(pool: &sqlx::PgPool, options: &SeedOptions) -> Result<SeedSummary, SeedError> {
    prospect_api::seed::seed(pool, options, &Progress::hidden("seed")).await
}

fn options(seed_value: i64) -> SeedOptions {
    SeedOptions {
        companies: 300,
        prospects_per_company: 6,
        seed: seed_value,
        replace: false,
    }
}

/// A digest of every row of both base tables.
async fn content_digest(db: &TestDb) -> String {
    sqlx::query_scalar!(
        r#"SELECT md5(
               (SELECT string_agg(c::text, '|' ORDER BY c."id") FROM "Company" c) ||
               (SELECT string_agg(p::text, '|' ORDER BY p."id") FROM "Prospect" p)
           ) AS "digest!""#
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_same_seed_produces_identical_data_and_another_seed_different_data() {
    let (first, second, third) = (
        TestDb::new().await,
        TestDb::new().await,
        TestDb::new().await,
    );
    let a = seed(&first.pool, &options(7)).await.unwrap();
    let b = seed(&second.pool, &options(7)).await.unwrap();
    seed(&third.pool, &options(8)).await.unwrap();
    assert_eq!((a.companies, a.prospects), (b.companies, b.prospects));
    assert_eq!(content_digest(&first).await, content_digest(&second).await);
    assert_ne!(content_digest(&first).await, content_digest(&third).await);
}

/// The rows of companies 1 to `last` and their prospects, as one digest.
async fn digest_up_to(db: &TestDb, last: &str) -> String {
    sqlx::query_scalar(
        r#"SELECT md5(
               (SELECT string_agg(c::text, '|' ORDER BY c."id") FROM "Company" c WHERE c."id" <= $1) ||
               (SELECT string_agg(p::text, '|' ORDER BY p."id") FROM "Prospect" p WHERE p."companyId" <= $1)
           )"#,
    )
    .bind(last)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_data_does_not_depend_on_how_seeding_is_cut_into_statements() {
    // 25,000 companies are written in three statements per table (10,000 each), 12,000 in two: the
    // companies 10,001 to 12,000 come from differently bounded statements, and are the same.
    let (large, small) = (TestDb::new().await, TestDb::new().await);
    let sized = |companies| SeedOptions {
        companies,
        prospects_per_company: 1,
        ..options(3)
    };
    let large_summary = seed(&large.pool, &sized(25_000)).await.unwrap();
    seed(&small.pool, &sized(12_000)).await.unwrap();
    assert_eq!(large_summary.companies, 25_000);
    assert_eq!(
        digest_up_to(&large, "cmp_00012000").await,
        digest_up_to(&small, "cmp_00012000").await
    );
    let prospects_of_the_last_range: i64 =
        sqlx::query_scalar(r#"SELECT count(*) FROM "Prospect" WHERE "companyId" > 'cmp_00020000'"#)
            .fetch_one(&large.pool)
            .await
            .unwrap();
    assert!(
        prospects_of_the_last_range > 4_000,
        "the last range has its prospects"
    );
}

#[tokio::test]
async fn seeded_data_has_the_variety_the_api_must_handle() {
    let db = TestDb::new().await;
    let summary = seed(
        &db.pool,
        &SeedOptions {
            companies: 2000,
            ..options(42)
        },
    )
    .await
    .unwrap();
    assert_eq!(summary.companies, 2000);
    let shape = sqlx::query!(
        r#"SELECT
             (SELECT count(DISTINCT "industry") FROM "Company") AS "industries!",
             (SELECT count(DISTINCT "country") FROM "Company") AS "countries!",
             (SELECT count(DISTINCT "city") FROM "Company") AS "cities!",
             (SELECT count(*) FROM "Company" WHERE "revenue" IS NULL) AS "null_revenue!",
             (SELECT min("revenue") FILTER (WHERE "revenue" > 0) FROM "Company") AS "min_revenue!",
             (SELECT max("revenue") FROM "Company") AS "max_revenue!",
             (SELECT count(*) FROM "Company" c WHERE NOT EXISTS (SELECT 1 FROM "Prospect" p WHERE p."companyId" = c."id")) AS "without_prospects!",
             (SELECT count(DISTINCT "department") FROM "Prospect") AS "departments!",
             (SELECT count(DISTINCT "jobTitleLevel") FROM "Prospect") AS "levels!",
             (SELECT count(*) FROM "Prospect" WHERE "firstName" IS NULL) AS "no_first!",
             (SELECT count(*) FROM "Prospect" WHERE "lastName" IS NULL) AS "no_last!",
             (SELECT count(*) FROM "Prospect" WHERE "email" NOT LIKE '%.example') AS "real_looking_emails!",
             (SELECT count(*) FROM "Prospect") AS "prospects!""#
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(shape.prospects as u64, summary.prospects);
    assert!(shape.industries >= 20, "{} industries", shape.industries);
    assert!(shape.countries >= 25, "{} countries", shape.countries);
    assert!(shape.cities >= 200, "{} cities", shape.cities);
    assert!(shape.null_revenue > 0);
    assert!(shape.min_revenue < 100_000 && shape.max_revenue > 10_000_000_000);
    assert!(shape.without_prospects > 0);
    assert_eq!((shape.departments, shape.levels), (10, 6));
    assert!(shape.no_first > 0 && shape.no_last > 0);
    assert_eq!(
        shape.real_looking_emails, 0,
        "demo emails are all on the reserved .example domain"
    );
    // About 6 per company on average, ~3% of companies with none.
    let per_company = shape.prospects as f64 / 2000.0;
    assert!(
        (5.0..7.0).contains(&per_company),
        "{per_company} prospects per company"
    );

    let industry_skew = sqlx::query!(
        r#"SELECT max(n) AS "most!", min(n) AS "least!" FROM (SELECT count(*) AS n FROM "Company" GROUP BY "industry") s"#
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        industry_skew.most > 5 * industry_skew.least,
        "industries are skewed: {} vs {}",
        industry_skew.most,
        industry_skew.least
    );
}

#[tokio::test]
async fn seeding_a_database_that_holds_data_is_refused_unless_replacing() {
    let db = TestDb::new().await;
    seed(&db.pool, &options(1)).await.unwrap();
    let before = content_digest(&db).await;
    let refused = seed(&db.pool, &options(2)).await.unwrap_err();
    assert!(matches!(refused, SeedError::NotEmpty), "{refused:?}");
    assert_eq!(content_digest(&db).await, before, "nothing was written");

    seed(
        &db.pool,
        &SeedOptions {
            replace: true,
            ..options(2)
        },
    )
    .await
    .unwrap();
    let fresh = TestDb::new().await;
    seed(&fresh.pool, &options(2)).await.unwrap();
    assert_eq!(
        content_digest(&db).await,
        content_digest(&fresh).await,
        "--replace leaves exactly the new data"
    );
}
