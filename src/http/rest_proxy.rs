//! Confluent's REST Proxy: v2 (`/brokers`, `/topics`, produce with the `json` and `binary`
//! embedded formats) and v3 (`/v3/clusters/...`: topics, partitions, records). Shapes and
//! error codes follow confluentinc/kafka-rest. Produce goes through the log's own append
//! path, as a Kafka Produce does: acknowledged after fsync, refused on a query's output topic,
//! checked against the user's grants.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use base64::Engine as _;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};

use super::{error_response, json_response, HttpState, User};
use crate::auth::TopicAccess;
use crate::dataflow::sink::murmur2;
use crate::log::batch::encode_batch;
use crate::log::{LogError, LogRecord, Topic, TopicConfig};
use crate::registry::SchemaType;

pub(super) const V2: &str = "application/vnd.kafka.v2+json";
const V3: &str = "application/json";
/// The cluster id Kafka's Metadata answers with.
pub(super) const CLUSTER_ID: &str = "eddy";
/// The one broker.
const BROKER_ID: i32 = 0;
/// Most records one v2 produce request may carry.
const MAX_RECORDS_PER_REQUEST: usize = 100_000;
/// Most entries of one `records:batch` request.
const MAX_BATCH_ENTRIES: usize = 1_000;
/// Records streamed to v3 are gathered into one append up to about this many bytes.
const MAX_STREAM_STEP_BYTES: usize = 1 << 20;

pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/brokers", get(brokers))
        .route("/topics", get(list_topics))
        .route("/topics/{topic}", get(describe_topic).post(produce_v2))
        .route("/topics/{topic}/partitions", get(partitions_v2))
        .route("/topics/{topic}/partitions/{partition}", get(partition_v2).post(produce_v2_partition))
        .route("/topics/{topic}/partitions/{partition}/offsets", get(offsets_v2))
        .route("/v3/clusters", get(clusters))
        .route("/v3/clusters/{cluster}", get(cluster))
        .route("/v3/clusters/{cluster}/topics", get(topics_v3).post(create_topic_v3))
        .route("/v3/clusters/{cluster}/topics/{topic}", get(topic_v3).delete(delete_topic_v3))
        .route("/v3/clusters/{cluster}/topics/{topic}/partitions", get(partitions_v3))
        .route("/v3/clusters/{cluster}/topics/{topic}/records", post(records_v3))
        .route("/v3/clusters/{cluster}/topics/{topic}/records:batch", post(records_batch_v3))
}

/// An error as the REST Proxy gives it: an HTTP status and its own five-digit code.
pub(super) struct RestError(pub StatusCode, pub u32, pub String);

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        error_response(self.0, self.1, &self.2)
    }
}

fn topic_not_found() -> RestError {
    RestError(StatusCode::NOT_FOUND, 40401, "Topic not found.".into())
}

fn partition_not_found() -> RestError {
    RestError(StatusCode::NOT_FOUND, 40402, "Partition not found.".into())
}

pub(super) fn forbidden(topic: &str) -> RestError {
    RestError(StatusCode::FORBIDDEN, 40301, format!("Not authorized to access topics: [{topic}]"))
}

/// A topic the user may see: the topics a user may neither read nor write are not found, as
/// Kafka's Metadata leaves them out.
fn visible_topic(state: &HttpState, user: &User, name: &str) -> Result<Arc<Topic>, RestError> {
    let topic = state.engine.log.topic(name).ok_or_else(topic_not_found)?;
    if !may_see(state, user, name) {
        return Err(topic_not_found());
    }
    Ok(topic)
}

pub(super) fn may_see(state: &HttpState, user: &User, topic: &str) -> bool {
    let users = &state.engine.users;
    !state.auth_required
        || users.may_access_topic(&user.0, topic, TopicAccess::Read)
        || users.may_access_topic(&user.0, topic, TopicAccess::Write)
}

fn v2(body: Value) -> Response {
    json_response(StatusCode::OK, V2, &body)
}

async fn brokers() -> Response {
    v2(json!({ "brokers": [BROKER_ID] }))
}

async fn list_topics(State(state): State<Arc<HttpState>>, Extension(user): Extension<User>) -> Response {
    let mut names: Vec<String> =
        state.engine.log.topics().iter().map(|t| t.name.clone()).filter(|t| may_see(&state, &user, t)).collect();
    names.sort();
    v2(json!(names))
}

fn partition_json(id: usize) -> Value {
    json!({
        "partition": id,
        "leader": BROKER_ID,
        "replicas": [{ "broker": BROKER_ID, "leader": true, "in_sync": true }],
    })
}

async fn describe_topic(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path(name): Path<String>,
) -> Result<Response, RestError> {
    let topic = visible_topic(&state, &user, &name)?;
    let configs: serde_json::Map<String, Value> =
        topic.config().entries().into_iter().map(|(k, v)| (k.to_string(), Value::String(v))).collect();
    let partitions: Vec<Value> = (0..topic.partitions.len()).map(partition_json).collect();
    Ok(v2(json!({ "name": topic.name, "configs": configs, "partitions": partitions })))
}

async fn partitions_v2(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path(name): Path<String>,
) -> Result<Response, RestError> {
    let topic = visible_topic(&state, &user, &name)?;
    Ok(v2(json!((0..topic.partitions.len()).map(partition_json).collect::<Vec<_>>())))
}

fn partition_index(topic: &Topic, partition: &str) -> Result<usize, RestError> {
    partition.parse::<usize>().ok().filter(|p| *p < topic.partitions.len()).ok_or_else(partition_not_found)
}

async fn partition_v2(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((name, partition)): Path<(String, String)>,
) -> Result<Response, RestError> {
    let topic = visible_topic(&state, &user, &name)?;
    Ok(v2(partition_json(partition_index(&topic, &partition)?)))
}

async fn offsets_v2(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((name, partition)): Path<(String, String)>,
) -> Result<Response, RestError> {
    let topic = visible_topic(&state, &user, &name)?;
    let p = &topic.partitions[partition_index(&topic, &partition)?];
    Ok(v2(json!({ "beginning_offset": p.log_start_offset(), "end_offset": p.high_watermark() })))
}

/// How a v2 produce request embeds its keys and values (from its Content-Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedded {
    /// Any JSON value, written as its JSON text.
    Json,
    /// Base64 strings, written as the bytes they encode.
    Binary,
    /// JSON written with an Avro schema from the registry (`embedded.rs`).
    Avro,
    /// JSON framed with a JSON Schema's id from the registry.
    JsonSchema,
    /// JSON (proto3's mapping) written as a registered Protobuf schema's message.
    Protobuf,
}

fn embedded_format(headers: &HeaderMap) -> Result<Embedded, RestError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "application/vnd.kafka.json.v2+json" => Ok(Embedded::Json),
        // `application/json` and the bare v2 type mean binary, as in kafka-rest.
        "application/vnd.kafka.binary.v2+json" | "application/vnd.kafka.v2+json" | "application/json" => {
            Ok(Embedded::Binary)
        }
        "application/vnd.kafka.avro.v2+json" => Ok(Embedded::Avro),
        "application/vnd.kafka.jsonschema.v2+json" => Ok(Embedded::JsonSchema),
        "application/vnd.kafka.protobuf.v2+json" => Ok(Embedded::Protobuf),
        "" => Err(RestError(StatusCode::UNSUPPORTED_MEDIA_TYPE, 415, "HTTP 415 Unsupported Media Type: a produce request needs a Content-Type such as application/vnd.kafka.json.v2+json".into())),
        other => Err(RestError(StatusCode::UNSUPPORTED_MEDIA_TYPE, 415, format!("HTTP 415 Unsupported Media Type: {other}"))),
    }
}

/// One record of a v2 produce request, decoded.
struct Outgoing {
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// The record's timestamp (None: the time of the append).
    timestamp_ms: Option<i64>,
}

fn embedded_bytes(format: Embedded, v: Option<&Value>, what: &str) -> Result<Option<Vec<u8>>, RestError> {
    match (format, v) {
        (_, None | Some(Value::Null)) => Ok(None),
        // (The schema formats are encoded by `embedded`, not here.)
        (Embedded::Json | Embedded::Avro | Embedded::JsonSchema | Embedded::Protobuf, Some(v)) => {
            Ok(Some(v.to_string().into_bytes()))
        }
        (Embedded::Binary, Some(Value::String(s))) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Some)
            .map_err(|e| RestError(StatusCode::UNPROCESSABLE_ENTITY, 42205, format!("Invalid base64 {what}: {e}"))),
        (Embedded::Binary, Some(_)) => Err(RestError(
            StatusCode::UNPROCESSABLE_ENTITY,
            42205,
            format!("the binary embedded format takes each {what} as a base64 string"),
        )),
    }
}

/// A v2 request's records, and the key and value schema ids they were written with.
type Parsed = (Vec<Outgoing>, Option<u32>, Option<u32>);

fn parse_records(format: Embedded, topic: &str, body: &[u8]) -> Result<Parsed, RestError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| RestError(StatusCode::BAD_REQUEST, 400, format!("Malformed JSON request body: {e}")))?;
    let records = body.get("records").and_then(Value::as_array).ok_or_else(|| {
        RestError(StatusCode::UNPROCESSABLE_ENTITY, 42200, "the request body needs a \"records\" array".into())
    })?;
    if records.len() > MAX_RECORDS_PER_REQUEST {
        return Err(RestError(
            StatusCode::PAYLOAD_TOO_LARGE,
            41301,
            format!("a produce request carries at most {MAX_RECORDS_PER_REQUEST} records"),
        ));
    }
    let mut encoded = match format {
        Embedded::Avro => Some(super::embedded::encode_records(SchemaType::Avro, topic, &body, records)?),
        Embedded::JsonSchema => Some(super::embedded::encode_records(SchemaType::Json, topic, &body, records)?),
        Embedded::Protobuf => Some(super::embedded::encode_records(SchemaType::Protobuf, topic, &body, records)?),
        Embedded::Json | Embedded::Binary => None,
    };
    let outgoing = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let partition = match r.get("partition") {
                None | Some(Value::Null) => None,
                Some(p) => Some(p.as_i64().and_then(|p| i32::try_from(p).ok()).ok_or_else(partition_not_found)?),
            };
            let (key, value) = match &mut encoded {
                Some(e) => (e.keys[i].take(), e.values[i].take()),
                None => {
                    (embedded_bytes(format, r.get("key"), "key")?, embedded_bytes(format, r.get("value"), "value")?)
                }
            };
            Ok(Outgoing { partition, key, value, timestamp_ms: None })
        })
        .collect::<Result<Vec<_>, RestError>>()?;
    Ok((outgoing, encoded.as_ref().and_then(|e| e.key_schema_id), encoded.as_ref().and_then(|e| e.value_schema_id)))
}

/// The topic a producer writes to: created with the broker's defaults when Kafka would
/// auto-create it.
fn may_write(state: &HttpState, user: &User, name: &str) -> Result<(), RestError> {
    if state.auth_required && !state.engine.users.may_access_topic(&user.0, name, TopicAccess::Write) {
        return Err(forbidden(name));
    }
    Ok(())
}

fn writable_topic(state: &HttpState, user: &User, name: &str) -> Result<Arc<Topic>, RestError> {
    // Checked before a topic is created for the write, as after.
    may_write(state, user, name)?;
    let topic = match state.engine.log.topic(name) {
        Some(t) => t,
        None if state.broker.config.auto_create_topics => {
            let config = state.broker.topic_config(state.broker.config.default_partitions);
            match state.engine.log.create_topic(name, config) {
                Ok(t) => t,
                Err(LogError::TopicExists(_)) => state.engine.log.topic(name).ok_or_else(topic_not_found)?,
                Err(LogError::InvalidTopic(e)) => return Err(RestError(StatusCode::UNPROCESSABLE_ENTITY, 42221, e)),
                Err(e) => return Err(RestError(StatusCode::INTERNAL_SERVER_ERROR, 50002, e.to_string())),
            }
        }
        None => return Err(topic_not_found()),
    };
    Ok(topic)
}

/// Round-robin position for records with neither key nor partition.
static NEXT_PARTITION: AtomicUsize = AtomicUsize::new(0);

/// Kafka's default partitioner: murmur2 of the key, else round-robin.
fn choose_partition(key: Option<&[u8]>, partitions: usize) -> usize {
    match key {
        Some(k) => (murmur2(k) & 0x7fff_ffff) as usize % partitions,
        None => NEXT_PARTITION.fetch_add(1, Ordering::Relaxed) % partitions,
    }
}

/// Bytes of records one appended batch holds at most (a topic's max.message.bytes is 1 MiB
/// by default; a single larger record goes alone, and the log decides).
const BATCH_BYTES: usize = 512 << 10;

/// Consecutive runs of records of at most `limit` bytes each (at least one record a run).
fn batches_of(records: &[(usize, LogRecord)], limit: usize) -> Vec<&[(usize, LogRecord)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, r)) in records.iter().enumerate() {
        let size = 32 + r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len);
        if i > start && bytes + size > limit {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// Where each appended record landed, or why its partition refused it.
type Placed = Vec<Result<(i32, i64), (i32, String)>>;

/// Appends records (one batch per partition, each acknowledged after fsync) and returns each
/// record's partition and offset, or why it was not appended, in request order.
async fn append(topic: Arc<Topic>, records: Vec<Outgoing>) -> Result<Placed, RestError> {
    let n = topic.partitions.len();
    let total = records.len();
    let mut placed: Placed = vec![Err((0, String::new())); total];
    let mut by_partition: Vec<Vec<(usize, LogRecord)>> = (0..n).map(|_| Vec::new()).collect();
    let now = chrono::Utc::now().timestamp_millis();
    for (i, r) in records.into_iter().enumerate() {
        let p = match r.partition {
            Some(p) if p >= 0 && (p as usize) < n => p as usize,
            Some(p) => {
                placed[i] = Err((p, format!("Partition {p} of topic {} not found.", topic.name)));
                continue;
            }
            None => choose_partition(r.key.as_deref(), n),
        };
        let timestamp_ms = r.timestamp_ms.unwrap_or(now);
        let record = LogRecord { offset: 0, timestamp_ms, key: r.key, value: r.value, headers: Vec::new() };
        by_partition[p].push((i, record));
    }
    let compacted = topic.config().cleanup_policy.compacts();
    tokio::task::spawn_blocking(move || {
        for (p, mut records) in by_partition.into_iter().enumerate() {
            if compacted {
                // A compacted topic takes keyed records only; the others fail alone.
                records.retain(|(i, r)| {
                    let keyed = r.key.is_some();
                    if !keyed {
                        placed[*i] = Err((p as i32, "a compacted topic takes records with keys only".into()));
                    }
                    keyed
                });
            }
            let partition = &topic.partitions[p];
            // Batches stay well under max.message.bytes, as a producer's would.
            for chunk in batches_of(&records, BATCH_BYTES) {
                let batch: Vec<&LogRecord> = chunk.iter().map(|(_, r)| r).collect();
                let outcome = match partition.owner() {
                    Some(query) => Err(format!("topic {} is written by query {query} only", topic.name)),
                    None => partition.append(&mut encode_batch(&batch), now).map_err(|e| e.to_string()),
                };
                for (k, (i, _)) in chunk.iter().enumerate() {
                    placed[*i] = match &outcome {
                        Ok(info) => Ok((p as i32, info.base_offset + k as i64)),
                        Err(e) => Err((p as i32, e.clone())),
                    };
                }
            }
        }
        placed
    })
    .await
    .map_err(|e| RestError(StatusCode::INTERNAL_SERVER_ERROR, 50002, format!("append task: {e}")))
}

async fn produce_v2(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RestError> {
    produce(state, user, name, None, headers, body).await
}

async fn produce_v2_partition(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((name, partition)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RestError> {
    let partition = partition.parse::<i32>().map_err(|_| partition_not_found())?;
    produce(state, user, name, Some(partition), headers, body).await
}

async fn produce(
    state: Arc<HttpState>,
    user: User,
    name: String,
    partition: Option<i32>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RestError> {
    let format = embedded_format(&headers)?;
    // Before any schema is registered for the topic.
    may_write(&state, &user, &name)?;
    let (mut records, key_schema_id, value_schema_id) = parse_records(format, &name, &body)?;
    if let Some(p) = partition {
        records.iter_mut().for_each(|r| r.partition = Some(p));
    }
    let topic = writable_topic(&state, &user, &name)?;
    // kafka-rest refuses the whole request when one record names a partition the topic lacks.
    if records.iter().any(|r| r.partition.is_some_and(|p| p < 0 || p as usize >= topic.partitions.len())) {
        return Err(partition_not_found());
    }
    let offsets: Vec<Value> = append(topic, records)
        .await?
        .into_iter()
        .map(|placed| match placed {
            Ok((p, offset)) => json!({ "partition": p, "offset": offset, "error_code": null, "error": null }),
            // kafka-rest's per-record code 2: not retriable.
            Err((p, e)) => json!({ "partition": p, "offset": null, "error_code": 2, "error": e }),
        })
        .collect();
    Ok(v2(json!({ "key_schema_id": key_schema_id, "value_schema_id": value_schema_id, "offsets": offsets })))
}

// ---- v3 ----

/// `http://host` of the request, for the `self` and `related` links.
pub(super) fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let scheme = if super::HTTPS.load(Ordering::Relaxed) { "https" } else { "http" };
    format!("{scheme}://{host}")
}

pub(super) fn v3(status: StatusCode, body: Value) -> Response {
    json_response(status, V3, &body)
}

pub(super) fn check_cluster(cluster: &str) -> Result<(), RestError> {
    if cluster == CLUSTER_ID {
        Ok(())
    } else {
        Err(RestError(StatusCode::NOT_FOUND, 404, format!("Cluster {cluster} cannot be found.")))
    }
}

fn cluster_json(base: &str) -> Value {
    let me = format!("{base}/v3/clusters/{CLUSTER_ID}");
    json!({
        "kind": "KafkaCluster",
        "metadata": { "self": me, "resource_name": format!("crn:///kafka={CLUSTER_ID}") },
        "cluster_id": CLUSTER_ID,
        "controller": { "related": format!("{me}/brokers/{BROKER_ID}") },
        "acls": { "related": format!("{me}/acls") },
        "brokers": { "related": format!("{me}/brokers") },
        "broker_configs": { "related": format!("{me}/broker-configs") },
        "consumer_groups": { "related": format!("{me}/consumer-groups") },
        "topics": { "related": format!("{me}/topics") },
        "partition_reassignments": { "related": format!("{me}/topics/-/partitions/-/reassignment") },
    })
}

async fn clusters(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    v3(
        StatusCode::OK,
        json!({
            "kind": "KafkaClusterList",
            "metadata": { "self": format!("{base}/v3/clusters"), "next": null },
            "data": [cluster_json(&base)],
        }),
    )
}

async fn cluster(Path(cluster): Path<String>, headers: HeaderMap) -> Result<Response, RestError> {
    check_cluster(&cluster)?;
    Ok(v3(StatusCode::OK, cluster_json(&base_url(&headers))))
}

fn topic_json(base: &str, topic: &Topic) -> Value {
    let me = format!("{base}/v3/clusters/{CLUSTER_ID}/topics/{}", topic.name);
    json!({
        "kind": "KafkaTopic",
        "metadata": { "self": me, "resource_name": format!("crn:///kafka={CLUSTER_ID}/topic={}", topic.name) },
        "cluster_id": CLUSTER_ID,
        "topic_name": topic.name,
        "is_internal": topic.name.starts_with('_'),
        "replication_factor": 1,
        "partitions_count": topic.partitions.len(),
        "partitions": { "related": format!("{me}/partitions") },
        "configs": { "related": format!("{me}/configs") },
        "partition_reassignments": { "related": format!("{me}/partitions/-/reassignment") },
        "authorized_operations": [],
    })
}

async fn topics_v3(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path(cluster): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    check_cluster(&cluster)?;
    let base = base_url(&headers);
    let mut topics: Vec<Arc<Topic>> =
        state.engine.log.topics().into_iter().filter(|t| may_see(&state, &user, &t.name)).collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let data: Vec<Value> = topics.iter().map(|t| topic_json(&base, t)).collect();
    Ok(v3(
        StatusCode::OK,
        json!({
            "kind": "KafkaTopicList",
            "metadata": { "self": format!("{base}/v3/clusters/{CLUSTER_ID}/topics"), "next": null },
            "data": data,
        }),
    ))
}

async fn topic_v3(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let topic = v3_topic(&state, &user, &cluster, &name)?;
    Ok(v3(StatusCode::OK, topic_json(&base_url(&headers), &topic)))
}

/// A topic of the one cluster, as v3 finds it (not found when the user may not see it).
pub(super) fn v3_topic(state: &HttpState, user: &User, cluster: &str, name: &str) -> Result<Arc<Topic>, RestError> {
    check_cluster(cluster)?;
    visible_topic(state, user, name).map_err(|_| topic_not_found_v3(name))
}

fn topic_not_found_v3(name: &str) -> RestError {
    RestError(StatusCode::NOT_FOUND, 40403, format!("This server does not host this topic-partition. Topic: {name}"))
}

pub(super) fn bad_json(e: impl std::fmt::Display) -> RestError {
    RestError(StatusCode::BAD_REQUEST, 400, format!("Malformed JSON request body: {e}"))
}

async fn create_topic_v3(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path(cluster): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RestError> {
    check_cluster(&cluster)?;
    if state.auth_required && !state.engine.users.is_superuser(&user.0) {
        return Err(RestError(StatusCode::FORBIDDEN, 40301, "Only a superuser may create topics.".into()));
    }
    let body: Value = serde_json::from_slice(&body).map_err(bad_json)?;
    let name = body
        .get("topic_name")
        .and_then(Value::as_str)
        .ok_or_else(|| RestError(StatusCode::BAD_REQUEST, 400, "the request body needs a \"topic_name\"".into()))?;
    let partitions = match body.get("partitions_count") {
        None | Some(Value::Null) => state.broker.config.default_partitions,
        Some(v) => v.as_i64().and_then(|p| i32::try_from(p).ok()).unwrap_or(0),
    };
    if !(1..=10_000).contains(&partitions) {
        return Err(RestError(
            StatusCode::BAD_REQUEST,
            40002,
            format!("Number of partitions must be between 1 and 10000: {partitions}"),
        ));
    }
    let mut config = TopicConfig { partitions, ..TopicConfig::default() };
    for c in body.get("configs").and_then(Value::as_array).into_iter().flatten() {
        let key = c.get("name").and_then(Value::as_str).unwrap_or("");
        let value = c.get("value").and_then(Value::as_str).unwrap_or("");
        if matches!(key, "min.insync.replicas" | "compression.type" | "message.timestamp.type") {
            continue;
        }
        config.set(key, value).map_err(|e| RestError(StatusCode::BAD_REQUEST, 40002, e.to_string()))?;
    }
    let topic = match state.engine.log.create_topic(name, config) {
        Ok(t) => t,
        Err(LogError::TopicExists(_)) => {
            return Err(RestError(StatusCode::BAD_REQUEST, 40002, format!("Topic '{name}' already exists.")))
        }
        Err(e) => return Err(RestError(StatusCode::BAD_REQUEST, 40002, e.to_string())),
    };
    Ok(v3(StatusCode::CREATED, topic_json(&base_url(&headers), &topic)))
}

async fn delete_topic_v3(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, name)): Path<(String, String)>,
) -> Result<Response, RestError> {
    v3_topic(&state, &user, &cluster, &name)?;
    if state.auth_required && !state.engine.users.may_access_topic(&user.0, &name, TopicAccess::Delete) {
        return Err(forbidden(&name));
    }
    match state.engine.log.delete_topic(&name) {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(LogError::UnknownTopic(_)) => Err(topic_not_found_v3(&name)),
        Err(e) => Err(RestError(StatusCode::BAD_REQUEST, 40002, e.to_string())),
    }
}

async fn partitions_v3(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let topic = v3_topic(&state, &user, &cluster, &name)?;
    let base = base_url(&headers);
    let me = format!("{base}/v3/clusters/{CLUSTER_ID}/topics/{name}/partitions");
    let data: Vec<Value> = (0..topic.partitions.len())
        .map(|p| {
            json!({
                "kind": "KafkaPartition",
                "metadata": {
                    "self": format!("{me}/{p}"),
                    "resource_name": format!("crn:///kafka={CLUSTER_ID}/topic={name}/partition={p}"),
                },
                "cluster_id": CLUSTER_ID,
                "topic_name": name,
                "partition_id": p,
                "leader": { "related": format!("{me}/{p}/replicas/{BROKER_ID}") },
                "replicas": { "related": format!("{me}/{p}/replicas") },
                "reassignment": { "related": format!("{me}/{p}/reassignment") },
            })
        })
        .collect();
    Ok(v3(
        StatusCode::OK,
        json!({ "kind": "KafkaPartitionList", "metadata": { "self": me, "next": null }, "data": data }),
    ))
}

/// A v3 key or value: `{"type": "JSON"|"BINARY"|"STRING", "data": ...}`, or in a schema
/// format (`"type": "AVRO"|"JSONSCHEMA"` with `"schema"`, or a `"schema_id"`; `embedded.rs`).
fn v3_data(topic: &str, v: Option<&Value>, what: &str) -> Result<(Option<Vec<u8>>, Value), String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok((None, Value::Null));
    };
    let declared = v.get("type").and_then(Value::as_str).map(str::to_ascii_uppercase);
    let schema_type = match declared.as_deref() {
        Some("AVRO") => Some(crate::registry::SchemaType::Avro),
        Some("JSONSCHEMA") => Some(crate::registry::SchemaType::Json),
        Some("PROTOBUF") => Some(crate::registry::SchemaType::Protobuf),
        _ => None,
    };
    if schema_type.is_some() || (declared.is_none() && v.get("schema_id").is_some()) {
        let (bytes, id) = super::embedded::encode_v3(topic, what, schema_type, v)?;
        let ty = declared.unwrap_or_else(|| "AVRO".into());
        return Ok((Some(bytes.clone()), json!({ "type": ty, "size": bytes.len(), "schema_id": id })));
    }
    let ty = declared.unwrap_or_else(|| "JSON".into());
    let data = v.get("data").unwrap_or(&Value::Null);
    let bytes = match (ty.as_str(), data) {
        (_, Value::Null) => None,
        ("JSON", d) => Some(d.to_string().into_bytes()),
        ("STRING", Value::String(s)) => Some(s.clone().into_bytes()),
        ("BINARY", Value::String(s)) => Some(
            base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("Invalid base64 {what}: {e}"))?,
        ),
        ("STRING" | "BINARY", _) => return Err(format!("a {ty} {what} takes its data as a string")),
        (other, _) => return Err(format!("unknown {what} type {other}")),
    };
    let summary = match &bytes {
        Some(b) => json!({ "type": ty, "size": b.len() }),
        None => Value::Null,
    };
    Ok((bytes, summary))
}

fn fail_v3(code: u32, message: String) -> Value {
    json!({ "error_code": code, "message": message })
}

/// A v3 record read from its JSON: what to append and the answer's key and value summaries,
/// or the answer saying why not.
fn prepare_v3(topic: &str, record: Result<Value, String>) -> Result<(Outgoing, Value, Value), Value> {
    let record = record.map_err(|e| fail_v3(400, format!("Malformed JSON request body: {e}")))?;
    let (key, key_summary) = v3_data(topic, record.get("key"), "key").map_err(|e| fail_v3(400, e))?;
    let (value, value_summary) = v3_data(topic, record.get("value"), "value").map_err(|e| fail_v3(400, e))?;
    let partition = match record.get("partition_id") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            p.as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| fail_v3(400, "partition_id must be an integer".into()))?,
        ),
    };
    let timestamp_ms = match record.get("timestamp").and_then(Value::as_str) {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| fail_v3(400, format!("timestamp {t}: {e}")))?
                .timestamp_millis(),
        ),
        None => None,
    };
    let timestamp_ms = Some(timestamp_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis()));
    Ok((Outgoing { partition, key, value, timestamp_ms }, key_summary, value_summary))
}

/// v3 records that arrived together: appended together (one fsync per partition); one
/// answer each, in order, saying where it went or why not.
async fn produce_v3(state: &HttpState, user: &User, name: &str, records: Vec<Result<Value, String>>) -> Vec<Value> {
    // Before any schema is registered for the topic.
    if let Err(RestError(_, code, message)) = may_write(state, user, name) {
        return records.iter().map(|_| fail_v3(code, message.clone())).collect();
    }
    let prepared: Vec<Result<(Outgoing, Value, Value), Value>> =
        records.into_iter().map(|r| prepare_v3(name, r)).collect();
    if prepared.iter().all(Result::is_err) {
        return prepared.into_iter().filter_map(Result::err).collect();
    }
    let topic = match writable_topic(state, user, name) {
        Ok(t) => t,
        Err(RestError(status, code, message)) => {
            let code = if status == StatusCode::NOT_FOUND { 404 } else { code };
            return prepared.into_iter().map(|p| p.err().unwrap_or_else(|| fail_v3(code, message.clone()))).collect();
        }
    };
    let mut answers: Vec<Option<Value>> = Vec::with_capacity(prepared.len());
    let mut outgoing = Vec::new();
    let mut pending = Vec::new();
    for p in prepared {
        match p {
            Ok((o, key, value)) => {
                pending.push((answers.len(), o.timestamp_ms.unwrap_or(0), key, value));
                outgoing.push(o);
                answers.push(None);
            }
            Err(answer) => answers.push(Some(answer)),
        }
    }
    match append(topic, outgoing).await {
        Ok(placed) => {
            for ((i, ts, key, value), placed) in pending.into_iter().zip(placed) {
                answers[i] = Some(match placed {
                    Ok((p, offset)) => {
                        let timestamp = chrono::DateTime::from_timestamp_millis(ts)
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                            .unwrap_or_default();
                        json!({
                            "error_code": 200,
                            "cluster_id": CLUSTER_ID,
                            "topic_name": name,
                            "partition_id": p,
                            "offset": offset,
                            "timestamp": timestamp,
                            "key": key,
                            "value": value,
                        })
                    }
                    Err((_, e)) => fail_v3(400, e),
                });
            }
        }
        Err(RestError(status, code, m)) => {
            let code = if status == StatusCode::NOT_FOUND { 404 } else { code };
            for (i, ..) in pending {
                answers[i] = Some(fail_v3(code, m.clone()));
            }
        }
    }
    answers.into_iter().map(|a| a.unwrap_or_else(|| fail_v3(500, "no answer from the append".into()))).collect()
}

/// `POST .../records`: one JSON record, or many concatenated on a streamed body; each gets
/// its own answer on the response stream, as it is appended. The HTTP status stays 200.
async fn records_v3(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, name)): Path<(String, String)>,
    request: Request,
) -> Result<Response, RestError> {
    check_cluster(&cluster)?;
    if state.engine.log.topic(&name).is_none() && !state.broker.config.auto_create_topics {
        return Err(topic_not_found_v3(&name));
    }
    let limit = state.config.max_body_bytes;
    let mut body = request.into_body().into_data_stream();
    let (mut tx, answer) = super::streamed_answer(16, state.config.write_timeout);
    tokio::spawn(async move {
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = body.next().await;
            let mut ended = !matches!(chunk, Some(Ok(_)));
            let mut may_complete = ended;
            if let Some(Ok(bytes)) = chunk {
                // A record is a JSON object: none completes in bytes without a `}`, so a
                // large record arriving in pieces is not parsed again for each piece.
                may_complete = bytes.contains(&b'}');
                pending.extend_from_slice(&bytes);
            }
            // What else has arrived meanwhile (while the last records were being made
            // durable) joins them: one append, one fsync, for every record at hand.
            while !ended && pending.len() <= limit.min(MAX_STREAM_STEP_BYTES) {
                match body.next().now_or_never() {
                    None => break,
                    Some(Some(Ok(bytes))) => {
                        may_complete |= bytes.contains(&b'}');
                        pending.extend_from_slice(&bytes);
                    }
                    Some(_) => {
                        ended = true;
                        may_complete = true;
                    }
                }
            }
            if !may_complete && pending.len() <= limit {
                continue;
            }
            // Every whole JSON value so far, in order.
            let mut consumed = 0;
            let mut records = Vec::new();
            {
                let mut stream = serde_json::Deserializer::from_slice(&pending).into_iter::<Value>();
                loop {
                    match stream.next() {
                        Some(Ok(v)) => {
                            consumed = stream.byte_offset();
                            records.push(Ok(v));
                        }
                        Some(Err(e)) if e.is_eof() && !ended => break,
                        Some(Err(e)) => {
                            records.push(Err(e.to_string()));
                            consumed = pending.len();
                            break;
                        }
                        None => break,
                    }
                }
            }
            pending.drain(..consumed);
            if !records.is_empty() {
                let mut out = String::new();
                for answer in produce_v3(&state, &user, &name, records).await {
                    out.push_str(&answer.to_string());
                    out.push('\n');
                }
                if !tx.send(Bytes::from(out)).await {
                    return;
                }
            }
            if pending.len() > limit {
                let answer = json!({ "error_code": 413, "message": format!("a record passes the request limit of {limit} bytes") });
                tx.send(Bytes::from(format!("{answer}\n"))).await;
                return;
            }
            if ended {
                return;
            }
        }
    });
    let mut response = Response::new(answer);
    response.headers_mut().insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static(V3));
    Ok(response)
}

/// `POST .../records:batch`: `{"entries": [{"id", ...record}]}`, appended together; 207 with
/// each entry's answer under `successes` or `failures`, by its id.
async fn records_batch_v3(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, RestError> {
    check_cluster(&cluster)?;
    if state.engine.log.topic(&name).is_none() && !state.broker.config.auto_create_topics {
        return Err(topic_not_found_v3(&name));
    }
    let body: Value = serde_json::from_slice(&body).map_err(bad_json)?;
    let entries = body
        .get("entries")
        .and_then(Value::as_array)
        .ok_or_else(|| RestError(StatusCode::BAD_REQUEST, 400, "the request body needs an \"entries\" array".into()))?;
    if entries.len() > MAX_BATCH_ENTRIES {
        return Err(RestError(
            StatusCode::PAYLOAD_TOO_LARGE,
            41301,
            format!("a batch carries at most {MAX_BATCH_ENTRIES} entries"),
        ));
    }
    let mut ids = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::new();
    for e in entries {
        let id = match e.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(RestError(StatusCode::BAD_REQUEST, 400, "every entry needs an \"id\"".into())),
        };
        if !seen.insert(id.clone()) {
            return Err(RestError(StatusCode::BAD_REQUEST, 400, format!("the entry id {id} appears twice")));
        }
        ids.push(id);
    }
    let answers = produce_v3(&state, &user, &name, entries.iter().cloned().map(Ok).collect()).await;
    let (mut successes, mut failures) = (Vec::new(), Vec::new());
    for (id, mut answer) in ids.into_iter().zip(answers) {
        let ok = answer.get("error_code").and_then(Value::as_u64) == Some(200);
        if let Some(obj) = answer.as_object_mut() {
            obj.insert("id".into(), Value::String(id));
            if ok {
                obj.remove("error_code");
            }
        }
        if ok {
            successes.push(answer);
        } else {
            failures.push(answer);
        }
    }
    Ok(v3(StatusCode::MULTI_STATUS, json!({ "successes": successes, "failures": failures })))
}
