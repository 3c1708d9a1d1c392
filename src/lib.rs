//! prospect-api: a read API over PostgreSQL materialized views of company and prospect data.
//!
//! The data flows one way: base tables -> triggers -> materialized views (refreshed by `refresh`)
//! -> `views` queries -> HTTP. Freshness comes from the refresh log (reused for up to a second).

pub mod access;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod http;
pub mod metrics;
pub mod progress;
pub mod reads;
pub mod refresh;
pub mod seed;
pub mod startup;
pub mod telemetry;
pub mod views;
