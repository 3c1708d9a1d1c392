//! Typed configuration. Every setting is a clap argument that also reads an environment variable, so
//! its name, default and meaning live in exactly one place and `--help` lists them all.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;

use crate::views::Mode;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/prospects";

/// A connection URL, which may carry a password: it is never printed by `Debug` or `Display`.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its password, for messages that must say where we tried to connect.
    pub fn redacted(&self) -> String {
        match url_password_range(&self.0) {
            Some(range) => format!("{}***{}", &self.0[..range.start], &self.0[range.end..]),
            None => self.0.clone(),
        }
    }
}

/// Where the password of `scheme://user:password@host/...` sits, if there is one.
fn url_password_range(url: &str) -> Option<std::ops::Range<usize>> {
    let authority_start = url.find("://")? + 3;
    let authority_end = url[authority_start..]
        .find('/')
        .map_or(url.len(), |i| authority_start + i);
    let at = url[authority_start..authority_end].rfind('@')? + authority_start;
    let colon = url[authority_start..at].find(':')? + authority_start;
    Some(colon + 1..at)
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(DatabaseUrl(s.to_owned()))
        } else {
            Err("expected a URL like postgres://user@host:5432/database".to_owned())
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL. `migrate` and `serve --demo` create the database when it is missing.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// Maximum number of pooled connections per process.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,

    /// How long to wait for a free pooled connection before failing the request.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct RefreshSettings {
    /// lock_timeout of a view refresh: how long it may wait for the view's lock before failing.
    #[arg(long, env = "REFRESH_LOCK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub refresh_lock_timeout: Duration,

    /// statement_timeout of a view refresh: the longest one refresh may run before it is cancelled.
    #[arg(long, env = "REFRESH_STATEMENT_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub refresh_statement_timeout: Duration,

    /// work_mem of a view refresh (PostgreSQL units: kB, MB, GB). REFRESH ... CONCURRENTLY joins the
    /// old and new contents; with the server default of 4MB that join spills to disk (measured on 1M
    /// rows: 16.8 s at 4MB, 12.0 s at 256MB). Only the refresh transaction gets it.
    #[arg(long, env = "REFRESH_WORK_MEM", default_value = "256MB", value_parser = parse_pg_memory)]
    pub refresh_work_mem: String,

    /// In incremental mode, a table in which more than this share of all companies changed since its
    /// last round is built anew beside the one readers use (from its whole definition, indexes built
    /// after the load) instead of being recomputed company by company: past it, the build costs less
    /// (bench/README.md).
    #[arg(long, env = "INCREMENTAL_REBUILD_SHARE", default_value = "0.05", value_parser = parse_share)]
    pub incremental_rebuild_share: f64,

    /// statement_timeout of a build beside (incremental mode): a table built from its whole definition
    /// while readers keep the old one, which takes minutes at tens of millions of rows; past this it
    /// is cancelled (and tried again later). 0: no limit.
    #[arg(long, env = "REFRESH_BUILD_TIMEOUT", default_value = "2h", value_parser = parse_duration)]
    pub refresh_build_timeout: Duration,
}

/// How the read models are kept fresh; `migrate` and `serve` convert them to it.
#[derive(Debug, Clone, Args)]
pub struct MaintenanceConfig {
    /// `refresh`: materialized views refreshed in full with REFRESH ... CONCURRENTLY (freshness
    /// costs grow with the data). `incremental`: tables with the same names, columns and indexes,
    /// in which only the rows of the companies that changed are recomputed. `migrate` and `serve`
    /// convert the read models to this mode (and back), serving the old data while the new relation is
    /// built.
    #[arg(long, env = "VIEW_MAINTENANCE", value_enum, default_value = "refresh")]
    pub view_maintenance: Mode,
}

/// Everything `prospect-api serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// A PostgreSQL streaming replica for every data and freshness read; the primary (DATABASE_URL)
    /// when unset. The refresh log is replicated with the views, so `X-Data-Age` on a replica is the
    /// age of what it holds, replication lag included. Refreshes and admin actions stay on the primary.
    #[arg(long, env = "READ_DATABASE_URL", hide_env_values = true)]
    pub read_database_url: Option<DatabaseUrl>,

    /// Reads leave the replica when its replay lag (how long ago the primary was where the replica
    /// has replayed to, measured every 250 ms) exceeds this, and return once it is under half of it.
    #[arg(long, env = "MAX_REPLICA_LAG", default_value = "10s", value_parser = parse_duration)]
    pub max_replica_lag: Duration,

    /// While the replica is down or lags more than MAX_REPLICA_LAG: `on` reads from the primary,
    /// `off` answers 503 (for a primary that must not take read load).
    #[arg(long, env = "REPLICA_FALLBACK", default_value = "on", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub replica_fallback: bool,

    /// Address and port to listen on.
    #[arg(long = "bind", env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind_addr: std::net::SocketAddr,

    /// statement_timeout of read queries: a query running longer is cancelled (503).
    #[arg(long, env = "READ_STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub read_statement_timeout: Duration,

    /// The longest a request may take before it is answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// The longest a request with `Prefer: min-freshness=now` waits for data covering every write
    /// committed before it arrived, before it is answered 503 with Retry-After (REQUEST_TIMEOUT
    /// bounds it too).
    #[arg(long, env = "READ_YOUR_WRITES_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub read_your_writes_timeout: Duration,

    /// Comma-separated origins allowed to call the API from a browser (CORS). Unset: CORS stays closed.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<axum::http::HeaderValue>,

    /// Data older than this is served with `X-Data-Stale: true`. Default: twice REFRESH_INTERVAL
    /// (30m when the schedule is off).
    #[arg(long, env = "STALE_AFTER", value_parser = parse_duration)]
    pub stale_after: Option<Duration>,

    /// Bearer token for the /admin endpoints, at least 32 characters (e.g. `openssl rand -hex 32`).
    /// Unset: the admin endpoints are disabled (403).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, value_parser = SecretParser::<AdminToken>::new())]
    pub admin_token: Option<AdminToken>,

    /// How long an instance reuses a view's freshness (from the refresh log) before reading it again;
    /// its own refreshes are seen at once, other instances' within this time. 0 reads it on every
    /// request.
    #[arg(long, env = "FRESHNESS_CACHE_TTL", default_value = "1s", value_parser = parse_duration)]
    pub freshness_cache_ttl: Duration,

    /// Memory for this instance's cache of whole data responses (bytes, or with KiB, MiB, GiB); an
    /// entry serves its request until the view's data changes. 0 turns it off.
    #[arg(long, env = "RESPONSE_CACHE_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub response_cache_bytes: u64,

    /// The most rows one CSV export (`Accept: text/csv` or `format=csv` on a list) may hold; a request
    /// matching more is refused with a 400 before any row is sent.
    #[arg(long, env = "CSV_MAX_ROWS", default_value_t = 100_000)]
    pub csv_max_rows: u32,

    /// Refresh every view this often (0 turns the schedule off).
    #[arg(long, env = "REFRESH_INTERVAL", default_value = "15m", value_parser = parse_duration)]
    pub refresh_interval: Duration,

    /// Refresh every view on this cron schedule instead of every REFRESH_INTERVAL, in UTC: minute,
    /// hour, day of month, month, day of week (an optional seconds field may come first), e.g.
    /// `0 3 * * *` for 03:00 every night, when traffic is low.
    #[arg(long, env = "REFRESH_SCHEDULE", value_parser = parse_cron)]
    pub refresh_schedule: Option<croner::Cron>,

    /// Have the base-table triggers NOTIFY on every write, and listen. Off by default: notifying
    /// writers commit one at a time (measured: 0.39 of trigger-less INSERT throughput from 8 clients);
    /// instead the refresher polls the change record every REFRESH_POLL_INTERVAL.
    #[arg(long, env = "REFRESH_NOTIFY", default_value_t = false, action = clap::ArgAction::Set)]
    pub refresh_notify: bool,

    /// How often to look for base-table changes when REFRESH_NOTIFY is off.
    #[arg(long, env = "REFRESH_POLL_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub refresh_poll_interval: Duration,

    /// After a base-table change, wait for this much quiet before refreshing.
    #[arg(long, env = "REFRESH_DEBOUNCE", default_value = "1s", value_parser = parse_duration)]
    pub refresh_debounce: Duration,

    /// ...but never longer than this after the first notification of a burst.
    #[arg(long, env = "REFRESH_MAX_DELAY", default_value = "10s", value_parser = parse_duration)]
    pub refresh_max_delay: Duration,

    /// Keep the refresh log and the error record this long (each view's last success and last error
    /// are always kept); 0 keeps everything.
    #[arg(long, env = "REFRESH_LOG_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub refresh_log_retention: Duration,

    /// Seed demo data when the base tables are empty (for trying the API out).
    #[arg(long)]
    pub demo: bool,

    #[command(flatten)]
    pub access: AccessConfig,

    #[command(flatten)]
    pub maintenance: MaintenanceConfig,

    #[command(flatten)]
    pub refresh: RefreshSettings,
}

/// Who may read what (`access`): the policy, and how JWTs are verified.
#[derive(Debug, Clone, Args)]
pub struct AccessConfig {
    /// The access policy (TOML): the roles, the columns each may not see, its row scope and limits
    /// (README, "Access control"). Unset: every read is open, and `serve` only binds a loopback
    /// address.
    #[arg(long, env = "ACCESS_POLICY")]
    pub access_policy: Option<std::path::PathBuf>,

    /// Verify JWTs signed with this HS256 secret (at least 32 bytes).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_parser = SecretParser::<JwtSecret>::new())]
    pub jwt_secret: Option<JwtSecret>,

    /// Verify JWTs with the keys of this JWKS: a file path or an http(s) URL. Keys are cached, and
    /// fetched again when the cache expires and (at most every 10 s) for an unknown `kid`.
    #[arg(long, env = "JWT_JWKS")]
    pub jwt_jwks: Option<String>,

    /// The `aud` every JWT must carry. Unset: `aud` is not checked.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// The `iss` every JWT must carry. Unset: `iss` is not checked.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The claim naming a JWT's role: a top-level claim's name, or a JSON pointer for a nested one
    /// (`/app_metadata/role`, or `/https:~1~1example.com~1role` for a namespaced claim).
    #[arg(long, env = "JWT_ROLE_CLAIM", default_value = "role")]
    pub jwt_role_claim: String,

    /// Keep the audit log of exports and admin actions this long; 0 keeps everything.
    #[arg(long, env = "AUDIT_LOG_RETENTION", default_value = "365d", value_parser = parse_duration)]
    pub audit_log_retention: Duration,
}

impl AccessConfig {
    pub fn verifies_jwts(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_jwks.is_some()
    }
}

impl ServeConfig {
    /// STALE_AFTER, or its default: twice the longest time between two scheduled refreshes (30
    /// minutes without a schedule).
    pub fn effective_stale_after(&self) -> Duration {
        self.stale_after
            .unwrap_or_else(|| match self.schedule().longest_gap() {
                Some(gap) => gap * 2,
                None => Duration::from_secs(1800),
            })
    }

    /// When the full refreshes run: REFRESH_SCHEDULE, else every REFRESH_INTERVAL, else never.
    pub fn schedule(&self) -> Schedule {
        match (&self.refresh_schedule, self.refresh_interval) {
            (Some(cron), _) => Schedule::Cron(Box::new(cron.clone())),
            (None, interval) if interval.is_zero() => Schedule::Off,
            (None, interval) => Schedule::Every(interval),
        }
    }
}

/// When full refreshes run (REFRESH_SCHEDULE or REFRESH_INTERVAL).
#[derive(Debug, Clone)]
pub enum Schedule {
    Off,
    Every(Duration),
    /// At the times of a cron expression, in UTC.
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// The longest wait between two runs (over the next few dozen of a cron schedule).
    pub fn longest_gap(&self) -> Option<Duration> {
        match self {
            Schedule::Off => None,
            Schedule::Every(interval) => Some(*interval),
            Schedule::Cron(cron) => {
                let runs: Vec<_> = cron.iter_after(chrono::Utc::now()).take(64).collect();
                runs.windows(2)
                    .filter_map(|pair| (pair[1] - pair[0]).to_std().ok())
                    .max()
            }
        }
    }

    /// How long from now until the next run; `None`: never.
    pub fn until_next(&self) -> Option<Duration> {
        match self {
            Schedule::Off => None,
            Schedule::Every(interval) => Some(*interval),
            Schedule::Cron(cron) => {
                let now = chrono::Utc::now();
                let next = cron.find_next_occurrence(&now, false).ok()?;
                Some((next - now).to_std().unwrap_or_default())
            }
        }
    }
}

/// The admin bearer token. Never printed; compared in constant time.
#[derive(Clone)]
pub struct AdminToken(String);

pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

impl FromStr for AdminToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.chars().count() < MIN_ADMIN_TOKEN_CHARS {
            return Err(format!(
                "ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(AdminToken(s.to_owned()))
    }
}

/// Parses a secret (ADMIN_TOKEN, JWT_SECRET) without the usual "invalid value '…'" message: a
/// rejected secret may still be most of a real one, and must not be echoed to the terminal or logs.
#[derive(Clone)]
struct SecretParser<T>(std::marker::PhantomData<T>);

impl<T> SecretParser<T> {
    fn new() -> Self {
        SecretParser(std::marker::PhantomData)
    }
}

impl<T> clap::builder::TypedValueParser for SecretParser<T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg.and_then(|arg| arg.get_long()).map_or_else(
            || "the secret".to_owned(),
            |long| long.replace('-', "_").to_uppercase(),
        );
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidUtf8,
                format!("{name} must be valid UTF-8\n"),
            )
            .with_cmd(cmd)
        })?;
        text.parse().map_err(|reason: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{reason}\n"),
            )
            .with_cmd(cmd)
        })
    }
}

/// The HS256 key of JWT_SECRET. Never printed.
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

pub const MIN_JWT_SECRET_BYTES: usize = 32;

impl FromStr for JwtSecret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < MIN_JWT_SECRET_BYTES {
            return Err(format!(
                "JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes (RFC 7518 asks HS256 keys \
                 to be as long as the hash; e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(JwtSecret(s.as_bytes().to_vec()))
    }
}

impl JwtSecret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(***)")
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl AdminToken {
    /// Compares digests of equal length byte by byte without stopping early, so the time taken says
    /// nothing about how much of a guess was right.
    pub fn matches(&self, candidate: &str) -> bool {
        use sha2::{Digest, Sha256};
        let expected = Sha256::digest(self.0.as_bytes());
        let given = Sha256::digest(candidate.as_bytes());
        expected
            .iter()
            .zip(given.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

fn parse_origin(text: &str) -> Result<axum::http::HeaderValue, String> {
    let origin = text.trim();
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let valid = matches!(host, Some(host) if !host.is_empty() && !host.contains('/'));
    if !valid {
        return Err(format!(
            "'{origin}' is not an origin like https://app.example.com"
        ));
    }
    axum::http::HeaderValue::from_str(origin)
        .map_err(|_| format!("'{origin}' is not a valid origin"))
}

/// Parses durations such as `500ms`, `10s`, `15m`, `1h` (and `0` for "off").
/// Accepts a cron schedule such as `0 3 * * *` (seconds optional in front).
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    use std::str::FromStr;
    croner::Cron::from_str(text.trim()).map_err(|e| {
        format!(
            "'{text}' is not a cron schedule like '0 3 * * *' (minute hour day month weekday): {e}"
        )
    })
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("'{text}' is not a duration like 500ms, 10s, 15m or 1h ({e})"))
}

/// Accepts a PostgreSQL memory setting such as `64MB` or `1GB` (checked here so that a typo fails at
/// startup, not at the first refresh).
pub fn parse_pg_memory(text: &str) -> Result<String, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let valid_number = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit());
    if valid_number && ["kB", "MB", "GB", "TB"].contains(&unit) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "'{text}' is not a PostgreSQL memory size like 64MB or 1GB"
        ))
    }
}

/// A byte count such as `67108864`, `512KiB`, `64MiB` or `1GiB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: u64 = match &text[digits.len()..] {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|_| unit > 0)
        .ok_or_else(|| format!("'{text}' is not a size like 0, 65536, 512KiB, 64MiB or 1GiB"))
}

/// A share between 0 (exclusive) and 1 (inclusive), such as `0.05`.
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(share) if share > 0.0 && share <= 1.0 => Ok(share),
        _ => Err(format!(
            "'{text}' is not a share between 0 and 1, such as 0.05"
        )),
    }
}

/// A duration as a PostgreSQL setting value (`statement_timeout`, `lock_timeout`).
pub fn pg_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_never_shows_its_password() {
        let url: DatabaseUrl = "postgres://app:s3cret@db:5432/prospects".parse().unwrap();
        assert_eq!(url.redacted(), "postgres://app:***@db:5432/prospects");
        assert!(!format!("{url:?} {url}").contains("s3cret"));
    }

    #[test]
    fn database_url_without_password_is_shown_as_is() {
        let url: DatabaseUrl = DEFAULT_DATABASE_URL.parse().unwrap();
        assert_eq!(url.redacted(), DEFAULT_DATABASE_URL);
    }

    #[derive(clap::Parser)]
    struct ServeOnly {
        #[command(flatten)]
        config: ServeConfig,
    }

    fn serve_config(args: &[&str]) -> Result<ServeConfig, clap::Error> {
        use clap::Parser;
        ServeOnly::try_parse_from(["serve"].iter().chain(args)).map(|parsed| parsed.config)
    }

    #[test]
    fn cron_schedules_parse_and_set_the_staleness_limit() {
        assert!(parse_cron("0 3 * * *").is_ok());
        assert!(parse_cron("*/15 * * * *").is_ok());
        for bad in ["", "nightly", "61 * * * *", "* * *", "0 3 * * * * * *"] {
            assert!(parse_cron(bad).is_err(), "{bad:?}");
        }
        let config = serve_config(&[]).unwrap();
        assert_eq!(config.effective_stale_after(), Duration::from_secs(30 * 60));
        let nightly = serve_config(&["--refresh-schedule", "0 3 * * *"]).unwrap();
        assert_eq!(
            nightly.effective_stale_after(),
            Duration::from_secs(48 * 3600)
        );
        let error = serve_config(&["--refresh-schedule", "nightly"]).unwrap_err();
        assert!(
            error.to_string().contains("REFRESH_SCHEDULE")
                || error.to_string().contains("refresh-schedule"),
            "{error}"
        );
    }

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
        assert_eq!(pg_duration(Duration::from_secs(2)), "2000ms");
    }

    #[test]
    fn sizes_parse_with_binary_units_and_reject_garbage() {
        assert_eq!(parse_bytes("0").unwrap(), 0);
        assert_eq!(parse_bytes("65536").unwrap(), 65536);
        assert_eq!(parse_bytes("512KiB").unwrap(), 512 * 1024);
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert!(parse_bytes("64MB").unwrap_err().contains("64MiB"));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999GiB").is_err());
    }

    #[test]
    fn admin_tokens_are_long_hidden_and_compared_exactly() {
        assert!(
            "too-short"
                .parse::<AdminToken>()
                .unwrap_err()
                .contains("32")
        );
        let token: AdminToken = "0123456789abcdef0123456789abcdef".parse().unwrap();
        assert!(token.matches("0123456789abcdef0123456789abcdef"));
        assert!(!token.matches("0123456789abcdef0123456789abcdeF"));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains("0123"));
    }

    #[test]
    fn shares_lie_between_zero_and_one() {
        assert_eq!(parse_share("0.05").unwrap(), 0.05);
        assert_eq!(parse_share("1").unwrap(), 1.0);
        for bad in ["0", "-0.1", "1.5", "NaN", "inf", "five", ""] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_sizes_need_a_postgresql_unit() {
        assert_eq!(parse_pg_memory("256MB").unwrap(), "256MB");
        assert!(parse_pg_memory("256").is_err());
        assert!(parse_pg_memory("256mb").is_err());
        assert!(parse_pg_memory("MB").is_err());
        assert!(parse_pg_memory("1GB; DROP TABLE x").is_err());
    }
}
