//! Queries on `company_prospect_view`: `GET /prospects`, `/prospects/{id}` and
//! `/companies/{id}/prospects`.
//!
//! Every filter is written once, in `prospect_query!`, as `($n IS NULL OR condition)`. The read pool
//! runs with `plan_cache_mode = force_custom_plan`, so each execution is planned with its values: the
//! unused filters fold away and the indexes of migration 0002 can deliver a sorted first page.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

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
    #[serde(serialize_with = "super::timestamp_json::optional")]
    pub prospect_created_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "super::timestamp_json::optional")]
    pub prospect_updated_at: Option<DateTime<Utc>>,
    pub company_id: String,
    pub domain: Option<String>,
    pub company_name: Option<String>,
    pub industry: Option<String>,
    pub min_employee_size: Option<i32>,
    pub max_employee_size: Option<i32>,
    /// Whole currency units.
    pub revenue: Option<i64>,
    /// For display: `1.5B`, `2.5K`, `$999`, `NA`.
    pub formatted_revenue: Option<String>,
    pub company_address: Option<String>,
    pub company_city: Option<String>,
    pub company_state: Option<String>,
    pub company_country: Option<String>,
    pub company_zip_code: Option<String>,
    pub company_phone: Option<String>,
    pub company_mobile_phone: Option<String>,
    #[serde(serialize_with = "super::timestamp_json::optional")]
    pub company_created_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "super::timestamp_json::optional")]
    pub company_updated_at: Option<DateTime<Utc>>,
}

/// The filters of `GET /prospects`; all optional, all combined with AND.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProspectFilters {
    /// Any of these industries (sorted, de-duplicated).
    pub industries: Vec<String>,
    pub departments: Vec<String>,
    pub job_title_levels: Vec<String>,
    pub company_country: Option<String>,
    pub company_state: Option<String>,
    pub company_city: Option<String>,
    pub prospect_country: Option<String>,
    pub company_id: Option<String>,
    pub domain: Option<String>,
    /// Case-insensitive exact match.
    pub email: Option<String>,
    /// Case-insensitive substring.
    pub job_title: Option<String>,
    pub revenue_min: Option<i64>,
    pub revenue_max: Option<i64>,
    /// Companies whose employee range overlaps `employees_min..=employees_max`.
    pub employees_min: Option<i32>,
    pub employees_max: Option<i32>,
    pub updated_since: Option<DateTime<Utc>>,
}

impl ProspectFilters {
    /// One industry is passed as an equality, not `= ANY(array)`: only an equality lets the planner
    /// use the (industry, name order) index to return rows already in order.
    fn single_industry(&self) -> Option<&str> {
        (self.industries.len() == 1).then(|| self.industries[0].as_str())
    }

    fn several_industries(&self) -> Option<&[String]> {
        (self.industries.len() > 1).then_some(self.industries.as_slice())
    }

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

fn non_empty(values: &[String]) -> Option<&[String]> {
    (!values.is_empty()).then_some(values)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProspectSort {
    /// Company name, last name, first name, prospect id (the default).
    CompanyName,
    /// Highest revenue first; unknown revenue last.
    RevenueDesc,
    /// Most recently updated first.
    UpdatedAtDesc,
}

/// Where the next page starts: the sort key of the last row of the previous one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProspectKey {
    CompanyName {
        company: String,
        last: String,
        first: String,
        id: String,
    },
    RevenueDesc {
        revenue: i64,
        id: String,
    },
    UpdatedAtDesc {
        updated_at: DateTime<Utc>,
        id: String,
    },
}

/// Matches the COALESCE in the revenue order index.
const NO_REVENUE: i64 = i64::MIN;

impl ProspectKey {
    pub fn of(sort: ProspectSort, row: &ProspectRow) -> ProspectKey {
        let id = row.prospect_id.clone();
        match sort {
            ProspectSort::CompanyName => ProspectKey::CompanyName {
                company: row.company_name.clone().unwrap_or_default(),
                last: row.last_name.clone().unwrap_or_default(),
                first: row.first_name.clone().unwrap_or_default(),
                id,
            },
            ProspectSort::RevenueDesc => ProspectKey::RevenueDesc {
                revenue: row.revenue.unwrap_or(NO_REVENUE),
                id,
            },
            ProspectSort::UpdatedAtDesc => ProspectKey::UpdatedAtDesc {
                updated_at: row.prospect_updated_at.unwrap_or(DateTime::<Utc>::MIN_UTC),
                id,
            },
        }
    }
}

/// Queries over the prospect rows of `company_prospect_view` with every filter of `ProspectFilters`
/// bound as $1..$17 (written once, here):
/// - `rows: "<rest>"` selects `ProspectRow`s; `rest` continues the WHERE clause from $18 on;
/// - `total:` counts the matching rows;
/// - `estimate:` asks the planner (EXPLAIN) how many rows match.
macro_rules! prospect_query {
    (rows: $rest:literal, $filters:expr $(, $extra:expr)* $(,)?) => {
        prospect_query!(@run query_as [ProspectRow,]
            "SELECT prospect_id AS \"prospect_id!\", salutation, first_name, last_name, full_name, email,
                    job_title, job_title_level, department, job_title_link, prospect_address, prospect_city,
                    prospect_state, prospect_country, prospect_zip_code, prospect_phone, prospect_mobile_phone,
                    prospect_created_at, prospect_updated_at, company_id AS \"company_id!\", domain, company_name,
                    industry, min_employee_size, max_employee_size, revenue, formatted_revenue, company_address,
                    company_city, company_state, company_country, company_zip_code, company_phone,
                    company_mobile_phone, company_created_at, company_updated_at",
            $rest, $filters $(, $extra)*)
    };
    (total: $filters:expr) => {
        prospect_query!(@run query_scalar [] "SELECT count(*) AS \"total!\"", "", $filters)
    };
    (estimate: $filters:expr) => {
        prospect_query!(@run query_scalar [] "EXPLAIN (FORMAT JSON) SELECT 1", "", $filters)
    };
    (@run $kind:ident [$($head:tt)*] $select:literal, $rest:literal, $filters:expr $(, $extra:expr)*) => {{
        let f: &ProspectFilters = $filters;
        let job_title_pattern = f.job_title_pattern();
        sqlx::$kind!(
            $($head)*
            $select
                + " FROM company_prospect_view
                WHERE prospect_id IS NOT NULL
                  AND ($1::text IS NULL OR industry = $1)
                  AND ($2::text[] IS NULL OR industry = ANY($2))
                  AND ($3::text[] IS NULL OR department = ANY($3))
                  AND ($4::text[] IS NULL OR job_title_level = ANY($4))
                  AND ($5::text IS NULL OR company_country = $5)
                  AND ($6::text IS NULL OR company_state = $6)
                  AND ($7::text IS NULL OR company_city = $7)
                  AND ($8::text IS NULL OR prospect_country = $8)
                  AND ($9::text IS NULL OR company_id = $9)
                  AND ($10::text IS NULL OR domain = $10)
                  AND ($11::text IS NULL OR lower(email) = lower($11))
                  AND ($12::text IS NULL OR job_title ILIKE $12)
                  AND ($13::bigint IS NULL OR revenue >= $13)
                  AND ($14::bigint IS NULL OR revenue <= $14)
                  AND ($15::int IS NULL OR (min_employee_size IS NOT NULL
                                             AND COALESCE(max_employee_size, 2147483647) >= $15))
                  AND ($16::int IS NULL OR min_employee_size <= $16)
                  AND ($17::timestamptz IS NULL OR prospect_updated_at >= $17) "
                + $rest,
            f.single_industry(),
            f.several_industries(),
            non_empty(&f.departments),
            non_empty(&f.job_title_levels),
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
            $($extra),*
        )
    }};
}

/// One page in `sort` order, after `after` when given. Fetches one row more than `limit` so the
/// caller knows whether another page follows.
#[tracing::instrument(skip(pool, filters, after))]
pub async fn page(
    pool: &PgPool,
    filters: &ProspectFilters,
    sort: ProspectSort,
    after: Option<&ProspectKey>,
    limit: i64,
) -> Result<Vec<ProspectRow>, sqlx::Error> {
    let fetch = limit + 1;
    match sort {
        ProspectSort::CompanyName => {
            let (company, last, first, id) = match after {
                Some(ProspectKey::CompanyName {
                    company,
                    last,
                    first,
                    id,
                }) => (
                    Some(company.as_str()),
                    Some(last.as_str()),
                    Some(first.as_str()),
                    Some(id.as_str()),
                ),
                _ => (None, None, None, None),
            };
            prospect_query!(
                rows: "AND ($18::text IS NULL OR (COALESCE(company_name, ''), COALESCE(last_name, ''),
                                                 COALESCE(first_name, ''), prospect_id)
                                                > ($18, $19::text, $20::text, $21::text))
                       ORDER BY COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''),
                                prospect_id
                       LIMIT $22",
                filters, company, last, first, id, fetch
            )
            .fetch_all(pool)
            .await
        }
        ProspectSort::RevenueDesc => {
            let (revenue, id) = match after {
                Some(ProspectKey::RevenueDesc { revenue, id }) => {
                    (Some(*revenue), Some(id.as_str()))
                }
                _ => (None, None),
            };
            prospect_query!(
                rows: "AND ($18::bigint IS NULL OR (COALESCE(revenue, '-9223372036854775808'::bigint), prospect_id)
                                                  < ($18, $19::text))
                       ORDER BY COALESCE(revenue, '-9223372036854775808'::bigint) DESC, prospect_id DESC
                       LIMIT $20",
                filters, revenue, id, fetch
            )
            .fetch_all(pool)
            .await
        }
        ProspectSort::UpdatedAtDesc => {
            let (updated_at, id) = match after {
                Some(ProspectKey::UpdatedAtDesc { updated_at, id }) => {
                    (Some(*updated_at), Some(id.as_str()))
                }
                _ => (None, None),
            };
            prospect_query!(
                rows: "AND ($18::timestamptz IS NULL OR (prospect_updated_at, prospect_id) < ($18, $19::text))
                       ORDER BY prospect_updated_at DESC, prospect_id DESC
                       LIMIT $20",
                filters, updated_at, id, fetch
            )
            .fetch_all(pool)
            .await
        }
    }
}

/// How many prospects match (all pages).
#[tracing::instrument(skip(pool, filters))]
pub async fn count_exact(pool: &PgPool, filters: &ProspectFilters) -> Result<i64, sqlx::Error> {
    prospect_query!(total: filters).fetch_one(pool).await
}

/// The planner's estimate of how many prospects match: instant, but only as good as the statistics.
#[tracing::instrument(skip(pool, filters))]
pub async fn count_estimate(pool: &PgPool, filters: &ProspectFilters) -> Result<i64, sqlx::Error> {
    let plan = prospect_query!(estimate: filters).fetch_one(pool).await?;
    Ok(plan.as_ref().map_or(0, super::planned_rows))
}

/// One prospect by id.
#[tracing::instrument(skip(pool))]
pub async fn by_id(pool: &PgPool, prospect_id: &str) -> Result<Option<ProspectRow>, sqlx::Error> {
    let filters = ProspectFilters::default();
    prospect_query!(rows: "AND prospect_id = $18", &filters, prospect_id)
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
