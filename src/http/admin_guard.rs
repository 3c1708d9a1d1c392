//! Who may use the admin plane: the bearer token check, and a limit on wrong guesses per client
//! address. After `MAX_WRONG_TOKENS` wrong tokens within `WINDOW`, that address gets 429 with
//! `Retry-After` for the rest of the window, even with the right token, so guessing learns nothing
//! (a request without any token still gets its 401: it guesses nothing).
//!
//! The state is per process: behind a load balancer each instance limits on its own. A missing
//! `Authorization` header is not counted (it guesses nothing; a misconfigured dashboard should keep
//! getting its clear 401, not a lock-out).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::error::ApiError;
use crate::config::AdminToken;

/// Wrong tokens an address may present per window before it is refused.
pub const MAX_WRONG_TOKENS: u32 = 10;
/// The window: it opens at an address's first wrong token.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once. Past this, new addresses share one window, so that a flood of
/// addresses costs bounded memory (and is limited together).
const MAX_TRACKED_ADDRESSES: usize = 10_000;
const SHARED_OVERFLOW_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

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
    wrong: u32,
}

#[derive(Default)]
pub struct WrongTokenLimiter {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl WrongTokenLimiter {
    /// How long `client` must wait, if it has used up its wrong guesses.
    fn refused_for(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().expect("limiter lock");
        let window = windows.get(&client)?;
        let left = WINDOW.checked_sub(now.duration_since(window.opened))?;
        (window.wrong >= MAX_WRONG_TOKENS && !left.is_zero()).then_some(left)
    }

    fn record_wrong(&self, client: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().expect("limiter lock");
        if windows.len() >= MAX_TRACKED_ADDRESSES && !windows.contains_key(&client) {
            windows.retain(|_, w| now.duration_since(w.opened) < WINDOW);
        }
        let key = if windows.len() >= MAX_TRACKED_ADDRESSES && !windows.contains_key(&client) {
            SHARED_OVERFLOW_ADDRESS
        } else {
            client
        };
        let window = windows.entry(key).or_insert(Window {
            opened: now,
            wrong: 0,
        });
        if now.duration_since(window.opened) >= WINDOW {
            *window = Window {
                opened: now,
                wrong: 0,
            };
        }
        window.wrong += 1;
    }

    fn forget(&self, client: IpAddr) {
        self.windows.lock().expect("limiter lock").remove(&client);
    }

    #[cfg(test)]
    fn tracked_addresses(&self) -> usize {
        self.windows.lock().expect("limiter lock").len()
    }
}

/// Lets the request through only with the right bearer token, from an address not locked out.
pub fn authorize(
    token: Option<&AdminToken>,
    limiter: &WrongTokenLimiter,
    client: &ClientAddr,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    authorize_at(token, limiter, client, headers, Instant::now())
}

fn authorize_at(
    token: Option<&AdminToken>,
    limiter: &WrongTokenLimiter,
    ClientAddr(client): &ClientAddr,
    headers: &HeaderMap,
    now: Instant,
) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Err(ApiError::AdminDisabled);
    };
    let client = client.unwrap_or(SHARED_OVERFLOW_ADDRESS);
    let Some(presented) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized);
    };
    if let Some(wait) = limiter.refused_for(client, now) {
        return Err(ApiError::TooManyWrongTokens {
            retry_after_secs: wait.as_secs().max(1),
        });
    }
    let candidate = presented
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "));
    if candidate.is_some_and(|c| token.matches(c)) {
        limiter.forget(client);
        Ok(())
    } else {
        tracing::warn!(%client, "wrong admin token");
        limiter.record_wrong(client, now);
        Err(ApiError::Unauthorized)
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

    fn from(ip: [u8; 4]) -> ClientAddr {
        ClientAddr(Some(IpAddr::from(ip)))
    }

    #[test]
    fn an_address_is_locked_out_after_too_many_wrong_tokens_until_its_window_ends() {
        let token: AdminToken = TOKEN.parse().unwrap();
        let limiter = WrongTokenLimiter::default();
        let attacker = from([10, 0, 0, 1]);
        let start = Instant::now();
        let attempt = |headers: &HeaderMap, client: &ClientAddr, at: Duration| {
            authorize_at(Some(&token), &limiter, client, headers, start + at)
        };
        for i in 0..MAX_WRONG_TOKENS {
            let outcome = attempt(
                &bearer("guess"),
                &attacker,
                Duration::from_secs(u64::from(i)),
            );
            assert!(matches!(outcome, Err(ApiError::Unauthorized)));
        }
        // Locked out: even the right token is refused, so guesses cannot be checked.
        let refused = attempt(&bearer(TOKEN), &attacker, Duration::from_secs(20));
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
        let missing = authorize_at(
            Some(&token),
            &limiter,
            &attacker,
            &HeaderMap::new(),
            start + Duration::from_secs(20),
        );
        assert!(matches!(missing, Err(ApiError::Unauthorized)));
        // Another address is unaffected.
        assert!(
            attempt(
                &bearer(TOKEN),
                &from([10, 0, 0, 2]),
                Duration::from_secs(20)
            )
            .is_ok()
        );
        // After the window, the right token works again and clears the record.
        assert!(attempt(&bearer(TOKEN), &attacker, WINDOW).is_ok());
        assert_eq!(limiter.tracked_addresses(), 0);
    }

    #[test]
    fn a_missing_header_is_a_401_that_does_not_count() {
        let token: AdminToken = TOKEN.parse().unwrap();
        let limiter = WrongTokenLimiter::default();
        let client = from([10, 0, 0, 3]);
        for _ in 0..MAX_WRONG_TOKENS * 2 {
            let outcome = authorize(Some(&token), &limiter, &client, &HeaderMap::new());
            assert!(matches!(outcome, Err(ApiError::Unauthorized)));
        }
        assert_eq!(limiter.tracked_addresses(), 0);
    }

    #[test]
    fn a_flood_of_addresses_costs_bounded_memory() {
        let token: AdminToken = TOKEN.parse().unwrap();
        let limiter = WrongTokenLimiter::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 500) {
            let client = ClientAddr(Some(IpAddr::from((0x0a00_0000 + i).to_be_bytes())));
            let _ = authorize_at(Some(&token), &limiter, &client, &bearer("x"), now);
        }
        assert!(limiter.tracked_addresses() <= MAX_TRACKED_ADDRESSES + 1);
    }
}
