-- The read models' facts in one place, and one definition per read model.
--
-- Until now the list of views lived in refreshable_views(), the Rust enum, the coordinator and the
-- metrics, and each view's SELECT lived only inside its materialized view. A second way of keeping
-- them fresh (incremental maintenance, migration 0007) needs the SELECT in a form that can also be
-- filtered by company, so it moves into a plain view, `<read model>_definition`, that every path
-- reads: the materialized view selects from it (`prospect-api migrate` rebuilds the materialized
-- views of 0002 that way, keeping their data served), and the full rebuild and the per-company
-- apply of a table-backed read model filter it.

-- The three SELECTs of 0002, unchanged. The column lists and every expression are as they were, so the
-- read path and its compile-checked queries do not change.
CREATE OR REPLACE VIEW company_prospect_view_definition AS
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
    COALESCE(p."id", '')               AS prospect_key,
    NULL::boolean                      AS refresh_no_dup_check
FROM "Company" c
LEFT JOIN "Prospect" p ON p."companyId" = c."id";

CREATE OR REPLACE VIEW company_summary_view_definition AS
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
GROUP BY c."id";

CREATE OR REPLACE VIEW prospect_search_view_definition AS
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
JOIN "Company" c ON c."id" = p."companyId";

-- The static facts of each read model. How each one is kept fresh right now (its mode) is not stored
-- here but read from the relation itself (a materialized view or a table), so it cannot disagree
-- with what is there: see the view read_models below.
CREATE TABLE IF NOT EXISTS read_model_catalog (
    name        TEXT     PRIMARY KEY,
    -- The one order in which every path maintains them: different orders in different processes
    -- could deadlock on their locks.
    position    SMALLINT NOT NULL UNIQUE,
    -- The plain view holding the SELECT.
    definition  TEXT     NOT NULL UNIQUE,
    -- The unique key (NULL-free: built from the base tables' primary keys).
    key_columns TEXT[]   NOT NULL CHECK (cardinality(key_columns) > 0)
);

INSERT INTO read_model_catalog (name, position, definition, key_columns) VALUES
    ('company_prospect_view', 1, 'company_prospect_view_definition', ARRAY['company_id', 'prospect_key']),
    ('company_summary_view',  2, 'company_summary_view_definition',  ARRAY['company_id']),
    ('prospect_search_view',  3, 'prospect_search_view_definition',  ARRAY['prospect_id'])
ON CONFLICT (name) DO NOTHING;

-- Every read model with its mode: 'refresh' while it is a materialized view (REFRESH ... CONCURRENTLY),
-- 'incremental' while it is a table (maintained per changed company), NULL if it is missing.
CREATE OR REPLACE VIEW read_models AS
SELECT m.name, m.position, m.definition, m.key_columns,
       CASE r.relkind WHEN 'm' THEN 'refresh' WHEN 'r' THEN 'incremental' END AS mode,
       COALESCE(r.relispopulated, false) AS populated,
       view_refresh_lock_key(m.name) AS lock_key
FROM read_model_catalog m
LEFT JOIN pg_class r ON r.oid = to_regclass(m.name);

-- The log and the error table name only read models of the catalog.
ALTER TABLE materialized_view_log DROP CONSTRAINT IF EXISTS materialized_view_log_view_name_fkey;
ALTER TABLE materialized_view_log ADD CONSTRAINT materialized_view_log_view_name_fkey
    FOREIGN KEY (view_name) REFERENCES read_model_catalog (name);
ALTER TABLE materialized_view_errors DROP CONSTRAINT IF EXISTS materialized_view_errors_view_name_fkey;
ALTER TABLE materialized_view_errors ADD CONSTRAINT materialized_view_errors_view_name_fkey
    FOREIGN KEY (view_name) REFERENCES read_model_catalog (name);

-- The order of 0003, now read from the catalog.
CREATE OR REPLACE FUNCTION refreshable_views() RETURNS TEXT[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(name ORDER BY position) FROM read_model_catalog
$$;

-- The last successful refresh (or apply, or rebuild) of each read model, in catalog order: what its
-- data reflects. The one statement of it that every reader of the log uses: freshness headers, the
-- admin status, metrics, and the change watcher. The newest snapshot wins; every path that writes a
-- read model holds its lock while it takes the snapshot, so they are logged in snapshot order.
CREATE OR REPLACE FUNCTION last_successful_refreshes()
RETURNS TABLE (view_name TEXT, log_id BIGINT, started_at TIMESTAMPTZ, duration_ms BIGINT,
               row_count BIGINT, trigger TEXT, snapshot pg_snapshot)
LANGUAGE sql STABLE AS $$
    SELECT m.name, l.id, l.started_at, l.duration_ms, l.row_count, l.trigger, l.snapshot
    FROM read_model_catalog m
    LEFT JOIN LATERAL (
        SELECT id, started_at, duration_ms, row_count, trigger, snapshot FROM materialized_view_log
        WHERE materialized_view_log.view_name = m.name AND status = 'ok'
        ORDER BY materialized_view_log.started_at DESC, id DESC LIMIT 1
    ) l ON true
    ORDER BY m.position
$$;

CREATE OR REPLACE FUNCTION last_refresh_snapshots()
RETURNS TABLE (view_name TEXT, snapshot pg_snapshot)
LANGUAGE sql STABLE AS $$
    SELECT view_name, snapshot FROM last_successful_refreshes()
$$;
