//! Push queries (`SELECT ... EMIT CHANGES`): a thread per subscription that tails the
//! source from its end (or start) and sends projected batches to the client until it goes
//! away; joined tables are read from their materializations, table changelogs carry the
//! change kind.

use super::*;
impl Runtime {
    /// Starts a push query: from each partition's end (or start, with
    /// `auto.offset.reset=earliest`), sending projected batches until the receiver goes away.
    /// A joined table is read from its materialization (its current rows).
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
        if ops.interval.is_some() {
            return Err(EddyError::NotImplemented(
                "stream–stream joins in push queries; create a stream with CREATE STREAM ... AS SELECT and push-query it".into(),
            ));
        }
        if !matches!(ops.body, Body::Project(_)) || ops.window.is_some() {
            return Err(EddyError::NotImplemented(
                "aggregations in push queries; create a table with CREATE TABLE ... AS SELECT and push-query it".into(),
            ));
        }
        // Over a table, rows carry their change kind (`op`); the tracker starts from the
        // table's current rows unless the query reads the whole changelog.
        let changes = if source.relation.kind == RelationKind::Table {
            let mut tracker = changes::ChangeTracker::new();
            if !earliest {
                self.seed_changes(&mut tracker, &source, &ops)?;
            }
            Some(tracker)
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

impl Runtime {
    /// The table's materialized rows, as the operators' input rows, into `tracker`.
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
        tracker.seed(&input, &keys, ops.filter.as_ref())
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
    mut changes: Option<changes::ChangeTracker>,
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
                rt.log.notifier.wait_past(version, Duration::from_millis(100));
            }
            Some(decoded) => {
                if let Some(tracker) = changes.as_mut() {
                    let input = decoded.batch.map(|b| ops.input(b, &lookup)).transpose()?;
                    let Some((rows, kinds)) = tracker.apply(input.as_ref(), &decoded.upserts, ops.filter.as_ref())?
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
