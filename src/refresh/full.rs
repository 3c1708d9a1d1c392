//! A full refresh of some views, each as its mode does it: a materialized view is refreshed
//! CONCURRENTLY in its own transaction; a table-backed one is built beside and swapped in when only
//! its whole definition can bring it up to date (`build`), and otherwise repaired a range of
//! companies at a time (`repair`). What the CLI and tests go through; the refresher interleaves the
//! same steps with its other work.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

use super::build::{Built, build_beside};
use super::incremental;
use super::materialized::refresh_materialized_view;
use super::repair::{Progressed, Repair};
use super::report::{
    RefreshMethod, RefreshReport, RefreshStatus, RefreshTrigger, last_success, record_failure,
};
use crate::config::RefreshSettings;
use crate::progress::{Progress, Step};
use crate::views::{Mode, PerView, ViewName};

/// How long to wait before trying again while another process holds the maintenance lock.
const WAIT_FOR_LOCK: Duration = Duration::from_millis(100);

/// Each view's mode (`None`: its relation is missing).
pub type Modes = PerView<Option<Mode>>;

/// Each view's mode now.
pub async fn modes(pool: &PgPool) -> Result<Modes, sqlx::Error> {
    let rows = sqlx::query!(r#"SELECT name AS "name!", mode FROM read_models"#)
        .fetch_all(pool)
        .await?;
    let mut modes = Modes::default();
    for row in rows {
        if let (Ok(view), Some(mode)) = (row.name.parse::<ViewName>(), row.mode) {
            modes[view] = mode.parse().ok();
        }
    }
    Ok(modes)
}

/// The views of `views` (in the fixed order) that are in `mode`.
pub fn in_mode(modes: &Modes, views: &[ViewName], mode: Mode) -> Vec<ViewName> {
    ViewName::ALL
        .into_iter()
        .filter(|view| views.contains(view) && modes[*view] == Some(mode))
        .collect()
}

/// Refreshes `views` in full, in the fixed order. A failing view does not stop the others; only losing
/// the database altogether is an `Err`.
pub async fn refresh_views(
    pool: &PgPool,
    views: &[ViewName],
    trigger: RefreshTrigger,
    settings: &RefreshSettings,
) -> Result<Vec<RefreshReport>, sqlx::Error> {
    refresh_views_reporting(pool, views, trigger, settings, &Progress::hidden("refresh")).await
}

/// `refresh_views`, reporting the progress of builds and repairs to `progress`.
pub async fn refresh_views_reporting(
    pool: &PgPool,
    views: &[ViewName],
    trigger: RefreshTrigger,
    settings: &RefreshSettings,
    progress: &Progress,
) -> Result<Vec<RefreshReport>, sqlx::Error> {
    let modes = modes(pool).await?;
    let mut reports = Vec::with_capacity(views.len());
    for view in in_mode(&modes, views, Mode::Refresh) {
        reports.push(refresh_materialized_view(pool, view, trigger, settings).await?);
    }
    let tables = in_mode(&modes, views, Mode::Incremental);
    if !tables.is_empty() {
        reports.extend(bring_tables_up_to_date(pool, &tables, trigger, settings, progress).await?);
    }
    reports.sort_by_key(|report| report.view);
    Ok(reports)
}

/// Brings table-backed `tables` wholly up to date: those only a build can are built beside and
/// swapped in, the others are repaired.
async fn bring_tables_up_to_date(
    pool: &PgPool,
    tables: &[ViewName],
    trigger: RefreshTrigger,
    settings: &RefreshSettings,
    progress: &Progress,
) -> Result<Vec<RefreshReport>, sqlx::Error> {
    let requested_at = Utc::now();
    let to_build = to_build(pool, tables, settings).await?;
    let mut reports = Vec::with_capacity(tables.len());
    if !to_build.is_empty() {
        match build_beside(pool, &to_build, tables, settings, progress).await {
            Ok(built) => reports.extend(swap_in(pool, &built, trigger, settings).await?),
            Err(error) => {
                let message = super::report::database_message(&error);
                tracing::warn!(error = %message, "the build beside failed; readers keep the old tables");
                for view in &to_build {
                    reports
                        .push(record_failure(pool, *view, trigger, requested_at, &message).await?);
                }
            }
        }
        for view in &to_build {
            if !reports.iter().any(|r| r.view == *view) {
                reports.push(RefreshReport::skipped(*view, requested_at));
            }
        }
    }
    let rest: Vec<ViewName> = tables
        .iter()
        .copied()
        .filter(|v| !to_build.contains(v))
        .collect();
    if !rest.is_empty() {
        reports.extend(repair(pool, rest, trigger, settings, progress).await?);
    }
    Ok(reports)
}

/// Those of `tables` that only a build beside can bring up to date.
pub(super) async fn to_build(
    pool: &PgPool,
    tables: &[ViewName],
    settings: &RefreshSettings,
) -> Result<Vec<ViewName>, sqlx::Error> {
    let names: Vec<String> = tables.iter().map(|v| v.as_str().to_owned()).collect();
    let to_build = sqlx::query_scalar!(
        r#"SELECT b AS "view!" FROM read_models_to_build($1, $2, $2) b"#,
        settings.incremental_rebuild_share,
        &names,
    )
    .fetch_all(pool)
    .await?;
    Ok(ViewName::named_in(tables, &to_build))
}

/// Runs rounds until the builds are swapped in (by this process or another's applier); each one's
/// report is its swap's log row.
async fn swap_in(
    pool: &PgPool,
    built: &[Built],
    trigger: RefreshTrigger,
    settings: &RefreshSettings,
) -> Result<Vec<RefreshReport>, sqlx::Error> {
    let views: Vec<ViewName> = built.iter().map(|b| b.view).collect();
    loop {
        let round = incremental::round(pool, trigger, None, settings).await?;
        if round.failed() {
            return Ok(round
                .reports
                .into_iter()
                .filter(|r| views.contains(&r.view))
                .collect());
        }
        if round.swapped() {
            super::vacuum_change_record(pool).await?;
        }
        if !staged(pool, &views).await? {
            break;
        }
        tokio::time::sleep(WAIT_FOR_LOCK).await;
    }
    let mut reports = Vec::with_capacity(views.len());
    for view in views {
        if let Some(report) = last_success(pool, view).await?
            && report.method == Some(RefreshMethod::Build)
        {
            reports.push(report);
        }
    }
    Ok(reports)
}

/// Whether any of `views` is built and waiting to be swapped in.
async fn staged(pool: &PgPool, views: &[ViewName]) -> Result<bool, sqlx::Error> {
    let names: Vec<String> = views.iter().map(|v| v.as_str().to_owned()).collect();
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM staged_read_models WHERE view_name = ANY ($1)) AS "staged!""#,
        &names
    )
    .fetch_one(pool)
    .await
}

/// A repair of `views`, range after range, reporting where it is.
async fn repair(
    pool: &PgPool,
    views: Vec<ViewName>,
    trigger: RefreshTrigger,
    settings: &RefreshSettings,
    progress: &Progress,
) -> Result<Vec<RefreshReport>, sqlx::Error> {
    let phase = format!(
        "repairing {}",
        views
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut repair = Repair::new(views, trigger, Utc::now());
    loop {
        match repair.step(pool, settings).await? {
            Progressed::Continuing(_) => {
                let (done, total, chunks) = repair.position();
                progress.report(&Step {
                    phase: phase.clone(),
                    detail: Some(format!("{chunks} ranges")),
                    done: Some((done as u64, total.max(done) as u64)),
                    unit: "companies",
                    ..Step::default()
                });
            }
            Progressed::Waiting => tokio::time::sleep(WAIT_FOR_LOCK).await,
            Progressed::Failed(round) => {
                progress.finish();
                return Ok(round
                    .reports
                    .into_iter()
                    .filter(|r| {
                        r.status == RefreshStatus::Error && repair.views().contains(&r.view)
                    })
                    .collect());
            }
            Progressed::Finished { reports, .. } => {
                progress.finish();
                return Ok(reports);
            }
        }
    }
}

/// Refreshes every view in full.
pub async fn refresh_all(
    pool: &PgPool,
    trigger: RefreshTrigger,
    settings: &RefreshSettings,
) -> Result<Vec<RefreshReport>, sqlx::Error> {
    refresh_views(pool, &ViewName::ALL, trigger, settings).await
}

/// Refreshes one view in full.
pub async fn refresh_view(
    pool: &PgPool,
    view: ViewName,
    trigger: RefreshTrigger,
    settings: &RefreshSettings,
) -> Result<RefreshReport, sqlx::Error> {
    refresh_views(pool, &[view], trigger, settings)
        .await?
        .pop()
        .ok_or_else(|| sqlx::Error::Protocol(format!("{view} is missing from the database")))
}
