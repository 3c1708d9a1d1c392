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
pub struct FreshnessCache {
    ttl: Duration,
    entries: PerView<Mutex<Option<Entry>>>,
}

struct Entry {
    freshness: Freshness,
    /// Taken just before the query, so that the age derived from it is never too low.
    read_at: Instant,
    generation: u64,
}

impl FreshnessCache {
    /// `ttl` zero: no reuse, every call reads the log.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Default::default(),
        }
    }

    /// `generation` identifies the refreshes this process has finished (read it before calling).
    pub async fn read(
        &self,
        pool: &PgPool,
        view: ViewName,
        generation: u64,
    ) -> Result<Freshness, sqlx::Error> {
        if let Some(hit) = self.reusable(view, generation) {
            return Ok(hit);
        }
        let read_at = Instant::now();
        let freshness = read(pool, view).await?;
        // A view not yet populated is not cached: it must be served as soon as it is.
        if freshness.populated && !self.ttl.is_zero() {
            *self.entry(view) = Some(Entry {
                freshness: freshness.clone(),
                read_at,
                generation,
            });
        }
        Ok(freshness)
    }

    fn reusable(&self, view: ViewName, generation: u64) -> Option<Freshness> {
        let entry = self.entry(view);
        let entry = entry.as_ref()?;
        let elapsed = entry.read_at.elapsed();
        if elapsed >= self.ttl || entry.generation != generation {
            return None;
        }
        let mut freshness = entry.freshness.clone();
        if let Some(last) = &mut freshness.last_refresh {
            last.age_seconds += elapsed.as_secs_f64();
        }
        Some(freshness)
    }

    fn entry(&self, view: ViewName) -> std::sync::MutexGuard<'_, Option<Entry>> {
        self.entries[view].lock().expect("never poisoned")
    }
}
