//! What a read takes from its request: the read source chosen for it, who is asking and the raw
//! parts (`Read`), and a list request of a read model, parsed once at the edge: its filters, its
//! order and its page, held to what the caller's role may see (`access::Restriction`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};

use std::sync::Arc;

use super::super::error::{ApiError, InvalidParam};
use super::super::fields::Fields;
use super::super::own_writes::OwnWrites;
use super::super::page::{DEFAULT_LIMIT, PAGE_PARAMS, PageParams};
use super::super::params::{QueryParams, parse_sort};
use super::super::state::AppState;
use crate::access::restriction::Refusal;
use crate::access::{Caller, Restriction};
use crate::reads::ReadSource;
use crate::views::ReadModel;
use crate::views::filters::{FilterSet, Restricted};
use crate::views::order::{Sort, SortKey};

/// Every read handler's request: the state, the server it reads from (chosen once, so that its
/// freshness and its data come from the same one), its URI and query, its headers.
pub struct Read {
    pub state: AppState,
    pub db: ReadSource,
    /// Who is asking (set by `auth::authenticate`).
    pub caller: Caller,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// Asked to see the writes committed before it arrived (`Prefer: min-freshness=now`): it then
    /// reads from the primary.
    pub own_writes: Option<OwnWrites>,
}

impl Read {
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// What the caller may do with `M`: 403 when its row scope cannot be applied to `M` at all.
    pub fn restriction<M: ReadModel>(&self) -> Result<Arc<Restriction>, ApiError> {
        let restriction = self.caller.restriction::<M>();
        match &restriction.unscopable {
            Some(column) => Err(ApiError::RoleRefused(format!(
                "Your role ({}) reads only rows of some {column}, which {} cannot be narrowed to.",
                restriction.role,
                M::API.path
            ))),
            None => Ok(restriction),
        }
    }

    /// The key of a response's ETag and cached copy: the request's own, and what the caller's role
    /// may see, so that no response crosses between roles that see different data.
    pub fn response_key(&self, request: &str) -> String {
        format!("{request}|access={}", self.caller.role.fingerprint)
    }
}

/// 403 naming every parameter in `refusals`, when there is one.
pub fn refuse(refusals: Vec<Refusal>) -> Result<(), ApiError> {
    if refusals.is_empty() {
        return Ok(());
    }
    Err(ApiError::Forbidden(
        refusals
            .into_iter()
            .map(|refusal| InvalidParam::new(refusal.name, refusal.reason))
            .collect(),
    ))
}

/// The filters of `M` given in `params` that the role may not use.
pub fn refused_filters<M: ReadModel>(
    params: &QueryParams,
    restriction: &Restriction,
) -> Vec<Refusal> {
    M::Filters::SPECS
        .iter()
        .filter(|spec| params.contains(spec.name))
        .filter_map(|spec| restriction.refuses_filter(spec.name))
        .collect()
}

/// `fields` as the role may have them: refused when naming a hidden field; without a selection,
/// every field it may see.
pub fn visible_fields(
    fields: Fields,
    restriction: &Restriction,
    refusals: &mut Vec<Refusal>,
) -> Fields {
    if let Some(asked) = fields.selected() {
        refusals.extend(restriction.refuses_fields(asked));
        return fields;
    }
    match &restriction.visible_fields {
        Some(visible) => Fields::only(visible.clone()),
        None => fields,
    }
}

impl FromRequestParts<AppState> for Read {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "a read route without the authentication layer"
            ))
        })?;
        let primary = state.reads.primary();
        let own_writes = OwnWrites::asked(&parts.headers, &primary.pool).await?;
        let db = match own_writes {
            Some(_) => primary.clone(),
            None => ReadSource::from_request_parts(parts, state).await?,
        };
        Ok(Read {
            db,
            own_writes,
            caller,
            state: state.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

pub struct ListRequest<M: ReadModel> {
    /// The filters asked for, with the role's row scope ANDed in.
    pub filters: M::Filters,
    /// The role's row scope and the filters asked for have no row in common: the answer is empty
    /// without a query (a query with the filters asked for would widen the scope).
    pub matches_nothing: bool,
    pub sort: Sort<M::Sort>,
    pub page: PageParams,
}

/// The filter a list's path supplies (`company_id` of a company's prospects), which the query may
/// not give, and its value.
pub type InPath<'a> = Option<(&'a str, String)>;

impl<M: ReadModel> ListRequest<M> {
    /// Parses `raw` as `restriction` allows: a parameter naming what the role may not see is a 403.
    pub fn parse(
        raw: Option<&str>,
        in_path: InPath<'_>,
        restriction: &Restriction,
    ) -> Result<Self, ApiError> {
        let skip: Vec<&str> = in_path.iter().map(|(name, _)| *name).collect();
        let mut params = QueryParams::parse(raw)?;
        let mut refusals = refused_filters::<M>(&params, restriction);
        let mut filters = M::Filters::read(&mut params, &skip);
        let sort = if M::Sort::CHOSEN_BY_CLIENT {
            parse_sort(&mut params)
        } else {
            M::Sort::DEFAULT
        };
        // The default order too: its cursors carry the values it sorts by.
        refusals.extend(restriction.refuses_sort(sort));
        let default_limit = restriction.default_limit(DEFAULT_LIMIT);
        let mut page = PageParams::parse::<M::Row>(&mut params, default_limit);
        if page.limit_given {
            refusals.extend(restriction.refuses_limit(page.limit));
        }
        page.fields = visible_fields(std::mem::take(&mut page.fields), restriction, &mut refusals);
        refuse(refusals)?;
        params.finish(&param_names::<M>(&skip))?;
        if let Some((name, value)) = in_path {
            let narrowed = filters.restrict(name, &[value]);
            debug_assert_eq!(
                narrowed,
                Restricted::Narrowed,
                "{name} is a filter of {}",
                M::VIEW
            );
        }
        let (filters, matches_nothing) = match restriction.apply(&filters) {
            Some(scoped) => (scoped, false),
            None => (filters, true),
        };
        Ok(ListRequest {
            filters,
            matches_nothing,
            sort,
            page,
        })
    }

    /// The endpoint, order and filters: what a cursor is valid for, and the start of the key of
    /// the response's ETag and cached copy.
    pub fn scope(&self, endpoint: &str) -> String {
        let filters = serde_json::to_string(&self.filters).expect("filters serialize");
        let nothing = if self.matches_nothing { "|nothing" } else { "" };
        format!("{endpoint}|{}|{filters}{nothing}", self.sort.name())
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
