//! The middleware around every route, outermost first: a request id, a span and a log line per
//! request, request metrics, problem bodies for every error (even axum's own), the log of errors, the
//! database circuit, the request timeout, the replica retry, compression, `nosniff`, CORS and the
//! body limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use super::error::{PROBLEM_JSON, generic_problem, log_errors, problem_response};
use super::freshness::{X_DATA_AGE, X_DATA_REFRESHED_AT, X_DATA_STALE};
use super::state::AppState;
use super::{HttpSettings, database_circuit, read_source};
use crate::metrics::Metrics;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Browsers may reuse a preflight's answer this long instead of asking before each request with an
/// Authorization or If-None-Match header (Chromium caps it at 2 hours).
const CORS_PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// Request bodies (only `POST /admin/refresh` takes one) are tiny; anything larger is a 413.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn around(
    router: Router<AppState>,
    state: &AppState,
    settings: &HttpSettings,
) -> Router<AppState> {
    let stack = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // Our `on_response` logs every status; tower-http's default would add an ERROR
                // line for every 5xx, such as each /readyz poll while views are populated.
                .on_failure(())
                .on_response(
                    |response: &Response, latency: Duration, _: &tracing::Span| {
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
        .layer(from_fn(log_errors))
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
        .option_layer(cors(&settings.cors_origins))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    router.layer(stack)
}

fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    (!origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.to_vec()))
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                super::auth::X_API_KEY,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                super::own_writes::PREFER,
            ])
            .expose_headers([
                X_DATA_AGE,
                X_DATA_REFRESHED_AT,
                X_DATA_STALE,
                header::ETAG,
                header::LINK,
                header::RETRY_AFTER,
                super::own_writes::PREFERENCE_APPLIED,
                X_REQUEST_ID,
            ])
            .max_age(CORS_PREFLIGHT_MAX_AGE)
    })
}

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
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.record_request(&route, &method, response.status(), started.elapsed());
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
