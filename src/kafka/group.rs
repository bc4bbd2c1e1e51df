//! The classic consumer-group coordinator: JoinGroup (with KIP-394's MEMBER_ID_REQUIRED
//! step), SyncGroup, Heartbeat, LeaveGroup, session and rebalance timeouts, generation
//! fencing. Assignment is the clients' business: the leader's bytes are passed through.
//! Committed offsets live in RocksDB (see `offsets`), so they survive restarts; group
//! membership is in memory, as members rejoin after a restart anyway.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, Mutex};

use super::error::*;

/// How long a new group waits for more members before its first rebalance completes
/// (Kafka's `group.initial.rebalance.delay.ms`).
pub const INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(3000);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member and its subscription metadata.
    pub members: Vec<(String, Bytes)>,
}

pub struct Member {
    pub client_id: String,
    pub client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<(i16, Bytes)>>,
}

pub struct Group {
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, not yet joined.
    pending: BTreeMap<String, Instant>,
    /// When the current rebalance gives up on members that have not rejoined.
    rebalance_deadline: Option<Instant>,
    /// A new group waits this long for more members before its first generation.
    join_not_before: Option<Instant>,
}

impl Group {
    fn new(protocol_type: &str) -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: protocol_type.to_string(),
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline: None,
            join_not_before: None,
        }
    }

    fn prepare_rebalance(&mut self, delay: Duration) {
        if self.state == GroupState::CompletingRebalance {
            // Members waiting in SyncGroup must rejoin.
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send((REBALANCE_IN_PROGRESS, Bytes::new()));
                }
            }
        }
        if self.state != GroupState::PreparingRebalance {
            self.state = GroupState::PreparingRebalance;
            let now = Instant::now();
            let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(delay);
            self.rebalance_deadline = Some(now + timeout.max(delay));
            self.join_not_before = Some(now + delay);
        }
    }

    /// All members have rejoined (or the deadline passed): start the next generation.
    fn maybe_complete_join(&mut self) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let now = Instant::now();
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let waited = self.join_not_before.is_none_or(|t| now >= t);
        let gave_up = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !((all_joined && waited) || gave_up) {
            return;
        }
        self.members.retain(|_, m| m.join_waiter.is_some());
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.leader = None;
            return;
        }
        self.generation += 1;
        self.protocol = self.choose_protocol();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone();
        let all: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| Some(n) == protocol.as_ref())
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (id.clone(), meta)
            })
            .collect();
        for (id, m) in self.members.iter_mut() {
            m.last_seen = Instant::now();
            if let Some(w) = m.join_waiter.take() {
                let members = if *id == leader { all.clone() } else { Vec::new() };
                let _ = w.send(JoinResult {
                    error: NONE,
                    generation: self.generation,
                    protocol: protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members,
                });
            }
        }
        self.state = GroupState::CompletingRebalance;
        self.rebalance_deadline = None;
    }

    /// The first protocol of the leader-to-be that every member supports.
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .find(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == *n)))
            .cloned()
    }
}

pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// v4+: a member without an id first gets one and must join again with it.
    pub require_known_member_id: bool,
}

#[derive(Default)]
pub struct Coordinator {
    pub groups: Mutex<BTreeMap<String, Group>>,
    next_member: std::sync::atomic::AtomicU64,
}

impl Coordinator {
    pub fn new() -> Arc<Coordinator> {
        Arc::new(Coordinator::default())
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.next_member.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{client_id}-{nanos:x}-{n}")
    }

    pub async fn join(&self, req: JoinRequest) -> JoinResult {
        let fail = |error: i16, member_id: &str| JoinResult {
            error,
            generation: -1,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        };
        if req.group_id.is_empty() {
            return fail(INVALID_GROUP_ID, &req.member_id);
        }
        let rx = {
            let mut groups = self.groups.lock().await;
            let group = groups.entry(req.group_id.clone()).or_insert_with(|| Group::new(&req.protocol_type));
            if !group.members.is_empty() && group.protocol_type != req.protocol_type {
                return fail(INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
            }
            group.protocol_type = req.protocol_type.clone();
            let member_id = if req.member_id.is_empty() {
                let id = self.new_member_id(&req.client_id);
                if req.require_known_member_id {
                    group.pending.insert(id.clone(), Instant::now());
                    return fail(MEMBER_ID_REQUIRED, &id);
                }
                id
            } else if group.members.contains_key(&req.member_id) || group.pending.remove(&req.member_id).is_some() {
                req.member_id.clone()
            } else {
                return fail(UNKNOWN_MEMBER_ID, &req.member_id);
            };
            let (tx, rx) = oneshot::channel();
            let new_member = !group.members.contains_key(&member_id);
            let member = group.members.entry(member_id.clone()).or_insert_with(|| Member {
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_seen: Instant::now(),
                join_waiter: None,
                sync_waiter: None,
            });
            let changed = member.protocols != req.protocols;
            member.protocols = req.protocols.clone();
            member.session_timeout = req.session_timeout;
            member.rebalance_timeout = req.rebalance_timeout;
            member.last_seen = Instant::now();
            if let Some(old) = member.join_waiter.replace(tx) {
                let _ = old.send(fail(REBALANCE_IN_PROGRESS, &member_id));
            }
            match group.state {
                GroupState::Empty => group.prepare_rebalance(INITIAL_REBALANCE_DELAY),
                GroupState::Stable | GroupState::CompletingRebalance => {
                    let is_leader = group.leader.as_ref() == Some(&member_id);
                    if new_member || changed || is_leader || group.state == GroupState::Stable {
                        group.prepare_rebalance(Duration::ZERO);
                    }
                }
                GroupState::PreparingRebalance => {}
            }
            group.maybe_complete_join();
            rx
        };
        rx.await.unwrap_or_else(|_| fail(REBALANCE_IN_PROGRESS, &req.member_id))
    }

    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> (i16, Bytes) {
        let rx = {
            let mut groups = self.groups.lock().await;
            let Some(group) = groups.get_mut(group_id) else { return (UNKNOWN_MEMBER_ID, Bytes::new()) };
            if !group.members.contains_key(member_id) {
                return (UNKNOWN_MEMBER_ID, Bytes::new());
            }
            if generation != group.generation {
                return (ILLEGAL_GENERATION, Bytes::new());
            }
            match group.state {
                GroupState::PreparingRebalance | GroupState::Empty => return (REBALANCE_IN_PROGRESS, Bytes::new()),
                GroupState::Stable => return (NONE, group.members[member_id].assignment.clone()),
                GroupState::CompletingRebalance => {}
            }
            if group.leader.as_deref() == Some(member_id) {
                for (id, m) in group.members.iter_mut() {
                    m.assignment =
                        assignments.iter().find(|(a, _)| a == id).map(|(_, b)| b.clone()).unwrap_or_default();
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send((NONE, m.assignment.clone()));
                    }
                }
                group.state = GroupState::Stable;
                return (NONE, group.members[member_id].assignment.clone());
            }
            let (tx, rx) = oneshot::channel();
            if let Some(m) = group.members.get_mut(member_id) {
                m.sync_waiter = Some(tx);
            }
            rx
        };
        rx.await.unwrap_or((REBALANCE_IN_PROGRESS, Bytes::new()))
    }

    pub async fn heartbeat(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        let mut groups = self.groups.lock().await;
        let Some(group) = groups.get_mut(group_id) else { return UNKNOWN_MEMBER_ID };
        let Some(member) = group.members.get_mut(member_id) else { return UNKNOWN_MEMBER_ID };
        member.last_seen = Instant::now();
        if generation != group.generation {
            return ILLEGAL_GENERATION;
        }
        match group.state {
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            _ => NONE,
        }
    }

    pub async fn leave(&self, group_id: &str, member_ids: &[String]) -> Vec<i16> {
        let mut groups = self.groups.lock().await;
        let Some(group) = groups.get_mut(group_id) else { return vec![UNKNOWN_MEMBER_ID; member_ids.len()] };
        let mut out = Vec::new();
        for id in member_ids {
            match group.members.remove(id) {
                Some(_) => out.push(NONE),
                None => out.push(UNKNOWN_MEMBER_ID),
            }
        }
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.leader = None;
            group.generation += 1;
        } else if out.contains(&NONE) {
            group.prepare_rebalance(Duration::ZERO);
            group.maybe_complete_join();
        }
        out
    }

    /// Validates a commit's member and generation (`generation < 0`: a standalone consumer).
    pub async fn check_commit(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        if generation < 0 {
            return NONE;
        }
        let groups = self.groups.lock().await;
        match groups.get(group_id) {
            None => ILLEGAL_GENERATION,
            Some(g) if !g.members.contains_key(member_id) => UNKNOWN_MEMBER_ID,
            Some(g) if g.generation != generation => ILLEGAL_GENERATION,
            // As Kafka: members may commit while the group prepares a rebalance (their
            // revocation commits), not while the leader's assignment is awaited.
            Some(g) if g.state == GroupState::CompletingRebalance => REBALANCE_IN_PROGRESS,
            Some(_) => NONE,
        }
    }

    /// Expires members past their session timeout and finishes rebalances past their
    /// deadline. Called every 100 ms.
    pub async fn tick(&self) {
        let mut groups = self.groups.lock().await;
        let now = Instant::now();
        for group in groups.values_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_waiter.is_none()
                        && m.sync_waiter.is_none()
                        && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            group.pending.retain(|_, at| now.duration_since(*at) < Duration::from_secs(300));
            if !expired.is_empty() {
                for id in &expired {
                    group.members.remove(id);
                }
                if group.members.is_empty() {
                    group.state = GroupState::Empty;
                    group.leader = None;
                } else {
                    group.prepare_rebalance(Duration::ZERO);
                }
            }
            group.maybe_complete_join();
        }
    }
}

/// Where a group's committed offset for a partition is kept (in the catalog column family).
pub fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    format!("groupoffset/{group}\0{topic}\0{partition}").into_bytes()
}

/// The committed offset (the next one to read) and its metadata, if any.
pub fn committed_offset(
    store: &crate::state::StateStore,
    group: &str,
    topic: &str,
    partition: i32,
) -> Option<(i64, String)> {
    let v = store.get(crate::state::CATALOG_CF, &offset_key(group, topic, partition)).ok()??;
    let json: serde_json::Value = serde_json::from_slice(&v).ok()?;
    Some((json["offset"].as_i64()?, json["metadata"].as_str().unwrap_or("").to_string()))
}

/// Commits offsets (topic, partition, next offset, metadata) for a group in one atomic,
/// durable write, as OffsetCommit does.
pub async fn commit_offsets(
    store: &crate::state::StateStore,
    group: &str,
    offsets: &[(String, i32, i64, Option<String>)],
) -> Result<(), String> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut cp = store.checkpoint(crate::state::CATALOG_CF);
    for (topic, partition, offset, metadata) in offsets {
        let value = serde_json::json!({ "offset": offset, "metadata": metadata, "leader_epoch": -1 });
        cp.put(store, &offset_key(group, topic, *partition), value.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.commit(cp)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
