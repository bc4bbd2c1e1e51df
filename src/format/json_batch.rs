//! The JSON value format's batch encoder: a projected Arrow batch to one JSON object per row,
//! with no per-cell `Value` (the stateless output path). Kept apart from `json.rs`, which the
//! fuzz targets build without Arrow.

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, LargeStringArray, RecordBatch,
    StringArray, StringViewArray, Time32MillisecondArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int32Type, Int64Type, Time32MillisecondType, TimeUnit, TimestampMillisecondType,
};
use serde_json::Value;

use super::types::SqlType;
use super::Column;

/// Writes the value columns of the rows of a batch (columns in `columns` order) as JSON
/// objects straight from the Arrow arrays, exactly as `encode_value` writes the same cells:
/// the stateless output path, with no per-cell `Value`.
pub struct JsonRowEncoder<'a> {
    /// Each value column's `"name":` and its array.
    readers: Vec<(String, ColumnReader<'a>)>,
}

impl<'a> JsonRowEncoder<'a> {
    /// `None` when a column's type needs the cell path (decimals, bytes, nested types).
    pub fn new(columns: &[Column], batch: &'a RecordBatch) -> Option<JsonRowEncoder<'a>> {
        if batch.num_columns() != columns.len() {
            return None;
        }
        let mut readers = Vec::new();
        for (c, array) in columns.iter().zip(batch.columns()) {
            if c.key {
                continue;
            }
            if matches!(c.ty, SqlType::Decimal { .. } | SqlType::Array(_) | SqlType::Map(_) | SqlType::Struct(_)) {
                return None;
            }
            let name = format!("{}:", Value::String(c.name.clone()));
            readers.push((name, ColumnReader::of(array.as_ref())?));
        }
        Some(JsonRowEncoder { readers })
    }

    /// Appends row `row` to `buf`.
    pub fn write_row(&self, row: usize, buf: &mut Vec<u8>) {
        buf.push(b'{');
        for (i, (name, reader)) in self.readers.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(name.as_bytes());
            reader.write(row, buf);
        }
        buf.push(b'}');
    }
}

/// One column of a batch, typed for the encoder.
enum ColumnReader<'a> {
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Int64(&'a Int64Array),
    Int32(&'a Int32Array),
    TimestampMs(&'a TimestampMillisecondArray),
    Date32(&'a Date32Array),
    Time32Ms(&'a Time32MillisecondArray),
    Float64(&'a Float64Array),
    Boolean(&'a BooleanArray),
}

impl<'a> ColumnReader<'a> {
    fn of(array: &'a dyn Array) -> Option<ColumnReader<'a>> {
        Some(match array.data_type() {
            DataType::Utf8 => ColumnReader::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => ColumnReader::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => ColumnReader::Utf8View(array.as_string_view()),
            DataType::Int64 => ColumnReader::Int64(array.as_primitive::<Int64Type>()),
            DataType::Int32 => ColumnReader::Int32(array.as_primitive::<Int32Type>()),
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                ColumnReader::TimestampMs(array.as_primitive::<TimestampMillisecondType>())
            }
            DataType::Date32 => ColumnReader::Date32(array.as_primitive::<Date32Type>()),
            DataType::Time32(TimeUnit::Millisecond) => {
                ColumnReader::Time32Ms(array.as_primitive::<Time32MillisecondType>())
            }
            DataType::Float64 => ColumnReader::Float64(array.as_primitive::<Float64Type>()),
            DataType::Boolean => ColumnReader::Boolean(array.as_boolean()),
            _ => return None,
        })
    }

    /// Writes row `i` as JSON. serde_json writes strings and floats exactly as `Value`'s
    /// Display does (non-finite floats as null).
    fn write(&self, i: usize, buf: &mut Vec<u8>) {
        // Serializing strings and numbers into a Vec cannot fail.
        let _infallible = self.try_write(i, buf);
    }

    fn try_write(&self, i: usize, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        let null = match self {
            ColumnReader::Utf8(a) => a.is_null(i),
            ColumnReader::LargeUtf8(a) => a.is_null(i),
            ColumnReader::Utf8View(a) => a.is_null(i),
            ColumnReader::Int64(a) => a.is_null(i),
            ColumnReader::Int32(a) => a.is_null(i),
            ColumnReader::TimestampMs(a) => a.is_null(i),
            ColumnReader::Date32(a) => a.is_null(i),
            ColumnReader::Time32Ms(a) => a.is_null(i),
            ColumnReader::Float64(a) => a.is_null(i),
            ColumnReader::Boolean(a) => a.is_null(i),
        };
        if null {
            buf.extend_from_slice(b"null");
            return Ok(());
        }
        match self {
            ColumnReader::Utf8(a) => serde_json::to_writer(buf, a.value(i)),
            ColumnReader::LargeUtf8(a) => serde_json::to_writer(buf, a.value(i)),
            ColumnReader::Utf8View(a) => serde_json::to_writer(buf, a.value(i)),
            ColumnReader::Int64(a) => serde_json::to_writer(buf, &a.value(i)),
            ColumnReader::Int32(a) => serde_json::to_writer(buf, &a.value(i)),
            ColumnReader::TimestampMs(a) => serde_json::to_writer(buf, &a.value(i)),
            ColumnReader::Date32(a) => serde_json::to_writer(buf, &a.value(i)),
            ColumnReader::Time32Ms(a) => serde_json::to_writer(buf, &a.value(i)),
            ColumnReader::Float64(a) => serde_json::to_writer(buf, &a.value(i)),
            ColumnReader::Boolean(a) => serde_json::to_writer(buf, &a.value(i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::json::encode_value;

    #[test]
    fn the_batch_encoder_writes_what_the_cell_encoder_writes() {
        use crate::format::arrow::{cell_at, rows_to_batch};
        let col = |name: &str, ty: SqlType| Column { name: name.into(), ty, key: false };
        let cols = vec![
            col("s", SqlType::String),
            col("Quoted \"name\"", SqlType::String),
            col("i", SqlType::Int),
            col("b", SqlType::BigInt),
            col("d", SqlType::Double),
            col("t", SqlType::Boolean),
            col("ts", SqlType::Timestamp),
        ];
        let rows = vec![
            vec![
                Value::from("plain"),
                Value::from("tab\t \"quote\" é \u{1}"),
                Value::from(-7),
                Value::from(1i64 << 53),
                Value::from(272.40000000000003),
                Value::from(true),
                Value::from(1767225600000i64),
            ],
            vec![
                Value::Null,
                Value::from(""),
                Value::Null,
                Value::from(0),
                Value::from(-0.0),
                Value::Null,
                Value::Null,
            ],
            vec![
                Value::from("x"),
                Value::Null,
                Value::from(i32::MAX),
                Value::from(i64::MIN),
                Value::from(1e300),
                Value::from(false),
                Value::from(0),
            ],
        ];
        let batch = rows_to_batch(&cols, &rows).unwrap();
        let fast = JsonRowEncoder::new(&cols, &batch).expect("simple types take the batch path");
        let mut bytes = Vec::new();
        for row in 0..batch.num_rows() {
            bytes.clear();
            fast.write_row(row, &mut bytes);
            let cells: Vec<Value> = batch.columns().iter().map(|c| cell_at(c.as_ref(), row)).collect();
            assert_eq!(String::from_utf8_lossy(&bytes), String::from_utf8_lossy(&encode_value(&cols, &cells)));
        }
        let with_decimal = vec![col("d", SqlType::Decimal { precision: 10, scale: 2 })];
        let batch = rows_to_batch(&with_decimal, &[vec![Value::from("1.50")]]).unwrap();
        assert!(JsonRowEncoder::new(&with_decimal, &batch).is_none(), "decimals take the cell path");
    }
}
