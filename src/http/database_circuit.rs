//! Failing fast while the database is away. Without this, every request waits the whole
//! DATABASE_ACQUIRE_TIMEOUT (5 s) for a connection that cannot be made before its 503. Here, after
//! `OPEN_AFTER` requests in a row found the database unreachable, requests that need it are answered
//! 503 with `Retry-After: 1` at once, while a background probe tries a fresh connection every
//! `PROBE_EVERY`; its first success lets requests through again. Endpoints that need no database
//! (`/healthz`, `/metrics`, the docs and the spec) are never held back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use super::error::ApiError;

/// Requests in a row that found the database unreachable before the circuit opens: one failure
/// can be a connection the server dropped, three are an outage.
const OPEN_AFTER: u32 = 3;

/// How often the probe tries a connection while the circuit is open: serving resumes within this
/// (plus a connection's setup) of the database coming back.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// The longest a probe waits for its connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct DatabaseCircuit {
    failures_in_a_row: AtomicU32,
    open: AtomicBool,
}

/// Set on a response whose request found the database unreachable (see `ApiError`).
#[derive(Debug, Clone, Copy)]
pub struct DatabaseWasUnreachable;

impl DatabaseCircuit {
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    fn record(&self, unreachable: bool) {
        if !unreachable {
            self.failures_in_a_row.store(0, Ordering::Relaxed);
        } else if self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= OPEN_AFTER
            && !self.open.swap(true, Ordering::Relaxed)
        {
            tracing::warn!("the database is unreachable: answering 503 at once while probing it");
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
        circuit.record(unreachable);
    }
    response
}

/// While the circuit is open, tries a new connection every `PROBE_EVERY`; closes it on the first
/// that succeeds. Ends at shutdown.
pub async fn probe(
    circuit: Arc<DatabaseCircuit>,
    pool: sqlx::PgPool,
    mut shutdown: watch::Receiver<bool>,
) {
    let options = pool.connect_options();
    loop {
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if !circuit.is_open() {
            continue;
        }
        if let Ok(Ok(connection)) =
            tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(&options)).await
        {
            let _ = connection.close().await;
            circuit.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_and_a_success_resets_the_count() {
        let circuit = DatabaseCircuit::default();
        circuit.record(true);
        circuit.record(true);
        circuit.record(false);
        circuit.record(true);
        circuit.record(true);
        assert!(!circuit.is_open(), "a success in between resets");
        circuit.record(true);
        assert!(circuit.is_open());
        circuit.close();
        assert!(!circuit.is_open());
    }
}
