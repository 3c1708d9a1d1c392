//! Builds and repairs in progress, as the process doing one last reported it in `read_model_work`
//! (schema/current.sql): written on its own connection, outside the work's transactions, so that every
//! instance's `/admin/views` and `/metrics` show it, whichever instance does the work. A report
//! older than `STALE_AFTER_SECONDS` belongs to a process that stopped, and is ignored.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::views::ViewName;

/// A report not renewed for this long is a stopped process's.
const STALE_AFTER_SECONDS: f64 = 60.0;

/// What kind of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    /// Built anew beside the table readers use, then swapped in.
    Build,
    /// Compared with its definition a range of companies at a time, and repaired.
    Repair,
}

impl WorkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkKind::Build => "build",
            WorkKind::Repair => "repair",
        }
    }

    fn parse(text: &str) -> Option<WorkKind> {
        match text {
            "build" => Some(WorkKind::Build),
            "repair" => Some(WorkKind::Repair),
            _ => None,
        }
    }
}

/// Where a build or repair of one read model is, as last reported.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Work {
    pub kind: WorkKind,
    /// What it is doing now ("loading rows from the definition", "building indexes", ...).
    pub phase: String,
    /// Progress in `unit`s (companies compared, tuples indexed), when known.
    pub done: Option<i64>,
    pub total: Option<i64>,
    pub unit: Option<String>,
    /// Repairs: the ranges of companies compared so far.
    pub chunks: Option<i64>,
    /// Rows: built so far (a build), or deleted plus inserted (a repair).
    pub rows: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The process doing it: host and process id.
    pub owner: String,
}

/// A report to write.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    pub view: ViewName,
    pub kind: WorkKind,
    pub phase: &'a str,
    pub done: Option<i64>,
    pub total: Option<i64>,
    pub unit: Option<&'a str>,
    pub chunks: Option<i64>,
    pub rows: Option<i64>,
}

/// This process, as reports name it.
pub fn owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|host| host.trim().to_owned())
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}:{}", std::process::id())
    })
}

/// Writes (or renews) this process's report on one read model. Keeps `started_at` while the kind
/// stays the same.
pub async fn report(pool: &PgPool, report: &Report<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO read_model_work (view_name, kind, phase, done, total, unit, chunks, rows, owner)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (view_name) DO UPDATE SET
               kind = EXCLUDED.kind, phase = EXCLUDED.phase, done = EXCLUDED.done, total = EXCLUDED.total,
               unit = EXCLUDED.unit, chunks = EXCLUDED.chunks, rows = EXCLUDED.rows, owner = EXCLUDED.owner,
               updated_at = clock_timestamp(),
               started_at = CASE WHEN read_model_work.kind = EXCLUDED.kind AND read_model_work.owner = EXCLUDED.owner
                                 THEN read_model_work.started_at ELSE clock_timestamp() END"#,
        report.view.as_str(),
        report.kind.as_str(),
        report.phase,
        report.done,
        report.total,
        report.unit,
        report.chunks,
        report.rows,
        owner(),
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Claims `views` for a repair by this process: those no other live process is building or
/// repairing. Returns the ones claimed.
pub async fn claim_for_repair(
    pool: &PgPool,
    views: &[ViewName],
) -> Result<Vec<ViewName>, sqlx::Error> {
    let names: Vec<&str> = views.iter().map(|view| view.as_str()).collect();
    let claimed = sqlx::query_scalar!(
        r#"INSERT INTO read_model_work (view_name, kind, phase, owner)
           SELECT v, 'repair', 'starting', $2 FROM unnest($1::text[]) v
           ON CONFLICT (view_name) DO UPDATE SET
               kind = 'repair', phase = 'starting', done = NULL, total = NULL, unit = NULL, chunks = NULL,
               rows = NULL, owner = EXCLUDED.owner, started_at = clock_timestamp(), updated_at = clock_timestamp()
           WHERE read_model_work.owner = EXCLUDED.owner
              OR read_model_work.updated_at < clock_timestamp() - $3 * interval '1 second'
           RETURNING view_name"#,
        &names as &[&str],
        owner(),
        STALE_AFTER_SECONDS,
    )
    .fetch_all(pool)
    .await?;
    Ok(ViewName::named_in(views, &claimed))
}

/// Removes this process's reports on `views`.
pub async fn clear(pool: &PgPool, views: &[ViewName]) -> Result<(), sqlx::Error> {
    let names: Vec<&str> = views.iter().map(|view| view.as_str()).collect();
    sqlx::query!(
        "DELETE FROM read_model_work WHERE view_name = ANY ($1) AND owner = $2",
        &names as &[&str],
        owner(),
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The work in progress on each read model, from live reports.
pub async fn in_progress(pool: &PgPool) -> Result<Vec<(ViewName, Work)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT view_name, kind, phase, done, total, unit, chunks, rows, started_at, updated_at, owner
           FROM read_model_work
           WHERE updated_at >= clock_timestamp() - $1 * interval '1 second'"#,
        STALE_AFTER_SECONDS,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some((
                row.view_name.parse().ok()?,
                Work {
                    kind: WorkKind::parse(&row.kind)?,
                    phase: row.phase,
                    done: row.done,
                    total: row.total,
                    unit: row.unit,
                    chunks: row.chunks,
                    rows: row.rows,
                    started_at: row.started_at,
                    updated_at: row.updated_at,
                    owner: row.owner,
                },
            ))
        })
        .collect())
}
