//! JWT verification with `jsonwebtoken` (10.3+ fixes CVE-2026-25537), never by hand: a token is
//! accepted only with a signature by one of our keys, under the algorithm that key is for (no
//! `none`, no HS256 token "signed" with an RSA public key), with an `exp` in the future, an `nbf`
//! in the past (30 s leeway each way), and the `aud` and `iss` configured. Its role is one claim
//! (`JWT_ROLE_CLAIM`).
//!
//! Keys: JWT_SECRET (HS256), or a JWKS from a file or an http(s) URL. The JWKS is cached for
//! `JWKS_CACHE_TTL` and fetched again then, and on a token whose `kid` it does not know (at most
//! every `MIN_REFETCH`, so a flood of made-up kids cannot hammer the identity provider). Keys that
//! leave the set stay valid for one more TTL, so that tokens signed just before a rotation are
//! not refused while the provider has already stopped publishing their key.
//!
//! Verified tokens are cached (PostgREST measured ~20% more throughput from that): a token seen
//! again within `VERIFIED_TTL` costs a hash lookup, and is still refused once its `exp` passes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::config::AccessConfig;

/// Allowed clock skew for `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;
/// How long a fetched JWKS is used before it is fetched again.
pub const JWKS_CACHE_TTL: Duration = Duration::from_secs(300);
/// The least time between two fetches caused by unknown `kid`s.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// How long a verified token is remembered (never past its `exp`).
const VERIFIED_TTL: Duration = Duration::from_secs(60);
const MAX_VERIFIED: u64 = 50_000;
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `sub`, or `-` when the token has none.
    pub subject: String,
    /// The role claim; None when the token has none.
    pub role: Option<String>,
    expires_at: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// The token is not one we accept; the reason is safe to tell its bearer.
    #[error("{0}")]
    Invalid(String),
    /// The JWKS could not be fetched, so no token can be checked now.
    #[error("the keys to verify tokens could not be loaded: {0}")]
    KeysUnavailable(String),
}

pub struct JwtVerifier {
    keys: Keys,
    audience: Option<String>,
    issuer: Option<String>,
    role_claim: String,
    verified: moka::sync::Cache<String, Arc<Verified>>,
}

enum Keys {
    Secret(Arc<DecodingKey>),
    Jwks(Box<Jwks>),
}

impl JwtVerifier {
    /// The verifier `config` asks for, with the JWKS loaded once (a file must load; a URL that
    /// cannot be fetched now is tried again on the first token). None without JWT settings.
    pub async fn from_config(config: &AccessConfig) -> anyhow::Result<Option<JwtVerifier>> {
        let keys = match (&config.jwt_secret, &config.jwt_jwks) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => anyhow::bail!("set JWT_SECRET or JWT_JWKS, not both"),
            (Some(secret), None) => {
                Keys::Secret(Arc::new(DecodingKey::from_secret(secret.expose())))
            }
            (None, Some(location)) => {
                let jwks = Jwks::new(JwksLocation::parse(location)?);
                match jwks.refetch().await {
                    Ok(()) => {}
                    Err(error) if matches!(jwks.location, JwksLocation::File(_)) => {
                        anyhow::bail!("JWT_JWKS: {error}")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "JWT_JWKS could not be fetched; trying again on the first token")
                    }
                }
                Keys::Jwks(Box::new(jwks))
            }
        };
        Ok(Some(JwtVerifier {
            keys,
            audience: config.jwt_audience.clone(),
            issuer: config.jwt_issuer.clone(),
            role_claim: config.jwt_role_claim.clone(),
            verified: moka::sync::Cache::builder()
                .max_capacity(MAX_VERIFIED)
                .time_to_live(VERIFIED_TTL)
                .build(),
        }))
    }

    /// Whether `token` has the shape of a JWT (three base64url parts), as opposed to another
    /// credential.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && token.starts_with("ey")
    }

    pub async fn verify(&self, token: &str) -> Result<Arc<Verified>, JwtError> {
        let now = unix_now();
        if let Some(verified) = self.verified.get(token) {
            if verified.expires_at + LEEWAY_SECS > now {
                return Ok(verified);
            }
            self.verified.invalidate(token);
            return Err(invalid("the token has expired"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            invalid(format!(
                "the token's header cannot be read ({e}); alg none is never accepted"
            ))
        })?;
        let candidates = match &self.keys {
            Keys::Secret(key) => vec![(Algorithm::HS256, key.clone())],
            Keys::Jwks(jwks) => jwks.keys_for(header.kid.as_deref()).await?,
        };
        if candidates.is_empty() {
            return Err(invalid(match &header.kid {
                Some(kid) => format!("no key has kid '{}'", crate::http::params::shorten(kid)),
                None => "the token names no kid, and no key fits it".to_owned(),
            }));
        }
        let mut last_error = invalid("no key fits the token");
        for (algorithm, key) in candidates {
            if header.alg != algorithm {
                last_error = invalid(format!(
                    "the token says alg {:?}, but its key is for {algorithm:?}",
                    header.alg
                ));
                continue;
            }
            match jsonwebtoken::decode::<Value>(token, &key, &self.validation(algorithm)) {
                Ok(data) => {
                    let verified = Arc::new(self.read_claims(&data.claims));
                    self.verified.insert(token.to_owned(), verified.clone());
                    return Ok(verified);
                }
                Err(error) => last_error = invalid(describe(&error)),
            }
        }
        Err(last_error)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    fn read_claims(&self, claims: &Value) -> Verified {
        let role = if self.role_claim.starts_with('/') {
            claims.pointer(&self.role_claim)
        } else {
            claims.get(&self.role_claim)
        };
        Verified {
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned(),
            role: role.and_then(Value::as_str).map(str::to_owned),
            expires_at: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    pub fn role_claim(&self) -> &str {
        &self.role_claim
    }
}

fn invalid(reason: impl Into<String>) -> JwtError {
    JwtError::Invalid(reason.into())
}

/// What was wrong with a token, in words its bearer can act on (never the key or the claims).
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match error.kind() {
        K::ExpiredSignature => "the token has expired".to_owned(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        K::InvalidAudience => "the token is for another audience (aud)".to_owned(),
        K::InvalidIssuer => "the token is from another issuer (iss)".to_owned(),
        K::InvalidSignature => "the token's signature is not one of our keys'".to_owned(),
        K::InvalidAlgorithm => "the token's alg does not match its key".to_owned(),
        K::MissingRequiredClaim(claim) => format!("the token has no '{claim}' claim"),
        K::InvalidClaimFormat(claim) => {
            format!("the token's '{claim}' claim is not a number of seconds")
        }
        _ => format!("the token is malformed ({error})"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[derive(Debug, Clone)]
enum JwksLocation {
    File(PathBuf),
    Url(reqwest::Url),
}

impl JwksLocation {
    fn parse(text: &str) -> anyhow::Result<JwksLocation> {
        if text.starts_with("http://") || text.starts_with("https://") {
            let url = reqwest::Url::parse(text)
                .map_err(|e| anyhow::anyhow!("JWT_JWKS '{text}' is not a URL: {e}"))?;
            Ok(JwksLocation::Url(url))
        } else {
            Ok(JwksLocation::File(PathBuf::from(text)))
        }
    }
}

/// One key of the set, and the algorithm it verifies.
type Candidate = (Algorithm, Arc<DecodingKey>);

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<Option<String>, Vec<Candidate>>,
}

impl KeySet {
    fn from_jwks(set: &JwkSet) -> KeySet {
        let mut keys = KeySet::default();
        for jwk in &set.keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let (Some(algorithm), Ok(key)) = (algorithm_of(jwk), DecodingKey::from_jwk(jwk)) else {
                tracing::warn!(kid = ?jwk.common.key_id, "a JWKS key is of no signing algorithm we know; skipped");
                continue;
            };
            keys.by_kid
                .entry(jwk.common.key_id.clone())
                .or_default()
                .push((algorithm, Arc::new(key)));
        }
        keys
    }

    fn find(&self, kid: Option<&str>) -> Vec<Candidate> {
        match kid {
            Some(kid) => self
                .by_kid
                .get(&Some(kid.to_owned()))
                .cloned()
                .unwrap_or_default(),
            // No kid: any key may have signed it (a one-key set, typically).
            None => self.by_kid.values().flatten().cloned().collect(),
        }
    }
}

/// The algorithm a JWK verifies: its `alg`, else the one its key type implies.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(declared) = jwk.common.key_algorithm {
        return Algorithm::from_str(&declared.to_string()).ok();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::OctetKey(_) => Some(Algorithm::HS256),
    }
}

struct Jwks {
    location: JwksLocation,
    client: reqwest::Client,
    state: RwLock<JwksState>,
    /// One fetch at a time; others wait for it and use its keys.
    fetching: Mutex<()>,
}

#[derive(Default)]
struct JwksState {
    current: KeySet,
    /// The set before the last fetch: its keys stay valid for one TTL after they left.
    previous: KeySet,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl Jwks {
    fn new(location: JwksLocation) -> Jwks {
        Jwks {
            location,
            client: reqwest::Client::builder()
                .timeout(JWKS_FETCH_TIMEOUT)
                .build()
                .expect("a plain HTTP client builds"),
            state: RwLock::new(JwksState::default()),
            fetching: Mutex::new(()),
        }
    }

    /// The keys that may have signed a token naming `kid`, fetching the set again when it has
    /// expired or does not know the kid (and was not fetched in the last `MIN_REFETCH`).
    async fn keys_for(&self, kid: Option<&str>) -> Result<Vec<Candidate>, JwtError> {
        let (found, expired, may_refetch) = {
            let state = self.state.read().await;
            let mut found = state.current.find(kid);
            found.extend(state.previous.find(kid));
            let expired = state
                .fetched_at
                .is_none_or(|at| at.elapsed() >= JWKS_CACHE_TTL);
            let may_refetch = state
                .last_attempt
                .is_none_or(|at| at.elapsed() >= MIN_REFETCH);
            (found, expired, may_refetch)
        };
        if (found.is_empty() || expired) && may_refetch {
            let never_loaded = self.state.read().await.fetched_at.is_none();
            match self.refetch().await {
                Ok(()) => {}
                Err(error) if never_loaded => {
                    return Err(JwtError::KeysUnavailable(error.to_string()));
                }
                // The keys we have are still the best we know.
                Err(error) => {
                    tracing::warn!(%error, "fetching JWT_JWKS failed; using the keys fetched before")
                }
            }
            let state = self.state.read().await;
            let mut found = state.current.find(kid);
            found.extend(state.previous.find(kid));
            return Ok(found);
        }
        if found.is_empty() && self.state.read().await.fetched_at.is_none() {
            return Err(JwtError::KeysUnavailable(
                "not fetched yet; retry shortly".to_owned(),
            ));
        }
        Ok(found)
    }

    async fn refetch(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self.fetching.lock().await;
        if self
            .state
            .read()
            .await
            .last_attempt
            .is_some_and(|at| at.elapsed() < Duration::from_millis(100))
        {
            return Ok(()); // another request fetched it while this one waited
        }
        self.state.write().await.last_attempt = Some(Instant::now());
        let text = match &self.location {
            JwksLocation::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            JwksLocation::Url(url) => {
                let response = self.client.get(url.clone()).send().await?;
                if !response.status().is_success() {
                    anyhow::bail!("{url} answered {}", response.status());
                }
                response.text().await?
            }
        };
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("the JWKS is not a JSON Web Key Set: {e}"))?;
        let fresh = KeySet::from_jwks(&set);
        let mut state = self.state.write().await;
        let expired_previous = state
            .fetched_at
            .is_none_or(|at| at.elapsed() >= JWKS_CACHE_TTL);
        let replaced = std::mem::replace(&mut state.current, fresh);
        if expired_previous || state.previous.by_kid.is_empty() {
            state.previous = replaced;
        } else {
            state.previous.by_kid.extend(replaced.by_kid);
        }
        // Keys still published need no second copy.
        let current: Vec<Option<String>> = state.current.by_kid.keys().cloned().collect();
        for kid in current {
            state.previous.by_kid.remove(&kid);
        }
        state.fetched_at = Some(Instant::now());
        tracing::info!(keys = set.keys.len(), "loaded the JWKS");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks_of(names: &[&str]) -> String {
        let keys: Vec<String> = names
            .iter()
            .map(|name| {
                let path = format!(
                    "{}/tests/fixtures/jwt/{name}.jwk.json",
                    env!("CARGO_MANIFEST_DIR")
                );
                std::fs::read_to_string(path).unwrap()
            })
            .collect();
        format!("{{\"keys\": [{}]}}", keys.join(","))
    }

    #[tokio::test]
    async fn a_key_that_leaves_the_set_stays_valid_until_the_next_cache_period() {
        let path = std::env::temp_dir().join(format!("jwks-{}.json", std::process::id()));
        std::fs::write(&path, jwks_of(&["a"])).unwrap();
        let jwks = Jwks::new(JwksLocation::File(path.clone()));
        jwks.refetch().await.unwrap();
        assert_eq!(jwks.keys_for(Some("key-a")).await.unwrap().len(), 1);
        assert!(jwks.keys_for(Some("key-b")).await.unwrap().is_empty());

        // The provider rotates: b replaces a at once.
        std::fs::write(&path, jwks_of(&["b"])).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        jwks.refetch().await.unwrap();
        assert_eq!(jwks.keys_for(Some("key-b")).await.unwrap().len(), 1);
        assert_eq!(
            jwks.keys_for(Some("key-a")).await.unwrap().len(),
            1,
            "a token signed just before the rotation still verifies"
        );
        let all = jwks.keys_for(None).await.unwrap();
        assert!(all.iter().all(|(alg, _)| *alg == Algorithm::RS256));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_jwk_without_alg_verifies_what_its_key_type_implies() {
        let text = jwks_of(&["a"]).replace("\"alg\": \"RS256\",", "");
        let set: JwkSet = serde_json::from_str(&text).unwrap();
        assert_eq!(algorithm_of(&set.keys[0]), Some(Algorithm::RS256));
    }
}
