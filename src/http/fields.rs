//! `fields=a,b,c` (PostgREST's `select`): which keys each row of a response keeps, in the order
//! asked. The names a row has come from its schema (`ToSchema`), the one declaration of its output
//! fields, so the parser, the OpenAPI document and the rows cannot disagree.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use utoipa::openapi::{RefOr, Schema};

use super::params::{QueryParams, shorten};

/// The longest `fields` value accepted: every key of the widest row once, with room to spare.
pub const MAX_FIELDS_CHARS: usize = 1000;

/// The keys to keep in each row; `None`: all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Option<Vec<String>>);

impl Fields {
    /// Reads `fields` and checks every name against the keys of `R`, reporting unknown ones by name.
    pub fn parse<R: utoipa::ToSchema>(params: &mut QueryParams) -> Fields {
        let Some(text) = params.one_up_to("fields", MAX_FIELDS_CHARS) else {
            return Fields(None);
        };
        let known = field_names::<R>();
        let mut names: Vec<String> = Vec::new();
        let mut problems = Vec::new();
        for name in text.split(',') {
            if name.is_empty() {
                problems.push("has an empty name; separate names with single commas".to_owned());
            } else if !known.iter().any(|k| k == name) {
                problems.push(format!("unknown field '{}'", shorten(name)));
            } else if !names.iter().any(|n| n == name) {
                names.push(name.to_owned()); // a repeated name changes nothing
            }
        }
        problems.dedup();
        if !problems.is_empty() {
            problems.truncate(10);
            problems.push(format!("the fields are: {}", known.join(", ")));
        }
        if problems.is_empty() {
            Fields(Some(names))
        } else {
            params.reject("fields", problems.join("; "));
            Fields(None)
        }
    }

    /// Exactly these fields (those a role may see).
    pub fn only(names: Vec<String>) -> Fields {
        Fields(Some(names))
    }

    /// The fields asked for, if a selection was given.
    pub fn selected(&self) -> Option<&[String]> {
        self.0.as_deref()
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

    /// The selected keys, or every key of `R` in declaration order.
    pub fn names<R: utoipa::ToSchema>(&self) -> Vec<String> {
        self.0.clone().unwrap_or_else(field_names::<R>)
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

/// The keys of `R`'s rows, as its OpenAPI schema declares them (in declaration order).
pub fn field_names<R: utoipa::ToSchema>() -> Vec<String> {
    match R::schema() {
        RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
        _ => Vec::new(),
    }
}
