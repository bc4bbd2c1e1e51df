//! The built-in durable log: topics → partitions → segment files of Kafka v2 batches.
//!
//! Owns every byte of topic data on disk. Called by the Kafka server (produce/fetch), by SQL
//! `INSERT`, and by the dataflow runtime (sources tail partitions, sinks append output).
//! A plain synchronous library: it must never depend on tokio or DataFusion, so it can become
//! its own crate. Time comes from an injected [`Clock`] so retention and segment roll are
//! testable without sleeping.
//!
//! On disk: `DIR/<topic>/topic.properties`, `DIR/<topic>/<partition>/<base offset>.log` and,
//! beside each sealed segment, its `<base offset>.index` (see `index`). Temporary directories
//! of topic creation and deletion live under `DIR/~tmp/`: `~` is not a topic-name character,
//! so no topic can be mistaken for one (or clobbered by one); so does the `DIR/~clean-shutdown`
//! marker, present only between a clean `close` and the next `open`.
//!
//! Restart time does not grow with the log (Kafka's recovery point): sealed segments were
//! fsynced when rolled and open from their index files; after a crash only each partition's
//! active segment is scanned, and after a clean shutdown nothing is.

pub mod batch;
pub mod compaction;
pub mod decompress;
mod index;
pub mod partition;
mod segment;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

pub use batch::{LogBatchHeader, LogRecord};
pub use compaction::CompactionStats;
pub use partition::{AppendInfo, Partition, ReadResult, RecoveryStats};

/// Where create and delete keep their temporary directories (not a valid topic name).
const TMP_DIR: &str = "~tmp";
/// Written by a clean `close` after every active segment's index; removed by `open`. While it
/// is there, active segments open from their indexes too.
const CLEAN_SHUTDOWN: &str = "~clean-shutdown";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("unknown topic or partition: {0}")]
    UnknownTopic(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    #[error("record batch of {bytes} bytes is larger than the maximum of {max_bytes}")]
    MessageTooLarge { bytes: usize, max_bytes: usize },
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("not supported yet: {0}")]
    Unsupported(String),
    #[error("log I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("partition offline, its log is damaged: {0}")]
    Offline(String),
    /// Deleting a topic that a stream, table or query uses (the message names it).
    #[error("topic '{topic}' is in use: {user}")]
    InUse { topic: String, user: String },
    /// A write to a partition that a query's sink owns (only that query writes its output).
    #[error("topic {topic} partition {partition}: {reason}")]
    Fenced { topic: String, partition: i32, reason: String },
    /// A record the topic refuses, e.g. one without a key in a compacted topic (Kafka's
    /// `InvalidRecordException`).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
}

/// Wall-clock milliseconds, injectable for tests.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// Kafka's `cleanup.policy`: what happens to old records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Whole segments are deleted past `retention.ms` / `retention.bytes`.
    Delete,
    /// Only the latest record of each key is kept (a table's changelog).
    Compact,
    /// Both: compacted, and segments past retention are deleted.
    CompactDelete,
}

impl CleanupPolicy {
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// Kafka's spelling, as `topic.properties` and DescribeConfigs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    /// Kafka's list syntax: `delete`, `compact`, `compact,delete` (either order, spaces allowed).
    pub fn parse(value: &str) -> Option<CleanupPolicy> {
        let (mut compact, mut delete) = (false, false);
        for part in value.split(',').map(str::trim) {
            match part {
                "compact" => compact = true,
                "delete" => delete = true,
                _ => return None,
            }
        }
        match (compact, delete) {
            (true, true) => Some(CleanupPolicy::CompactDelete),
            (true, false) => Some(CleanupPolicy::Compact),
            (false, true) => Some(CleanupPolicy::Delete),
            (false, false) => None,
        }
    }
}

/// Per-topic settings, Kafka's names in `topic.properties`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub partitions: i32,
    /// `cleanup.policy` (Kafka: `delete`).
    pub cleanup_policy: CleanupPolicy,
    /// `segment.bytes`: roll the active segment past this size (Kafka: 1 GiB).
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment after this age (Kafka: 7 days).
    pub segment_ms: i64,
    /// `retention.ms` (Kafka: 7 days; `None` keeps forever). Only with `delete` in the policy.
    pub retention_ms: Option<i64>,
    /// `retention.bytes` per partition (`None`: no size limit, Kafka's -1). Only with `delete`.
    pub retention_bytes: Option<u64>,
    /// `max.message.bytes`: largest batch accepted (Kafka: 1 MiB).
    pub max_message_bytes: usize,
    /// `min.cleanable.dirty.ratio`: compact once this share of the cleanable log was written
    /// since the last compaction (Kafka: 0.5).
    pub min_cleanable_dirty_ratio: f64,
    /// `delete.retention.ms`: how long a tombstone (a key with a null value) is kept, so a
    /// reader that is behind still sees the delete (Kafka: 1 day).
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: records younger than this are never compacted (Kafka: 0).
    pub min_compaction_lag_ms: i64,
    /// `eddy.flush.each.append`: acknowledge only after fdatasync (on by default; turning it
    /// off trades durability of the last moments for speed).
    pub flush_each_append: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            cleanup_policy: CleanupPolicy::Delete,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1 << 20,
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            flush_each_append: true,
        }
    }
}

impl TopicConfig {
    /// A table's topic: compacted (the latest row of every key is kept forever), no time
    /// retention.
    pub fn compacted(partitions: i32) -> TopicConfig {
        TopicConfig { partitions, cleanup_policy: CleanupPolicy::Compact, retention_ms: None, ..TopicConfig::default() }
    }

    /// Every setting under its Kafka name with its value, as DescribeConfigs reports them
    /// (the partition count is not a topic config in Kafka, so it is not listed).
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("cleanup.policy", self.cleanup_policy.as_str().to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("retention.ms", self.retention_ms.unwrap_or(-1).to_string()),
            ("retention.bytes", self.retention_bytes.map(|b| b as i64).unwrap_or(-1).to_string()),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            ("min.cleanable.dirty.ratio", self.min_cleanable_dirty_ratio.to_string()),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            ("min.compaction.lag.ms", self.min_compaction_lag_ms.to_string()),
            ("eddy.flush.each.append", self.flush_each_append.to_string()),
        ]
    }

    fn to_properties(&self) -> String {
        let mut out = format!("partitions={}\n", self.partitions);
        for (key, value) in self.entries() {
            out.push_str(&format!("{key}={value}\n"));
        }
        out
    }

    /// Applies one Kafka-style setting, e.g. `retention.ms=1000`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), LogError> {
        let bad = || LogError::InvalidTopic(format!("invalid value '{value}' for {key}"));
        let int = |v: &str| v.trim().parse::<i64>().map_err(|_| bad());
        match key {
            "partitions" => self.partitions = int(value)? as i32,
            "cleanup.policy" => self.cleanup_policy = CleanupPolicy::parse(value).ok_or_else(bad)?,
            "segment.bytes" => self.segment_bytes = int(value)?.max(1) as u64,
            "segment.ms" => self.segment_ms = int(value)?.max(1),
            "retention.ms" => self.retention_ms = Some(int(value)?).filter(|v| *v >= 0),
            "retention.bytes" => self.retention_bytes = Some(int(value)?).filter(|v| *v >= 0).map(|v| v as u64),
            "max.message.bytes" => self.max_message_bytes = int(value)?.max(1) as usize,
            "min.cleanable.dirty.ratio" => {
                let ratio = value.trim().parse::<f64>().map_err(|_| bad())?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(bad());
                }
                self.min_cleanable_dirty_ratio = ratio;
            }
            "delete.retention.ms" => self.delete_retention_ms = int(value)?.max(0),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = int(value)?.max(0),
            "eddy.flush.each.append" => self.flush_each_append = value.trim().parse().map_err(|_| bad())?,
            other => return Err(LogError::InvalidTopic(format!("unknown topic setting '{other}'"))),
        }
        if self.partitions < 1 || self.partitions > 10_000 {
            return Err(LogError::InvalidTopic(format!("partition count {} out of range 1..=10000", self.partitions)));
        }
        Ok(())
    }

    /// Reads `topic.properties`; settings it does not mention (a file written before they
    /// existed) keep Kafka's defaults.
    fn parse(text: &str) -> Result<TopicConfig, LogError> {
        let mut config = TopicConfig::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (k, v) = line.split_once('=').ok_or_else(|| LogError::InvalidTopic(format!("bad line '{line}'")))?;
            config.set(k.trim(), v)?;
        }
        Ok(config)
    }
}

/// Says who uses a topic (`Some("stream orders")`), so that it is not deleted under them.
pub type TopicGuard = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A callback run on every append or publish (how async servers learn of new data
/// without this library depending on their runtime).
pub type Subscriber = Box<dyn Fn() + Send + Sync>;

/// Wakes readers waiting for new data in any partition.
#[derive(Default)]
pub struct Notifier {
    version: Mutex<u64>,
    changed: Condvar,
    subscribers: RwLock<Vec<Subscriber>>,
}

impl Notifier {
    pub fn notify(&self) {
        {
            let mut v = self.version.lock().unwrap_or_else(|p| p.into_inner());
            *v += 1;
            self.changed.notify_all();
        }
        for s in self.subscribers.read().unwrap_or_else(|p| p.into_inner()).iter() {
            s();
        }
    }

    pub fn subscribe(&self, subscriber: Subscriber) {
        self.subscribers.write().unwrap_or_else(|p| p.into_inner()).push(subscriber);
    }

    /// The current version, to pass to `wait_past`.
    pub fn version(&self) -> u64 {
        *self.version.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until something was appended or published after `seen`, or `timeout` passes.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = self.version.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) =
            self.changed.wait_timeout_while(guard, timeout, |v| *v <= seen).unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

pub struct Topic {
    pub name: String,
    /// Never empty (a topic has at least one partition).
    pub partitions: Vec<Arc<Partition>>,
    /// Held by a query's sink from its append to its publish, and while a sink claims or
    /// releases the topic: the queries that write one topic checkpoint one at a time.
    pub checkpoint_lock: std::sync::Mutex<()>,
}

impl Topic {
    /// The topic's settings now (every partition holds the same).
    pub fn config(&self) -> TopicConfig {
        self.partitions[0].config()
    }
}

/// All topics under one directory.
pub struct Log {
    dir: PathBuf,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    pub notifier: Arc<Notifier>,
    pub clock: Arc<dyn Clock>,
    /// Asked before a topic is deleted (by Kafka DeleteTopics or anyone else).
    delete_guard: RwLock<Option<TopicGuard>>,
    /// What `open` had to read (reported at start; tests check that a clean restart reads
    /// nothing).
    recovery: RecoveryStats,
}

/// Kafka's rule: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), LogError> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 249 || !ok_chars || name == "." || name == ".." {
        return Err(LogError::InvalidTopic(format!("'{name}': topic names are 1-249 characters of [a-zA-Z0-9._-]")));
    }
    Ok(())
}

impl Log {
    /// Opens every topic under `dir`, recovering each partition's segments.
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<Log, LogError> {
        let started = std::time::Instant::now();
        fs::create_dir_all(dir)?;
        let mut log = Log {
            dir: dir.to_path_buf(),
            topics: RwLock::new(BTreeMap::new()),
            notifier: Arc::new(Notifier::default()),
            clock,
            delete_guard: RwLock::new(None),
            recovery: RecoveryStats::default(),
        };
        let clean_shutdown = dir.join(CLEAN_SHUTDOWN).exists();
        // What a crash left of a create or delete; nothing else is ever removed here (any
        // other name may be a user's topic, e.g. `x.creating`).
        match fs::remove_dir_all(dir.join(TMP_DIR)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_topic_name(&name).is_err() || !entry.path().join("topic.properties").exists() {
                continue;
            }
            let config = TopicConfig::parse(&fs::read_to_string(entry.path().join("topic.properties"))?)?;
            let (topic, stats) = log.open_topic(&name, config, clean_shutdown)?;
            log.recovery.add(&stats);
            log.topics.write().unwrap_or_else(|p| p.into_inner()).insert(name, Arc::new(topic));
        }
        if clean_shutdown {
            // Gone for good before anything is written: after a crash from here on, the
            // active segments' indexes are stale.
            fs::remove_file(dir.join(CLEAN_SHUTDOWN))?;
            partition::sync_dir(dir)?;
        }
        let r = log.recovery;
        tracing::info!(
            "log recovered: {} segments, {} scanned ({} bytes) in {} ms after a {} shutdown",
            r.segments,
            r.segments_scanned,
            r.bytes_scanned,
            started.elapsed().as_millis(),
            if clean_shutdown { "clean" } else { "crash or unclean" }
        );
        Ok(log)
    }

    fn open_topic(
        &self,
        name: &str,
        config: TopicConfig,
        clean_shutdown: bool,
    ) -> Result<(Topic, RecoveryStats), LogError> {
        let now = self.clock.now_ms();
        let mut stats = RecoveryStats::default();
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let dir = self.dir.join(name).join(p.to_string());
            let (partition, opened) =
                Partition::open(name, p, dir, config.clone(), self.notifier.clone(), now, clean_shutdown)?;
            stats.add(&opened);
            partitions.push(Arc::new(partition));
        }
        Ok((Topic { name: name.to_string(), partitions, checkpoint_lock: Default::default() }, stats))
    }

    /// What `open` had to read.
    pub fn recovery(&self) -> RecoveryStats {
        self.recovery
    }

    /// A clean shutdown, once writers have stopped: every active segment is made durable and
    /// its index written, then the clean-shutdown marker, so the next start scans nothing.
    /// A write after this only makes an index stale, which the next start notices (the
    /// segment's length no longer matches) and scans.
    pub fn close(&self) -> Result<(), LogError> {
        for topic in self.topics() {
            for p in &topic.partitions {
                p.close()?;
            }
        }
        fs::File::create(self.dir.join(CLEAN_SHUTDOWN))?.sync_all()?;
        partition::sync_dir(&self.dir)
    }

    /// Creates a topic atomically: built under a temporary name, then renamed.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>, LogError> {
        validate_topic_name(name)?;
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if topics.contains_key(name) {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let tmp = self.dir.join(TMP_DIR).join(format!("create-{name}"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        fs::write(tmp.join("topic.properties"), config.to_properties())?;
        fs::File::open(tmp.join("topic.properties"))?.sync_all()?;
        fs::rename(&tmp, self.dir.join(name))?;
        partition::sync_dir(&self.dir)?;
        let topic = Arc::new(self.open_topic(name, config, false)?.0);
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// From now on `delete_topic` refuses topics that `guard` says are in use.
    pub fn set_delete_guard(&self, guard: TopicGuard) {
        *self.delete_guard.write().unwrap_or_else(|p| p.into_inner()) = Some(guard);
    }

    /// Changes a topic's settings (Kafka's AlterConfigs): `change` edits a copy, which is
    /// written to `topic.properties` (atomically) and then takes effect in every partition.
    /// The partition count does not change here, and a topic in use (a table's) stays
    /// compacted: turning compaction off would expire its old keys.
    pub fn alter_topic_config(
        &self,
        name: &str,
        validate_only: bool,
        change: impl FnOnce(&mut TopicConfig) -> Result<(), LogError>,
    ) -> Result<TopicConfig, LogError> {
        let topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let topic = topics.get(name).ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        let old = topic.config();
        let mut new = old.clone();
        change(&mut new)?;
        if new.partitions != old.partitions {
            return Err(LogError::InvalidTopic(format!("{name}: the partition count is not a setting to alter")));
        }
        if old.cleanup_policy.compacts() && !new.cleanup_policy.compacts() {
            if let Some(user) =
                self.delete_guard.read().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|g| g(name))
            {
                return Err(LogError::InUse {
                    topic: name.to_string(),
                    user: format!("{user}; its topic stays compacted"),
                });
            }
        }
        if validate_only {
            return Ok(new);
        }
        let dir = self.dir.join(name);
        let tmp = dir.join("topic.properties.new");
        fs::write(&tmp, new.to_properties())?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, dir.join("topic.properties"))?;
        partition::sync_dir(&dir)?;
        for p in &topic.partitions {
            p.set_config(new.clone());
        }
        Ok(new)
    }

    /// Deletes a topic and its data, unless the delete guard says it is in use.
    pub fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        if let Some(user) = self.delete_guard.read().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|g| g(name)) {
            return Err(LogError::InUse { topic: name.to_string(), user });
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if topics.remove(name).is_none() {
            return Err(LogError::UnknownTopic(name.to_string()));
        }
        fs::create_dir_all(self.dir.join(TMP_DIR))?;
        let gone = self.dir.join(TMP_DIR).join(format!("delete-{name}-{}", self.clock.now_ms()));
        fs::rename(self.dir.join(name), &gone)?;
        partition::sync_dir(&self.dir)?;
        fs::remove_dir_all(gone)?;
        Ok(())
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, LogError> {
        self.topic(topic)
            .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?).cloned())
            .ok_or_else(|| LogError::UnknownTopic(format!("{topic}-{partition}")))
    }

    /// Appends one batch to a partition and returns where it landed, once durable.
    pub fn append(&self, topic: &str, partition: i32, bytes: &mut [u8]) -> Result<AppendInfo, LogError> {
        self.partition(topic, partition)?.append(bytes, self.clock.now_ms())
    }

    /// Applies retention to every partition whose topic's policy deletes; returns the number
    /// of segments deleted.
    pub fn enforce_retention(&self) -> Result<usize, LogError> {
        let now = self.clock.now_ms();
        let mut deleted = 0;
        for topic in self.topics() {
            for p in &topic.partitions {
                deleted += p.enforce_retention(now)?;
            }
        }
        Ok(deleted)
    }

    /// Compacts every partition of every compacted topic that is dirty enough. A partition
    /// that fails is reported and skipped (its log is untouched), the others go on.
    pub fn compact_all(&self) -> CompactionStats {
        let now = self.clock.now_ms();
        let mut total = CompactionStats::default();
        for topic in self.topics().iter().filter(|t| t.config().cleanup_policy.compacts()) {
            for p in &topic.partitions {
                match p.compact(now) {
                    Ok(stats) => total.add(&stats),
                    Err(e) => tracing::warn!(topic = %topic.name, partition = p.id, "compaction failed: {e}"),
                }
            }
        }
        total
    }
}
