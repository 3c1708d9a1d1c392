-- The current definition of every database object prospect-api relies on, whole, in one place: what
-- the migrations (migrations/, applied in order, never edited once landed) leave behind, read
-- without replaying them. `tests/api/schema_definitions.rs` builds a database from this file and one
-- from the migrations and proves them equal (tables, columns, constraints, indexes, views,
-- functions, triggers, the catalog's rows). A change to the schema is a new migration and the same
-- change here; the test fails until both say the same. (Migrations 0002 to 0015 were squashed into
-- 0016, whose body is this file as it stood then; src/db.rs adopts a database that had applied them.)
--
-- It is not applied by the service. The base tables "Company" and "Prospect" are the writing app's,
-- as migrations/0001_base_tables.sql creates them (unchanged since, and left out here): `psql -f
-- migrations/0001_base_tables.sql -f schema/current.sql` on an empty database gives the schema of a
-- fresh `prospect-api migrate` (read models as materialized views, not yet populated).

-- ===================================================================================================
-- Formatting, inlined into the definitions.
-- ===================================================================================================
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

-- ===================================================================================================
-- The read models: one SELECT each (the definition views), the catalog of their facts, and their
-- relations with the indexes that serve the API's statements.
-- ===================================================================================================
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

-- Search's words, used by the search view's definition: accents folded by unaccent, typos
-- measured by fuzzystrmatch's levenshtein (pg_trgm, created with the base tables, finds their candidates).
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;

-- The words of a text as search compares them. STABLE, as unaccent() is (its rules file could
-- change): it is used to compute stored columns and query terms, never in an index expression.
CREATE OR REPLACE FUNCTION search_words(p_text TEXT) RETURNS TEXT[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT COALESCE(array_agg(w ORDER BY n) FILTER (WHERE w <> ''), '{}')
    FROM regexp_split_to_table(lower(unaccent(COALESCE(p_text, ''))), '[^[:alnum:]]+') WITH ORDINALITY AS t(w, n)
$$;

-- A text as one quoted lexeme of tsvector or tsquery input: taken as it is, never parsed into words.
CREATE OR REPLACE FUNCTION lexeme_literal(p_text TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '''' || replace(replace(p_text, '\', '\\'), '''', '''''') || ''''
$$;

-- The words as lexemes of one field: each prefixed with the field's letter.
CREATE OR REPLACE FUNCTION search_lexemes(p_words TEXT[], p_field TEXT) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_to_tsvector(ARRAY(SELECT p_field || w FROM unnest(p_words) w))
$$;

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
    -- What search matches: the words of the name (n), the company's name (c), the job title
    -- and the industry (t), and the whole email (e), each prefixed with its field's letter.
    search_lexemes(search_words(concat_ws(' ', p."firstName", p."lastName")), 'n')
        || search_lexemes(search_words(c."name"), 'c')
        || search_lexemes(search_words(concat_ws(' ', p."jobTitle", c."industry")), 't')
        || search_lexemes(array_remove(ARRAY[lower(p."email")], NULL), 'e')
                        AS search_vector,
    cardinality(search_words(concat_ws(' ', p."firstName", p."lastName")))::smallint AS name_words,
    NULL::boolean       AS refresh_no_dup_check
FROM "Prospect" p
JOIN "Company" c ON c."id" = p."companyId";

CREATE TABLE read_model_catalog (
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

-- The advisory lock key that makes one process at a time refresh a given view. Every refresh path
-- takes it inside the refresh's own transaction (pg_*_advisory_xact_lock), so it is released at
-- commit or rollback and can never be left behind on a pooled connection.
CREATE OR REPLACE FUNCTION view_refresh_lock_key(view_name TEXT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE AS $$
    SELECT ('x' || left(md5('prospect_api.refresh:' || view_name), 16))::bit(64)::bigint
$$;

-- Every read model with its mode: 'refresh' while it is a materialized view, 'incremental' while it is
-- a table, NULL if it is missing.
CREATE OR REPLACE VIEW read_models AS
SELECT m.name, m.position, m.definition, m.key_columns,
       CASE r.relkind WHEN 'm' THEN 'refresh' WHEN 'r' THEN 'incremental' END AS mode,
       COALESCE(r.relispopulated, false) AS populated,
       view_refresh_lock_key(m.name) AS lock_key
FROM read_model_catalog m
LEFT JOIN pg_class r ON r.oid = to_regclass(m.name);

CREATE MATERIALIZED VIEW company_prospect_view AS SELECT * FROM company_prospect_view_definition WITH NO DATA;
CREATE MATERIALIZED VIEW company_summary_view AS SELECT * FROM company_summary_view_definition WITH NO DATA;
CREATE MATERIALIZED VIEW prospect_search_view AS SELECT * FROM prospect_search_view_definition WITH NO DATA;

CREATE UNIQUE INDEX company_prospect_view_key
    ON company_prospect_view (company_id, prospect_key);
CREATE INDEX company_prospect_view_name_order
    ON company_prospect_view (COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id)
    WHERE prospect_id IS NOT NULL;
CREATE INDEX company_prospect_view_industry_name_order
    ON company_prospect_view (industry, COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id)
    WHERE prospect_id IS NOT NULL;
CREATE INDEX company_prospect_view_revenue_order
    ON company_prospect_view (COALESCE(revenue, '-9223372036854775808'::bigint), prospect_id);
CREATE INDEX company_prospect_view_updated_order
    ON company_prospect_view (prospect_updated_at, prospect_id)
    WHERE prospect_id IS NOT NULL;
CREATE INDEX company_prospect_view_prospect_id
    ON company_prospect_view (prospect_id) WHERE prospect_id IS NOT NULL;
-- Without a WHERE clause, so that ANALYZE keeps statistics of the expression.
CREATE INDEX company_prospect_view_email
    ON company_prospect_view (lower(email));
CREATE INDEX company_prospect_view_domain
    ON company_prospect_view (domain) WHERE prospect_id IS NOT NULL;
CREATE INDEX company_prospect_view_company_country
    ON company_prospect_view (company_country) WHERE prospect_id IS NOT NULL;
CREATE INDEX company_prospect_view_company_state
    ON company_prospect_view (company_state) WHERE prospect_id IS NOT NULL;
CREATE INDEX company_prospect_view_company_city
    ON company_prospect_view (company_city) WHERE prospect_id IS NOT NULL;
CREATE INDEX company_prospect_view_department
    ON company_prospect_view (department) WHERE prospect_id IS NOT NULL;
CREATE INDEX company_prospect_view_job_title_level
    ON company_prospect_view (job_title_level) WHERE prospect_id IS NOT NULL;
CREATE UNIQUE INDEX company_summary_view_key
    ON company_summary_view (company_id);
CREATE INDEX company_summary_view_name_order
    ON company_summary_view (COALESCE(name, ''), company_id);
CREATE INDEX company_summary_view_industry_name_order
    ON company_summary_view (industry, COALESCE(name, ''), company_id);
CREATE INDEX company_summary_view_country_name_order
    ON company_summary_view (country, COALESCE(name, ''), company_id);
CREATE INDEX company_summary_view_prospect_count_order
    ON company_summary_view (prospect_count, company_id);
CREATE INDEX company_summary_view_country_prospect_count_order
    ON company_summary_view (country, prospect_count, company_id);
CREATE INDEX company_summary_view_revenue_order
    ON company_summary_view (COALESCE(revenue, '-9223372036854775808'::bigint), company_id);
CREATE INDEX company_summary_view_last_update_order
    ON company_summary_view (COALESCE(last_prospect_update, '-infinity'::timestamptz), company_id);
CREATE INDEX company_summary_view_domain
    ON company_summary_view (domain);
CREATE INDEX company_summary_view_state
    ON company_summary_view (state);
CREATE INDEX company_summary_view_city
    ON company_summary_view (city);
CREATE UNIQUE INDEX prospect_search_view_key
    ON prospect_search_view (prospect_id);
CREATE INDEX prospect_search_view_search_vector
    ON prospect_search_view USING gin (search_vector);
CREATE INDEX prospect_search_view_name_order
    ON prospect_search_view (COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id);
CREATE INDEX prospect_search_view_company ON prospect_search_view (company_id);
-- Each filter of /search, in key order: search_prospects() walks the rows passing them.
CREATE INDEX prospect_search_view_industry ON prospect_search_view (industry, prospect_id);
CREATE INDEX prospect_search_view_company_country ON prospect_search_view (company_country, prospect_id);
CREATE INDEX prospect_search_view_department ON prospect_search_view (department, prospect_id);

-- ===================================================================================================
-- The refresh log (every freshness header is read from it), the error record, and the change record.
-- ===================================================================================================

-- One row per view for every refresh, incremental round, rebuild and conversion.
CREATE TABLE materialized_view_log (
    id            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    view_name     TEXT        NOT NULL REFERENCES read_model_catalog (name),
    -- What asked for it: the app's scheduler, a NOTIFY, polling, an admin, startup population, the
    -- CLI, a catch-up after missed changes, SQL (refresh_materialized_views()), the applier, a
    -- conversion between modes, a read that asked to see its own writes.
    trigger       TEXT        NOT NULL
        CONSTRAINT materialized_view_log_trigger_check
        CHECK (trigger IN ('schedule', 'notify', 'poll', 'manual', 'startup', 'cli', 'catchup', 'sql',
                           'incremental', 'migrate', 'read')),
    status        TEXT        NOT NULL CHECK (status IN ('ok', 'error')),
    -- For 'ok': the snapshot time the data reflects (taken just before the work began, so it never
    -- claims data fresher than it is). For 'error': when the attempt began.
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ NOT NULL,
    duration_ms   BIGINT      GENERATED ALWAYS AS
        ((extract(epoch FROM (finished_at - started_at)) * 1000)::bigint) STORED,
    row_count     BIGINT,
    error_message TEXT,
    -- Which transactions the data can see (taken with started_at, so again a lower bound). Compared
    -- with base_table_changes to tell whether the base tables changed since.
    snapshot      pg_snapshot,
    -- 'refresh' (REFRESH MATERIALIZED VIEW), 'apply' (the rows of the changed companies recomputed),
    -- 'rebuild' (a table diffed against its whole definition), 'build' (built anew, beside the one
    -- readers use, by a conversion or a build), 'repair' (the last round of a repair).
    method        TEXT        CHECK (method IN ('refresh', 'apply', 'rebuild', 'build', 'repair')),
    -- For an apply: the companies recomputed. For an apply or rebuild: rows deleted plus inserted.
    companies_changed BIGINT,
    rows_changed  BIGINT,
    CHECK ((status = 'ok') = (error_message IS NULL))
);
-- "Last successful refresh of view X": read on every freshness lookup.
CREATE INDEX materialized_view_log_last_ok
    ON materialized_view_log (view_name, started_at DESC) WHERE status = 'ok';
CREATE INDEX materialized_view_log_recent
    ON materialized_view_log (started_at DESC);
-- Each view's last error, kept by retention.
CREATE INDEX materialized_view_log_last_error
    ON materialized_view_log (view_name, id DESC) WHERE status = 'error';

CREATE TABLE materialized_view_errors (
    id            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    view_name     TEXT        NOT NULL REFERENCES read_model_catalog (name),
    error_message TEXT        NOT NULL,
    occurred_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX materialized_view_errors_recent
    ON materialized_view_errors (view_name, occurred_at DESC);

-- The change record: a row per written row of the base tables, append-only (concurrent writers never
-- wait for each other here), with the writing transaction and the companies the row touched (NULL:
-- every company may have changed, as after a TRUNCATE). A change is newer than a view's data when
-- its transaction is not visible in the snapshot the view's log row recorded. Rows every view has
-- seen are pruned after each refresh or round. It is a queue, so it is vacuumed after every 1,000
-- dead rows, unthrottled (and by the service every minute).
CREATE TABLE base_table_changes (
    xid         XID8        NOT NULL DEFAULT pg_current_xact_id(),
    table_name  TEXT        NOT NULL,
    changed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    company_ids TEXT[]
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0);

-- A read model built beside (in prospect_api_staging) and not yet swapped in: the snapshot it was
-- built from, which the round that swaps it in brings it up from. Written in the build's own
-- transaction, so a row exists exactly when its table does.
CREATE TABLE staged_read_models (
    view_name     TEXT        PRIMARY KEY REFERENCES read_model_catalog (name),
    snapshot      pg_snapshot NOT NULL,
    snapshot_time TIMESTAMPTZ NOT NULL,
    row_count     BIGINT      NOT NULL,
    staged_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- A build or repair in progress, whichever process runs it, as it last reported: written outside
-- the work's own transactions, so that every instance's /admin/views and /metrics see it. A row
-- not updated for a minute belongs to a process that stopped.
CREATE TABLE read_model_work (
    view_name  TEXT        PRIMARY KEY REFERENCES read_model_catalog (name),
    kind       TEXT        NOT NULL CHECK (kind IN ('build', 'repair')),
    phase      TEXT        NOT NULL,
    -- Progress in `unit`s (companies compared, tuples indexed, ...), when known.
    done       BIGINT,
    total      BIGINT,
    unit       TEXT,
    -- Repairs: the ranges (chunks) done, and the rows they changed.
    chunks     BIGINT,
    rows       BIGINT,
    started_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- Which process: host name and process id.
    owner      TEXT        NOT NULL
);

-- What each incremental round changed in each read model: the rows it deleted and the rows it
-- inserted, whole (but the search vector), for the response caches of every instance: a cached
-- response survives a round that changed no row it could show (#24). Deleted with its log row, and
-- after a few minutes (prune_read_model_changes()): an instance whose cached response is older than
-- what is kept renders it anew.
CREATE TABLE read_model_changes (
    log_id      BIGINT      PRIMARY KEY REFERENCES materialized_view_log (id) ON DELETE CASCADE,
    removed     JSONB       NOT NULL,
    added       JSONB       NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX read_model_changes_recorded ON read_model_changes (recorded_at);

-- Forgets the changes recorded more than p_keep ago; returns how many rounds' changes it forgot.
CREATE OR REPLACE FUNCTION prune_read_model_changes(p_keep INTERVAL) RETURNS BIGINT
LANGUAGE sql AS $$
    WITH pruned AS (DELETE FROM read_model_changes WHERE recorded_at < clock_timestamp() - p_keep RETURNING 1)
    SELECT count(*) FROM pruned
$$;

-- Secrets the API instances share, so that any instance accepts what another one issued.
-- cursor_hmac signs pagination cursors (two gen_random_uuid() give 244 random bits).
CREATE TABLE api_secrets (
    name  TEXT  PRIMARY KEY,
    value BYTEA NOT NULL CHECK (length(value) >= 16)
);
INSERT INTO api_secrets (name, value)
VALUES ('cursor_hmac', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'))
ON CONFLICT (name) DO NOTHING;

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

-- The read models whose base data changed since their last successful refresh, or that were never
-- refreshed, with their mode (the change watcher polls it).
CREATE OR REPLACE FUNCTION read_models_behind() RETURNS TABLE (view_name TEXT, mode TEXT)
LANGUAGE sql STABLE AS $$
    SELECT s.view_name, m.mode
    FROM last_successful_refreshes() s JOIN read_models m ON m.name = s.view_name
    WHERE s.snapshot IS NULL
       OR EXISTS (SELECT 1 FROM base_table_changes c WHERE NOT pg_visible_in_snapshot(c.xid, s.snapshot))
    ORDER BY m.position
$$;

-- Whether read model p_view is populated, and whether its data covers p_snapshot: no change in the
-- change record that p_snapshot sees and the snapshot of the model's last successful refresh does
-- not. A change every model has seen is pruned from the record, so what is left decides.
CREATE OR REPLACE FUNCTION read_model_covers(p_view TEXT, p_snapshot pg_snapshot)
RETURNS TABLE (populated BOOLEAN, covered BOOLEAN)
LANGUAGE sql STABLE AS $$
    SELECT m.populated,
           l.snapshot IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM base_table_changes c
               WHERE pg_visible_in_snapshot(c.xid, p_snapshot)
                 AND NOT pg_visible_in_snapshot(c.xid, l.snapshot))
    FROM read_models m JOIN last_successful_refreshes() l ON l.view_name = m.name
    WHERE m.name = p_view
$$;

-- The names alone.
CREATE OR REPLACE FUNCTION views_needing_refresh() RETURNS SETOF TEXT
LANGUAGE sql STABLE AS $$
    SELECT view_name FROM read_models_behind()
$$;

-- The last `hours` of materialized_view_log per read model in `buckets` equal buckets, oldest first:
-- the runs that started in each (refreshes, applies, rebuilds; failed or not), their durations, and
-- the oldest the served data was at any time in the bucket: just before a success landed (its
-- finish minus the snapshot time of the success before it) or at the bucket's end. One pass over
-- the span's rows by the started_at index, plus each model's last success before the span.
CREATE OR REPLACE FUNCTION refresh_timeline(hours INT, buckets INT)
RETURNS TABLE (view_name TEXT, since TIMESTAMPTZ, until TIMESTAMPTZ, starts_at TIMESTAMPTZ, runs BIGINT,
               failures BIGINT, max_duration_ms BIGINT, mean_duration_ms FLOAT8, max_data_age_seconds FLOAT8)
-- A day of applies (100,000 rows at one every 2.6 s per view) sorted in memory, without JIT (its
-- compilation would cost more than the query).
LANGUAGE sql STABLE SET work_mem = '32MB' SET jit = off AS $$
    WITH span AS (
        SELECT c.now - hours * interval '1 hour' AS since, c.now AS until,
               hours * interval '1 hour' / buckets AS width
        FROM (SELECT clock_timestamp() AS now) c
    ), logged AS (
        SELECT l.view_name, l.status, l.started_at, l.finished_at, l.duration_ms
        FROM materialized_view_log l, span WHERE l.started_at >= span.since
    ), successes AS (
        SELECT o.view_name, o.started_at, o.finished_at,
               -- (By bytes: a day of applies is 100,000 rows, and a collation's sort costs twice.)
               o.finished_at - lag(o.started_at) OVER (PARTITION BY o.view_name COLLATE "C"
                                                       ORDER BY o.finished_at, o.started_at) AS age_before
        FROM (
            SELECT g.view_name, g.started_at, g.finished_at FROM logged g WHERE g.status = 'ok'
            UNION ALL
            SELECT m.name, p.started_at, p.finished_at
            FROM read_model_catalog m, span
            CROSS JOIN LATERAL (
                SELECT l.started_at, l.finished_at FROM materialized_view_log l
                WHERE l.view_name = m.name AND l.status = 'ok' AND l.started_at < span.since
                ORDER BY l.started_at DESC LIMIT 1
            ) p
        ) o
    ), runs AS (
        -- Grouped by the start of the bucket a run started in (date_bin: timestamp arithmetic only).
        SELECT g.view_name, LEAST(t.until - t.width, date_bin(t.width, g.started_at, t.since)) AS bin,
               count(*) AS runs, count(*) FILTER (WHERE g.status = 'error') AS failures,
               max(g.duration_ms) AS max_duration_ms, avg(g.duration_ms)::float8 AS mean_duration_ms
        FROM logged g, span t GROUP BY 1, 2
    ), ages AS (
        -- Successes by the bucket they landed in; those before the span in one bucket before it.
        SELECT s.view_name,
               GREATEST(t.since - t.width, LEAST(t.until - t.width, date_bin(t.width, s.finished_at, t.since))) AS bin,
               max(s.age_before) AS age_before, max(s.started_at) AS latest_snapshot
        FROM successes s, span t GROUP BY 1, 2
    ), numbered AS (
        -- A bucket's number: 0 to buckets - 1 within the span, -1 before it.
        SELECT r.view_name, round(extract(epoch FROM r.bin - t.since) / extract(epoch FROM t.width))::int AS bucket,
               r.runs, r.failures, r.max_duration_ms, r.mean_duration_ms, NULL::interval AS age_before,
               NULL::timestamptz AS latest_snapshot
        FROM runs r, span t
        UNION ALL
        SELECT a.view_name, round(extract(epoch FROM a.bin - t.since) / extract(epoch FROM t.width))::int,
               NULL, NULL, NULL, NULL, a.age_before, a.latest_snapshot
        FROM ages a, span t
    ), grid AS (
        SELECT m.name AS view_name, m.position, b.bucket, t.since + b.bucket * t.width AS starts_at,
               LEAST(t.until, t.since + (b.bucket + 1) * t.width) AS ends_at, t.since, t.until
        FROM read_model_catalog m, span t, generate_series(-1, buckets - 1) AS b(bucket)
    ), filled AS (
        SELECT g.view_name, g.position, g.bucket, g.starts_at, g.ends_at, g.since, g.until,
               sum(n.runs) AS runs, sum(n.failures) AS failures, max(n.max_duration_ms) AS max_duration_ms,
               max(n.mean_duration_ms) AS mean_duration_ms, max(n.age_before) AS age_before,
               max(n.latest_snapshot) AS latest_snapshot
        FROM grid g LEFT JOIN numbered n ON n.view_name = g.view_name AND n.bucket = g.bucket
        GROUP BY g.view_name, g.position, g.bucket, g.starts_at, g.ends_at, g.since, g.until
    )
    SELECT a.view_name, a.since, a.until, a.starts_at, a.runs, a.failures, a.max_duration_ms, a.mean_duration_ms,
           a.max_data_age_seconds
    FROM (
        SELECT f.view_name, f.position, f.bucket, f.since, f.until, f.starts_at, COALESCE(f.runs, 0)::bigint AS runs,
               COALESCE(f.failures, 0)::bigint AS failures, f.max_duration_ms, f.mean_duration_ms,
               -- The snapshot served at the bucket's end: the newest success landed by then.
               GREATEST(extract(epoch FROM f.age_before),
                        extract(epoch FROM f.ends_at - max(f.latest_snapshot) OVER (PARTITION BY f.view_name ORDER BY f.bucket))
               )::float8 AS max_data_age_seconds
        FROM filled f
    ) a
    WHERE a.bucket >= 0
    ORDER BY a.position, a.bucket
$$;


-- Forgets the changes every view's last refresh, and every build waiting to be swapped in, already
-- includes.
CREATE OR REPLACE FUNCTION prune_base_table_changes() RETURNS VOID
LANGUAGE sql AS $$
    WITH seen AS MATERIALIZED (
        SELECT snapshot FROM last_successful_refreshes()
        UNION ALL
        SELECT snapshot FROM staged_read_models
    )
    DELETE FROM base_table_changes c
    WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.snapshot IS NULL OR NOT pg_visible_in_snapshot(c.xid, s.snapshot))
$$;

-- Records a failed attempt (after the caller rolled the attempt back) in the log and the error table.
CREATE OR REPLACE FUNCTION record_refresh_failure(p_view TEXT, p_trigger TEXT, p_started_at TIMESTAMPTZ, p_error TEXT)
RETURNS SETOF materialized_view_log
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO materialized_view_errors (view_name, error_message) VALUES (p_view, p_error);
    RETURN QUERY
        INSERT INTO materialized_view_log (view_name, trigger, status, started_at, finished_at, error_message)
        VALUES (p_view, p_trigger, 'error', p_started_at, clock_timestamp(), p_error)
        RETURNING *;
END
$$;

-- Deletes log and error rows older than p_keep, except each read model's last successful row (what
-- its freshness is read from) and its last error.
CREATE OR REPLACE FUNCTION prune_refresh_log(p_keep INTERVAL, OUT log_rows BIGINT, OUT error_rows BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM materialized_view_log l
    WHERE l.finished_at < clock_timestamp() - p_keep
      AND l.id NOT IN (SELECT s.log_id FROM last_successful_refreshes() s WHERE s.log_id IS NOT NULL)
      AND l.id NOT IN (SELECT max(e.id) FROM materialized_view_log e WHERE e.status = 'error' GROUP BY e.view_name);
    GET DIAGNOSTICS log_rows = ROW_COUNT;
    DELETE FROM materialized_view_errors e
    WHERE e.occurred_at < clock_timestamp() - p_keep
      AND e.id NOT IN (SELECT DISTINCT ON (x.view_name) x.id FROM materialized_view_errors x
                       ORDER BY x.view_name, x.occurred_at DESC, x.id DESC);
    GET DIAGNOSTICS error_rows = ROW_COUNT;
END
$$;

-- ===================================================================================================
-- Change capture.
-- ===================================================================================================

-- Records, for every written row, the writing transaction and the companies the row touched: a
-- prospect's old and new "companyId", a company's old and new "id". Row-level: measured cheaper per
-- single-row write than statement triggers reading transition tables (bench/README.md); a bulk load
-- can skip the triggers (session_replication_role = replica) and ask for a rebuild. TRUNCATE has no
-- rows: its statement trigger records "every company" (NULL). Notifies listeners only when the
-- database-level setting prospect_api.notify is 'on' (REFRESH_NOTIFY: notifying writers commit one
-- at a time).
CREATE OR REPLACE FUNCTION record_base_table_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    touched TEXT[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        touched := NULL;
    ELSIF TG_TABLE_NAME = 'Prospect' THEN
        IF TG_OP = 'INSERT' THEN
            touched := ARRAY[NEW."companyId"];
        ELSIF TG_OP = 'DELETE' THEN
            touched := ARRAY[OLD."companyId"];
        ELSIF OLD."companyId" = NEW."companyId" THEN
            touched := ARRAY[NEW."companyId"];
        ELSE
            touched := ARRAY[OLD."companyId", NEW."companyId"];
        END IF;
    ELSE
        IF TG_OP = 'INSERT' THEN
            touched := ARRAY[NEW."id"];
        ELSIF TG_OP = 'DELETE' THEN
            touched := ARRAY[OLD."id"];
        ELSIF OLD."id" = NEW."id" THEN
            touched := ARRAY[NEW."id"];
        ELSE
            touched := ARRAY[OLD."id", NEW."id"];
        END IF;
    END IF;
    INSERT INTO base_table_changes (table_name, company_ids) VALUES (TG_TABLE_NAME, touched);
    IF current_setting('prospect_api.notify', true) = 'on' THEN
        PERFORM pg_notify('refresh_views', json_build_object('table', TG_TABLE_NAME, 'operation', TG_OP)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER prospect_changed AFTER INSERT OR UPDATE OR DELETE ON "Prospect"
    FOR EACH ROW EXECUTE FUNCTION record_base_table_change();
CREATE TRIGGER prospect_truncated AFTER TRUNCATE ON "Prospect"
    FOR EACH STATEMENT EXECUTE FUNCTION record_base_table_change();
CREATE TRIGGER company_changed AFTER INSERT OR UPDATE OR DELETE ON "Company"
    FOR EACH ROW EXECUTE FUNCTION record_base_table_change();
CREATE TRIGGER company_truncated AFTER TRUNCATE ON "Company"
    FOR EACH STATEMENT EXECUTE FUNCTION record_base_table_change();

-- Turns the triggers' notifications on or off for new sessions of this database.
CREATE OR REPLACE FUNCTION set_change_notifications(enabled BOOLEAN) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET prospect_api.notify = %L',
                   current_database(), CASE WHEN enabled THEN 'on' ELSE 'off' END);
END
$$;

-- ===================================================================================================
-- Refreshing the materialized views (mode refresh).
-- ===================================================================================================

-- Refreshes read model p_view, a materialized view: CONCURRENTLY when it is populated (readers are
-- not blocked), plainly when it is not (CONCURRENTLY refuses an unpopulated view). The caller owns
-- the transaction, its timeouts and the advisory lock; the log says how it was done.
CREATE OR REPLACE FUNCTION refresh_view_logged(p_view TEXT, p_trigger TEXT)
RETURNS SETOF materialized_view_log
LANGUAGE plpgsql AS $$
DECLARE
    model read_models;
    snapshot_time TIMESTAMPTZ;
    snapshot_xids pg_snapshot;
    rows BIGINT;
BEGIN
    SELECT * INTO model FROM read_models WHERE name = p_view;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown materialized view: %', p_view USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF model.mode IS DISTINCT FROM 'refresh' THEN
        RAISE EXCEPTION '% is maintained incrementally (it is a table); maintain_incremental_read_models() rebuilds it', p_view
            USING ERRCODE = 'wrong_object_type';
    END IF;
    snapshot_time := clock_timestamp();
    snapshot_xids := pg_current_snapshot();
    IF model.populated THEN
        EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I', p_view);
    ELSE
        EXECUTE format('REFRESH MATERIALIZED VIEW %I', p_view);
        -- First population: give the planner statistics now rather than whenever autovacuum comes by.
        EXECUTE format('ANALYZE %I', p_view);
    END IF;
    EXECUTE format('SELECT count(*) FROM %I', p_view) INTO rows;
    RETURN QUERY
        INSERT INTO materialized_view_log (view_name, trigger, status, method, started_at, finished_at, row_count, snapshot)
        VALUES (p_view, p_trigger, 'ok', 'refresh', snapshot_time, clock_timestamp(), rows, snapshot_xids)
        RETURNING *;
    PERFORM read_model_synced(p_view, NULL);
    PERFORM prune_base_table_changes();
END
$$;

-- For DBAs and pg_cron, in both modes: each materialized view is refreshed as refresh_view_logged() does, then every
-- table-backed read model is rebuilt (diffed against its definition) in one block, except one being
-- built beside; a failure is logged and recorded in materialized_view_errors and the rest still runs.
-- It runs as ONE transaction and must run in READ COMMITTED, the default. Caution: each view's refresh
-- lock (and advisory lock) is held until the whole function returns, and nothing it did is visible to
-- others before that. The application instead refreshes each view in its own short transaction
-- (src/refresh/), the path to prefer; this function waits for a refresh the application is running
-- rather than skipping it.
CREATE OR REPLACE FUNCTION refresh_materialized_views(p_trigger TEXT DEFAULT 'sql')
RETURNS SETOF materialized_view_log
LANGUAGE plpgsql AS $$
DECLARE
    model read_models;
    attempt_started TIMESTAMPTZ;
    incremental TEXT[];
    maintained RECORD;
    message TEXT;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'refresh_materialized_views() must run in a READ COMMITTED transaction'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    FOR model IN SELECT * FROM read_models ORDER BY position LOOP
        IF model.mode = 'incremental' THEN
            incremental := array_append(incremental, model.name);
            CONTINUE;
        END IF;
        attempt_started := clock_timestamp();
        BEGIN
            PERFORM pg_advisory_xact_lock(model.lock_key);
            RETURN QUERY SELECT * FROM refresh_view_logged(model.name, p_trigger);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            RETURN QUERY SELECT * FROM record_refresh_failure(model.name, p_trigger, attempt_started, message);
        END;
    END LOOP;
    IF incremental IS NOT NULL THEN
        attempt_started := clock_timestamp();
        BEGIN
            LOCK TABLE read_model_catalog IN SHARE ROW EXCLUSIVE MODE;
            -- The log rows are read after the round, which inserted them (the round's own
            -- statement could not see them).
            FOR maintained IN SELECT * FROM maintain_incremental_read_models(p_trigger, incremental) LOOP
                RETURN QUERY SELECT * FROM materialized_view_log WHERE id = maintained.log_id;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            FOR i IN 1 .. cardinality(incremental) LOOP
                RETURN QUERY SELECT * FROM record_refresh_failure(incremental[i], p_trigger, attempt_started, message);
            END LOOP;
        END;
    END IF;
END
$$;

-- ===================================================================================================
-- Maintaining the table-backed read models (mode incremental): applies, builds beside, repairs.
-- ===================================================================================================

-- Makes a table-backed read model (or p_relation, a table of its shape) equal to its definition
-- for the given companies (NULL: every company), writing only rows that differ, as REFRESH ...
-- CONCURRENTLY does for a whole view: the rows whose exact image the definition no longer has are
-- deleted, then the definition's rows the table does not hold exactly are inserted. Readers are
-- never blocked. Returns how many rows of each, the companies of the inserted rows, and the rows
-- deleted and inserted as JSON arrays (NULL, all three, when it compared every company).
CREATE OR REPLACE FUNCTION sync_read_model(p_view TEXT, p_companies TEXT[], p_relation REGCLASS DEFAULT NULL,
                                OUT removed BIGINT, OUT added BIGINT, OUT companies TEXT[],
                                OUT removed_rows JSONB, OUT added_rows JSONB)
LANGUAGE plpgsql AS $$
DECLARE
    model read_model_catalog;
    target REGCLASS := COALESCE(p_relation, to_regclass(p_view));
    same_key TEXT;
    fresh TEXT := 'fresh';
BEGIN
    SELECT * INTO STRICT model FROM read_model_catalog WHERE name = p_view;
    SELECT string_agg(format('d.%1$I = t.%1$I', k), ' AND ') INTO same_key FROM unnest(model.key_columns) k;
    IF p_companies IS NULL THEN
        -- Joined whole, the definition is better planned as itself than as a materialized scan.
        fresh := format('%I', model.definition);
    END IF;
    -- The companies' rows of the definition are computed first, once, for both the delete and the
    -- insert (computing them is most of the cost: the search view's words): joined to the table
    -- inside one plan, the planner expects the anti-join to find almost nothing and nests a scan of
    -- the companies in it (measured: 20,000 companies at 1M rows ran for minutes instead of seconds).
    -- ROW(...) IS NOT DISTINCT FROM ROW(...) compares every column, NULLs equal: the row image.
    -- The insert waits for the delete (it reads its count first), so a changed row's new image
    -- never meets its old one in the unique index; both see the statement's snapshot, in which the
    -- deleted rows are the ones no fresh row matches exactly.
    EXECUTE format(
        'WITH fresh AS MATERIALIZED (SELECT * FROM %2$I d WHERE d.company_id = ANY ($1)),
              removed AS (DELETE FROM %1$s t WHERE ($1 IS NULL OR t.company_id = ANY ($1)) AND NOT EXISTS (
                              SELECT FROM %3$s d WHERE %4$s AND ROW(d.*) IS NOT DISTINCT FROM ROW(t.*))
                          RETURNING to_jsonb(t) - ''search_vector'' - ''refresh_no_dup_check'' AS image),
              inserted AS (INSERT INTO %1$s AS t SELECT d.* FROM %3$s d
                           WHERE (SELECT count(*) FROM removed) >= 0
                             AND NOT EXISTS (SELECT FROM %1$s t WHERE %4$s AND ROW(d.*) IS NOT DISTINCT FROM ROW(t.*))
                           RETURNING t.company_id, to_jsonb(t) - ''search_vector'' - ''refresh_no_dup_check'' AS image)
         SELECT (SELECT count(*) FROM removed), count(*),
                CASE WHEN $1 IS NULL THEN NULL ELSE COALESCE(array_agg(DISTINCT company_id), ''{}'') END,
                CASE WHEN $1 IS NULL THEN NULL ELSE COALESCE((SELECT jsonb_agg(image) FROM removed), ''[]'') END,
                CASE WHEN $1 IS NULL THEN NULL ELSE COALESCE(jsonb_agg(image), ''[]'') END
         FROM inserted',
        target, model.definition, fresh, same_key)
        INTO removed, added, companies, removed_rows, added_rows
        USING p_companies;
END
$$;

-- The changes that a read model whose data reflects p_snapshot has not seen: the companies they
-- touched, and whether one of them cannot say (a TRUNCATE; also every change, for a model never
-- synced, whose snapshot is NULL).
CREATE OR REPLACE FUNCTION pending_companies(p_snapshot pg_snapshot, OUT unknown BOOLEAN, OUT companies TEXT[])
LANGUAGE sql STABLE AS $$
    WITH unseen AS MATERIALIZED (
        SELECT c.company_ids FROM base_table_changes c
        WHERE p_snapshot IS NOT NULL AND NOT pg_visible_in_snapshot(c.xid, p_snapshot)
    )
    SELECT p_snapshot IS NULL OR COALESCE((SELECT bool_or(u.company_ids IS NULL) FROM unseen u), false),
           (SELECT COALESCE(array_agg(DISTINCT id), '{}') FROM unseen u, unnest(u.company_ids) id)
$$;

-- The planner's estimate of the companies (counted when the table was never analyzed).
CREATE OR REPLACE FUNCTION company_estimate() RETURNS DOUBLE PRECISION
LANGUAGE plpgsql STABLE AS $$
DECLARE
    estimate DOUBLE PRECISION;
BEGIN
    SELECT reltuples INTO estimate FROM pg_class WHERE oid = '"Company"'::regclass;
    IF estimate < 0 THEN
        SELECT count(*) INTO estimate FROM "Company";
    END IF;
    RETURN GREATEST(estimate, 1);
END
$$;

-- The table-backed read models (of p_among, all when NULL) that only a build from their whole
-- definition can bring up to date: never synced, changed by what the change record cannot
-- attribute (a TRUNCATE), or with more than p_rebuild_share of all companies changed (past it a
-- build costs less than recomputing company by company); and those of p_asked that are empty while
-- their definition is not (loaded with the triggers off). A model built and waiting to be swapped
-- in is not among them. The changed companies are only counted exactly when their sum with
-- repeats passes the share (a bulk load records millions).
CREATE OR REPLACE FUNCTION read_models_to_build(p_rebuild_share DOUBLE PRECISION, p_asked TEXT[] DEFAULT '{}',
                                     p_among TEXT[] DEFAULT NULL)
RETURNS SETOF TEXT
LANGUAGE plpgsql STABLE AS $$
DECLARE
    model RECORD;
    threshold DOUBLE PRECISION := p_rebuild_share * company_estimate();
    unknown BOOLEAN;
    touched BIGINT;
    judged TEXT;
    too_many BOOLEAN;
    empty BOOLEAN;
BEGIN
    FOR model IN
        SELECT m.name, m.definition, s.snapshot
        FROM read_models m JOIN last_successful_refreshes() s ON s.view_name = m.name
        WHERE m.mode = 'incremental' AND (p_among IS NULL OR m.name = ANY (p_among))
          AND NOT EXISTS (SELECT 1 FROM staged_read_models b WHERE b.view_name = m.name)
        ORDER BY m.position
    LOOP
        IF model.snapshot IS NULL THEN
            RETURN NEXT model.name;
            CONTINUE;
        END IF;
        -- Models usually share their snapshot: judged once for all of them (at 10M prospects after
        -- a bulk load, counting the companies takes seconds).
        IF judged IS DISTINCT FROM model.snapshot::text THEN
            judged := model.snapshot::text;
            SELECT COALESCE(bool_or(c.company_ids IS NULL), false), COALESCE(sum(cardinality(c.company_ids)), 0)
            INTO unknown, touched
            FROM base_table_changes c WHERE NOT pg_visible_in_snapshot(c.xid, model.snapshot);
            too_many := unknown OR (touched > threshold AND (
                SELECT count(*) FROM (
                    SELECT id FROM base_table_changes c, unnest(c.company_ids) id
                    WHERE NOT pg_visible_in_snapshot(c.xid, model.snapshot) GROUP BY id) changed) > threshold);
        END IF;
        IF too_many THEN
            RETURN NEXT model.name;
        ELSIF model.name = ANY (p_asked) THEN
            EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I) AND EXISTS (SELECT 1 FROM %I)',
                           model.name, model.definition) INTO empty;
            IF empty THEN
                RETURN NEXT model.name;
            END IF;
        END IF;
    END LOOP;
END
$$;

-- Drops a build of p_view waiting to be swapped in (a conversion replaces the model anyway; a
-- build whose catch-up cannot be computed is built again).
CREATE OR REPLACE FUNCTION discard_staged_build(p_view TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM staged_read_models WHERE view_name = p_view) THEN
        EXECUTE format('DROP TABLE IF EXISTS prospect_api_staging.%I', p_view);
        DELETE FROM staged_read_models WHERE view_name = p_view;
    END IF;
END
$$;

-- Builds table-backed read model p_view beside the one readers use, from this transaction's
-- snapshot: the table in prospect_api_staging filled from its definition, its indexes built after
-- the load, analyzed, its search words added; recorded in staged_read_models for the next round to
-- bring up to date and swap in. Run it in a REPEATABLE READ transaction, alone or with the builds
-- of other models (then all are built from one snapshot), holding the model's lock (lock_key of
-- read_models) since before the transaction's first statement: rounds leave a locked model alone,
-- so no round moves its data past this snapshot meanwhile. Returns the rows built, or NULL when the
-- model is already built and waiting, or its lock is another session's.
CREATE OR REPLACE FUNCTION build_read_model(p_view TEXT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    model read_models;
    rows BIGINT;
BEGIN
    IF current_setting('transaction_isolation') <> 'repeatable read' THEN
        RAISE EXCEPTION 'build_read_model() must run in a REPEATABLE READ transaction: its snapshot is what it builds'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    SELECT * INTO model FROM read_models WHERE name = p_view;
    IF NOT FOUND OR model.mode IS DISTINCT FROM 'incremental' THEN
        RAISE EXCEPTION '% is not a table-backed read model', p_view USING ERRCODE = 'wrong_object_type';
    END IF;
    -- Advisory locks are reentrant: this succeeds when the caller's session holds the lock. The
    -- catalog (to_regclass) is read afresh, unlike staged_read_models under this snapshot.
    IF NOT pg_try_advisory_xact_lock(model.lock_key)
       OR to_regclass(format('prospect_api_staging.%I', p_view)) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    rows := stage_read_model(p_view, 'incremental', true);
    PERFORM read_model_synced(p_view, NULL, format('prospect_api_staging.%I', p_view)::regclass);
    INSERT INTO staged_read_models (view_name, snapshot, snapshot_time, row_count)
    VALUES (p_view, pg_current_snapshot(), transaction_timestamp(), rows);
    RETURN rows;
END
$$;

-- In a round (the caller holds the maintenance lock, in REPEATABLE READ): brings the staged build
-- of p_view up to this round's snapshot by recomputing the companies changed since the build's
-- snapshot. Returns the companies recomputed, the rows deleted plus inserted and the rows it holds
-- now; or nothing when nothing is staged, or when the build cannot be caught up (a TRUNCATE since:
-- it is discarded, to be built again).
CREATE OR REPLACE FUNCTION catch_up_staged_build(p_view TEXT, OUT companies TEXT[], OUT rows_changed BIGINT,
                                      OUT row_count BIGINT)
RETURNS SETOF RECORD
LANGUAGE plpgsql AS $$
DECLARE
    staged staged_read_models;
    pending RECORD;
    synced RECORD;
BEGIN
    SELECT * INTO staged FROM staged_read_models WHERE view_name = p_view;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO pending FROM pending_companies(staged.snapshot);
    IF pending.unknown THEN
        PERFORM discard_staged_build(p_view);
        RETURN;
    END IF;
    SELECT * INTO synced
    FROM sync_read_model(p_view, pending.companies, format('prospect_api_staging.%I', p_view)::regclass);
    PERFORM read_model_synced(p_view, synced.companies, format('prospect_api_staging.%I', p_view)::regclass);
    companies := pending.companies;
    rows_changed := synced.removed + synced.added;
    row_count := staged.row_count + synced.added - synced.removed;
    RETURN NEXT;
END
$$;

-- The companies with ids in (p_after, p_upto] (a NULL bound is open) whose rows in each of the
-- table-backed read models p_views differ from its definition, in this statement's snapshot: what a
-- repair compares, a range at a time, without the maintenance lock (so applies go on meanwhile),
-- before a round recomputes only those companies. A company changed by a write not yet applied
-- differs too: recomputing it changes nothing the next apply would not.
CREATE OR REPLACE FUNCTION read_model_differences(p_views TEXT[], p_after TEXT, p_upto TEXT)
RETURNS TABLE (view_name TEXT, companies TEXT[])
LANGUAGE plpgsql STABLE AS $$
DECLARE
    model read_model_catalog;
    scope TEXT := concat_ws(' AND ', 'true', CASE WHEN p_after IS NOT NULL THEN '%1$s.company_id > $1' END,
                                             CASE WHEN p_upto IS NOT NULL THEN '%1$s.company_id <= $2' END);
BEGIN
    FOR model IN SELECT * FROM read_model_catalog m WHERE m.name = ANY (p_views) ORDER BY m.position LOOP
        view_name := model.name;
        -- EXCEPT ALL compares whole rows, NULLs equal, as the round's sync does; the table's columns
        -- are its definition's, in order (read_model_is_current()).
        EXECUTE format(
            'WITH fresh AS MATERIALIZED (SELECT * FROM %2$I d WHERE %3$s),
                  held AS MATERIALIZED (SELECT * FROM %1$I t WHERE %4$s)
             SELECT COALESCE(array_agg(DISTINCT company_id), ''{}'') FROM (
                 (SELECT * FROM fresh EXCEPT ALL SELECT * FROM held)
                 UNION ALL
                 (SELECT * FROM held EXCEPT ALL SELECT * FROM fresh)) differing',
            model.name, model.definition, format(scope, 'd'), format(scope, 't'))
            INTO companies USING p_after, p_upto;
        RETURN NEXT;
    END LOOP;
END
$$;

-- One round of incremental maintenance, in the caller's transaction. For each table-backed model:
-- - 'busy': another session holds its lock (a build beside): left alone;
-- - 'swapped': built beside and waiting (staged_read_models): brought up to this round's snapshot
--   and swapped in, last (method 'build');
-- - 'to_build': only a build beside can bring it up to date (read_models_to_build()): left alone,
--   for the caller to build; readers keep their data, or the 503 of a model never populated;
-- - otherwise the rows of the companies changed by transactions that its last snapshot does not see
--   are recomputed (method 'apply'); the models of p_rebuild are diffed against their whole
--   definition instead (method 'rebuild': refresh_materialized_views(), for DBAs); those of p_repair
--   also recompute p_repair_companies (a repair's range found them different from the
--   definition: read_model_differences()). 'maintained' when a log row was written, 'unchanged'
--   when a repair's companies changed nothing and nothing was pending.
-- Each model maintained logs this transaction's snapshot, and for an apply or a repair the rows it
-- deleted and inserted (read_model_changes). Changes this snapshot cannot see
-- (transactions still running) stay in the change record for the next round. p_repair_last: the
-- repair's last range, whose round logs method 'repair' for the models repaired, with the rows the
-- whole repair changed (p_repaired_before: those of the earlier ranges, by model name).
--
-- One process at a time: the caller holds `LOCK TABLE read_model_catalog IN SHARE ROW EXCLUSIVE MODE`.
-- In REPEATABLE READ (the applier) the lock must come before the transaction's snapshot (LOCK takes
-- none; a SELECT would), so the snapshot sees every earlier round; then every model maintained
-- reflects exactly that snapshot, and all agree. In READ COMMITTED (refresh_materialized_views())
-- each statement sees a newer snapshot than the one logged, which only makes data newer than its
-- log says: the changes behind it are not visible in the logged snapshot, so the next round
-- recomputes them anyway.
CREATE OR REPLACE FUNCTION maintain_incremental_read_models(
    p_trigger TEXT, p_rebuild TEXT[] DEFAULT '{}', p_rebuild_share DOUBLE PRECISION DEFAULT 1,
    p_repair TEXT[] DEFAULT '{}', p_repair_companies TEXT[] DEFAULT '{}',
    p_repair_last BOOLEAN DEFAULT false, p_repaired_before JSONB DEFAULT '{}',
    p_swap_lock_timeout TEXT DEFAULT '500ms')
RETURNS TABLE (view_name TEXT, outcome TEXT, log_id BIGINT, method TEXT, started_at TIMESTAMPTZ,
               duration_ms BIGINT, row_count BIGINT, rows_changed BIGINT, companies_changed BIGINT,
               repaired BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    models TEXT[];
    busy TEXT[] := '{}';
    building TEXT[];
    snapshot_time TIMESTAMPTZ;
    snapshot_xids pg_snapshot;
    pending BIGINT;
    companies TEXT[];
    v TEXT;
    how TEXT;
    caught_up RECORD;
    swaps JSONB := '{}';
    synced RECORD;
    removed BIGINT;
    added BIGINT;
    inserted TEXT[];
    removed_rows JSONB;
    added_rows JSONB;
    fixed BIGINT;
    rows BIGINT;
    logged materialized_view_log;
BEGIN
    -- The snapshot's time, never later than the snapshot: in REPEATABLE READ the transaction began
    -- before its snapshot was taken; in READ COMMITTED the next statement takes a newer one.
    IF current_setting('transaction_isolation') = 'read committed' THEN
        snapshot_time := clock_timestamp();
    ELSE
        snapshot_time := transaction_timestamp();
    END IF;
    SELECT pg_current_snapshot() INTO snapshot_xids;

    FOR v IN SELECT name FROM read_models WHERE mode = 'incremental' ORDER BY position LOOP
        IF pg_try_advisory_xact_lock(view_refresh_lock_key(v)) THEN
            models := array_append(models, v);
        ELSE
            busy := array_append(busy, v);
        END IF;
    END LOOP;
    RETURN QUERY SELECT b, 'busy', NULL::bigint, NULL, NULL::timestamptz, NULL::bigint, NULL::bigint,
                        NULL::bigint, NULL::bigint, NULL::bigint
                 FROM unnest(busy) b;
    IF models IS NULL THEN
        RETURN;
    END IF;
    -- A round that began just before the last one committed, and took the lock just after, would
    -- log a start before the last one's end: it starts, as logged, no earlier than that end, which
    -- is still before its snapshot (the last round committed before this one's lock).
    SELECT GREATEST(snapshot_time, max(l.finished_at)) INTO snapshot_time
    FROM last_successful_refreshes() s JOIN materialized_view_log l ON l.id = s.log_id
    WHERE s.view_name = ANY (models);

    -- Builds waiting are caught up first; their swaps wait for the end, so that readers wait least.
    FOREACH v IN ARRAY models LOOP
        SELECT * INTO caught_up FROM catch_up_staged_build(v);
        IF FOUND THEN
            swaps := swaps || jsonb_build_object(v, jsonb_build_object(
                'companies', cardinality(caught_up.companies), 'rows_changed', caught_up.rows_changed,
                'row_count', caught_up.row_count));
        END IF;
    END LOOP;
    models := ARRAY(SELECT m FROM unnest(models) m WHERE NOT swaps ? m);
    building := ARRAY(SELECT b FROM read_models_to_build(p_rebuild_share, '{}', models) b
                      WHERE b <> ALL (p_rebuild));
    RETURN QUERY SELECT b, 'to_build', NULL::bigint, NULL, NULL::timestamptz, NULL::bigint, NULL::bigint,
                        NULL::bigint, NULL::bigint, NULL::bigint
                 FROM unnest(building) b;
    models := ARRAY(SELECT m FROM unnest(models) m WHERE m <> ALL (building));

    WITH seen AS MATERIALIZED (
        SELECT snapshot FROM last_successful_refreshes()
        WHERE last_successful_refreshes.view_name = ANY (models) AND snapshot IS NOT NULL
    ), unseen AS (
        SELECT c.company_ids FROM base_table_changes c
        WHERE EXISTS (SELECT 1 FROM seen s WHERE NOT pg_visible_in_snapshot(c.xid, s.snapshot))
    )
    SELECT (SELECT count(*) FROM unseen),
           (SELECT COALESCE(array_agg(DISTINCT id), '{}') FROM unseen, unnest(company_ids) id)
    INTO pending, companies;
    IF pending = 0 AND cardinality(p_rebuild) = 0 AND cardinality(p_repair) = 0 AND swaps = '{}' THEN
        RETURN;
    END IF;

    FOREACH v IN ARRAY models LOOP
        fixed := NULL;
        inserted := '{}';
        removed_rows := '[]';
        added_rows := '[]';
        IF v = ANY (p_rebuild) THEN
            how := 'rebuild';
            SELECT * INTO synced FROM sync_read_model(v, NULL);
            removed := synced.removed;
            added := synced.added;
            inserted := NULL;
            EXECUTE format('SELECT count(*) FROM %I', v) INTO rows;
        ELSE
            how := 'apply';
            removed := 0;
            added := 0;
            IF pending > 0 THEN
                SELECT * INTO synced FROM sync_read_model(v, companies);
                removed := synced.removed;
                added := synced.added;
                inserted := synced.companies;
                removed_rows := synced.removed_rows;
                added_rows := synced.added_rows;
            END IF;
            IF v = ANY (p_repair) THEN
                SELECT * INTO synced FROM sync_read_model(v, p_repair_companies);
                fixed := synced.removed + synced.added;
                removed := removed + synced.removed;
                added := added + synced.added;
                inserted := inserted || synced.companies;
                removed_rows := removed_rows || synced.removed_rows;
                added_rows := added_rows || synced.added_rows;
                IF p_repair_last OR pending = 0 THEN
                    how := 'repair';
                END IF;
            END IF;
            IF pending = 0 AND COALESCE(fixed, 0) = 0 AND NOT (p_repair_last AND v = ANY (p_repair)) THEN
                IF fixed IS NOT NULL THEN
                    RETURN QUERY SELECT v, 'unchanged', NULL::bigint, 'repair', NULL::timestamptz,
                                        NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, 0::bigint;
                END IF;
                CONTINUE;
            END IF;
            SELECT l.row_count + added - removed INTO rows
            FROM last_successful_refreshes() l WHERE l.view_name = v;
        END IF;
        PERFORM read_model_synced(v, inserted);
        INSERT INTO materialized_view_log AS l (view_name, trigger, status, method, started_at, finished_at,
                                               row_count, snapshot, companies_changed, rows_changed)
        VALUES (v, p_trigger, 'ok', how, snapshot_time, clock_timestamp(), rows, snapshot_xids,
                CASE how WHEN 'rebuild' THEN NULL ELSE cardinality(companies) END,
                removed + added + CASE WHEN how = 'repair' AND p_repair_last
                                       THEN COALESCE((p_repaired_before ->> v)::bigint, 0) ELSE 0 END)
        RETURNING * INTO logged;
        IF how <> 'rebuild' THEN
            INSERT INTO read_model_changes (log_id, removed, added) VALUES (logged.id, removed_rows, added_rows);
        END IF;
        RETURN QUERY SELECT v, 'maintained', logged.id, how, logged.started_at, logged.duration_ms,
                            logged.row_count, logged.rows_changed, logged.companies_changed, fixed;
    END LOOP;

    -- Last, the builds waiting: logged, then the changes every model has now seen forgotten (after a
    -- bulk load, millions of rows), and only then swapped in, in the catalog's order, so that readers
    -- of a swapped model wait only from its swap to this round's commit.
    FOR v IN SELECT name FROM read_models WHERE swaps ? name ORDER BY position LOOP
        INSERT INTO materialized_view_log AS l (view_name, trigger, status, method, started_at, finished_at,
                                               row_count, snapshot, companies_changed, rows_changed)
        VALUES (v, p_trigger, 'ok', 'build', snapshot_time, clock_timestamp(),
                (swaps -> v ->> 'row_count')::bigint, snapshot_xids, (swaps -> v ->> 'companies')::bigint,
                (swaps -> v ->> 'rows_changed')::bigint)
        RETURNING * INTO logged;
        RETURN QUERY SELECT v, 'swapped', logged.id, 'build', logged.started_at, logged.duration_ms,
                            logged.row_count, logged.rows_changed, logged.companies_changed, NULL::bigint;
    END LOOP;
    DELETE FROM staged_read_models WHERE swaps ? staged_read_models.view_name;
    PERFORM prune_base_table_changes();
    FOR v IN SELECT name FROM read_models WHERE swaps ? name ORDER BY position LOOP
        -- Readers wait from here to the round's commit: the old table's ACCESS EXCLUSIVE lock is
        -- asked for p_swap_lock_timeout at a time.
        PERFORM swap_read_model(v, 'incremental', 'incremental', p_swap_lock_timeout, 50);
    END LOOP;
END
$$;

-- ===================================================================================================
-- Converting between the modes: the new relation is built in prospect_api_staging,
-- beside the one readers use, and moved into place when complete.
-- ===================================================================================================

CREATE SCHEMA prospect_api_staging;

-- A relation's columns with their types, in order.
CREATE OR REPLACE FUNCTION relation_columns(p_relation REGCLASS) RETURNS TEXT[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(format('%I %s', attname, format_type(atttypid, atttypmod)) ORDER BY attnum)
    FROM pg_attribute WHERE attrelid = p_relation AND attnum > 0 AND NOT attisdropped
$$;

-- Whether a read model is already what p_mode asks for and built from its definition: a materialized
-- view selecting from the definition view (those the first migrations created hold their own copy of the SELECT), or a
-- table with the definition's columns.
CREATE OR REPLACE FUNCTION read_model_is_current(p_view TEXT, p_mode TEXT) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT m.mode = p_mode
       AND relation_columns(to_regclass(m.name)) = relation_columns(to_regclass(m.definition))
       AND (m.mode = 'incremental' OR EXISTS (
               SELECT 1 FROM pg_rewrite r
               JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
               WHERE r.ev_class = to_regclass(m.name) AND d.refobjid = to_regclass(m.definition)))
    FROM read_models m WHERE m.name = p_view
$$;

-- Builds read model p_view anew as p_mode ('refresh': a materialized view; 'incremental': a table)
-- in prospect_api_staging, from its definition, with the indexes of the relation in place (so they
-- are declared once, in the migrations), its grants and owner, and analyzed. Returns its row count,
-- or NULL when it is built without data (a materialized view never populated stays so).
CREATE OR REPLACE FUNCTION stage_read_model(p_view TEXT, p_mode TEXT, p_with_data BOOLEAN)
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    model read_models;
    target REGCLASS := to_regclass(p_view);
    owner NAME;
    index RECORD;
    grant_row RECORD;
    rows BIGINT;
BEGIN
    SELECT * INTO STRICT model FROM read_models WHERE name = p_view;
    SELECT pg_get_userbyid(c.relowner) INTO owner FROM pg_class c WHERE c.oid = target;
    IF p_mode = 'incremental' THEN
        EXECUTE format('CREATE TABLE prospect_api_staging.%I AS SELECT * FROM %I', p_view, model.definition);
    ELSE
        EXECUTE format('CREATE MATERIALIZED VIEW prospect_api_staging.%I AS SELECT * FROM %I WITH %s',
                       p_view, model.definition, CASE WHEN p_with_data THEN 'DATA' ELSE 'NO DATA' END);
    END IF;
    -- pg_get_indexdef() gives 'CREATE [UNIQUE] INDEX name ON schema.relation USING ...': everything
    -- from ' USING ' on (method, columns, expressions, WHERE) names no relation.
    FOR index IN
        SELECT i.relname, x.indisunique, pg_get_indexdef(x.indexrelid) AS definition
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        WHERE x.indrelid = target ORDER BY i.relname
    LOOP
        EXECUTE format('CREATE %sINDEX %I ON prospect_api_staging.%I%s',
                       CASE WHEN index.indisunique THEN 'UNIQUE ' ELSE '' END, index.relname, p_view,
                       substring(index.definition FROM position(' USING ' IN index.definition)));
    END LOOP;
    FOR grant_row IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee,
               a.privilege_type, a.is_grantable
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = target AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON prospect_api_staging.%I TO %s%s', grant_row.privilege_type, p_view,
                       grant_row.grantee, CASE WHEN grant_row.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    IF owner <> current_user THEN
        EXECUTE format('ALTER %s prospect_api_staging.%I OWNER TO %I',
                       CASE p_mode WHEN 'refresh' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, p_view, owner);
    END IF;
    IF p_with_data THEN
        EXECUTE format('ANALYZE prospect_api_staging.%I', p_view);
        EXECUTE format('SELECT count(*) FROM prospect_api_staging.%I', p_view) INTO rows;
    END IF;
    RETURN rows;
END
$$;

-- Replaces read model p_view (a relation of mode p_from) with the one stage_read_model() built as
-- p_to. Readers queue behind a waiting ACCESS EXCLUSIVE request, so each wait for their locks is at
-- most p_lock_timeout, retried up to p_attempts times; once it has the lock it takes milliseconds.
-- Returns when the swap began its last attempt, and how many attempts it took.
CREATE OR REPLACE FUNCTION swap_read_model(
    p_view TEXT, p_from TEXT, p_to TEXT, p_lock_timeout TEXT, p_attempts INT,
    OUT swap_started TIMESTAMPTZ, OUT attempts INT)
LANGUAGE plpgsql AS $$
DECLARE
    home NAME;
BEGIN
    SELECT n.nspname INTO home
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(p_view);
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    attempts := 0;
    LOOP
        attempts := attempts + 1;
        swap_started := clock_timestamp();
        BEGIN
            -- DROP takes the ACCESS EXCLUSIVE lock (LOCK TABLE refuses materialized views).
            EXECUTE format('DROP %s %I.%I',
                           CASE p_from WHEN 'refresh' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, home, p_view);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            IF attempts >= p_attempts THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(0.1);
        END;
    END LOOP;
    EXECUTE format('ALTER %s prospect_api_staging.%I SET SCHEMA %I',
                   CASE p_to WHEN 'refresh' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, p_view, home);
END
$$;

-- Converts one read model to p_mode, or rebuilds it from its definition when it is not built from
-- it; does nothing when it is current. The new relation is built beside the old one, which keeps
-- serving (stage_read_model), its search words are added, and it is swapped in (swap_read_model):
-- readers wait only for the swap. A build of the model waiting to be swapped in is dropped.
--
-- Run it in its own READ COMMITTED transaction. It holds the read model's refresh lock and the
-- incremental maintenance lock throughout, so no refresh or apply runs meanwhile; the snapshot it logs
-- is taken after both, and the build's own snapshot is newer still. A materialized view that was never
-- populated is rebuilt unpopulated (the first refresh populates it), and logs nothing.
CREATE OR REPLACE FUNCTION convert_read_model(
    p_view TEXT, p_mode TEXT, p_swap_lock_timeout TEXT DEFAULT '500ms', p_swap_attempts INT DEFAULT 20)
RETURNS TABLE (view_name TEXT, from_mode TEXT, to_mode TEXT, row_count BIGINT, build_ms BIGINT,
               swap_ms BIGINT, swap_attempts INT, log_id BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    model read_models;
    with_data BOOLEAN;
    snapshot_time TIMESTAMPTZ;
    snapshot_xids pg_snapshot;
    build_started TIMESTAMPTZ;
    rows BIGINT;
    swap RECORD;
    logged BIGINT;
BEGIN
    IF p_mode NOT IN ('refresh', 'incremental') THEN
        RAISE EXCEPTION 'unknown maintenance mode: % (expected refresh or incremental)', p_mode
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'convert_read_model() must run in a READ COMMITTED transaction'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    SELECT * INTO model FROM read_models WHERE name = p_view;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown read model: %', p_view USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF model.mode IS NULL THEN
        RAISE EXCEPTION 'read model % is missing: it is neither a materialized view nor a table', p_view
            USING ERRCODE = 'undefined_table';
    END IF;
    IF read_model_is_current(p_view, p_mode) THEN
        RETURN;
    END IF;

    PERFORM pg_advisory_xact_lock(model.lock_key);
    LOCK TABLE read_model_catalog IN SHARE ROW EXCLUSIVE MODE;
    -- Another process may have converted it while we waited.
    IF read_model_is_current(p_view, p_mode) THEN
        RETURN;
    END IF;
    PERFORM discard_staged_build(p_view);
    SELECT * INTO model FROM read_models WHERE name = p_view;
    with_data := p_mode = 'incremental' OR model.populated;

    build_started := clock_timestamp();
    snapshot_time := clock_timestamp();
    snapshot_xids := pg_current_snapshot();
    rows := stage_read_model(p_view, p_mode, with_data);
    IF with_data THEN
        PERFORM read_model_synced(p_view, NULL, format('prospect_api_staging.%I', p_view)::regclass);
    END IF;
    SELECT * INTO swap FROM swap_read_model(p_view, model.mode, p_mode, p_swap_lock_timeout, p_swap_attempts);
    IF with_data THEN
        INSERT INTO materialized_view_log (view_name, trigger, status, method, started_at, finished_at, row_count, snapshot)
        VALUES (p_view, 'migrate', 'ok', 'build', snapshot_time, clock_timestamp(), rows, snapshot_xids)
        RETURNING id INTO logged;
    END IF;
    RETURN QUERY SELECT p_view, model.mode, p_mode, rows,
        (extract(epoch FROM swap.swap_started - build_started) * 1000)::bigint,
        (extract(epoch FROM clock_timestamp() - swap.swap_started) * 1000)::bigint,
        swap.attempts, logged;
END
$$;

-- ===================================================================================================
-- Ranked search: the vocabulary typos are corrected to, and the functions that plan and rank.
-- ===================================================================================================

-- The words of the search view that a typo may be corrected to (words of 4 letters and more: a term
-- needs 5 to have a typo allowed). It only grows: a word no row holds any more costs a correction
-- that matches nothing, never a wrong result.
CREATE TABLE search_vocabulary (
    word TEXT PRIMARY KEY
);
CREATE INDEX search_vocabulary_trigrams ON search_vocabulary USING gin (word gin_trgm_ops);

-- Adds the words of the given companies' rows (NULL: every row) of p_relation (the search view, or
-- a table or materialized view of its shape) to the vocabulary. (A regclass default naming the view
-- would make the function depend on it, and the view could not be swapped.)
CREATE OR REPLACE FUNCTION add_search_vocabulary(p_companies TEXT[], p_relation REGCLASS)
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO search_vocabulary (word)
         SELECT DISTINCT substr(w, 2)
         FROM %s v, unnest(tsvector_to_array(v.search_vector)) w
         WHERE ($1::text[] IS NULL OR v.company_id = ANY ($1)) AND left(w, 1) <> ''e'' AND length(w) >= 5
         ON CONFLICT DO NOTHING', p_relation)
        USING p_companies;
END
$$;

-- What follows a read model's rows besides its readers, called by every path that changes them
-- (p_companies: the companies whose rows were inserted; NULL: any), on the relation readers use or
-- on p_relation, one of its shape about to replace it.
CREATE OR REPLACE FUNCTION read_model_synced(p_view TEXT, p_companies TEXT[], p_relation REGCLASS DEFAULT NULL)
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF p_view = 'prospect_search_view' AND COALESCE(p_relation, to_regclass(p_view)) IS NOT NULL THEN
        PERFORM add_search_vocabulary(p_companies, COALESCE(p_relation, to_regclass(p_view)));
    END IF;
END
$$;

-- Whether b is a one adjacent transposition away from a ("garica", "garcia"): one typo to a person
-- typing, two edits to levenshtein().
CREATE OR REPLACE FUNCTION is_transposition(a TEXT, b TEXT) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT length(a) = length(b) AND a <> b AND EXISTS (
        SELECT 1 FROM generate_series(1, length(a) - 1) i
        WHERE left(a, i - 1) = left(b, i - 1)
          AND substr(a, i, 1) = substr(b, i + 1, 1) AND substr(a, i + 1, 1) = substr(b, i, 1)
          AND substr(a, i + 2) = substr(b, i + 2))
$$;

-- The typos a term may have: none under 5 letters, one from 5, two from 9; none in a term with a
-- digit (a number or a code is meant as typed: "first42" must not find "first43").
CREATE OR REPLACE FUNCTION search_typo_budget(p_term TEXT) RETURNS INT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_term ~ '[0-9]' THEN 0
                WHEN length(p_term) >= 9 THEN 2 WHEN length(p_term) >= 5 THEN 1 ELSE 0 END
$$;

-- The vocabulary's words within the term's typo budget, with their distance (a transposition
-- counts one), nearest first, at most 16. The trigram index finds the candidates.
CREATE OR REPLACE FUNCTION search_corrections(p_term TEXT)
RETURNS TABLE (word TEXT, typos INT)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    budget INT := search_typo_budget(p_term);
BEGIN
    IF budget = 0 THEN
        RETURN;
    END IF;
    PERFORM set_config('pg_trgm.similarity_threshold', '0.2', true);
    RETURN QUERY
        SELECT c.word, c.typos FROM (
            SELECT v.word, CASE WHEN is_transposition(p_term, v.word) THEN 1
                                ELSE levenshtein_less_equal(p_term, v.word, budget) END AS typos
            FROM search_vocabulary v
            WHERE v.word % p_term AND v.word <> p_term
        ) c
        WHERE c.typos <= budget
        ORDER BY c.typos, c.word
        LIMIT 16;
END
$$;

-- What a query matches and how each match scores. A row matches when every term matches one of the
-- fields the caller may see (p_hidden names those it may not: first_name, last_name, company_name,
-- job_title, industry, email); a term with '@' matches the email (the whole address, or its start
-- when it is the last term and p_prefix_last), any other term a word of the name (n), of the
-- company's name (c) or of the job title or industry (t): the whole word, its start when it is the
-- last term and p_prefix_last, or a correction within its typo budget.
--
-- A match scores 1000 - 100 × typos + 10 × field (name 3, company 2, title and industry 1, email 4)
-- + 2 when whole; a row scores the sum, over the terms, of each term's best match, + 1 when its
-- name has no word besides those the terms matched (exactness: "joao garcia" puts João Garcia
-- before João Pedro Garcia; search_prospects() adds it). `tier_*` list each
-- term's matches best first (term, tsquery, score), `everything` is what a row must match, `narrow`
-- the part of it the index should answer (a short last prefix matches too many words to look up:
-- it is only checked); `impossible` is set when a term can match no field the caller may see.
CREATE OR REPLACE FUNCTION search_plan(p_q TEXT, p_hidden TEXT[], p_prefix_last BOOLEAN,
    OUT terms TEXT[], OUT tier_terms INT[], OUT tier_queries tsquery[], OUT tier_scores INT[],
    OUT everything tsquery, OUT narrow tsquery, OUT impossible BOOLEAN)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    -- The fields of the search vector (their lexemes' first letter) and their ranks.
    word_fields TEXT[] := '{}';
    word_ranks INT[] := '{}';
    fields TEXT[];
    ranks INT[];
    term TEXT;
    i INT := 0;
    last BOOLEAN;
    alternatives tsquery;
    correction RECORD;
    g INT;
BEGIN
    terms := search_terms(p_q);
    IF NOT p_hidden && ARRAY['first_name', 'last_name'] THEN
        word_fields := array_append(word_fields, 'n'); word_ranks := word_ranks || 3;
    END IF;
    IF NOT p_hidden && ARRAY['company_name'] THEN
        word_fields := array_append(word_fields, 'c'); word_ranks := word_ranks || 2;
    END IF;
    IF NOT p_hidden && ARRAY['job_title', 'industry'] THEN
        word_fields := array_append(word_fields, 't'); word_ranks := word_ranks || 1;
    END IF;
    tier_terms := '{}'; tier_queries := '{}'; tier_scores := '{}';
    impossible := false;
    FOREACH term IN ARRAY terms LOOP
        i := i + 1;
        last := p_prefix_last AND i = cardinality(terms);
        IF position('@' IN term) > 0 THEN
            fields := CASE WHEN 'email' = ANY (p_hidden) THEN '{}' ELSE ARRAY['e'] END;
            ranks := ARRAY[4];
        ELSE
            fields := word_fields; ranks := word_ranks;
        END IF;
        FOR g IN 1 .. cardinality(fields) LOOP
            tier_terms := tier_terms || i;
            tier_queries := tier_queries || lexeme_literal(fields[g] || term)::tsquery;
            tier_scores := tier_scores || (1002 + 10 * ranks[g]);
            IF last THEN
                tier_terms := tier_terms || i;
                tier_queries := tier_queries || (lexeme_literal(fields[g] || term) || ':*')::tsquery;
                tier_scores := tier_scores || (1000 + 10 * ranks[g]);
            END IF;
        END LOOP;
        IF fields <> ARRAY['e'] THEN
            FOR correction IN
                SELECT c.typos, array_agg(c.word) AS words
                FROM search_corrections(term) c GROUP BY c.typos ORDER BY c.typos
            LOOP
                FOR g IN 1 .. cardinality(fields) LOOP
                    tier_terms := tier_terms || i;
                    tier_queries := tier_queries || (
                        SELECT string_agg(lexeme_literal(fields[g] || w), ' | ')
                        FROM unnest(correction.words) w)::tsquery;
                    tier_scores := tier_scores || (1000 - 100 * correction.typos + 10 * ranks[g]);
                END LOOP;
            END LOOP;
        END IF;
        SELECT search_query_any(q) INTO alternatives
        FROM unnest(tier_queries, tier_terms) AS t(q, t) WHERE t.t = i;
        IF alternatives IS NULL THEN
            impossible := true;
            CONTINUE;
        END IF;
        everything := CASE WHEN everything IS NULL THEN alternatives ELSE everything && alternatives END;
        IF NOT (last AND length(term) < 3) THEN
            narrow := CASE WHEN narrow IS NULL THEN alternatives ELSE narrow && alternatives END;
        END IF;
    END LOOP;
    -- Each term's matches best first, so that the first that matches a row is its best.
    SELECT COALESCE(array_agg(t ORDER BY t, s DESC), '{}'), COALESCE(array_agg(q ORDER BY t, s DESC), '{}'),
           COALESCE(array_agg(s ORDER BY t, s DESC), '{}')
    INTO tier_terms, tier_queries, tier_scores
    FROM unnest(tier_terms, tier_queries, tier_scores) AS x(t, q, s);
    narrow := COALESCE(narrow, everything);
    impossible := impossible OR everything IS NULL;
END
$$;

-- a OR b, where either may be NULL (nothing yet); pg_catalog's tsquery_or() is strict.
CREATE OR REPLACE FUNCTION search_query_or(a tsquery, b tsquery) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT CASE WHEN a IS NULL THEN b ELSE a || b END $$;
CREATE AGGREGATE search_query_any(tsquery) (SFUNC = search_query_or, STYPE = tsquery);

-- A search's terms, each whitespace-separated part of p_q made words as the rows' are (a part with
-- '@' stays whole: an email address). At most 8.
CREATE OR REPLACE FUNCTION search_terms(p_q TEXT) RETURNS TEXT[]
LANGUAGE sql STABLE AS $$
    SELECT COALESCE((array_agg(term ORDER BY n, m))[1:8], '{}')
    FROM regexp_split_to_table(btrim(COALESCE(p_q, '')), '\s+') WITH ORDINALITY AS q(part, n)
    CROSS JOIN LATERAL unnest(CASE WHEN position('@' IN part) > 0 THEN ARRAY[lower(part)]
                                   ELSE search_words(part) END) WITH ORDINALITY AS t(term, m)
    WHERE part <> ''
$$;

-- The planner's plan (EXPLAIN, JSON) of the rows matching p_q and the filters, for `count=estimated`:
-- planned with the query's own tsquery, so the estimate comes from the search vector's statistics.
-- NULL when nothing can match. VOLATILE because EXPLAIN is refused in other functions.
CREATE OR REPLACE FUNCTION search_matches_plan(p_q TEXT, p_hidden TEXT[], p_prefix_last BOOLEAN,
    p_industry TEXT[], p_country TEXT, p_department TEXT[]) RETURNS json
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    plan RECORD;
    explained json;
BEGIN
    SELECT * INTO plan FROM search_plan(p_q, p_hidden, p_prefix_last);
    IF plan.impossible THEN
        RETURN NULL;
    END IF;
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 FROM prospect_search_view v
             WHERE v.search_vector @@ $1
               AND ($2::text[] IS NULL OR v.industry = ANY ($2))
               AND ($3::text IS NULL OR v.company_country = $3)
               AND ($4::text[] IS NULL OR v.department = ANY ($4))'
        INTO explained USING plan.everything, p_industry, p_country, p_department;
    RETURN explained;
END
$$;

-- The ranked matches of p_q among the rows passing the filters (NULL: not filtered), best first, ties
-- in prospect_id order, after the keyset cursor (p_after_score, p_after_id), at most p_limit.
--
-- One term: its matches are taken tier by tier (name word, name prefix, company word, ... typos):
-- every row of a tier scores the same, so each tier's rows come in prospect_id order until the page
-- is full. How a tier is read depends on how many rows it has, which is measured, not estimated
-- (the planner cannot know how many of a tier's rows an earlier tier took):
--   - up to `small` of its rows are counted through the GIN index: fewer, and they are all read
--     and sorted here; that many, and the tier is dense enough to walk the key index in order,
--     checking each row, until the page is full;
--   - the prefix of a one- or two-letter term is read the other way round, as it is almost always
--     dense and its index scan alone would cost more than the walk: the walk first, over at most
--     `walk_rows` rows passing the filters; when those do not fill the page, the GIN index.
-- Several terms: the rows matching all of them (the index finds them, from `narrow` when it leaves
-- out a short prefix) are scored by one expression over the tiers and sorted.
--
-- The statements are EXECUTEd: planned for their values each time, with every value bound.
CREATE OR REPLACE FUNCTION search_prospects(
    p_q TEXT, p_hidden TEXT[], p_prefix_last BOOLEAN,
    p_industry TEXT[], p_country TEXT, p_department TEXT[],
    p_after_score INT, p_after_id TEXT, p_limit BIGINT)
RETURNS TABLE (score INT, prospect_id TEXT)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    filters CONSTANT TEXT := '
          AND ($3::text[] IS NULL OR CASE WHEN cardinality($3) = 1 THEN v.industry = $3[1]
                                           ELSE v.industry = ANY ($3) END)
          AND ($4::text IS NULL OR v.company_country = $4)
          AND ($5::text[] IS NULL OR CASE WHEN cardinality($5) = 1 THEN v.department = $5[1]
                                           ELSE v.department = ANY ($5) END)';
    -- A tier's rows: $1 the tier, $2 what earlier tiers took, $3 to $5 the filters, $6 the cursor.
    tier_rows CONSTANT TEXT := ' FROM prospect_search_view v
        WHERE v.search_vector @@ $1 AND ($2::tsquery IS NULL OR NOT v.search_vector @@ $2)' || filters || '
          AND ($6::text IS NULL OR v.prospect_id > $6)';
    small CONSTANT INT := 1000;
    walk_rows CONSTANT INT := 20000;
    plan RECORD;
    k INT;
    covered tsquery;
    remaining BIGINT := p_limit;
    after TEXT;
    ids TEXT[];
    found BIGINT;
    scoring TEXT;
    setting TEXT;
BEGIN
    SELECT * INTO plan FROM search_plan(p_q, p_hidden, p_prefix_last);
    IF plan.impossible THEN
        RETURN;
    END IF;
    IF cardinality(plan.terms) = 1 THEN
        FOR k IN 1 .. cardinality(plan.tier_queries) LOOP
            EXIT WHEN remaining <= 0;
            IF p_after_score IS NULL OR plan.tier_scores[k] <= p_after_score THEN
                after := CASE WHEN plan.tier_scores[k] = p_after_score THEN p_after_id END;
                ids := NULL;
                IF length(plan.terms[1]) < 3 AND plan.tier_queries[k]::text LIKE '%:*' THEN
                    -- The walk over the next `walk_rows` rows in key order that pass the filters (an
                    -- index per filter keeps them in key order), kept if it fills the page.
                    EXECUTE 'SELECT array_agg(v.prospect_id) FROM (
                                 SELECT v.prospect_id FROM (
                                     SELECT v.* FROM prospect_search_view v WHERE ($6::text IS NULL OR v.prospect_id > $6)'
                                     || filters || ' ORDER BY v.prospect_id LIMIT $8) v
                                 WHERE v.search_vector @@ $1 AND ($2::tsquery IS NULL OR NOT v.search_vector @@ $2)
                                 LIMIT $7) v'
                        INTO ids
                        USING plan.tier_queries[k], covered, p_industry, p_country, p_department, after, remaining, walk_rows;
                    IF COALESCE(cardinality(ids), 0) < remaining THEN
                        EXECUTE 'SELECT array_agg(v.prospect_id)' || tier_rows INTO ids
                            USING plan.tier_queries[k], covered, p_industry, p_country, p_department, after;
                    END IF;
                ELSE
                    -- Counted first: a count reads no column, so the scan skips the heap's all-visible
                    -- pages when nothing else (an earlier tier, a filter) needs the rows.
                    EXECUTE 'SELECT count(*) FROM (SELECT 1' || tier_rows || ' LIMIT $7) v'
                        INTO found
                        USING plan.tier_queries[k], covered, p_industry, p_country, p_department, after, small;
                    IF found < small THEN
                        EXECUTE 'SELECT array_agg(v.prospect_id)' || tier_rows INTO ids
                            USING plan.tier_queries[k], covered, p_industry, p_country, p_department, after;
                    ELSE
                        -- Dense: the walk (IS TRUE is no index condition, so no bitmap scan is planned).
                        -- With a filter, along the filter's index, which holds its rows in key order:
                        -- costed with their heap pages scattered (random_page_cost 4) it loses to the
                        -- key index, which passes over every row the filter drops (q=smith in one
                        -- department at 1M: 43 ms against 8), so the walk is planned as the cached
                        -- pages it reads, and the setting restored.
                        setting := current_setting('random_page_cost');
                        IF p_industry IS NOT NULL OR p_country IS NOT NULL OR p_department IS NOT NULL THEN
                            PERFORM set_config('random_page_cost', '1.1', true);
                        END IF;
                        EXECUTE 'SELECT array_agg(v.prospect_id) FROM (SELECT v.prospect_id'
                                || replace(tier_rows, 'WHERE v.search_vector @@ $1', 'WHERE (v.search_vector @@ $1) IS TRUE')
                                || ' ORDER BY v.prospect_id LIMIT $7) v'
                            INTO ids
                            USING plan.tier_queries[k], covered, p_industry, p_country, p_department, after, remaining;
                        PERFORM set_config('random_page_cost', setting, true);
                    END IF;
                END IF;
                RETURN QUERY SELECT plan.tier_scores[k], i.id FROM unnest(ids) AS i(id) ORDER BY i.id LIMIT remaining;
                remaining := remaining - LEAST(COALESCE(cardinality(ids), 0), remaining);
            END IF;
            covered := search_query_or(covered, plan.tier_queries[k]);
        END LOOP;
        RETURN;
    END IF;
    -- Each term's score: the best of its tiers that the row matches.
    SELECT string_agg(format('GREATEST(%s)', alternatives), ', ') INTO scoring
    FROM (SELECT string_agg(format('CASE WHEN v.search_vector @@ $6[%1$s] THEN $7[%1$s] END', x.n), ', ' ORDER BY x.n)
                 AS alternatives
          FROM unnest(plan.tier_terms) WITH ORDINALITY AS x(term, n) GROUP BY x.term) per_term;
    -- A best score in the name's range (x3x) is a name match: the name is exact when all its words are.
    RETURN QUERY EXECUTE format(
        'SELECT s.score, s.prospect_id FROM (
             SELECT ((SELECT sum(b) FROM unnest(t.bests) b)
                     + CASE WHEN (SELECT count(*) FROM unnest(t.bests) b WHERE b %% 100 / 10 = 3) = t.name_words
                            THEN 1 ELSE 0 END)::int AS score, t.prospect_id
             FROM (SELECT ARRAY[%s] AS bests, v.name_words, v.prospect_id FROM prospect_search_view v
                   WHERE v.search_vector @@ $2 AND ($1::tsquery IS NULL OR v.search_vector @@ $1) %s) t) s
         WHERE $8::int IS NULL OR s.score < $8 OR (s.score = $8 AND s.prospect_id > $9)
         ORDER BY s.score DESC, s.prospect_id LIMIT $10', scoring, filters)
        USING NULLIF(plan.narrow, plan.everything), plan.everything, p_industry, p_country, p_department, plan.tier_queries,
              plan.tier_scores, p_after_score, p_after_id, p_limit;
END
$$;

-- ===================================================================================================
-- Access control: API keys, daily export quotas, the audit log.
-- ===================================================================================================

-- API keys for servers and dashboards (`prospect-api keys create|list|revoke`). Only a hash of each
-- key is kept: the key is shown once, when it is created. A revoked key stays listed.
CREATE TABLE api_keys (
    name         TEXT        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    role         TEXT        NOT NULL,
    -- SHA-256 of the whole key: keys carry 256 random bits, so a fast hash is enough.
    key_hash     BYTEA       NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);

-- CSV rows each credential exported per day (UTC), reserved before an export's first byte.
CREATE TABLE export_quota (
    credential TEXT   NOT NULL,
    day        DATE   NOT NULL,
    rows       BIGINT NOT NULL CHECK (rows >= 0),
    PRIMARY KEY (credential, day)
);

-- Reserves `p_rows` of `p_credential`'s export allowance for today: true when they fit under
-- `p_limit` (the rows then count as exported), false when they do not (nothing is reserved). One
-- statement: concurrent reservations of one credential wait for each other on its row, so two
-- exports that only one fits cannot both pass.
CREATE FUNCTION reserve_export_rows(p_credential TEXT, p_rows BIGINT, p_limit BIGINT) RETURNS BOOLEAN
LANGUAGE sql AS $$
    WITH reserved AS (
        INSERT INTO export_quota AS q (credential, day, rows)
        SELECT p_credential, (now() AT TIME ZONE 'UTC')::date, p_rows WHERE p_rows <= p_limit
        ON CONFLICT (credential, day) DO UPDATE SET rows = q.rows + EXCLUDED.rows
        WHERE q.rows + EXCLUDED.rows <= p_limit
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM reserved)
$$;

-- Every export and every admin action: who (credential and role), what (endpoint, normalised
-- filters and fields), how much (rows and bytes sent), from where, and how it ended. An export
-- writes a row before its first byte ('started': the export is refused if it cannot) and one when
-- it ends ('completed' or 'failed'). Append-only: rows are never changed, and only
-- prune_audit_log() deletes them (AUDIT_LOG_RETENTION).
CREATE TABLE audit_log (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    request_id TEXT,
    credential TEXT        NOT NULL,
    role       TEXT        NOT NULL,
    action     TEXT        NOT NULL CHECK (action IN ('export', 'admin')),
    endpoint   TEXT        NOT NULL,
    filters    JSONB,
    fields     TEXT,
    rows       BIGINT,
    bytes      BIGINT,
    client     TEXT,
    outcome    TEXT        NOT NULL CHECK (outcome IN ('started', 'completed', 'failed', 'refused', 'ok', 'error')),
    detail     TEXT
);
CREATE INDEX audit_log_recent ON audit_log (at DESC);
CREATE INDEX audit_log_by_credential ON audit_log (credential, at DESC);

CREATE FUNCTION refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('prospect_api.pruning_audit_log', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_log_never_truncated BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_change();

-- Deletes audit rows older than p_keep; the number deleted.
CREATE FUNCTION prune_audit_log(p_keep INTERVAL) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    deleted BIGINT;
BEGIN
    PERFORM set_config('prospect_api.pruning_audit_log', 'on', true);
    DELETE FROM audit_log WHERE at < clock_timestamp() - p_keep;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('prospect_api.pruning_audit_log', 'off', true);
    RETURN deleted;
END
$$;
