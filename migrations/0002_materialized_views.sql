-- The three read models the API serves. They are created WITH NO DATA so that this migration is quick
-- and takes no long lock even on a database that already holds millions of rows; the first refresh
-- (`prospect-api refresh`, `serve` at startup, or `SELECT refresh_materialized_views()`) populates them.
--
-- No ORDER BY in the definitions: it only costs refresh time; order belongs to the queries.
--
-- Every view ends with `refresh_no_dup_check`, a column that is always NULL. REFRESH ... CONCURRENTLY
-- first checks the new data for duplicate rows, considering only rows in which no column is NULL, by
-- sorting whole-row images: measured on 1M rows here, that check was 12 of a 22 s refresh. Our rows
-- cannot repeat (each view's unique key comes from the base tables' primary keys, and the unique index
-- would still reject a duplicate), so the always-NULL column lets the check find nothing to compare:
-- the refresh took 9 s instead of 18.5 s. NULLs compare equal in the row-image diff that follows, so
-- the column causes no churn.
--
-- Sort keys that may be NULL are indexed and queried as COALESCE(...) expressions: keyset pagination
-- compares row values, and a NULL in a row comparison would silently drop rows from the next page.
-- The API's queries repeat these expressions exactly so that the planner can match the indexes.

-- Revenue for display: NULL or <= 0 -> 'NA'; >= 1e9 -> '1.5B'; >= 1e6 -> 'M'; >= 1e3 -> 'K'; else '$999'.
-- Computed in whole tenths with BIGINT arithmetic: exact (no float rounding), and the decimal is
-- truncated, not rounded, so 999,999 reads '999.9K' rather than the contradictory '1000.0K'. (Dividing
-- the revenue itself by 1e9 would truncate 1.5B to 1; dividing by 1e8 keeps the tenth.)
-- Only immutable operators are used so that PostgreSQL inlines the function into the views; to_char()
-- and concat_ws() are merely STABLE and would turn it into a per-row function call (measured: 3 s of
-- a 1M-row refresh).
CREATE OR REPLACE FUNCTION format_revenue(revenue BIGINT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN revenue IS NULL OR revenue <= 0 THEN 'NA'
        WHEN revenue >= 1000000000 THEN (revenue / 1000000000)::text || '.' || (revenue / 100000000 % 10)::text || 'B'
        WHEN revenue >= 1000000    THEN (revenue / 1000000)::text    || '.' || (revenue / 100000 % 10)::text    || 'M'
        WHEN revenue >= 1000       THEN (revenue / 1000)::text       || '.' || (revenue / 100 % 10)::text       || 'K'
        ELSE '$' || revenue::text
    END
$$;

-- "first last" when both exist, else whichever exists, else NULL. Empty strings count as missing.
-- (CASE and || rather than concat_ws(), for the inlining reason above.)
CREATE OR REPLACE FUNCTION full_name(first_name TEXT, last_name TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN first_name <> '' AND last_name <> '' THEN first_name || ' ' || last_name
        ELSE COALESCE(NULLIF(first_name, ''), NULLIF(last_name, ''))
    END
$$;

-- Every company with each of its prospects; a company without prospects appears once, prospect columns NULL.
CREATE MATERIALIZED VIEW IF NOT EXISTS company_prospect_view AS
SELECT
    c."id"                             AS company_id,
    c."domain"                         AS domain,
    c."name"                           AS company_name,
    c."industry"                       AS industry,
    c."minEmployeeSize"                AS min_employee_size,
    c."maxEmployeeSize"                AS max_employee_size,
    c."revenue"                        AS revenue,
    c."address"                        AS company_address,
    c."city"                           AS company_city,
    c."state"                          AS company_state,
    c."country"                        AS company_country,
    c."zipCode"                        AS company_zip_code,
    c."phone"                          AS company_phone,
    c."mobilePhone"                    AS company_mobile_phone,
    c."createdAt" AT TIME ZONE 'UTC'   AS company_created_at,
    c."updatedAt" AT TIME ZONE 'UTC'   AS company_updated_at,
    p."id"                             AS prospect_id,
    p."salutation"                     AS salutation,
    p."firstName"                      AS first_name,
    p."lastName"                       AS last_name,
    p."email"                          AS email,
    p."jobTitle"                       AS job_title,
    p."jobTitleLevel"                  AS job_title_level,
    p."department"                     AS department,
    p."jobTitleLink"                   AS job_title_link,
    p."address"                        AS prospect_address,
    p."city"                           AS prospect_city,
    p."state"                          AS prospect_state,
    p."country"                        AS prospect_country,
    p."zipCode"                        AS prospect_zip_code,
    p."phone"                          AS prospect_phone,
    p."mobilePhone"                    AS prospect_mobile_phone,
    p."createdAt" AT TIME ZONE 'UTC'   AS prospect_created_at,
    p."updatedAt" AT TIME ZONE 'UTC'   AS prospect_updated_at,
    full_name(p."firstName", p."lastName") AS full_name,
    format_revenue(c."revenue")        AS formatted_revenue,
    -- Half of the refresh key. Never NULL ('' for the row of a company without prospects; a real
    -- prospect id is never empty): REFRESH ... CONCURRENTLY matches old and new rows with `=` on the
    -- key, so a NULL key would make it delete and re-insert that row on every refresh.
    COALESCE(p."id", '')               AS prospect_key,
    NULL::boolean                      AS refresh_no_dup_check
FROM "Company" c
LEFT JOIN "Prospect" p ON p."companyId" = c."id"
WITH NO DATA;

-- One row per company with counts over its prospects.
CREATE MATERIALIZED VIEW IF NOT EXISTS company_summary_view AS
SELECT
    c."id"                               AS company_id,
    c."domain"                           AS domain,
    c."name"                             AS name,
    c."industry"                         AS industry,
    c."minEmployeeSize"                  AS min_employee_size,
    c."maxEmployeeSize"                  AS max_employee_size,
    c."revenue"                          AS revenue,
    format_revenue(c."revenue")          AS formatted_revenue,
    c."address"                          AS address,
    c."city"                             AS city,
    c."state"                            AS state,
    c."country"                          AS country,
    count(p."id")                        AS prospect_count,
    count(DISTINCT p."department")       AS department_count,
    count(DISTINCT p."jobTitleLevel")    AS job_level_count,
    max(p."updatedAt") AT TIME ZONE 'UTC' AS last_prospect_update,
    NULL::boolean                        AS refresh_no_dup_check
FROM "Company" c
LEFT JOIN "Prospect" p ON p."companyId" = c."id"
GROUP BY c."id"
WITH NO DATA;

-- Prospects with their company, plus a lower-case haystack for substring search.
CREATE MATERIALIZED VIEW IF NOT EXISTS prospect_search_view AS
SELECT
    p."id"              AS prospect_id,
    p."email"           AS email,
    p."firstName"       AS first_name,
    p."lastName"        AS last_name,
    full_name(p."firstName", p."lastName") AS full_name,
    p."jobTitle"        AS job_title,
    p."jobTitleLevel"   AS job_title_level,
    p."department"      AS department,
    p."city"            AS prospect_city,
    p."country"         AS prospect_country,
    c."id"              AS company_id,
    c."domain"          AS domain,
    c."name"            AS company_name,
    c."industry"        AS industry,
    c."revenue"         AS revenue,
    c."city"            AS company_city,
    c."country"         AS company_country,
    lower(concat_ws(' ',
        COALESCE(p."firstName", ''), COALESCE(p."lastName", ''), COALESCE(p."email", ''),
        COALESCE(p."jobTitle", ''), COALESCE(c."name", ''), COALESCE(c."industry", '')
    ))                  AS search_text,
    NULL::boolean       AS refresh_no_dup_check
FROM "Prospect" p
JOIN "Company" c ON c."id" = p."companyId"
WITH NO DATA;

-- ---------------------------------------------------------------------------------------------------
-- Indexes. The design document listed 14 single-column indexes; a single-column index can filter but
-- cannot deliver a sorted first page, so the API's list queries would sort every matching row. Instead:
-- one UNIQUE key per view (what REFRESH CONCURRENTLY needs: plain columns, no WHERE, no expressions),
-- composite "filter + sort order" indexes for the common list queries, so that a first page is an
-- index scan that stops after LIMIT rows, and single-column indexes only for selective lookups.
-- Every index costs refresh time, so nothing is here that no query uses.
-- ---------------------------------------------------------------------------------------------------

-- company_prospect_view (/prospects and /companies/{id}/prospects read only rows that have a prospect,
-- so the non-unique indexes are partial: the prospect-less company rows never appear in them).
CREATE UNIQUE INDEX IF NOT EXISTS company_prospect_view_key
    ON company_prospect_view (company_id, prospect_key);
-- Default order: company name, last name, first name, prospect id. Unfiltered and by industry.
CREATE INDEX IF NOT EXISTS company_prospect_view_name_order
    ON company_prospect_view (COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id)
    WHERE prospect_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS company_prospect_view_industry_name_order
    ON company_prospect_view (industry, COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id)
    WHERE prospect_id IS NOT NULL;
-- sort=-revenue (NULL revenue sorts last) and sort=-updated_at, both scanned backwards.
CREATE INDEX IF NOT EXISTS company_prospect_view_revenue_order
    ON company_prospect_view (COALESCE(revenue, '-9223372036854775808'::bigint), prospect_id)
    WHERE prospect_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS company_prospect_view_updated_order
    ON company_prospect_view (prospect_updated_at, prospect_id)
    WHERE prospect_id IS NOT NULL;
-- Selective lookups and filters.
CREATE INDEX IF NOT EXISTS company_prospect_view_prospect_id
    ON company_prospect_view (prospect_id) WHERE prospect_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS company_prospect_view_email
    ON company_prospect_view (lower(email)) WHERE prospect_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS company_prospect_view_domain
    ON company_prospect_view (domain) WHERE prospect_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS company_prospect_view_company_country
    ON company_prospect_view (company_country) WHERE prospect_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS company_prospect_view_company_city
    ON company_prospect_view (company_city) WHERE prospect_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS company_prospect_view_department
    ON company_prospect_view (department) WHERE prospect_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS company_prospect_view_job_title_level
    ON company_prospect_view (job_title_level) WHERE prospect_id IS NOT NULL;

-- company_summary_view
CREATE UNIQUE INDEX IF NOT EXISTS company_summary_view_key
    ON company_summary_view (company_id);
CREATE INDEX IF NOT EXISTS company_summary_view_name_order
    ON company_summary_view (COALESCE(name, ''), company_id);
CREATE INDEX IF NOT EXISTS company_summary_view_industry_name_order
    ON company_summary_view (industry, COALESCE(name, ''), company_id);
CREATE INDEX IF NOT EXISTS company_summary_view_country_name_order
    ON company_summary_view (country, COALESCE(name, ''), company_id);
CREATE INDEX IF NOT EXISTS company_summary_view_prospect_count_order
    ON company_summary_view (prospect_count, company_id);
CREATE INDEX IF NOT EXISTS company_summary_view_country_prospect_count_order
    ON company_summary_view (country, prospect_count, company_id);
CREATE INDEX IF NOT EXISTS company_summary_view_revenue_order
    ON company_summary_view (COALESCE(revenue, '-9223372036854775808'::bigint), company_id);
CREATE INDEX IF NOT EXISTS company_summary_view_last_update_order
    ON company_summary_view (COALESCE(last_prospect_update, '-infinity'::timestamptz), company_id);
CREATE INDEX IF NOT EXISTS company_summary_view_domain
    ON company_summary_view (domain);
CREATE INDEX IF NOT EXISTS company_summary_view_city
    ON company_summary_view (city);

-- prospect_search_view
CREATE UNIQUE INDEX IF NOT EXISTS prospect_search_view_key
    ON prospect_search_view (prospect_id);
-- Substring search: every term becomes `search_text LIKE '%term%'`, which this index answers.
CREATE INDEX IF NOT EXISTS prospect_search_view_search_text
    ON prospect_search_view USING gin (search_text gin_trgm_ops);
-- Result order (same as /prospects); lets a very common term walk the order and stop at LIMIT.
CREATE INDEX IF NOT EXISTS prospect_search_view_name_order
    ON prospect_search_view (COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id);
