//! Sink: encodes a query's output rows into records and appends them to the output topic at
//! checkpoint time, fenced until the checkpoint commits. Also the processing log, where
//! records that could not be processed are written for users to query.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use serde_json::Value;

use super::operator::Change;
use crate::catalog::RelationDef;
use crate::error::Result;
use crate::format::cell_at;
use crate::format::json_batch::JsonRowEncoder;
use crate::format::key::partition_key;
use crate::format::{encode_key, encode_value, ValueFormat};
use crate::log::batch::{encode_batch, BatchBuilder, LogRecord};
use crate::log::{Log, Topic};

pub struct OutRecord {
    pub partition: i32,
    pub record: LogRecord,
}

/// Output waiting for the next checkpoint, already encoded: per partition, record batches of
/// up to `SINK_BATCH_BYTES`, written as rows come. The batches' memory is kept from one
/// checkpoint to the next (up to `RETAINED_BYTES`; a query checkpoints early when its output
/// reaches `CHECKPOINT_BYTES`), so steady output allocates nothing.
#[derive(Default)]
pub struct PendingOutput {
    /// Per partition: batches, the full ones then the open one; `used` of them hold records.
    partitions: Vec<PartitionOutput>,
    /// Bytes in the full batches (the open ones' are not counted).
    full_bytes: usize,
    /// One row's value while it is encoded.
    scratch: Vec<u8>,
}

#[derive(Default)]
struct PartitionOutput {
    batches: Vec<BatchBuilder>,
    used: usize,
}

/// Batch memory a query's pending output keeps between checkpoints.
const RETAINED_BYTES: usize = 32 << 20;

/// Pending output at which a query checkpoints without waiting for the interval: the batches
/// it filled (each with a quarter of room to spare) are then all kept for the next ones.
pub const CHECKPOINT_BYTES: usize = RETAINED_BYTES / 4 * 3;

impl PendingOutput {
    pub fn push(&mut self, record: &OutRecord) {
        let r = &record.record;
        self.push_raw(record.partition, r.timestamp_ms, r.key.as_deref(), r.value.as_deref(), &r.headers);
    }

    fn push_raw(
        &mut self,
        partition: i32,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(String, Option<Vec<u8>>)],
    ) {
        let p = partition as usize;
        if self.partitions.len() <= p {
            self.partitions.resize_with(p + 1, PartitionOutput::default);
        }
        let out = &mut self.partitions[p];
        let open_is_full = out.used > 0 && out.batches[out.used - 1].len_bytes() >= SINK_BATCH_BYTES;
        if out.used == 0 || open_is_full {
            if open_is_full {
                self.full_bytes += out.batches[out.used - 1].len_bytes();
            }
            if out.batches.len() == out.used {
                // Room for a full batch and the record that ends it.
                out.batches.push(BatchBuilder::with_capacity(SINK_BATCH_BYTES + SINK_BATCH_BYTES / 4));
            }
            out.batches[out.used].clear();
            out.used += 1;
        }
        out.batches[out.used - 1].push(timestamp_ms, key, value, headers);
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.iter().all(|p| p.used == 0)
    }

    /// Whether the pending output has reached `CHECKPOINT_BYTES` (counting full batches).
    pub fn wants_checkpoint(&self) -> bool {
        self.full_bytes >= CHECKPOINT_BYTES
    }

    /// Empty again (the checkpoint committed), keeping batch memory up to `RETAINED_BYTES`.
    pub fn clear(&mut self) {
        self.full_bytes = 0;
        let mut kept = 0;
        for p in &mut self.partitions {
            p.used = 0;
            p.batches.retain(|b| {
                kept += b.capacity();
                kept <= RETAINED_BYTES
            });
        }
    }
}

/// Row `i`'s event time from `times`, or `default` (none given, or NULL).
pub fn row_time(times: Option<&Int64Array>, i: usize, default: i64) -> i64 {
    match times {
        Some(t) if t.is_valid(i) => t.value(i),
        _ => default,
    }
}

pub struct Sink {
    topic: Arc<Topic>,
    /// The query that owns the topic's partitions while it runs (the only writer).
    owner: String,
    relation: RelationDef,
    /// Per partition: the offset after this query's output appended so far (committed or
    /// not yet).
    pub ends: Vec<i64>,
    /// Per partition: the offset after this query's last committed output.
    committed: Vec<i64>,
    round_robin: std::cell::Cell<usize>,
    /// Where each key column's value is in a change's key values (see
    /// `ContinuousPlan::change_key_order`); `None`: in the key columns' order.
    pub key_order: Option<Vec<usize>>,
}

/// Keep appended batches well under `max.message.bytes`.
const SINK_BATCH_BYTES: usize = 256 * 1024;

impl Sink {
    /// Drops output written after the last checkpoint and claims the topic for query `owner`
    /// from `ends` on: only it writes, readers see what its checkpoints publish.
    pub fn open(owner: &str, topic: Arc<Topic>, relation: RelationDef, ends: Vec<i64>) -> Result<Sink> {
        let ends = claim_output(owner, &topic, &ends)?;
        Ok(Sink {
            topic,
            owner: owner.to_string(),
            relation,
            committed: ends.clone(),
            ends,
            round_robin: std::cell::Cell::new(0),
            key_order: None,
        })
    }

    fn partition_for(&self, key: Option<&[u8]>) -> i32 {
        let n = self.topic.partitions.len() as u32;
        match key {
            Some(k) => ((murmur2(partition_key(self.relation.key_window, k)) & 0x7fff_ffff) % n) as i32,
            None => {
                let next = self.round_robin.get();
                self.round_robin.set(next.wrapping_add(1));
                (next as u32 % n) as i32
            }
        }
    }

    pub fn encode_row(&self, row: &[Value], timestamp_ms: i64) -> OutRecord {
        let key = encode_key(&self.relation.columns, self.relation.key_layout(), row);
        let value = encode_value(&self.relation.columns, self.relation.value_encoding(), row);
        OutRecord {
            partition: self.partition_for(key.as_deref()),
            record: LogRecord { offset: 0, timestamp_ms, key, value, headers: Vec::new() },
        }
    }

    /// Every row of a projected batch (columns in the relation's order), encoded straight from
    /// Arrow into `out` when the format and types allow (`false`: nothing written, use
    /// `encode_row` per row). Row `i` carries `times[i]` when given (a NULL: `timestamp_ms`).
    pub fn encode_batch(
        &self,
        batch: &RecordBatch,
        timestamp_ms: i64,
        times: Option<&Int64Array>,
        out: &mut PendingOutput,
    ) -> bool {
        if self.relation.value_encoding() != ValueFormat::Json {
            return false;
        }
        let Some(encoder) = JsonRowEncoder::new(&self.relation.columns, batch) else { return false };
        let key_columns: Vec<usize> =
            self.relation.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        let mut row = vec![Value::Null; self.relation.columns.len()];
        let mut value = std::mem::take(&mut out.scratch);
        for i in 0..batch.num_rows() {
            value.clear();
            encoder.write_row(i, &mut value);
            let key = if key_columns.is_empty() {
                None
            } else {
                for &k in &key_columns {
                    row[k] = cell_at(batch.column(k).as_ref(), i);
                }
                encode_key(&self.relation.columns, self.relation.key_layout(), &row)
            };
            let ts = row_time(times, i, timestamp_ms);
            out.push_raw(self.partition_for(key.as_deref()), ts, key.as_deref(), Some(&value), &[]);
        }
        out.scratch = value;
        true
    }

    /// A table change: the new row, or a tombstone for its key.
    pub fn encode_change(&self, change: &Change) -> OutRecord {
        let key = match &change.row {
            Some(row) => encode_key(&self.relation.columns, self.relation.key_layout(), row),
            None => None,
        }
        .or_else(|| self.key_from_values(&change.key_values));
        let value = change
            .row
            .as_ref()
            .and_then(|row| encode_value(&self.relation.columns, self.relation.value_encoding(), row));
        OutRecord {
            partition: self.partition_for(key.as_deref()),
            record: LogRecord { offset: 0, timestamp_ms: change.timestamp_ms, key, value, headers: Vec::new() },
        }
    }

    /// A tombstone's key, from the change's key values.
    fn key_from_values(&self, values: &[Value]) -> Option<Vec<u8>> {
        let key_cols: Vec<usize> =
            self.relation.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        let order: Vec<usize> = match &self.key_order {
            Some(order) => order.clone(),
            None => (0..values.len()).collect(),
        };
        if !values.is_empty() && order.len() == key_cols.len() && order.iter().all(|&i| i < values.len()) {
            let mut row = vec![Value::Null; self.relation.columns.len()];
            for (&col, &i) in key_cols.iter().zip(&order) {
                row[col] = values[i].clone();
            }
            return encode_key(&self.relation.columns, self.relation.key_layout(), &row);
        }
        Some(Value::Array(values.to_vec()).to_string().into_bytes())
    }

    /// Appends output (durably, still fenced) and advances `ends`. The output stays with the
    /// caller until the checkpoint commits, so a failed append can be retried.
    pub fn append(&mut self, output: &mut PendingOutput) -> Result<()> {
        // Start from the committed ends (the callers hold the topic's `checkpoint_lock`, so
        // they are what the topic's owners published: other queries may append to it with
        // `INSERT INTO ... SELECT`). If an earlier roll-back could not cut its output off, it
        // is cut now or this checkpoint fails again, never appending twice.
        for (p, end) in self.topic.partitions.iter().zip(self.committed.iter_mut()) {
            let published = p.published_end();
            if published != i64::MAX {
                *end = published;
            }
            if p.log_end_offset() != *end {
                p.truncate_to(*end)?;
            }
        }
        self.ends.clone_from(&self.committed);
        // Each partition's batches are written, then made durable with one fsync.
        for (p, out) in output.partitions.iter_mut().enumerate() {
            for batch in &mut out.batches[..out.used] {
                batch.finish();
                let now = batch.max_timestamp_ms().max(0);
                let info = self.topic.partitions[p].write_as(Some(&self.owner), batch.bytes(), now)?;
                self.ends[p] = info.last_offset + 1;
            }
            if out.used > 0 {
                self.topic.partitions[p].make_durable(self.ends[p])?;
            }
        }
        Ok(())
    }

    /// The checkpoint holding `ends` committed.
    pub fn mark_committed(&mut self) {
        self.committed = self.ends.clone();
    }

    /// A checkpoint failed: cut what it appended (never visible: fenced) back off.
    pub fn roll_back(&mut self) -> Result<()> {
        if crate::failpoint::should_fail("checkpoint:roll_back_error") {
            return Err(crate::error::EddyError::State("injected failure of a roll-back".into()));
        }
        for (p, end) in self.topic.partitions.iter().zip(&self.committed) {
            p.truncate_to(*end)?;
            crate::failpoint::hit("checkpoint:in_roll_back");
        }
        self.ends = self.committed.clone();
        Ok(())
    }

    /// The topic this sink writes.
    pub fn topic(&self) -> &Arc<Topic> {
        &self.topic
    }

    /// Makes committed output visible to readers.
    pub fn publish(&self) {
        for (p, end) in self.topic.partitions.iter().zip(&self.ends) {
            p.publish(*end);
        }
    }
}

/// Query `owner` takes `topic`: output past its last checkpoint (`ends`) is cut off, and
/// from then on only the query writes and readers see only what its checkpoints publish.
/// Also used for a query that cannot resume: its output stays fenced and cut, never exposed.
/// When other queries own the topic already, what they published is where it ends. Returns
/// the ends the topic was cut to.
pub fn claim_output(owner: &str, topic: &Topic, ends: &[i64]) -> Result<Vec<i64>> {
    let _turn = topic.checkpoint_lock.lock().unwrap_or_else(|p| p.into_inner());
    let mut cut = Vec::with_capacity(ends.len());
    for (p, end) in topic.partitions.iter().zip(ends) {
        // Claimed first: from here nothing past `end` is visible (nor compacted) until cut.
        let end = p.claim(owner, *end);
        if p.log_end_offset() > end {
            tracing::info!(topic = %topic.name, partition = p.id, "dropping output past the last checkpoint at offset {end}");
        }
        p.truncate_to(end)?;
        cut.push(end);
    }
    Ok(cut)
}

/// Kafka's default partitioner hash (murmur2), so keys land where Kafka clients put them.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let seed: u32 = 0x9747_b28c;
    let len = data.len();
    let mut h: u32 = seed ^ len as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

pub const PROCESSING_LOG: &str = "eddy_processing_log";

/// Where records that could not be processed are reported (a stream users can query).
///
/// A persistent query's entries are buffered and written with its checkpoint (see
/// `QueryTask::checkpoint`), so a record replayed after a crash is not reported twice and a
/// reported record is never lost; push queries and other callers write directly.
#[derive(Clone)]
pub struct ProcessingLog {
    pub log: Arc<Log>,
    buffer: Option<Arc<std::sync::Mutex<Vec<LogRecord>>>>,
}

/// Tells apart the entries of one process (with the query id and a counter).
static ENTRY_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl ProcessingLog {
    pub fn direct(log: Arc<Log>) -> ProcessingLog {
        ProcessingLog { log, buffer: None }
    }

    /// A processing log whose entries wait in memory until `take_buffered`.
    pub fn buffered(&self) -> ProcessingLog {
        ProcessingLog { log: self.log.clone(), buffer: Some(Arc::default()) }
    }

    pub fn record(&self, query_id: &str, topic: &str, partition: i32, offset: i64, error: &str, record: Option<&[u8]>) {
        tracing::warn!(query = query_id, topic, partition, offset, "skipped a record: {error}");
        let now = self.log.clock.now_ms();
        let n = ENTRY_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let value = serde_json::json!({
            "logged_at": now,
            "query_id": query_id,
            "topic": topic,
            "source_partition": partition,
            "source_offset": offset,
            "error": error,
            "record": record.map(|r| String::from_utf8_lossy(&r[..r.len().min(4096)]).into_owned()),
            "entry_id": format!("{query_id}/{}/{n}", std::process::id()),
        });
        let rec = LogRecord {
            offset: 0,
            timestamp_ms: now,
            key: None,
            value: Some(value.to_string().into_bytes()),
            headers: Vec::new(),
        };
        match &self.buffer {
            Some(buffer) => buffer.lock().unwrap_or_else(|p| p.into_inner()).push(rec),
            None => self.append(vec![rec]),
        }
    }

    /// Puts entries back in front of the buffer (their checkpoint failed).
    pub fn put_back(&self, mut records: Vec<LogRecord>) {
        if let Some(buffer) = &self.buffer {
            let mut buffer = buffer.lock().unwrap_or_else(|p| p.into_inner());
            records.append(&mut buffer);
            *buffer = records;
        }
    }

    /// Adds entries another buffered log took (a query's read-ahead thread hands over the
    /// entries of the records it decoded with those records).
    pub fn extend_buffered(&self, records: Vec<LogRecord>) {
        match &self.buffer {
            Some(buffer) => buffer.lock().unwrap_or_else(|p| p.into_inner()).extend(records),
            None => self.append(records),
        }
    }

    /// Entries buffered since the last call.
    pub fn take_buffered(&self) -> Vec<LogRecord> {
        match &self.buffer {
            Some(buffer) => std::mem::take(&mut *buffer.lock().unwrap_or_else(|p| p.into_inner())),
            None => Vec::new(),
        }
    }

    /// The processing log's end offset now.
    pub fn end_offset(&self) -> i64 {
        self.log.topic(PROCESSING_LOG).and_then(|t| t.partitions.first().map(|p| p.log_end_offset())).unwrap_or(0)
    }

    /// Entry ids written at or after `offset`.
    pub fn entry_ids_since(&self, offset: i64) -> std::collections::HashSet<String> {
        let mut ids = std::collections::HashSet::new();
        let Some(p) = self.log.topic(PROCESSING_LOG).and_then(|t| t.partitions.first().cloned()) else { return ids };
        let mut next = offset.max(p.log_start_offset());
        while next < p.log_end_offset() {
            let Ok(read) = p.read(next, 1 << 20) else { break };
            if read.bytes.is_empty() {
                break;
            }
            let before = next;
            for (header, batch) in crate::log::batch::batches_in(&read.bytes) {
                next = next.max(header.last_offset() + 1);
                for r in crate::format::decode_batch(batch).unwrap_or_default() {
                    let id = r.value.as_deref().and_then(|v| serde_json::from_slice::<Value>(v).ok());
                    if let Some(Value::String(id)) = id.as_ref().and_then(|v| v.get("entry_id")) {
                        ids.insert(id.clone());
                    }
                }
            }
            if next == before {
                break;
            }
        }
        ids
    }

    pub fn append(&self, records: Vec<LogRecord>) {
        if records.is_empty() {
            return;
        }
        // Batches well under max.message.bytes: a burst of bad or late records may be large.
        let mut start = 0;
        let mut size = 0;
        for (i, r) in records.iter().enumerate() {
            size += r.value.as_ref().map_or(0, Vec::len) + r.key.as_ref().map_or(0, Vec::len) + 32;
            if size >= SINK_BATCH_BYTES || i + 1 == records.len() {
                let mut bytes = encode_batch(&records[start..=i]);
                if let Err(e) = self.log.append(PROCESSING_LOG, 0, &mut bytes) {
                    tracing::error!("could not write to the processing log: {e}");
                }
                start = i + 1;
                size = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{decode_records, set_base_offset, validate};

    /// The records of each partition's batches, in order, after `finish` (as `Sink::append`
    /// writes them).
    fn written(out: &mut PendingOutput) -> Vec<Vec<Vec<u8>>> {
        out.partitions
            .iter_mut()
            .map(|p| {
                let mut values = Vec::new();
                for b in &mut p.batches[..p.used] {
                    b.finish();
                    set_base_offset(b.bytes(), 0);
                    validate(b.bytes()).unwrap();
                    values.extend(decode_records(b.bytes()).unwrap().into_iter().map(|r| r.value.unwrap()));
                }
                values
            })
            .collect()
    }

    #[test]
    fn pending_output_splits_batches_keeps_order_and_is_reused() {
        let mut out = PendingOutput::default();
        assert!(out.is_empty());
        let value = |i: usize| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(1000)).into_bytes();
        // About 1.2 MiB into partition 1, a little into partition 0.
        for i in 0..1200 {
            out.push_raw(1, i as i64, None, Some(&value(i)), &[]);
        }
        out.push_raw(0, 5, Some(b"k"), Some(b"v"), &[]);
        assert!(out.partitions[1].used >= 5, "batches are cut at SINK_BATCH_BYTES");
        assert!(out.partitions[1].batches[..out.partitions[1].used]
            .iter()
            .all(|b| b.len_bytes() < 2 * SINK_BATCH_BYTES));
        let got = written(&mut out);
        assert_eq!(got[0], vec![b"v".to_vec()]);
        assert_eq!(got[1], (0..1200).map(value).collect::<Vec<_>>(), "every record once, in order");

        // After a checkpoint the memory stays, and the next output starts from empty batches.
        out.clear();
        assert!(out.is_empty());
        assert!(out.partitions[1].batches.len() >= 5, "batch memory is kept");
        out.push_raw(1, 7, None, Some(b"next"), &[]);
        assert_eq!(written(&mut out)[1], vec![b"next".to_vec()]);
    }

    #[test]
    fn pending_output_asks_for_a_checkpoint_before_it_outgrows_the_memory_it_keeps() {
        let mut out = PendingOutput::default();
        let value = vec![b'x'; 1000];
        let mut n = 0;
        while !out.wants_checkpoint() {
            out.push_raw(0, n, None, Some(&value), &[]);
            n += 1;
            assert!(n < 1_000_000, "never asked for a checkpoint");
        }
        // Each record takes its value and a few bytes of framing.
        assert!(n as usize * (value.len() + 16) >= CHECKPOINT_BYTES);
        let used = out.partitions[0].used;
        out.clear();
        assert!(!out.wants_checkpoint());
        assert_eq!(out.partitions[0].batches.len(), used, "every batch it filled is kept for the next ones");
    }

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(super::murmur2(b"21") as i32, -973932308);
        assert_eq!(super::murmur2(b"foobar") as i32, -790332482);
        assert_eq!(super::murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(super::murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(super::murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(super::murmur2(b"abc") as i32, 479470107);
    }
}
