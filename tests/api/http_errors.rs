//! The edges of the HTTP API: unknown routes, wrong methods, request ids, CORS, docs, the spec.

use crate::helpers::{json, spawn_app};

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_as_problem_json() {
    let app = spawn_app().await;
    let missing = app.get_json("/nothing/here", 404).await;
    assert_eq!(missing["status"], 404);
    let wrong = app
        .client
        .delete(format!("{}/prospects", app.address))
        .send()
        .await
        .unwrap();
    assert!(
        wrong
            .headers()
            .get("allow")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("GET")
    );
    let body = json(wrong, 405).await;
    assert_eq!(body["title"], "Method Not Allowed");
}

#[tokio::test]
async fn the_request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let given = app
        .get_with("/healthz", &[("x-request-id", "trace-me-42")])
        .await;
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");
    let generated = app.get("/healthz").await;
    assert_eq!(generated.headers()["x-request-id"].len(), 36, "a UUID");
}

#[tokio::test]
async fn cors_stays_closed_unless_origins_are_configured() {
    let app = spawn_app().await;
    let response = app
        .get_with("/prospects", &[("origin", "https://evil.example")])
        .await;
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );

    let db = crate::helpers::TestDb::new().await;
    let mut config = crate::helpers::serve_config(&db);
    config.cors_origins = vec!["https://app.example".parse().unwrap()];
    let open = crate::helpers::spawn_app_with(db, config).await;
    let allowed = open
        .get_with("/healthz", &[("origin", "https://app.example")])
        .await;
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = open
        .get_with("/healthz", &[("origin", "https://evil.example")])
        .await;
    assert!(!other.headers().contains_key("access-control-allow-origin"));

    let preflight = open
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/prospects", open.address),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "if-none-match")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-max-age"], "7200");
}

#[tokio::test]
async fn the_docs_page_and_the_spec_are_served() {
    let app = spawn_app().await;
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(
        docs.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = docs.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let page = docs.text().await.unwrap();
    assert!(page.contains("prospect-api"));
    assert!(
        !page.contains("http"),
        "every asset from this origin: {page}"
    );
    assert!(!page.contains("<script>"), "no inline script: {page}");
    // Every file the page loads is served, from the binary.
    let assets: Vec<&str> = page
        .split(['"', '\''])
        .filter(|piece| piece.starts_with("/docs/"))
        .collect();
    assert_eq!(assets.len(), 3, "{assets:?}");
    for asset in assets {
        let response = app.get(asset).await;
        assert_eq!(response.status(), 200, "{asset}");
        assert!(response.bytes().await.unwrap().len() > 100, "{asset}");
    }
    let spec = app.get_json("/openapi.json", 200).await;
    for path in [
        "/prospects",
        "/prospects/{prospect_id}",
        "/companies",
        "/companies/{company_id}",
        "/companies/{company_id}/prospects",
        "/search",
        "/healthz",
        "/readyz",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} is documented");
    }
}

#[test]
fn the_committed_openapi_spec_matches_the_code() {
    let generated = prospect_api::http::openapi_spec().to_pretty_json().unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap_or_default();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is out of date. Regenerate it with:\n\n    cargo run -- openapi > openapi/openapi.json\n"
    );
}

#[tokio::test]
async fn a_request_past_the_request_timeout_is_a_503_but_a_waiting_admin_refresh_is_not_cut_short()
{
    // A timeout no request can meet. Even /readyz misses it, so the views are populated directly.
    let db = crate::helpers::TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    let mut config = crate::helpers::serve_config(&db);
    config.request_timeout = std::time::Duration::from_nanos(1);
    config.admin_token = Some(crate::helpers::ADMIN_TOKEN.parse().unwrap());
    let app = crate::helpers::spawn_app_with(db, config).await;

    let refreshed = app
        .client
        .post(format!("{}/admin/refresh", app.address))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refreshed.status(),
        200,
        "the waiting refresh is exempt from REQUEST_TIMEOUT"
    );

    // Several database round trips: the timeout fires while the handler waits for one of them.
    let slow = app.get("/prospects?count=exact").await;
    assert_eq!(slow.headers()["retry-after"], "5");
    let problem = json(slow, 503).await;
    assert_eq!(problem["status"], 503);
}

#[tokio::test]
async fn an_internal_error_is_a_generic_500_that_reveals_nothing() {
    let app = spawn_app().await;
    // Break the schema under the running server: its query now fails inside PostgreSQL.
    app.db
        .execute("ALTER MATERIALIZED VIEW company_summary_view RENAME COLUMN name TO company_title")
        .await;
    let response = app.get("/companies").await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.text().await.unwrap();
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 500);
    assert!(problem["detail"].as_str().unwrap().contains("request id"));
    for leak in [
        "company_title",
        "column",
        "name",
        "sqlx",
        "SELECT",
        "company_summary_view",
    ] {
        assert!(!body.contains(leak), "the 500 body leaks '{leak}': {body}");
    }
    assert_eq!(request_id.len(), 36);
}

/// The JSON types a schema property allows (`"string"` or `["string", "null"]`).
fn allows_null(property: &serde_json::Value) -> bool {
    match &property["type"] {
        serde_json::Value::Array(types) => types.iter().any(|t| t == "null"),
        serde_json::Value::String(t) => t == "null",
        _ => property.get("$ref").is_none() && property.get("type").is_none(),
    }
}

#[tokio::test]
async fn the_spec_types_exactly_what_the_server_sends() {
    let app = crate::helpers::spawn_app().await;
    let spec = serde_json::to_value(prospect_api::http::openapi_spec()).unwrap();
    let schemas = &spec["components"]["schemas"];
    let first = app.get_json("/prospects?limit=1", 200).await;
    let term = first["data"][0]["company_name"]
        .as_str()
        .unwrap()
        .to_lowercase();
    for (request, schema) in [
        ("/prospects?limit=500".to_owned(), "ProspectRow"),
        ("/companies?limit=500".to_owned(), "CompanyRow"),
        (format!("/search?q={}", &term[..3]), "SearchRow"),
    ] {
        let properties = schemas[schema]["properties"].as_object().unwrap();
        let mut required: Vec<&str> = schemas[schema]["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        required.sort();
        let mut declared: Vec<&str> = properties.keys().map(String::as_str).collect();
        declared.sort();
        assert_eq!(required, declared, "{schema}: every key is always sent");
        assert!(
            properties.values().filter(|p| !allows_null(p)).count() >= 2,
            "{schema}: the ids and NOT NULL columns are not nullable"
        );
        let page = app.get_json(&request, 200).await;
        let rows = page["data"].as_array().unwrap();
        assert!(!rows.is_empty(), "{request}");
        for row in rows {
            let row = row.as_object().unwrap();
            let mut sent: Vec<&str> = row.keys().map(String::as_str).collect();
            sent.sort();
            assert_eq!(sent, declared, "{request}: the keys the schema declares");
            for (key, value) in row {
                assert!(
                    !value.is_null() || allows_null(&properties[key]),
                    "{request}: {key} is null but its schema does not allow null"
                );
            }
        }
        let page_schema = &schemas[format!("Page_{schema}")];
        assert_eq!(
            page_schema["properties"]["data"]["items"]["$ref"],
            format!("#/components/schemas/{schema}"),
            "rows are referenced, not inlined"
        );
    }
    let list = &spec["paths"]["/prospects"]["get"];
    assert_eq!(
        list["security"],
        serde_json::json!([{}, {"bearer_jwt": []}, {"api_key": []}]),
        "anonymous (when the policy allows it), a JWT or an API key"
    );
    for status in ["401", "403", "429"] {
        assert!(list["responses"].get(status).is_some(), "{status}");
    }
    assert_eq!(
        spec["paths"]["/healthz"]["get"]["security"],
        serde_json::json!([]),
        "public"
    );
    let sort = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sort")
        .unwrap();
    assert!(
        sort["schema"]["enum"]
            .as_array()
            .unwrap()
            .contains(&"-revenue".into())
    );
    assert_eq!(
        spec["paths"]["/admin/refresh"]["post"]["security"],
        serde_json::json!([{"admin_token": []}, {"bearer_jwt": []}, {"api_key": []}]),
        "the admin token, or an admin role's JWT or API key"
    );
    assert_eq!(spec["servers"][0]["url"], "/");
}
