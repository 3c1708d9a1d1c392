//! Queries on `company_summary_view`: `GET /companies` and `/companies/{id}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

/// One company with counts over its prospects.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompanyRow {
    pub company_id: String,
    pub domain: Option<String>,
    pub name: Option<String>,
    pub industry: Option<String>,
    pub min_employee_size: Option<i32>,
    pub max_employee_size: Option<i32>,
    /// Whole currency units.
    pub revenue: Option<i64>,
    pub formatted_revenue: Option<String>,
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

#[derive(Debug, Clone, Default, Serialize)]
pub struct CompanyFilters {
    pub industries: Vec<String>,
    pub country: Option<String>,
    pub state: Option<String>,
    pub city: Option<String>,
    pub domain: Option<String>,
    pub revenue_min: Option<i64>,
    pub revenue_max: Option<i64>,
    pub employees_min: Option<i32>,
    pub employees_max: Option<i32>,
    pub min_prospects: Option<i64>,
}

impl CompanyFilters {
    /// See `ProspectFilters::single_industry`: an equality lets an index deliver the order.
    fn single_industry(&self) -> Option<&str> {
        (self.industries.len() == 1).then(|| self.industries[0].as_str())
    }

    fn several_industries(&self) -> Option<&[String]> {
        (self.industries.len() > 1).then_some(self.industries.as_slice())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompanySort {
    Name,
    RevenueDesc,
    ProspectCountDesc,
    LastProspectUpdateDesc,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CompanyKey {
    Name {
        name: String,
        id: String,
    },
    RevenueDesc {
        revenue: i64,
        id: String,
    },
    ProspectCountDesc {
        count: i64,
        id: String,
    },
    LastProspectUpdateDesc {
        at: Option<DateTime<Utc>>,
        id: String,
    },
}

impl CompanyKey {
    pub fn of(sort: CompanySort, row: &CompanyRow) -> CompanyKey {
        let id = row.company_id.clone();
        match sort {
            CompanySort::Name => CompanyKey::Name {
                name: row.name.clone().unwrap_or_default(),
                id,
            },
            CompanySort::RevenueDesc => CompanyKey::RevenueDesc {
                revenue: row.revenue.unwrap_or(i64::MIN),
                id,
            },
            CompanySort::ProspectCountDesc => CompanyKey::ProspectCountDesc {
                count: row.prospect_count,
                id,
            },
            CompanySort::LastProspectUpdateDesc => CompanyKey::LastProspectUpdateDesc {
                at: row.last_prospect_update,
                id,
            },
        }
    }
}

/// Queries over `company_summary_view` with every filter of `CompanyFilters` bound as $1..$11
/// (written once, here); see `prospect_query!` for the forms.
macro_rules! company_query {
    (rows: $rest:literal, $filters:expr $(, $extra:expr)* $(,)?) => {
        company_query!(@run query_as [CompanyRow,]
            "SELECT company_id AS \"company_id!\", domain, name, industry, min_employee_size, max_employee_size,
                    revenue, formatted_revenue, address, city, state, country,
                    prospect_count AS \"prospect_count!\", department_count AS \"department_count!\",
                    job_level_count AS \"job_level_count!\", last_prospect_update",
            $rest, $filters $(, $extra)*)
    };
    (total: $filters:expr) => {
        company_query!(@run query_scalar [] "SELECT count(*) AS \"total!\"", "", $filters)
    };
    (estimate: $filters:expr) => {
        company_query!(@run query_scalar [] "EXPLAIN (FORMAT JSON) SELECT 1", "", $filters)
    };
    (@run $kind:ident [$($head:tt)*] $select:literal, $rest:literal, $filters:expr $(, $extra:expr)*) => {{
        let f: &CompanyFilters = $filters;
        sqlx::$kind!(
            $($head)*
            $select
                + " FROM company_summary_view
                WHERE ($1::text IS NULL OR industry = $1)
                  AND ($2::text[] IS NULL OR industry = ANY($2))
                  AND ($3::text IS NULL OR country = $3)
                  AND ($4::text IS NULL OR state = $4)
                  AND ($5::text IS NULL OR city = $5)
                  AND ($6::text IS NULL OR domain = $6)
                  AND ($7::bigint IS NULL OR revenue >= $7)
                  AND ($8::bigint IS NULL OR revenue <= $8)
                  AND ($9::int IS NULL OR (min_employee_size IS NOT NULL
                                            AND COALESCE(max_employee_size, 2147483647) >= $9))
                  AND ($10::int IS NULL OR min_employee_size <= $10)
                  AND ($11::bigint IS NULL OR prospect_count >= $11) "
                + $rest,
            f.single_industry(),
            f.several_industries(),
            f.country.as_deref(),
            f.state.as_deref(),
            f.city.as_deref(),
            f.domain.as_deref(),
            f.revenue_min,
            f.revenue_max,
            f.employees_min,
            f.employees_max,
            f.min_prospects,
            $($extra),*
        )
    }};
}

/// One page in `sort` order after `after`; one row more than `limit` to tell whether more follow.
#[tracing::instrument(skip(pool, filters, after))]
pub async fn page(
    pool: &PgPool,
    filters: &CompanyFilters,
    sort: CompanySort,
    after: Option<&CompanyKey>,
    limit: i64,
) -> Result<Vec<CompanyRow>, sqlx::Error> {
    let fetch = limit + 1;
    match sort {
        CompanySort::Name => {
            let (name, id) = match after {
                Some(CompanyKey::Name { name, id }) => (Some(name.as_str()), Some(id.as_str())),
                _ => (None, None),
            };
            company_query!(
                rows: "AND ($12::text IS NULL OR (COALESCE(name, ''), company_id) > ($12, $13::text))
                       ORDER BY COALESCE(name, ''), company_id
                       LIMIT $14",
                filters, name, id, fetch
            )
            .fetch_all(pool)
            .await
        }
        CompanySort::RevenueDesc => {
            let (revenue, id) = match after {
                Some(CompanyKey::RevenueDesc { revenue, id }) => {
                    (Some(*revenue), Some(id.as_str()))
                }
                _ => (None, None),
            };
            company_query!(
                rows: "AND ($12::bigint IS NULL OR (COALESCE(revenue, '-9223372036854775808'::bigint), company_id)
                                                  < ($12, $13::text))
                       ORDER BY COALESCE(revenue, '-9223372036854775808'::bigint) DESC, company_id DESC
                       LIMIT $14",
                filters, revenue, id, fetch
            )
            .fetch_all(pool)
            .await
        }
        CompanySort::ProspectCountDesc => {
            let (count, id) = match after {
                Some(CompanyKey::ProspectCountDesc { count, id }) => {
                    (Some(*count), Some(id.as_str()))
                }
                _ => (None, None),
            };
            company_query!(
                rows: "AND ($12::bigint IS NULL OR (prospect_count, company_id) < ($12, $13::text))
                       ORDER BY prospect_count DESC, company_id DESC
                       LIMIT $14",
                filters, count, id, fetch
            )
            .fetch_all(pool)
            .await
        }
        CompanySort::LastProspectUpdateDesc => {
            // A company without prospects has no update time: it sorts last, as '-infinity'.
            let (has_cursor, at, id) = match after {
                Some(CompanyKey::LastProspectUpdateDesc { at, id }) => {
                    (Some(true), *at, Some(id.as_str()))
                }
                _ => (None, None, None),
            };
            company_query!(
                rows: "AND ($12::boolean IS NULL
                            OR (COALESCE(last_prospect_update, '-infinity'::timestamptz), company_id)
                               < (COALESCE($13::timestamptz, '-infinity'::timestamptz), $14::text))
                       ORDER BY COALESCE(last_prospect_update, '-infinity'::timestamptz) DESC, company_id DESC
                       LIMIT $15",
                filters, has_cursor, at, id, fetch
            )
            .fetch_all(pool)
            .await
        }
    }
}

#[tracing::instrument(skip(pool, filters))]
pub async fn count_exact(pool: &PgPool, filters: &CompanyFilters) -> Result<i64, sqlx::Error> {
    company_query!(total: filters).fetch_one(pool).await
}

#[tracing::instrument(skip(pool, filters))]
pub async fn count_estimate(pool: &PgPool, filters: &CompanyFilters) -> Result<i64, sqlx::Error> {
    let plan = company_query!(estimate: filters).fetch_one(pool).await?;
    Ok(plan.as_ref().map_or(0, super::planned_rows))
}

#[tracing::instrument(skip(pool))]
pub async fn by_id(pool: &PgPool, company_id: &str) -> Result<Option<CompanyRow>, sqlx::Error> {
    let filters = CompanyFilters::default();
    company_query!(rows: "AND company_id = $12", &filters, company_id)
        .fetch_optional(pool)
        .await
}
