//! Deterministic demo data, generated inside PostgreSQL (INSERT ... SELECT statements over ranges of
//! companies, not row by row from Rust; the ranges are for progress, in one transaction). Every value
//! is a function of the row number and the seed (`hashint8extended`), so the same seed gives the same
//! data whatever order the database produces rows in, and however it is cut into ranges. All domains
//! and emails use the reserved `.example` top-level domain: demo contact data must never be real.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::progress::{Progress, Step};

/// Companies per statement: about 100,000 prospects at the demo's density, a second or so each.
const COMPANIES_PER_STATEMENT: u32 = 10_000;

#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub companies: u32,
    /// Average prospects per company; each company gets between 1 and 2×this-1, and about 3% get none.
    pub prospects_per_company: u32,
    pub seed: i64,
    /// Empty the base tables first (otherwise seeding a non-empty database is refused).
    pub replace: bool,
}

impl SeedOptions {
    /// The demo data (`serve --demo`, and `seed`'s defaults): about 100,000 prospects, a few
    /// seconds to generate.
    pub const DEMO: SeedOptions = SeedOptions {
        companies: 10_000,
        prospects_per_company: 10,
        seed: 42,
        replace: false,
    };
}

#[derive(Debug, Clone)]
pub struct SeedSummary {
    pub companies: u64,
    pub prospects: u64,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("the base tables already hold data; pass --replace to delete it and seed anew")]
    NotEmpty,
    #[error("prospects per company must be at most {max}")]
    TooManyPerCompany { max: u32 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Prospect ids are derived from `company number * this + prospect number`.
const MAX_PROSPECTS_PER_COMPANY: u32 = 50_000;

/// Fills the base tables with demo data in one transaction, reporting to `progress` as it goes.
#[tracing::instrument(skip(pool, progress))]
pub async fn seed(
    pool: &PgPool,
    options: &SeedOptions,
    progress: &Progress,
) -> Result<SeedSummary, SeedError> {
    if options.prospects_per_company > MAX_PROSPECTS_PER_COMPANY {
        return Err(SeedError::TooManyPerCompany {
            max: MAX_PROSPECTS_PER_COMPANY,
        });
    }
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    if options.replace {
        sqlx::query!(r#"TRUNCATE "Prospect", "Company""#)
            .execute(&mut *tx)
            .await?;
    } else if base_tables_hold_data(&mut tx).await? {
        return Err(SeedError::NotEmpty);
    }
    let companies = insert_all(&mut tx, options, Table::Companies, progress).await?;
    let prospects = insert_all(&mut tx, options, Table::Prospects, progress).await?;
    progress.report(&Step {
        phase: "committing".to_owned(),
        rows: Some(companies + prospects),
        ..Step::default()
    });
    tx.commit().await?;
    progress.finish();
    Ok(SeedSummary {
        companies,
        prospects,
        elapsed: started.elapsed(),
    })
}

/// Whether "Company" or "Prospect" has any row (what `serve --demo` checks before seeding).
pub async fn base_tables_hold_data(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT (EXISTS (SELECT 1 FROM "Company") OR EXISTS (SELECT 1 FROM "Prospect")) AS "any!""#
    )
    .fetch_one(conn)
    .await
}

/// Company numbers 1 to `companies`, in ranges of `COMPANIES_PER_STATEMENT`.
fn company_ranges(companies: u32) -> impl Iterator<Item = RangeInclusive<u32>> {
    (1..=companies)
        .step_by(COMPANIES_PER_STATEMENT as usize)
        .map(move |first| {
            first
                ..=first
                    .saturating_add(COMPANIES_PER_STATEMENT - 1)
                    .min(companies)
        })
}

/// A company's id: its number, zero-padded, so that ids sort as numbers do.
fn company_id(number: u32) -> String {
    format!("cmp_{number:08}")
}

/// What a seeding statement inserts.
#[derive(Debug, Clone, Copy)]
enum Table {
    Companies,
    /// The prospects of companies inserted before.
    Prospects,
}

/// The rows of `table` for every company, a range of companies per statement: how many.
async fn insert_all(
    conn: &mut sqlx::PgConnection,
    options: &SeedOptions,
    table: Table,
    progress: &Progress,
) -> Result<u64, sqlx::Error> {
    let mut rows = 0;
    for range in company_ranges(options.companies) {
        rows += insert(conn, options, table, &range).await?;
        progress.report(&Step {
            phase: table.phase().to_owned(),
            done: Some((u64::from(*range.end()), u64::from(options.companies))),
            unit: "companies",
            rows: Some(rows),
            ..Step::default()
        });
    }
    Ok(rows)
}

impl Table {
    fn phase(self) -> &'static str {
        match self {
            Table::Companies => "companies",
            Table::Prospects => "prospects",
        }
    }
}

/// The companies numbered `$numbers`, generated from `$options.seed`.
macro_rules! companies_statement {
    ($options:expr, $numbers:expr) => {
        sqlx::query!(
        r#"
WITH lists AS (
    SELECT
        ARRAY['Acme','Globex','Initech','Umbrella','Stark','Wayne','Cyberdyne','Soylent','Hooli','Vandelay',
              'Wonka','Tyrell','Aperture','Nakatomi','Monarch','Virtucon','Sterling','Genco','Bluth','Prestige',
              'Oceanic','Zenith','Apex','Summit','Pioneer','Evergreen','Horizon','Quantum','Vertex','Nimbus',
              'Atlas','Beacon','Cobalt','Falcon','Granite','Harbor','Ironwood','Juniper','Keystone','Lighthouse'] AS brands,
        ARRAY['Systems','Labs','Dynamics','Industries','Solutions','Holdings','Networks','Analytics','Logistics',
              'Partners','Capital','Foods','Health','Energy','Robotics','Media','Works','Group','Technologies',
              'Ventures'] AS kinds,
        -- Most frequent first: industries are drawn with a skew towards the start of the list.
        ARRAY['Software','Financial Services','Healthcare','Retail','Manufacturing','Telecommunications',
              'Education','Real Estate','Transportation','Energy','Insurance','Media','Hospitality',
              'Construction','Pharmaceuticals','Biotechnology','Automotive','Aerospace','Agriculture',
              'Consulting','Legal Services','Logistics','Food & Beverage','Government','Non-Profit'] AS industries,
        ARRAY['United States','United Kingdom','Germany','France','Canada','India','Australia','Netherlands',
              'Spain','Italy','Brazil','Japan','Singapore','Sweden','Switzerland','Ireland','Mexico','Poland',
              'Israel','South Korea','Denmark','Norway','Finland','Belgium','Austria','New Zealand',
              'South Africa','Argentina','Portugal','Chile'] AS countries,
        ARRAY['North','South','East','West','New','Port','Lake','Fort','Glen','Mount','Bay','Oak','Elm','Ash',
              'Red','Green','Silver','Stone','River','Clear'] AS city_heads,
        ARRAY['field','ford','haven','ton','bridge','wood','burg','dale','view','mouth','port','shire',
              'stead','wick','ville'] AS city_tails,
        ARRAY['Main','Market','Church','High','Park','Mill','Station','Bridge','King','Queen','Elm','Oak',
              'Cedar','Maple','Pine'] AS streets,
        ARRAY[1, 11, 51, 201, 501, 1001, 5001, 10001] AS size_min,
        ARRAY[10, 50, 200, 500, 1000, 5000, 10000, NULL] AS size_max
)
INSERT INTO "Company" ("id", "domain", "name", "industry", "minEmployeeSize", "maxEmployeeSize", "revenue",
                       "address", "city", "state", "country", "zipCode", "phone", "mobilePhone",
                       "createdAt", "updatedAt")
SELECT
    'cmp_' || lpad(g.i::text, 8, '0'),
    lower(p.brand || p.kind) || g.i || '.example',
    p.brand || ' ' || p.kind,
    l.industries[p.industry_no],
    l.size_min[p.size_no],
    l.size_max[p.size_no],
    CASE WHEN h.h[5] % 100 < 8 THEN NULL
         WHEN h.h[5] % 100 < 9 THEN 0
         -- Log-uniform from 5 thousand to 50 billion.
         ELSE round(exp(ln(5000::float8) + (h.h[6] % 1000000)::float8 / 1000000 * (ln(50000000000::float8) - ln(5000::float8))))::bigint
    END,
    (1 + h.h[7] % 9999) || ' ' || l.streets[1 + (h.h[7] / 10000 % cardinality(l.streets))::int] || ' Street',
    l.city_heads[1 + p.city_no % 20] || l.city_tails[1 + p.city_no / 20 % 15],
    chr(65 + p.city_no % 26) || chr(65 + p.city_no / 26 % 26),
    l.countries[1 + p.country_no],
    lpad((h.h[8] % 100000)::text, 5, '0'),
    '+1 555 01' || lpad((h.h[8] % 100)::text, 2, '0'),
    CASE WHEN h.h[9] % 2 = 0 THEN NULL ELSE '+1 555 02' || lpad((h.h[9] % 100)::text, 2, '0') END,
    created.at,
    created.at + (h.h[11] % 31536000) * interval '1 second'
FROM generate_series($1::int, $3::int) AS g(i)
CROSS JOIN lists l
-- h[1] to h[13]: independent hashes of the row number, the raw material of every column.
CROSS JOIN LATERAL (SELECT array_agg(hashint8extended(g.i, $2::bigint + k) & 9223372036854775807 ORDER BY k) AS h
                    FROM generate_series(0, 12) AS k) h
CROSS JOIN LATERAL (SELECT
    l.brands[1 + (h.h[1] % cardinality(l.brands))::int] AS brand,
    l.kinds[1 + (h.h[2] % cardinality(l.kinds))::int] AS kind,
    1 + floor(cardinality(l.industries) * power((h.h[3] % 1000000)::float8 / 1000000, 2))::int AS industry_no,
    1 + (h.h[4] % 8)::int AS size_no,
    floor(30 * power((h.h[12] % 1000000)::float8 / 1000000, 1.8))::int AS country_no,
    -- 10 cities per country, 300 in all, each always in the same country.
    floor(30 * power((h.h[12] % 1000000)::float8 / 1000000, 1.8))::int * 10 + (h.h[13] % 10)::int AS city_no
) p
CROSS JOIN LATERAL (SELECT
    timestamp '2018-01-01' + (h.h[10] % 157680000) * interval '1 second' AS at
) created
"#,
        *$numbers.start() as i32,
        $options.seed,
        *$numbers.end() as i32,
        )
    };
}

/// The prospects of the companies numbered `$numbers`, generated from `$options.seed`.
macro_rules! prospects_statement {
    ($options:expr, $numbers:expr) => {
        sqlx::query!(
        r#"
WITH lists AS (
    SELECT
        ARRAY['James','Mary','Robert','Patricia','John','Jennifer','Michael','Linda','David','Elizabeth',
              'William','Barbara','Richard','Susan','Joseph','Jessica','Thomas','Sarah','Charles','Karen',
              'Wei','Priya','Mohammed','Fatima','Hiroshi','Yuki','Lars','Ingrid','Pierre','Amelie','Carlos',
              'Sofia','Ahmed','Leila','Ivan','Olga','Kwame','Amara','Diego','Lucia','Noah','Emma','Liam',
              'Olivia','Mateo','Mia','Arjun','Ananya','Chen','Mei','Jonas','Freya','Luca','Giulia','Tomasz',
              'Zofia','Omar','Nadia','Ethan','Chloe'] AS first_names,
        ARRAY['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez','Martinez',
              'Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas','Taylor','Moore','Jackson','Martin',
              'Lee','Perez','Thompson','White','Harris','Sanchez','Clark','Ramirez','Lewis','Robinson','Walker',
              'Young','Allen','King','Wright','Scott','Torres','Nguyen','Hill','Flores','Green','Adams',
              'Nelson','Baker','Hall','Rivera','Campbell','Mitchell','Carter','Roberts','Patel','Kim',
              'Muller','Schmidt','Rossi','Dubois','Tanaka','Silva','Kowalski','Larsen'] AS last_names,
        -- Most frequent first, like the levels below.
        ARRAY['Engineering','Sales','Marketing','Operations','Customer Success','Finance','Product','IT',
              'Human Resources','Legal'] AS departments,
        ARRAY['C-Level','VP','Director','Manager','Senior','Entry'] AS levels,
        ARRAY['Chief %s Officer','VP of %s','Director of %s','%s Manager','Senior %s Specialist',
              '%s Associate'] AS titles,
        ARRAY['Mr.','Ms.','Dr.','Mx.'] AS salutations
),
companies AS (
    SELECT c."id", c."domain", c."address", c."city", c."state", c."country", c."zipCode", c."createdAt",
           substr(c."id", 5)::bigint AS no,
           hashint8extended(substr(c."id", 5)::bigint, $2::bigint + 100) & 9223372036854775807 AS h
    FROM "Company" c
    WHERE c."id" LIKE 'cmp\_%' AND c."id" BETWEEN $3 AND $4
)
INSERT INTO "Prospect" ("id", "companyId", "salutation", "firstName", "lastName", "email", "jobTitle",
                        "jobTitleLevel", "department", "jobTitleLink", "address", "city", "state", "country",
                        "zipCode", "phone", "mobilePhone", "createdAt", "updatedAt")
SELECT
    'prs_' || lpad(c.no::text, 8, '0') || '_' || j.no,
    c."id",
    CASE WHEN h.h[3] % 5 = 4 THEN NULL ELSE l.salutations[1 + (h.h[3] % 4)::int] END,
    p.first_name,
    p.last_name,
    CASE WHEN h.h[4] % 100 < 2 THEN NULL
         ELSE lower(COALESCE(NULLIF(concat_ws('.', p.first_name, p.last_name), ''), 'contact')) || j.no || '@' || c."domain"
    END,
    format(l.titles[p.level_no], l.departments[p.department_no]),
    l.levels[p.level_no],
    l.departments[p.department_no],
    'https://profiles.example/' || lpad(c.no::text, 8, '0') || '-' || j.no,
    c."address",
    CASE WHEN h.h[5] % 100 < 80 THEN c."city" ELSE 'Remote' END,
    CASE WHEN h.h[5] % 100 < 80 THEN c."state" END,
    c."country",
    c."zipCode",
    '+1 555 03' || lpad((h.h[6] % 100)::text, 2, '0'),
    CASE WHEN h.h[6] % 3 = 0 THEN NULL ELSE '+1 555 04' || lpad((h.h[7] % 100)::text, 2, '0') END,
    c."createdAt" + (h.h[8] % 63072000) * interval '1 second',
    c."createdAt" + (h.h[8] % 63072000 + h.h[9] % 31536000) * interval '1 second'
FROM companies c
CROSS JOIN lists l
CROSS JOIN LATERAL generate_series(1,
    CASE WHEN $1::int = 0 OR c.h % 100 < 3 THEN 0 ELSE 1 + (c.h / 100 % (2 * $1::int - 1))::int END
) AS j(no)
-- h[1] to h[9]: independent hashes of the prospect's number (company number and its own).
CROSS JOIN LATERAL (SELECT array_agg(hashint8extended(c.no * 50000 + j.no, $2::bigint + 200 + k) & 9223372036854775807
                                     ORDER BY k) AS h
                    FROM generate_series(0, 8) AS k) h
CROSS JOIN LATERAL (SELECT
    -- About 4% miss a first name and 4% a last name (some both).
    CASE WHEN h.h[1] % 100 < 4 THEN NULL ELSE l.first_names[1 + (h.h[1] / 100 % cardinality(l.first_names))::int] END AS first_name,
    CASE WHEN h.h[2] % 100 < 4 THEN NULL ELSE l.last_names[1 + (h.h[2] / 100 % cardinality(l.last_names))::int] END AS last_name,
    1 + floor(10 * power((h.h[5] / 100 % 1000000)::float8 / 1000000, 1.5))::int AS department_no,
    -- Skewed towards the junior end: few C-level, many entry-level.
    6 - floor(6 * power((h.h[7] / 100 % 1000000)::float8 / 1000000, 1.5))::int AS level_no
) p
"#,
        $options.prospects_per_company as i32,
        $options.seed,
        company_id(*$numbers.start()),
        company_id(*$numbers.end()),
        )
    };
}

/// The rows of `table` for the companies numbered `numbers`: how many.
async fn insert(
    conn: &mut sqlx::PgConnection,
    options: &SeedOptions,
    table: Table,
    numbers: &RangeInclusive<u32>,
) -> Result<u64, sqlx::Error> {
    let done = match table {
        Table::Companies => {
            companies_statement!(options, numbers)
                .execute(&mut *conn)
                .await?
        }
        Table::Prospects => {
            prospects_statement!(options, numbers)
                .execute(&mut *conn)
                .await?
        }
    };
    Ok(done.rows_affected())
}
