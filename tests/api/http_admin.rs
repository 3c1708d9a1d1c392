//! The admin plane and the metrics, over real HTTP.

use serde_json::Value;

use prospect_api::http::lockout::{MAX_WRONG_SECRETS, WINDOW};

use crate::helpers::{
    ADMIN_TOKEN, TestApp, json, rejected_params, spawn_admin_app, spawn_app, strings,
};

async fn post_refresh(
    app: &TestApp,
    query: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/admin/refresh{query}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    request.send().await.unwrap()
}

/// The JSON body of `POST /admin/refresh{query}` with the admin token, which must answer `status`.
async fn refreshed(app: &TestApp, query: &str, body: Option<&str>, status: u16) -> Value {
    json(
        post_refresh(app, query, Some(ADMIN_TOKEN), body).await,
        status,
    )
    .await
}

#[tokio::test]
async fn without_an_admin_token_the_admin_endpoints_are_disabled_and_say_how_to_enable_them() {
    let app = spawn_app().await;
    let problem = refreshed(&app, "", None, 403).await;
    assert!(problem["detail"].as_str().unwrap().contains("ADMIN_TOKEN"));
    app.get_json("/admin/views", 403).await;
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_a_401_with_www_authenticate() {
    let app = spawn_admin_app().await;
    for token in [None, Some("wrong-token-wrong-token-wrong-token"), Some("")] {
        let response = post_refresh(&app, "", token, None).await;
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        json(response, 401).await;
    }
    let basic = app
        .client
        .get(format!("{}/admin/views", app.address))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    json(basic, 401).await;
}

#[tokio::test]
async fn repeated_wrong_tokens_lock_the_address_out_with_429_and_retry_after() {
    let app = spawn_admin_app().await;
    let views = |token: &str| {
        app.client
            .get(format!("{}/admin/views", app.address))
            .bearer_auth(token)
            .send()
    };
    json(views(ADMIN_TOKEN).await.unwrap(), 200).await;
    for _ in 0..MAX_WRONG_SECRETS {
        json(views("a-wrong-guess").await.unwrap(), 401).await;
    }
    // Now every admin endpoint refuses this address, even with the right token.
    let refused = views(ADMIN_TOKEN).await.unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=WINDOW.as_secs()).contains(&retry_after));
    let problem = json(refused, 429).await;
    assert_eq!(
        problem["type"],
        "urn:prospect-api:problem:too-many-wrong-tokens"
    );
    refreshed(&app, "", None, 429).await;
    // The data endpoints are not affected.
    app.get_json("/prospects", 200).await;
}

#[tokio::test]
async fn the_right_token_refreshes_and_reports_each_view() {
    let app = spawn_admin_app().await;
    let body = refreshed(&app, "", None, 200).await;
    let results = body["results"].as_array().unwrap();
    let views: Vec<&str> = results
        .iter()
        .map(|r| r["view"].as_str().unwrap())
        .collect();
    assert_eq!(
        views,
        [
            "company_prospect_view",
            "company_summary_view",
            "prospect_search_view"
        ]
    );
    for result in results {
        assert_eq!(result["status"], "ok");
        assert!(
            result["started_at"].is_string()
                && result["duration_ms"].is_i64()
                && result["rows"].is_i64()
        );
    }
    let one = refreshed(
        &app,
        "",
        Some(r#"{"views": ["company_summary_view"]}"#),
        200,
    )
    .await;
    assert_eq!(one["results"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.db
            .count("materialized_view_log WHERE trigger = 'manual'")
            .await,
        4
    );
}

#[tokio::test]
async fn bad_refresh_requests_are_400s_naming_what_is_wrong() {
    let app = spawn_admin_app().await;
    let cases: &[(&str, Option<&str>, &[&str])] = &[
        ("", Some(r#"{"views": ["company_view"]}"#), &["views[0]"]),
        ("", Some(r#"{"views": []}"#), &["views"]),
        ("", Some(r#"{"view": ["company_summary_view"]}"#), &["body"]),
        ("", Some("not json"), &["body"]),
        ("?wait=maybe", None, &["wait"]),
        ("?wiat=false", None, &["wiat"]),
    ];
    for (query, body, expected) in cases {
        let names =
            rejected_params(post_refresh(&app, query, Some(ADMIN_TOKEN), *body).await).await;
        assert_eq!(&names, expected, "{query} {body:?}");
    }
    let huge = format!(r#"{{"views": ["{}"]}}"#, "x".repeat(100_000));
    refreshed(&app, "", Some(&huge), 413).await;
}

#[tokio::test]
async fn wait_false_accepts_at_once_and_the_refresh_still_happens() {
    let app = spawn_admin_app().await;
    let body = refreshed(
        &app,
        "?wait=false",
        Some(r#"{"views": ["prospect_search_view"]}"#),
        202,
    )
    .await;
    assert_eq!(
        body["accepted"],
        serde_json::json!(["prospect_search_view"])
    );
    crate::helpers::eventually(10, "the accepted refresh being logged", || async {
        app.db
            .count("materialized_view_log WHERE trigger = 'manual'")
            .await
            == 1
    })
    .await;
}

#[tokio::test]
async fn a_failing_refresh_is_a_problem_naming_the_view_and_the_database_error_and_is_counted() {
    let app = spawn_admin_app().await;
    let blocking = app.db.locking_summary_view().await;
    let problem = refreshed(&app, "", None, 500).await;
    blocking.rollback().await.unwrap();

    assert_eq!(problem["type"], "urn:prospect-api:problem:refresh-failed");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("company_summary_view") && detail.contains("lock timeout"),
        "{detail}"
    );
    let statuses: Vec<&str> = strings(&problem["results"], "status");
    assert_eq!(statuses, ["ok", "error", "ok"]);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("view_refresh_failures_total{view=\"company_summary_view\"} 1"),
        "{metrics}"
    );
    let views = json(app.admin_get("/admin/views").await, 200).await;
    assert!(
        views[1]["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("lock timeout")
    );

    // Old data is still served, and the next trigger succeeds.
    app.get_json("/companies", 200).await;
    refreshed(
        &app,
        "",
        Some(r#"{"views": ["company_summary_view"]}"#),
        200,
    )
    .await;
}

#[tokio::test]
async fn admin_views_and_history_describe_every_view() {
    let app = spawn_admin_app().await;
    let views: Value = json(app.admin_get("/admin/views").await, 200).await;
    let views = views.as_array().unwrap();
    assert_eq!(views.len(), 3);
    for view in views {
        assert_eq!(view["populated"], true);
        assert!(view["row_count"].as_i64().unwrap() > 0);
        assert!(view["total_bytes"].as_i64().unwrap() > 0);
        assert_eq!(view["last_refresh"]["trigger"], "startup");
        assert!(view["data_age_seconds"].as_f64().unwrap() < 60.0);
        assert_eq!(view["refreshing"], false);
        assert_eq!(view["last_error"], Value::Null);
    }
    let history: Value = json(app.admin_get("/admin/refresh/history?limit=2").await, 200).await;
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(history[0]["view"], "prospect_search_view", "newest first");
    assert_eq!(
        rejected_params(app.admin_get("/admin/refresh/history?limit=0").await).await,
        vec!["limit"]
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_per_view_series() {
    let app = spawn_app().await;
    app.get("/prospects").await;
    let response = app.get("/metrics").await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        assert!(
            series.chars().next().unwrap().is_ascii_lowercase(),
            "{line}"
        );
    }
    for view in [
        "company_prospect_view",
        "company_summary_view",
        "prospect_search_view",
    ] {
        for series in [
            "view_data_age_seconds",
            "view_last_success_timestamp_seconds",
            "view_refresh_failures_total",
            "view_refresh_duration_seconds_count",
        ] {
            assert!(
                text.contains(&format!("{series}{{view=\"{view}\"}}")),
                "{series} for {view}"
            );
        }
    }
    assert!(
        text.contains("http_requests_total{route=\"/prospects\",method=\"GET\",status=\"200\"} 1")
    );
    assert!(text.contains("refresh_notifications_total "));
}

#[tokio::test]
async fn admin_views_report_a_refresh_held_by_any_process_on_this_database_only() {
    let app = spawn_admin_app().await;
    let mut other_process = app.db.connection().await;
    sqlx::query!("SELECT pg_advisory_lock(view_refresh_lock_key('company_summary_view'))")
        .fetch_one(&mut other_process)
        .await
        .unwrap();
    let views: Value = json(
        app.client
            .get(format!("{}/admin/views", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let refreshing: Vec<bool> = views
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["refreshing"].as_bool().unwrap())
        .collect();
    assert_eq!(refreshing, [false, true, false]);
}

#[tokio::test]
async fn a_storm_of_100_concurrent_refresh_requests_causes_at_most_two_refreshes_per_view() {
    let app = spawn_admin_app().await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let request = app
            .client
            .post(format!("{}/admin/refresh", app.address))
            .bearer_auth(ADMIN_TOKEN);
        requests.spawn(async move { request.send().await.unwrap().status() });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let per_view = sqlx::query!(
        r#"SELECT view_name, count(*) AS "n!" FROM materialized_view_log WHERE trigger = 'manual' GROUP BY 1 ORDER BY 1"#
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(per_view.len(), 3);
    for row in per_view {
        assert!(
            (1..=2).contains(&row.n),
            "{}: {} refreshes for 100 requests",
            row.view_name,
            row.n
        );
    }
}
