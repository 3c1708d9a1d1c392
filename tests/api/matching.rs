//! Rust's reading of each read model's SQL, which the response cache relies on to keep a cached
//! response across a round (`ReadModel::admits`, `compare_keys`), proven against the SQL itself on
//! seeded data: for every declared filter and values taken from the rows, a row Rust admits is one
//! the statement returns and a row it refuses is not; and the keys of the rows, in each order both
//! ways as the statement returns them, compare in Rust in that order.

use std::collections::BTreeSet;

use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use prospect_api::views::filters::{FilterKind, FilterSet, FilterSource, FilterSpec};
use prospect_api::views::order::{Sort, SortKey, compare_keys};
use prospect_api::views::{Admits, ReadModel, Shape};
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{ModelCheck, each_read_model, seeded_and_fixture};

/// Every row, more than the seed holds.
const ALL: i64 = 100_000;

/// One filter's value, as the HTTP layer would read it.
pub struct Given(pub &'static str, pub String);

impl FilterSource for Given {
    fn given(&self, name: &str) -> bool {
        name == self.0
    }
    fn text(&mut self, name: &str) -> Option<String> {
        (name == self.0).then(|| self.1.clone())
    }
    fn any_of(&mut self, name: &str) -> Vec<String> {
        self.text(name)
            .map(|values| values.split('|').map(str::to_owned).collect())
            .unwrap_or_default()
    }
    fn whole_number(&mut self, name: &str, _: i64, _: i64) -> Option<i64> {
        self.text(name)?.parse().ok()
    }
    fn timestamp(&mut self, name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        Some(
            chrono::DateTime::parse_from_rfc3339(&self.text(name)?)
                .ok()?
                .to_utc(),
        )
    }
    fn reject(&mut self, name: &str, reason: String) {
        panic!("{name}: {reason}");
    }
}

/// Values to try for `spec`: some the rows hold (of the field it reads), neighbours of numbers,
/// other cases of text, and one no row holds.
pub fn values(spec: &FilterSpec, rows: &[Value]) -> Vec<String> {
    let field = spec.reads[0];
    let mut held: Vec<Value> = rows
        .iter()
        .map(|row| row[field].clone())
        .filter(|value| !value.is_null())
        .collect();
    held.sort_by_key(Value::to_string);
    held.dedup();
    let picked: Vec<&Value> = [
        0,
        held.len() / 3,
        held.len() / 2,
        held.len().saturating_sub(1),
    ]
    .into_iter()
    .filter_map(|at| held.get(at))
    .collect();
    let mut values = Vec::new();
    for value in picked {
        match (spec.kind, value) {
            (FilterKind::WholeNumber { .. }, Value::Number(n)) => {
                let n = n.as_i64().unwrap();
                values.extend([n.to_string(), (n + 1).to_string(), (n - 1).to_string()]);
            }
            (FilterKind::Text, Value::String(text)) => {
                values.extend([text.clone(), text.to_uppercase()]);
                if let Some(start) = text.get(..3) {
                    values.push(start.to_lowercase());
                }
            }
            (FilterKind::AnyOf, Value::String(text)) => values.push(text.clone()),
            (FilterKind::Timestamp, Value::String(at)) => values.push(at.clone()),
            _ => {}
        }
    }
    match spec.kind {
        FilterKind::AnyOf if held.len() >= 2 => values.push(format!(
            "{}|{}",
            held[0].as_str().unwrap(),
            held[held.len() - 1].as_str().unwrap()
        )),
        FilterKind::Text | FilterKind::AnyOf => values.push("held by no row".to_owned()),
        FilterKind::WholeNumber { .. } => values.push(i64::MIN.to_string()),
        _ => {}
    }
    values
}

/// Every row `filters` match, in `sort` order, as the statement returns them.
async fn all_rows<M: ReadModel>(
    pool: &PgPool,
    filters: &M::Filters,
    sort: Sort<M::Sort>,
) -> Vec<M::Row> {
    M::rows(pool, filters, sort, None, ALL, Shape::Faster)
        .try_collect()
        .await
        .unwrap()
}

/// The ids of the rows `filters` match, as the statement returns them.
async fn matched<M: ReadModel>(pool: &PgPool, filters: &M::Filters) -> BTreeSet<String> {
    all_rows::<M>(pool, filters, M::Sort::DEFAULT)
        .await
        .iter()
        .map(|row| M::id(row).expect("an id").to_owned())
        .collect()
}

/// What Rust decided of `M`'s filters (decided, undecided) and its orders, or the first mismatch.
async fn check<M: ReadModel>(pool: PgPool) -> Found {
    let searched = M::Filters::SPECS
        .iter()
        .any(|spec| matches!(spec.kind, FilterKind::Terms { .. }));
    if searched {
        // A search's rows need its terms: tests/api/search_matching.rs compares those.
        return Ok((0, 0, 0));
    }
    let rows = all_rows::<M>(&pool, &M::Filters::default(), M::Sort::DEFAULT).await;
    let images: Vec<Value> = rows
        .iter()
        .map(|row| serde_json::to_value(row).unwrap())
        .collect();
    let (mut decided, mut undecided) = (0, 0);
    for spec in M::Filters::SPECS {
        for value in values(spec, &images) {
            let filters = M::Filters::read(&mut Given(spec.name, value.clone()), &[]);
            let matched = matched::<M>(&pool, &filters).await;
            for row in &rows {
                let id = M::id(row).unwrap();
                let admits = M::admits(&filters, row);
                let right = match admits {
                    Admits::Yes => matched.contains(id),
                    Admits::No => !matched.contains(id),
                    Admits::Unsure => {
                        undecided += 1;
                        continue;
                    }
                };
                decided += 1;
                if !right {
                    return Err(format!(
                        "{}: {}={value:?}, row {id}: Rust says {admits:?}, SQL {}",
                        M::VIEW,
                        spec.name,
                        matched.contains(id)
                    ));
                }
            }
        }
    }
    let mut orders = 0;
    for (name, key) in M::Sort::ALL {
        for descending in [false, true] {
            if (descending && !key.both_ways()) || key.parts().is_empty() {
                continue;
            }
            let sort = Sort {
                key: *key,
                descending,
            };
            let ordered = all_rows::<M>(&pool, &M::Filters::default(), sort).await;
            for pair in ordered.windows(2) {
                let (a, b) = (M::cursor_key(sort, &pair[0]), M::cursor_key(sort, &pair[1]));
                if compare_keys(sort, &a, &b, true) != Some(std::cmp::Ordering::Less) {
                    return Err(format!(
                        "{}: {name} (descending {descending}): {a} then {b}",
                        M::VIEW
                    ));
                }
            }
            orders += 1;
        }
    }
    Ok((decided, undecided, orders))
}

/// What `check` found of one model: rows decided, rows not, orders compared.
type Found = Result<(usize, usize, usize), String>;

/// `check`, for every read model.
struct Matching;

impl ModelCheck for Matching {
    type Found = Found;
    fn check<M: ReadModel>(pool: PgPool) -> BoxFuture<'static, Found> {
        Box::pin(check::<M>(pool))
    }
}

#[tokio::test]
async fn what_rust_admits_and_how_it_orders_keys_is_what_the_sql_returns_for_every_filter_and_order()
 {
    let db = seeded_and_fixture(7, async |_| {}).await;
    let bytewise = prospect_api::db::text_orders_bytewise(&db.pool)
        .await
        .unwrap();
    assert!(bytewise, "the tests' server orders text by bytes (C.UTF-8)");
    for (path, check) in each_read_model::<Matching>() {
        let (decided, undecided, orders) = check(db.pool.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if path != "/search" {
            assert!(orders >= 4, "{path}: {orders} orders compared");
            assert!(
                decided > 20 * undecided.max(1),
                "{path}: {decided} decided, {undecided} not"
            );
        }
    }
}
