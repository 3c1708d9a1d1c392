//! The in-process refresher: one worker that runs this process's refreshes and incremental rounds,
//! one at a time (two at once would only fight over the same cores and the same rows), and the
//! builds beside and repairs it starts in the background (they take minutes at scale, and the
//! worker's applies go on meanwhile).
//!
//! Jobs: a full refresh of a view, and an incremental apply (every table-backed view at once). A full
//! refresh of a materialized view is one REFRESH ... CONCURRENTLY; of a table, a build beside (when
//! only its whole definition can bring it up to date) or else a repair, walked one range of
//! companies at a time beside the worker. Requests are single-flight: a request
//! that arrives while a batch runs cannot join it (its snapshot may predate the write that prompted
//! the request), so it waits for the next batch, which serves every request queued meanwhile: a
//! burst of requests costs at most two runs. Across processes, the advisory locks (refreshes,
//! builds), the catalog lock (rounds) and `read_model_work` (repairs) do the same job.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::build::build_beside;
use super::full::{Modes, in_mode, modes, to_build};
use super::incremental::{self, Round};
use super::materialized::refresh_materialized_view;
use super::repair::{Progressed, Repair};
use super::report::{
    RefreshMethod, RefreshReport, RefreshStatus, RefreshTrigger, database_message, record_failure,
};
use super::{sleep_until_optional, stopped};
use crate::config::RefreshSettings;
use crate::metrics::{Metrics, RefreshObservation};
use crate::progress::Progress;
use crate::views::{Mode, PerView, ViewName};

/// A refresh that could not even be recorded (the database was unreachable), or a refresher that is
/// shutting down.
pub type RefreshOutcome = Result<RefreshReport, String>;

#[derive(Clone)]
pub struct Refresher {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    settings: RefreshSettings,
    metrics: Arc<Metrics>,
    queue: Mutex<Queue>,
    tables: Mutex<TableWork>,
    wake: Notify,
    busy: AtomicBool,
    /// Per view: whether a job touching it runs now, and how many have finished (whatever their
    /// outcome), which lets readers of a view's freshness tell whether what they read is current.
    running: PerView<AtomicBool>,
    finished: PerView<AtomicU64>,
    /// Each view's mode as last read from the database.
    modes: Mutex<Modes>,
}

#[derive(Default)]
struct Queue {
    full: PerView<Vec<Waiter>>,
    apply: bool,
    /// After a failed apply, the next one (asked for at once, so that nothing waits for another
    /// change to be retried) waits until then, doubling up to 30 s: a persistent failure is not
    /// logged four times a second.
    apply_backoff: Option<(Instant, Duration)>,
}

impl Queue {
    fn backing_off(&self) -> Option<Instant> {
        self.apply_backoff
            .map(|(until, _)| until)
            .filter(|until| Instant::now() < *until)
    }
}

/// The table-backed views' longer work: builds beside, and the repair walking now.
#[derive(Default)]
struct TableWork {
    /// The views a build of this process is building now.
    building: PerView<bool>,
    /// Full refreshes waiting for a build's swap.
    build_waiters: PerView<Vec<Waiter>>,
    /// After a failed build, the next one the rounds ask for waits until then (a request does not).
    build_backoff: PerView<Option<(Instant, Duration)>>,
    /// Whether a repair of this process walks now.
    repairing: bool,
    /// Full refreshes that came while a repair walked: the next repair serves them.
    repair_next: PerView<Vec<Waiter>>,
}

struct Waiter {
    trigger: RefreshTrigger,
    reply: oneshot::Sender<RefreshOutcome>,
}

/// What one batch does.
struct Batch {
    full: PerView<Vec<Waiter>>,
    apply: bool,
}

impl Batch {
    fn is_empty(&self) -> bool {
        !self.apply && self.full.iter().all(|(_, waiters)| waiters.is_empty())
    }

    fn views(&self) -> Vec<ViewName> {
        ViewName::ALL
            .into_iter()
            .filter(|view| !self.full[*view].is_empty())
            .collect()
    }

    fn trigger(&self, view: ViewName) -> RefreshTrigger {
        self.full[view][0].trigger
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How soon a repair tries again while another process holds the maintenance lock or the models.
const REPAIR_WAIT: Duration = Duration::from_millis(100);
/// A repair whose range failed this many times in a row ends, its waiters told why (the next repair,
/// by schedule or by hand, starts over).
const REPAIR_ATTEMPTS: u32 = 3;

/// The back-off after one more failure.
fn next_backoff(last: Option<Duration>) -> Duration {
    last.map_or(FIRST_BACKOFF, |wait| (wait * 2).min(MAX_BACKOFF))
}

impl Refresher {
    /// Starts the worker; it stops when `shutdown` turns true, after the job at hand.
    pub fn start(
        pool: PgPool,
        settings: RefreshSettings,
        metrics: Arc<Metrics>,
        modes: Modes,
        shutdown: watch::Receiver<bool>,
    ) -> (Refresher, JoinHandle<()>) {
        let refresher = Refresher {
            inner: Arc::new(Inner {
                pool,
                settings,
                metrics,
                queue: Mutex::default(),
                tables: Mutex::default(),
                wake: Notify::new(),
                busy: AtomicBool::new(false),
                running: Default::default(),
                finished: Default::default(),
                modes: Mutex::new(modes),
            }),
        };
        let worker = tokio::spawn(refresher.clone().work(shutdown));
        (refresher, worker)
    }

    /// Asks for a full refresh of `view`; the receiver gets the outcome of the refresh that serves it.
    pub fn request(
        &self,
        view: ViewName,
        trigger: RefreshTrigger,
    ) -> oneshot::Receiver<RefreshOutcome> {
        let (reply, outcome) = oneshot::channel();
        self.queue().full[view].push(Waiter { trigger, reply });
        self.inner.wake.notify_one();
        outcome
    }

    /// Asks for a full refresh of every view, without waiting.
    pub fn request_all(&self, trigger: RefreshTrigger) {
        drop(self.request_in_mode(Mode::Refresh, trigger));
        drop(self.request_in_mode(Mode::Incremental, trigger));
    }

    /// Asks for a full refresh of every view in `mode` (as last seen); their outcomes, for a caller
    /// that wants them.
    pub fn request_in_mode(
        &self,
        mode: Mode,
        trigger: RefreshTrigger,
    ) -> Vec<oneshot::Receiver<RefreshOutcome>> {
        in_mode(&self.modes(), &ViewName::ALL, mode)
            .into_iter()
            .map(|view| self.request(view, trigger))
            .collect()
    }

    /// Asks for the pending changes to be applied to the table-backed views (a batch without any
    /// does nothing).
    pub fn request_apply(&self) {
        self.queue().apply = true;
        self.inner.wake.notify_one();
    }

    /// Refreshes `view` in full (or waits for the refresh that serves this request); its outcome.
    pub async fn refresh(&self, view: ViewName, trigger: RefreshTrigger) -> RefreshOutcome {
        self.request(view, trigger)
            .await
            .unwrap_or_else(|_| Err("the refresher is shutting down".to_owned()))
    }

    /// Whether nothing runs and nothing waits.
    pub fn is_idle(&self) -> bool {
        let queue = self.queue();
        let tables = self.tables();
        !self.inner.busy.load(Ordering::SeqCst)
            && !queue.apply
            && queue.full.iter().all(|(_, waiters)| waiters.is_empty())
            && !tables.repairing
            && !tables.building.contains(&true)
    }

    /// Whether this process is refreshing, applying to, building or repairing `view` right now.
    pub fn is_running(&self, view: ViewName) -> bool {
        self.inner.running[view].load(Ordering::SeqCst)
    }

    /// Changes whenever this process finishes a job touching `view`.
    pub fn generation(&self, view: ViewName) -> u64 {
        self.inner.finished[view].load(Ordering::SeqCst)
    }

    /// How many jobs this process has finished, over all views.
    pub fn finished_jobs(&self) -> u64 {
        ViewName::ALL
            .iter()
            .map(|view| self.generation(*view))
            .sum()
    }

    /// Each view's mode as last read from the database.
    pub fn modes(&self) -> Modes {
        *self.inner.modes.lock().expect("not poisoned")
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.queue.lock().expect("not poisoned")
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, TableWork> {
        self.inner.tables.lock().expect("not poisoned")
    }

    /// The work queued now; an apply stays queued while backing off. Also when to look again if
    /// nothing is to be done now but an apply waits for its back-off.
    fn take_batch(&self) -> (Batch, Option<Instant>) {
        let mut queue = self.queue();
        let backing_off = queue.backing_off();
        let apply = queue.apply && backing_off.is_none();
        if apply {
            queue.apply = false;
        }
        let batch = Batch {
            full: std::mem::take(&mut queue.full),
            apply,
        };
        (batch, backing_off.filter(|_| queue.apply))
    }

    async fn work(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let (batch, retry_at) = self.take_batch();
            if batch.is_empty() {
                tokio::select! {
                    () = self.inner.wake.notified() => continue,
                    () = sleep_until_optional(retry_at) => continue,
                    () = stopped(&mut shutdown) => return,
                }
            }
            if *shutdown.borrow() {
                return; // dropping the waiters tells them the refresher is shutting down
            }
            self.inner.busy.store(true, Ordering::SeqCst);
            self.run(batch).await;
            self.inner.busy.store(false, Ordering::SeqCst);
        }
    }

    async fn run(&self, mut batch: Batch) {
        // Conversions happen at other processes' startup: read the modes afresh. If that fails (a
        // dead pooled connection after a restart, say), the last seen ones do; the job then fails
        // or succeeds on its own, and is recorded either way.
        let modes = match modes(&self.inner.pool).await {
            Ok(modes) => {
                *self.inner.modes.lock().expect("not poisoned") = modes;
                modes
            }
            Err(error) => {
                tracing::warn!(%error, "could not read the views' modes; using the last seen");
                self.modes()
            }
        };
        let asked = batch.views();
        for view in in_mode(&modes, &asked, Mode::Refresh) {
            let trigger = batch.trigger(view);
            let refresh = async {
                refresh_materialized_view(&self.inner.pool, view, trigger, &self.inner.settings)
                    .await
                    .map(|report| vec![report])
            };
            let outcome = self
                .job(&[view], trigger, refresh, |reports| reports)
                .await
                .map(|mut reports| reports.remove(0));
            reply(std::mem::take(&mut batch.full[view]), outcome);
        }
        let tables = in_mode(&modes, &asked, Mode::Incremental);
        if !tables.is_empty() {
            self.start_table_work(&mut batch, &tables).await;
        }
        if batch.apply && modes.contains(&Some(Mode::Incremental)) {
            self.apply_round(&modes).await;
        }
        for view in ViewName::ALL {
            let waiters = std::mem::take(&mut batch.full[view]);
            reply(waiters, Err(format!("{view} is missing from the database")));
        }
    }

    /// Full refreshes of table-backed `tables`: the ones only their whole definition can bring up
    /// to date are built beside; the others join a repair (the one walking, or the next).
    async fn start_table_work(&self, batch: &mut Batch, tables: &[ViewName]) {
        let to_build = match to_build(&self.inner.pool, tables, &self.inner.settings).await {
            Ok(to_build) => to_build,
            Err(error) => {
                for view in tables {
                    reply(
                        std::mem::take(&mut batch.full[*view]),
                        Err(error.to_string()),
                    );
                }
                return;
            }
        };
        let trigger = batch.trigger(tables[0]);
        let mut repair = PerView::<Vec<Waiter>>::default();
        {
            let mut work = self.tables();
            for view in tables {
                let waiters = std::mem::take(&mut batch.full[*view]);
                if to_build.contains(view) {
                    work.build_waiters[*view].extend(waiters);
                } else if work.repairing {
                    work.repair_next[*view].extend(waiters);
                } else {
                    repair[*view] = waiters;
                }
            }
        }
        self.spawn_build(&to_build, tables);
        self.start_repair(repair, trigger);
    }

    /// Starts a repair of the views `waiters` has waiters for (if any), asked for by the first
    /// waiter's trigger (`trigger` when it has none), walking beside the worker.
    fn start_repair(&self, waiters: PerView<Vec<Waiter>>, trigger: RefreshTrigger) {
        let views: Vec<ViewName> = ViewName::ALL
            .into_iter()
            .filter(|view| !waiters[*view].is_empty())
            .collect();
        let Some(first) = views.first() else {
            return;
        };
        let trigger = waiters[*first].first().map_or(trigger, |w| w.trigger);
        self.tables().repairing = true;
        let this = self.clone();
        tokio::spawn(async move {
            let repair = Repair::new(views.clone(), trigger, Utc::now());
            let outcome = this.walk(repair).await;
            let requested_at = Utc::now();
            for (view, waiters) in waiters.into_views() {
                let reply_with = match &outcome {
                    Ok(reports) => Ok(reports
                        .iter()
                        .find(|r| r.view == view)
                        .cloned()
                        .unwrap_or_else(|| RefreshReport::skipped(view, requested_at))),
                    Err(failures) => failures
                        .iter()
                        .find(|r| r.view == view)
                        .cloned()
                        .ok_or_else(|| format!("the repair of {view} failed")),
                };
                reply(waiters, reply_with);
            }
            let next = {
                let mut work = this.tables();
                work.repairing = false;
                std::mem::take(&mut work.repair_next)
            };
            this.start_repair(next, trigger);
        });
    }

    /// Walks `repair` to its end: each model's report, or (a range having failed `REPAIR_ATTEMPTS`
    /// times in a row, or the database lost) the failures to tell its waiters.
    async fn walk(&self, mut repair: Repair) -> Result<Vec<RefreshReport>, Vec<RefreshReport>> {
        let mut failures = 0;
        let mut backoff = None;
        loop {
            let started = std::time::Instant::now();
            let step = repair.step(&self.inner.pool, &self.inner.settings).await;
            let round = match step {
                Ok(Progressed::Continuing(round)) => {
                    failures = 0;
                    round
                }
                Ok(Progressed::Waiting) => {
                    tokio::time::sleep(REPAIR_WAIT).await;
                    continue;
                }
                Ok(Progressed::Failed(round)) => {
                    self.rounded(&repair, &round, started.elapsed());
                    failures += 1;
                    if failures >= REPAIR_ATTEMPTS {
                        tracing::warn!(views = ?repair.views(), "a repair's range failed {REPAIR_ATTEMPTS} times in a row; the repair ends");
                        self.clear_reports(repair.views()).await;
                        return Err(round.reports);
                    }
                    let wait = next_backoff(backoff);
                    backoff = Some(wait);
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(Progressed::Finished { reports, round }) => {
                    self.rounded(&repair, &round, started.elapsed());
                    return Ok(reports);
                }
                Err(error) => {
                    tracing::error!(%error, "a repair could not reach the database; it ends");
                    self.clear_reports(repair.views()).await;
                    return Err(Vec::new());
                }
            };
            self.rounded(&repair, &round, started.elapsed());
        }
    }

    /// What a repair's round did: its reports observed, and, when it changed data, what readers'
    /// freshness and the rounds' swaps and builds make of it.
    fn rounded(&self, repair: &Repair, round: &Round, took: Duration) {
        if round.reports.is_empty() {
            return;
        }
        for report in &round.reports {
            self.observe(report, repair.trigger(), took);
        }
        for view in ViewName::ALL {
            self.inner.finished[view].fetch_add(1, Ordering::SeqCst);
        }
        self.after_round(round);
    }

    async fn clear_reports(&self, views: &[ViewName]) {
        if let Err(error) = super::work::clear(&self.inner.pool, views).await {
            tracing::warn!(%error, "could not clear the repair's progress reports");
        }
    }

    /// One round applying the pending changes to every table-backed view.
    async fn apply_round(&self, modes: &Modes) {
        let tables = in_mode(modes, &ViewName::ALL, Mode::Incremental);
        let trigger = RefreshTrigger::Incremental;
        let round = incremental::round(&self.inner.pool, trigger, None, &self.inner.settings);
        let round = self
            .job(&tables, trigger, round, |round: &Round| &round.reports)
            .await;
        self.note_apply_outcome(&round);
        if let Ok(round) = &round {
            self.after_round(round);
        }
    }

    /// What a round tells the refresher: builds it swapped in (their waiters get the swap's
    /// report), and models that only a build can bring up to date (built unless backing off).
    fn after_round(&self, round: &Round) {
        if round.swapped() {
            // Not before the round is counted finished: readers should see the new generation at
            // once, not after the vacuum.
            let pool = self.inner.pool.clone();
            tokio::spawn(async move {
                if let Err(error) = super::vacuum_change_record(&pool).await {
                    tracing::warn!(%error, "vacuuming the change record after a swap failed");
                }
            });
        }
        {
            let mut work = self.tables();
            for report in &round.reports {
                if report.method == Some(RefreshMethod::Build) {
                    reply(
                        std::mem::take(&mut work.build_waiters[report.view]),
                        Ok(report.clone()),
                    );
                }
            }
        }
        if !round.to_build.is_empty() {
            self.spawn_build(&round.to_build, &[]);
        }
    }

    /// Builds `views` beside in the background (those no build of this process is building, and,
    /// unless a full refresh `asked` for them, not backing off from a failure), then asks for the
    /// round that swaps them in.
    fn spawn_build(&self, views: &[ViewName], asked: &[ViewName]) {
        let views: Vec<ViewName> = {
            let mut work = self.tables();
            let now = Instant::now();
            let views: Vec<ViewName> = views
                .iter()
                .copied()
                .filter(|view| !work.building[*view])
                .filter(|view| {
                    asked.contains(view)
                        || work.build_backoff[*view].is_none_or(|(until, _)| until <= now)
                })
                .collect();
            for view in &views {
                work.building[*view] = true;
            }
            views
        };
        if views.is_empty() {
            return;
        }
        let this = self.clone();
        let asked = asked.to_vec();
        tokio::spawn(async move {
            let inner = &this.inner;
            let requested_at = Utc::now();
            let progress = Progress::hidden("build");
            let build = build_beside(&inner.pool, &views, &asked, &inner.settings, &progress);
            let built = this
                .job(&views, RefreshTrigger::Incremental, build, |_| &[])
                .await;
            this.finish_build(&views, built, requested_at).await;
        });
    }

    /// After a build: what was built waits for the round that swaps it in; what another process
    /// took over (or no longer needed a build) is skipped; a failure is recorded and backed off.
    async fn finish_build(
        &self,
        views: &[ViewName],
        built: Result<Vec<super::build::Built>, String>,
        requested_at: chrono::DateTime<Utc>,
    ) {
        let failure = match &built {
            Ok(_) => None,
            Err(message) => {
                tracing::warn!(error = %message, ?views, "the build beside failed; readers keep the old tables");
                for view in views {
                    let recorded = record_failure(
                        &self.inner.pool,
                        *view,
                        RefreshTrigger::Incremental,
                        requested_at,
                        message,
                    )
                    .await;
                    if let Ok(report) = &recorded {
                        self.observe(report, RefreshTrigger::Incremental, Duration::ZERO);
                    }
                }
                Some(message.clone())
            }
        };
        {
            let mut work = self.tables();
            for view in views {
                work.building[*view] = false;
                match (&built, &failure) {
                    (Ok(built), _) if built.iter().any(|b| b.view == *view) => {
                        work.build_backoff[*view] = None;
                    }
                    (Ok(_), _) => reply(
                        std::mem::take(&mut work.build_waiters[*view]),
                        Ok(RefreshReport::skipped(*view, requested_at)),
                    ),
                    (Err(_), message) => {
                        let wait = next_backoff(work.build_backoff[*view].map(|(_, wait)| wait));
                        work.build_backoff[*view] = Some((Instant::now() + wait, wait));
                        reply(
                            std::mem::take(&mut work.build_waiters[*view]),
                            Err(message.clone().unwrap_or_default()),
                        );
                    }
                }
            }
        }
        if built.is_ok() {
            self.request_apply();
        }
    }

    /// Runs one job touching `views`: marks them running meanwhile, counts it finished, records the
    /// metrics of the reports `reports` finds in its outcome.
    async fn job<T>(
        &self,
        views: &[ViewName],
        trigger: RefreshTrigger,
        work: impl Future<Output = Result<T, sqlx::Error>>,
        reports: impl Fn(&T) -> &[RefreshReport],
    ) -> Result<T, String> {
        for view in views {
            self.inner.running[*view].store(true, Ordering::SeqCst);
        }
        let started = std::time::Instant::now();
        let outcome = work.await;
        for view in views {
            self.inner.running[*view].store(false, Ordering::SeqCst);
            self.inner.finished[*view].fetch_add(1, Ordering::SeqCst);
        }
        match outcome {
            Ok(done) => {
                for report in reports(&done) {
                    self.observe(report, trigger, started.elapsed());
                }
                Ok(done)
            }
            Err(error) => {
                tracing::error!(?views, %error, "refresh could not be recorded: database unreachable");
                for view in views {
                    self.inner.metrics.record_refresh(RefreshObservation {
                        view: *view,
                        trigger: trigger.as_str(),
                        status: RefreshStatus::Error.as_str(),
                        took: started.elapsed(),
                        rows_changed: None,
                    });
                }
                Err(database_message(&error))
            }
        }
    }

    fn observe(&self, report: &RefreshReport, trigger: RefreshTrigger, took: Duration) {
        self.inner.metrics.record_refresh(RefreshObservation {
            view: report.view,
            trigger: trigger.as_str(),
            status: report.status.as_str(),
            took,
            rows_changed: report.rows_changed,
        });
        if report.view == ViewName::ALL[0]
            && let Some(companies) = report.companies_changed
        {
            self.inner.metrics.record_apply(companies);
        }
    }

    /// Backs applies off after a failure, and resets the back-off after a success.
    fn note_apply_outcome(&self, round: &Result<Round, String>) {
        let failed = match round {
            Ok(round) => round.failed(),
            Err(_) => true,
        };
        let mut queue = self.queue();
        queue.apply_backoff = if failed {
            queue.apply = true;
            let wait = next_backoff(queue.apply_backoff.map(|(_, wait)| wait));
            Some((Instant::now() + wait, wait))
        } else {
            None
        };
    }
}

fn reply(waiters: Vec<Waiter>, outcome: RefreshOutcome) {
    for waiter in waiters {
        let _ = waiter.reply.send(outcome.clone());
    }
}

/// Waits up to `grace` for the worker to finish the job at hand, then stops it; a job stopped mid-way
/// rolls back with its transaction, so no log row claims it.
pub async fn stop_worker(worker: JoinHandle<()>, grace: Duration) {
    let abort = worker.abort_handle();
    if tokio::time::timeout(grace, worker).await.is_err() {
        abort.abort();
    }
}
