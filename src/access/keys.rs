//! API keys for servers and dashboards: `pak_` and 43 base64url characters (256 bits from the
//! operating system's generator), shown once when created; only their SHA-256 is stored (a key
//! that random needs no slow hash: there is nothing to guess). Every instance looks a key up in
//! the primary and remembers the answer for `LOOKUP_TTL`, so a revocation holds everywhere within
//! a second.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// What every key starts with: recognisable in a config file or a secret scanner's rule.
pub const PREFIX: &str = "pak_";
/// How long an instance trusts what it last read about a key.
pub const LOOKUP_TTL: Duration = Duration::from_secs(1);
/// `last_used_at` is written at most this often per key and instance.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);
const MAX_CACHED: u64 = 10_000;

/// A key that may be used now: not revoked, not expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveKey {
    pub name: String,
    pub role: String,
}

/// A key as `keys list` shows it: never the key itself.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyRecord {
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key's secret, and the hash stored for it.
pub fn generate() -> (String, [u8; 32]) {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).expect("the operating system's random generator works");
    let key = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    );
    let hash = hash(&key);
    (key, hash)
}

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("there is already a key named '{0}' (names are never reused, even once revoked)")]
    NameTaken(String),
    #[error(
        "'{0}' is not a key name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    BadName(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A key just created: the secret (shown once) and when it expires.
#[derive(Debug)]
pub struct NewKey {
    pub key: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Creates a key named `name` for `role`, valid for `valid_for` (None: until revoked).
pub async fn create(
    pool: &PgPool,
    name: &str,
    role: &str,
    valid_for: Option<Duration>,
) -> Result<NewKey, KeyError> {
    let (key, hash) = generate();
    let valid_for_ms = valid_for.map(|d| d.as_millis().min(10_000_000_000_000) as i64);
    let created = sqlx::query_scalar!(
        r#"INSERT INTO api_keys (name, role, key_hash, expires_at)
           VALUES ($1, $2, $3, now() + $4::bigint * interval '1 millisecond')
           RETURNING expires_at"#,
        name,
        role,
        &hash[..],
        valid_for_ms,
    )
    .fetch_one(pool)
    .await;
    match created {
        Ok(expires_at) => Ok(NewKey { key, expires_at }),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            Err(KeyError::NameTaken(name.to_owned()))
        }
        Err(sqlx::Error::Database(db)) if db.is_check_violation() => {
            Err(KeyError::BadName(name.to_owned()))
        }
        Err(error) => Err(error.into()),
    }
}

pub async fn list(pool: &PgPool) -> Result<Vec<KeyRecord>, sqlx::Error> {
    sqlx::query_as!(
        KeyRecord,
        "SELECT name, role, created_at, expires_at, last_used_at, revoked_at
         FROM api_keys ORDER BY created_at, name"
    )
    .fetch_all(pool)
    .await
}

/// Revokes the key `name`; false when there is no such key that is not revoked already.
pub async fn revoke(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let revoked = sqlx::query!(
        "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
        name
    )
    .execute(pool)
    .await?;
    Ok(revoked.rows_affected() == 1)
}

/// Looks keys up on the primary, remembering each answer (found or not) for `LOOKUP_TTL`.
pub struct KeyStore {
    pool: PgPool,
    found: moka::future::Cache<[u8; 32], Option<Arc<ActiveKey>>>,
    /// Keys whose `last_used_at` this instance wrote within `LAST_USED_EVERY`.
    used: moka::sync::Cache<String, ()>,
}

impl KeyStore {
    pub fn new(pool: PgPool) -> KeyStore {
        KeyStore {
            pool,
            found: moka::future::Cache::builder()
                .max_capacity(MAX_CACHED)
                .time_to_live(LOOKUP_TTL)
                .build(),
            used: moka::sync::Cache::builder()
                .max_capacity(MAX_CACHED)
                .time_to_live(LAST_USED_EVERY)
                .build(),
        }
    }

    /// The key `presented` is, if it may be used now.
    pub async fn find(&self, presented: &str) -> Result<Option<Arc<ActiveKey>>, sqlx::Error> {
        let hash = hash(presented);
        let pool = self.pool.clone();
        let found = self
            .found
            .try_get_with(hash, async move { look_up(&pool, &hash).await })
            .await
            .map_err(|shared| match Arc::try_unwrap(shared) {
                Ok(error) => error,
                Err(shared) => sqlx::Error::Protocol(shared.to_string()),
            })?;
        if let Some(key) = &found {
            self.note_use(&key.name);
        }
        Ok(found)
    }

    /// Records that the key was used, at most once a minute (never on the request's path).
    fn note_use(&self, name: &str) {
        if self.used.contains_key(name) {
            return;
        }
        self.used.insert(name.to_owned(), ());
        let (pool, name) = (self.pool.clone(), name.to_owned());
        tokio::spawn(async move {
            let written = sqlx::query!(
                "UPDATE api_keys SET last_used_at = now() WHERE name = $1",
                name
            )
            .execute(&pool)
            .await;
            if let Err(error) = written {
                tracing::debug!(%error, "could not record an API key's last use");
            }
        });
    }
}

async fn look_up(pool: &PgPool, hash: &[u8; 32]) -> Result<Option<Arc<ActiveKey>>, sqlx::Error> {
    let row = sqlx::query_as!(
        ActiveKey,
        "SELECT name, role FROM api_keys
         WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        &hash[..]
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Arc::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_stored_as_their_hash() {
        let (one, one_hash) = generate();
        let (two, _) = generate();
        assert!(one.starts_with(PREFIX));
        assert_eq!(one.len(), PREFIX.len() + 43, "256 bits in base64url");
        assert_ne!(one, two);
        assert_eq!(hash(&one), one_hash);
    }
}
