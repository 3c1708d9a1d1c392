//! Everything HTTP: every read model served through one generic path (`read_model`), the admin and
//! health endpoints, the OpenAPI document describing exactly the routes, and the middleware stack.
//!
//! A request flows: middleware (`middleware`) -> the read source it reads from (`read_source`) ->
//! parameters parsed once at the edge (`params`, `page`, `fields`) -> the freshness gate
//! (`freshness`) -> the response cache (`response_cache`) -> a read model's statements.

mod admin;
pub mod auth;
pub mod cursor;
pub mod database_circuit;
mod docs;
pub mod error;
mod fields;
mod freshness;
mod health;
pub mod lockout;
mod middleware;
mod openapi;
mod own_writes;
mod page;
pub mod params;
mod read_model;
mod read_source;
pub mod response_cache;
mod state;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

pub use freshness::{X_DATA_AGE, X_DATA_REFRESHED_AT, X_DATA_STALE};
pub use state::AppState;

use self::error::ApiError;
use crate::views::{ReadModel, ReadModelVisitor, visit_read_models};

pub struct HttpSettings {
    pub request_timeout: Duration,
    /// Origins allowed by CORS; empty keeps CORS closed.
    pub cors_origins: Vec<HeaderValue>,
}

/// The read models the API serves: every one of `views::read_models!`, and any added to them (a
/// test adds its own, to prove that a new read model needs nothing here).
pub struct ReadModels {
    router: Router<AppState>,
    operations: openapi::Operations,
    /// Per model: its row's schema and the fields some role of a policy may not see.
    hideable: Vec<openapi::HideableFields>,
}

impl ReadModels {
    pub fn all() -> ReadModels {
        let mut models = ReadModels {
            router: Router::new(),
            operations: openapi::Operations::default(),
            hideable: Vec::new(),
        };
        visit_read_models(&mut models);
        models
    }

    pub fn add<M: ReadModel>(&mut self) {
        let router = std::mem::take(&mut self.router);
        self.router = router.merge(read_model::router::<M>());
        self.operations.add::<M>();
        self.hideable.push(openapi::hideable_fields::<M>);
    }
}

impl ReadModelVisitor for ReadModels {
    fn visit<M: ReadModel>(&mut self) {
        self.add::<M>();
    }
}

/// Every documented route: the read models', the health endpoints, and the admin plane (the read
/// models' and the admin plane's behind `auth::authenticate`).
struct Routes {
    read_models: Router<AppState>,
    public: Router<AppState>,
    admin: Router<AppState>,
    document: utoipa::openapi::OpenApi,
    hideable: Vec<openapi::HideableFields>,
}

fn routes(read_models: ReadModels) -> Routes {
    let (public, public_spec) = OpenApiRouter::with_openapi(openapi::frame())
        .merge(health::router())
        .split_for_parts();
    let (admin, admin_spec) = admin::router().split_for_parts();
    let mut derived = public_spec;
    derived.merge(admin_spec);
    Routes {
        read_models: read_models.router,
        public,
        admin,
        document: openapi::complete(derived, read_models.operations),
        hideable: read_models.hideable,
    }
}

/// The OpenAPI document (what `/openapi.json` serves and `openapi/openapi.json` holds).
pub fn openapi_spec() -> utoipa::openapi::OpenApi {
    routes(ReadModels::all()).document
}

pub fn router(state: AppState, settings: &HttpSettings, read_models: ReadModels) -> Router {
    let routes = routes(read_models);
    // This server's document: the row keys its policy may leave out are not required.
    let document = openapi::under_policy(routes.document, &state.auth.policy, &routes.hideable);
    let spec_json = document
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    let guarded = |routes: Router<AppState>, plane| {
        routes.route_layer(from_fn_with_state(
            (state.auth.clone(), plane),
            auth::authenticate,
        ))
    };
    let admin = guarded(routes.admin, auth::Plane::Admin);
    let router = guarded(routes.read_models, auth::Plane::Read)
        .merge(routes.public)
        .merge(admin)
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    spec_json.clone(),
                )
            }),
        )
        .merge(docs::router())
        .merge(admin::console_router())
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    middleware::around(router, &state, settings).with_state(state)
}
