//! A query's checkpoint: its sinks' appends (made durable), then one synced RocksDB write
//! holding the state changes, the source offsets and the processing-log entries, then the
//! output made visible (see the module comment in `dataflow/mod.rs`).

use super::*;

impl QueryTask {
    /// Sink output, then one atomic state write, then publish (see the module comment).
    /// Processing-log entries ride in the same write and are appended after it.
    pub(super) fn checkpoint(&mut self) -> Result<()> {
        if let Some(join) = self.ops.interval.as_mut() {
            self.pending.extend(join.drain_writes()?);
        }
        if let Body::Aggregate(aggregate) = &mut self.ops.body {
            for (k, v) in aggregate.drain_writes() {
                self.pending.insert(prefixed(self.agg_prefix, &k), v);
            }
        }
        let plog_entries = self.rt.processing_log.take_buffered();
        // The topics this query writes, each held from the append to the publish: queries
        // that write one stream take turns (in name order, so two never wait on each other).
        let mut topics: Vec<Arc<crate::log::Topic>> =
            [&self.sink, &self.late_sink].into_iter().flatten().map(|s| s.topic().clone()).collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics.dedup_by(|a, b| a.name == b.name);
        let _turns: Vec<_> =
            topics.iter().map(|t| t.checkpoint_lock.lock().unwrap_or_else(|p| p.into_inner())).collect();
        let began = std::time::Instant::now();
        let written = self.write_checkpoint(&plog_entries);
        crate::metrics::CHECKPOINTS.observe(began.elapsed());
        match written {
            Ok(()) => {}
            Err(e) => {
                // Nothing was committed: the fenced output goes, everything else stays
                // buffered for the next attempt.
                for sink in [&mut self.sink, &mut self.late_sink].into_iter().flatten() {
                    sink.roll_back()?;
                }
                self.rt.processing_log.put_back(plog_entries);
                return Err(e);
            }
        }
        self.cache.committed(std::mem::take(&mut self.pending));
        self.pending_outputs.clear();
        self.pending_late.clear();
        for sink in [&mut self.sink, &mut self.late_sink].into_iter().flatten() {
            sink.mark_committed();
        }
        crate::failpoint::hit("checkpoint:after_commit");
        for sink in [&self.sink, &self.late_sink].into_iter().flatten() {
            sink.publish();
        }
        crate::failpoint::hit("checkpoint:after_publish");
        if !plog_entries.is_empty() {
            let n = plog_entries.len();
            self.rt.processing_log.append(plog_entries);
            clear_plog_entries(&self.rt.store, &self.cf, n)?;
        }
        if let Body::Aggregate(aggregate) = &mut self.ops.body {
            aggregate.clear_cache();
        }
        if let Some(join) = self.ops.interval.as_mut() {
            join.spill();
            self.status.spilled_keys.store(join.spills, Ordering::Relaxed);
            self.status.reloaded_keys.store(join.reloads, Ordering::Relaxed);
        }
        let mut committed = self.offsets.clone();
        for (_, offsets) in &self.table_input {
            committed.extend(offsets);
        }
        *self.status.committed.lock().unwrap_or_else(|p| p.into_inner()) = committed;
        self.dirty = false;
        Ok(())
    }

    /// Steps 1 and 2 of a checkpoint: the sinks' appends, then the one synced state write.
    fn write_checkpoint(&mut self, plog_entries: &[crate::log::LogRecord]) -> Result<()> {
        // Each record in a batch is its bytes plus a tag, a column family id and two lengths.
        let bytes: usize = self.pending.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 16).sum();
        let plog_bytes: usize = plog_entries.iter().map(|r| r.value.as_ref().map_or(0, Vec::len) + 32).sum();
        let mut cp = self.rt.store.checkpoint_with_capacity(&self.cf, bytes + plog_bytes + 4096);
        if !plog_entries.is_empty() {
            cp.put(&self.rt.store, PLOG_FROM_KEY, &self.rt.processing_log.end_offset().to_be_bytes())?;
            for (n, rec) in plog_entries.iter().enumerate() {
                let mut key = PLOG_ENTRY_PREFIX.to_vec();
                key.extend_from_slice(&(n as u32).to_be_bytes());
                cp.put(&self.rt.store, &key, rec.value.as_deref().unwrap_or_default())?;
            }
        }
        for (sink, outputs, prefix) in [
            (&mut self.sink, &mut self.pending_outputs, SINK_PREFIX),
            (&mut self.late_sink, &mut self.pending_late, LATE_SINK_PREFIX),
        ] {
            if let Some(sink) = sink {
                sink.append(outputs)?;
                for (p, end) in sink.ends.iter().enumerate() {
                    cp.put(&self.rt.store, &partition_key(prefix, p as i32), &end.to_be_bytes())?;
                    let topic_end = crate::state::sink_end_key(&sink.topic().name, p as i32);
                    cp.put_in(&self.rt.store, crate::state::CATALOG_CF, &topic_end, &end.to_be_bytes())?;
                }
            }
        }
        crate::failpoint::hit("checkpoint:after_sink_append");
        cp.write_all(&self.rt.store, self.pending.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))?;
        for (p, off) in self.source.partitions.iter().zip(&self.offsets) {
            cp.put(&self.rt.store, &partition_key(OFFSET_PREFIX, p.id), &off.to_be_bytes())?;
        }
        for (i, (table, offsets)) in self.table_input.iter().enumerate() {
            for (p, off) in table.partitions.iter().zip(offsets) {
                cp.put(&self.rt.store, &join_offset_key(i, p.id), &off.to_be_bytes())?;
            }
        }
        self.persist_times(&mut cp)?;
        if crate::failpoint::should_fail("checkpoint:fail_commit") {
            return Err(EddyError::State("injected failure of a checkpoint's commit".into()));
        }
        self.rt.store.commit(cp)
    }
}
