//! Record formats: Kafka record key/value bytes ⇄ Arrow columns.
//!
//! Owns the declared column types (`SqlType`), the JSON value format, and the key formats
//! (`KAFKA`: ksqlDB's primitive encodings; `JSON`). Called by the dataflow sources (decode),
//! sinks and `INSERT` (encode). A record that does not match its schema is never a panic and
//! never a silent null: decode returns a `BadRecord` for the processing log.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Float64Array, Float64Builder, Int32Array, Int32Builder, Int64Array,
    Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Column types a stream or table may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    String,
    Int,
    BigInt,
    Double,
    Boolean,
    Timestamp,
}

impl SqlType {
    /// Parses a declared type name (ksqlDB and Postgres spellings).
    pub fn parse(name: &str) -> Option<SqlType> {
        Some(match name.to_ascii_uppercase().as_str() {
            "STRING" | "VARCHAR" | "TEXT" | "CHARACTER VARYING" => SqlType::String,
            "INT" | "INTEGER" | "INT4" => SqlType::Int,
            "BIGINT" | "INT8" | "LONG" => SqlType::BigInt,
            "DOUBLE" | "DOUBLE PRECISION" | "FLOAT" | "FLOAT8" | "REAL" => SqlType::Double,
            "BOOLEAN" | "BOOL" => SqlType::Boolean,
            "TIMESTAMP" => SqlType::Timestamp,
            _ => return None,
        })
    }

    pub fn from_arrow(dt: &DataType) -> Option<SqlType> {
        Some(match dt {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::String,
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => SqlType::Int,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => SqlType::BigInt,
            DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => SqlType::Double,
            DataType::Boolean => SqlType::Boolean,
            DataType::Timestamp(_, _) => SqlType::Timestamp,
            _ => return None,
        })
    }

    pub fn arrow(self) -> DataType {
        match self {
            SqlType::String => DataType::Utf8,
            SqlType::Int => DataType::Int32,
            SqlType::BigInt => DataType::Int64,
            SqlType::Double => DataType::Float64,
            SqlType::Boolean => DataType::Boolean,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SqlType::String => "STRING",
            SqlType::Int => "INTEGER",
            SqlType::BigInt => "BIGINT",
            SqlType::Double => "DOUBLE",
            SqlType::Boolean => "BOOLEAN",
            SqlType::Timestamp => "TIMESTAMP",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
    /// Stored in the Kafka record key rather than the value.
    pub key: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyFormat {
    /// ksqlDB's KAFKA format: UTF-8 for strings, big-endian for numbers.
    Kafka,
    Json,
    /// No key columns.
    None,
}

impl KeyFormat {
    pub fn parse(name: &str) -> Option<KeyFormat> {
        match name.to_ascii_uppercase().as_str() {
            "KAFKA" => Some(KeyFormat::Kafka),
            "JSON" => Some(KeyFormat::Json),
            "NONE" => Some(KeyFormat::None),
            _ => None,
        }
    }
}

pub fn arrow_schema(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(columns.iter().map(|c| Field::new(&c.name, c.ty.arrow(), true)).collect::<Vec<_>>()))
}

/// Why a record could not be decoded (goes to the processing log).
#[derive(Debug, Clone)]
pub struct BadRecord {
    pub error: String,
}

/// A decoded cell, before it goes into an Arrow builder.
type Cell = Value;

/// Decodes one record's key and value into cells in column order.
pub fn decode_row(
    columns: &[Column],
    key_format: KeyFormat,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Vec<Cell>, BadRecord> {
    let bad = |error: String| BadRecord { error };
    let value = value.ok_or_else(|| bad("record has a null value".into()))?;
    let parsed: Value = serde_json::from_slice(value).map_err(|e| bad(format!("value is not valid JSON: {e}")))?;
    let Value::Object(obj) = parsed else {
        return Err(bad("value is not a JSON object".into()));
    };
    let key_obj = decode_key(columns, key_format, key)?;
    let mut row = Vec::with_capacity(columns.len());
    for c in columns {
        let cell = if c.key { key_obj.iter().find(|(n, _)| n == &c.name).map(|(_, v)| v.clone()) } else { None };
        let cell = match cell {
            Some(v) if !v.is_null() => v,
            _ => lookup(&obj, &c.name).cloned().unwrap_or(Value::Null),
        };
        row.push(check_cell(c, cell).map_err(bad)?);
    }
    Ok(row)
}

/// Decodes only the key columns (a tombstone has no value but still names its key).
pub fn decode_key(
    columns: &[Column],
    key_format: KeyFormat,
    key: Option<&[u8]>,
) -> Result<Vec<(String, Cell)>, BadRecord> {
    let key_cols: Vec<&Column> = columns.iter().filter(|c| c.key).collect();
    let Some(key) = key else { return Ok(Vec::new()) };
    if key_cols.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |error: String| BadRecord { error };
    match key_format {
        KeyFormat::None => Ok(Vec::new()),
        KeyFormat::Kafka => {
            let c = key_cols[0];
            let v = match c.ty {
                SqlType::String => {
                    Value::String(String::from_utf8(key.to_vec()).map_err(|_| bad("key is not UTF-8".into()))?)
                }
                SqlType::Int => {
                    Value::from(i32::from_be_bytes(key.try_into().map_err(|_| bad("INT key is not 4 bytes".into()))?))
                }
                SqlType::BigInt | SqlType::Timestamp => Value::from(i64::from_be_bytes(
                    key.try_into().map_err(|_| bad("BIGINT key is not 8 bytes".into()))?,
                )),
                SqlType::Double => Value::from(f64::from_be_bytes(
                    key.try_into().map_err(|_| bad("DOUBLE key is not 8 bytes".into()))?,
                )),
                SqlType::Boolean => Value::Bool(key.first().is_some_and(|b| *b != 0)),
            };
            Ok(vec![(c.name.clone(), v)])
        }
        KeyFormat::Json => {
            let v: Value = serde_json::from_slice(key).map_err(|e| bad(format!("key is not valid JSON: {e}")))?;
            match v {
                Value::Object(obj) => Ok(key_cols
                    .iter()
                    .map(|c| (c.name.clone(), lookup(&obj, &c.name).cloned().unwrap_or(Value::Null)))
                    .collect()),
                other if key_cols.len() == 1 => Ok(vec![(key_cols[0].name.clone(), other)]),
                _ => Err(bad("JSON key for several key columns must be an object".into())),
            }
        }
    }
}

fn lookup<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// Checks that a JSON value fits the column type; numbers may widen, nothing else converts.
pub fn check_cell(c: &Column, v: Value) -> Result<Value, String> {
    let ok = match (&v, c.ty) {
        (Value::Null, _) => true,
        (Value::String(_), SqlType::String) => true,
        (Value::Number(n), SqlType::Int) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        (Value::Number(n), SqlType::BigInt | SqlType::Timestamp) => n.as_i64().is_some(),
        (Value::Number(_), SqlType::Double) => true,
        (Value::Bool(_), SqlType::Boolean) => true,
        // Numbers and booleans read as strings keep their JSON text.
        (Value::Number(_) | Value::Bool(_), SqlType::String) => {
            return Ok(Value::String(v.to_string()));
        }
        // Like ksqlDB's JSON format, numbers and booleans sent as strings are read as such.
        (Value::String(s), SqlType::Int | SqlType::BigInt | SqlType::Timestamp) => match s.trim().parse::<i64>() {
            Ok(i) if c.ty != SqlType::Int || i32::try_from(i).is_ok() => return Ok(Value::from(i)),
            _ => false,
        },
        (Value::String(s), SqlType::Double) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => return Ok(Value::from(f)),
            _ => false,
        },
        (Value::String(s), SqlType::Boolean) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => return Ok(Value::Bool(true)),
            "false" => return Ok(Value::Bool(false)),
            _ => false,
        },
        _ => false,
    };
    if ok {
        Ok(v)
    } else {
        Err(format!("column {} expects {}, got {}", c.name, c.ty.name(), v))
    }
}

/// Builds an Arrow batch from rows of checked cells.
pub fn rows_to_batch(columns: &[Column], rows: &[Vec<Cell>]) -> Result<RecordBatch, String> {
    let schema = arrow_schema(columns);
    let arrays: Vec<ArrayRef> =
        columns.iter().enumerate().map(|(i, c)| column_array(c.ty, rows.iter().map(|r| &r[i]))).collect();
    RecordBatch::try_new(schema, arrays).map_err(|e| e.to_string())
}

fn column_array<'a>(ty: SqlType, cells: impl Iterator<Item = &'a Cell>) -> ArrayRef {
    match ty {
        SqlType::String => {
            let mut b = StringBuilder::new();
            cells.for_each(|v| match v {
                Value::String(s) => b.append_value(s),
                Value::Null => b.append_null(),
                other => b.append_value(other.to_string()),
            });
            Arc::new(b.finish())
        }
        SqlType::Int => {
            let mut b = Int32Builder::new();
            cells.for_each(|v| b.append_option(v.as_i64().map(|i| i as i32)));
            Arc::new(b.finish())
        }
        SqlType::BigInt => {
            let mut b = Int64Builder::new();
            cells.for_each(|v| b.append_option(v.as_i64()));
            Arc::new(b.finish())
        }
        SqlType::Timestamp => {
            let mut b = TimestampMillisecondBuilder::new();
            cells.for_each(|v| b.append_option(v.as_i64()));
            Arc::new(b.finish())
        }
        SqlType::Double => {
            let mut b = Float64Builder::new();
            cells.for_each(|v| b.append_option(v.as_f64()));
            Arc::new(b.finish())
        }
        SqlType::Boolean => {
            let mut b = BooleanBuilder::new();
            cells.for_each(|v| b.append_option(v.as_bool()));
            Arc::new(b.finish())
        }
    }
}

/// Builds an array of exactly `dt` from JSON cells (via the nearest SQL type, then a cast).
pub fn cells_to_array(dt: &DataType, cells: &[Cell]) -> Result<ArrayRef, datafusion::arrow::error::ArrowError> {
    let ty = SqlType::from_arrow(dt).unwrap_or(SqlType::String);
    let array = column_array(ty, cells.iter());
    if array.data_type() == dt {
        Ok(array)
    } else {
        datafusion::arrow::compute::cast(&array, dt)
    }
}

/// Reads one cell of an Arrow array back as JSON (for encoding output and state).
pub fn cell_at(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return Value::String(a.value(row).to_string());
    }
    if let Some(a) = any.downcast_ref::<Int32Array>() {
        return Value::from(a.value(row));
    }
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return Value::from(a.value(row));
    }
    if let Some(a) = any.downcast_ref::<Float64Array>() {
        return serde_json::Number::from_f64(a.value(row)).map(Value::Number).unwrap_or(Value::Null);
    }
    if let Some(a) = any.downcast_ref::<BooleanArray>() {
        return Value::Bool(a.value(row));
    }
    if let Some(a) = any.downcast_ref::<TimestampMillisecondArray>() {
        return Value::from(a.value(row));
    }
    // Other Arrow types (from expressions): cast to the declared type first.
    match datafusion::arrow::compute::cast(&array.slice(row, 1), &DataType::Utf8) {
        Ok(s) => cell_at(s.as_ref(), 0),
        Err(_) => Value::Null,
    }
}

/// Encodes the key columns of a row; `None` when the relation has no key.
pub fn encode_key(columns: &[Column], key_format: KeyFormat, row: &[Cell]) -> Option<Vec<u8>> {
    let keys: Vec<(&Column, &Cell)> = columns.iter().zip(row).filter(|(c, _)| c.key).collect();
    if keys.is_empty() || key_format == KeyFormat::None {
        return None;
    }
    match key_format {
        KeyFormat::Kafka if keys.len() == 1 => {
            let (c, v) = keys[0];
            match (c.ty, v) {
                (_, Value::Null) => None,
                (SqlType::String, Value::String(s)) => Some(s.as_bytes().to_vec()),
                (SqlType::Int, v) => v.as_i64().map(|i| (i as i32).to_be_bytes().to_vec()),
                (SqlType::BigInt | SqlType::Timestamp, v) => v.as_i64().map(|i| i.to_be_bytes().to_vec()),
                (SqlType::Double, v) => v.as_f64().map(|f| f.to_be_bytes().to_vec()),
                (_, v) => Some(v.to_string().into_bytes()),
            }
        }
        _ => {
            let obj: Map<String, Value> = keys.iter().map(|(c, v)| (c.name.clone(), (*v).clone())).collect();
            Some(Value::Object(obj).to_string().into_bytes())
        }
    }
}

/// Encodes the value columns of a row as a JSON object (key columns live in the key).
pub fn encode_value(columns: &[Column], row: &[Cell]) -> Vec<u8> {
    let obj: Map<String, Value> =
        columns.iter().zip(row).filter(|(c, _)| !c.key).map(|(c, v)| (c.name.clone(), v.clone())).collect();
    Value::Object(obj).to_string().into_bytes()
}

/// Order-preserving ("memcomparable") bytes for a list of values, so RocksDB keys sort
/// the way SQL sorts them and prefix scans work.
pub fn memcomparable(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * values.len());
    for v in values {
        match v {
            Value::Null => out.push(0),
            Value::Bool(b) => out.extend_from_slice(&[1, *b as u8]),
            Value::Number(n) => {
                out.push(2);
                let f = n.as_f64().unwrap_or(0.0);
                let bits = f.to_bits();
                let ordered = if f.is_sign_negative() { !bits } else { bits ^ (1 << 63) };
                out.extend_from_slice(&ordered.to_be_bytes());
                // Integers beyond f64's exact range stay distinct.
                if let Some(i) = n.as_i64() {
                    out.extend_from_slice(&((i as u64) ^ (1 << 63)).to_be_bytes());
                }
            }
            Value::String(s) => {
                out.push(3);
                for &b in s.as_bytes() {
                    if b == 0 {
                        out.extend_from_slice(&[0, 0xff]);
                    } else {
                        out.push(b);
                    }
                }
                out.extend_from_slice(&[0, 0]);
            }
            other => {
                out.push(4);
                out.extend_from_slice(other.to_string().as_bytes());
                out.extend_from_slice(&[0, 0]);
            }
        }
    }
    out
}

/// Decodes every record of one log batch, whatever its compression codec (gzip, snappy,
/// lz4, zstd come through `kafka-protocol`; uncompressed batches through `log::batch`).
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<crate::log::LogRecord>, String> {
    match crate::log::batch::decode_records(bytes) {
        Ok(records) => Ok(records),
        Err(crate::log::LogError::Unsupported(_)) => {
            let mut buf = bytes::Bytes::copy_from_slice(bytes);
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).map_err(|e| e.to_string())?;
            Ok(set
                .records
                .into_iter()
                .filter(|r| !r.control)
                .map(|r| crate::log::LogRecord {
                    offset: r.offset,
                    timestamp_ms: r.timestamp,
                    key: r.key.map(|k| k.to_vec()),
                    value: r.value.map(|v| v.to_vec()),
                    headers: r.headers.into_iter().map(|(k, v)| (k.to_string(), v.map(|v| v.to_vec()))).collect(),
                })
                .collect())
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<Column> {
        vec![
            Column { name: "id".into(), ty: SqlType::String, key: true },
            Column { name: "amount".into(), ty: SqlType::Double, key: false },
            Column { name: "qty".into(), ty: SqlType::Int, key: false },
        ]
    }

    #[test]
    fn decode_matches_fields_case_insensitively_and_rejects_bad_types() {
        let row = decode_row(&cols(), KeyFormat::Kafka, Some(b"k1"), Some(br#"{"AMOUNT": 2, "qty": 3}"#)).unwrap();
        assert_eq!(row, vec![Value::from("k1"), Value::from(2), Value::from(3)]);
        assert!(decode_row(&cols(), KeyFormat::Kafka, None, Some(br#"{"amount": "x"}"#)).is_err());
        assert!(decode_row(&cols(), KeyFormat::Kafka, None, Some(b"not json")).is_err());
        assert!(decode_row(&cols(), KeyFormat::Kafka, None, Some(br#"{"qty": 99999999999}"#)).is_err());
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let row = vec![Value::from("a"), Value::from(1.5), Value::from(7)];
        let k = encode_key(&cols(), KeyFormat::Kafka, &row);
        let v = encode_value(&cols(), &row);
        assert_eq!(decode_row(&cols(), KeyFormat::Kafka, k.as_deref(), Some(&v)).unwrap(), row);
    }

    #[test]
    fn memcomparable_sorts_like_values() {
        let vals = [Value::from(-5), Value::from(-1.5), Value::from(0), Value::from(3), Value::from(10)];
        let enc: Vec<_> = vals.iter().map(|v| memcomparable(std::slice::from_ref(v))).collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
        assert!(memcomparable(&[Value::from("a")]) < memcomparable(&[Value::from("ab")]));
    }
}
