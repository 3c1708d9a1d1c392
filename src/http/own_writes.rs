//! Reads that see their own writes: a client that has just written through the writing app sends
//! `Prefer: min-freshness=now` and is answered with data at least as new as its request.
//!
//! The request notes the primary's snapshot as it arrives (every transaction committed before it is
//! visible in it), reads from the primary (a replica may not have replayed the covering round yet),
//! and waits until the read model it reads covers that snapshot: until no change in the change
//! record is visible in it and not in the snapshot of the model's last successful refresh
//! (`read_model_covers()` in schema/current.sql). Meanwhile it nudges the maintenance: in incremental mode
//! it asks for a round at once (about one round's wait), in refresh mode for a refresh of the model,
//! single-flight with every other request (a burst costs at most two refreshes). A round or refresh
//! by another instance serves it too. Past `READ_YOUR_WRITES_TIMEOUT` it is answered 503 with
//! `Retry-After`, and the work it asked for goes on.
//!
//! Only writes the triggers saw count: a write made with `session_replication_role = replica` is
//! covered by the next repair, not by this.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use sqlx::PgPool;
use tokio::time::Instant;

use super::error::ApiError;
use super::state::AppState;
use crate::refresh::RefreshTrigger;
use crate::views::{Mode, ViewName};

pub const PREFER: HeaderName = HeaderName::from_static("prefer");
pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// The preference, and the only value it takes.
const PREFERENCE: &str = "min-freshness";
const NOW: &str = "now";

/// How soon the coverage is looked at again, doubling up to `MAX_PAUSE`: the first looks catch a
/// round of this instance (tens of milliseconds), the later ones a refresh or another instance's
/// round without querying the primary more than ten times a second.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// A request that asked to see the writes committed before it arrived.
#[derive(Debug, Clone)]
pub struct OwnWrites {
    /// The primary's snapshot when the request arrived (`pg_current_snapshot()` as text).
    snapshot: String,
    arrived: Instant,
}

impl OwnWrites {
    /// When `headers` ask for it, the primary's snapshot now; a `min-freshness` other than `now`
    /// is ignored, as other preferences are (RFC 7240).
    pub async fn asked(
        headers: &HeaderMap,
        primary: &PgPool,
    ) -> Result<Option<OwnWrites>, ApiError> {
        if !prefers_min_freshness(headers) {
            return Ok(None);
        }
        let arrived = Instant::now();
        let snapshot = sqlx::query_scalar!(r#"SELECT pg_current_snapshot()::text AS "snapshot!""#)
            .fetch_one(primary)
            .await?;
        Ok(Some(OwnWrites { snapshot, arrived }))
    }

    /// Waits until `view`, read through `pool` (the primary's), covers the request's snapshot,
    /// nudging its maintenance; a 503 past the timeout, the 503 of a model never populated at once.
    pub async fn wait_for(
        &self,
        state: &AppState,
        pool: &PgPool,
        view: ViewName,
    ) -> Result<(), ApiError> {
        let timeout = state.own_writes_timeout;
        let deadline = self.arrived + timeout;
        let mut refresh = None;
        let mut pause = FIRST_PAUSE;
        loop {
            let coverage = sqlx::query!(
                r#"SELECT populated AS "populated!", covered AS "covered!"
                   FROM read_model_covers($1, $2::text::pg_snapshot)"#,
                view.as_str(),
                self.snapshot,
            )
            .fetch_one(pool)
            .await?;
            if !coverage.populated {
                return Err(ApiError::NotPopulated(view));
            }
            if coverage.covered {
                state
                    .metrics
                    .record_own_writes_wait(true, self.arrived.elapsed());
                return Ok(());
            }
            match state.refresher.modes()[view] {
                Some(Mode::Refresh) => {
                    // Asked once: its outcome does not matter here, only the coverage.
                    refresh
                        .get_or_insert_with(|| state.refresher.request(view, RefreshTrigger::Read));
                }
                _ => state.refresher.request_apply(),
            }
            let now = Instant::now();
            if now >= deadline {
                state
                    .metrics
                    .record_own_writes_wait(false, self.arrived.elapsed());
                return Err(ApiError::NotFreshYet { view, timeout });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// What the response says it did.
    pub fn applied() -> (HeaderName, HeaderValue) {
        (
            PREFERENCE_APPLIED,
            HeaderValue::from_static("min-freshness=now"),
        )
    }
}

/// Whether `headers` carry `Prefer: min-freshness=now` (among other preferences, in any `Prefer`
/// header). Anything else is ignored, as RFC 7240 asks of a preference a server cannot honour: the
/// answer then carries no `Preference-Applied`.
fn prefers_min_freshness(headers: &HeaderMap) -> bool {
    headers
        .get_all(PREFER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|preference| preference.split(';').next())
        .filter_map(|token| token.split_once('='))
        .any(|(name, given)| {
            name.trim().eq_ignore_ascii_case(PREFERENCE)
                && given.trim().trim_matches('"').eq_ignore_ascii_case(NOW)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(PREFER, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn min_freshness_now_is_found_among_other_preferences() {
        assert!(!prefers_min_freshness(&HeaderMap::new()));
        assert!(!prefers_min_freshness(&prefer(&["return=minimal"])));
        assert!(prefers_min_freshness(&prefer(&["min-freshness=now"])));
        assert!(prefers_min_freshness(&prefer(&[
            "return=minimal, Min-Freshness=\"NOW\""
        ])));
        assert!(prefers_min_freshness(&prefer(&[
            "respond-async",
            "min-freshness=now; x=1"
        ])));
    }

    #[test]
    fn another_value_is_ignored() {
        for value in [
            "min-freshness",
            "min-freshness=yesterday",
            "min-freshness=5",
        ] {
            assert!(!prefers_min_freshness(&prefer(&[value])), "{value}");
        }
    }
}
