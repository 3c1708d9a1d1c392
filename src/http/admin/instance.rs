//! `GET /admin/instance`: what this instance knows that the database does not: who is asking, the
//! roles keys may be made for, the response cache's figures and where reads go. (Another instance
//! behind the same load balancer has its own; `/metrics` has every instance's.)

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use crate::access::Caller;
use crate::http::error::ApiError;
use crate::http::params::NoParams;
use crate::http::state::AppState;
use crate::reads::{ReplicaStatus, Server};

#[derive(Debug, Serialize, ToSchema)]
pub struct Instance {
    /// The role of the credential this request presented.
    pub role: String,
    /// The roles API keys can be created for (empty without an access policy).
    pub roles: Vec<String>,
    pub response_cache: CacheSummary,
    pub reads: Reads,
}

/// The response cache of this instance since it started, over all views.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheSummary {
    pub enabled: bool,
    pub hits: u64,
    pub misses: u64,
    pub coalesced: u64,
    /// (hits + coalesced) / all responses; null before the first.
    pub hit_ratio: Option<f64>,
    pub bytes: u64,
    pub entries: u64,
    pub evictions: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Reads {
    /// Where data reads go now; null while they are refused (the replica is unusable and falling
    /// back is off).
    pub serving: Option<Server>,
    /// The replica's last probe; null without `READ_DATABASE_URL`.
    pub replica: Option<ReplicaStatus>,
}

/// This instance: the caller's role, the policy's roles, its response cache and where reads go.
#[utoipa::path(
    get, path = "/admin/instance", tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, body = Instance))
)]
pub async fn instance(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    _: NoParams,
) -> Result<Json<Instance>, ApiError> {
    let policy = &state.auth.policy;
    let mut roles: Vec<String> = if policy.enforced() {
        policy.roles().map(|role| role.name.clone()).collect()
    } else {
        Vec::new()
    };
    roles.sort();
    let figures = state.responses.figures();
    let (hits, misses, coalesced) = figures
        .per_view
        .iter()
        .fold((0, 0, 0), |(h, m, c), (_, counts)| {
            (h + counts.hits, m + counts.misses, c + counts.coalesced)
        });
    let all = crate::metrics::ViewCacheCounts::new(hits, misses, coalesced);
    Ok(Json(Instance {
        role: caller.role.name.clone(),
        roles,
        response_cache: CacheSummary {
            enabled: figures.enabled,
            hits,
            misses,
            coalesced,
            hit_ratio: all.hit_ratio,
            bytes: figures.bytes,
            entries: figures.entries,
            evictions: figures.evictions,
        },
        reads: Reads {
            serving: state.reads.serving(),
            replica: state.reads.replica_status(),
        },
    }))
}
