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
//!
//! Files: this one holds the shared pieces (the operators a plan builds, state keys, query
//! status); `task.rs` the persistent query's thread and checkpoint; `push.rs` push queries;
//! `operator/` one operator per file; `source.rs` / `sink.rs` the log on either side.

pub mod changes;
pub mod operator;
mod push;
pub use push::{push_has_op, TRANSIENT_PREFIX};
pub mod sink;
pub mod source;
mod task;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;

use crate::catalog::RelationDef;
use crate::error::{EddyError, Result};
use crate::format::{arrow_schema, cell_at, memcomparable};
use crate::log::Log;
use crate::plan::input_columns;
use crate::plan::{ContinuousPlan, PlanShape};
use crate::sql::RelationKind;
use crate::sql::WindowKind;
use crate::state::{
    StateStore, JOIN_OFFSET_PREFIX, JOIN_ROW_PREFIX, LATE_SINK_PREFIX, OFFSET_PREFIX, PARTITION_TIME_PREFIX,
    PREVIOUS_ROW_PREFIX, ROW_PREFIX, SINK_PREFIX, STATE_FORMAT, STATE_FORMAT_KEY, STREAM_TIME_KEY,
    WINDOW_EXPIRY_PREFIX, WINDOW_OPEN_PREFIX, WORKING_PREFIX,
};
use datafusion::physical_expr::expressions::Column as PhysColumn;
use datafusion::physical_expr::utils::collect_columns;
use operator::aggregate::{AggregateOperator, SessionParams};
use operator::filter_project::{FilterOperator, ProjectOperator};
use operator::interval_join::{cut_after, IntervalJoinOperator, JoinStep, Side, BUFFER_PREFIX, JOIN_CHUNK_BYTES};
use operator::join::{JoinOperator, TableRowCodec};
use operator::table_join::{JoinState, Row, SignedRow, TableJoinOperator};
use operator::upsert::UpsertOperator;
use operator::window::WindowOperator;
use operator::{BatchTime, Change, StateWrite};
use serde_json::Value;
use sink::{PendingOutput, ProcessingLog, Sink};
use source::{DecodedBatch, Source};

/// Settings shared by every query.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// How often a busy query checkpoints (an idle one checkpoints as soon as it is idle).
    pub checkpoint_interval: Duration,
    /// Largest read from one partition per poll.
    pub fetch_bytes_max: usize,
    /// Nice value of query threads (persistent and push queries), so that sessions and
    /// produce requests come first when the cores are busy (0: same priority).
    pub nice: i32,
    /// A source partition with nothing to read for this long stops holding back the query's
    /// watermark (Flink's `withIdleness`); one that never had data is idle after it too.
    pub idle_partition_timeout: Duration,
    /// Memory a stream–stream join's buffers may take before keys spill to the state store
    /// (`--query-memory-bytes`).
    pub join_memory_bytes: usize,
    /// Memory each query may keep state values it read or wrote lately in, in front of
    /// RocksDB (a quarter of `--query-memory-bytes`; 0: none).
    pub state_cache_bytes: usize,
    /// What every query's cache may hold together (`--query-memory-bytes`).
    pub state_cache_total_bytes: usize,
    /// Threads one query may use (`--query-threads`): with 2 or more, a query over one input
    /// reads ahead on a thread of its own (`task/read_ahead.rs`) and an aggregation folds its
    /// groups on this many threads, split by group key (`operator::aggregate`).
    pub query_threads: usize,
    /// An aggregation folds a batch on several threads only from this many rows on.
    pub parallel_min_rows: usize,
}

/// `--query-parallel-min-rows`'s default.
pub const DEFAULT_PARALLEL_MIN_ROWS: usize = 512;

/// `--query-threads`'s default: the machine's cores, at most 4.
pub fn default_query_threads() -> u16 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u16)
}

/// `--idle-partition-timeout-ms`'s default.
pub const DEFAULT_IDLE_PARTITION_TIMEOUT: Duration = Duration::from_millis(1000);

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            checkpoint_interval: Duration::from_millis(200),
            fetch_bytes_max: 1 << 20,
            nice: 0,
            idle_partition_timeout: DEFAULT_IDLE_PARTITION_TIMEOUT,
            join_memory_bytes: 256 << 20,
            state_cache_bytes: 64 << 20,
            state_cache_total_bytes: 256 << 20,
            query_threads: 1,
            parallel_min_rows: DEFAULT_PARALLEL_MIN_ROWS,
        }
    }
}

/// Lowers the calling thread's CPU priority to `nice` (Linux nice values are per thread;
/// threads it starts inherit it). Best effort: a failure is logged and ignored.
pub fn lower_thread_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: plain syscalls on this thread's own id; no memory is shared with the kernel.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice.min(19)) };
    if rc != 0 {
        tracing::warn!("could not lower a query thread's priority: {}", std::io::Error::last_os_error());
    }
}

/// What other threads can see of a running query.
#[derive(Default)]
pub struct QueryStatus {
    /// Source offsets covered by the last committed checkpoint, per partition.
    pub committed: Mutex<Vec<i64>>,
    pub error: Mutex<Option<String>>,
    pub processed_records: std::sync::atomic::AtomicU64,
    /// Records that arrived after their window's grace period.
    pub late_records: std::sync::atomic::AtomicU64,
    /// Records of its inputs that retention deleted before the query read them.
    pub lost_records: Arc<std::sync::atomic::AtomicU64>,
    /// Join keys whose buffered records were dropped from memory (their bound was reached)
    /// and read back from the state store, since the query started.
    pub spilled_keys: std::sync::atomic::AtomicU64,
    pub reloaded_keys: std::sync::atomic::AtomicU64,
}

pub struct RunningQuery {
    pub id: String,
    pub source_topic: String,
    /// Other topics it reads (a joined table's).
    pub other_topics: Vec<String>,
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
    /// Transient queries (push queries with their own state) while they run, by id.
    pub push_queries: Arc<Mutex<BTreeMap<String, PushQueryInfo>>>,
}

/// A running transient query, as SHOW QUERIES and TERMINATE see it.
pub struct PushQueryInfo {
    pub sql: String,
    pub user: String,
    stop: Arc<AtomicBool>,
}

impl PushQueryInfo {
    /// Ends the query: its client's statement completes with the rows sent so far.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub fn state_cf(query_id: &str) -> String {
    format!("q_{query_id}")
}

fn partition_key(prefix: u8, partition: i32) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// What follows the input stage: a projection, an aggregation, or a table's upserts.
enum Body {
    Project(ProjectOperator),
    Aggregate(Box<AggregateOperator>),
    Upsert(UpsertOperator),
}

/// The operators of one plan, built once: input stage (window columns, join), filter,
/// window assignment, then the body.
struct Operators {
    /// Null window-bound columns appended to each source batch (filled by `window`).
    pad_window: bool,
    /// The part of the WHERE that reads only a stream–table join's stream columns, run
    /// before the lookup (over the stream's batch) to spare lookups; `filter` runs whole after.
    prefilter: Option<FilterOperator>,
    /// Stream–table lookups, in order (each adds one table's columns).
    join: Vec<JoinOperator>,
    /// With one joined table: per table column, whether anything after the join reads it
    /// (the query's copy of the table keeps the others as NULL). Empty: all are read.
    join_read: Vec<bool>,
    interval: Option<IntervalJoinOperator>,
    table_join: Option<TableJoinOperator>,
    /// The rows the filter and body see.
    input_schema: SchemaRef,
    /// Output columns that form a table result's key (projections of tables).
    output_key_columns: Vec<usize>,
    filter: Option<FilterOperator>,
    window: Option<WindowOperator>,
    /// Where each input row's event time is (`ContinuousPlan::row_time`).
    row_time: Option<(usize, Option<usize>)>,
    /// Session windows are assigned inside the aggregation (they merge).
    session: Option<SessionParams>,
    body: Body,
    emit_final: bool,
    /// Where windowend / windowstart sit among the group values.
    window_group: Option<(usize, usize)>,
    /// Columns of the source row and of ROWPARTITION/ROWOFFSET in the input batch (for late records).
    source_row: std::ops::Range<usize>,
    origin_columns: Option<(usize, usize)>,
}

impl Operators {
    fn new(plan: ContinuousPlan) -> Result<Operators> {
        let output_schema = arrow_schema(&plan.output_columns);
        let filter = plan.filter.map(|predicate| FilterOperator { predicate });
        let stream_offset = match plan.join.first() {
            Some(j) if !j.stream_first => j.table.columns.len(),
            _ => 0,
        };
        let n_source = plan.source.columns.len();
        let has_pseudo = !crate::plan::pseudo_columns(&plan.source).is_empty();
        let mut join: Vec<JoinOperator> = plan
            .join
            .into_iter()
            .map(|j| {
                Ok(JoinOperator {
                    stream_keys: j.stream_keys,
                    rows: TableRowCodec::new(&j.table.columns)?,
                    table_columns: j.table.columns.clone(),
                    left_outer: j.left_outer,
                    stream_first: j.stream_first,
                    schema: j.schema,
                    row_keys: None,
                    copy_filter: None,
                })
            })
            .collect::<Result<_>>()?;
        let window = plan.window.as_ref().filter(|w| w.spec.kind != WindowKind::Session).map(|w| WindowOperator {
            spec: w.spec,
            rowtime: w.rowtime,
            other_rowtime: w.other_rowtime,
            window_start: w.window_start,
            window_end: w.window_end,
        });
        let table_join = plan.table_join.map(|t| TableJoinOperator {
            kind: t.kind,
            left_key_columns: t.left_key_columns,
            left_width: plan.source.columns.len(),
            right_width: t.right.columns.len(),
        });
        let output_key_columns: Vec<usize> =
            plan.output_columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        let retractions = plan.source.kind == RelationKind::Table;
        let mut window_group = None;
        let body = match plan.shape {
            PlanShape::Project { exprs, table_functions } => {
                Body::Project(ProjectOperator { exprs, table_functions, schema: output_schema })
            }
            PlanShape::Aggregate(a) => {
                if let Some(w) = &plan.window {
                    let pos = |idx: usize| {
                        a.group.iter().position(|g| g.downcast_ref::<PhysColumn>().is_some_and(|c| c.index() == idx))
                    };
                    window_group = pos(w.window_end).zip(pos(w.window_start));
                }
                Body::Aggregate(Box::new(AggregateOperator::new(a, output_schema, retractions)?))
            }
            PlanShape::Upsert => Body::Upsert(UpsertOperator),
        };
        // The columns a projection after a join reads (indices in the joined rows).
        let read_after_join: Option<BTreeSet<usize>> = match (&body, plan.window.is_some()) {
            (Body::Project(p), false) => {
                let used = p.exprs.iter().chain(filter.as_ref().map(|f| &f.predicate));
                let mut used: BTreeSet<usize> = used.flat_map(collect_columns).map(|c| c.index()).collect();
                // The records carry the rows' event times.
                if let Some((rowtime, other)) = plan.row_time {
                    used.extend(std::iter::once(rowtime).chain(other));
                }
                Some(used)
            }
            _ => None,
        };
        let join_read = match (join.as_slice(), &read_after_join) {
            ([j], Some(used)) => {
                let first = if j.stream_first { plan.input_schema.fields().len() - j.table_columns.len() } else { 0 };
                (0..j.table_columns.len()).map(|i| used.contains(&(first + i))).collect()
            }
            _ => Vec::new(),
        };
        // One lookup over a stream: rows the WHERE drops for their stream columns alone are
        // dropped before it (the whole WHERE still runs after it, see `input`).
        // An INNER join's copy of its table leaves out the rows the WHERE rejects for their
        // table columns alone.
        let prefilter = match (join.as_mut_slice(), &filter) {
            ([j], Some(f)) if !retractions => {
                let width = j.schema.fields().len();
                let table = j.table_columns.len();
                let (stream, table) =
                    if j.stream_first { (0..width - table, width - table..width) } else { (table..width, 0..table) };
                if !j.left_outer {
                    j.copy_filter = f.part_within(table, true)?;
                }
                f.part_within(stream, true)?
            }
            _ => None,
        };
        let interval = plan.interval.map(|i| {
            // A window over the join: the left rows' window bounds are NULL until the
            // window fills them in (rows shorter than the width read as NULL).
            let widths =
                (input_columns(&plan.source, plan.window.is_some()).len(), input_columns(&i.right, false).len());
            let mut op = IntervalJoinOperator::new(i, widths, plan.input_schema.clone());
            // A projection after the join needs only the columns its expressions name: the
            // others are buffered as NULL (Nexmark's auctions carry 500-byte descriptions).
            if let Some(used) = &read_after_join {
                op.keep_only(used);
            }
            op
        });
        let session = match (&plan.window, window_group) {
            (Some(w), Some((end_pos, start_pos))) if w.spec.kind == WindowKind::Session => Some(SessionParams {
                rowtime: w.rowtime,
                other_rowtime: w.other_rowtime,
                gap_ms: w.spec.size_ms,
                grace_ms: w.spec.grace_ms,
                start_pos,
                end_pos,
            }),
            _ => None,
        };
        Ok(Operators {
            // (A stream–stream join's rows have them among the left side's columns.)
            pad_window: plan.window.is_some() && interval.is_none(),
            prefilter,
            join,
            join_read,
            interval,
            table_join,
            input_schema: plan.input_schema.clone(),
            output_key_columns,
            filter,
            window,
            row_time: plan.row_time,
            session,
            body,
            emit_final: plan.emit_final,
            window_group,
            source_row: stream_offset..stream_offset + n_source,
            origin_columns: has_pseudo.then_some((stream_offset + n_source + 1, stream_offset + n_source + 2)),
        })
    }

    /// The source's value columns nothing reads (`n_source` of them): a query over one stream,
    /// alone or joined with one table, need not store them (see `Source::set_unread`).
    /// `None`: all are read.
    fn unread_source_columns(&self, n_source: usize) -> Option<Vec<bool>> {
        if self.join.len() > 1 || self.interval.is_some() || self.table_join.is_some() {
            return None;
        }
        let mut read: BTreeSet<usize> = BTreeSet::new();
        if let Some(f) = &self.filter {
            read.extend(collect_columns(&f.predicate).iter().map(|c| c.index()));
        }
        if let Some(w) = &self.window {
            read.insert(w.rowtime);
        }
        if let Some(s) = &self.session {
            read.insert(s.rowtime);
        }
        match &self.body {
            Body::Project(p) => read.extend(p.exprs.iter().flat_map(collect_columns).map(|c| c.index())),
            Body::Aggregate(a) => read.extend(a.input_columns()),
            Body::Upsert(_) => return None,
        }
        // Those are places in the joined rows, where the stream's columns start at
        // `source_row.start`; the lookup keys and the filter before it read the stream's batch.
        let mut read: BTreeSet<usize> = read.into_iter().filter_map(|i| i.checked_sub(self.source_row.start)).collect();
        let before_join =
            self.join.iter().flat_map(|j| j.stream_keys.iter()).chain(self.prefilter.iter().map(|f| &f.predicate));
        read.extend(before_join.flat_map(collect_columns).map(|c| c.index()));
        let unread: Vec<bool> = (0..n_source).map(|i| !read.contains(&i)).collect();
        unread.iter().any(|&u| u).then_some(unread)
    }

    /// Source batch → the plan's input rows: window-bound columns, then the joins
    /// (`lookup(i, keys)` reads the i-th joined table).
    fn input(&self, batch: RecordBatch, lookup: &dyn Fn(usize, &[Vec<u8>]) -> LookupResult) -> Result<RecordBatch> {
        let mut batch = if self.pad_window { pad_window_columns(batch)? } else { batch };
        if let Some(f) = &self.prefilter {
            // Only a shortcut: the whole WHERE runs after the join, so a batch this part
            // fails on (a bad CAST in a row the join would drop) goes to the join whole and
            // the WHERE reports what it reported before, per row.
            if let Ok(kept) = f.process(&batch) {
                batch = kept;
            }
        }
        for (i, j) in self.join.iter().enumerate() {
            batch = j.process(&batch, &|keys: &[Vec<u8>]| lookup(i, keys))?;
        }
        Ok(batch)
    }
}

type LookupResult = Result<Vec<Option<Vec<u8>>>>;

/// Where a joined table's copy lives: `k` + the table's place in the join + its key.
fn join_row_key(table: usize, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.push(JOIN_ROW_PREFIX);
    k.push(table as u8);
    k.extend_from_slice(key);
    k
}

/// A joined input's next offset: `j` + its place among the inputs after the source + partition.
fn join_offset_key(input: usize, partition: i32) -> Vec<u8> {
    let mut k = vec![JOIN_OFFSET_PREFIX, input as u8];
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// Appends NULL `windowstart`, `windowend` columns (the window operator fills them in).
fn pad_window_columns(batch: RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::array::new_null_array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let n = batch.num_rows();
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = batch.columns().to_vec();
    for name in [crate::plan::WINDOWSTART, crate::plan::WINDOWEND] {
        fields.push(Field::new(name, DataType::Int64, true));
        columns.push(new_null_array(&DataType::Int64, n));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// Reads a partition → i64 map (offsets, sink ends) from a query's state.
fn stored_i64(store: &StateStore, cf: &str, prefix: u8, partition: i32) -> Result<Option<i64>> {
    Ok(match store.get(cf, &partition_key(prefix, partition))? {
        Some(b) if b.len() == 8 => Some(i64::from_be_bytes(b.try_into().expect("8 bytes"))),
        _ => None,
    })
}

/// Window index keys sort by time: the sign bit is flipped so negative times sort first.
fn time_key(prefix: u8, time_ms: i64, state_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + state_key.len());
    k.push(prefix);
    k.extend_from_slice(&((time_ms as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(state_key);
    k
}

fn parse_time_key(key: &[u8]) -> Option<(i64, Vec<u8>)> {
    let t = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?) ^ (1 << 63);
    Some((t as i64, key[9..].to_vec()))
}

/// The row a state value holds: a table row (`format::stored`) or an aggregate group's output
/// row (binary, `operator::accumulator`); `None` when it holds none (a group HAVING hides,
/// or a session window's list of sessions, kept among its groups).
pub fn stored_row(bytes: &[u8]) -> Result<Option<Vec<Value>>> {
    match bytes.first() {
        Some(&operator::accumulator::GROUP_STATE_FORMAT) => return operator::accumulator::group_row(bytes),
        Some(&operator::aggregate::SESSION_LIST_FORMAT) => return Ok(None),
        _ => {}
    }
    crate::format::stored::row(bytes)
}

fn prefixed(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(prefix);
    k.extend_from_slice(key);
    k
}

pub fn row_key(state_key: &[u8]) -> Vec<u8> {
    prefixed(ROW_PREFIX, state_key)
}

/// Per-partition progress of a running query against the source's readable end.
pub fn caught_up(log: &Log, q: &RunningQuery) -> bool {
    let Some(topic) = log.topic(&q.source_topic) else { return true };
    let committed = q.status.committed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if !q.is_running() {
        return true;
    }
    // Committed offsets are the source's partitions, then a joined table's.
    let mut ends: Vec<i64> = topic.partitions.iter().map(|p| p.high_watermark()).collect();
    for name in &q.other_topics {
        if let Some(t) = log.topic(name) {
            ends.extend(t.partitions.iter().map(|p| p.high_watermark()));
        }
    }
    ends.iter().zip(committed.iter().chain(std::iter::repeat(&0))).all(|(end, c)| c >= end)
}

/// Records the query is behind its inputs' readable ends (source, then a joined table's),
/// as of its last checkpoint: what `SHOW QUERIES` reports as `lag`.
pub fn lag(log: &Log, q: &RunningQuery) -> i64 {
    let committed = q.status.committed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut ends = Vec::new();
    for name in std::iter::once(&q.source_topic).chain(&q.other_topics) {
        if let Some(t) = log.topic(name) {
            ends.extend(t.partitions.iter().map(|p| p.high_watermark()));
        }
    }
    ends.iter().zip(committed.iter().chain(std::iter::repeat(&0))).map(|(end, c)| (end - c).max(0)).sum()
}

/// Progress snapshot used by FLUSH to detect a fixed point.
pub fn progress(log: &Log, queries: &HashMap<String, RunningQuery>) -> Vec<i64> {
    let mut out = Vec::new();
    for q in queries.values() {
        out.extend(q.status.committed.lock().unwrap_or_else(|p| p.into_inner()).iter());
        for name in std::iter::once(&q.source_topic).chain(&q.other_topics) {
            if let Some(t) = log.topic(name) {
                out.extend(t.partitions.iter().map(|p| p.high_watermark()));
            }
        }
    }
    out
}
