-- Tidying the definitions of 0003-0008 (schema/current.sql holds every current definition whole).
--
-- Dead functions: refreshable_views() (the catalog's order, since 0006; no caller since 0007) and
-- last_refresh_snapshots() (what prune_base_table_changes() read; it now reads
-- last_successful_refreshes() as every other reader of the log does).
--
-- convert_read_model() of 0007 was one 120-line function; it is now the same steps, each its own
-- function: stage_read_model() builds the new relation beside the old one, swap_read_model() puts
-- it in place. Behaviour is unchanged.

CREATE OR REPLACE FUNCTION prune_base_table_changes() RETURNS VOID
LANGUAGE sql AS $$
    WITH seen AS MATERIALIZED (SELECT snapshot FROM last_successful_refreshes())
    DELETE FROM base_table_changes c
    WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.snapshot IS NULL OR NOT pg_visible_in_snapshot(c.xid, s.snapshot))
$$;

DROP FUNCTION IF EXISTS last_refresh_snapshots();
DROP FUNCTION IF EXISTS refreshable_views();

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

-- As in 0007: converts one read model to p_mode, or rebuilds it from its definition when it is not
-- built from it; does nothing when it is current. The new relation is built beside the old one,
-- which keeps serving (stage_read_model), and then swapped in (swap_read_model).
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
    SELECT * INTO model FROM read_models WHERE name = p_view;
    with_data := p_mode = 'incremental' OR model.populated;

    build_started := clock_timestamp();
    snapshot_time := clock_timestamp();
    snapshot_xids := pg_current_snapshot();
    rows := stage_read_model(p_view, p_mode, with_data);
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
