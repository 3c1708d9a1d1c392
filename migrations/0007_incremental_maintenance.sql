-- Incremental maintenance: a read model can also be an ordinary table with the same name, columns, key
-- and indexes, kept up to date by recomputing only the rows of the companies that changed. PostgreSQL
-- refuses INSERT/DELETE on a materialized view, hence a table. The company is the unit: every row of
-- every read model belongs to exactly one company, so the rows of a company are recomputed from the
-- definition (0006) filtered by company id. (pg_ivm maintains views from transition tables, but not our
-- LEFT JOIN and COUNT(DISTINCT) ones; recomputing per company is exact by construction.)
--
-- Which mode each read model is in is what its relation is (read_models.mode); `prospect-api migrate`
-- and `serve` convert them to VIEW_MAINTENANCE with convert_read_model() below.

-- ---------------------------------------------------------------------------------------------------
-- Change capture: which companies each writing transaction touched.
-- ---------------------------------------------------------------------------------------------------

-- Now with the companies each transaction touched, a row per written row: a prospect's old and new
-- "companyId", a company's old and new "id". NULL means the change cannot be described per company
-- (TRUNCATE, and rows recorded before this migration): everything may have changed, and incremental
-- maintenance rebuilds in full.
ALTER TABLE base_table_changes ADD COLUMN IF NOT EXISTS company_ids TEXT[];

-- Row-level triggers that insert a row each, and neither statement-level ones reading transition
-- tables nor row-level ones that skip companies their transaction already recorded. Measured here
-- (PostgreSQL's CPU per single-row INSERT transaction, 8 pgbench clients, median of six runs; see
-- bench/README.md): 110 µs without triggers, 111 µs with this trigger, 124 µs with 0005's statement
-- trigger (which recorded only the transaction), 138 µs with a statement trigger reading its transition
-- table (the query on it is the cost), and about 160 µs when the trigger also kept the last company it
-- recorded in a transaction-local setting, so as to record each company once (the setting is the cost).
-- Bulk writes pay instead: a 100,000-row INSERT ... SELECT took about 45% longer (with the transition
-- table: 3%), and records a row per written row; the applier takes each company once. A large load can
-- skip the triggers (SET session_replication_role = replica) and ask for a rebuild afterwards.
-- TRUNCATE has no rows to look at: its statement-level trigger records "every company" (NULL).
-- One function for both tables (it replaces 0005's statement-level one): the prospect's company is
-- "companyId", the company's own is "id". Each branch is compiled for the table it runs on only.
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

DROP TRIGGER IF EXISTS prospect_changed ON "Prospect";
CREATE TRIGGER prospect_changed AFTER INSERT OR UPDATE OR DELETE ON "Prospect"
    FOR EACH ROW EXECUTE FUNCTION record_base_table_change();
DROP TRIGGER IF EXISTS prospect_truncated ON "Prospect";
CREATE TRIGGER prospect_truncated AFTER TRUNCATE ON "Prospect"
    FOR EACH STATEMENT EXECUTE FUNCTION record_base_table_change();
DROP TRIGGER IF EXISTS company_changed ON "Company";
CREATE TRIGGER company_changed AFTER INSERT OR UPDATE OR DELETE ON "Company"
    FOR EACH ROW EXECUTE FUNCTION record_base_table_change();
DROP TRIGGER IF EXISTS company_truncated ON "Company";
CREATE TRIGGER company_truncated AFTER TRUNCATE ON "Company"
    FOR EACH STATEMENT EXECUTE FUNCTION record_base_table_change();

-- ---------------------------------------------------------------------------------------------------
-- The log says how each refresh was done, and what an incremental apply changed.
-- ---------------------------------------------------------------------------------------------------

-- method: 'refresh' (REFRESH MATERIALIZED VIEW), 'apply' (the rows of the changed companies
-- recomputed), 'rebuild' (a table-backed read model diffed against its whole definition), 'build'
-- (built anew while converting between modes). companies_changed: the companies an apply recomputed.
-- rows_changed: rows deleted plus rows inserted by an apply or rebuild (a changed row counts twice).
ALTER TABLE materialized_view_log ADD COLUMN IF NOT EXISTS method TEXT
    CHECK (method IN ('refresh', 'apply', 'rebuild', 'build'));
ALTER TABLE materialized_view_log ADD COLUMN IF NOT EXISTS companies_changed BIGINT;
ALTER TABLE materialized_view_log ADD COLUMN IF NOT EXISTS rows_changed BIGINT;

-- 'incremental': the applier; 'migrate': a conversion between modes.
ALTER TABLE materialized_view_log DROP CONSTRAINT IF EXISTS materialized_view_log_trigger_check;
ALTER TABLE materialized_view_log ADD CONSTRAINT materialized_view_log_trigger_check
    CHECK (trigger IN ('schedule', 'notify', 'poll', 'manual', 'startup', 'cli', 'catchup', 'sql',
                       'incremental', 'migrate'));

-- Each view's last error, kept by retention (below).
CREATE INDEX IF NOT EXISTS materialized_view_log_last_error
    ON materialized_view_log (view_name, id DESC) WHERE status = 'error';

-- ---------------------------------------------------------------------------------------------------
-- Which read models are behind the base tables.
-- ---------------------------------------------------------------------------------------------------

-- As in 0003, reading each view's snapshot once rather than once per change row.
CREATE OR REPLACE FUNCTION prune_base_table_changes() RETURNS VOID
LANGUAGE sql AS $$
    WITH seen AS MATERIALIZED (SELECT snapshot FROM last_refresh_snapshots())
    DELETE FROM base_table_changes c
    WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.snapshot IS NULL OR NOT pg_visible_in_snapshot(c.xid, s.snapshot))
$$;

CREATE OR REPLACE FUNCTION read_models_behind() RETURNS TABLE (view_name TEXT, mode TEXT)
LANGUAGE sql STABLE AS $$
    SELECT s.view_name, m.mode
    FROM last_successful_refreshes() s JOIN read_models m ON m.name = s.view_name
    WHERE s.snapshot IS NULL
       OR EXISTS (SELECT 1 FROM base_table_changes c WHERE NOT pg_visible_in_snapshot(c.xid, s.snapshot))
    ORDER BY m.position
$$;

CREATE OR REPLACE FUNCTION views_needing_refresh() RETURNS SETOF TEXT
LANGUAGE sql STABLE AS $$
    SELECT view_name FROM read_models_behind()
$$;

-- ---------------------------------------------------------------------------------------------------
-- Maintaining a table-backed read model.
-- ---------------------------------------------------------------------------------------------------

-- Every read model is maintained per company, so each needs its rows by company id. The other two have
-- it as the start of their key; prospect_search_view (keyed by prospect) gets its own index, which also
-- serves the materialized view's refresh no worse than any index does.
CREATE INDEX IF NOT EXISTS prospect_search_view_company ON prospect_search_view (company_id);

-- Makes a table-backed read model equal to its definition for the given companies (NULL: all of
-- them), writing only rows that differ, as REFRESH ... CONCURRENTLY does for a whole view: first the
-- rows whose exact image the definition no longer has are deleted, then the definition's rows whose
-- key is now missing are inserted. Readers are never blocked. Returns how many rows of each.
CREATE OR REPLACE FUNCTION sync_read_model(p_view TEXT, p_companies TEXT[], OUT removed BIGINT, OUT added BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    model read_model_catalog;
    same_key TEXT;
    fresh TEXT;
    table_scope TEXT := '';
BEGIN
    SELECT * INTO STRICT model FROM read_model_catalog WHERE name = p_view;
    SELECT string_agg(format('d.%1$I = t.%1$I', k), ' AND ') INTO same_key FROM unnest(model.key_columns) k;
    IF p_companies IS NULL THEN
        fresh := format('%I', model.definition);
    ELSE
        -- The companies' rows are computed first, once: joined to the table inside one plan, the
        -- planner expects the anti-join to find almost nothing and nests a scan of the companies in
        -- it (measured: 20,000 companies at 1M rows ran for minutes instead of seconds).
        fresh := 'fresh';
        table_scope := 'AND t.company_id = ANY ($1)';
    END IF;
    -- ROW(...) IS NOT DISTINCT FROM ROW(...) compares every column, NULLs equal: the row image.
    EXECUTE format(
        'WITH fresh AS MATERIALIZED (SELECT * FROM %2$I d WHERE d.company_id = ANY ($1))
         DELETE FROM %1$I t WHERE true %3$s AND NOT EXISTS (
             SELECT FROM %4$s d WHERE %5$s AND ROW(d.*) IS NOT DISTINCT FROM ROW(t.*))',
        p_view, model.definition, table_scope, fresh, same_key)
        USING p_companies;
    GET DIAGNOSTICS removed = ROW_COUNT;
    EXECUTE format(
        'WITH fresh AS MATERIALIZED (SELECT * FROM %2$I d WHERE d.company_id = ANY ($1))
         INSERT INTO %1$I SELECT d.* FROM %3$s d WHERE NOT EXISTS (SELECT FROM %1$I t WHERE %4$s)',
        p_view, model.definition, fresh, same_key)
        USING p_companies;
    GET DIAGNOSTICS added = ROW_COUNT;
END
$$;

-- One round of incremental maintenance, in the caller's transaction: every table-backed read model
-- recomputes the rows of the companies changed by transactions that its last snapshot does not see
-- (or, for the models in p_rebuild, when the change record cannot say which companies, or when more
-- than p_rebuild_share of all companies changed, diffs its whole definition), all in this one
-- transaction, and logs
-- this transaction's snapshot for each. Changes this snapshot cannot see (transactions still running)
-- stay in the change record for the next round. Returns one log row per table-backed read model, or
-- none when there was nothing to do.
--
-- One process at a time: the caller holds `LOCK TABLE read_model_catalog IN SHARE ROW EXCLUSIVE MODE`.
-- In REPEATABLE READ (the applier) the lock must come before the transaction's snapshot (LOCK takes
-- none; a SELECT would), so the snapshot sees every earlier round; then every model reflects exactly
-- that snapshot, and all agree. In READ COMMITTED (refresh_materialized_views()) each statement sees a
-- newer snapshot than the one logged, which only makes data newer than its log says: the changes
-- behind it are not visible in the logged snapshot, so the next round recomputes them anyway.
CREATE OR REPLACE FUNCTION maintain_incremental_read_models(
    p_trigger TEXT, p_rebuild TEXT[] DEFAULT '{}', p_rebuild_share DOUBLE PRECISION DEFAULT 1)
RETURNS SETOF materialized_view_log
LANGUAGE plpgsql AS $$
DECLARE
    models TEXT[];
    snapshot_time TIMESTAMPTZ;
    snapshot_xids pg_snapshot;
    pending BIGINT;
    unknown BOOLEAN;
    never_synced BOOLEAN;
    companies TEXT[];
    rebuild_all BOOLEAN;
    all_companies DOUBLE PRECISION;
    v TEXT;
    how TEXT;
    removed BIGINT;
    added BIGINT;
    rows BIGINT;
BEGIN
    -- The snapshot's time, never later than the snapshot: in REPEATABLE READ the transaction began
    -- before its snapshot was taken; in READ COMMITTED the next statement takes a newer one.
    IF current_setting('transaction_isolation') = 'read committed' THEN
        snapshot_time := clock_timestamp();
    ELSE
        snapshot_time := transaction_timestamp();
    END IF;
    SELECT pg_current_snapshot() INTO snapshot_xids;

    SELECT array_agg(name ORDER BY position) INTO models FROM read_models WHERE mode = 'incremental';
    IF models IS NULL THEN
        RETURN;
    END IF;

    WITH seen AS MATERIALIZED (
        SELECT snapshot FROM last_successful_refreshes()
        WHERE view_name = ANY (models) AND snapshot IS NOT NULL
    ), unseen AS (
        SELECT c.company_ids FROM base_table_changes c
        WHERE EXISTS (SELECT 1 FROM seen s WHERE NOT pg_visible_in_snapshot(c.xid, s.snapshot))
    )
    SELECT (SELECT count(*) FROM unseen),
           (SELECT COALESCE(bool_or(company_ids IS NULL), false) FROM unseen),
           (SELECT COALESCE(array_agg(DISTINCT id), '{}') FROM unseen, unnest(company_ids) id)
    INTO pending, unknown, companies;
    SELECT EXISTS (SELECT 1 FROM last_successful_refreshes()
                   WHERE view_name = ANY (models) AND snapshot IS NULL)
    INTO never_synced;

    IF pending = 0 AND NOT never_synced AND cardinality(p_rebuild) = 0 THEN
        RETURN;
    END IF;
    -- Past this share of all companies, diffing the whole definitions costs less than recomputing
    -- company by company (measured: bench/README.md). The planner's estimate of the company count is
    -- enough here; a table never analyzed has none, and is counted.
    SELECT reltuples INTO all_companies FROM pg_class WHERE oid = '"Company"'::regclass;
    IF all_companies < 0 THEN
        SELECT count(*) INTO all_companies FROM "Company";
    END IF;
    rebuild_all := unknown OR never_synced
        OR cardinality(companies) > p_rebuild_share * GREATEST(all_companies, 1);

    FOREACH v IN ARRAY models LOOP
        IF rebuild_all OR v = ANY (p_rebuild) THEN
            how := 'rebuild';
            SELECT s.removed, s.added INTO removed, added FROM sync_read_model(v, NULL) s;
            EXECUTE format('SELECT count(*) FROM %I', v) INTO rows;
        ELSE
            how := 'apply';
            SELECT s.removed, s.added INTO removed, added FROM sync_read_model(v, companies) s;
            SELECT l.row_count + added - removed INTO rows FROM last_successful_refreshes() l WHERE l.view_name = v;
        END IF;
        RETURN QUERY
            INSERT INTO materialized_view_log (view_name, trigger, status, method, started_at, finished_at,
                                               row_count, snapshot, companies_changed, rows_changed)
            VALUES (v, p_trigger, 'ok', how, snapshot_time, clock_timestamp(), rows, snapshot_xids,
                    CASE how WHEN 'apply' THEN cardinality(companies) END, removed + added)
            RETURNING *;
    END LOOP;
    PERFORM prune_base_table_changes();
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Converting between the modes.
-- ---------------------------------------------------------------------------------------------------

-- Relations are built here, beside the ones readers use, and moved into place when complete.
CREATE SCHEMA IF NOT EXISTS prospect_api_staging;

-- A relation's columns with their types, in order.
CREATE OR REPLACE FUNCTION relation_columns(p_relation REGCLASS) RETURNS TEXT[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(format('%I %s', attname, format_type(atttypid, atttypmod)) ORDER BY attnum)
    FROM pg_attribute WHERE attrelid = p_relation AND attnum > 0 AND NOT attisdropped
$$;

-- Whether a read model is already what p_mode asks for and built from its definition: a materialized
-- view selecting from the definition view (those of 0002 hold their own copy of the SELECT), or a
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

-- Converts one read model to p_mode ('refresh': a materialized view; 'incremental': a table), or
-- rebuilds it from its definition when it is not built from it; does nothing when it is current.
-- The new relation is built in prospect_api_staging from the definition, with the same indexes (copied
-- from the relation in place, so they are declared once, in the migrations) and grants, and analyzed,
-- while readers keep using the old one. Only the swap (drop the old relation, move the new one into
-- its schema) locks readers out: it waits at most p_swap_lock_timeout for their locks, tries again up
-- to p_swap_attempts times, and takes milliseconds once it has the lock.
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
    target REGCLASS;
    home NAME;
    owner NAME;
    with_data BOOLEAN;
    snapshot_time TIMESTAMPTZ;
    snapshot_xids pg_snapshot;
    build_started TIMESTAMPTZ;
    swap_started TIMESTAMPTZ;
    index RECORD;
    grant_row RECORD;
    kind TEXT;
    old_kind TEXT;
    rows BIGINT;
    attempts INT := 0;
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
    SELECT * INTO model FROM read_models WHERE name = p_view;
    target := to_regclass(p_view);
    SELECT n.nspname, pg_get_userbyid(c.relowner) INTO home, owner
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = target;
    with_data := p_mode = 'incremental' OR model.populated;
    kind := CASE p_mode WHEN 'refresh' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END;
    old_kind := CASE model.mode WHEN 'refresh' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END;

    build_started := clock_timestamp();
    snapshot_time := clock_timestamp();
    snapshot_xids := pg_current_snapshot();
    IF p_mode = 'incremental' THEN
        EXECUTE format('CREATE TABLE prospect_api_staging.%I AS SELECT * FROM %I', p_view, model.definition);
    ELSE
        EXECUTE format('CREATE MATERIALIZED VIEW prospect_api_staging.%I AS SELECT * FROM %I WITH %s',
                       p_view, model.definition, CASE WHEN with_data THEN 'DATA' ELSE 'NO DATA' END);
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
        EXECUTE format('ALTER %s prospect_api_staging.%I OWNER TO %I', kind, p_view, owner);
    END IF;
    IF with_data THEN
        EXECUTE format('ANALYZE prospect_api_staging.%I', p_view);
        EXECUTE format('SELECT count(*) FROM prospect_api_staging.%I', p_view) INTO rows;
    END IF;

    -- The swap. Readers queue behind a waiting ACCESS EXCLUSIVE request, so each wait is kept short and
    -- retried rather than long.
    PERFORM set_config('lock_timeout', p_swap_lock_timeout, true);
    LOOP
        attempts := attempts + 1;
        swap_started := clock_timestamp();
        BEGIN
            -- DROP takes the ACCESS EXCLUSIVE lock (LOCK TABLE refuses materialized views).
            EXECUTE format('DROP %s %I.%I', old_kind, home, p_view);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            IF attempts >= p_swap_attempts THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(0.1);
        END;
    END LOOP;
    EXECUTE format('ALTER %s prospect_api_staging.%I SET SCHEMA %I', kind, p_view, home);
    IF with_data THEN
        INSERT INTO materialized_view_log (view_name, trigger, status, method, started_at, finished_at, row_count, snapshot)
        VALUES (p_view, 'migrate', 'ok', 'build', snapshot_time, clock_timestamp(), rows, snapshot_xids)
        RETURNING id INTO logged;
    END IF;
    RETURN QUERY SELECT p_view, model.mode, p_mode, rows,
        (extract(epoch FROM swap_started - build_started) * 1000)::bigint,
        (extract(epoch FROM clock_timestamp() - swap_started) * 1000)::bigint,
        attempts, logged;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- The refresh paths of 0003, aware of the modes.
-- ---------------------------------------------------------------------------------------------------

-- As in 0003 (the caller owns the transaction, its timeouts and the advisory lock), for a read model
-- that is a materialized view; the log says how it was done.
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
    PERFORM prune_base_table_changes();
END
$$;

-- For DBAs and pg_cron, in both modes: each materialized view is refreshed as in 0003, then every
-- table-backed read model is rebuilt (diffed against its definition) in one block; a failure is logged
-- and recorded in materialized_view_errors and the rest still runs. It runs as ONE transaction (see
-- 0003 for what that means for locks) and must run in READ COMMITTED, the default.
CREATE OR REPLACE FUNCTION refresh_materialized_views(p_trigger TEXT DEFAULT 'sql')
RETURNS SETOF materialized_view_log
LANGUAGE plpgsql AS $$
DECLARE
    model read_models;
    attempt_started TIMESTAMPTZ;
    incremental TEXT[];
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
            RETURN QUERY SELECT * FROM maintain_incremental_read_models(p_trigger, incremental);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            FOR i IN 1 .. cardinality(incremental) LOOP
                RETURN QUERY SELECT * FROM record_refresh_failure(incremental[i], p_trigger, attempt_started, message);
            END LOOP;
        END;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------------
-- Retention: the log and the error record would otherwise grow forever (a row per refresh, and now up
-- to four applies a second). The refresher calls this (REFRESH_LOG_RETENTION).
-- ---------------------------------------------------------------------------------------------------

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
