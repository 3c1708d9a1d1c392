-- Refresh bookkeeping: the log every freshness header is read from, the error record, the change
-- record that lets a refresher catch up on writes it was not notified of, and the triggers.

-- The views, in the one order every refresh path uses (different orders could deadlock).
CREATE OR REPLACE FUNCTION refreshable_views() RETURNS TEXT[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['company_prospect_view', 'company_summary_view', 'prospect_search_view']
$$;

-- One row per refresh attempt of one view.
CREATE TABLE IF NOT EXISTS materialized_view_log (
    id            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    view_name     TEXT        NOT NULL,
    -- What asked for it: the app's scheduler, a NOTIFY, an admin, startup population, the CLI,
    -- a catch-up after missed notifications, or refresh_materialized_views() called from SQL.
    trigger       TEXT        NOT NULL
        CHECK (trigger IN ('schedule', 'notify', 'manual', 'startup', 'cli', 'catchup', 'sql')),
    status        TEXT        NOT NULL CHECK (status IN ('ok', 'error')),
    -- For 'ok': the snapshot time the data reflects (taken just before the REFRESH statement began, so
    -- it never claims data fresher than it is). For 'error': when the attempt began.
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ NOT NULL,
    duration_ms   BIGINT      GENERATED ALWAYS AS
        ((extract(epoch FROM (finished_at - started_at)) * 1000)::bigint) STORED,
    row_count     BIGINT,
    error_message TEXT,
    -- Which transactions the refreshed data can see (taken with started_at, so again a lower bound).
    -- Compared with base_table_changes to tell whether the base tables changed since.
    snapshot      pg_snapshot,
    CHECK ((status = 'ok') = (error_message IS NULL))
);
-- "Last successful refresh of view X": read on every API request.
CREATE INDEX IF NOT EXISTS materialized_view_log_last_ok
    ON materialized_view_log (view_name, started_at DESC) WHERE status = 'ok';
CREATE INDEX IF NOT EXISTS materialized_view_log_recent
    ON materialized_view_log (started_at DESC);

CREATE TABLE IF NOT EXISTS materialized_view_errors (
    id            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    view_name     TEXT        NOT NULL,
    error_message TEXT        NOT NULL,
    occurred_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS materialized_view_errors_recent
    ON materialized_view_errors (view_name, occurred_at DESC);

-- The change record. One row per writing transaction and table, append-only: concurrent writers insert
-- separate rows instead of updating one hot counter row, so they never wait for each other here.
-- A change is "newer than a refresh" when its transaction is not visible in the refresh's snapshot,
-- which is exact even for transactions that began before the refresh and committed after it.
-- Rows every view has already seen are pruned after each successful refresh.
CREATE TABLE IF NOT EXISTS base_table_changes (
    xid        XID8        NOT NULL DEFAULT pg_current_xact_id(),
    table_name TEXT        NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Statement-level trigger on both base tables: runs once per statement, not per row, because it runs
-- inside the writing app's transactions. It records the change once per transaction and table (a
-- transaction-local setting remembers it did) and notifies listeners. PostgreSQL folds identical
-- notifications of one transaction into one.
CREATE OR REPLACE FUNCTION record_base_table_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    flag TEXT := 'prospect_api.changed_' || lower(TG_TABLE_NAME);
BEGIN
    IF current_setting(flag, true) IS DISTINCT FROM 'yes' THEN
        INSERT INTO base_table_changes (table_name) VALUES (TG_TABLE_NAME);
        PERFORM set_config(flag, 'yes', true);
    END IF;
    PERFORM pg_notify('refresh_views', json_build_object('table', TG_TABLE_NAME, 'operation', TG_OP)::text);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER company_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "Company"
    FOR EACH STATEMENT EXECUTE FUNCTION record_base_table_change();
CREATE OR REPLACE TRIGGER prospect_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "Prospect"
    FOR EACH STATEMENT EXECUTE FUNCTION record_base_table_change();

-- The advisory lock key that makes one process at a time refresh a given view. Every refresh path
-- takes it inside the refresh's own transaction (pg_*_advisory_xact_lock), so it is released at
-- commit or rollback and can never be left behind on a pooled connection.
CREATE OR REPLACE FUNCTION view_refresh_lock_key(view_name TEXT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE AS $$
    SELECT ('x' || left(md5('prospect_api.refresh:' || view_name), 16))::bit(64)::bigint
$$;

-- Refreshes one view and logs it, in the caller's transaction: CONCURRENTLY when the view is populated
-- (readers are not blocked), plainly when it is not (CONCURRENTLY refuses an unpopulated view).
-- The caller owns the transaction, its timeouts and the advisory lock.
CREATE OR REPLACE FUNCTION refresh_view_logged(p_view TEXT, p_trigger TEXT)
RETURNS SETOF materialized_view_log
LANGUAGE plpgsql AS $$
DECLARE
    populated BOOLEAN;
    snapshot_time TIMESTAMPTZ;
    snapshot_xids pg_snapshot;
    rows BIGINT;
BEGIN
    IF NOT p_view = ANY (refreshable_views()) THEN
        RAISE EXCEPTION 'unknown materialized view: %', p_view USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT relispopulated INTO populated FROM pg_class WHERE oid = p_view::regclass;
    snapshot_time := clock_timestamp();
    snapshot_xids := pg_current_snapshot();
    IF populated THEN
        EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I', p_view);
    ELSE
        EXECUTE format('REFRESH MATERIALIZED VIEW %I', p_view);
        -- First population: give the planner statistics now rather than whenever autovacuum comes by.
        EXECUTE format('ANALYZE %I', p_view);
    END IF;
    EXECUTE format('SELECT count(*) FROM %I', p_view) INTO rows;
    RETURN QUERY
        INSERT INTO materialized_view_log (view_name, trigger, status, started_at, finished_at, row_count, snapshot)
        VALUES (p_view, p_trigger, 'ok', snapshot_time, clock_timestamp(), rows, snapshot_xids)
        RETURNING *;
    PERFORM prune_base_table_changes();
END
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

-- The snapshot of each view's last successful refresh (NULL for a view never refreshed).
CREATE OR REPLACE FUNCTION last_refresh_snapshots()
RETURNS TABLE (view_name TEXT, snapshot pg_snapshot)
LANGUAGE sql STABLE AS $$
    SELECT v, (SELECT l.snapshot FROM materialized_view_log l
               WHERE l.view_name = v AND l.status = 'ok'
               ORDER BY l.started_at DESC LIMIT 1)
    FROM unnest(refreshable_views()) AS v
$$;

-- Views whose base data changed since their last successful refresh, or that were never refreshed.
CREATE OR REPLACE FUNCTION views_needing_refresh() RETURNS SETOF TEXT
LANGUAGE sql STABLE AS $$
    SELECT s.view_name FROM last_refresh_snapshots() s
    WHERE s.snapshot IS NULL
       OR EXISTS (SELECT 1 FROM base_table_changes c WHERE NOT pg_visible_in_snapshot(c.xid, s.snapshot))
$$;

-- Forgets changes that every view's last refresh already includes.
CREATE OR REPLACE FUNCTION prune_base_table_changes() RETURNS VOID
LANGUAGE sql AS $$
    DELETE FROM base_table_changes c
    WHERE NOT EXISTS (
        SELECT 1 FROM last_refresh_snapshots() s
        WHERE s.snapshot IS NULL OR NOT pg_visible_in_snapshot(c.xid, s.snapshot)
    )
$$;

-- For DBAs and pg_cron: `SELECT * FROM refresh_materialized_views();` refreshes all three views in the
-- fixed order, each in its own error-catching block: a failure is logged and recorded in
-- materialized_view_errors, and the next view is still refreshed.
--
-- Caution: a function runs as ONE transaction, so each view's refresh lock (and advisory lock) is held
-- until the whole function returns, and nothing it did is visible to others before that. The
-- application instead refreshes each view in its own short transaction (src/refresh/), which is the
-- path to prefer; this function waits for a refresh the application is running rather than skipping.
CREATE OR REPLACE FUNCTION refresh_materialized_views(p_trigger TEXT DEFAULT 'sql')
RETURNS SETOF materialized_view_log
LANGUAGE plpgsql AS $$
DECLARE
    v TEXT;
    attempt_started TIMESTAMPTZ;
    message TEXT;
BEGIN
    FOREACH v IN ARRAY refreshable_views() LOOP
        attempt_started := clock_timestamp();
        BEGIN
            PERFORM pg_advisory_xact_lock(view_refresh_lock_key(v));
            RETURN QUERY SELECT * FROM refresh_view_logged(v, p_trigger);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            RETURN QUERY SELECT * FROM record_refresh_failure(v, p_trigger, attempt_started, message);
        END;
    END LOOP;
END
$$;
