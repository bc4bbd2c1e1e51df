//! One function per Kafka API. Each decodes its request with `kafka-protocol`, does the
//! work against the log, the coordinator or RocksDB, and encodes the response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::*;
use kafka_protocol::messages::create_topics_response::*;
use kafka_protocol::messages::delete_topics_response::*;
use kafka_protocol::messages::describe_acls_response::*;
use kafka_protocol::messages::describe_configs_response::*;
use kafka_protocol::messages::describe_groups_response::*;
use kafka_protocol::messages::fetch_response::*;
use kafka_protocol::messages::join_group_response::*;
use kafka_protocol::messages::list_groups_response::*;
use kafka_protocol::messages::list_offsets_response::*;
use kafka_protocol::messages::metadata_response::*;
use kafka_protocol::messages::offset_commit_response::*;
use kafka_protocol::messages::offset_fetch_response::*;
use kafka_protocol::messages::produce_response::*;
use kafka_protocol::messages::*;

use kafka_protocol::protocol::{Decodable, StrBytes};

use super::error::*;
use super::group::offset_key;
use super::producer::Check;
use super::{encode_response, Broker, ConnError};
use crate::auth::TopicAccess;
use crate::log::{batch, LogBatchHeader, LogError, TopicConfig};
use crate::state::CATALOG_CF;

pub struct Ctx {
    pub broker: Arc<Broker>,
    pub version: i16,
    pub header: RequestHeader,
    pub peer: SocketAddr,
    /// The SASL user of the connection (`None` without SASL: every topic is open).
    pub principal: Option<String>,
}

impl Ctx {
    /// Whether the connection's user may `access` `topic` (grants on the streams and tables
    /// over it; see `engine/privileges.rs`).
    fn may(&self, topic: &str, access: crate::auth::TopicAccess) -> bool {
        match (&self.principal, &self.broker.users) {
            (Some(user), Some(users)) => users.may_access_topic(user, topic, access),
            _ => true,
        }
    }
}

pub use super::decode::supported;
use super::decode::VERSIONS;

pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error_code;
    r.api_keys = VERSIONS
        .iter()
        .map(|(k, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = *k as i16;
            v.min_version = *lo;
            v.max_version = *hi;
            v
        })
        .collect();
    r
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn decode<T: Decodable>(buf: &mut Bytes, version: i16) -> Result<T, ConnError> {
    T::decode(buf, version).map_err(|e| ConnError::Frame(format!("decode: {e}")))
}

pub async fn dispatch(key: ApiKey, ctx: Ctx, mut body: Bytes) -> Result<Option<Bytes>, ConnError> {
    let v = ctx.version;
    let id = ctx.header.correlation_id;
    macro_rules! reply {
        ($resp:expr) => {
            Ok(Some(encode_response(id, key, v, &$resp)?))
        };
    }
    match key {
        ApiKey::ApiVersions => reply!(api_versions_response(NONE)),
        ApiKey::Metadata => reply!(metadata(&ctx, decode(&mut body, v)?).await),
        ApiKey::Produce => {
            let req: ProduceRequest = decode(&mut body, v)?;
            let acks = req.acks;
            let resp = produce(&ctx, req).await;
            if acks == 0 {
                Ok(None)
            } else {
                reply!(resp)
            }
        }
        ApiKey::Fetch => reply!(fetch(&ctx, decode(&mut body, v)?).await),
        ApiKey::ListOffsets => reply!(list_offsets(&ctx, decode(&mut body, v)?).await),
        ApiKey::FindCoordinator => reply!(find_coordinator(&ctx, decode(&mut body, v)?)),
        ApiKey::JoinGroup => reply!(join_group(&ctx, decode(&mut body, v)?).await),
        ApiKey::SyncGroup => reply!(sync_group(&ctx, decode(&mut body, v)?).await),
        ApiKey::Heartbeat => {
            let req: HeartbeatRequest = decode(&mut body, v)?;
            let mut r = HeartbeatResponse::default();
            r.error_code = ctx
                .broker
                .coordinator
                .heartbeat(req.group_id.0.as_str(), req.generation_id, req.member_id.as_str())
                .await;
            reply!(r)
        }
        ApiKey::LeaveGroup => {
            let req: LeaveGroupRequest = decode(&mut body, v)?;
            let ids: Vec<String> = if req.members.is_empty() {
                vec![req.member_id.to_string()]
            } else {
                req.members.iter().map(|m| m.member_id.to_string()).collect()
            };
            let codes = ctx.broker.coordinator.leave(req.group_id.0.as_str(), &ids).await;
            let mut r = LeaveGroupResponse::default();
            r.error_code = codes.first().copied().unwrap_or(NONE);
            reply!(r)
        }
        ApiKey::OffsetCommit => reply!(offset_commit(&ctx, decode(&mut body, v)?).await),
        ApiKey::OffsetFetch => reply!(offset_fetch(&ctx, decode(&mut body, v)?)),
        ApiKey::CreateTopics => reply!(create_topics(&ctx, decode(&mut body, v)?)),
        ApiKey::DeleteTopics => reply!(delete_topics(&ctx, decode(&mut body, v)?)),
        ApiKey::InitProducerId => reply!(init_producer_id(&ctx, decode(&mut body, v)?)),
        ApiKey::DescribeConfigs => reply!(describe_configs(&ctx, decode(&mut body, v)?)),
        ApiKey::DescribeAcls => reply!(describe_acls(&ctx, decode(&mut body, v)?)),
        ApiKey::AlterConfigs => reply!(alter_configs(&ctx, decode(&mut body, v)?)),
        ApiKey::IncrementalAlterConfigs => reply!(incremental_alter_configs(&ctx, decode(&mut body, v)?)),
        ApiKey::ListGroups => reply!(list_groups(&ctx).await),
        ApiKey::DescribeGroups => reply!(describe_groups(&ctx, decode(&mut body, v)?).await),
        other => Err(ConnError::Frame(format!("{other:?} is not served"))),
    }
}

/// The topic, creating it when auto-creation is on.
fn ensure_topic(ctx: &Ctx, name: &str, auto_create: bool) -> Result<Arc<crate::log::Topic>, i16> {
    if let Some(t) = ctx.broker.log.topic(name) {
        return Ok(t);
    }
    if !(auto_create && ctx.broker.config.auto_create_topics) {
        return Err(UNKNOWN_TOPIC_OR_PARTITION);
    }
    match ctx.broker.log.create_topic(name, ctx.broker.topic_config(ctx.broker.config.default_partitions)) {
        Ok(t) => Ok(t),
        Err(LogError::TopicExists(_)) => ctx.broker.log.topic(name).ok_or(UNKNOWN_TOPIC_OR_PARTITION),
        Err(e) => Err(code(&e)),
    }
}

async fn metadata(ctx: &Ctx, req: MetadataRequest) -> MetadataResponse {
    let b = &ctx.broker;
    let mut r = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(0);
    broker.host = s(&b.advertised.ip().to_string());
    broker.port = b.advertised.port() as i32;
    r.brokers = vec![broker];
    if ctx.version >= 2 {
        r.cluster_id = Some(s("eddy"));
    }
    if ctx.version >= 1 {
        r.controller_id = BrokerId(0);
    }
    // v4+ says whether to auto-create; older versions always may.
    let auto = ctx.version < 4 || req.allow_auto_topic_creation;
    let names: Vec<String> = match &req.topics {
        None => b.log.topics().iter().map(|t| t.name.clone()).collect(),
        Some(ts) => ts.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect(),
    };
    let names = if ctx.version == 0 && req.topics.as_ref().is_some_and(|t| t.is_empty()) {
        b.log.topics().iter().map(|t| t.name.clone()).collect()
    } else {
        names
    };
    for name in names {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(s(&name)));
        match ensure_topic(ctx, &name, auto) {
            Ok(topic) => {
                t.partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut mp = MetadataResponsePartition::default();
                        mp.partition_index = p.id;
                        mp.leader_id = BrokerId(0);
                        if ctx.version >= 7 {
                            mp.leader_epoch = 0;
                        }
                        mp.replica_nodes = vec![BrokerId(0)];
                        mp.isr_nodes = vec![BrokerId(0)];
                        mp
                    })
                    .collect();
            }
            Err(code) => t.error_code = code,
        }
        r.topics.push(t);
    }
    r
}

async fn produce(ctx: &Ctx, req: ProduceRequest) -> ProduceResponse {
    let mut r = ProduceResponse::default();
    let refuse = ctx.version < 3;
    let acks_ok = (-1..=1).contains(&req.acks);
    // Every partition's append (and fsync) runs at once; the answers keep request order.
    let mut pending = Vec::new();
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let resolved = ensure_topic(ctx, &name, true);
        let allowed = ctx.may(&name, TopicAccess::Write);
        let mut partitions = Vec::new();
        for pd in topic.partition_data {
            let outcome = if refuse {
                Err(UNSUPPORTED_VERSION)
            } else if !acks_ok {
                Err(INVALID_REQUIRED_ACKS)
            } else {
                match resolved.as_ref().map(|t| t.partitions.get(pd.index as usize).cloned()) {
                    Err(code) => Err(*code),
                    Ok(None) => Err(UNKNOWN_TOPIC_OR_PARTITION),
                    Ok(Some(_)) if !allowed => Err(TOPIC_AUTHORIZATION_FAILED),
                    // A query's output topic takes writes from its query only (the log
                    // refuses them too; this answers without a trip to the blocking pool).
                    Ok(Some(p)) if p.owner().is_some() => Err(POLICY_VIOLATION),
                    Ok(Some(p)) => {
                        let broker = ctx.broker.clone();
                        let records = pd.records.clone().unwrap_or_default();
                        let topic_name = name.clone();
                        Ok(tokio::task::spawn_blocking(move || append_records(&broker, &topic_name, &p, records)))
                    }
                }
            };
            partitions.push((pd.index, outcome));
        }
        pending.push((topic.name, partitions));
    }
    for (name, partitions) in pending {
        let mut tr = TopicProduceResponse::default();
        tr.name = name;
        for (index, outcome) in partitions {
            let mut pr = PartitionProduceResponse::default();
            pr.index = index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            let result = match outcome {
                Err(code) => Err(code),
                Ok(task) => task.await.unwrap_or(Err(UNKNOWN_SERVER_ERROR)),
            };
            match result {
                Ok((base, start)) => {
                    pr.base_offset = base;
                    if ctx.version >= 5 {
                        pr.log_start_offset = start;
                    }
                }
                Err(code) => pr.error_code = code,
            }
            tr.partition_responses.push(pr);
        }
        r.responses.push(tr);
    }
    r
}

/// Validates and appends every batch in a produce request's records for one partition;
/// returns the first batch's base offset and the log start offset.
fn append_records(broker: &Broker, topic: &str, p: &crate::log::Partition, records: Bytes) -> Result<(i64, i64), i16> {
    let mut batches = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let header = LogBatchHeader::parse(&records[pos..]).map_err(|_| CORRUPT_MESSAGE)?;
        if pos + header.total_bytes > records.len() {
            return Err(CORRUPT_MESSAGE);
        }
        batch::validate(&records[pos..pos + header.total_bytes]).map_err(|_| CORRUPT_MESSAGE)?;
        batches.push((pos, header));
        pos += header.total_bytes;
    }
    if batches.is_empty() {
        return Err(CORRUPT_MESSAGE);
    }
    let now = broker.log.clock.now_ms();
    let mut first = None;
    for (pos, header) in batches {
        let mut bytes = records[pos..pos + header.total_bytes].to_vec();
        let base = if header.producer_id >= 0 {
            let lock = broker.producers.partition_lock(topic, p.id);
            let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            match broker.producers.check(topic, p.id, &header) {
                Check::Duplicate { base_offset } => base_offset,
                Check::Reject(code) => return Err(code),
                Check::Append => {
                    let info = p.append(&mut bytes, now).map_err(|e| code(&e))?;
                    broker.producers.record(topic, p.id, &header, info.base_offset);
                    info.base_offset
                }
            }
        } else {
            p.append(&mut bytes, now).map_err(|e| code(&e))?.base_offset
        };
        first.get_or_insert(base);
    }
    Ok((first.unwrap_or(-1), p.log_start_offset()))
}

async fn fetch(ctx: &Ctx, req: FetchRequest) -> FetchResponse {
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, 30_000) as u64);
    let max_bytes = if req.max_bytes <= 0 { 50 << 20 } else { req.max_bytes as usize };
    loop {
        // Register for wake-ups before reading, so an append in between is not missed.
        let notified = ctx.broker.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (resp, bytes) = fetch_once(ctx, &req, max_bytes);
        let now = Instant::now();
        if bytes >= req.min_bytes.max(1) as usize || now >= deadline || resp.error_code != NONE {
            return resp;
        }
        let _ = tokio::time::timeout(deadline - now, notified).await;
    }
}

fn fetch_once(ctx: &Ctx, req: &FetchRequest, max_bytes: usize) -> (FetchResponse, usize) {
    let mut r = FetchResponse::default();
    let mut total = 0usize;
    for ft in &req.topics {
        let name = ft.topic.0.to_string();
        let mut tr = FetchableTopicResponse::default();
        tr.topic = ft.topic.clone();
        let topic = ctx.broker.log.topic(&name);
        let allowed = ctx.may(&name, TopicAccess::Read);
        for fp in &ft.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            pd.high_watermark = -1;
            pd.last_stable_offset = -1;
            pd.log_start_offset = -1;
            pd.preferred_read_replica = BrokerId(-1);
            match topic.as_ref().and_then(|t| t.partitions.get(fp.partition as usize)) {
                None => pd.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                Some(_) if !allowed => pd.error_code = TOPIC_AUTHORIZATION_FAILED,
                Some(p) => {
                    let budget = (fp.partition_max_bytes.max(1) as usize).min(max_bytes.saturating_sub(total).max(1));
                    let hw = p.high_watermark();
                    pd.high_watermark = hw;
                    pd.last_stable_offset = hw;
                    if ctx.version >= 5 {
                        pd.log_start_offset = p.log_start_offset();
                    }
                    if total >= max_bytes && total > 0 {
                        pd.records = Some(Bytes::new());
                    } else {
                        match p.read(fp.fetch_offset, budget) {
                            Ok(read) => {
                                total += read.bytes.len();
                                pd.records = Some(Bytes::from(read.bytes));
                            }
                            Err(e) => pd.error_code = code(&e),
                        }
                    }
                }
            }
            tr.partitions.push(pd);
        }
        r.responses.push(tr);
    }
    (r, total)
}

async fn list_offsets(ctx: &Ctx, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut r = ListOffsetsResponse::default();
    for t in req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        let topic = ctx.broker.log.topic(t.name.0.as_str());
        for lp in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = lp.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            if ctx.version >= 4 {
                pr.leader_epoch = 0;
            }
            match topic.as_ref().and_then(|t| t.partitions.get(lp.partition_index as usize)) {
                None => pr.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                Some(p) => match lp.timestamp {
                    -2 => pr.offset = p.log_start_offset(),
                    -1 => pr.offset = p.high_watermark(),
                    ts => match p.offset_for_timestamp(ts) {
                        Ok(Some(o)) => {
                            pr.offset = o;
                            pr.timestamp = ts;
                        }
                        Ok(None) => {}
                        Err(e) => pr.error_code = code(&e),
                    },
                },
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

fn find_coordinator(ctx: &Ctx, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let mut r = FindCoordinatorResponse::default();
    if req.key_type != 0 {
        r.error_code = COORDINATOR_NOT_AVAILABLE;
        r.error_message = Some(s("transactions are not supported yet"));
        r.node_id = BrokerId(-1);
        return r;
    }
    r.node_id = BrokerId(0);
    r.host = s(&ctx.broker.advertised.ip().to_string());
    r.port = ctx.broker.advertised.port() as i32;
    r
}

async fn join_group(ctx: &Ctx, req: JoinGroupRequest) -> JoinGroupResponse {
    let join = super::group::JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        client_id: ctx.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        session_timeout: Duration::from_millis(req.session_timeout_ms.clamp(1000, 3_600_000) as u64),
        rebalance_timeout: Duration::from_millis(
            (if ctx.version >= 1 { req.rebalance_timeout_ms } else { req.session_timeout_ms }).clamp(1000, 3_600_000)
                as u64,
        ),
        require_known_member_id: ctx.version >= 4,
    };
    let res = ctx.broker.coordinator.join(join).await;
    let mut r = JoinGroupResponse::default();
    r.error_code = res.error;
    r.generation_id = res.generation;
    r.protocol_name = res.protocol.as_deref().map(s);
    r.leader = s(&res.leader);
    r.member_id = s(&res.member_id);
    r.members = res
        .members
        .into_iter()
        .map(|(id, meta)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = s(&id);
            m.metadata = meta;
            m
        })
        .collect();
    r
}

async fn sync_group(ctx: &Ctx, req: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = req.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect();
    let (code, assignment) = ctx
        .broker
        .coordinator
        .sync(req.group_id.0.as_str(), req.generation_id, req.member_id.as_str(), assignments)
        .await;
    let mut r = SyncGroupResponse::default();
    r.error_code = code;
    r.assignment = assignment;
    r.protocol_type = req.protocol_type.clone();
    r.protocol_name = req.protocol_name.clone();
    r
}

async fn offset_commit(ctx: &Ctx, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let check =
        ctx.broker.coordinator.check_commit(&group, req.generation_id_or_member_epoch, req.member_id.as_str()).await;
    let store = &ctx.broker.store;
    let mut cp = store.checkpoint(CATALOG_CF);
    let mut r = OffsetCommitResponse::default();
    for t in &req.topics {
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = check;
            if check == NONE {
                let value = serde_json::json!({
                    "offset": p.committed_offset,
                    "metadata": p.committed_metadata.as_ref().map(|m| m.to_string()),
                    "leader_epoch": p.committed_leader_epoch,
                });
                if cp
                    .put(store, &offset_key(&group, t.name.0.as_str(), p.partition_index), value.to_string().as_bytes())
                    .is_err()
                {
                    pr.error_code = UNKNOWN_SERVER_ERROR;
                }
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    if check == NONE && !cp.is_empty() {
        let store = store.clone();
        let ok = tokio::task::spawn_blocking(move || store.commit(cp)).await.map(|r| r.is_ok()).unwrap_or(false);
        if !ok {
            r.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()).for_each(|p| p.error_code = UNKNOWN_SERVER_ERROR);
        }
    }
    r
}

fn offset_fetch(ctx: &Ctx, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let group = req.group_id.0.to_string();
    let store = &ctx.broker.store;
    let topics: Vec<(TopicName, Vec<i32>)> = match &req.topics {
        Some(ts) => ts.iter().map(|t| (t.name.clone(), t.partition_indexes.clone())).collect(),
        None => {
            // All committed offsets of the group.
            let prefix = format!("groupoffset/{group}\0");
            let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
            for (k, _) in store.scan_prefix(CATALOG_CF, prefix.as_bytes(), 64 << 20).unwrap_or_default() {
                let k = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                if let Some((t, p)) = k.split_once('\0') {
                    by_topic.entry(t.to_string()).or_default().push(p.parse().unwrap_or(0));
                }
            }
            by_topic.into_iter().map(|(t, ps)| (TopicName(s(&t)), ps)).collect()
        }
    };
    let mut r = OffsetFetchResponse::default();
    for (name, partitions) in topics {
        let mut tr = OffsetFetchResponseTopic::default();
        tr.name = name.clone();
        for p in partitions {
            let mut pr = OffsetFetchResponsePartition::default();
            pr.partition_index = p;
            pr.committed_offset = -1;
            pr.committed_leader_epoch = -1;
            pr.metadata = Some(s(""));
            if let Ok(Some(v)) = store.get(CATALOG_CF, &offset_key(&group, name.0.as_str(), p)) {
                if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&v) {
                    pr.committed_offset = json["offset"].as_i64().unwrap_or(-1);
                    if ctx.version >= 5 {
                        pr.committed_leader_epoch = json["leader_epoch"].as_i64().unwrap_or(-1) as i32;
                    }
                    pr.metadata = Some(s(json["metadata"].as_str().unwrap_or("")));
                }
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

fn create_topics(ctx: &Ctx, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut r = CreateTopicsResponse::default();
    for t in req.topics {
        let mut res = CreatableTopicResult::default();
        res.name = t.name.clone();
        let partitions = if t.num_partitions < 0 { ctx.broker.config.default_partitions } else { t.num_partitions };
        if ctx.version >= 5 {
            res.num_partitions = partitions;
            res.replication_factor = 1;
        }
        let mut config: TopicConfig = ctx.broker.topic_config(partitions);
        let mut error = None;
        if partitions == 0 || partitions > 10_000 {
            error = Some((INVALID_PARTITIONS, format!("partition count {partitions} must be between 1 and 10000")));
        }
        for c in &t.configs {
            let key = c.name.as_str();
            let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
            // Settings Kafka has and a single node has nothing to do with are accepted.
            if matches!(key, "min.insync.replicas" | "compression.type" | "message.timestamp.type") {
                continue;
            }
            if let Err(e) = config.set(key, &value) {
                error = Some((INVALID_CONFIG, e.to_string()));
            }
        }
        if error.is_none() && !req.validate_only {
            if let Err(e) = ctx.broker.log.create_topic(t.name.0.as_str(), config) {
                error = Some((code(&e), e.to_string()));
            }
        } else if error.is_none() && ctx.broker.log.topic(t.name.0.as_str()).is_some() {
            error = Some((TOPIC_ALREADY_EXISTS, format!("topic '{}' already exists", t.name.0.as_str())));
        }
        if let Some((code, msg)) = error {
            res.error_code = code;
            if ctx.version >= 1 {
                res.error_message = Some(s(&msg));
            }
        }
        r.topics.push(res);
    }
    r
}

fn delete_topics(ctx: &Ctx, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut r = DeleteTopicsResponse::default();
    for name in req.topic_names {
        let mut res = DeletableTopicResult::default();
        res.name = Some(name.clone());
        if !ctx.may(name.0.as_str(), TopicAccess::Delete) {
            res.error_code = TOPIC_AUTHORIZATION_FAILED;
        } else if let Err(e) = ctx.broker.log.delete_topic(name.0.as_str()) {
            res.error_code = code(&e);
        }
        r.responses.push(res);
    }
    r
}

fn init_producer_id(ctx: &Ctx, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    if req.transactional_id.is_some() {
        r.error_code = INVALID_REQUEST; // transactions are not served yet
        return r;
    }
    match ctx.broker.producers.allocate() {
        Ok(id) => {
            r.producer_id = ProducerId(id);
            r.producer_epoch = 0;
        }
        Err(_) => r.error_code = UNKNOWN_SERVER_ERROR,
    }
    r
}

fn describe_configs(ctx: &Ctx, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut r = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let entries: Vec<(String, String)> = match res.resource_type {
            2 => match ctx.broker.log.topic(res.resource_name.as_str()) {
                Some(t) => topic_configs(&t.config()),
                None => {
                    out.error_code = UNKNOWN_TOPIC_OR_PARTITION;
                    Vec::new()
                }
            },
            4 => vec![
                ("auto.create.topics.enable".into(), ctx.broker.config.auto_create_topics.to_string()),
                ("num.partitions".into(), ctx.broker.config.default_partitions.to_string()),
                ("message.max.bytes".into(), TopicConfig::default().max_message_bytes.to_string()),
                ("socket.request.max.bytes".into(), ctx.broker.config.max_request_bytes.to_string()),
            ],
            _ => {
                out.error_code = INVALID_REQUEST;
                Vec::new()
            }
        };
        let wanted = res.configuration_keys.as_ref();
        let defaults = topic_configs(&TopicConfig::default());
        out.configs = entries
            .into_iter()
            .filter(|(k, _)| wanted.is_none_or(|w| w.iter().any(|x| x.as_str() == k)))
            .map(|(k, v)| {
                let mut c = DescribeConfigsResourceResult::default();
                let default = res.resource_type != 2 || defaults.iter().any(|(dk, dv)| *dk == k && *dv == v);
                c.name = s(&k);
                c.value = Some(s(&v));
                if ctx.version >= 1 {
                    // DYNAMIC_TOPIC_CONFIG for a topic's own setting, else DEFAULT_CONFIG.
                    c.config_source = if default { 5 } else { 1 };
                }
                c
            })
            .collect();
        r.results.push(out);
    }
    r
}

/// Changes one resource's settings for AlterConfigs and IncrementalAlterConfigs: only topics
/// have settings to change, and only their owner (or a superuser) changes them.
fn alter_resource(
    ctx: &Ctx,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(&mut TopicConfig) -> Result<(), crate::log::LogError>,
) -> (i16, Option<String>) {
    const TOPIC: i8 = 2;
    if resource_type != TOPIC {
        return (INVALID_REQUEST, Some("only topic settings can be changed".into()));
    }
    if !ctx.may(name, TopicAccess::Delete) {
        return (TOPIC_AUTHORIZATION_FAILED, Some(format!("not the owner of the relations over topic {name}")));
    }
    match ctx.broker.log.alter_topic_config(name, validate_only, change) {
        Ok(_) => (NONE, None),
        Err(e @ crate::log::LogError::InvalidTopic(_)) => (INVALID_CONFIG, Some(e.to_string())),
        Err(e) => (code(&e), Some(e.to_string())),
    }
}

/// The legacy AlterConfigs: the settings given replace the topic's, every other one goes back
/// to its default (Kafka's semantics; a table's topic must then still say `compact`).
fn alter_configs(ctx: &Ctx, req: AlterConfigsRequest) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let mut r = AlterConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let (error_code, message) = alter_resource(ctx, res.resource_type, &name, req.validate_only, |c| {
            *c = TopicConfig { partitions: c.partitions, ..TopicConfig::default() };
            for setting in &res.configs {
                c.set(setting.name.as_str(), setting.value.as_ref().map_or("", |v| v.as_str()))?;
            }
            Ok(())
        });
        let mut out = AlterConfigsResourceResponse::default();
        out.error_code = error_code;
        out.error_message = message.map(|m| s(&m));
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name;
        r.responses.push(out);
    }
    r
}

/// IncrementalAlterConfigs (what `kafka-configs --alter` sends): SET a setting, or DELETE it
/// back to its default; APPEND and SUBTRACT (for list settings) are refused.
fn incremental_alter_configs(ctx: &Ctx, req: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let mut r = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.to_string();
        let (error_code, message) = alter_resource(ctx, res.resource_type, &name, req.validate_only, |c| {
            let defaults = TopicConfig::default().entries();
            for setting in &res.configs {
                let key = setting.name.as_str();
                let value = match setting.config_operation {
                    SET => setting.value.as_ref().map_or(String::new(), |v| v.to_string()),
                    DELETE => defaults.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).unwrap_or_default(),
                    other => {
                        return Err(crate::log::LogError::InvalidTopic(format!(
                            "config operation {other} (APPEND/SUBTRACT) is not supported for {key}"
                        )))
                    }
                };
                c.set(key, &value)?;
            }
            Ok(())
        });
        let mut out = AlterConfigsResourceResponse::default();
        out.error_code = error_code;
        out.error_message = message.map(|m| s(&m));
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name;
        r.responses.push(out);
    }
    r
}

/// Kafka's ACL codes (`AclOperation`, `AclPermissionType`, `ResourceType`, `PatternType`).
mod acl {
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const DELETE: i8 = 6;
    pub const ALLOW: i8 = 3;
    pub const TOPIC: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const MATCH: i8 = 4;
}

/// The grants on streams and tables, as ACLs on their topics: what `kafka-acls --list` shows.
/// Without passwords nothing is checked, and there are no ACLs to list.
fn describe_acls(ctx: &Ctx, req: DescribeAclsRequest) -> DescribeAclsResponse {
    use crate::auth::TopicAccess;
    let mut r = DescribeAclsResponse::default();
    let Some(users) = &ctx.broker.users else { return r };
    let type_ok = matches!(req.resource_type_filter, acl::ANY | acl::TOPIC);
    let pattern_ok = matches!(req.pattern_type_filter, acl::ANY | acl::LITERAL | acl::MATCH);
    let permission_ok = matches!(req.permission_type, acl::ANY | acl::ALLOW);
    if !(type_ok && pattern_ok && permission_ok) {
        return r;
    }
    let mut by_topic: std::collections::BTreeMap<String, Vec<AclDescription>> = Default::default();
    for (topic, user, access) in users.topic_grants() {
        let operation = match access {
            TopicAccess::Read => acl::READ,
            TopicAccess::Write => acl::WRITE,
            TopicAccess::Delete => acl::DELETE,
        };
        let principal = format!("User:{user}");
        let name_ok = req.resource_name_filter.as_ref().is_none_or(|n| n.as_str() == topic);
        let principal_ok = req.principal_filter.as_ref().is_none_or(|p| p.as_str() == principal);
        let operation_ok = matches!(req.operation, acl::ANY | acl::ALL) || req.operation == operation;
        if !(name_ok && principal_ok && operation_ok) {
            continue;
        }
        let mut a = AclDescription::default();
        a.principal = s(&principal);
        a.host = s("*");
        a.operation = operation;
        a.permission_type = acl::ALLOW;
        by_topic.entry(topic).or_default().push(a);
    }
    r.resources = by_topic
        .into_iter()
        .map(|(topic, acls)| {
            let mut res = DescribeAclsResource::default();
            res.resource_type = acl::TOPIC;
            res.resource_name = s(&topic);
            res.pattern_type = acl::LITERAL;
            res.acls = acls;
            res
        })
        .collect();
    r
}

fn topic_configs(c: &TopicConfig) -> Vec<(String, String)> {
    c.entries().into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

async fn list_groups(ctx: &Ctx) -> ListGroupsResponse {
    let groups = ctx.broker.coordinator.groups.lock().await;
    let mut r = ListGroupsResponse::default();
    r.groups = groups
        .iter()
        .map(|(id, g)| {
            let mut lg = ListedGroup::default();
            lg.group_id = GroupId(s(id));
            lg.protocol_type = s(&g.protocol_type);
            if ctx.version >= 4 {
                lg.group_state = s(g.state.name());
            }
            lg
        })
        .collect();
    r
}

async fn describe_groups(ctx: &Ctx, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = ctx.broker.coordinator.groups.lock().await;
    let mut r = DescribeGroupsResponse::default();
    for id in req.groups {
        let mut dg = DescribedGroup::default();
        dg.group_id = id.clone();
        match groups.get(id.0.as_str()) {
            None => dg.group_state = s("Dead"),
            Some(g) => {
                dg.group_state = s(g.state.name());
                dg.protocol_type = s(&g.protocol_type);
                dg.protocol_data = s(g.protocol.as_deref().unwrap_or(""));
                dg.members = g
                    .members
                    .iter()
                    .map(|(mid, m)| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = s(mid);
                        dm.client_id = s(&m.client_id);
                        dm.client_host = s(&m.client_host);
                        dm.member_metadata = m
                            .protocols
                            .iter()
                            .find(|(n, _)| Some(n) == g.protocol.as_ref())
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default();
                        dm.member_assignment = m.assignment.clone();
                        dm
                    })
                    .collect();
            }
        }
        r.groups.push(dg);
    }
    r
}
