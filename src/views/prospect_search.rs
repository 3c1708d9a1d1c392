//! Substring search on `prospect_search_view`: `GET /search`.
//!
//! Every term must occur in `search_text`; each becomes `search_text LIKE '%term%'` with `%`, `_` and
//! `\` escaped, which the trigram index answers. Up to `Terms::MAX` terms, each a fixed parameter slot
//! (an unused slot is NULL and folds away in the custom plan). Results come in company name, last
//! name, first name, id order.

use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryFutureExt};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::filters::{Terms, any_of, escape_like, filters};
use super::order::{FacetCount, NoFacets, Sort, SortKey};
use super::{Api, ReadModel, ViewName, estimated_rows};

pub struct ProspectSearch;

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

filters! {
    /// What `GET /search` asks for: its terms and its filters.
    pub struct SearchFilters {
        /// Whitespace-separated terms; every term must occur, case-insensitively, in the prospect's
        /// name, email, job title, company name or industry (of those the caller's role may see).
        /// `%`, `_` and `\` are ordinary characters.
        #[reads("first_name", "last_name", "email", "job_title", "company_name", "industry")]
        pub q: Terms,
        /// Company industry; repeat for any of several (`industry=A&industry=B`).
        pub industry: Vec<String>,
        /// Company country.
        pub company_country: Option<String>,
        /// Prospect department; repeatable.
        pub department: Vec<String>,
    }
}

impl SearchFilters {
    /// The searched fields the caller may not see, so must not match on (NULL: none). Every term
    /// must then also occur in the fields it may see; `search_text` (all of them) still narrows
    /// the search through its index first.
    fn excluded(&self) -> Option<&[String]> {
        (!self.q.excluded.is_empty()).then_some(self.q.excluded.as_slice())
    }

    /// The LIKE pattern of each term slot (lower-cased in SQL, as `search_text` is).
    fn patterns(&self) -> [Option<String>; Terms::MAX] {
        std::array::from_fn(|i| {
            self.q
                .terms
                .get(i)
                .map(|term| format!("%{}%", escape_like(term)))
        })
    }
}

/// The one order of results: company name, last name, first name, id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    CompanyName,
}

impl SortKey for SearchOrder {
    const ALL: &'static [(&'static str, Self)] = &[("company_name", SearchOrder::CompanyName)];
    const DEFAULT: Sort<Self> = Sort {
        key: SearchOrder::CompanyName,
        descending: false,
    };
    const CHOSEN_BY_CLIENT: bool = false;

    fn reads(self) -> &'static [&'static str] {
        &["company_name", "last_name", "first_name"]
    }
}

/// The matches statement: every match after the keyset cursor $1 (at most $2), found through the
/// trigram index and sorted into result order; the terms' patterns are $3 to $7, the filters $8 to
/// $10. OFFSET 0 keeps the conditions inside the subquery, planned without an order to deliver: the
/// trigram index for a rare term.
macro_rules! matches_statement {
    ($kind:ident [$($head:tt)*] $explain:literal, $filters:expr, $after:expr, $limit:expr) => {{
        let f: &SearchFilters = $filters;
        let [p1, p2, p3, p4, p5] = f.patterns();
        sqlx::$kind!(
            $($head)*
            $explain
                + r#"SELECT prospect_id AS "prospect_id!", email, first_name, last_name, full_name, job_title,
                      job_title_level, department, prospect_city, prospect_country, company_id AS "company_id!",
                      domain, company_name AS "company_name!", industry, revenue, company_city, company_country
               FROM (SELECT * FROM prospect_search_view
                     WHERE search_text LIKE lower($3)
                       AND ($4::text IS NULL OR search_text LIKE lower($4))
                       AND ($5::text IS NULL OR search_text LIKE lower($5))
                       AND ($6::text IS NULL OR search_text LIKE lower($6))
                       AND ($7::text IS NULL OR search_text LIKE lower($7))
                       AND ($11::text[] IS NULL
                            OR lower(concat_ws(' ', CASE WHEN 'first_name' <> ALL($11) THEN first_name END,
                                                    CASE WHEN 'last_name' <> ALL($11) THEN last_name END,
                                                    CASE WHEN 'email' <> ALL($11) THEN email END,
                                                    CASE WHEN 'job_title' <> ALL($11) THEN job_title END,
                                                    CASE WHEN 'company_name' <> ALL($11) THEN company_name END,
                                                    CASE WHEN 'industry' <> ALL($11) THEN industry END))
                               LIKE ALL (array_remove(ARRAY[lower($3), lower($4), lower($5), lower($6), lower($7)], NULL)))
                       AND ($8::text[] IS NULL OR CASE WHEN cardinality($8) = 1 THEN industry = $8[1]
                                                        ELSE industry = ANY($8) END)
                       AND ($9::text IS NULL OR company_country = $9)
                       AND ($10::text[] IS NULL OR CASE WHEN cardinality($10) = 1 THEN department = $10[1]
                                                         ELSE department = ANY($10) END)
                       AND ($1::jsonb IS NULL
                            OR (COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''),
                                prospect_id) > ($1->>0, $1->>1, $1->>2, $1->>3))
                     OFFSET 0) AS matches
               ORDER BY COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id
               LIMIT $2"#,
            $after,
            $limit,
            p1,
            p2,
            p3,
            p4,
            p5,
            any_of(&f.industry),
            f.company_country.as_deref(),
            any_of(&f.department),
            f.excluded(),
        )
    }};
}

/// How many rows, in result order, the first step of `page` reads looking for a page of matches.
const ORDERED_SCAN_ROWS: i64 = 5_000;

impl ReadModel for ProspectSearch {
    const VIEW: ViewName = ViewName::ProspectSearchView;
    const API: Api = Api {
        tag: "search",
        path: "/search",
        list: (
            "search",
            "Substring search over prospects; results in company name, last name, first name order.",
        ),
        rows: "matches",
        sort_doc: "",
        one: None,
        facets: None,
        scoped: None,
    };
    type Row = SearchRow;
    type Filters = SearchFilters;
    type Sort = SearchOrder;
    type Facet = NoFacets;
    const ROW_BYTES: usize = 600;

    /// At most `limit` matches after `after`, in two steps, because neither plan PostgreSQL can
    /// choose is safe alone:
    ///
    /// 1. read the next `ORDERED_SCAN_ROWS` rows in result order (the name-order index) and keep the
    ///    matches (`in_window`): a term matching many rows (`director`, `sales`) fills a page
    ///    within a few hundred;
    /// 2. only if that window held fewer: let the trigram index find every match after the cursor
    ///    and sort them (`matches_statement!`). The planner would walk the name-order index for
    ///    these too when it expects enough matches, and a term whose matches cluster late in that
    ///    order (a company name starting with V) then read most of the view: 1 s at 1M rows,
    ///    timeouts under load (bench/README.md). Here the sort only ever covers a term that is rare
    ///    where the cursor stands (or a CSV export, which counts its matches first).
    fn rows<'a>(
        pool: &'a PgPool,
        f: &'a SearchFilters,
        _: Sort<SearchOrder>,
        after: Option<&'a Value>,
        limit: i64,
    ) -> BoxStream<'a, Result<SearchRow, sqlx::Error>> {
        let two_steps = async move {
            let in_window = in_window(pool, f, after, limit).await?;
            if in_window.len() as i64 >= limit {
                return Ok(futures_util::stream::iter(in_window.into_iter().map(Ok)).boxed());
            }
            Ok(matches_statement!(query_as [SearchRow,] "", f, after, limit).fetch(pool))
        };
        two_steps.try_flatten_stream().boxed()
    }

    async fn count(pool: &PgPool, f: &SearchFilters) -> Result<i64, sqlx::Error> {
        let [p1, p2, p3, p4, p5] = f.patterns();
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "total!" FROM prospect_search_view
               WHERE search_text LIKE lower($1)
                 AND ($2::text IS NULL OR search_text LIKE lower($2))
                 AND ($3::text IS NULL OR search_text LIKE lower($3))
                 AND ($4::text IS NULL OR search_text LIKE lower($4))
                 AND ($5::text IS NULL OR search_text LIKE lower($5))
                 AND ($9::text[] IS NULL
                            OR lower(concat_ws(' ', CASE WHEN 'first_name' <> ALL($9) THEN first_name END,
                                                    CASE WHEN 'last_name' <> ALL($9) THEN last_name END,
                                                    CASE WHEN 'email' <> ALL($9) THEN email END,
                                                    CASE WHEN 'job_title' <> ALL($9) THEN job_title END,
                                                    CASE WHEN 'company_name' <> ALL($9) THEN company_name END,
                                                    CASE WHEN 'industry' <> ALL($9) THEN industry END))
                               LIKE ALL (array_remove(ARRAY[lower($1), lower($2), lower($3), lower($4), lower($5)], NULL)))
                 AND ($6::text[] IS NULL OR CASE WHEN cardinality($6) = 1 THEN industry = $6[1]
                                                  ELSE industry = ANY($6) END)
                 AND ($7::text IS NULL OR company_country = $7)
                 AND ($8::text[] IS NULL OR CASE WHEN cardinality($8) = 1 THEN department = $8[1]
                                                  ELSE department = ANY($8) END)"#,
            p1,
            p2,
            p3,
            p4,
            p5,
            any_of(&f.industry),
            f.company_country.as_deref(),
            any_of(&f.department),
            f.excluded(),
        )
        .fetch_one(pool)
        .await
    }

    async fn estimate(pool: &PgPool, f: &SearchFilters) -> Result<i64, sqlx::Error> {
        let plan =
            matches_statement!(query_scalar [] "EXPLAIN (FORMAT JSON) ", f, None::<&Value>, 1_i64)
                .fetch_one(pool)
                .await?;
        Ok(estimated_rows(plan.as_ref()))
    }

    async fn facet(
        _: &PgPool,
        _: &SearchFilters,
        facet: NoFacets,
    ) -> Result<Vec<FacetCount>, sqlx::Error> {
        match facet {}
    }

    async fn one(_: &PgPool, _: &str) -> Result<Option<SearchRow>, sqlx::Error> {
        Ok(None)
    }

    fn cursor_key(_: Sort<SearchOrder>, row: &SearchRow) -> Value {
        json!([
            row.company_name,
            row.last_name.as_deref().unwrap_or_default(),
            row.first_name.as_deref().unwrap_or_default(),
            row.prospect_id
        ])
    }
}

/// The first step of a search: the matches among the next `ORDERED_SCAN_ROWS` rows in result
/// order after `after`, at most `limit`.
async fn in_window(
    pool: &PgPool,
    f: &SearchFilters,
    after: Option<&Value>,
    limit: i64,
) -> Result<Vec<SearchRow>, sqlx::Error> {
    let [p1, p2, p3, p4, p5] = f.patterns();
    sqlx::query_as!(
        SearchRow,
        r#"SELECT prospect_id AS "prospect_id!", email, first_name, last_name, full_name, job_title,
                  job_title_level, department, prospect_city, prospect_country, company_id AS "company_id!",
                  domain, company_name AS "company_name!", industry, revenue, company_city, company_country
           FROM (SELECT *, COALESCE(company_name, '') AS order_company, COALESCE(last_name, '') AS order_last,
                        COALESCE(first_name, '') AS order_first
                 FROM prospect_search_view
                 WHERE ($1::jsonb IS NULL
                        OR (COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''),
                            prospect_id) > ($1->>0, $1->>1, $1->>2, $1->>3))
                 ORDER BY COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''),
                          prospect_id
                 LIMIT $11) AS window_rows
           WHERE search_text LIKE lower($3)
             AND ($4::text IS NULL OR search_text LIKE lower($4))
             AND ($5::text IS NULL OR search_text LIKE lower($5))
             AND ($6::text IS NULL OR search_text LIKE lower($6))
             AND ($7::text IS NULL OR search_text LIKE lower($7))
             AND ($12::text[] IS NULL
                            OR lower(concat_ws(' ', CASE WHEN 'first_name' <> ALL($12) THEN first_name END,
                                                    CASE WHEN 'last_name' <> ALL($12) THEN last_name END,
                                                    CASE WHEN 'email' <> ALL($12) THEN email END,
                                                    CASE WHEN 'job_title' <> ALL($12) THEN job_title END,
                                                    CASE WHEN 'company_name' <> ALL($12) THEN company_name END,
                                                    CASE WHEN 'industry' <> ALL($12) THEN industry END))
                               LIKE ALL (array_remove(ARRAY[lower($3), lower($4), lower($5), lower($6), lower($7)], NULL)))
             AND ($8::text[] IS NULL OR CASE WHEN cardinality($8) = 1 THEN industry = $8[1]
                                              ELSE industry = ANY($8) END)
             AND ($9::text IS NULL OR company_country = $9)
             AND ($10::text[] IS NULL OR CASE WHEN cardinality($10) = 1 THEN department = $10[1]
                                               ELSE department = ANY($10) END)
           -- Ordering by the window's own output columns lets PostgreSQL see that the rows arrive
           -- sorted: it stops at the page's last match instead of reading and sorting the window.
           ORDER BY order_company, order_last, order_first, prospect_id
           LIMIT $2"#,
        after,
        limit,
        p1,
        p2,
        p3,
        p4,
        p5,
        any_of(&f.industry),
        f.company_country.as_deref(),
        any_of(&f.department),
        ORDERED_SCAN_ROWS,
        f.excluded(),
    )
    .fetch_all(pool)
    .await
}
