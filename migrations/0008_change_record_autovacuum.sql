-- base_table_changes is a queue: every write appends rows and every refresh or round deletes the rows
-- all views have seen, so it is mostly dead rows between vacuums, and every poll and round scans it.
-- Autovacuum's defaults wait for dead rows to reach 20% of the table's (often stale, after a bulk
-- write huge) row estimate, and throttle the vacuum. Vacuum it after every 1,000 dead rows, unthrottled:
-- the table is small whenever it is vacuumed in time. (The refresher also vacuums it every minute,
-- because autovacuum may be busy with the base tables after a bulk write; see src/refresh/scheduler.rs.)
ALTER TABLE base_table_changes SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
