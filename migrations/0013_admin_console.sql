-- What the admin console charts: the refresh log's last hours in equal buckets per read model.

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
