//! `GET /prospects`, `GET /prospects/{prospect_id}` and `GET /companies/{company_id}/prospects`:
//! prospects with their company, from `company_prospect_view`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use sqlx::PgPool;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, Problem};
use super::list::{Listing, Page, list, one};
use super::params::{PAGE_PARAMS, PageParams, QueryParams, check_range, path_id};
use crate::views::ViewName;
use crate::views::company_prospects::{
    self, ProspectFilters, ProspectKey, ProspectRow, ProspectSort,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_prospects))
        .routes(routes!(get_prospect))
        .routes(routes!(list_company_prospects))
}

/// The filters of `GET /prospects` and `GET /companies/{id}/prospects`, except `company_id`, which
/// only the first takes (documentation; parsing is `parse_filters`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ProspectQuery {
    /// Company industry; repeat for any of several (`industry=A&industry=B`).
    industry: Option<Vec<String>>,
    /// Prospect department; repeatable.
    department: Option<Vec<String>>,
    /// Prospect job title level (e.g. `VP`, `Director`); repeatable.
    job_title_level: Option<Vec<String>>,
    company_country: Option<String>,
    company_state: Option<String>,
    company_city: Option<String>,
    prospect_country: Option<String>,
    /// Company domain.
    domain: Option<String>,
    /// Exact email, case-insensitive.
    email: Option<String>,
    /// Substring of the job title, case-insensitive (`%` and `_` match themselves).
    job_title: Option<String>,
    /// Minimum company revenue (whole currency units).
    revenue_min: Option<i64>,
    revenue_max: Option<i64>,
    /// Companies whose employee range reaches at least this size.
    employees_min: Option<i32>,
    /// Companies whose employee range starts at or below this size.
    employees_max: Option<i32>,
    /// Prospects updated at or after this instant (RFC 3339).
    updated_since: Option<chrono::DateTime<chrono::Utc>>,
    /// `company_name` (default: company name, last name, first name, id), `-revenue`, `-updated_at`.
    #[param(pattern = "^(company_name|-revenue|-updated_at)$")]
    sort: Option<String>,
    /// Rows per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 4000)]
    cursor: Option<String>,
    /// `exact` adds `total`; `estimated` adds `estimated_total`.
    #[param(pattern = "^(exact|estimated)$")]
    count: Option<String>,
}

const FILTERS: [&str; 16] = [
    "industry",
    "department",
    "job_title_level",
    "company_country",
    "company_state",
    "company_city",
    "prospect_country",
    "company_id",
    "domain",
    "email",
    "job_title",
    "revenue_min",
    "revenue_max",
    "employees_min",
    "employees_max",
    "updated_since",
];

fn known_params(include_company_id: bool) -> Vec<&'static str> {
    FILTERS
        .iter()
        .copied()
        .filter(|name| include_company_id || *name != "company_id")
        .chain(["sort"])
        .chain(PAGE_PARAMS)
        .collect()
}

fn parse_filters(params: &mut QueryParams, include_company_id: bool) -> ProspectFilters {
    let filters = ProspectFilters {
        industries: params.many("industry"),
        departments: params.many("department"),
        job_title_levels: params.many("job_title_level"),
        company_country: params.one("company_country"),
        company_state: params.one("company_state"),
        company_city: params.one("company_city"),
        prospect_country: params.one("prospect_country"),
        company_id: if include_company_id {
            params.one("company_id")
        } else {
            None
        },
        domain: params.one("domain"),
        email: params.one("email"),
        job_title: params.one("job_title"),
        revenue_min: params.parsed("revenue_min", "a whole number"),
        revenue_max: params.parsed("revenue_max", "a whole number"),
        employees_min: params.parsed("employees_min", "a whole number"),
        employees_max: params.parsed("employees_max", "a whole number"),
        updated_since: params.timestamp("updated_since"),
    };
    check_range(
        params,
        ("revenue_min", filters.revenue_min),
        "revenue_max",
        filters.revenue_max,
    );
    check_range(
        params,
        ("employees_min", filters.employees_min),
        "employees_max",
        filters.employees_max,
    );
    filters
}

fn parse_sort(params: &mut QueryParams) -> ProspectSort {
    match params.one("sort").as_deref() {
        None | Some("company_name") => ProspectSort::CompanyName,
        Some("-revenue") => ProspectSort::RevenueDesc,
        Some("-updated_at") => ProspectSort::UpdatedAtDesc,
        Some(other) => {
            params.reject(
                "sort",
                format!("'{other}' is not one of: company_name, -revenue, -updated_at"),
            );
            ProspectSort::CompanyName
        }
    }
}

struct ProspectListing {
    endpoint: String,
    filters: ProspectFilters,
    sort: ProspectSort,
}

impl Listing for ProspectListing {
    type Row = ProspectRow;
    type Key = ProspectKey;

    fn view(&self) -> ViewName {
        ViewName::CompanyProspectView
    }

    fn scope(&self) -> String {
        let filters = serde_json::to_string(&self.filters).expect("filters serialize");
        format!("{}|{:?}|{filters}", self.endpoint, self.sort)
    }

    fn key_of(&self, row: &ProspectRow) -> ProspectKey {
        ProspectKey::of(self.sort, row)
    }

    async fn fetch(
        &self,
        pool: &PgPool,
        after: Option<&ProspectKey>,
        limit: i64,
    ) -> Result<Vec<ProspectRow>, sqlx::Error> {
        company_prospects::page(pool, &self.filters, self.sort, after, limit).await
    }

    async fn count_exact(&self, pool: &PgPool) -> Result<i64, sqlx::Error> {
        company_prospects::count_exact(pool, &self.filters).await
    }

    async fn count_estimate(&self, pool: &PgPool) -> Result<i64, sqlx::Error> {
        company_prospects::count_estimate(pool, &self.filters).await
    }
}

/// Prospects with their company, filtered, sorted and paged.
#[utoipa::path(
    get, path = "/prospects", tag = "prospects",
    params(("company_id" = Option<String>, Query, description = "Company id"), ProspectQuery),
    responses(
        (status = 200, description = "One page of prospects", body = Page<ProspectRow>, headers(
            ("X-Data-Age" = u64, description = "Seconds since the snapshot of the data served"),
            ("X-Data-Refreshed-At" = String, description = "Snapshot time of the data served (RFC 3339)"),
            ("X-Data-Stale" = bool, description = "Whether the data is older than the staleness limit"),
            ("ETag" = String, description = "Changes when the data is refreshed; send as If-None-Match"),
            ("Link" = String, description = "`<…>; rel=\"next\"` when another page follows"),
        )),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid parameters, each named", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, or the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_prospects(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut params = QueryParams::parse(raw.as_deref())?;
    let filters = parse_filters(&mut params, true);
    let sort = parse_sort(&mut params);
    let page = PageParams::parse(&mut params);
    params.finish(&known_params(true))?;
    let listing = ProspectListing {
        endpoint: "/prospects".to_owned(),
        filters,
        sort,
    };
    list(&state, &headers, &uri, listing, page).await
}

/// The prospects of one company (the same filters as `/prospects`, without `company_id`).
#[utoipa::path(
    get, path = "/companies/{company_id}/prospects", tag = "companies",
    params(("company_id" = String, Path, description = "Company id"), ProspectQuery),
    responses(
        (status = 200, description = "One page of the company's prospects", body = Page<ProspectRow>),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid parameters, each named", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such company", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, or the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_company_prospects(
    State(state): State<AppState>,
    Path(company_id): Path<String>,
    RawQuery(raw): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let company_id = path_id("company_id", company_id)?;
    let mut params = QueryParams::parse(raw.as_deref())?;
    let mut filters = parse_filters(&mut params, false);
    let sort = parse_sort(&mut params);
    let page = PageParams::parse(&mut params);
    params.finish(&known_params(false))?;
    if !company_prospects::company_exists(&state.read_pool, &company_id).await? {
        return Err(ApiError::NotFound(format!(
            "There is no company with id '{company_id}'."
        )));
    }
    filters.company_id = Some(company_id);
    let listing = ProspectListing {
        endpoint: "/companies/{company_id}/prospects".to_owned(),
        filters,
        sort,
    };
    list(&state, &headers, &uri, listing, page).await
}

/// One prospect with its company.
#[utoipa::path(
    get, path = "/prospects/{prospect_id}", tag = "prospects",
    params(("prospect_id" = String, Path, description = "Prospect id")),
    responses(
        (status = 200, description = "The prospect", body = ProspectRow),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid id, or query parameters given (none are accepted)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prospect", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, or the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_prospect(
    State(state): State<AppState>,
    Path(prospect_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let prospect_id = path_id("prospect_id", prospect_id)?;
    QueryParams::parse(raw.as_deref())?.finish(&[])?;
    one(
        &state,
        &headers,
        ViewName::CompanyProspectView,
        &format!("/prospects/{prospect_id}"),
        || company_prospects::by_id(&state.read_pool, &prospect_id),
        || format!("There is no prospect with id '{prospect_id}'."),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_parameters_are_exactly_the_accepted_ones() {
        let (documented, accepted) =
            super::super::params::documented_and_accepted::<ProspectQuery>(&known_params(false));
        assert_eq!(documented, accepted);
        assert!(known_params(true).contains(&"company_id"));
    }
}
