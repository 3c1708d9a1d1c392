//! Who may use the admin plane: the bearer token check, as a layer on every admin route
//! (`require_admin`), and a limit on wrong guesses per client address. After `MAX_WRONG_TOKENS`
//! wrong tokens within `WINDOW`, that address gets 429 with `Retry-After` for the rest of the
//! window, even with the right token, so guessing learns nothing (a request without any token still
//! gets its 401: it guesses nothing, and a misconfigured dashboard should keep getting its clear
//! 401, not a lock-out).
//!
//! The windows live in a moka cache (bounded: past `MAX_TRACKED_ADDRESSES` it keeps the addresses
//! seen most; each window expires with its time) rather than a rate limiter such as governor's,
//! because a lock-out must refuse before it looks at the token, and governor can only count an
//! attempt, not say whether one would be refused. State is per process: behind a load balancer
//! each instance limits on its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use moka::future::Cache;

use super::error::ApiError;
use crate::config::AdminToken;

/// Wrong tokens an address may present per window before it is refused.
pub const MAX_WRONG_TOKENS: u32 = 10;
/// The window: it opens at an address's first wrong token.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once: memory stays bounded under a flood of addresses.
const MAX_TRACKED_ADDRESSES: u64 = 10_000;
/// Where requests whose address the server did not record are counted.
const UNKNOWN_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The address the request came from (the TCP peer), when the server recorded it.
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

struct Window {
    opened: Instant,
    wrong: AtomicU32,
}

pub struct AdminGuard {
    /// None: the admin endpoints are disabled.
    token: Option<AdminToken>,
    wrong_tokens: Cache<IpAddr, Arc<Window>>,
}

impl AdminGuard {
    pub fn new(token: Option<AdminToken>) -> AdminGuard {
        AdminGuard {
            token,
            wrong_tokens: Cache::builder()
                .max_capacity(MAX_TRACKED_ADDRESSES)
                .time_to_live(WINDOW)
                .build(),
        }
    }

    /// Lets the request through only with the right bearer token, from an address not locked out.
    pub async fn authorize(
        &self,
        client: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        self.authorize_at(client, headers, Instant::now()).await
    }

    async fn authorize_at(
        &self,
        client: Option<IpAddr>,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Err(ApiError::AdminDisabled);
        };
        let client = client.unwrap_or(UNKNOWN_ADDRESS);
        let Some(presented) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized);
        };
        if let Some(wait) = self.refused_for(client, now).await {
            return Err(ApiError::TooManyWrongTokens {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let candidate = presented
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "));
        if candidate.is_some_and(|c| token.matches(c)) {
            self.wrong_tokens.invalidate(&client).await;
            Ok(())
        } else {
            tracing::warn!(%client, "wrong admin token");
            self.record_wrong(client, now).await;
            Err(ApiError::Unauthorized)
        }
    }

    /// How long `client` must wait, if it has used up its wrong guesses.
    async fn refused_for(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let window = self.wrong_tokens.get(&client).await?;
        let left = WINDOW.checked_sub(now.duration_since(window.opened))?;
        (window.wrong.load(Ordering::Relaxed) >= MAX_WRONG_TOKENS && !left.is_zero())
            .then_some(left)
    }

    async fn record_wrong(&self, client: IpAddr, now: Instant) {
        let fresh = || {
            Arc::new(Window {
                opened: now,
                wrong: AtomicU32::new(0),
            })
        };
        let mut window = self.wrong_tokens.get_with(client, async { fresh() }).await;
        if now.duration_since(window.opened) >= WINDOW {
            window = fresh();
            self.wrong_tokens.insert(client, window.clone()).await;
        }
        window.wrong.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    async fn tracked_addresses(&self) -> u64 {
        self.wrong_tokens.run_pending_tasks().await;
        self.wrong_tokens.entry_count()
    }
}

/// The layer on every admin route.
pub async fn require_admin(
    State(guard): State<Arc<AdminGuard>>,
    ClientAddr(client): ClientAddr,
    request: Request,
    next: Next,
) -> Response {
    match guard.authorize(client, request.headers()).await {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    fn from(ip: [u8; 4]) -> Option<IpAddr> {
        Some(IpAddr::from(ip))
    }

    fn guard() -> AdminGuard {
        AdminGuard::new(Some(TOKEN.parse().unwrap()))
    }

    #[tokio::test]
    async fn an_address_is_locked_out_after_too_many_wrong_tokens_until_its_window_ends() {
        let guard = guard();
        let attacker = from([10, 0, 0, 1]);
        let start = Instant::now();
        for i in 0..MAX_WRONG_TOKENS {
            let at = start + Duration::from_secs(u64::from(i));
            let outcome = guard.authorize_at(attacker, &bearer("guess"), at).await;
            assert!(matches!(outcome, Err(ApiError::Unauthorized)));
        }
        // Locked out: even the right token is refused, so guesses cannot be checked.
        let at_20 = start + Duration::from_secs(20);
        let refused = guard.authorize_at(attacker, &bearer(TOKEN), at_20).await;
        assert!(
            matches!(
                refused,
                Err(ApiError::TooManyWrongTokens {
                    retry_after_secs: 40
                })
            ),
            "{refused:?}"
        );
        // No token at all is still the plain 401 that says how to authenticate.
        let missing = guard.authorize_at(attacker, &HeaderMap::new(), at_20).await;
        assert!(matches!(missing, Err(ApiError::Unauthorized)));
        // Another address is unaffected.
        let other = guard
            .authorize_at(from([10, 0, 0, 2]), &bearer(TOKEN), at_20)
            .await;
        assert!(other.is_ok());
        // After the window, the right token works again and clears the record.
        let after = guard
            .authorize_at(attacker, &bearer(TOKEN), start + WINDOW)
            .await;
        assert!(after.is_ok());
        assert_eq!(guard.tracked_addresses().await, 0);
    }

    #[tokio::test]
    async fn a_missing_header_is_a_401_that_does_not_count() {
        let guard = guard();
        for _ in 0..MAX_WRONG_TOKENS * 2 {
            let outcome = guard
                .authorize(from([10, 0, 0, 3]), &HeaderMap::new())
                .await;
            assert!(matches!(outcome, Err(ApiError::Unauthorized)));
        }
        assert_eq!(guard.tracked_addresses().await, 0);
    }

    #[tokio::test]
    async fn a_flood_of_addresses_costs_bounded_memory() {
        let guard = guard();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 500) {
            let client = Some(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
            let _ = guard.authorize(client, &bearer("x")).await;
        }
        assert!(guard.tracked_addresses().await <= MAX_TRACKED_ADDRESSES);
    }
}
