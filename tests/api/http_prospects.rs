//! GET /prospects over real HTTP: every filter, every sort, paging, cursors, strictness.

use std::collections::BTreeSet;

use prospect_api::views::company_prospects::ProspectSortKey;
use prospect_api::views::order::Sort;
use serde_json::Value;

use crate::helpers::{TestApp, json, rejected_params, spawn_app};

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["prospect_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn ids_for(app: &TestApp, query: &str) -> BTreeSet<String> {
    let body = app.get_json(&format!("/prospects?{query}"), 200).await;
    ids(&body).into_iter().collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Every row, following next_cursor from page to page.
async fn page_through(app: &TestApp, endpoint: &str, query: &str, limit: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut url = format!("{endpoint}?{query}&limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let response = app.get(&url).await;
        let link = response
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = json(response, 200).await;
        let page = body["data"].as_array().unwrap();
        assert!(page.len() <= limit);
        all.extend(page.iter().map(|r| {
            r["prospect_id"]
                .as_str()
                .or(r["company_id"].as_str())
                .unwrap()
                .to_owned()
        }));
        match body["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(page.len(), limit, "only a full page can have a next page");
                let link = link.expect("a Link header accompanies next_cursor");
                assert!(
                    link.ends_with(&format!("cursor={next}>; rel=\"next\"")),
                    "{link}"
                );
                cursor = Some(next.to_owned());
            }
            None => {
                assert!(link.is_none());
                return all;
            }
        }
    }
    panic!("paging did not end");
}

#[tokio::test]
async fn prospects_filtered_by_industry_return_only_that_industry() {
    let app = spawn_app().await;
    let body = app.get_json("/prospects?industry=Software", 200).await;
    let rows = body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|r| r["industry"] == "Software"));
    assert_eq!(body["next_cursor"], Value::Null);
    assert!(body.get("total").is_none(), "no count unless asked");
}

#[tokio::test]
async fn each_filter_selects_exactly_the_matching_prospects() {
    let app = spawn_app().await;
    let cases: &[(&str, &[&str])] = &[
        (
            "industry=Retail&industry=Energy",
            &["p_last", "p_none", "p_empty", "p_999999", "p_1500000"],
        ),
        ("department=Sales", &["p_last", "p_none"]),
        (
            "department=Sales&department=Legal",
            &["p_last", "p_none", "p_1500000"],
        ),
        ("job_title_level=VP", &["p_2500", "p_2e9"]),
        ("company_country=France", &["p_last", "p_none", "p_empty"]),
        ("company_city=Berlin", &["p_both", "p_first", "p_2e9"]),
        ("company_state=BE", &["p_both", "p_first"]),
        ("prospect_country=Iceland", &["p_both"]),
        ("company_id=c_0", &["p_both", "p_first"]),
        ("domain=zero.example", &["p_both", "p_first"]),
        ("email=ADA%40Zero.Example", &["p_both"]),
        (
            "job_title=ENGINEER",
            &["p_both", "p_first", "p_1000", "p_15e8", "p_2e9"],
        ),
        ("job_title=%25", &[]),
        ("job_title=_", &[]),
        ("revenue_min=1000000", &["p_1500000", "p_15e8", "p_2e9"]),
        ("revenue_max=999", &["p_both", "p_first", "p_empty"]),
        (
            "revenue_min=1000&revenue_max=999999",
            &["p_1000", "p_2500", "p_future", "p_999999"],
        ),
        ("employees_min=5000", &["p_15e8", "p_2e9"]),
        ("employees_max=10", &["p_both", "p_first", "p_empty"]),
        (
            "employees_min=100&employees_max=300",
            &["p_2500", "p_future", "p_999999", "p_1500000"],
        ),
        ("updated_since=2090-01-01T00:00:00Z", &["p_future"]),
        (
            "industry=Software&company_country=Germany&job_title_level=VP",
            &["p_2e9"],
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(ids_for(&app, query).await, set(expected), "{query}");
    }
}

#[tokio::test]
async fn the_default_order_is_company_then_last_then_first_name_with_missing_names_first() {
    let app = spawn_app().await;
    let body = app.get_json("/prospects", 200).await;
    let keys: Vec<(String, String, String, String)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let text = |f: &str| r[f].as_str().unwrap_or("").to_owned();
            (
                text("company_name"),
                text("last_name"),
                text("first_name"),
                text("prospect_id"),
            )
        })
        .collect();
    assert_eq!(keys.len(), 12);
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        keys, sorted,
        "rows come in (company, last, first, id) order"
    );
    assert_eq!(keys[0].0, "Almost Million");
}

#[tokio::test]
async fn revenue_and_update_sorts_go_high_to_low_with_unknown_revenue_last() {
    let app = spawn_app().await;
    let body = app.get_json("/prospects?sort=-revenue", 200).await;
    let revenues: Vec<Option<i64>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revenue"].as_i64())
        .collect();
    assert_eq!(revenues.first(), Some(&Some(2_000_000_000)));
    assert_eq!(
        &revenues[revenues.len() - 2..],
        &[None, None],
        "unknown revenue comes last"
    );
    let known: Vec<i64> = revenues.iter().flatten().copied().collect();
    assert!(known.windows(2).all(|w| w[0] >= w[1]), "{known:?}");

    let body = app.get_json("/prospects?sort=-updated_at", 200).await;
    let updated: Vec<String> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prospect_updated_at"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(updated[0], "2090-06-01T00:00:00Z");
    assert!(updated.windows(2).all(|w| w[0] >= w[1]));
}

#[tokio::test]
async fn paging_to_the_end_yields_every_row_once_in_order_for_every_sort_both_ways() {
    let app = spawn_app().await;
    for sort in Sort::<ProspectSortKey>::values() {
        let whole = ids(&app
            .get_json(&format!("/prospects?sort={sort}&limit=500"), 200)
            .await);
        assert_eq!(whole.len(), 12);
        for limit in [1, 2, 5] {
            // Page boundaries fall between rows with equal sort keys (two prospects of c_0 and of
            // c_null share the company name and revenue) and on NULL keys (missing names, revenue).
            let paged = page_through(&app, "/prospects", &format!("sort={sort}"), limit).await;
            assert_eq!(paged, whole, "sort={sort} limit={limit}");
        }
        if let Some(ascending) = sort.strip_prefix('-') {
            // Ties break by id in the same direction: one order is exactly the other reversed.
            let mut reversed = whole.clone();
            reversed.reverse();
            let forwards = ids(&app
                .get_json(&format!("/prospects?sort={ascending}&limit=500"), 200)
                .await);
            assert_eq!(forwards, reversed, "sort={sort}");
        }
    }
    let filtered = page_through(&app, "/prospects", "industry=Software&industry=Retail", 2).await;
    assert_eq!(filtered.len(), 10);
}

#[tokio::test]
async fn a_tampered_truncated_or_foreign_cursor_is_a_400_naming_cursor() {
    let app = spawn_app().await;
    let first = app
        .get_json("/prospects?industry=Software&limit=2", 200)
        .await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (payload, tag) = cursor.split_once('.').unwrap();
    let mut edited_payload = payload.to_owned();
    edited_payload.replace_range(0..1, if payload.starts_with('e') { "f" } else { "e" });
    let other_filter = app
        .get_json("/prospects?industry=Retail&limit=1", 200)
        .await;
    let other_endpoint = app.get_json("/companies?limit=1", 200).await;
    let cases = [
        format!("{edited_payload}.{tag}"),
        cursor[..cursor.len() - 5].to_owned(),
        payload.to_owned(),
        "garbage".to_owned(),
        other_filter["next_cursor"].as_str().unwrap().to_owned(),
        other_endpoint["next_cursor"].as_str().unwrap().to_owned(),
    ];
    for bad in &cases {
        let response = app
            .get(&format!(
                "/prospects?industry=Software&limit=2&cursor={bad}"
            ))
            .await;
        assert_eq!(rejected_params(response).await, vec!["cursor"], "{bad}");
    }
    // A cursor is also tied to its sort.
    let response = app
        .get(&format!(
            "/prospects?industry=Software&limit=2&sort=-revenue&cursor={cursor}"
        ))
        .await;
    assert_eq!(rejected_params(response).await, vec!["cursor"]);
    // And the genuine one works.
    let second = app
        .get_json(
            &format!("/prospects?industry=Software&limit=2&cursor={cursor}"),
            200,
        )
        .await;
    assert_eq!(second["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn unknown_and_malformed_parameters_are_400s_naming_each_one() {
    let app = spawn_app().await;
    let cases: &[(&str, &[&str])] = &[
        ("industy=Software", &["industy"]),
        ("limit=abc", &["limit"]),
        ("limit=0", &["limit"]),
        ("limit=501", &["limit"]),
        ("limit=99999999999999999999999", &["limit"]),
        ("sort=name", &["sort"]),
        ("sort=--revenue", &["sort"]),
        ("employees_min=99999999999", &["employees_min"]),
        ("revenue_min=ten", &["revenue_min"]),
        ("employees_max=1.5", &["employees_max"]),
        ("updated_since=yesterday", &["updated_since"]),
        ("updated_since=2024-01-01", &["updated_since"]),
        ("count=all", &["count"]),
        ("revenue_min=5&revenue_max=1", &["revenue_max"]),
        ("domain=a.example&domain=b.example", &["domain"]),
        ("industry=", &["industry"]),
        ("limit=x&sort=y&bogus=1", &["limit", "sort", "bogus"]),
        ("email=%FF", &["email"]),
    ];
    for (query, expected) in cases {
        let mut names = rejected_params(app.get(&format!("/prospects?{query}")).await).await;
        let mut expected = expected.to_vec();
        names.sort();
        expected.sort();
        assert_eq!(names, expected, "{query}");
    }
}

#[tokio::test]
async fn counts_are_added_only_when_asked() {
    let app = spawn_app().await;
    let exact = app
        .get_json("/prospects?industry=Software&limit=1&count=exact", 200)
        .await;
    assert_eq!(exact["total"], 7);
    assert!(exact.get("estimated_total").is_none());
    let estimated = app
        .get_json("/prospects?industry=Software&limit=1&count=estimated", 200)
        .await;
    assert!(estimated["estimated_total"].as_i64().unwrap() >= 1);
    assert!(estimated.get("total").is_none());
}

#[tokio::test]
async fn one_prospect_is_returned_as_an_object_and_a_missing_one_is_a_404() {
    let app = spawn_app().await;
    let response = app.get("/prospects/p_both").await;
    assert!(response.headers().contains_key("x-data-age"));
    let body = json(response, 200).await;
    assert_eq!(body["full_name"], "Ada Lovelace");
    assert_eq!(body["formatted_revenue"], "NA");
    assert!(body.get("prospect_key").is_none() && body.get("refresh_no_dup_check").is_none());

    let missing = app.get_json("/prospects/p_nobody", 404).await;
    assert_eq!(missing["status"], 404);
    assert!(missing["detail"].as_str().unwrap().contains("p_nobody"));
    assert_eq!(
        rejected_params(app.get("/prospects/p_both?verbose=1").await).await,
        vec!["verbose"]
    );
}

#[tokio::test]
async fn a_companys_prospects_are_listed_and_an_unknown_company_is_a_404() {
    let app = spawn_app().await;
    let body = app.get_json("/companies/c_0/prospects", 200).await;
    assert_eq!(
        ids(&body).into_iter().collect::<BTreeSet<_>>(),
        set(&["p_both", "p_first"])
    );
    let lonely = app.get_json("/companies/c_lonely/prospects", 200).await;
    assert_eq!(lonely["data"], serde_json::json!([]));
    app.get_json("/companies/c_nobody/prospects", 404).await;
    assert_eq!(
        rejected_params(app.get("/companies/c_0/prospects?company_id=c_1").await).await,
        vec!["company_id"]
    );
}

fn keys(row: &Value) -> Vec<&str> {
    row.as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

/// Where each key first occurs in a raw JSON body (serde_json's `Value` sorts keys, so order is
/// checked on the bytes).
fn positions(raw: &str, names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .map(|name| raw.find(&format!("\"{name}\":")).unwrap())
        .collect()
}

#[tokio::test]
async fn fields_keep_only_the_named_keys_in_the_order_asked() {
    let app = spawn_app().await;
    let asked = ["revenue", "prospect_id", "full_name"];
    let raw = app
        .get("/prospects?industry=Software&fields=revenue,prospect_id,full_name")
        .await
        .text()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&raw).unwrap();
    let rows = body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 7);
    for row in rows {
        assert_eq!(
            keys(row),
            ["full_name", "prospect_id", "revenue"],
            "these keys only"
        );
    }
    assert!(raw.starts_with(r#"{"data":[{"revenue":"#), "{raw}");
    assert!(positions(&raw, &asked).is_sorted(), "{raw}");

    let raw = app
        .get("/prospects/p_2e9?fields=revenue,email")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        raw.starts_with(r#"{"revenue":"#) && raw.contains(r#","email":"#),
        "{raw}"
    );
    assert_eq!(
        keys(&serde_json::from_str(&raw).unwrap()),
        ["email", "revenue"]
    );

    let company = app
        .get_json("/companies?fields=name,prospect_count&limit=1", 200)
        .await;
    assert_eq!(keys(&company["data"][0]), ["name", "prospect_count"]);
}

#[tokio::test]
async fn cursors_page_the_same_rows_with_or_without_fields() {
    let app = spawn_app().await;
    for sort in ["company_name", "-revenue"] {
        let whole = page_through(&app, "/prospects", &format!("sort={sort}"), 3).await;
        let narrow = page_through(
            &app,
            "/prospects",
            &format!("sort={sort}&fields=prospect_id"),
            3,
        )
        .await;
        assert_eq!(narrow, whole, "sort={sort}");
    }
}

#[tokio::test]
async fn unknown_or_empty_field_names_are_400s_naming_fields() {
    let app = spawn_app().await;
    for query in [
        "fields=prospect_id,bogus",
        "fields=prospect_id,,email",
        "fields=email,",
        "fields=",
        "fields=search_text",
    ] {
        let response = app.get(&format!("/prospects?{query}")).await;
        assert_eq!(rejected_params(response).await, ["fields"], "{query}");
    }
    let body = app.get_json("/prospects?fields=bogus,nope", 400).await;
    let reason = body["invalid_params"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("'bogus'") && reason.contains("'nope'") && reason.contains("prospect_id"),
        "{reason}"
    );
    let repeated = app
        .get_json("/prospects?fields=email,prospect_id,email&limit=1", 200)
        .await;
    assert_eq!(keys(&repeated["data"][0]), ["email", "prospect_id"]);
    let response = app.get("/companies/c_0?fields=email").await;
    assert_eq!(rejected_params(response).await, ["fields"]);
}

#[tokio::test]
async fn the_etag_depends_on_the_fields() {
    let app = spawn_app().await;
    let etag =
        |response: reqwest::Response| response.headers()["etag"].to_str().unwrap().to_owned();
    let all = etag(app.get("/prospects?industry=Software").await);
    let narrow = etag(app.get("/prospects?industry=Software&fields=email").await);
    assert_ne!(all, narrow);
    let revalidated = app
        .client
        .get(format!(
            "{}/prospects?industry=Software&fields=email",
            app.address
        ))
        .header("if-none-match", &narrow)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(
        revalidated.headers()["vary"],
        "accept, accept-encoding",
        "as on the 200"
    );
}
