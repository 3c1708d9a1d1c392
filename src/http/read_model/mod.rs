//! The one path by which every read model is served: its list (JSON pages or a CSV export), its
//! single rows, its facets and its list within a parent. A rule about reads is written here once
//! and holds for every read model, every format and the cache.

mod export;
mod facets;
mod list;
mod one;
pub(super) mod request;
mod respond;

use axum::Router;
use axum::routing::get;

use super::state::AppState;
use crate::views::ReadModel;
use crate::views::order::Facet;

#[cfg(test)]
pub use facets::param_names as facet_param_names;
pub use list::Page;
#[cfg(test)]
pub use request::param_names as list_param_names;

/// The routes of `M`'s endpoints (their OpenAPI operations: `super::openapi::read_model`).
pub fn router<M: ReadModel>() -> Router<AppState> {
    let api = M::API;
    let mut router = Router::new().route(api.path, get(list::list::<M>));
    if let Some(one) = api.one {
        router = router.route(one.path, get(one::one::<M>));
    }
    if has_facets::<M>() {
        router = router.route(&facets_path::<M>(), get(facets::facets::<M>));
    }
    if let Some(scoped) = api.scoped {
        router = router.route(scoped.path, get(list::scoped::<M>));
    }
    router
}

pub fn has_facets<M: ReadModel>() -> bool {
    M::API.facets.is_some() && !M::Facet::ALL.is_empty()
}

pub fn facets_path<M: ReadModel>() -> String {
    format!("{}/facets", M::API.path)
}
