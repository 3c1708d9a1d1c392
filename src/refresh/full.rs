//! A full refresh of some views, each as its mode does it: a materialized view is refreshed
//! CONCURRENTLY in its own transaction; the table-backed ones are rebuilt together in one incremental
//! round (which also applies whatever changes are pending). What the CLI, tests and the refresher's
//! full jobs go through.

use sqlx::PgPool;

use super::incremental;
use super::materialized::refresh_materialized_view;
use super::report::{RefreshReport, RefreshTrigger};
use crate::config::RefreshSettings;
use crate::views::{Mode, PerView, ViewName};

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
    let modes = modes(pool).await?;
    let mut reports = Vec::with_capacity(views.len());
    for view in in_mode(&modes, views, Mode::Refresh) {
        reports.push(refresh_materialized_view(pool, view, trigger, settings).await?);
    }
    let tables = in_mode(&modes, views, Mode::Incremental);
    if !tables.is_empty() {
        let round = incremental::round(pool, trigger, &tables, settings).await?;
        reports.extend(round.into_iter().filter(|r| tables.contains(&r.view)));
    }
    reports.sort_by_key(|report| report.view);
    Ok(reports)
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
