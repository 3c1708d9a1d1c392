//! `fields=a,b,c` (PostgREST's `select`): which keys each row of a response keeps, in the order
//! asked. The names a row has come from its schema (`ToSchema`), the one declaration of its output
//! fields, so the parser, the OpenAPI document and the rows cannot disagree.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use utoipa::openapi::{RefOr, Schema};

use super::params::QueryParams;

/// At most this many names (a row has fewer keys; repeats are refused).
const MAX_FIELDS: usize = 100;

/// The keys to keep in each row; `None`: all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Option<Vec<String>>);

impl Fields {
    /// Reads `fields` and checks every name against the keys of `R`, reporting unknown ones by name.
    pub fn parse<R: utoipa::ToSchema>(params: &mut QueryParams) -> Fields {
        let Some(text) = params.one("fields") else {
            return Fields(None);
        };
        let known = field_names::<R>();
        let names: Vec<String> = text.split(',').map(|name| name.trim().to_owned()).collect();
        let mut problems = Vec::new();
        if names.iter().any(String::is_empty) {
            problems.push("has an empty name; separate names with single commas".to_owned());
        }
        let unknown: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|name| !name.is_empty() && !known.iter().any(|k| k == name))
            .collect();
        if !unknown.is_empty() {
            problems.push(format!(
                "unknown field{} {}; the fields are: {}",
                if unknown.len() == 1 { "" } else { "s" },
                quoted(unknown.iter().take(10)),
                known.join(", ")
            ));
        }
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != names.len() {
            problems.push("names a field more than once".to_owned());
        }
        if names.len() > MAX_FIELDS {
            problems.push(format!("names more than {MAX_FIELDS} fields"));
        }
        if problems.is_empty() {
            Fields(Some(names))
        } else {
            params.reject("fields", problems.join("; "));
            Fields(None)
        }
    }

    /// Part of a response's cache key and ETag.
    pub fn key(&self) -> String {
        self.0
            .as_ref()
            .map_or_else(String::new, |names| names.join(","))
    }

    /// `rows` as JSON values, with only the selected keys when a selection was given.
    pub fn select<R: Serialize>(&self, rows: &[R]) -> Result<Vec<Selected<'_>>, serde_json::Error> {
        rows.iter()
            .map(|row| {
                let Value::Object(map) = serde_json::to_value(row)? else {
                    unreachable!("rows serialize as JSON objects")
                };
                Ok(Selected {
                    map,
                    names: self.0.as_deref().unwrap_or_default(),
                })
            })
            .collect()
    }

    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }
}

/// One row with only the selected keys, in the order they were asked for.
pub struct Selected<'a> {
    map: Map<String, Value>,
    names: &'a [String],
}

impl Serialize for Selected<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(Some(self.names.len()))?;
        for name in self.names {
            out.serialize_entry(name, self.map.get(name).unwrap_or(&Value::Null))?;
        }
        out.end()
    }
}

/// The keys of `R`'s rows, as its OpenAPI schema declares them (sorted).
pub fn field_names<R: utoipa::ToSchema>() -> Vec<String> {
    match R::schema() {
        RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn quoted<'a>(names: impl Iterator<Item = &'a &'a str>) -> String {
    names
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The query of a single-row endpoint for rows of `R`: only `fields`.
pub struct FieldsQuery<R>(std::marker::PhantomData<R>);

impl<R: utoipa::ToSchema> utoipa::IntoParams for FieldsQuery<R> {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        vec![parameter::<R>()]
    }
}

/// The OpenAPI description of `fields` for rows of `R`.
pub fn parameter<R: utoipa::ToSchema>() -> utoipa::openapi::path::Parameter {
    serde_json::from_value(serde_json::json!({
        "name": "fields",
        "in": "query",
        "required": false,
        "description": format!(
            "Comma-separated keys to keep in each row, in this order (default: all): {}.",
            field_names::<R>().join(", ")
        ),
        "schema": {"type": "string"},
    }))
    .expect("fields is an OpenAPI parameter")
}
