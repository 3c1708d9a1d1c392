//! Converting the read models between the modes: what `migrate` and `serve` do after the migrations.
//! Each read model is converted in its own transaction by `convert_read_model()` (schema/current.sql): the
//! new relation is built beside the old one, which keeps serving, and swapped in; readers wait only for
//! the swap. Meanwhile another connection watches the converting backend (the statistics views
//! PostgreSQL keeps of index builds, ANALYZE and lock waits) and reports its phase to a `Progress`.

use std::fmt;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::watch::{self, Activity};
use crate::config::{RefreshSettings, pg_duration};
use crate::db::set_local;
use crate::progress::{Progress, Step, thousands};
use crate::views::{Mode, ViewName};

/// How often the watcher samples the converting backend.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What happened to one read model.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub view: ViewName,
    /// The mode it had, and has now.
    pub from: Mode,
    pub to: Mode,
    /// Whether a new relation was built; `false`: it was already as asked.
    pub rebuilt: bool,
    /// The rows it was built with (`None`: built unpopulated, as the first refresh will populate it).
    pub rows: Option<i64>,
    pub build_ms: i64,
    /// From asking for the old relation's lock to the end of the swap: how long new readers waited.
    pub swap_ms: i64,
    pub swap_attempts: i32,
}

/// Brings every read model to `mode`, built from its definition, one at a time in the fixed order,
/// reporting each one's phase to `progress`.
pub async fn convert_all(
    pool: &PgPool,
    mode: Mode,
    settings: &RefreshSettings,
    progress: &Progress,
) -> Result<Vec<Conversion>, sqlx::Error> {
    let mut done = Vec::with_capacity(ViewName::ALL.len());
    for view in ViewName::ALL {
        done.push(convert(pool, view, mode, settings, progress).await?);
    }
    progress.finish();
    Ok(done)
}

#[tracing::instrument(skip(pool, settings, progress))]
async fn convert(
    pool: &PgPool,
    view: ViewName,
    mode: Mode,
    settings: &RefreshSettings,
    progress: &Progress,
) -> Result<Conversion, sqlx::Error> {
    let expected = expected_build(pool, view).await?;
    let mut tx = pool.begin().await?;
    let backend = watch::backend_pid(&mut tx).await?;
    // A refresh or incremental round running elsewhere is waited for as long as one may run.
    let wait = pg_duration(settings.refresh_statement_timeout);
    let local = [
        ("lock_timeout", wait.as_str()),
        ("statement_timeout", wait.as_str()),
        ("maintenance_work_mem", settings.refresh_work_mem.as_str()),
    ];
    set_local(&mut tx, &local).await?;
    let converting = sqlx::query!(
        r#"SELECT from_mode AS "from_mode!", row_count, build_ms AS "build_ms!", swap_ms AS "swap_ms!",
                  swap_attempts AS "swap_attempts!"
           FROM convert_read_model($1, $2)"#,
        view.as_str(),
        mode.as_str(),
    )
    .fetch_optional(&mut *tx);
    let built = tokio::select! {
        built = converting => built?,
        never = report_phases(pool, backend, view, &expected, progress) => match never {},
    };
    tx.commit().await?;
    let conversion = match built {
        Some(built) => Conversion {
            view,
            from: built.from_mode.parse().map_err(sqlx::Error::Protocol)?,
            to: mode,
            rebuilt: true,
            rows: built.row_count,
            build_ms: built.build_ms,
            swap_ms: built.swap_ms,
            swap_attempts: built.swap_attempts,
        },
        None => Conversion {
            view,
            from: mode,
            to: mode,
            rebuilt: false,
            rows: None,
            build_ms: 0,
            swap_ms: 0,
            swap_attempts: 0,
        },
    };
    Ok(conversion)
}

/// What the last full build of a view (a refresh, rebuild or conversion) says about the next one.
pub(super) struct ExpectedBuild {
    pub rows: Option<i64>,
    pub took: Option<Duration>,
}

pub(super) async fn expected_build(
    pool: &PgPool,
    view: ViewName,
) -> Result<ExpectedBuild, sqlx::Error> {
    let last = sqlx::query!(
        r#"SELECT row_count, duration_ms FROM materialized_view_log
           WHERE view_name = $1 AND status = 'ok' AND method IN ('refresh', 'rebuild', 'build')
           ORDER BY started_at DESC LIMIT 1"#,
        view.as_str()
    )
    .fetch_optional(pool)
    .await?;
    Ok(ExpectedBuild {
        rows: last.as_ref().and_then(|l| l.row_count),
        took: last
            .and_then(|l| l.duration_ms)
            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
    })
}

/// Reports what `backend` is doing every `SAMPLE_EVERY`, until the conversion ends (and this future
/// is dropped).
async fn report_phases(
    pool: &PgPool,
    backend: i32,
    view: ViewName,
    expected: &ExpectedBuild,
    progress: &Progress,
) -> std::convert::Infallible {
    let started = Instant::now();
    // Past the indexes and ANALYZE, what is left is counting the rows and the swap.
    let mut built = false;
    let phases = ("building from its definition", "finishing");
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let Some(activity) = watch::sample(pool, backend).await else {
            continue;
        };
        let waiting = activity == Activity::WaitingForLock;
        let mut step;
        (step, built) = build_step(view, activity, expected, started, phases, built);
        if waiting {
            step.detail =
                Some("a refresh elsewhere, or readers of the relation being swapped".to_owned());
        }
        progress.report(&step);
    }
}

/// The progress step of `view` being built from its definition, as `activity` shows it: `phases`
/// name what it does before its indexes and after them. `past_load` says whether it was seen past
/// its load (indexing or analyzing) before; returned with the step, updated.
pub(super) fn build_step(
    view: ViewName,
    activity: Activity,
    expected: &ExpectedBuild,
    since: Instant,
    (loading, finishing): (&str, &str),
    past_load: bool,
) -> (Step, bool) {
    let past_load =
        past_load || matches!(activity, Activity::Indexing { .. } | Activity::Analyzing);
    let mut step = Step {
        phase: format!("{view}: {}", if past_load { finishing } else { loading }),
        detail: expected
            .rows
            .map(|rows| format!("about {} rows", thousands(rows.max(0) as u64))),
        remaining: expected
            .took
            .and_then(|took| took.checked_sub(since.elapsed())),
        ..Step::default()
    };
    match activity {
        Activity::Working => {}
        Activity::Indexing { phase, done, unit } => {
            step.phase = format!("{view}: building indexes");
            step.detail = Some(phase);
            (step.done, step.unit) = (done, unit);
        }
        Activity::Analyzing => step.phase = format!("{view}: analyzing"),
        Activity::WaitingForLock => step.phase = format!("{view}: waiting for a lock"),
    }
    (step, past_load)
}

fn relation(mode: Mode) -> &'static str {
    match mode {
        Mode::Refresh => "materialized view",
        Mode::Incremental => "table",
    }
}

/// One line for the terminal.
impl fmt::Display for Conversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let view = self.view.as_str();
        if !self.rebuilt {
            return write!(
                f,
                "{view:<22} {} ({}), as configured",
                self.to,
                relation(self.to)
            );
        }
        let what = if self.from == self.to {
            format!("{} rebuilt from its definition", relation(self.to))
        } else {
            format!(
                "{} -> {} ({})",
                relation(self.from),
                relation(self.to),
                self.to
            )
        };
        match self.rows {
            Some(rows) => write!(
                f,
                "{view:<22} {what}: {rows} rows built in {} ms while the old one served; readers waited {} ms for the swap ({} attempt{})",
                self.build_ms,
                self.swap_ms,
                self.swap_attempts,
                if self.swap_attempts == 1 { "" } else { "s" }
            ),
            None => write!(f, "{view:<22} {what}, not yet populated"),
        }
    }
}
