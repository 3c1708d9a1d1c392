//! What a backend building a relation is doing, from the statistics PostgreSQL keeps of it (index
//! builds, ANALYZE, lock waits): how conversions and builds beside report progress while their one
//! long statement runs. Sampled from another connection, since the building one is busy.

use sqlx::PgPool;

/// What the backend was doing when sampled.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    /// Running the statement, past none of the phases below (loading rows, mostly).
    Working,
    /// Building an index: its phase, and blocks or tuples done of a total when known.
    Indexing {
        phase: String,
        done: Option<(u64, u64)>,
        unit: &'static str,
    },
    Analyzing,
    /// Waiting for a lock (a refresh elsewhere, or readers of a relation being swapped).
    WaitingForLock,
}

/// The backend's activity now; `None` when it cannot be sampled (it ended, or the sample failed:
/// progress is never worth failing the work for).
pub async fn sample(pool: &PgPool, backend: i32) -> Option<Activity> {
    let sample = sqlx::query!(
        r#"SELECT a.wait_event_type, i.phase AS "index_phase?", i.blocks_done AS "blocks_done?",
                  i.blocks_total AS "blocks_total?", i.tuples_done AS "tuples_done?",
                  i.tuples_total AS "tuples_total?", z.phase AS "analyze_phase?"
           FROM pg_stat_activity a
           LEFT JOIN pg_stat_progress_create_index i ON i.pid = a.pid
           LEFT JOIN pg_stat_progress_analyze z ON z.pid = a.pid
           WHERE a.pid = $1"#,
        backend
    )
    .fetch_optional(pool)
    .await
    .ok()??;
    if let Some(phase) = sample.index_phase {
        let blocks = (sample.blocks_done, sample.blocks_total);
        let tuples = (sample.tuples_done, sample.tuples_total);
        let (done, unit) = match (blocks, tuples) {
            (_, (Some(done), Some(total))) if total > 0 => {
                (Some((done as u64, total as u64)), "tuples")
            }
            ((Some(done), Some(total)), _) if total > 0 => {
                (Some((done as u64, total as u64)), "blocks")
            }
            _ => (None, ""),
        };
        return Some(Activity::Indexing { phase, done, unit });
    }
    if sample.analyze_phase.is_some() {
        return Some(Activity::Analyzing);
    }
    if sample.wait_event_type.as_deref() == Some("Lock") {
        return Some(Activity::WaitingForLock);
    }
    Some(Activity::Working)
}

/// The backend's own process id, on the connection about to do the work.
pub async fn backend_pid(connection: &mut sqlx::PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT pg_backend_pid() AS "pid!""#)
        .fetch_one(connection)
        .await
}
