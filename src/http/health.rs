//! `GET /healthz` (the process answers) and `GET /readyz` (the database answers and every view holds
//! data), for load balancers and orchestrators.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, Problem};
use crate::reads::{ReadSource, ReplicaStatus, Server};
use crate::views::ViewName;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
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
