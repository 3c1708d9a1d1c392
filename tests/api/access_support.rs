//! What the access-control tests share: servers with a policy, credentials of every kind, and a
//! JWKS server.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prospect_api::config::ServeConfig;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, serve_config, spawn_app_with};

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef-0123456789";

/// The policy of most tests: the issue's example roles, and an admin role for JWTs.
pub const POLICY: &str = r#"
[roles.frontend]
max_limit = 5

[roles.analyst]
hide = ["email", "prospect_phone", "prospect_mobile_phone", "company_phone", "company_mobile_phone"]
export_rows_per_day = 1000

[roles.partner_de]
rows = { company_country = "Germany" }

[roles.ops]
admin = true
"#;

/// The policy with an `anonymous` role besides.
pub fn with_anonymous(policy: &str) -> String {
    format!("{policy}\n[roles.anonymous]\nhide = [\"email\", \"prospect_phone\"]\nmax_limit = 20\n")
}

/// Writes `text` to a policy file of its own.
pub fn policy_file(text: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join("prospect-api-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "policy-{}-{}.toml",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// A ready server over the formatting fixture (with one email only a search over emails finds),
/// enforcing `policy`, verifying JWTs signed with `JWT_SECRET`.
pub async fn spawn_guarded(policy: &str, adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    db.execute(
        r#"UPDATE "Prospect" SET "email" = 'zebra.stripes@zero.example', "phone" = '+49 30 1234'
           WHERE "id" = 'p_first'"#,
    )
    .await;
    let mut config = serve_config(&db);
    config.access.access_policy = Some(policy_file(policy));
    config.access.jwt_secret = Some(JWT_SECRET.parse().unwrap());
    config.admin_token = Some(crate::helpers::ADMIN_TOKEN.parse().unwrap());
    adjust(&mut config);
    let app = spawn_app_with(db, config).await;
    app.wait_until_ready().await;
    app
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a token for `role`, valid for ten minutes.
pub fn claims(role: &str) -> Value {
    json!({"sub": format!("user-of-{role}"), "role": role, "exp": unix_now() + 600})
}

/// An HS256 token of `claims`, signed with `JWT_SECRET`.
pub fn jwt(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// A token for `role`.
pub fn token(role: &str) -> String {
    jwt(&claims(role))
}

/// An RS256 token of `claims`, signed with the fixture key `name` (`a` or `b`), with its kid.
pub fn rs256(name: &str, claims: &Value) -> String {
    let pem = std::fs::read(fixture(&format!("{name}.key.pem"))).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(format!("key-{name}"));
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

/// A JWKS of the fixture keys `names`.
pub fn jwks(names: &[&str]) -> String {
    let keys: Vec<Value> = names
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(fixture(&format!("{name}.jwk.json"))).unwrap();
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// A local HTTP server publishing a JWKS that the test can change, counting its fetches.
pub struct JwksServer {
    pub url: String,
    pub document: Arc<Mutex<String>>,
    pub fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(document: String) -> JwksServer {
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (document.clone(), fetches.clone());
        let router = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (served, counted) = (served.clone(), counted.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().clone();
                    ([("content-type", "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        JwksServer {
            url,
            document,
            fetches,
        }
    }

    pub fn publish(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    pub fn fetched(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// How a test request identifies itself.
#[derive(Debug, Clone)]
pub enum As {
    Nobody,
    Bearer(String),
    ApiKey(String),
}

impl As {
    pub fn role(role: &str) -> As {
        As::Bearer(token(role))
    }
}

impl TestApp {
    /// A GET as `who`.
    pub async fn get_as(&self, who: &As, path_and_query: &str) -> reqwest::Response {
        self.get_as_with(who, path_and_query, &[]).await
    }

    /// The JSON body of a GET as `who`, which must answer `status` (see `json`).
    pub async fn get_json_as(
        &self,
        who: &As,
        path_and_query: &str,
        status: u16,
    ) -> serde_json::Value {
        crate::helpers::json(self.get_as(who, path_and_query).await, status).await
    }

    /// A GET as `who` to another instance (`address`) over the same database.
    pub async fn get_as_at(
        &self,
        address: &str,
        who: &As,
        path_and_query: &str,
    ) -> reqwest::Response {
        self.request_as(address, who, path_and_query, &[]).await
    }

    pub async fn get_as_with(
        &self,
        who: &As,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        self.request_as(&self.address, who, path_and_query, headers)
            .await
    }

    async fn request_as(
        &self,
        address: &str,
        who: &As,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.get(format!("{address}{path_and_query}"));
        request = match who {
            As::Nobody => request,
            As::Bearer(token) => request.bearer_auth(token),
            As::ApiKey(key) => request.header("x-api-key", key),
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request failed")
    }
}

/// The names of the parameters a 403 problem body refuses.
pub async fn refused_params(response: reqwest::Response) -> Vec<String> {
    let body = crate::helpers::json(response, 403).await;
    body["invalid_params"]
        .as_array()
        .unwrap_or_else(|| panic!("no invalid_params in {body}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The text of `/metrics`.
pub async fn metrics(app: &TestApp) -> String {
    app.get_as(&As::Nobody, "/metrics")
        .await
        .text()
        .await
        .unwrap()
}
