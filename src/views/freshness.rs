//! How fresh a view's data is, read from `materialized_view_log` (so it is right whichever process
//! refreshed, applied to or rebuilt the view) and from the catalog (whether it was ever populated), and
//! the cache that spares each request that query.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{PerView, ViewName};

#[derive(Debug, Clone)]
pub struct Freshness {
    pub view: ViewName,
    pub populated: bool,
    /// The last successful refresh; `None` if the view was populated outside this service's refresh
    /// paths (so its age is unknown) or never.
    pub last_refresh: Option<LastRefresh>,
}

#[derive(Debug, Clone)]
pub struct LastRefresh {
    pub log_id: i64,
    /// The snapshot time the data reflects.
    pub started_at: DateTime<Utc>,
    /// Seconds between `started_at` and now, both on the database's clock (immune to clock skew
    /// between the API host and the database).
    pub age_seconds: f64,
}

#[tracing::instrument(skip(pool))]
pub async fn read(pool: &PgPool, view: ViewName) -> Result<Freshness, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT m.populated AS "populated!",
                  l.log_id AS "log_id?", l.started_at AS "started_at?",
                  extract(epoch FROM clock_timestamp() - l.started_at)::float8 AS "age_seconds?"
           FROM read_models m JOIN last_successful_refreshes() l ON l.view_name = m.name
           WHERE m.name = $1"#,
        view.as_str()
    )
    .fetch_one(pool)
    .await?;
    let last_refresh = match (row.log_id, row.started_at, row.age_seconds) {
        (Some(log_id), Some(started_at), Some(age_seconds)) => Some(LastRefresh {
            log_id,
            started_at,
            age_seconds,
        }),
        _ => None,
    };
    Ok(Freshness {
        view,
        populated: row.populated,
        last_refresh,
    })
}

/// The last freshness read per view, reused for `ttl` or until this process finishes a refresh of
/// the view (its `generation` changes), whichever comes first.
///
/// Without it every request ran two statements, and the freshness one cost PostgreSQL as much as
/// the data query (bench/README.md). A reused entry can only lag: after another instance's refresh
/// it reports the previous refresh (an age too high, never too low) for at most `ttl`; the age
/// itself keeps counting on the monotonic clock from the moment of the read.
///
/// One request reads a new entry (and prepares what serving its generation needs: the response
/// cache loads the rounds that lead to it); meanwhile the others reuse the previous entry, so that
/// none of them waits for the read, and none finds a generation not yet prepared.
pub struct FreshnessCache {
    ttl: Duration,
    slots: PerView<Mutex<Slot>>,
}

#[derive(Default)]
struct Slot {
    entry: Option<Entry>,
    /// A request is reading a new entry.
    reading: bool,
}

struct Entry {
    freshness: Freshness,
    /// Taken just before the query, so that the age derived from it is never too low.
    read_at: Instant,
    generation: u64,
}

impl Entry {
    /// The freshness as of now: the age counted on from the read.
    fn aged(&self) -> Freshness {
        let mut freshness = self.freshness.clone();
        if let Some(last) = &mut freshness.last_refresh {
            last.age_seconds += self.read_at.elapsed().as_secs_f64();
        }
        freshness
    }
}

/// Clears a slot's `reading` when the read ends, however it ends (an error, a request dropped).
struct Reading<'a>(&'a Mutex<Slot>);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("never poisoned").reading = false;
    }
}

impl FreshnessCache {
    /// `ttl` zero: no reuse, every call reads the log.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: Default::default(),
        }
    }

    /// The view's freshness. `generation` identifies the refreshes this process has finished (read
    /// it before calling); `prepare` runs with the log id of a newly read freshness before any
    /// other request is given it.
    pub async fn read<F, Fut>(
        &self,
        pool: &PgPool,
        view: ViewName,
        generation: u64,
        prepare: F,
    ) -> Result<Freshness, sqlx::Error>
    where
        F: FnOnce(Option<i64>) -> Fut,
        Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
    {
        let cell = &self.slots[view];
        let reading = {
            let mut slot = cell.lock().expect("never poisoned");
            match &slot.entry {
                Some(entry)
                    if entry.generation == generation && entry.read_at.elapsed() < self.ttl =>
                {
                    return Ok(entry.aged());
                }
                Some(entry) if slot.reading => return Ok(entry.aged()),
                _ => {}
            }
            if self.ttl.is_zero() {
                None
            } else {
                slot.reading = true;
                Some(Reading(cell))
            }
        };
        let read_at = Instant::now();
        let freshness = read(pool, view).await?;
        prepare(freshness.last_refresh.as_ref().map(|last| last.log_id)).await?;
        // A view not yet populated is not cached: it must be served as soon as it is.
        if reading.is_some() && freshness.populated {
            cell.lock().expect("never poisoned").entry = Some(Entry {
                freshness: freshness.clone(),
                read_at,
                generation,
            });
        }
        drop(reading);
        Ok(freshness)
    }
}
