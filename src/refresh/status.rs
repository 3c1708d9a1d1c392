//! What the database says about the views and their refreshes: for `GET /admin/views`,
//! `GET /admin/refresh/history` and the freshness gauges of `/metrics`. Read from the log and the
//! catalogs, so it is true whichever process refreshed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::metrics::ViewFreshness;

#[derive(Debug, Serialize, ToSchema)]
pub struct ViewStatus {
    pub view: String,
    pub populated: bool,
    /// Rows as of the last successful refresh.
    pub row_count: Option<i64>,
    /// The view with its indexes and TOAST, in bytes.
    pub total_bytes: i64,
    pub last_refresh: Option<LastSuccess>,
    pub last_error: Option<LastError>,
    /// Seconds since the snapshot of the data served now.
    pub data_age_seconds: Option<f64>,
    /// Whether any process holds this view's refresh lock right now.
    pub refreshing: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LastSuccess {
    /// The snapshot time the data reflects.
    pub started_at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    pub trigger: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LastError {
    pub message: String,
    pub occurred_at: DateTime<Utc>,
}

#[tracing::instrument(skip(pool))]
pub async fn view_statuses(pool: &PgPool) -> Result<Vec<ViewStatus>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT u.v AS "view!", c.relispopulated AS "populated!", pg_total_relation_size(c.oid) AS "total_bytes!",
                  ok.row_count, ok.started_at AS "ok_started_at?", ok.duration_ms AS "ok_duration_ms?",
                  ok.trigger AS "ok_trigger?",
                  extract(epoch FROM clock_timestamp() - ok.started_at)::float8 AS "age_seconds?",
                  err.error_message AS "error_message?", err.occurred_at AS "error_at?",
                  EXISTS (
                      SELECT 1 FROM pg_locks l
                      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        AND l.classid::bigint = (view_refresh_lock_key(u.v) >> 32) & 4294967295
                        AND l.objid::bigint = view_refresh_lock_key(u.v) & 4294967295
                  ) AS "refreshing!"
           FROM unnest(refreshable_views()) WITH ORDINALITY AS u(v, position)
           JOIN pg_class c ON c.oid = to_regclass(u.v)
           LEFT JOIN LATERAL (
               SELECT row_count, started_at, duration_ms, trigger FROM materialized_view_log
               WHERE view_name = u.v AND status = 'ok' ORDER BY started_at DESC LIMIT 1
           ) ok ON true
           LEFT JOIN LATERAL (
               SELECT error_message, occurred_at FROM materialized_view_errors
               WHERE view_name = u.v ORDER BY occurred_at DESC LIMIT 1
           ) err ON true
           ORDER BY u.position"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ViewStatus {
            view: r.view,
            populated: r.populated,
            row_count: r.row_count,
            total_bytes: r.total_bytes,
            last_refresh: match (r.ok_started_at, r.ok_trigger) {
                (Some(started_at), Some(trigger)) => Some(LastSuccess {
                    started_at,
                    duration_ms: r.ok_duration_ms,
                    trigger,
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
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    pub row_count: Option<i64>,
    pub error_message: Option<String>,
}

/// The newest `limit` log rows, newest first.
#[tracing::instrument(skip(pool))]
pub async fn history(pool: &PgPool, limit: i64) -> Result<Vec<RefreshLogEntry>, sqlx::Error> {
    sqlx::query_as!(
        RefreshLogEntry,
        "SELECT id, view_name AS view, trigger, status, started_at, finished_at, duration_ms, row_count, error_message
         FROM materialized_view_log ORDER BY started_at DESC, id DESC LIMIT $1",
        limit
    )
    .fetch_all(pool)
    .await
}

/// Last success and data age per view, for the gauges of `/metrics`.
pub async fn freshness_for_metrics(pool: &PgPool) -> Result<Vec<ViewFreshness>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT v AS "view!",
                  extract(epoch FROM ok.started_at)::float8 AS "last_success?",
                  extract(epoch FROM clock_timestamp() - ok.started_at)::float8 AS "age?"
           FROM unnest(refreshable_views()) v
           LEFT JOIN LATERAL (
               SELECT started_at FROM materialized_view_log
               WHERE view_name = v AND status = 'ok' ORDER BY started_at DESC LIMIT 1
           ) ok ON true"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ViewFreshness {
            view: r.view,
            last_success_unix: r.last_success,
            age_seconds: r.age,
        })
        .collect())
}
