//! What the database says about the views and their refreshes: for `GET /admin/views`,
//! `GET /admin/refresh/history` and the freshness and mode gauges of `/metrics`. Read from the log and
//! the catalogs, so it is true whichever process refreshed or converted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::work::{self, Work};
use crate::metrics::{ViewCacheCounts, ViewFreshness, WorkGauges};
use crate::views::{Mode, ViewName};

#[derive(Debug, Serialize, ToSchema)]
pub struct ViewStatus {
    pub view: ViewName,
    /// How it is kept fresh now: `refresh` (a materialized view) or `incremental` (a table).
    pub mode: Option<Mode>,
    pub populated: bool,
    /// Rows as of the last successful refresh.
    pub row_count: Option<i64>,
    /// The view with its indexes and TOAST, in bytes.
    pub total_bytes: i64,
    pub last_refresh: Option<LastSuccess>,
    pub last_error: Option<LastError>,
    /// Seconds since the snapshot of the data served now.
    pub data_age_seconds: Option<f64>,
    /// Whether any process is refreshing it right now (holds its refresh lock or, for a table, the
    /// incremental maintenance lock).
    pub refreshing: bool,
    /// A build beside or a repair in progress (any process), as last reported: its phase and how
    /// far it is. Null when none runs.
    pub work: Option<Work>,
    /// This instance's response cache for the view's endpoints since it started (absent with
    /// `RESPONSE_CACHE_BYTES=0`).
    pub response_cache: Option<ViewCacheCounts>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LastSuccess {
    /// The snapshot time the data reflects.
    pub started_at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    pub trigger: String,
    /// `refresh`, `apply`, `rebuild`, `build` or `repair`.
    pub method: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LastError {
    pub message: String,
    pub occurred_at: DateTime<Utc>,
}

#[tracing::instrument(skip(pool))]
pub async fn view_statuses(pool: &PgPool) -> Result<Vec<ViewStatus>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT m.name AS "view!", m.mode, m.populated AS "populated!",
                  pg_total_relation_size(to_regclass(m.name)) AS "total_bytes!",
                  ok.row_count, ok.started_at AS "ok_started_at?", ok.duration_ms AS "ok_duration_ms?",
                  ok.trigger AS "ok_trigger?", l.method AS "ok_method?",
                  extract(epoch FROM clock_timestamp() - ok.started_at)::float8 AS "age_seconds?",
                  err.error_message AS "error_message?", err.occurred_at AS "error_at?",
                  EXISTS (
                      SELECT 1 FROM pg_locks k
                      WHERE k.granted AND k.pid <> pg_backend_pid()
                        AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        AND CASE m.mode
                            WHEN 'incremental' THEN k.locktype = 'relation'
                                AND k.relation = 'read_model_catalog'::regclass AND k.mode = 'ShareRowExclusiveLock'
                            ELSE k.locktype = 'advisory' AND k.objsubid = 1
                                AND k.classid::bigint = (m.lock_key >> 32) & 4294967295
                                AND k.objid::bigint = m.lock_key & 4294967295
                        END
                  ) AS "refreshing!"
           FROM read_models m
           JOIN last_successful_refreshes() ok ON ok.view_name = m.name
           LEFT JOIN materialized_view_log l ON l.id = ok.log_id
           LEFT JOIN LATERAL (
               SELECT error_message, occurred_at FROM materialized_view_errors
               WHERE view_name = m.name ORDER BY occurred_at DESC LIMIT 1
           ) err ON true
           ORDER BY m.position"#
    )
    .fetch_all(pool)
    .await?;
    let mut works = work::in_progress(pool).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let view: ViewName = r.view.parse().ok()?;
            let work = works
                .iter()
                .position(|(v, _)| *v == view)
                .map(|at| works.swap_remove(at).1);
            Some(ViewStatus {
                view,
                mode: r.mode.and_then(|mode| mode.parse().ok()),
                populated: r.populated,
                row_count: r.row_count,
                total_bytes: r.total_bytes,
                last_refresh: match (r.ok_started_at, r.ok_trigger) {
                    (Some(started_at), Some(trigger)) => Some(LastSuccess {
                        started_at,
                        duration_ms: r.ok_duration_ms,
                        trigger,
                        method: r.ok_method,
                    }),
                    _ => None,
                },
                last_error: match (r.error_message, r.error_at) {
                    (Some(message), Some(occurred_at)) => Some(LastError {
                        message,
                        occurred_at,
                    }),
                    _ => None,
                },
                data_age_seconds: r.age_seconds,
                refreshing: r.refreshing,
                work,
                response_cache: None,
            })
        })
        .collect())
}

/// One row of `materialized_view_log`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshLogEntry {
    pub id: i64,
    pub view: String,
    pub trigger: String,
    pub status: String,
    /// `refresh`, `apply`, `rebuild`, `build` or `repair` (for successes).
    pub method: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    pub row_count: Option<i64>,
    /// For an apply: the companies whose rows were recomputed.
    pub companies_changed: Option<i64>,
    /// For an apply or rebuild: rows deleted plus rows inserted.
    pub rows_changed: Option<i64>,
    pub error_message: Option<String>,
}

/// Which log rows `history` lists: the newest `limit` before `before` (an id), of one view when given.
#[derive(Debug)]
pub struct HistoryFilter {
    pub view: Option<ViewName>,
    pub before: Option<i64>,
    pub limit: i64,
}

/// Log rows, newest first (by the snapshot time, then id; `before` continues after that row).
#[tracing::instrument(skip(pool))]
pub async fn history(
    pool: &PgPool,
    filter: &HistoryFilter,
) -> Result<Vec<RefreshLogEntry>, sqlx::Error> {
    sqlx::query_as!(
        RefreshLogEntry,
        "SELECT id, view_name AS view, trigger, status, method, started_at, finished_at, duration_ms, row_count,
                companies_changed, rows_changed, error_message
         FROM materialized_view_log
         WHERE ($1::text IS NULL OR view_name = $1)
           AND ($2::bigint IS NULL
                OR (started_at, id) < (SELECT started_at, id FROM materialized_view_log WHERE id = $2))
         ORDER BY started_at DESC, id DESC LIMIT $3",
        filter.view.map(ViewName::as_str),
        filter.before,
        filter.limit
    )
    .fetch_all(pool)
    .await
}

/// The refresh log's last hours, per view, in equal buckets (what the console charts).
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub bucket_seconds: f64,
    pub views: Vec<ViewTimeline>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ViewTimeline {
    pub view: ViewName,
    /// Oldest first, one per bucket of the span.
    pub buckets: Vec<TimelineBucket>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineBucket {
    pub starts_at: DateTime<Utc>,
    /// Refreshes, applies and rebuilds that started in the bucket, failed or not.
    pub runs: i64,
    pub failures: i64,
    pub max_duration_ms: Option<i64>,
    pub mean_duration_ms: Option<f64>,
    /// The oldest the served data was at any time in the bucket (just before a refresh landed, or
    /// at its end); null while the view had never been refreshed.
    pub max_data_age_seconds: Option<f64>,
}

/// The last `hours` of the log in `buckets` buckets per view. One pass over the span's rows (the
/// `started_at` index) plus each view's last success before it: bounded by the span, not the log.
#[tracing::instrument(skip(pool))]
pub async fn timeline(pool: &PgPool, hours: u32, buckets: i32) -> Result<Timeline, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT view_name AS "view!", since AS "since!", until AS "until!", starts_at AS "starts_at!",
                  runs AS "runs!", failures AS "failures!", max_duration_ms, mean_duration_ms,
                  max_data_age_seconds
           FROM refresh_timeline($1, $2)"#,
        hours as i32,
        buckets,
    )
    .fetch_all(pool)
    .await?;
    let (since, until) = rows
        .first()
        .map(|r| (r.since, r.until))
        .unwrap_or_else(|| (Utc::now(), Utc::now()));
    let mut views: Vec<ViewTimeline> = Vec::new();
    for row in rows {
        let Ok(view) = row.view.parse::<ViewName>() else {
            continue;
        };
        if views.last().is_none_or(|v| v.view != view) {
            views.push(ViewTimeline {
                view,
                buckets: Vec::new(),
            });
        }
        views
            .last_mut()
            .expect("pushed above")
            .buckets
            .push(TimelineBucket {
                starts_at: row.starts_at,
                runs: row.runs,
                failures: row.failures,
                max_duration_ms: row.max_duration_ms,
                mean_duration_ms: row.mean_duration_ms,
                max_data_age_seconds: row.max_data_age_seconds,
            });
    }
    Ok(Timeline {
        since,
        until,
        bucket_seconds: (until - since).num_milliseconds() as f64 / 1000.0 / f64::from(buckets),
        views,
    })
}

/// Mode, last success, data age and work in progress per view, for the gauges of `/metrics`.
pub async fn freshness_for_metrics(pool: &PgPool) -> Result<Vec<ViewFreshness>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT m.name AS "view!", m.mode,
                  extract(epoch FROM ok.started_at)::float8 AS "last_success?",
                  extract(epoch FROM clock_timestamp() - ok.started_at)::float8 AS "age?"
           FROM read_models m JOIN last_successful_refreshes() ok ON ok.view_name = m.name
           ORDER BY m.position"#
    )
    .fetch_all(pool)
    .await?;
    let works = work::in_progress(pool).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let view: ViewName = r.view.parse().ok()?;
            Some(ViewFreshness {
                view,
                mode: r.mode.and_then(|mode| mode.parse().ok()),
                last_success_unix: r.last_success,
                age_seconds: r.age,
                work: works
                    .iter()
                    .find(|(v, _)| *v == view)
                    .map(|(_, w)| WorkGauges {
                        kind: w.kind.as_str(),
                        done: w.done,
                        total: w.total,
                        chunks: w.chunks,
                        rows: w.rows,
                    }),
            })
        })
        .collect())
}
