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

/// Ready to serve: the database is reachable and every view is populated.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready, and why", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let unpopulated = sqlx::query_scalar!(
        r#"SELECT name AS "view!" FROM read_models WHERE NOT populated ORDER BY position"#
    )
    .fetch_all(&state.read_pool)
    .await?;
    if let Some(view) = unpopulated.first().and_then(|v| v.parse::<ViewName>().ok()) {
        return Err(ApiError::NotPopulated(view));
    }
    Ok(Json(Health { status: "ready" }))
}
