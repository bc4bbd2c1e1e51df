//! A query's event time: each input partition's own (the largest event time read from it,
//! kept in its `Source` and persisted with the checkpoints) and the query's watermark, the
//! smallest of them over the partitions that hold it back (Flink's rule). Windows close,
//! lateness is judged and join buffers expire on the watermark, so a partition read later
//! than another (after a restart, in a replay) does not find its records called late.
//!
//! A partition holds the watermark back while it has data to read and until it has been
//! caught up for `--idle-partition-timeout-ms`; one that never had data is idle after that
//! too. When every partition of an input is idle, all it holds has been read: its watermark
//! is then its largest partition time (ksqlDB's stream time), so windows still close.
//! Only windows, sessions and stream–stream joins use the watermark; the inputs tracked are
//! the source and, for a stream–stream join, the second stream (a stream–table join's table
//! moves no time). Each input's watermark is the minimum over its own partitions; a join goes
//! by the larger of its two inputs', as before: the inputs are read in event-time order and
//! one never runs ahead of the other by more than the grace period (see `poll_next`).

use super::*;
use crate::state::Checkpoint;

/// Reads an input's partition times from the query's state (none in state written before
/// they were kept: the partitions start unknown, the watermark resumes as it was).
pub(super) fn restore(store: &StateStore, cf: &str, input: u8, source: &mut Source) -> Result<()> {
    for (i, p) in source.partitions.iter().enumerate() {
        if let Some(b) = store.get(cf, &time_key(input, p.id))? {
            if let Ok(bytes) = <[u8; 8]>::try_from(b.as_slice()) {
                source.time_ms[i] = i64::from_be_bytes(bytes);
            }
        }
    }
    Ok(())
}

fn time_key(input: u8, partition: i32) -> Vec<u8> {
    let mut k = vec![PARTITION_TIME_PREFIX, input];
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

impl QueryTask {
    /// Whether anything in the plan runs on event time.
    fn time_driven(&self) -> bool {
        self.ops.window.is_some() || self.ops.session.is_some() || self.ops.interval.is_some()
    }

    /// The inputs whose partitions hold the watermark back, with their number in state.
    fn timed_inputs(&self) -> impl Iterator<Item = (u8, &Source)> {
        let second = self.table_input.first().filter(|_| self.ops.interval.is_some()).map(|(s, _)| (1, s));
        std::iter::once((0, &self.source)).chain(second)
    }

    fn timed_input_mut(&mut self, from_second: bool) -> Option<&mut Source> {
        if from_second {
            self.table_input.first_mut().map(|(s, _)| s)
        } else {
            Some(&mut self.source)
        }
    }

    /// Before a batch from `partition` of the source (or the second input): its partition's
    /// time, and the smallest time of the input's other partitions that hold the watermark back.
    pub(super) fn start_batch(&mut self, from_second: bool, partition: usize) {
        let idle_ms = self.idle_ms;
        let source = self.timed_input_mut(from_second);
        let own = source.as_ref().and_then(|s| s.time_ms.get(partition).copied());
        let others = source.and_then(|s| s.holding_min(Some(partition), idle_ms));
        self.time.partition_ms = own.unwrap_or(i64::MIN);
        self.time.others_ms = others.unwrap_or(i64::MAX);
    }

    /// After the batch: its partition's new event time. The operators moved it row by row
    /// (only over the rows they were given: a WHERE before a window keeps the others out);
    /// a query without them goes by what was read, which orders its reads.
    pub(super) fn end_batch(&mut self, from_second: bool, partition: usize, read_ms: Option<i64>) {
        let time_ms = if self.time_driven() { Some(self.time.partition_ms) } else { read_ms };
        if let (Some(source), Some(t)) = (self.timed_input_mut(from_second), time_ms) {
            if let Some(slot) = source.time_ms.get_mut(partition) {
                *slot = (*slot).max(t);
            }
        }
    }

    /// With nothing to read: a partition that went idle may stop holding the watermark
    /// back. When it moves, windows close and join buffers expire as after a batch, and the
    /// query checkpoints.
    pub(super) fn advance_idle(&mut self) -> Result<()> {
        if !self.time_driven() {
            return Ok(());
        }
        let idle_ms = self.idle_ms;
        let input_watermark = |s: &Source| {
            s.holding_min(None, idle_ms).or_else(|| s.time_ms.iter().copied().max().filter(|&t| t != i64::MIN))
        };
        let Some(watermark_ms) = self.timed_inputs().filter_map(|(_, s)| input_watermark(s)).max() else {
            return Ok(());
        };
        if watermark_ms <= self.time.watermark_ms {
            return Ok(());
        }
        self.time = BatchTime::fixed(watermark_ms);
        self.dirty = true;
        if let Some(join) = self.ops.interval.as_mut() {
            let (store, cf) = (&self.rt.store, &self.cf);
            let step = join.expire_to(watermark_ms, &|prefix| store.scan_prefix(cf, prefix, usize::MAX))?;
            let topic = self.source.relation.topic.clone();
            self.process_joined(&step, &topic, watermark_ms)?;
        }
        if self.ops.window.is_some() {
            self.close_windows()?;
        }
        Ok(())
    }

    /// The watermark and the partition times, into the checkpoint.
    pub(super) fn persist_times(&self, cp: &mut Checkpoint) -> Result<()> {
        if self.time.watermark_ms != i64::MIN {
            cp.put(&self.rt.store, STREAM_TIME_KEY, &self.time.watermark_ms.to_be_bytes())?;
        }
        if !self.time_driven() {
            return Ok(());
        }
        for (input, source) in self.timed_inputs() {
            for (p, t) in source.partitions.iter().zip(&source.time_ms) {
                if *t != i64::MIN {
                    cp.put(&self.rt.store, &time_key(input, p.id), &t.to_be_bytes())?;
                }
            }
        }
        Ok(())
    }
}
