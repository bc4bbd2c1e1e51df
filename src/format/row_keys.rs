//! Typed state keys in Arrow's row format (`arrow::row`): each key column is encoded by its
//! own Arrow type, so keys compare as SQL compares the values (DECIMAL by value at any
//! scale, timestamps as instants), a DOUBLE `5` is one key whether its JSON said `5` or
//! `5.0`, and keys decode back into typed arrays. A key of several columns is the
//! concatenation of each column's encoding, which is exactly what `RowConverter` writes for
//! those columns together: so a prefix of key columns is a byte prefix of the key, and a
//! caller may encode columns one at a time (session windows, pull-query literals).

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float32Array, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::arrow::row::{RowConverter, Rows, SortField};

use crate::error::{EddyError, Result};

/// Encodes and decodes the keys of one set of key columns.
pub struct RowKeys {
    types: Vec<DataType>,
    /// All columns together (batches of keys, decoding).
    all: RowConverter,
    /// Each column alone (keys built column by column).
    each: Vec<RowConverter>,
}

/// The keys of one batch: Arrow rows, or (no key columns) one empty key per row.
pub enum KeyRows {
    Rows(Rows),
    Empty(usize),
}

impl KeyRows {
    pub fn len(&self) -> usize {
        match self {
            KeyRows::Rows(r) => r.num_rows(),
            KeyRows::Empty(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`'s key bytes.
    pub fn key(&self, i: usize) -> &[u8] {
        match self {
            KeyRows::Rows(r) => r.row(i).data(),
            KeyRows::Empty(_) => &[],
        }
    }
}

impl RowKeys {
    pub fn new(types: &[DataType]) -> Result<RowKeys> {
        let field = |t: &DataType| SortField::new(t.clone());
        let converter = |fields: Vec<SortField>| {
            RowConverter::new(fields).map_err(|e| EddyError::NotImplemented(format!("a key of these types: {e}")))
        };
        Ok(RowKeys {
            types: types.to_vec(),
            all: converter(types.iter().map(field).collect())?,
            each: types.iter().map(|t| converter(vec![field(t)])).collect::<Result<_>>()?,
        })
    }

    pub fn types(&self) -> &[DataType] {
        &self.types
    }

    /// The keys of `n` rows of `columns` (one array per key column, of its key type: others
    /// are cast).
    pub fn encode(&self, columns: &[ArrayRef], n: usize) -> Result<KeyRows> {
        if self.types.is_empty() {
            return Ok(KeyRows::Empty(n));
        }
        let columns: Vec<ArrayRef> =
            columns.iter().zip(&self.types).map(|(c, t)| normalize(c, t)).collect::<Result<_>>()?;
        Ok(KeyRows::Rows(self.all.convert_columns(&columns)?))
    }

    /// Column `field`'s encodings alone, one per row of `column`.
    pub fn encode_field(&self, field: usize, column: &ArrayRef) -> Result<Rows> {
        let column = normalize(column, &self.types[field])?;
        Ok(self.each[field].convert_columns(&[column])?)
    }

    /// One BIGINT value of column `field` (a session window's bound) in its encoding.
    pub fn encode_i64(&self, field: usize, v: i64) -> Result<Vec<u8>> {
        if self.types[field] == DataType::Int64 {
            // Row format of a valid Int64: 1, then the value big-endian with its sign bit flipped.
            let mut out = Vec::with_capacity(9);
            out.push(1);
            out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
            return Ok(out);
        }
        let column: ArrayRef = std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(vec![v]));
        Ok(self.encode_field(field, &column)?.row(0).data().to_vec())
    }

    /// The key columns of each key, as arrays of the key types.
    pub fn decode<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        if self.types.is_empty() {
            return Ok(Vec::new());
        }
        let parser = self.all.parser();
        let keys: Vec<&[u8]> = keys.into_iter().collect();
        Ok(self.all.convert_rows(keys.iter().map(|k| parser.parse(k)))?)
    }
}

/// A key column as its key type. Floats are normalized as SQL compares them: `-0.0` is
/// `0.0`, and every NaN is one NaN (row format orders floats by their bits).
fn normalize(column: &ArrayRef, ty: &DataType) -> Result<ArrayRef> {
    let column = if column.data_type() == ty { column.clone() } else { datafusion::arrow::compute::cast(column, ty)? };
    Ok(match ty {
        DataType::Float64 => {
            let a: Float64Array =
                column.as_primitive::<Float64Type>().unary(|x| if x.is_nan() { f64::NAN } else { x + 0.0 });
            std::sync::Arc::new(a)
        }
        DataType::Float32 => {
            let a: Float32Array =
                column.as_primitive::<Float32Type>().unary(|x| if x.is_nan() { f32::NAN } else { x + 0.0 });
            std::sync::Arc::new(a)
        }
        _ => column,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Decimal128Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn keys_are_the_concatenation_of_their_columns_and_decode_back() {
        let types = [DataType::Int64, DataType::Utf8, DataType::Decimal128(10, 2)];
        let keys = RowKeys::new(&types).unwrap();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(-5), None, Some(7)])),
            Arc::new(StringArray::from(vec![Some("a"), Some(""), None])),
            Arc::new(Decimal128Array::from(vec![Some(1000), Some(-1), None]).with_precision_and_scale(10, 2).unwrap()),
        ];
        let rows = keys.encode(&cols, 3).unwrap();
        for i in 0..3 {
            let mut concat = Vec::new();
            for (f, c) in cols.iter().enumerate() {
                concat.extend_from_slice(keys.encode_field(f, c).unwrap().row(i).data());
            }
            assert_eq!(concat, rows.key(i));
        }
        for v in [i64::MIN, -1, 0, 1, i64::MAX] {
            let column: ArrayRef = Arc::new(Int64Array::from(vec![v]));
            assert_eq!(keys.encode_i64(0, v).unwrap(), keys.encode_field(0, &column).unwrap().row(0).data());
        }
        let back = keys.decode((0..3).map(|i| rows.key(i))).unwrap();
        for (a, b) in back.iter().zip(&cols) {
            assert_eq!(a.as_ref(), b.as_ref());
        }
    }

    #[test]
    fn keys_order_by_value_and_fold_float_spellings() {
        let keys = RowKeys::new(&[DataType::Decimal128(10, 2)]).unwrap();
        let d: ArrayRef =
            Arc::new(Decimal128Array::from(vec![999, 1000, -2000]).with_precision_and_scale(10, 2).unwrap());
        let rows = keys.encode(&[d], 3).unwrap();
        assert!(rows.key(0) < rows.key(1) && rows.key(2) < rows.key(0), "9.99 < 10.00 and -20.00 < 9.99");
        let keys = RowKeys::new(&[DataType::Float64]).unwrap();
        let f: ArrayRef = Arc::new(Float64Array::from(vec![5.0, -0.0, 0.0, f64::NAN, -f64::NAN]));
        let rows = keys.encode(&[f], 5).unwrap();
        assert_eq!(rows.key(1), rows.key(2));
        assert_eq!(rows.key(3), rows.key(4));
        // An integer column cast to DOUBLE keys as the DOUBLE does.
        let i: ArrayRef = Arc::new(Int64Array::from(vec![5]));
        assert_eq!(keys.encode(&[i], 1).unwrap().key(0), rows.key(0));
        // No key columns: one empty key per row.
        let none = RowKeys::new(&[]).unwrap();
        let rows = none.encode(&[], 2).unwrap();
        assert_eq!((rows.len(), rows.key(1)), (2, &[][..]));
    }
}
