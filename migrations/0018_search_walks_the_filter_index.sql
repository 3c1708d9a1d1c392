-- search_prospects(): with a filter, the dense walk goes along the filter's index, which holds its
-- rows in key order, rather than the key index, which passes over every row the filter drops
-- (q=smith in one department at 1M: 65 ms, now 40; bench/filter_plans.py). The planner is given
-- random_page_cost 1.1 for that one statement: the filter's rows are scattered in the heap, but
-- the pages it reads are cached. The function whole, as schema/current.sql has it.
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
