use clap::Parser;

use prospect_api::cli::{Cli, Command};
use prospect_api::{commands, telemetry};

/// A request allocates a String per column of every row and grows its JSON body: with glibc's
/// allocator, malloc and free were a quarter of the API's CPU under load. mimalloc: 9-13% more
/// /prospects and 15-27% more /companies requests per second on the same machine (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => commands::serve(args).await,
        Command::Openapi => commands::openapi(),
        Command::Migrate(args) => commands::migrate(args).await,
        Command::Refresh(args) => commands::refresh(args).await,
        Command::Seed(args) => commands::seed(args).await,
        Command::Keys(command) => commands::keys(command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
