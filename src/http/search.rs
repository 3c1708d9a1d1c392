//! `GET /search?q=`: prospects whose name, email, job title, company or industry contain every term.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use futures_util::stream::BoxStream;
use serde_json::json;
use sqlx::PgPool;
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, Problem};
use super::list::{Listing, Page, list};
use super::params::{
    PAGE_PARAMS, PageParams, QueryParams, filter_parameters, page_parameters, query_parameter,
};
use crate::reads::ReadSource;
use crate::views::ViewName;
use crate::views::prospect_search::{
    self, MAX_TERMS, MIN_TERM_CHARS, Search, SearchFilters, SearchKey, SearchRow,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

/// The query parameters of `GET /search`: `q`, the filters declared in `views::prospect_search`
/// and the page's, as the parser reads them.
pub struct SearchQuery;

impl IntoParams for SearchQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let space = r"[ \t\n\f\r]";
        let term = format!(r"[^ \t\n\f\r\x00]{{{MIN_TERM_CHARS},}}");
        let pattern = format!(
            "^{space}*{term}({space}+{term}){{0,{}}}{space}*$",
            MAX_TERMS - 1
        );
        let mut q = query_parameter(
            "q",
            &format!(
                "Whitespace-separated terms (1 to {MAX_TERMS}, each at least {MIN_TERM_CHARS} \
                 characters); every term must occur, case-insensitively, in the prospect's name, \
                 email, job title, company name or industry. `%`, `_` and `\\` are ordinary \
                 characters."
            ),
            json!({"type": "string", "pattern": pattern}),
        );
        q.required = utoipa::openapi::Required::True;
        [q].into_iter()
            .chain(filter_parameters(SearchFilters::SPECS, &[]))
            .chain(page_parameters::<SearchRow>())
            .collect()
    }
}

fn known_params() -> Vec<&'static str> {
    ["q"]
        .into_iter()
        .chain(SearchFilters::SPECS.iter().map(|spec| spec.name))
        .chain(PAGE_PARAMS)
        .collect()
}

fn parse_search(params: &mut QueryParams) -> Search {
    if !params.contains("q") {
        params.reject("q", "is required: the terms to search for");
    }
    let terms = match params.one("q") {
        None => vec![],
        Some(q) => {
            // ASCII whitespace only, as the documented pattern says: one rule for clients and server.
            let terms: Vec<String> = q.split_ascii_whitespace().map(str::to_owned).collect();
            if let Some(reason) = term_problem(&terms) {
                params.reject("q", reason);
            }
            terms
        }
    };
    Search {
        terms,
        filters: SearchFilters::read(params, &[]),
    }
}

/// Why these terms cannot be searched for, if they cannot.
fn term_problem(terms: &[String]) -> Option<String> {
    if terms.is_empty() {
        return Some("contains no terms".to_owned());
    }
    if terms.len() > MAX_TERMS {
        return Some(format!(
            "{} terms given; at most {MAX_TERMS} are accepted",
            terms.len()
        ));
    }
    terms.iter().find(|t| t.chars().count() < MIN_TERM_CHARS).map(|short| {
        format!("the term '{short}' is shorter than {MIN_TERM_CHARS} characters: too short to use the search index")
    })
}

struct SearchListing {
    filters: Search,
}

impl Listing for SearchListing {
    type Row = SearchRow;
    type Key = SearchKey;
    const ROW_BYTES: usize = 600;
    const CSV_FILE: &'static str = "search";

    fn stream<'a>(
        &'a self,
        pool: &'a PgPool,
        limit: i64,
    ) -> BoxStream<'a, Result<SearchRow, sqlx::Error>> {
        prospect_search::matches_after(pool, &self.filters, None, limit)
    }

    fn view(&self) -> ViewName {
        ViewName::ProspectSearchView
    }

    fn scope(&self) -> String {
        format!(
            "/search|{}",
            serde_json::to_string(&self.filters).expect("filters serialize")
        )
    }

    fn key_of(&self, row: &SearchRow) -> SearchKey {
        SearchKey::of(row)
    }

    async fn fetch(
        &self,
        pool: &PgPool,
        after: Option<&SearchKey>,
        limit: i64,
    ) -> Result<Vec<SearchRow>, sqlx::Error> {
        prospect_search::page(pool, &self.filters, after, limit).await
    }

    async fn count_exact(&self, pool: &PgPool) -> Result<i64, sqlx::Error> {
        prospect_search::count_exact(pool, &self.filters).await
    }

    async fn count_estimate(&self, pool: &PgPool) -> Result<i64, sqlx::Error> {
        prospect_search::count_estimate(pool, &self.filters).await
    }
}

/// Substring search over prospects; results in company name, last name, first name order.
#[utoipa::path(
    get, path = "/search", tag = "search",
    params(SearchQuery),
    responses(
        (status = 200, description = "One page of matches (freshness headers as on /prospects), or with `format=csv` every match as CSV", content(
            (Page<SearchRow> = "application/json"), (String = "text/csv")
        )),
        (status = 304, description = "Not modified since the ETag in If-None-Match"),
        (status = 400, description = "Invalid parameters, each named", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The view was never populated, or the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn search(
    State(state): State<AppState>,
    db: ReadSource,
    RawQuery(raw): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut params = QueryParams::parse(raw.as_deref())?;
    let filters = parse_search(&mut params);
    let page = PageParams::parse::<SearchRow>(&mut params);
    params.finish(&known_params())?;
    list(&state, &db, &headers, &uri, SearchListing { filters }, page).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_parameters_are_exactly_the_accepted_ones() {
        let documented: Vec<String> = SearchQuery::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(documented, known_params());
    }
}
