//! A transient query's output: what a push query with GROUP BY (or a stream–stream join)
//! sends its client instead of writing a topic.
//!
//! Such a query runs as a persistent query's task does (its operators, windows, joined
//! tables' copies and checkpoints), with its state in a column family of its own that is
//! dropped when the client goes away (and at the next start, after a crash). A table-shaped
//! result (an aggregation) carries each change's kind in a last column `op`, as a push query
//! over a table does: `insert` for a group first seen, `update`, and `delete` (the key
//! columns, other columns NULL) for a group that leaves the result — all its rows retracted,
//! or HAVING no longer true.

use std::collections::HashSet;

use super::*;
use crate::format::Column;

/// What one key in `PushOutput::live` is counted as beyond its bytes (the set's own entry).
const KEY_OVERHEAD: usize = 32;

/// What a transient query sends, and where.
pub struct PushOutput {
    out: tokio::sync::mpsc::Sender<Result<RecordBatch>>,
    /// The query's stop flag (TERMINATE sets it).
    pub stop: Arc<AtomicBool>,
    columns: Vec<Column>,
    /// Whether rows carry `op` (a table-shaped result).
    table_shaped: bool,
    /// State keys of the groups now in the result (whether a change is an insert or an
    /// update), and their bytes, bounded by `max_bytes`.
    live: HashSet<Vec<u8>>,
    live_bytes: usize,
    max_bytes: usize,
    rows: Vec<Vec<Value>>,
    kinds: Vec<&'static str>,
    batches: Vec<RecordBatch>,
    closed: bool,
    /// Set when the result outgrew `max_bytes`: the query stops with this error.
    overflow: Option<String>,
    /// Until the query's inputs reach these positions (their ends when it started), changes
    /// are tracked but not sent: a query over a table from its end (`auto.offset.reset`
    /// latest) reads the table whole for its state, and sends only what changes after.
    quiet_until: Option<Vec<i64>>,
    /// Where each key column's value is in a change's key values
    /// (`ContinuousPlan::change_key_order`); `None`: in the key columns' order.
    pub key_order: Option<Vec<usize>>,
}

impl PushOutput {
    pub fn new(
        out: tokio::sync::mpsc::Sender<Result<RecordBatch>>,
        columns: Vec<Column>,
        table_shaped: bool,
        max_bytes: usize,
    ) -> Self {
        PushOutput {
            out,
            stop: Arc::default(),
            columns,
            table_shaped,
            live: HashSet::new(),
            live_bytes: 0,
            max_bytes,
            rows: Vec::new(),
            kinds: Vec::new(),
            batches: Vec::new(),
            closed: false,
            overflow: None,
            quiet_until: None,
            key_order: None,
        }
    }

    /// Sends nothing until the inputs reach `positions` (see `quiet_until`).
    pub fn quiet_until(&mut self, positions: Vec<i64>) {
        self.quiet_until = Some(positions);
    }

    /// Whether the query still catches up to the positions given to `quiet_until`.
    pub fn is_quiet(&self) -> bool {
        self.quiet_until.is_some()
    }

    /// The inputs stand at `positions` (in the order given to `quiet_until`).
    pub fn caught_up_to(&mut self, positions: &[i64]) {
        if let Some(until) = &self.quiet_until {
            if positions.len() == until.len() && positions.iter().zip(until).all(|(p, u)| p >= u) {
                self.quiet_until = None;
            }
        }
    }

    /// The client went away: the query stops.
    pub fn is_closed(&self) -> bool {
        self.closed || self.out.is_closed()
    }

    /// Rows of a stream-shaped result, in the output columns' order.
    pub fn batch(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 && self.quiet_until.is_none() {
            self.batches.push(batch);
        }
    }

    /// A change of a table-shaped result. Past `max_bytes` of keys the query stops (at the
    /// next `send`) with an error, rather than grow.
    pub fn change(&mut self, change: &Change) {
        match &change.row {
            Some(row) => {
                let kind = if self.live.contains(&change.state_key) {
                    "update"
                } else {
                    self.live_bytes += change.state_key.len() + KEY_OVERHEAD;
                    if self.max_bytes > 0 && self.live_bytes > self.max_bytes && self.overflow.is_none() {
                        self.overflow = Some(format!(
                            "the push query's result holds more than {} groups (--query-memory-bytes {}); \
                             create a table with CREATE TABLE ... AS SELECT and push-query it",
                            self.live.len(),
                            self.max_bytes
                        ));
                    }
                    self.live.insert(change.state_key.clone());
                    "insert"
                };
                if self.quiet_until.is_none() {
                    self.rows.push(row.clone());
                    self.kinds.push(kind);
                }
            }
            None => {
                if self.live.remove(&change.state_key) && self.quiet_until.is_none() {
                    self.live_bytes = self.live_bytes.saturating_sub(change.state_key.len() + KEY_OVERHEAD);
                    self.rows.push(self.key_only_row(&change.key_values));
                    self.kinds.push("delete");
                }
            }
        }
    }

    /// A group that left state for good (a window past its retention): not an insert when
    /// it comes back.
    pub fn forget(&mut self, state_key: &[u8]) {
        if self.live.remove(state_key) {
            self.live_bytes = self.live_bytes.saturating_sub(state_key.len() + KEY_OVERHEAD);
        }
    }

    /// A deleted group's row: its key columns (from the group values, see `key_order`), the
    /// rest NULL.
    fn key_only_row(&self, key_values: &[Value]) -> Vec<Value> {
        let mut row = vec![Value::Null; self.columns.len()];
        let key_columns: Vec<usize> = self.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        let order: Vec<usize> = match &self.key_order {
            Some(order) => order.clone(),
            None => (0..key_values.len()).collect(),
        };
        if order.len() == key_columns.len() && order.iter().all(|&i| i < key_values.len()) {
            for (&c, &i) in key_columns.iter().zip(&order) {
                row[c] = key_values[i].clone();
            }
        }
        row
    }

    /// Sends what is buffered; waits while the client's queue is full (a slow client holds
    /// the query back). A client that went away closes the output.
    pub fn send(&mut self) -> Result<()> {
        if let Some(e) = self.overflow.take() {
            return Err(EddyError::LimitExceeded(e));
        }
        if !self.rows.is_empty() {
            let batch = crate::format::rows_to_batch(&self.columns, &std::mem::take(&mut self.rows))
                .map_err(EddyError::Internal)?;
            let kinds = std::mem::take(&mut self.kinds);
            self.batches.push(if self.table_shaped { changes::with_op(&batch, &kinds)? } else { batch });
        }
        for batch in std::mem::take(&mut self.batches) {
            if self.closed || self.out.blocking_send(Ok(batch)).is_err() {
                self.closed = true;
            }
        }
        Ok(())
    }

    /// The query failed: the client gets the error.
    pub fn fail(&mut self, e: EddyError) {
        if !self.closed {
            let _ = self.out.blocking_send(Err(e));
        }
        self.closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::types::SqlType;
    use datafusion::arrow::array::AsArray;
    use serde_json::json;

    fn column(name: &str, ty: SqlType, key: bool) -> Column {
        Column { name: name.into(), ty, key }
    }

    fn change(key: &[u8], group: &str, row: Option<Vec<Value>>) -> Change {
        Change {
            state_key: key.to_vec(),
            key_values: vec![json!(group)],
            row,
            state_value: StateWrite::Deferred,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn changes_are_inserts_updates_and_deletes_of_key_columns() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let columns = vec![column("k", SqlType::String, true), column("n", SqlType::BigInt, false)];
        let mut out = PushOutput::new(tx, columns, true, 0);
        out.change(&change(b"a", "a", Some(vec![json!("a"), json!(1)])));
        out.change(&change(b"a", "a", Some(vec![json!("a"), json!(2)])));
        out.change(&change(b"b", "b", None)); // never sent: nothing to delete
        out.change(&change(b"a", "a", None));
        out.change(&change(b"a", "a", Some(vec![json!("a"), json!(1)])));
        out.send().unwrap();
        let batch = rx.try_recv().unwrap().unwrap();
        let ops: Vec<&str> = batch.column(2).as_string::<i32>().iter().map(Option::unwrap).collect();
        assert_eq!(ops, ["insert", "update", "delete", "insert"]);
        assert_eq!(batch.column(0).as_string::<i32>().value(2), "a");
        assert!(batch.column(1).is_null(2));
    }

    #[test]
    fn changes_while_catching_up_are_not_sent_but_known() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let mut out = PushOutput::new(tx, vec![column("k", SqlType::String, true)], true, 0);
        out.quiet_until(vec![5, 3]);
        out.change(&change(b"a", "a", Some(vec![json!("a")])));
        out.caught_up_to(&[5, 2]);
        assert!(out.is_quiet());
        out.change(&change(b"b", "b", Some(vec![json!("b")])));
        out.caught_up_to(&[5, 3]);
        assert!(!out.is_quiet());
        out.change(&change(b"a", "a", Some(vec![json!("a")])));
        out.send().unwrap();
        let batch = rx.try_recv().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "update");
    }

    #[test]
    fn too_many_groups_is_an_error_not_unbounded_memory() {
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let mut out = PushOutput::new(tx, vec![column("k", SqlType::String, true)], true, 70);
        out.change(&change(b"a", "a", Some(vec![json!("a")])));
        out.change(&change(b"b", "b", Some(vec![json!("b")])));
        out.send().unwrap();
        out.change(&change(b"c", "c", Some(vec![json!("c")])));
        let e = out.send().unwrap_err();
        assert!(e.to_string().contains("--query-memory-bytes"), "{e}");
    }
}
