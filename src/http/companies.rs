//! `GET /companies` and `GET /companies/{company_id}`: companies with prospect counts, from
//! `company_summary_view`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use futures_util::stream::BoxStream;
use sqlx::PgPool;
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, Problem};
use super::facets::{self, FacetsBody};
use super::fields::{Fields, FieldsQuery};
use super::list::{Listing, Page, list, one};
use super::params::{
    PageParams, QueryParams, facet_parameters, list_param_names, list_parameters, parse_sort,
    path_id,
};
use crate::reads::ReadSource;
use crate::views::ViewName;
use crate::views::company_summaries::{
    self, CompanyFacet, CompanyFilters, CompanyRow, CompanySort, CompanySortKey,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_companies))
        .routes(routes!(get_company))
        .routes(routes!(company_facets))
}

/// The query parameters of `GET /companies`, generated from the declarations in
/// `views::company_summaries`, as the parser reads them.
pub struct CompanyQuery;

const SORT_DOC: &str = "`name`, `revenue` (unknown revenue lowest), `prospect_count` or \
                        `last_prospect_update` (companies without prospects oldest).";

impl IntoParams for CompanyQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        list_parameters::<CompanySortKey, CompanyRow>(CompanyFilters::SPECS, &[], SORT_DOC)
    }
}

/// The query parameters of `GET /companies/facets`: the list's filters and `facet`.
pub struct CompanyFacetQuery;

impl IntoParams for CompanyFacetQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        facet_parameters::<CompanyFacet>(CompanyFilters::SPECS)
    }
}

struct CompanyListing {
    filters: CompanyFilters,
    sort: CompanySort,
}

impl Listing for CompanyListing {
    type Row = CompanyRow;
    type Key = serde_json::Value;
    const ROW_BYTES: usize = 450;
    const CSV_FILE: &'static str = "companies";

    fn stream<'a>(
        &'a self,
        pool: &'a PgPool,
        limit: i64,
    ) -> BoxStream<'a, Result<CompanyRow, sqlx::Error>> {
        company_summaries::rows(pool, &self.filters, self.sort, None, limit)
    }

    fn view(&self) -> ViewName {
        ViewName::CompanySummaryView
    }

    fn scope(&self) -> String {
        let filters = serde_json::to_string(&self.filters).expect("filters serialize");
        format!("/companies|{}|{filters}", self.sort.name())
    }

    fn key_of(&self, row: &CompanyRow) -> serde_json::Value {
        company_summaries::cursor_key(self.sort.key, row)
    }

    async fn fetch(
        &self,
        pool: &PgPool,
        after: Option<&serde_json::Value>,
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
        (status = 200, description = "One page of companies (freshness headers as on /prospects), or with `format=csv` every matching company as CSV", content(
            (Page<CompanyRow> = "application/json"), (String = "text/csv")
        )),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid parameters, each named", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, or the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_companies(
    State(state): State<AppState>,
    db: ReadSource,
    RawQuery(raw): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut params = QueryParams::parse(raw.as_deref())?;
    let filters = CompanyFilters::read(&mut params, &[]);
    let sort = parse_sort(&mut params);
    let page = PageParams::parse::<CompanyRow>(&mut params);
    params.finish(&list_param_names(CompanyFilters::SPECS, &[]))?;
    list(
        &state,
        &db,
        &headers,
        &uri,
        CompanyListing { filters, sort },
        page,
    )
    .await
}

/// How many companies have each industry and country, under the same filters as `/companies`,
/// each counted without its own filter.
#[utoipa::path(
    get, path = "/companies/facets", tag = "companies",
    params(CompanyFacetQuery),
    responses(
        (status = 200, description = "Each facet's values, most frequent first (at most 100)", body = FacetsBody),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid parameters, each named", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, the database is unavailable, or counting took longer than the statement timeout", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn company_facets(
    State(state): State<AppState>,
    db: ReadSource,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (filters, facets, request) =
        facets::parse_request::<CompanyFilters, CompanyFacet>(raw.as_deref(), "/companies/facets")?;
    facets::respond(
        &state,
        &db,
        &headers,
        ViewName::CompanySummaryView,
        &request,
        facets,
        |facet| company_summaries::facet_counts(&db.pool, &filters, facet),
    )
    .await
}

/// One company with its prospect counts.
#[utoipa::path(
    get, path = "/companies/{company_id}", tag = "companies",
    params(("company_id" = String, Path, description = "Company id"), FieldsQuery<CompanyRow>),
    responses(
        (status = 200, description = "The company", body = CompanyRow),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid id or fields, or other query parameters given", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such company", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, or the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_company(
    State(state): State<AppState>,
    db: ReadSource,
    Path(company_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let company_id = path_id("company_id", company_id)?;
    let mut params = QueryParams::parse(raw.as_deref())?;
    let fields = Fields::parse::<CompanyRow>(&mut params);
    params.finish(&["fields"])?;
    one(
        &state,
        &db,
        &headers,
        ViewName::CompanySummaryView,
        &format!("/companies/{company_id}"),
        &fields,
        || async {
            company_summaries::by_id(&db.pool, &company_id)
                .await?
                .ok_or_else(|| {
                    ApiError::NotFound(format!("There is no company with id '{company_id}'."))
                })
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_parameters_are_exactly_the_accepted_ones() {
        let documented: Vec<String> = CompanyQuery::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(documented, list_param_names(CompanyFilters::SPECS, &[]));
    }
}
