//! `GET /prospects`, `GET /prospects/{prospect_id}` and `GET /companies/{company_id}/prospects`:
//! prospects with their company, from `company_prospect_view`.

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
use crate::views::company_prospects::{
    self, ProspectFacet, ProspectFilters, ProspectRow, ProspectSort, ProspectSortKey,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_prospects))
        .routes(routes!(get_prospect))
        .routes(routes!(list_company_prospects))
        .routes(routes!(prospect_facets))
}

/// The query parameters of `GET /prospects`, generated from the declarations in
/// `views::company_prospects`, as the parser reads them.
pub struct ProspectQuery;

/// Those of `GET /companies/{id}/prospects`: the same without `company_id`, which is in the path.
pub struct CompanyProspectQuery;

/// The filter a company's own list takes from its path.
const IN_PATH: &[&str] = &["company_id"];

const SORT_DOC: &str = "`company_name` (company name, last name, first name, id), `revenue` \
                        (unknown revenue lowest) or `updated_at`.";

impl IntoParams for ProspectQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        list_parameters::<ProspectSortKey, ProspectRow>(ProspectFilters::SPECS, &[], SORT_DOC)
    }
}

impl IntoParams for CompanyProspectQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        list_parameters::<ProspectSortKey, ProspectRow>(ProspectFilters::SPECS, IN_PATH, SORT_DOC)
    }
}

/// The query parameters of `GET /prospects/facets`: the list's filters and `facet`.
pub struct ProspectFacetQuery;

impl IntoParams for ProspectFacetQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        facet_parameters::<ProspectFacet>(ProspectFilters::SPECS)
    }
}

/// Filters, sort and page of a prospect list; `skip` names the filters the path supplies.
fn parse_listing(
    raw: Option<&str>,
    skip: &[&str],
) -> Result<(ProspectFilters, ProspectSort, PageParams), ApiError> {
    let mut params = QueryParams::parse(raw)?;
    let filters = ProspectFilters::read(&mut params, skip);
    let sort = parse_sort(&mut params);
    let page = PageParams::parse::<ProspectRow>(&mut params);
    params.finish(&list_param_names(ProspectFilters::SPECS, skip))?;
    Ok((filters, sort, page))
}

struct ProspectListing {
    endpoint: String,
    filters: ProspectFilters,
    sort: ProspectSort,
}

impl Listing for ProspectListing {
    type Row = ProspectRow;
    type Key = serde_json::Value;
    const ROW_BYTES: usize = 1200;
    const CSV_FILE: &'static str = "prospects";

    fn stream<'a>(
        &'a self,
        pool: &'a PgPool,
        limit: i64,
    ) -> BoxStream<'a, Result<ProspectRow, sqlx::Error>> {
        company_prospects::rows(pool, &self.filters, self.sort, None, limit)
    }

    fn view(&self) -> ViewName {
        ViewName::CompanyProspectView
    }

    fn scope(&self) -> String {
        let filters = serde_json::to_string(&self.filters).expect("filters serialize");
        format!("{}|{}|{filters}", self.endpoint, self.sort.name())
    }

    fn key_of(&self, row: &ProspectRow) -> serde_json::Value {
        company_prospects::cursor_key(self.sort.key, row)
    }

    async fn fetch(
        &self,
        pool: &PgPool,
        after: Option<&serde_json::Value>,
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
    params(ProspectQuery),
    responses(
        (status = 200, description = "One page of prospects, or with `format=csv` every matching row as CSV", content(
            (Page<ProspectRow> = "application/json"), (String = "text/csv")
        ), headers(
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
    db: ReadSource,
    RawQuery(raw): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (filters, sort, page) = parse_listing(raw.as_deref(), &[])?;
    let listing = ProspectListing {
        endpoint: "/prospects".to_owned(),
        filters,
        sort,
    };
    list(&state, &db, &headers, &uri, listing, page).await
}

/// The prospects of one company (the same filters as `/prospects`, without `company_id`).
#[utoipa::path(
    get, path = "/companies/{company_id}/prospects", tag = "companies",
    params(("company_id" = String, Path, description = "Company id"), CompanyProspectQuery),
    responses(
        (status = 200, description = "One page of the company's prospects, or with `format=csv` all of them as CSV", content(
            (Page<ProspectRow> = "application/json"), (String = "text/csv")
        )),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid parameters, each named", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such company", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, or the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_company_prospects(
    State(state): State<AppState>,
    db: ReadSource,
    Path(company_id): Path<String>,
    RawQuery(raw): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let company_id = path_id("company_id", company_id)?;
    let (mut filters, sort, page) = parse_listing(raw.as_deref(), IN_PATH)?;
    if !company_prospects::company_exists(&db.pool, &company_id).await? {
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
    list(&state, &db, &headers, &uri, listing, page).await
}

/// How many prospects have each value of industry, department, job title level and company
/// country, under the same filters as `/prospects`, each counted without its own filter. A UI can
/// offer exactly these values: filters match exactly and case-sensitively.
#[utoipa::path(
    get, path = "/prospects/facets", tag = "prospects",
    params(ProspectFacetQuery),
    responses(
        (status = 200, description = "Each facet's values, most frequent first (at most 100)", body = FacetsBody),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid parameters, each named", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, the database is unavailable, or counting took longer than the statement timeout", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn prospect_facets(
    State(state): State<AppState>,
    db: ReadSource,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (filters, facets, request) = facets::parse_request::<ProspectFilters, ProspectFacet>(
        raw.as_deref(),
        "/prospects/facets",
    )?;
    facets::respond(
        &state,
        &db,
        &headers,
        ViewName::CompanyProspectView,
        &request,
        facets,
        |facet| company_prospects::facet_counts(&db.pool, &filters, facet),
    )
    .await
}

/// One prospect with its company.
#[utoipa::path(
    get, path = "/prospects/{prospect_id}", tag = "prospects",
    params(("prospect_id" = String, Path, description = "Prospect id"), FieldsQuery<ProspectRow>),
    responses(
        (status = 200, description = "The prospect", body = ProspectRow),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid id or fields, or other query parameters given", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prospect", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, or the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_prospect(
    State(state): State<AppState>,
    db: ReadSource,
    Path(prospect_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let prospect_id = path_id("prospect_id", prospect_id)?;
    let mut params = QueryParams::parse(raw.as_deref())?;
    let fields = Fields::parse::<ProspectRow>(&mut params);
    params.finish(&["fields"])?;
    one(
        &state,
        &db,
        &headers,
        ViewName::CompanyProspectView,
        &format!("/prospects/{prospect_id}"),
        &fields,
        || async {
            company_prospects::by_id(&db.pool, &prospect_id)
                .await?
                .ok_or_else(|| {
                    ApiError::NotFound(format!("There is no prospect with id '{prospect_id}'."))
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
        for (documented, skip) in [
            (ProspectQuery::into_params(|| None), &[][..]),
            (CompanyProspectQuery::into_params(|| None), IN_PATH),
        ] {
            let documented: Vec<String> = documented.into_iter().map(|p| p.name).collect();
            assert_eq!(documented, list_param_names(ProspectFilters::SPECS, skip));
        }
    }
}
