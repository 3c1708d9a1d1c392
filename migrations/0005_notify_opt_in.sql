-- Notifications become opt-in; the refresher polls the change record by default.
--
-- Measured here (8 concurrent pgbench clients, single-row INSERTs into "Prospect", 100k rows): with
-- the triggers of 0003 the writers reached 0.39 of their throughput without triggers. Nearly all of
-- it is NOTIFY: every notifying transaction takes one cluster-wide lock at commit, so notifying writers
-- commit one at a time. Recording the change alone costs about a tenth (0.88-0.90 of trigger-less
-- throughput, within this machine's noise). So the triggers always record the change, and notify
-- only when the database-level setting prospect_api.notify is 'on' (`prospect-api serve` sets it from
-- REFRESH_NOTIFY; sessions that are already open keep the value they started with).

CREATE OR REPLACE FUNCTION record_base_table_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    flag TEXT := 'prospect_api.changed_' || lower(TG_TABLE_NAME);
BEGIN
    IF current_setting(flag, true) IS DISTINCT FROM 'yes' THEN
        INSERT INTO base_table_changes (table_name) VALUES (TG_TABLE_NAME);
        PERFORM set_config(flag, 'yes', true);
    END IF;
    IF current_setting('prospect_api.notify', true) = 'on' THEN
        PERFORM pg_notify('refresh_views', json_build_object('table', TG_TABLE_NAME, 'operation', TG_OP)::text);
    END IF;
    RETURN NULL;
END
$$;

-- Turns the triggers' notifications on or off for new sessions of this database.
CREATE OR REPLACE FUNCTION set_change_notifications(enabled BOOLEAN) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET prospect_api.notify = %L',
                   current_database(), CASE WHEN enabled THEN 'on' ELSE 'off' END);
END
$$;

-- Refreshes started because polling found changes are logged as 'poll'.
ALTER TABLE materialized_view_log DROP CONSTRAINT IF EXISTS materialized_view_log_trigger_check;
ALTER TABLE materialized_view_log ADD CONSTRAINT materialized_view_log_trigger_check
    CHECK (trigger IN ('schedule', 'notify', 'poll', 'manual', 'startup', 'cli', 'catchup', 'sql'));
