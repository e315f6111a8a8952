//! The OpenAPI document served at `/openapi.json`: the handlers' annotations
//! (`ApiDoc`), completed once per server start for what only the running
//! server knows: the loaded model's names (as enums), whether anonymous
//! callers may query, the error answers of each operation and the
//! `/api/v1/...` aliases of the original runbooks.

use serde_json::Value;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{ArrayItems, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Deprecated, Object, OpenApi, Ref, RefOr, Required, Response};

use super::{cache_admin, cache_invalidate, cache_warm, dry_run, health, meta, observability, query, ALIASES};
use crate::config::AuthSettings;
use crate::model::SemanticModel;

/// The annotated routes, before [`openapi`] completes them.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "analytics-api",
        description = "Analytics queries over a semantic model, cached in L1 + Redis."
    ),
    paths(
        query::run_query,
        query::run_query_get,
        dry_run::explain_query,
        meta::get_meta,
        health::get_health,
        health::get_live,
        health::get_ready,
        cache_admin::get_cache_stats,
        cache_admin::clear_cache,
        cache_admin::delete_cache_key,
        cache_admin::delete_cache_key_by_query,
        cache_warm::warm_cache,
        cache_invalidate::invalidate_cache,
        observability::get_metrics,
        observability::get_status_page,
        observability::get_status_json,
    ),
    components(schemas(crate::error::ErrorBody))
)]
pub struct ApiDoc;

/// The document this server serves: built once, when the router is built,
/// from the model it loaded and its auth settings.
pub fn openapi(model: &SemanticModel, auth: &AuthSettings) -> OpenApi {
    use utoipa::OpenApi as _;
    let mut doc = ApiDoc::openapi();
    security_schemes(&mut doc);
    for operation in doc.paths.paths.values_mut().flat_map(operations) {
        if auth.required {
            // Annotations list `()` where a request without a key runs as
            // tenant `default`; with `auth.required` none does.
            if let Some(security) = &mut operation.security {
                security.retain(|requirement| *requirement != SecurityRequirement::default());
            }
        }
        error_responses(operation);
        response_descriptions(operation);
        json_parameters(operation);
    }
    property_examples(&mut doc);
    model_enums(&mut doc, model);
    aliases(&mut doc);
    doc
}

/// Both credentials travel in the same `Authorization: Bearer` header.
fn security_schemes(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    let bearer = |description: &str| {
        let mut http = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        http.description = Some(description.to_owned());
        SecurityScheme::Http(http)
    };
    components.add_security_scheme(
        "admin_token",
        bearer(
            "The admin token (`ADMIN_TOKEN`): cache administration and `/status.json`; on the query \
             routes it queries as any tenant, named with `?tenant=` (`default` otherwise).",
        ),
    );
    components.add_security_scheme(
        "tenant_key",
        bearer(
            "A tenant API key, in the same `Authorization: Bearer <key>` header as the admin token \
             (or as `X-API-Key: <key>`). Queries run in the tenant's row scope and rate limit; on the \
             cache routes a key acts on its own tenant's entries only. Without `auth.required`, \
             requests without a key run as tenant `default`.",
        ),
    );
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// The error statuses each operation can answer (the codes behind each
/// status are in `crate::error`). Every error has the `ErrorBody` shape.
fn error_statuses(operation_id: &str) -> &'static [u16] {
    match operation_id {
        "run_query" => &[400, 401, 413, 415, 422, 429, 503, 504],
        "run_query_get" => &[400, 401, 422, 429, 503, 504],
        "explain_query" => &[400, 401, 413, 415, 422, 429, 503],
        "get_meta" => &[401, 422, 429, 503],
        "get_cache_stats" => &[401, 403, 503],
        "clear_cache" => &[400, 401, 403, 422, 503],
        "delete_cache_key" => &[400, 401, 403, 422, 503],
        "delete_cache_key_by_query" => &[400, 401, 403, 422, 503],
        "warm_cache" => &[400, 401, 403, 413, 422, 504],
        "invalidate_cache" => &[400, 401, 403, 413, 422, 503],
        "get_status_json" => &[401, 403],
        // Health, metrics and the status page answer no error body. A new
        // route needs its row here: the API tests check that every other
        // operation documents its errors.
        _ => &[],
    }
}

/// What each error status means, for an operation whose annotation does not
/// say it more precisely.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => "`malformed_json`, `invalid_request`: the request's shape is wrong",
        401 => "`unauthorized`: a credential is required, or the one sent is unknown or revoked",
        403 => "`forbidden`: not allowed for this credential, or admin endpoints are disabled (no `ADMIN_TOKEN`)",
        413 => "`payload_too_large`: the body is over `body_limit_bytes`",
        415 => "`unsupported_media_type`: the body is not `application/json`",
        422 => "Well-formed but refused: an unknown name or a bad value; `field` names it",
        429 => "`rate_limited`: over the tenant's rate limit; retry after `Retry-After` seconds",
        503 => {
            "`database_unavailable`, `overloaded`, `auth_unavailable` or `cache_unavailable`: \
                retry after `Retry-After` seconds"
        }
        504 => "`query_timeout` (statement timeout), `not_cached` (`only-if-cached`) or `request_timeout`",
        _ => "Error",
    }
}

/// Adds the operation's error answers that its annotation leaves out, and the
/// `ErrorBody` content to those it lists without one.
fn error_responses(operation: &mut Operation) {
    let id = operation.operation_id.clone().unwrap_or_default();
    for &status in error_statuses(&id) {
        let response = operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(Response::new(error_description(status))));
        let RefOr::T(response) = response else { continue };
        if response.description.is_empty() {
            response.description = error_description(status).to_owned();
        }
        if response.content.is_empty() {
            response.content.insert(
                "application/json".to_owned(),
                RefOr::T(Content::new(Some(Ref::from_schema_name("ErrorBody")))),
            );
        }
        if matches!(status, 429 | 503) {
            let mut retry_after = Header::new(Object::with_type(Type::Integer));
            retry_after.description = Some("Seconds to wait before retrying".to_owned());
            response
                .headers
                .entry("Retry-After".to_owned())
                .or_insert(RefOr::T(retry_after));
        }
    }
}

/// Query-string parameters that carry a query request as JSON (`q` of
/// `GET /analytics/query`, `data` of `DELETE /cache/key`) are documented as
/// such, so clients and generators serialize a `QueryRequest` into them.
/// `q` is read by GET only (the parameters' struct is shared with POST).
fn json_parameters(operation: &mut Operation) {
    let (name, required) = match operation.operation_id.as_deref() {
        Some("run_query_get") => ("q", true),
        Some("delete_cache_key_by_query") => ("data", false),
        Some("run_query") => {
            if let Some(parameters) = &mut operation.parameters {
                parameters.retain(|p| !matches!(p, RefOr::T(p) if p.name == "q"));
            }
            return;
        }
        _ => return,
    };
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else { continue };
        if parameter.name == name {
            parameter.schema = None;
            parameter.required = if required { Required::True } else { Required::False };
            parameter.content.insert(
                "application/json".to_owned(),
                RefOr::T(Content::new(Some(Ref::from_schema_name("QueryRequest")))),
            );
        }
    }
}

/// OpenAPI 3.1 requires a description on every response: the status's
/// reason phrase where the annotation gives none.
fn response_descriptions(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        if let RefOr::T(response) = response {
            if response.description.is_empty() {
                response.description = status
                    .parse::<u16>()
                    .ok()
                    .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
                    .and_then(|code| code.canonical_reason())
                    .unwrap_or("Response")
                    .to_owned();
            }
        }
    }
}

/// Gives each property of a schema that has a whole example, and no example
/// of its own, the example's value for it: a property whose type is a
/// reference (`date_range`, `direction`) loses its `example` attribute in
/// the derive, and the whole example is the one known to run.
fn property_examples(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for schema in components.schemas.values_mut() {
        let RefOr::T(Schema::Object(object)) = schema else {
            continue;
        };
        let Some(Value::Object(whole)) = object.example.clone() else {
            continue;
        };
        for (name, property) in object.properties.iter_mut() {
            let Some(value) = whole.get(name) else { continue };
            let slot = match property {
                RefOr::T(Schema::Object(p)) => &mut p.example,
                RefOr::T(Schema::Array(p)) => &mut p.example,
                RefOr::T(Schema::OneOf(p)) => &mut p.example,
                RefOr::T(Schema::AllOf(p)) => &mut p.example,
                RefOr::T(Schema::AnyOf(p)) => &mut p.example,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.clone());
        }
    }
}

/// The loaded model's names as enums of the query request: `dataset`,
/// `metrics` (names and aliases of every dataset), `dimensions` and the keys
/// of `filters` (dimension names and aliases), and `limit`'s maximum.
fn model_enums(doc: &mut OpenApi, model: &SemanticModel) {
    let mut metrics = Vec::new();
    let mut dimensions = Vec::new();
    for dataset in model.datasets.values() {
        for (name, metric) in &dataset.def.metrics {
            metrics.push(name.clone());
            metrics.extend(metric.aliases.iter().cloned());
        }
        for (name, dimension) in &dataset.def.dimensions {
            dimensions.push(name.clone());
            dimensions.extend(dimension.aliases.iter().cloned());
        }
    }
    let names = |mut names: Vec<String>| -> Vec<Value> {
        names.sort();
        names.dedup();
        names.into_iter().map(Value::String).collect()
    };
    let datasets = names(model.datasets.keys().cloned().collect());
    let metrics = names(metrics);
    let dimensions = names(dimensions);
    let max_limit = model.datasets.values().map(|d| d.def.max_limit).max();

    let Some(RefOr::T(Schema::Object(request))) =
        doc.components.as_mut().and_then(|c| c.schemas.get_mut("QueryRequest"))
    else {
        panic!("the QueryRequest schema is an object in components");
    };
    set_enum(property(request, "dataset"), &datasets);
    set_enum(property(request, "metrics"), &metrics);
    set_enum(property(request, "dimensions"), &dimensions);
    if let RefOr::T(Schema::Object(filters)) = property(request, "filters") {
        let mut keys = Object::with_type(Type::String);
        keys.enum_values = Some(dimensions.clone());
        filters.property_names = Some(Box::new(Schema::Object(keys)));
    }
    if let (RefOr::T(Schema::Object(limit)), Some(max)) = (property(request, "limit"), max_limit) {
        limit.maximum = Some(max.into());
    }
    // `[[start, end], ...]`: pairs of dates, which the Rust type (a list of
    // string tuples) cannot say.
    let ranges = serde_json::json!({
        "type": ["array", "null"],
        "description": "Period over period: the same query once per `[start_date, end_date]` (inclusive days), \
                        answered as `{\"results\": [...]}`, one result per range. Excludes `date_range`.",
        "minItems": 1,
        "maxItems": crate::model::MAX_COMPARE_RANGES,
        "items": {
            "type": "array",
            "items": {"type": "string", "format": "date"},
            "minItems": 2,
            "maxItems": 2,
        },
        "example": [["2024-01-01", "2024-01-31"], ["2024-02-01", "2024-02-29"]],
    });
    *property(request, "compare_date_range") =
        serde_json::from_value(ranges).expect("a valid schema for compare_date_range");
}

fn property<'a>(object: &'a mut Object, name: &str) -> &'a mut RefOr<Schema> {
    object
        .properties
        .get_mut(name)
        .unwrap_or_else(|| panic!("QueryRequest has no `{name}` property"))
}

/// Restricts a string schema (or the items of an array of strings) to
/// `values`, keeping `null` allowed where the schema allows it.
fn set_enum(schema: &mut RefOr<Schema>, values: &[Value]) {
    match schema {
        RefOr::T(Schema::Array(array)) => match &mut array.items {
            ArrayItems::RefOrSchema(items) => set_enum(items, values),
            ArrayItems::False => panic!("an array of names has items"),
        },
        RefOr::T(Schema::Object(object)) => {
            let nullable = matches!(&object.schema_type, SchemaType::Array(types) if types.contains(&Type::Null));
            let mut values = values.to_vec();
            if nullable {
                values.push(Value::Null);
            }
            object.enum_values = Some(values);
        }
        _ => panic!("a name is a string schema"),
    }
}

/// Documents the `/api/v1/...` aliases as deprecated copies of the canonical
/// operations, each with an operationId of its own.
fn aliases(doc: &mut OpenApi) {
    let copies: Vec<(String, PathItem)> = doc
        .paths
        .paths
        .iter()
        .filter_map(|(path, item)| {
            let (from, to) = ALIASES.iter().find(|(from, _)| path.starts_with(from))?;
            let mut item = item.clone();
            for operation in operations(&mut item) {
                if let Some(id) = &mut operation.operation_id {
                    id.push_str("_v1");
                }
                operation.deprecated = Some(Deprecated::True);
                let alias = format!(
                    "Alias of `{path}` kept for the original runbooks' `{to}...` paths; \
                     new clients should call `{path}`."
                );
                operation.description = Some(match operation.description.take() {
                    Some(description) => format!("{alias}\n\n{description}"),
                    None => alias,
                });
            }
            Some((path.replacen(from, to, 1), item))
        })
        .collect();
    doc.paths.paths.extend(copies);
}
