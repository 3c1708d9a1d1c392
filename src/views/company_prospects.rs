//! Queries on `company_prospect_view`: `GET /prospects`, `/prospects/{id}` and
//! `/companies/{id}/prospects`.
//!
//! Adding a filter: a field in `ProspectFilters` (its name, type and doc comment are the parameter,
//! its parsing and its OpenAPI entry), its condition and bind in `prospect_query!`, and an index.
//! Every condition is `($n IS NULL OR condition)`; the read pool runs with
//! `plan_cache_mode = force_custom_plan`, so each execution is planned with its values: the unused
//! filters fold away (so does the CASE that turns a one-value list into an equality) and the indexes
//! of migration 0002 can deliver a sorted first page in either direction.

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use futures_util::stream::BoxStream;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::query::{Facet, FacetCount, MAX_FACET_VALUES, Sort, SortKey};

/// One prospect with its company, as the API returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProspectRow {
    pub prospect_id: String,
    pub salutation: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// "first last", or whichever exists.
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub job_title: Option<String>,
    pub job_title_level: Option<String>,
    pub department: Option<String>,
    pub job_title_link: Option<String>,
    pub prospect_address: Option<String>,
    pub prospect_city: Option<String>,
    pub prospect_state: Option<String>,
    pub prospect_country: Option<String>,
    pub prospect_zip_code: Option<String>,
    pub prospect_phone: Option<String>,
    pub prospect_mobile_phone: Option<String>,
    #[serde(serialize_with = "super::timestamp_json::required")]
    pub prospect_created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::timestamp_json::required")]
    pub prospect_updated_at: DateTime<Utc>,
    pub company_id: String,
    pub domain: Option<String>,
    pub company_name: String,
    pub industry: Option<String>,
    pub min_employee_size: Option<i32>,
    pub max_employee_size: Option<i32>,
    /// Whole currency units.
    pub revenue: Option<i64>,
    /// For display: `1.5B`, `2.5K`, `$999`, `NA`.
    pub formatted_revenue: String,
    pub company_address: Option<String>,
    pub company_city: Option<String>,
    pub company_state: Option<String>,
    pub company_country: Option<String>,
    pub company_zip_code: Option<String>,
    pub company_phone: Option<String>,
    pub company_mobile_phone: Option<String>,
    #[serde(serialize_with = "super::timestamp_json::required")]
    pub company_created_at: DateTime<Utc>,
    #[serde(serialize_with = "super::timestamp_json::required")]
    pub company_updated_at: DateTime<Utc>,
}

super::query::filters! {
    /// The filters of `GET /prospects` and `GET /companies/{id}/prospects`; all optional, all
    /// combined with AND. Each is bound once in `prospect_query!`, with its condition.
    pub struct ProspectFilters {
        /// Company industry; repeat for any of several (`industry=A&industry=B`).
        pub industry: Vec<String>,
        /// Prospect department; repeatable.
        pub department: Vec<String>,
        /// Prospect job title level (e.g. `VP`, `Director`); repeatable.
        pub job_title_level: Vec<String>,
        /// Company country.
        pub company_country: Option<String>,
        /// Company state or region.
        pub company_state: Option<String>,
        /// Company city.
        pub company_city: Option<String>,
        /// Prospect country.
        pub prospect_country: Option<String>,
        /// Company id.
        pub company_id: Option<String>,
        /// Company domain.
        pub domain: Option<String>,
        /// Exact email, case-insensitive.
        pub email: Option<String>,
        /// Substring of the job title, case-insensitive (`%` and `_` match themselves).
        pub job_title: Option<String>,
        /// Minimum company revenue (whole currency units).
        pub revenue_min: Option<i64>,
        /// Maximum company revenue (whole currency units).
        pub revenue_max: Option<i64>,
        /// Companies whose employee range reaches at least this size.
        pub employees_min: Option<i32>,
        /// Companies whose employee range starts at or below this size.
        pub employees_max: Option<i32>,
        /// Prospects updated at or after this instant (RFC 3339).
        pub updated_since: Option<DateTime<Utc>>,
    }
}

impl ProspectFilters {
    fn job_title_pattern(&self) -> Option<String> {
        self.job_title
            .as_deref()
            .map(|t| format!("%{}%", escape_like(t)))
    }
}

/// Makes `%`, `_` and `\` match themselves in a LIKE pattern.
pub fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A repeatable filter's values for binding: NULL when none were given.
pub fn any_of(values: &[String]) -> Option<&[String]> {
    (!values.is_empty()).then_some(values)
}

/// The sort keys of prospects, each served in both directions by one index of migration 0002.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProspectSortKey {
    /// Company name, last name, first name, prospect id (the default).
    CompanyName,
    /// Company revenue; unknown revenue counts as the lowest.
    Revenue,
    /// When the prospect was last updated.
    UpdatedAt,
}

impl SortKey for ProspectSortKey {
    const ALL: &'static [(&'static str, Self)] = &[
        ("company_name", ProspectSortKey::CompanyName),
        ("revenue", ProspectSortKey::Revenue),
        ("updated_at", ProspectSortKey::UpdatedAt),
    ];
    const DEFAULT: Sort<Self> = Sort {
        key: ProspectSortKey::CompanyName,
        descending: false,
    };
}

pub type ProspectSort = Sort<ProspectSortKey>;

/// Matches the COALESCE in the revenue order index.
const NO_REVENUE: i64 = i64::MIN;

/// Where the next page starts: the sort key of `row` as the JSON array `page` reads back in its
/// keyset condition (`$1->>0`, `$1->>1`, ...), the same values the ORDER BY compares.
pub fn cursor_key(key: ProspectSortKey, row: &ProspectRow) -> serde_json::Value {
    let id = &row.prospect_id;
    match key {
        ProspectSortKey::CompanyName => json!([
            row.company_name,
            row.last_name.as_deref().unwrap_or_default(),
            row.first_name.as_deref().unwrap_or_default(),
            id
        ]),
        ProspectSortKey::Revenue => json!([row.revenue.unwrap_or(NO_REVENUE), id]),
        ProspectSortKey::UpdatedAt => json!([
            row.prospect_updated_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            id
        ]),
    }
}

/// The statements over the prospect rows of `company_prospect_view`. Parameters: $1 the keyset
/// cursor (a JSON array, or NULL), $2 the number of rows, then one per filter from $3 on, written
/// once here with its condition. Counts leave $1 and $2 NULL.
/// - `rows: <rest>` selects `ProspectRow`s; `rest` (string literals joined by `+`) continues the
///   WHERE clause with the keyset condition, the order and the limit;
/// - `total:` counts the matching rows; `estimate:` asks the planner (EXPLAIN) how many match.
macro_rules! prospect_query {
    (rows($($args:expr),+): $($rest:tt)+) => {
        prospect_query!(@run query_as [ProspectRow,] ($($args),+) ($($rest)+)
            ("SELECT prospect_id AS \"prospect_id!\", salutation, first_name, last_name, full_name, email,
                    job_title, job_title_level, department, job_title_link, prospect_address, prospect_city,
                    prospect_state, prospect_country, prospect_zip_code, prospect_phone, prospect_mobile_phone,
                    prospect_created_at AS \"prospect_created_at!\", prospect_updated_at AS \"prospect_updated_at!\",
                    company_id AS \"company_id!\", domain, company_name AS \"company_name!\", industry,
                    min_employee_size, max_employee_size, revenue, formatted_revenue AS \"formatted_revenue!\",
                    company_address, company_city, company_state, company_country, company_zip_code, company_phone,
                    company_mobile_phone, company_created_at AS \"company_created_at!\",
                    company_updated_at AS \"company_updated_at!\""))
    };
    (facet($filters:expr, $column:literal)) => {
        prospect_query!(@run query_as [FacetCount,] ($filters, None, Some(MAX_FACET_VALUES))
            ("AND " + $column + " IS NOT NULL GROUP BY " + $column + " ORDER BY count(*) DESC, " + $column + " LIMIT $2")
            ("SELECT " + $column + " AS \"value!\", count(*) AS \"count!\""))
    };
    (total($filters:expr)) => {
        prospect_query!(@run query_scalar [] ($filters, None, None) ("") ("SELECT count(*) AS \"total!\""))
    };
    (estimate($filters:expr)) => {
        prospect_query!(@run query_scalar [] ($filters, None, None) ("") ("EXPLAIN (FORMAT JSON) SELECT 1"))
    };
    (@run $kind:ident [$($head:tt)*] ($filters:expr, $after:expr, $rows:expr) ($($rest:tt)+) ($($select:tt)+)) => {{
            let f: &ProspectFilters = $filters;
            let after: Option<&serde_json::Value> = $after;
            let rows: Option<i64> = $rows;
            let job_title_pattern = f.job_title_pattern();
            sqlx::$kind!(
                $($head)*
                $($select)+
                    + " FROM company_prospect_view
                    WHERE prospect_id IS NOT NULL AND ($1::jsonb IS NULL OR $1 IS NOT NULL)
                      AND ($2::bigint IS NULL OR $2 IS NOT NULL)
                      AND ($3::text[] IS NULL OR CASE WHEN cardinality($3) = 1 THEN industry = $3[1]
                                                       ELSE industry = ANY($3) END)
                      AND ($4::text[] IS NULL OR CASE WHEN cardinality($4) = 1 THEN department = $4[1]
                                                       ELSE department = ANY($4) END)
                      AND ($5::text[] IS NULL OR CASE WHEN cardinality($5) = 1 THEN job_title_level = $5[1]
                                                       ELSE job_title_level = ANY($5) END)
                      AND ($6::text IS NULL OR company_country = $6)
                      AND ($7::text IS NULL OR company_state = $7)
                      AND ($8::text IS NULL OR company_city = $8)
                      AND ($9::text IS NULL OR prospect_country = $9)
                      AND ($10::text IS NULL OR company_id = $10)
                      AND ($11::text IS NULL OR domain = $11)
                      AND ($12::text IS NULL OR lower(email) = lower($12))
                      AND ($13::text IS NULL OR job_title ILIKE $13)
                      AND ($14::bigint IS NULL OR revenue >= $14)
                      AND ($15::bigint IS NULL OR revenue <= $15)
                      AND ($16::int IS NULL OR (min_employee_size IS NOT NULL
                                                 AND COALESCE(max_employee_size, 2147483647) >= $16))
                      AND ($17::int IS NULL OR min_employee_size <= $17)
                      AND ($18::timestamptz IS NULL OR prospect_updated_at >= $18) "
                    + $($rest)+,
                after,
                rows,
                any_of(&f.industry),
                any_of(&f.department),
                any_of(&f.job_title_level),
                f.company_country.as_deref(),
                f.company_state.as_deref(),
                f.company_city.as_deref(),
                f.prospect_country.as_deref(),
                f.company_id.as_deref(),
                f.domain.as_deref(),
                f.email.as_deref(),
                job_title_pattern.as_deref(),
                f.revenue_min,
                f.revenue_max,
                f.employees_min,
                f.employees_max,
                f.updated_since,
            )
    }};
}

/// One sort key's page statement in both directions: `columns` are the ORDER BY expressions before
/// the prospect id, `cursor` the same values read back from $1 (see `cursor_key`).
macro_rules! sorted_rows {
    ($pool:expr, $sort:expr, $args:tt, columns: [$($column:literal),+], cursor: $cursor:literal) => {
        if $sort.descending {
            prospect_query!(rows $args: "AND ($1::jsonb IS NULL OR (" $(+ $column + ", ")+ + "prospect_id) < " + $cursor + ")
                                   ORDER BY " $(+ $column + " DESC, ")+ + "prospect_id DESC LIMIT $2")
                .fetch($pool)
        } else {
            prospect_query!(rows $args: "AND ($1::jsonb IS NULL OR (" $(+ $column + ", ")+ + "prospect_id) > " + $cursor + ")
                                   ORDER BY " $(+ $column + ", ")+ + "prospect_id LIMIT $2")
                .fetch($pool)
        }
    };
}

/// One page in `sort` order, after the row whose `cursor_key` is `after` when given. Fetches one
/// row more than `limit` so the caller knows whether another page follows.
#[tracing::instrument(skip(pool, filters, after))]
pub async fn page(
    pool: &PgPool,
    filters: &ProspectFilters,
    sort: ProspectSort,
    after: Option<&serde_json::Value>,
    limit: i64,
) -> Result<Vec<ProspectRow>, sqlx::Error> {
    rows(pool, filters, sort, after, limit + 1)
        .try_collect()
        .await
}

/// At most `limit` rows in `sort` order after `after`, as they arrive (CSV streams them).
pub fn rows<'a>(
    pool: &'a PgPool,
    filters: &'a ProspectFilters,
    sort: ProspectSort,
    after: Option<&'a serde_json::Value>,
    limit: i64,
) -> BoxStream<'a, Result<ProspectRow, sqlx::Error>> {
    match sort.key {
        ProspectSortKey::CompanyName => sorted_rows!(pool, sort, (filters, after, Some(limit)),
            columns: ["COALESCE(company_name, '')", "COALESCE(last_name, '')", "COALESCE(first_name, '')"],
            cursor: "($1->>0, $1->>1, $1->>2, $1->>3)"),
        ProspectSortKey::Revenue => sorted_rows!(pool, sort, (filters, after, Some(limit)),
            columns: ["COALESCE(revenue, '-9223372036854775808'::bigint)"],
            cursor: "(($1->>0)::bigint, $1->>1)"),
        ProspectSortKey::UpdatedAt => sorted_rows!(pool, sort, (filters, after, Some(limit)),
            columns: ["prospect_updated_at"],
            cursor: "(($1->>0)::timestamptz, $1->>1)"),
    }
}

/// The facets of prospects: each a filter whose values are counted, under all the other filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProspectFacet {
    Industry,
    Department,
    JobTitleLevel,
    CompanyCountry,
}

impl Facet for ProspectFacet {
    const ALL: &'static [(&'static str, Self)] = &[
        ("industry", ProspectFacet::Industry),
        ("department", ProspectFacet::Department),
        ("job_title_level", ProspectFacet::JobTitleLevel),
        ("company_country", ProspectFacet::CompanyCountry),
    ];
}

/// The most frequent values of `facet` among the prospects matching `filters` except the facet's
/// own filter (a shop's sidebar: choosing one industry still shows the others), most frequent first.
#[tracing::instrument(skip(pool, filters))]
pub async fn facet_counts(
    pool: &PgPool,
    filters: &ProspectFilters,
    facet: ProspectFacet,
) -> Result<Vec<FacetCount>, sqlx::Error> {
    let filters = &filters.without(facet.name());
    match facet {
        ProspectFacet::Industry => {
            prospect_query!(facet(filters, "industry"))
                .fetch_all(pool)
                .await
        }
        ProspectFacet::Department => {
            prospect_query!(facet(filters, "department"))
                .fetch_all(pool)
                .await
        }
        ProspectFacet::JobTitleLevel => {
            prospect_query!(facet(filters, "job_title_level"))
                .fetch_all(pool)
                .await
        }
        ProspectFacet::CompanyCountry => {
            prospect_query!(facet(filters, "company_country"))
                .fetch_all(pool)
                .await
        }
    }
}

/// How many prospects match (all pages).
#[tracing::instrument(skip(pool, filters))]
pub async fn count_exact(pool: &PgPool, filters: &ProspectFilters) -> Result<i64, sqlx::Error> {
    prospect_query!(total(filters)).fetch_one(pool).await
}

/// The planner's estimate of how many prospects match: instant, but only as good as the statistics.
#[tracing::instrument(skip(pool, filters))]
pub async fn count_estimate(pool: &PgPool, filters: &ProspectFilters) -> Result<i64, sqlx::Error> {
    let plan = prospect_query!(estimate(filters)).fetch_one(pool).await?;
    Ok(plan.as_ref().map_or(0, super::planned_rows))
}

/// One prospect by id.
#[tracing::instrument(skip(pool))]
pub async fn by_id(pool: &PgPool, prospect_id: &str) -> Result<Option<ProspectRow>, sqlx::Error> {
    let filters = ProspectFilters::default();
    let key = json!([prospect_id]);
    prospect_query!(rows(&filters, Some(&key), None): "AND prospect_id = $1->>0")
        .fetch_optional(pool)
        .await
}

/// Whether a company exists (it has a row here even without prospects).
#[tracing::instrument(skip(pool))]
pub async fn company_exists(pool: &PgPool, company_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM company_prospect_view WHERE company_id = $1) AS "exists!""#,
        company_id
    )
    .fetch_one(pool)
    .await
}
