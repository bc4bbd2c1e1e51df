//! Record formats: Kafka record key/value bytes ⇄ rows of canonical cells ⇄ Arrow columns.
//!
//! Owns the columns and formats of a relation and the dispatch to each codec: value formats
//! `JSON` (`json.rs`), `DELIMITED` (`delimited.rs`) and `KAFKA` (`kafka.rs`); key formats
//! `KAFKA`, `JSON` and `DELIMITED`. Types and cells live in `types.rs`, Arrow conversion in
//! `arrow.rs`, rows as state stores them in `stored.rs`. Called by the dataflow sources (decode), sinks and `INSERT` (encode). A record
//! that does not match its schema is never a panic and never a silent null: decode returns a
//! `BadRecord` for the processing log.

use crate::log::decompress;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod arrow;
pub mod avro;
pub mod avro_json;
pub mod json_sr;
pub mod protobuf;

pub mod delimited;
pub mod json;
pub mod json_batch;
pub mod json_columns;
pub mod json_schema_check;
pub mod kafka;
pub mod key;
pub mod row_keys;
pub mod stored;
pub mod types;

pub use self::arrow::{cell_at, cell_refs_to_array, cells_to_array, rows_to_batch};
pub use key::{decode_key, encode_key, try_encode_key, KeyLayout, KeyWindow};
pub use types::{SqlType, StructField};

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
    /// The key columns as one comma-separated line.
    Delimited,
    /// Confluent's Avro framing with a schema from the registry (`RelationDef::key_schema_id`):
    /// a single key column as the datum itself, several as a record.
    Avro,
    /// JSON behind Confluent's framing: the JSON key, framed.
    JsonSr,
    /// Confluent's Protobuf framing: the key columns as the fields of a message (ksqlDB never
    /// unwraps Protobuf keys).
    Protobuf,
    /// A bare message of the schema the key columns make (no registry).
    ProtobufNosr,
}

impl KeyFormat {
    pub fn parse(name: &str) -> Option<KeyFormat> {
        match name.to_ascii_uppercase().as_str() {
            "KAFKA" => Some(KeyFormat::Kafka),
            "JSON" => Some(KeyFormat::Json),
            "NONE" => Some(KeyFormat::None),
            "DELIMITED" => Some(KeyFormat::Delimited),
            "AVRO" => Some(KeyFormat::Avro),
            "JSON_SR" => Some(KeyFormat::JsonSr),
            "PROTOBUF" => Some(KeyFormat::Protobuf),
            "PROTOBUF_NOSR" => Some(KeyFormat::ProtobufNosr),
            _ => None,
        }
    }

    /// ksqlDB's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            KeyFormat::Kafka => "KAFKA",
            KeyFormat::Json => "JSON",
            KeyFormat::None => "NONE",
            KeyFormat::Delimited => "DELIMITED",
            KeyFormat::Avro => "AVRO",
            KeyFormat::JsonSr => "JSON_SR",
            KeyFormat::Protobuf => "PROTOBUF",
            KeyFormat::ProtobufNosr => "PROTOBUF_NOSR",
        }
    }

    /// Whether keys in this format name a schema in the Schema Registry.
    pub fn uses_registry(self) -> bool {
        matches!(self, KeyFormat::Avro | KeyFormat::JsonSr | KeyFormat::Protobuf)
    }
}

/// How record values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    Json,
    /// JSON with `WRAP_SINGLE_VALUE=false`: the one value column's value itself (`42`, not
    /// `{"n":42}`).
    JsonUnwrapped,
    /// Fields in column order, separated by the delimiter.
    Delimited(char),
    /// Exactly one value column, as a Kafka primitive.
    Kafka,
    /// Confluent's Avro framing; rows are written with registered schema `schema_id` (0: the
    /// relation has none, it is only read).
    Avro {
        schema_id: u32,
    },
    /// JSON behind Confluent's framing (`json_sr.rs`); written with registered JSON Schema
    /// `schema_id` (0: none, the relation is only read).
    JsonSr {
        schema_id: u32,
    },
    /// Confluent's Protobuf framing (`protobuf.rs`); written with registered schema
    /// `schema_id` (0: none, the relation is only read).
    Protobuf {
        schema_id: u32,
    },
    /// Protobuf without the registry: a bare message of the schema made from the value
    /// columns (`protobuf::schema_named`), NULLs as `nullable` says.
    ProtobufNosr {
        nullable: protobuf::Nullable,
    },
}

impl ValueFormat {
    /// A format from its name and `VALUE_DELIMITER` (DELIMITED only).
    pub fn parse(name: &str, delimiter: Option<&str>) -> Result<ValueFormat, String> {
        let format = match name.to_ascii_uppercase().as_str() {
            "JSON" => ValueFormat::Json,
            "DELIMITED" => ValueFormat::Delimited(match delimiter {
                Some(d) => delimited::parse_delimiter(d)?,
                None => ',',
            }),
            "KAFKA" => ValueFormat::Kafka,
            "AVRO" => ValueFormat::Avro { schema_id: 0 },
            "JSON_SR" => ValueFormat::JsonSr { schema_id: 0 },
            "PROTOBUF" => ValueFormat::Protobuf { schema_id: 0 },
            "PROTOBUF_NOSR" => ValueFormat::ProtobufNosr { nullable: protobuf::Nullable::None },
            other => {
                return Err(format!(
                    "VALUE_FORMAT='{other}' (supported: JSON, DELIMITED, KAFKA, AVRO, JSON_SR, PROTOBUF, PROTOBUF_NOSR)"
                ))
            }
        };
        if delimiter.is_some() && !matches!(format, ValueFormat::Delimited(_)) {
            return Err("VALUE_DELIMITER applies to VALUE_FORMAT='DELIMITED' only".into());
        }
        Ok(format)
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueFormat::Json | ValueFormat::JsonUnwrapped => "JSON",
            ValueFormat::Delimited(_) => "DELIMITED",
            ValueFormat::Kafka => "KAFKA",
            ValueFormat::Avro { .. } => "AVRO",
            ValueFormat::JsonSr { .. } => "JSON_SR",
            ValueFormat::Protobuf { .. } => "PROTOBUF",
            ValueFormat::ProtobufNosr { .. } => "PROTOBUF_NOSR",
        }
    }

    /// Whether `columns` fit this format (checked when a stream or table is created).
    pub fn check_columns(self, columns: &[Column]) -> Result<(), String> {
        let values: Vec<&Column> = columns.iter().filter(|c| !c.key).collect();
        match self {
            ValueFormat::Json
            | ValueFormat::Avro { .. }
            | ValueFormat::JsonSr { .. }
            | ValueFormat::Protobuf { .. } => Ok(()),
            ValueFormat::ProtobufNosr { nullable } => protobuf::schema_named(columns, None, nullable)
                .map(|_| ())
                .map_err(|e| format!("VALUE_FORMAT='PROTOBUF_NOSR': {e}")),
            ValueFormat::JsonUnwrapped => match values.as_slice() {
                [_] => Ok(()),
                _ => Err(format!(
                    "WRAP_SINGLE_VALUE=false is only valid for a single value column, got {}",
                    values.len()
                )),
            },
            ValueFormat::Delimited(_) => match values.iter().find(|c| c.ty.is_nested()) {
                Some(c) => Err(format!(
                    "VALUE_FORMAT='DELIMITED' does not support type {} (column {}); use JSON",
                    c.ty.name(),
                    c.name
                )),
                None => Ok(()),
            },
            ValueFormat::Kafka => match values.as_slice() {
                [c] if kafka::supports_value(&c.ty) => Ok(()),
                [c] => Err(format!(
                    "VALUE_FORMAT='KAFKA' does not support type {} (column {}): STRING, INT, BIGINT, DOUBLE or BYTES",
                    c.ty.name(),
                    c.name
                )),
                _ => Err(format!(
                    "VALUE_FORMAT='KAFKA' holds exactly one value column, got {}; use JSON or DELIMITED",
                    values.len()
                )),
            },
        }
    }
}

impl KeyFormat {
    /// Whether the key columns fit this format.
    pub fn check_columns(self, columns: &[Column]) -> Result<(), String> {
        let bad = match self {
            KeyFormat::Kafka => columns.iter().find(|c| c.key && !kafka::supports_key(&c.ty)),
            KeyFormat::Delimited => columns.iter().find(|c| c.key && c.ty.is_nested()),
            KeyFormat::ProtobufNosr => {
                let keys: Vec<Column> =
                    columns.iter().filter(|c| c.key).map(|c| Column { key: false, ..c.clone() }).collect();
                if let Err(e) = protobuf::schema_for(&keys) {
                    return Err(format!("KEY_FORMAT='PROTOBUF_NOSR': {e}"));
                }
                None
            }
            KeyFormat::Json | KeyFormat::None | KeyFormat::Avro | KeyFormat::JsonSr | KeyFormat::Protobuf => None,
        };
        match bad {
            Some(c) => Err(format!(
                "KEY_FORMAT='{}' does not support type {} (key column {}); use KEY_FORMAT='JSON'",
                self.name(),
                c.ty.name(),
                c.name
            )),
            None => Ok(()),
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

/// Decodes one record's key and value into canonical cells in column order.
pub fn decode_row(
    columns: &[Column],
    key_layout: KeyLayout,
    value_format: ValueFormat,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Vec<Cell>, BadRecord> {
    let bad = |error: String| BadRecord { error };
    let value = value.ok_or_else(|| bad("record has a null value".into()))?;
    let values = decode_value(columns, value_format, value).map_err(bad)?;
    let key_cells = decode_key(columns, key_layout, key)?;
    // Room for the pseudo-columns a source appends (ROWTIME, ROWPARTITION, ROWOFFSET).
    let mut row = Vec::with_capacity(columns.len() + 3);
    for (c, v) in columns.iter().zip(values) {
        let cell = if c.key { key_cells.iter().find(|(n, _)| n == &c.name).map(|(_, v)| v.clone()) } else { None };
        let cell = match cell {
            Some(k) if !k.is_null() => k,
            _ => v,
        };
        row.push(check_cell(c, cell).map_err(bad)?);
    }
    Ok(row)
}

/// The value's cell for each column (NULL for key columns the format does not carry).
fn decode_value(columns: &[Column], format: ValueFormat, value: &[u8]) -> Result<Vec<Cell>, String> {
    match format {
        ValueFormat::Json => json::decode_value(columns, value),
        ValueFormat::JsonUnwrapped => {
            let mut out = vec![Value::Null; columns.len()];
            let i = columns.iter().position(|c| !c.key).ok_or("WRAP_SINGLE_VALUE=false needs a value column")?;
            out[i] = json::decode_single(&columns[i], value)?;
            Ok(out)
        }
        ValueFormat::Delimited(d) => {
            let text = std::str::from_utf8(value).map_err(|_| "DELIMITED value is not UTF-8".to_string())?;
            let fields = delimited::parse_line(text, d)?;
            let n = columns.iter().filter(|c| !c.key).count();
            if fields.len() != n {
                return Err(format!("DELIMITED value has {} fields, expected {n}", fields.len()));
            }
            let mut fields = fields.into_iter();
            Ok(columns
                .iter()
                .map(|c| if c.key { Value::Null } else { fields.next().flatten().map_or(Value::Null, Value::String) })
                .collect())
        }
        ValueFormat::Kafka => {
            let mut out = vec![Value::Null; columns.len()];
            match columns.iter().position(|c| !c.key) {
                Some(i) => out[i] = kafka::decode(&columns[i].ty, value)?,
                None => return Err("VALUE_FORMAT='KAFKA' needs a value column".into()),
            }
            Ok(out)
        }
        ValueFormat::Avro { .. } => avro::decode_value(columns, value),
        ValueFormat::JsonSr { .. } => json_sr::decode_value(columns, value),
        ValueFormat::Protobuf { .. } => protobuf::decode_value(columns, value),
        ValueFormat::ProtobufNosr { nullable } => protobuf::decode_nosr(columns, value, nullable),
    }
}

/// Checks that a value fits the column type and returns its canonical cell.
pub fn check_cell(c: &Column, v: Value) -> Result<Value, String> {
    // Most cells are already in their canonical form: no copy, no conversion.
    let canonical = match (&c.ty, &v) {
        (_, Value::Null) | (SqlType::String, Value::String(_)) | (SqlType::Boolean, Value::Bool(_)) => true,
        (SqlType::BigInt | SqlType::Timestamp, Value::Number(n)) => n.is_i64(),
        (SqlType::Double, Value::Number(_)) => true,
        _ => false,
    };
    if canonical {
        return Ok(v);
    }
    match types::normalize(&c.ty, v.clone()) {
        Ok(cell) => Ok(cell),
        Err(types::Mismatch) => Err(format!("column {} expects {}, got {}", c.name, c.ty.name(), v)),
    }
}

/// Encodes the value columns of a row (key columns live in the key); `None` is a null
/// value (KAFKA format with a NULL cell). An AVRO row that its schema does not take is an
/// error (an INSERT's values against a schema a producer registered).
pub fn try_encode_value(columns: &[Column], format: ValueFormat, row: &[Cell]) -> Result<Option<Vec<u8>>, String> {
    match format {
        ValueFormat::Avro { schema_id: 0 } => {
            Err("this AVRO relation has no registered value schema to write with".into())
        }
        ValueFormat::Avro { schema_id } => avro::encode_value(columns, row, schema_id).map(Some),
        ValueFormat::JsonSr { schema_id: 0 } => {
            Err("this JSON_SR relation has no registered value schema to write with".into())
        }
        ValueFormat::Protobuf { schema_id: 0 } => {
            Err("this PROTOBUF relation has no registered value schema to write with".into())
        }
        ValueFormat::Protobuf { schema_id } => protobuf::encode_value(columns, row, schema_id).map(Some),
        ValueFormat::ProtobufNosr { nullable } => protobuf::encode_nosr(columns, row, nullable).map(Some),
        other => Ok(encode_value(columns, other, row)),
    }
}

/// `try_encode_value` for the writers whose schemas Eddy made from the columns (query
/// outputs): their rows always fit, and a failure is a bug, logged.
pub fn encode_value(columns: &[Column], format: ValueFormat, row: &[Cell]) -> Option<Vec<u8>> {
    match format {
        ValueFormat::Avro { .. } | ValueFormat::Protobuf { .. } | ValueFormat::ProtobufNosr { .. } => {
            match try_encode_value(columns, format, row) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!("a bug in Eddy: an output row does not fit its own {} schema: {e}", format.name());
                    None
                }
            }
        }
        ValueFormat::JsonSr { schema_id: 0 } => {
            tracing::error!("a bug in Eddy: a JSON_SR output without a registered schema");
            None
        }
        ValueFormat::JsonSr { schema_id } => Some(json_sr::encode_value(columns, row, schema_id)),
        ValueFormat::Json => Some(json::encode_value(columns, row)),
        ValueFormat::JsonUnwrapped => {
            let (c, v) = columns.iter().zip(row).find(|(c, _)| !c.key)?;
            if v.is_null() {
                return None;
            }
            let mut out = Vec::with_capacity(16);
            json::write(&c.ty, v, &mut out);
            Some(out)
        }
        ValueFormat::Delimited(d) => {
            let cells = columns.iter().zip(row).filter(|(c, _)| !c.key).map(|(_, v)| v);
            Some(delimited::write_line(cells, d).into_bytes())
        }
        ValueFormat::Kafka => {
            let (c, v) = columns.iter().zip(row).find(|(c, _)| !c.key)?;
            kafka::encode(&c.ty, v)
        }
    }
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
                // -0.0 = 0.0 in SQL, so they are one key (one group, one join match).
                let f = n.as_f64().unwrap_or(0.0) + 0.0;
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
/// lz4, zstd are inflated by `decompress`, bounded, and parsed by `kafka-protocol`;
/// uncompressed batches through `log::batch`). A batch that would inflate past
/// [`decompress::MAX_DECOMPRESSED_BATCH_BYTES`] is an error, as a corrupt one is.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<crate::log::LogRecord>, String> {
    match crate::log::batch::decode_records(bytes) {
        Ok(records) => Ok(records),
        Err(crate::log::LogError::Unsupported(_)) => {
            let mut buf = bytes::Bytes::copy_from_slice(bytes);
            let inflate = |records: &mut bytes::Bytes, codec: kafka_protocol::records::Compression| {
                let max = decompress::MAX_DECOMPRESSED_BATCH_BYTES;
                let inflated = match codec {
                    kafka_protocol::records::Compression::None => records.to_vec(),
                    codec => decompress::decompress(codec as u8, records, max)?,
                };
                Ok(bytes::Bytes::from(inflated))
            };
            let set =
                kafka_protocol::records::RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(inflate))
                    .map_err(|e| e.to_string())?;
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
        let json = ValueFormat::Json;
        let row = decode_row(
            &cols(),
            KeyLayout::plain(KeyFormat::Kafka),
            json,
            Some(b"k1"),
            Some(br#"{"AMOUNT": 2, "qty": 3}"#),
        )
        .unwrap();
        assert_eq!(row, vec![Value::from("k1"), Value::from(2), Value::from(3)]);
        assert!(
            decode_row(&cols(), KeyLayout::plain(KeyFormat::Kafka), json, None, Some(br#"{"amount": "x"}"#)).is_err()
        );
        assert!(decode_row(&cols(), KeyLayout::plain(KeyFormat::Kafka), json, None, Some(b"not json")).is_err());
        assert!(decode_row(&cols(), KeyLayout::plain(KeyFormat::Kafka), json, None, Some(br#"{"qty": 99999999999}"#))
            .is_err());
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let row = vec![Value::from("a"), Value::from(1.5), Value::from(7)];
        for kf in [KeyFormat::Kafka, KeyFormat::Json, KeyFormat::Delimited] {
            for vf in [ValueFormat::Json, ValueFormat::Delimited(','), ValueFormat::Delimited('|')] {
                let k = encode_key(&cols(), KeyLayout::plain(kf), &row);
                let v = encode_value(&cols(), vf, &row);
                assert_eq!(
                    decode_row(&cols(), KeyLayout::plain(kf), vf, k.as_deref(), v.as_deref()).unwrap(),
                    row,
                    "{kf:?} {vf:?}"
                );
            }
        }
    }

    /// Every type Eddy declares, with a value and a NULL, through every format that holds it.
    #[test]
    fn every_type_round_trips_through_json_and_delimited() {
        let primitive = [
            (SqlType::String, Value::from("a,\"b\"")),
            (SqlType::Int, Value::from(-3)),
            (SqlType::BigInt, Value::from(1i64 << 40)),
            (SqlType::Double, Value::from(0.25)),
            (SqlType::Boolean, Value::from(true)),
            (SqlType::Timestamp, Value::from(1_700_000_000_000i64)),
            (SqlType::Date, Value::from(19_000)),
            (SqlType::Time, Value::from(45_296_789)),
            (SqlType::Decimal { precision: 10, scale: 3 }, Value::from("-1234.500")),
            (SqlType::Bytes, Value::from("AP8=")),
        ];
        let nested = [
            (SqlType::Array(Box::new(SqlType::Decimal { precision: 4, scale: 1 })), serde_json::json!(["1.5", null])),
            (SqlType::Map(Box::new(SqlType::Date)), serde_json::json!({"k": 3})),
            (
                SqlType::Struct(vec![StructField { name: "a".into(), ty: SqlType::Bytes }]),
                serde_json::json!({"a": "AQ=="}),
            ),
        ];
        for (i, (ty, v)) in primitive.iter().chain(nested.iter()).enumerate() {
            let cols = vec![
                Column { name: "k".into(), ty: SqlType::Int, key: true },
                Column { name: "v".into(), ty: ty.clone(), key: false },
                Column { name: "w".into(), ty: ty.clone(), key: false },
            ];
            let row = vec![Value::from(1), v.clone(), Value::Null];
            let mut formats = vec![ValueFormat::Json];
            if i < primitive.len() {
                formats.extend([ValueFormat::Delimited(','), ValueFormat::Delimited('\t')]);
            }
            for vf in formats {
                assert!(vf.check_columns(&cols).is_ok());
                let k = encode_key(&cols, KeyLayout::plain(KeyFormat::Kafka), &row);
                let bytes = encode_value(&cols, vf, &row);
                let back = decode_row(&cols, KeyLayout::plain(KeyFormat::Kafka), vf, k.as_deref(), bytes.as_deref());
                assert_eq!(back.unwrap(), row, "{ty:?} in {vf:?}");
                let batch = rows_to_batch(&cols, std::slice::from_ref(&row)).unwrap();
                assert_eq!(cell_at(batch.column(1).as_ref(), 0), *v, "{ty:?} through Arrow");
            }
        }
        let nested_cols = vec![Column { name: "s".into(), ty: nested[0].0.clone(), key: false }];
        assert!(ValueFormat::Delimited(',').check_columns(&nested_cols).is_err());
    }

    #[test]
    fn kafka_value_format_holds_one_primitive() {
        let cols = vec![
            Column { name: "id".into(), ty: SqlType::String, key: true },
            Column { name: "n".into(), ty: SqlType::BigInt, key: false },
        ];
        let row = vec![Value::from("a"), Value::from(42)];
        let v = encode_value(&cols, ValueFormat::Kafka, &row).unwrap();
        assert_eq!(v, 42i64.to_be_bytes());
        assert_eq!(
            decode_row(&cols, KeyLayout::plain(KeyFormat::Kafka), ValueFormat::Kafka, Some(b"a"), Some(&v)).unwrap(),
            row
        );
        assert!(decode_row(&cols, KeyLayout::plain(KeyFormat::Kafka), ValueFormat::Kafka, None, Some(b"abc")).is_err());
        assert!(ValueFormat::Kafka.check_columns(&cols).is_ok());
        let two = [cols.clone(), vec![Column { name: "x".into(), ty: SqlType::Int, key: false }]].concat();
        assert!(ValueFormat::Kafka.check_columns(&two).is_err());
        let boolean = vec![Column { name: "b".into(), ty: SqlType::Boolean, key: false }];
        assert!(ValueFormat::Kafka.check_columns(&boolean).is_err());
        assert_eq!(ValueFormat::parse("protobuf", None), Ok(ValueFormat::Protobuf { schema_id: 0 }));
        assert_eq!(ValueFormat::parse("JSON_SR", None), Ok(ValueFormat::JsonSr { schema_id: 0 }));
        assert!(ValueFormat::parse("XML", None).is_err());
        assert_eq!(ValueFormat::parse("avro", None), Ok(ValueFormat::Avro { schema_id: 0 }));
        assert!(ValueFormat::parse("JSON", Some("|")).is_err());
        assert_eq!(ValueFormat::parse("delimited", Some("SPACE")), Ok(ValueFormat::Delimited(' ')));
    }

    #[test]
    fn malformed_records_never_panic() {
        let cols = vec![
            Column { name: "k".into(), ty: SqlType::String, key: true },
            Column { name: "d".into(), ty: SqlType::Decimal { precision: 5, scale: 2 }, key: false },
            Column { name: "t".into(), ty: SqlType::Time, key: false },
            Column { name: "b".into(), ty: SqlType::Bytes, key: false },
        ];
        let json_cols = [cols.clone(), vec![Column { name: "a".into(), ty: nested_type(), key: false }]].concat();
        let kafka_cols = vec![Column { name: "v".into(), ty: SqlType::Double, key: false }];
        let bound = |name: &str| Column { name: name.into(), ty: SqlType::BigInt, key: true };
        let windowed = [cols.clone(), vec![bound(key::WINDOW_START), bound(key::WINDOW_END)]].concat();
        let alphabet: &[u8] = b"{}[]\",:1.-e\\ \nabAQ=|\xff\x00";
        let mut seed = 11u64;
        for n in 0..20_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (seed >> 59) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| alphabet[((seed >> (i * 2)) as usize) % alphabet.len()]).collect();
            let formats = [
                (&json_cols, KeyFormat::Json, ValueFormat::Json),
                (&cols, KeyFormat::Delimited, ValueFormat::Delimited(',')),
                (&kafka_cols, KeyFormat::Kafka, ValueFormat::Kafka),
            ];
            for (columns, key, value) in formats {
                let _ = decode_row(columns, KeyLayout::plain(key), value, Some(&bytes), Some(&bytes));
            }
            for w in [KeyWindow::Session, KeyWindow::Hopping { size_ms: i64::MAX }] {
                let json = KeyLayout { window: Some(w), ..KeyLayout::plain(KeyFormat::Json) };
                let _ = decode_row(&windowed, json, ValueFormat::Json, Some(&bytes), Some(&bytes));
                let kafka = KeyLayout { window: Some(w), ..KeyLayout::plain(KeyFormat::Kafka) };
                let _ = decode_key(&windowed, kafka, Some(&bytes));
            }
            if n % 100 == 0 {
                for bad in [&b"1,2"[..], b"x,,"] {
                    let kafka = KeyLayout::plain(KeyFormat::Kafka);
                    assert!(decode_row(&cols, kafka, ValueFormat::Delimited(','), None, Some(bad)).is_err());
                }
            }
        }
    }

    fn nested_type() -> SqlType {
        SqlType::Struct(vec![
            StructField { name: "m".into(), ty: SqlType::Map(Box::new(SqlType::Array(Box::new(SqlType::Int)))) },
            StructField { name: "d".into(), ty: SqlType::Date },
        ])
    }

    #[test]
    fn memcomparable_sorts_like_values() {
        let vals = [Value::from(-5), Value::from(-1.5), Value::from(0), Value::from(3), Value::from(10)];
        let enc: Vec<_> = vals.iter().map(|v| memcomparable(std::slice::from_ref(v))).collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
        assert!(memcomparable(&[Value::from("a")]) < memcomparable(&[Value::from("ab")]));
    }
}
