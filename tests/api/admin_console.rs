//! What the admin console reads and does, over real HTTP: its page, the paged logs, the timeline
//! (checked against its definition, computed here from the log rows), API keys, and the instance.
//! The page itself is driven in a real browser by `reliability/console_check.py`.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json as json_value};

use crate::access_support::{As, POLICY, spawn_guarded, token};
use crate::helpers::{ADMIN_TOKEN, TestApp, json, rejected_params, run, spawn_admin_app};

async fn admin_send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Each `(query, parameter)`: `path?query` is a 400 naming the parameter.
async fn assert_rejects(app: &TestApp, path: &str, cases: &[(&str, &str)]) {
    for (query, name) in cases {
        let response = app.admin_get(&format!("{path}?{query}")).await;
        assert_eq!(rejected_params(response).await, [*name], "{query}");
    }
}

#[tokio::test]
async fn every_admin_endpoint_refuses_a_parameter_it_does_not_take_naming_it() {
    let app = spawn_admin_app().await;
    let endpoints = "GET /admin/views, GET /admin/instance, GET /admin/keys, POST /admin/keys, \
                     DELETE /admin/keys/no-such-key, POST /admin/refresh, GET /admin/refresh/history, \
                     GET /admin/refresh/timeline, GET /admin/audit";
    for endpoint in endpoints.split(", ") {
        let (method, path) = endpoint.split_once(' ').unwrap();
        let query = format!("{path}?bogus=1");
        let response = admin_send(&app, method.parse().unwrap(), &query, None).await;
        assert_eq!(rejected_params(response).await, ["bogus"], "{endpoint}");
    }
}

#[tokio::test]
async fn the_console_page_is_served_from_the_binary_under_a_strict_policy_and_holds_no_data() {
    let app = spawn_admin_app().await;
    for (path, content_type) in [
        ("/admin/console", "text/html"),
        ("/admin/console/console.js", "text/javascript"),
        ("/admin/console/console.css", "text/css"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path} needs no credential");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("http://") || path.ends_with(".js"),
            "{path} loads nothing from elsewhere"
        );
        assert!(
            !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
    let page = app.get("/admin/console").await.text().await.unwrap();
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "no inline script or style"
    );
    for id in [
        "login", "token", "views", "timeline", "history", "keys", "audit",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "the page has #{id}");
    }
    let script = app
        .get("/admin/console/console.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(script.contains("sessionStorage") && !script.contains("localStorage"));
    assert!(
        !script.contains("innerHTML"),
        "data goes into the page as text only"
    );
}

/// Log rows written as the refresher writes them, at chosen times.
async fn log_run(app: &TestApp, view: &str, status: &str, started: DateTime<Utc>, took_ms: i64) {
    sqlx::query(
        "INSERT INTO materialized_view_log (view_name, trigger, status, started_at, finished_at, error_message)
         VALUES ($1, 'schedule', $2, $3, $3 + $4 * interval '1 millisecond',
                 CASE WHEN $2 = 'error' THEN 'it failed' END)",
    )
    .bind(view)
    .bind(status)
    .bind(started)
    .bind(took_ms)
    .execute(&app.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_history_pages_by_before_filters_by_view_and_names_bad_parameters() {
    let app = spawn_admin_app().await;
    let now = Utc::now();
    for i in 0..7 {
        log_run(
            &app,
            "company_summary_view",
            "ok",
            now - Duration::minutes(60 - i),
            10,
        )
        .await;
    }
    let all: Value = json(app.admin_get("/admin/refresh/history?limit=100").await, 200).await;
    let all = all.as_array().unwrap().clone();
    let ids = |page: &Value| -> Vec<i64> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    let mut paged = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let query = match before {
            Some(id) => format!("/admin/refresh/history?limit=3&before={id}"),
            None => "/admin/refresh/history?limit=3".to_owned(),
        };
        let page: Value = json(app.admin_get(&query).await, 200).await;
        let page_ids = ids(&page);
        if page_ids.is_empty() {
            break;
        }
        assert!(page_ids.len() <= 3);
        before = page_ids.last().copied();
        paged.extend(page_ids);
    }
    assert_eq!(
        paged,
        ids(&Value::Array(all.clone())),
        "the pages are the whole log, in order, once"
    );

    let summary: Value = json(
        app.admin_get("/admin/refresh/history?view=company_summary_view&limit=100")
            .await,
        200,
    )
    .await;
    let summary = summary.as_array().unwrap();
    assert!(summary.len() >= 7);
    assert!(summary.iter().all(|e| e["view"] == "company_summary_view"));

    assert_rejects(
        &app,
        "/admin/refresh/history",
        &[
            ("view=nope", "view"),
            ("before=0", "before"),
            ("before=x", "before"),
            ("limit=0", "limit"),
            ("since=1", "since"),
        ],
    )
    .await;
}

/// The timeline's definition, computed here from the log rows: per bucket of the span, the runs
/// started in it, their failures and longest duration, and the oldest the served data was in it
/// (just before a success landed, or at the bucket's end).
struct Run {
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    ok: bool,
    duration_ms: i64,
}

fn expected_bucket(
    runs: &[Run],
    starts: DateTime<Utc>,
    ends: DateTime<Utc>,
) -> (i64, i64, Option<i64>, Option<f64>) {
    let inside: Vec<&Run> = runs
        .iter()
        .filter(|r| r.started >= starts && r.started < ends)
        .collect();
    let failures = inside.iter().filter(|r| !r.ok).count() as i64;
    let max_duration = inside.iter().map(|r| r.duration_ms).max();
    let mut successes: Vec<&Run> = runs.iter().filter(|r| r.ok).collect();
    successes.sort_by_key(|r| (r.finished, r.started));
    let served_at = |t: DateTime<Utc>| {
        successes
            .iter()
            .filter(|r| r.finished <= t)
            .map(|r| r.started)
            .max()
    };
    let seconds = |d: Duration| d.num_microseconds().unwrap() as f64 / 1e6;
    let mut ages: Vec<f64> = served_at(ends)
        .map(|s| seconds(ends - s))
        .into_iter()
        .collect();
    for (i, success) in successes.iter().enumerate() {
        if success.finished > starts && success.finished <= ends && i > 0 {
            ages.push(seconds(success.finished - successes[i - 1].started));
        }
    }
    let age = ages.into_iter().reduce(f64::max);
    (inside.len() as i64, failures, max_duration, age)
}

#[tokio::test]
async fn the_timeline_is_the_log_of_the_span_in_buckets_as_its_definition_says() {
    let app = spawn_admin_app().await;
    let now = Utc::now();
    // A success before the span (what is served when the span starts), then a refresh every 5
    // minutes taking 1 to 9 s, every fifth failing, with a gap; and the startup refresh's rows.
    let view = "company_summary_view";
    log_run(
        &app,
        view,
        "ok",
        now - Duration::hours(3) - Duration::minutes(7),
        2_000,
    )
    .await;
    let mut at = now - Duration::minutes(170);
    for i in 0..30 {
        let status = if i % 5 == 4 { "error" } else { "ok" };
        if i != 12 && i != 13 {
            log_run(&app, view, status, at, 1_000 + (i % 9) * 1_000).await;
        }
        at += Duration::minutes(5);
    }

    let timeline: Value = json(app.admin_get("/admin/refresh/timeline?hours=3").await, 200).await;
    let since: DateTime<Utc> = timeline["since"].as_str().unwrap().parse().unwrap();
    let until: DateTime<Utc> = timeline["until"].as_str().unwrap().parse().unwrap();
    assert_eq!((until - since).num_seconds(), 3 * 3600);
    let views = timeline["views"].as_array().unwrap();
    let names: Vec<&str> = views.iter().map(|v| v["view"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "company_prospect_view",
            "company_summary_view",
            "prospect_search_view"
        ]
    );
    let runs: Vec<Run> = sqlx::query_as::<_, (DateTime<Utc>, DateTime<Utc>, String, i64)>(
        "SELECT started_at, finished_at, status, duration_ms FROM materialized_view_log WHERE view_name = $1",
    )
    .bind(view)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(started, finished, status, duration_ms)| Run { started, finished, ok: status == "ok", duration_ms })
    .collect();
    let summary = views.iter().find(|v| v["view"] == view).unwrap();
    let buckets = summary["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 96);
    let width = (until - since) / 96;
    let mut total_runs = 0;
    for (i, bucket) in buckets.iter().enumerate() {
        let starts = since + width * i as i32;
        let ends = if i == 95 {
            until
        } else {
            since + width * (i as i32 + 1)
        };
        let (runs_in, failures, max_duration, age) = expected_bucket(&runs, starts, ends);
        assert_eq!(bucket["runs"], runs_in, "bucket {i}: runs");
        assert_eq!(bucket["failures"], failures, "bucket {i}: failures");
        assert_eq!(
            bucket["max_duration_ms"].as_i64(),
            max_duration,
            "bucket {i}: duration"
        );
        let got = bucket["max_data_age_seconds"].as_f64();
        match (got, age) {
            (Some(got), Some(age)) => {
                assert!((got - age).abs() < 0.01, "bucket {i}: age {got} vs {age}")
            }
            (got, age) => assert_eq!(got, age, "bucket {i}: age"),
        }
        total_runs += runs_in;
    }
    assert!(
        total_runs >= 28,
        "every run of the span, in one bucket each"
    );

    assert_rejects(
        &app,
        "/admin/refresh/timeline",
        &[
            ("hours=0", "hours"),
            ("hours=169", "hours"),
            ("hours=x", "hours"),
            ("x=1", "x"),
        ],
    )
    .await;
}

#[tokio::test]
async fn api_keys_are_created_once_listed_without_the_secret_revoked_and_audited() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let created = admin_send(
        &app,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json_value!({"name": "dashboard", "role": "analyst", "valid_days": 30.0})),
    )
    .await;
    let created = json(created, 201).await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pak_"));
    let expires: DateTime<Utc> = created["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        (expires - Utc::now() - Duration::days(30))
            .num_seconds()
            .abs()
            < 60
    );

    let reads = app
        .get_as(&As::ApiKey(key.clone()), "/prospects?limit=1")
        .await;
    assert_eq!(reads.status(), 200, "the new key reads as its role");
    let listed = json(app.admin_get("/admin/keys").await, 200).await;
    let text = listed.to_string();
    assert!(
        !text.contains(&key) && !text.contains("key_hash"),
        "never the key itself"
    );
    assert_eq!(listed[0]["name"], "dashboard");
    assert_eq!(listed[0]["role"], "analyst");

    // Refusals, each naming what is wrong: malformed (400) or at odds with what exists (409).
    for (body, name, status) in [
        (
            json_value!({"name": "dashboard", "role": "analyst"}),
            "name",
            409,
        ),
        (
            json_value!({"name": "-bad", "role": "analyst"}),
            "name",
            400,
        ),
        (
            json_value!({"name": "other", "role": "no_such_role"}),
            "role",
            409,
        ),
        (
            json_value!({"name": "other", "role": "analyst", "valid_days": 0}),
            "valid_days",
            400,
        ),
        (
            json_value!({"name": "other", "role": "analyst", "extra": 1}),
            "body",
            400,
        ),
    ] {
        let response = admin_send(
            &app,
            reqwest::Method::POST,
            "/admin/keys",
            Some(body.clone()),
        )
        .await;
        let problem = json(response, status).await;
        assert_eq!(
            problem["invalid_params"][0]["name"], name,
            "{body}: {problem}"
        );
        assert_eq!(
            problem["invalid_params"].as_array().unwrap().len(),
            1,
            "{problem}"
        );
    }
    let as_reader = app
        .client
        .post(format!("{}/admin/keys", app.address))
        .bearer_auth(token("frontend"))
        .json(&json_value!({"name": "sneaky", "role": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_reader.status(), 403, "only an admin role makes keys");

    let revoked = admin_send(&app, reqwest::Method::DELETE, "/admin/keys/dashboard", None).await;
    assert_eq!(revoked.status(), 204);
    let again = admin_send(&app, reqwest::Method::DELETE, "/admin/keys/dashboard", None).await;
    json(again, 404).await;
    crate::helpers::eventually(5, "the revoked key is refused", || {
        let app = &app;
        let key = key.clone();
        async move {
            app.get_as(&As::ApiKey(key), "/prospects?limit=1")
                .await
                .status()
                == 401
        }
    })
    .await;
    let listed = json(app.admin_get("/admin/keys").await, 200).await;
    assert!(listed[0]["revoked_at"].is_string());

    let audit = json(
        app.admin_get("/admin/audit?credential=admin-token").await,
        200,
    )
    .await;
    let details: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("POST /admin/keys -> 201")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("DELETE /admin/keys/dashboard -> 204")),
        "{details:?}"
    );
}

#[tokio::test]
async fn without_a_policy_keys_cannot_be_made_for_lack_of_roles() {
    let app = spawn_admin_app().await;
    let response = admin_send(
        &app,
        reqwest::Method::POST,
        "/admin/keys",
        Some(json_value!({"name": "k", "role": "analyst"})),
    )
    .await;
    let problem = json(response, 409).await;
    assert!(problem.to_string().contains("ACCESS_POLICY"));
    let instance = json(app.admin_get("/admin/instance").await, 200).await;
    assert_eq!(instance["roles"], json_value!([]));
}

#[tokio::test]
async fn the_audit_log_filters_by_utc_day_and_credential_and_pages() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    run(&app.db.pool, "INSERT INTO audit_log (at, credential, role, action, endpoint, outcome)
         SELECT timestamptz '2026-03-01 23:59:59.5+00' + i * interval '0.25 second',
                CASE WHEN i % 2 = 0 THEN 'key:a' ELSE 'key:b' END, 'analyst', 'export', '/prospects.csv', 'completed'
         FROM generate_series(0, 7) AS i").await;
    let day = json(app.admin_get("/admin/audit?day=2026-03-01").await, 200).await;
    assert_eq!(
        day.as_array().unwrap().len(),
        2,
        "the two rows before midnight UTC"
    );
    let next = json(
        app.admin_get("/admin/audit?day=2026-03-02&credential=key:b")
            .await,
        200,
    )
    .await;
    let next = next.as_array().unwrap();
    assert_eq!(next.len(), 3);
    assert!(next.iter().all(|e| e["credential"] == "key:b"));
    let first = json(
        app.admin_get("/admin/audit?day=2026-03-02&limit=2").await,
        200,
    )
    .await;
    let last_id = first[1]["id"].as_i64().unwrap();
    let rest = json(
        app.admin_get(&format!(
            "/admin/audit?day=2026-03-02&limit=10&before={last_id}"
        ))
        .await,
        200,
    )
    .await;
    assert_eq!(
        first.as_array().unwrap().len() + rest.as_array().unwrap().len(),
        6
    );
    assert_rejects(
        &app,
        "/admin/audit",
        &[
            ("day=2026-13-01", "day"),
            ("day=yesterday", "day"),
            ("before=-1", "before"),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_instance_says_who_asks_the_roles_the_cache_and_where_reads_go() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    app.get_as(&As::role("frontend"), "/prospects?limit=1")
        .await;
    app.get_as(&As::role("frontend"), "/prospects?limit=1")
        .await;
    let instance = json(app.admin_get("/admin/instance").await, 200).await;
    assert_eq!(instance["role"], "admin");
    assert_eq!(
        instance["roles"],
        json_value!(["admin", "analyst", "frontend", "ops", "partner_de"])
    );
    let cache = &instance["response_cache"];
    assert_eq!(cache["enabled"], true);
    assert!(cache["hits"].as_u64().unwrap() >= 1, "{cache}");
    assert!(cache["hit_ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(instance["reads"]["serving"], "primary");
    assert!(instance["reads"]["replica"].is_null());
    let as_ops = app.get_as(&As::role("ops"), "/admin/instance").await;
    assert_eq!(json(as_ops, 200).await["role"], "ops");
    assert_eq!(
        app.get_as(&As::role("frontend"), "/admin/instance")
            .await
            .status(),
        403
    );
}
