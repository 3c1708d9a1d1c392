-- Every filter of /prospects fast: the planner must know how many rows a filter keeps, or it walks an
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
-- Both modes: the view's relation is a materialized view or a table, its indexes the same; the
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
