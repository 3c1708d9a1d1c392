//! GET /prospects/facets and /companies/facets over real HTTP: every count checked against the
//! rows of the list endpoint under the same filters, less the facet's own.

use serde_json::{Value, json};

use crate::helpers::{TestApp, rejected_params, spawn_app};

/// The facet as the list endpoint's rows say it should be: non-null values of `field`, most
/// frequent first, ties by value.
async fn counted_from_rows(app: &TestApp, list: &str, query: &str, field: &str) -> Value {
    let body = app
        .get_json(&format!("{list}?{query}&limit=500"), 200)
        .await;
    let mut counts: Vec<(String, i64)> = Vec::new();
    for row in body["data"].as_array().unwrap() {
        let Some(value) = row[field].as_str() else {
            continue;
        };
        match counts.iter_mut().find(|(v, _)| v == value) {
            Some((_, n)) => *n += 1,
            None => counts.push((value.to_owned(), 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    json!(
        counts
            .into_iter()
            .map(|(value, count)| json!({"value": value, "count": count}))
            .collect::<Vec<_>>()
    )
}

/// `query` without the pairs of parameter `name`.
fn without(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.starts_with(&format!("{name}=")))
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn each_facet_counts_the_list_under_every_filter_but_its_own() {
    let app = spawn_app().await;
    let facets = [
        ("industry", "industry"),
        ("department", "department"),
        ("job_title_level", "job_title_level"),
        ("company_country", "company_country"),
    ];
    let software = app
        .get_json("/prospects?industry=Software&limit=1", 200)
        .await;
    let department = software["data"][0]["department"]
        .as_str()
        .unwrap()
        .to_owned();
    for query in [
        String::new(),
        "industry=Software".to_owned(),
        format!(
            "industry=Software&department={}",
            department.replace(' ', "+")
        ),
        "revenue_min=1000".to_owned(),
    ] {
        let body = app
            .get_json(&format!("/prospects/facets?{query}"), 200)
            .await;
        assert_eq!(body.as_object().unwrap().len(), 4, "every facet by default");
        for (facet, field) in facets {
            let expected =
                counted_from_rows(&app, "/prospects", &without(&query, facet), field).await;
            assert_eq!(body[facet], expected, "{facet} under '{query}'");
        }
    }
    // The industry facet under industry=Software still lists the other industries.
    let body = app
        .get_json("/prospects/facets?industry=Software", 200)
        .await;
    assert!(body["industry"].as_array().unwrap().len() > 1, "{body}");
}

#[tokio::test]
async fn company_facets_count_companies() {
    let app = spawn_app().await;
    for query in ["", "country=Germany", "industry=Software&min_prospects=1"] {
        let body = app
            .get_json(&format!("/companies/facets?{query}"), 200)
            .await;
        for facet in ["industry", "country"] {
            let expected =
                counted_from_rows(&app, "/companies", &without(query, facet), facet).await;
            assert_eq!(body[facet], expected, "{facet} under '{query}'");
        }
    }
}

#[tokio::test]
async fn facets_are_chosen_with_facet_and_bad_ones_are_named() {
    let app = spawn_app().await;
    let body = app
        .get_json(
            "/prospects/facets?facet=department&facet=industry&facet=department",
            200,
        )
        .await;
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["department", "industry"]);
    let response = app.get("/prospects/facets?facet=industry").await;
    assert!(
        response.headers().contains_key("x-data-age"),
        "freshness headers as on lists"
    );
    assert!(response.headers().contains_key("etag"));

    for (query, names) in [
        ("facet=bogus", &["facet"][..]),
        ("facet=country", &["facet"]),
        ("industy=Software", &["industy"]),
        ("limit=5", &["limit"]),
        ("revenue_min=5&revenue_max=1", &["revenue_max"]),
    ] {
        let response = app.get(&format!("/prospects/facets?{query}")).await;
        assert_eq!(rejected_params(response).await, names, "{query}");
    }
    let response = app.get("/companies/facets?facet=department").await;
    assert_eq!(rejected_params(response).await, ["facet"]);
}
