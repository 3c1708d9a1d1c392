-- Reads that see their own writes (#24): a request with `Prefer: min-freshness=now` notes the
-- primary's snapshot when it arrives (every transaction committed before it is visible in it) and
-- waits until the read model it reads covers that snapshot.

-- 'read': a refresh a read asked for, to see the writes committed before it arrived.
ALTER TABLE materialized_view_log DROP CONSTRAINT IF EXISTS materialized_view_log_trigger_check;
ALTER TABLE materialized_view_log ADD CONSTRAINT materialized_view_log_trigger_check
    CHECK (trigger IN ('schedule', 'notify', 'poll', 'manual', 'startup', 'cli', 'catchup', 'sql',
                       'incremental', 'migrate', 'read'));

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
