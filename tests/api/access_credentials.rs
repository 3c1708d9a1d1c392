//! Who may call the API, over real HTTP: JWTs (HS256 and a JWKS served by a local HTTP server, with
//! a key rotation), API keys made by the CLI (and revoked), the admin token, the 401/403/429
//! refusals, and the refusal to serve an open API on a public address.

use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::access_support::{
    As, JWT_SECRET, JwksServer, POLICY, claims, fixture, jwks, jwt, rs256, spawn_guarded, unix_now,
    with_anonymous,
};
use crate::helpers::{ADMIN_TOKEN, TestDb, eventually, header, json, serve_config, succeeded};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn without_a_credential_and_without_an_anonymous_role_reads_are_a_401_that_says_how() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    for path in [
        "/prospects",
        "/companies/c_0",
        "/search?q=ada",
        "/prospects/facets",
    ] {
        let response = app.get_as(&As::Nobody, path).await;
        assert_eq!(
            header(&response, "www-authenticate"),
            "Bearer realm=\"prospect-api\""
        );
        let problem = json(response, 401).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("X-API-Key"),
            "{problem}"
        );
    }
    // What stays public: health, metrics, the documents.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
        assert_eq!(app.get_as(&As::Nobody, path).await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn an_anonymous_role_serves_requests_without_credentials_with_its_own_restrictions() {
    let app = spawn_guarded(&with_anonymous(POLICY), |_| {}).await;
    let page = json(app.get_as(&As::Nobody, "/prospects?limit=20").await, 200).await;
    let row = &page["data"][0];
    assert!(
        row.get("email").is_none() && row.get("prospect_phone").is_none(),
        "{row}"
    );
    assert!(row.get("first_name").is_some());
    let over = app.get_as(&As::Nobody, "/prospects?limit=21").await;
    assert_eq!(crate::access_support::refused_params(over).await, ["limit"]);
}

#[tokio::test]
async fn valid_jwts_are_accepted_and_every_kind_of_bad_one_is_a_401_naming_why() {
    let app = spawn_guarded(POLICY, |config| {
        config.access.jwt_audience = Some("prospect-api".into());
        config.access.jwt_issuer = Some("https://id.example".into());
    })
    .await;
    let good = json!({"sub": "ada", "role": "frontend", "exp": unix_now() + 600,
                      "aud": "prospect-api", "iss": "https://id.example"});
    assert_eq!(
        app.get_as(&As::Bearer(jwt(&good)), "/prospects")
            .await
            .status(),
        200
    );
    // A second use is answered from the verified-token cache, and still right.
    assert_eq!(
        app.get_as(&As::Bearer(jwt(&good)), "/prospects")
            .await
            .status(),
        200
    );

    let with = |change: serde_json::Value| {
        let mut claims = good.clone();
        for (key, value) in change.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(key);
            } else {
                claims[key] = value.clone();
            }
        }
        jwt(&claims)
    };
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good.to_string().as_bytes())
    );
    let public_key = std::fs::read(fixture("a.pub.pem")).unwrap();
    let hs256_with_rsa_public_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(&public_key),
    )
    .unwrap();
    let other_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"another-secret-0123456789abcdef-0123456789"),
    )
    .unwrap();
    let rs256_token = rs256("a", &good);
    let cases = [
        ("alg none", unsigned, "header"),
        (
            "HS256 signed with the RSA public key",
            hs256_with_rsa_public_key,
            "signature",
        ),
        ("another secret", other_secret, "signature"),
        ("RS256 where the key is HS256", rs256_token, "alg"),
        ("expired", with(json!({"exp": unix_now() - 120})), "expired"),
        (
            "expired within the leeway",
            with(json!({"exp": unix_now() - 10})),
            "ACCEPTED",
        ),
        (
            "not yet valid",
            with(json!({"nbf": unix_now() + 300})),
            "nbf",
        ),
        ("no exp", with(json!({"exp": null})), "exp"),
        (
            "a string exp",
            with(json!({"exp": (unix_now() + 600).to_string()})),
            "exp",
        ),
        (
            "wrong audience",
            with(json!({"aud": "someone-else"})),
            "aud",
        ),
        ("no audience", with(json!({"aud": null})), "aud"),
        (
            "wrong issuer",
            with(json!({"iss": "https://evil.example"})),
            "iss",
        ),
        ("garbage", "eyJhbGciOi.not-a-token.x".to_owned(), "header"),
    ];
    for (case, token, named) in cases {
        let response = app.get_as(&As::Bearer(token), "/prospects").await;
        if named == "ACCEPTED" {
            assert_eq!(response.status(), 200, "{case}");
            continue;
        }
        assert_eq!(
            header(&response, "www-authenticate"),
            "Bearer realm=\"prospect-api\", error=\"invalid_token\"",
            "{case}"
        );
        let problem = json(response, 401).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(named), "{case}: {detail}");
    }
}

#[tokio::test]
async fn a_role_the_policy_does_not_declare_or_no_role_at_all_is_a_403() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let undeclared = json(app.get_as(&As::role("intern"), "/prospects").await, 403).await;
    assert!(undeclared["detail"].as_str().unwrap().contains("intern"));
    let mut no_role = claims("x");
    no_role.as_object_mut().unwrap().remove("role");
    let problem = json(
        app.get_as(&As::Bearer(jwt(&no_role)), "/prospects").await,
        403,
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("'role'"));
    // `open` is the role of a server without a policy, never one a token can claim.
    json(app.get_as(&As::role("open"), "/prospects").await, 403).await;
}

#[tokio::test]
async fn the_role_may_come_from_a_namespaced_claim() {
    let app = spawn_guarded(POLICY, |config| {
        config.access.jwt_role_claim = "/https:~1~1example.com~1claims/role".into();
    })
    .await;
    let claims = json!({"sub": "ada", "exp": unix_now() + 600,
                        "https://example.com/claims": {"role": "analyst"}});
    let page = json(
        app.get_as(&As::Bearer(jwt(&claims)), "/prospects").await,
        200,
    )
    .await;
    assert!(page["data"][0].get("email").is_none(), "read as analyst");
    // The top-level `role` is not the claim any more.
    json(app.get_as(&As::role("analyst"), "/prospects").await, 403).await;
}

#[tokio::test]
async fn jwks_keys_rotate_an_unknown_kid_refetches_at_most_every_ten_seconds() {
    let jwks_server = JwksServer::start(jwks(&["a"])).await;
    let started = Instant::now();
    let app = spawn_guarded(POLICY, |config| {
        config.access.jwt_secret = None;
        config.access.jwt_jwks = Some(jwks_server.url.clone());
    })
    .await;
    assert_eq!(jwks_server.fetched(), 1, "fetched once at startup");
    let as_key = |name: &str| As::Bearer(rs256(name, &claims("frontend")));
    assert_eq!(app.get_as(&as_key("a"), "/prospects").await.status(), 200);
    // An HS256 token cannot pass for one of the JWKS's RS256 keys.
    assert_eq!(
        app.get_as(&As::role("frontend"), "/prospects")
            .await
            .status(),
        401
    );

    // The provider starts publishing key b beside a.
    jwks_server.publish(jwks(&["a", "b"]));
    if started.elapsed() < Duration::from_secs(9) {
        // Within ten seconds of the last fetch, an unknown kid does not fetch again, however many.
        for i in 0..20 {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(format!("made-up-{i}"));
            let made_up = jsonwebtoken::encode(
                &header,
                &claims("frontend"),
                &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
            )
            .unwrap();
            assert_eq!(
                app.get_as(&As::Bearer(made_up), "/prospects")
                    .await
                    .status(),
                401
            );
        }
        assert_eq!(jwks_server.fetched(), 1, "no fetch per unknown kid");
    }
    eventually(15, "key b accepted after a refetch", || async {
        app.get_as(&as_key("b"), "/prospects").await.status() == 200
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "not before ten seconds"
    );
    assert_eq!(
        app.get_as(&as_key("a"), "/prospects").await.status(),
        200,
        "a still valid"
    );
    assert!(
        jwks_server.fetched() <= 3,
        "{} fetches",
        jwks_server.fetched()
    );
}

#[tokio::test]
async fn a_jwks_file_is_read_at_startup_and_a_missing_one_stops_it() {
    let db = TestDb::new().await;
    let mut config = serve_config(&db);
    config.access.access_policy = Some(crate::access_support::policy_file(POLICY));
    config.access.jwt_jwks = Some("/nonexistent/jwks.json".into());
    let error = refusal(&config).await;
    assert!(error.contains("JWT_JWKS"), "{error}");
}

/// Runs the CLI against the app's database.
fn cli(app: &crate::helpers::TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_prospect-api"))
        .args(args)
        .env("DATABASE_URL", app.db.config().database_url.expose())
        .env_remove("ACCESS_POLICY")
        .output()
        .unwrap()
}

#[tokio::test]
async fn api_keys_are_made_listed_and_revoked_by_the_cli_and_revocation_holds_within_a_second() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let created = cli(
        &app,
        &[
            "keys",
            "create",
            "--role",
            "analyst",
            "--name",
            "dashboard",
            "--expires",
            "90d",
        ],
    );
    succeeded(&created);
    let stdout = String::from_utf8(created.stdout).unwrap();
    let key = stdout.lines().last().unwrap().to_owned();
    assert!(key.starts_with("pak_") && key.len() == 47, "{stdout}");

    for who in [As::ApiKey(key.clone()), As::Bearer(key.clone())] {
        let page = app.get_json_as(&who, "/prospects", 200).await;
        assert!(page["data"][0].get("email").is_none(), "read as analyst");
    }
    let listed = cli(&app, &["keys", "list"]);
    succeeded(&listed);
    let listing = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listing.contains("dashboard") && listing.contains("analyst"),
        "{listing}"
    );
    assert!(
        !listing.contains(&key[4..]),
        "the key itself is never listed"
    );
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE name = 'dashboard'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_ne!(stored, key.as_bytes(), "only a hash is stored");
    eventually(5, "last_used_at recorded", || async {
        crate::helpers::scalar::<bool>(
            &app.db.pool,
            "SELECT last_used_at IS NOT NULL FROM api_keys WHERE name = 'dashboard'",
        )
        .await
    })
    .await;

    let duplicate = cli(
        &app,
        &["keys", "create", "--role", "analyst", "--name", "dashboard"],
    );
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already a key named"));

    succeeded(&cli(&app, &["keys", "revoke", "dashboard"]));
    let revoked_at = Instant::now();
    eventually(3, "the revoked key refused", || async {
        app.get_as(&As::ApiKey(key.clone()), "/prospects")
            .await
            .status()
            == 401
    })
    .await;
    assert!(
        revoked_at.elapsed() < Duration::from_millis(1500),
        "{:?}",
        revoked_at.elapsed()
    );
    assert!(
        !cli(&app, &["keys", "revoke", "dashboard"]).status.success(),
        "already revoked"
    );
}

#[tokio::test]
async fn a_revocation_reaches_every_instance_within_a_second() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let mut config = serve_config(&app.db);
    config.access.access_policy = Some(crate::access_support::policy_file(POLICY));
    let other = crate::helpers::spawn_instance(config).await;
    let key = create_key(&app.db.pool, "second-instance", "frontend", None).await;
    let at = |address: &str| {
        let (client, key, address) = (app.client.clone(), key.clone(), address.to_owned());
        async move {
            client
                .get(format!("{address}/prospects"))
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(at(&app.address).await, 200);
    assert_eq!(at(&other.address).await, 200);
    prospect_api::access::keys::revoke(&app.db.pool, "second-instance")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(at(&app.address).await, 401);
    assert_eq!(at(&other.address).await, 401);
}

/// A key made as the CLI makes it, valid for `valid_for` (None: until revoked).
async fn create_key(
    pool: &sqlx::PgPool,
    name: &str,
    role: &str,
    valid_for: Option<Duration>,
) -> String {
    prospect_api::access::keys::create(pool, name, role, valid_for)
        .await
        .unwrap()
        .key
}

#[tokio::test]
async fn an_expired_key_a_made_up_key_and_a_key_of_an_undeclared_role_are_refused() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let expired = create_key(
        &app.db.pool,
        "short",
        "frontend",
        Some(Duration::from_millis(1)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    json(app.get_as(&As::ApiKey(expired), "/prospects").await, 401).await;
    let made_up = format!("pak_{}", "A".repeat(43));
    json(app.get_as(&As::ApiKey(made_up), "/prospects").await, 401).await;
    let undeclared = create_key(&app.db.pool, "intern", "intern", None).await;
    json(app.get_as(&As::ApiKey(undeclared), "/prospects").await, 403).await;
    let both = app
        .get_as_with(
            &As::ApiKey("pak_x".into()),
            "/prospects",
            &[("authorization", "Bearer x")],
        )
        .await;
    json(both, 401).await;
}

#[tokio::test]
async fn wrong_keys_from_one_address_lock_it_out_but_jwts_never_do() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    let key = create_key(&app.db.pool, "real", "frontend", None).await;
    for i in 0..prospect_api::http::lockout::MAX_WRONG_SECRETS {
        let guess = As::ApiKey(format!("pak_guess{i}"));
        app.get_json_as(&guess, "/prospects", 401).await;
    }
    let locked = app.get_as(&As::ApiKey(key), "/prospects").await;
    assert!(header(&locked, "retry-after").parse::<u64>().unwrap() >= 1);
    json(locked, 429).await;
    // A JWT is no guess: it still works from the locked-out address.
    assert_eq!(
        app.get_as(&As::role("frontend"), "/prospects")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn each_credential_is_held_to_its_roles_requests_per_second() {
    let policy = format!("{POLICY}\n[roles.metered]\nrequests_per_second = 2\nburst = 3\n");
    let app = spawn_guarded(&policy, |_| {}).await;
    let one = As::Bearer(jwt(
        &json!({"sub": "one", "role": "metered", "exp": unix_now() + 600}),
    ));
    let two = As::Bearer(jwt(
        &json!({"sub": "two", "role": "metered", "exp": unix_now() + 600}),
    ));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.get_as(&one, "/prospects").await.status().as_u16());
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "the burst");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    let limited = app.get_as(&one, "/prospects").await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "retry-after"), "1");
    let problem = json(limited, 429).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("2 requests a second")
    );
    assert_eq!(
        app.get_as(&two, "/prospects").await.status(),
        200,
        "another credential"
    );
    assert_eq!(
        app.get_as(&As::role("frontend"), "/prospects")
            .await
            .status(),
        200,
        "another role"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        app.get_as(&one, "/prospects").await.status(),
        200,
        "the rate refills"
    );
}

#[tokio::test]
async fn the_admin_plane_is_a_role_and_admin_token_still_opens_it() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    assert_eq!(
        app.get_as(&As::role("ops"), "/admin/views").await.status(),
        200
    );
    assert_eq!(
        app.get_as(&As::Bearer(ADMIN_TOKEN.into()), "/admin/views")
            .await
            .status(),
        200
    );
    let refused = json(app.get_as(&As::role("analyst"), "/admin/views").await, 403).await;
    assert!(refused["detail"].as_str().unwrap().contains("analyst"));
    json(app.get_as(&As::Nobody, "/admin/views").await, 401).await;
    // The admin token reads everything.
    let page = json(
        app.get_as(&As::Bearer(ADMIN_TOKEN.into()), "/prospects")
            .await,
        200,
    )
    .await;
    assert!(page["data"][0].get("email").is_some());
}

/// Why the server does not start with `config`.
async fn refusal(config: &prospect_api::config::ServeConfig) -> String {
    match prospect_api::startup::Application::build(config).await {
        Ok(_) => panic!("the server started"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn without_a_policy_serve_refuses_a_public_address_and_jwt_settings() {
    let db = TestDb::new().await;
    let mut config = serve_config(&db);
    config.bind_addr = "0.0.0.0:0".parse().unwrap();
    let error = refusal(&config).await;
    assert!(
        error.contains("0.0.0.0") && error.contains("ACCESS_POLICY"),
        "{error}"
    );

    let mut config = serve_config(&db);
    config.access.jwt_secret = Some(JWT_SECRET.parse().unwrap());
    let error = refusal(&config).await;
    assert!(error.contains("without ACCESS_POLICY"), "{error}");

    let mut config = serve_config(&db);
    config.bind_addr = "0.0.0.0:0".parse().unwrap();
    config.access.access_policy = Some(crate::access_support::policy_file(POLICY));
    assert!(
        prospect_api::startup::Application::build(&config)
            .await
            .is_ok(),
        "with a policy"
    );
}

#[tokio::test]
async fn a_policy_with_a_typo_stops_the_server_naming_it() {
    let db = TestDb::new().await;
    let mut config = serve_config(&db);
    config.access.access_policy = Some(crate::access_support::policy_file(
        "[roles.analyst]\nhide = [\"emial\"]\n",
    ));
    let error = refusal(&config).await;
    assert!(
        error.contains("emial") && error.contains("ACCESS_POLICY"),
        "{error}"
    );
}

#[tokio::test]
async fn refusals_and_requests_per_role_are_counted_in_metrics() {
    let app = spawn_guarded(POLICY, |_| {}).await;
    app.get_as(&As::role("analyst"), "/prospects").await;
    app.get_as(&As::Nobody, "/prospects").await;
    let text = crate::access_support::metrics(&app).await;
    assert!(
        text.contains("role_requests_total{role=\"analyst\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("auth_refusals_total{reason=\"unauthenticated\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("auth_refusals_total{reason=\"rate_limited\"} 0"),
        "{text}"
    );
}
