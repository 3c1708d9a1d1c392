//! CSV exports over real HTTP: every matching row in the list's order and fields, the freshness
//! headers, the row bound refused before any row is sent, and spreadsheet formulas made inert.

use crate::helpers::{TestApp, TestDb, json, rejected_params, serve_config, spawn_app_with};

/// 300 ordinary prospects (more than a page, more than one chunk of the stream) and one whose
/// cells would be formulas in a spreadsheet.
async fn spawn_exporting_app(csv_max_rows: u32) -> TestApp {
    let db = TestDb::new().await;
    db.execute(
        r#"INSERT INTO "Company" ("id", "name", "industry", "revenue") VALUES
               ('c_1', 'Acme, Inc.', 'Software', 5000000), ('c_2', 'Beta "Quoted" Ltd', 'Retail', NULL);
           INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "email", "jobTitle")
           SELECT 'p_' || lpad(n::text, 3, '0'), CASE WHEN n % 2 = 0 THEN 'c_1' ELSE 'c_2' END,
                  'First' || n, 'Last' || n, 'person' || n || '@example.com', 'Line one
line two'
           FROM generate_series(1, 300) n;
           INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "email", "jobTitle", "phone")
           VALUES ('p_hostile', 'c_1', '=HYPERLINK("http://evil.example","click")', '@SUM(A1)',
                   '-2+3@example.com', '	tabbed', '+1 555 0100');"#,
    )
    .await;
    let mut config = serve_config(&db);
    config.csv_max_rows = csv_max_rows;
    let app = spawn_app_with(db, config).await;
    app.wait_until_ready().await;
    app
}

async fn csv_of(app: &TestApp, query: &str) -> (reqwest::Response, Vec<Vec<String>>) {
    let response = app.get(&format!("/prospects?{query}")).await;
    assert_eq!(response.status(), 200, "{query}");
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let records = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|record| record.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let mut rebuilt = reqwest::Response::from(axum::http::Response::new(String::new()));
    *rebuilt.headers_mut() = headers;
    (rebuilt, records)
}

#[tokio::test]
async fn an_export_holds_every_matching_row_in_the_lists_order() {
    let app = spawn_exporting_app(100_000).await;
    let (response, records) = csv_of(&app, "format=csv&sort=-revenue").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("prospects.csv")
    );
    assert!(
        response.headers().contains_key("x-data-age") && response.headers().contains_key("etag")
    );
    let header = &records[0];
    assert_eq!(header[0], "prospect_id", "declaration order");
    assert_eq!(records.len(), 1 + 301, "every row, not one page");

    // The same rows in the same order as paging through the JSON list.
    let id = header
        .iter()
        .position(|name| name == "prospect_id")
        .unwrap();
    let exported: Vec<&str> = records[1..].iter().map(|row| row[id].as_str()).collect();
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let body = app
            .get_json(&format!("/prospects?sort=-revenue&limit=100{cursor}"), 200)
            .await;
        paged.extend(
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["prospect_id"].as_str().unwrap().to_owned()),
        );
        match body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(exported, paged);

    // RFC 4180: commas, quotes and line breaks survive the round trip.
    let company = header
        .iter()
        .position(|name| name == "company_name")
        .unwrap();
    let title = header.iter().position(|name| name == "job_title").unwrap();
    assert!(
        records
            .iter()
            .any(|row| row[company] == "Beta \"Quoted\" Ltd")
    );
    assert!(records.iter().any(|row| row[company] == "Acme, Inc."));
    assert!(records.iter().any(|row| row[title] == "Line one\nline two"));

    // Accept: text/csv asks for the same export.
    let by_accept = app
        .get_with("/prospects?sort=-revenue", &[("accept", "text/csv")])
        .await;
    assert_eq!(
        by_accept.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let text = by_accept.text().await.unwrap();
    assert_eq!(text.matches("\r\n").count(), 302, "CRLF after every record");

    // Compressed when accepted, whole (the compression layer reads the stream to its end).
    let gzipped = app
        .client
        .get(format!(
            "{}/prospects?sort=-revenue&format=csv",
            app.address
        ))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let compressed = gzipped.bytes().await.expect("a complete body");
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&compressed[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(unzipped, text);
}

#[tokio::test]
async fn an_export_keeps_the_fields_and_filters_asked_for() {
    let app = spawn_exporting_app(100_000).await;
    let (_, records) = csv_of(&app, "format=csv&industry=Retail&fields=email,prospect_id").await;
    assert_eq!(records[0], ["email", "prospect_id"]);
    assert_eq!(records.len(), 1 + 150);
    assert!(records[1..].iter().all(|row| row[1].starts_with("p_")));
}

#[tokio::test]
async fn cells_a_spreadsheet_would_run_as_formulas_are_made_inert() {
    let app = spawn_exporting_app(100_000).await;
    let (_, records) = csv_of(
        &app,
        "format=csv&fields=prospect_id,first_name,last_name,email,job_title,prospect_phone,revenue",
    )
    .await;
    let hostile = records.iter().find(|row| row[0] == "p_hostile").unwrap();
    assert_eq!(hostile[1], "'=HYPERLINK(\"http://evil.example\",\"click\")");
    assert_eq!(hostile[2], "'@SUM(A1)");
    assert_eq!(hostile[3], "'-2+3@example.com");
    assert_eq!(hostile[4], "'\ttabbed");
    assert_eq!(hostile[5], "'+1 555 0100");
    assert_eq!(hostile[6], "5000000", "numbers are written as they are");
    for row in &records[1..] {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?} in {row:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_export_past_csv_max_rows_is_refused_before_any_row() {
    let app = spawn_exporting_app(200).await;
    let response = app.get("/prospects?format=csv").await;
    let body = json(response, 400).await;
    assert_eq!(body["invalid_params"][0]["name"], "format");
    assert!(
        body["invalid_params"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("301 rows"),
        "{body}"
    );
    let (_, records) = csv_of(&app, "format=csv&industry=Retail").await;
    assert_eq!(records.len(), 1 + 150, "under the bound it exports");
}

#[tokio::test]
async fn every_list_exports_and_paging_parameters_or_unknown_formats_are_named() {
    let app = spawn_exporting_app(100_000).await;
    for (query, names) in [
        ("format=csv&limit=10", &["limit"][..]),
        ("format=csv&count=exact&cursor=x", &["cursor", "count"]),
        ("format=xml", &["format"]),
    ] {
        let mut rejected = rejected_params(app.get(&format!("/prospects?{query}")).await).await;
        rejected.sort();
        let mut names = names.to_vec();
        names.sort();
        assert_eq!(rejected, names, "{query}");
    }
    let search = app.get("/search?q=first42&format=csv").await;
    assert_eq!(search.headers()["content-type"], "text/csv; charset=utf-8");
    let text = search.text().await.unwrap();
    let ids: Vec<String> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|record| record.unwrap()[0].to_owned())
        .collect();
    assert_eq!(ids, ["p_042"], "the one match of the search");
    let companies = app.get("/companies?format=csv").await;
    assert_eq!(companies.status(), 200);
    let text = companies.text().await.unwrap();
    assert!(text.starts_with("company_id,"), "{text}");
    assert_eq!(text.lines().count(), 3);
}
