//! Substring search on `prospect_search_view`: `GET /search`.
//!
//! Every term must occur in `search_text`; each becomes `search_text LIKE '%term%'` with `%`, `_` and
//! `\` escaped, which the trigram index answers. Up to `MAX_TERMS` terms, each a fixed parameter slot
//! (an unused slot is NULL and folds away in the custom plan).

use futures_util::TryStreamExt;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::company_prospects::escape_like;

pub const MAX_TERMS: usize = 5;
/// Shorter terms have no trigram, so the index could not narrow the search.
pub const MIN_TERM_CHARS: usize = 3;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchRow {
    pub prospect_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub full_name: Option<String>,
    pub job_title: Option<String>,
    pub job_title_level: Option<String>,
    pub department: Option<String>,
    pub prospect_city: Option<String>,
    pub prospect_country: Option<String>,
    pub company_id: String,
    pub domain: Option<String>,
    pub company_name: String,
    pub industry: Option<String>,
    pub revenue: Option<i64>,
    pub company_city: Option<String>,
    pub company_country: Option<String>,
}

super::query::filters! {
    /// The filters of `GET /search` besides its terms; each bound once in `search_query!`.
    pub struct SearchFilters {
        /// Company industry; repeat for any of several (`industry=A&industry=B`).
        pub industry: Vec<String>,
        /// Company country.
        pub company_country: Option<String>,
        /// Prospect department; repeatable.
        pub department: Vec<String>,
    }
}

/// A search: its terms and its filters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Search {
    /// 1 to MAX_TERMS terms, each at least MIN_TERM_CHARS characters (checked by the HTTP layer).
    pub terms: Vec<String>,
    pub filters: SearchFilters,
}

impl Search {
    /// The LIKE pattern for slot `i` (lower-cased in SQL, as `search_text` is).
    fn pattern(&self, i: usize) -> Option<String> {
        self.terms
            .get(i)
            .map(|term| format!("%{}%", escape_like(term)))
    }
}

/// Where the next page starts (results are in company name, last name, first name, id order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchKey {
    pub company: String,
    pub last: String,
    pub first: String,
    pub id: String,
}

impl SearchKey {
    /// The key's values as the statements bind them ($10 to $13), NULL without a key.
    fn bound(key: Option<&SearchKey>) -> [Option<&str>; 4] {
        match key {
            Some(key) => [&key.company, &key.last, &key.first, &key.id].map(|v| Some(v.as_str())),
            None => [None; 4],
        }
    }

    pub fn of(row: &SearchRow) -> SearchKey {
        SearchKey {
            company: row.company_name.clone(),
            last: row.last_name.clone().unwrap_or_default(),
            first: row.first_name.clone().unwrap_or_default(),
            id: row.prospect_id.clone(),
        }
    }
}

/// The search filters, written once: `$before` ends where the conditions go (after a WHERE), `$after`
/// goes on from them. Parameters $1 to $9 are the filters; the callers' own start at $10.
macro_rules! search_query {
    ($kind:ident [$($head:tt)*] $before:literal, $after:literal, $filters:expr $(, $extra:expr)* $(,)?) => {{
        let search: &Search = $filters;
        let patterns: Vec<Option<String>> = (0..MAX_TERMS).map(|i| search.pattern(i)).collect();
        let f = &search.filters;
        let industry = (f.industry.len() == 1).then(|| f.industry[0].as_str());
        let industries = (f.industry.len() > 1).then_some(f.industry.as_slice());
        let departments = (!f.department.is_empty()).then_some(f.department.as_slice());
        sqlx::$kind!(
            $($head)*
            $before
                + " search_text LIKE lower($1)
                  AND ($2::text IS NULL OR search_text LIKE lower($2))
                  AND ($3::text IS NULL OR search_text LIKE lower($3))
                  AND ($4::text IS NULL OR search_text LIKE lower($4))
                  AND ($5::text IS NULL OR search_text LIKE lower($5))
                  AND ($6::text IS NULL OR industry = $6)
                  AND ($7::text[] IS NULL OR industry = ANY($7))
                  AND ($8::text IS NULL OR company_country = $8)
                  AND ($9::text[] IS NULL OR department = ANY($9)) "
                + $after,
            patterns[0].as_deref(),
            patterns[1].as_deref(),
            patterns[2].as_deref(),
            patterns[3].as_deref(),
            patterns[4].as_deref(),
            industry,
            industries,
            f.company_country.as_deref(),
            departments,
            $($extra),*
        )
    }};
}

/// How many rows, in result order, the first step of `page` reads looking for a page of matches.
const ORDERED_SCAN_ROWS: i64 = 5_000;

/// One page of matches, in two steps, because neither plan PostgreSQL can choose is safe alone:
///
/// 1. read the next `ORDERED_SCAN_ROWS` rows in result order (the name-order index) and keep the
///    matches: a term matching many rows (`director`, `sales`) fills a page within a few hundred;
/// 2. only if that window held less than a page: let the trigram index find every match after the
///    cursor and sort them. The planner would walk the name-order index for these too when it
///    expects enough matches, and a term whose matches cluster late in that order (a company name
///    starting with V) then read most of the view: 1 s at 1M rows, timeouts under load
///    (bench/README.md). Here the sort only ever covers a term that is rare where the cursor stands.
#[tracing::instrument(skip(pool, filters, after))]
pub async fn page(
    pool: &PgPool,
    filters: &Search,
    after: Option<&SearchKey>,
    limit: i64,
) -> Result<Vec<SearchRow>, sqlx::Error> {
    let [company, last, first, id] = SearchKey::bound(after);
    let in_window = search_query!(
        query_as[SearchRow,]
        "SELECT prospect_id AS \"prospect_id!\", email, first_name, last_name, full_name, job_title,
                job_title_level, department, prospect_city, prospect_country, company_id AS \"company_id!\",
                domain, company_name AS \"company_name!\", industry, revenue, company_city, company_country
         FROM (SELECT *, COALESCE(company_name, '') AS order_company, COALESCE(last_name, '') AS order_last,
                      COALESCE(first_name, '') AS order_first
               FROM prospect_search_view
               WHERE ($10::text IS NULL OR (COALESCE(company_name, ''), COALESCE(last_name, ''),
                                            COALESCE(first_name, ''), prospect_id)
                                           > ($10, $11::text, $12::text, $13::text))
               ORDER BY COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id
               LIMIT $15) AS window_rows
         WHERE",
        // Ordering by the window's own output columns lets PostgreSQL see that the rows arrive
        // sorted: it stops at the page's last match instead of reading and sorting the whole window.
        "ORDER BY order_company, order_last, order_first, prospect_id
         LIMIT $14",
        filters, company, last, first, id, limit + 1, ORDERED_SCAN_ROWS
    )
    .fetch_all(pool)
    .await?;
    if in_window.len() as i64 > limit {
        return Ok(in_window);
    }
    matches_after(pool, filters, after, limit + 1)
        .try_collect()
        .await
}

/// Every match after `after` (at most `limit`), in result order, found through the trigram index
/// and sorted: the second step of `page`, and a CSV export (which counts the matches first).
pub fn matches_after<'a>(
    pool: &'a PgPool,
    filters: &'a Search,
    after: Option<&'a SearchKey>,
    limit: i64,
) -> BoxStream<'a, Result<SearchRow, sqlx::Error>> {
    let [company, last, first, id] = SearchKey::bound(after);
    // OFFSET 0 keeps the conditions inside the subquery, planned without an order to deliver: the
    // trigram index for a rare term.
    search_query!(
        query_as[SearchRow,]
        "SELECT prospect_id AS \"prospect_id!\", email, first_name, last_name, full_name, job_title,
                job_title_level, department, prospect_city, prospect_country, company_id AS \"company_id!\",
                domain, company_name AS \"company_name!\", industry, revenue, company_city, company_country
         FROM (SELECT * FROM prospect_search_view WHERE",
        "AND ($10::text IS NULL OR (COALESCE(company_name, ''), COALESCE(last_name, ''),
                                   COALESCE(first_name, ''), prospect_id)
                                  > ($10, $11::text, $12::text, $13::text))
               OFFSET 0) AS matches
         ORDER BY COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id
         LIMIT $14",
        filters, company, last, first, id, limit
    )
    .fetch(pool)
}

#[tracing::instrument(skip(pool, filters))]
pub async fn count_exact(pool: &PgPool, filters: &Search) -> Result<i64, sqlx::Error> {
    search_query!(query_scalar[] "SELECT count(*) AS \"total!\" FROM prospect_search_view WHERE", "", filters)
        .fetch_one(pool)
        .await
}

#[tracing::instrument(skip(pool, filters))]
pub async fn count_estimate(pool: &PgPool, filters: &Search) -> Result<i64, sqlx::Error> {
    let plan = search_query!(query_scalar[] "EXPLAIN (FORMAT JSON) SELECT 1 FROM prospect_search_view WHERE", "", filters)
        .fetch_one(pool)
        .await?;
    Ok(plan.as_ref().map_or(0, super::planned_rows))
}
