-- Incremental mode at any size (#25), and what each round changed (#24).
--
-- A table-backed read model that only its whole definition can bring up to date (never synced, a
-- TRUNCATE since, more than the rebuild share of companies changed, or emptied behind the
-- triggers' back) is built beside the one readers use, from one snapshot, with its indexes built
-- after the load (build_read_model()); the next round brings that build up to the round's snapshot
-- and swaps it in under a short lock (catch_up_staged_build(), swap_read_model()). Meanwhile
-- readers keep what they had, and the other read models keep being applied to.
--
-- A repair compares the tables with their definitions one range of companies at a time, without the
-- maintenance lock, and recomputes in a round only the companies found different, so that applies
-- go on throughout.
--
-- Every apply and repair records the rows it deleted and inserted (read_model_changes), from which
-- each instance's response cache tells which cached responses a round could have changed.

-- A repair's last round is logged as 'repair'.
ALTER TABLE materialized_view_log DROP CONSTRAINT materialized_view_log_method_check;
ALTER TABLE materialized_view_log ADD CONSTRAINT materialized_view_log_method_check
    CHECK (method IN ('refresh', 'apply', 'rebuild', 'build', 'repair'));

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
CREATE FUNCTION prune_read_model_changes(p_keep INTERVAL) RETURNS BIGINT
LANGUAGE sql AS $$
    WITH pruned AS (DELETE FROM read_model_changes WHERE recorded_at < clock_timestamp() - p_keep RETURNING 1)
    SELECT count(*) FROM pruned
$$;

-- The changes that a read model whose data reflects p_snapshot has not seen: the companies they
-- touched, and whether one of them cannot say (a TRUNCATE; also every change, for a model never
-- synced, whose snapshot is NULL).
CREATE FUNCTION pending_companies(p_snapshot pg_snapshot, OUT unknown BOOLEAN, OUT companies TEXT[])
LANGUAGE sql STABLE AS $$
    WITH unseen AS MATERIALIZED (
        SELECT c.company_ids FROM base_table_changes c
        WHERE p_snapshot IS NOT NULL AND NOT pg_visible_in_snapshot(c.xid, p_snapshot)
    )
    SELECT p_snapshot IS NULL OR COALESCE((SELECT bool_or(u.company_ids IS NULL) FROM unseen u), false),
           (SELECT COALESCE(array_agg(DISTINCT id), '{}') FROM unseen u, unnest(u.company_ids) id)
$$;

-- The planner's estimate of the companies (counted when the table was never analyzed).
CREATE FUNCTION company_estimate() RETURNS DOUBLE PRECISION
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
CREATE FUNCTION read_models_to_build(p_rebuild_share DOUBLE PRECISION, p_asked TEXT[] DEFAULT '{}',
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

-- Makes a table-backed read model (or p_relation, a table of its shape) equal to its definition
-- for the given companies (NULL: every company), writing only rows that differ, as REFRESH ...
-- CONCURRENTLY does for a whole view: the rows whose exact image the definition no longer has are
-- deleted, then the definition's rows the table does not hold exactly are inserted. Readers are
-- never blocked. Returns how many rows of each, the companies of the inserted rows, and the rows
-- deleted and inserted as JSON arrays (NULL, all three, when it compared every company).
DROP FUNCTION sync_read_model(TEXT, TEXT[]);
CREATE FUNCTION sync_read_model(p_view TEXT, p_companies TEXT[], p_relation REGCLASS DEFAULT NULL,
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

-- Adds the words of the given companies' rows (NULL: every row) of p_relation (the search view, or
-- a table or materialized view of its shape) to the vocabulary. (A regclass default naming the view
-- would make the function depend on it, and the view could not be swapped.)
DROP FUNCTION add_search_vocabulary(TEXT[]);
CREATE FUNCTION add_search_vocabulary(p_companies TEXT[], p_relation REGCLASS)
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
DROP FUNCTION read_model_synced(TEXT, TEXT[]);
CREATE FUNCTION read_model_synced(p_view TEXT, p_companies TEXT[], p_relation REGCLASS DEFAULT NULL)
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF p_view = 'prospect_search_view' AND COALESCE(p_relation, to_regclass(p_view)) IS NOT NULL THEN
        PERFORM add_search_vocabulary(p_companies, COALESCE(p_relation, to_regclass(p_view)));
    END IF;
END
$$;

-- Drops a build of p_view waiting to be swapped in (a conversion replaces the model anyway; a
-- build whose catch-up cannot be computed is built again).
CREATE FUNCTION discard_staged_build(p_view TEXT) RETURNS VOID
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
CREATE FUNCTION build_read_model(p_view TEXT) RETURNS BIGINT
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
CREATE FUNCTION catch_up_staged_build(p_view TEXT, OUT companies TEXT[], OUT rows_changed BIGINT,
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

-- The companies with ids in (p_after, p_upto] (a NULL bound is open) whose rows in each of the
-- table-backed read models p_views differ from its definition, in this statement's snapshot: what a
-- repair compares, a range at a time, without the maintenance lock (so applies go on meanwhile),
-- before a round recomputes only those companies. A company changed by a write not yet applied
-- differs too: recomputing it changes nothing the next apply would not.
CREATE FUNCTION read_model_differences(p_views TEXT[], p_after TEXT, p_upto TEXT)
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
DROP FUNCTION maintain_incremental_read_models(TEXT, TEXT[], DOUBLE PRECISION);
CREATE FUNCTION maintain_incremental_read_models(
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

-- As before, for DBAs and pg_cron: each materialized view is refreshed, then every table-backed read
-- model is rebuilt (diffed against its definition) in one block, except one being built beside.
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

-- As in 0009, and: a build of the model waiting to be swapped in is dropped (the conversion builds
-- it anew), and the search words of the new relation are added before the swap rather than after
-- it, so that readers wait only for the swap (adding them after it made readers wait 6 s at 1M).
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
