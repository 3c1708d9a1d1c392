//! The response cache in incremental mode: a cached response survives a round that changed no row it
//! shows (same body, same ETag, a 304 for a client revalidating), its total and its facet counts
//! follow the changed rows, and a round that changed a row it shows renders it anew. Each answer is
//! compared with a fresh render of the same snapshot by an instance without a cache.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use prospect_api::config::ServeConfig;
use prospect_api::refresh::{RefreshTrigger, incremental_round};
use prospect_api::views::{Mode, ViewName};
use serde_json::Value;

use crate::helpers::{
    ADMIN_TOKEN, Instance, TestApp, eventually, header, json, serve_config, spawn_configured_app,
    spawn_instance,
};

/// An incremental, cached instance that applies, and one without a cache that does not.
async fn cached_and_fresh() -> (TestApp, Instance) {
    let app = spawn_configured_app(|config| {
        config.maintenance.view_maintenance = Mode::Incremental;
        config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
    })
    .await;
    let fresh = spawn_instance(uncached(&app)).await;
    (app, fresh)
}

/// The configuration of an instance over `app`'s database without a response cache, that leaves
/// maintenance to `app`.
fn uncached(app: &TestApp) -> ServeConfig {
    let mut config = serve_config(&app.db);
    config.maintenance.view_maintenance = Mode::Incremental;
    config.response_cache_bytes = 0;
    config.refresh_poll_interval = Duration::from_secs(3600);
    config.freshness_cache_ttl = Duration::ZERO;
    config
}

/// The body of `path` from the instance at `address`, with its data's refresh time.
async fn body_at(app: &TestApp, address: &str, path: &str) -> (String, String) {
    let response = app
        .client
        .get(format!("{address}{path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let at = header(&response, "x-data-refreshed-at");
    (at, response.text().await.unwrap())
}

/// Writes `sql`, then waits until `app` serves a generation newer than the one it served.
async fn write_and_wait_for_the_round(app: &TestApp, sql: &'static str) {
    write_and_wait_for_the_round_of(app, "/prospects/p_both", sql).await;
}

/// Writes `sql`, then waits until `app` serves `path` from a generation newer than it did.
async fn write_and_wait_for_the_round_of(app: &TestApp, path: &str, sql: &'static str) {
    let before = header(&app.get(path).await, "x-data-refreshed-at");
    app.db.execute(sql).await;
    eventually(10, "the round applying the write", || async {
        header(&app.get(path).await, "x-data-refreshed-at") != before
    })
    .await;
}

/// The cache's counter `name` for `view` (`/admin/views`).
async fn cache_count(app: &TestApp, view: &str, name: &str) -> u64 {
    let views = json(app.admin_get("/admin/views").await, 200).await;
    views
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["view"] == view)
        .unwrap()["response_cache"][name]
        .as_u64()
        .unwrap()
}

/// The cached instance's answer to `path` equals the uncached one's, for the same generation.
async fn same_as_fresh(app: &TestApp, fresh: &Instance, path: &str) -> String {
    let (cached_at, cached) = body_at(app, &app.address, path).await;
    let (fresh_at, rendered) = body_at(app, &fresh.address, path).await;
    assert_eq!(cached_at, fresh_at, "{path}: the same generation");
    assert_eq!(cached, rendered, "{path}");
    cached
}

// Software prospects by company name: Billion Half (Knuth), Thousand Co (Turing), Two And A Half
// (Person, Torvalds), Two Billion (Hamilton), Zero Revenue (Lovelace and Grace).
const FIRST_TWO: &str = "/prospects?industry=Software&limit=2";

#[tokio::test]
async fn a_page_survives_a_round_that_changed_rows_it_does_not_show_and_keeps_its_etag() {
    let (app, fresh) = cached_and_fresh().await;
    let first = app.get(FIRST_TWO).await;
    let etag = header(&first, "etag");
    let body = first.text().await.unwrap();

    // Another industry's company, and a Software prospect past the page's last row.
    write_and_wait_for_the_round(
        &app,
        r#"UPDATE "Company" SET "name" = 'Small Shop Renamed' WHERE "id" = 'c_999';
           UPDATE "Prospect" SET "jobTitle" = 'Countess' WHERE "id" = 'p_both'"#,
    )
    .await;
    let revalidated = app.get_with(FIRST_TWO, &[("if-none-match", &*etag)]).await;
    assert_eq!(
        revalidated.status(),
        304,
        "the same body, kept across the round"
    );
    assert_eq!(same_as_fresh(&app, &fresh, FIRST_TWO).await, body);
    assert!(cache_count(&app, "company_prospect_view", "kept").await >= 1);

    // A row of the page.
    write_and_wait_for_the_round(
        &app,
        r#"UPDATE "Prospect" SET "jobTitle" = 'Professor' WHERE "id" = 'p_15e8'"#,
    )
    .await;
    let changed = app.get_with(FIRST_TWO, &[("if-none-match", &*etag)]).await;
    assert_eq!(changed.status(), 200);
    assert!(changed.text().await.unwrap().contains("Professor"));
    same_as_fresh(&app, &fresh, FIRST_TWO).await;
    assert!(cache_count(&app, "company_prospect_view", "dropped_changed").await >= 1);
}

#[tokio::test]
async fn an_entry_older_than_the_rounds_kept_is_rendered_anew_never_brought_past_a_forgotten_one() {
    // The rounds kept are bounded by RESPONSE_CACHE_BYTES (a third a view): here a few rounds.
    let app = spawn_configured_app(|config| {
        config.maintenance.view_maintenance = Mode::Incremental;
        config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
        config.response_cache_bytes = 48 * 1024;
    })
    .await;
    let fresh = spawn_instance(uncached(&app)).await;
    let path = "/prospects/p_15e8";
    same_as_fresh(&app, &fresh, path).await;
    // A round that changes the row the entry shows, then rounds that change others, until the
    // first is no longer kept.
    write_and_wait_for_the_round(
        &app,
        r#"UPDATE "Prospect" SET "jobTitle" = 'Professor' WHERE "id" = 'p_15e8'"#,
    )
    .await;
    for _ in 0..6 {
        write_and_wait_for_the_round(
            &app,
            r#"UPDATE "Company" SET "revenue" = "revenue" + 1 WHERE "id" = 'c_999'"#,
        )
        .await;
    }
    let changed = cache_count(&app, "company_prospect_view", "dropped_changed").await;
    let undecided = cache_count(&app, "company_prospect_view", "dropped_undecided").await;
    assert!(
        same_as_fresh(&app, &fresh, path)
            .await
            .contains("Professor")
    );
    assert_eq!(
        (
            cache_count(&app, "company_prospect_view", "dropped_changed").await - changed,
            cache_count(&app, "company_prospect_view", "dropped_undecided").await - undecided
        ),
        (0, 1),
        "rendered anew for being older than the rounds kept"
    );
}

#[tokio::test]
async fn a_cached_scoped_list_asks_the_database_nothing_and_turns_404_when_its_company_goes() {
    let (app, fresh) = cached_and_fresh().await;
    let lists = [
        "/companies/c_1000/prospects",
        "/companies/c_lonely/prospects",
    ];
    for path in lists {
        same_as_fresh(&app, &fresh, path).await;
    }
    // With the view locked, a request that read it would wait (then 503); a cached page does not
    // read it, not even to see that its company exists.
    let locked = app
        .db
        .transaction_with("LOCK TABLE company_prospect_view IN ACCESS EXCLUSIVE MODE")
        .await;
    for path in lists {
        let answered = tokio::time::timeout(Duration::from_secs(2), app.get(path)).await;
        assert_eq!(answered.expect(path).status(), 200, "{path}");
    }
    locked.rollback().await.unwrap();

    write_and_wait_for_the_round_of(
        &app,
        "/companies?limit=1",
        r#"DELETE FROM "Prospect" WHERE "companyId" = 'c_1000';
           DELETE FROM "Company" WHERE "id" IN ('c_1000', 'c_lonely');"#,
    )
    .await;
    for address in [&app.address, &fresh.address] {
        for path in lists {
            let response = app.client.get(format!("{address}{path}")).send().await;
            assert_eq!(response.unwrap().status(), 404, "{address}{path}");
        }
    }
}

#[tokio::test]
async fn a_total_and_facet_counts_follow_the_changed_rows_without_a_query() {
    let (app, fresh) = cached_and_fresh().await;
    let counted = format!("{FIRST_TWO}&count=exact");
    let facets = "/prospects/facets?industry=Software&facet=department&facet=job_title_level";
    let before = same_as_fresh(&app, &fresh, &counted).await;
    same_as_fresh(&app, &fresh, facets).await;
    let total = |body: &str| serde_json::from_str::<Value>(body).unwrap()["total"].clone();
    assert_eq!(total(&before), 7);

    // A Software prospect past the page's last row: the page is the same, the total one more; the
    // facets count its department and level.
    write_and_wait_for_the_round(
        &app,
        r#"INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "department", "jobTitleLevel")
           VALUES ('p_new', 'c_0', 'Newton', 'Zed', 'Finance', 'VP')"#,
    )
    .await;
    let after = same_as_fresh(&app, &fresh, &counted).await;
    assert_eq!(total(&after), 8);
    let counts = same_as_fresh(&app, &fresh, facets).await;
    assert!(counts.contains("Finance"), "{counts}");
    let updated = cache_count(&app, "company_prospect_view", "updated").await;
    assert!(updated >= 2, "{updated}: the page's total and the facets");
}

#[tokio::test]
async fn what_the_cache_cannot_decide_is_rendered_anew_and_counted() {
    let (app, fresh) = cached_and_fresh().await;
    let search = "/search?q=ada";
    let before = same_as_fresh(&app, &fresh, search).await;
    // A row that may now match, on the search's only page: Rust cannot rank it as the SQL would
    // (its typo corrections come from the vocabulary), so the search is rendered anew.
    write_and_wait_for_the_round(
        &app,
        r#"UPDATE "Prospect" SET "firstName" = 'Adalind' WHERE "id" = 'p_2500'"#,
    )
    .await;
    let after = same_as_fresh(&app, &fresh, search).await;
    assert_ne!(before, after, "the renamed prospect matches now");
    assert!(cache_count(&app, "prospect_search_view", "dropped_undecided").await >= 1);
}

#[tokio::test]
async fn a_search_survives_rounds_whose_rows_cannot_enter_its_page_and_no_other() {
    let (app, fresh) = cached_and_fresh().await;
    // "engineer": Donald Knuth (Engineer) and Grace (Senior Engineer) match it whole and rank
    // first; the Engineering titles match it as a prefix, lower.
    let search = "/search?q=engineer&limit=2";
    let first = app.get(search).await;
    let etag = header(&first, "etag");
    let body = first.text().await.unwrap();
    assert!(
        body.contains("p_15e8") && body.contains("p_first"),
        "{body}"
    );
    let count = |name: &'static str| cache_count(&app, "prospect_search_view", name);

    // A row that cannot match, and one that matches below the page's last row.
    let kept = count("kept").await;
    write_and_wait_for_the_round_of(
        &app,
        search,
        r#"UPDATE "Prospect" SET "jobTitle" = 'Countess' WHERE "id" = 'p_last';
           UPDATE "Prospect" SET "lastName" = 'Lovelace-Byron' WHERE "id" = 'p_both'"#,
    )
    .await;
    let revalidated = app.get_with(search, &[("if-none-match", &*etag)]).await;
    assert_eq!(revalidated.status(), 304, "kept across the round");
    assert_eq!(same_as_fresh(&app, &fresh, search).await, body);
    assert!(count("kept").await > kept);

    // A word one typo from the term: the vocabulary gains a correction, which may change what the
    // search matches among rows the round did not touch. Rendered anew (here to the same body).
    let undecided = count("dropped_undecided").await;
    write_and_wait_for_the_round_of(
        &app,
        search,
        r#"INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName") VALUES ('p_typo', 'c_999', 'Enginer', 'Smith')"#,
    )
    .await;
    assert_eq!(same_as_fresh(&app, &fresh, search).await, body);
    assert!(count("dropped_undecided").await > undecided);

    // A row of the page.
    write_and_wait_for_the_round_of(
        &app,
        search,
        r#"UPDATE "Prospect" SET "jobTitle" = 'Principal Engineer' WHERE "id" = 'p_first'"#,
    )
    .await;
    let changed = app.get_with(search, &[("if-none-match", &*etag)]).await;
    assert_eq!(changed.status(), 200);
    assert!(
        same_as_fresh(&app, &fresh, search)
            .await
            .contains("Principal Engineer")
    );
}

/// The requests of the verifier's mix: lists under each filter value and order, with totals and
/// next pages, facets, single rows, a company's page and prospects, searches.
async fn mix(
    fresh: &Instance,
    client: &reqwest::Client,
    db: &crate::helpers::TestDb,
) -> Vec<String> {
    let industries: Vec<String> = sqlx::query_scalar!(
        r#"SELECT DISTINCT "industry" AS "industry!" FROM "Company" WHERE "industry" IS NOT NULL ORDER BY 1 LIMIT 6"#
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let companies: Vec<String> =
        sqlx::query_scalar!(r#"SELECT "id" FROM "Company" ORDER BY md5("id") LIMIT 12"#)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let prospects: Vec<String> =
        sqlx::query_scalar!(r#"SELECT "id" FROM "Prospect" ORDER BY md5("id") LIMIT 12"#)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let q = |text: &str| text.replace(' ', "%20");
    let mut paths = Vec::new();
    for industry in &industries {
        for sort in [
            "",
            "&sort=-revenue",
            "&sort=updated_at",
            "&sort=-company_name",
        ] {
            paths.push(format!("/prospects?industry={}&limit=5{sort}", q(industry)));
            paths.push(format!(
                "/prospects?industry={}&limit=5&count=exact{sort}",
                q(industry)
            ));
        }
        paths.push(format!("/prospects/facets?industry={}", q(industry)));
        paths.push(format!(
            "/companies?industry={}&limit=5&count=exact",
            q(industry)
        ));
        paths.push(format!(
            "/companies?industry={}&limit=5&sort=-prospect_count",
            q(industry)
        ));
    }
    for sort in [
        "name",
        "-revenue",
        "prospect_count",
        "-last_prospect_update",
    ] {
        paths.push(format!("/companies?limit=7&sort={sort}"));
    }
    paths.push("/companies/facets".to_owned());
    paths.push("/prospects/facets".to_owned());
    for company in &companies {
        paths.push(format!("/companies/{company}"));
        paths.push(format!("/companies/{company}/prospects?limit=3"));
    }
    for prospect in &prospects {
        paths.push(format!("/prospects/{prospect}"));
    }
    for term in [
        "smith",
        "ma",
        "engineering",
        "garcia lo",
        "director of",
        "wei car",
    ] {
        paths.push(format!("/search?q={}", q(term)));
        paths.push(format!("/search?q={}&limit=4", q(term)));
    }
    // The second page of every list, as its first page links it.
    let firsts: Vec<String> = paths
        .iter()
        .filter(|path| path.contains("limit=") && !path.contains("/facets"))
        .cloned()
        .collect();
    for path in firsts {
        let page: Value = client
            .get(format!("{}{path}", fresh.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if let Some(cursor) = page["next_cursor"].as_str() {
            paths.push(format!("{path}&cursor={cursor}"));
        }
    }
    paths
}

/// One random write of the kinds that move rows between pages, counts and facets.
async fn storm_write(pool: &sqlx::PgPool, step: u64) {
    let pick = |n: u64| format!("{:x}", md5ish(step * 7919 + n));
    let statement = match step % 8 {
        0 => {
            r#"UPDATE "Prospect" SET "companyId" = (SELECT "id" FROM "Company" ORDER BY md5("id" || $1) LIMIT 1)
                 WHERE "id" = (SELECT "id" FROM "Prospect" ORDER BY md5("id" || $1) LIMIT 1)"#
        }
        1 => {
            r#"UPDATE "Prospect" SET "lastName" = initcap($1) WHERE "id" = (SELECT "id" FROM "Prospect" ORDER BY md5("id" || $1) LIMIT 1)"#
        }
        2 => {
            r#"UPDATE "Company" SET "industry" = (SELECT "industry" FROM "Company" ORDER BY md5("id" || $1) LIMIT 1)
                 WHERE "id" = (SELECT "id" FROM "Company" ORDER BY md5($1 || "id") LIMIT 1)"#
        }
        3 => {
            r#"DELETE FROM "Prospect" WHERE "id" = (SELECT "id" FROM "Prospect" ORDER BY md5("id" || $1) LIMIT 1)"#
        }
        4 => {
            r#"INSERT INTO "Prospect" ("id", "companyId", "firstName", "lastName", "department", "jobTitleLevel", "email")
                 SELECT 'storm_' || $1, "id", 'Storm', initcap($1), 'Sales', 'VP', 'storm_' || $1 || '@x.example'
                 FROM "Company" ORDER BY md5("id" || $1) LIMIT 1"#
        }
        5 => {
            r#"UPDATE "Company" SET "name" = initcap($1), "revenue" = length($1) * 1000 WHERE "id" = (SELECT "id" FROM "Company" ORDER BY md5("id" || $1) LIMIT 1)"#
        }
        6 => {
            r#"UPDATE "Prospect" SET "department" = 'Finance', "updatedAt" = "updatedAt" + interval '1 day' WHERE "id" = (SELECT "id" FROM "Prospect" ORDER BY md5("id" || $1) LIMIT 1)"#
        }
        _ => {
            r#"UPDATE "Company" SET "country" = 'Chile' WHERE "id" = (SELECT "id" FROM "Company" ORDER BY md5("id" || $1) LIMIT 1)"#
        }
    };
    sqlx::query(statement)
        .bind(pick(step))
        .execute(pool)
        .await
        .unwrap();
}

/// A few bits of `n`, scattered (the writes' randomness, the same each run).
fn md5ish(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

#[tokio::test]
async fn after_a_storm_of_writes_every_answer_of_two_cached_instances_equals_a_fresh_render() {
    let db = crate::helpers::TestDb::new().await;
    let options = prospect_api::seed::SeedOptions {
        companies: 150,
        prospects_per_company: 5,
        seed: 11,
        replace: false,
    };
    prospect_api::seed::seed(
        &db.pool,
        &options,
        &prospect_api::progress::Progress::hidden("seed"),
    )
    .await
    .unwrap();
    db.convert(Mode::Incremental).await;
    let mut config = serve_config(&db);
    config.maintenance.view_maintenance = Mode::Incremental;
    config.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
    let applying = crate::helpers::spawn_app_with(db, config).await;
    applying.wait_until_ready().await;
    // B only reads: it never looks for changes, so A applies every round.
    let mut reading = uncached(&applying);
    reading.response_cache_bytes = 64 << 20;
    reading.freshness_cache_ttl = Duration::from_secs(1);
    reading.admin_token = Some(ADMIN_TOKEN.parse().unwrap());
    let reader = spawn_instance(reading).await;
    let fresh = spawn_instance(uncached(&applying)).await;
    let client = reqwest::Client::new();
    let paths = mix(&fresh, &client, &applying.db).await;
    assert!(paths.len() > 120, "{} requests", paths.len());

    // The storm: writes of every kind, while both cached instances answer the mix round after round.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (pool, stop) = (applying.db.pool.clone(), stop.clone());
        tokio::spawn(async move {
            let mut step = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                storm_write(&pool, step).await;
                step += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            step
        })
    };
    let readers: Vec<_> = [applying.address.clone(), reader.address.clone()]
        .into_iter()
        .map(|address| {
            let (client, paths, stop) = (client.clone(), paths.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let path = &paths[(md5ish(i) as usize) % paths.len()];
                    let _ = client.get(format!("{address}{path}")).send().await;
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let writes = writer.await.unwrap();
    for reading in readers {
        reading.await.unwrap();
    }
    assert!(writes > 100, "{writes} writes");

    // The last round, then every instance's freshness at it.
    eventually(15, "the last round", || async {
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM read_models_behind()"#)
            .fetch_one(&applying.db.pool)
            .await
            .unwrap()
            == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut differences = Vec::new();
    for path in &paths {
        let expected = client
            .get(format!("{}{path}", fresh.address))
            .send()
            .await
            .unwrap();
        let expected = (expected.status(), expected.text().await.unwrap());
        for address in [&applying.address, &reader.address] {
            let got = client.get(format!("{address}{path}")).send().await.unwrap();
            let got = (got.status(), got.text().await.unwrap());
            if got != expected {
                differences.push(format!("{address}{path}: {got:?} instead of {expected:?}"));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {}: {:#?}",
        differences.len(),
        paths.len() * 2,
        &differences[..differences.len().min(3)]
    );
    // The cache carried entries across rounds, on both instances.
    for app_address in [&applying.address, &reader.address] {
        let views: Value = client
            .get(format!("{app_address}/admin/views"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kept: u64 = views
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                v["response_cache"]["kept"].as_u64().unwrap()
                    + v["response_cache"]["updated"].as_u64().unwrap()
            })
            .sum();
        // How many depends on how many rounds and reads a loaded machine fits in the storm (34 to
        // hundreds): what matters is that entries were carried, so the comparisons above judged them.
        assert!(
            kept > 0,
            "{app_address}: {kept} responses kept across rounds"
        );
    }
}

/// The last successful refresh (the generation) of `view`.
async fn generation_of(db: &crate::helpers::TestDb, view: ViewName) -> i64 {
    sqlx::query_scalar("SELECT log_id FROM last_successful_refreshes() WHERE view_name = $1")
        .bind(view.as_str())
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_render_a_round_overtook_is_cached_at_the_newer_generation_unless_the_round_changed_it() {
    use prospect_api::http::response_cache::shows::{OneRow, Shows};
    use prospect_api::http::response_cache::{Rendered, ResponseCache};
    use prospect_api::views::company_prospects::CompanyProspects;

    let db = crate::helpers::TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    db.convert(Mode::Incremental).await;
    let view = ViewName::CompanyProspectView;
    let before = generation_of(&db, view).await;
    db.execute(r#"UPDATE "Prospect" SET "jobTitle" = 'Countess' WHERE "id" = 'p_last'"#)
        .await;
    let settings = crate::helpers::quick_refresh_settings();
    incremental_round(&db.pool, RefreshTrigger::Incremental, None, &settings)
        .await
        .unwrap();
    let after = generation_of(&db, view).await;
    assert!(after > before, "the round is a new generation");

    // Each request reads generation `before`, but its render ends once `after` is committed: the
    // pool, as the source, tells the cache so.
    let cache = ResponseCache::new(1 << 20);
    let served = |generation: i64, id: &'static str, json: &'static str| {
        let render = async move {
            let shows: Arc<dyn Shows> = Arc::new(OneRow::<CompanyProspects>::new(id.to_owned()));
            Ok(Rendered {
                json: json.as_bytes().to_vec(),
                link: None,
                shows: Some(shows),
            })
        };
        let (cache, pool) = (&cache, &db.pool);
        async move {
            let response = cache
                .respond(view, Some(generation), id, &HeaderMap::new(), pool, render)
                .await
                .unwrap();
            String::from_utf8(
                axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap()
                    .to_vec(),
            )
            .unwrap()
        }
    };
    // The round did not change p_both: its render shows `after` too, and is cached (a request of
    // `after` finds it kept). It changed p_last: that render answers its own request only.
    for (id, kept) in [("p_both", true), ("p_last", false)] {
        assert_eq!(served(before, id, "{\"render\":1}").await, "{\"render\":1}");
        let again = served(after, id, "{\"render\":2}").await;
        assert_eq!(again == "{\"render\":1}", kept, "{id}: {again}");
    }
}
