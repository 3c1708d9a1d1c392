//! `GET /prospects/facets` and `GET /companies/facets`: how many rows have each value of a facet,
//! under the list's filters, each facet counted without its own filter (as a shop's filter sidebar
//! counts). The counts are a response like any other: freshness headers, ETag, and the response
//! cache, so that the unfiltered counts are computed once per data generation, not per request.

use std::future::Future;

use axum::http::HeaderMap;
use axum::response::Response;
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::AppState;
use super::error::ApiError;
use super::fields::Fields;
use super::list::one;
use super::params::{QueryParams, facet_param_names, parse_facets};
use crate::reads::ReadSource;
use crate::views::ViewName;
use crate::views::query::{Facet, FacetCount, FilterSet};

/// The counted facets, in the order asked for: `{"industry": [{"value": …, "count": …}, …], …}`.
pub type FacetsBody = std::collections::BTreeMap<String, Vec<FacetCount>>;

struct Counted(Vec<(&'static str, Vec<FacetCount>)>);

impl Serialize for Counted {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, counts) in &self.0 {
            map.serialize_entry(name, counts)?;
        }
        map.end()
    }
}

/// A facets request of `endpoint`: the list's filters, the facets asked for, and the request as
/// parsed (the key of its ETag and cached response).
pub fn parse_request<Filters: FilterSet, F: Facet>(
    raw: Option<&str>,
    endpoint: &str,
) -> Result<(Filters, Vec<F>, String), ApiError> {
    let mut params = QueryParams::parse(raw)?;
    let filters = Filters::read(&mut params, &[]);
    let facets = parse_facets::<F>(&mut params);
    params.finish(&facet_param_names(Filters::SPECS))?;
    let names: Vec<&str> = facets.iter().map(|facet| facet.name()).collect();
    let request = format!(
        "{endpoint}|{}|{}",
        serde_json::to_string(&filters).expect("filters serialize"),
        names.join(",")
    );
    Ok((filters, facets, request))
}

/// Answers with the counts of `facets`, one statement each (`count`), through the freshness gate
/// and the response cache; `request` is the endpoint with its parsed filters and facets.
pub async fn respond<F, Fut>(
    state: &AppState,
    db: &ReadSource,
    headers: &HeaderMap,
    view: ViewName,
    request: &str,
    facets: Vec<F>,
    count: impl Fn(F) -> Fut + Send + Sync,
) -> Result<Response, ApiError>
where
    F: Facet,
    Fut: Future<Output = Result<Vec<FacetCount>, sqlx::Error>> + Send,
{
    let fetch = || async {
        let mut counted = Vec::with_capacity(facets.len());
        for facet in facets {
            counted.push((facet.name(), count(facet).await?));
        }
        Ok(Counted(counted))
    };
    one(state, db, headers, view, request, &Fields::default(), fetch).await
}
