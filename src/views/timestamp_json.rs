//! Timestamps in JSON exactly as chrono's `Serialize` writes them (RFC 3339 in UTC with `Z`, as many
//! fractional digits as needed), formatted into one string first. chrono streams through serde's
//! `collect_str`, which escapes each of the many small fragments `Display` writes: that was 8% of the
//! CPU of a `/prospects` request (four timestamps a row; see bench/README.md).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// For `#[serde(serialize_with = "timestamp_json::required")]` on a `DateTime<Utc>`.
pub fn required<S: Serializer>(value: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&value.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// For `#[serde(serialize_with = "timestamp_json::optional")]` on an `Option<DateTime<Utc>>`.
pub fn optional<S: Serializer>(
    value: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(time) => serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Ours(#[serde(serialize_with = "optional")] Option<DateTime<Utc>>);

    #[test]
    fn writes_what_chrono_writes() {
        let second = Utc.with_ymd_and_hms(2026, 11, 24, 6, 15, 57).unwrap();
        for nanos in [0, 500_000_000, 583_000_000, 583_878_000, 583_878_123, 1] {
            let time = Some(second + chrono::Duration::nanoseconds(nanos));
            assert_eq!(
                serde_json::to_string(&Ours(time)).unwrap(),
                serde_json::to_string(&time).unwrap(),
                "{nanos} ns"
            );
        }
        assert_eq!(serde_json::to_string(&Ours(None)).unwrap(), "null");
    }
}
