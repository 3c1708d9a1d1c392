-- The state filters read an index, as the city filters do. A page with few matches reads them
-- first (src/views/order.rs, `page_shape!`): without an index, one state's 1,549 prospects at 1M
-- were a parallel scan of the whole view (198 ms, bench/filter_plans.py). Created on whichever
-- relation serves the read model now (a materialized view, or the table of incremental mode);
-- building beside and converting copy the relation's indexes.
CREATE INDEX IF NOT EXISTS company_prospect_view_company_state
    ON company_prospect_view (company_state) WHERE prospect_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS company_summary_view_state
    ON company_summary_view (state);
