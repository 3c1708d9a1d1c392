//! `GET /healthz` (the process answers) and `GET /readyz` (the database answers and every view holds
//! data), for load balancers and orchestrators, and `GET /metrics` for Prometheus.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Problem};
use super::state::AppState;
use crate::metrics::Scrape;
use crate::reads::{ReadSource, ReplicaStatus, Server};
use crate::refresh::status;
use crate::views::ViewName;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is alive (no dependency is checked).
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// What `/readyz` answers when ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    /// Where data reads go now: the replica (READ_DATABASE_URL), or the primary.
    pub reads_from: Server,
    /// The streaming replica's state; null without one (READ_DATABASE_URL unset).
    pub replica: Option<ReplicaStatus>,
}

/// Ready to serve: the database reads go to is reachable and every view is populated there. With a
/// replica, says where reads go and the replica's replay lag; not ready while the replica cannot
/// serve and REPLICA_FALLBACK is off.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, and why", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(
    State(state): State<AppState>,
    db: ReadSource,
) -> Result<Json<Readiness>, ApiError> {
    let unpopulated = sqlx::query_scalar!(
        r#"SELECT name AS "view!" FROM read_models WHERE NOT populated ORDER BY position"#
    )
    .fetch_all(&db.pool)
    .await?;
    if let Some(view) = unpopulated.first().and_then(|v| v.parse::<ViewName>().ok()) {
        return Err(ApiError::NotPopulated(view));
    }
    Ok(Json(Readiness {
        status: "ready",
        reads_from: db.server,
        replica: state.reads.replica_status(),
    }))
}

/// Prometheus metrics: requests, latencies, refreshes, failures, data age per view, notifications.
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let freshness = status::freshness_for_metrics(&state.pool).await?;
    // Applies the cache's pending evictions first, so that the bytes held are exact.
    state.responses.settle().await;
    let replica = state.reads.replica_status();
    let text = state.metrics.render(&Scrape {
        freshness: &freshness,
        cache: &state.responses.figures(),
        serving: state.reads.serving(),
        replica: replica.as_ref(),
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
