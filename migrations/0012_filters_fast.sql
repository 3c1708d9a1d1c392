-- Every filter fast (bench/filter_plans.py).
--
-- /prospects: the planner must know how many rows a filter keeps, or it walks an
-- order index past rows the filter throws away (ORDER BY ... LIMIT with a wrong estimate: 3.6 s for
-- `email=` at 1M, bench/filter_plans.py).
--
-- ANALYZE keeps statistics of an index's expressions only for indexes without a WHERE clause, so
-- these two lose theirs (the rows without a prospect they now hold are a company's only row, a few
-- per thousand):
--   - lower(email): the estimate of `email=` goes from 0.5% of the rows (the default) to 1 row;
--   - the revenue order's COALESCE(revenue, ...): `revenue_min` and `revenue_max` are written on
--     that expression (src/views/company_prospects.rs), so the same index bounds them in every
--     order and its statistics estimate them.
-- /search: search_prospects() walks rows in key order (a one- or two-letter prefix, a dense tier)
-- checking each; with a rare filter the walk went a long way for few rows (q=ca and a rare industry:
-- 309 ms at 1M). The walk now goes over the rows that pass the filters, which an index per filter
-- gives in key order, and a tier read through the GIN index ANDs it with the filter's index.
--
-- Both modes: each view's relation is a materialized view or a table, its indexes the same; the
-- staging copies of a rebuild take the relation's indexes as they are.

DROP INDEX company_prospect_view_email;
CREATE INDEX company_prospect_view_email ON company_prospect_view (lower(email));

DROP INDEX company_prospect_view_revenue_order;
CREATE INDEX company_prospect_view_revenue_order
    ON company_prospect_view (COALESCE(revenue, '-9223372036854775808'::bigint), prospect_id);

DO $$
BEGIN
    IF (SELECT m.mode = 'incremental' OR m.populated FROM read_models m WHERE m.name = 'company_prospect_view') THEN
        ANALYZE company_prospect_view;
    END IF;
END
$$;

CREATE INDEX prospect_search_view_industry ON prospect_search_view (industry, prospect_id);
CREATE INDEX prospect_search_view_company_country ON prospect_search_view (company_country, prospect_id);
CREATE INDEX prospect_search_view_department ON prospect_search_view (department, prospect_id);

DO $$
BEGIN
    IF (SELECT m.mode = 'incremental' OR m.populated FROM read_models m WHERE m.name = 'prospect_search_view') THEN
        ANALYZE prospect_search_view;
    END IF;
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
                        EXECUTE 'SELECT array_agg(v.prospect_id) FROM (SELECT v.prospect_id'
                                || replace(tier_rows, 'WHERE v.search_vector @@ $1', 'WHERE (v.search_vector @@ $1) IS TRUE')
                                || ' ORDER BY v.prospect_id LIMIT $7) v'
                            INTO ids
                            USING plan.tier_queries[k], covered, p_industry, p_country, p_department, after, remaining;
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

-- Incremental rounds never overlap in the log: a round that began (BEGIN) just before the last one
-- committed and took the lock just after logged a start before that one's end (seen as a flaky
-- incremental::two_instances_... test). It now starts, as logged, no earlier than the last round's
-- end, which is still before its snapshot.
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
    -- A round that began just before the last one committed, and took the lock just after, would
    -- log a start before the last one's end: it starts, as logged, no earlier than that end, which
    -- is still before its snapshot (the last round committed before this one's lock).
    SELECT GREATEST(snapshot_time, max(l.finished_at)) INTO snapshot_time
    FROM last_successful_refreshes() s JOIN materialized_view_log l ON l.id = s.log_id
    WHERE s.view_name = ANY (models);

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
        PERFORM read_model_synced(v, CASE how WHEN 'apply' THEN companies END);
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
