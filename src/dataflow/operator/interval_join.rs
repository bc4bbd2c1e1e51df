//! Stream–stream join within a time window (`a JOIN b WITHIN 1 MINUTE ON a.k = b.k`): a left
//! record at `t` matches right records with the same key in `[t - before, t + after]`. Each
//! side's records are buffered until no match can come any more (the watermark past
//! `t + window + grace`); then, for LEFT and FULL joins, a record that never matched is
//! emitted with NULLs. Records arriving after that point are late and reported.
//!
//! The buffers live in memory and are written to RocksDB at each checkpoint (`drain_writes`,
//! into the caller's pending state), so they are checkpointed with the source offsets and
//! bounded by the window. Only what changed since the last checkpoint is written, and a
//! record that came and expired in between is never written at all: replaying from the
//! checkpoint's offsets brings it back.
//!
//! In memory, each side's records are grouped by join key (a hash map), and each key's
//! records are kept in event-time order: a lookup is one hash probe and a binary search, and
//! since a record's expiry is its time plus a constant of its side, the next record of a key
//! to expire is always the first one.
//!
//! The buffers are bounded (`memory_max_bytes`, the server's `--query-memory-bytes`): right
//! after a checkpoint, when every buffered record is in the state store, keys are dropped
//! from memory until the buffers take half the bound ("spilled"). A spilled key's records
//! are read back from the store (one prefix read) the first time the key is probed, gets a
//! record or has one expire; its expiry entries stay in the heap meanwhile.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use serde::Deserialize;
use serde_json::Value;

use super::BatchTime;
use crate::dataflow::source::DecodedBatch;
use crate::error::{EddyError, Result};
use crate::format::{cell_at, cell_refs_to_array, memcomparable, stored};
use crate::plan::{IntervalJoinPlan, JoinKind};

/// Key prefix of buffered records in the query's state.
pub const BUFFER_PREFIX: u8 = b'B';

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Left = 0,
    Right = 1,
}

/// First byte of a buffered record as the state store keeps it: then 1 if it was matched
/// at least once (outer joins emit unmatched records with NULLs), else 0, then its cells
/// (`format::stored`). Records buffered before were JSON, `{"r": [cells], "m": matched}`.
const BUFFERED_FORMAT: u8 = 0xB5;

/// A buffered record as JSON state held it.
#[derive(Debug, Deserialize)]
struct LegacyStored {
    r: Vec<Value>,
    m: bool,
}

/// A buffered record.
#[derive(Debug)]
struct Buffered {
    ts: i64,
    seq: u64,
    /// The record's cells (shared with the joined rows it is part of).
    r: Row,
    matched: bool,
    /// Written to the state store by a checkpoint (its expiry must delete it there).
    stored: bool,
    /// Added or changed since the last checkpoint (and listed in `dirty`).
    dirty: bool,
}

/// One side's cells of a record.
pub type Row = Arc<[Value]>;

/// A state write: the key, and the value or `None` to delete it.
pub type StateWrite = (Vec<u8>, Option<Vec<u8>>);

/// A join key's encoding (memcomparable), shared by the buffer and the queues that name it.
type JoinKey = Arc<[u8]>;

/// (side, join key, event time, sequence): a buffered record's identity, in key-then-time order.
type BufferKey = (Side, JoinKey, i64, u64);

/// One side's records with one join key, in (event time, sequence) order.
struct KeyRecords {
    key: JoinKey,
    records: VecDeque<Buffered>,
}

impl KeyRecords {
    /// Inserts in (time, sequence) order: at the back unless the record is out of order.
    fn insert(&mut self, rec: Buffered) {
        if self.records.back().is_none_or(|b| (b.ts, b.seq) <= (rec.ts, rec.seq)) {
            self.records.push_back(rec);
        } else {
            let at = self.records.partition_point(|b| (b.ts, b.seq) <= (rec.ts, rec.seq));
            self.records.insert(at, rec);
        }
    }

    fn position(&self, ts: i64, seq: u64) -> Option<usize> {
        let at = self.records.partition_point(|b| (b.ts, b.seq) < (ts, seq));
        self.records.get(at).is_some_and(|b| b.seq == seq).then_some(at)
    }
}

type SideBuffer = foldhash::HashMap<JoinKey, KeyRecords>;

/// Reads every state entry whose key starts with a prefix (a spilled key's records).
pub type PrefixLoader<'a> = &'a dyn Fn(&[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

pub struct IntervalJoinOperator {
    /// The join as planned: kind, keys per side, window, where ROWTIME is.
    pub plan: IntervalJoinPlan,
    pub left_width: usize,
    pub right_width: usize,
    /// The joined rows' schema (left columns, then right columns).
    pub schema: SchemaRef,
    /// Each side's buffered records, by join key.
    buffers: [SideBuffer; 2],
    /// When each buffered record stops being matchable, earliest first, for expiry.
    expiry: BinaryHeap<Reverse<(i64, BufferKey)>>,
    next_seq: u64,
    /// Buffered records added or changed since the last checkpoint (each once; some may
    /// have expired since).
    dirty: Vec<BufferKey>,
    /// Keys of stored records that expired since the last checkpoint.
    gone: Vec<Vec<u8>>,
    /// Per joined column: whether anything after the join reads it (unread ones are
    /// buffered as NULL). Empty: all are read.
    read: Vec<bool>,
    /// A row of NULLs for each side (outer joins' unmatched records).
    nulls: [Row; 2],
    /// About how many bytes the buffered records take in memory.
    memory_bytes: usize,
    /// Past this, keys are spilled after the next checkpoint (`usize::MAX`: never).
    pub memory_max_bytes: usize,
    /// Keys whose records are in the state store only, per side.
    spilled: [foldhash::HashSet<JoinKey>; 2],
    /// Keys spilled and read back since the query started, for SHOW QUERIES and tests.
    pub spills: u64,
    pub reloads: u64,
}

/// What one step produced.
#[derive(Default)]
pub struct JoinStep {
    /// Joined rows, as (left cells, right cells), and each one's timestamp: the later of
    /// the two records.
    pub rows: Vec<(Row, Row)>,
    pub timestamps: Vec<i64>,
    /// Input rows that arrived after their join window closed.
    pub late: Vec<usize>,
}

impl IntervalJoinOperator {
    pub fn new(plan: IntervalJoinPlan, (left_width, right_width): (usize, usize), schema: SchemaRef) -> Self {
        IntervalJoinOperator {
            plan,
            left_width,
            right_width,
            schema,
            buffers: [SideBuffer::default(), SideBuffer::default()],
            expiry: BinaryHeap::new(),
            next_seq: 0,
            dirty: Vec::new(),
            gone: Vec::new(),
            read: Vec::new(),
            nulls: [nulls(left_width), nulls(right_width)],
            memory_bytes: 0,
            memory_max_bytes: usize::MAX,
            spilled: [Default::default(), Default::default()],
            spills: 0,
            reloads: 0,
        }
    }

    /// Only the joined columns in `used` are read after the join; the rest need not be kept.
    pub fn keep_only(&mut self, used: &BTreeSet<usize>) {
        self.read = (0..self.left_width + self.right_width).map(|i| used.contains(&i)).collect();
    }

    /// Whether column `i` of `side`'s rows is read after the join.
    fn is_read(&self, side: Side, i: usize) -> bool {
        let joined = match side {
            Side::Left => i,
            Side::Right => self.left_width + i,
        };
        self.read.get(joined).copied().unwrap_or(true)
    }

    /// Rebuilds the buffers from the state a checkpoint stored. Entries come in key order,
    /// so each join key's records are together: once the buffers are past half their bound,
    /// the keys that follow stay spilled (only their expiry entries are kept in memory).
    pub fn restore(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        for (k, v) in entries {
            let (side, key, ts, seq) =
                parse_key(&k).ok_or_else(|| EddyError::Internal("bad join buffer key".into()))?;
            self.next_seq = self.next_seq.max(seq + 1);
            let in_memory = self.buffers[side as usize].contains_key(key.as_slice());
            let shared = if in_memory || (!self.spilled[side as usize].contains(key.as_slice()) && !self.over_half()) {
                let rec = decode(&v, ts, seq)?;
                self.buffer(side, &key, rec)
            } else {
                let shared: JoinKey = Arc::from(key.as_slice());
                self.spilled[side as usize].insert(shared.clone());
                shared
            };
            self.expiry.push(Reverse((self.expires_at(side, ts), (side, shared, ts, seq))));
        }
        Ok(())
    }

    fn over_half(&self) -> bool {
        self.memory_bytes > self.memory_max_bytes / 2
    }

    /// After a checkpoint committed (every record is stored and clean): past the bound,
    /// drops keys from memory until the buffers take half of it. Returns how many.
    pub fn spill(&mut self) -> usize {
        if self.memory_bytes <= self.memory_max_bytes {
            return 0;
        }
        let mut spilled = 0;
        for side in [Side::Left, Side::Right] {
            let map = &mut self.buffers[side as usize];
            let keys: Vec<JoinKey> = map.keys().cloned().collect();
            for key in keys {
                if self.memory_bytes <= self.memory_max_bytes / 2 {
                    break;
                }
                let Some(list) = map.get(&key[..]) else { continue };
                if list.records.iter().any(|r| !r.stored || r.dirty) {
                    continue;
                }
                let bytes: usize = list.records.iter().map(|r| record_bytes(&r.r)).sum();
                map.remove(&key[..]);
                self.memory_bytes = self.memory_bytes.saturating_sub(bytes);
                self.spilled[side as usize].insert(key);
                spilled += 1;
            }
        }
        self.spills += spilled as u64;
        spilled
    }

    /// Reads a spilled key's records back into memory (nothing when it is not spilled).
    fn ensure_loaded(&mut self, side: Side, key: &[u8], load: PrefixLoader<'_>) -> Result<()> {
        if self.spilled[side as usize].is_empty() || !self.spilled[side as usize].remove(key) {
            return Ok(());
        }
        let mut prefix = Vec::with_capacity(key.len() + 6);
        prefix.push(BUFFER_PREFIX);
        prefix.push(side as u8);
        prefix.extend_from_slice(&(key.len() as u32).to_be_bytes());
        prefix.extend_from_slice(key);
        for (k, v) in load(&prefix)? {
            let (_, _, ts, seq) = parse_key(&k).ok_or_else(|| EddyError::Internal("bad join buffer key".into()))?;
            self.buffer(side, key, decode(&v, ts, seq)?);
        }
        self.reloads += 1;
        Ok(())
    }

    /// Buffers `rec` under `key`; returns the key as the buffer shares it.
    fn buffer(&mut self, side: Side, key: &[u8], rec: Buffered) -> JoinKey {
        self.memory_bytes += record_bytes(&rec.r);
        let map = &mut self.buffers[side as usize];
        if let Some(list) = map.get_mut(key) {
            list.insert(rec);
            return list.key.clone();
        }
        let shared: JoinKey = Arc::from(key);
        map.insert(shared.clone(), KeyRecords { key: shared.clone(), records: VecDeque::from([rec]) });
        shared
    }

    /// The watermark after which a record of `side` at `ts` can match nothing new.
    fn expires_at(&self, side: Side, ts: i64) -> i64 {
        let reach = match side {
            Side::Left => self.plan.window.after_ms,
            Side::Right => self.plan.window.before_ms,
        };
        ts.saturating_add(reach).saturating_add(self.plan.window.grace_ms)
    }

    /// Joins one batch of `side` against the other side's buffer, then buffers it.
    pub fn process(
        &mut self,
        side: Side,
        batch: &RecordBatch,
        time: &mut BatchTime,
        load: PrefixLoader<'_>,
    ) -> Result<JoinStep> {
        let n = batch.num_rows();
        let (exprs, rowtime) = match side {
            Side::Left => (&self.plan.left_keys, self.plan.left_rowtime),
            Side::Right => (&self.plan.right_keys, self.plan.right_rowtime),
        };
        let keys: Vec<ArrayRef> = exprs.iter().map(|e| e.evaluate(batch)?.into_array(n)).collect::<Result<_, _>>()?;
        let times = batch.column(rowtime).clone();
        let mut step = JoinStep::default();
        for row in 0..n {
            let Some(ts) = cell_at(times.as_ref(), row).as_i64() else {
                step.late.push(row);
                continue;
            };
            time.advance(ts);
            if self.expires_at(side, ts) < time.watermark_ms {
                step.late.push(row);
                continue;
            }
            let cells: Row = batch
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| if self.is_read(side, i) { cell_at(c.as_ref(), row) } else { Value::Null })
                .collect();
            let key_values: Vec<Value> = keys.iter().map(|k| cell_at(k.as_ref(), row)).collect();
            let mut matched = false;
            if !key_values.iter().any(Value::is_null) {
                let key = memcomparable(&key_values);
                // The other side's records this one reaches.
                let (other, lo, hi) = match side {
                    Side::Left => (Side::Right, ts - self.plan.window.before_ms, ts + self.plan.window.after_ms),
                    Side::Right => (Side::Left, ts - self.plan.window.after_ms, ts + self.plan.window.before_ms),
                };
                self.ensure_loaded(other, &key, load)?;
                self.ensure_loaded(side, &key, load)?;
                if let Some(list) = self.buffers[other as usize].get_mut(key.as_slice()) {
                    let first = list.records.partition_point(|b| b.ts < lo);
                    for rec in list.records.range_mut(first..) {
                        if rec.ts > hi {
                            break;
                        }
                        matched = true;
                        step.rows.push(match side {
                            Side::Left => (cells.clone(), rec.r.clone()),
                            Side::Right => (rec.r.clone(), cells.clone()),
                        });
                        step.timestamps.push(ts.max(rec.ts));
                        if !rec.matched {
                            rec.matched = true;
                            if !rec.dirty {
                                rec.dirty = true;
                                self.dirty.push((other, list.key.clone(), rec.ts, rec.seq));
                            }
                        }
                    }
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                let rec = Buffered { ts, seq, r: cells, matched, stored: false, dirty: true };
                let key = self.buffer(side, &key, rec);
                self.dirty.push((side, key.clone(), ts, seq));
                self.expiry.push(Reverse((self.expires_at(side, ts), (side, key, ts, seq))));
            } else if self.emits_unmatched(side) {
                // A NULL key matches nothing: an outer join emits it at once.
                step.rows.push(self.with_nulls(side, cells));
                step.timestamps.push(ts);
            }
        }
        self.expire(time.watermark_ms, &mut step, load)?;
        Ok(step)
    }

    /// Expires what the watermark has passed when it moved without a batch (an idle
    /// partition stopped holding it back): outer joins emit the unmatched records.
    pub fn expire_to(&mut self, watermark_ms: i64, load: PrefixLoader<'_>) -> Result<JoinStep> {
        let mut step = JoinStep::default();
        self.expire(watermark_ms, &mut step, load)?;
        Ok(step)
    }

    /// The state writes since the last call (a checkpoint): changed records, and deletes of
    /// stored ones that expired.
    pub fn drain_writes(&mut self) -> Result<Vec<StateWrite>> {
        let mut writes = Vec::with_capacity(self.dirty.len() + self.gone.len());
        for bk in std::mem::take(&mut self.dirty) {
            let (side, key, ts, seq) = &bk;
            let Some(list) = self.buffers[*side as usize].get_mut(&key[..]) else { continue };
            // Not there: it expired after it changed.
            let Some(at) = list.position(*ts, *seq) else { continue };
            let rec = &mut list.records[at];
            writes.push((buffer_key(&bk), Some(encode(rec))));
            rec.stored = true;
            rec.dirty = false;
        }
        writes.extend(self.gone.drain(..).map(|k| (k, None)));
        Ok(writes)
    }

    fn emits_unmatched(&self, side: Side) -> bool {
        match self.plan.kind {
            JoinKind::Inner => false,
            JoinKind::Left => side == Side::Left,
            JoinKind::Full => true,
        }
    }

    fn with_nulls(&self, side: Side, cells: Row) -> (Row, Row) {
        match side {
            Side::Left => (cells, self.nulls[Side::Right as usize].clone()),
            Side::Right => (self.nulls[Side::Left as usize].clone(), cells),
        }
    }

    /// Drops records that can match nothing more; outer joins emit the unmatched ones.
    fn expire(&mut self, watermark_ms: i64, step: &mut JoinStep, load: PrefixLoader<'_>) -> Result<()> {
        while self.expiry.peek().is_some_and(|Reverse((at, _))| *at < watermark_ms) {
            let Some(Reverse((_, bk))) = self.expiry.pop() else { break };
            let (side, key, ts, seq) = &bk;
            self.ensure_loaded(*side, key, load)?;
            let map = &mut self.buffers[*side as usize];
            let Some(list) = map.get_mut(&key[..]) else { continue };
            // Expiry follows time order within a key: this is nearly always the first.
            let at =
                if list.records.front().is_some_and(|r| r.seq == *seq) { Some(0) } else { list.position(*ts, *seq) };
            let Some(rec) = at.and_then(|at| list.records.remove(at)) else { continue };
            if list.records.is_empty() {
                map.remove(&key[..]);
            }
            self.memory_bytes = self.memory_bytes.saturating_sub(record_bytes(&rec.r));
            if !rec.matched && self.emits_unmatched(*side) {
                step.rows.push(self.with_nulls(*side, rec.r));
                step.timestamps.push(*ts);
            }
            if rec.stored {
                self.gone.push(buffer_key(&bk));
            }
        }
        Ok(())
    }

    /// Joined rows as a batch in the joined schema.
    pub fn to_batch(&self, rows: &[(Row, Row)]) -> Result<RecordBatch> {
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        const NULL: &Value = &Value::Null;
        for (i, f) in self.schema.fields().iter().enumerate() {
            let cells: Vec<&Value> = if i < self.left_width {
                rows.iter().map(|(l, _)| l.get(i).unwrap_or(NULL)).collect()
            } else {
                rows.iter().map(|(_, r)| r.get(i - self.left_width).unwrap_or(NULL)).collect()
            };
            columns.push(cell_refs_to_array(f.data_type(), &cells)?);
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// Keeps the rows of `decoded` (one partition's, in offset order) up to event time `limit`, or
/// up to its first row's time if that is later (so a chunk always moves on). Returns where
/// the dropped rows start (partition, offset), to be read again; `None` when all are kept.
pub fn cut_after(decoded: &mut DecodedBatch, rowtime: usize, limit: i64) -> Option<(i32, i64)> {
    let batch = decoded.batch.clone()?;
    let times = batch.column(rowtime).clone();
    let time = |row: usize| cell_at(times.as_ref(), row).as_i64();
    let limit = limit.max(time(0).unwrap_or(i64::MIN));
    let keep = (0..batch.num_rows()).find(|&row| time(row).is_some_and(|t| t > limit))?;
    let resume = *decoded.origins.get(keep)?;
    decoded.batch = Some(batch.slice(0, keep));
    decoded.origins.truncate(keep);
    decoded.records = keep;
    decoded.max_timestamp_ms = (0..keep).filter_map(time).max().unwrap_or(decoded.max_timestamp_ms);
    Some(resume)
}

/// Largest chunk a stream–stream join reads from one input at a time (see `QueryTask::poll_next`).
pub const JOIN_CHUNK_BYTES: usize = 64 << 10;

fn nulls(width: usize) -> Row {
    std::iter::repeat_n(Value::Null, width).collect()
}

/// About what a buffered record takes in memory: its cells, its `Arc`, its queue slot.
fn record_bytes(r: &[Value]) -> usize {
    let cells: usize = r
        .iter()
        .map(|v| match v {
            Value::String(s) => 24 + s.len(),
            Value::Array(_) | Value::Object(_) => 24 + v.to_string().len(),
            _ => 24,
        })
        .sum();
    cells + 96
}

/// A stored record read back (it is stored and clean).
fn decode(bytes: &[u8], ts: i64, seq: u64) -> Result<Buffered> {
    let (r, matched) = match bytes {
        [BUFFERED_FORMAT, m @ (0 | 1), cells @ ..] => {
            let (r, rest) = stored::take_cells(cells)?;
            if !rest.is_empty() {
                return Err(EddyError::Internal("join buffer: bytes after the record".into()));
            }
            (r, *m == 1)
        }
        _ => {
            let s: LegacyStored =
                serde_json::from_slice(bytes).map_err(|e| EddyError::Internal(format!("join buffer: {e}")))?;
            (s.r, s.m)
        }
    };
    Ok(Buffered { ts, seq, r: r.into(), matched, stored: true, dirty: false })
}

fn encode(rec: &Buffered) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 8 * rec.r.len());
    out.push(BUFFERED_FORMAT);
    out.push(u8::from(rec.matched));
    stored::put_cells(&mut out, &rec.r);
    out
}

/// `B` + side + key length + key + event time (sign-flipped) + sequence.
fn buffer_key((side, key, ts, seq): &BufferKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 22);
    k.push(BUFFER_PREFIX);
    k.push(*side as u8);
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key);
    k.extend_from_slice(&((*ts as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn parse_key(k: &[u8]) -> Option<(Side, Vec<u8>, i64, u64)> {
    let side = match *k.get(1)? {
        0 => Side::Left,
        1 => Side::Right,
        _ => return None,
    };
    let len = u32::from_be_bytes(k.get(2..6)?.try_into().ok()?) as usize;
    let key = k.get(6..6 + len)?.to_vec();
    let rest = k.get(6 + len..)?;
    let ts = (u64::from_be_bytes(rest.get(0..8)?.try_into().ok()?) ^ (1 << 63)) as i64;
    let seq = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
    Some((side, key, ts, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts: i64, seq: u64) -> Buffered {
        Buffered { ts, seq, r: nulls(1), matched: false, stored: false, dirty: false }
    }

    #[test]
    fn a_keys_records_stay_in_time_order_and_are_found_by_time_and_sequence() {
        let key: JoinKey = Arc::from(&b"k"[..]);
        let mut list = KeyRecords { key, records: VecDeque::new() };
        for (ts, seq) in [(10, 0), (30, 1), (20, 2), (30, 3), (5, 4), (20, 5)] {
            list.insert(rec(ts, seq));
        }
        let order: Vec<(i64, u64)> = list.records.iter().map(|r| (r.ts, r.seq)).collect();
        assert_eq!(order, [(5, 4), (10, 0), (20, 2), (20, 5), (30, 1), (30, 3)]);
        assert_eq!(list.position(20, 5), Some(3));
        assert_eq!(list.position(30, 1), Some(4));
        // The same time with another sequence, or a time not there: not found.
        assert_eq!(list.position(20, 7), None);
        assert_eq!(list.position(25, 2), None);
    }

    #[test]
    fn buffered_records_round_trip_and_json_ones_are_still_read() {
        let cells = vec![Value::from(7), Value::from("1.50"), Value::Null];
        let rec = Buffered { ts: 3, seq: 4, r: cells.clone().into(), matched: true, stored: false, dirty: true };
        let back = decode(&encode(&rec), 3, 4).unwrap();
        assert_eq!((&back.r[..], back.matched, back.stored), (&cells[..], true, true));
        let legacy = decode(br#"{"r":[7,"1.50",null],"m":false}"#, 3, 4).unwrap();
        assert_eq!((&legacy.r[..], legacy.matched), (&cells[..], false));
        let mut extra = encode(&rec);
        extra.push(0);
        assert!(decode(&extra, 3, 4).is_err());
    }

    #[test]
    fn buffer_keys_round_trip() {
        let bk: BufferKey = (Side::Right, Arc::from(&b"k1"[..]), -5, 7);
        assert_eq!(parse_key(&buffer_key(&bk)), Some((Side::Right, b"k1".to_vec(), -5, 7)));
    }
}
