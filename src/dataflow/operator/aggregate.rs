//! Grouped aggregation (COUNT, COUNT(DISTINCT), SUM, AVG, MIN, MAX) with accumulators per
//! group. Rows carry a sign: +1 adds a row, -1 retracts one (a table row that changed or was
//! deleted), so aggregates over tables stay right. MIN/MAX over tables and COUNT(DISTINCT)
//! keep a multiset of values (value, count) so a retraction can find the next extreme.
//!
//! Per input batch: evaluate the group and argument expressions once (Arrow), load the
//! groups not cached with one multi-get, fold the rows in, then emit one change per group
//! touched (the group's row after the whole batch, like ksqlDB's record cache). HAVING
//! and the SELECT list run as physical expressions over a batch of the touched groups.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Change;
use crate::error::{EddyError, Result};
use crate::format::types::{format_decimal, parse_decimal};
use crate::format::{cell_at, cells_to_array, memcomparable};
use crate::plan::{AggFunc, AggregatePlan};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct GroupState {
    /// Group values.
    pub g: Vec<Value>,
    /// One accumulator per aggregate.
    pub a: Vec<Value>,
    /// The output row (after HAVING and the SELECT list); `None` when HAVING hides it.
    pub r: Option<Vec<Value>>,
    /// Rows in the group (added minus retracted); at zero the group is deleted.
    #[serde(default)]
    pub n: i64,
}

/// Reads the stored state of a batch of groups (one multi-get), `None` for new groups.
pub type StateLoader<'a> = &'a dyn Fn(&[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>>;

pub struct AggregateOperator {
    pub plan: AggregatePlan,
    pub output_schema: SchemaRef,
    /// Inputs may retract rows (the source is a table): MIN/MAX keep multisets.
    pub retractions: bool,
    /// Groups read or written since the last checkpoint.
    cache: HashMap<Vec<u8>, GroupState>,
    /// Session windows per group key, read or written since the last checkpoint.
    sessions: HashMap<Vec<u8>, Vec<(i64, i64)>>,
}

/// A session window: (start, end) event times, both inclusive.
type Session = (i64, i64);

/// DECIMAL digits an i128 always holds (Arrow's Decimal128 precision).
const DECIMAL_DIGITS_MAX: u32 = 38;

/// How an aggregate adds and orders its argument.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ArgKind {
    /// Integers sum as BIGINT: past its range the row is rejected (Postgres: bigint out of range).
    Integer,
    /// DECIMAL cells are exact text at `scale`; sums are exact in i128 units of 10^-scale (as
    /// Arrow's Decimal128), kept as decimal text in the JSON state, and may have at most
    /// `digits_max` digits (the result type's precision at this scale).
    Decimal { scale: u8, digits_max: u32 },
    /// DOUBLE, text and the rest: sums in f64.
    Other,
}

/// Session windows: where the event time and the window bounds are.
pub struct SessionParams {
    pub rowtime: usize,
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

/// Where a group key's list of sessions is kept: 0xFF sorts after every memcomparable key.
pub fn session_index_key(base: &[Value]) -> Vec<u8> {
    let mut k = vec![0xFF];
    k.extend(memcomparable(base));
    k
}

impl AggregateOperator {
    pub fn new(plan: AggregatePlan, output_schema: SchemaRef, retractions: bool) -> Self {
        AggregateOperator { plan, output_schema, retractions, cache: HashMap::new(), sessions: HashMap::new() }
    }

    /// Drops a group from the cache (its state was deleted).
    pub fn forget(&mut self, key: &[u8]) {
        self.cache.remove(key);
    }

    /// A group's state as of the last batch (cached, or read with `load`).
    pub fn group(&mut self, key: &[u8], load: StateLoader<'_>) -> Result<Option<GroupState>> {
        if let Some(s) = self.cache.get(key) {
            return Ok(Some(s.clone()));
        }
        match load(&[key.to_vec()])?.pop().flatten() {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).map_err(|e| EddyError::Internal(format!("aggregate state: {e}")))?,
            )),
            None => Ok(None),
        }
    }

    /// Forgets cached groups (after a checkpoint wrote them; RocksDB's cache keeps them warm).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
        self.sessions.clear();
    }

    /// Folds a batch in; `signs[i]` is +1 or -1 for row i (all +1 when `None`).
    pub fn process(
        &mut self,
        batch: &RecordBatch,
        signs: Option<&[i64]>,
        timestamp_ms: i64,
        load: StateLoader<'_>,
    ) -> Result<Vec<Change>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let groups: Vec<ArrayRef> =
            self.plan.group.iter().map(|e| e.evaluate(batch)?.into_array(n)).collect::<Result<_, _>>()?;
        let args = self.arguments(batch)?;
        let kinds = self.arg_kinds(&args);
        let row_keys: Vec<(Vec<u8>, Vec<Value>)> = (0..n)
            .map(|row| {
                let g: Vec<Value> = groups.iter().map(|a| cell_at(a.as_ref(), row)).collect();
                (memcomparable(&g), g)
            })
            .collect();

        // Load the groups this batch touches that are not cached, with one multi-get.
        let mut touched: Vec<Vec<u8>> = Vec::new();
        let mut missing: Vec<Vec<u8>> = Vec::new();
        let mut seen: HashSet<&[u8]> = HashSet::with_capacity(n);
        for (k, _) in &row_keys {
            if seen.insert(k.as_slice()) {
                touched.push(k.clone());
                if !self.cache.contains_key(k) {
                    missing.push(k.clone());
                }
            }
        }
        for (k, v) in missing.iter().zip(load(&missing)?) {
            let state = match v {
                Some(bytes) => {
                    serde_json::from_slice(&bytes).map_err(|e| EddyError::Internal(format!("aggregate state: {e}")))?
                }
                None => GroupState::default(),
            };
            self.cache.insert(k.clone(), state);
        }

        // If a sum leaves its type's range, or HAVING or the SELECT list fails on this batch,
        // the groups go back to how they were, so the caller can retry row by row (and log
        // the rows that fail) without counting anything twice. The fold changes only the
        // accumulators and the count (and the group values of a new group); the output row
        // is rewritten only once the batch has succeeded.
        let before: Vec<(Vec<Value>, i64)> =
            touched.iter().map(|k| (self.cache[k].a.clone(), self.cache[k].n)).collect();
        let folded = self.fold_rows(&row_keys, &args, &kinds, signs);
        folded.and_then(|()| self.emit(&touched, timestamp_ms)).inspect_err(|_| {
            for (k, (a, n)) in touched.iter().zip(before) {
                if let Some(state) = self.cache.get_mut(k) {
                    if a.is_empty() {
                        state.g.clear();
                    }
                    state.a = a;
                    state.n = n;
                }
            }
        })
    }

    /// The aggregates' arguments over a batch. DECIMALs come as Decimal128, whose cells are
    /// exact decimal text; only a DECIMAL wider than 38 digits falls back to DOUBLE.
    fn arguments(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let n = batch.num_rows();
        let mut args = Vec::with_capacity(self.plan.aggs.len());
        for spec in &self.plan.aggs {
            let a = spec.arg.evaluate(batch)?.into_array(n)?;
            let a = match a.data_type() {
                DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => cast(&a, &DataType::Decimal128(*p, *s))?,
                DataType::Decimal128(_, s) if *s < 0 => cast(&a, &DataType::Float64)?,
                DataType::Decimal256(..) => cast(&a, &DataType::Float64)?,
                _ => a,
            };
            args.push(a);
        }
        Ok(args)
    }

    /// How each aggregate adds and orders its argument (from the argument's type and the
    /// aggregate's result type).
    fn arg_kinds(&self, args: &[ArrayRef]) -> Vec<ArgKind> {
        let n_group = self.plan.group.len();
        args.iter()
            .enumerate()
            .map(|(i, a)| match a.data_type() {
                t if t.is_integer() => ArgKind::Integer,
                DataType::Decimal128(_, scale) => {
                    let scale = *scale as u8;
                    // A SUM's digits at the argument's scale are bounded by its result type
                    // (DataFusion: DECIMAL(min(38, p + 10), s)); AVG's sum only by i128.
                    let digits_max = match self.plan.agg_schema.field(n_group + i).data_type() {
                        DataType::Decimal128(p, s) if self.plan.aggs[i].func == AggFunc::Sum => {
                            (i32::from(*p) - i32::from(*s) + i32::from(scale)).clamp(1, DECIMAL_DIGITS_MAX as i32)
                                as u32
                        }
                        _ => DECIMAL_DIGITS_MAX,
                    };
                    ArgKind::Decimal { scale, digits_max }
                }
                _ => ArgKind::Other,
            })
            .collect()
    }

    /// Folds every row of a batch into its group (loaded into the cache by the caller).
    fn fold_rows(
        &mut self,
        row_keys: &[(Vec<u8>, Vec<Value>)],
        args: &[ArrayRef],
        kinds: &[ArgKind],
        signs: Option<&[i64]>,
    ) -> Result<()> {
        let retractions = self.retractions;
        for (row, (k, g)) in row_keys.iter().enumerate() {
            let sign = signs.map_or(1, |s| s[row]);
            let state = self.cache.get_mut(k).expect("loaded by the caller");
            if state.a.is_empty() {
                state.g = g.clone();
                state.a = self.plan.aggs.iter().map(|a| initial(a.func, retractions)).collect();
            }
            state.n += sign;
            for (i, spec) in self.plan.aggs.iter().enumerate() {
                let v = cell_at(args[i].as_ref(), row);
                fold(spec.func, &mut state.a[i], v, kinds[i], sign, retractions)?;
            }
        }
        Ok(())
    }

    /// Recomputes the output rows (HAVING, SELECT list) of stored groups, after the query's
    /// SELECT list changed (CREATE OR REPLACE).
    pub fn reproject(&mut self, keys: &[Vec<u8>], load: StateLoader<'_>) -> Result<Vec<Change>> {
        for (k, v) in keys.iter().zip(load(keys)?) {
            let Some(bytes) = v else { continue };
            let state: GroupState =
                serde_json::from_slice(&bytes).map_err(|e| EddyError::Internal(format!("aggregate state: {e}")))?;
            self.cache.insert(k.clone(), state);
        }
        let present: Vec<Vec<u8>> = keys.iter().filter(|k| self.cache.contains_key(*k)).cloned().collect();
        self.emit(&present, 0)
    }

    /// Folds a batch into session windows, row by row in batch order. Per group key the
    /// sessions are kept in an index (`session_index_key`); a row within `gap` of one or
    /// more sessions merges them (their rows are deleted, a merged row replaces them).
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
            self.plan.group.iter().map(|e| e.evaluate(batch)?.into_array(n)).collect::<Result<_, _>>()?;
        let args = self.arguments(batch)?;
        let kinds = self.arg_kinds(&args);
        let times = batch.column(session.rowtime);
        let (start_pos, end_pos) = (session.start_pos, session.end_pos);
        // What this batch changed, to undo it if the batch fails (not a copy of the caches).
        let mut undo_cache: HashMap<Vec<u8>, Option<GroupState>> = HashMap::new();
        let mut undo_sessions: HashMap<Vec<u8>, Option<Vec<Session>>> = HashMap::new();
        // Groups in the order they were last touched; a key may repeat, `touched_set` says
        // which are still live.
        let mut touched: Vec<Vec<u8>> = Vec::new();
        let mut touched_set: HashSet<Vec<u8>> = HashSet::new();
        // Deletions with their step, and the last step that (re)created each key: a deletion
        // stands unless its key was created again after it.
        let mut deleted: Vec<(usize, Change)> = Vec::new();
        let mut created_at: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut index_at: HashMap<Vec<u8>, usize> = HashMap::new();
        // Any failure (a sum out of range, a state read) undoes the whole batch below.
        let fold_row = |row: usize| -> Result<()> {
            let Some(ts) = cell_at(times.as_ref(), row).as_i64() else {
                out.late.push(row);
                return Ok(());
            };
            time.advance(ts);
            let mut g: Vec<Value> = groups.iter().map(|a| cell_at(a.as_ref(), row)).collect();
            let base: Vec<Value> = g
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != start_pos && *i != end_pos)
                .map(|(_, v)| v.clone())
                .collect();
            let index_key = session_index_key(&base);
            if !self.sessions.contains_key(&index_key) {
                let stored = load(std::slice::from_ref(&index_key))?.pop().flatten();
                let list: Vec<(i64, i64)> = match stored {
                    Some(b) => {
                        serde_json::from_slice(&b).map_err(|e| EddyError::Internal(format!("session index: {e}")))?
                    }
                    None => Vec::new(),
                };
                undo_sessions.entry(index_key.clone()).or_insert(None);
                self.sessions.insert(index_key.clone(), list);
            }
            let list = self.sessions[&index_key].clone();
            let (merging, keep): (Vec<Session>, Vec<Session>) = list
                .into_iter()
                .partition(|(s, e)| s.saturating_sub(session.gap_ms) <= ts && ts <= e.saturating_add(session.gap_ms));
            let start = merging.iter().map(|w| w.0).chain([ts]).min().expect("non-empty");
            let end = merging.iter().map(|w| w.1).chain([ts]).max().expect("non-empty");
            if end < time.watermark_ms.saturating_sub(session.grace_ms).saturating_sub(session.gap_ms) {
                out.late.push(row);
                return Ok(());
            }
            let mut merged = GroupState::default();
            g[start_pos] = Value::from(start);
            g[end_pos] = Value::from(end);
            merged.g = g.clone();
            merged.a = self.plan.aggs.iter().map(|a| initial(a.func, false)).collect();
            for (s, e) in &merging {
                let mut old_g = g.clone();
                old_g[start_pos] = Value::from(*s);
                old_g[end_pos] = Value::from(*e);
                let old_key = memcomparable(&old_g);
                if !undo_cache.contains_key(&old_key) {
                    undo_cache.insert(old_key.clone(), self.cache.get(&old_key).cloned());
                }
                let old = match self.cache.remove(&old_key) {
                    Some(st) => Some(st),
                    None => load(std::slice::from_ref(&old_key))?
                        .pop()
                        .flatten()
                        .map(|b| serde_json::from_slice::<GroupState>(&b))
                        .transpose()
                        .map_err(|e| EddyError::Internal(format!("aggregate state: {e}")))?,
                };
                if let Some(old) = old {
                    merged.n += old.n;
                    for (i, spec) in self.plan.aggs.iter().enumerate() {
                        merge(spec.func, &mut merged.a[i], &old.a[i], kinds[i])?;
                    }
                }
                touched_set.remove(&old_key);
                out.closed.push((*e, old_key.clone()));
                deleted.push((
                    row,
                    Change { state_key: old_key, key_values: old_g, row: None, state_value: None, timestamp_ms },
                ));
            }
            merged.n += 1;
            for (i, spec) in self.plan.aggs.iter().enumerate() {
                fold(spec.func, &mut merged.a[i], cell_at(args[i].as_ref(), row), kinds[i], 1, false)?;
            }
            let key = memcomparable(&g);
            created_at.insert(key.clone(), row);
            if !undo_cache.contains_key(&key) {
                undo_cache.insert(key.clone(), self.cache.get(&key).cloned());
            }
            self.cache.insert(key.clone(), merged);
            touched_set.insert(key.clone());
            touched.push(key);
            let mut list = keep;
            list.push((start, end));
            list.sort_unstable();
            let bytes = serde_json::to_vec(&list).map_err(|e| EddyError::Internal(e.to_string()))?;
            if !undo_sessions.contains_key(&index_key) {
                undo_sessions.insert(index_key.clone(), self.sessions.get(&index_key).cloned());
            }
            self.sessions.insert(index_key.clone(), list);
            match index_at.get(&index_key) {
                Some(&at) => out.index_writes[at].1 = Some(bytes),
                None => {
                    index_at.insert(index_key.clone(), out.index_writes.len());
                    out.index_writes.push((index_key, Some(bytes)));
                }
            }
            Ok(())
        };
        let folded = (0..n).try_for_each(fold_row);
        // Each live group once, where it was last touched.
        let mut emitted: HashSet<Vec<u8>> = HashSet::new();
        let mut order: Vec<Vec<u8>> =
            touched.into_iter().rev().filter(|k| touched_set.contains(k) && emitted.insert(k.clone())).collect();
        order.reverse();
        match folded.and_then(|()| self.emit(&order, timestamp_ms)) {
            Ok(changes) => {
                out.changes = deleted
                    .into_iter()
                    .filter(|(at, c)| created_at.get(&c.state_key).is_none_or(|created| created < at))
                    .map(|(_, c)| c)
                    .collect();
                out.changes.extend(changes);
                Ok(out)
            }
            Err(e) => {
                for (k, v) in undo_cache {
                    match v {
                        Some(state) => self.cache.insert(k, state),
                        None => self.cache.remove(&k),
                    };
                }
                for (k, v) in undo_sessions {
                    match v {
                        Some(list) => self.sessions.insert(k, list),
                        None => self.sessions.remove(&k),
                    };
                }
                Err(e)
            }
        }
    }

    /// Recomputes HAVING and the SELECT list for the touched groups.
    fn emit(&mut self, touched: &[Vec<u8>], timestamp_ms: i64) -> Result<Vec<Change>> {
        // Groups whose every row was retracted are deleted (once the rest has succeeded: a
        // failure leaves the cache for the caller to roll back).
        let (gone, touched): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
            touched.iter().cloned().partition(|k| self.cache[k].n <= 0 && self.retractions);
        let touched = &touched[..];
        let schema = &self.plan.agg_schema;
        let n_group = self.plan.group.len();
        let states: Vec<&GroupState> = touched.iter().map(|k| &self.cache[k]).collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (i, f) in schema.fields().iter().enumerate() {
            let cells: Vec<Value> = if i < n_group {
                states.iter().map(|s| s.g[i].clone()).collect()
            } else {
                let agg = i - n_group;
                let func = self.plan.aggs[agg].func;
                states
                    .iter()
                    .map(|s| finish(func, &s.a[agg], self.retractions, f.data_type()))
                    .collect::<Result<_>>()?
            };
            columns.push(cells_to_array(f.data_type(), &cells)?);
        }
        let agg_batch = RecordBatch::try_new(schema.clone(), columns)?;
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
        let mut changes = Vec::with_capacity(gone.len() + touched.len());
        for key in gone {
            let state = self.cache.remove(&key).expect("touched groups are cached");
            self.cache.insert(key.clone(), GroupState::default());
            changes.push(Change { state_key: key, key_values: state.g, row: None, state_value: None, timestamp_ms });
        }
        for (i, key) in touched.iter().enumerate() {
            let state = self.cache.get_mut(key).expect("touched groups are cached");
            state.r = visible[i].then(|| projected.iter().map(|a| cell_at(a.as_ref(), i)).collect());
            changes.push(Change {
                state_key: key.clone(),
                key_values: state.g.clone(),
                row: state.r.clone(),
                state_value: Some(serde_json::to_vec(&*state).map_err(|e| EddyError::Internal(e.to_string()))?),
                timestamp_ms,
            });
        }
        Ok(changes)
    }
}

fn initial(func: AggFunc, retractions: bool) -> Value {
    match func {
        AggFunc::Count => Value::from(0),
        AggFunc::Sum | AggFunc::Avg => Value::Array(vec![Value::from(0), Value::from(0)]),
        AggFunc::CountDistinct => Value::Array(Vec::new()),
        AggFunc::Latest | AggFunc::Earliest => Value::Null,
        AggFunc::CollectList | AggFunc::TopK(_) => Value::Array(Vec::new()),
        AggFunc::Histogram => Value::Object(Default::default()),
        AggFunc::Min | AggFunc::Max if retractions => Value::Array(Vec::new()),
        AggFunc::Min | AggFunc::Max => Value::Null,
    }
}

/// Folds one input value into an accumulator with `sign` (+1 add, -1 retract); NULL inputs
/// are ignored, as in SQL. A sum that leaves its type's range is an error (the caller
/// rejects the row), never a silent change of type or value.
fn fold(func: AggFunc, acc: &mut Value, v: Value, kind: ArgKind, sign: i64, retractions: bool) -> Result<()> {
    if v.is_null() {
        return Ok(());
    }
    match func {
        AggFunc::Count => *acc = Value::from(acc.as_i64().unwrap_or(0) + sign),
        AggFunc::Sum | AggFunc::Avg => {
            let (sum, count) = match acc {
                Value::Array(a) if a.len() == 2 => (a[0].clone(), a[1].as_i64().unwrap_or(0)),
                _ => (Value::from(0), 0),
            };
            let new_sum = add(&sum, &v, kind, sign)?;
            *acc = Value::Array(vec![new_sum, Value::from(count + sign)]);
        }
        AggFunc::CountDistinct => multiset_add(acc, v, sign, kind),
        AggFunc::Latest => *acc = v,
        AggFunc::CollectList => {
            let Value::Array(items) = acc else { return Ok(()) };
            if sign > 0 {
                items.push(v);
            } else if let Some(i) = items.iter().position(|x| *x == v) {
                items.remove(i);
            }
        }
        AggFunc::TopK(k) => {
            multiset_add(acc, v, sign, kind);
            if !retractions {
                trim_to_largest(acc, k);
            }
        }
        AggFunc::Histogram => histogram_add(acc, &v, sign),
        AggFunc::Earliest => {
            if acc.is_null() {
                *acc = v;
            }
        }
        AggFunc::Min | AggFunc::Max if retractions => multiset_add(acc, v, sign, kind),
        AggFunc::Min | AggFunc::Max => {
            let replace = acc.is_null() || {
                let ord = compare(&v, acc, kind);
                if func == AggFunc::Min {
                    ord.is_lt()
                } else {
                    ord.is_gt()
                }
            };
            if replace {
                *acc = v;
            }
        }
    }
    Ok(())
}

/// Combines two accumulators of the same aggregate (merging session windows).
fn merge(func: AggFunc, acc: &mut Value, other: &Value, kind: ArgKind) -> Result<()> {
    match func {
        AggFunc::Count => *acc = Value::from(acc.as_i64().unwrap_or(0) + other.as_i64().unwrap_or(0)),
        AggFunc::Sum | AggFunc::Avg => {
            let (Value::Array(a), Value::Array(b)) = (&*acc, other) else { return Ok(()) };
            let sum = add(&a[0], &b[0], kind, 1)?;
            let count = a[1].as_i64().unwrap_or(0) + b[1].as_i64().unwrap_or(0);
            *acc = Value::Array(vec![sum, Value::from(count)]);
        }
        // Sessions are merged oldest first.
        AggFunc::Latest => {
            if !other.is_null() {
                *acc = other.clone();
            }
        }
        AggFunc::Earliest => {
            if acc.is_null() {
                *acc = other.clone();
            }
        }
        AggFunc::CollectList => {
            if let (Value::Array(items), Value::Array(more)) = (&mut *acc, other) {
                items.extend(more.iter().cloned());
            }
        }
        AggFunc::TopK(k) => {
            for e in other.as_array().into_iter().flatten() {
                multiset_add(acc, e[0].clone(), e[1].as_i64().unwrap_or(1), kind);
            }
            trim_to_largest(acc, k);
        }
        AggFunc::Histogram => {
            for (key, n) in other.as_object().into_iter().flatten() {
                histogram_add(acc, &Value::String(key.clone()), n.as_i64().unwrap_or(0));
            }
        }
        AggFunc::CountDistinct => {
            for e in other.as_array().into_iter().flatten() {
                multiset_add(acc, e[0].clone(), e[1].as_i64().unwrap_or(1), kind);
            }
        }
        AggFunc::Min | AggFunc::Max => {
            if other.is_null() {
                return Ok(());
            }
            let ord = compare(other, acc, kind);
            if acc.is_null() || (func == AggFunc::Min && ord.is_lt()) || (func == AggFunc::Max && ord.is_gt()) {
                *acc = other.clone();
            }
        }
    }
    Ok(())
}

/// Keeps the k largest values of an ascending multiset (a stream's TOPK never retracts).
fn trim_to_largest(acc: &mut Value, k: usize) {
    let Value::Array(entries) = acc else { return };
    let mut total: i64 = entries.iter().map(|e| e[1].as_i64().unwrap_or(0)).sum();
    while total > k as i64 && !entries.is_empty() {
        let n = entries[0][1].as_i64().unwrap_or(0);
        let drop = n.min(total - k as i64);
        if drop >= n {
            entries.remove(0);
        } else {
            entries[0][1] = Value::from(n - drop);
        }
        total -= drop;
    }
}

/// HISTOGRAM's counts: `{"value": count}`; a count at zero is removed.
fn histogram_add(acc: &mut Value, v: &Value, sign: i64) {
    let Value::Object(counts) = acc else { return };
    let key = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let n = counts.get(&key).and_then(Value::as_i64).unwrap_or(0) + sign;
    if n <= 0 {
        counts.remove(&key);
    } else {
        counts.insert(key, Value::from(n));
        counts.sort_keys();
    }
}

/// A sorted multiset as JSON: `[[value, count], ...]`; entries at zero are removed.
fn multiset_add(acc: &mut Value, v: Value, sign: i64, kind: ArgKind) {
    if !acc.is_array() {
        *acc = Value::Array(Vec::new());
    }
    let Value::Array(entries) = acc else { return };
    let pos = entries.binary_search_by(|e| compare(&e[0], &v, kind));
    match pos {
        Ok(i) => {
            let n = entries[i][1].as_i64().unwrap_or(0) + sign;
            if n <= 0 {
                entries.remove(i);
            } else {
                entries[i][1] = Value::from(n);
            }
        }
        Err(i) if sign > 0 => entries.insert(i, Value::Array(vec![v, Value::from(sign)])),
        Err(_) => {}
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
}

/// SQL order of two cells of one argument: DECIMAL text by value, not by its characters.
fn compare(a: &Value, b: &Value, kind: ArgKind) -> std::cmp::Ordering {
    if let ArgKind::Decimal { scale, .. } = kind {
        if let (Some(x), Some(y)) = (decimal_units(a, scale), decimal_units(b, scale)) {
            return x.cmp(&y);
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x.as_f64().unwrap_or(0.0).total_cmp(&y.as_f64().unwrap_or(0.0)),
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// An accumulator's result, a cell of the aggregate's result type `out`.
fn finish(func: AggFunc, acc: &Value, retractions: bool, out: &DataType) -> Result<Value> {
    Ok(match func {
        AggFunc::Count => acc.clone(),
        AggFunc::CountDistinct => Value::from(acc.as_array().map_or(0, |a| a.len())),
        AggFunc::Latest | AggFunc::Earliest | AggFunc::CollectList | AggFunc::Histogram => acc.clone(),
        AggFunc::TopK(k) => {
            // The multiset is ascending: the largest k, largest first.
            let mut out = Vec::new();
            for e in acc.as_array().into_iter().flatten().rev() {
                for _ in 0..e[1].as_i64().unwrap_or(0) {
                    if out.len() < k {
                        out.push(e[0].clone());
                    }
                }
            }
            Value::Array(out)
        }
        AggFunc::Sum | AggFunc::Avg => {
            let Value::Array(a) = acc else { return Ok(Value::Null) };
            let count = a.get(1).and_then(Value::as_i64).unwrap_or(0);
            match (&a[0], out) {
                _ if count <= 0 => Value::Null,
                // A DECIMAL sum is exact text at the argument's scale, which is SUM's scale.
                (sum, _) if func == AggFunc::Sum => sum.clone(),
                (Value::String(sum), DataType::Decimal128(_, out_scale)) if *out_scale >= 0 => {
                    let scale = text_scale(sum);
                    let units = decimal_units(&a[0], scale).ok_or_else(|| bad_state(sum))?;
                    let avg = divide_rounded(units, scale, count, *out_scale as u8)
                        .ok_or_else(|| EddyError::OutOfRange(format!("numeric field overflow: AVG of {out}")))?;
                    Value::String(format_decimal(avg, *out_scale as u8))
                }
                (Value::String(sum), _) => {
                    let scale = text_scale(sum);
                    let units = decimal_units(&a[0], scale).ok_or_else(|| bad_state(sum))?;
                    float(units as f64 / 10f64.powi(i32::from(scale)) / count as f64)
                }
                (sum, _) => float(sum.as_f64().unwrap_or(0.0) / count as f64),
            }
        }
        AggFunc::Min | AggFunc::Max if retractions => {
            let entries = acc.as_array();
            let pick =
                if func == AggFunc::Min { entries.and_then(|e| e.first()) } else { entries.and_then(|e| e.last()) };
            pick.map(|e| e[0].clone()).unwrap_or(Value::Null)
        }
        AggFunc::Min | AggFunc::Max => acc.clone(),
    })
}

/// Decimal places of an exact decimal text (`"12.50"`: 2).
fn text_scale(text: &str) -> u8 {
    text.split_once('.').map_or(0, |(_, frac)| frac.len().min(usize::from(DECIMAL_DIGITS_MAX as u8)) as u8)
}

fn bad_state(text: &str) -> EddyError {
    EddyError::Internal(format!("aggregate state: {text:?} is not a decimal sum"))
}

/// `units / 10^scale / count` at `out_scale`, rounded half away from zero (Postgres's
/// NUMERIC rounding); `None` when it does not fit in 38 digits.
fn divide_rounded(units: i128, scale: u8, count: i64, out_scale: u8) -> Option<i128> {
    let count = i128::from(count);
    if out_scale >= scale {
        // units * 10^k / count = q * 10^k + r * 10^k / count; r < count keeps it in range.
        let p = 10i128.checked_pow(u32::from(out_scale - scale))?;
        let (q, r) = (units / count, units % count);
        q.checked_mul(p)?.checked_add(div_half_away(r.checked_mul(p)?, count))
    } else {
        let den = count.checked_mul(10i128.checked_pow(u32::from(scale - out_scale))?)?;
        Some(div_half_away(units, den))
    }
}

/// `num / den` (den > 0) rounded half away from zero.
fn div_half_away(num: i128, den: i128) -> i128 {
    let (q, r) = (num / den, num % den);
    if r.unsigned_abs() >= den.unsigned_abs() - r.unsigned_abs() {
        q + num.signum()
    } else {
        q
    }
}

/// A DECIMAL cell (exact text, or a JSON number in state written before sums were exact)
/// as an integer count of 10^-scale.
fn decimal_units(v: &Value, scale: u8) -> Option<i128> {
    match v {
        Value::String(text) => parse_decimal(text, DECIMAL_DIGITS_MAX as u8, scale),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i128::from(i).checked_mul(10i128.checked_pow(u32::from(scale))?),
            None => {
                let scaled = (n.as_f64()? * 10f64.powi(i32::from(scale))).round();
                (scaled.abs() < 1e38).then_some(scaled as i128)
            }
        },
        _ => None,
    }
}

/// `sum + sign * v` in the argument's own arithmetic: BIGINT or exact DECIMAL, checked
/// against the result type's range; DOUBLE must stay finite.
fn add(sum: &Value, v: &Value, kind: ArgKind, sign: i64) -> Result<Value> {
    match kind {
        ArgKind::Integer => {
            let (Some(s), Some(x)) = (sum.as_i64(), v.as_i64()) else {
                return Err(EddyError::OutOfRange(format!("bigint out of range: SUM of {sum} and {v}")));
            };
            x.checked_mul(sign).and_then(|x| s.checked_add(x)).map(Value::from).ok_or_else(|| {
                let op = if sign < 0 { "minus" } else { "plus" };
                EddyError::OutOfRange(format!("bigint out of range: SUM {s} {op} {x} is past BIGINT's range"))
            })
        }
        ArgKind::Decimal { scale, digits_max } => {
            let (Some(s), Some(x)) = (decimal_units(sum, scale), decimal_units(v, scale)) else {
                return Err(EddyError::OutOfRange(format!("numeric field overflow: SUM of {sum} and {v}")));
            };
            let limit = 10i128.pow(digits_max);
            match x.checked_mul(i128::from(sign)).and_then(|x| s.checked_add(x)) {
                Some(total) if total.unsigned_abs() < limit.unsigned_abs() => {
                    Ok(Value::String(format_decimal(total, scale)))
                }
                _ => Err(EddyError::OutOfRange(format!(
                    "numeric field overflow: SUM of {} and {} needs more than {digits_max} digits",
                    format_decimal(s, scale),
                    format_decimal(x, scale)
                ))),
            }
        }
        ArgKind::Other => {
            let total = sum.as_f64().unwrap_or(0.0) + sign as f64 * v.as_f64().unwrap_or(0.0);
            if total.is_finite() {
                Ok(float(total))
            } else {
                Err(EddyError::OutOfRange(format!("value out of range: overflow: SUM of {sum} and {v}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CENTS: ArgKind = ArgKind::Decimal { scale: 2, digits_max: 30 };

    fn sum_all(kind: ArgKind, values: &[Value]) -> Result<Value> {
        let mut acc = initial(AggFunc::Sum, false);
        for v in values {
            fold(AggFunc::Sum, &mut acc, v.clone(), kind, 1, false)?;
        }
        finish(AggFunc::Sum, &acc, false, &DataType::Decimal128(30, 2))
    }

    #[test]
    fn decimal_sums_are_exact_and_bounded_by_the_result_type() {
        let big = Value::from("123456789012345.67");
        let cent = Value::from("0.01");
        assert_eq!(sum_all(CENTS, &[big.clone(), cent.clone(), big]).unwrap(), Value::from("246913578024691.35"));
        let tight = ArgKind::Decimal { scale: 2, digits_max: 4 };
        assert_eq!(sum_all(tight, &[Value::from("99.98"), cent.clone()]).unwrap(), Value::from("99.99"));
        let err = sum_all(tight, &[Value::from("99.99"), cent]).unwrap_err();
        assert!(matches!(err, EddyError::OutOfRange(ref m) if m.starts_with("numeric field overflow")), "{err}");
    }

    #[test]
    fn bigint_sums_reject_overflow_and_keep_their_type() {
        let mut acc = initial(AggFunc::Sum, true);
        fold(AggFunc::Sum, &mut acc, Value::from(i64::MAX - 10), ArgKind::Integer, 1, true).unwrap();
        let err = fold(AggFunc::Sum, &mut acc.clone(), Value::from(11), ArgKind::Integer, 1, true).unwrap_err();
        assert!(err.to_string().starts_with("bigint out of range"), "{err}");
        let err = fold(AggFunc::Sum, &mut acc.clone(), Value::from(-11), ArgKind::Integer, -1, true).unwrap_err();
        assert!(err.to_string().starts_with("bigint out of range"), "{err}");
        fold(AggFunc::Sum, &mut acc, Value::from(10), ArgKind::Integer, 1, true).unwrap();
        assert_eq!(finish(AggFunc::Sum, &acc, true, &DataType::Int64).unwrap(), Value::from(i64::MAX));
    }

    #[test]
    fn decimal_averages_round_half_away_from_zero() {
        assert_eq!(divide_rounded(2000, 2, 3, 6), Some(6_666_667));
        assert_eq!(divide_rounded(-2000, 2, 3, 6), Some(-6_666_667));
        assert_eq!(divide_rounded(5, 2, 2, 2), Some(3));
        assert_eq!(divide_rounded(-5, 2, 2, 2), Some(-3));
        assert_eq!(divide_rounded(5, 2, 2, 1), Some(0));
        assert_eq!(divide_rounded(i128::MAX, 2, 1, 40), None);
        let mut acc = initial(AggFunc::Avg, true);
        for v in ["0.01", "0.01", "0.00"] {
            fold(AggFunc::Avg, &mut acc, Value::from(v), CENTS, 1, true).unwrap();
        }
        assert_eq!(finish(AggFunc::Avg, &acc, true, &DataType::Decimal128(24, 6)).unwrap(), Value::from("0.006667"));
    }

    #[test]
    fn decimal_extremes_order_by_value_not_by_text() {
        for retractions in [false, true] {
            let mut acc = initial(AggFunc::Max, retractions);
            for v in ["9.99", "10.00", "-20.00"] {
                fold(AggFunc::Max, &mut acc, Value::from(v), CENTS, 1, retractions).unwrap();
            }
            // A value written as a JSON number before sums were exact still compares by value.
            fold(AggFunc::Max, &mut acc, Value::from(9.5), CENTS, 1, retractions).unwrap();
            let out = finish(AggFunc::Max, &acc, retractions, &DataType::Decimal128(20, 2)).unwrap();
            assert_eq!(out, Value::from("10.00"));
        }
    }
}
