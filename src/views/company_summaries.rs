//! `company_summary_view`: `GET /companies`, `/companies/{id}` and `/companies/facets`.
//!
//! The same two statement shapes as `company_prospects` (a page, the counts), over the rows
//! `matching_companies!` keeps; see there for how the optional filters fold away.

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::filters::{any_of, filters};
use super::matching::{at_least, in_any_of, revenue_at_least, revenue_at_most, same};
use super::order::{Counted, Facet, Sort, page_in_order, page_shape, sort_keys};
use super::{Admits, Api, IdPath, ReadModel, ViewName, statements_of_page_and_counts};

pub struct CompanySummaries;

/// One company with counts over its prospects.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

filters! {
    /// The filters of `GET /companies`; all optional, all combined with AND.
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
        #[reads("revenue")]
        pub revenue_min: Option<i64>,
        /// Maximum revenue (whole currency units).
        #[reads("revenue")]
        pub revenue_max: Option<i64>,
        /// Companies whose employee range reaches at least this size.
        #[reads("min_employee_size", "max_employee_size")]
        pub employees_min: Option<i32>,
        /// Companies whose employee range starts at or below this size.
        #[reads("min_employee_size")]
        pub employees_max: Option<i32>,
        /// Companies with at least this many prospects.
        #[reads("prospect_count")]
        pub min_prospects: Option<i64>,
    }
}

sort_keys! {
    /// The sort keys of companies, each served in both directions by one index of the view.
    pub enum CompanySortKey {
        Name = "name", reads ["name"], parts [KeyPart::Text, KeyPart::Text];
        /// Unknown revenue counts as the lowest.
        Revenue = "revenue", reads ["revenue"], parts [KeyPart::Number, KeyPart::Text];
        ProspectCount = "prospect_count", reads ["prospect_count"],
            parts [KeyPart::Number, KeyPart::Text];
        /// A company without prospects counts as the oldest.
        LastProspectUpdate = "last_prospect_update", reads ["last_prospect_update"],
            parts [KeyPart::Instant, KeyPart::Text];
    }
}

pub type CompanySort = Sort<CompanySortKey>;

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

/// The rows the companies' statements read: every filter once, $3 to $12, for the page and the
/// counts (see `company_prospects::matching_prospects!`).
macro_rules! matching_companies {
    ($kind:ident [$($head:tt)*] select ($($select:tt)+) then ($($tail:tt)+), $filters:expr,
     $first:expr, $second:expr $(, $more:expr)*) => {{
        let f: &CompanyFilters = $filters;
        sqlx::$kind!(
            $($head)*
            $($select)+
                + r#"
               FROM company_summary_view
               WHERE ($3::text[] IS NULL OR CASE WHEN cardinality($3) = 1 THEN industry = $3[1]
                                                  ELSE industry = ANY($3) END)
                 AND ($4::text IS NULL OR country = $4)
                 AND ($5::text IS NULL OR state = $5)
                 AND ($6::text IS NULL OR city = $6)
                 AND ($7::text IS NULL OR domain = $7)
                 AND ($8::bigint IS NULL OR COALESCE(revenue, '-9223372036854775808'::bigint) >= GREATEST($8, '-9223372036854775807'::bigint))
                 AND ($9::bigint IS NULL OR COALESCE(revenue, '-9223372036854775808'::bigint) BETWEEN '-9223372036854775807'::bigint AND $9)
                 AND ($10::int IS NULL OR (min_employee_size IS NOT NULL
                                            AND COALESCE(max_employee_size, 2147483647) >= $10))
                 AND ($11::int IS NULL OR min_employee_size <= $11)
                 AND ($12::bigint IS NULL OR prospect_count >= $12)"#
                + $($tail)+,
            $first,
            $second,
            any_of(&f.industry),
            f.country.as_deref(),
            f.state.as_deref(),
            f.city.as_deref(),
            f.domain.as_deref(),
            f.revenue_min,
            f.revenue_max,
            f.employees_min,
            f.employees_max,
            f.min_prospects,
            $($more),*
        )
    }};
}

/// The page statement: the matching companies in one order, after the keyset cursor $1, at most
/// $2 of them; $13 picks one company by id (see `company_prospects::page!`).
macro_rules! page {
    (($kind:ident [$($head:tt)*] $explain:literal, $filters:expr, $one:expr, $after:expr, $rows:expr),
     shape: $shape:ident, keyset: $keyset:tt, order: $order:tt) => {
        page_shape!($shape, matching_companies!($kind [$($head)*] $explain,
            r#"SELECT company_id AS "company_id!", domain, name AS "name!", industry, min_employee_size,
                      max_employee_size, revenue, formatted_revenue AS "formatted_revenue!", address, city,
                      state, country, prospect_count AS "prospect_count!",
                      department_count AS "department_count!", job_level_count AS "job_level_count!",
                      last_prospect_update"#,
            r#"
                 AND ($13::text IS NULL OR company_id = $13)"#,
            $keyset, $order),
            $filters, $after, $rows, $one)
    };
}

/// The counting statement: how many matching companies have each value of the facet $1, most
/// frequent first, at most $2 values. With $1 NULL: the total, in one group (see
/// `company_prospects::counts!`).
macro_rules! counts {
    ($filters:expr, $facet:expr, $values:expr) => {
        matching_companies!(query_as [Counted,]
            select (r#"SELECT CASE $1::text WHEN 'industry' THEN industry WHEN 'country' THEN country END AS value,
                      count(*) AS "count!""#)
            then (r#"
                 AND ($1 IS NULL OR CASE $1 WHEN 'industry' THEN industry WHEN 'country' THEN country END
                                    IS NOT NULL)
               GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $2"#),
            $filters, $facet, $values)
    };
}

impl ReadModel for CompanySummaries {
    const VIEW: ViewName = ViewName::CompanySummaryView;
    const API: Api = Api {
        tag: "companies",
        path: "/companies",
        list: (
            "list_companies",
            "Companies with their prospect counts, filtered, sorted and paged.",
        ),
        rows: "companies",
        sort_doc: "`name`, `revenue` (unknown revenue lowest), `prospect_count` or \
                   `last_prospect_update` (companies without prospects oldest).",
        one: Some(IdPath {
            path: "/companies/{company_id}",
            param: "company_id",
            tag: "companies",
            operation: "get_company",
            summary: "One company with its prospect counts.",
            noun: "company",
        }),
        facets: Some("company_facets"),
        scoped: None,
    };
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("name", "company_name"),
        ("address", "company_address"),
        ("city", "company_city"),
        ("state", "company_state"),
        ("country", "company_country"),
    ];
    type Row = CompanyRow;
    type Filters = CompanyFilters;
    type Sort = CompanySortKey;
    type Facet = CompanyFacet;
    const ROW_BYTES: usize = 450;

    statements_of_page_and_counts! {
        row: CompanyRow, filters: CompanyFilters, sort: CompanySortKey, facet: CompanyFacet,
        id: "company_id"
    }

    /// `company_summary_view_industry_name_order`, `_country_name_order` and
    /// `_country_prospect_count_order` (schema/current.sql).
    fn order_led_by(sort: CompanySortKey) -> &'static [&'static str] {
        match sort {
            CompanySortKey::Name => &["industry", "country"],
            CompanySortKey::ProspectCount => &["country"],
            CompanySortKey::Revenue | CompanySortKey::LastProspectUpdate => &[],
        }
    }

    /// The conditions of `page!`, one per filter, as Rust can check them.
    fn admits(f: &CompanyFilters, row: &CompanyRow) -> Admits {
        Admits::all([
            in_any_of(&f.industry, row.industry.as_deref()),
            same(&f.country, row.country.as_deref()),
            same(&f.state, row.state.as_deref()),
            same(&f.city, row.city.as_deref()),
            same(&f.domain, row.domain.as_deref()),
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
            at_least(f.min_prospects, Some(row.prospect_count)),
        ])
    }

    fn id(row: &CompanyRow) -> Option<&str> {
        Some(&row.company_id)
    }

    fn facet_value(facet: CompanyFacet, row: &CompanyRow) -> Option<Option<&str>> {
        Some(match facet {
            CompanyFacet::Industry => row.industry.as_deref(),
            CompanyFacet::Country => row.country.as_deref(),
        })
    }

    fn cursor_key(sort: CompanySort, row: &CompanyRow) -> Value {
        let id = &row.company_id;
        match sort.key {
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
}

/// The page statement in `sort`'s order; `one` restricts it to one company.
fn sorted_rows<'a>(
    pool: &'a PgPool,
    filters: &'a CompanyFilters,
    one: Option<&'a str>,
    sort: CompanySort,
    after: Option<&'a Value>,
    limit: i64,
    filter_first: bool,
) -> BoxStream<'a, Result<CompanyRow, sqlx::Error>> {
    let rows = Some(limit);
    page_in_order!(sort, filter_first, page!(query_as [CompanyRow,] "", filters, one, after, rows).fetch(pool), {
        CompanySortKey::Name => ["COALESCE(name, '')", "company_id"] from "($1->>0, $1->>1)";
        CompanySortKey::Revenue => ["COALESCE(revenue, '-9223372036854775808'::bigint)", "company_id"]
            from "(($1->>0)::bigint, $1->>1)";
        CompanySortKey::ProspectCount => ["prospect_count", "company_id"] from "(($1->>0)::bigint, $1->>1)";
        CompanySortKey::LastProspectUpdate => ["COALESCE(last_prospect_update, '-infinity'::timestamptz)",
                                               "company_id"]
            from "(($1->>0)::timestamptz, $1->>1)";
    })
}
