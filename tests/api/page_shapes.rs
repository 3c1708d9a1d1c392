//! The two shapes of a page statement (`page_shape!`: in index order, or filter first for few
//! matches) return the same pages: for every read model, with no filter and with each declared
//! filter at values the rows hold, in every order both ways, paged through by cursor.

use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use prospect_api::views::filters::{FilterKind, FilterSet};
use prospect_api::views::order::{Sort, SortKey};
use prospect_api::views::{ReadModel, Shape};
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{ModelCheck, each_read_model, seeded_and_fixture};
use crate::matching::{Given, values};

/// Small enough that every listing takes several pages.
const PAGE: i64 = 7;

/// Every row of `filters` in `sort` order, page after page, as JSON, in one shape.
async fn paged<M: ReadModel>(
    pool: &PgPool,
    filters: &M::Filters,
    sort: Sort<M::Sort>,
    shape: Shape,
) -> Vec<Value> {
    let (mut all, mut after) = (Vec::new(), None);
    loop {
        let page: Vec<M::Row> = M::rows(pool, filters, sort, after.as_ref(), PAGE, shape)
            .try_collect()
            .await
            .unwrap();
        all.extend(page.iter().map(|row| serde_json::to_value(row).unwrap()));
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = Some(M::cursor_key(sort, last)),
            _ => return all,
        }
    }
}

/// The listings compared (with at least one row), or the first that differs.
async fn compare<M: ReadModel>(pool: PgPool) -> Result<usize, String> {
    if M::Filters::SPECS
        .iter()
        .any(|spec| matches!(spec.kind, FilterKind::Terms { .. }))
    {
        return Ok(0); // One shape: a search chooses its own plan.
    }
    let everything = paged::<M>(
        &pool,
        &M::Filters::default(),
        M::Sort::DEFAULT,
        Shape::InIndexOrder,
    )
    .await;
    let mut cases = vec![("no filter".to_owned(), M::Filters::default())];
    for spec in M::Filters::SPECS {
        for value in values(spec, &everything).into_iter().take(3) {
            let filters = M::Filters::read(&mut Given(spec.name, value.clone()), &[]);
            cases.push((format!("{}={value}", spec.name), filters));
        }
    }
    let mut compared = 0;
    for (case, filters) in &cases {
        for (name, key) in M::Sort::ALL {
            for descending in [false, true] {
                if descending && !key.both_ways() {
                    continue;
                }
                let sort = Sort {
                    key: *key,
                    descending,
                };
                let in_index_order = paged::<M>(&pool, filters, sort, Shape::InIndexOrder).await;
                let filter_first = paged::<M>(&pool, filters, sort, Shape::FilterFirst).await;
                if in_index_order != filter_first {
                    return Err(format!(
                        "{} {case}, sort {name} (descending {descending}): {} rows in index order, \
                         {} filter first, or the same number in another order",
                        M::API.path,
                        in_index_order.len(),
                        filter_first.len()
                    ));
                }
                compared += usize::from(!in_index_order.is_empty());
            }
        }
    }
    Ok(compared)
}

/// `compare`, for every read model.
struct BothShapes;

impl ModelCheck for BothShapes {
    type Found = Result<usize, String>;
    fn check<M: ReadModel>(pool: PgPool) -> BoxFuture<'static, Self::Found> {
        Box::pin(compare::<M>(pool))
    }
}

#[tokio::test]
async fn both_shapes_of_every_page_statement_return_the_same_pages_for_every_filter_and_order() {
    let db = seeded_and_fixture(11, async |_| {}).await;
    for (path, compare) in each_read_model::<BothShapes>() {
        let compared = compare(db.pool.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if path != "/search" {
            assert!(compared > 100, "{path}: {compared} listings compared");
        }
    }
}
