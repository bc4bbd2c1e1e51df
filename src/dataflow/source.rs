//! Source: tails the partitions of a stream's or table's topic and decodes log batches into
//! Arrow batches. Records that do not match the schema go to the processing log and are
//! skipped; the query keeps running.
//!
//! It also keeps each partition's event time and whether it is idle, for the query's
//! watermark (see `operator::BatchTime`), and reads the partition that is furthest behind in
//! event time first (as Kafka Streams picks the record with the lowest timestamp), so one
//! partition never runs far ahead of another.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use serde_json::Value;

use super::sink::ProcessingLog;
use crate::catalog::RelationDef;
use crate::error::{EddyError, Result};
use crate::format::decode_batch;
use crate::format::json_columns::ColumnarDecoder;
use crate::format::{check_cell, decode_key, decode_row, rows_to_batch, ValueFormat};
use crate::log::batch::{batches_in, decode_record_refs, LogBatchHeader, LogRecord, RecordRef};
use crate::log::{Clock, Log, LogError, Partition};
use crate::sql::RelationKind;

pub struct Source {
    pub relation: RelationDef,
    /// The decoded rows' columns: the relation's, then its pseudo-columns (ROWTIME...).
    pub columns: Vec<crate::format::Column>,
    with_pseudo_columns: bool,
    /// Straight-to-Arrow decoding, for JSON streams of simple types.
    columnar: Option<ColumnarDecoder>,
    /// Value columns the straight-to-Arrow decoder stores as NULL (no operator reads them).
    pub unread: Option<Vec<bool>>,
    /// The read buffer, kept from poll to poll.
    buffer: Vec<u8>,
    pub partitions: Vec<Arc<Partition>>,
    next_partition: usize,
    /// Per partition: the largest event time the query has read from it (`i64::MIN`: none),
    /// kept by the query (it persists them with its checkpoints).
    pub time_ms: Vec<i64>,
    /// Per partition: since when (clock ms) it has had nothing to read; `None` while it has
    /// (or before the first poll looked).
    caught_up_since_ms: Vec<Option<i64>>,
    clock: Arc<dyn Clock>,
    /// Records the last poll decoded: room to reserve for the next one.
    records_hint: usize,
    /// A table read only for its updates (the table side of a stream–table join): polls
    /// return `upserts` and no batch.
    pub upserts_only: bool,
    /// The partitions this copy reads (by index), when not all: a query's reading threads
    /// share the partitions among them.
    pub reads: Option<Vec<bool>>,
    /// Records that retention deleted before they were read (shared with the query's
    /// status, so `SHOW QUERIES` tells of them).
    pub lost_records: Arc<std::sync::atomic::AtomicU64>,
}

/// What one poll decoded.
pub struct DecodedBatch {
    /// The valid rows, in the relation's schema (`None` if every record was bad).
    pub batch: Option<RecordBatch>,
    /// For tables: (key values, row or `None` for a tombstone, timestamp), in log order.
    pub upserts: Vec<(Vec<Value>, Option<Vec<Value>>, i64)>,
    pub records: usize,
    pub max_timestamp_ms: i64,
    /// (partition, offset) of each row of `batch`, to report a row that fails later.
    pub origins: Vec<(i32, i64)>,
    /// The index (in `Source::partitions`) of the partition every record came from.
    pub partition: usize,
}

impl Source {
    pub fn open(log: &Log, relation: &RelationDef) -> Result<Source> {
        let topic = log
            .topic(&relation.topic)
            .ok_or_else(|| EddyError::UndefinedRelation(format!("topic {} of {}", relation.topic, relation.name)))?;
        let pseudo = crate::plan::pseudo_columns(relation);
        let mut columns = relation.columns.clone();
        columns.extend(pseudo.iter().cloned());
        let columnar = (relation.kind == RelationKind::Stream
            && relation.value_encoding() == ValueFormat::Json
            && relation.header_columns.is_empty()
            && relation.timestamp_format.is_none())
        .then(|| {
            let time_column = match &relation.timestamp_column {
                Some(name) => Some(relation.columns.iter().position(|c| &c.name == name)?),
                None => None,
            };
            ColumnarDecoder::new(&relation.columns, &pseudo, time_column)
        })
        .flatten();
        Ok(Source {
            relation: relation.clone(),
            columns,
            with_pseudo_columns: !pseudo.is_empty(),
            columnar,
            unread: None,
            buffer: Vec::new(),
            time_ms: vec![i64::MIN; topic.partitions.len()],
            caught_up_since_ms: vec![None; topic.partitions.len()],
            clock: log.clock.clone(),
            partitions: topic.partitions.clone(),
            next_partition: 0,
            records_hint: 0,
            upserts_only: false,
            reads: None,
            lost_records: Arc::default(),
        })
    }

    /// Leaves the value columns marked `true` NULL in decoded batches, where decoding goes
    /// straight to Arrow (elsewhere every column is decoded).
    pub fn set_unread(&mut self, unread: Vec<bool>) {
        if let Some(columnar) = self.columnar.as_mut() {
            if unread.iter().any(|&u| u) {
                columnar.set_unread(&unread);
                self.unread = Some(unread);
            }
        }
    }

    /// One record's columns as the general path decodes them (all of them), read again from
    /// the log: for reports about a row whose unread columns were left NULL.
    pub fn record_row(&self, partition: i32, offset: i64) -> Option<Vec<Value>> {
        let p = self.partitions.iter().find(|p| p.id == partition)?;
        let read = p.read(offset, 1 << 20).ok()?;
        let mut pos = 0;
        while pos < read.bytes.len() {
            let header = LogBatchHeader::parse(&read.bytes[pos..]).ok()?;
            let end = (pos + header.total_bytes).min(read.bytes.len());
            let records = decode_batch(&read.bytes[pos..end]).ok()?;
            pos = end;
            if let Some(r) = records.iter().find(|r| r.offset == offset) {
                let rel = &self.relation;
                let mut row = decode_row(
                    &rel.columns,
                    rel.key_layout(),
                    rel.value_encoding(),
                    r.key.as_deref(),
                    r.value.as_deref(),
                )
                .ok()?;
                rel.fill_headers(&mut row, &r.headers);
                return Some(row);
            }
        }
        None
    }

    /// Whether any partition holds records past `offsets` (its reading position).
    pub fn has_more(&self, offsets: &[i64]) -> bool {
        self.partitions.iter().zip(offsets).any(|(p, &o)| o < p.high_watermark())
    }

    /// The smallest event time of the partitions (but `skip`) that hold the watermark back:
    /// those with data to read, and those caught up for less than `idle_ms` (a partition that
    /// never had data counts as `i64::MIN` until then). `None`: every partition is idle.
    pub fn holding_min(&self, skip: Option<usize>, idle_ms: i64) -> Option<i64> {
        let now = self.clock.now_ms();
        (0..self.partitions.len())
            .filter(|&i| Some(i) != skip)
            .filter(|&i| self.caught_up_since_ms[i].is_none_or(|since| now.saturating_sub(since) < idle_ms))
            .map(|i| self.time_ms[i])
            .min()
    }

    /// Notes which partitions the query has read to their end at `offsets` (a caught-up
    /// partition starts its idle time, see `holding_min`); returns them.
    pub fn note_positions(&mut self, offsets: &[i64]) -> Vec<bool> {
        let now = self.clock.now_ms();
        let mut all = Vec::with_capacity(self.partitions.len());
        for (idx, p) in self.partitions.iter().enumerate() {
            let caught_up = offsets[idx] >= p.high_watermark();
            match (caught_up, self.caught_up_since_ms[idx]) {
                (false, _) => self.caught_up_since_ms[idx] = None,
                (true, None) => self.caught_up_since_ms[idx] = Some(now),
                (true, Some(_)) => {}
            }
            all.push(caught_up);
        }
        all
    }

    /// Reads and decodes the next chunk: of the partitions with data to read, the one whose
    /// event time is lowest (taking turns on a tie); a caught-up partition starts its idle time.
    /// A replay then reads the partitions in about the same interleaving as the first run.
    pub fn poll(
        &mut self,
        offsets: &mut [i64],
        max_bytes: usize,
        plog: &ProcessingLog,
        query_id: &str,
    ) -> Result<Option<DecodedBatch>> {
        let n = self.partitions.len();
        let caught_up = self.note_positions(offsets);
        let mut order: Vec<(bool, i64, usize, usize)> = Vec::with_capacity(n);
        for (idx, caught_up) in caught_up.into_iter().enumerate() {
            if self.reads.as_ref().is_some_and(|r| !r[idx]) {
                continue;
            }
            // Caught-up partitions are still tried (last): a read past the end resets there.
            order.push((caught_up, self.time_ms[idx], (idx + n - self.next_partition) % n, idx));
        }
        order.sort_unstable();
        for (_, _, _, idx) in order {
            let p = self.partitions[idx].clone();
            let mut buffer = std::mem::take(&mut self.buffer);
            match p.read_into(offsets[idx], max_bytes, &mut buffer) {
                Ok(_) => {}
                Err(LogError::OffsetOutOfRange { start, .. }) if offsets[idx] < start => {
                    // Retention deleted what the query had not read yet: never a silent skip.
                    let lost = format!(
                        "records lost: retention deleted offsets {} to {} of {}-{} before this query read them",
                        offsets[idx],
                        start - 1,
                        p.topic,
                        p.id
                    );
                    plog.record(query_id, &p.topic, p.id, offsets[idx], &lost, None);
                    self.lost_records.fetch_add((start - offsets[idx]) as u64, std::sync::atomic::Ordering::Relaxed);
                    offsets[idx] = start;
                    self.buffer = buffer;
                    continue;
                }
                Err(LogError::OffsetOutOfRange { end, .. }) => {
                    // A fenced tail was cut back to its checkpoint: nothing there was published.
                    tracing::warn!(query = query_id, topic = %p.topic, partition = p.id, "offset {} past the end {end}, resetting", offsets[idx]);
                    offsets[idx] = end;
                    self.buffer = buffer;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if buffer.is_empty() {
                self.buffer = buffer;
                continue;
            }
            self.next_partition = (idx + 1) % n;
            let mut decoded = self.decode(&p, &buffer, &mut offsets[idx], plog, query_id);
            decoded.partition = idx;
            self.buffer = buffer;
            return Ok(Some(decoded));
        }
        Ok(None)
    }

    fn decode(
        &mut self,
        p: &Partition,
        bytes: &[u8],
        offset: &mut i64,
        plog: &ProcessingLog,
        query_id: &str,
    ) -> DecodedBatch {
        let rel = &self.relation;
        let is_table = rel.kind == RelationKind::Table;
        let key_indexes: Vec<usize> = rel.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        let mut rows = Vec::new();
        let mut origins = Vec::with_capacity(self.records_hint);
        let mut upserts = Vec::new();
        let mut records = 0;
        let mut max_ts = 0i64;
        for (header, batch_bytes) in batches_in(bytes) {
            let start = *offset;
            *offset = (*offset).max(header.last_offset() + 1);
            // Uncompressed batches are read in place; compressed ones are decoded first.
            let owned;
            let decoded: Vec<RecordRef<'_>> = match decode_record_refs(batch_bytes) {
                Ok(r) => r,
                Err(LogError::Unsupported(_)) => match decode_batch(batch_bytes) {
                    Ok(records) => {
                        owned = records;
                        owned.iter().map(LogRecord::as_ref).collect()
                    }
                    Err(e) => {
                        plog.record(query_id, &p.topic, p.id, header.base_offset, &e, None);
                        continue;
                    }
                },
                Err(e) => {
                    plog.record(query_id, &p.topic, p.id, header.base_offset, &e.to_string(), None);
                    continue;
                }
            };
            for r in decoded.into_iter().filter(|r| r.offset >= start) {
                records += 1;
                if let (Some(columnar), Some(value)) = (self.columnar.as_mut(), r.value) {
                    if let Some(event_time) = columnar.push(value, r.timestamp_ms, p.id, r.offset) {
                        max_ts = max_ts.max(event_time);
                        origins.push((p.id, r.offset));
                        continue;
                    }
                }
                if is_table && r.value.is_none() {
                    // The key's cells in the form a row's key takes (`check_cell`), or the
                    // tombstone would miss the row it deletes (`{"id": "5"}` for BIGINT 5).
                    let key = decode_key(&rel.columns, rel.key_layout(), r.key).map_err(|e| e.error).and_then(|k| {
                        k.into_iter()
                            .map(|(name, v)| match rel.column(&name) {
                                Some(c) => check_cell(c, v),
                                None => Ok(v),
                            })
                            .collect::<std::result::Result<Vec<Value>, String>>()
                    });
                    match key {
                        Ok(k) if !k.is_empty() && !k.iter().any(Value::is_null) => {
                            upserts.push((k, None, r.timestamp_ms));
                            max_ts = max_ts.max(r.timestamp_ms);
                        }
                        Ok(_) => plog.record(query_id, &p.topic, p.id, r.offset, "tombstone without a key", r.key),
                        Err(e) => {
                            plog.record(query_id, &p.topic, p.id, r.offset, &format!("tombstone key: {e}"), r.key)
                        }
                    }
                    continue;
                }
                match decode_row(&rel.columns, rel.key_layout(), rel.value_encoding(), r.key, r.value) {
                    Ok(mut row) => {
                        rel.fill_headers(&mut row, &r.headers);
                        let event_time = match rel.event_time_ms(&row, r.timestamp_ms) {
                            Ok(t) => t,
                            Err(e) => {
                                plog.record(query_id, &p.topic, p.id, r.offset, &e, r.value);
                                continue;
                            }
                        };
                        max_ts = max_ts.max(event_time);
                        if is_table {
                            let key: Vec<Value> = key_indexes.iter().map(|&i| row[i].clone()).collect();
                            if key.iter().any(Value::is_null) {
                                plog.record(query_id, &p.topic, p.id, r.offset, "table record has no key", r.value);
                                continue;
                            }
                            if self.upserts_only {
                                upserts.push((key, Some(row), r.timestamp_ms));
                                continue;
                            }
                            upserts.push((key, Some(row.clone()), r.timestamp_ms));
                        }
                        if self.with_pseudo_columns {
                            row.extend([Value::from(event_time), Value::from(p.id), Value::from(r.offset)]);
                        }
                        match self.columnar.as_mut() {
                            Some(columnar) => columnar.push_cells(&row),
                            None => rows.push(row),
                        }
                        origins.push((p.id, r.offset));
                    }
                    Err(bad) => plog.record(query_id, &p.topic, p.id, r.offset, &bad.error, r.value),
                }
            }
        }
        let batch = match self.columnar.as_mut() {
            Some(columnar) => columnar.finish(),
            None if rows.is_empty() => None,
            None => rows_to_batch(&self.columns, &rows).ok(),
        };
        self.records_hint = records;
        DecodedBatch { batch, upserts, records, max_timestamp_ms: max_ts, origins, partition: 0 }
    }
}
