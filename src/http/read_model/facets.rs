//! `GET {API.path}/facets`: how many rows have each value of a facet, under the list's filters,
//! each facet counted without its own filter (as a shop's filter sidebar counts). The counts are a
//! response like any other: freshness headers, ETag, and the response cache, so that the unfiltered
//! counts are computed once per data generation, not per request.

use std::sync::Arc;

use axum::response::Response;
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::super::error::ApiError;
use super::super::fields::Fields;
use super::super::params::{QueryParams, parse_facets};
use super::super::response_cache::shows::{FacetCounts, FacetsShown, Shows};
use super::request::{Read, refuse, refused_filters};
use super::respond::{SINGLE_BODY_BYTES, respond_with_one, to_json};
use crate::views::ReadModel;
use crate::views::filters::FilterSet;
use crate::views::order::{Facet, FacetCount};

/// The counted facets, in the order asked for: `{"industry": [{"value": …, "count": …}, …], …}`.
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

/// The query parameters of a facets request: the list's filters and `facet`.
pub fn param_names<M: ReadModel>() -> Vec<&'static str> {
    M::Filters::SPECS
        .iter()
        .map(|spec| spec.name)
        .chain(["facet"])
        .collect()
}

pub async fn facets<M: ReadModel>(read: Read) -> Result<Response, ApiError> {
    let restriction = read.restriction::<M>()?;
    let mut params = QueryParams::parse(read.query())?;
    let mut refusals = refused_filters::<M>(&params, &restriction);
    let filters = M::Filters::read(&mut params, &[]);
    let facets = parse_facets::<M::Facet>(&mut params);
    refusals.extend(
        facets
            .iter()
            .filter_map(|facet| restriction.refuses_facet(*facet)),
    );
    refuse(refusals)?;
    params.finish(&param_names::<M>())?;
    let names: Vec<&str> = facets.iter().map(|facet| facet.name()).collect();
    let key = format!(
        "{}/facets|{}|{}",
        M::API.path,
        serde_json::to_string(&filters).expect("filters serialize"),
        names.join(",")
    );
    let count = async {
        let mut counted = Vec::with_capacity(facets.len());
        for facet in facets {
            // The role's scope is ANDed in after the facet's own filter is left out, so that
            // counting a facet never widens the scope.
            let own_filter_left_out = restriction.apply(&filters.without(facet.name()));
            let counts = match &own_filter_left_out {
                Some(filters) => M::facet(&read.db.pool, filters, facet).await?,
                None => Vec::new(),
            };
            counted.push(FacetCounts {
                facet,
                filters: own_filter_left_out,
                counts,
            });
        }
        let body = Counted(named::<M>(&counted));
        let shows: Arc<dyn Shows> = Arc::new(FacetsShown::<M> {
            facets: counted,
            render: render::<M>,
        });
        Ok((body, Some(shows)))
    };
    respond_with_one(&read, M::VIEW, &key, &Fields::default(), count).await
}

/// Each facet's counts, by the facet's name.
fn named<M: ReadModel>(counted: &[FacetCounts<M>]) -> Vec<(&'static str, Vec<FacetCount>)> {
    counted
        .iter()
        .map(|shown| (shown.facet.name(), shown.counts.clone()))
        .collect()
}

/// The body of counts updated by a round, written as a fresh one is (`respond_with_one`).
fn render<M: ReadModel>(counted: &[FacetCounts<M>]) -> Option<Vec<u8>> {
    to_json(SINGLE_BODY_BYTES, &Counted(named::<M>(counted))).ok()
}
