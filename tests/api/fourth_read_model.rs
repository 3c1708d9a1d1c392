//! A read model that is not one of the service's, declared here as a new one would be in
//! `src/views/`: its row, filters, orders, facets and statements, and nothing else. Added to the
//! served models, it gets its list (JSON pages and CSV), its single rows, its facets, cursors,
//! freshness headers, ETags, strict parameters and its OpenAPI operations from the one generic path.

use futures_util::TryStreamExt;
use futures_util::stream::BoxStream;
use prospect_api::filters;
use prospect_api::http::ReadModels;
use prospect_api::views::filters::any_of;
use prospect_api::views::order::{Counted, Facet, FacetCount, Sort, SortKey};
use prospect_api::views::{Api, IdPath, ReadModel, Shape, ViewName, estimated_rows};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{
    TestDb, header, json, rejected_params, serve_config, spawn_app_with_models, strings,
};

/// Each company's domain, from the companies' read model.
struct CompanyDomains;

#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
struct DomainRow {
    company_id: String,
    name: String,
    domain: Option<String>,
    industry: Option<String>,
}

filters! {
    /// The filters of the domains.
    pub struct DomainFilters {
        /// Industry; repeatable.
        pub industry: Vec<String>,
        /// Country.
        pub country: Option<String>,
    }
}

prospect_api::sort_keys! {
    enum DomainOrder {
        Name = "name", reads ["name"];
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DomainFacet {
    Industry,
}

impl Facet for DomainFacet {
    const ALL: &'static [(&'static str, Self)] = &[("industry", DomainFacet::Industry)];
}

macro_rules! domains {
    // One statement for both shapes: a few hundred companies read either way.
    (($filters:expr, $one:expr, $after:expr, $rows:expr), shape: $_shape:ident, keyset: ($($keyset:tt)+),
     order: ($($order:tt)+)) => {{
        let f: &DomainFilters = $filters;
        sqlx::query_as!(
            DomainRow,
            r#"SELECT company_id AS "company_id!", name AS "name!", domain, industry
               FROM company_summary_view
               WHERE ($3::text[] IS NULL OR CASE WHEN cardinality($3) = 1 THEN industry = $3[1]
                                                  ELSE industry = ANY($3) END)
                 AND ($4::text IS NULL OR country = $4)
                 AND ($5::text IS NULL OR company_id = $5)
                 AND ($1::jsonb IS NULL OR "#
                + $($keyset)+
                + ") ORDER BY "
                + $($order)+
                + " LIMIT $2",
            $after,
            $rows,
            any_of(&f.industry),
            f.country.as_deref(),
            $one,
        )
    }};
}

fn sorted<'a>(
    pool: &'a PgPool,
    filters: &'a DomainFilters,
    one: Option<&'a str>,
    sort: Sort<DomainOrder>,
    after: Option<&'a Value>,
    limit: i64,
) -> BoxStream<'a, Result<DomainRow, sqlx::Error>> {
    let rows = Some(limit);
    prospect_api::page_in_order!(sort, false, domains!(filters, one, after, rows).fetch(pool), {
        DomainOrder::Name => ["COALESCE(name, '')", "company_id"] from "($1->>0, $1->>1)";
    })
}

impl ReadModel for CompanyDomains {
    const VIEW: ViewName = ViewName::CompanySummaryView;
    const API: Api = Api {
        tag: "companies",
        path: "/domains",
        list: ("list_domains", "Each company's domain."),
        rows: "domains",
        sort_doc: "`name`.",
        one: Some(IdPath {
            path: "/domains/{company_id}",
            param: "company_id",
            tag: "companies",
            operation: "get_domain",
            summary: "One company's domain.",
            noun: "company",
        }),
        facets: Some("domain_facets"),
        scoped: None,
    };
    type Row = DomainRow;
    type Filters = DomainFilters;
    type Sort = DomainOrder;
    type Facet = DomainFacet;
    const ROW_BYTES: usize = 120;

    fn rows<'a>(
        pool: &'a PgPool,
        filters: &'a DomainFilters,
        sort: Sort<DomainOrder>,
        after: Option<&'a Value>,
        limit: i64,
        _: Shape,
    ) -> BoxStream<'a, Result<DomainRow, sqlx::Error>> {
        sorted(pool, filters, None, sort, after, limit)
    }

    async fn count(pool: &PgPool, f: &DomainFilters) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM company_summary_view
               WHERE ($1::text[] IS NULL OR industry = ANY($1)) AND ($2::text IS NULL OR country = $2)"#,
            any_of(&f.industry),
            f.country.as_deref(),
        )
        .fetch_one(pool)
        .await
    }

    async fn estimate(pool: &PgPool, f: &DomainFilters) -> Result<i64, sqlx::Error> {
        let plan = sqlx::query_scalar!(
            r#"EXPLAIN (FORMAT JSON) SELECT 1 FROM company_summary_view
               WHERE ($1::text[] IS NULL OR industry = ANY($1)) AND ($2::text IS NULL OR country = $2)"#,
            any_of(&f.industry),
            f.country.as_deref(),
        )
        .fetch_one(pool)
        .await?;
        Ok(estimated_rows(plan.as_ref()))
    }

    async fn facet(
        pool: &PgPool,
        f: &DomainFilters,
        _: DomainFacet,
    ) -> Result<Vec<FacetCount>, sqlx::Error> {
        let groups = sqlx::query_as!(
            Counted,
            r#"SELECT industry AS value, count(*) AS "count!" FROM company_summary_view
               WHERE industry IS NOT NULL
                 AND ($1::text[] IS NULL OR industry = ANY($1)) AND ($2::text IS NULL OR country = $2)
               GROUP BY 1 ORDER BY 2 DESC, 1"#,
            any_of(&f.industry),
            f.country.as_deref(),
        )
        .fetch_all(pool)
        .await?;
        Ok(Counted::facet_counts(groups))
    }

    async fn one(pool: &PgPool, id: &str) -> Result<Option<DomainRow>, sqlx::Error> {
        let filters = DomainFilters::default();
        sorted(pool, &filters, Some(id), DomainOrder::DEFAULT, None, 1)
            .try_next()
            .await
    }

    fn cursor_key(_: Sort<DomainOrder>, row: &DomainRow) -> Value {
        json!([row.name, row.company_id])
    }
}

#[tokio::test]
async fn a_read_model_declared_outside_the_service_is_served_by_the_generic_path() {
    let db = TestDb::new().await;
    db.execute(include_str!("../fixtures/formatting_cases.sql"))
        .await;
    let mut models = ReadModels::all();
    models.add::<CompanyDomains>();
    let config = serve_config(&db);
    let app = spawn_app_with_models(db, config, models).await;
    app.wait_until_ready().await;

    let first = app.get("/domains?limit=3").await;
    assert!(header(&first, "x-data-age").parse::<u64>().is_ok());
    assert!(header(&first, "etag").starts_with('"'));
    let first = json(first, 200).await;
    let names: Vec<&str> = strings(&first["data"], "name");
    let mut sorted_names = names.clone();
    sorted_names.sort();
    assert_eq!((names.len(), &names), (3, &sorted_names));
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = app
        .get_json(&format!("/domains?limit=3&cursor={cursor}"), 200)
        .await;
    assert_ne!(second["data"][0], first["data"][0]);

    let all = app.get_json("/domains?limit=500&count=exact", 200).await;
    let total = all["total"].as_i64().unwrap();
    assert_eq!(all["data"].as_array().unwrap().len() as i64, total);
    let id = all["data"][0]["company_id"].as_str().unwrap().to_owned();
    let one = app
        .get_json(&format!("/domains/{id}?fields=domain"), 200)
        .await;
    assert_eq!(one, json!({"domain": all["data"][0]["domain"]}));
    app.get_json("/domains/no-such-company", 404).await;

    let facets = app.get_json("/domains/facets", 200).await;
    let counted: i64 = facets["industry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value["count"].as_i64().unwrap())
        .sum();
    let with_industry = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| !row["industry"].is_null())
        .count();
    assert_eq!(counted, with_industry as i64);

    let csv = app.get("/domains?format=csv&fields=company_id").await;
    assert_eq!(header(&csv, "content-type"), "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert_eq!(
        csv.lines().count() as i64,
        total + 1,
        "a header and every row"
    );

    assert_eq!(
        rejected_params(app.get("/domains?industy=Software&sort=-nope").await).await,
        ["sort", "industy"]
    );
    let spec = app.get_json("/openapi.json", 200).await;
    for path in ["/domains", "/domains/{company_id}", "/domains/facets"] {
        assert!(spec["paths"][path]["get"].is_object(), "{path} documented");
    }
    assert!(spec["components"]["schemas"]["Page_DomainRow"].is_object());
}
