//! `/admin/console`: a page for admins, served from this binary with its script and styles (no CDN:
//! it works offline, under a Content-Security-Policy that allows this origin only and no inline
//! script or style). The page holds no data: it asks for the admin credential, keeps it in the tab's
//! `sessionStorage` only (never in a URL, never beyond the tab), and reads everything through the
//! admin plane's JSON routes, which check it on every request. So the page's own routes are public.
//! `reliability/console_check.py` drives it in headless Chromium.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

const PAGE: &str = include_str!("../../../assets/console/index.html");
const SCRIPT: &str = include_str!("../../../assets/console/console.js");
const STYLES: &str = include_str!("../../../assets/console/console.css");

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/admin/console",
            get(|| serve("text/html; charset=utf-8", PAGE)),
        )
        .route(
            "/admin/console/console.js",
            get(|| serve("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/admin/console/console.css",
            get(|| serve("text/css; charset=utf-8", STYLES)),
        )
}

async fn serve(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body)
}
