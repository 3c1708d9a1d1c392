//! API keys over HTTP, as `prospect-api keys` does on the command line: `GET /admin/keys` (never
//! the keys themselves), `POST /admin/keys` (the key is in this one response only), and
//! `DELETE /admin/keys/{name}`. Every change is in the audit log, as every admin action is.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::access::keys::{self, KeyError, KeyRecord};
use crate::http::error::{ApiError, Problem};
use crate::http::params::{NoParams, path_id};
use crate::http::state::AppState;

/// A key lives ten years at most: "until revoked" is what leaving the expiry out means.
const MAX_VALID_DAYS: u32 = 3650;

/// The body of `POST /admin/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit; never reused.
    #[schema(
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    name: String,
    /// A role of the access policy.
    role: String,
    /// Days the key is valid, a whole number; until revoked when absent.
    #[schema(minimum = 1, maximum = 3650, multiple_of = 1.0)]
    valid_days: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub name: String,
    pub role: String,
    /// The key: shown only now, store it as a secret.
    pub key: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The API keys, oldest first: name, role, created, expires, last used, revoked.
#[utoipa::path(
    get, path = "/admin/keys", tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, body = Vec<KeyRecord>))
)]
pub async fn list(
    State(state): State<AppState>,
    _: NoParams,
) -> Result<Json<Vec<KeyRecord>>, ApiError> {
    Ok(Json(keys::list(&state.pool).await?))
}

/// Creates a key for a role of the access policy; the key is in this response only.
#[utoipa::path(
    post, path = "/admin/keys", tag = "admin",
    request_body = NewKey,
    security(("admin_token" = [])),
    responses(
        (status = 201, body = CreatedKey),
        (status = 400, description = "A malformed body, name or validity", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A name already used, or a role the access policy does not declare (or no policy)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    _: NoParams,
    body: Bytes,
) -> Result<Response, ApiError> {
    let new: NewKey = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("body", format!("is not a valid new key: {e}")))?;
    if !state.auth.policy.enforced() {
        return Err(ApiError::conflicting(
            "role",
            "keys take their role from ACCESS_POLICY, and this server has none",
        ));
    }
    if state.auth.policy.role(&new.role).is_none() {
        return Err(ApiError::conflicting(
            "role",
            format!("the access policy declares no role '{}'", new.role),
        ));
    }
    let valid_days = new.valid_days.map(whole_days);
    let valid_for = match valid_days {
        None => None,
        Some(Some(days @ 1..=MAX_VALID_DAYS)) => {
            Some(std::time::Duration::from_secs(u64::from(days) * 86_400))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "valid_days",
                format!("must be a whole number of days from 1 to {MAX_VALID_DAYS}"),
            ));
        }
    };
    let created = keys::create(&state.pool, &new.name, &new.role, valid_for)
        .await
        .map_err(|error| match error {
            KeyError::Database(error) => ApiError::from(error),
            taken @ KeyError::NameTaken(_) => ApiError::conflicting("name", taken.to_string()),
            refused => ApiError::invalid("name", refused.to_string()),
        })?;
    let created = CreatedKey {
        name: new.name,
        role: new.role,
        key: created.key,
        expires_at: created.expires_at,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// A number of days, if it is a whole number that fits (`30` or `30.0`).
fn whole_days(days: f64) -> Option<u32> {
    (days.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&days)).then_some(days as u32)
}

/// Revokes a key: every instance refuses it within a second.
#[utoipa::path(
    delete, path = "/admin/keys/{name}", tag = "admin",
    params(("name" = String, Path, description = "The key's name")),
    security(("admin_token" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key, or revoked already", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    _: NoParams,
) -> Result<StatusCode, ApiError> {
    let name = path_id("name", name)?;
    if keys::revoke(&state.pool, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "there is no key named '{name}' that is not revoked already"
        )))
    }
}
