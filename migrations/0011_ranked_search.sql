-- Ranked search (GET /search): whole words, the last term as a prefix, typos, accents folded, name
-- fields above company fields above job title and industry, exact above prefix above typo.
--
-- prospect_search_view gets `search_vector`: its words (search_words(): lower case, accents folded by
-- unaccent, split at everything but letters and digits), each prefixed with its field's letter: n
-- for the prospect's name, c for the company's name, t for the job title and the industry, and e
-- before the whole email in lower case ('ncarter', 'cvandelay', 'tsoftware', 'ewei@x.example'). A
-- GIN index answers every term of every field from its own posting list, and the planner's
-- statistics know each field's words apart (tsvector weights would share one list per word). Its
-- substring column `search_text` and the trigram index over it go. The words typos are corrected
-- to come from `search_vocabulary`, which follows the view in both modes (read_model_synced()).
-- search_prospects() ranks; search_plan() says what a query matches, for it and for counts.

CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;

-- The words of a text as search compares them. STABLE, as unaccent() is (its rules file could
-- change): it is used to compute stored columns and query terms, never in an index expression.
CREATE OR REPLACE FUNCTION search_words(p_text TEXT) RETURNS TEXT[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT COALESCE(array_agg(w ORDER BY n) FILTER (WHERE w <> ''), '{}')
    FROM regexp_split_to_table(lower(unaccent(COALESCE(p_text, ''))), '[^[:alnum:]]+') WITH ORDINALITY AS t(w, n)
$$;

-- A text as one quoted lexeme of tsvector or tsquery input: taken as it is, never parsed into words.
CREATE OR REPLACE FUNCTION lexeme_literal(p_text TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '''' || replace(replace(p_text, '\', '\\'), '''', '''''') || ''''
$$;

-- The words as lexemes of one field: each prefixed with the field's letter.
CREATE OR REPLACE FUNCTION search_lexemes(p_words TEXT[], p_field TEXT) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_to_tsvector(ARRAY(SELECT p_field || w FROM unnest(p_words) w))
$$;

-- The read model's new definition: search_text is replaced by search_vector. Its relation is built
-- anew below (a view's columns cannot be dropped while a relation selects from it).
DO $$
DECLARE
    mode TEXT;
    populated BOOLEAN;
BEGIN
    SELECT m.mode, m.populated INTO mode, populated FROM read_models m WHERE m.name = 'prospect_search_view';
    IF mode = 'refresh' THEN
        DROP MATERIALIZED VIEW prospect_search_view;
    ELSIF mode = 'incremental' THEN
        DROP TABLE prospect_search_view;
    END IF;
    DROP VIEW prospect_search_view_definition;
    CREATE VIEW prospect_search_view_definition AS
    SELECT
        p."id"              AS prospect_id,
        p."email"           AS email,
        p."firstName"       AS first_name,
        p."lastName"        AS last_name,
        full_name(p."firstName", p."lastName") AS full_name,
        p."jobTitle"        AS job_title,
        p."jobTitleLevel"   AS job_title_level,
        p."department"      AS department,
        p."city"            AS prospect_city,
        p."country"         AS prospect_country,
        c."id"              AS company_id,
        c."domain"          AS domain,
        c."name"            AS company_name,
        c."industry"        AS industry,
        c."revenue"         AS revenue,
        c."city"            AS company_city,
        c."country"         AS company_country,
        search_lexemes(search_words(concat_ws(' ', p."firstName", p."lastName")), 'n')
            || search_lexemes(search_words(c."name"), 'c')
            || search_lexemes(search_words(concat_ws(' ', p."jobTitle", c."industry")), 't')
            || search_lexemes(array_remove(ARRAY[lower(p."email")], NULL), 'e')
                            AS search_vector,
        cardinality(search_words(concat_ws(' ', p."firstName", p."lastName")))::smallint AS name_words,
        NULL::boolean       AS refresh_no_dup_check
    FROM "Prospect" p
    JOIN "Company" c ON c."id" = p."companyId";

    -- As it was (a materialized view unless converted; populated if it was), with its indexes.
    IF mode = 'incremental' THEN
        CREATE TABLE prospect_search_view AS SELECT * FROM prospect_search_view_definition;
    ELSIF populated THEN
        CREATE MATERIALIZED VIEW prospect_search_view AS SELECT * FROM prospect_search_view_definition;
    ELSE
        CREATE MATERIALIZED VIEW prospect_search_view AS SELECT * FROM prospect_search_view_definition WITH NO DATA;
    END IF;
    CREATE UNIQUE INDEX prospect_search_view_key ON prospect_search_view (prospect_id);
    CREATE INDEX prospect_search_view_search_vector ON prospect_search_view USING gin (search_vector);
    CREATE INDEX prospect_search_view_name_order
        ON prospect_search_view (COALESCE(company_name, ''), COALESCE(last_name, ''), COALESCE(first_name, ''), prospect_id);
    CREATE INDEX prospect_search_view_company ON prospect_search_view (company_id);
    IF mode = 'incremental' OR populated THEN
        ANALYZE prospect_search_view;
        -- The data is as new as this transaction: say so, as every build does.
        INSERT INTO materialized_view_log (view_name, trigger, status, method, started_at, finished_at, row_count, snapshot)
        SELECT 'prospect_search_view', 'migrate', 'ok', 'build', now(), clock_timestamp(),
               (SELECT count(*) FROM prospect_search_view), pg_current_snapshot();
    END IF;
END
$$;

-- The words of the search view that a typo may be corrected to (words of 4 letters and more: a term
-- needs 5 to have a typo allowed). It only grows: a word no row holds any more costs a correction
-- that matches nothing, never a wrong result.
CREATE TABLE search_vocabulary (
    word TEXT PRIMARY KEY
);
CREATE INDEX search_vocabulary_trigrams ON search_vocabulary USING gin (word gin_trgm_ops);

-- Adds the words of the given companies' rows (NULL: every row) to the vocabulary.
CREATE OR REPLACE FUNCTION add_search_vocabulary(p_companies TEXT[]) RETURNS VOID
LANGUAGE sql AS $$
    INSERT INTO search_vocabulary (word)
    SELECT DISTINCT substr(w, 2)
    FROM prospect_search_view v, unnest(tsvector_to_array(v.search_vector)) w
    WHERE (p_companies IS NULL OR v.company_id = ANY (p_companies)) AND left(w, 1) <> 'e' AND length(w) >= 5
    ON CONFLICT DO NOTHING
$$;

-- What follows a read model's rows besides its readers, called by every path that changes them
-- (p_companies: the companies whose rows changed; NULL: any).
CREATE OR REPLACE FUNCTION read_model_synced(p_view TEXT, p_companies TEXT[]) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF p_view = 'prospect_search_view' AND to_regclass('prospect_search_view') IS NOT NULL THEN
        PERFORM add_search_vocabulary(p_companies);
    END IF;
END
$$;

SELECT read_model_synced('prospect_search_view', NULL)
FROM read_models WHERE name = 'prospect_search_view' AND (mode = 'incremental' OR populated);

-- Every path that changes a read model's rows calls read_model_synced(): a refresh, a round of
-- incremental maintenance (with the companies it applied), a conversion between the modes.
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
    PERFORM read_model_synced(p_view, NULL);
    PERFORM prune_base_table_changes();
END
$$;

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
        PERFORM read_model_synced(p_view, NULL);
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

-- Whether b is a one adjacent transposition away from a ("garica", "garcia"): one typo to a person
-- typing, two edits to levenshtein().
CREATE OR REPLACE FUNCTION is_transposition(a TEXT, b TEXT) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT length(a) = length(b) AND a <> b AND EXISTS (
        SELECT 1 FROM generate_series(1, length(a) - 1) i
        WHERE left(a, i - 1) = left(b, i - 1)
          AND substr(a, i, 1) = substr(b, i + 1, 1) AND substr(a, i + 1, 1) = substr(b, i, 1)
          AND substr(a, i + 2) = substr(b, i + 2))
$$;

-- The typos a term may have: none under 5 letters, one from 5, two from 9; none in a term with a
-- digit (a number or a code is meant as typed: "first42" must not find "first43").
CREATE OR REPLACE FUNCTION search_typo_budget(p_term TEXT) RETURNS INT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_term ~ '[0-9]' THEN 0
                WHEN length(p_term) >= 9 THEN 2 WHEN length(p_term) >= 5 THEN 1 ELSE 0 END
$$;

-- The vocabulary's words within the term's typo budget, with their distance (a transposition
-- counts one), nearest first, at most 16. The trigram index finds the candidates.
CREATE OR REPLACE FUNCTION search_corrections(p_term TEXT)
RETURNS TABLE (word TEXT, typos INT)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    budget INT := search_typo_budget(p_term);
BEGIN
    IF budget = 0 THEN
        RETURN;
    END IF;
    PERFORM set_config('pg_trgm.similarity_threshold', '0.2', true);
    RETURN QUERY
        SELECT c.word, c.typos FROM (
            SELECT v.word, CASE WHEN is_transposition(p_term, v.word) THEN 1
                                ELSE levenshtein_less_equal(p_term, v.word, budget) END AS typos
            FROM search_vocabulary v
            WHERE v.word % p_term AND v.word <> p_term
        ) c
        WHERE c.typos <= budget
        ORDER BY c.typos, c.word
        LIMIT 16;
END
$$;

-- What a query matches and how each match scores. A row matches when every term matches one of the
-- fields the caller may see (p_hidden names those it may not: first_name, last_name, company_name,
-- job_title, industry, email); a term with '@' matches the email (the whole address, or its start
-- when it is the last term and p_prefix_last), any other term a word of the name (n), of the
-- company's name (c) or of the job title or industry (t): the whole word, its start when it is the
-- last term and p_prefix_last, or a correction within its typo budget.
--
-- A match scores 1000 - 100 × typos + 10 × field (name 3, company 2, title and industry 1, email 4)
-- + 2 when whole; a row scores the sum, over the terms, of each term's best match, + 1 when its
-- name has no word besides those the terms matched (exactness: "joao garcia" puts João Garcia
-- before João Pedro Garcia; search_prospects() adds it). `tier_*` list each
-- term's matches best first (term, tsquery, score), `everything` is what a row must match, `narrow`
-- the part of it the index should answer (a short last prefix matches too many words to look up:
-- it is only checked); `impossible` is set when a term can match no field the caller may see.
CREATE OR REPLACE FUNCTION search_plan(p_q TEXT, p_hidden TEXT[], p_prefix_last BOOLEAN,
    OUT terms TEXT[], OUT tier_terms INT[], OUT tier_queries tsquery[], OUT tier_scores INT[],
    OUT everything tsquery, OUT narrow tsquery, OUT impossible BOOLEAN)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    -- The fields of the search vector (their lexemes' first letter) and their ranks.
    word_fields TEXT[] := '{}';
    word_ranks INT[] := '{}';
    fields TEXT[];
    ranks INT[];
    term TEXT;
    i INT := 0;
    last BOOLEAN;
    alternatives tsquery;
    correction RECORD;
    g INT;
BEGIN
    terms := search_terms(p_q);
    IF NOT p_hidden && ARRAY['first_name', 'last_name'] THEN
        word_fields := array_append(word_fields, 'n'); word_ranks := word_ranks || 3;
    END IF;
    IF NOT p_hidden && ARRAY['company_name'] THEN
        word_fields := array_append(word_fields, 'c'); word_ranks := word_ranks || 2;
    END IF;
    IF NOT p_hidden && ARRAY['job_title', 'industry'] THEN
        word_fields := array_append(word_fields, 't'); word_ranks := word_ranks || 1;
    END IF;
    tier_terms := '{}'; tier_queries := '{}'; tier_scores := '{}';
    impossible := false;
    FOREACH term IN ARRAY terms LOOP
        i := i + 1;
        last := p_prefix_last AND i = cardinality(terms);
        IF position('@' IN term) > 0 THEN
            fields := CASE WHEN 'email' = ANY (p_hidden) THEN '{}' ELSE ARRAY['e'] END;
            ranks := ARRAY[4];
        ELSE
            fields := word_fields; ranks := word_ranks;
        END IF;
        FOR g IN 1 .. cardinality(fields) LOOP
            tier_terms := tier_terms || i;
            tier_queries := tier_queries || lexeme_literal(fields[g] || term)::tsquery;
            tier_scores := tier_scores || (1002 + 10 * ranks[g]);
            IF last THEN
                tier_terms := tier_terms || i;
                tier_queries := tier_queries || (lexeme_literal(fields[g] || term) || ':*')::tsquery;
                tier_scores := tier_scores || (1000 + 10 * ranks[g]);
            END IF;
        END LOOP;
        IF fields <> ARRAY['e'] THEN
            FOR correction IN
                SELECT c.typos, array_agg(c.word) AS words
                FROM search_corrections(term) c GROUP BY c.typos ORDER BY c.typos
            LOOP
                FOR g IN 1 .. cardinality(fields) LOOP
                    tier_terms := tier_terms || i;
                    tier_queries := tier_queries || (
                        SELECT string_agg(lexeme_literal(fields[g] || w), ' | ')
                        FROM unnest(correction.words) w)::tsquery;
                    tier_scores := tier_scores || (1000 - 100 * correction.typos + 10 * ranks[g]);
                END LOOP;
            END LOOP;
        END IF;
        SELECT search_query_any(q) INTO alternatives
        FROM unnest(tier_queries, tier_terms) AS t(q, t) WHERE t.t = i;
        IF alternatives IS NULL THEN
            impossible := true;
            CONTINUE;
        END IF;
        everything := CASE WHEN everything IS NULL THEN alternatives ELSE everything && alternatives END;
        IF NOT (last AND length(term) < 3) THEN
            narrow := CASE WHEN narrow IS NULL THEN alternatives ELSE narrow && alternatives END;
        END IF;
    END LOOP;
    -- Each term's matches best first, so that the first that matches a row is its best.
    SELECT COALESCE(array_agg(t ORDER BY t, s DESC), '{}'), COALESCE(array_agg(q ORDER BY t, s DESC), '{}'),
           COALESCE(array_agg(s ORDER BY t, s DESC), '{}')
    INTO tier_terms, tier_queries, tier_scores
    FROM unnest(tier_terms, tier_queries, tier_scores) AS x(t, q, s);
    narrow := COALESCE(narrow, everything);
    impossible := impossible OR everything IS NULL;
END
$$;

-- a OR b, where either may be NULL (nothing yet); pg_catalog's tsquery_or() is strict.
CREATE OR REPLACE FUNCTION search_query_or(a tsquery, b tsquery) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT CASE WHEN a IS NULL THEN b ELSE a || b END $$;
CREATE AGGREGATE search_query_any(tsquery) (SFUNC = search_query_or, STYPE = tsquery);

-- A search's terms, each whitespace-separated part of p_q made words as the rows' are (a part with
-- '@' stays whole: an email address). At most 8.
CREATE OR REPLACE FUNCTION search_terms(p_q TEXT) RETURNS TEXT[]
LANGUAGE sql STABLE AS $$
    SELECT COALESCE((array_agg(term ORDER BY n, m))[1:8], '{}')
    FROM regexp_split_to_table(btrim(COALESCE(p_q, '')), '\s+') WITH ORDINALITY AS q(part, n)
    CROSS JOIN LATERAL unnest(CASE WHEN position('@' IN part) > 0 THEN ARRAY[lower(part)]
                                   ELSE search_words(part) END) WITH ORDINALITY AS t(term, m)
    WHERE part <> ''
$$;

-- The planner's plan (EXPLAIN, JSON) of the rows matching p_q and the filters, for `count=estimated`:
-- planned with the query's own tsquery, so the estimate comes from the search vector's statistics.
-- NULL when nothing can match. VOLATILE because EXPLAIN is refused in other functions.
CREATE OR REPLACE FUNCTION search_matches_plan(p_q TEXT, p_hidden TEXT[], p_prefix_last BOOLEAN,
    p_industry TEXT[], p_country TEXT, p_department TEXT[]) RETURNS json
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    plan RECORD;
    explained json;
BEGIN
    SELECT * INTO plan FROM search_plan(p_q, p_hidden, p_prefix_last);
    IF plan.impossible THEN
        RETURN NULL;
    END IF;
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 FROM prospect_search_view v
             WHERE v.search_vector @@ $1
               AND ($2::text[] IS NULL OR v.industry = ANY ($2))
               AND ($3::text IS NULL OR v.company_country = $3)
               AND ($4::text[] IS NULL OR v.department = ANY ($4))'
        INTO explained USING plan.everything, p_industry, p_country, p_department;
    RETURN explained;
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
--     `walk_rows` rows; when those do not fill the page, the GIN index.
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
          AND ($3::text[] IS NULL OR v.industry = ANY ($3))
          AND ($4::text IS NULL OR v.company_country = $4)
          AND ($5::text[] IS NULL OR v.department = ANY ($5))';
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
                    -- The walk over the next `walk_rows` rows in key order, kept if it fills the page.
                    EXECUTE 'SELECT array_agg(v.prospect_id) FROM (
                                 SELECT v.prospect_id FROM (
                                     SELECT v.* FROM prospect_search_view v WHERE ($6::text IS NULL OR v.prospect_id > $6)
                                     ORDER BY v.prospect_id LIMIT $8) v
                                 WHERE v.search_vector @@ $1 AND ($2::tsquery IS NULL OR NOT v.search_vector @@ $2)'
                                 || filters || ' LIMIT $7) v'
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
