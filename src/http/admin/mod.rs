//! The admin plane: refreshes and the views' state (`refresh`), the refresh and audit logs (`logs`),
//! API keys (`keys`), this instance's cache and read routing (`instance`), and the console page that
//! shows all of them (`console`). Every JSON route here is reachable only through
//! `auth::authenticate` (the router adds it as a layer), which wants an admin role's credential or
//! `ADMIN_TOKEN`; the console's page and scripts are public, as they hold no data.

mod console;
mod instance;
mod keys;
mod logs;
mod refresh;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::AppState;

pub use console::router as console_router;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(refresh::refresh))
        .routes(routes!(refresh::views))
        .routes(routes!(logs::history))
        .routes(routes!(logs::timeline))
        .routes(routes!(logs::audit_log))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::revoke))
        .routes(routes!(instance::instance))
}

/// Query parameters declared as OpenAPI JSON (the admin queries are parsed by hand, as the lists'
/// are, so each invalid parameter is named).
fn parameters(
    declared: impl IntoIterator<Item = serde_json::Value>,
) -> Vec<utoipa::openapi::path::Parameter> {
    declared
        .into_iter()
        .map(|p| serde_json::from_value(p).expect("an OpenAPI parameter"))
        .collect()
}
