//! Who is asking: the layer on every read and admin route that turns a request's credential into
//! an `access::Caller` (an extension the handlers read), refuses what its role may not do on the
//! admin plane, and holds each credential to its role's request rate.
//!
//! Credentials: `Authorization: Bearer <JWT | API key | ADMIN_TOKEN>`, or `X-API-Key: <API key>`.
//! Without an `ACCESS_POLICY` reads are open (only on a loopback address: see startup) and only
//! `ADMIN_TOKEN` means anything, for the admin plane, as before access control.
//!
//! Refusals: no credential and no `anonymous` role, or a credential that is wrong, expired or
//! revoked: 401 with `WWW-Authenticate`; a role the policy does not declare, or not an admin role
//! on the admin plane: 403; too many requests for the role's `requests_per_second`: 429 with
//! `Retry-After`; too many wrong secrets from one address: 429 (`lockout`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use super::error::ApiError;
use super::lockout::{ClientAddr, Lockout};
use crate::access::audit::{self, Action, Outcome};
use crate::access::jwt::{JwtError, JwtVerifier};
use crate::access::keys::{self, KeyStore};
use crate::access::{Caller, Credential, Policy, Role, policy};
use crate::config::AdminToken;
use crate::metrics::Metrics;

pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Which routes a layer guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Read,
    Admin,
}

type KeyedLimiter =
    RateLimiter<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock>;

/// Rate-limiter entries are pruned of idle credentials every this many requests.
const PRUNE_LIMITERS_EVERY: u64 = 4096;

pub struct Authenticator {
    pub policy: Arc<Policy>,
    /// The primary: the audit log.
    pool: sqlx::PgPool,
    admin_token: Option<AdminToken>,
    jwt: Option<JwtVerifier>,
    keys: KeyStore,
    lockout: Lockout,
    /// Per role with `requests_per_second`: one GCRA state per credential.
    limits: HashMap<String, KeyedLimiter>,
    checked: AtomicU64,
    metrics: Arc<Metrics>,
}

/// What a request presented.
enum Presented<'a> {
    Nothing,
    Secret(&'a str),
    Malformed(&'static str),
}

impl Authenticator {
    pub fn new(
        policy: Arc<Policy>,
        admin_token: Option<AdminToken>,
        jwt: Option<JwtVerifier>,
        pool: sqlx::PgPool,
        metrics: Arc<Metrics>,
    ) -> Authenticator {
        let limits = policy
            .roles()
            .filter_map(|role| {
                let per_second = role.requests_per_second?;
                let burst = role.burst.unwrap_or(per_second);
                let quota = Quota::per_second(per_second).allow_burst(burst);
                Some((role.name.clone(), RateLimiter::keyed(quota)))
            })
            .collect();
        Authenticator {
            policy,
            admin_token,
            jwt,
            keys: KeyStore::new(pool.clone()),
            pool,
            lockout: Lockout::default(),
            limits,
            checked: AtomicU64::new(0),
            metrics,
        }
    }

    /// Whether the admin plane can be reached by anyone at all.
    fn admin_enabled(&self) -> bool {
        self.admin_token.is_some() || self.policy.has_admin_roles()
    }

    /// The caller a request on `plane` is, or why it is refused.
    pub async fn caller(
        &self,
        plane: Plane,
        client: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        if plane == Plane::Admin && !self.admin_enabled() {
            return Err(ApiError::AdminDisabled);
        }
        let presented = presented(headers);
        if !self.policy.enforced() && plane == Plane::Read {
            // Open reads: only the admin token means anything (and changes nothing they see).
            return Ok(match presented {
                Presented::Secret(token) if self.is_admin_token(token) => self.admin(client),
                _ => Caller::open(client),
            });
        }
        match presented {
            Presented::Nothing if self.policy.enforced() => {
                let role =
                    self.policy
                        .without_credentials()
                        .ok_or_else(|| ApiError::Unauthenticated {
                            detail:
                                "This API needs a credential: send `Authorization: Bearer <token>` \
                                 (a JWT or an API key) or `X-API-Key: <key>`."
                                    .to_owned(),
                            invalid: false,
                        })?;
                Ok(Caller {
                    credential: Credential::Anonymous,
                    role,
                    client,
                })
            }
            Presented::Nothing => Ok(Caller::open(client)),
            Presented::Malformed(why) => Err(invalid(why)),
            Presented::Secret(token) if JwtVerifier::looks_like_jwt(token) => {
                self.jwt_caller(token, client).await
            }
            Presented::Secret(secret) => self.secret_caller(secret, client).await,
        }
    }

    fn is_admin_token(&self, token: &str) -> bool {
        self.admin_token.as_ref().is_some_and(|t| t.matches(token))
    }

    fn admin(&self, client: Option<IpAddr>) -> Caller {
        Caller {
            credential: Credential::AdminToken,
            role: self.policy.admin_role(),
            client,
        }
    }

    async fn jwt_caller(&self, token: &str, client: Option<IpAddr>) -> Result<Caller, ApiError> {
        let Some(verifier) = &self.jwt else {
            return Err(invalid(
                "this server accepts no JWTs (it has neither JWT_SECRET nor JWT_JWKS)",
            ));
        };
        let verified = verifier.verify(token).await.map_err(|error| match error {
            JwtError::Invalid(reason) => invalid_owned(reason),
            JwtError::KeysUnavailable(why) => ApiError::KeysUnavailable(why),
        })?;
        let Some(role_name) = &verified.role else {
            return Err(ApiError::RoleRefused(format!(
                "Your token has no '{}' claim naming its role.",
                verifier.role_claim()
            )));
        };
        Ok(Caller {
            credential: Credential::Jwt {
                subject: verified.subject.clone(),
            },
            role: self.declared(role_name)?,
            client,
        })
    }

    /// An admin token or an API key: secrets that could be guessed at, so wrong ones are counted
    /// per address and an address with too many is refused before its secret is looked at.
    async fn secret_caller(
        &self,
        secret: &str,
        client: Option<IpAddr>,
    ) -> Result<Caller, ApiError> {
        if let Some(wait) = self.lockout.refused(client).await {
            return Err(ApiError::TooManyWrongTokens {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let caller = if self.is_admin_token(secret) {
            Some(self.admin(client))
        } else if secret.starts_with(keys::PREFIX) && self.policy.enforced() {
            match self.keys.find(secret).await? {
                Some(key) => Some(Caller {
                    credential: Credential::ApiKey {
                        name: key.name.clone(),
                    },
                    role: self.declared(&key.role)?,
                    client,
                }),
                None => None,
            }
        } else {
            None
        };
        match caller {
            Some(caller) => {
                self.lockout.right(client).await;
                Ok(caller)
            }
            None => {
                self.lockout.wrong(client).await;
                Err(if self.policy.enforced() {
                    invalid("the credential is not a valid, unrevoked API key or admin token")
                } else {
                    ApiError::Unauthorized
                })
            }
        }
    }

    fn declared(&self, name: &str) -> Result<Arc<Role>, ApiError> {
        let role = self.policy.role(name).filter(|_| name != policy::OPEN);
        role.ok_or_else(|| {
            ApiError::RoleRefused(format!(
                "Your credential's role ({}) is not declared in the access policy.",
                crate::http::params::shorten(name)
            ))
        })
    }

    /// Refuses `caller` the admin plane unless its role is an admin role.
    fn admit_to_admin(&self, caller: &Caller) -> Result<(), ApiError> {
        if caller.role.admin {
            return Ok(());
        }
        if !self.admin_enabled() {
            return Err(ApiError::AdminDisabled);
        }
        match caller.credential {
            Credential::Open | Credential::Anonymous => Err(ApiError::Unauthorized),
            _ => Err(ApiError::RoleRefused(format!(
                "Your role ({}) may not use the admin endpoints.",
                caller.role.name
            ))),
        }
    }

    /// Counts the request against its credential's rate, if its role has one.
    fn admit_at_rate(&self, caller: &Caller) -> Result<(), ApiError> {
        let Some(limiter) = self.limits.get(&caller.role.name) else {
            return Ok(());
        };
        if self
            .checked
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PRUNE_LIMITERS_EVERY)
        {
            limiter.retain_recent();
        }
        let key = match (&caller.credential, caller.client) {
            // Without a credential, each address is held to the rate on its own.
            (Credential::Anonymous, Some(client)) => format!("anonymous@{client}"),
            (credential, _) => credential.label(),
        };
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                per_second: self
                    .policy
                    .role(&caller.role.name)
                    .and_then(|role| role.requests_per_second)
                    .map_or(0, NonZeroU32::get),
            }
        })
    }
}

fn invalid(reason: &str) -> ApiError {
    invalid_owned(reason.to_owned())
}

fn invalid_owned(reason: String) -> ApiError {
    ApiError::Unauthenticated {
        detail: format!("The credential was refused: {reason}."),
        invalid: true,
    }
}

fn presented(headers: &HeaderMap) -> Presented<'_> {
    let api_key = headers.get(&X_API_KEY);
    let authorization = headers.get(header::AUTHORIZATION);
    match (api_key, authorization) {
        (None, None) => Presented::Nothing,
        (Some(_), Some(_)) => Presented::Malformed("send one credential, not two"),
        (Some(key), None) => match key.to_str() {
            Ok(key) if !key.trim().is_empty() => Presented::Secret(key.trim()),
            _ => Presented::Malformed("X-API-Key is empty or not text"),
        },
        (None, Some(value)) => {
            let text = value.to_str().unwrap_or_default();
            match text.split_once(' ') {
                Some((scheme, token))
                    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
                {
                    Presented::Secret(token.trim())
                }
                _ => Presented::Malformed("send `Authorization: Bearer <token>`"),
            }
        }
    }
}

/// The layer: sets the `Caller` extension, or answers the refusal.
pub async fn authenticate(
    State((auth, plane)): State<(Arc<Authenticator>, Plane)>,
    ClientAddr(client): ClientAddr,
    request: Request,
    next: Next,
) -> Response {
    // The body is not Sync: only the parts are borrowed across the awaits.
    let (mut parts, body) = request.into_parts();
    let admitted = async {
        let caller = auth.caller(plane, client, &parts.headers).await?;
        if plane == Plane::Admin {
            auth.admit_to_admin(&caller)?;
        }
        auth.admit_at_rate(&caller)?;
        Ok::<_, ApiError>(caller)
    };
    match admitted.await {
        Ok(caller) => {
            auth.metrics.record_role_request(&caller.role.name);
            let action = (plane == Plane::Admin && parts.method != Method::GET)
                .then(|| admin_action(&caller, &parts));
            parts.extensions.insert(caller);
            let response = next.run(Request::from_parts(parts, body)).await;
            if let Some(entry) = action {
                auth.record_admin_action(entry, response.status()).await;
            }
            response
        }
        Err(refused) => {
            auth.metrics.record_refusal(refusal_reason(&refused));
            refused.into_response()
        }
    }
}

/// The audit entry of an admin action (every admin request but reads of state).
fn admin_action(caller: &Caller, request: &axum::http::request::Parts) -> audit::Entry {
    let uri = &request.uri;
    let mut entry = audit::Entry::new(caller, Action::Admin, uri.path(), Outcome::Ok);
    entry.request_id = request
        .headers
        .get("x-request-id")
        .and_then(|id| id.to_str().ok())
        .map(str::to_owned);
    entry.detail = Some(format!(
        "{} {}",
        request.method,
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    ));
    entry
}

impl Authenticator {
    async fn record_admin_action(&self, mut entry: audit::Entry, status: StatusCode) {
        if !status.is_success() {
            entry.outcome = Outcome::Error;
        }
        if let Some(detail) = &mut entry.detail {
            detail.push_str(&format!(" -> {}", status.as_u16()));
        }
        if let Err(error) = audit::record(&self.pool, &entry).await {
            tracing::error!(%error, "could not record an admin action in the audit log");
        }
    }
}

/// The label of a refusal in `/metrics`.
fn refusal_reason(error: &ApiError) -> &'static str {
    match error {
        ApiError::Unauthenticated { .. } | ApiError::Unauthorized => "unauthenticated",
        ApiError::RoleRefused(_) | ApiError::AdminDisabled => "forbidden",
        ApiError::RateLimited { .. } => "rate_limited",
        ApiError::TooManyWrongTokens { .. } => "locked_out",
        _ => "unavailable",
    }
}
