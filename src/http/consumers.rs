//! The REST Proxy's v2 consumer instances (`/consumers/{group}/instances/{name}/...`):
//! create, subscribe (topics or a pattern) or assign, `GET records`, commit and read
//! offsets, seek, delete. Shapes and error codes follow confluentinc/kafka-rest.
//!
//! An instance that subscribes is a real member of its Kafka consumer group: a task joins
//! the group through the broker's coordinator with the `range` and `roundrobin` protocols,
//! assigns the partitions when it leads, and heartbeats, so a librdkafka consumer in the same
//! group shares the partitions with it. Positions are the instance's own; committed offsets
//! are the group's, in the same store Kafka's OffsetCommit writes. Before it rejoins (a
//! rebalance) an auto-committing instance commits what it has returned, as Kafka's consumer
//! does. Instances idle past `--http-consumer-idle-ms` are closed (later calls get 40403).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::rest_proxy::{bad_json, base_url, forbidden, RestError, V2};
use super::{json_response, HttpState, User};
use crate::auth::TopicAccess;
use crate::kafka::consumer_protocol::{assign, decode_assignment, encode_subscription};
use crate::kafka::error::{MEMBER_ID_REQUIRED, NONE, UNKNOWN_MEMBER_ID};
use crate::kafka::group::{commit_offsets, committed_offset, JoinRequest};
use crate::kafka::Broker;

/// How often a subscribed instance heartbeats (the group notices a rebalance this fast).
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How often an auto-committing member commits what it returned (Kafka's
/// `auto.commit.interval.ms` default).
const AUTO_COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// The session timeout an instance joins with (Kafka's `session.timeout.ms` default).
const SESSION_TIMEOUT: Duration = Duration::from_secs(45);
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(60);
/// `GET records` waits this long for data unless `timeout` says otherwise
/// (kafka-rest's `consumer.request.timeout.ms`), and never longer than the cap.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(1000);
const MAX_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of records one `GET records` returns (kafka-rest's `consumer.request.max.bytes`).
const DEFAULT_MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Binary,
    Json,
    Avro,
    JsonSchema,
    Protobuf,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Binary => "binary",
            Format::Json => "json",
            Format::Avro => "avro",
            Format::JsonSchema => "jsonschema",
            Format::Protobuf => "protobuf",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Binary => "application/vnd.kafka.binary.v2+json",
            Format::Json => "application/vnd.kafka.json.v2+json",
            Format::Avro => "application/vnd.kafka.avro.v2+json",
            Format::JsonSchema => "application/vnd.kafka.jsonschema.v2+json",
            Format::Protobuf => "application/vnd.kafka.protobuf.v2+json",
        }
    }
}

/// What an instance reads: nothing yet, a group subscription, or partitions it assigned itself.
#[derive(Debug, Clone, Default)]
enum Source {
    #[default]
    Nothing,
    Topics(Vec<String>),
    Pattern(regex::Regex),
    Assigned,
}

#[derive(Default)]
struct Consumer {
    source: Source,
    /// The group membership task of a subscribed instance.
    member: Option<JoinHandle<()>>,
    member_id: String,
    generation: i32,
    /// The partitions it reads now (the group's assignment, or its own).
    assigned: Vec<(String, i32)>,
    /// The next offset to return, per partition.
    positions: BTreeMap<(String, i32), i64>,
    /// Where the next read starts among `assigned`, so one busy partition does not starve the rest.
    cursor: usize,
}

pub struct Instance {
    group: String,
    name: String,
    /// The user who created it: only they (or a superuser) may use it.
    owner: String,
    /// Set when the instance is closed, so a subscribe racing the close starts no member.
    closed: std::sync::atomic::AtomicBool,
    format: Format,
    auto_commit: bool,
    reset_to_earliest: bool,
    last_used: std::sync::Mutex<Instant>,
    consumer: tokio::sync::Mutex<Consumer>,
}

impl Instance {
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }
}

/// Every consumer instance, by (group, name).
#[derive(Default)]
pub struct Consumers {
    instances: std::sync::Mutex<HashMap<(String, String), Arc<Instance>>>,
    next: AtomicU64,
}

impl Consumers {
    /// The instance, if `user` may use it (others are told it does not exist).
    fn get(&self, state: &HttpState, user: &User, group: &str, name: &str) -> Result<Arc<Instance>, RestError> {
        let instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        let instance = instances.get(&(group.to_string(), name.to_string())).cloned().ok_or_else(not_found)?;
        if state.auth_required && instance.owner != user.0 && !state.engine.users.is_superuser(&user.0) {
            return Err(not_found());
        }
        instance.touch();
        Ok(instance)
    }

    fn remove(&self, group: &str, name: &str) -> Option<Arc<Instance>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner()).remove(&(group.to_string(), name.to_string()))
    }
}

pub fn routes() -> Router<Arc<HttpState>> {
    let base = "/consumers/{group}/instances/{name}";
    Router::new()
        .route("/consumers/{group}", post(create))
        .route(base, delete(destroy))
        .route(&format!("{base}/subscription"), post(subscribe).get(subscription).delete(unsubscribe))
        .route(&format!("{base}/assignments"), post(assign_partitions).get(assignments))
        .route(&format!("{base}/records"), get(records))
        .route(&format!("{base}/offsets"), post(commit).get(committed))
        .route(&format!("{base}/positions"), post(seek))
        .route(&format!("{base}/positions/beginning"), post(seek_to_beginning))
        .route(&format!("{base}/positions/end"), post(seek_to_end))
}

fn not_found() -> RestError {
    RestError(StatusCode::NOT_FOUND, 40403, "Consumer instance not found.".into())
}

fn unprocessable(message: impl Into<String>) -> RestError {
    RestError(StatusCode::UNPROCESSABLE_ENTITY, 42204, message.into())
}

fn kafka_error(message: impl std::fmt::Display) -> RestError {
    RestError(StatusCode::INTERNAL_SERVER_ERROR, 50002, format!("Kafka error: {message}"))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn v2(body: Value) -> Response {
    json_response(StatusCode::OK, V2, &body)
}

/// A JSON body, or `Value::Null` for an empty one (some calls take either).
fn body_json(body: &[u8]) -> Result<Value, RestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(bad_json)
}

fn string_setting(body: &Value, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

async fn create(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RestError> {
    let body = body_json(&body)?;
    let format = match string_setting(&body, "format").as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("binary") => Format::Binary,
        Some("json") => Format::Json,
        Some("avro") => Format::Avro,
        Some("jsonschema") => Format::JsonSchema,
        Some("protobuf") => Format::Protobuf,
        Some(other) => {
            return Err(unprocessable(format!(
                "Invalid format type: {other}; this server's consumers read binary, json, avro, protobuf or jsonschema"
            )))
        }
    };
    let reset_to_earliest = match string_setting(&body, "auto.offset.reset").as_deref() {
        None | Some("latest") => false,
        Some("earliest" | "smallest") => true,
        Some(other) => {
            return Err(unprocessable(format!(
                "Invalid value {other} for configuration auto.offset.reset: String must be one of: latest, earliest"
            )))
        }
    };
    let auto_commit = match string_setting(&body, "auto.commit.enable").as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(unprocessable(format!("Invalid value {other} for configuration auto.commit.enable")))
        }
    };
    let name = match string_setting(&body, "name").or_else(|| string_setting(&body, "id")) {
        Some(n) if !n.is_empty() => n,
        _ => format!("rest-consumer-{}-{:x}", state.consumers.next.fetch_add(1, Ordering::Relaxed), nanos()),
    };
    if name.len() > 255 || group.is_empty() || group.len() > 255 {
        return Err(unprocessable("consumer group and instance names are 1 to 255 characters"));
    }
    let instance = Arc::new(Instance {
        group: group.clone(),
        name: name.clone(),
        owner: user.0.clone(),
        closed: Default::default(),
        format,
        auto_commit,
        reset_to_earliest,
        last_used: std::sync::Mutex::new(Instant::now()),
        consumer: Default::default(),
    });
    {
        let mut instances = state.consumers.instances.lock().unwrap_or_else(|p| p.into_inner());
        if instances.contains_key(&(group.clone(), name.clone())) {
            return Err(RestError(
                StatusCode::CONFLICT,
                40902,
                "Consumer with specified consumer ID already exists in the specified consumer group.".into(),
            ));
        }
        if instances.len() >= state.config.max_consumers {
            return Err(RestError(
                StatusCode::TOO_MANY_REQUESTS,
                42901,
                format!(
                    "too many consumer instances: this server allows {} (--http-max-consumers); delete idle ones",
                    state.config.max_consumers
                ),
            ));
        }
        instances.insert((group.clone(), name.clone()), instance);
    }
    let base_uri = format!("{}/consumers/{group}/instances/{name}", base_url(&headers));
    Ok(v2(json!({ "instance_id": name, "base_uri": base_uri })))
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Commits (auto-commit) and leaves the group, then forgets the instance.
async fn close(broker: &Broker, instance: &Instance) {
    let mut c = instance.consumer.lock().await;
    instance.closed.store(true, Ordering::SeqCst);
    if instance.auto_commit {
        let _ = commit_positions(broker, instance, &c).await;
    }
    stop_membership(broker, instance, &mut c).await;
}

async fn stop_membership(broker: &Broker, instance: &Instance, c: &mut Consumer) {
    if let Some(task) = c.member.take() {
        task.abort();
        let _ = task.await;
    }
    if !c.member_id.is_empty() {
        broker.coordinator.leave(&instance.group, std::slice::from_ref(&c.member_id)).await;
        c.member_id.clear();
    }
    c.assigned.clear();
    c.positions.clear();
}

/// Closes instances idle past the timeout; runs for the server's life.
pub async fn expire_idle(state: Arc<HttpState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let idle = state.config.consumer_idle_timeout;
        let expired: Vec<Arc<Instance>> = {
            let mut instances = state.consumers.instances.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<(String, String)> =
                instances.iter().filter(|(_, i)| i.idle_for() >= idle).map(|(k, _)| k.clone()).collect();
            keys.iter().filter_map(|k| instances.remove(k)).collect()
        };
        for instance in expired {
            tracing::info!(group = %instance.group, instance = %instance.name, "closing an idle REST Proxy consumer");
            close(&state.broker, &instance).await;
        }
    }
}

async fn destroy(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((group, name)): Path<(String, String)>,
) -> Result<Response, RestError> {
    state.consumers.get(&state, &user, &group, &name)?;
    let instance = state.consumers.remove(&group, &name).ok_or_else(not_found)?;
    close(&state.broker, &instance).await;
    Ok(no_content())
}

fn may_read(state: &HttpState, user: &User, topic: &str) -> Result<(), RestError> {
    if state.auth_required && !state.engine.users.may_access_topic(&user.0, topic, TopicAccess::Read) {
        return Err(forbidden(topic));
    }
    Ok(())
}

async fn subscribe(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((group, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, RestError> {
    let instance = state.consumers.get(&state, &user, &group, &name)?;
    let body = body_json(&body)?;
    let topics: Option<Vec<String>> = body
        .get("topics")
        .and_then(Value::as_array)
        .map(|ts| ts.iter().filter_map(|t| t.as_str().map(str::to_string)).collect());
    let pattern = body.get("topic_pattern").and_then(Value::as_str);
    let source = match (topics, pattern) {
        (Some(topics), None) if !topics.is_empty() => {
            for t in &topics {
                may_read(&state, &user, t)?;
            }
            Source::Topics(topics)
        }
        (None, Some(p)) => {
            // Kafka matches the whole topic name.
            let re = regex::Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| unprocessable(format!("Invalid topic_pattern {p}: {e}")))?;
            Source::Pattern(re)
        }
        _ => {
            return Err(unprocessable(
                "A subscription names either \"topics\" (a non-empty list) or \"topic_pattern\", not both",
            ))
        }
    };
    let mut c = instance.consumer.lock().await;
    if matches!(c.source, Source::Assigned) {
        return Err(RestError(
            StatusCode::CONFLICT,
            40903,
            "Illegal state: Subscription to topics, partitions and pattern are mutually exclusive".into(),
        ));
    }
    if instance.auto_commit {
        let _ = commit_positions(&state.broker, &instance, &c).await;
    }
    stop_membership(&state.broker, &instance, &mut c).await;
    if instance.closed.load(Ordering::SeqCst) {
        return Err(not_found());
    }
    c.source = source;
    let task = tokio::spawn(membership(state.clone(), instance.clone(), user));
    c.member = Some(task);
    Ok(no_content())
}

async fn subscription(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((group, name)): Path<(String, String)>,
) -> Result<Response, RestError> {
    let instance = state.consumers.get(&state, &user, &group, &name)?;
    let c = instance.consumer.lock().await;
    let topics = subscribed_topics(&state, &c.source, None);
    Ok(v2(json!({ "topics": topics })))
}

async fn unsubscribe(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((group, name)): Path<(String, String)>,
) -> Result<Response, RestError> {
    let instance = state.consumers.get(&state, &user, &group, &name)?;
    let mut c = instance.consumer.lock().await;
    if instance.auto_commit {
        let _ = commit_positions(&state.broker, &instance, &c).await;
    }
    stop_membership(&state.broker, &instance, &mut c).await;
    c.source = Source::Nothing;
    Ok(no_content())
}

/// The topics a subscription stands for now (a pattern's, among those `user` may read).
fn subscribed_topics(state: &HttpState, source: &Source, user: Option<&User>) -> Vec<String> {
    match source {
        Source::Topics(ts) => ts.clone(),
        Source::Pattern(re) => {
            let mut ts: Vec<String> = state
                .engine
                .log
                .topics()
                .iter()
                .map(|t| t.name.clone())
                .filter(|t| re.is_match(t))
                .filter(|t| user.is_none_or(|u| may_read(state, u, t).is_ok()))
                .collect();
            ts.sort();
            ts
        }
        Source::Nothing | Source::Assigned => Vec::new(),
    }
}

/// A subscribed instance's life in its group: join, assign when leading, sync, heartbeat;
/// again after every rebalance. Aborted when the instance unsubscribes or closes.
async fn membership(state: Arc<HttpState>, instance: Arc<Instance>, user: User) {
    let broker = state.broker.clone();
    let group = instance.group.clone();
    loop {
        // Eager rebalancing: give up the assignment before rejoining, committing what was
        // returned when auto-committing, so the partitions' next owner starts after it.
        let (member_id, topics) = {
            let mut c = instance.consumer.lock().await;
            if instance.auto_commit {
                if let Err(e) = commit_positions(&broker, &instance, &c).await {
                    tracing::warn!(%group, instance = %instance.name, "auto-commit before a rebalance: {e}");
                }
            }
            c.assigned.clear();
            (c.member_id.clone(), subscribed_topics(&state, &c.source, Some(&user)))
        };
        let meta = encode_subscription(&topics);
        let joined = broker
            .coordinator
            .join(JoinRequest {
                group_id: group.clone(),
                member_id,
                client_id: format!("rest-proxy-{}", instance.name),
                client_host: "/127.0.0.1".into(),
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), meta.clone()), ("roundrobin".into(), meta)],
                session_timeout: SESSION_TIMEOUT,
                rebalance_timeout: REBALANCE_TIMEOUT,
                // A first join only hands out the member id, so the instance knows it
                // (to leave the group) before it waits for the rebalance.
                require_known_member_id: true,
            })
            .await;
        if joined.error != NONE {
            if joined.error == MEMBER_ID_REQUIRED {
                instance.consumer.lock().await.member_id = joined.member_id;
            } else if joined.error == UNKNOWN_MEMBER_ID {
                instance.consumer.lock().await.member_id.clear();
            } else {
                tracing::warn!(%group, instance = %instance.name, code = joined.error, "joining the consumer group failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            continue;
        }
        instance.consumer.lock().await.member_id = joined.member_id.clone();
        let assignments = if joined.leader == joined.member_id {
            let log = state.engine.log.clone();
            assign(joined.protocol.as_deref(), &joined.members, |t| {
                log.topic(t).map(|topic| topic.partitions.len() as i32)
            })
        } else {
            Vec::new()
        };
        let (code, bytes) = broker.coordinator.sync(&group, joined.generation, &joined.member_id, assignments).await;
        if code != NONE {
            continue;
        }
        let mine = match decode_assignment(&bytes) {
            Ok(mine) => mine,
            Err(e) => {
                tracing::warn!(%group, instance = %instance.name, "the group leader's assignment does not decode: {e}");
                Vec::new()
            }
        };
        {
            let mut c = instance.consumer.lock().await;
            c.generation = joined.generation;
            c.positions.retain(|tp, _| mine.contains(tp));
            c.assigned = mine;
            c.cursor = 0;
        }
        // Heartbeat until the group rebalances (or a pattern comes to match other topics);
        // auto-commit every AUTO_COMMIT_INTERVAL meanwhile, as Kafka's consumer does.
        let mut last_commit = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let code = broker.coordinator.heartbeat(&group, joined.generation, &joined.member_id).await;
            if code == UNKNOWN_MEMBER_ID {
                // Out of the group: its partitions may be another member's already.
                let mut c = instance.consumer.lock().await;
                c.member_id.clear();
                c.positions.clear();
                c.assigned.clear();
                break;
            }
            if instance.auto_commit && code == NONE && last_commit.elapsed() >= AUTO_COMMIT_INTERVAL {
                last_commit = tokio::time::Instant::now();
                let c = instance.consumer.lock().await;
                if let Err(e) = commit_positions(&broker, &instance, &c).await {
                    tracing::debug!(%group, instance = %instance.name, "auto-commit: {e}");
                }
            }
            if code != NONE {
                break;
            }
            let c = instance.consumer.lock().await;
            if matches!(c.source, Source::Pattern(_)) && subscribed_topics(&state, &c.source, Some(&user)) != topics {
                break;
            }
        }
    }
}

/// Commits every assigned partition's position (the next offset to read).
async fn commit_positions(broker: &Broker, instance: &Instance, c: &Consumer) -> Result<(), String> {
    let offsets: Vec<(String, i32, i64, Option<String>)> =
        c.assigned.iter().filter_map(|tp| c.positions.get(tp).map(|o| (tp.0.clone(), tp.1, *o, None))).collect();
    check_generation(broker, instance, c).await?;
    commit_offsets(&broker.store, &instance.group, &offsets).await
}

/// A subscribed instance commits only as a member of the group's current generation.
async fn check_generation(broker: &Broker, instance: &Instance, c: &Consumer) -> Result<(), String> {
    if !matches!(c.source, Source::Topics(_) | Source::Pattern(_)) {
        return Ok(());
    }
    match broker.coordinator.check_commit(&instance.group, c.generation, &c.member_id).await {
        NONE => Ok(()),
        code => Err(format!(
            "Commit cannot be completed since the group has already rebalanced and assigned the partitions to another member (error {code})"
        )),
    }
}

/// One entry of a request's list: topic, partition, and the offset and metadata if given.
type Entry = (String, i32, Option<i64>, Option<String>);

fn topic_partitions(body: &Value, field: &str) -> Result<Vec<Entry>, RestError> {
    let items = body.get(field).and_then(Value::as_array).ok_or_else(|| {
        unprocessable(format!("the request body needs a \"{field}\" array of {{\"topic\", \"partition\"}}"))
    })?;
    items
        .iter()
        .map(|i| {
            let topic =
                i.get("topic").and_then(Value::as_str).ok_or_else(|| unprocessable("each entry needs a \"topic\""))?;
            let partition = i
                .get("partition")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| unprocessable("each entry needs a \"partition\" number"))?;
            let offset = i.get("offset").and_then(Value::as_i64);
            let metadata = i.get("metadata").and_then(Value::as_str).map(str::to_string);
            Ok((topic.to_string(), partition, offset, metadata))
        })
        .collect()
}

fn check_partition(state: &HttpState, topic: &str, partition: i32) -> Result<(), RestError> {
    let t = state
        .engine
        .log
        .topic(topic)
        .ok_or_else(|| RestError(StatusCode::NOT_FOUND, 40401, format!("Topic {topic} not found.")))?;
    if partition < 0 || partition as usize >= t.partitions.len() {
        return Err(RestError(StatusCode::NOT_FOUND, 40402, format!("Partition {partition} of {topic} not found.")));
    }
    Ok(())
}

async fn assign_partitions(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((group, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, RestError> {
    let instance = state.consumers.get(&state, &user, &group, &name)?;
    let body = body_json(&body)?;
    let mut partitions = Vec::new();
    for (topic, partition, _, _) in topic_partitions(&body, "partitions")? {
        may_read(&state, &user, &topic)?;
        check_partition(&state, &topic, partition)?;
        partitions.push((topic, partition));
    }
    partitions.sort();
    partitions.dedup();
    let mut c = instance.consumer.lock().await;
    if matches!(c.source, Source::Topics(_) | Source::Pattern(_)) {
        return Err(RestError(
            StatusCode::CONFLICT,
            40903,
            "Illegal state: Subscription to topics, partitions and pattern are mutually exclusive".into(),
        ));
    }
    c.positions.retain(|tp, _| partitions.contains(tp));
    c.assigned = partitions.clone();
    c.source = if partitions.is_empty() { Source::Nothing } else { Source::Assigned };
    Ok(no_content())
}

async fn assignments(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((group, name)): Path<(String, String)>,
) -> Result<Response, RestError> {
    let instance = state.consumers.get(&state, &user, &group, &name)?;
    let c = instance.consumer.lock().await;
    let partitions: Vec<Value> = c.assigned.iter().map(|(t, p)| json!({ "topic": t, "partition": p })).collect();
    Ok(v2(json!({ "partitions": partitions })))
}

async fn commit(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((group, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, RestError> {
    let instance = state.consumers.get(&state, &user, &group, &name)?;
    let body = body_json(&body)?;
    let c = instance.consumer.lock().await;
    if body.is_null() || body.get("offsets").is_none() {
        // No offsets: everything returned so far.
        commit_positions(&state.broker, &instance, &c).await.map_err(kafka_error)?;
        return Ok(no_content());
    }
    // The offsets given are of the last records processed; the group stores the next one.
    let mut offsets = Vec::new();
    for (topic, partition, offset, metadata) in topic_partitions(&body, "offsets")? {
        let offset = offset.ok_or_else(|| unprocessable("each offset needs an \"offset\" number"))?;
        offsets.push((topic, partition, offset.saturating_add(1), metadata));
    }
    check_generation(&state.broker, &instance, &c).await.map_err(kafka_error)?;
    commit_offsets(&state.broker.store, &group, &offsets).await.map_err(kafka_error)?;
    Ok(no_content())
}

async fn committed(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((group, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, RestError> {
    state.consumers.get(&state, &user, &group, &name)?;
    let body = body_json(&body)?;
    let mut out = Vec::new();
    for (topic, partition, _, _) in topic_partitions(&body, "partitions")? {
        if let Some((offset, metadata)) = committed_offset(&state.broker.store, &group, &topic, partition) {
            out.push(json!({ "topic": topic, "partition": partition, "offset": offset, "metadata": metadata }));
        }
    }
    Ok(v2(json!({ "offsets": out })))
}

async fn seek(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((group, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, RestError> {
    let instance = state.consumers.get(&state, &user, &group, &name)?;
    let body = body_json(&body)?;
    let targets = topic_partitions(&body, "offsets")?;
    let mut c = instance.consumer.lock().await;
    for (topic, partition, offset, _) in targets {
        let offset = offset.ok_or_else(|| unprocessable("each position needs an \"offset\" number"))?;
        seek_one(&mut c, topic, partition, offset)?;
    }
    Ok(no_content())
}

fn seek_one(c: &mut Consumer, topic: String, partition: i32, offset: i64) -> Result<(), RestError> {
    let tp = (topic, partition);
    if !c.assigned.contains(&tp) {
        return Err(RestError(
            StatusCode::CONFLICT,
            40903,
            format!("Illegal state: No current assignment for partition {}-{}", tp.0, tp.1),
        ));
    }
    c.positions.insert(tp, offset.max(0));
    Ok(())
}

async fn seek_to_beginning(
    state: State<Arc<HttpState>>,
    user: Extension<User>,
    path: Path<(String, String)>,
    body: Bytes,
) -> Result<Response, RestError> {
    seek_to_end_or_beginning(state, user, path, body, false).await
}

async fn seek_to_end(
    state: State<Arc<HttpState>>,
    user: Extension<User>,
    path: Path<(String, String)>,
    body: Bytes,
) -> Result<Response, RestError> {
    seek_to_end_or_beginning(state, user, path, body, true).await
}

async fn seek_to_end_or_beginning(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((group, name)): Path<(String, String)>,
    body: Bytes,
    end: bool,
) -> Result<Response, RestError> {
    let instance = state.consumers.get(&state, &user, &group, &name)?;
    let body = body_json(&body)?;
    let targets = topic_partitions(&body, "partitions")?;
    let mut c = instance.consumer.lock().await;
    for (topic, partition, _, _) in targets {
        let p = state.engine.log.partition(&topic, partition).map_err(|e| kafka_error(e.to_string()))?;
        let offset = if end { p.high_watermark() } else { p.log_start_offset() };
        seek_one(&mut c, topic, partition, offset)?;
    }
    Ok(no_content())
}

#[derive(serde::Deserialize)]
struct ReadParams {
    timeout: Option<u64>,
    max_bytes: Option<usize>,
}

async fn records(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((group, name)): Path<(String, String)>,
    Query(params): Query<ReadParams>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let instance = state.consumers.get(&state, &user, &group, &name)?;
    // The Accept header must name the instance's format (any type, or none, takes it).
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("*/*").to_ascii_lowercase();
    let asks_other = accept.contains("application/vnd.kafka.") && !accept.contains(instance.format.content_type());
    if asks_other {
        return Err(RestError(
            StatusCode::NOT_ACCEPTABLE,
            40601,
            format!(
                "The requested embedded data format does not match the deserializer for this consumer instance (it reads {})",
                instance.format.name()
            ),
        ));
    }
    let timeout = params.timeout.map_or(DEFAULT_READ_TIMEOUT, Duration::from_millis).min(MAX_READ_TIMEOUT);
    let max_bytes = params.max_bytes.unwrap_or(DEFAULT_MAX_BYTES).clamp(1, DEFAULT_MAX_BYTES);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = state.broker.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let out = {
            let mut c = instance.consumer.lock().await;
            if matches!(c.source, Source::Nothing) {
                return Err(RestError(
                    StatusCode::CONFLICT,
                    40903,
                    "Illegal state: Consumer is not subscribed to any topics or assigned any partitions".into(),
                ));
            }
            read(&state, &instance, &mut c, max_bytes)?
        };
        let now = tokio::time::Instant::now();
        if !out.is_empty() || now >= deadline {
            instance.touch();
            return Ok(json_response(StatusCode::OK, instance.format.content_type(), &Value::Array(out)));
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

/// Records from the assigned partitions at their positions, up to about `max_bytes`;
/// advances the positions past what it returns.
fn read(state: &HttpState, instance: &Instance, c: &mut Consumer, max_bytes: usize) -> Result<Vec<Value>, RestError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let n = c.assigned.len();
    for i in 0..n {
        if bytes >= max_bytes {
            break;
        }
        let tp = c.assigned[(c.cursor + i) % n].clone();
        // A group leader may assign any topic; only what the owner may read is read.
        if state.auth_required && !state.engine.users.may_access_topic(&instance.owner, &tp.0, TopicAccess::Read) {
            continue;
        }
        let Ok(p) = state.engine.log.partition(&tp.0, tp.1) else { continue };
        let (start, end) = (p.log_start_offset(), p.high_watermark());
        let position = match c.positions.get(&tp) {
            Some(&o) if (start..=end).contains(&o) => o,
            // A new partition starts at the group's committed offset; one whose position fell
            // out of the log resets as `auto.offset.reset` says.
            stale => match committed_offset(&state.broker.store, &instance.group, &tp.0, tp.1) {
                Some((o, _)) if stale.is_none() && (start..=end).contains(&o) => o,
                _ if instance.reset_to_earliest => start,
                _ => end,
            },
        };
        c.positions.insert(tp.clone(), position);
        if position >= end {
            continue;
        }
        // An error after other partitions gave records returns those (their positions moved).
        let read = match p.read(position, (max_bytes - bytes).max(1)) {
            Ok(read) => read,
            Err(e) if out.is_empty() => return Err(kafka_error(e.to_string())),
            Err(_) => break,
        };
        let mut next = position;
        for (header, batch) in crate::log::batch::batches_in(&read.bytes) {
            let decoded = match crate::format::decode_batch(batch) {
                Ok(d) => d,
                Err(e) if out.is_empty() && next == position => return Err(kafka_error(e)),
                Err(_) => {
                    c.positions.insert(tp, next);
                    c.cursor = (c.cursor + 1) % n.max(1);
                    return Ok(out);
                }
            };
            for r in decoded {
                if r.offset < next {
                    continue;
                }
                let record = match to_json(instance.format, &tp, &r) {
                    Ok(v) => v,
                    // Stop before a record the format cannot show: what came before is
                    // returned, the next read reports it (a seek moves past it).
                    Err(e) if out.is_empty() => return Err(kafka_error(e)),
                    Err(_) => {
                        c.positions.insert(tp, next);
                        c.cursor = (c.cursor + 1) % n.max(1);
                        return Ok(out);
                    }
                };
                bytes += r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len);
                out.push(record);
                next = r.offset + 1;
            }
            // Batches emptied by compaction (or control batches) still move the position.
            next = next.max(header.last_offset() + 1);
        }
        c.positions.insert(tp, next);
    }
    c.cursor = (c.cursor + 1) % n.max(1);
    Ok(out)
}

/// One record as the instance's format shows it.
fn to_json(format: Format, tp: &(String, i32), r: &crate::log::LogRecord) -> Result<Value, String> {
    let show = |bytes: &Option<Vec<u8>>, what: &str| -> Result<Value, String> {
        let Some(b) = bytes else { return Ok(Value::Null) };
        let shown = match format {
            Format::Binary => Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(b))),
            Format::Json => serde_json::from_slice(b).map_err(|e| e.to_string()),
            Format::JsonSchema => crate::format::avro::unframe(b)
                .and_then(|(_, body)| serde_json::from_slice(body).map_err(|e| e.to_string())),
            Format::Avro => crate::format::avro::framed_to_json(b),
            Format::Protobuf => protobuf_to_json(b),
        };
        shown.map_err(|e| {
            format!(
                "the {what} at {}-{} offset {} does not deserialize as {}: {e}",
                tp.0,
                tp.1,
                r.offset,
                format.name()
            )
        })
    };
    Ok(json!({
        "topic": tp.0,
        "key": show(&r.key, "key")?,
        "value": show(&r.value, "value")?,
        "partition": tp.1,
        "offset": r.offset,
    }))
}

/// A framed Protobuf value as proto3's JSON mapping, read with its writer schema's message.
fn protobuf_to_json(value: &[u8]) -> Result<Value, String> {
    let (id, indexes, body) = crate::format::protobuf::unframe(value)?;
    let registry = crate::registry::global().ok_or("no Schema Registry")?;
    let compiled = registry.protobuf(id).map_err(|e| format!("schema id {id}: {}", e.message))?;
    let desc = compiled.message(&indexes)?;
    crate::format::protobuf::message_to_json(&desc, body)
}
