//! The in-process refresher: one worker per view, so that refreshes are single-flight.
//!
//! A request for a view that is not being refreshed starts a refresh. A request that arrives while
//! one runs cannot join it (its snapshot may predate the write that prompted the request), so it
//! waits for exactly one follow-up refresh, which serves every request queued meanwhile: a burst of
//! requests costs at most two refreshes. A shared permit makes the workers refresh one view at a time
//! (three concurrent refreshes would only fight over two cores); which waiting view goes next is not
//! fixed, and need not be: each refresh is its own transaction and locks only its own view.
//! Across processes, `refresh_view`'s advisory lock does the same job.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, oneshot, watch};
use tokio::task::JoinHandle;

use super::refresher::{RefreshReport, RefreshStatus, RefreshTrigger, refresh_view};
use super::stopped;
use crate::config::RefreshSettings;
use crate::metrics::Metrics;
use crate::views::ViewName;

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
    slots: [Slot; 3],
    one_at_a_time: Semaphore,
}

#[derive(Default)]
struct Slot {
    waiting: Mutex<Vec<Waiter>>,
    wake: Notify,
    running: AtomicBool,
    /// Refreshes finished (whatever their outcome): lets readers of the view's freshness tell
    /// whether what they read before is still current.
    finished: AtomicU64,
}

struct Waiter {
    trigger: RefreshTrigger,
    reply: oneshot::Sender<RefreshOutcome>,
}

impl Refresher {
    /// Starts one worker per view; they stop when `shutdown` turns true, after the refresh at hand.
    pub fn start(
        pool: PgPool,
        settings: RefreshSettings,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> (Refresher, Vec<JoinHandle<()>>) {
        let refresher = Refresher {
            inner: Arc::new(Inner {
                pool,
                settings,
                metrics,
                slots: Default::default(),
                one_at_a_time: Semaphore::new(1),
            }),
        };
        let workers = ViewName::ALL
            .into_iter()
            .map(|view| tokio::spawn(refresher.clone().work(view, shutdown.clone())))
            .collect();
        (refresher, workers)
    }

    /// Asks for a refresh of `view`; the receiver gets the outcome of the refresh that serves it.
    pub fn request(
        &self,
        view: ViewName,
        trigger: RefreshTrigger,
    ) -> oneshot::Receiver<RefreshOutcome> {
        let (reply, outcome) = oneshot::channel();
        let slot = &self.inner.slots[view.index()];
        slot.waiting
            .lock()
            .expect("not poisoned")
            .push(Waiter { trigger, reply });
        slot.wake.notify_one();
        outcome
    }

    /// Asks for every view to be refreshed, without waiting.
    pub fn request_all(&self, trigger: RefreshTrigger) {
        for view in ViewName::ALL {
            drop(self.request(view, trigger));
        }
    }

    /// Refreshes `view` (or waits for the refresh that serves this request) and returns its outcome.
    pub async fn refresh(&self, view: ViewName, trigger: RefreshTrigger) -> RefreshOutcome {
        self.request(view, trigger)
            .await
            .unwrap_or_else(|_| Err("the refresher is shutting down".to_owned()))
    }

    /// Whether no view is being refreshed or waiting to be.
    pub fn is_idle(&self) -> bool {
        self.inner.slots.iter().all(|slot| {
            !slot.running.load(Ordering::SeqCst)
                && slot.waiting.lock().expect("not poisoned").is_empty()
        })
    }

    /// Whether this process is refreshing `view` right now.
    pub fn is_running(&self, view: ViewName) -> bool {
        self.inner.slots[view.index()]
            .running
            .load(Ordering::SeqCst)
    }

    /// Changes whenever this process finishes a refresh of `view`.
    pub fn generation(&self, view: ViewName) -> u64 {
        self.inner.slots[view.index()]
            .finished
            .load(Ordering::SeqCst)
    }

    async fn work(self, view: ViewName, mut shutdown: watch::Receiver<bool>) {
        let slot = &self.inner.slots[view.index()];
        loop {
            let waiters = std::mem::take(&mut *slot.waiting.lock().expect("not poisoned"));
            if waiters.is_empty() {
                tokio::select! {
                    () = slot.wake.notified() => continue,
                    () = stopped(&mut shutdown) => return,
                }
            }
            if *shutdown.borrow() {
                return; // dropping the waiters tells them the refresher is shutting down
            }
            let outcome = self.refresh_once(slot, view, waiters[0].trigger).await;
            for waiter in waiters {
                let _ = waiter.reply.send(outcome.clone());
            }
        }
    }

    async fn refresh_once(
        &self,
        slot: &Slot,
        view: ViewName,
        trigger: RefreshTrigger,
    ) -> RefreshOutcome {
        let _permit = self
            .inner
            .one_at_a_time
            .acquire()
            .await
            .expect("the semaphore is never closed");
        slot.running.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let outcome = refresh_view(&self.inner.pool, view, trigger, &self.inner.settings).await.map_err(|error| {
            tracing::error!(%view, %error, "refresh could not be recorded: database unreachable");
            error.to_string()
        });
        slot.running.store(false, Ordering::SeqCst);
        slot.finished.fetch_add(1, Ordering::SeqCst);
        self.inner.metrics.record_refresh(
            view,
            trigger,
            outcome
                .as_ref()
                .map(|r| r.status)
                .unwrap_or(RefreshStatus::Error),
            started.elapsed(),
        );
        outcome
    }
}

/// Waits up to `grace` for the workers to finish the refresh at hand, then stops them; a refresh
/// stopped mid-way rolls back with its transaction, so no log row claims it.
pub async fn stop_workers(workers: Vec<JoinHandle<()>>, grace: Duration) {
    for worker in workers {
        let abort = worker.abort_handle();
        if tokio::time::timeout(grace, worker).await.is_err() {
            abort.abort();
        }
    }
}
