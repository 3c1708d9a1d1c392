//! What each role sees, over real HTTP: hidden columns gone from every format and refused as
//! parameters (no probing through filters, sorts, facets or search), row scopes ANDed into every
//! statement, page caps, a golden role × endpoint × format × column matrix, and the response cache
//! and ETags never crossing roles.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::Value;

use crate::access_support::{As, POLICY, refused_params, spawn_guarded};
use crate::helpers::{ADMIN_TOKEN, TestApp, header, json, strings};

fn admin() -> As {
    As::Bearer(ADMIN_TOKEN.to_owned())
}

const CONTACT_COLUMNS: [&str; 5] = [
    "email",
    "prospect_phone",
    "prospect_mobile_phone",
    "company_phone",
    "company_mobile_phone",
];

/// The header row of a CSV export.
async fn csv_header(app: &TestApp, who: &As, path: &str) -> Vec<String> {
    let response = app.get_as(who, path).await;
    assert_eq!(response.status(), 200, "{path}");
    let text = response.text().await.unwrap();
    text.lines()
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_hidden_column_is_absent_from_json_csv_and_single_rows() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let analyst = As::role("analyst");
    for path in [
        "/prospects",
        "/companies/c_0/prospects",
        "/search?q=engineer",
        "/prospects?fields=first_name,last_name",
    ] {
        let page = json(app.get_as(&analyst, path).await, 200).await;
        let rows = page["data"].as_array().unwrap();
        assert!(!rows.is_empty(), "{path}");
        for row in rows {
            for column in CONTACT_COLUMNS {
                assert!(row.get(column).is_none(), "{path}: {column} in {row}");
            }
        }
    }
    let one = app.get_json_as(&analyst, "/prospects/p_both", 200).await;
    assert!(
        one.get("email").is_none() && one.get("first_name").is_some(),
        "{one}"
    );
    let csv = csv_header(&app, &analyst, "/prospects?format=csv").await;
    assert!(csv.contains(&"first_name".to_owned()));
    for column in CONTACT_COLUMNS {
        assert!(!csv.contains(&column.to_owned()), "{column} in {csv:?}");
    }
    // The admin reads the same rows with every column.
    let page = json(app.get_as(&admin(), "/prospects").await, 200).await;
    assert!(page["data"][0].get("email").is_some());
    // This server's document says which keys a role may not get.
    let spec = json(app.get_as(&As::Nobody, "/openapi.json").await, 200).await;
    let required = &spec["components"]["schemas"]["ProspectRow"]["required"];
    assert!(
        !required.as_array().unwrap().contains(&"email".into()),
        "{required}"
    );
    assert!(required.as_array().unwrap().contains(&"first_name".into()));
}

#[tokio::test]
async fn asking_for_a_hidden_column_in_any_parameter_is_a_403_naming_it() {
    let policy = r#"
        [roles.analyst]
        hide = ["email", "industry", "revenue"]
        [roles.nameless]
        hide = ["company_name"]
    "#;
    let app = spawn_guarded(policy, |_| {}).await;
    let analyst = As::role("analyst");
    let nameless = As::role("nameless");
    // An order reading a hidden column is refused, the default one too (its cursors carry the
    // values it sorts by); another order is served.
    assert_eq!(
        refused_params(app.get_as(&nameless, "/prospects").await).await,
        ["sort"]
    );
    assert_eq!(
        refused_params(
            app.get_as(&nameless, "/search?q=ada&sort=company_name")
                .await
        )
        .await,
        ["sort"]
    );
    // Relevance reads only what the role may see: the score counts no company name.
    let ranked = app.get_json_as(&nameless, "/search?q=ada", 200).await;
    assert_eq!(strings(&ranked["data"], "prospect_id"), ["p_both"]);
    assert!(ranked["data"][0].get("company_name").is_none());
    let by_company = app.get_json_as(&nameless, "/search?q=zero", 200).await;
    assert_eq!(
        by_company["data"],
        serde_json::json!([]),
        "Zero is only a company's name"
    );
    let by_update = app
        .get_json_as(&nameless, "/prospects?sort=updated_at", 200)
        .await;
    assert!(by_update["data"][0].get("company_name").is_none());
    for (path, refused) in [
        ("/prospects?email=ada@zero.example", vec!["email"]),
        ("/prospects?fields=first_name,email", vec!["fields"]),
        ("/prospects/p_both?fields=email", vec!["fields"]),
        ("/prospects?sort=-revenue", vec!["sort"]),
        ("/prospects?revenue_min=1000", vec!["revenue_min"]),
        ("/companies?revenue_max=5", vec!["revenue_max"]),
        ("/prospects/facets?facet=industry", vec!["facet"]),
        (
            "/prospects?industry=Software&email=x&format=csv",
            vec!["industry", "email"],
        ),
        ("/search?q=ada&industry=Software", vec!["industry"]),
        // Refused before it is validated: a bad value of a hidden filter says nothing either.
        ("/prospects?revenue_min=abc", vec!["revenue_min"]),
    ] {
        let mut names = refused_params(app.get_as(&analyst, path).await).await;
        names.sort();
        let mut expected: Vec<String> = refused.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(names, expected, "{path}");
    }
    // A forbidden request is told only that it is forbidden, whether or not any row matches.
    let matching = app
        .get_json_as(&analyst, "/prospects?email=ada@zero.example", 403)
        .await;
    let missing = app
        .get_json_as(&analyst, "/prospects?email=nobody@x.example", 403)
        .await;
    assert_eq!(matching, missing);
}

#[tokio::test]
async fn a_search_never_matches_on_a_column_the_role_cannot_see() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    // This address is one prospect's email.
    let everyone = json(
        app.get_as(&admin(), "/search?q=zebra.stripes@zero.example&count=exact")
            .await,
        200,
    )
    .await;
    assert_eq!(strings(&everyone["data"], "prospect_id"), ["p_first"]);
    let analyst = As::role("analyst");
    let hidden = app
        .get_json_as(
            &analyst,
            "/search?q=zebra.stripes@zero.example&count=exact",
            200,
        )
        .await;
    assert_eq!(hidden["data"], serde_json::json!([]));
    assert_eq!(hidden["total"], 0, "the count does not match on it either");
    let export = app
        .get_as(&analyst, "/search?q=zebra.stripes@zero.example&format=csv")
        .await;
    let csv = export.text().await.unwrap();
    assert_eq!(csv.lines().count(), 1, "only the header: {csv}");
    // What the analyst may see is still searched, in every term.
    let visible = app
        .get_json_as(&analyst, "/search?q=grace%20zebra.stripes@zero", 200)
        .await;
    assert_eq!(
        visible["data"],
        serde_json::json!([]),
        "a term on the email matches nothing, even beside one that matches"
    );
    let visible = app
        .get_json_as(&analyst, "/search?q=grace%20engineer", 200)
        .await;
    assert_eq!(strings(&visible["data"], "prospect_id"), ["p_first"]);
}

#[tokio::test]
async fn a_row_scope_holds_in_every_statement_and_cannot_be_widened() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let partner = As::role("partner_de");
    let countries = |page: &Value, key: &str| -> BTreeSet<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row[key].as_str().unwrap_or("(null)").to_owned())
            .collect()
    };
    let page = app
        .get_json_as(&partner, "/prospects?count=exact", 200)
        .await;
    assert_eq!(
        countries(&page, "company_country"),
        BTreeSet::from(["Germany".to_owned()])
    );
    let all = json(
        app.get_as(&admin(), "/prospects?company_country=Germany&count=exact")
            .await,
        200,
    )
    .await;
    assert_eq!(page["total"], all["total"], "exactly the German rows");
    let companies = app.get_json_as(&partner, "/companies", 200).await;
    assert_eq!(
        countries(&companies, "country"),
        BTreeSet::from(["Germany".to_owned()])
    );

    // Asking for France: nothing, not the French rows.
    let widened = app
        .get_json_as(
            &partner,
            "/prospects?company_country=France&count=exact",
            200,
        )
        .await;
    assert_eq!(widened["data"], serde_json::json!([]));
    assert_eq!(widened["total"], 0);
    let csv = app
        .get_as(&partner, "/prospects?company_country=France&format=csv")
        .await;
    assert_eq!(csv.text().await.unwrap().lines().count(), 1);
    // Single rows and parents outside the scope are as absent as missing ones.
    app.get_json_as(&partner, "/prospects/p_last", 404).await; // c_null is French
    app.get_json_as(&partner, "/companies/c_null", 404).await;
    app.get_json_as(&partner, "/companies/c_null/prospects", 404)
        .await;
    app.get_json_as(&partner, "/prospects/p_both", 200).await;
    app.get_json_as(&partner, "/companies/c_0/prospects", 200)
        .await;
    // Facets count within the scope, their own filter left out or not.
    let facets = json(
        app.get_as(
            &partner,
            "/prospects/facets?facet=company_country&facet=industry",
        )
        .await,
        200,
    )
    .await;
    let values: Vec<&str> = strings(&facets["company_country"], "value");
    assert_eq!(values, ["Germany"]);
    let industries: i64 = facets["industry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|count| count["count"].as_i64().unwrap())
        .sum();
    assert_eq!(serde_json::json!(industries), page["total"]);
    // Search too.
    let search = app.get_json_as(&partner, "/search?q=hopper", 200).await;
    assert_eq!(
        search["data"],
        serde_json::json!([]),
        "Hopper works in France"
    );
    let search = app.get_json_as(&partner, "/search?q=lovelace", 200).await;
    assert_eq!(strings(&search["data"], "prospect_id"), ["p_both"]);
}

#[tokio::test]
async fn a_scope_no_filter_can_hold_refuses_the_endpoint_instead_of_serving_too_much() {
    let policy = r#"
        [roles.dach]
        rows = { company_country = ["Germany", "Austria"] }
    "#;
    let app = spawn_guarded(policy, |_| {}).await;
    let problem = json(app.get_as(&As::role("dach"), "/companies").await, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("company_country"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_roles_page_cap_bounds_its_pages_and_its_default() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let frontend = As::role("frontend");
    let page = app.get_json_as(&frontend, "/prospects", 200).await;
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        5,
        "the cap is the default"
    );
    assert_eq!(
        refused_params(app.get_as(&frontend, "/prospects?limit=6").await).await,
        ["limit"]
    );
    assert_eq!(
        app.get_json_as(&frontend, "/prospects?limit=3", 200).await["data"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// One line per role, endpoint and format: the status, the columns it returned (against those
/// the admin token gets) and its row ids.
async fn matrix(app: &TestApp) -> String {
    let roles = ["frontend", "analyst", "partner_de", "ops", "intern"];
    let requests = [
        "/prospects?limit=20&sort=company_name",
        "/prospects?format=csv",
        "/prospects/p_both",
        "/prospects/p_last",
        "/companies?limit=20",
        "/companies/c_null",
        "/companies/c_0/prospects",
        "/search?q=engineer",
        "/prospects/facets?facet=company_country",
        "/prospects?email=ada@zero.example",
    ];
    let mut out = String::new();
    for path in requests {
        let everything = summarize(app, &admin(), path).await;
        writeln!(
            out,
            "{:<10} {path:<40} {} {}",
            "(admin)",
            everything.0,
            everything.1.join(",")
        )
        .unwrap();
        for role in roles {
            let (status, columns, rows) = summarize(app, &As::role(role), path).await;
            let hidden: Vec<&str> = everything
                .1
                .iter()
                .filter(|c| !columns.contains(c))
                .map(String::as_str)
                .collect();
            let columns = match (status, hidden.is_empty()) {
                (200, true) => "every column".to_owned(),
                (200, false) => format!("all but {}", hidden.join(",")),
                _ => String::new(),
            };
            writeln!(out, "{role:<10} {path:<40} {status} {columns} {rows}").unwrap();
        }
    }
    out
}

/// The status, the columns and what was returned (row ids, facet counts or the refused
/// parameters) of one request.
async fn summarize(app: &TestApp, who: &As, path: &str) -> (u16, Vec<String>, String) {
    let response = app.get_as(who, path).await;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    if status >= 400 {
        let problem: Value = serde_json::from_str(&body).unwrap();
        let refused: Vec<&str> = problem["invalid_params"]
            .as_array()
            .map(|params| params.iter().map(|p| p["name"].as_str().unwrap()).collect())
            .unwrap_or_default();
        let refused = if refused.is_empty() {
            String::new()
        } else {
            format!("refused: {}", refused.join(","))
        };
        return (status, vec![], refused);
    }
    if path.contains("format=csv") {
        let mut lines = body.lines();
        let columns = lines
            .next()
            .unwrap()
            .split(',')
            .map(str::to_owned)
            .collect();
        return (status, columns, format!("{} rows", lines.count()));
    }
    let body: Value = serde_json::from_str(&body).unwrap();
    if path.contains("/facets") {
        return (
            status,
            vec![],
            format!("counts {}", body["company_country"]),
        );
    }
    let rows: Vec<&Value> = match body.get("data") {
        Some(Value::Array(rows)) => rows.iter().collect(),
        _ => vec![&body],
    };
    let columns: BTreeSet<String> = rows
        .iter()
        .flat_map(|row| row.as_object().unwrap().keys().cloned())
        .collect();
    let ids: Vec<&str> = rows
        .iter()
        .map(|row| {
            row.get("prospect_id")
                .or_else(|| row.get("company_id"))
                .and_then(Value::as_str)
                .unwrap_or("?")
        })
        .collect();
    (
        status,
        columns.into_iter().collect(),
        format!("rows {}", ids.join(",")),
    )
}

/// The golden file is reviewed by eye when it changes: `UPDATE_GOLDEN=1 cargo test role_matrix`
/// rewrites it, and the diff shows what each role newly sees or no longer sees.
#[tokio::test]
async fn the_role_matrix_matches_its_golden_file() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let actual = matrix(&app).await;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/role_matrix.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).expect("tests/golden/role_matrix.txt");
    assert_eq!(
        actual, expected,
        "the role matrix changed; review and UPDATE_GOLDEN=1"
    );
    // What the golden file must show, whatever it is regenerated to.
    for line in actual.lines() {
        let role = line.split_whitespace().next().unwrap();
        let columns = line.split(" columns ").nth(1).unwrap_or("");
        if role == "analyst" {
            assert!(!columns.contains("email"), "{line}");
        }
        if role == "intern" {
            assert!(
                line.contains(" 403 "),
                "an undeclared role reads nothing: {line}"
            );
        }
    }
}

#[tokio::test]
async fn one_url_asked_by_two_roles_in_turn_never_returns_the_others_body() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    // Another instance on the same database, without a response cache: it renders every request.
    let mut config = crate::helpers::serve_config(&app.db);
    config.access.access_policy = Some(crate::access_support::policy_file(POLICY));
    config.access.jwt_secret = Some(crate::access_support::JWT_SECRET.parse().unwrap());
    config.response_cache_bytes = 0;
    let fresh = crate::helpers::spawn_instance(config).await;
    let roles = ["ops", "analyst", "partner_de", "frontend"];
    for path in [
        "/prospects?limit=5",
        "/prospects/p_both",
        "/prospects/facets?facet=company_country",
        "/search?q=engineer",
        "/companies?limit=5",
        "/prospects?format=csv",
    ] {
        let mut etags = BTreeSet::new();
        for round in 0..3 {
            for role in roles {
                let who = As::role(role);
                let cached = app.get_as(&who, path).await;
                let etag = header(&cached, "etag");
                let body = cached.text().await.unwrap();
                // The same request, rendered fresh by a server without a response cache.
                let rendered = app
                    .get_as_at(&fresh.address, &who, path)
                    .await
                    .text()
                    .await
                    .unwrap();
                assert_eq!(body, rendered, "{path} as {role}, round {round}");
                if round == 0 {
                    etags.insert(etag.clone());
                }
                // Another role's ETag is never a 304 for this one.
                for other in roles.iter().filter(|other| **other != role) {
                    let theirs = app
                        .get_as_with(&As::role(other), path, &[("if-none-match", &etag)])
                        .await;
                    let differs = role_sees_differently(role, other);
                    if differs {
                        assert_eq!(theirs.status(), 200, "{path}: {other} with {role}'s ETag");
                    }
                }
            }
        }
        assert!(etags.len() >= 3, "{path}: {etags:?}");
    }
}

/// Whether two roles of `POLICY` may see different data (ops and frontend see the same columns and
/// rows; frontend only pages differently).
fn role_sees_differently(one: &str, other: &str) -> bool {
    let sees_all = |role: &str| role == "ops" || role == "frontend";
    !(sees_all(one) && sees_all(other))
}
