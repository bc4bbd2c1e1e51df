//! Starting a query's task: a persistent query from its checkpoint (or its inputs' start),
//! or a transient one (a push query with state of its own) from where its client asked;
//! both open their inputs, restore event time, windows and join buffers, and spawn the
//! thread that runs `QueryTask::run`.

use super::*;

impl Runtime {
    /// Starts a persistent query: resumes from its checkpoint, or from the earliest offset.
    pub fn start_persistent(
        &self,
        id: &str,
        plan: ContinuousPlan,
        sink: Option<RelationDef>,
        late: Option<RelationDef>,
        reproject: bool,
    ) -> Result<RunningQuery> {
        self.start_task(id, plan, sink, late, reproject, None)
    }

    /// Forgets query `id`'s copies of the tables it joins a stream with, and where it read
    /// them to: it reads them again from their start when it next starts. `CREATE OR REPLACE`
    /// does this, since a copy keeps only the rows and columns the old query needed (its
    /// WHERE and SELECT list over the table).
    pub fn forget_join_copies(&self, id: &str) -> Result<()> {
        let cf = state_cf(id);
        self.store.ensure_cf(&cf)?;
        let mut checkpoint = self.store.checkpoint(&cf);
        checkpoint.delete_prefix(&self.store, &[JOIN_ROW_PREFIX])?;
        checkpoint.delete_prefix(&self.store, &[JOIN_OFFSET_PREFIX])?;
        self.store.commit(checkpoint)
    }

    /// Starts a transient query (a push query with GROUP BY, or over a stream–stream join):
    /// a persistent query's task whose output goes to `push` and whose state (a column family
    /// of its own, `id`'s) is dropped when the client goes away. It reads a stream from its
    /// end, or its start with `earliest`; a table always from its start (an aggregation over
    /// a table needs every row); joined inputs from their start.
    pub fn start_transient(&self, id: &str, plan: ContinuousPlan, earliest: bool, push: PushOutput) -> Result<()> {
        self.store.drop_cf(&state_cf(id))?;
        self.start_task(id, plan, None, None, false, Some((earliest, push)))?;
        Ok(())
    }

    fn start_task(
        &self,
        id: &str,
        plan: ContinuousPlan,
        sink: Option<RelationDef>,
        late: Option<RelationDef>,
        reproject: bool,
        push: Option<(bool, PushOutput)>,
    ) -> Result<RunningQuery> {
        let cf = state_cf(id);
        self.store.ensure_cf(&cf)?;
        check_state_format(&self.store, &cf, id, matches!(plan.shape, PlanShape::Aggregate(_)))?;
        let lost_records = Arc::<std::sync::atomic::AtomicU64>::default();
        let mut source = Source::open(&self.log, &plan.source)?;
        source.lost_records = lost_records.clone();
        let mut offsets = Vec::with_capacity(source.partitions.len());
        let latest = matches!(push, Some((false, _)));
        let from_end = latest && plan.source.kind != RelationKind::Table;
        let mut push = push.map(|(_, p)| p);
        for p in &source.partitions {
            let start = if from_end { p.high_watermark() } else { p.log_start_offset() };
            offsets.push(stored_i64(&self.store, &cf, OFFSET_PREFIX, p.id)?.unwrap_or(start));
        }
        let second_relations: Vec<&RelationDef> = plan
            .join
            .iter()
            .map(|j| &j.table)
            .chain(plan.interval.as_ref().map(|i| &i.right))
            .chain(plan.table_join.as_ref().map(|t| &t.right))
            .collect();
        let mut table_input = Vec::new();
        for (i, rel) in second_relations.iter().enumerate() {
            let mut table = Source::open(&self.log, rel)?;
            table.lost_records = lost_records.clone();
            let mut offsets = Vec::new();
            for p in &table.partitions {
                let stored = match self.store.get(&cf, &join_offset_key(i, p.id))? {
                    Some(b) if b.len() == 8 => Some(i64::from_be_bytes(b.try_into().expect("8 bytes"))),
                    _ => None,
                };
                offsets.push(stored.unwrap_or_else(|| p.log_start_offset()));
            }
            table_input.push((table, offsets));
        }
        if let (Some(push), true, RelationKind::Table) = (push.as_mut(), latest, plan.source.kind) {
            let ends = source.partitions.iter().chain(table_input.iter().flat_map(|(t, _)| t.partitions.iter()));
            push.quiet_until(ends.map(|p| p.high_watermark()).collect());
        }
        if !plan.join.is_empty() {
            // Stream–table joins take only the tables' updates (see `run`).
            for (table, _) in &mut table_input {
                table.upserts_only = true;
            }
        }
        let mut sink = sink.map(|rel| self.open_sink(id, rel, SINK_PREFIX)).transpose()?;
        if let Some(sink) = sink.as_mut() {
            sink.key_order = plan.change_key_order.clone();
        }
        let late_sink = late.map(|rel| self.open_sink(id, rel, LATE_SINK_PREFIX)).transpose()?;
        let watermark_ms = match self.store.get(&cf, STREAM_TIME_KEY)? {
            Some(b) if b.len() == 8 => i64::from_be_bytes(b.try_into().expect("8 bytes")),
            _ => i64::MIN,
        };
        event_time::restore(&self.store, &cf, 0, &mut source)?;
        if let (Some(_), Some((second, _))) = (&plan.interval, table_input.first_mut()) {
            event_time::restore(&self.store, &cf, 1, second)?;
        }
        let mut open_windows = BTreeSet::new();
        let mut expiring_windows = BTreeSet::new();
        if plan.window.is_some() {
            for (k, _) in self.store.scan_prefix(&cf, &[WINDOW_OPEN_PREFIX], usize::MAX)? {
                open_windows.extend(parse_time_key(&k));
            }
            for (k, _) in self.store.scan_prefix(&cf, &[WINDOW_EXPIRY_PREFIX], usize::MAX)? {
                expiring_windows.extend(parse_time_key(&k));
            }
        }
        let mut topics = vec![plan.source.topic.clone()];
        topics.extend(second_relations.iter().map(|r| r.topic.clone()));
        let mut committed = offsets.clone();
        for (_, table_offsets) in &table_input {
            committed.extend(table_offsets);
        }
        let status = Arc::new(QueryStatus { committed: Mutex::new(committed), lost_records, ..Default::default() });
        let stop = push.as_ref().map_or_else(|| Arc::new(AtomicBool::new(false)), |p| p.stop.clone());
        let retention_ms = plan.window.as_ref().and_then(|w| w.spec.retention_ms);
        let close_after_end_ms = plan.window.as_ref().map_or(0, |w| match w.spec.kind {
            WindowKind::Session => w.spec.grace_ms.saturating_add(w.spec.size_ms),
            _ => w.spec.grace_ms,
        });
        let emit_final = plan.emit_final;
        let mut ops = Operators::new(plan)?;
        if let Body::Aggregate(aggregate) = &mut ops.body {
            aggregate.set_threads(self.config.query_threads, self.config.parallel_min_rows);
        }
        // Columns nothing reads stay NULL (a late record's report reads it again whole; rows
        // for LATE DATA TO need every column).
        if let (None, Some(_)) = (&late_sink, ops.origin_columns) {
            if let Some(unread) = ops.unread_source_columns(source.relation.columns.len()) {
                source.set_unread(unread);
            }
        }
        if let Some(ij) = &mut ops.interval {
            ij.memory_max_bytes = self.config.join_memory_bytes;
            ij.restore(self.store.scan_prefix(&cf, &[BUFFER_PREFIX], usize::MAX)?)?;
        }
        // The query's processing-log entries are written with its checkpoints.
        let mut rt = self.clone();
        rt.processing_log = self.processing_log.buffered();
        recover_processing_log(&rt, &cf)?;
        let mut task = QueryTask {
            id: id.to_string(),
            cf,
            rt,
            source,
            offsets,
            table_input,
            prefer_second: false,
            input_time: [i64::MIN; 2],
            reproject,
            checkpoint_failing: false,
            ops,
            sink,
            late_sink,
            pending: BTreeMap::new(),
            cache: ReadCache::new(self.config.state_cache_bytes, self.config.state_cache_total_bytes),
            pending_outputs: PendingOutput::default(),
            pending_late: PendingOutput::default(),
            time: BatchTime { partition_ms: i64::MIN, others_ms: i64::MAX, watermark_ms },
            idle_ms: i64::try_from(self.config.idle_partition_timeout.as_millis()).unwrap_or(i64::MAX),
            close_after_end_ms,
            retention_ms,
            open_windows,
            expiring_windows,
            agg_prefix: if emit_final { WORKING_PREFIX } else { ROW_PREFIX },
            dirty: true,
            status: status.clone(),
            stop: stop.clone(),
            read_ahead: None,
            push,
        };
        if std::mem::take(&mut task.reproject) {
            task.reproject_groups()?;
        }
        let thread = std::thread::Builder::new()
            .name(format!("query-{id}"))
            .stack_size(crate::sql::THREAD_STACK_BYTES)
            .spawn(move || {
                lower_thread_priority(task.rt.config.nice);
                let result = task.run();
                if let Some(mut push) = task.push.take() {
                    // A transient query: the client gets its error; its state goes with it.
                    if let Err(e) = result {
                        push.fail(e);
                    }
                    let (rt, id, cf) = (task.rt.clone(), task.id.clone(), task.cf.clone());
                    drop(task);
                    drop(push);
                    if let Err(e) = rt.store.drop_cf(&cf) {
                        tracing::warn!("dropping a push query's state {cf}: {e}");
                    }
                    rt.push_queries.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    return;
                }
                if let Err(e) = result {
                    tracing::error!(query = %task.id, "query failed: {e}");
                    *task.status.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
            })
            .map_err(|e| EddyError::Internal(format!("spawn query thread: {e}")))?;
        Ok(RunningQuery {
            id: id.to_string(),
            source_topic: topics.remove(0),
            other_topics: topics,
            status,
            stop,
            thread: Some(thread),
        })
    }
}
