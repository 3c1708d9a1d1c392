//! GET /companies and GET /search over real HTTP.

use std::collections::BTreeSet;

use prospect_api::views::company_summaries::CompanySortKey;
use prospect_api::views::order::Sort;
use serde_json::Value;

use crate::helpers::{TestApp, TestDb, rejected_params, serve_config, spawn_app, spawn_app_with};

fn field(body: &Value, name: &str) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[name].as_str().unwrap().to_owned())
        .collect()
}

async fn company_ids(app: &TestApp, query: &str) -> BTreeSet<String> {
    field(
        &app.get_json(&format!("/companies?{query}"), 200).await,
        "company_id",
    )
    .into_iter()
    .collect()
}

async fn search_ids(app: &TestApp, query: &str) -> BTreeSet<String> {
    field(
        &app.get_json(&format!("/search?{query}"), 200).await,
        "prospect_id",
    )
    .into_iter()
    .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn companies_are_filtered_by_each_filter() {
    let app = spawn_app().await;
    let cases: &[(&str, &[&str])] = &[
        ("industry=Energy", &["c_999999", "c_1500000", "c_lonely"]),
        (
            "industry=Energy&industry=Retail",
            &["c_999999", "c_1500000", "c_lonely", "c_null", "c_999"],
        ),
        ("country=France", &["c_null", "c_999", "c_lonely"]),
        ("state=BE", &["c_0"]),
        ("city=Paris", &["c_null", "c_lonely"]),
        ("domain=lonely.example", &["c_lonely"]),
        (
            "revenue_min=1500000&revenue_max=1500000000",
            &["c_1500000", "c_1500000000"],
        ),
        ("employees_min=10001", &["c_2000000000"]),
        ("employees_max=1", &["c_0", "c_999", "c_lonely"]),
        ("min_prospects=2", &["c_0", "c_null", "c_2500"]),
    ];
    for (query, expected) in cases {
        assert_eq!(company_ids(&app, query).await, set(expected), "{query}");
    }
}

#[tokio::test]
async fn companies_sort_by_name_revenue_prospect_count_and_last_update() {
    let app = spawn_app().await;
    let names = field(&app.get_json("/companies", 200).await, "name");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    let by_count = app.get_json("/companies?sort=-prospect_count", 200).await;
    let counts: Vec<i64> = by_count["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prospect_count"].as_i64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    assert_eq!(*counts.last().unwrap(), 0);

    let by_update = app
        .get_json("/companies?sort=-last_prospect_update", 200)
        .await;
    let rows = by_update["data"].as_array().unwrap();
    assert_eq!(
        rows[0]["company_id"], "c_2500",
        "its p_future was updated last"
    );
    assert_eq!(
        rows.last().unwrap()["company_id"],
        "c_lonely",
        "no prospects: no update time, last"
    );

    let by_revenue = field(
        &app.get_json("/companies?sort=-revenue", 200).await,
        "company_id",
    );
    assert_eq!(by_revenue.first().map(String::as_str), Some("c_2000000000"));
    assert_eq!(by_revenue.last().map(String::as_str), Some("c_null"));
}

async fn ordered_company_ids(app: &TestApp, query: &str) -> Vec<String> {
    field(
        &app.get_json(&format!("/companies?{query}"), 200).await,
        "company_id",
    )
}

#[tokio::test]
async fn paging_companies_to_the_end_yields_each_once_in_order_for_every_sort_both_ways() {
    let app = spawn_app().await;
    for sort in Sort::<CompanySortKey>::values() {
        let whole = ordered_company_ids(&app, &format!("sort={sort}&limit=500")).await;
        assert_eq!(whole.len(), 10);
        let mut paged = Vec::new();
        let mut cursor = String::new();
        loop {
            let body = app
                .get_json(&format!("/companies?sort={sort}&limit=3{cursor}"), 200)
                .await;
            paged.extend(field(&body, "company_id"));
            match body["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        assert_eq!(paged, whole, "sort={sort}");
        if let Some(ascending) = sort.strip_prefix('-') {
            let mut reversed = whole.clone();
            reversed.reverse();
            let forwards = ordered_company_ids(&app, &format!("sort={ascending}&limit=500")).await;
            assert_eq!(forwards, reversed, "sort={sort}");
        }
    }
}

#[tokio::test]
async fn one_company_is_returned_with_its_counts_and_a_missing_one_is_a_404() {
    let app = spawn_app().await;
    let body = app.get_json("/companies/c_0", 200).await;
    assert_eq!(body["prospect_count"], 2);
    assert_eq!(body["formatted_revenue"], "NA");
    app.get_json("/companies/c_nobody", 404).await;
}

#[tokio::test]
async fn search_requires_every_term_case_insensitively() {
    let app = spawn_app().await;
    assert_eq!(search_ids(&app, "q=lovelace").await, set(&["p_both"]));
    assert_eq!(search_ids(&app, "q=ADA+zero").await, set(&["p_both"]));
    assert_eq!(
        search_ids(&app, "q=engineering+director").await,
        set(&["p_1000"])
    );
    assert_eq!(
        search_ids(&app, "q=sales").await,
        set(&["p_last", "p_none"])
    );
    assert_eq!(
        search_ids(
            &app,
            "q=sales&department=Sales&industry=Retail&company_country=France"
        )
        .await,
        set(&["p_last", "p_none"])
    );
    assert_eq!(
        search_ids(&app, "q=software&industry=Retail").await,
        set(&[])
    );
    let counted = app
        .get_json("/search?q=example&count=exact&limit=2", 200)
        .await;
    assert_eq!(counted["total"], 11, "every prospect with an email");
}

#[tokio::test]
async fn search_treats_percent_underscore_and_backslash_as_plain_characters() {
    let app = spawn_app().await;
    app.db
        .execute(
            r#"UPDATE "Prospect" SET "jobTitle" = 'Head of R&D_100%\Labs' WHERE "id" = 'p_1000'"#,
        )
        .await;
    prospect_api::refresh::refresh_all(
        &app.db.pool,
        prospect_api::refresh::RefreshTrigger::Manual,
        &crate::helpers::quick_refresh_settings(),
    )
    .await
    .unwrap();
    assert_eq!(search_ids(&app, "q=d_100%25").await, set(&["p_1000"]));
    assert_eq!(
        search_ids(&app, "q=%25%25%25").await,
        set(&[]),
        "as wildcards, %%% would match everything"
    );
    assert_eq!(
        search_ids(&app, "q=of_r").await,
        set(&[]),
        "as a wildcard, _ would match the space in 'of r'"
    );
    assert_eq!(search_ids(&app, "q=%25%5Clab").await, set(&["p_1000"]));
    assert_eq!(search_ids(&app, "q=%5C%5C%5C").await, set(&[]));
}

#[tokio::test]
async fn search_rejects_missing_short_and_too_many_terms() {
    let app = spawn_app().await;
    for query in [
        "",
        "q=",
        "q=ab",
        "q=ada+lo",
        "q=%20%20",
        "q=one+two+three+four+five+six",
    ] {
        assert_eq!(
            rejected_params(app.get(&format!("/search?{query}")).await).await,
            vec!["q"],
            "{query}"
        );
    }
    assert_eq!(
        rejected_params(app.get("/search?q=ada&country=France").await).await,
        vec!["country"]
    );
}

/// Pages through `/search?{query}` to the end; returns the prospect ids in the order served.
async fn search_all_pages(app: &TestApp, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/search?{query}&cursor={cursor}"),
            None => format!("/search?{query}"),
        };
        let page = app.get_json(&path, 200).await;
        for row in page["data"].as_array().unwrap() {
            ids.push(row["prospect_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn search_finds_matches_far_down_the_result_order_and_pages_through_them_in_order() {
    // 6,000 prospects in result order before most of the matches (more than the first step of a
    // search reads in order), a few matches among the first rows, the rest at the very end.
    let db = TestDb::new().await;
    db.execute(
        r#"INSERT INTO "Company" ("id", "name") VALUES
               ('c_early', 'Aardvark Labs'), ('c_filler', 'Middle Corp'), ('c_late', 'Zulu Systems');
           INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "jobTitle")
           SELECT 'p_filler_' || lpad(n::text, 5, '0'), 'c_filler', 'Filler', 'Person', 'Clerk'
           FROM generate_series(1, 6000) n;
           INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "jobTitle")
           SELECT 'p_early_' || n, 'c_early', 'Early', 'Match', 'Quasar Analyst'
           FROM generate_series(1, 3) n;
           INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "jobTitle")
           SELECT 'p_late_' || lpad(n::text, 3, '0'), 'c_late', 'Late', 'Match', 'Quasar Analyst'
           FROM generate_series(1, 120) n;"#,
    )
    .await;
    let config = serve_config(&db);
    let app = spawn_app_with(db, config).await;
    app.wait_until_ready().await;

    let mut expected: Vec<String> = (1..=3).map(|n| format!("p_early_{n}")).collect();
    expected.extend((1..=120).map(|n| format!("p_late_{n:03}")));
    for limit in [10, 50, 200] {
        assert_eq!(
            search_all_pages(&app, &format!("q=quasar&limit={limit}")).await,
            expected,
            "limit {limit}"
        );
    }
    // A term that matches everywhere still pages in order, each row once.
    let everyone = search_all_pages(&app, "q=person&limit=500").await;
    assert_eq!(everyone.len(), 6000);
    assert!(everyone.windows(2).all(|pair| pair[0] < pair[1]));
    // And one that matches nothing answers an empty last page.
    assert!(search_all_pages(&app, "q=nowhere").await.is_empty());
}
