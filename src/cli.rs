//! The command line: `prospect-api migrate | refresh | seed`. Every flag also reads an environment
//! variable (shown in `--help`), so flags and env configure the same settings.

use clap::{Args, Parser, Subcommand};

use crate::config::{DatabaseConfig, MaintenanceConfig, RefreshSettings, ServeConfig};
use crate::telemetry::LogFormat;
use crate::views::ViewName;

#[derive(Debug, Parser)]
#[command(
    name = "prospect-api",
    version,
    about = "Fast read API over PostgreSQL materialized views of company and prospect data.",
    long_about = "Serves denormalized company/prospect data from three PostgreSQL materialized views, \
                  keeps them fresh, and tells every client how old the data is (X-Data-Age).\n\n\
                  Every flag can also be set by the environment variable shown with it."
)]
pub struct Cli {
    /// Log format: `pretty` for terminals, `json` for log collectors. Levels come from RUST_LOG.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at startup: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (migrating the database first; populating empty views in the background).
    Serve(ServeArgs),
    /// Create the database if it is missing, apply all pending migrations, and convert the read
    /// models to VIEW_MAINTENANCE.
    Migrate(MigrateArgs),
    /// Refresh the read models now (all, or one), each as its mode does it, and print what was done.
    Refresh(RefreshArgs),
    /// Fill the base tables with deterministic demo data (generated inside PostgreSQL).
    Seed(SeedArgs),
    /// Print the OpenAPI document of the HTTP API (what openapi/openapi.json holds).
    Openapi,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ServeConfig,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub maintenance: MaintenanceConfig,

    #[command(flatten)]
    pub refresh: RefreshSettings,
}

#[derive(Debug, Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub refresh: RefreshSettings,

    /// Refresh only this view (company_prospect_view, company_summary_view or prospect_search_view).
    #[arg(long)]
    pub view: Option<ViewName>,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Number of companies to create.
    #[arg(long, default_value_t = 10_000)]
    pub companies: u32,

    /// Average number of prospects per company (each gets 1 to 2×this-1; about 3% get none).
    #[arg(long, default_value_t = 10)]
    pub prospects_per_company: u32,

    /// Seed of the generator: the same seed always produces the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: i64,

    /// Delete all rows of "Company" and "Prospect" first. Without it, seeding a non-empty database fails.
    #[arg(long)]
    pub replace: bool,

    /// Leave the read models unpopulated or stale after seeding. By default they are brought up to
    /// date, so that `serve` answers at once rather than with 503s until its first refresh.
    #[arg(long)]
    pub no_refresh: bool,

    /// (The default; accepted for scripts written before it was.)
    #[arg(long, hide = true, conflicts_with = "no_refresh")]
    pub refresh: bool,

    #[command(flatten)]
    pub refresh_settings: RefreshSettings,
}
