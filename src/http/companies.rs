//! `GET /companies` and `GET /companies/{company_id}`: companies with prospect counts, from
//! `company_summary_view`.

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
use crate::views::company_summaries::{self, CompanyFilters, CompanyKey, CompanyRow, CompanySort};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_companies))
        .routes(routes!(get_company))
}

/// The filters of `GET /companies` (documentation; parsing is `parse_filters`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CompanyQuery {
    /// Industry; repeat for any of several.
    industry: Option<Vec<String>>,
    country: Option<String>,
    state: Option<String>,
    city: Option<String>,
    domain: Option<String>,
    /// Minimum revenue (whole currency units).
    revenue_min: Option<i64>,
    revenue_max: Option<i64>,
    /// Companies whose employee range reaches at least this size.
    employees_min: Option<i32>,
    /// Companies whose employee range starts at or below this size.
    employees_max: Option<i32>,
    /// Companies with at least this many prospects.
    min_prospects: Option<i64>,
    /// `name` (default), `-revenue`, `-prospect_count`, `-last_prospect_update`.
    #[param(pattern = "^(name|-revenue|-prospect_count|-last_prospect_update)$")]
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

const FILTERS: [&str; 10] = [
    "industry",
    "country",
    "state",
    "city",
    "domain",
    "revenue_min",
    "revenue_max",
    "employees_min",
    "employees_max",
    "min_prospects",
];

fn known_params() -> Vec<&'static str> {
    FILTERS
        .iter()
        .copied()
        .chain(["sort"])
        .chain(PAGE_PARAMS)
        .collect()
}

fn parse_filters(params: &mut QueryParams) -> CompanyFilters {
    let filters = CompanyFilters {
        industries: params.many("industry"),
        country: params.one("country"),
        state: params.one("state"),
        city: params.one("city"),
        domain: params.one("domain"),
        revenue_min: params.parsed("revenue_min", "a whole number"),
        revenue_max: params.parsed("revenue_max", "a whole number"),
        employees_min: params.parsed("employees_min", "a whole number"),
        employees_max: params.parsed("employees_max", "a whole number"),
        min_prospects: params.parsed("min_prospects", "a whole number"),
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

fn parse_sort(params: &mut QueryParams) -> CompanySort {
    match params.one("sort").as_deref() {
        None | Some("name") => CompanySort::Name,
        Some("-revenue") => CompanySort::RevenueDesc,
        Some("-prospect_count") => CompanySort::ProspectCountDesc,
        Some("-last_prospect_update") => CompanySort::LastProspectUpdateDesc,
        Some(other) => {
            params.reject("sort", format!("'{other}' is not one of: name, -revenue, -prospect_count, -last_prospect_update"));
            CompanySort::Name
        }
    }
}

struct CompanyListing {
    filters: CompanyFilters,
    sort: CompanySort,
}

impl Listing for CompanyListing {
    type Row = CompanyRow;
    type Key = CompanyKey;

    fn view(&self) -> ViewName {
        ViewName::CompanySummaryView
    }

    fn scope(&self) -> String {
        let filters = serde_json::to_string(&self.filters).expect("filters serialize");
        format!("/companies|{:?}|{filters}", self.sort)
    }

    fn key_of(&self, row: &CompanyRow) -> CompanyKey {
        CompanyKey::of(self.sort, row)
    }

    async fn fetch(
        &self,
        pool: &PgPool,
        after: Option<&CompanyKey>,
        limit: i64,
    ) -> Result<Vec<CompanyRow>, sqlx::Error> {
        company_summaries::page(pool, &self.filters, self.sort, after, limit).await
    }

    async fn count_exact(&self, pool: &PgPool) -> Result<i64, sqlx::Error> {
        company_summaries::count_exact(pool, &self.filters).await
    }

    async fn count_estimate(&self, pool: &PgPool) -> Result<i64, sqlx::Error> {
        company_summaries::count_estimate(pool, &self.filters).await
    }
}

/// Companies with their prospect counts, filtered, sorted and paged.
#[utoipa::path(
    get, path = "/companies", tag = "companies",
    params(CompanyQuery),
    responses(
        (status = 200, description = "One page of companies (freshness headers as on /prospects)", body = Page<CompanyRow>),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid parameters, each named", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, or the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_companies(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut params = QueryParams::parse(raw.as_deref())?;
    let filters = parse_filters(&mut params);
    let sort = parse_sort(&mut params);
    let page = PageParams::parse(&mut params);
    params.finish(&known_params())?;
    list(
        &state,
        &headers,
        &uri,
        CompanyListing { filters, sort },
        page,
    )
    .await
}

/// One company with its prospect counts.
#[utoipa::path(
    get, path = "/companies/{company_id}", tag = "companies",
    params(("company_id" = String, Path, description = "Company id")),
    responses(
        (status = 200, description = "The company", body = CompanyRow),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid id, or query parameters given (none are accepted)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such company", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, or the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_company(
    State(state): State<AppState>,
    Path(company_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let company_id = path_id("company_id", company_id)?;
    QueryParams::parse(raw.as_deref())?.finish(&[])?;
    one(
        &state,
        &headers,
        ViewName::CompanySummaryView,
        &format!("/companies/{company_id}"),
        || company_summaries::by_id(&state.read_pool, &company_id),
        || format!("There is no company with id '{company_id}'."),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_parameters_are_exactly_the_accepted_ones() {
        let (documented, accepted) =
            super::super::params::documented_and_accepted::<CompanyQuery>(&known_params());
        assert_eq!(documented, accepted);
    }
}
