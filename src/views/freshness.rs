//! How fresh a view's data is, read from `materialized_view_log` (so it is right whichever process
//! refreshed the view) and from `pg_class` (whether the view was ever populated).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::ViewName;

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
        r#"SELECT c.relispopulated AS "populated!",
                  l.id AS "log_id?", l.started_at AS "started_at?",
                  extract(epoch FROM clock_timestamp() - l.started_at)::float8 AS "age_seconds?"
           FROM pg_class c
           LEFT JOIN LATERAL (
               SELECT id, started_at FROM materialized_view_log
               WHERE view_name = $1 AND status = 'ok'
               ORDER BY started_at DESC LIMIT 1
           ) l ON true
           WHERE c.oid = to_regclass($1)"#,
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
