//! A limit on wrong secrets (admin tokens, API keys) per client address. After
//! `MAX_WRONG_SECRETS` wrong ones within `WINDOW`, that address gets 429 with `Retry-After` for the
//! rest of the window, even with a right one, so guessing learns nothing (a request without any
//! credential still gets its 401: it guesses nothing, and a misconfigured dashboard should keep
//! getting its clear 401, not a lock-out). JWTs are not counted: a signature cannot be guessed, and
//! a browser retrying with an expired token must not lock out everyone behind its address.
//!
//! The windows live in a moka cache (bounded: past `MAX_TRACKED_ADDRESSES` it keeps the addresses
//! seen most; each window expires with its time) rather than a rate limiter such as governor's,
//! because a lock-out must refuse before it looks at the secret, and governor can only count an
//! attempt, not say whether one would be refused. State is per process: behind a load balancer
//! each instance limits on its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use moka::future::Cache;

/// Wrong secrets an address may present per window before it is refused.
pub const MAX_WRONG_SECRETS: u32 = 10;
/// The window: it opens at an address's first wrong secret.
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

pub struct Lockout {
    wrong_secrets: Cache<IpAddr, Arc<Window>>,
}

impl Default for Lockout {
    fn default() -> Lockout {
        Lockout {
            wrong_secrets: Cache::builder()
                .max_capacity(MAX_TRACKED_ADDRESSES)
                .time_to_live(WINDOW)
                .build(),
        }
    }
}

impl Lockout {
    /// How long `client` must wait before presenting a secret again, if it must.
    pub async fn refused(&self, client: Option<IpAddr>) -> Option<Duration> {
        self.refused_for(client.unwrap_or(UNKNOWN_ADDRESS), Instant::now())
            .await
    }

    /// Counts a wrong secret from `client`.
    pub async fn wrong(&self, client: Option<IpAddr>) {
        let client = client.unwrap_or(UNKNOWN_ADDRESS);
        tracing::warn!(%client, "wrong secret (admin token or API key)");
        self.record_wrong(client, Instant::now()).await;
    }

    /// Forgets `client`'s wrong secrets (it has just presented a right one).
    pub async fn right(&self, client: Option<IpAddr>) {
        let client = client.unwrap_or(UNKNOWN_ADDRESS);
        if self.wrong_secrets.contains_key(&client) {
            self.wrong_secrets.invalidate(&client).await;
        }
    }

    /// How long `client` must wait, if it has used up its wrong guesses.
    async fn refused_for(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let window = self.wrong_secrets.get(&client).await?;
        let left = WINDOW.checked_sub(now.duration_since(window.opened))?;
        (window.wrong.load(Ordering::Relaxed) >= MAX_WRONG_SECRETS && !left.is_zero())
            .then_some(left)
    }

    async fn record_wrong(&self, client: IpAddr, now: Instant) {
        let fresh = || {
            Arc::new(Window {
                opened: now,
                wrong: AtomicU32::new(0),
            })
        };
        let mut window = self.wrong_secrets.get_with(client, async { fresh() }).await;
        if now.duration_since(window.opened) >= WINDOW {
            window = fresh();
            self.wrong_secrets.insert(client, window.clone()).await;
        }
        window.wrong.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    async fn tracked_addresses(&self) -> u64 {
        self.wrong_secrets.run_pending_tasks().await;
        self.wrong_secrets.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(ip: [u8; 4]) -> IpAddr {
        IpAddr::from(ip)
    }

    #[tokio::test]
    async fn an_address_is_locked_out_after_too_many_wrong_secrets_until_its_window_ends() {
        let lockout = Lockout::default();
        let attacker = from([10, 0, 0, 1]);
        let start = Instant::now();
        for i in 0..MAX_WRONG_SECRETS {
            let at = start + Duration::from_secs(u64::from(i));
            assert!(lockout.refused_for(attacker, at).await.is_none());
            lockout.record_wrong(attacker, at).await;
        }
        let at_20 = start + Duration::from_secs(20);
        assert_eq!(
            lockout.refused_for(attacker, at_20).await,
            Some(Duration::from_secs(40))
        );
        assert!(
            lockout
                .refused_for(from([10, 0, 0, 2]), at_20)
                .await
                .is_none(),
            "another address is unaffected"
        );
        assert!(
            lockout
                .refused_for(attacker, start + WINDOW)
                .await
                .is_none()
        );
        lockout.right(Some(attacker)).await;
        assert_eq!(lockout.tracked_addresses().await, 0);
    }

    #[tokio::test]
    async fn a_flood_of_addresses_costs_bounded_memory() {
        let lockout = Lockout::default();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 500) {
            let client = Some(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
            lockout.wrong(client).await;
        }
        assert!(lockout.tracked_addresses().await <= MAX_TRACKED_ADDRESSES);
    }
}
