//! Record keys: a relation's key columns ⇄ Kafka record key bytes, in its key format, and
//! for windowed tables with the window after them as ksqlDB (Kafka Streams) writes it.
//!
//! As in ksqlDB, a single key column is written unwrapped (`"u1"` in JSON, not
//! `{"userid":"u1"}`) and several key columns as one JSON object; reading takes either form
//! of a single key. A windowed key is the key columns' bytes followed by the window start as
//! a big-endian 8-byte integer (tumbling and hopping windows: the end is the start plus the
//! window size), or by the window end and then the start (session windows): what
//! `TimeWindowedSerde` and `SessionWindowedSerde` write, so ksqlDB and Kafka Streams read
//! Eddy's windowed tables and Eddy reads theirs (`WINDOW_TYPE`, `WINDOW_SIZE`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{check_cell, delimited, json, kafka, types, BadRecord, Column, KeyFormat, SqlType};

/// The key columns that hold a windowed key's window (BIGINT epoch milliseconds).
pub const WINDOW_START: &str = "windowstart";
pub const WINDOW_END: &str = "windowend";

/// How a windowed relation's key carries its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyWindow {
    Tumbling { size_ms: i64 },
    Hopping { size_ms: i64 },
    Session,
}

impl KeyWindow {
    /// ksqlDB's `WINDOW_TYPE` name.
    pub fn type_name(self) -> &'static str {
        match self {
            KeyWindow::Tumbling { .. } => "TUMBLING",
            KeyWindow::Hopping { .. } => "HOPPING",
            KeyWindow::Session => "SESSION",
        }
    }

    /// Bytes the window adds after the key columns.
    fn suffix_len(self) -> usize {
        match self {
            KeyWindow::Tumbling { .. } | KeyWindow::Hopping { .. } => 8,
            KeyWindow::Session => 16,
        }
    }

    /// The window from `WINDOW_TYPE` and `WINDOW_SIZE` (a duration such as `'1 HOUR'`), with
    /// ksqlDB's rules: time windows need a size, sessions take none.
    pub fn from_props(window_type: &str, size: Option<&str>) -> Result<KeyWindow, String> {
        let size_ms = || -> Result<i64, String> {
            let text = size.ok_or_else(|| {
                format!(
                    "{} windows require 'WINDOW_SIZE' to be provided in the WITH clause.",
                    window_type.to_uppercase()
                )
            })?;
            match crate::sql::window::parse_duration_ms(text) {
                Some(ms) if ms > 0 => Ok(ms),
                _ => Err(format!(
                    "Invalid WINDOW_SIZE property : '{text}'. WINDOW_SIZE should be a duration such as '10 SECONDS'."
                )),
            }
        };
        match window_type.to_ascii_uppercase().as_str() {
            "TUMBLING" => Ok(KeyWindow::Tumbling { size_ms: size_ms()? }),
            "HOPPING" => Ok(KeyWindow::Hopping { size_ms: size_ms()? }),
            "SESSION" if size.is_some() => Err("'WINDOW_SIZE' should not be set for SESSION windows.".into()),
            "SESSION" => Ok(KeyWindow::Session),
            other => Err(format!("WINDOW_TYPE='{other}': expected SESSION, HOPPING or TUMBLING")),
        }
    }
}

/// How a relation's record keys are written: its key format, its window, and whether a
/// single JSON key column is wrapped in an object of its name (relations made before Eddy
/// wrote single keys unwrapped, as ksqlDB does, keep writing them wrapped: their topics'
/// records must keep one key per row for compaction and tombstones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLayout {
    pub format: KeyFormat,
    pub window: Option<KeyWindow>,
    pub wrap_single_json: bool,
    /// The registered schema keys are written with (AVRO, JSON_SR, PROTOBUF; 0: none, the
    /// relation is only read).
    pub schema_id: u32,
    /// How PROTOBUF_NOSR keys let a column be NULL.
    pub protobuf_nullable: super::protobuf::Nullable,
}

impl KeyLayout {
    /// A layout of `format` alone: not windowed, a single JSON key unwrapped.
    pub fn plain(format: KeyFormat) -> KeyLayout {
        KeyLayout { format, window: None, wrap_single_json: false, schema_id: 0, protobuf_nullable: Default::default() }
    }
}

fn is_window_column(c: &Column) -> bool {
    c.name == WINDOW_START || c.name == WINDOW_END
}

/// Encodes the key columns of a row; `None` when the relation has no key. The writers whose
/// key schemas Eddy made from the columns (query outputs) use it: a key that does not fit
/// is a bug, logged.
pub fn encode_key(columns: &[Column], layout: KeyLayout, row: &[Value]) -> Option<Vec<u8>> {
    try_encode_key(columns, layout, row).unwrap_or_else(|e| {
        tracing::error!("a bug in Eddy: an output row's key does not fit its own {} schema: {e}", layout.format.name());
        None
    })
}

/// Encodes the key columns of a row; `None` when the relation has no key. A key that its
/// registered schema does not take (AVRO, PROTOBUF) is an error.
pub fn try_encode_key(columns: &[Column], layout: KeyLayout, row: &[Value]) -> Result<Option<Vec<u8>>, String> {
    let KeyLayout { format: key_format, window, wrap_single_json, schema_id, protobuf_nullable } = layout;
    let keys = columns.iter().zip(row).filter(|(c, _)| c.key && !(window.is_some() && is_window_column(c)));
    let keys: Vec<(&Column, &Value)> = keys.collect();
    let base = match (key_format, keys.as_slice()) {
        (KeyFormat::None, _) | (_, []) => None,
        // A NULL single key column is a record without a key.
        (
            KeyFormat::Json | KeyFormat::JsonSr | KeyFormat::Avro | KeyFormat::Protobuf | KeyFormat::ProtobufNosr,
            [(_, Value::Null)],
        ) => None,
        (KeyFormat::ProtobufNosr, _) => {
            let (cols, row) = as_value_columns(&keys);
            Some(super::protobuf::encode_nosr(&cols, &row, protobuf_nullable).map_err(|e| format!("key: {e}"))?)
        }
        (KeyFormat::Avro | KeyFormat::JsonSr | KeyFormat::Protobuf, _) if schema_id == 0 => {
            return Err(format!("this {} key has no registered schema to write with", key_format.name()))
        }
        (KeyFormat::JsonSr, [(c, v)]) => {
            let mut out = framed(schema_id);
            json::write(&c.ty, v, &mut out);
            Some(out)
        }
        (KeyFormat::JsonSr, _) => {
            let mut out = framed(schema_id);
            out.extend_from_slice(&json::encode_key_object(keys.iter().copied()));
            Some(out)
        }
        (KeyFormat::Avro, [(c, v)]) => {
            Some(super::avro::encode_single(c, v, schema_id).map_err(|e| format!("key: {e}"))?)
        }
        (KeyFormat::Avro | KeyFormat::Protobuf, _) => {
            let (cols, row) = as_value_columns(&keys);
            let bytes = if key_format == KeyFormat::Avro {
                super::avro::encode_value(&cols, &row, schema_id)
            } else {
                super::protobuf::encode_value(&cols, &row, schema_id)
            };
            Some(bytes.map_err(|e| format!("key: {e}"))?)
        }
        (KeyFormat::Kafka, [(c, v)]) => kafka::encode(&c.ty, v),
        (KeyFormat::Json, [(c, v)]) if !wrap_single_json => {
            let mut out = Vec::with_capacity(16);
            json::write(&c.ty, v, &mut out);
            Some(out)
        }
        (KeyFormat::Delimited, _) => Some(delimited::write_line(keys.iter().map(|(_, v)| *v), ',').into_bytes()),
        (KeyFormat::Kafka | KeyFormat::Json, _) => Some(json::encode_key_object(keys.iter().copied())),
    };
    let Some(w) = window else { return Ok(base) };
    let mut out = base.unwrap_or_default();
    // The window operator fills both bounds of every windowed row.
    let bound = |name: &str| {
        columns.iter().zip(row).find(|(c, _)| c.name == name).and_then(|(_, v)| v.as_i64()).unwrap_or_default()
    };
    if w == KeyWindow::Session {
        out.extend_from_slice(&bound(WINDOW_END).to_be_bytes());
    }
    out.extend_from_slice(&bound(WINDOW_START).to_be_bytes());
    Ok(Some(out))
}

/// Confluent's 5-byte header of schema `id`, to write a body after.
fn framed(id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// Key columns as the value columns of a value codec, with their cells: the Avro and
/// Protobuf key codecs are the value codecs over the key columns.
fn as_value_columns(keys: &[(&Column, &Value)]) -> (Vec<Column>, Vec<Value>) {
    keys.iter().map(|(c, v)| (Column { key: false, ..(*c).clone() }, (*v).clone())).unzip()
}

/// The part of a key that picks its partition: a windowed key's columns without the window,
/// so every window of a key lands in one partition (Kafka Streams' windowed partitioner).
pub fn partition_key(window: Option<KeyWindow>, key: &[u8]) -> &[u8] {
    match window {
        Some(w) => &key[..key.len().saturating_sub(w.suffix_len())],
        None => key,
    }
}

/// Decodes only the key columns (a tombstone has no value but still names its key).
pub fn decode_key(
    columns: &[Column],
    layout: KeyLayout,
    key: Option<&[u8]>,
) -> Result<Vec<(String, Value)>, BadRecord> {
    let KeyLayout { format: key_format, window, protobuf_nullable, .. } = layout;
    let bad = |error: String| BadRecord { error };
    let Some(mut key) = key else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    if let Some(w) = window {
        let n = w.suffix_len();
        if key.len() < n {
            return Err(bad(format!(
                "a {} windowed key ends in {n} bytes of window, got {} bytes",
                w.type_name(),
                key.len()
            )));
        }
        let (base, suffix) = key.split_at(key.len() - n);
        let long = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or_default());
        let (start, end) = match w {
            KeyWindow::Tumbling { size_ms } | KeyWindow::Hopping { size_ms } => {
                let start = long(suffix);
                (start, start.saturating_add(size_ms))
            }
            KeyWindow::Session => (long(&suffix[8..]), long(&suffix[..8])),
        };
        out.push((WINDOW_START.to_string(), Value::from(start)));
        out.push((WINDOW_END.to_string(), Value::from(end)));
        key = base;
    }
    let key_cols: Vec<&Column> =
        columns.iter().filter(|c| c.key && !(window.is_some() && is_window_column(c))).collect();
    if key_cols.is_empty() {
        return Ok(out);
    }
    // (`out` is sorted at the end; the window bounds went in first.)
    match key_format {
        KeyFormat::None => {}
        KeyFormat::Kafka => {
            let c = key_cols[0];
            let v = kafka::decode(&c.ty, key).map_err(|e| bad(format!("key: {e}")))?;
            out.push((c.name.clone(), v));
        }
        KeyFormat::Json => decode_json_key(&key_cols, key, &mut out)?,
        KeyFormat::JsonSr => {
            let (id, body) = super::json_sr::unframe(key).map_err(|e| bad(format!("key: {e}")))?;
            let registry = crate::registry::global().ok_or_else(|| bad("no Schema Registry".into()))?;
            if registry.schema_type(id).is_none() {
                return Err(bad(format!("JSON_SR key's schema id {id}: Schema {id} not found")));
            }
            decode_json_key(&key_cols, body, &mut out)?
        }
        KeyFormat::Avro if key_cols.len() == 1 => {
            let c = key_cols[0];
            let cell = super::avro::decode_single(c, key).map_err(|e| bad(format!("key: {e}")))?;
            out.push((c.name.clone(), check_cell(c, cell).map_err(bad)?));
        }
        KeyFormat::ProtobufNosr => {
            let cols: Vec<Column> = key_cols.iter().map(|c| Column { key: false, ..(*c).clone() }).collect();
            let cells =
                super::protobuf::decode_nosr(&cols, key, protobuf_nullable).map_err(|e| bad(format!("key: {e}")))?;
            for (c, cell) in key_cols.iter().zip(cells) {
                out.push((c.name.clone(), check_cell(c, cell).map_err(bad)?));
            }
        }
        KeyFormat::Avro | KeyFormat::Protobuf => {
            let cols: Vec<Column> = key_cols.iter().map(|c| Column { key: false, ..(*c).clone() }).collect();
            let cells = if key_format == KeyFormat::Avro {
                super::avro::decode_value(&cols, key)
            } else {
                super::protobuf::decode_value(&cols, key)
            };
            let cells = cells.map_err(|e| bad(format!("key: {e}")))?;
            for (c, cell) in key_cols.iter().zip(cells) {
                out.push((c.name.clone(), check_cell(c, cell).map_err(bad)?));
            }
        }
        KeyFormat::Delimited => {
            let text = std::str::from_utf8(key).map_err(|_| bad("DELIMITED key is not UTF-8".into()))?;
            let fields = delimited::parse_line(text, ',').map_err(|e| bad(format!("key: {e}")))?;
            if fields.len() != key_cols.len() {
                return Err(bad(format!("DELIMITED key has {} fields, expected {}", fields.len(), key_cols.len())));
            }
            for (c, f) in key_cols.iter().zip(fields) {
                out.push((c.name.clone(), check_cell(c, f.map_or(Value::Null, Value::String)).map_err(bad)?));
            }
        }
    }
    if window.is_some() {
        // In the key columns' order, as a table's row key takes them.
        out.sort_by_key(|(name, _)| columns.iter().position(|c| &c.name == name));
    }
    Ok(out)
}

/// A JSON key's cells: a single key column's value itself (or wrapped in an object of its
/// name), several key columns' as one object.
fn decode_json_key(key_cols: &[&Column], key: &[u8], out: &mut Vec<(String, Value)>) -> Result<(), BadRecord> {
    let bad = |error: String| BadRecord { error };
    let v: Value = serde_json::from_slice(key).map_err(|e| bad(format!("key is not valid JSON: {e}")))?;
    match (v, key_cols) {
        // One key column, wrapped in an object of its name (Eddy wrote single JSON
        // keys so before it followed ksqlDB).
        (Value::Object(obj), [c]) if is_wrapped(&obj, c) => {
            out.push((c.name.clone(), types::lookup(&obj, &c.name).cloned().unwrap_or(Value::Null)));
        }
        (other, [c]) => out.push((c.name.clone(), exact_decimal(c, key).unwrap_or(other))),
        (Value::Object(obj), _) => out.extend(
            key_cols.iter().map(|c| (c.name.clone(), types::lookup(&obj, &c.name).cloned().unwrap_or(Value::Null))),
        ),
        _ => return Err(bad("JSON key for several key columns must be an object".into())),
    }
    Ok(())
}

/// Whether a single key column's JSON object is the column wrapped by its name rather than
/// the column's own value (a STRUCT key is an object too: it is wrapped only when its one
/// field is named as the column and holds an object).
fn is_wrapped(obj: &serde_json::Map<String, Value>, c: &Column) -> bool {
    let Some(inner) = types::lookup(obj, &c.name) else { return false };
    match &c.ty {
        SqlType::Struct(_) | SqlType::Map(_) => obj.len() == 1 && inner.is_object(),
        _ => obj.len() == 1,
    }
}

/// A bare JSON number key of a DECIMAL column as its exact text (serde_json would round it
/// through a double).
fn exact_decimal(c: &Column, key: &[u8]) -> Option<Value> {
    if !matches!(c.ty, SqlType::Decimal { .. }) {
        return None;
    }
    let text = std::str::from_utf8(key).ok()?.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    plain.then(|| Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(format: KeyFormat, window: Option<KeyWindow>) -> KeyLayout {
        KeyLayout { format, window, ..KeyLayout::plain(format) }
    }

    fn col(name: &str, ty: SqlType, key: bool) -> Column {
        Column { name: name.into(), ty, key }
    }

    fn windowed(ty: SqlType) -> Vec<Column> {
        vec![
            col("userid", ty, true),
            col(WINDOW_START, SqlType::BigInt, true),
            col(WINDOW_END, SqlType::BigInt, true),
            col("n", SqlType::BigInt, false),
        ]
    }

    #[test]
    fn time_windowed_keys_are_the_key_then_the_start() {
        let cols = windowed(SqlType::String);
        let row = [Value::from("u1"), Value::from(60_000), Value::from(120_000), Value::from(3)];
        let w = KeyWindow::Tumbling { size_ms: 60_000 };
        let key = encode_key(&cols, layout(KeyFormat::Kafka, Some(w)), &row).unwrap();
        let mut expected = b"u1".to_vec();
        expected.extend_from_slice(&60_000i64.to_be_bytes());
        assert_eq!(key, expected);
        assert_eq!(partition_key(Some(w), &key), b"u1");
        let back = decode_key(&cols, layout(KeyFormat::Kafka, Some(w)), Some(&key)).unwrap();
        let names: Vec<&str> = back.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["userid", WINDOW_START, WINDOW_END], "in the key columns' order");
        assert_eq!(back[0].1, Value::from("u1"));
        assert_eq!(back[1].1, Value::from(60_000));
        assert_eq!(back[2].1, Value::from(120_000), "the end is the start plus WINDOW_SIZE");
        // JSON keys: the single column unwrapped, then the window.
        let key = encode_key(&cols, layout(KeyFormat::Json, Some(w)), &row).unwrap();
        assert_eq!(&key[..key.len() - 8], br#""u1""#);
        assert!(
            decode_key(&cols, layout(KeyFormat::Json, Some(w)), Some(&key[..5])).is_err(),
            "too short for a window"
        );
    }

    #[test]
    fn session_keys_carry_the_end_then_the_start() {
        let cols = windowed(SqlType::BigInt);
        let row = [Value::from(7), Value::from(1_000), Value::from(5_000), Value::from(2)];
        let key = encode_key(&cols, layout(KeyFormat::Kafka, Some(KeyWindow::Session)), &row).unwrap();
        assert_eq!(&key[..8], &7i64.to_be_bytes());
        assert_eq!(&key[8..16], &5_000i64.to_be_bytes());
        assert_eq!(&key[16..], &1_000i64.to_be_bytes());
        let back = decode_key(&cols, layout(KeyFormat::Kafka, Some(KeyWindow::Session)), Some(&key)).unwrap();
        assert_eq!(back[0], ("userid".to_string(), Value::from(7)));
        assert_eq!(back[1], (WINDOW_START.to_string(), Value::from(1_000)));
        assert_eq!(back[2], (WINDOW_END.to_string(), Value::from(5_000)));
    }

    #[test]
    fn single_json_keys_are_unwrapped_and_read_either_way() {
        let cols = vec![col("id", SqlType::Decimal { precision: 20, scale: 2 }, true), col("v", SqlType::Int, false)];
        let row = [Value::from("123456789012345678.25"), Value::from(1)];
        let key = encode_key(&cols, KeyLayout::plain(KeyFormat::Json), &row).unwrap();
        assert_eq!(key, b"123456789012345678.25");
        let back = decode_key(&cols, KeyLayout::plain(KeyFormat::Json), Some(&key)).unwrap();
        assert_eq!(back, [("id".to_string(), Value::from("123456789012345678.25"))], "exact, not through a double");
        let wrapped = decode_key(&cols, KeyLayout::plain(KeyFormat::Json), Some(br#"{"ID": 5}"#)).unwrap();
        assert_eq!(wrapped, [("id".to_string(), Value::from(5))]);
        // A relation made before keeps writing its single key wrapped.
        let legacy = KeyLayout { wrap_single_json: true, ..KeyLayout::plain(KeyFormat::Json) };
        let key = encode_key(&cols, legacy, &[Value::from("1.50"), Value::from(1)]).unwrap();
        assert_eq!(key, br#"{"id":"1.50"}"#);
        // A STRUCT key is an object of its fields, not a wrapper.
        let s = SqlType::Struct(vec![types::StructField { name: "id".into(), ty: SqlType::Int }]);
        let cols = vec![col("id", s, true)];
        let back = decode_key(&cols, KeyLayout::plain(KeyFormat::Json), Some(br#"{"id": 5}"#)).unwrap();
        assert_eq!(back, [("id".to_string(), serde_json::json!({"id": 5}))]);
        // Several columns stay one object.
        let cols = vec![col("a", SqlType::Int, true), col("b", SqlType::String, true)];
        let key = encode_key(&cols, KeyLayout::plain(KeyFormat::Json), &[Value::from(1), Value::from("x")]).unwrap();
        assert_eq!(key, br#"{"a":1,"b":"x"}"#);
    }

    #[test]
    fn window_properties_follow_ksqldb() {
        assert_eq!(KeyWindow::from_props("tumbling", Some("1 MINUTE")), Ok(KeyWindow::Tumbling { size_ms: 60_000 }));
        assert_eq!(KeyWindow::from_props("HOPPING", Some("30 SECONDS")), Ok(KeyWindow::Hopping { size_ms: 30_000 }));
        assert_eq!(KeyWindow::from_props("Session", None), Ok(KeyWindow::Session));
        assert!(KeyWindow::from_props("TUMBLING", None).unwrap_err().contains("WINDOW_SIZE"));
        assert!(KeyWindow::from_props("SESSION", Some("1 MINUTE")).unwrap_err().contains("should not be set"));
        assert!(KeyWindow::from_props("SLIDING", None).is_err());
        assert!(KeyWindow::from_props("TUMBLING", Some("soon")).is_err());
    }
}
