//! The OpenAPI description of query parameters, from the same declarations the parsers read: a
//! read model's filters, orders, facets and fields, and the page's parameters.

use serde_json::{Value, json};

use super::super::fields::{MAX_FIELDS_CHARS, field_names};
use super::super::page::{DEFAULT_LIMIT, MAX_CURSOR_CHARS, MAX_LIMIT};
use crate::views::ReadModel;
use crate::views::filters::{FilterKind, FilterSet, FilterSpec};
use crate::views::order::{Facet, Sort, SortKey};

pub fn query_parameter(name: &str, description: &str, schema: Value) -> Value {
    json!({
        "name": name, "in": "query", "required": false,
        "description": description, "schema": schema,
    })
}

pub fn path_parameter(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true,
        "description": description, "schema": {"type": "string"},
    })
}

/// A list's query parameters: its filters (except the one its path gives), `sort` when clients
/// choose the order, and the page's.
pub fn list<M: ReadModel>(in_path: Option<&str>) -> Vec<Value> {
    let sort = M::Sort::CHOSEN_BY_CLIENT.then(|| sort::<M::Sort>(M::API.sort_doc));
    filters(M::Filters::SPECS, in_path)
        .into_iter()
        .chain(sort)
        .chain(page::<M::Row>())
        .collect()
}

/// A facets request's: the list's filters and `facet`.
pub fn facets<M: ReadModel>() -> Vec<Value> {
    let names: Vec<&str> = M::Facet::ALL.iter().map(|(name, _)| *name).collect();
    let facet = query_parameter(
        "facet",
        &format!(
            "Which facets to count; repeatable (default: all of {}).",
            names.join(", ")
        ),
        json!({"type": "array", "items": {"type": "string", "enum": names}}),
    );
    filters(M::Filters::SPECS, None)
        .into_iter()
        .chain([facet])
        .collect()
}

fn filters(specs: &[FilterSpec], in_path: Option<&str>) -> Vec<Value> {
    specs
        .iter()
        .filter(|spec| Some(spec.name) != in_path)
        .map(filter)
        .collect()
}

fn filter(spec: &FilterSpec) -> Value {
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
        FilterKind::Terms { max, min_chars } => {
            let length = match min_chars {
                0 | 1 => String::new(),
                n => format!(", each at least {n} characters"),
            };
            let mut terms = query_parameter(
                spec.name,
                &format!("{} 1 to {max} terms{length}.", spec.description()),
                json!({"type": "string", "pattern": terms_pattern(max, min_chars)}),
            );
            terms["required"] = json!(true);
            return terms;
        }
    };
    query_parameter(spec.name, &spec.description(), schema)
}

/// What the terms parser accepts, as a pattern: ASCII whitespace separates terms.
fn terms_pattern(max: usize, min_chars: usize) -> String {
    let space = r"[ \t\n\f\r]";
    let term = format!(r"[^ \t\n\f\r\x00]{{{min_chars},}}");
    format!("^{space}*{term}({space}+{term}){{0,{}}}{space}*$", max - 1)
}

fn sort<K: SortKey>(doc: &str) -> Value {
    let default_sort = K::DEFAULT.name();
    query_parameter(
        "sort",
        &format!("{doc} Prefix `-` for descending order; default `{default_sort}`."),
        json!({"type": "string", "enum": Sort::<K>::values()}),
    )
}

/// `limit`: how many of `what` (rows of a page, log entries) at most.
pub fn limit(what: &str) -> Value {
    query_parameter(
        "limit",
        &format!("{what}, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})."),
        json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_LIMIT}),
    )
}

fn page<R: utoipa::ToSchema>() -> Vec<Value> {
    vec![
        limit("Rows per page"),
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
        fields::<R>(),
    ]
}

/// `fields` for rows of `R`.
pub fn fields<R: utoipa::ToSchema>() -> Value {
    let names = field_names::<R>();
    query_parameter(
        "fields",
        &format!(
            "Comma-separated keys to keep in each row, in this order (default: all): {}.",
            names.join(", ")
        ),
        json!({
            "type": "string",
            "maxLength": MAX_FIELDS_CHARS,
            "pattern": format!("^({names})(,({names}))*$", names = names.join("|")),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::read_model::{facet_param_names, list_param_names};
    use crate::views::{ReadModelVisitor, visit_read_models};

    fn names(parameters: Vec<Value>) -> Vec<String> {
        parameters
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// For every read model, the documented parameters are exactly the accepted ones.
    struct DocumentedAreAccepted;

    impl ReadModelVisitor for DocumentedAreAccepted {
        fn visit<M: ReadModel>(&mut self) {
            assert_eq!(
                names(list::<M>(None)),
                list_param_names::<M>(&[]),
                "{}",
                M::VIEW
            );
            if let Some(scoped) = M::API.scoped {
                let skip = [scoped.param];
                assert_eq!(
                    names(list::<M>(Some(scoped.param))),
                    list_param_names::<M>(&skip)
                );
            }
            assert_eq!(
                names(facets::<M>()),
                facet_param_names::<M>(),
                "{}",
                M::VIEW
            );
        }
    }

    #[test]
    fn the_documented_parameters_are_exactly_the_accepted_ones() {
        visit_read_models(&mut DocumentedAreAccepted);
    }

    #[test]
    fn the_terms_pattern_says_what_the_parser_accepts() {
        assert_eq!(
            terms_pattern(2, 3),
            r"^[ \t\n\f\r]*[^ \t\n\f\r\x00]{3,}([ \t\n\f\r]+[^ \t\n\f\r\x00]{3,}){0,1}[ \t\n\f\r]*$"
        );
    }
}
