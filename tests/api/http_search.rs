//! GET /search over real HTTP: what a query matches (whole words, the last term as a prefix, typos,
//! accents, any order, emails) and how results rank and page.

use serde_json::Value;

use crate::helpers::{TestApp, TestDb, rejected_params, serve_config, spawn_app_with};

/// Prospects built for ranking: every name and word below is there for one of the tests.
const PEOPLE: &str = r#"
INSERT INTO "Company" ("id", "name", "industry", "country") VALUES
    ('c_globex',  'Globex',            'Software',   'Germany'),
    ('c_carter',  'Carter Logistics',  'Transport',  'France'),
    ('c_health',  'Mercy Hospital',    'Healthcare', 'France'),
    ('c_atlas',   'Atlas Maps',        'Software',   'Spain');
INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "email", "jobTitle", "department") VALUES
    ('p_wei_carter',   'c_globex', 'Wei',     'Carter',     'wei.carter@globex.example', 'Engineer',     'Engineering'),
    ('p_wei_campbell', 'c_carter', 'Wei',     'Campbell',   'wei@carter.example',        'Dispatcher',   'Operations'),
    ('p_wei_maps',     'c_atlas',  'Wei',     'Lindqvist',  'wei@atlas.example',         'Cartographer', 'Product'),
    ('p_wei_nurse',    'c_health', 'Wei',     'Okafor',     'wei@mercy.example',         'Nurse',        'Care'),
    ('p_carteret',     'c_globex', 'Marie',   'Carteret',   'marie@globex.example',      'Analyst',      'Finance'),
    ('p_carver',       'c_globex', 'Tom',     'Carver',     'tom@globex.example',        'Analyst',      'Finance'),
    ('p_jose_accent',  'c_atlas',  'José',    'García',     'jose@atlas.example',        'Sales Lead',   'Sales'),
    ('p_jose_plain',   'c_globex', 'Jose',    'Garcia',     'jgarcia@globex.example',    'Designer',     'Product'),
    ('p_jose_long',    'c_globex', 'José Luis', 'Garcia',   'jlgarcia@globex.example',   'Buyer',        'Sales'),
    ('p_montgomery',   'c_atlas',  'Ruth',    'Montgomery', 'ruth@atlas.example',        'Counsel',      'Legal'),
    ('p_odd',          'c_atlas',  'Zoë',     'O''Brien',   'zoe+list@atlas.example',    'R&D_100%\Lab', 'Research');
INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "jobTitle")
SELECT 'p_match_' || lpad(n::text, 3, '0'), CASE WHEN n % 3 = 0 THEN 'c_carter' ELSE 'c_globex' END,
       'Pat', CASE WHEN n % 2 = 0 THEN 'Matchett' ELSE 'Match' END, 'Clerk'
FROM generate_series(1, 130) n;
"#;

async fn search_app() -> TestApp {
    let db = TestDb::new().await;
    db.execute(PEOPLE).await;
    let config = serve_config(&db);
    let app = spawn_app_with(db, config).await;
    app.wait_until_ready().await;
    app
}

/// The prospect ids of the first page of `/search?{query}`, in the order served.
async fn ranked(app: &TestApp, query: &str) -> Vec<String> {
    rows(&app.get_json(&format!("/search?{query}"), 200).await)
        .iter()
        .map(|row| row["prospect_id"].as_str().unwrap().to_owned())
        .collect()
}

fn rows(body: &Value) -> &Vec<Value> {
    body["data"].as_array().unwrap()
}

/// Pages through `/search?{query}` to the end: every row served, in order.
async fn all_pages(app: &TestApp, query: &str) -> Vec<Value> {
    let mut served = Vec::new();
    let mut path = format!("/search?{query}");
    loop {
        let page = app.get_json(&path, 200).await;
        served.extend(rows(&page).iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/search?{query}&cursor={next}"),
            None => return served,
        }
    }
}

#[tokio::test]
async fn terms_match_word_starts_and_rank_name_above_company_above_job_title() {
    let app = search_app().await;
    // "car" starts Carter (a name), Carter Logistics (a company), Cartographer (a job title); it
    // is inside "Healthcare", which must not match.
    assert_eq!(
        ranked(&app, "q=wei+car").await,
        ["p_wei_carter", "p_wei_campbell", "p_wei_maps"]
    );
    // Any order of terms (only the last one is a prefix: "car wei" has no whole word "car").
    assert_eq!(
        ranked(&app, "q=carter+wei").await,
        ["p_wei_carter", "p_wei_campbell"]
    );
    assert!(ranked(&app, "q=car+wei").await.is_empty());
    // Case does not matter.
    assert_eq!(
        ranked(&app, "q=WEI+CAR").await,
        ranked(&app, "q=wei+car").await
    );
}

#[tokio::test]
async fn the_last_term_is_a_prefix_from_its_first_letter_unless_the_query_ends_in_a_space() {
    let app = search_app().await;
    let w = ranked(&app, "q=w").await;
    assert_eq!(w.len(), 4, "one letter finds every Wei: {w:?}");
    assert!(w.iter().all(|id| id.starts_with("p_wei_")), "{w:?}");
    assert_eq!(ranked(&app, "q=wei+cart&limit=1").await, ["p_wei_carter"]);
    // Finished words are whole: "car " no longer finds Carter, and an earlier term is whole too.
    assert!(ranked(&app, "q=car%20").await.is_empty());
    assert!(ranked(&app, "q=we+carter").await.is_empty());
}

#[tokio::test]
async fn accents_fold_away_both_ways() {
    let app = search_app().await;
    let both = ["p_jose_accent", "p_jose_plain"];
    for query in ["q=jose+garcia", "q=Jos%C3%A9+Garc%C3%ADa", "q=garcia+jose"] {
        let found = ranked(&app, query).await;
        let mut exact = found[..2].to_vec();
        exact.sort();
        assert_eq!(exact, both, "{query}: the exact names first");
        assert_eq!(
            found[2..],
            ["p_jose_long"],
            "{query}: then one with another word"
        );
    }
    assert_eq!(ranked(&app, "q=zoe").await, ["p_odd"]);
}

#[tokio::test]
async fn typos_are_forgiven_by_term_length_and_rank_below_exact_and_prefix_matches() {
    let app = search_app().await;
    // The whole name first, then the name's start (Carteret), then the company's whole word
    // (Carter Logistics), and one typo (Carver) last.
    let carter: Vec<Value> = all_pages(&app, "q=carter&limit=500").await;
    let ids: Vec<&str> = carter
        .iter()
        .map(|row| row["prospect_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[..3], ["p_wei_carter", "p_carteret", "p_match_003"][..]);
    assert_eq!(ids.last(), Some(&"p_carver"));
    assert_eq!(
        ids.len(),
        3 + 43 + 1,
        "Carter Logistics employs Wei Campbell and 43 Pats"
    );
    // One typo from 5 letters: a deletion, an insertion, a substitution, a transposition.
    for typo in ["cartr", "carterr", "cartar", "catrer"] {
        assert!(
            ranked(&app, &format!("q={typo}%20"))
                .await
                .contains(&"p_wei_carter".to_owned()),
            "{typo}"
        );
    }
    // Under 5 letters, none: "wie " is not "wei".
    assert!(ranked(&app, "q=wie%20").await.is_empty());
    // Two typos need 9 letters.
    assert!(ranked(&app, "q=cartxx%20").await.is_empty());
    assert_eq!(ranked(&app, "q=montgomxxy%20").await, ["p_montgomery"]);
    assert_eq!(ranked(&app, "q=ruth+montgoemry").await, ["p_montgomery"]);
}

#[tokio::test]
async fn an_email_matches_whole_or_as_its_start_once_it_has_an_at_sign() {
    let app = search_app().await;
    assert_eq!(
        ranked(&app, "q=wei.carter@globex.example").await,
        ["p_wei_carter"]
    );
    assert_eq!(ranked(&app, "q=wei.carter@glo").await, ["p_wei_carter"]);
    assert_eq!(ranked(&app, "q=zoe%2Blist@atlas.example").await, ["p_odd"]);
    // Without the at sign the parts are words: "globex" is a company, not an email's inside.
    let globex = ranked(&app, "q=globex&limit=200").await;
    assert!(globex.contains(&"p_carver".to_owned()));
    assert!(!globex.contains(&"p_wei_maps".to_owned()));
}

#[tokio::test]
async fn wildcard_and_quote_characters_are_plain_text() {
    let app = search_app().await;
    assert_eq!(ranked(&app, "q=o%27brien").await, ["p_odd"]);
    assert_eq!(ranked(&app, "q=r%26d_100%25%5Clab").await, ["p_odd"]);
    // Neither LIKE's wildcards nor tsquery's operators: these match nothing, as they are no words.
    for nothing in [
        "q=%25%25%25",
        "q=_",
        "q=%5C%5C",
        "q=%27",
        "q=%3A*",
        "q=a%3A*+%7C+b",
    ] {
        assert!(ranked(&app, nothing).await.is_empty(), "{nothing}");
    }
    assert_eq!(
        ranked(&app, "q=!wei").await,
        ranked(&app, "q=wei").await,
        "! is no negation"
    );
}

#[tokio::test]
async fn ranked_results_page_by_score_and_id_each_row_once() {
    let app = search_app().await;
    // Match (whole word) above Matchett (prefix), ties in id order.
    let whole: Vec<Value> = all_pages(&app, "q=match&limit=500").await;
    assert_eq!(whole.len(), 130);
    let key = |row: &Value| {
        (
            -row["score"].as_i64().unwrap(),
            row["prospect_id"].as_str().unwrap().to_owned(),
        )
    };
    assert!(whole.windows(2).all(|pair| key(&pair[0]) < key(&pair[1])));
    let first_prefix = whole
        .iter()
        .position(|row| row["last_name"] == "Matchett")
        .unwrap();
    assert!(
        whole[..first_prefix]
            .iter()
            .all(|row| row["last_name"] == "Match")
    );
    for limit in [1, 7, 50] {
        let paged = all_pages(&app, &format!("q=match&limit={limit}")).await;
        assert_eq!(paged, whole, "limit {limit}");
    }
    // Two terms take the scored path: still in order, each once, under a filter.
    let two = all_pages(&app, "q=pat+match&limit=9&company_country=France").await;
    assert_eq!(
        two.len(),
        43,
        "every third Pat works at Carter Logistics, in France"
    );
    assert!(two.windows(2).all(|pair| key(&pair[0]) < key(&pair[1])));
}

#[tokio::test]
async fn the_company_name_order_stays_available_both_ways_and_relevance_has_one_sense() {
    let app = search_app().await;
    let body = app
        .get_json("/search?q=wei&sort=company_name&count=exact", 200)
        .await;
    let companies: Vec<&str> = rows(&body)
        .iter()
        .map(|row| row["company_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        companies,
        ["Atlas Maps", "Carter Logistics", "Globex", "Mercy Hospital"]
    );
    assert_eq!(body["total"], 4);
    assert!(rows(&body).iter().all(|row| row["score"].is_null()));
    let reversed = ranked(&app, "q=wei&sort=-company_name").await;
    assert_eq!(reversed.first().map(String::as_str), Some("p_wei_nurse"));
    assert_eq!(
        rejected_params(app.get("/search?q=wei&sort=-relevance").await).await,
        ["sort"]
    );
    let estimated = app.get_json("/search?q=match&count=estimated", 200).await;
    assert!(estimated["estimated_total"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn bad_queries_are_400s_naming_q() {
    let app = search_app().await;
    for query in ["", "q=", "q=%20%20", "q=one+two+three+four+five+six"] {
        assert_eq!(
            rejected_params(app.get(&format!("/search?{query}")).await).await,
            ["q"],
            "{query}"
        );
    }
}
