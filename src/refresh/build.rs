//! Building table-backed read models beside the ones readers use (mode `incremental`): what brings up
//! to date a model that is empty, never synced, changed by a TRUNCATE or by more than the rebuild
//! share of companies, at any size. Readers keep the old table (or the 503 of a model never
//! populated) meanwhile, and the other models keep being applied to.
//!
//! A build runs on its own connection, outside the pool: it first takes each model's lock for the
//! session (rounds leave a locked model alone), then, in one REPEATABLE READ transaction, builds
//! every model asked for from that transaction's snapshot (`build_read_model()` in schema/current.sql):
//! loaded from the definition, indexed after the load, analyzed. The next round brings the builds up
//! to its snapshot and swaps them in, so nothing committed during the build is lost. Closing the
//! connection releases the locks, whatever happened.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};

use super::convert::{ExpectedBuild, build_step, expected_build};
use super::watch::{self, Activity};
use super::work::{self, WorkKind};
use crate::config::{RefreshSettings, pg_duration};
use crate::db::set_local;
use crate::progress::{Progress, Step};
use crate::views::ViewName;

/// How often the building backend is sampled for progress.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

const LOCK_NOT_AVAILABLE: &str = "55P03";

/// A model built and waiting to be swapped in.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub view: ViewName,
    pub rows: i64,
}

/// Builds those of `candidates` that need it once their locks are held (`read_models_to_build()`,
/// with `asked`: the models a full refresh was asked for, built too when they are empty while their
/// definition is not), all from one snapshot. A model whose lock another process keeps past
/// REFRESH_LOCK_TIMEOUT (its own build, a conversion) is left to it. Reports progress to `progress`
/// and to `read_model_work`.
#[tracing::instrument(skip_all, fields(candidates = ?candidates))]
pub async fn build_beside(
    pool: &PgPool,
    candidates: &[ViewName],
    asked: &[ViewName],
    settings: &RefreshSettings,
    progress: &Progress,
) -> Result<Vec<Built>, sqlx::Error> {
    let built = match BuildBeside::begin(pool, candidates, asked, settings).await {
        Ok(Some(build)) => build.finish(pool, progress).await,
        Ok(None) => Ok(Vec::new()),
        Err(error) => Err(error),
    };
    if let Err(error) = work::clear(pool, candidates).await {
        tracing::warn!(%error, "could not clear the build's progress reports");
    }
    built
}

/// A build begun: the models' locks held by its session, its snapshot taken. Dropped unfinished,
/// its connection closes, which rolls it back and releases the locks.
pub struct BuildBeside {
    connection: PgConnection,
    views: Vec<ViewName>,
}

impl BuildBeside {
    /// Takes the locks of `candidates` (in the catalog's order) on a connection of its own, keeps
    /// those that still need a build, and takes the snapshot they will be built from. `None` when
    /// none does.
    pub async fn begin(
        pool: &PgPool,
        candidates: &[ViewName],
        asked: &[ViewName],
        settings: &RefreshSettings,
    ) -> Result<Option<BuildBeside>, sqlx::Error> {
        let mut connection = pool.acquire().await?.detach();
        let locked = lock(&mut connection, candidates, settings).await?;
        // Under the locks, with a fresh snapshot: what still needs a build.
        let names = |views: &[ViewName]| -> Vec<String> {
            views.iter().map(|v| v.as_str().to_owned()).collect()
        };
        let still = sqlx::query_scalar!(
            r#"SELECT b AS "view!" FROM read_models_to_build($1, $2, $3) b"#,
            settings.incremental_rebuild_share,
            &names(asked),
            &names(&locked),
        )
        .fetch_all(&mut connection)
        .await?;
        let views = ViewName::named_in(&locked, &still);
        if views.is_empty() {
            let _ = connection.close().await;
            return Ok(None);
        }
        // The transaction's snapshot is taken by its first statement, after the locks: rounds that
        // moved these models' data on committed before it.
        sqlx::query!("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut connection)
            .await?;
        // The session's short lock_timeout was for the models' locks; reading the base tables may
        // wait for a writer's lock as long as the build may run.
        let timeout = pg_duration(settings.refresh_build_timeout);
        let local = [
            ("statement_timeout", timeout.as_str()),
            ("lock_timeout", timeout.as_str()),
            ("maintenance_work_mem", settings.refresh_work_mem.as_str()),
            ("work_mem", settings.refresh_work_mem.as_str()),
        ];
        set_local(&mut connection, &local).await?;
        Ok(Some(BuildBeside { connection, views }))
    }

    /// The models being built.
    pub fn views(&self) -> &[ViewName] {
        &self.views
    }

    /// Builds the models from the snapshot, each recorded for the next round to swap in, commits and
    /// closes the session (releasing the locks).
    pub async fn finish(
        mut self,
        pool: &PgPool,
        progress: &Progress,
    ) -> Result<Vec<Built>, sqlx::Error> {
        tracing::info!(views = ?self.views, "building beside the tables readers use");
        let backend = watch::backend_pid(&mut self.connection).await?;
        let mut expected = Vec::with_capacity(self.views.len());
        for view in &self.views {
            expected.push((*view, expected_build(pool, *view).await?));
        }
        let current = Mutex::new(None);
        let building = build_all(&mut self.connection, &self.views, &current);
        let built = tokio::select! {
            built = building => built?,
            never = report_progress(pool, backend, &expected, &current, progress) => match never {},
        };
        progress.finish();
        let _ = self.connection.close().await;
        Ok(built)
    }
}

/// Takes the session locks of those of `candidates` that no other process keeps past
/// REFRESH_LOCK_TIMEOUT; returns those taken.
async fn lock(
    connection: &mut PgConnection,
    candidates: &[ViewName],
    settings: &RefreshSettings,
) -> Result<Vec<ViewName>, sqlx::Error> {
    let lock_timeout = pg_duration(settings.refresh_lock_timeout);
    sqlx::query_scalar!("SELECT set_config('lock_timeout', $1, false)", lock_timeout)
        .fetch_one(&mut *connection)
        .await?;
    let mut locked = Vec::new();
    for view in ViewName::ALL.into_iter().filter(|v| candidates.contains(v)) {
        let lock = sqlx::query!(
            "SELECT pg_advisory_lock(view_refresh_lock_key($1))",
            view.as_str()
        )
        .fetch_one(&mut *connection)
        .await;
        match lock {
            Ok(_) => locked.push(view),
            Err(sqlx::Error::Database(error))
                if error.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
            {
                tracing::info!(%view, "another process is building or converting it; leaving it to that one");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(locked)
}

/// Builds `views` in the open transaction and commits it, noting in `current` which one is being
/// built.
async fn build_all(
    connection: &mut PgConnection,
    views: &[ViewName],
    current: &Mutex<Option<(ViewName, Instant)>>,
) -> Result<Vec<Built>, sqlx::Error> {
    let mut built = Vec::with_capacity(views.len());
    for view in views {
        *current.lock().expect("not poisoned") = Some((*view, Instant::now()));
        let rows = sqlx::query_scalar!("SELECT build_read_model($1)", view.as_str())
            .fetch_one(&mut *connection)
            .await?;
        if let Some(rows) = rows {
            tracing::info!(%view, rows, "built beside; the next round swaps it in");
            built.push(Built { view: *view, rows });
        }
    }
    *current.lock().expect("not poisoned") = None;
    sqlx::query!("COMMIT").execute(&mut *connection).await?;
    Ok(built)
}

/// Every `SAMPLE_EVERY`, until the build ends (and this future is dropped): what the building
/// backend does, to `progress` and to `read_model_work` for each model (queued, building, built).
async fn report_progress(
    pool: &PgPool,
    backend: i32,
    expected: &[(ViewName, ExpectedBuild)],
    current: &Mutex<Option<(ViewName, Instant)>>,
    progress: &Progress,
) -> std::convert::Infallible {
    let mut loaded: Vec<ViewName> = Vec::new();
    loop {
        let now = *current.lock().expect("not poisoned");
        let activity = watch::sample(pool, backend).await;
        if let (Some((view, since)), Some(activity)) = (now, activity) {
            let position = expected.iter().position(|(v, _)| *v == view).unwrap_or(0);
            let step = step(view, since, &expected[position].1, activity, &mut loaded);
            progress.report(&step);
            for (index, (other, _)) in expected.iter().enumerate() {
                let phase = if *other == view {
                    step.phase
                        .trim_start_matches(&format!("{view}: "))
                        .to_owned()
                } else if index < position {
                    "built, waiting to be swapped in".to_owned()
                } else {
                    format!("queued behind {view}")
                };
                let (done, total) = match (*other == view, step.done) {
                    (true, Some((done, total))) => (Some(done as i64), Some(total as i64)),
                    _ => (None, None),
                };
                let report = work::Report {
                    view: *other,
                    kind: WorkKind::Build,
                    phase: &phase,
                    done,
                    total,
                    unit: done.map(|_| step.unit),
                    chunks: None,
                    rows: None,
                };
                if let Err(error) = work::report(pool, &report).await {
                    tracing::debug!(%error, "could not report the build's progress");
                }
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// One model's step: loading, indexing, analyzing, finishing. `loaded`: the models past their load.
fn step(
    view: ViewName,
    since: Instant,
    expected: &ExpectedBuild,
    activity: Activity,
    loaded: &mut Vec<ViewName>,
) -> Step {
    let phases = (
        "loading rows from its definition",
        "finishing (row count, search words)",
    );
    let (step, past_load) = build_step(
        view,
        activity,
        expected,
        since,
        phases,
        loaded.contains(&view),
    );
    if past_load && !loaded.contains(&view) {
        loaded.push(view);
    }
    step
}
