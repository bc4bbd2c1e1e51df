//! Stream–stream join within a time window (`a JOIN b WITHIN 1 MINUTE ON a.k = b.k`): a left
//! record at `t` matches right records with the same key in `[t - before, t + after]`. Each
//! side's records are buffered until no match can come any more (stream time past
//! `t + window + grace`); then, for LEFT and FULL joins, a record that never matched is
//! emitted with NULLs. Records arriving after that point are late and reported.
//!
//! The buffers live in memory and are written to RocksDB at each checkpoint (`drain_writes`,
//! into the caller's pending state), so they are checkpointed with the source offsets and
//! bounded by the window. Only what changed since the last checkpoint is written, and a
//! record that came and expired in between is never written at all: replaying from the
//! checkpoint's offsets brings it back.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dataflow::source::DecodedBatch;
use crate::error::{EddyError, Result};
use crate::format::{cell_at, cells_to_array, memcomparable};
use crate::plan::{IntervalJoinPlan, JoinKind};

/// Key prefix of buffered records in the query's state.
pub const BUFFER_PREFIX: u8 = b'B';

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Left = 0,
    Right = 1,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Buffered {
    r: Vec<Value>,
    /// Matched at least once (outer joins emit unmatched records with NULLs).
    m: bool,
    /// Written to the state store by a checkpoint (its expiry must delete it there).
    #[serde(skip)]
    stored: bool,
}

/// A state write: the key, and the value or `None` to delete it.
pub type StateWrite = (Vec<u8>, Option<Vec<u8>>);

/// (side, join key, event time, sequence): a buffered record's identity, in key-then-time order.
type BufferKey = (Side, Vec<u8>, i64, u64);

pub struct IntervalJoinOperator {
    /// The join as planned: kind, keys per side, window, where ROWTIME is.
    pub plan: IntervalJoinPlan,
    pub left_width: usize,
    pub right_width: usize,
    /// The joined rows' schema (left columns, then right columns).
    pub schema: SchemaRef,
    buffer: BTreeMap<BufferKey, Buffered>,
    /// When each buffered record stops being matchable, for expiry.
    expiry: BTreeSet<(i64, BufferKey)>,
    next_seq: u64,
    /// Buffered records added or changed since the last checkpoint.
    dirty: BTreeSet<BufferKey>,
    /// Keys of stored records that expired since the last checkpoint.
    gone: Vec<Vec<u8>>,
    /// Per joined column: whether anything after the join reads it (unread ones are
    /// buffered as NULL). Empty: all are read.
    read: Vec<bool>,
}

/// What one step produced.
#[derive(Default)]
pub struct JoinStep {
    /// Joined rows (and each one's timestamp: the later of the two records).
    pub rows: Vec<Vec<Value>>,
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
            buffer: BTreeMap::new(),
            expiry: BTreeSet::new(),
            next_seq: 0,
            dirty: BTreeSet::new(),
            gone: Vec::new(),
            read: Vec::new(),
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

    /// Rebuilds the buffers from the state a checkpoint stored.
    pub fn restore(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        for (k, v) in entries {
            let key = parse_key(&k).ok_or_else(|| EddyError::Internal("bad join buffer key".into()))?;
            let mut rec: Buffered =
                serde_json::from_slice(&v).map_err(|e| EddyError::Internal(format!("join buffer: {e}")))?;
            rec.stored = true;
            self.next_seq = self.next_seq.max(key.3 + 1);
            self.expiry.insert((self.expires_at(key.0, key.2), key.clone()));
            self.buffer.insert(key, rec);
        }
        Ok(())
    }

    /// The stream time after which a record of `side` at `ts` can match nothing new.
    fn expires_at(&self, side: Side, ts: i64) -> i64 {
        let reach = match side {
            Side::Left => self.plan.window.after_ms,
            Side::Right => self.plan.window.before_ms,
        };
        ts.saturating_add(reach).saturating_add(self.plan.window.grace_ms)
    }

    /// Joins one batch of `side` against the other side's buffer, then buffers it.
    pub fn process(&mut self, side: Side, batch: &RecordBatch, stream_time_ms: &mut i64) -> Result<JoinStep> {
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
            *stream_time_ms = (*stream_time_ms).max(ts);
            if self.expires_at(side, ts) < *stream_time_ms {
                step.late.push(row);
                continue;
            }
            let cells: Vec<Value> = batch
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
                let range = (other, key.clone(), lo, 0)..=(other, key.clone(), hi, u64::MAX);
                for (bk, rec) in self.buffer.range_mut(range) {
                    matched = true;
                    let (l, r) = match side {
                        Side::Left => (&cells, &rec.r),
                        Side::Right => (&rec.r, &cells),
                    };
                    step.rows.push(l.iter().chain(r.iter()).cloned().collect());
                    step.timestamps.push(ts.max(bk.2));
                    if !rec.m {
                        rec.m = true;
                        self.dirty.insert(bk.clone());
                    }
                }
                let bk = (side, key, ts, self.next_seq);
                self.next_seq += 1;
                let rec = Buffered { r: cells, m: matched, stored: false };
                self.dirty.insert(bk.clone());
                self.expiry.insert((self.expires_at(side, ts), bk.clone()));
                self.buffer.insert(bk, rec);
            } else if self.emits_unmatched(side) {
                // A NULL key matches nothing: an outer join emits it at once.
                step.rows.push(self.with_nulls(side, cells));
                step.timestamps.push(ts);
            }
        }
        self.expire(*stream_time_ms, &mut step);
        Ok(step)
    }

    /// The state writes since the last call (a checkpoint): changed records, and deletes of
    /// stored ones that expired.
    pub fn drain_writes(&mut self) -> Result<Vec<StateWrite>> {
        let mut writes = Vec::with_capacity(self.dirty.len() + self.gone.len());
        for bk in std::mem::take(&mut self.dirty) {
            if let Some(rec) = self.buffer.get_mut(&bk) {
                writes.push((buffer_key(&bk), Some(encode(rec)?)));
                rec.stored = true;
            }
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

    fn with_nulls(&self, side: Side, cells: Vec<Value>) -> Vec<Value> {
        match side {
            Side::Left => cells.into_iter().chain(std::iter::repeat_n(Value::Null, self.right_width)).collect(),
            Side::Right => std::iter::repeat_n(Value::Null, self.left_width).chain(cells).collect(),
        }
    }

    /// Drops records that can match nothing more; outer joins emit the unmatched ones.
    fn expire(&mut self, stream_time_ms: i64, step: &mut JoinStep) {
        while let Some((at, bk)) = self.expiry.first().cloned() {
            if at >= stream_time_ms {
                break;
            }
            self.expiry.pop_first();
            if let Some(rec) = self.buffer.remove(&bk) {
                if !rec.m && self.emits_unmatched(bk.0) {
                    step.rows.push(self.with_nulls(bk.0, rec.r));
                    step.timestamps.push(bk.2);
                }
                if rec.stored {
                    self.gone.push(buffer_key(&bk));
                }
                self.dirty.remove(&bk);
            }
        }
    }

    /// Joined rows as a batch in the joined schema.
    pub fn to_batch(&self, rows: &[Vec<Value>]) -> Result<RecordBatch> {
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for (i, f) in self.schema.fields().iter().enumerate() {
            let cells: Vec<Value> = rows.iter().map(|r| r.get(i).cloned().unwrap_or(Value::Null)).collect();
            columns.push(cells_to_array(f.data_type(), &cells)?);
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

fn encode(rec: &Buffered) -> Result<Vec<u8>> {
    serde_json::to_vec(rec).map_err(|e| EddyError::Internal(format!("join buffer: {e}")))
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

fn parse_key(k: &[u8]) -> Option<BufferKey> {
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

    #[test]
    fn buffer_keys_round_trip() {
        let bk = (Side::Right, b"k1".to_vec(), -5, 7);
        assert_eq!(parse_key(&buffer_key(&bk)), Some(bk));
    }
}
