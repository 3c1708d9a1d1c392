//! Queries on `company_summary_view`: `GET /companies` and `/companies/{id}`.

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use futures_util::stream::BoxStream;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::query::{Facet, FacetCount, MAX_FACET_VALUES, Sort, SortKey};

/// One company with counts over its prospects.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompanyRow {
    pub company_id: String,
    pub domain: Option<String>,
    pub name: String,
    pub industry: Option<String>,
    pub min_employee_size: Option<i32>,
    pub max_employee_size: Option<i32>,
    /// Whole currency units.
    pub revenue: Option<i64>,
    pub formatted_revenue: String,
    pub address: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub country: Option<String>,
    pub prospect_count: i64,
    pub department_count: i64,
    pub job_level_count: i64,
    /// When any of its prospects was last updated; null without prospects.
    #[serde(serialize_with = "super::timestamp_json::optional")]
    pub last_prospect_update: Option<DateTime<Utc>>,
}

super::query::filters! {
    /// The filters of `GET /companies`; all optional, all combined with AND. Each is bound once in
    /// `company_query!`, with its condition.
    pub struct CompanyFilters {
        /// Industry; repeat for any of several (`industry=A&industry=B`).
        pub industry: Vec<String>,
        /// Country.
        pub country: Option<String>,
        /// State or region.
        pub state: Option<String>,
        /// City.
        pub city: Option<String>,
        /// Domain.
        pub domain: Option<String>,
        /// Minimum revenue (whole currency units).
        pub revenue_min: Option<i64>,
        /// Maximum revenue (whole currency units).
        pub revenue_max: Option<i64>,
        /// Companies whose employee range reaches at least this size.
        pub employees_min: Option<i32>,
        /// Companies whose employee range starts at or below this size.
        pub employees_max: Option<i32>,
        /// Companies with at least this many prospects.
        pub min_prospects: Option<i64>,
    }
}

/// The sort keys of companies, each served in both directions by one index of migration 0002.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompanySortKey {
    Name,
    /// Unknown revenue counts as the lowest.
    Revenue,
    ProspectCount,
    /// A company without prospects counts as the oldest.
    LastProspectUpdate,
}

impl SortKey for CompanySortKey {
    const ALL: &'static [(&'static str, Self)] = &[
        ("name", CompanySortKey::Name),
        ("revenue", CompanySortKey::Revenue),
        ("prospect_count", CompanySortKey::ProspectCount),
        ("last_prospect_update", CompanySortKey::LastProspectUpdate),
    ];
    const DEFAULT: Sort<Self> = Sort {
        key: CompanySortKey::Name,
        descending: false,
    };
}

pub type CompanySort = Sort<CompanySortKey>;

/// Where the next page starts: `row`'s sort key as the JSON array `page` reads back (`$1->>0`, ...).
pub fn cursor_key(key: CompanySortKey, row: &CompanyRow) -> serde_json::Value {
    let id = &row.company_id;
    match key {
        CompanySortKey::Name => json!([row.name, id]),
        CompanySortKey::Revenue => json!([row.revenue.unwrap_or(i64::MIN), id]),
        CompanySortKey::ProspectCount => json!([row.prospect_count, id]),
        CompanySortKey::LastProspectUpdate => {
            let at = row.last_prospect_update.map_or_else(
                || "-infinity".to_owned(),
                |at| at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            );
            json!([at, id])
        }
    }
}

/// The statements over `company_summary_view`, parameters as in `prospect_query!`: $1 the keyset
/// cursor, $2 the number of rows, then one per filter from $3 on, written once here.
macro_rules! company_query {
    (rows($($args:expr),+): $($rest:tt)+) => {
        company_query!(@run query_as [CompanyRow,] ($($args),+) ($($rest)+)
            ("SELECT company_id AS \"company_id!\", domain, name AS \"name!\", industry, min_employee_size,
                    max_employee_size, revenue, formatted_revenue AS \"formatted_revenue!\", address, city, state, country,
                    prospect_count AS \"prospect_count!\", department_count AS \"department_count!\",
                    job_level_count AS \"job_level_count!\", last_prospect_update"))
    };
    (facet($filters:expr, $column:literal)) => {
        company_query!(@run query_as [FacetCount,] ($filters, None, Some(MAX_FACET_VALUES))
            ("AND " + $column + " IS NOT NULL GROUP BY " + $column + " ORDER BY count(*) DESC, " + $column + " LIMIT $2")
            ("SELECT " + $column + " AS \"value!\", count(*) AS \"count!\""))
    };
    (total($filters:expr)) => {
        company_query!(@run query_scalar [] ($filters, None, None) ("") ("SELECT count(*) AS \"total!\""))
    };
    (estimate($filters:expr)) => {
        company_query!(@run query_scalar [] ($filters, None, None) ("") ("EXPLAIN (FORMAT JSON) SELECT 1"))
    };
    (@run $kind:ident [$($head:tt)*] ($filters:expr, $after:expr, $rows:expr) ($($rest:tt)+) ($($select:tt)+)) => {{
        let f: &CompanyFilters = $filters;
        let after: Option<&serde_json::Value> = $after;
        let rows: Option<i64> = $rows;
        sqlx::$kind!(
            $($head)*
            $($select)+
                + " FROM company_summary_view
                WHERE ($1::jsonb IS NULL OR $1 IS NOT NULL) AND ($2::bigint IS NULL OR $2 IS NOT NULL)
                  AND ($3::text[] IS NULL OR CASE WHEN cardinality($3) = 1 THEN industry = $3[1]
                                                   ELSE industry = ANY($3) END)
                  AND ($4::text IS NULL OR country = $4)
                  AND ($5::text IS NULL OR state = $5)
                  AND ($6::text IS NULL OR city = $6)
                  AND ($7::text IS NULL OR domain = $7)
                  AND ($8::bigint IS NULL OR revenue >= $8)
                  AND ($9::bigint IS NULL OR revenue <= $9)
                  AND ($10::int IS NULL OR (min_employee_size IS NOT NULL
                                             AND COALESCE(max_employee_size, 2147483647) >= $10))
                  AND ($11::int IS NULL OR min_employee_size <= $11)
                  AND ($12::bigint IS NULL OR prospect_count >= $12) "
                + $($rest)+,
            after,
            rows,
            super::company_prospects::any_of(&f.industry),
            f.country.as_deref(),
            f.state.as_deref(),
            f.city.as_deref(),
            f.domain.as_deref(),
            f.revenue_min,
            f.revenue_max,
            f.employees_min,
            f.employees_max,
            f.min_prospects,
        )
    }};
}

/// One sort key's page statement in both directions (see `company_prospects::sorted_rows!`).
macro_rules! sorted_rows {
    ($pool:expr, $sort:expr, $args:tt, columns: [$($column:literal),+], cursor: $cursor:literal) => {
        if $sort.descending {
            company_query!(rows $args: "AND ($1::jsonb IS NULL OR (" $(+ $column + ", ")+ + "company_id) < " + $cursor + ")
                                   ORDER BY " $(+ $column + " DESC, ")+ + "company_id DESC LIMIT $2")
                .fetch($pool)
        } else {
            company_query!(rows $args: "AND ($1::jsonb IS NULL OR (" $(+ $column + ", ")+ + "company_id) > " + $cursor + ")
                                   ORDER BY " $(+ $column + ", ")+ + "company_id LIMIT $2")
                .fetch($pool)
        }
    };
}

/// One page in `sort` order, after the row whose `cursor_key` is `after` when given. Fetches one
/// row more than `limit` so the caller knows whether another page follows.
#[tracing::instrument(skip(pool, filters, after))]
pub async fn page(
    pool: &PgPool,
    filters: &CompanyFilters,
    sort: CompanySort,
    after: Option<&serde_json::Value>,
    limit: i64,
) -> Result<Vec<CompanyRow>, sqlx::Error> {
    rows(pool, filters, sort, after, limit + 1)
        .try_collect()
        .await
}

/// At most `limit` rows in `sort` order after `after`, as they arrive (CSV streams them).
pub fn rows<'a>(
    pool: &'a PgPool,
    filters: &'a CompanyFilters,
    sort: CompanySort,
    after: Option<&'a serde_json::Value>,
    limit: i64,
) -> BoxStream<'a, Result<CompanyRow, sqlx::Error>> {
    match sort.key {
        CompanySortKey::Name => sorted_rows!(pool, sort, (filters, after, Some(limit)),
            columns: ["COALESCE(name, '')"],
            cursor: "($1->>0, $1->>1)"),
        CompanySortKey::Revenue => sorted_rows!(pool, sort, (filters, after, Some(limit)),
            columns: ["COALESCE(revenue, '-9223372036854775808'::bigint)"],
            cursor: "(($1->>0)::bigint, $1->>1)"),
        CompanySortKey::ProspectCount => sorted_rows!(pool, sort, (filters, after, Some(limit)),
            columns: ["prospect_count"],
            cursor: "(($1->>0)::bigint, $1->>1)"),
        CompanySortKey::LastProspectUpdate => {
            sorted_rows!(pool, sort, (filters, after, Some(limit)),
            columns: ["COALESCE(last_prospect_update, '-infinity'::timestamptz)"],
            cursor: "(($1->>0)::timestamptz, $1->>1)")
        }
    }
}

/// The facets of companies (see `company_prospects::ProspectFacet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompanyFacet {
    Industry,
    Country,
}

impl Facet for CompanyFacet {
    const ALL: &'static [(&'static str, Self)] = &[
        ("industry", CompanyFacet::Industry),
        ("country", CompanyFacet::Country),
    ];
}

/// The most frequent values of `facet` among the companies matching `filters` except its own.
#[tracing::instrument(skip(pool, filters))]
pub async fn facet_counts(
    pool: &PgPool,
    filters: &CompanyFilters,
    facet: CompanyFacet,
) -> Result<Vec<FacetCount>, sqlx::Error> {
    let filters = &filters.without(facet.name());
    match facet {
        CompanyFacet::Industry => {
            company_query!(facet(filters, "industry"))
                .fetch_all(pool)
                .await
        }
        CompanyFacet::Country => {
            company_query!(facet(filters, "country"))
                .fetch_all(pool)
                .await
        }
    }
}

#[tracing::instrument(skip(pool, filters))]
pub async fn count_exact(pool: &PgPool, filters: &CompanyFilters) -> Result<i64, sqlx::Error> {
    company_query!(total(filters)).fetch_one(pool).await
}

#[tracing::instrument(skip(pool, filters))]
pub async fn count_estimate(pool: &PgPool, filters: &CompanyFilters) -> Result<i64, sqlx::Error> {
    let plan = company_query!(estimate(filters)).fetch_one(pool).await?;
    Ok(plan.as_ref().map_or(0, super::planned_rows))
}

#[tracing::instrument(skip(pool))]
pub async fn by_id(pool: &PgPool, company_id: &str) -> Result<Option<CompanyRow>, sqlx::Error> {
    let filters = CompanyFilters::default();
    let key = json!([company_id]);
    company_query!(rows(&filters, Some(&key), None): "AND company_id = $1->>0")
        .fetch_optional(pool)
        .await
}
