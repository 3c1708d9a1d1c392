//! Opaque keyset cursors: the sort key of the last row of a page, signed with HMAC-SHA256 over the
//! endpoint, sort and filters it belongs to. A cursor from another query, or one that was forged,
//! truncated or edited, fails verification and is a 400, never a wrong page.
//!
//! The key lives in the database (`api_secrets`), so every instance accepts every instance's cursors.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;
use sqlx::PgPool;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC kept in a cursor: 128 bits is ample against forgery and keeps URLs short.
const MAC_BYTES: usize = 16;

#[derive(Clone)]
pub struct CursorSigner {
    key: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("is not a cursor issued by this API (malformed)")]
    Malformed,
    #[error(
        "does not belong to this query: a cursor is valid only for the endpoint, sort and filters that produced it"
    )]
    Foreign,
}

impl CursorSigner {
    pub fn new(key: Vec<u8>) -> CursorSigner {
        CursorSigner { key }
    }

    /// Reads the shared key from the database.
    pub async fn load(pool: &PgPool) -> Result<CursorSigner, sqlx::Error> {
        let key = sqlx::query_scalar!("SELECT value FROM api_secrets WHERE name = 'cursor_hmac'")
            .fetch_one(pool)
            .await?;
        Ok(CursorSigner::new(key))
    }

    fn mac(&self, scope: &str, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    /// A cursor for `key`, valid only together with `scope` (endpoint, sort and filters).
    pub fn sign<K: Serialize>(&self, scope: &str, key: &K) -> String {
        let payload = serde_json::to_vec(key).expect("cursor keys always serialize");
        let tag = self.mac(scope, &payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(&tag[..MAC_BYTES])
        )
    }

    pub fn verify<K: DeserializeOwned>(&self, scope: &str, cursor: &str) -> Result<K, CursorError> {
        let (payload, tag) = cursor.split_once('.').ok_or(CursorError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CursorError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CursorError::Malformed)?;
        if tag.len() != MAC_BYTES {
            return Err(CursorError::Malformed);
        }
        // Constant-time comparison of the truncated tag.
        self.mac(scope, &payload)
            .verify_truncated_left(&tag)
            .map_err(|_| CursorError::Foreign)?;
        serde_json::from_slice(&payload).map_err(|_| CursorError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CursorSigner {
        CursorSigner::new(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    #[test]
    fn a_cursor_round_trips_within_its_scope() {
        let cursor = signer().sign("prospects|name|{}", &("Acme", "Lovelace", "Ada", "p1"));
        let key: (String, String, String, String) =
            signer().verify("prospects|name|{}", &cursor).unwrap();
        assert_eq!(
            key,
            ("Acme".into(), "Lovelace".into(), "Ada".into(), "p1".into())
        );
    }

    #[test]
    fn a_cursor_from_another_query_is_foreign() {
        let cursor = signer().sign("prospects|name|{\"industry\":\"A\"}", &(1, "p1"));
        let err = signer()
            .verify::<(i64, String)>("prospects|name|{\"industry\":\"B\"}", &cursor)
            .unwrap_err();
        assert_eq!(err, CursorError::Foreign);
    }

    #[test]
    fn edited_truncated_and_garbage_cursors_are_rejected() {
        let cursor = signer().sign("s", &(100, "p1"));
        let (payload, tag) = cursor.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&(999, "p1")).unwrap());
        let cases = [
            format!("{forged_payload}.{tag}"),
            cursor[..cursor.len() - 3].to_owned(),
            payload.to_owned(),
            "not a cursor".to_owned(),
            String::new(),
            format!("{payload}.{}", &tag[..4]),
        ];
        for case in cases {
            assert!(
                signer().verify::<(i64, String)>("s", &case).is_err(),
                "{case} was accepted"
            );
        }
        let other_key = CursorSigner::new(b"another key entirely, 32 bytes!!".to_vec());
        assert_eq!(
            other_key.verify::<(i64, String)>("s", &cursor).unwrap_err(),
            CursorError::Foreign
        );
    }
}
