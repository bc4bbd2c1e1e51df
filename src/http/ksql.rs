//! ksqlDB's REST API: `/info`, `/healthcheck`, `/ksql` (statements → ksqlDB's entities),
//! `/query` (the CLI's chunked JSON), `/query-stream` (the Java client's delimited or JSON
//! rows, over HTTP/2 or HTTP/1.1 chunked), `/close-query` and `/inserts-stream`. Statements
//! run through the same engine, as the request's user, as on the Postgres endpoint.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{json_response, HttpState, User};
use crate::engine::{Output, Session};
use crate::error::EddyError;
use crate::format::{cell_at, SqlType};
use crate::sql::{self, Located, Statement};

/// Push queries of HTTP clients, by the query id their header gave: who started each, and
/// how to end it.
pub type PushQueries = Arc<Mutex<HashMap<String, (String, CancellationToken)>>>;

const KSQL_JSON: &str = "application/vnd.ksql.v1+json";
const DELIMITED: &str = "application/vnd.ksqlapi.delimited.v1";
/// The ksqlDB version whose API this follows.
const KSQL_VERSION: &str = "0.29.0";

pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/info", get(info))
        .route("/healthcheck", get(healthcheck))
        .route("/ksql", post(ksql))
        .route("/query", post(query))
        .route("/query-stream", post(query_stream))
        .route("/close-query", post(close_query))
        .route("/inserts-stream", post(inserts_stream))
        .route("/status/{kind}/{entity}/{action}", get(status))
}

async fn info() -> Response {
    let body = json!({
        "KsqlServerInfo": {
            "version": KSQL_VERSION,
            "kafkaClusterId": "eddy",
            "ksqlServiceId": "eddy_",
            "serverStatus": "RUNNING",
        }
    });
    json_response(StatusCode::OK, KSQL_JSON, &body)
}

async fn healthcheck() -> Response {
    let body = json!({
        "isHealthy": true,
        "details": { "metastore": { "isHealthy": true }, "kafka": { "isHealthy": true } },
    });
    json_response(StatusCode::OK, KSQL_JSON, &body)
}

/// ksqlDB's error codes: 40001 a bad statement, 40002 a query sent to `/ksql`, 40301
/// not allowed, 50000 the server's fault.
fn error_code(e: &EddyError) -> (StatusCode, u32) {
    match e {
        EddyError::PermissionDenied(_) => (StatusCode::FORBIDDEN, 40301),
        EddyError::Internal(_) | EddyError::State(_) | EddyError::Log(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50000),
        EddyError::InStatement { source, .. } => error_code(source),
        _ => (StatusCode::BAD_REQUEST, 40001),
    }
}

/// The error's message, with `line L:C:` in front where it points into `text`.
fn error_message(e: &EddyError, text: &str) -> String {
    match e {
        EddyError::Syntax { message, position: Some(p) } => {
            let before: String = text.chars().take(p.saturating_sub(1)).collect();
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0);
            format!("line {line}:{column}: {message}")
        }
        other => other.to_string(),
    }
}

fn generic_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({ "@type": "generic_error", "error_code": code, "message": message, "stackTrace": [] });
    json_response(status, "application/json", &body)
}

/// A request that failed before it ran: ksqlDB's `generic_error`.
struct KsqlError(StatusCode, u32, String);

impl axum::response::IntoResponse for KsqlError {
    fn into_response(self) -> Response {
        generic_error(self.0, self.1, &self.2)
    }
}

fn eddy_error(e: &EddyError, text: &str) -> KsqlError {
    let (status, code) = error_code(e);
    KsqlError(status, code, error_message(e, text))
}

fn bad_request(message: String) -> KsqlError {
    KsqlError(StatusCode::BAD_REQUEST, 40000, message)
}

/// A session for the request's user, with its streams properties and variables.
fn session_for(user: &User, properties: Option<&Value>, variables: Option<&Value>) -> Session {
    let mut session = Session::for_user(&user.0);
    for (k, v) in properties.and_then(Value::as_object).into_iter().flatten() {
        let name = k.strip_prefix("ksql.streams.").unwrap_or(k);
        let value = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        session.settings.insert(name.to_string(), value);
    }
    for (k, v) in variables.and_then(Value::as_object).into_iter().flatten() {
        let value = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        session.variables.insert(k.to_ascii_lowercase(), value);
    }
    session
}

fn parse_body(body: &[u8]) -> Result<Value, KsqlError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("Malformed JSON request body: {e}")))
}

/// The statements of a request, with `${var}`s replaced.
fn statements(session: &Session, text: &str) -> Result<Vec<Located>, EddyError> {
    let text = sql::variables::substitute(text, &session.variables)?;
    sql::parse(&text)
}

/// `POST /ksql`: each statement in turn; the answer is one entity per statement, or the
/// first failure (with the entities of the statements before it).
async fn ksql(State(state): State<Arc<HttpState>>, Extension(user): Extension<User>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Some(text) = body.get("ksql").and_then(Value::as_str) else {
        return bad_request("the request body needs a \"ksql\" string".into()).into_response();
    };
    let mut session = session_for(&user, body.get("streamsProperties"), body.get("sessionVariables"));
    let located = match statements(&session, text) {
        Ok(l) => l,
        Err(e) => return statement_error(&e, text, text, Vec::new()),
    };
    let mut entities = Vec::new();
    for stmt in located {
        let statement_text = stmt.text.trim().to_string();
        if matches!(stmt.statement, Statement::Select(_) | Statement::Print { .. }) {
            let message = "The following statement types should be issued to the websocket endpoint '/query':\n\t* PRINT\n\t* SELECT";
            let body = json!({
                "@type": "statement_error",
                "error_code": 40002,
                "message": message,
                "statementText": statement_text,
                "entities": entities,
                "stackTrace": [],
            });
            return json_response(StatusCode::BAD_REQUEST, "application/json", &body);
        }
        let is_assert = matches!(stmt.statement, Statement::AssertSchema { .. } | Statement::AssertTopic { .. });
        match run_statement(&state, &mut session, stmt).await {
            Ok(Some(entity)) => entities.push(entity),
            Ok(None) => {}
            // A failed assertion: ksqlDB's 417 and 41700, with what was missing.
            Err(e) if is_assert && !matches!(e, EddyError::Syntax { .. }) => {
                let body = json!({
                    "@type": "statement_error",
                    "error_code": 41700,
                    "message": e.to_string(),
                    "statementText": statement_text,
                    "entities": entities,
                    "stackTrace": [],
                });
                return json_response(StatusCode::EXPECTATION_FAILED, "application/json", &body);
            }
            Err(e) => return statement_error(&e, text, &statement_text, entities),
        }
    }
    json_response(StatusCode::OK, KSQL_JSON, &Value::Array(entities))
}

fn statement_error(e: &EddyError, whole: &str, statement_text: &str, entities: Vec<Value>) -> Response {
    let (status, code) = error_code(e);
    let body = json!({
        "@type": "statement_error",
        "error_code": code,
        "message": error_message(e, whole),
        "statementText": statement_text,
        "entities": entities,
        "stackTrace": [],
    });
    json_response(status, "application/json", &body)
}

/// The commands `/ksql` ran lately, oldest first, for `GET /status/<commandId>`: (command id,
/// message). Every command has finished when `/ksql` answers, so each one's status is SUCCESS.
static STATUSES: Mutex<VecDeque<(String, String)>> = Mutex::new(VecDeque::new());
const STATUSES_KEPT: usize = 1024;
/// The longest id and message kept together (so the history stays within 1 MiB).
const STATUS_MAX_BYTES: usize = 1024;

/// `GET /status/<commandId>` (ksqlDB's command status): SUCCESS and the command's message, or
/// 404 for an id `/ksql` did not answer lately.
async fn status(
    axum::extract::Path((kind, entity, action)): axum::extract::Path<(String, String, String)>,
) -> Response {
    let id = format!("{kind}/{entity}/{action}");
    let found = {
        let statuses = STATUSES.lock().unwrap_or_else(|p| p.into_inner());
        statuses.iter().rev().find(|(c, _)| *c == id).map(|(_, m)| m.clone())
    };
    match found {
        Some(message) => json_response(StatusCode::OK, KSQL_JSON, &json!({ "status": "SUCCESS", "message": message })),
        None => generic_error(StatusCode::NOT_FOUND, 40400, &format!("Command not found: {id}")),
    }
}

/// Monotonic ids of the commands `/ksql` ran (ksqlDB's command sequence numbers).
static COMMAND_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// ksqlDB's command status for a statement that ran. Its `commandId` is ksqlDB's
/// `type/ENTITY/action`: `stream/PAGEVIEWS/create`, `table/T/drop`, `terminate/CTAS_T_0/execute`.
fn current_status(statement_text: &str, (kind, action): (&str, &str), name: &str, message: String) -> Value {
    let seq = COMMAND_SEQUENCE.fetch_add(1, Ordering::Relaxed) + 1;
    let command_id = format!("{kind}/{}/{action}", name.to_ascii_uppercase());
    // Only commands on a named source or query are kept for `/status`, and no id or message
    // longer than a name should be: a huge `DROP ... IF EXISTS` name is not kept.
    if !name.is_empty() && command_id.len() + message.len() <= STATUS_MAX_BYTES {
        let mut statuses = STATUSES.lock().unwrap_or_else(|p| p.into_inner());
        if statuses.len() >= STATUSES_KEPT {
            statuses.pop_front();
        }
        statuses.push_back((command_id.clone(), message.clone()));
    }
    json!({
        "@type": "currentStatus",
        "statementText": statement_text,
        "commandId": command_id,
        "commandStatus": { "status": "SUCCESS", "message": message, "queryId": null },
        "commandSequenceNumber": seq,
        "warnings": [],
    })
}

/// Rows of an output as strings, keyed by column name.
fn string_rows(output: &Output) -> Vec<HashMap<String, Value>> {
    let Output::Rows { schema, batches, .. } = output else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for batch in batches {
        for r in 0..batch.num_rows() {
            let row = schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(f, c)| (f.name().to_string(), cell_at(c.as_ref(), r)))
                .collect();
            rows.push(row);
        }
    }
    rows
}

fn text(row: &HashMap<String, Value>, column: &str) -> String {
    match row.get(column) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Runs one statement and gives its ksqlDB entity (`None` for SET and DEFINE, which ksqlDB
/// answers with nothing).
async fn run_statement(state: &HttpState, session: &mut Session, stmt: Located) -> crate::error::Result<Option<Value>> {
    let statement_text = stmt.text.trim().to_string();
    let engine = &state.engine;
    let statement = stmt.statement.clone();
    let output = engine.execute(session, stmt).await?;
    let entity = match statement {
        Statement::Set { .. } | Statement::Unset { .. } | Statement::Define { .. } | Statement::Undefine { .. } => {
            return Ok(None)
        }
        Statement::CreateSource { kind, name, .. } => {
            let word = if kind == sql::RelationKind::Table { "Table" } else { "Stream" };
            current_status(&statement_text, (&word.to_ascii_lowercase(), "create"), &name, format!("{word} created"))
        }
        Statement::CreateAs { kind, name, .. } => {
            let query = engine.catalog.relation(&name).and_then(|r| r.written_by).unwrap_or_default();
            let word = if kind == sql::RelationKind::Table { "table" } else { "stream" };
            current_status(&statement_text, (word, "create"), &name, format!("Created query with ID {query}"))
        }
        Statement::InsertSelect { target, .. } => {
            let query = engine
                .catalog
                .queries()
                .into_iter()
                .filter(|q| q.sink.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(&target)))
                .map(|q| q.id)
                .next_back()
                .unwrap_or_default();
            current_status(&statement_text, ("stream", "create"), &target, format!("Created query with ID {query}"))
        }
        Statement::Drop { kind, name, .. } => {
            let word = if kind == sql::RelationKind::Table { "table" } else { "stream" };
            current_status(
                &statement_text,
                (word, "drop"),
                &name,
                format!("Source `{}` was dropped.", name.to_ascii_uppercase()),
            )
        }
        Statement::Terminate { query_id } => {
            let id = query_id.unwrap_or_else(|| "ALL".into());
            current_status(&statement_text, ("terminate", "execute"), &id, "Query terminated.".into())
        }
        Statement::Show { what } if what == "streams" || what == "tables" => {
            let (ty, first) = if what == "streams" { ("STREAM", "stream_name") } else { ("TABLE", "table_name") };
            let list: Vec<Value> = string_rows(&output)
                .iter()
                .map(|r| {
                    json!({
                        "type": ty,
                        "name": text(r, first).to_ascii_uppercase(),
                        "topic": text(r, "kafka_topic"),
                        "keyFormat": text(r, "key_format"),
                        "valueFormat": text(r, "value_format"),
                        "isWindowed": text(r, "is_windowed") == "true",
                    })
                })
                .collect();
            json!({ "@type": what, "statementText": statement_text, what.clone(): list, "warnings": [] })
        }
        Statement::Show { what } if what == "queries" => {
            let list: Vec<Value> = string_rows(&output)
                .iter()
                .map(|r| {
                    let sink = text(r, "sink_name");
                    let status = text(r, "status");
                    let state = status.split([' ', ':']).next().unwrap_or("").to_string();
                    json!({
                        "queryString": text(r, "query_string"),
                        "sinks": if sink.is_empty() { json!([]) } else { json!([sink.to_ascii_uppercase()]) },
                        "sinkKafkaTopics": if sink.is_empty() { json!([]) } else { json!([text(r, "sink_kafka_topic")]) },
                        "id": text(r, "query_id"),
                        "statusCount": { state.clone(): 1 },
                        "queryType": if sink.is_empty() { "PUSH" } else { "PERSISTENT" },
                        "state": state,
                    })
                })
                .collect();
            json!({ "@type": "queries", "statementText": statement_text, "queries": list, "warnings": [] })
        }
        Statement::Show { what } if what == "topics" => {
            let list: Vec<Value> = string_rows(&output)
                .iter()
                .map(|r| {
                    let partitions = text(r, "partitions").parse::<usize>().unwrap_or(0);
                    json!({ "name": text(r, "kafka_topic"), "replicaInfo": vec![1; partitions] })
                })
                .collect();
            json!({ "@type": "kafka_topics", "statementText": statement_text, "topics": list, "warnings": [] })
        }
        Statement::Show { what } if what == "properties" => {
            let list: Vec<Value> = string_rows(&output)
                .iter()
                .map(|r| json!({ "name": text(r, "property"), "scope": "KSQL", "value": text(r, "value") }))
                .collect();
            json!({
                "@type": "properties",
                "statementText": statement_text,
                "properties": list,
                "overwrittenProperties": [],
                "defaultProperties": [],
                "warnings": [],
            })
        }
        Statement::Describe { name, extended } => source_description(state, &statement_text, &name, extended),
        Statement::AssertSchema { subject, id, exists, .. } => json!({
            "@type": "assert_schema",
            "statementText": statement_text,
            "subject": subject,
            "id": id,
            "exists": exists,
            "warnings": [],
        }),
        Statement::AssertTopic { topic, exists, .. } => json!({
            "@type": "assert_topic",
            "statementText": statement_text,
            "topicName": topic,
            "exists": exists,
            "warnings": [],
        }),
        _ => match &output {
            Output::Rows { schema, .. } => {
                // No ksqlDB entity fits (SHOW FUNCTIONS, EXPLAIN, ...): the rows themselves.
                let header: Vec<String> = schema.fields().iter().map(|f| f.name().to_ascii_uppercase()).collect();
                let rows: Vec<Vec<Value>> = string_rows(&output)
                    .into_iter()
                    .map(|r| schema.fields().iter().map(|f| r.get(f.name()).cloned().unwrap_or(Value::Null)).collect())
                    .collect();
                json!({ "@type": "rows", "statementText": statement_text, "header": header, "rows": rows, "warnings": [] })
            }
            Output::Command { tag } => current_status(&statement_text, ("statement", "execute"), "", tag.clone()),
            _ => current_status(&statement_text, ("statement", "execute"), "", String::new()),
        },
    };
    Ok(Some(entity))
}

/// `DESCRIBE x`: ksqlDB's `sourceDescription` from the catalog.
fn source_description(state: &HttpState, statement_text: &str, name: &str, extended: bool) -> Value {
    let engine = &state.engine;
    let Some(rel) = engine.catalog.relation(name) else {
        return json!({ "@type": "sourceDescription", "statementText": statement_text, "warnings": [] });
    };
    let fields: Vec<Value> = rel
        .columns
        .iter()
        .map(|c| {
            let mut f = json!({ "name": c.name.to_ascii_uppercase(), "schema": { "type": c.ty.name(), "fields": null, "memberSchema": null } });
            if c.key {
                f["type"] = json!(if rel.kind == sql::RelationKind::Table { "PRIMARY_KEY" } else { "KEY" });
            }
            f
        })
        .collect();
    let query_ref = |id: String| {
        let sql = engine.catalog.queries().into_iter().find(|q| q.id == id).map(|q| q.sql).unwrap_or_default();
        json!({ "queryString": sql, "sinks": [rel.name.to_ascii_uppercase()], "id": id })
    };
    let read_queries: Vec<Value> = engine
        .catalog
        .queries()
        .into_iter()
        .filter(|q| q.source.eq_ignore_ascii_case(&rel.name))
        .map(|q| json!({ "queryString": q.sql, "sinks": q.sink.iter().map(|s| s.to_ascii_uppercase()).collect::<Vec<_>>(), "id": q.id }))
        .collect();
    let write_queries: Vec<Value> = rel.written_by.clone().into_iter().map(query_ref).collect();
    let key_format = rel.key_format.name();
    json!({
        "@type": "sourceDescription",
        "statementText": statement_text,
        "sourceDescription": {
            "name": rel.name.to_ascii_uppercase(),
            "windowType": rel.key_window.as_ref().map(|w| format!("{w:?}").split(['(', ' ', '{']).next().unwrap_or("").to_ascii_uppercase()),
            "readQueries": read_queries,
            "writeQueries": write_queries,
            "fields": fields,
            "type": if rel.kind == sql::RelationKind::Table { "TABLE" } else { "STREAM" },
            "timestamp": rel.timestamp_column.clone().unwrap_or_default().to_ascii_uppercase(),
            "statistics": "",
            "errorStats": "",
            "extended": extended,
            "keyFormat": key_format,
            "valueFormat": rel.value_format,
            "topic": rel.topic,
            "partitions": rel.partitions,
            "replication": 1,
            "statement": "",
            "queryOffsetSummaries": [],
            "sourceConstraints": [],
        },
        "warnings": [],
    })
}

/// Ids of the push and pull queries HTTP clients run.
static TRANSIENT: AtomicU64 = AtomicU64::new(0);

fn transient_id(located: &Located) -> String {
    let source = match &located.statement {
        Statement::Select(s) => s.relations.first().cloned().unwrap_or_default().to_ascii_uppercase(),
        _ => String::new(),
    };
    let n = TRANSIENT.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("transient_{source}_{}_{n}", nanos % 1_000_000)
}

fn column_type(dt: &datafusion::arrow::datatypes::DataType) -> String {
    SqlType::from_arrow(dt).map(|t| t.name()).unwrap_or_else(|| dt.to_string().to_ascii_uppercase())
}

/// What a query request asks for, run: a schema, then batches until the end (pull) or the
/// limit or the client's leaving (push).
struct Running {
    id: String,
    /// Ends a push query (`/close-query`); registered in `HttpState::push_queries`.
    token: CancellationToken,
    schema: SchemaRef,
    batches: futures::stream::BoxStream<'static, crate::error::Result<RecordBatch>>,
    limit: Option<usize>,
    push: bool,
}

/// Starts the one SELECT of a query request.
async fn start_query(
    state: &Arc<HttpState>,
    user: &User,
    text: &str,
    properties: Option<&Value>,
) -> Result<Running, KsqlError> {
    let mut session = session_for(user, properties, None);
    let mut located = statements(&session, text).map_err(|e| eddy_error(&e, text))?;
    if located.len() != 1 {
        return Err(KsqlError(
            StatusCode::BAD_REQUEST,
            40001,
            format!("Expected exactly one SELECT statement, got {}", located.len()),
        ));
    }
    let Some(stmt) = located.pop() else {
        return Err(bad_request("no statement".into()));
    };
    if !matches!(stmt.statement, Statement::Select(_)) {
        return Err(KsqlError(
            StatusCode::BAD_REQUEST,
            40001,
            "Only SELECT statements run here; send other statements to /ksql".into(),
        ));
    }
    let id = transient_id(&stmt);
    let push_slots = state.config.max_push_queries;
    let push = matches!(&stmt.statement, Statement::Select(s) if s.emit_changes);
    let token = CancellationToken::new();
    if push {
        // The slot is taken under the same lock that counts them.
        let mut queries = state.push_queries.lock().unwrap_or_else(|p| p.into_inner());
        if queries.len() >= push_slots {
            return Err(KsqlError(
                StatusCode::TOO_MANY_REQUESTS,
                42900,
                format!("too many push queries over HTTP: at most {push_slots} run at once"),
            ));
        }
        queries.insert(id.clone(), (user.0.clone(), token.clone()));
    }
    let output = match state.engine.execute(&mut session, stmt).await {
        Ok(o) => o,
        Err(e) => {
            state.push_queries.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(eddy_error(&e, text));
        }
    };
    match output {
        Output::Rows { schema, batches, .. } => Ok(Running {
            id,
            token,
            schema,
            batches: futures::stream::iter(batches.into_iter().map(Ok)).boxed(),
            limit: None,
            push: false,
        }),
        Output::Push { schema, limit, mut rx } => Ok(Running {
            id,
            token,
            schema,
            batches: futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed(),
            limit,
            push: true,
        }),
        _ => {
            state.push_queries.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            Err(bad_request("the statement returned no rows".into()))
        }
    }
}

/// How each part of a query's answer is written.
#[derive(Clone, Copy)]
enum Shape {
    /// `/query`: `[{"header":..},\n{"row":{"columns":[..]}},\n ... ]\n`.
    Legacy,
    /// `/query-stream`, delimited: the header object, then one array per line.
    Delimited,
    /// `/query-stream` as `application/json`: one array of the header and the rows.
    JsonArray,
}

/// Streams a running query's answer; the query stops when the client goes away, when
/// `/close-query` names it, or at its LIMIT.
fn stream_answer(state: &Arc<HttpState>, running: Running, shape: Shape) -> Response {
    let Running { id, token, schema, mut batches, limit, push } = running;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().to_ascii_uppercase()).collect();
    let types: Vec<String> = schema.fields().iter().map(|f| column_type(f.data_type())).collect();
    let header = match shape {
        Shape::Legacy => {
            let schema_text: Vec<String> = names.iter().zip(&types).map(|(n, t)| format!("`{n}` {t}")).collect();
            format!("[{},\n", json!({ "header": { "queryId": id, "schema": schema_text.join(", ") } }))
        }
        Shape::Delimited => format!("{}\n", json!({ "queryId": id, "columnNames": names, "columnTypes": types })),
        Shape::JsonArray => format!("[{}", json!({ "queryId": id, "columnNames": names, "columnTypes": types })),
    };
    let (mut tx, body) = super::streamed_answer(4, state.config.write_timeout);
    let registry = state.push_queries.clone();
    tokio::spawn(async move {
        let mut sent = 0usize;
        let mut out = header;
        let mut final_message = None;
        'outer: loop {
            if !out.is_empty() && !tx.send(Bytes::from(std::mem::take(&mut out))).await {
                break;
            }
            let next = tokio::select! {
                _ = token.cancelled() => break,
                _ = tx.closed() => break,
                next = batches.next() => next,
            };
            let batch = match next {
                None => break,
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    let error = json!({ "@type": "generic_error", "error_code": 50000, "message": e.to_string() });
                    out = match shape {
                        Shape::Legacy => format!("{{\"errorMessage\":{error}}},\n"),
                        Shape::Delimited => format!("{error}\n"),
                        Shape::JsonArray => format!(",{error}"),
                    };
                    break;
                }
            };
            for r in 0..batch.num_rows() {
                if limit.is_some_and(|l| sent >= l) {
                    final_message = Some("Limit Reached");
                    break 'outer;
                }
                let row: Vec<Value> = batch.columns().iter().map(|c| cell_at(c.as_ref(), r)).collect();
                let row = Value::Array(row);
                match shape {
                    Shape::Legacy => out.push_str(&format!("{},\n", json!({ "row": { "columns": row } }))),
                    Shape::Delimited => out.push_str(&format!("{row}\n")),
                    Shape::JsonArray => out.push_str(&format!(",{row}")),
                }
                sent += 1;
            }
            if limit.is_some_and(|l| sent >= l) {
                final_message = Some("Limit Reached");
                break;
            }
        }
        if !push && final_message.is_none() {
            final_message = Some("Query Completed");
        }
        match shape {
            Shape::Legacy => {
                let last = match final_message {
                    Some(m) => json!({ "finalMessage": m }).to_string(),
                    None => String::new(),
                };
                out.push_str(&format!("{last}]\n"));
            }
            Shape::Delimited => {}
            Shape::JsonArray => out.push(']'),
        }
        // A client given up on gets no closing part: its answer ends broken, not short.
        if !tx.is_gone() {
            tx.send(Bytes::from(out)).await;
        }
        registry.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    });
    let content_type = match shape {
        Shape::Legacy => KSQL_JSON,
        Shape::Delimited => DELIMITED,
        Shape::JsonArray => "application/json",
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `POST /query`: `{"ksql": "SELECT ...;", "streamsProperties": {..}}`, answered as the CLI reads it.
async fn query(State(state): State<Arc<HttpState>>, Extension(user): Extension<User>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Some(text) = body.get("ksql").and_then(Value::as_str) else {
        return bad_request("the request body needs a \"ksql\" string".into()).into_response();
    };
    match start_query(&state, &user, text, body.get("streamsProperties")).await {
        Ok(running) => stream_answer(&state, running, Shape::Legacy),
        Err(e) => e.into_response(),
    }
}

/// `POST /query-stream`: `{"sql": "SELECT ...;", "properties": {..}}`, delimited rows by
/// default, or one JSON array for `Accept: application/json`.
async fn query_stream(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Some(text) = body.get("sql").and_then(Value::as_str) else {
        return bad_request("the request body needs a \"sql\" string".into()).into_response();
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let shape = if accept.contains("application/json") && !accept.contains(DELIMITED) {
        Shape::JsonArray
    } else {
        Shape::Delimited
    };
    match start_query(&state, &user, text, body.get("properties")).await {
        Ok(running) => stream_answer(&state, running, shape),
        Err(e) => e.into_response(),
    }
}

/// `POST /close-query`: `{"queryId": ..}` ends a push query of an HTTP client (its own
/// user's, or any for a superuser).
async fn close_query(State(state): State<Arc<HttpState>>, Extension(user): Extension<User>, body: Bytes) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Some(id) = body.get("queryId").and_then(Value::as_str) else {
        return bad_request("the request body needs a \"queryId\"".into()).into_response();
    };
    let mut queries = state.push_queries.lock().unwrap_or_else(|p| p.into_inner());
    match queries.get(id) {
        Some((owner, _)) if state.auth_required && owner != &user.0 && !state.engine.users.is_superuser(&user.0) => {
            generic_error(StatusCode::FORBIDDEN, 40301, &format!("push query {id} belongs to another user"))
        }
        Some(_) => {
            if let Some((_, t)) = queries.remove(id) {
                t.cancel();
            }
            Response::new(Body::empty())
        }
        None => generic_error(StatusCode::BAD_REQUEST, 40001, &format!("No query with id {id}")),
    }
}

/// A JSON value as a SQL literal for INSERT ... VALUES.
fn literal(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => b.to_string().to_ascii_uppercase(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        Value::Array(items) => {
            let items: Result<Vec<String>, String> = items.iter().map(literal).collect();
            format!("ARRAY[{}]", items?.join(", "))
        }
        Value::Object(fields) => {
            let fields: Result<Vec<String>, String> =
                fields.iter().map(|(k, v)| Ok(format!("\"{}\" := {}", k.replace('"', "\"\""), literal(v)?))).collect();
            format!("STRUCT({})", fields?.join(", "))
        }
    })
}

/// `POST /inserts-stream`: a first line `{"target": "S"}`, then one JSON object per line;
/// each row is inserted as INSERT INTO ... VALUES and answered with `{"status":"ok","seq":n}`
/// or its error as soon as it is done, while the client goes on sending (HTTP/2, or
/// HTTP/1.1 chunked). A malformed line is answered and skipped; a line longer than the
/// request limit ends the stream with a 413 answer.
async fn inserts_stream(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    request: axum::extract::Request,
) -> Response {
    let mut lines = Lines::new(request.into_body().into_data_stream());
    let limit = state.config.max_body_bytes;
    let first = match lines.next(limit).await {
        Ok(first) => first,
        Err(e) => return bad_request(e).into_response(),
    };
    let target = first
        .and_then(|l| serde_json::from_slice::<Value>(&l).ok())
        .and_then(|v| v.get("target").and_then(Value::as_str).map(str::to_string));
    let Some(target) = target else {
        return bad_request("the first line must be {\"target\": \"<stream>\"}".into()).into_response();
    };
    // The target is a relation's name, never SQL: it is looked up, then quoted.
    let Some(rel) = state.engine.catalog.relation(&target) else {
        return bad_request(format!("Cannot insert values into an unknown stream/table: {target}")).into_response();
    };
    let (mut tx, body) = super::streamed_answer(16, state.config.write_timeout);
    tokio::spawn(async move {
        let mut session = Session::for_user(&user.0);
        let mut seq = 0;
        loop {
            let answer = match lines.next(limit).await {
                Ok(None) => return,
                Ok(Some(line)) => insert_row(&state, &mut session, &rel.name, seq, &line).await,
                Err(e) => json!({ "status": "error", "seq": seq, "error_code": 41300, "message": e }),
            };
            let last = answer.get("error_code") == Some(&json!(41300));
            if !tx.send(Bytes::from(format!("{answer}\n"))).await || last {
                return;
            }
            seq += 1;
        }
    });
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(DELIMITED));
    response
}

/// The lines of a streamed request body, as they arrive (blank lines skipped). Each byte
/// is looked at once for a newline, and read lines leave the buffer once per chunk: linear
/// in the body, however it is cut into chunks.
struct Lines {
    body: axum::body::BodyDataStream,
    pending: Vec<u8>,
    /// Where the unread part of `pending` starts.
    start: usize,
    /// How far past `start` no newline is.
    scanned: usize,
    ended: bool,
}

impl Lines {
    fn new(body: axum::body::BodyDataStream) -> Lines {
        Lines { body, pending: Vec::new(), start: 0, scanned: 0, ended: false }
    }

    /// The next line; `None` at the end of the body. A line longer than `limit` is an error.
    async fn next(&mut self, limit: usize) -> Result<Option<Vec<u8>>, String> {
        loop {
            let unread = &self.pending[self.start..];
            if let Some(at) = unread[self.scanned..].iter().position(|b| *b == b'\n') {
                let end = self.scanned + at;
                let line = unread[..end].to_vec();
                self.start += end + 1;
                self.scanned = 0;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            self.scanned = unread.len();
            if unread.len() > limit {
                return Err(format!("a line passes the request limit of {limit} bytes"));
            }
            if self.ended {
                let rest = self.pending.split_off(self.start);
                self.pending.clear();
                self.start = 0;
                self.scanned = 0;
                return Ok((!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest));
            }
            // Read lines leave the buffer before more comes in.
            self.pending.drain(..self.start);
            self.start = 0;
            match self.body.next().await {
                Some(Ok(bytes)) => self.pending.extend_from_slice(&bytes),
                Some(Err(e)) => return Err(format!("the request body broke off: {e}")),
                None => self.ended = true,
            }
        }
    }
}

/// One `/inserts-stream` row: a JSON object inserted into `target` as INSERT ... VALUES.
async fn insert_row(state: &HttpState, session: &mut Session, target: &str, seq: usize, line: &[u8]) -> Value {
    let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let fields = match serde_json::from_slice::<Value>(line) {
        Err(e) => {
            return json!({ "status": "error", "seq": seq, "error_code": 40000, "message": format!("Malformed JSON: {e}") })
        }
        Ok(Value::Object(fields)) => fields,
        Ok(_) => {
            return json!({ "status": "error", "seq": seq, "error_code": 40000, "message": "a row is a JSON object" })
        }
    };
    let columns: Vec<String> = fields.keys().map(|k| quoted(&k.to_ascii_lowercase())).collect();
    let literals = match fields.values().map(literal).collect::<Result<Vec<_>, _>>() {
        Ok(l) => l,
        Err(e) => return json!({ "status": "error", "seq": seq, "error_code": 40000, "message": e }),
    };
    let sql = format!("INSERT INTO {} ({}) VALUES ({})", quoted(target), columns.join(", "), literals.join(", "));
    let run = async {
        let located = sql::parse(&sql)?;
        if located.len() != 1 {
            return Err(EddyError::InvalidValue("a row is one INSERT".into()));
        }
        for l in located {
            state.engine.execute(session, l).await?;
        }
        Ok(())
    };
    match run.await {
        Ok(()) => json!({ "status": "ok", "seq": seq }),
        Err(e) => {
            let (_, code) = error_code(&e);
            json!({ "status": "error", "seq": seq, "error_code": code, "message": e.to_string() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_say_line_and_column() {
        let e = EddyError::Syntax { message: "bad".into(), position: Some(12) };
        assert_eq!(error_message(&e, "SELECT 1;\nSELEC"), "line 2:1: bad");
        assert_eq!(error_message(&e, "SELECT * FROM"), "line 1:11: bad");
    }

    #[test]
    fn literals_quote_strings_and_nest() {
        assert_eq!(literal(&json!("it's")).unwrap(), "'it''s'");
        assert_eq!(literal(&json!([1, null])).unwrap(), "ARRAY[1, NULL]");
        assert_eq!(literal(&json!({"a": true})).unwrap(), "STRUCT(\"a\" := TRUE)");
    }
}
