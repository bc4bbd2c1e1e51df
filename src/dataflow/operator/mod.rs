//! Streaming operators, one per file. Each is a plain synchronous struct whose `process`
//! takes one Arrow batch; none of them sees tokio, threads or the log, so tests call them
//! directly. The runner in `dataflow/mod.rs` drives them.

pub mod accumulator;
pub mod aggregate;
pub mod filter_project;
pub mod interval_join;
pub mod join;
pub mod table_join;
pub mod upsert;
pub mod window;

use serde_json::Value;

/// One change to a table-shaped result: the row now stored under `state_key`, or `None`
/// when the key was deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub state_key: Vec<u8>,
    /// The key's values (group values or primary key), for the changelog record key.
    pub key_values: Vec<Value>,
    pub row: Option<Vec<Value>>,
    /// What to persist under `state_key` at the next checkpoint.
    pub state_value: StateWrite,
    pub timestamp_ms: i64,
}

/// A change's write to the state store.
#[derive(Debug, Clone, PartialEq)]
pub enum StateWrite {
    Put(Vec<u8>),
    Delete,
    /// The operator keeps the key's state and writes it once at the checkpoint
    /// (`AggregateOperator::drain_writes`), however often it changed meanwhile.
    Deferred,
}

impl StateWrite {
    /// The key still has a row or a group after this change.
    pub fn is_live(&self) -> bool {
        !matches!(self, StateWrite::Delete)
    }
}

/// Event time while one batch runs: the batch comes from one input partition, whose event
/// time its rows advance one by one. Windows close, lateness is judged and join buffers
/// expire on the watermark: the smallest event time of the partitions that hold it back
/// (Flink's rule), so a result does not depend on the order partitions are read in. It never
/// goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchTime {
    /// The largest event time read from the batch's partition so far (`i64::MIN`: none).
    pub partition_ms: i64,
    /// The smallest event time of the query's other partitions that hold the watermark back
    /// (`i64::MAX`: none does).
    pub others_ms: i64,
    /// The query's watermark (`i64::MIN` before any event).
    pub watermark_ms: i64,
}

impl BatchTime {
    /// A watermark that rows cannot move (they judge against it only).
    pub fn fixed(watermark_ms: i64) -> BatchTime {
        BatchTime { partition_ms: watermark_ms, others_ms: watermark_ms, watermark_ms }
    }

    /// A row of the batch's partition at event time `ts`.
    pub fn advance(&mut self, ts: i64) {
        self.partition_ms = self.partition_ms.max(ts);
        self.watermark_ms = self.watermark_ms.max(self.partition_ms.min(self.others_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::BatchTime;

    #[test]
    fn the_watermark_is_the_slowest_partition_and_never_goes_back() {
        let mut t = BatchTime { partition_ms: i64::MIN, others_ms: 5_000, watermark_ms: 1_000 };
        t.advance(500);
        assert_eq!((t.partition_ms, t.watermark_ms), (500, 1_000));
        t.advance(30_000);
        assert_eq!((t.partition_ms, t.watermark_ms), (30_000, 5_000));
        t.advance(2_000);
        assert_eq!((t.partition_ms, t.watermark_ms), (30_000, 5_000));
        // Alone (no other partition holds it back), a partition's time is the watermark.
        let mut alone = BatchTime { partition_ms: 0, others_ms: i64::MAX, watermark_ms: 0 };
        alone.advance(7);
        assert_eq!(alone.watermark_ms, 7);
        let mut fixed = BatchTime::fixed(10);
        fixed.advance(99);
        assert_eq!(fixed.watermark_ms, 10);
    }
}
