//! One integration-test binary (one link step) with a module per area.

mod cli;
mod helpers;
mod migrations;
mod refresh;
mod schema;
mod seed;
mod triggers;
