//! Strict query-string parsing. Raw strings become typed values here, once, at the edge: every
//! problem (malformed value, repeated single-valued parameter, unknown name) is collected and reported
//! together, each naming its parameter; the rest of the code never sees a raw string.

use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;

use super::error::{ApiError, InvalidParam};
use crate::views::filters::FilterSource;
use crate::views::order::{Facet, Sort, SortKey};

const MAX_PAIRS: usize = 100;
/// The most characters of one text value (the OpenAPI document says so of every text parameter).
pub const MAX_VALUE_CHARS: usize = 200;
/// The most values of one repeatable parameter.
pub const MAX_REPEATS: usize = 50;

/// The query string of one request, consumed parameter by parameter.
pub struct QueryParams {
    pairs: Vec<(String, String)>,
    errors: Vec<InvalidParam>,
}

impl QueryParams {
    pub fn parse(raw: Option<&str>) -> Result<QueryParams, ApiError> {
        let mut pairs = Vec::new();
        let mut errors = Vec::new();
        for piece in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            match (decode(name), decode(value)) {
                (Ok(name), Ok(value)) => pairs.push((name, value)),
                (Ok(name), Err(reason)) => errors.push(InvalidParam::new(name, reason)),
                (Err(reason), _) => errors.push(InvalidParam::new(
                    "(query string)",
                    format!("a parameter name {reason}"),
                )),
            }
        }
        if pairs.len() > MAX_PAIRS {
            return Err(ApiError::invalid(
                "(query string)",
                format!("at most {MAX_PAIRS} parameters are accepted"),
            ));
        }
        Ok(QueryParams { pairs, errors })
    }

    /// Every value given for `name`, unchecked.
    pub fn take(&mut self, name: &str) -> Vec<String> {
        let mut taken = Vec::new();
        self.pairs.retain(|(n, v)| {
            if n == name {
                taken.push(v.clone());
                false
            } else {
                true
            }
        });
        taken
    }

    /// Whether the parameter was given at all (even empty).
    pub fn contains(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == name)
    }

    pub fn reject(&mut self, name: &str, reason: impl Into<String>) {
        self.errors.push(InvalidParam::new(name, reason));
    }

    /// A single-valued text parameter.
    pub fn one(&mut self, name: &str) -> Option<String> {
        self.one_up_to(name, MAX_VALUE_CHARS)
    }

    /// A single-valued text parameter of at most `max_chars` characters.
    pub fn one_up_to(&mut self, name: &str, max_chars: usize) -> Option<String> {
        let mut values = self.take(name);
        if values.len() > 1 {
            self.reject(
                name,
                format!("given {} times; give it at most once", values.len()),
            );
            return None;
        }
        let value = values.pop()?;
        match value_problem(&value, max_chars) {
            Some(reason) => {
                self.reject(name, reason);
                None
            }
            None => Some(value),
        }
    }

    /// A repeatable parameter (`industry=A&industry=B`): any of the values. Sorted and de-duplicated,
    /// since the order of alternatives means nothing.
    pub fn many(&mut self, name: &str) -> Vec<String> {
        let values = self.take(name);
        if values.len() > MAX_REPEATS {
            self.reject(
                name,
                format!(
                    "given {} times; at most {MAX_REPEATS} values are accepted",
                    values.len()
                ),
            );
            return Vec::new();
        }
        let mut values: Vec<String> = values
            .into_iter()
            .filter_map(|v| self.checked_value(name, v))
            .collect();
        values.sort();
        values.dedup();
        values
    }

    /// A single-valued parameter parsed into `T`; `expected` describes a valid value.
    pub fn parsed<T: FromStr>(&mut self, name: &str, expected: &str) -> Option<T> {
        let text = self.one(name)?;
        match text.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.reject(name, format!("'{}' is not {expected}", shorten(&text)));
                None
            }
        }
    }

    pub fn timestamp(&mut self, name: &str) -> Option<DateTime<Utc>> {
        let text = self.one(name)?;
        match DateTime::parse_from_rfc3339(&text) {
            Ok(at) => Some(at.with_timezone(&Utc)),
            Err(_) => {
                self.reject(
                    name,
                    format!(
                        "'{}' is not an RFC 3339 timestamp like 2024-05-01T00:00:00Z",
                        shorten(&text)
                    ),
                );
                None
            }
        }
    }

    fn checked_value(&mut self, name: &str, value: String) -> Option<String> {
        match value_problem(&value, MAX_VALUE_CHARS) {
            Some(reason) => {
                self.reject(name, reason);
                None
            }
            None => Some(value),
        }
    }

    /// Ends parsing: every parameter left over is unknown to this endpoint. Returns all problems.
    pub fn finish(mut self, known: &[&str]) -> Result<(), ApiError> {
        let mut unknown: Vec<String> = self.pairs.drain(..).map(|(name, _)| name).collect();
        unknown.sort();
        unknown.dedup();
        for name in unknown {
            let reason = match closest(&name, known) {
                Some(guess) => format!("unknown parameter; did you mean '{guess}'?"),
                None => format!(
                    "unknown parameter; this endpoint accepts {}",
                    known.join(", ")
                ),
            };
            self.errors.push(InvalidParam::new(shorten(&name), reason));
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidParams(self.errors))
        }
    }
}

/// Percent-decodes one component of an `application/x-www-form-urlencoded` query.
/// Why a text value cannot be used, if it cannot: PostgreSQL text cannot hold NUL, so a value
/// containing one could match nothing and would only make the database raise an error.
fn value_problem(value: &str, max_chars: usize) -> Option<String> {
    if value.is_empty() {
        Some("must not be empty".to_owned())
    } else if value.chars().count() > max_chars {
        Some(format!("longer than {max_chars} characters"))
    } else if value.contains('\0') {
        Some("contains a NUL character".to_owned())
    } else {
        None
    }
}

/// An id taken from the path (`/prospects/{prospect_id}`), held to the same rules as a text parameter.
pub fn path_id(name: &str, value: String) -> Result<String, ApiError> {
    match value_problem(&value, MAX_VALUE_CHARS) {
        Some(reason) => Err(ApiError::invalid(name, reason)),
        None => Ok(value),
    }
}

fn decode(component: &str) -> Result<String, String> {
    let with_spaces = component.replace('+', " ");
    // A stray `%` that starts no escape stays as it is, as browsers do; only bytes that are not
    // UTF-8 are an error.
    let bytes: Vec<u8> = percent_decode_str(&with_spaces).collect();
    String::from_utf8(bytes).map_err(|_| "is not valid UTF-8 once percent-decoded".to_owned())
}

pub fn shorten(text: &str) -> String {
    if text.chars().count() <= 40 {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(40).collect::<String>())
    }
}

/// The known name within two edits of `name`, if any (for "did you mean").
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// A handler's query string, parsed before the handler runs (undecodable: a 400 naming it).
impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        QueryParams::parse(parts.uri.query())
    }
}

/// The query string of an endpoint that takes no parameters: any one is refused (400, named),
/// before the handler runs.
pub struct NoParams;

impl<S: Send + Sync> FromRequestParts<S> for NoParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        QueryParams::parse(parts.uri.query())?.finish(&[])?;
        Ok(NoParams)
    }
}

impl FilterSource for QueryParams {
    fn given(&self, name: &str) -> bool {
        self.contains(name)
    }

    fn text(&mut self, name: &str) -> Option<String> {
        self.one(name)
    }

    fn any_of(&mut self, name: &str) -> Vec<String> {
        self.many(name)
    }

    fn whole_number(&mut self, name: &str, min: i64, max: i64) -> Option<i64> {
        let value: i64 = self.parsed(name, "a whole number")?;
        if (min..=max).contains(&value) {
            Some(value)
        } else {
            self.reject(name, format!("{value} is out of range; use {min} to {max}"));
            None
        }
    }

    fn timestamp(&mut self, name: &str) -> Option<DateTime<Utc>> {
        QueryParams::timestamp(self, name)
    }

    fn reject(&mut self, name: &str, reason: String) {
        QueryParams::reject(self, name, reason)
    }
}

/// `sort=name` or `sort=-name` for one of `K`'s keys; `K::DEFAULT` without it.
pub fn parse_sort<K: SortKey>(params: &mut QueryParams) -> Sort<K> {
    let Some(text) = params.one("sort") else {
        return K::DEFAULT;
    };
    Sort::parse(&text).unwrap_or_else(|| {
        let reason = format!(
            "'{}' is not one of: {}",
            shorten(&text),
            Sort::<K>::values().join(", ")
        );
        params.reject("sort", reason);
        K::DEFAULT
    })
}

/// `facet=a&facet=b`: the facets to count, in the order given; every facet of `F` without it.
pub fn parse_facets<F: Facet>(params: &mut QueryParams) -> Vec<F> {
    let given = params.take("facet");
    if given.is_empty() {
        return F::ALL.iter().map(|(_, facet)| *facet).collect();
    }
    let mut facets: Vec<F> = Vec::new();
    for name in given {
        match F::parse(&name) {
            Some(facet) if !facets.contains(&facet) => facets.push(facet),
            Some(_) => {}
            None => {
                let names: Vec<&str> = F::ALL.iter().map(|(name, _)| *name).collect();
                let reason = format!("'{}' is not one of: {}", shorten(&name), names.join(", "));
                params.reject("facet", reason);
            }
        }
    }
    facets
}

/// A whole number from 1 to `max`, `default` when absent: `limit` of every list.
pub fn parse_limit(params: &mut QueryParams, default: i64, max: i64) -> i64 {
    match params.parsed::<i64>("limit", &format!("a whole number from 1 to {max}")) {
        Some(limit) if (1..=max).contains(&limit) => limit,
        Some(limit) => {
            params.reject("limit", format!("{limit} is out of range; use 1 to {max}"));
            default
        }
        None => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::rejected;

    #[test]
    fn a_typo_is_named_with_a_suggestion() {
        let mut params = QueryParams::parse(Some("industy=Software")).unwrap();
        assert_eq!(params.many("industry"), Vec::<String>::new());
        let errors = rejected(params.finish(&["industry", "limit"]));
        assert_eq!(
            errors,
            vec![(
                "industy".into(),
                "unknown parameter; did you mean 'industry'?".into()
            )]
        );
    }

    #[test]
    fn values_are_percent_decoded_and_plus_is_a_space() {
        let mut params =
            QueryParams::parse(Some("q=ada+love%20lace&industry=Food+%26+Beverage")).unwrap();
        assert_eq!(params.one("q").as_deref(), Some("ada love lace"));
        assert_eq!(params.many("industry"), vec!["Food & Beverage"]);
        params.finish(&["q", "industry"]).unwrap();
    }

    #[test]
    fn invalid_utf8_is_rejected_naming_the_parameter() {
        let params = QueryParams::parse(Some("q=%FF%FE")).unwrap();
        let errors = rejected(params.finish(&["q"]));
        assert_eq!(errors[0].0, "q");
        assert!(errors[0].1.contains("UTF-8"));
    }

    #[test]
    fn empty_and_overlong_values_are_rejected() {
        let long = "a".repeat(MAX_VALUE_CHARS + 1);
        let raw = format!("domain=&email={long}");
        let mut params = QueryParams::parse(Some(&raw)).unwrap();
        assert_eq!(params.one("domain"), None);
        assert_eq!(params.one("email"), None);
        let errors = rejected(params.finish(&["domain", "email"]));
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn nul_characters_are_rejected_in_values_and_path_ids() {
        let mut params = QueryParams::parse(Some("email=a%00b")).unwrap();
        assert_eq!(params.one("email"), None);
        assert_eq!(
            rejected(params.finish(&["email"])),
            [("email".to_owned(), "contains a NUL character".to_owned())]
        );
        assert!(path_id("prospect_id", "a\0".to_owned()).is_err());
        assert!(path_id("prospect_id", "x".repeat(201)).is_err());
        assert_eq!(path_id("prospect_id", "p-1".to_owned()).unwrap(), "p-1");
    }

    #[test]
    fn repeated_values_are_sorted_and_deduplicated() {
        let mut params = QueryParams::parse(Some("industry=B&industry=A&industry=B")).unwrap();
        assert_eq!(params.many("industry"), vec!["A", "B"]);
    }
}
