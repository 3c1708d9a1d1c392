//! Who may read what: the roles of the access policy (`policy`), what a role may do with each read
//! model (`restriction`), the credentials a request can carry (JWTs, `jwt`; API keys, `keys`; the
//! `ADMIN_TOKEN`), and the record of every export and admin action (`audit`). Nothing here knows
//! HTTP: `http::auth` turns a request's credentials into a `Caller`, and the read path asks the
//! caller's `Restriction` what it may serve.

pub mod audit;
pub mod jwt;
pub mod keys;
pub mod policy;
pub mod restriction;

use std::net::IpAddr;
use std::sync::Arc;

pub use policy::{Policy, Role};
pub use restriction::Restriction;

/// Who made a request, and the role that decides what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub credential: Credential,
    pub role: Arc<Role>,
    /// The address the request came from, when the server recorded it.
    pub client: Option<IpAddr>,
}

/// What a request identified itself with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// No policy: every request reads everything (a server on a loopback address).
    Open,
    /// No credential, and the policy's `anonymous` role.
    Anonymous,
    AdminToken,
    ApiKey {
        name: String,
    },
    Jwt {
        subject: String,
    },
}

impl Credential {
    /// How the audit log, the rate limits and the export quotas name it.
    pub fn label(&self) -> String {
        match self {
            Credential::Open => "open".to_owned(),
            Credential::Anonymous => "anonymous".to_owned(),
            Credential::AdminToken => "admin-token".to_owned(),
            Credential::ApiKey { name } => format!("key:{name}"),
            Credential::Jwt { subject } => format!("jwt:{subject}"),
        }
    }
}

impl Caller {
    /// A request of a server without policy (every read open).
    pub fn open(client: Option<IpAddr>) -> Caller {
        Caller {
            credential: Credential::Open,
            role: policy::Role::open(),
            client,
        }
    }

    /// What this caller may do with read model `M`.
    pub fn restriction<M: crate::views::ReadModel>(&self) -> Arc<Restriction> {
        Restriction::of::<M>(&self.role)
    }
}
