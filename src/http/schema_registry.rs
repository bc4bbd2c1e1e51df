//! Confluent Schema Registry's REST API over `registry::Registry`: subjects, versions,
//! schemas by id, `/schemas/types`, compatibility levels and checks. Served on the HTTP
//! endpoint (so `schema.registry.url=http://127.0.0.1:8082` works) and, with
//! `--schema-registry-listen`, on a port of its own.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{json, Value};

use super::{json_response, HttpState, User};
use crate::registry::{Level, Reference, Registered, RegistryError, SchemaType, StoredSchema, VersionRef};

const SR_JSON: &str = "application/vnd.schemaregistry.v1+json";

pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(version_schema))
        .route("/subjects/{subject}/versions/{version}/referencedby", get(referenced_by))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(schema_versions))
        .route("/schemas/ids/{id}/subjects", get(schema_subjects))
        .route("/schemas/types", get(types))
        .route("/config", get(global_config).put(put_global_config))
        .route("/config/{subject}", get(subject_config).put(put_subject_config).delete(delete_subject_config))
        .route("/compatibility/subjects/{subject}/versions", post(compatibility_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(compatibility))
        .route("/mode", get(mode))
}

/// Confluent's error body; the HTTP status is the code's first three digits.
struct SrError(RegistryError);

impl From<RegistryError> for SrError {
    fn from(e: RegistryError) -> Self {
        SrError(e)
    }
}

impl IntoResponse for SrError {
    fn into_response(self) -> Response {
        let code = self.0.code;
        let status_code = if code >= 1000 { code / 100 } else { code };
        let status = StatusCode::from_u16(status_code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, SR_JSON, &json!({ "error_code": code, "message": self.0.message }))
    }
}

type SrResult = Result<Response, SrError>;

fn ok(body: Value) -> SrResult {
    Ok(json_response(StatusCode::OK, SR_JSON, &body))
}

fn registry(state: &HttpState) -> &crate::registry::Registry {
    &state.engine.registry
}

/// Python's client sends `True`/`False`: booleans are read without regard to case.
fn flag(params: &std::collections::HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

type Params = Query<std::collections::HashMap<String, String>>;

/// Changing what others rely on (deletes, levels) takes a superuser when passwords are on.
fn require_admin(state: &HttpState, user: &User) -> Result<(), SrError> {
    if state.auth_required && !state.engine.users.is_superuser(&user.0) {
        return Err(SrError(RegistryError { code: 40301, message: "User is denied operation on this server.".into() }));
    }
    Ok(())
}

fn registered_json(r: &Registered) -> Value {
    let mut body = json!({ "subject": r.subject, "version": r.version, "id": r.id, "schema": r.schema.schema });
    if r.schema.schema_type != SchemaType::Avro {
        body["schemaType"] = json!(r.schema.schema_type.name());
    }
    if !r.schema.references.is_empty() {
        body["references"] = json!(r.schema.references.iter().map(reference_json).collect::<Vec<_>>());
    }
    body
}

fn reference_json(r: &Reference) -> Value {
    json!({ "name": r.name, "subject": r.subject, "version": r.version })
}

/// `{"schema": "...", "schemaType"?, "references"?}` from a request body.
fn schema_from_body(body: &[u8]) -> Result<StoredSchema, SrError> {
    let bad = |m: String| SrError(RegistryError { code: 42201, message: m });
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| SrError(RegistryError { code: 400, message: format!("Unrecognized request body: {e}") }))?;
    let schema = body.get("schema").and_then(Value::as_str).ok_or_else(|| bad("Empty schema".into()))?;
    let schema_type = match body.get("schemaType").and_then(Value::as_str) {
        None => SchemaType::Avro,
        Some(t) => SchemaType::parse(t).ok_or_else(|| bad(format!("Invalid schema type {t}")))?,
    };
    let mut references = Vec::new();
    for r in body.get("references").and_then(Value::as_array).into_iter().flatten() {
        let name = r.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let subject = r.get("subject").and_then(Value::as_str).unwrap_or_default().to_string();
        let version = r.get("version").and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        references.push(Reference { name, subject, version });
    }
    Ok(StoredSchema { schema: schema.to_string(), schema_type, references })
}

async fn subjects(State(state): State<Arc<HttpState>>, Query(params): Params) -> SrResult {
    ok(json!(registry(&state).subjects(flag(&params, "deleted"))))
}

async fn versions(State(state): State<Arc<HttpState>>, Path(subject): Path<String>, Query(params): Params) -> SrResult {
    ok(json!(registry(&state).versions(&subject, flag(&params, "deleted"))?))
}

async fn version(
    State(state): State<Arc<HttpState>>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> SrResult {
    let mut r = registry(&state).version(&subject, VersionRef::parse(&version)?, flag(&params, "deleted"))?;
    r.schema.schema = in_format(&state, r.id, r.schema.schema, &params);
    ok(registered_json(&r))
}

/// `?format=serialized` asks for a Protobuf schema as a base64 `FileDescriptorProto`, as
/// Confluent's Protobuf deserializers read it; other schemas are given as stored.
fn in_format(state: &HttpState, id: u32, text: String, params: &std::collections::HashMap<String, String>) -> String {
    if params.get("format").map(String::as_str) != Some("serialized") {
        return text;
    }
    match registry(state).protobuf(id) {
        Ok(compiled) => crate::format::protobuf::serialized(&compiled).unwrap_or(text),
        Err(_) => text,
    }
}

async fn version_schema(
    State(state): State<Arc<HttpState>>,
    Path((subject, version)): Path<(String, String)>,
) -> SrResult {
    let r = registry(&state).version(&subject, VersionRef::parse(&version)?, false)?;
    Ok(json_response(StatusCode::OK, SR_JSON, &raw(&r.schema)))
}

/// A schema as the `/schema` endpoints give it: the JSON document itself, or Protobuf text.
fn raw(schema: &StoredSchema) -> Value {
    match schema.schema_type {
        SchemaType::Protobuf => Value::String(schema.schema.clone()),
        _ => serde_json::from_str(&schema.schema).unwrap_or(Value::String(schema.schema.clone())),
    }
}

async fn referenced_by() -> SrResult {
    ok(json!([]))
}

async fn register(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path(subject): Path<String>,
    body: Bytes,
) -> SrResult {
    // A topic's subjects take schemas from its writers; other subjects from superusers.
    if state.auth_required {
        let topic = subject.strip_suffix("-value").or_else(|| subject.strip_suffix("-key"));
        let users = &state.engine.users;
        let allowed = match topic {
            Some(t) => users.may_access_topic(&user.0, t, crate::auth::TopicAccess::Write),
            None => users.is_superuser(&user.0),
        };
        if !allowed {
            return Err(SrError(RegistryError {
                code: 40301,
                message: format!("User is denied operation Write on Subject: {subject}"),
            }));
        }
    }
    let schema = schema_from_body(&body)?;
    let registry = state.engine.registry.clone();
    let id = tokio::task::spawn_blocking(move || registry.register(&subject, schema))
        .await
        .map_err(|e| SrError(RegistryError { code: 50001, message: e.to_string() }))??;
    ok(json!({ "id": id }))
}

async fn lookup(
    State(state): State<Arc<HttpState>>,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> SrResult {
    let schema = schema_from_body(&body)?;
    let r = registry(&state).lookup(&subject, schema, flag(&params, "deleted"))?;
    ok(registered_json(&r))
}

async fn delete_subject(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> SrResult {
    require_admin(&state, &user)?;
    ok(json!(registry(&state).delete_subject(&subject, flag(&params, "permanent"))?))
}

async fn delete_version(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> SrResult {
    require_admin(&state, &user)?;
    ok(json!(registry(&state).delete_version(&subject, VersionRef::parse(&version)?, flag(&params, "permanent"))?))
}

fn parse_id(id: &str) -> Result<u32, SrError> {
    id.parse().map_err(|_| SrError(RegistryError { code: 40403, message: format!("Schema {id} not found") }))
}

async fn schema_by_id(State(state): State<Arc<HttpState>>, Path(id): Path<String>, Query(params): Params) -> SrResult {
    let id = parse_id(&id)?;
    let schema = registry(&state).schema(id)?;
    let mut body = json!({ "schema": in_format(&state, id, schema.schema.clone(), &params) });
    if schema.schema_type != SchemaType::Avro {
        body["schemaType"] = json!(schema.schema_type.name());
    }
    if !schema.references.is_empty() {
        body["references"] = json!(schema.references.iter().map(reference_json).collect::<Vec<_>>());
    }
    ok(body)
}

async fn raw_schema_by_id(State(state): State<Arc<HttpState>>, Path(id): Path<String>) -> SrResult {
    let schema = registry(&state).schema(parse_id(&id)?)?;
    ok(raw(&schema))
}

async fn schema_versions(State(state): State<Arc<HttpState>>, Path(id): Path<String>) -> SrResult {
    let usages = registry(&state).usages(parse_id(&id)?)?;
    ok(json!(usages.iter().map(|(s, v)| json!({ "subject": s, "version": v })).collect::<Vec<_>>()))
}

async fn schema_subjects(State(state): State<Arc<HttpState>>, Path(id): Path<String>) -> SrResult {
    let mut subjects: Vec<String> = registry(&state).usages(parse_id(&id)?)?.into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    ok(json!(subjects))
}

async fn types() -> SrResult {
    ok(json!(["JSON", "PROTOBUF", "AVRO"]))
}

async fn mode() -> SrResult {
    ok(json!({ "mode": "READWRITE" }))
}

async fn global_config(State(state): State<Arc<HttpState>>) -> SrResult {
    let level = registry(&state).level(None).unwrap_or(Level::Backward);
    ok(json!({ "compatibilityLevel": level.name() }))
}

fn level_from_body(body: &[u8]) -> Result<Level, SrError> {
    let invalid = || {
        SrError(RegistryError { code: 42203, message: "Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive".into() })
    };
    let body: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    body.get("compatibility").and_then(Value::as_str).and_then(Level::parse).ok_or_else(invalid)
}

async fn put_global_config(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    body: Bytes,
) -> SrResult {
    require_admin(&state, &user)?;
    let level = level_from_body(&body)?;
    registry(&state).set_level(None, level)?;
    ok(json!({ "compatibility": level.name() }))
}

async fn subject_config(
    State(state): State<Arc<HttpState>>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> SrResult {
    let reg = registry(&state);
    match reg.level(Some(&subject)) {
        Some(level) => ok(json!({ "compatibilityLevel": level.name() })),
        None if flag(&params, "defaultToGlobal") => {
            ok(json!({ "compatibilityLevel": reg.level(None).unwrap_or(Level::Backward).name() }))
        }
        None => Err(SrError(RegistryError {
            code: 40408,
            message: format!("Subject '{subject}' does not have subject-level compatibility configured"),
        })),
    }
}

async fn put_subject_config(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path(subject): Path<String>,
    body: Bytes,
) -> SrResult {
    require_admin(&state, &user)?;
    let level = level_from_body(&body)?;
    registry(&state).set_level(Some(&subject), level)?;
    ok(json!({ "compatibility": level.name() }))
}

async fn delete_subject_config(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path(subject): Path<String>,
) -> SrResult {
    require_admin(&state, &user)?;
    let level = registry(&state).delete_level(&subject)?;
    ok(json!({ "compatibilityLevel": level.name() }))
}

fn compatibility_answer(problems: Vec<String>, verbose: bool) -> SrResult {
    let mut body = json!({ "is_compatible": problems.is_empty() });
    if verbose {
        body["messages"] = json!(problems);
    }
    ok(body)
}

async fn compatibility(
    State(state): State<Arc<HttpState>>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> SrResult {
    let schema = schema_from_body(&body)?;
    let version = VersionRef::parse(&version)?;
    let problems = match registry(&state).test_compatibility(&subject, Some(version), schema) {
        // A subject with nothing registered yet takes any schema.
        Err(e) if e.code == 40401 => Vec::new(),
        other => other?,
    };
    compatibility_answer(problems, flag(&params, "verbose"))
}

async fn compatibility_all(
    State(state): State<Arc<HttpState>>,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> SrResult {
    let schema = schema_from_body(&body)?;
    let problems = registry(&state).test_compatibility(&subject, None, schema)?;
    compatibility_answer(problems, flag(&params, "verbose"))
}
