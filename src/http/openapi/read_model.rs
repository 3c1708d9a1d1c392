//! The OpenAPI operations of a read model's endpoints (the routes are `read_model::router`), and the
//! schemas they refer to, generated from the model's declarations.

use serde_json::{Map, Value, json};
use utoipa::{PartialSchema, ToSchema};

use super::parameters::{self, path_parameter};
use crate::http::read_model::{Page, facets_path, has_facets};
use crate::views::ReadModel;
use crate::views::order::FacetCount;

/// What one read model adds to the document: paths with their operations, and schemas.
#[derive(Default)]
pub struct Operations {
    pub paths: Map<String, Value>,
    pub schemas: Map<String, Value>,
}

impl Operations {
    pub fn add<M: ReadModel>(&mut self) {
        let api = M::API;
        let row = M::Row::name().into_owned();
        let page = format!("Page_{row}");
        self.schemas.insert(row.clone(), json!(M::Row::schema()));
        self.schemas.insert(page.clone(), page_schema::<M>(&row));
        let list = operation(
            api.tag,
            api.list,
            parameters::list::<M>(None),
            list_responses(&page, api.rows, None),
        );
        self.paths.insert(api.path.to_owned(), json!({"get": list}));
        if let Some(one) = api.one {
            let id = path_parameter(one.param, &format!("{} id", capitalized(one.noun)));
            let operation = operation(
                one.tag,
                (one.operation, one.summary),
                vec![id, parameters::fields::<M::Row>()],
                one_responses(&row, one.noun),
            );
            self.paths
                .insert(one.path.to_owned(), json!({"get": operation}));
        }
        if has_facets::<M>() {
            self.schemas.insert("Facets".to_owned(), facets_schema());
            self.schemas
                .insert("FacetCount".to_owned(), json!(FacetCount::schema()));
            let operation = operation(
                api.tag,
                (api.facets.unwrap_or_default(), &facets_summary::<M>()),
                parameters::facets::<M>(),
                facets_responses(),
            );
            self.paths
                .insert(facets_path::<M>(), json!({"get": operation}));
        }
        if let Some(scoped) = api.scoped {
            let parent = path_parameter(scoped.param, &format!("{} id", capitalized(scoped.noun)));
            let mut parameters = vec![parent];
            parameters.extend(parameters::list::<M>(Some(scoped.param)));
            let operation = operation(
                scoped.tag,
                (scoped.operation, scoped.summary),
                parameters,
                list_responses(&page, api.rows, Some(scoped.noun)),
            );
            self.paths
                .insert(scoped.path.to_owned(), json!({"get": operation}));
        }
    }
}

/// A read model's operation: every one takes `Prefer: min-freshness=now`.
fn operation(
    tag: &str,
    (id, summary): (&str, &str),
    mut parameters: Vec<Value>,
    responses: Value,
) -> Value {
    parameters.push(prefer());
    json!({
        "tags": [tag], "summary": summary, "operationId": id,
        "parameters": parameters, "responses": responses,
        "security": super::READ_SECURITY.clone(),
    })
}

fn capitalized(noun: &str) -> String {
    let mut chars = noun.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The `Prefer` request header: reads that see their own writes.
fn prefer() -> Value {
    json!({
        "name": "Prefer", "in": "header", "required": false,
        "schema": {"type": "string"},
        "description": "RFC 7240 preferences; the one understood is `min-freshness=now`: answer with data covering every write committed before \
            this request arrived (read your own writes). The request reads from the primary and waits \
            for the round (incremental mode) or the refresh (refresh mode, which it asks for) that \
            covers them, up to READ_YOUR_WRITES_TIMEOUT (default 5 s): then 503 with Retry-After. Answered \
            with `Preference-Applied: min-freshness=now`. Other preferences and values are \
            ignored (RFC 7240).",
    })
}

const NOT_MODIFIED: &str = "Not modified since the ETag in If-None-Match";
const UNAVAILABLE: &str = "The view was never populated, the database is unavailable, or (`Prefer: \
    min-freshness=now`) the data did not cover the request's arrival within READ_YOUR_WRITES_TIMEOUT: \
    see Retry-After";

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    })
}

/// The headers of every data response.
fn freshness_headers() -> Map<String, Value> {
    let header =
        |schema: Value, description: &str| json!({"schema": schema, "description": description});
    let mut headers = Map::new();
    headers.insert(
        "X-Data-Age".into(),
        header(
            json!({"type": "integer", "format": "int64", "minimum": 0}),
            "Seconds since the snapshot of the data served",
        ),
    );
    headers.insert(
        "X-Data-Refreshed-At".into(),
        header(
            json!({"type": "string"}),
            "Snapshot time of the data served (RFC 3339)",
        ),
    );
    headers.insert(
        "X-Data-Stale".into(),
        header(
            json!({"type": "boolean"}),
            "Whether the data is older than the staleness limit",
        ),
    );
    headers.insert(
        "Preference-Applied".into(),
        header(
            json!({"type": "string", "enum": ["min-freshness=now"]}),
            "On a request with `Prefer: min-freshness=now`: the data covers every write committed \
             before it arrived",
        ),
    );
    headers.insert(
        "ETag".into(),
        header(
            json!({"type": "string"}),
            "Changes when the data is refreshed; send as If-None-Match",
        ),
    );
    headers
}

fn data(description: &str, content: Value) -> Value {
    json!({"description": description, "headers": freshness_headers(), "content": content})
}

fn list_responses(page: &str, rows: &str, parent: Option<&str>) -> Value {
    let mut ok = data(
        &format!("One page of {rows}, or with `format=csv` every matching row as CSV"),
        json!({
            "application/json": {"schema": {"$ref": format!("#/components/schemas/{page}")}},
            "text/csv": {"schema": {"type": "string"}},
        }),
    );
    ok["headers"]["Link"] = json!({"schema": {"type": "string"}, "description": "`<…>; rel=\"next\"` when another page follows"});
    let mut responses = json!({
        "200": ok,
        "304": {"description": NOT_MODIFIED},
        "400": problem("Invalid parameters, each named"),
        "503": problem(UNAVAILABLE),
    });
    if let Some(parent) = parent {
        responses["404"] = problem(&format!("No such {parent}"));
    }
    responses
}

fn one_responses(row: &str, noun: &str) -> Value {
    json!({
        "200": data(&format!("The {noun}"), json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{row}")}}})),
        "304": {"description": NOT_MODIFIED},
        "400": problem("Invalid id or fields, or other query parameters given"),
        "404": problem(&format!("No such {noun}")),
        "503": problem(UNAVAILABLE),
    })
}

fn facets_responses() -> Value {
    json!({
        "200": data("Each facet's values, most frequent first (at most 100)", json!({"application/json": {"schema": {"$ref": "#/components/schemas/Facets"}}})),
        "304": {"description": NOT_MODIFIED},
        "400": problem("Invalid parameters, each named"),
        "503": problem(&format!("{UNAVAILABLE}; or counting took longer than the statement timeout")),
    })
}

fn facets_summary<M: ReadModel>() -> String {
    use crate::views::order::Facet;
    let mut names: Vec<String> = M::Facet::ALL
        .iter()
        .map(|(name, _)| name.replace('_', " "))
        .collect();
    let last = names.pop().unwrap_or_default();
    let names = match names.is_empty() {
        true => last,
        false => format!("{} and {last}", names.join(", ")),
    };
    format!(
        "How many {} have each value of {}, under the same filters as `{}`, each counted without \
         its own filter. A UI can offer exactly these values: filters match exactly and \
         case-sensitively.",
        M::API.rows,
        names,
        M::API.path
    )
}

/// `Page<Row>`, its rows referring to the row's schema.
fn page_schema<M: ReadModel>(row: &str) -> Value {
    let mut schema = json!(Page::<M::Row>::schema());
    schema["properties"]["data"]["items"] = json!({"$ref": format!("#/components/schemas/{row}")});
    schema
}

fn facets_schema() -> Value {
    json!({
        "type": "object",
        "description": "The counted facets, in the order asked for: each facet's values, most frequent first.",
        "additionalProperties": {"type": "array", "items": {"$ref": "#/components/schemas/FacetCount"}},
    })
}
