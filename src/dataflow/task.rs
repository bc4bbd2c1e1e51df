//! The persistent-query task: one thread per query that polls its inputs, runs the
//! operators, and checkpoints exactly-once (see the module comment in `dataflow/mod.rs`).
//! Also what a restart needs: sinks reopened at their committed ends; `task/recovery.rs`
//! checks the state's format and re-appends processing-log entries if a crash came between
//! a checkpoint and their append; `task/event_time.rs` restores partitions' event times;
//! `task/state_view.rs` is the table–table join's view of its state; `task/checkpoint.rs`
//! writes the checkpoints; `task/read_ahead.rs` is the reading thread of `--query-threads`;
//! `task/read_cache.rs` keeps hot state values in memory in front of RocksDB;
//! `task/start.rs` starts a task (persistent, or transient for a push query) and
//! `task/push_output.rs` is a transient query's output to its client.

use super::*;

mod checkpoint;
mod event_time;
mod push_output;
mod read_ahead;
mod read_cache;
mod recovery;
mod start;
mod state_view;

use super::operator::window::event_times;
use super::sink::row_time;
use crate::format::stored;
use crate::state::{sink_end_key, CATALOG_CF};
pub use push_output::PushOutput;
use read_ahead::ReadAhead;
use read_cache::ReadCache;
use recovery::{check_state_format, clear_plog_entries, recover_processing_log, PLOG_ENTRY_PREFIX, PLOG_FROM_KEY};
use state_view::StateView;

impl Runtime {
    /// Opens a query's output at its committed ends. A new query records the topic's ends
    /// before it writes anything: a crash before its first checkpoint must find where its
    /// uncommitted output starts (a regression the differential harness found).
    fn open_sink(&self, id: &str, rel: RelationDef, prefix: u8) -> Result<Sink> {
        let cf = &state_cf(id);
        let topic =
            self.log.topic(&rel.topic).ok_or_else(|| EddyError::UndefinedRelation(format!("topic {}", rel.topic)))?;
        let mut ends = Vec::new();
        let mut first_start = self.store.checkpoint(cf);
        for p in &topic.partitions {
            match stored_i64(&self.store, cf, prefix, p.id)? {
                Some(end) => {
                    // Other queries may write the topic too (`INSERT INTO ... SELECT`): what
                    // the newest checkpoint of any of them committed stays.
                    let topic_end = match self.store.get(CATALOG_CF, &sink_end_key(&topic.name, p.id))? {
                        Some(b) if b.len() == 8 => i64::from_be_bytes(b.try_into().expect("8 bytes")),
                        _ => i64::MIN,
                    };
                    ends.push(end.max(topic_end.min(p.log_end_offset())));
                }
                None => {
                    // Where the output committed so far ends (another query's checkpoint
                    // may be appending past it right now).
                    let end = match p.published_end() {
                        i64::MAX => p.log_end_offset(),
                        published => published,
                    };
                    first_start.put(&self.store, &partition_key(prefix, p.id), &end.to_be_bytes())?;
                    ends.push(end);
                }
            }
        }
        if !first_start.is_empty() {
            self.store.commit(first_start)?;
        }
        Sink::open(id, topic, rel, ends)
    }

    /// A query that cannot run keeps its outputs as a running one would: output past its
    /// last checkpoint cut off and its topics fenced, so nothing uncommitted becomes visible
    /// and no other writer slips in while it waits for a fix (or a TERMINATE).
    pub fn fence_outputs(&self, id: &str, sink: Option<RelationDef>, late: Option<RelationDef>) -> Result<()> {
        self.store.ensure_cf(&state_cf(id))?;
        for (rel, prefix) in [(sink, SINK_PREFIX), (late, LATE_SINK_PREFIX)] {
            if let Some(rel) = rel.filter(|r| self.log.topic(&r.topic).is_some()) {
                self.open_sink(id, rel, prefix)?;
            }
        }
        Ok(())
    }
}

struct QueryTask {
    id: String,
    cf: String,
    rt: Runtime,
    source: Source,
    /// Next offset to read, per source partition.
    offsets: Vec<i64>,
    /// A joined table's topic and next offsets: the query keeps its own copy of the table,
    /// so a replay after a crash joins against the same rows.
    /// (For a stream–stream join the second stream; the two are polled in turn.)
    table_input: Vec<(Source, Vec<i64>)>,
    prefer_second: bool,
    /// The latest event time read from the source and from the second input.
    input_time: [i64; 2],
    /// The last checkpoint failed on I/O and is being retried.
    checkpoint_failing: bool,
    /// Recompute every group's output row before starting (the SELECT list changed); done
    /// before the query's thread starts, so the DDL returns with the table already reshaped.
    reproject: bool,
    ops: Operators,
    sink: Option<Sink>,
    late_sink: Option<Sink>,
    /// State writes since the last checkpoint, by full key (last write wins; `None` deletes).
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Values read or committed lately, in front of RocksDB (`task/read_cache.rs`).
    cache: ReadCache,
    pending_outputs: PendingOutput,
    pending_late: PendingOutput,
    /// The query's watermark (windows close against it; `i64::MIN` before any event), and
    /// while a batch runs its partition's event time (see `event_time`).
    time: BatchTime,
    /// `RuntimeConfig::idle_partition_timeout`.
    idle_ms: i64,
    /// A window closes this long after its end: the grace period (plus the gap for sessions).
    close_after_end_ms: i64,
    retention_ms: Option<i64>,
    /// Windows not yet closed, by close time (end + grace), for EMIT FINAL and RETENTION.
    open_windows: BTreeSet<(i64, Vec<u8>)>,
    /// Closed windows by the time RETENTION deletes them.
    expiring_windows: BTreeSet<(i64, Vec<u8>)>,
    /// Where the aggregation keeps its groups: the result rows (`r`), or with EMIT FINAL a
    /// working area (`a`) while `r` holds only closed windows, which pull queries read.
    agg_prefix: u8,
    /// Offsets moved since the last checkpoint.
    dirty: bool,
    status: Arc<QueryStatus>,
    stop: Arc<AtomicBool>,
    /// The thread reading ahead, for a query over one input with `query_threads` ≥ 2.
    read_ahead: Option<ReadAhead>,
    /// A transient query's client (its output goes there, not to a sink).
    push: Option<PushOutput>,
}

impl QueryTask {
    /// The continuous-query data path: poll → decode → operators → buffer → checkpoint.
    /// A joined table's updates are applied before the stream's records that follow them.
    fn run(&mut self) -> Result<()> {
        if self.table_input.is_empty() && self.rt.config.query_threads >= 2 {
            // An aggregation folds on `query_threads` shard threads of its own: it gets half
            // as many reading threads (q5 at 2 threads: one reader 371 K events/s, two 339 K;
            // a projection, q0: one 1.00 M, two 1.45 M).
            let threads = match self.ops.body {
                Body::Aggregate(_) => (self.rt.config.query_threads / 2).max(1),
                _ => self.rt.config.query_threads,
            };
            self.read_ahead = Some(ReadAhead::start(&self.rt, &self.id, &self.source, self.offsets.clone(), threads)?);
        }
        let mut last_checkpoint = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            if let Some(push) = self.push.as_mut() {
                if push.is_quiet() {
                    let inputs = self.table_input.iter().flat_map(|(_, o)| o.iter());
                    push.caught_up_to(&self.offsets.iter().chain(inputs).copied().collect::<Vec<_>>());
                }
                push.send()?;
                if push.is_closed() {
                    break;
                }
            }
            // A checkpoint that failed (a full disk) is retried before reading more input.
            if self.checkpoint_failing && !self.checkpoint_or_wait()? {
                continue;
            }
            let version = self.rt.log.notifier.version();
            let (from_input, polled) = self.poll_next()?;
            let from_second = from_input.is_some();
            if let (Some(table), false, Some(decoded)) = (from_input, self.ops.join.is_empty(), &polled) {
                let read = &self.ops.join_read;
                let present: Vec<&Vec<Value>> = decoded.upserts.iter().filter_map(|(_, row, _)| row.as_ref()).collect();
                let in_copy = self.ops.join[table].in_copy(&present);
                // The query's copy keeps only the rows the WHERE can accept and the columns read
                // after the join (others NULL).
                let cells: Vec<Vec<&Value>> = present
                    .iter()
                    .zip(&in_copy)
                    .filter(|(_, &keep)| keep)
                    .map(|(row, _)| {
                        row.iter()
                            .enumerate()
                            .map(|(i, v)| match read.get(i) {
                                Some(false) => &Value::Null,
                                _ => v,
                            })
                            .collect()
                    })
                    .collect();
                let rows = &self.ops.join[table].rows;
                // Decoded rows fit their columns' types; one that does not is logged, not stored.
                let encoded: Vec<Option<Vec<u8>>> = match rows.encode(&cells) {
                    Ok(all) => all.into_iter().map(Some).collect(),
                    Err(_) => cells
                        .iter()
                        .map(|row| match rows.encode(std::slice::from_ref(row)) {
                            Ok(mut one) => one.pop(),
                            Err(e) => {
                                let topic = &self.table_input[table].0.relation.topic;
                                self.rt.processing_log.record(&self.id, topic, -1, -1, &e.to_string(), None);
                                None
                            }
                        })
                        .collect(),
                };
                let mut encoded = encoded.into_iter();
                let mut in_copy = in_copy.into_iter();
                for (key, row, _) in &decoded.upserts {
                    let value = match row {
                        Some(_) if in_copy.next() == Some(false) => None,
                        Some(_) => match encoded.next().flatten() {
                            Some(v) => Some(v),
                            None => continue,
                        },
                        None => None,
                    };
                    self.pending.insert(join_row_key(table, &memcomparable(key)), value);
                }
                self.dirty = true;
                continue;
            }
            match polled {
                Some(decoded) => {
                    self.dirty = true;
                    self.process(decoded, from_second)?;
                    if last_checkpoint.elapsed() >= self.rt.config.checkpoint_interval
                        || self.pending_outputs.wants_checkpoint()
                    {
                        self.checkpoint_or_wait()?;
                        last_checkpoint = Instant::now();
                    }
                }
                None if self.dirty => {
                    self.checkpoint_or_wait()?;
                    last_checkpoint = Instant::now();
                }
                None => {
                    self.advance_idle()?;
                    if self.dirty {
                        continue;
                    }
                    // The reading thread waits for new records itself.
                    if self.read_ahead.is_none() {
                        self.rt.log.notifier.wait_past(version, Duration::from_millis(100));
                    }
                }
            }
        }
        Ok(())
    }

    /// A checkpoint; when the disk refuses it (full, or an I/O error), the query waits and
    /// retries instead of stopping: nothing was committed, everything stays buffered. The
    /// error shows in SHOW QUERIES meanwhile. Returns whether the checkpoint was made.
    fn checkpoint_or_wait(&mut self) -> Result<bool> {
        match self.checkpoint() {
            Ok(()) => {
                if std::mem::take(&mut self.checkpoint_failing) {
                    tracing::info!(query = %self.id, "checkpoints work again");
                    *self.status.error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                Ok(true)
            }
            Err(e @ (EddyError::Log(_) | EddyError::State(_))) => {
                if !self.checkpoint_failing {
                    tracing::warn!(query = %self.id, "checkpoint failed, retrying: {e}");
                }
                *self.status.error.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("checkpoint failed, retrying: {e}"));
                self.checkpoint_failing = true;
                std::thread::sleep(Duration::from_millis(500));
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Rewrites every stored group's output row under the current SELECT list and HAVING
    /// (state only: the changelog gets the new rows as groups change).
    fn reproject_groups(&mut self) -> Result<()> {
        let Body::Aggregate(aggregate) = &mut self.ops.body else { return Ok(()) };
        let entries = self.rt.store.scan_prefix(&self.cf, &[self.agg_prefix], usize::MAX)?;
        let keys: Vec<Vec<u8>> =
            entries.into_iter().map(|(k, _)| k[1..].to_vec()).filter(|k| k.first() != Some(&0xFF)).collect();
        for chunk in keys.chunks(1024) {
            let changes = {
                let load = loader(&self.rt.store, &self.cf, &self.pending, self.agg_prefix);
                aggregate.reproject(chunk, &load)?
            };
            for c in changes {
                if let StateWrite::Put(v) = c.state_value {
                    self.pending.insert(prefixed(self.agg_prefix, &c.state_key), Some(v));
                }
            }
        }
        self.checkpoint()
    }

    /// The next chunk of input, and which joined input it came from (`None`: the source).
    /// Joined tables' updates come before the stream's records. Of two joined streams or
    /// tables, the one whose event time is behind goes first (taking turns on a tie), as Kafka
    /// Streams picks the input with the lowest timestamp: a replay then meets both sides in
    /// time order and stream time never runs ahead of the slower side by more than a chunk.
    /// A stream–stream join reads smaller chunks, so that lead stays well inside a grace period.
    fn poll_next(&mut self) -> Result<(Option<usize>, Option<DecodedBatch>)> {
        if self.read_ahead.is_some() {
            return Ok((None, self.read_ahead_next()?));
        }
        let max = self.rt.config.fetch_bytes_max;
        let plog = &self.rt.processing_log;
        if !self.ops.join.is_empty() {
            for (i, (table, offsets)) in self.table_input.iter_mut().enumerate() {
                if let Some(decoded) = table.poll(offsets, max, plog, &self.id)? {
                    return Ok((Some(i), Some(decoded)));
                }
            }
            return Ok((None, self.source.poll(&mut self.offsets, max, plog, &self.id)?));
        }
        let Some((second, second_offsets)) = self.table_input.first_mut() else {
            return Ok((None, self.source.poll(&mut self.offsets, max, plog, &self.id)?));
        };
        let max = if self.ops.interval.is_some() { max.min(JOIN_CHUNK_BYTES) } else { max };
        let [source_time, second_time] = self.input_time;
        let second_first = match source_time.cmp(&second_time) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => self.prefer_second,
        };
        self.prefer_second = !self.prefer_second;
        for take_second in [second_first, !second_first] {
            let polled = if take_second {
                second.poll(second_offsets, max, plog, &self.id)?
            } else {
                self.source.poll(&mut self.offsets, max, plog, &self.id)?
            };
            if let Some(mut decoded) = polled {
                // A stream–stream join takes a chunk only up to the other side's event time
                // (plus the grace period: a lead that expires no buffered record before the
                // other side's matches for it are read) while the other side has more to read.
                // The rest is read again later: a producer's batch can span many seconds.
                if let Some(join) = &self.ops.interval {
                    let slack = join.plan.window.grace_ms;
                    let other_time = self.input_time[usize::from(!take_second)].saturating_add(slack);
                    let other_has_more =
                        if take_second { self.source.has_more(&self.offsets) } else { second.has_more(second_offsets) };
                    let rowtime = if take_second { join.plan.right_rowtime } else { join.plan.left_rowtime };
                    if other_has_more {
                        if let Some((partition, offset)) = cut_after(&mut decoded, rowtime, other_time) {
                            let (source, offsets) = if take_second {
                                (&*second, &mut *second_offsets)
                            } else {
                                (&self.source, &mut self.offsets)
                            };
                            if let Some(idx) = source.partitions.iter().position(|p| p.id == partition) {
                                offsets[idx] = offset;
                            }
                        }
                    }
                }
                let time = &mut self.input_time[usize::from(take_second)];
                *time = (*time).max(decoded.max_timestamp_ms);
                return Ok((take_second.then_some(0), Some(decoded)));
            }
        }
        Ok((None, None))
    }

    fn process(&mut self, decoded: DecodedBatch, from_second: bool) -> Result<()> {
        let partition = decoded.partition;
        let read_ms = (decoded.batch.is_some() || !decoded.upserts.is_empty()).then_some(decoded.max_timestamp_ms);
        self.start_batch(from_second, partition);
        let result = self.process_decoded(decoded, from_second);
        self.end_batch(from_second, partition, read_ms);
        result
    }

    fn process_decoded(&mut self, decoded: DecodedBatch, from_second: bool) -> Result<()> {
        crate::alloc::note_queries_busy();
        self.status.processed_records.fetch_add(decoded.records as u64, Ordering::Relaxed);
        if self.ops.interval.is_some() {
            return self.process_interval_join(decoded, from_second);
        }
        if self.ops.table_join.is_some() {
            return self.process_table_join(decoded, from_second);
        }
        if let Body::Upsert(op) = &self.ops.body {
            let changes = op.process(decoded.upserts);
            self.apply(changes)?;
            return Ok(());
        }
        if self.source.relation.kind == RelationKind::Table {
            return self.process_table_changes(decoded);
        }
        let Some(batch) = decoded.batch else { return Ok(()) };
        match self.process_batch(&batch, None, decoded.max_timestamp_ms) {
            Ok(()) => Ok(()),
            Err(e) if !matches!(e, EddyError::State(_) | EddyError::Log(_) | EddyError::Internal(_)) => {
                // An expression failed on some row (say a division by zero): find the rows
                // that fail, report them, and keep going with the rest.
                for (row, (partition, offset)) in decoded.origins.iter().enumerate().take(batch.num_rows()) {
                    if let Err(e) = self.process_batch(&batch.slice(row, 1), None, decoded.max_timestamp_ms) {
                        let topic = &self.source.relation.topic;
                        self.rt.processing_log.record(&self.id, topic, *partition, *offset, &e.to_string(), None);
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// One side of a stream–stream join: match against the other side's buffer, then run
    /// the joined rows through the rest of the plan.
    fn process_interval_join(&mut self, decoded: DecodedBatch, from_second: bool) -> Result<()> {
        let Some(batch) = decoded.batch else { return Ok(()) };
        let side = if from_second { Side::Right } else { Side::Left };
        let join = self.ops.interval.as_mut().expect("checked by the caller");
        let (store, cf) = (&self.rt.store, &self.cf);
        let step = join.process(side, &batch, &mut self.time, &|prefix| store.scan_prefix(cf, prefix, usize::MAX))?;
        let rowtime = match side {
            Side::Left => join.plan.left_rowtime,
            Side::Right => join.plan.right_rowtime,
        };
        let topic = match (self.table_input.first(), side) {
            (Some((second, _)), Side::Right) => second.relation.topic.clone(),
            _ => self.source.relation.topic.clone(),
        };
        for &row in &step.late {
            let (partition, offset) = (decoded.origins[row].0, decoded.origins[row].1);
            let message = format!(
                "late record: event time {} is past the join window's grace period (watermark {})",
                cell_at(batch.column(rowtime).as_ref(), row),
                self.time.watermark_ms
            );
            self.status.late_records.fetch_add(1, Ordering::Relaxed);
            self.rt.processing_log.record(&self.id, &topic, partition, offset, &message, None);
        }
        self.process_joined(&step, &topic, decoded.max_timestamp_ms)
    }

    /// Joined rows through the rest of the plan. They come from both inputs: they judge
    /// lateness against the join's watermark and do not move it.
    fn process_joined(&mut self, step: &JoinStep, topic: &str, default_ts: i64) -> Result<()> {
        let joined = self.ops.interval.as_ref().expect("checked by the caller").to_batch(&step.rows)?;
        if joined.num_rows() == 0 {
            return Ok(());
        }
        let ts = step.timestamps.iter().copied().max().unwrap_or(default_ts);
        let read = self.time;
        self.time = BatchTime::fixed(read.watermark_ms);
        let result = match self.process_batch(&joined, None, ts) {
            Err(e) if !matches!(e, EddyError::State(_) | EddyError::Log(_) | EddyError::Internal(_)) => {
                for row in 0..joined.num_rows() {
                    if let Err(e) = self.process_batch(&joined.slice(row, 1), None, step.timestamps[row]) {
                        self.rt.processing_log.record(&self.id, topic, -1, -1, &e.to_string(), None);
                    }
                }
                Ok(())
            }
            other => other,
        };
        self.time = read;
        result
    }

    /// An aggregation over a table: each change retracts the key's previous row and adds
    /// its new one.
    fn process_table_changes(&mut self, decoded: DecodedBatch) -> Result<()> {
        let keys: Vec<Vec<u8>> =
            decoded.upserts.iter().map(|(k, _, _)| prefixed(PREVIOUS_ROW_PREFIX, &memcomparable(k))).collect();
        let mut previous: HashMap<Vec<u8>, Option<Vec<Value>>> = HashMap::new();
        let stored = self.cache.read(&self.rt.store, &self.cf, &self.pending, &keys)?;
        for (k, v) in keys.iter().zip(stored) {
            let row = v.map(|b| stored_row(&b)).transpose()?.flatten();
            previous.insert(k.clone(), row);
        }
        let mut signed = Vec::new();
        for (k, (_, row, _)) in keys.iter().zip(decoded.upserts) {
            if let Some(old) = previous.get(k).cloned().flatten() {
                signed.push(SignedRow { key: k[1..].to_vec(), sign: -1, row: old });
            }
            if let Some(new) = &row {
                signed.push(SignedRow { key: k[1..].to_vec(), sign: 1, row: new.clone() });
            }
            self.pending.insert(k.clone(), row.as_deref().map(stored::encode_row));
            previous.insert(k.clone(), row);
        }
        self.process_signed(signed, decoded.max_timestamp_ms)
    }

    /// One side of a table–table join changed: the joined rows it ends and starts.
    fn process_table_join(&mut self, decoded: DecodedBatch, from_second: bool) -> Result<()> {
        let join = self.ops.table_join.as_ref().expect("checked by the caller");
        let mut view =
            StateView { store: &self.rt.store, cf: &self.cf, pending: &mut self.pending, cache: &self.cache };
        let mut signed = Vec::new();
        for (key, row, _) in decoded.upserts {
            let key = memcomparable(&key);
            signed.extend(if from_second {
                join.right_change(&mut view, &key, row)?
            } else {
                join.left_change(&mut view, &key, row)?
            });
        }
        self.process_signed(signed, decoded.max_timestamp_ms)
    }

    /// Table-shaped input (signed rows under their keys) through the filter and the body.
    fn process_signed(&mut self, signed: Vec<SignedRow>, timestamp_ms: i64) -> Result<()> {
        if signed.is_empty() {
            return Ok(());
        }
        let mut columns = Vec::with_capacity(self.ops.input_schema.fields().len());
        for (i, f) in self.ops.input_schema.fields().iter().enumerate() {
            let cells: Vec<Value> = signed.iter().map(|r| r.row.get(i).cloned().unwrap_or(Value::Null)).collect();
            columns.push(crate::format::cells_to_array(f.data_type(), &cells)?);
        }
        let batch = RecordBatch::try_new(self.ops.input_schema.clone(), columns)?;
        let signs: Vec<i64> = signed.iter().map(|r| r.sign).collect();
        let keys: Vec<Vec<u8>> = signed.into_iter().map(|r| r.key).collect();
        if let Err(e) = self.process_batch(&batch, Some((&signs, &keys)), timestamp_ms) {
            if matches!(e, EddyError::State(_) | EddyError::Log(_) | EddyError::Internal(_)) {
                return Err(e);
            }
            for row in 0..batch.num_rows() {
                let one = (&signs[row..=row], &keys[row..=row]);
                if let Err(e) = self.process_batch(&batch.slice(row, 1), Some(one), timestamp_ms) {
                    let topic = &self.source.relation.topic;
                    self.rt.processing_log.record(&self.id, topic, -1, -1, &e.to_string(), None);
                }
            }
        }
        Ok(())
    }

    /// Runs one batch through the operators, buffering output and state changes.
    /// `signed`: for table-shaped input, each row's sign (+1 add, -1 retract) and result key.
    fn process_batch(
        &mut self,
        batch: &RecordBatch,
        signed: Option<(&[i64], &[Vec<u8>])>,
        timestamp_ms: i64,
    ) -> Result<()> {
        let store = &self.rt.store;
        let cf = &self.cf;
        let pending = &self.pending;
        let cache = &self.cache;
        let table_lookup = |table: usize, keys: &[Vec<u8>]| -> LookupResult {
            let full: Vec<Vec<u8>> = keys.iter().map(|k| join_row_key(table, k)).collect();
            cache.read(store, cf, pending, &full)
        };
        let input = self.ops.input(batch.clone(), &table_lookup)?;
        // Signs and keys follow their rows through the filter.
        let (input, signs, keys) = match &self.ops.filter {
            Some(f) => {
                let mask = f.mask(&input)?;
                let kept: Vec<usize> = (0..mask.len()).filter(|&i| mask.is_valid(i) && mask.value(i)).collect();
                let signs = signed.map(|(s, _)| kept.iter().map(|&i| s[i]).collect::<Vec<_>>());
                let keys = signed.map(|(_, k)| kept.iter().map(|&i| k[i].clone()).collect::<Vec<_>>());
                (datafusion::arrow::compute::filter_record_batch(&input, &mask)?, signs, keys)
            }
            None => (input, signed.map(|(s, _)| s.to_vec()), signed.map(|(_, k)| k.to_vec())),
        };
        // A stream's rows make records that carry the rows' own event times (ksqlDB).
        let row_times = |batch: &RecordBatch| match self.ops.row_time {
            Some((rowtime, other)) if signed.is_none() => event_times(batch, rowtime, other).map(Some),
            _ => Ok(None),
        };
        let changes: Vec<Change> = match &mut self.ops.body {
            Body::Upsert(_) => return Ok(()),
            Body::Project(project) if keys.is_some() => {
                let projected = project.process(&input)?;
                let (signs, keys) = (signs.expect("with keys"), keys.expect("checked"));
                let key_columns: Vec<usize> = self.ops.output_key_columns.clone();
                let mut changes = Vec::with_capacity(keys.len());
                for (row, (key, sign)) in keys.into_iter().zip(signs).enumerate() {
                    let cells: Vec<Value> = projected.columns().iter().map(|c| cell_at(c.as_ref(), row)).collect();
                    let key_values: Vec<Value> = key_columns.iter().map(|&i| cells[i].clone()).collect();
                    let (row, state_value) = if sign > 0 {
                        let stored = stored::encode_row(&cells);
                        (Some(cells), StateWrite::Put(stored))
                    } else {
                        (None, StateWrite::Delete)
                    };
                    changes.push(Change { state_key: key, key_values, row, state_value, timestamp_ms });
                }
                last_change_per_key(changes)
            }
            Body::Project(project) => {
                if let Some(push) = &mut self.push {
                    push.batch(project.process(&input)?);
                    return Ok(());
                }
                let times = row_times(&input)?;
                let (projected, times) = project.process_timed(&input, times.as_ref())?;
                if let Some(sink) = &self.sink {
                    if !sink.encode_batch(&projected, timestamp_ms, times.as_ref(), &mut self.pending_outputs) {
                        for row in 0..projected.num_rows() {
                            let cells: Vec<_> = projected.columns().iter().map(|c| cell_at(c.as_ref(), row)).collect();
                            let ts = row_time(times.as_ref(), row, timestamp_ms);
                            self.pending_outputs.push(&sink.encode_row(&cells, ts));
                        }
                    }
                }
                return Ok(());
            }
            Body::Aggregate(aggregate) if self.ops.session.is_some() => {
                let params = self.ops.session.as_ref().expect("checked");
                let end_pos = params.end_pos;
                let time_before = self.time;
                let result = {
                    let load = loader(store, cf, pending, self.agg_prefix);
                    aggregate.process_sessions(&input, params, &mut self.time, timestamp_ms, &load)
                };
                let out = match result {
                    Ok(out) => out,
                    Err(e) => {
                        self.time = time_before;
                        return Err(e);
                    }
                };
                self.report_late(&input, &out.late, 0);
                for (end, key) in out.closed {
                    let entry = (end.saturating_add(self.close_after_end_ms), key);
                    if self.open_windows.remove(&entry) {
                        self.pending.insert(time_key(WINDOW_OPEN_PREFIX, entry.0, &entry.1), None);
                    }
                }
                for (k, v) in out.index_writes {
                    self.pending.insert(prefixed(self.agg_prefix, &k), v);
                }
                // A session's row carries its end: the time of its latest record.
                let mut changes = out.changes;
                for c in changes.iter_mut().filter(|c| c.row.is_some()) {
                    if let Some(end) = c.key_values.get(end_pos).and_then(Value::as_i64) {
                        c.timestamp_ms = end;
                    }
                }
                changes
            }
            Body::Aggregate(aggregate) => {
                let time_before = self.time;
                let (input, late) = match &self.ops.window {
                    Some(w) => {
                        let windowed = w.process(&input, &mut self.time)?;
                        (windowed.batch, Some((windowed.late, windowed.partly_late, input)))
                    }
                    None => (input, None),
                };
                let times = row_times(&input)?;
                let result = {
                    let load = loader(store, cf, pending, self.agg_prefix);
                    aggregate.process(&input, signs.as_deref(), timestamp_ms, times.as_ref(), &load)
                };
                match result {
                    Ok(changes) => {
                        if let Some((late, partly_late, before)) = late {
                            self.report_late(&before, &late, partly_late);
                        }
                        changes
                    }
                    Err(e) => {
                        self.time = time_before;
                        return Err(e);
                    }
                }
            }
        };
        self.apply(changes)?;
        if self.ops.window.is_some() {
            self.close_windows()?;
        }
        Ok(())
    }

    /// Late records go to the processing log (and the `LATE DATA TO` stream); never lost silently.
    fn report_late(&mut self, batch: &RecordBatch, late: &[usize], partly_late: usize) {
        if late.is_empty() && partly_late == 0 {
            return;
        }
        self.status.late_records.fetch_add(late.len() as u64, Ordering::Relaxed);
        let topic = self.source.relation.topic.clone();
        for &row in late {
            let (partition, offset) = match self.ops.origin_columns {
                Some((p, o)) => (
                    cell_at(batch.column(p).as_ref(), row).as_i64().unwrap_or(-1) as i32,
                    cell_at(batch.column(o).as_ref(), row).as_i64().unwrap_or(-1),
                ),
                None => (-1, -1),
            };
            let stored = || self.ops.source_row.clone().map(|c| cell_at(batch.column(c).as_ref(), row)).collect();
            let cells: Vec<Value> = match self.source.unread {
                Some(_) => self.source.record_row(partition, offset).unwrap_or_else(stored),
                None => stored(),
            };
            let rowtime = self.ops.window.as_ref().map(|w| cell_at(batch.column(w.rowtime).as_ref(), row));
            let message = format!(
                "late record: event time {} is past its window's grace period (watermark {})",
                rowtime.unwrap_or(Value::Null),
                self.time.watermark_ms
            );
            let record = Value::Array(cells.clone()).to_string();
            self.rt.processing_log.record(&self.id, &topic, partition, offset, &message, Some(record.as_bytes()));
            if let Some(late_sink) = &self.late_sink {
                let ts = self.ops.window.as_ref().and_then(|w| cell_at(batch.column(w.rowtime).as_ref(), row).as_i64());
                self.pending_late.push(&late_sink.encode_row(&cells, ts.unwrap_or(0)));
            }
        }
    }

    fn apply(&mut self, changes: Vec<Change>) -> Result<()> {
        for change in changes {
            if let Some((end_pos, start_pos)) = self.ops.window_group {
                if let (Some(end), Some(start)) = (
                    change.key_values.get(end_pos).and_then(Value::as_i64),
                    change.key_values.get(start_pos).and_then(Value::as_i64),
                ) {
                    if (self.ops.emit_final || self.retention_ms.is_some()) && change.state_value.is_live() {
                        let close = end.saturating_add(self.close_after_end_ms);
                        let entry = (close, change.state_key.clone());
                        if !self.open_windows.contains(&entry) {
                            self.pending.insert(
                                time_key(WINDOW_OPEN_PREFIX, close, &change.state_key),
                                Some(start.to_be_bytes().to_vec()),
                            );
                            self.open_windows.insert(entry);
                        }
                    }
                }
            }
            if let (Some(sink), false) = (&self.sink, self.ops.emit_final) {
                self.pending_outputs.push(&sink.encode_change(&change));
            }
            if let (Some(push), false) = (&mut self.push, self.ops.emit_final) {
                push.change(&change);
            }
            match change.state_value {
                StateWrite::Put(v) => {
                    self.pending.insert(prefixed(self.agg_prefix, &change.state_key), Some(v));
                }
                StateWrite::Delete => {
                    self.pending.insert(prefixed(self.agg_prefix, &change.state_key), None);
                }
                StateWrite::Deferred => {}
            }
        }
        Ok(())
    }

    /// Closes the windows the watermark has passed: EMIT FINAL writes their rows now; with
    /// RETENTION they are deleted once it expires.
    fn close_windows(&mut self) -> Result<()> {
        while let Some((close, key)) = self.open_windows.first().cloned() {
            if close > self.time.watermark_ms {
                break;
            }
            self.open_windows.pop_first();
            self.pending.insert(time_key(WINDOW_OPEN_PREFIX, close, &key), None);
            let Body::Aggregate(aggregate) = &mut self.ops.body else { break };
            let group = {
                let load = loader(&self.rt.store, &self.cf, &self.pending, self.agg_prefix);
                aggregate.group(&key, &load)?
            };
            let Some(group) = group else { continue };
            if self.ops.emit_final {
                if let Some(row) = &group.r {
                    let change = Change {
                        state_key: key.clone(),
                        key_values: group.g.clone(),
                        row: Some(row.clone()),
                        state_value: StateWrite::Delete,
                        timestamp_ms: close - self.close_after_end_ms,
                    };
                    if let Some(sink) = &self.sink {
                        self.pending_outputs.push(&sink.encode_change(&change));
                    }
                    if let Some(push) = &mut self.push {
                        push.change(&change);
                    }
                    let final_row = stored::encode_row(row);
                    self.pending.insert(row_key(&key), Some(final_row));
                }
            }
            if let (Some(retention), Some((_, start_pos))) = (self.retention_ms, self.ops.window_group) {
                let start = group.g.get(start_pos).and_then(Value::as_i64).unwrap_or(close);
                let expire = start.saturating_add(retention);
                self.pending.insert(time_key(WINDOW_EXPIRY_PREFIX, expire, &key), Some(Vec::new()));
                self.expiring_windows.insert((expire, key));
            }
        }
        while let Some((expire, key)) = self.expiring_windows.first().cloned() {
            if expire > self.time.watermark_ms {
                break;
            }
            self.expiring_windows.pop_first();
            self.pending.insert(time_key(WINDOW_EXPIRY_PREFIX, expire, &key), None);
            self.pending.insert(row_key(&key), None);
            self.pending.insert(prefixed(self.agg_prefix, &key), None);
            if let Body::Aggregate(aggregate) = &mut self.ops.body {
                aggregate.forget(&key);
            }
            if let Some(push) = &mut self.push {
                push.forget(&key);
            }
        }
        Ok(())
    }
}

/// Keeps only each key's last change, in the order of those last changes (a retraction
/// followed by the key's new row becomes just the new row).
fn last_change_per_key(changes: Vec<Change>) -> Vec<Change> {
    let mut last: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        last.insert(c.state_key.clone(), i);
    }
    changes.into_iter().enumerate().filter(|(i, c)| last[&c.state_key] == *i).map(|(_, c)| c).collect()
}

/// State writes not yet checkpointed, by full key (`None` deletes).
type Pending = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
type StoredValues = Vec<Option<Vec<u8>>>;

/// Reads groups by key: this checkpoint's pending writes first, then RocksDB (one multi-get).
/// Groups do not go through the query's cache (`read_cache.rs` says why).
fn loader<'a>(
    store: &'a StateStore,
    cf: &'a str,
    pending: &'a Pending,
    prefix: u8,
) -> impl Fn(&[Vec<u8>]) -> Result<StoredValues> + Sync + 'a {
    move |keys: &[Vec<u8>]| {
        let full: Vec<Vec<u8>> = keys.iter().map(|k| prefixed(prefix, k)).collect();
        let mut out = store.multi_get(cf, &full)?;
        for (i, k) in full.iter().enumerate() {
            if let Some(p) = pending.get(k) {
                out[i] = p.clone();
            }
        }
        Ok(out)
    }
}
