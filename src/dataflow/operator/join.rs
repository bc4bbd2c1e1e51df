//! Stream–table join: each stream row looks up the table's current row by primary key
//! (one batched lookup per input batch). INNER drops rows without a match; LEFT keeps them
//! with NULL table columns. The table rows come from a lookup the caller provides: the
//! query's own copy of the table (persistent queries, so a replay sees the same table) or
//! the table's materialization (push queries).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{can_cast_types, cast, filter_record_batch, not, nullif};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use serde_json::Value;

use crate::error::Result;
use crate::format::row_keys::RowKeys;
use crate::format::{cell_at, cell_refs_to_array, memcomparable, Column};

/// A joined table's row as a persistent query keeps it in its state: `{"r": [cells]}`.
#[derive(serde::Serialize)]
pub struct StoredTableRow<'a> {
    pub r: Vec<&'a Value>,
}

/// Reads the current rows of a batch of table keys (memcomparable), `None` when absent.
pub type TableLookup<'a> = &'a dyn Fn(&[Vec<u8>]) -> Result<Vec<Option<Vec<Value>>>>;

pub struct JoinOperator {
    pub stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub table_columns: Vec<Column>,
    pub left_outer: bool,
    pub stream_first: bool,
    /// The joined rows' schema (the plan's input schema).
    pub schema: SchemaRef,
    /// Set when the table's rows are keyed in Arrow's row format (a push query reading an
    /// aggregation's table): the key's encoding, and for each of its columns the place of
    /// that column among the table's key columns. Otherwise keys are `memcomparable`.
    pub row_keys: Option<(RowKeys, Vec<usize>)>,
}

impl JoinOperator {
    pub fn process(&self, stream: &RecordBatch, lookup: TableLookup<'_>) -> Result<RecordBatch> {
        let n = stream.num_rows();
        let keys: Vec<ArrayRef> =
            self.stream_keys.iter().map(|e| e.evaluate(stream)?.into_array(n)).collect::<Result<_, _>>()?;
        let keys = self.in_key_types(keys)?;
        let mut lookup_keys = Vec::with_capacity(n);
        // A NULL key matches nothing, as in SQL.
        let has_key: Vec<bool> = (0..n).map(|row| keys.iter().all(|k| k.is_valid(row))).collect();
        match &self.row_keys {
            Some((row_keys, order)) => {
                let fields = order
                    .iter()
                    .enumerate()
                    .map(|(f, &k)| row_keys.encode_field(f, &keys[k]))
                    .collect::<Result<Vec<_>>>()?;
                for row in 0..n {
                    lookup_keys.push(fields.iter().flat_map(|f| f.row(row).data().iter().copied()).collect());
                }
            }
            None => {
                for row in 0..n {
                    let values: Vec<Value> = keys.iter().map(|k| cell_at(k.as_ref(), row)).collect();
                    lookup_keys.push(memcomparable(&values));
                }
            }
        }
        let found = lookup(&lookup_keys)?;
        let matched: Vec<Option<&Vec<Value>>> =
            found.iter().zip(&has_key).map(|(row, ok)| if *ok { row.as_ref() } else { None }).collect();
        let mut table_arrays = Vec::with_capacity(self.table_columns.len());
        for (i, c) in self.table_columns.iter().enumerate() {
            const NULL: &Value = &Value::Null;
            let cells: Vec<&Value> = matched.iter().map(|m| m.and_then(|r| r.get(i)).unwrap_or(NULL)).collect();
            table_arrays.push(cell_refs_to_array(&c.ty.arrow(), &cells)?);
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        if self.stream_first {
            columns.extend(stream.columns().iter().cloned());
            columns.extend(table_arrays);
        } else {
            columns.extend(table_arrays);
            columns.extend(stream.columns().iter().cloned());
        }
        let joined = RecordBatch::try_new(self.schema.clone(), columns)?;
        if self.left_outer {
            return Ok(joined);
        }
        let keep = BooleanArray::from(matched.iter().map(|m| m.is_some()).collect::<Vec<_>>());
        Ok(filter_record_batch(&joined, &keep)?)
    }

    /// The stream's keys in the types of the table's key columns, so that equal values are
    /// equal keys: a DOUBLE 3.0 finds the INT key 3. A value the key type cannot hold as it
    /// is (3.5, truncated to 3 by a cast) becomes NULL and matches nothing.
    fn in_key_types(&self, keys: Vec<ArrayRef>) -> Result<Vec<ArrayRef>> {
        let key_types = self.table_columns.iter().filter(|c| c.key).map(|c| c.ty.arrow());
        keys.into_iter()
            .zip(key_types)
            .map(|(k, ty)| {
                if k.data_type() == &ty || !can_cast_types(k.data_type(), &ty) {
                    return Ok(k);
                }
                let cast_k = cast(&k, &ty)?;
                let unchanged = eq(&cast(&cast_k, k.data_type())?, &k)?;
                Ok(nullif(&cast_k, &not(&unchanged)?)?)
            })
            .collect()
    }
}
