//! Ranked search on `prospect_search_view`: `GET /search`.
//!
//! What a query matches and how it ranks is written once, in SQL (schema/current.sql): `search_plan()`
//! turns the terms into what a row must match and how each match scores, `search_prospects()`
//! returns the best-ranked matches, and its `everything` query serves the counts and the
//! company-name order. A term matches the start of a word, whole when it is not the last term;
//! terms of 5 letters and more forgive a typo (9 and more: two); case and accents fold away; terms
//! match in any order. Name words rank above company words above job title and industry words, an
//! email above all, whole words above prefixes above typos; ties in prospect id order, so a keyset
//! cursor (score, id) pages through ranked results.

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::filters::{Terms, any_of, filters};
use super::matching::{in_any_of, same};
use super::order::{FacetCount, NoFacets, Sort, sort_keys};
use super::search_matching::{Query, RowWords, Searched};
use super::{Admits, Api, Place, ReadModel, Shape, ViewName, estimated_rows};

pub struct ProspectSearch;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    /// How well the row matches (higher is better; the relevance order's key); null in
    /// company-name order.
    pub score: Option<i32>,
}

filters! {
    /// What `GET /search` asks for: its terms and its filters.
    pub struct SearchFilters {
        /// Whitespace-separated terms, in any order; every term must match the prospect's name, its
        /// company's name, its job title or industry (of those the caller's role may see), or, with
        /// an `@`, its email. A term matches a word's start: the last term may be the start of a
        /// word (type-ahead), the others whole words (a query ending in a space makes the last one
        /// whole too). Terms of 5 letters and more forgive one typo, of 9 and more two. Case and
        /// accents do not matter.
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

sort_keys! {
    /// The orders of results.
    pub enum SearchOrder {
        /// Best match first (the default). The score counts only what the caller may see, so the
        /// order reads no field; best first, then by id (a changed row's score is bounded:
        /// `ReadModel::place`); a rank has one sense.
        Relevance = "relevance", reads [], parts [KeyPart::Rank, KeyPart::Text];
        /// Company name, last name, first name, id (the order before ranking).
        CompanyName = "company_name", reads ["company_name", "last_name", "first_name"],
            parts [KeyPart::Text; 4];
    }
}

/// A search statement: `$sql` with the terms and filters as $1 to $6 (what `search_plan()` and
/// `search_prospects()` take, in their order), then `$more`.
macro_rules! searching {
    ($kind:ident [$($head:tt)*] ($($sql:tt)+), $f:expr $(, $more:expr)*) => {{
        let f: &SearchFilters = $f;
        sqlx::$kind!(
            $($head)*
            $($sql)+,
            f.q.text(),
            &f.q.excluded,
            f.q.prefix_last,
            any_of(&f.industry),
            f.company_country.as_deref(),
            any_of(&f.department),
            $($more),*
        )
    }};
}

/// Every row the terms and filters match, in no order: `$select`, then `FROM … WHERE`, then `$tail`
/// (the company-name order and the count).
macro_rules! everything_matching {
    ($kind:ident [$($head:tt)*] select ($($select:tt)+) then ($($tail:literal)?), $f:expr $(, $more:expr)*) => {
        searching!($kind [$($head)*] ($($select)+ + r#"
               FROM search_plan($1, $2, $3) p, prospect_search_view v
               WHERE NOT p.impossible
                 AND v.search_vector @@ p.everything
                 AND ($4::text[] IS NULL OR v.industry = ANY ($4))
                 AND ($5::text IS NULL OR v.company_country = $5)
                 AND ($6::text[] IS NULL OR v.department = ANY ($6))"# $(+ $tail)?), $f $(, $more)*)
    };
}

/// The rows of `search_prospects()`: the best matches after the cursor $7, $8, at most $9.
macro_rules! ranked_statement {
    ($f:expr, $after:expr, $limit:expr) => {{
        let (after_score, after_id) = relevance_cursor($after);
        searching!(query_as [SearchRow,]
            (r#"SELECT v.prospect_id AS "prospect_id!", v.email, v.first_name, v.last_name, v.full_name,
                      v.job_title, v.job_title_level, v.department, v.prospect_city, v.prospect_country,
                      v.company_id AS "company_id!", v.domain, v.company_name AS "company_name!", v.industry,
                      v.revenue, v.company_city, v.company_country, s.score AS "score?"
               FROM search_prospects($1, $2, $3, $4, $5, $6, $7, $8, $9) s
               JOIN prospect_search_view v ON v.prospect_id = s.prospect_id
               ORDER BY s.score DESC, s.prospect_id"#),
            $f, after_score, after_id, $limit)
    }};
}

/// The matches in company-name order after the keyset cursor $7 (`sort=company_name`, or
/// `sort=-company_name` with $8), at most $9.
macro_rules! by_company_name_statement {
    ($f:expr, $after:expr, $descending:expr, $limit:expr) => {
        everything_matching!(query_as [SearchRow,]
            select (r#"SELECT v.prospect_id AS "prospect_id!", v.email, v.first_name, v.last_name, v.full_name,
                      v.job_title, v.job_title_level, v.department, v.prospect_city, v.prospect_country,
                      v.company_id AS "company_id!", v.domain, v.company_name AS "company_name!", v.industry,
                      v.revenue, v.company_city, v.company_country, NULL::int AS "score?""#)
            then (r#"
                 AND ($7::jsonb IS NULL
                      OR (NOT $8 AND (COALESCE(v.company_name, ''), COALESCE(v.last_name, ''), COALESCE(v.first_name, ''), v.prospect_id)
                                     > ($7->>0, $7->>1, $7->>2, $7->>3))
                      OR ($8 AND (COALESCE(v.company_name, ''), COALESCE(v.last_name, ''), COALESCE(v.first_name, ''), v.prospect_id)
                                 < ($7->>0, $7->>1, $7->>2, $7->>3)))
               ORDER BY CASE WHEN NOT $8 THEN COALESCE(v.company_name, '') END,
                        CASE WHEN NOT $8 THEN COALESCE(v.last_name, '') END,
                        CASE WHEN NOT $8 THEN COALESCE(v.first_name, '') END,
                        CASE WHEN NOT $8 THEN v.prospect_id END,
                        COALESCE(v.company_name, '') DESC, COALESCE(v.last_name, '') DESC,
                        COALESCE(v.first_name, '') DESC, v.prospect_id DESC
               LIMIT $9"#),
            $f, $after, $descending, $limit)
    };
}

/// The text of the fields search reads.
fn searched(row: &SearchRow) -> Searched<'_> {
    Searched {
        first_name: row.first_name.as_deref(),
        last_name: row.last_name.as_deref(),
        company_name: Some(&row.company_name),
        job_title: row.job_title.as_deref(),
        industry: row.industry.as_deref(),
        email: row.email.as_deref(),
    }
}

/// The best score `row` could have for the terms: `Some(None)` when it cannot match them, `None`
/// when Rust cannot tell (text beyond ASCII).
fn best_score(f: &SearchFilters, row: &SearchRow) -> Option<Option<i32>> {
    let query = Query::of(&f.q)?;
    let words = RowWords::of(&searched(row))?;
    Some(query.best_score(&words))
}

/// The relevance cursor `[score, id]` as the statement's two parameters.
fn relevance_cursor(after: Option<&Value>) -> (Option<i32>, Option<String>) {
    let Some(Value::Array(key)) = after else {
        return (None, None);
    };
    let score = key.first().and_then(Value::as_i64).map(|s| s as i32);
    let id = key.get(1).and_then(Value::as_str).map(str::to_owned);
    match (score, id) {
        (Some(score), Some(id)) => (Some(score), Some(id)),
        _ => (None, None),
    }
}

impl ReadModel for ProspectSearch {
    const VIEW: ViewName = ViewName::ProspectSearchView;
    const API: Api = Api {
        tag: "search",
        path: "/search",
        list: (
            "search",
            "Ranked search over prospects: best matches first (sort=company_name for the name order).",
        ),
        rows: "matches",
        sort_doc: "`relevance` (the default): best match first, ties by prospect id. `company_name`: \
                   company name, last name, first name, id (`-company_name` reversed).",
        one: None,
        facets: None,
        scoped: None,
    };
    type Row = SearchRow;
    type Filters = SearchFilters;
    type Sort = SearchOrder;
    type Facet = NoFacets;
    const ROW_BYTES: usize = 600;

    /// One shape, whatever `shape` asks: `search_prospects()` and the company-name statement choose
    /// their own plans.
    fn rows<'a>(
        pool: &'a PgPool,
        f: &'a SearchFilters,
        sort: Sort<SearchOrder>,
        after: Option<&'a Value>,
        limit: i64,
        _: Shape,
    ) -> BoxStream<'a, Result<SearchRow, sqlx::Error>> {
        match sort.key {
            SearchOrder::Relevance => ranked_statement!(f, after, limit).fetch(pool).boxed(),
            SearchOrder::CompanyName => {
                by_company_name_statement!(f, after, sort.descending, limit)
                    .fetch(pool)
                    .boxed()
            }
        }
    }

    async fn count(pool: &PgPool, f: &SearchFilters) -> Result<i64, sqlx::Error> {
        everything_matching!(query_scalar [] select (r#"SELECT count(*) AS "total!""#) then (), f)
            .fetch_one(pool)
            .await
    }

    async fn estimate(pool: &PgPool, f: &SearchFilters) -> Result<i64, sqlx::Error> {
        let plan = searching!(query_scalar []
            (r#"SELECT search_matches_plan($1, $2, $3, $4, $5, $6)::jsonb AS plan"#), f)
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

    /// What the terms match is decided by `search_plan()` (typos corrected from the vocabulary,
    /// accents folded): Rust can only tell that a row cannot match them.
    fn admits(f: &SearchFilters, row: &SearchRow) -> Admits {
        let terms = match best_score(f, row) {
            Some(None) => Admits::No,
            _ => Admits::Unsure,
        };
        Admits::all([
            in_any_of(&f.industry, row.industry.as_deref()),
            same(&f.company_country, row.company_country.as_deref()),
            in_any_of(&f.department, row.department.as_deref()),
            terms,
        ])
    }

    /// In relevance order, no earlier than the best score the row could have.
    fn place(f: &SearchFilters, sort: Sort<SearchOrder>, row: &SearchRow) -> Place {
        match (sort.key, best_score(f, row)) {
            (SearchOrder::CompanyName, _) => Place::Exactly(Self::cursor_key(sort, row)),
            (SearchOrder::Relevance, Some(Some(score))) => {
                Place::NoEarlierThan(json!([score, row.prospect_id]))
            }
            (SearchOrder::Relevance, _) => Place::Unknown,
        }
    }

    fn moves_others(f: &SearchFilters, row: &SearchRow) -> bool {
        match (Query::of(&f.q), RowWords::of(&searched(row))) {
            (Some(query), Some(words)) => query.may_correct(&words),
            _ => true,
        }
    }

    fn cursor_key(sort: Sort<SearchOrder>, row: &SearchRow) -> Value {
        match sort.key {
            SearchOrder::Relevance => json!([row.score, row.prospect_id]),
            SearchOrder::CompanyName => json!([
                row.company_name,
                row.last_name.as_deref().unwrap_or_default(),
                row.first_name.as_deref().unwrap_or_default(),
                row.prospect_id
            ]),
        }
    }
}
