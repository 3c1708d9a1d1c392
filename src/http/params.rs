//! Strict query-string parsing. Raw strings become typed values here, once, at the edge: every
//! problem (malformed value, repeated single-valued parameter, unknown name) is collected and reported
//! together, each naming its parameter; the rest of the code never sees a raw string.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;

use super::error::{ApiError, InvalidParam};
use super::fields::{self, Fields};
use serde_json::json;
use utoipa::openapi::path::Parameter;

use crate::views::query::{Facet, FilterKind, FilterSource, FilterSpec, Sort, SortKey};

const MAX_PAIRS: usize = 100;
const MAX_VALUE_CHARS: usize = 200;
const MAX_REPEATS: usize = 50;
/// A cursor carries the sort key of the last row (names can be long) and its signature.
pub const MAX_CURSOR_CHARS: usize = 4000;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

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

fn shorten(text: &str) -> String {
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

/// `count=exact|estimated`: whether to add a total to a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CountMode {
    None,
    Exact,
    Estimated,
}

/// What every list endpoint accepts besides its filters.
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

pub const PAGE_PARAMS: [&str; 5] = ["limit", "cursor", "count", "format", "fields"];

/// `format=json` (the default) or `format=csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl PageParams {
    /// The page parameters of a list of `R` rows (`fields` names keys of `R`).
    pub fn parse<R: utoipa::ToSchema>(params: &mut QueryParams) -> PageParams {
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
        let limit =
            match params.parsed::<i64>("limit", &format!("a whole number from 1 to {MAX_LIMIT}")) {
                Some(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
                Some(limit) => {
                    params.reject(
                        "limit",
                        format!("{limit} is out of range; use 1 to {MAX_LIMIT}"),
                    );
                    DEFAULT_LIMIT
                }
                None => DEFAULT_LIMIT,
            };
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
}

impl FilterSource for QueryParams {
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

/// The query parameters a list endpoint accepts: its filters except `skip`, `sort`, the page's.
pub fn list_param_names(filters: &[FilterSpec], skip: &[&str]) -> Vec<&'static str> {
    filters
        .iter()
        .map(|spec| spec.name)
        .filter(|name| !skip.contains(name))
        .chain(["sort"])
        .chain(PAGE_PARAMS)
        .collect()
}

/// The OpenAPI description of a list endpoint's query parameters, from the same declarations the
/// parser reads: its filters (except `skip`), `sort` with every accepted value, and the page's.
pub fn list_parameters<K: SortKey, R: utoipa::ToSchema>(
    filters: &[FilterSpec],
    skip: &[&str],
    sort_doc: &str,
) -> Vec<Parameter> {
    let default_sort = K::DEFAULT.name();
    let sort = query_parameter(
        "sort",
        &format!("{sort_doc} Prefix `-` for descending order; default `{default_sort}`."),
        json!({"type": "string", "enum": Sort::<K>::values()}),
    );
    filter_parameters(filters, skip)
        .into_iter()
        .chain([sort])
        .chain(page_parameters::<R>())
        .collect()
}

/// The OpenAPI description of the page parameters of a list of `R` rows.
pub fn page_parameters<R: utoipa::ToSchema>() -> Vec<Parameter> {
    [
        query_parameter(
            "limit",
            &format!("Rows per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})."),
            json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_LIMIT}),
        ),
        query_parameter(
            "cursor",
            "`next_cursor` of the previous page.",
            json!({"type": "string", "maxLength": MAX_CURSOR_CHARS}),
        ),
        query_parameter(
            "count",
            "`exact` adds `total`; `estimated` adds `estimated_total`.",
            json!({"type": "string", "enum": ["exact", "estimated"]}),
        ),
        query_parameter(
            "format",
            "`csv` (or `Accept: text/csv`): every matching row as CSV, in this order and `fields`, \
             up to CSV_MAX_ROWS, without `limit`, `cursor` or `count`; default `json`.",
            json!({"type": "string", "enum": ["json", "csv"]}),
        ),
        fields::parameter::<R>(),
    ]
    .into()
}

/// The OpenAPI description of a facets endpoint's query parameters: the list's filters and `facet`.
pub fn facet_parameters<F: Facet>(filters: &[FilterSpec]) -> Vec<Parameter> {
    let names: Vec<&str> = F::ALL.iter().map(|(name, _)| *name).collect();
    let facet = query_parameter(
        "facet",
        &format!(
            "Which facets to count; repeatable (default: all of {}).",
            names.join(", ")
        ),
        json!({"type": "array", "items": {"type": "string", "enum": names}}),
    );
    filter_parameters(filters, &[])
        .into_iter()
        .chain([facet])
        .collect()
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

/// The query parameters a facets endpoint accepts.
pub fn facet_param_names(filters: &[FilterSpec]) -> Vec<&'static str> {
    filters
        .iter()
        .map(|spec| spec.name)
        .chain(["facet"])
        .collect()
}

pub fn filter_parameters(filters: &[FilterSpec], skip: &[&str]) -> Vec<Parameter> {
    filters
        .iter()
        .filter(|spec| !skip.contains(&spec.name))
        .map(|spec| {
            let schema = match spec.kind {
                FilterKind::Text => json!({"type": "string"}),
                FilterKind::AnyOf => json!({"type": "array", "items": {"type": "string"}}),
                FilterKind::WholeNumber { max, .. } => {
                    let format = if max > i32::MAX.into() {
                        "int64"
                    } else {
                        "int32"
                    };
                    json!({"type": "integer", "format": format})
                }
                FilterKind::Timestamp => json!({"type": "string", "format": "date-time"}),
            };
            query_parameter(spec.name, &spec.description(), schema)
        })
        .collect()
}

pub fn query_parameter(name: &str, description: &str, schema: serde_json::Value) -> Parameter {
    serde_json::from_value(json!({
        "name": name, "in": "query", "required": false,
        "description": description, "schema": schema,
    }))
    .expect("a query parameter is an OpenAPI parameter")
}

/// Writes into the OpenAPI document the rules every text value of a query or path parameter is held
/// to here (1 to MAX_VALUE_CHARS characters, no NUL; a repeatable parameter at most MAX_REPEATS
/// times), once for all parameters as `QueryParams` applies them, so that clients, generated code and
/// fuzzers see exactly what is accepted.
pub fn document_value_rules(spec: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use serde_json::{Value, json};
    fn text_rules(schema: &mut Value) {
        if schema["type"] != "string"
            || schema.get("format").is_some()
            || schema.get("enum").is_some()
        {
            return;
        }
        let defaults = [
            ("minLength", json!(1)),
            ("maxLength", json!(MAX_VALUE_CHARS)),
            ("pattern", json!("^[^\\x00]*$")),
        ];
        for (rule, value) in defaults {
            if schema.get(rule).is_none() {
                schema[rule] = value;
            }
        }
    }
    let mut document = serde_json::to_value(&spec).expect("the OpenAPI document serializes");
    let operations = document["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let Some(parameters) = operation["parameters"].as_array_mut() else {
            continue;
        };
        for schema in parameters.iter_mut().map(|p| &mut p["schema"]) {
            if schema["type"] == "array" {
                schema["maxItems"] = json!(MAX_REPEATS);
                text_rules(&mut schema["items"]);
            } else {
                text_rules(schema);
            }
        }
    }
    serde_json::from_value(document).expect("the amended document is still an OpenAPI document")
}

/// For tests: the query parameters a documentation struct declares, sorted, against those a parser
/// accepts, sorted.
#[cfg(test)]
pub fn documented_and_accepted<P: utoipa::IntoParams>(
    accepted: &[&str],
) -> (Vec<String>, Vec<String>) {
    let mut documented: Vec<String> = P::into_params(|| None)
        .into_iter()
        .map(|p| p.name)
        .collect();
    let mut accepted: Vec<String> = accepted.iter().map(|s| s.to_string()).collect();
    documented.sort();
    accepted.sort();
    (documented, accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(result: Result<(), ApiError>) -> Vec<(String, String)> {
        match result {
            Err(ApiError::InvalidParams(list)) => {
                list.into_iter().map(|p| (p.name, p.reason)).collect()
            }
            other => panic!("expected invalid params, got {other:?}"),
        }
    }

    #[test]
    fn a_typo_is_named_with_a_suggestion() {
        let mut params = QueryParams::parse(Some("industy=Software")).unwrap();
        assert_eq!(params.many("industry"), Vec::<String>::new());
        let errors = invalid(params.finish(&["industry", "limit"]));
        assert_eq!(
            errors,
            vec![(
                "industy".into(),
                "unknown parameter; did you mean 'industry'?".into()
            )]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut params =
            QueryParams::parse(Some("limit=abc&count=maybe&domain=a&domain=b&x=1")).unwrap();
        let _ = PageParams::parse::<serde_json::Value>(&mut params);
        let _ = params.one("domain");
        let names: Vec<String> = invalid(params.finish(&["limit", "count", "domain"]))
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, vec!["limit", "count", "domain", "x"]);
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
        let errors = invalid(params.finish(&["q"]));
        assert_eq!(errors[0].0, "q");
        assert!(errors[0].1.contains("UTF-8"));
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
            PageParams::parse::<serde_json::Value>(&mut params);
            assert_eq!(params.finish(&PAGE_PARAMS).is_ok(), ok, "{raw}");
        }
    }

    #[test]
    fn empty_and_overlong_values_are_rejected() {
        let long = "a".repeat(MAX_VALUE_CHARS + 1);
        let raw = format!("domain=&email={long}");
        let mut params = QueryParams::parse(Some(&raw)).unwrap();
        assert_eq!(params.one("domain"), None);
        assert_eq!(params.one("email"), None);
        let errors = invalid(params.finish(&["domain", "email"]));
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn nul_characters_are_rejected_in_values_and_path_ids() {
        let mut params = QueryParams::parse(Some("email=a%00b")).unwrap();
        assert_eq!(params.one("email"), None);
        assert_eq!(
            invalid(params.finish(&["email"])),
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
