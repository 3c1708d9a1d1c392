//! What holds for every read model alike, checked through the generic path for each of them: every
//! declared filter reaches every statement (the page, `count=exact`, the facets, the CSV export).

use std::collections::BTreeSet;

use prospect_api::views::filters::{FilterSet, FilterSpec};
use prospect_api::views::order::Facet;
use prospect_api::views::{ReadModel, ReadModelVisitor, visit_read_models};
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app, value_excluding_most_rows};

/// What the test needs of one read model.
struct Published {
    path: &'static str,
    filters: &'static [FilterSpec],
    facets: Vec<&'static str>,
}

struct Every(Vec<Published>);

impl ReadModelVisitor for Every {
    fn visit<M: ReadModel>(&mut self) {
        self.0.push(Published {
            path: M::API.path,
            filters: M::Filters::SPECS,
            facets: M::Facet::ALL.iter().map(|(name, _)| *name).collect(),
        });
    }
}

/// A query matching most of the fixture's rows (a search needs its terms).
fn matching_most(path: &str) -> &'static str {
    match path {
        "/search" => "q=e",
        _ => "",
    }
}

async fn rows(app: &TestApp, path: &str, query: &str) -> (BTreeSet<String>, i64) {
    let page = app
        .get_json(&format!("{path}?{query}&limit=500&count=exact"), 200)
        .await;
    let rows = page["data"].as_array().unwrap();
    let rows: BTreeSet<String> = rows.iter().map(Value::to_string).collect();
    (rows, page["total"].as_i64().unwrap())
}

#[tokio::test]
async fn every_declared_filter_reaches_every_statement_of_every_read_model() {
    let app = spawn_app().await;
    let mut every = Every(vec![]);
    visit_read_models(&mut every);
    for model in every.0 {
        let base = matching_most(model.path);
        let (all, total) = rows(&app, model.path, base).await;
        assert_eq!(all.len() as i64, total, "{}", model.path);
        assert!(
            all.len() >= 4,
            "{}: the fixture matches {} rows",
            model.path,
            all.len()
        );
        for spec in model
            .filters
            .iter()
            .filter(|spec| !base.starts_with(spec.name))
        {
            let query = format!("{base}&{}={}", spec.name, value_excluding_most_rows(spec));
            let (filtered, total) = rows(&app, model.path, &query).await;
            let what = format!("{}?{query}", model.path);
            assert!(filtered.len() < all.len() / 2, "{what}: {filtered:?}");
            assert!(filtered.is_subset(&all), "{what}");
            assert_eq!(filtered.len() as i64, total, "{what}: count=exact");
            let csv = app.get(&format!("{}?{query}&format=csv", model.path)).await;
            let lines = csv.text().await.unwrap().lines().count();
            assert_eq!(lines as i64, total + 1, "{what}: a header and every row");
            for facet in model.facets.iter().filter(|facet| **facet != spec.name) {
                let counts = app
                    .get_json(&format!("{}/facets?{query}&facet={facet}", model.path), 200)
                    .await;
                let counted: i64 = counts[*facet]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|value| value["count"].as_i64().unwrap())
                    .sum();
                assert!(
                    counted <= total,
                    "{what}: {facet} counts {counted} of {total} rows"
                );
            }
        }
    }
}
