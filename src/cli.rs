//! The command line: `prospect-api migrate | refresh | seed`. Every flag also reads an environment
//! variable (shown in `--help`), so flags and env configure the same settings.

use clap::{Args, Parser, Subcommand};

use crate::config::{DatabaseConfig, MaintenanceConfig, RefreshSettings, ServeConfig};
use crate::seed::SeedOptions;
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
    /// Create, list and revoke API keys (for servers and dashboards; README, "Access control").
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for a role; the key is printed once, as the last line of output.
    Create(KeysCreateArgs),
    /// List the keys: name, role, created, expires, last used, revoked (never the keys).
    List(KeysListArgs),
    /// Revoke a key: every instance refuses it within a second.
    Revoke(KeysRevokeArgs),
}

#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// The role the key reads as (a role of the access policy).
    #[arg(long)]
    pub role: String,

    /// The key's name, as the audit log and `keys list` show it: 1 to 64 letters, digits, '.', '_'
    /// or '-'.
    #[arg(long)]
    pub name: String,

    /// How long the key is valid, e.g. 90d (unset: until revoked).
    #[arg(long, value_parser = crate::config::parse_duration)]
    pub expires: Option<std::time::Duration>,

    /// The access policy, to check that the role is declared in it.
    #[arg(long, env = "ACCESS_POLICY")]
    pub access_policy: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeysListArgs {
    #[command(flatten)]
    pub database: DatabaseConfig,
}

#[derive(Debug, Args)]
pub struct KeysRevokeArgs {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// The name of the key to revoke.
    pub name: String,
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

    /// Refresh only this view (one of the read models, e.g. company_summary_view).
    #[arg(long)]
    pub view: Option<ViewName>,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Number of companies to create.
    #[arg(long, default_value_t = SeedOptions::DEMO.companies)]
    pub companies: u32,

    /// Average number of prospects per company (each gets 1 to 2×this-1; about 3% get none).
    #[arg(long, default_value_t = SeedOptions::DEMO.prospects_per_company)]
    pub prospects_per_company: u32,

    /// Seed of the generator: the same seed always produces the same data.
    #[arg(long, default_value_t = SeedOptions::DEMO.seed)]
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Strings that have broken parsers: empty, half a URL, multibyte text where bytes are counted,
    /// huge and negative numbers, units without numbers, NUL, separators alone.
    const TRICKY: &[&str] = &[
        "",
        " ",
        "http://",
        "https://",
        "http://é",
        "https://é/",
        "-",
        "-1",
        "0",
        "00",
        "1e99",
        "NaN",
        "99999999999999999999999",
        "-9223372036854775809",
        "18446744073709551616GiB",
        "1.5",
        "☃",
        "\u{0}",
        "%",
        "%%%",
        "1s1",
        "5 minutes",
        "-5s",
        "9999999999999999h",
        "0.0.0.0:99999",
        ":",
        ",",
        ",,",
        "a,b",
        "postgres://",
        "postgres://:@/",
        "* * * * * * * *",
        "60 * * * *",
        "GiB",
        "ms",
        "true",
        "yes",
        "refresh,incremental",
        "0x10",
        "+5",
        "\t",
        "\n",
    ];

    /// More strings from a fixed seed: pieces of the above and random characters, multibyte ones
    /// included.
    fn generated(count: usize) -> Vec<String> {
        let alphabet: Vec<char> = "abcz019:/.,-+%*@ éß☃\u{0}\t".chars().collect();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count)
            .map(|_| {
                let len = (next() % 12) as usize;
                let mut text = TRICKY[(next() % TRICKY.len() as u64) as usize].to_owned();
                text.extend((0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]));
                text
            })
            .collect()
    }

    #[test]
    fn every_setting_given_any_string_parses_or_names_itself() {
        let values: Vec<String> = TRICKY
            .iter()
            .map(|s| s.to_string())
            .chain(generated(300))
            .collect();
        let cli = Cli::command();
        let mut checked = 0;
        for subcommand in cli.get_subcommands() {
            for arg in subcommand.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                for value in &values {
                    let argv = [
                        "prospect-api".to_owned(),
                        subcommand.get_name().to_owned(),
                        format!("--{long}={value}"),
                    ];
                    let parsed = std::panic::catch_unwind(|| Cli::try_parse_from(&argv));
                    let Ok(result) = parsed else {
                        panic!("--{long}={value:?} panicked");
                    };
                    if let Err(error) = result {
                        let message = error.to_string();
                        let named = message.contains(&format!("--{long}"))
                            || env.as_deref().is_some_and(|env| message.contains(env));
                        assert!(named, "--{long}={value:?}: {message}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000, "{checked} combinations");
    }
}
