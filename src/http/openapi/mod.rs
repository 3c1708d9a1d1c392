//! The OpenAPI document: the operations utoipa derives from the annotated handlers (health, admin),
//! every read model's operations generated from its declarations (`read_model`), and what neither
//! says by itself, so that a generated client types what the server sends: every key the server
//! always writes is required (utoipa leaves `Option` fields optional, though serde writes them as
//! `null`), every text parameter carries the rules the parser holds it to, every operation says
//! which credentials it takes and how it may refuse them (public ones: none), and the document
//! names its server (relative: wherever it was fetched from).

mod parameters;
mod read_model;

use serde_json::{Value, json};
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;

pub use parameters::limit as limit_parameter;
pub use read_model::Operations;

use super::auth;
use super::error::{InvalidParam, PROBLEM_JSON, Problem};
use super::params::{MAX_REPEATS, MAX_VALUE_CHARS};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "prospect-api",
        description = "Company and prospect data served from PostgreSQL materialized views. Every data \
                       response says how fresh it is: X-Data-Age (seconds since the snapshot), \
                       X-Data-Refreshed-At, X-Data-Stale, and an ETag for conditional requests. Errors are \
                       application/problem+json (RFC 9457) naming each invalid parameter."
    ),
    tags(
        (name = "prospects", description = "Prospects with their company"),
        (name = "companies", description = "Companies with prospect counts"),
        (name = "search", description = "Substring search over prospects"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "admin", description = "Refreshing views and watching them (Authorization: Bearer <ADMIN_TOKEN>)"),
    ),
    components(schemas(Problem, InvalidParam)),
    modifiers(&AdminTokenScheme)
)]
struct ApiDoc;

/// The document's frame: its info, tags, shared schemas and security schemes.
pub fn frame() -> OpenApi {
    ApiDoc::openapi()
}

/// Declares the credentials: the admin token, JWTs and API keys (as a bearer token or in
/// `X-API-Key`).
struct AdminTokenScheme;

impl utoipa::Modify for AdminTokenScheme {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: Option<&str>, description: &str| {
            let builder = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description.to_owned()));
            let builder = match format {
                Some(format) => builder.bearer_format(format),
                None => builder,
            };
            SecurityScheme::Http(builder.build())
        };
        components.add_security_scheme("admin_token", bearer(None, "ADMIN_TOKEN"));
        components.add_security_scheme(
            "bearer_jwt",
            bearer(
                Some("JWT"),
                "A JWT from your identity provider (its role claim names the role), or an API key \
                 (`pak_…`) as a bearer token",
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                auth::X_API_KEY.as_str(),
                "An API key from `prospect-api keys create`",
            ))),
        );
    }
}

/// Who may call a read operation: anyone when the policy has an `anonymous` role (or there is no
/// policy), else the bearer of a JWT or an API key.
pub static READ_SECURITY: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| json!([{}, {"bearer_jwt": []}, {"api_key": []}]));

/// A read model's row schema, and the fields of it some role of `policy` may not see.
pub type HideableFields = fn(&crate::access::Policy) -> (String, Vec<String>);

pub fn hideable_fields<M: crate::views::ReadModel>(
    policy: &crate::access::Policy,
) -> (String, Vec<String>) {
    use utoipa::ToSchema;
    let mut hidden: Vec<String> = policy
        .roles()
        .flat_map(|role| {
            crate::access::Restriction::of::<M>(role)
                .hidden_fields
                .clone()
        })
        .collect();
    hidden.sort();
    hidden.dedup();
    (M::Row::name().into_owned(), hidden)
}

/// The document as this server serves it under `policy`: a row key some role may not see is not
/// required (that role's rows leave it out), and says so.
pub fn under_policy(
    document: OpenApi,
    policy: &crate::access::Policy,
    models: &[HideableFields],
) -> OpenApi {
    let mut document = serde_json::to_value(&document).expect("the OpenAPI document serializes");
    for hideable in models {
        let (schema, hidden) = hideable(policy);
        let schema = &mut document["components"]["schemas"][&schema];
        if let Some(required) = schema["required"].as_array_mut() {
            required.retain(|key| !hidden.iter().any(|h| key == h));
        }
        for field in &hidden {
            let property = &mut schema["properties"][field];
            let said = property["description"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            property["description"] = json!(
                format!("{said} Absent for the roles that may not see it.")
                    .trim()
                    .to_owned()
            );
        }
    }
    serde_json::from_value(document).expect("still an OpenAPI document")
}

/// Keys serde leaves out when empty (`skip_serializing_if`): every other key is always written.
const SOMETIMES_OMITTED: &[(&str, &str)] = &[
    ("Page_", "total"),
    ("Page_", "estimated_total"),
    ("Problem", "invalid_params"),
    ("Problem", "results"),
];

/// Schemas of request bodies: their optional keys may really be left out.
const REQUEST_BODIES: &[&str] = &["RefreshRequest", "NewKey"];

/// The whole document: `derived` (from the annotated handlers) with the read models' operations.
pub fn complete(derived: OpenApi, read_models: Operations) -> OpenApi {
    let mut document = serde_json::to_value(&derived).expect("the OpenAPI document serializes");
    document["paths"]
        .as_object_mut()
        .expect("the document has paths")
        .extend(read_models.paths);
    document["components"]["schemas"]
        .as_object_mut()
        .expect("the document has schemas")
        .extend(read_models.schemas);
    sort_object(&mut document["paths"]);
    sort_object(&mut document["components"]["schemas"]);
    require_every_key_sent(&mut document);
    declare_refusals(&mut document);
    declare_public_operations(&mut document);
    document_value_rules(&mut document);
    document["servers"] =
        json!([{"url": "/", "description": "The server this document came from"}]);
    serde_json::from_value(document).expect("the amended document is still an OpenAPI document")
}

/// Keys in name order, as utoipa writes its own maps.
fn sort_object(value: &mut Value) {
    if let Some(object) = value.as_object_mut() {
        let mut entries: Vec<(String, Value)> = std::mem::take(object).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        object.extend(entries);
    }
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

/// Every operation, in document order.
fn operations(document: &mut Value) -> impl Iterator<Item = &mut serde_json::Map<String, Value>> {
    document["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(Value::as_object_mut)
}

/// Every operation behind `auth::authenticate` may be refused by it: the admin operations take an
/// admin role's JWT or API key as well as the admin token.
fn declare_refusals(document: &mut Value) {
    let refusals = [
        (
            "401",
            "No credential and no anonymous role, or a credential that is wrong, expired or \
             revoked (WWW-Authenticate says which)",
        ),
        (
            "403",
            "The credential's role may not do this: a parameter naming a column it may not see \
             (each named), a role the policy does not declare, not an admin role, or the admin \
             endpoints disabled",
        ),
        (
            "429",
            "Over the role's requests per second, the role's daily export quota, or too many \
             wrong secrets from this address; see Retry-After",
        ),
    ];
    for operation in operations(document) {
        let Some(schemes) = operation.get("security").and_then(Value::as_array) else {
            continue;
        };
        let admin = schemes.iter().any(|s| s.get("admin_token").is_some());
        if admin {
            operation["security"] =
                json!([{"admin_token": []}, {"bearer_jwt": []}, {"api_key": []}]);
        }
        let Some(responses) = operation.get_mut("responses") else {
            continue;
        };
        for (status, description) in refusals {
            responses[status] = json!({
                "description": description,
                "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            });
        }
    }
}

/// An operation without `security` needs no credentials: say so (`security: []`).
fn declare_public_operations(document: &mut Value) {
    for operation in operations(document) {
        operation.entry("security").or_insert_with(|| json!([]));
    }
}

/// Writes into every query and path parameter the rules every text value is held to here (1 to
/// MAX_VALUE_CHARS characters, no NUL; a repeatable parameter at most MAX_REPEATS times), once for
/// all parameters as `QueryParams` applies them, so that clients, generated code and fuzzers see
/// exactly what is accepted.
fn document_value_rules(document: &mut Value) {
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
    for operation in operations(document) {
        let Some(parameters) = operation
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        // A header such as `Prefer` is free text the server ignores where it does not understand it.
        let values = parameters.iter_mut().filter(|p| p["in"] != "header");
        for schema in values.map(|p| &mut p["schema"]) {
            if schema["type"] == "array" {
                schema["maxItems"] = json!(MAX_REPEATS);
                text_rules(&mut schema["items"]);
            } else {
                text_rules(schema);
            }
        }
    }
}
