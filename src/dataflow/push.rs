//! Push queries (`SELECT ... EMIT CHANGES`): a thread per subscription that tails the
//! source from its end (or start) and sends projected batches to the client until it goes
//! away; joined tables are read from their materializations, table changelogs carry the
//! change kind.
//!
//! Over a table, the query starts where the table's materialization last committed (its
//! `Baseline`): a pull query just before and the push query together miss no change and
//! repeat none. The row a change replaces is read by key from the baseline, so the query
//! holds in memory only the keys changed since, never a copy of the table; whenever it and
//! the materialization stand at the same positions, it takes a new baseline and forgets them.

use super::*;
use crate::format::row_keys::RowKeys;
use crate::format::Column;
use crate::state::StoreSnapshot;

/// A baseline older than this is renewed when the query catches up even if it holds no key:
/// while it lives, RocksDB keeps the row versions it sees.
const BASELINE_MAX_AGE: Duration = Duration::from_secs(10);

/// How a table's key values (in key-column order, as the source decodes them) become the
/// keys of its rows in its materialization's state.
enum TableKeys {
    /// Arrow's row format over the state key's columns: the encoding, those columns, and each
    /// state-key field's index among the key values.
    Typed(RowKeys, Vec<Column>, Vec<usize>),
    /// `memcomparable` over the key values, each state-key field's index among them.
    Values(Vec<usize>),
}

/// Where a table's current rows live: its materialization's column family, how its keys are
/// made, and where the materialization records how far into the table's topic its rows
/// reach (its source offsets for a table declared on a topic, its sink's ends for CREATE
/// TABLE AS SELECT).
struct TableState {
    cf: String,
    keys: TableKeys,
    positions: u8,
    width: usize,
}

/// The table's rows as of one checkpoint of its materialization, and the positions in the
/// table's topic that checkpoint reached.
struct Baseline {
    snapshot: StoreSnapshot,
    positions: Vec<i64>,
    taken: Instant,
}

impl TableState {
    /// `None` when the table's rows cannot be read by key (no materialization, or a state
    /// key of an older version).
    fn of(rel: &RelationDef) -> Result<Option<TableState>> {
        let (Some(query), Some(key)) = (rel.materialized_by.as_deref(), rel.state_key()) else { return Ok(None) };
        let positions = match rel.written_by.as_deref() {
            None => OFFSET_PREFIX,
            Some(w) if w == query => SINK_PREFIX,
            Some(_) => return Ok(None),
        };
        let key_columns: Vec<usize> = rel.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        let order: Option<Vec<usize>> = key.columns.iter().map(|c| key_columns.iter().position(|k| k == c)).collect();
        let Some(order) = order.filter(|o| o.len() == key_columns.len() && !o.is_empty()) else { return Ok(None) };
        let keys = if key.row_format {
            let columns: Vec<Column> = key.columns.iter().map(|&c| rel.columns[c].clone()).collect();
            let types: Vec<_> = columns.iter().map(|c| c.ty.arrow()).collect();
            TableKeys::Typed(RowKeys::new(&types)?, columns, order)
        } else {
            TableKeys::Values(order)
        };
        Ok(Some(TableState { cf: state_cf(query), keys, positions, width: rel.columns.len() }))
    }

    fn baseline(&self, store: &StateStore, source: &Source) -> Result<Baseline> {
        let snapshot = store.snapshot();
        let keys: Vec<Vec<u8>> = source.partitions.iter().map(|p| partition_key(self.positions, p.id)).collect();
        let stored = snapshot.multi_get(&self.cf, &keys)?;
        let positions = source
            .partitions
            .iter()
            .zip(stored)
            .map(|(p, v)| {
                let at = v.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()).map(i64::from_be_bytes);
                at.unwrap_or(0).max(p.log_start_offset())
            })
            .collect();
        Ok(Baseline { snapshot, positions, taken: Instant::now() })
    }

    /// The baseline's rows of `keys` (`None`: the key had no row).
    fn rows(&self, baseline: &Baseline, keys: &[Vec<Value>]) -> Result<Vec<Option<Vec<Value>>>> {
        let state_keys: Vec<Vec<u8>> = match &self.keys {
            TableKeys::Values(order) => keys
                .iter()
                .map(|k| row_key(&memcomparable(&order.iter().map(|&i| k[i].clone()).collect::<Vec<_>>())))
                .collect(),
            TableKeys::Typed(row_keys, columns, order) => {
                let values: Vec<Vec<Value>> =
                    keys.iter().map(|k| order.iter().map(|&i| k[i].clone()).collect()).collect();
                let batch = crate::format::rows_to_batch(columns, &values).map_err(EddyError::Internal)?;
                let encoded = row_keys.encode(batch.columns(), keys.len())?;
                (0..keys.len()).map(|i| row_key(encoded.key(i))).collect()
            }
        };
        let stored = baseline.snapshot.multi_get(&self.cf, &state_keys)?;
        stored
            .into_iter()
            .map(|v| Ok(v.map(|v| stored_row(&v)).transpose()?.flatten().filter(|r| r.len() == self.width)))
            .collect()
    }
}

impl Runtime {
    /// Starts a push query: from each partition's end (or start, with
    /// `auto.offset.reset=earliest`), sending projected batches until the receiver goes away.
    /// A joined table is read from its materialization (its current rows).
    /// A push query with GROUP BY or over a stream–stream or table–table join runs as a
    /// transient query (`sql` and `user` are what SHOW QUERIES shows of it).
    pub fn start_push(
        &self,
        plan: ContinuousPlan,
        earliest: bool,
        out: tokio::sync::mpsc::Sender<Result<RecordBatch>>,
        sql: &str,
        user: &str,
    ) -> Result<()> {
        let projection = matches!(plan.shape, PlanShape::Project { .. }) && plan.window.is_none();
        if !projection || plan.interval.is_some() || plan.table_join.is_some() {
            return self.start_transient_push(plan, earliest, out, sql, user);
        }
        let source = Source::open(&self.log, &plan.source)?;
        let offsets: Vec<i64> = source
            .partitions
            .iter()
            .map(|p| if earliest { p.log_start_offset() } else { p.high_watermark() })
            .collect();
        let mut table_cfs = Vec::new();
        for j in &plan.join {
            table_cfs.push(state_cf(j.table.materialized_by.as_deref().ok_or_else(|| {
                EddyError::InvalidValue(format!("table {} has no materialization to join with", j.table.name))
            })?));
        }
        let tables: Vec<RelationDef> = plan.join.iter().map(|j| j.table.clone()).collect();
        let mut ops = Operators::new(plan)?;
        // An aggregation's table is keyed in row format by its group columns' order.
        for (join, table) in ops.join.iter_mut().zip(&tables) {
            let Some(key) = table.state_key().filter(|k| k.row_format) else { continue };
            let key_columns: Vec<usize> =
                table.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
            let order: Option<Vec<usize>> =
                key.columns.iter().map(|c| key_columns.iter().position(|k| k == c)).collect();
            let types: Vec<_> = key.columns.iter().map(|&c| table.columns[c].ty.arrow()).collect();
            if let (Some(order), true) = (order, key.columns.len() == key_columns.len()) {
                join.row_keys = Some((crate::format::row_keys::RowKeys::new(&types)?, order));
            }
        }
        // Over a table, rows carry their change kind (`op`), against the rows of a baseline
        // (or, for a table whose rows cannot be read by key, of a copy taken now) unless the
        // query reads the whole changelog.
        let mut offsets = offsets;
        let changes = if source.relation.kind == RelationKind::Table {
            let mut tracker = changes::ChangeTracker::new();
            let table = TableState::of(&source.relation)?;
            let mut baseline = None;
            match &table {
                Some(t) if !earliest => {
                    let b = t.baseline(&self.store, &source)?;
                    offsets.clone_from(&b.positions);
                    baseline = Some(b);
                }
                None if !earliest => self.seed_changes(&mut tracker, &source, &ops)?,
                _ => {}
            }
            Some(TableChanges { tracker, table, baseline })
        } else {
            None
        };
        let rt = self.clone();
        std::thread::Builder::new()
            .name("push-query".into())
            .stack_size(crate::sql::THREAD_STACK_BYTES)
            .spawn(move || {
                super::lower_thread_priority(rt.config.nice);
                let result = push_loop(&rt, source, offsets, ops, table_cfs, changes, &out);
                if let Err(e) = result {
                    let _ = out.blocking_send(Err(e));
                }
            })
            .map_err(|e| EddyError::Internal(format!("spawn push query: {e}")))?;
        Ok(())
    }
}

/// Numbers transient queries (their ids name their state's column families).
static TRANSIENT_QUERIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The prefix of a transient query's id (its column family is dropped at start, should a
/// crash have left it).
pub const TRANSIENT_PREFIX: &str = "transient_";

impl Runtime {
    /// A push query with GROUP BY, or over a join that needs its own state (stream–stream,
    /// table–table): runs as a transient query (see `task/push_output.rs`).
    fn start_transient_push(
        &self,
        plan: ContinuousPlan,
        earliest: bool,
        out: tokio::sync::mpsc::Sender<Result<RecordBatch>>,
        sql: &str,
        user: &str,
    ) -> Result<()> {
        let n = TRANSIENT_QUERIES.fetch_add(1, Ordering::Relaxed);
        let id = format!("{TRANSIENT_PREFIX}{}_{n}", plan.source.name.to_lowercase());
        let table_shaped = push_has_op(&plan);
        let mut push =
            task::PushOutput::new(out, plan.output_columns.clone(), table_shaped, self.config.join_memory_bytes);
        push.key_order = plan.change_key_order.clone();
        let info = PushQueryInfo { sql: sql.to_string(), user: user.to_string(), stop: push.stop.clone() };
        // Registered before the thread starts, which removes it when it ends.
        self.push_queries.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), info);
        let started = self.start_transient(&id, plan, earliest, push);
        if started.is_err() {
            self.push_queries.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        }
        started
    }
}

/// Whether a push query's rows carry the change kind `op`: over a table, or with GROUP BY
/// (a table-shaped result).
pub fn push_has_op(plan: &ContinuousPlan) -> bool {
    plan.source.kind == RelationKind::Table || matches!(plan.shape, PlanShape::Aggregate(_))
}

impl Runtime {
    /// The table's materialized rows, as the operators' input rows, into `tracker` (tables
    /// whose rows cannot be read by key).
    fn seed_changes(&self, tracker: &mut changes::ChangeTracker, source: &Source, ops: &Operators) -> Result<()> {
        let rel = &source.relation;
        let Some(q) = &rel.materialized_by else { return Ok(()) };
        let key_indexes: Vec<usize> = rel.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        let mut rows = Vec::new();
        let mut keys = Vec::new();
        for (_, v) in self.store.scan_prefix(&state_cf(q), &[ROW_PREFIX], usize::MAX)? {
            let Some(mut r) = stored_row(&v)? else { continue };
            if r.len() != rel.columns.len() {
                continue;
            }
            keys.push(key_indexes.iter().map(|&i| r[i].clone()).collect());
            r.resize(source.columns.len(), Value::Null);
            rows.push(r);
        }
        if rows.is_empty() {
            return Ok(());
        }
        let batch = crate::format::rows_to_batch(&source.columns, &rows).map_err(EddyError::Internal)?;
        let no_lookup = |_: usize, _: &[Vec<u8>]| -> LookupResult { Ok(Vec::new()) };
        let input = ops.input(batch, &no_lookup)?;
        tracker.remember(&input, &keys, ops.filter.as_ref())
    }
}

/// A push query over a table: the keys changed since its baseline, and the baseline.
struct TableChanges {
    tracker: changes::ChangeTracker,
    table: Option<TableState>,
    baseline: Option<Baseline>,
}

impl TableChanges {
    /// Reads from the baseline the rows `upserts` replace that the tracker does not hold.
    fn look_up(
        &mut self,
        upserts: &[changes::Upsert],
        ops: &Operators,
        source: &Source,
        lookup: &dyn Fn(usize, &[Vec<u8>]) -> LookupResult,
    ) -> Result<()> {
        let (Some(table), Some(baseline)) = (&self.table, &self.baseline) else { return Ok(()) };
        let unknown = self.tracker.unknown(upserts.iter().map(|(k, _, _)| k));
        if unknown.is_empty() {
            return Ok(());
        }
        let found = table.rows(baseline, &unknown)?;
        let mut keys = Vec::new();
        let mut rows = Vec::new();
        for (key, row) in unknown.into_iter().zip(found) {
            if let Some(mut row) = row {
                row.resize(source.columns.len(), Value::Null);
                keys.push(key);
                rows.push(row);
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let batch = crate::format::rows_to_batch(&source.columns, &rows).map_err(EddyError::Internal)?;
        let input = ops.input(batch, lookup)?;
        self.tracker.remember(&input, &keys, ops.filter.as_ref())
    }

    /// Once the query has read everything there is: a new baseline if the materialization
    /// stands where the query does (the tracker's keys are then forgotten).
    fn renew(&mut self, store: &StateStore, source: &Source, offsets: &[i64]) -> Result<()> {
        let Some(table) = &self.table else { return Ok(()) };
        let stale = self.baseline.as_ref().is_none_or(|b| b.taken.elapsed() >= BASELINE_MAX_AGE);
        if self.tracker.is_empty() && !stale {
            return Ok(());
        }
        let fresh = table.baseline(store, source)?;
        if fresh.positions == offsets {
            self.baseline = Some(fresh);
            self.tracker.clear();
        }
        Ok(())
    }
}

/// Looks up table rows in a table's materialization (its state values, as stored).
fn materialized_rows(store: &StateStore, cf: &str, keys: &[Vec<u8>]) -> LookupResult {
    let full: Vec<Vec<u8>> = keys.iter().map(|k| row_key(k)).collect();
    store.multi_get(cf, &full)
}

fn push_loop(
    rt: &Runtime,
    mut source: Source,
    mut offsets: Vec<i64>,
    ops: Operators,
    table_cfs: Vec<String>,
    mut changes: Option<TableChanges>,
    out: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
) -> Result<()> {
    let Body::Project(project) = &ops.body else { return Ok(()) };
    let lookup = |i: usize, keys: &[Vec<u8>]| -> LookupResult { materialized_rows(&rt.store, &table_cfs[i], keys) };
    loop {
        if out.is_closed() {
            return Ok(());
        }
        let version = rt.log.notifier.version();
        let polled = source.poll(&mut offsets, rt.config.fetch_bytes_max, &rt.processing_log, "push")?;
        match polled {
            None => {
                if let Some(changes) = changes.as_mut() {
                    changes.renew(&rt.store, &source, &offsets)?;
                }
                rt.log.notifier.wait_past(version, Duration::from_millis(100));
            }
            Some(decoded) => {
                if let Some(changes) = changes.as_mut() {
                    changes.look_up(&decoded.upserts, &ops, &source, &lookup)?;
                    let input = decoded.batch.map(|b| ops.input(b, &lookup)).transpose()?;
                    let Some((rows, kinds)) =
                        changes.tracker.apply(input.as_ref(), &decoded.upserts, ops.filter.as_ref())?
                    else {
                        continue;
                    };
                    let projected = changes::with_op(&project.process(&rows)?, &kinds)?;
                    if out.blocking_send(Ok(projected)).is_err() {
                        return Ok(());
                    }
                    continue;
                }
                let Some(batch) = decoded.batch else { continue };
                let batch = ops.input(batch, &lookup)?;
                let batch = match &ops.filter {
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
