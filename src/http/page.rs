//! What every list endpoint accepts besides its filters: `limit`, `cursor`, `count`, `format` and
//! `fields`.

use super::fields::Fields;
use super::params::{QueryParams, parse_limit, shorten};

/// Rows per page without `limit`, and the most a page may hold.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;
/// A cursor carries the sort key of the last row (names can be long) and its signature.
pub const MAX_CURSOR_CHARS: usize = 4000;

/// The page parameters, by name.
pub const PAGE_PARAMS: [&str; 5] = ["limit", "cursor", "count", "format", "fields"];

/// `count=exact|estimated`: whether to add a total to a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CountMode {
    None,
    Exact,
    Estimated,
}

/// `format=json` (the default) or `format=csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

#[derive(Debug, Clone)]
pub struct PageParams {
    pub limit: i64,
    /// Whether `limit` was given (a CSV export refuses it).
    pub limit_given: bool,
    /// `format=json|csv`; CSV also by `Accept: text/csv`.
    pub format: Format,
    pub cursor: Option<String>,
    pub count: CountMode,
    pub fields: Fields,
}

impl PageParams {
    /// The page parameters of a list of `R` rows (`fields` names keys of `R`), `default_limit`
    /// rows a page without `limit`.
    pub fn parse<R: utoipa::ToSchema>(params: &mut QueryParams, default_limit: i64) -> PageParams {
        let limit_given = params.contains("limit");
        let format = match params.one("format").as_deref() {
            None | Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(other) => {
                let reason = format!("'{}' is not one of: json, csv", shorten(other));
                params.reject("format", reason);
                Format::Json
            }
        };
        let limit = parse_limit(params, default_limit, MAX_LIMIT);
        let count = match params.one("count").as_deref() {
            None => CountMode::None,
            Some("exact") => CountMode::Exact,
            Some("estimated") => CountMode::Estimated,
            Some(other) => {
                params.reject(
                    "count",
                    format!("'{}' is not one of: exact, estimated", shorten(other)),
                );
                CountMode::None
            }
        };
        PageParams {
            limit,
            cursor: params.one_up_to("cursor", MAX_CURSOR_CHARS),
            count,
            fields: Fields::parse::<R>(params),
            limit_given,
            format,
        }
    }

    /// The parameters that page a list, when given: an export holds every row and refuses them.
    pub fn paging_given(&self) -> Vec<&'static str> {
        [
            ("limit", self.limit_given),
            ("cursor", self.cursor.is_some()),
            ("count", self.count != CountMode::None),
        ]
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(name, _)| name)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::rejected;

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut params =
            QueryParams::parse(Some("limit=abc&count=maybe&domain=a&domain=b&x=1")).unwrap();
        let _ = PageParams::parse::<serde_json::Value>(&mut params, DEFAULT_LIMIT);
        let _ = params.one("domain");
        let names: Vec<String> = rejected(params.finish(&["limit", "count", "domain"]))
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, vec!["limit", "count", "domain", "x"]);
    }

    #[test]
    fn limits_outside_the_range_are_rejected_not_clamped() {
        for (raw, ok) in [
            ("limit=1", true),
            ("limit=500", true),
            ("limit=0", false),
            ("limit=501", false),
            ("limit=-3", false),
            ("limit=99999999999999999999", false),
        ] {
            let mut params = QueryParams::parse(Some(raw)).unwrap();
            PageParams::parse::<serde_json::Value>(&mut params, DEFAULT_LIMIT);
            assert_eq!(params.finish(&PAGE_PARAMS).is_ok(), ok, "{raw}");
        }
    }
}
