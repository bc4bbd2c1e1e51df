//! Grouped aggregation (COUNT, COUNT(DISTINCT), SUM, AVG, MIN, MAX, LATEST/EARLIEST,
//! COLLECT_LIST, TOPK, HISTOGRAM) with typed accumulators per group (`accumulator.rs`). Rows
//! carry a sign: +1 adds a row, -1 retracts one (a table row that changed or was deleted),
//! so aggregates over tables stay right.
//!
//! Per input batch: evaluate the group and argument expressions once (Arrow), encode the
//! group keys in Arrow's row format (`format::row_keys`), load the groups not cached with
//! one multi-get, fold the rows in, then emit one change per group touched (the group's row
//! after the whole batch, like ksqlDB's record cache). The touched groups' columns are
//! decoded from their keys and the aggregates' from their accumulators, and HAVING and the
//! SELECT list run as physical expressions over that batch.
//!
//! The groups are split into shards by a hash of their key (`GroupCache`). With more than
//! one shard (`--query-threads`), a large batch folds and emits each shard's groups on its
//! own thread: every group lives in exactly one shard, so the shards share nothing but the
//! batch they read. The query's thread still makes one checkpoint of them all.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::Rows;
use foldhash::{HashMap, HashMapExt};
use serde_json::Value;

use super::accumulator::{decode_group, encode_group, output_row, AggSlot, ArgColumn, Group};
use super::{Change, StateWrite};
use crate::error::{EddyError, Result};
use crate::format::row_keys::RowKeys;
use crate::format::{cell_at, stored};
use crate::plan::AggregatePlan;

/// Reads the stored state of a batch of groups (one multi-get), `None` for new groups.
/// Shards load their groups on their own threads.
pub type StateLoader<'a> = &'a (dyn Fn(&[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> + Sync);

/// A stored group as its values and output row (what EMIT FINAL and RETENTION read).
pub struct GroupRow {
    pub g: Vec<Value>,
    pub r: Option<Vec<Value>>,
}

pub struct AggregateOperator {
    def: Definition,
    /// Groups read or written since the last checkpoint.
    cache: GroupCache,
    /// Session windows per group key, read or written since the last checkpoint.
    sessions: HashMap<Vec<u8>, Vec<(i64, i64)>>,
    /// Smaller batches fold on the query's thread: starting threads would cost more.
    parallel_min_rows: usize,
}

/// What the aggregation computes: shared, read-only, by the threads of a batch.
struct Definition {
    plan: AggregatePlan,
    output_schema: SchemaRef,
    /// Inputs may retract rows (the source is a table): MIN/MAX keep multisets.
    retractions: bool,
    /// The group keys' encoding (the group columns' types).
    keys: RowKeys,
    /// One per aggregate.
    slots: Vec<AggSlot>,
}

/// Cached groups, split into shards by a hash of the key.
struct GroupCache {
    shards: Vec<HashMap<Vec<u8>, Group>>,
    hasher: foldhash::fast::FixedState,
}

impl GroupCache {
    fn new(shards: usize) -> GroupCache {
        GroupCache {
            shards: (0..shards.max(1)).map(|_| HashMap::new()).collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x5EED),
        }
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        match self.shards.len() {
            1 => 0,
            n => (std::hash::BuildHasher::hash_one(&self.hasher, key) % n as u64) as usize,
        }
    }

    fn get(&self, key: &[u8]) -> Option<&Group> {
        self.shards[self.shard_of(key)].get(key)
    }

    fn insert(&mut self, key: Vec<u8>, group: Group) -> Option<Group> {
        let shard = self.shard_of(&key);
        self.shards[shard].insert(key, group)
    }

    fn remove(&mut self, key: &[u8]) -> Option<Group> {
        let shard = self.shard_of(key);
        self.shards[shard].remove(key)
    }

    fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// `keys` split by shard, each in its given order.
    fn split(&self, keys: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
        let mut out = vec![Vec::new(); self.shards.len()];
        for k in keys {
            out[self.shard_of(k)].push(k.clone());
        }
        out
    }
}

/// One shard's part of a batch: the rows it folds and the groups they touch.
#[derive(Default)]
struct ShardWork {
    rows: Vec<usize>,
    touched: Vec<Vec<u8>>,
}

/// What a shard did with its part: its changes, or the error and how its groups were
/// before (to undo every shard's fold when one fails).
struct ShardDone {
    result: Result<Vec<Change>>,
    before: Vec<(Vec<super::accumulator::Acc>, i64)>,
}

/// A session window: (start, end) event times, both inclusive.
type Session = (i64, i64);

/// Session windows: where the event time and the window bounds are.
pub struct SessionParams {
    pub rowtime: usize,
    /// The other side's event time, over a stream–stream join (`window::event_times`).
    pub other_rowtime: Option<usize>,
    pub gap_ms: i64,
    pub grace_ms: i64,
    /// Positions of WINDOWSTART and WINDOWEND among the group values.
    pub start_pos: usize,
    pub end_pos: usize,
}

#[derive(Default)]
pub struct SessionOutput {
    pub changes: Vec<Change>,
    /// Input rows that came after their session had closed.
    pub late: Vec<usize>,
    /// Session index entries to persist (same key space as the groups).
    pub index_writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Sessions merged away: (their end, their group key).
    pub closed: Vec<(i64, Vec<u8>)>,
}

fn bad_state(e: impl std::fmt::Display) -> EddyError {
    EddyError::Internal(format!("aggregate state: {e}"))
}

impl AggregateOperator {
    pub fn new(plan: AggregatePlan, output_schema: SchemaRef, retractions: bool) -> Result<Self> {
        let n_group = plan.group.len();
        let group_types: Vec<DataType> =
            plan.agg_schema.fields().iter().take(n_group).map(|f| f.data_type().clone()).collect();
        let slots = plan
            .aggs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                AggSlot::new(spec.func, &spec.arg_type, plan.agg_schema.field(n_group + i).data_type(), retractions)
            })
            .collect::<Result<_>>()?;
        Ok(AggregateOperator {
            def: Definition { keys: RowKeys::new(&group_types)?, slots, plan, output_schema, retractions },
            cache: GroupCache::new(1),
            sessions: HashMap::new(),
            parallel_min_rows: usize::MAX,
        })
    }

    /// Splits the groups over `threads` shards, folded on as many threads for batches of
    /// `min_rows` rows or more (call before the first batch).
    pub fn set_threads(&mut self, threads: usize, min_rows: usize) {
        self.cache = GroupCache::new(threads);
        self.parallel_min_rows = min_rows;
    }

    /// The input columns the group keys and the aggregates' arguments read.
    pub fn input_columns(&self) -> impl Iterator<Item = usize> + '_ {
        let args = self.def.plan.aggs.iter().map(|a| &a.arg);
        self.def
            .plan
            .group
            .iter()
            .chain(args)
            .flat_map(datafusion::physical_expr::utils::collect_columns)
            .map(|c| c.index())
    }

    /// Drops a group from the cache (its state was deleted).
    pub fn forget(&mut self, key: &[u8]) {
        self.cache.remove(key);
    }

    /// A group's values and output row as of the last batch (cached, or read with `load`).
    pub fn group(&mut self, key: &[u8], load: StateLoader<'_>) -> Result<Option<GroupRow>> {
        let group = match self.cache.get(key) {
            Some(g) => g.clone(),
            None => match load(&[key.to_vec()])?.pop().flatten() {
                Some(bytes) => decode_group(&bytes)?,
                None => return Ok(None),
            },
        };
        let columns = self.def.keys.decode([key])?;
        let g = columns.iter().map(|c| cell_at(c.as_ref(), 0)).collect();
        let r = group.row.as_deref().map(output_row).transpose()?;
        Ok(Some(GroupRow { g, r }))
    }

    /// The state of every group changed since the last call, to write at the checkpoint
    /// (`None`: the group is gone).
    pub fn drain_writes(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut writes = Vec::new();
        for (k, group) in self.cache.shards.iter_mut().flatten().filter(|(_, g)| g.dirty) {
            group.dirty = false;
            writes.push((k.clone(), (!group.accs.is_empty()).then(|| encode_group(group))));
        }
        writes
    }

    /// Forgets cached groups (after a checkpoint wrote them; RocksDB's cache keeps them warm).
    pub fn clear_cache(&mut self) {
        for shard in &mut self.cache.shards {
            shard.clear();
        }
        self.sessions.clear();
    }

    /// Folds a batch in; `signs[i]` is +1 or -1 for row i (all +1 when `None`).
    /// Folds a batch into its groups and returns the groups' new rows. A group's row carries
    /// `timestamp_ms`, or with `times` (each input row's event time) the latest of its rows
    /// in the batch (Kafka Streams gives an aggregate the time of the records it folds).
    pub fn process(
        &mut self,
        batch: &RecordBatch,
        signs: Option<&[i64]>,
        timestamp_ms: i64,
        times: Option<&Int64Array>,
        load: StateLoader<'_>,
    ) -> Result<Vec<Change>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let groups: Vec<ArrayRef> =
            self.def.plan.group.iter().map(|e| e.evaluate(batch)?.into_array(n)).collect::<Result<_, _>>()?;
        let keys = self.def.keys.encode(&groups, n)?;
        let args = self.def.arguments(batch)?;

        // Each row to its group's shard; each shard's groups in the order the batch first
        // touches them, with the latest event time of their rows (`i64::MIN`: none).
        let mut work: Vec<ShardWork> = (0..self.cache.shards.len()).map(|_| ShardWork::default()).collect();
        let mut seen: HashMap<&[u8], i64> = HashMap::with_capacity(n);
        for row in 0..n {
            let k = keys.key(row);
            let time = times.filter(|t| t.is_valid(row)).map_or(i64::MIN, |t| t.value(row));
            match seen.entry(k) {
                std::collections::hash_map::Entry::Occupied(mut latest) => {
                    let latest = latest.get_mut();
                    *latest = (*latest).max(time);
                    work[self.cache.shard_of(k)].rows.push(row);
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(time);
                    let shard = &mut work[self.cache.shard_of(k)];
                    shard.rows.push(row);
                    shard.touched.push(k.to_vec());
                }
            }
        }
        let def = &self.def;
        let fold = |cache: &mut HashMap<Vec<u8>, Group>, work: &ShardWork| {
            def.fold_shard(cache, work, &keys, &args, signs, timestamp_ms, load)
        };
        let parallel = work.len() > 1 && n >= self.parallel_min_rows;
        let done: Vec<ShardDone> = if parallel {
            std::thread::scope(|scope| {
                let mut shards = self.cache.shards.iter_mut().zip(&work);
                let first = shards.next();
                // A shard whose thread cannot start fails the batch untouched (it folded nothing).
                let mut running = Vec::new();
                let mut inline = Vec::new();
                for (cache, w) in shards {
                    match std::thread::Builder::new().spawn_scoped(scope, || fold(cache, w)) {
                        Ok(handle) => running.push(handle),
                        Err(e) => inline.push(ShardDone {
                            result: Err(EddyError::Internal(format!("could not start an aggregation thread: {e}"))),
                            before: Vec::new(),
                        }),
                    }
                }
                let mut done: Vec<ShardDone> = first.map(|(cache, w)| fold(cache, w)).into_iter().collect();
                done.extend(inline);
                for handle in running {
                    done.push(handle.join().unwrap_or_else(|_| ShardDone {
                        result: Err(EddyError::Internal("an aggregation thread panicked".into())),
                        before: Vec::new(),
                    }));
                }
                done
            })
        } else {
            self.cache.shards.iter_mut().zip(&work).map(|(cache, w)| fold(cache, w)).collect()
        };
        if done.iter().all(|d| d.result.is_ok()) {
            let mut changes: Vec<Change> = done.into_iter().flat_map(|d| d.result.unwrap_or_default()).collect();
            for c in &mut changes {
                match seen.get(c.state_key.as_slice()) {
                    Some(&t) if t != i64::MIN => c.timestamp_ms = t,
                    _ => {}
                }
            }
            return Ok(changes);
        }
        // One shard failed: every shard's groups go back to how they were, so the caller can
        // retry row by row without counting anything twice.
        let mut first_error = None;
        for ((d, w), shard) in done.into_iter().zip(&work).zip(&mut self.cache.shards) {
            if d.before.len() == w.touched.len() {
                for (k, (accs, n)) in w.touched.iter().zip(d.before) {
                    if let Some(group) = shard.get_mut(k) {
                        group.accs = accs;
                        group.n = n;
                    }
                }
            }
            if let Err(e) = d.result {
                first_error.get_or_insert(e);
            }
        }
        Err(first_error.unwrap_or_else(|| EddyError::Internal("aggregation failed".into())))
    }

    /// Recomputes the output rows (HAVING, SELECT list) of stored groups, after the query's
    /// SELECT list changed (CREATE OR REPLACE).
    pub fn reproject(&mut self, keys: &[Vec<u8>], load: StateLoader<'_>) -> Result<Vec<Change>> {
        for (k, v) in keys.iter().zip(load(keys)?) {
            let Some(bytes) = v else { continue };
            self.cache.insert(k.clone(), decode_group(&bytes)?);
        }
        let present: Vec<Vec<u8>> = keys.iter().filter(|k| self.cache.contains_key(k)).cloned().collect();
        self.emit_all(&present, 0)
    }

    /// Folds a batch into session windows. Per group key the sessions are kept in an index
    /// (`session_index_key`); a row within `gap` of one or more sessions merges them. The
    /// batch's rows are taken key by key, each key's in batch order, in local lists; the
    /// caches change only once every key has succeeded. A session that was there before the
    /// batch and is not after it is deleted (a tombstone); every session the batch made or
    /// changed is emitted once, as it is after the batch.
    pub fn process_sessions(
        &mut self,
        batch: &RecordBatch,
        session: &SessionParams,
        time: &mut super::BatchTime,
        timestamp_ms: i64,
        load: StateLoader<'_>,
    ) -> Result<SessionOutput> {
        let n = batch.num_rows();
        let mut out = SessionOutput::default();
        if n == 0 {
            return Ok(out);
        }
        let groups: Vec<ArrayRef> =
            self.def.plan.group.iter().map(|e| e.evaluate(batch)?.into_array(n)).collect::<Result<_, _>>()?;
        let field_rows =
            groups.iter().enumerate().map(|(c, g)| self.def.keys.encode_field(c, g)).collect::<Result<Vec<_>>>()?;
        let args = self.def.arguments(batch)?;
        let times = super::window::event_times(batch, session.rowtime, session.other_rowtime)?;

        // In batch order (the watermark moves row by row): each row's event time, the oldest
        // session end it may still join, and its group key's place.
        let mut index_keys: Vec<Vec<u8>> = Vec::new();
        let mut place_of: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut rows_of: Vec<Vec<(usize, i64, i64)>> = Vec::new();
        for row in 0..n {
            let Some(ts) = (!times.is_null(row)).then(|| times.value(row)) else {
                out.late.push(row);
                continue;
            };
            time.advance(ts);
            let oldest_end = time.watermark_ms.saturating_sub(session.grace_ms).saturating_sub(session.gap_ms);
            let index_key = session_index_key(&field_rows, row, session);
            let place = match place_of.get(&index_key) {
                Some(&p) => p,
                None => {
                    place_of.insert(index_key.clone(), index_keys.len());
                    index_keys.push(index_key);
                    rows_of.push(Vec::new());
                    index_keys.len() - 1
                }
            };
            rows_of[place].push((row, ts, oldest_end));
        }
        // The session lists not cached, in one read.
        let missing: Vec<Vec<u8>> = index_keys.iter().filter(|k| !self.sessions.contains_key(*k)).cloned().collect();
        let mut stored_lists: HashMap<Vec<u8>, Vec<Session>> = HashMap::new();
        if !missing.is_empty() {
            for (k, v) in missing.iter().zip(load(&missing)?) {
                let list = match v {
                    Some(b) => decode_sessions(&b)?,
                    None => Vec::new(),
                };
                stored_lists.insert(k.clone(), list);
            }
        }

        // Each key's rows through its own list: (session, its group when the batch made or
        // changed it).
        struct KeyOutcome {
            before: Vec<Session>,
            after: Vec<(Session, Option<Group>)>,
            first_row: usize,
        }
        let mut outcomes: Vec<KeyOutcome> = Vec::with_capacity(index_keys.len());
        for (key, rows) in index_keys.iter().zip(&rows_of) {
            let before = match self.sessions.get(key) {
                Some(list) => list.clone(),
                None => stored_lists.remove(key).unwrap_or_default(),
            };
            let first_row = rows[0].0;
            let mut live: Vec<(Session, Option<Group>)> = before.iter().map(|&s| (s, None)).collect();
            for &(row, ts, oldest_end) in rows {
                let near = |&(s, e): &Session| {
                    s.saturating_sub(session.gap_ms) <= ts && ts <= e.saturating_add(session.gap_ms)
                };
                let (start, end) =
                    live.iter().filter(|(w, _)| near(w)).fold((ts, ts), |(s, e), (w, _)| (s.min(w.0), e.max(w.1)));
                if end < oldest_end {
                    out.late.push(row);
                    continue;
                }
                let mut merged = Group {
                    n: 0,
                    accs: self.def.slots.iter().map(AggSlot::initial).collect(),
                    row: None,
                    dirty: false,
                };
                let mut i = 0;
                while i < live.len() {
                    if !near(&live[i].0) {
                        i += 1;
                        continue;
                    }
                    let (w, group) = live.swap_remove(i);
                    let group = match group {
                        Some(g) => Some(g),
                        None => {
                            let k = session_key(&self.def.keys, &field_rows, first_row, session, w)?;
                            match self.cache.get(&k) {
                                Some(g) => Some(g.clone()),
                                None => load(std::slice::from_ref(&k))?
                                    .pop()
                                    .flatten()
                                    .map(|b| decode_group(&b))
                                    .transpose()?,
                            }
                        }
                    };
                    if let Some(old) = group.filter(|o| !o.accs.is_empty()) {
                        merged.n += old.n;
                        for ((slot, acc), other) in self.def.slots.iter().zip(&mut merged.accs).zip(&old.accs) {
                            slot.merge(acc, other)?;
                        }
                    }
                }
                merged.n += 1;
                for ((slot, acc), column) in self.def.slots.iter().zip(&mut merged.accs).zip(&args) {
                    slot.fold(acc, column, row, 1)?;
                }
                live.push(((start, end), Some(merged)));
            }
            outcomes.push(KeyOutcome { before, after: live, first_row });
        }

        // Into the caches, keeping what each entry was, to put back should the emit fail.
        let mut undo_cache: Vec<(Vec<u8>, Option<Group>)> = Vec::new();
        let mut undo_sessions: Vec<(Vec<u8>, Option<Vec<Session>>)> = Vec::new();
        let mut deleted: Vec<Change> = Vec::new();
        let mut emit: Vec<Vec<u8>> = Vec::new();
        for (index_key, outcome) in index_keys.into_iter().zip(outcomes) {
            let mut after: Vec<Session> = outcome.after.iter().map(|(w, _)| *w).collect();
            after.sort_unstable();
            for &w in outcome.before.iter().filter(|w| after.binary_search(w).is_err()) {
                let k = session_key(&self.def.keys, &field_rows, outcome.first_row, session, w)?;
                undo_cache.push((k.clone(), self.cache.remove(&k)));
                out.closed.push((w.1, k.clone()));
                let mut key_values: Vec<Value> =
                    groups.iter().map(|a| cell_at(a.as_ref(), outcome.first_row)).collect();
                key_values[session.start_pos] = Value::from(w.0);
                key_values[session.end_pos] = Value::from(w.1);
                deleted.push(Change {
                    state_key: k,
                    key_values,
                    row: None,
                    state_value: StateWrite::Delete,
                    timestamp_ms,
                });
            }
            for (w, group) in outcome.after {
                if let Some(group) = group {
                    let k = session_key(&self.def.keys, &field_rows, outcome.first_row, session, w)?;
                    undo_cache.push((k.clone(), self.cache.insert(k.clone(), group)));
                    emit.push(k);
                }
            }
            let changed = after != outcome.before;
            if changed {
                out.index_writes.push((index_key.clone(), Some(encode_sessions(&after))));
            }
            if changed || !self.sessions.contains_key(&index_key) {
                undo_sessions.push((index_key.clone(), self.sessions.insert(index_key, after)));
            }
        }
        match self.emit_all(&emit, timestamp_ms) {
            Ok(changes) => {
                out.changes = deleted;
                out.changes.extend(changes);
                out.late.sort_unstable();
                Ok(out)
            }
            Err(e) => {
                for (k, v) in undo_cache.into_iter().rev() {
                    match v {
                        Some(group) => drop(self.cache.insert(k, group)),
                        None => drop(self.cache.remove(&k)),
                    };
                }
                for (k, v) in undo_sessions.into_iter().rev() {
                    match v {
                        Some(list) => self.sessions.insert(k, list),
                        None => self.sessions.remove(&k),
                    };
                }
                Err(e)
            }
        }
    }

    /// Emits the touched groups, shard by shard.
    fn emit_all(&mut self, touched: &[Vec<u8>], timestamp_ms: i64) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        for (shard, keys) in self.cache.split(touched).into_iter().enumerate() {
            changes.extend(self.def.emit(&mut self.cache.shards[shard], &keys, timestamp_ms)?);
        }
        Ok(changes)
    }
}

impl Definition {
    /// The aggregates' arguments over a batch, each read as its aggregate folds it.
    fn arguments(&self, batch: &RecordBatch) -> Result<Vec<ArgColumn>> {
        let n = batch.num_rows();
        self.plan
            .aggs
            .iter()
            .zip(&self.slots)
            .map(|(spec, slot)| slot.column(spec.arg.evaluate(batch)?.into_array(n)?))
            .collect()
    }

    /// One shard's part of a batch: load its groups that are not cached, fold its rows,
    /// emit its groups. On failure `before` holds how the touched groups were.
    #[allow(clippy::too_many_arguments)]
    fn fold_shard(
        &self,
        cache: &mut HashMap<Vec<u8>, Group>,
        work: &ShardWork,
        keys: &crate::format::row_keys::KeyRows,
        args: &[ArgColumn],
        signs: Option<&[i64]>,
        timestamp_ms: i64,
        load: StateLoader<'_>,
    ) -> ShardDone {
        let missing: Vec<Vec<u8>> = work.touched.iter().filter(|k| !cache.contains_key(*k)).cloned().collect();
        let loaded = (|| {
            if missing.is_empty() {
                return Ok(());
            }
            for (k, v) in missing.iter().zip(load(&missing)?) {
                let group = match v {
                    Some(bytes) => decode_group(&bytes)?,
                    None => Group::default(),
                };
                cache.insert(k.clone(), group);
            }
            Ok(())
        })();
        if let Err(e) = loaded {
            return ShardDone { result: Err(e), before: Vec::new() };
        }
        // The fold changes only the accumulators and the count; the output row is rewritten
        // only once the whole batch has succeeded.
        let before: Vec<(Vec<super::accumulator::Acc>, i64)> =
            work.touched.iter().map(|k| (cache[k].accs.clone(), cache[k].n)).collect();
        let folded = work.rows.iter().try_for_each(|&row| {
            let sign = signs.map_or(1, |s| s[row]);
            let group = cache.get_mut(keys.key(row)).expect("loaded above");
            if group.accs.is_empty() {
                group.accs = self.slots.iter().map(AggSlot::initial).collect();
            }
            group.n += sign;
            for ((slot, acc), column) in self.slots.iter().zip(&mut group.accs).zip(args) {
                slot.fold(acc, column, row, sign)?;
            }
            Ok(())
        });
        let result = folded.and_then(|()| self.emit(cache, &work.touched, timestamp_ms));
        ShardDone { result, before }
    }

    /// Recomputes HAVING and the SELECT list for the touched groups.
    fn emit(&self, cache: &mut HashMap<Vec<u8>, Group>, touched: &[Vec<u8>], timestamp_ms: i64) -> Result<Vec<Change>> {
        if touched.is_empty() {
            return Ok(Vec::new());
        }
        let schema = self.plan.agg_schema.clone();
        let n_group = self.plan.group.len();
        // The group columns of every touched group, decoded from their keys.
        let group_columns = self.keys.decode(touched.iter().map(Vec::as_slice))?;
        let key_values = |i: usize| -> Vec<Value> { group_columns.iter().map(|c| cell_at(c.as_ref(), i)).collect() };
        // Groups whose every row was retracted are deleted (once the rest has succeeded: a
        // failure leaves the cache for the caller to roll back).
        let (gone, live): (Vec<usize>, Vec<usize>) =
            (0..touched.len()).partition(|&i| self.retractions && cache[&touched[i]].n <= 0);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        let live_indices = UInt32Array::from_iter_values(live.iter().map(|&i| i as u32));
        for (i, c) in group_columns.iter().enumerate() {
            let c = if gone.is_empty() { c.clone() } else { take(c.as_ref(), &live_indices, None)? };
            let want = schema.field(i).data_type();
            columns.push(if c.data_type() == want { c } else { cast(&c, want)? });
        }
        let groups: Vec<&Group> = live.iter().map(|&i| &cache[&touched[i]]).collect();
        for (j, slot) in self.slots.iter().enumerate() {
            let accs: Vec<&super::accumulator::Acc> = groups.iter().map(|g| &g.accs[j]).collect();
            let c = slot.finish(&accs)?;
            let want = schema.field(n_group + j).data_type();
            columns.push(if c.data_type() == want { c } else { cast(&c, want)? });
        }
        let agg_batch = RecordBatch::try_new(schema, columns)?;
        let n = agg_batch.num_rows();
        let visible: Vec<bool> = match &self.plan.having {
            None => vec![true; n],
            Some(h) => {
                let mask = h.evaluate(&agg_batch)?.into_array(n)?;
                let mask =
                    mask.as_boolean_opt().ok_or_else(|| EddyError::TypeMismatch("HAVING must be boolean".into()))?;
                (0..n).map(|i| mask.is_valid(i) && mask.value(i)).collect()
            }
        };
        let projected: Vec<ArrayRef> = self
            .plan
            .project
            .iter()
            .zip(self.output_schema.fields())
            .map(|(e, f)| {
                let a = e.evaluate(&agg_batch)?.into_array(n)?;
                if a.data_type() == f.data_type() {
                    Ok(a)
                } else {
                    Ok(cast(&a, f.data_type())?)
                }
            })
            .collect::<Result<_>>()?;
        let mut changes = Vec::with_capacity(touched.len());
        for i in gone {
            let key = &touched[i];
            cache.insert(key.clone(), Group::default());
            changes.push(Change {
                state_key: key.clone(),
                key_values: key_values(i),
                row: None,
                state_value: StateWrite::Delete,
                timestamp_ms,
            });
        }
        for (out_row, &i) in live.iter().enumerate() {
            let key = &touched[i];
            let row: Option<Vec<Value>> =
                visible[out_row].then(|| projected.iter().map(|a| cell_at(a.as_ref(), out_row)).collect());
            let group = cache.get_mut(key).expect("touched groups are cached");
            group.row = row.as_deref().map(stored::encode_row);
            // Written once at the checkpoint (`drain_writes`), however often it changes.
            group.dirty = true;
            changes.push(Change {
                state_key: key.clone(),
                key_values: key_values(i),
                row,
                state_value: StateWrite::Deferred,
                timestamp_ms,
            });
        }
        Ok(changes)
    }
}

/// First byte of a group key's list of sessions; its (start, end) pairs follow as big-endian
/// i64s. Lists stored before were JSON (`[[start, end], ...]`) and are still read.
pub const SESSION_LIST_FORMAT: u8 = 0xB4;

fn encode_sessions(sessions: &[Session]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 16 * sessions.len());
    out.push(SESSION_LIST_FORMAT);
    for (start, end) in sessions {
        out.extend_from_slice(&start.to_be_bytes());
        out.extend_from_slice(&end.to_be_bytes());
    }
    out
}

fn decode_sessions(bytes: &[u8]) -> Result<Vec<Session>> {
    match bytes.split_first() {
        Some((&SESSION_LIST_FORMAT, pairs)) if pairs.len() % 16 == 0 => Ok(pairs
            .chunks_exact(16)
            .map(|p| {
                let (s, e) = p.split_at(8);
                (i64::from_be_bytes(s.try_into().expect("8 bytes")), i64::from_be_bytes(e.try_into().expect("8 bytes")))
            })
            .collect()),
        Some((&SESSION_LIST_FORMAT, _)) => Err(bad_state("session index: truncated")),
        _ => serde_json::from_slice(bytes).map_err(|e| bad_state(format!("session index: {e}"))),
    }
}

/// Where a group key's list of sessions is kept: 0xFF sorts after every group key (a key
/// in row format never starts with it).
fn session_index_key(field_rows: &[Rows], row: usize, session: &SessionParams) -> Vec<u8> {
    let mut k = vec![0xFF];
    for (c, rows) in field_rows.iter().enumerate() {
        if c != session.start_pos && c != session.end_pos {
            k.extend_from_slice(rows.row(row).data());
        }
    }
    k
}

/// A group key of a session: the row's group columns with the session's bounds.
fn session_key(
    keys: &RowKeys,
    field_rows: &[Rows],
    row: usize,
    session: &SessionParams,
    (start, end): Session,
) -> Result<Vec<u8>> {
    let mut k = Vec::new();
    for (c, rows) in field_rows.iter().enumerate() {
        if c == session.start_pos {
            k.extend_from_slice(&keys.encode_i64(c, start)?);
        } else if c == session.end_pos {
            k.extend_from_slice(&keys.encode_i64(c, end)?);
        } else {
            k.extend_from_slice(rows.row(row).data());
        }
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_lists_round_trip_and_json_ones_are_still_read() {
        let list = vec![(-5, 10), (i64::MIN, i64::MAX), (100, 100)];
        assert_eq!(decode_sessions(&encode_sessions(&list)).unwrap(), list);
        assert_eq!(decode_sessions(&encode_sessions(&[])).unwrap(), vec![]);
        assert_eq!(decode_sessions(b"[[1,2],[3,4]]").unwrap(), vec![(1, 2), (3, 4)]);
        assert!(decode_sessions(&encode_sessions(&list)[..20]).is_err());
    }
}
