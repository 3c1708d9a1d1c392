//! Hostile input, over real HTTP: injection payloads in every documented parameter, oversized and
//! malformed requests. Each gets a clear 4xx (or, for a text filter, an honest 200 that matches the
//! payload literally), never a 5xx; and the payloads reach the database only as bound values.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{ADMIN_TOKEN, TestApp, eventually, json, spawn_admin_app, strings};

const PAYLOADS: &[&str] = &[
    "' OR '1'='1",
    "'; DROP TABLE \"Prospect\"; --",
    "1); SELECT pg_sleep(30); --",
    "\" OR \"\"=\"",
    "%' OR 1=1 --",
    "%",
    "_",
    "\\",
    "$1",
    "NULL",
    "1 UNION SELECT value FROM api_secrets",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "ünïcødé 🚀 \u{202e}",
    "a\u{0}b",
    "-1",
    "99999999999999999999999",
    "1e309",
    "NaN",
    "2024-13-45T99:99:99Z",
];

/// Every GET path of the live spec with its query parameter names, path parameters filled in with
/// ids the fixture holds, and its required parameters given valid values (so that the payload is
/// what a rejection is about).
async fn documented_get_endpoints(app: &TestApp) -> Vec<(String, Vec<String>)> {
    let spec = app.get_json("/openapi.json", 200).await;
    let mut endpoints = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        let Some(get) = item.get("get") else { continue };
        let names = get["parameters"]
            .as_array()
            .map(|params| {
                params
                    .iter()
                    .filter(|p| p["in"] == "query")
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let required = get["parameters"].as_array().is_some_and(|params| {
            params
                .iter()
                .any(|p| p["in"] == "query" && p["required"] == true)
        });
        let path = path
            .replace("{company_id}", "c_0")
            .replace("{prospect_id}", "p_both");
        // Only /search has a required parameter (q); the sweep gives it a valid one beside the payload.
        let path = if required {
            format!("{path}?q=engineer")
        } else {
            path
        };
        endpoints.push((path, names));
    }
    endpoints
}

async fn row_counts(app: &TestApp) -> (i64, i64, String) {
    sqlx::query!(
        r#"SELECT (SELECT count(*) FROM "Company") AS "companies!",
                  (SELECT count(*) FROM "Prospect") AS "prospects!",
                  (SELECT md5(string_agg(value::text, ',')) FROM api_secrets) AS "secrets!""#
    )
    .fetch_one(&app.db.pool)
    .await
    .map(|r| (r.companies, r.prospects, r.secrets))
    .unwrap()
}

#[tokio::test]
async fn injection_payloads_in_every_parameter_are_a_200_or_a_4xx_naming_it_and_change_nothing() {
    let app = spawn_admin_app().await;
    let before = row_counts(&app).await;
    let endpoints = documented_get_endpoints(&app).await;
    assert!(endpoints.len() >= 10, "{endpoints:?}");
    let mut requests = 0;
    for (path, names) in &endpoints {
        for name in names {
            for payload in PAYLOADS {
                let mut url = reqwest::Url::parse(&format!("{}{path}", app.address)).unwrap();
                if name == "q" {
                    url.set_query(None);
                }
                url.query_pairs_mut().append_pair(name, payload);
                let response = app
                    .client
                    .get(url)
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .unwrap();
                requests += 1;
                let status = response.status().as_u16();
                let what = format!("GET {path}?{name}={payload:?}");
                assert!(
                    status == 200 || status == 400,
                    "{what}: {status} {}",
                    response.text().await.unwrap()
                );
                let body = json(response, status).await;
                if status == 400 {
                    let named: Vec<&str> = strings(&body["invalid_params"], "name");
                    assert!(
                        named.contains(&name.as_str()) || name == "cursor",
                        "{what}: {body}"
                    );
                }
            }
        }
    }
    assert!(requests > 500, "{requests} requests");
    assert_eq!(row_counts(&app).await, before);
}

#[tokio::test]
async fn injection_payloads_in_path_ids_are_a_404_or_a_400() {
    let app = spawn_admin_app().await;
    for template in ["/prospects/{}", "/companies/{}", "/companies/{}/prospects"] {
        for payload in PAYLOADS {
            let encoded: String = url_escape(payload);
            let response = app.get(&template.replace("{}", &encoded)).await;
            let status = response.status().as_u16();
            assert!(
                status == 404
                    || status == 400
                    || (status == 200 && template.ends_with("prospects")),
                "{template} with {payload:?}: {status}"
            );
            json(response, status).await;
        }
    }
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn payloads_stored_in_the_data_match_themselves_literally_and_nothing_else() {
    let app = spawn_admin_app().await;
    let title = "'; DROP TABLE \"Prospect\"; --";
    let email = "x'or'1'='1@evil.example";
    sqlx::query!(
        r#"INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "email", "jobTitle")
           VALUES ('p_evil', 'c_0', 'Robert''); DROP TABLE "Company";--', 'Tables', $1, $2)"#,
        email,
        title
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    // The views are refreshed one after another: wait for the last of them, the search view, too.
    eventually(10, "the new prospect is served", || async {
        app.get("/prospects/p_evil").await.status() == 200
            && app
                .get("/search?q=tables")
                .await
                .text()
                .await
                .unwrap()
                .contains("p_evil")
    })
    .await;

    let ids = |body: Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["prospect_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let by = |name: &'static str, value: &'static str| {
        let app = &app;
        async move {
            let response = app
                .client
                .get(format!("{}/prospects", app.address))
                .query(&[(name, value)])
                .send()
                .await
                .unwrap();
            ids(json(response, 200).await)
        }
    };
    assert_eq!(by("job_title", title).await, ["p_evil"]);
    assert_eq!(by("job_title", "DROP TABLE").await, ["p_evil"]);
    assert_eq!(by("email", email).await, ["p_evil"]);
    assert_eq!(by("email", "' OR '1'='1").await, Vec::<String>::new());
    // LIKE wildcards are literal characters: no title contains '%' or '_'.
    assert_eq!(by("job_title", "%").await, Vec::<String>::new());
    assert_eq!(by("job_title", "_").await, Vec::<String>::new());

    let search = app
        .client
        .get(format!("{}/search", app.address))
        .query(&[("q", "robert'); drop")])
        .send()
        .await
        .unwrap();
    let found = json(search, 200).await;
    let found: Vec<&str> = strings(&found["data"], "prospect_id");
    assert_eq!(found, ["p_evil"]);
    assert_eq!(
        app.db
            .count("pg_tables WHERE tablename IN ('Company', 'Prospect')")
            .await,
        2
    );
}

/// Sends raw bytes (for requests a client library would refuse to build) and returns the status and
/// the body. The server may close the connection early; whatever it answered before is read.
async fn raw_request(app: &TestApp, request: &[u8]) -> (u16, String) {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn get_request(target: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra_headers}\r\n")
        .into_bytes()
}

#[tokio::test]
async fn malformed_encodings_are_400s_naming_the_parameter() {
    let app = spawn_admin_app().await;
    for target in [
        "/prospects?industry=%FF%FE",
        "/prospects?industry=%C3%28",
        "/search?q=%ED%A0%80",
    ] {
        let (status, body) = raw_request(&app, &get_request(target, "")).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("not valid UTF-8"), "{target}: {body}");
    }
    // A stray '%' is kept as it is (as browsers do): a literal, harmless filter value.
    let (status, _) = raw_request(&app, &get_request("/prospects?industry=%ZZ", "")).await;
    assert_eq!(status, 200);
    // Bytes that are not allowed in a request target at all are refused by the HTTP parser.
    let (status, _) = raw_request(
        &app,
        b"GET /prospects?industry=\xff HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn oversized_values_limits_and_repetitions_are_400s() {
    let app = spawn_admin_app().await;
    let long = "x".repeat(10_000);
    let repeated = vec!["industry=Software"; 60].join("&");
    let flood = (0..5_000)
        .map(|i| format!("p{i}=1"))
        .collect::<Vec<_>>()
        .join("&");
    for (query, named) in [
        (format!("industry={long}"), "industry"),
        ("limit=1000000000000".to_owned(), "limit"),
        ("limit=99999999999999999999999".to_owned(), "limit"),
        ("limit=-5".to_owned(), "limit"),
        (repeated, "industry"),
        (flood, "(query string)"),
        ("limit=1&limit=2".to_owned(), "limit"),
    ] {
        let (status, body) =
            raw_request(&app, &get_request(&format!("/prospects?{query}"), "")).await;
        assert_eq!(status, 400, "{}: {body}", &query[..query.len().min(60)]);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(
            body["invalid_params"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == named),
            "{body}"
        );
    }
    // A request target beyond what the HTTP layer accepts at all.
    let huge = format!("/prospects?industry={}", "y".repeat(100_000));
    let (status, _) = raw_request(&app, &get_request(&huge, "")).await;
    assert!((400..500).contains(&status), "{status}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let app = spawn_admin_app().await;
    let body = format!(r#"{{"views": ["{}"]}}"#, "v".repeat(200_000));
    let response = app
        .client
        .post(format!("{}/admin/refresh", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let problem = json(response, 413).await;
    assert_eq!(problem["status"], 413);
}

#[tokio::test]
async fn headers_too_large_or_too_many_are_431s() {
    let app = spawn_admin_app().await;
    let one_huge = format!("X-Big: {}\r\n", "h".repeat(500_000));
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    for headers in [one_huge, many] {
        let (status, _) = raw_request(&app, &get_request("/prospects", &headers)).await;
        assert_eq!(status, 431);
    }
    // And the server still answers.
    app.get_json("/prospects?limit=1", 200).await;
}

/// Found while fuzzing: a cursor carries the last row's sort key, so long names made a cursor longer
/// than the 200 characters a filter value may have, and the next page was refused.
#[tokio::test]
async fn pages_after_rows_with_very_long_names_are_reachable() {
    let app = spawn_admin_app().await;
    let long_name = "A".repeat(500);
    sqlx::query!(
        r#"UPDATE "Company" SET "name" = $1 WHERE "id" IN ('c_0', 'c_null')"#,
        long_name
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    eventually(10, "the long names are served", || async {
        let body = app.get_json("/prospects?limit=1", 200).await;
        body["data"][0]["company_name"].as_str() == Some(long_name.as_str())
    })
    .await;
    let first = app.get_json("/prospects?limit=1", 200).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    assert!(cursor.len() > 200, "{}", cursor.len());
    let next = app
        .client
        .get(format!("{}/prospects", app.address))
        .query(&[("limit", "1"), ("cursor", cursor.as_str())])
        .send()
        .await
        .unwrap();
    let next = json(next, 200).await;
    assert_ne!(
        next["data"][0]["prospect_id"],
        first["data"][0]["prospect_id"]
    );
}
