//! The materialized views' contents and keys, against a hand-made fixture.

use crate::helpers::{TestDb, refresh_all_ok};

async fn fixture_db() -> TestDb {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    refresh_all_ok(&db.pool).await;
    db
}

#[tokio::test]
async fn formatted_revenue_follows_the_thresholds_and_never_rounds_up() {
    let db = fixture_db().await;
    let rows = sqlx::query!(
        r#"SELECT company_id AS "company_id!", formatted_revenue AS "formatted_revenue!"
           FROM company_summary_view ORDER BY company_id"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let got: Vec<(String, String)> = rows
        .into_iter()
        .map(|r| (r.company_id, r.formatted_revenue))
        .collect();
    let expected = [
        ("c_0", "NA"),
        ("c_1000", "1.0K"),
        ("c_1500000", "1.5M"),
        ("c_1500000000", "1.5B"),
        ("c_2000000000", "2.0B"),
        ("c_2500", "2.5K"),
        ("c_999", "$999"),
        ("c_999999", "999.9K"),
        ("c_lonely", "5.0K"),
        ("c_null", "NA"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn full_name_joins_the_parts_that_exist() {
    let db = fixture_db().await;
    for (prospect, expected) in [
        ("p_both", Some("Ada Lovelace")),
        ("p_first", Some("Grace")),
        ("p_last", Some("Hopper")),
        ("p_none", None),
        ("p_empty", None),
    ] {
        let in_company_view = sqlx::query_scalar!(
            "SELECT full_name FROM company_prospect_view WHERE prospect_id = $1",
            prospect
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let in_search_view = sqlx::query_scalar!(
            "SELECT full_name FROM prospect_search_view WHERE prospect_id = $1",
            prospect
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            in_company_view.as_deref(),
            expected,
            "company_prospect_view, {prospect}"
        );
        assert_eq!(
            in_search_view.as_deref(),
            expected,
            "prospect_search_view, {prospect}"
        );
    }
}

#[tokio::test]
async fn a_company_without_prospects_appears_once_with_null_prospect_columns() {
    let db = fixture_db().await;
    let rows = sqlx::query!(
        r#"SELECT prospect_id, first_name, email, full_name, company_name, formatted_revenue
           FROM company_prospect_view WHERE company_id = 'c_lonely'"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.prospect_id, None);
    assert_eq!(row.first_name, None);
    assert_eq!(row.email, None);
    assert_eq!(row.full_name, None);
    assert_eq!(row.company_name.as_deref(), Some("No Prospects Inc"));
    assert_eq!(row.formatted_revenue.as_deref(), Some("5.0K"));

    let summary = sqlx::query!(
        "SELECT prospect_count, department_count, job_level_count, last_prospect_update
         FROM company_summary_view WHERE company_id = 'c_lonely'"
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(summary.prospect_count, Some(0));
    assert_eq!(summary.department_count, Some(0));
    assert_eq!(summary.job_level_count, Some(0));
    assert_eq!(summary.last_prospect_update, None);

    assert_eq!(
        db.count("prospect_search_view WHERE company_id = 'c_lonely'")
            .await,
        0,
        "the search view joins prospects to companies, so a lonely company has no rows"
    );
}

#[tokio::test]
async fn summary_counts_distinct_departments_and_levels() {
    let db = fixture_db().await;
    let row = sqlx::query!(
        "SELECT prospect_count, department_count, job_level_count, last_prospect_update
         FROM company_summary_view WHERE company_id = 'c_0'"
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.prospect_count, Some(2));
    assert_eq!(row.department_count, Some(1), "both are in Engineering");
    assert_eq!(row.job_level_count, Some(2));
    assert!(row.last_prospect_update.is_some());
}

#[tokio::test]
async fn search_vector_weighs_words_by_field_folds_them_and_tolerates_missing_parts() {
    let db = fixture_db().await;
    let vector = |id: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar!(
                "SELECT search_vector::text FROM prospect_search_view WHERE prospect_id = $1",
                id
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        vector("p_both").await.as_deref(),
        Some(
            "'crevenue' 'czero' 'eada@zero.example' 'nada' 'nlovelace' 'tchief' 'tengineering' \
             'tofficer' 'tsoftware'"
        ),
        "each word after its field's letter: n name, c company, t job title and industry, e email"
    );
    assert_eq!(
        vector("p_none").await.as_deref(),
        Some("'crevenue' 'cunknown' 'tassociate' 'tretail' 'tsales'"),
        "a prospect without name or email has only its company's and job's words"
    );
}

#[tokio::test]
async fn concurrent_refresh_keeps_the_prospectless_row_in_place_when_nothing_changed() {
    let db = fixture_db().await;
    let ctid_of_lonely_row = || async {
        sqlx::query_scalar!(
            r#"SELECT ctid::text AS "ctid!" FROM company_prospect_view WHERE company_id = 'c_lonely'"#
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let before = ctid_of_lonely_row().await;
    // The fixture refresh populated the views; these are CONCURRENTLY refreshes.
    refresh_all_ok(&db.pool).await;
    let after = ctid_of_lonely_row().await;
    assert_eq!(
        before, after,
        "an unchanged row with no prospect must not be deleted and re-inserted"
    );
}

#[tokio::test]
async fn every_view_has_a_unique_index_that_refresh_concurrently_accepts() {
    let db = TestDb::new().await;
    let rows = sqlx::query!(
        r#"SELECT c.relname AS "view!", count(*) FILTER (
               WHERE i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
           ) AS "usable_unique_indexes!"
           FROM pg_class c JOIN pg_index i ON i.indrelid = c.oid
           WHERE c.relkind = 'm' GROUP BY c.relname ORDER BY c.relname"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let got: Vec<(String, i64)> = rows
        .into_iter()
        .map(|r| (r.view, r.usable_unique_indexes))
        .collect();
    assert_eq!(
        got,
        vec![
            ("company_prospect_view".to_owned(), 1),
            ("company_summary_view".to_owned(), 1),
            ("prospect_search_view".to_owned(), 1),
        ]
    );
}
