//! What each CLI command does. `main.rs` only parses arguments and calls one of these.

use anyhow::Context;

use crate::access::keys;
use crate::cli::{KeysCommand, MigrateArgs, RefreshArgs, SeedArgs, ServeArgs};
use crate::db::prepare_database;
use crate::progress::Progress;
use crate::refresh::{self, RefreshMethod, RefreshReport, RefreshStatus, RefreshTrigger};
use crate::seed::{self, SeedOptions};
use crate::views::ViewName;

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let pool = prepare_database(&args.database).await?;
    let applied =
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM _sqlx_migrations WHERE success"#)
            .fetch_one(&pool)
            .await?;
    println!(
        "{}: schema up to date ({applied} migrations applied)",
        args.database.database_url
    );
    crate::views::check_catalog(&pool).await?;
    let mode = args.maintenance.view_maintenance;
    for conversion in refresh::convert_all(&pool, mode, &args.refresh, &Progress::new("migrate"))
        .await
        .context("converting the read models to VIEW_MAINTENANCE")?
    {
        println!("{conversion}");
    }
    Ok(())
}

pub async fn refresh(args: RefreshArgs) -> anyhow::Result<()> {
    let pool = prepare_database(&args.database).await?;
    let views = match args.view {
        Some(view) => vec![view],
        None => ViewName::ALL.to_vec(),
    };
    let progress = Progress::new("refresh");
    let reports = refresh::refresh_views_reporting(
        &pool,
        &views,
        RefreshTrigger::Cli,
        &args.refresh,
        &progress,
    )
    .await?;
    for report in &reports {
        println!("{}", describe(report));
    }
    if reports.iter().any(|r| r.status == RefreshStatus::Error) {
        anyhow::bail!("some views failed to refresh; they keep serving their previous data");
    }
    Ok(())
}

pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let pool = prepare_database(&args.database).await?;
    let options = SeedOptions {
        companies: args.companies,
        prospects_per_company: args.prospects_per_company,
        seed: args.seed,
        replace: args.replace,
    };
    let summary = seed::seed(&pool, &options, &Progress::new("seed")).await?;
    println!(
        "seeded {} companies and {} prospects in {:.1} s (seed {})",
        summary.companies,
        summary.prospects,
        summary.elapsed.as_secs_f64(),
        options.seed
    );
    if !args.no_refresh {
        let progress = Progress::new("refresh");
        for report in refresh::refresh_views_reporting(
            &pool,
            &ViewName::ALL,
            RefreshTrigger::Cli,
            &args.refresh_settings,
            &progress,
        )
        .await?
        {
            println!("{}", describe(&report));
        }
    }
    Ok(())
}

/// One line per view for the terminal.
fn describe(report: &RefreshReport) -> String {
    match report.status {
        RefreshStatus::Ok => format!(
            "{:<22} ok       {:>9} rows in {:>6} ms  (data as of {}; {})",
            report.view.as_str(),
            report.rows.unwrap_or_default(),
            report.duration_ms.unwrap_or_default(),
            report.started_at.to_rfc3339(),
            match (report.method, report.rows_changed) {
                (Some(RefreshMethod::Rebuild), Some(changed)) =>
                    format!("table rebuilt, {changed} rows changed"),
                (Some(RefreshMethod::Build), _) => format!(
                    "table built beside and swapped in, {} rows changed while it was built",
                    report.rows_changed.unwrap_or_default()
                ),
                (Some(RefreshMethod::Repair), Some(changed)) => format!(
                    "table compared with its definition and repaired, {changed} rows changed"
                ),
                (Some(RefreshMethod::Apply), Some(changed)) =>
                    format!("changes applied, {changed} rows changed"),
                _ => "materialized view refreshed".to_owned(),
            },
        ),
        RefreshStatus::Skipped => format!(
            "{:<22} skipped  (another process refreshed it while this one waited)",
            report.view.as_str()
        ),
        RefreshStatus::Error => format!(
            "{:<22} FAILED   {}",
            report.view.as_str(),
            report.error.as_deref().unwrap_or("unknown error")
        ),
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let app = crate::startup::Application::build(&args.config).await?;
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received: finishing requests in flight");
}

pub fn openapi() -> anyhow::Result<()> {
    println!("{}", crate::http::openapi_spec().to_pretty_json()?);
    Ok(())
}

pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(args) => {
            if let Some(path) = &args.access_policy {
                let columns = crate::access::restriction::known_columns();
                let policy =
                    crate::access::Policy::load(path, &columns).map_err(anyhow::Error::msg)?;
                if policy.role(&args.role).is_none() {
                    anyhow::bail!(
                        "the access policy {} declares no role '{}'",
                        path.display(),
                        args.role
                    );
                }
            }
            let pool = prepare_database(&args.database).await?;
            let created = keys::create(&pool, &args.name, &args.role, args.expires).await?;
            let expires = args.expires.map_or_else(
                || "until revoked".to_owned(),
                |valid| format!("for {}", humantime::format_duration(valid)),
            );
            println!(
                "created key '{}' for role '{}', valid {expires}. It is shown only now: store it as a secret.",
                args.name, args.role
            );
            println!("{}", created.key);
        }
        KeysCommand::List(args) => {
            let pool = prepare_database(&args.database).await?;
            let when = |at: Option<chrono::DateTime<chrono::Utc>>| {
                at.map_or_else(
                    || "-".to_owned(),
                    |at| at.format("%Y-%m-%d %H:%M").to_string(),
                )
            };
            println!(
                "{:<24} {:<16} {:<16} {:<16} {:<16} REVOKED",
                "NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED"
            );
            for key in keys::list(&pool).await? {
                println!(
                    "{:<24} {:<16} {:<16} {:<16} {:<16} {}",
                    key.name,
                    key.role,
                    when(Some(key.created_at)),
                    when(key.expires_at),
                    when(key.last_used_at),
                    when(key.revoked_at)
                );
            }
        }
        KeysCommand::Revoke(args) => {
            let pool = prepare_database(&args.database).await?;
            if !keys::revoke(&pool, &args.name).await? {
                anyhow::bail!(
                    "there is no key '{}' that is not revoked already",
                    args.name
                );
            }
            println!(
                "revoked key '{}': every instance refuses it within a second",
                args.name
            );
        }
    }
    Ok(())
}
