//! The REST Proxy's v3 administration beside topics: a topic's configs (list, get, set,
//! reset, `configs:alter` in a batch) and consumer groups (list, get, members and their
//! assignments, lag per partition and its summary). Shapes follow confluentinc/kafka-rest's
//! v3 entities; settings change through the log's AlterConfigs path, groups are the broker's
//! coordinator's and the offsets Kafka's OffsetCommit stored.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{json, Value};

use super::rest_proxy::{bad_json, base_url, check_cluster, may_see, v3, v3_topic, RestError, CLUSTER_ID};
use super::{HttpState, User};
use crate::auth::TopicAccess;
use crate::kafka::consumer_protocol::decode_assignment;
use crate::log::{LogError, TopicConfig};
use crate::state::CATALOG_CF;

/// Most committed-offset entries one group listing reads.
const MAX_OFFSET_BYTES: usize = 64 << 20;

pub fn routes() -> Router<Arc<HttpState>> {
    let topic = "/v3/clusters/{cluster}/topics/{topic}";
    let group = "/v3/clusters/{cluster}/consumer-groups/{group}";
    Router::new()
        .route(&format!("{topic}/configs"), get(topic_configs))
        .route(&format!("{topic}/configs:alter"), post(alter_configs))
        .route(&format!("{topic}/configs/{{name}}"), get(topic_config).put(set_config).delete(reset_config))
        .route("/v3/clusters/{cluster}/consumer-groups", get(groups))
        .route(group, get(group_v3))
        .route(&format!("{group}/consumers"), get(consumers))
        .route(&format!("{group}/consumers/{{consumer}}"), get(consumer))
        .route(&format!("{group}/consumers/{{consumer}}/assignments"), get(consumer_assignments))
        .route(&format!("{group}/lags"), get(lags))
        .route(&format!("{group}/lag-summary"), get(lag_summary))
}

// ---- topic configs ----

fn config_json(base: &str, topic: &str, name: &str, value: &str) -> Value {
    let defaults = TopicConfig::default().entries();
    let is_default = defaults.iter().any(|(k, v)| *k == name && v == value);
    let me = format!("{base}/v3/clusters/{CLUSTER_ID}/topics/{topic}/configs/{name}");
    json!({
        "kind": "KafkaTopicConfig",
        "metadata": { "self": me, "resource_name": format!("crn:///kafka={CLUSTER_ID}/topic={topic}/config={name}") },
        "cluster_id": CLUSTER_ID,
        "topic_name": topic,
        "name": name,
        "value": value,
        "is_default": is_default,
        "is_read_only": false,
        "is_sensitive": false,
        "source": if is_default { "DEFAULT_CONFIG" } else { "DYNAMIC_TOPIC_CONFIG" },
        "synonyms": [],
    })
}

async fn topic_configs(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let topic = v3_topic(&state, &user, &cluster, &name)?;
    let base = base_url(&headers);
    let data: Vec<Value> =
        topic.config().entries().into_iter().map(|(k, v)| config_json(&base, &name, k, &v)).collect();
    Ok(v3(
        StatusCode::OK,
        json!({
            "kind": "KafkaTopicConfigList",
            "metadata": { "self": format!("{base}/v3/clusters/{CLUSTER_ID}/topics/{name}/configs"), "next": null },
            "data": data,
        }),
    ))
}

fn config_not_found(name: &str) -> RestError {
    RestError(StatusCode::NOT_FOUND, 404, format!("Config {name} cannot be found."))
}

async fn topic_config(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, topic, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let t = v3_topic(&state, &user, &cluster, &topic)?;
    let (_, value) =
        t.config().entries().into_iter().find(|(k, _)| *k == name).ok_or_else(|| config_not_found(&name))?;
    Ok(v3(StatusCode::OK, config_json(&base_url(&headers), &topic, &name, &value)))
}

/// One setting to change: its new value, or back to its default.
enum Change {
    Set(String, String),
    Reset(String),
}

/// Applies changes to a topic's settings through the log (atomic, durable), as Kafka's
/// IncrementalAlterConfigs does; only the owner of the relations over the topic (or a
/// superuser) may.
fn alter(state: &HttpState, user: &User, topic: &str, changes: Vec<Change>) -> Result<(), RestError> {
    if state.auth_required && !state.engine.users.may_access_topic(&user.0, topic, TopicAccess::Delete) {
        return Err(RestError(
            StatusCode::FORBIDDEN,
            40301,
            format!("Not authorized to alter the configs of topic {topic}: not the owner of the relations over it"),
        ));
    }
    let defaults = TopicConfig::default().entries();
    let known = |name: &str| defaults.iter().any(|(k, _)| *k == name);
    for c in &changes {
        let (Change::Set(name, _) | Change::Reset(name)) = c;
        if !known(name) {
            return Err(config_not_found(name));
        }
    }
    state
        .engine
        .log
        .alter_topic_config(topic, false, |config| {
            for c in &changes {
                match c {
                    Change::Set(name, value) => config.set(name, value)?,
                    Change::Reset(name) => {
                        let value =
                            defaults.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
                        config.set(name, &value)?
                    }
                }
            }
            Ok(())
        })
        .map(|_| ())
        .map_err(|e| match e {
            LogError::UnknownTopic(_) => RestError(StatusCode::NOT_FOUND, 40403, e.to_string()),
            LogError::InvalidTopic(_) | LogError::InUse { .. } => {
                RestError(StatusCode::BAD_REQUEST, 40002, e.to_string())
            }
            e => RestError(StatusCode::INTERNAL_SERVER_ERROR, 50002, format!("Kafka error: {e}")),
        })
}

async fn set_config(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, topic, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, RestError> {
    v3_topic(&state, &user, &cluster, &topic)?;
    let body: Value = serde_json::from_slice(&body).map_err(bad_json)?;
    let value = match body.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => return Err(RestError(StatusCode::BAD_REQUEST, 400, "the request body needs a \"value\"".into())),
    };
    alter(&state, &user, &topic, vec![Change::Set(name, value)])?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn reset_config(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, topic, name)): Path<(String, String, String)>,
) -> Result<Response, RestError> {
    v3_topic(&state, &user, &cluster, &topic)?;
    alter(&state, &user, &topic, vec![Change::Reset(name)])?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `{"data": [{"name", "value"?, "operation"?: "SET"|"DELETE"}]}`, applied together.
async fn alter_configs(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, topic)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, RestError> {
    v3_topic(&state, &user, &cluster, &topic)?;
    let body: Value = serde_json::from_slice(&body).map_err(bad_json)?;
    let entries = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| RestError(StatusCode::BAD_REQUEST, 400, "the request body needs a \"data\" array".into()))?;
    let mut changes = Vec::new();
    for e in entries {
        let name = e.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let operation = e.get("operation").and_then(Value::as_str).unwrap_or("SET").to_ascii_uppercase();
        changes.push(match (operation.as_str(), e.get("value")) {
            ("DELETE", _) => Change::Reset(name),
            ("SET", Some(Value::String(v))) => Change::Set(name, v.clone()),
            ("SET", Some(v @ (Value::Number(_) | Value::Bool(_)))) => Change::Set(name, v.to_string()),
            (op, _) => {
                return Err(RestError(
                    StatusCode::BAD_REQUEST,
                    400,
                    format!("config {name}: operation {op} needs a value (SET) or none (DELETE)"),
                ))
            }
        });
    }
    alter(&state, &user, &topic, changes)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- consumer groups ----

/// A group as v3 shows it: the coordinator's state and members, and what it committed.
struct GroupView {
    id: String,
    state: &'static str,
    assignor: String,
    members: Vec<MemberView>,
    /// (topic, partition) → committed offset
    committed: BTreeMap<(String, i32), i64>,
}

struct MemberView {
    id: String,
    client_id: String,
    assigned: Vec<(String, i32)>,
}

/// Every group the coordinator knows, and every group with committed offsets.
async fn group_views(state: &HttpState, only: Option<&str>) -> Vec<GroupView> {
    let mut views: BTreeMap<String, GroupView> = BTreeMap::new();
    let empty = |id: &str| GroupView {
        id: id.to_string(),
        state: "EMPTY",
        assignor: String::new(),
        members: Vec::new(),
        committed: BTreeMap::new(),
    };
    {
        let groups = state.broker.coordinator.groups.lock().await;
        for (id, g) in groups.iter().filter(|(id, _)| only.is_none_or(|o| o == id.as_str())) {
            let mut view = empty(id);
            view.state = match g.state {
                crate::kafka::group::GroupState::Empty => "EMPTY",
                crate::kafka::group::GroupState::PreparingRebalance => "PREPARING_REBALANCE",
                crate::kafka::group::GroupState::CompletingRebalance => "COMPLETING_REBALANCE",
                crate::kafka::group::GroupState::Stable => "STABLE",
            };
            view.assignor = g.protocol.clone().unwrap_or_default();
            view.members = g
                .members
                .iter()
                .map(|(mid, m)| {
                    let assigned = if g.protocol_type == "consumer" {
                        decode_assignment(&m.assignment).unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    MemberView { id: mid.clone(), client_id: m.client_id.clone(), assigned }
                })
                .collect();
            views.insert(id.clone(), view);
        }
    }
    let prefix = match only {
        Some(g) => format!("groupoffset/{g}\0"),
        None => "groupoffset/".to_string(),
    };
    for (k, v) in state.engine.store.scan_prefix(CATALOG_CF, prefix.as_bytes(), MAX_OFFSET_BYTES).unwrap_or_default() {
        let key = String::from_utf8_lossy(&k["groupoffset/".len()..]).into_owned();
        let mut parts = key.split('\0');
        let (Some(group), Some(topic), Some(partition)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let Ok(partition) = partition.parse::<i32>() else { continue };
        let offset = serde_json::from_slice::<Value>(&v).ok().and_then(|j| j["offset"].as_i64());
        if let Some(offset) = offset.filter(|o| *o >= 0) {
            views
                .entry(group.to_string())
                .or_insert_with(|| empty(group))
                .committed
                .insert((topic.to_string(), partition), offset);
        }
    }
    views.into_values().collect()
}

/// Groups whose committed topics the user may see (all, without passwords).
fn visible(state: &HttpState, user: &User, g: &GroupView) -> bool {
    !state.auth_required || g.committed.keys().all(|(t, _)| may_see(state, user, t))
}

fn group_json(base: &str, g: &GroupView) -> Value {
    let me = format!("{base}/v3/clusters/{CLUSTER_ID}/consumer-groups/{}", g.id);
    json!({
        "kind": "KafkaConsumerGroup",
        "metadata": { "self": me, "resource_name": format!("crn:///kafka={CLUSTER_ID}/consumer-group={}", g.id) },
        "cluster_id": CLUSTER_ID,
        "consumer_group_id": g.id,
        "is_simple": g.members.is_empty() && !g.committed.is_empty(),
        "partition_assignor": g.assignor,
        "state": g.state,
        "type": "CLASSIC",
        "is_mixed_consumer_group": false,
        "coordinator": { "related": format!("{base}/v3/clusters/{CLUSTER_ID}/brokers/0") },
        "consumers": { "related": format!("{me}/consumers") },
        "lag_summary": { "related": format!("{me}/lag-summary") },
    })
}

fn list(kind: &str, me: String, data: Vec<Value>) -> Response {
    v3(StatusCode::OK, json!({ "kind": kind, "metadata": { "self": me, "next": null }, "data": data }))
}

async fn groups(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path(cluster): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    check_cluster(&cluster)?;
    let base = base_url(&headers);
    let data = group_views(&state, None)
        .await
        .iter()
        .filter(|g| visible(&state, &user, g))
        .map(|g| group_json(&base, g))
        .collect();
    Ok(list("KafkaConsumerGroupList", format!("{base}/v3/clusters/{CLUSTER_ID}/consumer-groups"), data))
}

async fn one_group(state: &HttpState, user: &User, cluster: &str, id: &str) -> Result<GroupView, RestError> {
    check_cluster(cluster)?;
    group_views(state, Some(id))
        .await
        .into_iter()
        .find(|g| visible(state, user, g))
        .ok_or_else(|| RestError(StatusCode::NOT_FOUND, 404, format!("Consumer group {id} could not be found.")))
}

async fn group_v3(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let g = one_group(&state, &user, &cluster, &id).await?;
    Ok(v3(StatusCode::OK, group_json(&base_url(&headers), &g)))
}

fn consumer_json(base: &str, group: &str, member: &MemberView) -> Value {
    let me = format!("{base}/v3/clusters/{CLUSTER_ID}/consumer-groups/{group}/consumers/{}", member.id);
    json!({
        "kind": "KafkaConsumer",
        "metadata": {
            "self": me,
            "resource_name": format!("crn:///kafka={CLUSTER_ID}/consumer-group={group}/consumer={}", member.id),
        },
        "cluster_id": CLUSTER_ID,
        "consumer_group_id": group,
        "consumer_id": member.id,
        "instance_id": null,
        "client_id": member.client_id,
        "assignments": { "related": format!("{me}/assignments") },
    })
}

async fn consumers(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let g = one_group(&state, &user, &cluster, &id).await?;
    let base = base_url(&headers);
    let data = g.members.iter().map(|m| consumer_json(&base, &g.id, m)).collect();
    Ok(list("KafkaConsumerList", format!("{base}/v3/clusters/{CLUSTER_ID}/consumer-groups/{id}/consumers"), data))
}

fn member_of<'a>(g: &'a GroupView, consumer: &str) -> Result<&'a MemberView, RestError> {
    g.members
        .iter()
        .find(|m| m.id == consumer)
        .ok_or_else(|| RestError(StatusCode::NOT_FOUND, 404, format!("Consumer {consumer} could not be found.")))
}

async fn consumer(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, id, consumer)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let g = one_group(&state, &user, &cluster, &id).await?;
    Ok(v3(StatusCode::OK, consumer_json(&base_url(&headers), &g.id, member_of(&g, &consumer)?)))
}

async fn consumer_assignments(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, id, consumer)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let g = one_group(&state, &user, &cluster, &id).await?;
    let member = member_of(&g, &consumer)?;
    let base = base_url(&headers);
    let me = format!("{base}/v3/clusters/{CLUSTER_ID}/consumer-groups/{id}/consumers/{consumer}/assignments");
    let data = member
        .assigned
        .iter()
        .map(|(t, p)| {
            json!({
                "kind": "KafkaConsumerAssignment",
                "metadata": { "self": format!("{me}/{t}/partitions/{p}"), "resource_name": null },
                "cluster_id": CLUSTER_ID,
                "consumer_group_id": id,
                "consumer_id": consumer,
                "topic_name": t,
                "partition_id": p,
                "partition": { "related": format!("{base}/v3/clusters/{CLUSTER_ID}/topics/{t}/partitions/{p}") },
                "lag": { "related": format!("{base}/v3/clusters/{CLUSTER_ID}/consumer-groups/{id}/lags/{t}/partitions/{p}") },
            })
        })
        .collect();
    Ok(list("KafkaConsumerAssignmentList", me, data))
}

/// One lag row per committed partition: where the group is, where the log ends, and which
/// member holds the partition now (empty when none does).
struct Lag {
    topic: String,
    partition: i32,
    current: i64,
    end: i64,
    consumer_id: String,
    client_id: String,
}

fn lags_of(state: &HttpState, g: &GroupView) -> Vec<Lag> {
    g.committed
        .iter()
        .filter_map(|((topic, partition), current)| {
            let end = state.engine.log.partition(topic, *partition).ok()?.high_watermark();
            let owner = g.members.iter().find(|m| m.assigned.iter().any(|(t, p)| t == topic && p == partition));
            Some(Lag {
                topic: topic.clone(),
                partition: *partition,
                current: *current,
                end,
                consumer_id: owner.map(|m| m.id.clone()).unwrap_or_default(),
                client_id: owner.map(|m| m.client_id.clone()).unwrap_or_default(),
            })
        })
        .collect()
}

async fn lags(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let g = one_group(&state, &user, &cluster, &id).await?;
    let base = base_url(&headers);
    let me = format!("{base}/v3/clusters/{CLUSTER_ID}/consumer-groups/{id}/lags");
    let data = lags_of(&state, &g)
        .iter()
        .map(|l| {
            json!({
                "kind": "KafkaConsumerLag",
                "metadata": {
                    "self": format!("{me}/{}/partitions/{}", l.topic, l.partition),
                    "resource_name": format!("crn:///kafka={CLUSTER_ID}/consumer-group={id}/lag={}/partition={}", l.topic, l.partition),
                },
                "cluster_id": CLUSTER_ID,
                "consumer_group_id": id,
                "topic_name": l.topic,
                "partition_id": l.partition,
                "consumer_id": l.consumer_id,
                "instance_id": null,
                "client_id": l.client_id,
                "current_offset": l.current,
                "log_end_offset": l.end,
                "lag": (l.end - l.current).max(0),
            })
        })
        .collect();
    Ok(list("KafkaConsumerLagList", me, data))
}

async fn lag_summary(
    State(state): State<Arc<HttpState>>,
    Extension(user): Extension<User>,
    Path((cluster, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let g = one_group(&state, &user, &cluster, &id).await?;
    let base = base_url(&headers);
    let lags = lags_of(&state, &g);
    let total: i64 = lags.iter().map(|l| (l.end - l.current).max(0)).sum();
    let max = lags.iter().max_by_key(|l| (l.end - l.current).max(0));
    let me = format!("{base}/v3/clusters/{CLUSTER_ID}/consumer-groups/{id}");
    Ok(v3(
        StatusCode::OK,
        json!({
            "kind": "KafkaConsumerGroupLagSummary",
            "metadata": {
                "self": format!("{me}/lag-summary"),
                "resource_name": format!("crn:///kafka={CLUSTER_ID}/consumer-group={id}/lag-summary"),
            },
            "cluster_id": CLUSTER_ID,
            "consumer_group_id": id,
            "max_lag_consumer_id": max.map(|l| l.consumer_id.clone()).unwrap_or_default(),
            "max_lag_instance_id": null,
            "max_lag_client_id": max.map(|l| l.client_id.clone()).unwrap_or_default(),
            "max_lag_topic_name": max.map(|l| l.topic.clone()).unwrap_or_default(),
            "max_lag_partition_id": max.map_or(0, |l| l.partition),
            "max_lag": max.map_or(0, |l| (l.end - l.current).max(0)),
            "total_lag": total,
            "max_lag_consumer": { "related": format!("{me}/consumers/{}", max.map(|l| l.consumer_id.as_str()).unwrap_or_default()) },
            "max_lag_partition": {
                "related": format!(
                    "{base}/v3/clusters/{CLUSTER_ID}/topics/{}/partitions/{}",
                    max.map(|l| l.topic.as_str()).unwrap_or_default(),
                    max.map_or(0, |l| l.partition)
                ),
            },
        }),
    ))
}
