//! The continuous-query runtime: each query is one thread that tails its source partitions,
//! decodes records into Arrow batches, pushes them through its operators, and checkpoints.
//!
//! Checkpoint (exactly-once), in this order:
//!   1. append the output buffered since the last checkpoint to the sink topic (fsync'd,
//!      but not yet visible to readers: the sink partition is fenced);
//!   2. write operator state + source offsets + sink end offsets in one synced RocksDB batch;
//!   3. publish the sink partitions up to those ends.
//!
//! A crash before 2 leaves output past the recorded sink ends, which the restart truncates
//! before anyone could read it; a crash after 2 loses nothing. Operators never see threads.

pub mod operator;
pub mod sink;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;

use crate::catalog::RelationDef;
use crate::error::{EddyError, Result};
use crate::format::{arrow_schema, cell_at};
use crate::log::Log;
use crate::plan::{ContinuousPlan, PlanShape};
use crate::state::{StateStore, OFFSET_PREFIX, ROW_PREFIX, SINK_PREFIX};
use operator::aggregate::AggregateOperator;
use operator::filter_project::{FilterOperator, ProjectOperator};
use operator::upsert::UpsertOperator;
use operator::Change;
use sink::{OutRecord, ProcessingLog, Sink};
use source::{DecodedBatch, Source};

/// Settings shared by every query.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// How often a busy query checkpoints (an idle one checkpoints as soon as it is idle).
    pub checkpoint_interval: Duration,
    /// Largest read from one partition per poll.
    pub fetch_bytes_max: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { checkpoint_interval: Duration::from_millis(200), fetch_bytes_max: 1 << 20 }
    }
}

/// What other threads can see of a running query.
#[derive(Default)]
pub struct QueryStatus {
    /// Source offsets covered by the last committed checkpoint, per partition.
    pub committed: Mutex<Vec<i64>>,
    pub error: Mutex<Option<String>>,
    pub processed_records: std::sync::atomic::AtomicU64,
}

pub struct RunningQuery {
    pub id: String,
    pub source_topic: String,
    pub status: Arc<QueryStatus>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RunningQuery {
    /// Stops the query thread and waits for it (its state stays as last checkpointed).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

/// Everything a query thread needs from the server.
#[derive(Clone)]
pub struct Runtime {
    pub log: Arc<Log>,
    pub store: StateStore,
    pub processing_log: ProcessingLog,
    pub config: RuntimeConfig,
}

pub fn state_cf(query_id: &str) -> String {
    format!("q_{query_id}")
}

fn partition_key(prefix: u8, partition: i32) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The operators of one plan, built once.
enum Operators {
    Project { filter: Option<FilterOperator>, project: ProjectOperator },
    Aggregate { filter: Option<FilterOperator>, aggregate: AggregateOperator },
    Upsert(UpsertOperator),
}

impl Operators {
    fn new(plan: ContinuousPlan) -> Operators {
        let output_schema = arrow_schema(&plan.output_columns);
        let filter = plan.filter.map(|predicate| FilterOperator { predicate });
        match plan.shape {
            PlanShape::Project { exprs } => {
                Operators::Project { filter, project: ProjectOperator { exprs, schema: output_schema } }
            }
            PlanShape::Aggregate(a) => {
                Operators::Aggregate { filter, aggregate: AggregateOperator::new(a, output_schema) }
            }
            PlanShape::Upsert => Operators::Upsert(UpsertOperator),
        }
    }
}

impl Runtime {
    /// Starts a persistent query: resumes from its checkpoint, or from the earliest offset.
    pub fn start_persistent(&self, id: &str, plan: ContinuousPlan, sink: Option<RelationDef>) -> Result<RunningQuery> {
        let cf = state_cf(id);
        self.store.ensure_cf(&cf)?;
        let source = Source::open(&self.log, &plan.source)?;
        let mut offsets = Vec::with_capacity(source.partitions.len());
        for p in &source.partitions {
            let stored = self.store.get(&cf, &partition_key(OFFSET_PREFIX, p.id))?;
            offsets.push(match stored {
                Some(b) if b.len() == 8 => i64::from_be_bytes(b.try_into().expect("8 bytes")),
                _ => p.log_start_offset(),
            });
        }
        let sink = match sink {
            Some(rel) => {
                let mut ends = Vec::new();
                let topic = self
                    .log
                    .topic(&rel.topic)
                    .ok_or_else(|| EddyError::UndefinedRelation(format!("topic {}", rel.topic)))?;
                for p in &topic.partitions {
                    let stored = self.store.get(&cf, &partition_key(SINK_PREFIX, p.id))?;
                    ends.push(match stored {
                        Some(b) if b.len() == 8 => i64::from_be_bytes(b.try_into().expect("8 bytes")),
                        _ => p.log_end_offset(),
                    });
                }
                Some(Sink::open(topic, rel, ends)?)
            }
            None => None,
        };
        let status = Arc::new(QueryStatus { committed: Mutex::new(offsets.clone()), ..Default::default() });
        let stop = Arc::new(AtomicBool::new(false));
        let mut task = QueryTask {
            id: id.to_string(),
            cf,
            rt: self.clone(),
            source,
            offsets,
            ops: Operators::new(plan),
            sink,
            pending_changes: BTreeMap::new(),
            pending_outputs: Vec::new(),
            dirty: true,
            status: status.clone(),
            stop: stop.clone(),
        };
        let source_topic = task.source.relation.topic.clone();
        let thread = std::thread::Builder::new()
            .name(format!("query-{id}"))
            .spawn(move || {
                if let Err(e) = task.run() {
                    tracing::error!(query = %task.id, "query failed: {e}");
                    *task.status.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
            })
            .map_err(|e| EddyError::Internal(format!("spawn query thread: {e}")))?;
        Ok(RunningQuery { id: id.to_string(), source_topic, status, stop, thread: Some(thread) })
    }

    /// Starts a push query: from each partition's end (or start, with
    /// `auto.offset.reset=earliest`), sending projected batches until the receiver goes away.
    pub fn start_push(
        &self,
        plan: ContinuousPlan,
        earliest: bool,
        out: tokio::sync::mpsc::Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let source = Source::open(&self.log, &plan.source)?;
        let offsets: Vec<i64> = source
            .partitions
            .iter()
            .map(|p| if earliest { p.log_start_offset() } else { p.high_watermark() })
            .collect();
        let Operators::Project { filter, project } = Operators::new(plan) else {
            return Err(EddyError::NotImplemented(
                "aggregations in push queries; create a table with CREATE TABLE ... AS SELECT and push-query it (issue #4)".into(),
            ));
        };
        let rt = self.clone();
        std::thread::Builder::new()
            .name("push-query".into())
            .spawn(move || {
                let result = push_loop(&rt, source, offsets, filter, project, &out);
                if let Err(e) = result {
                    let _ = out.blocking_send(Err(e));
                }
            })
            .map_err(|e| EddyError::Internal(format!("spawn push query: {e}")))?;
        Ok(())
    }
}

fn push_loop(
    rt: &Runtime,
    mut source: Source,
    mut offsets: Vec<i64>,
    filter: Option<FilterOperator>,
    project: ProjectOperator,
    out: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
) -> Result<()> {
    loop {
        if out.is_closed() {
            return Ok(());
        }
        let version = rt.log.notifier.version();
        let polled = source.poll(&mut offsets, rt.config.fetch_bytes_max, &rt.processing_log, "push")?;
        match polled {
            None => {
                rt.log.notifier.wait_past(version, Duration::from_millis(100));
            }
            Some(decoded) => {
                let Some(batch) = decoded.batch else { continue };
                let batch = match &filter {
                    Some(f) => f.process(&batch)?,
                    None => batch,
                };
                if batch.num_rows() == 0 {
                    continue;
                }
                let projected = project.process(&batch)?;
                if out.blocking_send(Ok(projected)).is_err() {
                    return Ok(()); // the client went away: tear the query down
                }
            }
        }
    }
}

struct QueryTask {
    id: String,
    cf: String,
    rt: Runtime,
    source: Source,
    /// Next offset to read, per source partition.
    offsets: Vec<i64>,
    ops: Operators,
    sink: Option<Sink>,
    /// State writes since the last checkpoint, by state key (last write wins).
    pending_changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pending_outputs: Vec<OutRecord>,
    /// Offsets moved since the last checkpoint.
    dirty: bool,
    status: Arc<QueryStatus>,
    stop: Arc<AtomicBool>,
}

impl QueryTask {
    /// The continuous-query data path: poll → decode → operators → buffer → checkpoint.
    fn run(&mut self) -> Result<()> {
        let mut last_checkpoint = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let version = self.rt.log.notifier.version();
            let polled = self.source.poll(
                &mut self.offsets,
                self.rt.config.fetch_bytes_max,
                &self.rt.processing_log,
                &self.id,
            )?;
            match polled {
                Some(decoded) => {
                    self.dirty = true;
                    self.process(decoded)?;
                    if last_checkpoint.elapsed() >= self.rt.config.checkpoint_interval {
                        self.checkpoint()?;
                        last_checkpoint = Instant::now();
                    }
                }
                None if self.dirty => {
                    self.checkpoint()?;
                    last_checkpoint = Instant::now();
                }
                None => {
                    self.rt.log.notifier.wait_past(version, Duration::from_millis(100));
                }
            }
        }
        Ok(())
    }

    fn process(&mut self, decoded: DecodedBatch) -> Result<()> {
        self.status.processed_records.fetch_add(decoded.records as u64, Ordering::Relaxed);
        if let Operators::Upsert(op) = &self.ops {
            let changes = op.process(decoded.upserts);
            self.apply(changes);
            return Ok(());
        }
        let Some(batch) = decoded.batch else { return Ok(()) };
        match self.process_batch(&batch, decoded.max_timestamp_ms) {
            Ok(()) => Ok(()),
            Err(e) if !matches!(e, EddyError::State(_) | EddyError::Log(_) | EddyError::Internal(_)) => {
                // An expression failed on some row (say a division by zero): find the rows
                // that fail, report them, and keep going with the rest.
                for (row, (partition, offset)) in decoded.origins.iter().enumerate().take(batch.num_rows()) {
                    if let Err(e) = self.process_batch(&batch.slice(row, 1), decoded.max_timestamp_ms) {
                        let topic = &self.source.relation.topic;
                        self.rt.processing_log.record(&self.id, topic, *partition, *offset, &e.to_string(), None);
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs one batch through the operators, buffering output and state changes.
    fn process_batch(&mut self, batch: &RecordBatch, timestamp_ms: i64) -> Result<()> {
        let changes: Vec<Change> = match &mut self.ops {
            Operators::Upsert(_) => return Ok(()),
            Operators::Project { filter, project } => {
                let batch = match filter {
                    Some(f) => f.process(batch)?,
                    None => batch.clone(),
                };
                let projected = project.process(&batch)?;
                if let Some(sink) = &self.sink {
                    for row in 0..projected.num_rows() {
                        let cells: Vec<_> = projected.columns().iter().map(|c| cell_at(c.as_ref(), row)).collect();
                        self.pending_outputs.push(sink.encode_row(&cells, timestamp_ms));
                    }
                }
                return Ok(());
            }
            Operators::Aggregate { filter, aggregate } => {
                let batch = match filter {
                    Some(f) => f.process(batch)?,
                    None => batch.clone(),
                };
                let store = &self.rt.store;
                let cf = &self.cf;
                let pending = &self.pending_changes;
                let load = |keys: &[Vec<u8>]| -> Result<Vec<Option<Vec<u8>>>> {
                    let full: Vec<Vec<u8>> = keys.iter().map(|k| row_key(k)).collect();
                    let mut out = store.multi_get(cf, &full)?;
                    for (i, k) in keys.iter().enumerate() {
                        if let Some(p) = pending.get(k) {
                            out[i] = p.clone();
                        }
                    }
                    Ok(out)
                };
                aggregate.process(&batch, timestamp_ms, &load)?
            }
        };
        self.apply(changes);
        Ok(())
    }

    fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            if let Some(sink) = &self.sink {
                self.pending_outputs.push(sink.encode_change(&change));
            }
            self.pending_changes.insert(change.state_key, change.state_value);
        }
    }

    /// Sink output, then one atomic state write, then publish (see the module comment).
    fn checkpoint(&mut self) -> Result<()> {
        let mut cp = self.rt.store.checkpoint(&self.cf);
        if let Some(sink) = &mut self.sink {
            sink.append(std::mem::take(&mut self.pending_outputs))?;
            for (p, end) in sink.ends.iter().enumerate() {
                cp.put(&self.rt.store, &partition_key(SINK_PREFIX, p as i32), &end.to_be_bytes())?;
            }
        }
        for (k, v) in std::mem::take(&mut self.pending_changes) {
            match v {
                Some(v) => cp.put(&self.rt.store, &row_key(&k), &v)?,
                None => cp.delete(&self.rt.store, &row_key(&k))?,
            }
        }
        for (p, off) in self.source.partitions.iter().zip(&self.offsets) {
            cp.put(&self.rt.store, &partition_key(OFFSET_PREFIX, p.id), &off.to_be_bytes())?;
        }
        self.rt.store.commit(cp)?;
        if let Some(sink) = &self.sink {
            sink.publish();
        }
        if let Operators::Aggregate { aggregate, .. } = &mut self.ops {
            aggregate.clear_cache();
        }
        *self.status.committed.lock().unwrap_or_else(|p| p.into_inner()) = self.offsets.clone();
        self.dirty = false;
        Ok(())
    }
}

pub fn row_key(state_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(state_key.len() + 1);
    k.push(ROW_PREFIX);
    k.extend_from_slice(state_key);
    k
}

/// Per-partition progress of a running query against the source's readable end.
pub fn caught_up(log: &Log, q: &RunningQuery) -> bool {
    let Some(topic) = log.topic(&q.source_topic) else { return true };
    let committed = q.status.committed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if !q.is_running() {
        return true;
    }
    topic.partitions.iter().zip(committed.iter().chain(std::iter::repeat(&0))).all(|(p, c)| *c >= p.high_watermark())
}

/// Progress snapshot used by FLUSH to detect a fixed point.
pub fn progress(log: &Log, queries: &HashMap<String, RunningQuery>) -> Vec<i64> {
    let mut out = Vec::new();
    for q in queries.values() {
        out.extend(q.status.committed.lock().unwrap_or_else(|p| p.into_inner()).iter());
        if let Some(t) = log.topic(&q.source_topic) {
            out.extend(t.partitions.iter().map(|p| p.high_watermark()));
        }
    }
    out
}
