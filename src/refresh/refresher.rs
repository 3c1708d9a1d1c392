//! The in-process refresher: one worker that runs this process's refreshes, incremental applies and
//! rebuilds, one at a time (two at once would only fight over the same cores and the same rows).
//!
//! Two kinds of job are queued: a full refresh of a view (CONCURRENTLY for a materialized view, a
//! rebuild for a table), and an incremental apply (every table-backed view at once). Requests are
//! single-flight: a request that arrives while a batch runs cannot join it (its snapshot may predate
//! the write that prompted the request), so it waits for the next batch, which serves every request
//! queued meanwhile: a burst of requests costs at most two runs. A batch refreshes the materialized
//! views (one transaction each, in the fixed order), then runs one incremental round that rebuilds
//! the table-backed views asked for and applies the pending changes to the others: a rebuild absorbs
//! the incremental work rather than queueing behind it. Across processes, the advisory locks
//! (refresh) and the catalog lock (incremental) do the same job.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::full::{Modes, in_mode, modes};
use super::incremental;
use super::materialized::refresh_materialized_view;
use super::report::{RefreshReport, RefreshStatus, RefreshTrigger};
use super::{sleep_until_optional, stopped};
use crate::config::RefreshSettings;
use crate::metrics::{Metrics, RefreshObservation};
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

const FIRST_APPLY_BACKOFF: Duration = Duration::from_millis(500);
const MAX_APPLY_BACKOFF: Duration = Duration::from_secs(30);

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
        !self.inner.busy.load(Ordering::SeqCst)
            && !queue.apply
            && queue.full.iter().all(|(_, waiters)| waiters.is_empty())
    }

    /// Whether this process is refreshing, applying to or rebuilding `view` right now.
    pub fn is_running(&self, view: ViewName) -> bool {
        self.inner.running[view].load(Ordering::SeqCst)
    }

    /// Changes whenever this process finishes a job touching `view`.
    pub fn generation(&self, view: ViewName) -> u64 {
        self.inner.finished[view].load(Ordering::SeqCst)
    }

    /// Each view's mode as last read from the database.
    pub fn modes(&self) -> Modes {
        *self.inner.modes.lock().expect("not poisoned")
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.queue.lock().expect("not poisoned")
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
                .job(&[view], trigger, refresh)
                .await
                .map(|mut reports| reports.remove(0));
            reply(std::mem::take(&mut batch.full[view]), outcome);
        }
        let rebuild = in_mode(&modes, &asked, Mode::Incremental);
        if !rebuild.is_empty() || (batch.apply && modes.contains(&Some(Mode::Incremental))) {
            self.incremental_round(&mut batch, &rebuild, &modes).await;
        }
        for view in ViewName::ALL {
            let waiters = std::mem::take(&mut batch.full[view]);
            reply(waiters, Err(format!("{view} is missing from the database")));
        }
    }

    /// One round for every table-backed view: rebuilds `rebuild`, applies pending changes to the rest.
    async fn incremental_round(&self, batch: &mut Batch, rebuild: &[ViewName], modes: &Modes) {
        let trigger = rebuild
            .first()
            .map_or(RefreshTrigger::Incremental, |view| batch.trigger(*view));
        let tables = in_mode(modes, &ViewName::ALL, Mode::Incremental);
        let round = self
            .job(
                &tables,
                trigger,
                incremental::round(&self.inner.pool, trigger, rebuild, &self.inner.settings),
            )
            .await;
        if rebuild.is_empty() {
            self.note_apply_outcome(&round);
        }
        for view in rebuild {
            let outcome = round.clone().and_then(|reports| {
                reports
                    .into_iter()
                    .find(|report| report.view == *view)
                    .ok_or_else(|| format!("{view} was not maintained"))
            });
            reply(std::mem::take(&mut batch.full[*view]), outcome);
        }
    }

    /// Runs one job touching `views`: marks them running meanwhile, counts it finished, records metrics.
    async fn job(
        &self,
        views: &[ViewName],
        trigger: RefreshTrigger,
        work: impl Future<Output = Result<Vec<RefreshReport>, sqlx::Error>>,
    ) -> Result<Vec<RefreshReport>, String> {
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
            Ok(reports) => {
                for report in &reports {
                    self.observe(report, trigger, started.elapsed());
                }
                Ok(reports)
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
                Err(error.to_string())
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
    fn note_apply_outcome(&self, round: &Result<Vec<RefreshReport>, String>) {
        let failed = match round {
            Ok(reports) => reports.iter().any(|r| r.status == RefreshStatus::Error),
            Err(_) => true,
        };
        let mut queue = self.queue();
        queue.apply_backoff = if failed {
            queue.apply = true;
            let wait = queue
                .apply_backoff
                .map_or(FIRST_APPLY_BACKOFF, |(_, wait)| {
                    (wait * 2).min(MAX_APPLY_BACKOFF)
                });
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
