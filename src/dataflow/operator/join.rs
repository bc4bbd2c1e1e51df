//! Stream–table join: each stream row looks up the table's current row by primary key
//! (one batched lookup per input batch). INNER drops rows without a match; LEFT keeps them
//! with NULL table columns. The table rows come from a lookup the caller provides: the
//! query's own copy of the table (persistent queries, so a replay sees the same table) or
//! the table's materialization (push queries).

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{can_cast_types, cast, filter_record_batch, not, nullif};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use serde_json::Value;

use super::filter_project::FilterOperator;
use crate::error::{EddyError, Result};
use crate::format::row_keys::RowKeys;
use crate::format::{cell_at, cell_refs_to_array, memcomparable, Column};

/// Reads the current rows of a batch of table keys, `None` when absent: state values as
/// stored (`TableRowCodec::stored` reads every format).
pub type TableLookup<'a> = &'a dyn Fn(&[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>>;

/// First byte of a joined table's row in a query's own copy of the table (state format 2):
/// Arrow row-format bytes over the table's columns follow. Format 1 was `{"r": [cells]}`.
pub const TABLE_ROW_FORMAT: u8 = 0xB2;

/// A joined table's rows in Arrow's row format: typed, and decoded into the joined batch's
/// columns with one call per batch.
pub struct TableRowCodec {
    converter: RowConverter,
    types: Vec<DataType>,
    /// A row of NULLs (a stream row without a match).
    null_row: Vec<u8>,
}

impl TableRowCodec {
    pub fn new(columns: &[Column]) -> Result<TableRowCodec> {
        let types: Vec<DataType> = columns.iter().map(|c| c.ty.arrow()).collect();
        let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())
            .map_err(|e| EddyError::NotImplemented(format!("a joined table with these column types: {e}")))?;
        let nulls: Vec<ArrayRef> = types.iter().map(|t| new_null_array(t, 1)).collect();
        let null_row = converter.convert_columns(&nulls)?.row(0).data().to_vec();
        Ok(TableRowCodec { converter, types, null_row })
    }

    /// Rows of cells as stored values (`TABLE_ROW_FORMAT`, then the row's bytes).
    pub fn encode(&self, rows: &[Vec<&Value>]) -> Result<Vec<Vec<u8>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let columns = self
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let cells: Vec<&Value> = rows.iter().map(|r| r.get(i).copied().unwrap_or(&Value::Null)).collect();
                Ok(cell_refs_to_array(t, &cells)?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let encoded = self.converter.convert_columns(&columns)?;
        Ok(encoded
            .iter()
            .map(|r| {
                let mut v = Vec::with_capacity(r.data().len() + 1);
                v.push(TABLE_ROW_FORMAT);
                v.extend_from_slice(r.data());
                v
            })
            .collect())
    }

    /// A stored value's row bytes: a row of this format, or any row a table's state holds
    /// as cells (format 1 copies; a materialization read by a push query), encoded now.
    fn stored<'a>(&self, bytes: &'a [u8]) -> Result<Option<Cow<'a, [u8]>>> {
        if bytes.first() == Some(&TABLE_ROW_FORMAT) {
            return Ok(Some(Cow::Borrowed(&bytes[1..])));
        }
        let Some(row) = crate::dataflow::stored_row(bytes)? else { return Ok(None) };
        let mut encoded = self.encode(&[row.iter().collect()])?;
        Ok(encoded.pop().map(|mut v| {
            v.remove(0);
            Cow::Owned(v)
        }))
    }

    fn decode(&self, rows: &[&[u8]]) -> Result<Vec<ArrayRef>> {
        if rows.is_empty() {
            return Ok(self.types.iter().map(|t| new_null_array(t, 0)).collect());
        }
        let parser = self.converter.parser();
        Ok(self.converter.convert_rows(rows.iter().map(|r| parser.parse(r)))?)
    }
}

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
    /// The table's rows' encoding.
    pub rows: TableRowCodec,
    /// An INNER join's WHERE conjuncts that read only the table's columns (over a batch of
    /// them): a table row they reject joins nothing, so the query's copy of the table need
    /// not hold it. The WHERE after the join still checks them.
    pub copy_filter: Option<FilterOperator>,
}

impl JoinOperator {
    /// Of the table's rows `rows` (cells in the table's column order), those its copy keeps.
    /// Any error keeps every row (the WHERE after the join reports it per row).
    pub fn in_copy(&self, rows: &[&Vec<Value>]) -> Vec<bool> {
        let all = || vec![true; rows.len()];
        let Some(filter) = &self.copy_filter else { return all() };
        let columns = self.table_columns.iter().enumerate().map(|(i, c)| {
            let cells: Vec<&Value> = rows.iter().map(|r| r.get(i).unwrap_or(&Value::Null)).collect();
            cell_refs_to_array(&c.ty.arrow(), &cells)
        });
        let Ok(columns) = columns.collect::<std::result::Result<Vec<ArrayRef>, _>>() else { return all() };
        let fields: Vec<Field> = self.table_columns.iter().map(|c| Field::new(&c.name, c.ty.arrow(), true)).collect();
        let Ok(batch) = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns) else { return all() };
        match filter.mask(&batch) {
            Ok(mask) => (0..rows.len()).map(|i| mask.is_valid(i) && mask.value(i)).collect(),
            Err(_) => all(),
        }
    }

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
        // Rows of this format are read in place; only other formats are encoded.
        let mut rows: Vec<Option<Cow<'_, [u8]>>> = Vec::with_capacity(n);
        for (i, ok) in has_key.iter().enumerate() {
            rows.push(match found.get(i) {
                Some(Some(stored)) if *ok => self.rows.stored(stored)?,
                _ => None,
            });
        }
        // INNER: only the stream rows with a match, and only their table rows decoded.
        let (stream, picked): (Cow<'_, RecordBatch>, Vec<&[u8]>) = if self.left_outer {
            (Cow::Borrowed(stream), rows.iter().map(|r| r.as_deref().unwrap_or(&self.rows.null_row)).collect())
        } else if rows.iter().all(Option::is_some) {
            (Cow::Borrowed(stream), rows.iter().flatten().map(|r| r.as_ref()).collect())
        } else {
            let keep = BooleanArray::from(rows.iter().map(Option::is_some).collect::<Vec<_>>());
            (Cow::Owned(filter_record_batch(stream, &keep)?), rows.iter().flatten().map(|r| r.as_ref()).collect())
        };
        let table_arrays = self.rows.decode(&picked)?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        if self.stream_first {
            columns.extend(stream.columns().iter().cloned());
            columns.extend(table_arrays);
        } else {
            columns.extend(table_arrays);
            columns.extend(stream.columns().iter().cloned());
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SqlType;

    #[test]
    fn table_rows_round_trip_and_read_format_1_copies() {
        let col = |name: &str, ty: SqlType| Column { name: name.into(), ty, key: false };
        let rows = TableRowCodec::new(&[col("id", SqlType::BigInt), col("name", SqlType::String)]).unwrap();
        let (a, b, null) = (Value::from(7), Value::from("seven"), Value::Null);
        let stored = rows.encode(&[vec![&a, &b], vec![&a, &null]]).unwrap();
        assert!(stored.iter().all(|v| v[0] == TABLE_ROW_FORMAT));
        // A copy written before rows were typed reads as the same row.
        let legacy = rows.stored(br#"{"r":[7,"seven"]}"#).unwrap().unwrap().into_owned();
        assert_eq!(legacy, rows.stored(&stored[0]).unwrap().unwrap().into_owned());
        let picked = [&stored[0][1..], &stored[1][1..], &rows.null_row[..]];
        let columns = rows.decode(&picked).unwrap();
        let cells: Vec<Vec<Value>> = (0..3).map(|i| columns.iter().map(|c| cell_at(c.as_ref(), i)).collect()).collect();
        assert_eq!(cells, vec![vec![a.clone(), b], vec![a, Value::Null], vec![Value::Null, Value::Null]]);
    }
}
