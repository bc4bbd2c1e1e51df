//! A table over a topic: the latest row per primary key; a record with a null value
//! (tombstone) deletes its key.

use serde_json::Value;

use super::{Change, StateWrite};
use crate::format::{memcomparable, stored};

pub struct UpsertOperator;

impl UpsertOperator {
    /// `rows` are (key values, row or None for a tombstone, timestamp) in log order.
    pub fn process(&self, rows: Vec<(Vec<Value>, Option<Vec<Value>>, i64)>) -> Vec<Change> {
        rows.into_iter()
            .map(|(key_values, row, timestamp_ms)| {
                let state_value = match &row {
                    Some(r) => StateWrite::Put(stored::encode_row(r)),
                    None => StateWrite::Delete,
                };
                Change { state_key: memcomparable(&key_values), key_values, row, state_value, timestamp_ms }
            })
            .collect()
    }
}
