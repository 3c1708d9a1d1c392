//! Roles and what each may do, from the TOML file `ACCESS_POLICY` names:
//!
//! ```toml
//! [roles.frontend]
//! max_limit = 100                       # page size cap
//! [roles.analyst]
//! hide = ["email", "prospect_phone"]    # columns left out of rows, refused as parameters
//! export_rows_per_day = 1000            # CSV rows per credential and day, across instances
//! requests_per_second = 20              # per credential (GCRA); `burst` defaults to it
//! [roles.partner_de]
//! rows = { company_country = "Germany" } # ANDed into every statement of the role
//! [roles.ops]
//! admin = true                          # the admin plane
//! [roles.anonymous]                     # only if present: requests without credentials
//! hide = ["email", "prospect_phone"]
//! ```
//!
//! Columns are named as in `/prospects` rows (`company_country`), for every read model alike (a
//! company's `country` is its `company_country`). Unknown keys, roles and columns are errors naming
//! them: a typo must not open anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The role of requests without credentials, when the policy declares it.
pub const ANONYMOUS: &str = "anonymous";
/// The role of `ADMIN_TOKEN`: the admin plane, every column, no limit.
pub const ADMIN: &str = "admin";
/// The role of every request when there is no policy (a server on a loopback address).
pub const OPEN: &str = "open";

#[derive(Debug)]
pub struct Role {
    pub name: String,
    pub admin: bool,
    /// Columns this role may not see, nor filter, sort, count or search by.
    pub hide: BTreeSet<String>,
    /// The row scope: each column's allowed values, ANDed into every statement.
    pub rows: BTreeMap<String, Vec<String>>,
    pub max_limit: Option<i64>,
    pub export_rows_per_day: Option<i64>,
    pub requests_per_second: Option<NonZeroU32>,
    pub burst: Option<NonZeroU32>,
    /// What this role's responses depend on (columns hidden and row scope): part of every cache
    /// key and ETag, so that no response crosses between roles that see different data.
    pub fingerprint: String,
    /// What the role may do with each read model, worked out on first use (`Restriction::of`).
    pub(super) restrictions: std::sync::RwLock<HashMap<std::any::TypeId, Arc<super::Restriction>>>,
}

impl Role {
    fn unrestricted(name: &str, admin: bool) -> Role {
        let mut role = Role {
            name: name.to_owned(),
            admin,
            hide: BTreeSet::new(),
            rows: BTreeMap::new(),
            max_limit: None,
            export_rows_per_day: None,
            requests_per_second: None,
            burst: None,
            fingerprint: String::new(),
            restrictions: Default::default(),
        };
        role.fingerprint = role.compute_fingerprint();
        role
    }

    /// The role of every request without a policy.
    pub fn open() -> Arc<Role> {
        static OPEN_ROLE: std::sync::LazyLock<Arc<Role>> =
            std::sync::LazyLock::new(|| Arc::new(Role::unrestricted(OPEN, false)));
        OPEN_ROLE.clone()
    }

    /// Whether this role sees every column of every row.
    pub fn sees_everything(&self) -> bool {
        self.hide.is_empty() && self.rows.is_empty()
    }

    fn compute_fingerprint(&self) -> String {
        if self.sees_everything() {
            return "all".to_owned();
        }
        let text = serde_json::to_string(&(&self.hide, &self.rows)).expect("a role serializes");
        let digest = Sha256::digest(text.as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The roles, and what a request without credentials gets.
#[derive(Debug)]
pub struct Policy {
    roles: HashMap<String, Arc<Role>>,
    /// False without a policy file: every request reads as `open`.
    enforced: bool,
}

impl Policy {
    /// No policy: every request may read everything (only on a loopback address, see startup).
    pub fn open() -> Policy {
        let mut roles = HashMap::new();
        roles.insert(OPEN.to_owned(), Role::open());
        roles.insert(ADMIN.to_owned(), Arc::new(Role::unrestricted(ADMIN, true)));
        Policy {
            roles,
            enforced: false,
        }
    }

    /// Reads and checks the policy file; `columns` are the columns a policy may name.
    pub fn load(path: &Path, columns: &BTreeSet<String>) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("ACCESS_POLICY {}: {e}", path.display()))?;
        Policy::parse(&text, columns).map_err(|e| format!("ACCESS_POLICY {}: {e}", path.display()))
    }

    pub fn parse(text: &str, columns: &BTreeSet<String>) -> Result<Policy, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut roles = HashMap::new();
        for (name, declared) in file.roles {
            if name == OPEN {
                return Err(format!(
                    "'{OPEN}' is the role of a server without a policy; name the role otherwise"
                ));
            }
            if name == ADMIN && !declared.admin {
                return Err(format!(
                    "role '{ADMIN}' is ADMIN_TOKEN's: it must have admin = true"
                ));
            }
            let role = declared.into_role(&name, columns)?;
            roles.insert(name, Arc::new(role));
        }
        roles
            .entry(ADMIN.to_owned())
            .or_insert_with(|| Arc::new(Role::unrestricted(ADMIN, true)));
        Ok(Policy {
            roles,
            enforced: true,
        })
    }

    pub fn enforced(&self) -> bool {
        self.enforced
    }

    pub fn role(&self, name: &str) -> Option<Arc<Role>> {
        self.roles.get(name).cloned()
    }

    /// The role of `ADMIN_TOKEN`.
    pub fn admin_role(&self) -> Arc<Role> {
        self.role(ADMIN).expect("every policy has the admin role")
    }

    /// What a request without credentials may do: the `anonymous` role, `open` without a policy,
    /// or nothing (a 401).
    pub fn without_credentials(&self) -> Option<Arc<Role>> {
        self.role(if self.enforced { ANONYMOUS } else { OPEN })
    }

    /// Whether any role may use the admin plane besides `ADMIN_TOKEN`'s.
    pub fn has_admin_roles(&self) -> bool {
        self.roles
            .values()
            .any(|role| role.admin && role.name != ADMIN)
    }

    pub fn roles(&self) -> impl Iterator<Item = &Arc<Role>> {
        self.roles.values()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    roles: BTreeMap<String, RoleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleFile {
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    hide: Vec<String>,
    #[serde(default)]
    rows: BTreeMap<String, OneOrMany>,
    max_limit: Option<u32>,
    export_rows_per_day: Option<u64>,
    requests_per_second: Option<NonZeroU32>,
    burst: Option<NonZeroU32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl RoleFile {
    fn into_role(self, name: &str, columns: &BTreeSet<String>) -> Result<Role, String> {
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err(format!(
                "role '{name}': a role's name is letters, digits, '_' and '-'"
            ));
        }
        let unknown = |column: &String| !columns.contains(column);
        let named: Vec<&String> = self.hide.iter().chain(self.rows.keys()).collect();
        if let Some(column) = named.into_iter().find(|c| unknown(c)) {
            let known: Vec<&str> = columns.iter().map(String::as_str).collect();
            return Err(format!(
                "role '{name}': there is no column '{column}'; the columns are {}",
                known.join(", ")
            ));
        }
        if self.burst.is_some() && self.requests_per_second.is_none() {
            return Err(format!("role '{name}': burst needs requests_per_second"));
        }
        let rows: BTreeMap<String, Vec<String>> = self
            .rows
            .into_iter()
            .map(|(column, values)| match values {
                OneOrMany::One(value) => (column, vec![value]),
                OneOrMany::Many(values) => (column, values),
            })
            .collect();
        if let Some((column, _)) = rows.iter().find(|(_, values)| values.is_empty()) {
            return Err(format!("role '{name}': rows.{column} allows no value"));
        }
        if let Some(column) = rows.keys().find(|column| self.hide.contains(column)) {
            return Err(format!(
                "role '{name}': {column} is both hidden and a row scope"
            ));
        }
        let mut role = Role {
            name: name.to_owned(),
            admin: self.admin,
            hide: self.hide.into_iter().collect(),
            rows,
            max_limit: self.max_limit.map(i64::from),
            export_rows_per_day: self
                .export_rows_per_day
                .map(|rows| i64::try_from(rows).unwrap_or(i64::MAX)),
            requests_per_second: self.requests_per_second,
            burst: self.burst,
            fingerprint: String::new(),
            restrictions: Default::default(),
        };
        role.fingerprint = role.compute_fingerprint();
        Ok(role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> BTreeSet<String> {
        ["email", "prospect_phone", "company_country", "industry"]
            .map(String::from)
            .into()
    }

    #[test]
    fn the_example_policy_parses_with_every_setting() {
        let policy = Policy::parse(
            r#"
            [roles.frontend]
            max_limit = 100
            [roles.analyst]
            hide = ["email", "prospect_phone"]
            export_rows_per_day = 1000
            requests_per_second = 20
            [roles.partner_de]
            rows = { company_country = "Germany" }
            [roles.anonymous]
            hide = ["email"]
            "#,
            &columns(),
        )
        .unwrap();
        let analyst = policy.role("analyst").unwrap();
        assert_eq!(analyst.export_rows_per_day, Some(1000));
        assert_eq!(analyst.hide.len(), 2);
        let partner = policy.role("partner_de").unwrap();
        assert_eq!(partner.rows["company_country"], ["Germany"]);
        assert_eq!(policy.role("frontend").unwrap().max_limit, Some(100));
        assert_eq!(policy.without_credentials().unwrap().name, "anonymous");
        assert!(policy.role(ADMIN).unwrap().admin, "ADMIN_TOKEN's role");
        assert_eq!(policy.role("frontend").unwrap().fingerprint, "all");
        assert_ne!(analyst.fingerprint, partner.fingerprint);
    }

    #[test]
    fn typos_and_impossible_rules_are_errors_naming_them() {
        for (text, named) in [
            ("[roles.a]\nhidde = [\"email\"]", "hidde"),
            ("[roles.a]\nhide = [\"emial\"]", "emial"),
            ("[roles.a]\nrows = { countr = \"x\" }", "countr"),
            ("[roles.a]\nrows = { industry = [] }", "industry"),
            ("[roles.a]\nburst = 5", "burst"),
            ("[roles.a]\nmax_limit = -1", "max_limit"),
            ("[roles.\"b c\"]", "b c"),
            (
                "[roles.a]\nhide = [\"industry\"]\nrows = { industry = \"x\" }",
                "industry",
            ),
            ("[roles.admin]\nmax_limit = 5", "admin = true"),
            ("[roles.open]", "open"),
        ] {
            let error = Policy::parse(text, &columns()).unwrap_err();
            assert!(error.contains(named), "{text}: {error}");
        }
    }

    #[test]
    fn without_a_policy_every_request_is_open_and_without_anonymous_none_is() {
        assert_eq!(Policy::open().without_credentials().unwrap().name, OPEN);
        let policy = Policy::parse("[roles.a]", &columns()).unwrap();
        assert!(policy.without_credentials().is_none());
    }
}
