//! Repairing the table-backed read models (mode `incremental`) without stalling freshness: what a
//! full refresh of one does when a build beside is not needed. The triggers cannot see every write
//! (`session_replication_role = replica`, a restore), so now and then each table is compared with
//! its definition, as pt-table-checksum compares a table: one range of companies at a time, sized
//! to take about `CHUNK_TARGET`, compared without the maintenance lock (`read_model_differences()`),
//! so applies go on meanwhile; only a range that differs is fixed, by a round that recomputes just
//! its differing companies. The last range's round logs the repair.
//!
//! `Repair::step` does one range; the refresher interleaves steps with its other work, the CLI runs
//! them back to back. One process repairs a model at a time: a repair claims its models in
//! `read_model_work`, where its progress is reported.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::incremental::{self, RepairRange, Round};
use super::report::{RefreshMethod, RefreshReport, RefreshTrigger};
use super::work::{self, WorkKind};
use crate::config::RefreshSettings;
use crate::views::{PerView, ViewName};

/// How long comparing one range should take: long enough that the per-range costs (planning, the
/// round when it differs) stay small, short enough that its progress reports move.
const CHUNK_TARGET: Duration = Duration::from_millis(200);
/// Companies in the first range, and the bounds of the range's size.
const FIRST_CHUNK: i64 = 1_000;
const MIN_CHUNK: i64 = 20;
const MAX_CHUNK: i64 = 200_000;

/// A repair of some read models, walking the companies in id order.
#[derive(Debug)]
pub struct Repair {
    views: Vec<ViewName>,
    trigger: RefreshTrigger,
    requested_at: DateTime<Utc>,
    /// Whether this process has claimed the models (the walk has begun).
    claimed: bool,
    /// The last company id compared (`None`: from the first).
    after: Option<String>,
    chunk: i64,
    /// Whether `chunk` stays as set (`in_ranges_of`) rather than following `CHUNK_TARGET`.
    fixed_chunk: bool,
    chunks: i64,
    companies_done: i64,
    companies_total: i64,
    repaired: PerView<i64>,
    /// Models dropped from the walk, and why: another process repaired them after the request, or
    /// a build took them over.
    skipped: Vec<RefreshReport>,
}

/// What a step did, with the round it ran (which also applied what was pending, and may have
/// swapped builds in).
#[derive(Debug)]
pub enum Progressed {
    /// A range done, more to come.
    Continuing(Round),
    /// Another process holds the maintenance lock, or is repairing one of these models: the next
    /// step tries again.
    Waiting,
    /// The range's round failed, and was recorded as failed: the next step tries the same range.
    Failed(Round),
    /// The last range done: one report per model asked for.
    Finished {
        reports: Vec<RefreshReport>,
        round: Round,
    },
}

impl Repair {
    /// A repair of `views` (table-backed), asked for by `trigger` at `requested_at`.
    pub fn new(views: Vec<ViewName>, trigger: RefreshTrigger, requested_at: DateTime<Utc>) -> Self {
        Repair {
            views,
            trigger,
            requested_at,
            claimed: false,
            after: None,
            chunk: FIRST_CHUNK,
            fixed_chunk: false,
            chunks: 0,
            companies_done: 0,
            companies_total: 0,
            repaired: PerView::default(),
            skipped: Vec::new(),
        }
    }

    /// Walks in ranges of exactly `companies` companies, whatever they take (tests use small ones).
    pub fn in_ranges_of(mut self, companies: i64) -> Self {
        self.chunk = companies.max(1);
        self.fixed_chunk = true;
        self
    }

    pub fn views(&self) -> &[ViewName] {
        &self.views
    }

    pub fn trigger(&self) -> RefreshTrigger {
        self.trigger
    }

    /// Compares the next range of companies (claiming the models first).
    pub async fn step(
        &mut self,
        pool: &PgPool,
        settings: &RefreshSettings,
    ) -> Result<Progressed, sqlx::Error> {
        if !self.claimed {
            if let Some(waiting) = self.claim(pool).await? {
                return Ok(waiting);
            }
            if self.views.is_empty() {
                return Ok(Progressed::Finished {
                    reports: std::mem::take(&mut self.skipped),
                    round: Round::default(),
                });
            }
        }
        let size = self.chunk;
        let upto = next_bound(pool, self.after.as_deref(), size).await?;
        let last = upto.is_none();
        let started = Instant::now();
        let companies = differing(
            pool,
            &self.views,
            self.after.as_deref(),
            upto.as_deref(),
            settings,
        )
        .await?;
        let round = if companies.is_empty() && !last {
            // Nothing to fix here: no round, so no apply waited for this range.
            Round::default()
        } else {
            let range = RepairRange {
                views: self.views.clone(),
                companies,
                last,
                repaired_before: self.repaired,
            };
            let round = incremental::round(pool, self.trigger, Some(&range), settings).await?;
            if round.locked_elsewhere {
                return Ok(Progressed::Waiting);
            }
            if round.failed() {
                return Ok(Progressed::Failed(round));
            }
            round
        };
        self.resize(started.elapsed());
        for view in round.busy.iter().chain(&round.to_build) {
            self.drop_view(*view);
        }
        for view in &self.views {
            self.repaired[*view] += round.repaired[*view];
        }
        self.chunks += 1;
        self.companies_done += size;
        self.after = upto;
        if last {
            tracing::info!(
                views = ?self.views,
                ranges = self.chunks,
                companies = self.companies_done,
                rows_changed = ?self.repaired,
                "repair finished"
            );
            work::clear(pool, &self.views).await?;
            let mut reports: Vec<RefreshReport> = round
                .reports
                .iter()
                .filter(|r| self.views.contains(&r.view) && r.method == Some(RefreshMethod::Repair))
                .cloned()
                .collect();
            reports.append(&mut self.skipped);
            reports.sort_by_key(|r| r.view);
            return Ok(Progressed::Finished { reports, round });
        }
        self.report(pool).await;
        Ok(Progressed::Continuing(round))
    }

    /// Drops the models another process repaired after the request, and claims the rest; `Some`
    /// when another process is building or repairing one of them now.
    async fn claim(&mut self, pool: &PgPool) -> Result<Option<Progressed>, sqlx::Error> {
        let names: Vec<String> = self.views.iter().map(|v| v.as_str().to_owned()).collect();
        let done_elsewhere = sqlx::query_scalar!(
            r#"SELECT v AS "view!" FROM unnest($1::text[]) v
               WHERE EXISTS (SELECT 1 FROM materialized_view_log l
                             WHERE l.view_name = v AND l.status = 'ok' AND l.method = 'repair'
                               AND l.started_at >= $2)"#,
            &names,
            self.requested_at,
        )
        .fetch_all(pool)
        .await?;
        for name in done_elsewhere {
            if let Ok(view) = name.parse() {
                self.drop_view(view);
            }
        }
        if self.views.is_empty() {
            return Ok(None);
        }
        let claimed = work::claim_for_repair(pool, &self.views).await?;
        if claimed.len() < self.views.len() {
            work::clear(pool, &claimed).await?;
            return Ok(Some(Progressed::Waiting));
        }
        self.claimed = true;
        self.companies_total = sqlx::query_scalar!(r#"SELECT company_estimate() AS "n!""#)
            .fetch_one(pool)
            .await? as i64;
        tracing::info!(views = ?self.views, companies = self.companies_total, "repairing in ranges of companies");
        self.report(pool).await;
        Ok(None)
    }

    /// Leaves `view` out of the rest of the walk, reporting it skipped.
    fn drop_view(&mut self, view: ViewName) {
        if let Some(at) = self.views.iter().position(|v| *v == view) {
            self.views.remove(at);
            self.skipped
                .push(RefreshReport::skipped(view, self.requested_at));
        }
    }

    /// The next range's size, from how long this one took: smaller at once when it took too long,
    /// larger only a quarter at a time (a range that happened to be cheap doubling the next one made
    /// the slowest rounds).
    fn resize(&mut self, took: Duration) {
        if self.fixed_chunk {
            return;
        }
        let ratio = CHUNK_TARGET.as_secs_f64() / took.as_secs_f64().max(0.001);
        let next = (self.chunk as f64 * ratio.clamp(0.25, 1.25)) as i64;
        self.chunk = next.clamp(MIN_CHUNK, MAX_CHUNK);
    }

    /// Where the walk is, for `/admin/views` and `/metrics` (a failed report is only logged).
    async fn report(&self, pool: &PgPool) {
        let total = self.companies_total.max(self.companies_done);
        for view in &self.views {
            let report = work::Report {
                view: *view,
                kind: WorkKind::Repair,
                phase: "comparing with its definition",
                done: Some(self.companies_done.min(total)),
                total: Some(total),
                unit: Some("companies"),
                chunks: Some(self.chunks),
                rows: Some(self.repaired[*view]),
            };
            if let Err(error) = work::report(pool, &report).await {
                tracing::debug!(%error, "could not report the repair's progress");
            }
        }
    }

    /// Where the walk is: companies compared (about), of about how many, in how many ranges.
    pub fn position(&self) -> (i64, i64, i64) {
        (self.companies_done, self.companies_total, self.chunks)
    }
}

/// The companies with ids in `(after, upto]` whose rows in any of `views` differ from the
/// definitions, compared in one statement's snapshot without the maintenance lock.
async fn differing(
    pool: &PgPool,
    views: &[ViewName],
    after: Option<&str>,
    upto: Option<&str>,
    settings: &RefreshSettings,
) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    incremental::set_maintenance_settings(&mut tx, settings).await?;
    let names: Vec<&str> = views.iter().map(|view| view.as_str()).collect();
    let found = sqlx::query_scalar!(
        r#"SELECT companies AS "companies!" FROM read_model_differences($1, $2, $3)"#,
        &names as &[&str],
        after,
        upto,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut companies: Vec<String> = found.into_iter().flatten().collect();
    companies.sort();
    companies.dedup();
    Ok(companies)
}

/// The id of the company `chunk` places after `after` (the range's upper bound); `None` when fewer
/// are left (the last range, open-ended).
async fn next_bound(
    pool: &PgPool,
    after: Option<&str>,
    chunk: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT "id" FROM "Company" WHERE $1::text IS NULL OR "id" > $1 ORDER BY "id" OFFSET $2 LIMIT 1"#,
        after,
        chunk - 1,
    )
    .fetch_optional(pool)
    .await
}
