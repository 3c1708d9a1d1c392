//! What the OpenAPI document says beyond what utoipa derives, so that a generated client types what
//! the server sends: every key the server always writes is required (utoipa leaves `Option` fields
//! optional, though serde writes them as `null`), a page's rows refer to the row schema instead of
//! repeating it, public operations declare that they need no credentials, and the document names
//! its server (relative: wherever it was fetched from).

use serde_json::{Value, json};
use utoipa::openapi::OpenApi;

/// Keys serde leaves out when empty (`skip_serializing_if`): every other key is always written.
const SOMETIMES_OMITTED: &[(&str, &str)] = &[
    ("Page_", "total"),
    ("Page_", "estimated_total"),
    ("Problem", "invalid_params"),
    ("Problem", "results"),
];

/// Schemas of request bodies: their optional keys may really be left out.
const REQUEST_BODIES: &[&str] = &["RefreshRequest"];

pub fn complete(spec: OpenApi) -> OpenApi {
    let mut document = serde_json::to_value(&spec).expect("the OpenAPI document serializes");
    require_every_key_sent(&mut document);
    refer_to_row_schemas(&mut document);
    declare_public_operations(&mut document);
    document["servers"] =
        json!([{"url": "/", "description": "The server this document came from"}]);
    serde_json::from_value(document).expect("the amended document is still an OpenAPI document")
}

fn require_every_key_sent(document: &mut Value) {
    let Some(schemas) = document["components"]["schemas"].as_object_mut() else {
        return;
    };
    for (name, schema) in schemas.iter_mut() {
        if REQUEST_BODIES.contains(&name.as_str()) {
            continue;
        }
        let Some(properties) = schema["properties"].as_object() else {
            continue;
        };
        let required: Vec<&String> = properties
            .keys()
            .filter(|key| {
                !SOMETIMES_OMITTED
                    .iter()
                    .any(|(prefix, omitted)| name.starts_with(prefix) && key == omitted)
            })
            .collect();
        schema["required"] = json!(required);
    }
}

/// `Page_ProspectRow.data.items` becomes a reference to `ProspectRow`.
fn refer_to_row_schemas(document: &mut Value) {
    let Some(schemas) = document["components"]["schemas"].as_object_mut() else {
        return;
    };
    let rows: Vec<String> = schemas.keys().cloned().collect();
    for (name, schema) in schemas.iter_mut() {
        if let Some(row) = name.strip_prefix("Page_")
            && rows.iter().any(|known| known == row)
        {
            schema["properties"]["data"]["items"] =
                json!({"$ref": format!("#/components/schemas/{row}")});
        }
    }
}

/// An operation without `security` needs no credentials: say so (`security: []`).
fn declare_public_operations(document: &mut Value) {
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        for operation in item.values_mut().filter_map(Value::as_object_mut) {
            operation.entry("security").or_insert_with(|| json!([]));
        }
    }
}
