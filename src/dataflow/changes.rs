//! Push queries over tables: every row carries its change kind in a last column `op`
//! (`'insert'`, `'update'` or `'delete'`), worked out from the table's changelog against the
//! row each key had before. The tracker holds the keys changed since its baseline (the
//! table's materialization at one checkpoint, read by key as changes arrive: see
//! `push::Baseline`); keys it does not hold are looked up there first.
//!
//! The kinds are those of the query's result, not of the table: with a WHERE, an update that
//! moves a row into the result is an insert, one that moves it out is a delete (carrying the
//! old row), and changes outside the result are not sent.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde_json::Value;

use super::operator::filter_project::FilterOperator;
use crate::error::Result;

/// A table change as the source decodes it: key, row (`None`: deleted), timestamp.
pub type Upsert = (Vec<Value>, Option<Vec<Value>>, i64);

/// The name of the change-kind column.
pub const OP_COLUMN: &str = "op";

/// Per key changed since the baseline (or looked up in it): its last row (one-row batch in
/// the operators' input schema, `None` once deleted) and whether it was in the query's result.
pub struct ChangeTracker {
    seen: HashMap<String, (Option<RecordBatch>, bool)>,
}

fn key_string(key: &[Value]) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

fn passes(filter: Option<&FilterOperator>, batch: &RecordBatch) -> Result<Vec<bool>> {
    match filter {
        Some(f) => {
            let mask = f.mask(batch)?;
            Ok((0..batch.num_rows()).map(|i| mask.is_valid(i) && mask.value(i)).collect())
        }
        None => Ok(vec![true; batch.num_rows()]),
    }
}

fn row(batch: &RecordBatch, i: usize) -> Result<RecordBatch> {
    Ok(take_record_batch(batch, &UInt32Array::from(vec![i as u32]))?)
}

impl ChangeTracker {
    pub fn new() -> Self {
        ChangeTracker { seen: HashMap::new() }
    }

    /// Remembers rows of the table before the changes to come (`input`, with their keys in
    /// order).
    pub fn remember(
        &mut self,
        input: &RecordBatch,
        keys: &[Vec<Value>],
        filter: Option<&FilterOperator>,
    ) -> Result<()> {
        let pass = passes(filter, input)?;
        for (i, key) in keys.iter().enumerate() {
            self.seen.insert(key_string(key), (Some(row(input, i)?), pass[i]));
        }
        Ok(())
    }

    /// Of `keys`, those the tracker holds nothing for (each once): their rows before the
    /// changes to come are the baseline's.
    pub fn unknown<'a>(&self, keys: impl IntoIterator<Item = &'a Vec<Value>>) -> Vec<Vec<Value>> {
        let mut asked = std::collections::HashSet::new();
        keys.into_iter()
            .filter(|k| {
                let s = key_string(k);
                !self.seen.contains_key(&s) && asked.insert(s)
            })
            .cloned()
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forgets every key: a new baseline holds their rows.
    pub fn clear(&mut self) {
        self.seen.clear();
    }

    /// One decoded chunk of the changelog: `input` holds the rows of the non-tombstone
    /// `upserts`, in order. Returns the result's changes as input rows and their kinds.
    pub fn apply(
        &mut self,
        input: Option<&RecordBatch>,
        upserts: &[Upsert],
        filter: Option<&FilterOperator>,
    ) -> Result<Option<(RecordBatch, Vec<&'static str>)>> {
        let pass = match input {
            Some(b) => passes(filter, b)?,
            None => Vec::new(),
        };
        let mut rows = Vec::new();
        let mut kinds = Vec::new();
        let mut next = 0;
        for (key, value, _) in upserts {
            let key = key_string(key);
            match (value, input) {
                (Some(_), Some(batch)) if next < batch.num_rows() => {
                    let new = row(batch, next)?;
                    let new_pass = pass[next];
                    next += 1;
                    let old = self.seen.insert(key, (Some(new.clone()), new_pass));
                    match (old, new_pass) {
                        (Some((Some(_), true)), true) => {
                            rows.push(new);
                            kinds.push("update");
                        }
                        (Some((Some(old), true)), false) => {
                            rows.push(old);
                            kinds.push("delete");
                        }
                        (_, true) => {
                            rows.push(new);
                            kinds.push("insert");
                        }
                        (_, false) => {}
                    }
                }
                (Some(_), _) => {}
                (None, _) => {
                    // Kept as deleted: the baseline's row for the key is out of date.
                    if let Some((Some(old), true)) = self.seen.insert(key, (None, false)) {
                        rows.push(old);
                        kinds.push("delete");
                    }
                }
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let batch = concat_batches(&rows[0].schema(), &rows)?;
        Ok(Some((batch, kinds)))
    }
}

impl Default for ChangeTracker {
    fn default() -> Self {
        Self::new()
    }
}

/// Appends the `op` column to a projected batch.
pub fn with_op(batch: &RecordBatch, kinds: &[&'static str]) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(OP_COLUMN, DataType::Utf8, false));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(std::sync::Arc::new(StringArray::from(kinds.to_vec())));
    Ok(RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)?)
}
