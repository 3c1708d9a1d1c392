//! The read model, the unit of the read side: one trait that each `views/<name>.rs` implements once,
//! with its row, its filters, its orders, its facets and its statements, and the few words the HTTP
//! layer needs to publish it. The HTTP layer serves every read model through one generic path (list,
//! single row, facets, CSV), so a rule about reads (a column policy, an order, a cache rule) is
//! written once for all of them.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgPool;

use super::ViewName;
use super::filters::FilterSet;
use super::order::{Facet, FacetCount, Sort, SortKey};

pub trait ReadModel: Send + Sync + 'static {
    /// The view it reads: its freshness, its generation in the response cache, its lock.
    const VIEW: ViewName;
    /// How the HTTP layer publishes it.
    const API: Api;
    /// The row's fields whose column has another name in an access policy, where the two differ
    /// (`country` of a company is `company_country`): policies name columns as the prospects' rows
    /// do, so that one `hide` or row scope holds for every read model.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[];
    /// One row as the API returns it (and, read back from what a round recorded, as the response
    /// cache checks it: `image`).
    type Row: Serialize + DeserializeOwned + utoipa::ToSchema + Send + Sync + Unpin + 'static;
    type Filters: FilterSet;
    type Sort: SortKey;
    /// `NoFacets` when it has none.
    type Facet: Facet;
    /// About the JSON size of one whole row, a little over: a page is written into one buffer of
    /// about its final size rather than one grown by doubling from empty (case (a) at 1M: +2.7%
    /// req/s, bench/RESULTS.md `miss`). The response cache counts the buffer's whole capacity.
    const ROW_BYTES: usize;

    /// At most `limit` rows matching `filters` in `sort` order, after the row whose `cursor_key`
    /// is `after`, as they arrive (CSV exports stream them), read by the statement of `shape`
    /// (`in_shape`; a model with one statement shape ignores it).
    fn rows<'a>(
        pool: &'a PgPool,
        filters: &'a Self::Filters,
        sort: Sort<Self::Sort>,
        after: Option<&'a Value>,
        limit: i64,
        shape: Shape,
    ) -> BoxStream<'a, Result<Self::Row, sqlx::Error>>;

    /// How many rows match (all pages).
    fn count<'a>(
        pool: &'a PgPool,
        filters: &'a Self::Filters,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send + 'a;

    /// The planner's estimate of how many rows match: instant, but only as good as the statistics.
    fn estimate<'a>(
        pool: &'a PgPool,
        filters: &'a Self::Filters,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send + 'a;

    /// The most frequent values of `facet` among the rows matching `filters`, most frequent first,
    /// at most `MAX_FACET_VALUES`. The caller leaves out the facet's own filter.
    fn facet<'a>(
        pool: &'a PgPool,
        filters: &'a Self::Filters,
        facet: Self::Facet,
    ) -> impl Future<Output = Result<Vec<FacetCount>, sqlx::Error>> + Send + 'a;

    /// The row with this id (for models with `API.one`).
    fn one<'a>(
        pool: &'a PgPool,
        id: &'a str,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send + 'a;

    /// Where the page after `row` starts: its sort key as the JSON array the statements read back
    /// (`$1->>0`, `$1->>1`, ...), the same values the ORDER BY compares.
    fn cursor_key(sort: Sort<Self::Sort>, row: &Self::Row) -> Value;

    /// Whether `row` is one that `filters` match, where Rust can tell exactly what the SQL would
    /// say (equality, numbers, instants, ASCII case); `Unsure` elsewhere. The response cache keeps a
    /// cached response across a round only when no row the round changed could be one it shows.
    fn admits(filters: &Self::Filters, row: &Self::Row) -> Admits {
        let _ = (filters, row);
        Admits::Unsure
    }

    /// Where `row` would stand in `sort`'s order among the rows `filters` match: its cursor key, or,
    /// in an order computed per query (search's relevance), a key it cannot come before.
    fn place(filters: &Self::Filters, sort: Sort<Self::Sort>, row: &Self::Row) -> Place {
        let _ = filters;
        Place::Exactly(Self::cursor_key(sort, row))
    }

    /// Whether a round that changed `row` may change which other rows `filters` match, or how they
    /// rank (a search's typo corrections come from a vocabulary that grows with the rows' words).
    fn moves_others(filters: &Self::Filters, row: &Self::Row) -> bool {
        let _ = (filters, row);
        false
    }

    /// The filters whose column leads the index that serves `sort` (`(industry, company_name, …)`
    /// for prospects by company name): with one value of such a filter, a walk along that index
    /// passes only that value's rows (`Shape::Faster`).
    fn order_led_by(sort: Self::Sort) -> &'static [&'static str] {
        let _ = sort;
        &[]
    }

    /// The id `one` finds `row` by (none: the model has no single rows, or cannot tell).
    fn id(row: &Self::Row) -> Option<&str> {
        let _ = row;
        None
    }

    /// The value `facet` counts `row` under: `Some(None)` when it has none (not counted), `None`
    /// when the model cannot tell.
    fn facet_value(facet: Self::Facet, row: &Self::Row) -> Option<Option<&str>> {
        let _ = (facet, row);
        None
    }

    /// A row of the view as a round recorded it (`read_model_changes`: the view's columns as JSON).
    fn image(recorded: Value) -> Image<Self::Row> {
        serde_json::from_value(recorded).map_or(Image::Unknown, Image::Row)
    }

    /// For a list scoped by its path (`API.scoped`): whether the parent named there exists.
    fn parent_exists<'a>(
        pool: &'a PgPool,
        id: &'a str,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'a {
        let _ = (pool, id);
        async { Ok(true) }
    }
}

/// Whether a row is among those some filters match, as far as Rust can tell what PostgreSQL would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admits {
    Yes,
    No,
    Unsure,
}

impl Admits {
    /// `Yes` when `holds`, else `No`: a condition Rust decides exactly.
    pub fn from(holds: bool) -> Admits {
        if holds { Admits::Yes } else { Admits::No }
    }

    /// All of `conditions` (AND): `No` when one is `No`, else `Unsure` when one is, else `Yes`.
    pub fn all(conditions: impl IntoIterator<Item = Admits>) -> Admits {
        let mut all = Admits::Yes;
        for condition in conditions {
            match condition {
                Admits::No => return Admits::No,
                Admits::Unsure => all = Admits::Unsure,
                Admits::Yes => {}
            }
        }
        all
    }
}

/// Where a row stands in an order (`ReadModel::place`).
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    /// At this cursor key.
    Exactly(Value),
    /// At this key or after it.
    NoEarlierThan(Value),
    /// Rust cannot tell.
    Unknown,
}

/// A row of a read model's view as a round recorded it.
#[derive(Debug, Clone)]
pub enum Image<R> {
    /// One of the model's rows.
    Row(R),
    /// A row none of the model's statements returns, which only says that its parent exists
    /// (`parent_exists`): a company without prospects in `company_prospect_view`.
    Parent(String),
    /// Not understood: any response of the model may depend on it.
    Unknown,
}

/// What the HTTP layer needs to publish a read model, besides its types: paths and the words of
/// its documentation.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    /// The OpenAPI tag of its operations.
    pub tag: &'static str,
    /// The list: `GET {path}`.
    pub path: &'static str,
    /// The list's operation id and summary.
    pub list: (&'static str, &'static str),
    /// What its rows are, in the plural ("prospects"): in descriptions, and the CSV file's name.
    pub rows: &'static str,
    /// What the orders mean, for `sort`'s description.
    pub sort_doc: &'static str,
    pub one: Option<IdPath>,
    /// `GET {path}/facets`: its operation id (when the model has facets).
    pub facets: Option<&'static str>,
    pub scoped: Option<IdPath>,
}

/// An endpoint whose path names one thing by its id: a row (`Api::one`, e.g.
/// `/prospects/{prospect_id}`), or the parent of a list (`Api::scoped`, e.g.
/// `/companies/{company_id}/prospects`, where the id is the filter of the same name and a parent that
/// `ReadModel::parent_exists` denies is a 404).
#[derive(Debug, Clone, Copy)]
pub struct IdPath {
    pub path: &'static str,
    /// The id's path parameter.
    pub param: &'static str,
    pub tag: &'static str,
    pub operation: &'static str,
    pub summary: &'static str,
    /// What the id names ("prospect", "company"), for its description and the 404.
    pub noun: &'static str,
}

/// At most this many estimated matches, a page reads the matches first and sorts them
/// (`page_shape!`'s `filter_first`); more, it may walk an index in the page's order. Reading and
/// sorting a few thousand rows takes a few milliseconds, so the walk's worst case (matches
/// clustered far along the order: 279 ms at 1M, bench/RESULTS.md `filters`) is never paid where
/// it is likely; beyond, the walk finds a page of common matches at once. Measured with
/// bench/filter_plans.py, which reads this constant.
pub const FILTER_FIRST_ROWS: i64 = 5_000;

/// Which statement shape reads a page (`page_shape!`): the same rows either way
/// (tests/api/page_shapes.rs), at different costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Whichever suits the filters and the order (`reads_matches_first`), from the planner's
    /// estimate of the matches (one more statement, an EXPLAIN, before the first filtered page of
    /// those filters in a minute); in index order without filters.
    Faster,
    /// Walks the index of the page's order, keeping the rows the filters match.
    InIndexOrder,
    /// Reads the matches first, then sorts them.
    FilterFirst,
}

/// The page `page` gives (called with whether to read the matches first) in `shape`, for `sort`.
pub fn in_shape<'a, M: ReadModel + ?Sized>(
    pool: &'a PgPool,
    filters: &'a M::Filters,
    sort: M::Sort,
    shape: Shape,
    page: impl FnOnce(bool) -> BoxStream<'a, Result<M::Row, sqlx::Error>> + Send + 'a,
) -> BoxStream<'a, Result<M::Row, sqlx::Error>> {
    match shape {
        Shape::InIndexOrder => page(false),
        Shape::FilterFirst => page(true),
        Shape::Faster => in_the_faster_shape::<M>(pool, filters, sort, page),
    }
}

/// With a walk bounded to one value of a filter leading the order's index, at most this many
/// estimated matches are read first. Reading the matches first scans every filter's index range
/// (a bitmap of each) and sorts the matches, where such a walk passes about
/// `that value's rows × page / matches` entries and stops: measured at 1M, Energy in Japan (925
/// matches) 10.7 ms read first against 0.36 ms walked by company name, Healthcare in Germany (3,649)
/// 27.7 ms against 0.2 ms. Below this, a rare second filter is better read first (its own index
/// finds its few rows) than walked through a common first one.
pub const FILTER_FIRST_BOUNDED_ROWS: i64 = 300;

/// Whether a page of `estimate` matches is read faster by filtering first than by walking the
/// order's index: at most `FILTER_FIRST_ROWS`, or `FILTER_FIRST_BOUNDED_ROWS` when the walk is
/// bounded to one value of a filter that leads the index (`ReadModel::order_led_by`).
pub fn reads_matches_first(estimate: i64, bounded_walk: bool) -> bool {
    let most = if bounded_walk {
        FILTER_FIRST_BOUNDED_ROWS
    } else {
        FILTER_FIRST_ROWS
    };
    estimate <= most
}

/// Whether `filters` hold exactly one value of the filter `name`.
fn one_value_of(filters: &impl Serialize, name: &str) -> bool {
    match serde_json::to_value(filters).map(|mut all| all[name].take()) {
        Ok(Value::Array(values)) => values.len() == 1,
        Ok(Value::Null) | Err(_) => false,
        Ok(_) => true,
    }
}

fn in_the_faster_shape<'a, M: ReadModel + ?Sized>(
    pool: &'a PgPool,
    filters: &'a M::Filters,
    sort: M::Sort,
    page: impl FnOnce(bool) -> BoxStream<'a, Result<M::Row, sqlx::Error>> + Send + 'a,
) -> BoxStream<'a, Result<M::Row, sqlx::Error>> {
    if filters.is_empty() {
        return page(false);
    }
    let bounded = M::order_led_by(sort)
        .iter()
        .any(|name| one_value_of(filters, name));
    let key = (
        M::API.path,
        serde_json::to_string(filters).unwrap_or_default(),
    );
    if let Some(estimate) = recent_estimates().get(&key) {
        return page(reads_matches_first(estimate, bounded));
    }
    futures_util::stream::once(async move {
        match M::estimate(pool, filters).await {
            Ok(estimate) => {
                recent_estimates().insert(key, estimate);
                page(reads_matches_first(estimate, bounded))
            }
            Err(error) => futures_util::stream::once(async { Err(error) }).boxed(),
        }
    })
    .flatten()
    .boxed()
}

/// The estimates `Shape::Faster` went by, per read model (its path) and filters, for a
/// minute: they move with the planner's statistics (ANALYZE), not per request, so another page or
/// order of the same filters need not plan one again (case (a) of bench/run.py, a dozen filters
/// served over and over, would otherwise plan every page twice). Only the shape depends on them,
/// never the rows (tests/api/page_shapes.rs).
fn recent_estimates() -> &'static moka::sync::Cache<(&'static str, String), i64> {
    static ESTIMATES: OnceLock<moka::sync::Cache<(&'static str, String), i64>> = OnceLock::new();
    ESTIMATES.get_or_init(|| {
        moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(60))
            .build()
    })
}

/// How many rows the planner expects to match, from the `EXPLAIN (FORMAT JSON)` plan of a page
/// statement asked for one row: the rows of the plan under its `Limit` (for `LIMIT 1` the planner
/// picks a plan that starts at once: an index scan, or a sort of every match, never a parallel one).
pub fn estimated_rows(plan: Option<&Value>) -> i64 {
    let Some(top) = plan.and_then(|plan| plan.pointer("/0/Plan")) else {
        return 0;
    };
    let matching = match top["Node Type"].as_str() {
        Some("Limit") => &top["Plans"][0],
        _ => top,
    };
    matching["Plan Rows"]
        .as_f64()
        .map_or(0, |rows| rows.round() as i64)
}

/// The statements of a read model written with `page_shape!`, in an `impl ReadModel` block: `rows`,
/// `count`, `estimate`, `facet` and `one`, from its module's `page!` (the page statement),
/// `counts!` (the total, or a facet's counts) and `sorted_rows` (the page in an order, or one row by
/// id). `id:` is the column the estimate's statement orders by (the planner's estimate of the
/// matches does not depend on the order). views/company_prospects.rs shows the three.
#[macro_export]
macro_rules! statements_of_page_and_counts {
    (row: $row:ty, filters: $filters:ty, sort: $sort:ty, facet: $facet:ty, id: $id:tt) => {
        fn rows<'a>(
            pool: &'a ::sqlx::PgPool,
            filters: &'a $filters,
            sort: $crate::views::order::Sort<$sort>,
            after: Option<&'a ::serde_json::Value>,
            limit: i64,
            shape: $crate::views::Shape,
        ) -> ::futures_util::stream::BoxStream<'a, Result<$row, ::sqlx::Error>> {
            $crate::views::in_shape::<Self>(pool, filters, sort.key, shape, move |filter_first| {
                sorted_rows(pool, filters, None, sort, after, limit, filter_first)
            })
        }

        async fn count(pool: &::sqlx::PgPool, filters: &$filters) -> Result<i64, ::sqlx::Error> {
            let total = counts!(filters, None::<&str>, 1_i64)
                .fetch_optional(pool)
                .await?;
            Ok($crate::views::order::Counted::total(total))
        }

        async fn estimate(pool: &::sqlx::PgPool, filters: &$filters) -> Result<i64, ::sqlx::Error> {
            let no_cursor = None::<&::serde_json::Value>;
            let plan = page!((query_scalar [] "EXPLAIN (FORMAT JSON) ", filters, None::<&str>, no_cursor, Some(1_i64)),
                shape: in_index_order, keyset: ("TRUE"), order: ($id))
            .fetch_one(pool)
            .await?;
            Ok($crate::views::estimated_rows(plan.as_ref()))
        }

        async fn facet(
            pool: &::sqlx::PgPool,
            filters: &$filters,
            facet: $facet,
        ) -> Result<Vec<$crate::views::order::FacetCount>, ::sqlx::Error> {
            use $crate::views::order::Facet;
            let groups = counts!(filters, Some(facet.name()), $crate::views::order::MAX_FACET_VALUES)
                .fetch_all(pool)
                .await?;
            Ok($crate::views::order::Counted::facet_counts(groups))
        }

        async fn one(pool: &::sqlx::PgPool, id: &str) -> Result<Option<$row>, ::sqlx::Error> {
            use ::futures_util::TryStreamExt;
            use $crate::views::order::SortKey;
            let filters = <$filters>::default();
            sorted_rows(pool, &filters, Some(id), <$sort>::DEFAULT, None, 1, false)
                .try_next()
                .await
        }
    };
}
pub use crate::statements_of_page_and_counts;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::company_prospects::{CompanyProspects, ProspectFilters, ProspectSortKey};
    use crate::views::company_summaries::{CompanyFilters, CompanySortKey, CompanySummaries};
    use crate::views::filters::FilterSet;

    fn bounded<M: ReadModel>(filters: &M::Filters, sort: M::Sort) -> bool {
        M::order_led_by(sort)
            .iter()
            .any(|name| one_value_of(filters, name))
    }

    fn given<F: FilterSet + Default>(filters: &[(&str, &[&str])]) -> F {
        let mut given = F::default();
        for (name, values) in filters {
            let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            given.restrict(name, &values);
        }
        given
    }

    #[test]
    fn a_walk_is_bounded_by_one_value_of_a_filter_leading_the_orders_index() {
        use CompanySortKey as C;
        use ProspectSortKey as P;
        let energy_in_japan: ProspectFilters =
            given(&[("industry", &["Energy"]), ("company_country", &["Japan"])]);
        let two_industries: ProspectFilters = given(&[("industry", &["Energy", "Retail"])]);
        let japan: ProspectFilters = given(&[("company_country", &["Japan"])]);
        let companies_in_japan: CompanyFilters = given(&[("country", &["Japan"])]);
        let prospects = bounded::<CompanyProspects>;
        let companies = bounded::<CompanySummaries>;
        assert_eq!(
            [
                prospects(&energy_in_japan, P::CompanyName),
                prospects(&energy_in_japan, P::Revenue),
                prospects(&two_industries, P::CompanyName),
                prospects(&japan, P::CompanyName),
                companies(&companies_in_japan, C::ProspectCount),
                companies(&companies_in_japan, C::Name),
                companies(&companies_in_japan, C::Revenue),
            ],
            [true, false, false, false, true, true, false],
            "prospects of one industry by name, by revenue; of two industries; of one country; \
             companies of one country by prospect count, by name, by revenue"
        );
    }

    #[test]
    fn few_matches_are_read_first_fewer_when_the_walk_is_bounded() {
        assert!(reads_matches_first(FILTER_FIRST_ROWS, false));
        assert!(!reads_matches_first(FILTER_FIRST_ROWS + 1, false));
        assert!(reads_matches_first(FILTER_FIRST_BOUNDED_ROWS, true));
        assert!(!reads_matches_first(FILTER_FIRST_BOUNDED_ROWS + 1, true));
    }
}
