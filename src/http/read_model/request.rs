//! What a read takes from its request: the read source chosen for it and the raw parts (`Read`), and
//! a list request of a read model, parsed once at the edge: its filters, its order and its page.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};

use super::super::error::ApiError;
use super::super::page::{PAGE_PARAMS, PageParams};
use super::super::params::{QueryParams, parse_sort};
use super::super::state::AppState;
use crate::reads::ReadSource;
use crate::views::ReadModel;
use crate::views::filters::FilterSet;
use crate::views::order::{Sort, SortKey};

/// Every read handler's request: the state, the server it reads from (chosen once, so that its
/// freshness and its data come from the same one), its URI and query, its headers.
pub struct Read {
    pub state: AppState,
    pub db: ReadSource,
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl Read {
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }
}

impl FromRequestParts<AppState> for Read {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Read {
            db: ReadSource::from_request_parts(parts, state).await?,
            state: state.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

pub struct ListRequest<M: ReadModel> {
    pub filters: M::Filters,
    pub sort: Sort<M::Sort>,
    pub page: PageParams,
}

impl<M: ReadModel> ListRequest<M> {
    /// Parses `raw`; `in_path` names the filter the path supplies (`company_id` of a company's
    /// prospects), which the query may not give.
    pub fn parse(raw: Option<&str>, in_path: Option<&str>) -> Result<Self, ApiError> {
        let skip: Vec<&str> = in_path.into_iter().collect();
        let mut params = QueryParams::parse(raw)?;
        let filters = M::Filters::read(&mut params, &skip);
        let sort = if M::Sort::CHOSEN_BY_CLIENT {
            parse_sort(&mut params)
        } else {
            M::Sort::DEFAULT
        };
        let page = PageParams::parse::<M::Row>(&mut params);
        params.finish(&param_names::<M>(&skip))?;
        Ok(ListRequest {
            filters,
            sort,
            page,
        })
    }

    /// The endpoint, order and filters: what a cursor is valid for, and the start of the key of
    /// the response's ETag and cached copy.
    pub fn scope(&self, endpoint: &str) -> String {
        let filters = serde_json::to_string(&self.filters).expect("filters serialize");
        format!("{endpoint}|{}|{filters}", self.sort.name())
    }
}

/// The query parameters a list of `M` accepts: its filters except `skip`, `sort` when clients
/// choose the order, the page's.
pub fn param_names<M: ReadModel>(skip: &[&str]) -> Vec<&'static str> {
    let sort = M::Sort::CHOSEN_BY_CLIENT.then_some("sort");
    M::Filters::SPECS
        .iter()
        .map(|spec| spec.name)
        .filter(|name| !skip.contains(name))
        .chain(sort)
        .chain(PAGE_PARAMS)
        .collect()
}
