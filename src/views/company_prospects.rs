//! `company_prospect_view`'s prospects: `GET /prospects`, `/prospects/{id}`, `/prospects/facets` and
//! `/companies/{id}/prospects`.
//!
//! Two statements: a page in one order (`page!`, walking the order's index or, for few matches,
//! reading them first: `page_shape!`; under EXPLAIN it gives the planner's estimate of the
//! matches), and the counts of a facet or of all matching rows (`counts!`);
//! `statements_of_page_and_counts!` makes the read model's statements of them. Both
//! read the rows `matching_prospects!` keeps, where every filter is written once as a
//! `($n IS NULL OR condition)` line; `.sqlx/` holds each statement whole. The read pool runs with
//! `plan_cache_mode = force_custom_plan`, so each execution is planned with its values: the unused
//! filters fold away (so does the CASE that turns a one-value list into an equality) and the indexes
//! of the view can deliver a sorted first page in either direction.
//!
//! Adding a filter: a field in `ProspectFilters` (its name, type and doc comment are the parameter,
//! its parsing and its OpenAPI entry), its line and bind in `matching_prospects!`, its condition in
//! `admits`, and an index. `tests/api/every_read_model.rs` checks that every declared filter
//! reaches every statement.

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::filters::{any_of, contains_pattern, filters};
use super::matching::{
    ascii_contains, ascii_equal, at_least, in_any_of, revenue_at_least, revenue_at_most, same,
};
use super::order::{Counted, Facet, Sort, page_in_order, page_shape, sort_keys};
use super::{Admits, Api, IdPath, Image, ReadModel, ViewName, statements_of_page_and_counts};

/// The prospects of `company_prospect_view` (a company without prospects has a row there too, which
/// no statement here returns).
pub struct CompanyProspects;

/// One prospect with its company, as the API returns it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

filters! {
    /// The filters of `GET /prospects` and `GET /companies/{id}/prospects`; all optional, all
    /// combined with AND.
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
        #[reads("revenue")]
        pub revenue_min: Option<i64>,
        /// Maximum company revenue (whole currency units).
        #[reads("revenue")]
        pub revenue_max: Option<i64>,
        /// Companies whose employee range reaches at least this size.
        #[reads("min_employee_size", "max_employee_size")]
        pub employees_min: Option<i32>,
        /// Companies whose employee range starts at or below this size.
        #[reads("min_employee_size")]
        pub employees_max: Option<i32>,
        /// Prospects updated at or after this instant (RFC 3339).
        #[reads("prospect_updated_at")]
        pub updated_since: Option<DateTime<Utc>>,
    }
}

sort_keys! {
    /// The sort keys of prospects, each served in both directions by one index of the view.
    pub enum ProspectSortKey {
        /// Company name, last name, first name, prospect id (the default).
        CompanyName = "company_name", reads ["company_name", "last_name", "first_name"],
            parts [KeyPart::Text; 4];
        /// Company revenue; unknown revenue counts as the lowest.
        Revenue = "revenue", reads ["revenue"], parts [KeyPart::Number, KeyPart::Text];
        /// When the prospect was last updated.
        UpdatedAt = "updated_at", reads ["prospect_updated_at"],
            parts [KeyPart::Instant, KeyPart::Text];
    }
}

pub type ProspectSort = Sort<ProspectSortKey>;

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

/// Matches the COALESCE in the revenue order index.
const NO_REVENUE: i64 = i64::MIN;

/// The rows the prospects' statements read: every filter as a `($n IS NULL OR condition)` line, $3
/// to $18, written once for the page and the counts, so that a count counts what the pages show.
/// The statement is `$select`, then `FROM … WHERE` the filters, then `$tail`; its parameters are
/// `$first`, `$second`, the filters' and then `$more`. The revenue bounds are written on the revenue
/// order's expression (no revenue is `NO_REVENUE`, which they leave out): its index bounds them in
/// every order, and its statistics estimate them (schema/current.sql).
macro_rules! matching_prospects {
    ($kind:ident [$($head:tt)*] select ($($select:tt)+) then ($($tail:tt)+), $filters:expr,
     $first:expr, $second:expr $(, $more:expr)*) => {{
        let f: &ProspectFilters = $filters;
        sqlx::$kind!(
            $($head)*
            $($select)+
                + r#"
               FROM company_prospect_view
               WHERE prospect_id IS NOT NULL
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
                 AND ($14::bigint IS NULL OR COALESCE(revenue, '-9223372036854775808'::bigint) >= GREATEST($14, '-9223372036854775807'::bigint))
                 AND ($15::bigint IS NULL OR COALESCE(revenue, '-9223372036854775808'::bigint) BETWEEN '-9223372036854775807'::bigint AND $15)
                 AND ($16::int IS NULL OR (min_employee_size IS NOT NULL
                                            AND COALESCE(max_employee_size, 2147483647) >= $16))
                 AND ($17::int IS NULL OR min_employee_size <= $17)
                 AND ($18::timestamptz IS NULL OR prospect_updated_at >= $18)"#
                + $($tail)+,
            $first,
            $second,
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
            contains_pattern(f.job_title.as_deref()),
            f.revenue_min,
            f.revenue_max,
            f.employees_min,
            f.employees_max,
            f.updated_since,
            $($more),*
        )
    }};
}

/// The page statement: the matching prospects in one order, after the keyset cursor $1 (the sort
/// key of the previous page's last row, as `cursor_key` writes it, or NULL for the first page), at
/// most $2 of them; $19 picks one prospect by id. `page_in_order!` gives the shape, the `keyset`
/// condition (the sort key compared with $1) and the `order`.
macro_rules! page {
    (($kind:ident [$($head:tt)*] $explain:literal, $filters:expr, $one:expr, $after:expr, $rows:expr),
     shape: $shape:ident, keyset: $keyset:tt, order: $order:tt) => {
        page_shape!($shape, matching_prospects!($kind [$($head)*] $explain,
            r#"SELECT prospect_id AS "prospect_id!", salutation, first_name, last_name, full_name, email,
                      job_title, job_title_level, department, job_title_link, prospect_address, prospect_city,
                      prospect_state, prospect_country, prospect_zip_code, prospect_phone, prospect_mobile_phone,
                      prospect_created_at AS "prospect_created_at!", prospect_updated_at AS "prospect_updated_at!",
                      company_id AS "company_id!", domain, company_name AS "company_name!", industry,
                      min_employee_size, max_employee_size, revenue, formatted_revenue AS "formatted_revenue!",
                      company_address, company_city, company_state, company_country, company_zip_code,
                      company_phone, company_mobile_phone, company_created_at AS "company_created_at!",
                      company_updated_at AS "company_updated_at!""#,
            r#"
                 AND ($19::text IS NULL OR prospect_id = $19)"#,
            $keyset, $order),
            $filters, $after, $rows, $one)
    };
}

/// The counting statement: how many matching prospects have each value of the facet $1 (its
/// column, chosen by the CASE, which the custom plan folds to that column), most frequent first, at
/// most $2 values. With $1 NULL every matching row falls in one group: the total.
macro_rules! counts {
    ($filters:expr, $facet:expr, $values:expr) => {
        matching_prospects!(query_as [Counted,]
            select (r#"SELECT CASE $1::text WHEN 'industry' THEN industry WHEN 'department' THEN department
                                    WHEN 'job_title_level' THEN job_title_level
                                    WHEN 'company_country' THEN company_country END AS value,
                      count(*) AS "count!""#)
            then (r#"
                 AND ($1 IS NULL OR CASE $1 WHEN 'industry' THEN industry WHEN 'department' THEN department
                                            WHEN 'job_title_level' THEN job_title_level
                                            WHEN 'company_country' THEN company_country END IS NOT NULL)
               GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $2"#),
            $filters, $facet, $values)
    };
}

impl ReadModel for CompanyProspects {
    const VIEW: ViewName = ViewName::CompanyProspectView;
    const API: Api = Api {
        tag: "prospects",
        path: "/prospects",
        list: (
            "list_prospects",
            "Prospects with their company, filtered, sorted and paged.",
        ),
        rows: "prospects",
        sort_doc: "`company_name` (company name, last name, first name, id), `revenue` \
                   (unknown revenue lowest) or `updated_at`.",
        one: Some(IdPath {
            path: "/prospects/{prospect_id}",
            param: "prospect_id",
            tag: "prospects",
            operation: "get_prospect",
            summary: "One prospect with its company.",
            noun: "prospect",
        }),
        facets: Some("prospect_facets"),
        scoped: Some(IdPath {
            path: "/companies/{company_id}/prospects",
            param: "company_id",
            tag: "companies",
            operation: "list_company_prospects",
            summary: "The prospects of one company (the same filters as `/prospects`, without \
                      `company_id`).",
            noun: "company",
        }),
    };
    type Row = ProspectRow;
    type Filters = ProspectFilters;
    type Sort = ProspectSortKey;
    type Facet = ProspectFacet;
    const ROW_BYTES: usize = 1200;

    statements_of_page_and_counts! {
        row: ProspectRow, filters: ProspectFilters, sort: ProspectSortKey, facet: ProspectFacet,
        id: "prospect_id"
    }

    fn cursor_key(sort: ProspectSort, row: &ProspectRow) -> Value {
        let id = &row.prospect_id;
        match sort.key {
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

    /// `company_prospect_view_industry_name_order` (schema/current.sql).
    fn order_led_by(sort: ProspectSortKey) -> &'static [&'static str] {
        match sort {
            ProspectSortKey::CompanyName => &["industry"],
            ProspectSortKey::Revenue | ProspectSortKey::UpdatedAt => &[],
        }
    }

    /// The conditions of `page!`, one per filter, as Rust can check them.
    fn admits(f: &ProspectFilters, row: &ProspectRow) -> Admits {
        Admits::all([
            in_any_of(&f.industry, row.industry.as_deref()),
            in_any_of(&f.department, row.department.as_deref()),
            in_any_of(&f.job_title_level, row.job_title_level.as_deref()),
            same(&f.company_country, row.company_country.as_deref()),
            same(&f.company_state, row.company_state.as_deref()),
            same(&f.company_city, row.company_city.as_deref()),
            same(&f.prospect_country, row.prospect_country.as_deref()),
            same(&f.company_id, Some(&row.company_id)),
            same(&f.domain, row.domain.as_deref()),
            ascii_equal(&f.email, row.email.as_deref()),
            ascii_contains(&f.job_title, row.job_title.as_deref()),
            revenue_at_least(f.revenue_min, row.revenue),
            revenue_at_most(f.revenue_max, row.revenue),
            at_least(
                f.employees_min.map(i64::from),
                row.min_employee_size
                    .map(|_| i64::from(row.max_employee_size.unwrap_or(i32::MAX))),
            ),
            f.employees_max.map_or(Admits::Yes, |max| {
                Admits::from(row.min_employee_size.is_some_and(|min| min <= max))
            }),
            f.updated_since.map_or(Admits::Yes, |since| {
                Admits::from(row.prospect_updated_at >= since)
            }),
        ])
    }

    fn id(row: &ProspectRow) -> Option<&str> {
        Some(&row.prospect_id)
    }

    fn facet_value(facet: ProspectFacet, row: &ProspectRow) -> Option<Option<&str>> {
        Some(match facet {
            ProspectFacet::Industry => row.industry.as_deref(),
            ProspectFacet::Department => row.department.as_deref(),
            ProspectFacet::JobTitleLevel => row.job_title_level.as_deref(),
            ProspectFacet::CompanyCountry => row.company_country.as_deref(),
        })
    }

    /// A company without prospects has a row with no prospect: it only says the company exists.
    fn image(recorded: Value) -> Image<ProspectRow> {
        if recorded["prospect_id"].is_null() {
            return match recorded["company_id"].as_str() {
                Some(company) => Image::Parent(company.to_owned()),
                None => Image::Unknown,
            };
        }
        serde_json::from_value(recorded).map_or(Image::Unknown, Image::Row)
    }

    async fn parent_exists(pool: &PgPool, company_id: &str) -> Result<bool, sqlx::Error> {
        // The view has a row for every company, with or without prospects.
        sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM company_prospect_view WHERE company_id = $1) AS "exists!""#,
            company_id
        )
        .fetch_one(pool)
        .await
    }
}

/// The page statement in `sort`'s order; `one` restricts it to one prospect. Each order is read
/// by an index of the view (schema/current.sql), forwards or backwards.
fn sorted_rows<'a>(
    pool: &'a PgPool,
    filters: &'a ProspectFilters,
    one: Option<&'a str>,
    sort: ProspectSort,
    after: Option<&'a Value>,
    limit: i64,
    filter_first: bool,
) -> BoxStream<'a, Result<ProspectRow, sqlx::Error>> {
    let rows = Some(limit);
    page_in_order!(sort, filter_first, page!(query_as [ProspectRow,] "", filters, one, after, rows).fetch(pool), {
        ProspectSortKey::CompanyName => ["COALESCE(company_name, '')", "COALESCE(last_name, '')",
                                         "COALESCE(first_name, '')", "prospect_id"]
            from "($1->>0, $1->>1, $1->>2, $1->>3)";
        ProspectSortKey::Revenue => ["COALESCE(revenue, '-9223372036854775808'::bigint)", "prospect_id"]
            from "(($1->>0)::bigint, $1->>1)";
        ProspectSortKey::UpdatedAt => ["prospect_updated_at", "prospect_id"]
            from "(($1->>0)::timestamptz, $1->>1)";
    })
}
