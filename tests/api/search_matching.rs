//! Rust's reading of search (`admits`, `place` and `moves_others` of `/search`), which the response
//! cache relies on to keep a cached search across a round, proven against the SQL: on seeded rows
//! and rows made to be hard (accents, punctuation, case, typos of the queries' terms, emails), for
//! queries as people type them and callers who may not see some fields,
//! - a row Rust says cannot match is not among `search_prospects()`'s results, and a row that is
//!   scores no more than the place Rust gives it;
//! - a row whose words, once in the vocabulary, change what `search_plan()` makes of a query (a new
//!   typo correction, or one pushed out of the 16 kept) is one Rust says may move others.

use std::collections::HashMap;

use prospect_api::views::filters::Terms;
use prospect_api::views::order::{Sort, SortKey};
use prospect_api::views::prospect_search::{ProspectSearch, SearchFilters, SearchOrder};
use prospect_api::views::{Admits, Image, Place, ReadModel};
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{TestDb, seeded_and_fixture};

/// Rows made to be hard: each a company name, first and last name, job title and email.
const HARD_ROWS: &[[&str; 5]] = &[
    [
        "Acme Labs",
        "José",
        "García",
        "Director of Sales",
        "jose.garcia@acme.example",
    ],
    [
        "Acme Labs",
        "Wei",
        "Carter",
        "Nurse",
        "Wei.Carter@Acme.example",
    ],
    [
        "O'Neil & Sons",
        "Ann-Marie",
        "O'Neil",
        "VP of Engineering",
        "ann@oneil.example",
    ],
    [
        "Smyth Partners",
        "Ann",
        "Smyth",
        "Enginer",
        "ann.smyth@smyth.example",
    ],
    [
        "Globex",
        "Smiht",
        "Garica",
        "Senior Directr",
        "s.g@globex.example",
    ],
    [
        "Vertex 42",
        "Tanaka123",
        "SMITH",
        "C.E.O.",
        "SMITH@VERTEX.example",
    ],
    [
        "Über GmbH",
        "Søren",
        "Müller",
        "Geschäftsführer",
        "soren@uber.example",
    ],
    [
        "Carter\u{b}Wei",
        "Zoë",
        "Rodriguez",
        "Sales Manager",
        "zoe@carter.example",
    ],
];

/// Queries as people type them (a trailing space: the last word finished).
const QUERIES: &[&str] = &[
    "smith",
    "smi",
    "s",
    "smith ",
    "garcia",
    "garica",
    "jose garcia",
    "josé",
    "wei car",
    "carter wei",
    "engineer",
    "engineering ",
    "director of",
    "acme",
    "wei.carter@acme",
    "jose.garcia@acme.example ",
    "tanaka123",
    "o neil",
    "o'neil",
    "ann-marie",
    "rodriguez",
    "rodirguez",
    "x",
    "zz top",
    "vp",
    "sales manager",
    "directr",
    "smyth",
    "muller",
    "ceo",
    "c e o",
    "carter\u{b}wei",
    "grace",
    "hopper",
    "knuth",
    "lovelace ada",
    "d",
];

/// Fields some callers may not see.
const HIDDEN: &[&[&str]] = &[
    &[],
    &["email"],
    &["first_name"],
    &["company_name"],
    &["job_title", "industry"],
];

fn filters(q: &str, hidden: &[&str]) -> SearchFilters {
    SearchFilters {
        q: Terms {
            terms: q.split_ascii_whitespace().map(str::to_owned).collect(),
            prefix_last: !q.ends_with(|c: char| c.is_ascii_whitespace()),
            excluded: hidden.iter().map(|f| (*f).to_owned()).collect(),
        },
        ..SearchFilters::default()
    }
}

/// Whether the query and the row's searched text are ASCII (beyond, Rust leaves it to PostgreSQL).
fn all_ascii(q: &str, row: &prospect_api::views::prospect_search::SearchRow) -> bool {
    let texts = [
        &row.first_name,
        &row.last_name,
        &row.job_title,
        &row.industry,
        &row.email,
    ];
    q.is_ascii()
        && row.company_name.is_ascii()
        && texts.iter().all(|t| t.as_deref().unwrap_or("").is_ascii())
}

/// `search_prospects()`'s matches of `f`, with their scores.
async fn ranked(pool: &PgPool, f: &SearchFilters) -> HashMap<String, i64> {
    let rows: Vec<(i32, String)> = sqlx::query_as(
        "SELECT score, prospect_id FROM search_prospects($1, $2, $3, NULL, NULL, NULL, NULL, NULL, 100000)",
    )
    .bind(f.q.text())
    .bind(&f.q.excluded)
    .bind(f.q.prefix_last)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(score, id)| (id, i64::from(score)))
        .collect()
}

/// The rows of the search view as a round records them.
async fn images(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT to_jsonb(v) - 'search_vector' - 'refresh_no_dup_check' FROM prospect_search_view v",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn row_of(image: Value) -> prospect_api::views::prospect_search::SearchRow {
    match ProspectSearch::image(image) {
        Image::Row(row) => row,
        _ => panic!("a search row"),
    }
}

async fn insert_hard_row(pool: &PgPool, i: usize, row: &[&str; 5]) {
    let company = format!("c_hard_{i}");
    sqlx::query(
        r#"INSERT INTO "Company" ("id", "name", "industry") VALUES ($1, $2, 'Healthcare')"#,
    )
    .bind(&company)
    .bind(row[0])
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        r#"INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "jobTitle", "email")
           VALUES ($1, $2, $3, $4, $5, $6)"#,
    )
    .bind(format!("p_hard_{i}"))
    .bind(&company)
    .bind(row[1])
    .bind(row[2])
    .bind(row[3])
    .bind(row[4])
    .execute(pool)
    .await
    .unwrap();
}

async fn seeded() -> TestDb {
    seeded_and_fixture(11, async |pool| {
        for (i, row) in HARD_ROWS.iter().enumerate() {
            insert_hard_row(pool, i, row).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_row_rust_rules_out_never_matches_and_one_that_matches_never_beats_its_place() {
    let db = seeded().await;
    let rows: Vec<_> = images(&db.pool).await.into_iter().map(row_of).collect();
    let relevance = Sort {
        key: SearchOrder::Relevance,
        descending: false,
    };
    let (mut ruled_out, mut matched, mut placed_exactly, mut pairs) = (0, 0, 0, 0);
    for hidden in HIDDEN {
        for q in QUERIES {
            let f = filters(q, hidden);
            let scores = ranked(&db.pool, &f).await;
            for row in &rows {
                pairs += 1;
                let admits = ProspectSearch::admits(&f, row);
                let Some(&score) = scores.get(&row.prospect_id) else {
                    ruled_out += usize::from(admits == Admits::No);
                    continue;
                };
                matched += 1;
                assert_ne!(admits, Admits::No, "{q:?} {hidden:?}: {row:?} matches");
                let key = match ProspectSearch::place(&f, relevance, row) {
                    Place::NoEarlierThan(key) => key,
                    // Text beyond ASCII: PostgreSQL's to fold.
                    Place::Unknown if !all_ascii(q, row) => continue,
                    place => panic!("{q:?} {hidden:?}: {row:?} placed {place:?}"),
                };
                let bound = key[0].as_i64().unwrap();
                assert!(
                    bound >= score,
                    "{q:?} {hidden:?}: {} scores {score}, placed at {bound}",
                    row.prospect_id
                );
                assert_eq!(key[1], row.prospect_id.as_str());
                placed_exactly += usize::from(bound == score);
            }
        }
    }
    let rows_matched_nothing = pairs - matched;
    eprintln!(
        "{pairs} pairs: {matched} matches ({placed_exactly} placed exactly), {ruled_out} of the \
         {rows_matched_nothing} others ruled out"
    );
    assert!(matched > 500, "{matched} matches");
    // Most rows that do not match are ruled out (the rest: text beyond ASCII, typo look-alikes the
    // vocabulary does not hold), and most matches are placed where they rank.
    assert!(
        ruled_out * 10 >= rows_matched_nothing * 9,
        "{ruled_out} of {rows_matched_nothing} ruled out"
    );
    assert!(
        placed_exactly * 10 >= matched * 9,
        "{placed_exactly} of {matched} placed exactly"
    );
}

/// What `search_plan()` makes of a query: its tiers and what a row must match.
async fn plan(connection: &mut sqlx::PgConnection, f: &SearchFilters) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws(' / ', tier_queries::text, tier_scores::text, everything::text, impossible::text)
         FROM search_plan($1, $2, $3)",
    )
    .bind(f.q.text())
    .bind(&f.q.excluded)
    .bind(f.q.prefix_last)
    .fetch_one(connection)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_row_whose_words_change_a_querys_corrections_is_one_rust_says_may_move_others() {
    let db = seeded().await;
    // A term with more corrections than the 16 kept: a new neighbour pushes the last one out.
    let crowd: Vec<String> = ('a'..='t').map(|c| format!("marke{c}")).collect();
    sqlx::query(
        "INSERT INTO search_vocabulary (word) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(&crowd)
    .execute(&db.pool)
    .await
    .unwrap();
    let queries = [
        "smith",
        "garcia",
        "carter",
        "engineer",
        "rodriguez",
        "director",
        "marker",
        "wei car",
        "lovelace ada",
        "knuth ",
    ];
    // New rows: typos of the terms (a letter dropped, added, changed, two swapped), and others.
    let words = [
        "smiht",
        "smyth",
        "garcai",
        "garci",
        "cartre",
        "karter",
        "enginer",
        "engineers",
        "rodriquez",
        "rodrigez",
        "directr",
        "directors",
        "markar",
        "amarker",
        "markez",
        "lovelave",
        "knuht",
        "newword",
        "hamilton",
        "babbage",
        "smithson",
    ];
    let (mut changed, mut flagged) = (0, 0);
    for (i, word) in words.iter().enumerate() {
        let mut tx = db.pool.begin().await.unwrap();
        let mut before = Vec::new();
        for q in queries {
            before.push(plan(&mut tx, &filters(q, &[])).await);
        }
        let company = format!("c_new_{i}");
        sqlx::query(
            r#"INSERT INTO "Company" ("id", "name", "industry") VALUES ($1, 'Newco', 'Retail')"#,
        )
        .bind(&company)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            r#"INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "jobTitle")
               VALUES ($1, $2, 'Pat', $3, 'Clerk')"#,
        )
        .bind(format!("p_new_{i}"))
        .bind(&company)
        .bind(word)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "SELECT add_search_vocabulary(ARRAY[$1], 'prospect_search_view_definition'::regclass)",
        )
        .bind(&company)
        .execute(&mut *tx)
        .await
        .unwrap();
        let image: Value = sqlx::query_scalar(
            "SELECT to_jsonb(v) - 'search_vector' - 'refresh_no_dup_check'
             FROM prospect_search_view_definition v WHERE v.company_id = $1",
        )
        .bind(&company)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let row = row_of(image);
        for (q, before) in queries.iter().zip(&before) {
            let f = filters(q, &[]);
            let moves = ProspectSearch::moves_others(&f, &row);
            flagged += usize::from(moves);
            if plan(&mut tx, &f).await != *before {
                changed += 1;
                assert!(moves, "{word:?} changed the plan of {q:?}, unflagged");
            }
        }
        tx.rollback().await.unwrap();
    }
    eprintln!("{changed} plans changed, {flagged} flagged");
    assert!(changed >= 10, "{changed} plans changed");
    assert!(
        flagged < 2 * changed,
        "{flagged} flagged for {changed} plans changed"
    );
}

#[test]
fn relevance_keys_compare_best_first_then_by_id() {
    use prospect_api::views::order::compare_keys;
    use serde_json::json;
    let sort = SearchOrder::DEFAULT;
    let cmp = |a: Value, b: Value| compare_keys(sort, &a, &b, true);
    assert_eq!(
        cmp(json!([1032, "p_b"]), json!([1012, "p_a"])),
        Some(std::cmp::Ordering::Less)
    );
    assert_eq!(
        cmp(json!([1012, "p_a"]), json!([1012, "p_b"])),
        Some(std::cmp::Ordering::Less)
    );
    assert_eq!(
        cmp(json!([1012, "p_a"]), json!([1012, "p_a"])),
        Some(std::cmp::Ordering::Equal)
    );
}

/// A term with more matches than a tier reads at once (1,000) is walked in key order; with a
/// filter, along the filter's index, planned with a setting of its own that the walk restores.
#[tokio::test]
async fn a_dense_filtered_tier_is_walked_in_key_order_and_leaves_the_settings_as_they_were() {
    let db = TestDb::new().await;
    db.execute(
        r#"INSERT INTO "Company" ("id", "name") VALUES ('c_dense', 'Dense Works');
           INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "department")
           SELECT 'p_' || lpad(i::text, 5, '0'), 'c_dense', 'Ann', 'Smith',
                  CASE WHEN i % 3 = 0 THEN 'Legal' ELSE 'Sales' END
           FROM generate_series(1, 3600) AS i;"#,
    )
    .await;
    crate::helpers::refresh_all_ok(&db.pool).await;
    // One transaction, in which a setting made for the walk would outlive it if not restored.
    let mut tx = db.pool.begin().await.unwrap();
    let walked: Vec<String> = sqlx::query_scalar(
        "SELECT prospect_id FROM search_prospects('smith', '{}', false, NULL, NULL, ARRAY['Legal'],
                                                  NULL, NULL, 51)",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let expected: Vec<String> = sqlx::query_scalar(
        "SELECT prospect_id FROM prospect_search_view WHERE department = 'Legal'
         ORDER BY prospect_id LIMIT 51",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(walked, expected);
    let setting: String = sqlx::query_scalar("SELECT current_setting('random_page_cost')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(setting, "4");
}
