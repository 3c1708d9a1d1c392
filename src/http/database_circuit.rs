//! Failing fast while the database is away. Without this, every request waits the whole
//! DATABASE_ACQUIRE_TIMEOUT (5 s) for a connection that cannot be made before its 503. Here, after
//! `OPEN_AFTER` requests in a row found the database unreachable and a fresh connection fails too
//! (so that connections the server dropped, as when backends are terminated, do not count as an
//! outage), requests that need it are answered 503 with `Retry-After: 1` at once, while a
//! background probe tries a fresh connection every `PROBE_EVERY`; its first success lets requests
//! through again. Endpoints that need no database (`/healthz`, `/metrics`, the docs and the spec)
//! are never held back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use super::error::{ApiError, DatabaseWasUnreachable};

/// Requests in a row that found the database unreachable before the circuit opens: one failure
/// can be a connection the server dropped, three are an outage.
const OPEN_AFTER: u32 = 3;

/// How often the probe tries a connection while the circuit is open: serving resumes within this
/// (plus a connection's setup) of the database coming back.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// The longest a probe waits for its connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct DatabaseCircuit {
    failures_in_a_row: AtomicU32,
    open: AtomicBool,
    /// One request at a time checks a fresh connection before the circuit opens.
    confirming: AtomicBool,
    options: PgConnectOptions,
}

impl DatabaseCircuit {
    /// A closed circuit for the database `options` connect to.
    pub fn new(options: PgConnectOptions) -> DatabaseCircuit {
        DatabaseCircuit {
            failures_in_a_row: AtomicU32::new(0),
            open: AtomicBool::new(false),
            confirming: AtomicBool::new(false),
            options,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts one request's outcome; after `OPEN_AFTER` failures in a row, one caller checks a fresh
    /// connection and opens the circuit only if that fails too.
    async fn record(&self, unreachable: bool) {
        if !unreachable {
            // Read first: every request ends here, and a store would bounce the cache line
            // between cores for nothing.
            if self.failures_in_a_row.load(Ordering::Relaxed) != 0 {
                self.failures_in_a_row.store(0, Ordering::Relaxed);
            }
            return;
        }
        let failures = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < OPEN_AFTER || self.is_open() || self.confirming.swap(true, Ordering::Relaxed)
        {
            return;
        }
        if self.reachable().await {
            self.failures_in_a_row.store(0, Ordering::Relaxed);
        } else if !self.open.swap(true, Ordering::Relaxed) {
            tracing::warn!("the database is unreachable: answering 503 at once while probing it");
        }
        self.confirming.store(false, Ordering::Relaxed);
    }

    async fn reachable(&self) -> bool {
        match tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(&self.options)).await {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
                true
            }
            _ => false,
        }
    }

    fn close(&self) {
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        if self.open.swap(false, Ordering::Relaxed) {
            tracing::info!("the database is reachable again");
        }
    }
}

/// The middleware: answers at once while the circuit is open, and counts the outcome otherwise.
pub async fn guard(
    State(circuit): State<Arc<DatabaseCircuit>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if matches!(path, "/healthz" | "/metrics" | "/openapi.json") || path.starts_with("/docs") {
        return next.run(request).await;
    }
    if circuit.is_open() {
        return ApiError::DatabaseAway.into_response();
    }
    let response = next.run(request).await;
    let unreachable = response
        .extensions()
        .get::<DatabaseWasUnreachable>()
        .is_some();
    if unreachable || !response.status().is_server_error() {
        circuit.record(unreachable).await;
    }
    response
}

/// While the circuit is open, tries a new connection every `PROBE_EVERY`; closes it on the first
/// that succeeds. Ends at shutdown.
pub async fn probe(circuit: Arc<DatabaseCircuit>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if circuit.is_open() && circuit.reachable().await {
            circuit.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_after_failures_in_a_row_when_a_fresh_connection_fails_too() {
        // Nothing listens on port 1: a fresh connection is refused.
        let nowhere: PgConnectOptions = "postgres://nobody@127.0.0.1:1/none".parse().unwrap();
        let circuit = DatabaseCircuit::new(nowhere);
        for unreachable in [true, true, false, true, true] {
            circuit.record(unreachable).await;
        }
        assert!(!circuit.is_open(), "a success in between resets");
        circuit.record(true).await;
        assert!(circuit.is_open());
        circuit.close();
        assert!(!circuit.is_open());
    }
}
