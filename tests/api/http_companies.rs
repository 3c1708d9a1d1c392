//! GET /companies over real HTTP (GET /search: http_search.rs).

use std::collections::BTreeSet;

use prospect_api::views::company_summaries::CompanySortKey;
use prospect_api::views::order::Sort;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

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
