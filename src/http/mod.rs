//! Everything HTTP: one module per resource (each exposing `router()`), the error type, the strict
//! parameter parsing, the freshness gate, and the middleware stack assembled here.

mod admin;
pub mod admin_guard;
mod companies;
mod csv_export;
pub mod cursor;
pub mod database_circuit;
mod docs;
pub mod error;
mod facets;
mod fields;
mod freshness;
mod health;
mod list;
pub mod params;
mod prospects;
mod read_source;
pub mod response_cache;
mod search;
mod spec;

use std::time::Duration;

use axum::Router;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use freshness::{X_DATA_AGE, X_DATA_REFRESHED_AT, X_DATA_STALE};

use self::admin_guard::WrongTokenLimiter;
use self::cursor::CursorSigner;
use self::database_circuit::DatabaseCircuit;
use self::error::{
    ApiError, InvalidParam, PROBLEM_JSON, Problem, generic_problem, problem_response,
};
use self::response_cache::ResponseCache;
use crate::config::AdminToken;
use crate::metrics::Metrics;
use crate::reads::ReadRoute;
use crate::refresh::Refresher;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub refresher: Refresher,
    pub metrics: Arc<Metrics>,
    /// None: the admin endpoints are disabled.
    pub admin_token: Option<AdminToken>,
    /// Wrong admin tokens per client address, to lock out guessing.
    pub wrong_tokens: Arc<WrongTokenLimiter>,
    /// Where data and freshness reads go: the primary, or a replica watched for lag (read-only
    /// pools, `plan_cache_mode = force_custom_plan`, with a statement timeout). Handlers take the
    /// chosen `ReadSource` as an extractor.
    pub reads: Arc<ReadRoute>,
    /// The primary, for refreshes and the refresh log.
    pub pool: PgPool,
    pub cursors: CursorSigner,
    /// Data older than this is served with `X-Data-Stale: true`.
    pub stale_after_secs: u64,
    /// Whole data responses of the current generations, so that a repeated request runs no query.
    pub responses: Arc<ResponseCache>,
    /// The most rows of one CSV export.
    pub csv_max_rows: i64,
    /// Open while the database is unreachable: requests get a 503 at once.
    pub database: Arc<DatabaseCircuit>,
}

pub struct HttpSettings {
    pub request_timeout: Duration,
    /// Origins allowed by CORS; empty keeps CORS closed.
    pub cors_origins: Vec<HeaderValue>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "prospect-api",
        description = "Company and prospect data served from PostgreSQL materialized views. Every data \
                       response says how fresh it is: X-Data-Age (seconds since the snapshot), \
                       X-Data-Refreshed-At, X-Data-Stale, and an ETag for conditional requests. Errors are \
                       application/problem+json (RFC 9457) naming each invalid parameter."
    ),
    tags(
        (name = "prospects", description = "Prospects with their company"),
        (name = "companies", description = "Companies with prospect counts"),
        (name = "search", description = "Substring search over prospects"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "admin", description = "Refreshing views and watching them (Authorization: Bearer <ADMIN_TOKEN>)"),
    ),
    components(schemas(Problem, InvalidParam)),
    modifiers(&AdminTokenScheme)
)]
struct ApiDoc;

/// Declares the bearer token the admin endpoints require.
struct AdminTokenScheme;

impl utoipa::Modify for AdminTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("ADMIN_TOKEN"))
                    .build(),
            ),
        );
    }
}

/// The documented routes and the OpenAPI document describing exactly them.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, spec) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(prospects::router())
        .merge(companies::router())
        .merge(search::router())
        .merge(health::router())
        .merge(admin::router())
        .split_for_parts();
    (router, spec::complete(params::document_value_rules(spec)))
}

/// The OpenAPI document (what `/openapi.json` serves and `openapi/openapi.json` holds).
pub fn openapi_spec() -> utoipa::openapi::OpenApi {
    api().1
}

pub fn router(state: AppState, settings: &HttpSettings) -> Router {
    let (api, spec) = api();
    let spec_json = spec
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    let cors = (!settings.cors_origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(settings.cors_origins.clone()))
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
            ])
            .expose_headers([
                X_DATA_AGE,
                X_DATA_REFRESHED_AT,
                X_DATA_STALE,
                header::ETAG,
                header::LINK,
                X_REQUEST_ID,
            ])
            // Browsers may reuse a preflight's answer this long instead of asking before each
            // request with an Authorization or If-None-Match header (Chromium caps it at 2 hours).
            .max_age(CORS_PREFLIGHT_MAX_AGE)
    });
    // Outermost first: request id, tracing, problem bodies for every error, then the timeout and
    // the replica's retry.
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // Our `on_response` logs every status; tower-http's default would add an ERROR
                // line for every 5xx, such as each /readyz poll while views are populated.
                .on_failure(())
                .on_response(
                    |response: &Response, latency: Duration, _span: &tracing::Span| {
                        tracing::info!(
                            status = response.status().as_u16(),
                            latency_ms = latency.as_millis() as u64,
                            "response"
                        );
                    },
                ),
        )
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(from_fn_with_state(
            state.metrics.clone(),
            record_request_metrics,
        ))
        .layer(map_response(ensure_problem_body))
        .layer(from_fn_with_state(
            state.database.clone(),
            database_circuit::guard,
        ))
        .layer(from_fn_with_state(
            settings.request_timeout,
            limit_request_time,
        ))
        // Inside the timeout (a retried request has one deadline) and the circuit (which sees only
        // the answer sent).
        .layer(from_fn_with_state(
            state.reads.clone(),
            read_source::retry_on_primary,
        ))
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .option_layer(cors)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    api.route(
        "/openapi.json",
        get(move || async move {
            (
                [(header::CONTENT_TYPE, "application/json")],
                spec_json.clone(),
            )
        }),
    )
    .merge(docs::router())
    .fallback(|| async { ApiError::NoRoute })
    .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
    .layer(middleware)
    .with_state(state)
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const CORS_PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// Request bodies (only `POST /admin/refresh` takes one) are tiny; anything larger is a 413.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Answers 503 when a request takes longer than REQUEST_TIMEOUT, so that nothing hangs. A waiting
/// `POST /admin/refresh` is exempt: on a large database a refresh takes longer than any sensible read
/// timeout, and it is bounded by REFRESH_STATEMENT_TIMEOUT instead.
async fn limit_request_time(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/admin/refresh" {
        return next.run(request).await;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis() as u64, "request timed out");
            let mut response = problem_response(&generic_problem(StatusCode::SERVICE_UNAVAILABLE));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}

/// Counts every response by route template, method and status, with its latency.
async fn record_request_metrics(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", MatchedPath::as_str)
        .to_owned();
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics.record_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// A span per request with low-cardinality fields: the route template, never the raw URI (query
/// strings can hold contact data such as an email filter).
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("request", method = %request.method(), route, request_id)
}

/// Every 4xx and 5xx leaves as problem+json, including those produced outside our handlers (axum's
/// own rejections, timeouts, body limits). Headers such as `Allow` and `Retry-After` are kept.
async fn ensure_problem_body<B>(response: axum::http::Response<B>) -> Response
where
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if !is_error || is_problem {
        return response.map(axum::body::Body::new);
    }
    let mut replacement = problem_response(&generic_problem(status));
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && name != header::CONTENT_ENCODING
        {
            replacement
                .headers_mut()
                .insert(name.clone(), value.clone());
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE
        && !replacement.headers().contains_key(header::RETRY_AFTER)
    {
        replacement
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    replacement.into_response()
}
