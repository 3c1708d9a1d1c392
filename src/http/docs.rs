//! `/docs`: the API reference, rendered by Swagger UI from `/openapi.json`, with everything served
//! by this binary: the UI's script and styles come with the `swagger-ui-dist` crate (pinned, kept in
//! step with Swagger UI's releases), the page and its start script are ours. Nothing loads from
//! another origin, so the page works offline and under the strict Content-Security-Policy it is
//! sent with (no inline script). `reliability/docs_render.py` checks it in a headless browser.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use swagger_ui_dist::{ApiDefinition, OpenApiSource};

/// Where the UI's own files are served, and which (the crate's own page, with an inline script, is
/// not among them).
const ASSETS: &str = "/docs/ui";
const UI_FILES: [&str; 4] = [
    "swagger-ui-bundle.js",
    "swagger-ui-bundle.js.map",
    "swagger-ui.css",
    "swagger-ui.css.map",
];

/// Scripts and styles from this origin only; Swagger UI sets inline styles and `data:` images.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>prospect-api: API reference</title>
  <link rel="stylesheet" href="/docs/ui/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/ui/swagger-ui-bundle.js"></script>
  <script src="/docs/start.js"></script>
</body>
</html>
"#;

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let ui = swagger_ui_dist::generate_routes(ApiDefinition {
        uri_prefix: ASSETS,
        api_definition: OpenApiSource::Uri("/openapi.json"),
        title: Some("prospect-api"),
    });
    UI_FILES.iter().fold(
        Router::new()
            .route("/docs", get(page))
            .route("/docs/start.js", get(start_script)),
        |router, file| router.route_service(&format!("{ASSETS}/{file}"), ui.clone()),
    )
}

async fn page() -> impl IntoResponse {
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        )],
        Html(PAGE),
    )
}

async fn start_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript")],
        include_str!("../../assets/docs/start.js"),
    )
}
