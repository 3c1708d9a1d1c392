//! One integration-test binary (one link step) with a module per area.

mod cli;
mod csv_export;
mod differential;
mod every_read_model;
mod facets;
mod fourth_read_model;
mod helpers;
mod hostile_input;
mod http_admin;
mod http_companies_and_search;
mod http_errors;
mod http_freshness;
mod http_prospects;
mod incremental;
mod migrations;
mod refresh;
mod refresh_loop;
mod reliability;
mod replica;
mod repository;
mod response_cache;
mod schema;
mod schema_definitions;
mod seed;
mod triggers;
