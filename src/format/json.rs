//! The JSON value format: one object per record, fields matched to columns by name (exactly,
//! else case-insensitively). Decoding returns the raw field values for `types::normalize`;
//! encoding is type-directed so DECIMAL cells (exact text) are written as JSON numbers,
//! DATE as days, TIME as milliseconds and BYTES as base64, as ksqlDB writes them.

use serde_json::Value;

use super::types::{lookup, SqlType};
use super::Column;

/// The value object's field for each column (NULL where absent), not yet checked. Reads the
/// object in one pass, keeping only the fields that match a column (no map is built); the
/// matching is `types::lookup`'s: the exact name, else the first field, in the object's
/// order, equal to it ignoring case; a repeated field's last value wins.
pub fn decode_value(columns: &[Column], value: &[u8]) -> Result<Vec<Value>, String> {
    let invalid = |e: serde_json::Error| format!("value is not valid JSON: {e}");
    let mut cells =
        if columns.len() > 64 || value.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) != Some(&b'{') {
            decode_value_through_map(columns, value)?
        } else {
            let mut de = serde_json::Deserializer::from_slice(value);
            let cells = serde::Deserializer::deserialize_map(&mut de, Fields { columns }).map_err(invalid)?;
            de.end().map_err(invalid)?;
            cells
        };
    if columns.iter().any(|c| matches!(c.ty, SqlType::Decimal { .. })) {
        exact_decimals(columns, value, &mut cells);
    }
    Ok(cells)
}

/// DECIMAL cells take the number's text as written: serde_json reads a number as f64, which
/// keeps about 16 significant digits (and without `float_roundtrip` may miss by one unit in
/// the last place), so `123456789012345.67` could come back as `...345.69`. Top-level fields
/// only, picked by `types::lookup`'s rules; nested DECIMALs still go through f64.
fn exact_decimals(columns: &[Column], value: &[u8], cells: &mut [Value]) {
    let fields = top_level_numbers(value);
    for (c, cell) in columns.iter().zip(cells.iter_mut()) {
        if !matches!(c.ty, SqlType::Decimal { .. }) || !cell.is_number() {
            continue;
        }
        let name = match fields.iter().find(|(k, _)| *k == c.name) {
            Some(_) => c.name.as_str(),
            None => match fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(&c.name)) {
                Some((k, _)) => k,
                None => continue,
            },
        };
        // A repeated field's last value wins, as in the decoder.
        if let Some((_, text)) = fields.iter().rev().find(|(k, _)| *k == name) {
            *cell = Value::String((*text).to_string());
        }
    }
}

/// `(key, number text)` of each top-level field of a JSON object whose value is a number, in
/// order. The input has already parsed as JSON; keys with escapes are left out.
fn top_level_numbers(value: &[u8]) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let skip_ws = |mut i: usize| {
        while value.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    // The index just past the string starting at `i` (a quote), and whether it has escapes.
    let skip_string = |mut i: usize| {
        let mut escaped = false;
        i += 1;
        while let Some(&b) = value.get(i) {
            match b {
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                b'"' => return (i + 1, escaped),
                _ => i += 1,
            }
        }
        (i, escaped)
    };
    let mut i = skip_ws(0);
    if value.get(i) != Some(&b'{') {
        return out;
    }
    i += 1;
    loop {
        i = skip_ws(i);
        if value.get(i) != Some(&b'"') {
            return out;
        }
        let (end, escaped) = skip_string(i);
        let key = std::str::from_utf8(&value[i + 1..end.saturating_sub(1).max(i + 1)]).ok();
        i = skip_ws(end);
        if value.get(i) != Some(&b':') {
            return out;
        }
        i = skip_ws(i + 1);
        let start = i;
        match value.get(i) {
            Some(b'"') => i = skip_string(i).0,
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                while let Some(&b) = value.get(i) {
                    match b {
                        b'"' => {
                            i = skip_string(i).0;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            Some(_) => {
                while value.get(i).is_some_and(|b| !matches!(b, b',' | b'}') && !b.is_ascii_whitespace()) {
                    i += 1;
                }
                let text = std::str::from_utf8(&value[start..i]).ok();
                if let (Some(key), Some(text), false) = (key, text, escaped) {
                    if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
                        out.push((key, text));
                    }
                }
            }
            None => return out,
        }
        i = skip_ws(i);
        match value.get(i) {
            Some(b',') => i += 1,
            _ => return out,
        }
    }
}

/// Visits a JSON object, keeping the fields that match `columns`.
struct Fields<'c> {
    columns: &'c [Column],
}

impl<'de> serde::de::Visitor<'de> for Fields<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<Value>, A::Error> {
        let n = self.columns.len();
        let mut cells = vec![Value::Null; n];
        // Bit j: column j has a field of exactly its name (`decode_value` ensures n <= 64).
        let mut exact: u64 = 0;
        // Per column, the first field equal to its name ignoring case (made when one appears).
        let mut folded: Option<Vec<Option<String>>> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let exact_at = self.columns.iter().position(|c| c.name == *key);
            let folds = |j: usize, folded: &Option<Vec<Option<String>>>| {
                Some(j) != exact_at
                    && exact & (1 << j) == 0
                    && self.columns[j].name.eq_ignore_ascii_case(&key)
                    && folded.as_ref().and_then(|f| f[j].as_ref()).is_none_or(|k| *k == *key)
            };
            let folded_into: Vec<usize> = (0..n).filter(|&j| folds(j, &folded)).collect();
            if exact_at.is_none() && folded_into.is_empty() {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let v: Value = map.next_value()?;
            for j in folded_into {
                folded.get_or_insert_with(|| vec![None; n])[j] = Some(key.to_string());
                cells[j] = v.clone();
            }
            if let Some(i) = exact_at {
                exact |= 1 << i;
                cells[i] = v;
            }
        }
        Ok(cells)
    }
}

/// A field name, borrowed from the input when it has no escapes.
pub(super) struct KeySeed;

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeySeed)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySeed {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_string()))
    }
}

/// `decode_value` for input that does not start as an object: parsed whole, for the error.
fn decode_value_through_map(columns: &[Column], value: &[u8]) -> Result<Vec<Value>, String> {
    let parsed: Value = serde_json::from_slice(value).map_err(|e| format!("value is not valid JSON: {e}"))?;
    let Value::Object(obj) = parsed else {
        return Err("value is not a JSON object".into());
    };
    Ok(columns.iter().map(|c| lookup(&obj, &c.name).cloned().unwrap_or(Value::Null)).collect())
}

/// An unwrapped value (`WRAP_SINGLE_VALUE=false`): the whole JSON document is `column`'s value.
pub fn decode_single(column: &Column, value: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(value).map_err(|e| format!("value is not valid JSON: {e}"))?;
    // A DECIMAL takes the number's text as written (see `exact_decimals`).
    match (&column.ty, &v) {
        (SqlType::Decimal { .. }, Value::Number(_)) => {
            let text = std::str::from_utf8(value).map_err(|_| "value is not UTF-8".to_string())?;
            Ok(Value::String(text.trim().to_string()))
        }
        _ => Ok(v),
    }
}

/// Writes the value columns of a row as one JSON object.
pub fn encode_value(columns: &[Column], row: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    for (i, (c, v)) in columns.iter().zip(row).filter(|(c, _)| !c.key).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(&c.name, &mut out);
        out.push(b':');
        write(&c.ty, v, &mut out);
    }
    out.push(b'}');
    out
}

/// Writes the key columns of a row as one JSON object of their values as they are (the
/// JSON key format, and KAFKA's for several columns).
pub fn encode_key_object<'a>(keys: impl Iterator<Item = (&'a Column, &'a Value)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.push(b'{');
    for (i, (c, v)) in keys.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(&c.name, &mut out);
        out.push(b':');
        write_plain(v, &mut out);
    }
    out.push(b'}');
    out
}

/// A JSON string literal, escaped.
fn write_str(s: &str, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail, nor can serializing a str.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A value as serde_json writes it.
fn write_plain(v: &Value, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail, and a Value's map keys are strings.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Writes one cell as JSON text.
pub fn write(ty: &SqlType, v: &Value, out: &mut Vec<u8>) {
    match (ty, v) {
        (SqlType::Decimal { .. }, Value::String(s)) if is_number_text(s) => out.extend_from_slice(s.as_bytes()),
        (SqlType::Array(t), Value::Array(items)) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(t, item, out);
            }
            out.push(b']');
        }
        (SqlType::Map(t), Value::Object(obj)) => {
            out.push(b'{');
            for (i, (k, item)) in obj.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write(t, item, out);
            }
            out.push(b'}');
        }
        (SqlType::Struct(fields), Value::Object(obj)) => {
            out.push(b'{');
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(&f.name, out);
                out.push(b':');
                write(&f.ty, lookup(obj, &f.name).unwrap_or(&Value::Null), out);
            }
            out.push(b'}');
        }
        _ => write_plain(v, out),
    }
}

/// Text JSON accepts as a number as it stands (canonical decimals always are).
fn is_number_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && (int == "0" || !int.starts_with('0'))
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::types::{normalize, StructField};

    #[test]
    fn key_objects_are_written_as_serde_json_writes_them() {
        let col = |name: &str| Column { name: name.into(), ty: SqlType::String, key: true };
        let cols = [col("K"), col("quote\"d"), col("WINDOWSTART"), col("n")];
        let cells =
            vec![Value::from("caf\u{e9} \"x\"\n"), Value::from(-1.5), Value::from(1_700_000_000_000i64), Value::Null];
        let expected: serde_json::Map<String, Value> =
            cols.iter().zip(&cells).map(|(c, v)| (c.name.clone(), v.clone())).collect();
        assert_eq!(
            String::from_utf8(encode_key_object(cols.iter().zip(&cells))).unwrap(),
            Value::Object(expected).to_string()
        );
    }

    #[test]
    fn decimal_fields_keep_the_numbers_text() {
        let dec =
            |name: &str| Column { name: name.into(), ty: SqlType::Decimal { precision: 20, scale: 2 }, key: false };
        let cols = vec![dec("a"), dec("B"), dec("c"), Column { name: "x".into(), ty: SqlType::Double, key: false }];
        let text = r#"{"s": "}\"", "n": {"a": [1, "]"]}, "a": 1.5, "a": 123456789012345.67, "b": -99999999999999999.99,
            "B2": 1, "c": null, "x": 0.1}"#;
        let cells = decode_value(&cols, text.as_bytes()).unwrap();
        assert_eq!(cells[0], Value::from("123456789012345.67"));
        assert_eq!(cells[1], Value::from("-99999999999999999.99"));
        assert_eq!(cells[2], Value::Null);
        assert_eq!(cells[3], serde_json::json!(0.1));
        for (c, v) in cols[..2].iter().zip(&cells) {
            assert_eq!(normalize(&c.ty, v.clone()).unwrap(), *v);
        }
    }

    /// The one-pass decoder agrees with parsing the object and looking each column up.
    #[test]
    fn one_pass_decoding_matches_lookup() {
        let col = |name: &str| Column { name: name.into(), ty: SqlType::String, key: false };
        let cols = vec![col("id"), col("Name"), col("name"), col("CITY"), col("missing")];
        for text in [
            r#"{"id": 1, "name": "a", "NAME": "b", "city": "x", "City": "y", "other": [1, {"id": 2}]}"#,
            r#"{"ID": 1, "Id": 2, "ID": 3, "nAmE": {"k": null}, "city": "c\u00e9", "ci\u0074y": "escaped"}"#,
            r#" { "id" : "dup", "id": "last" } "#,
            r#"{}"#,
        ] {
            let parsed: Value = serde_json::from_str(text).unwrap();
            let Value::Object(obj) = parsed else { unreachable!() };
            let expected: Vec<Value> =
                cols.iter().map(|c| lookup(&obj, &c.name).cloned().unwrap_or(Value::Null)).collect();
            assert_eq!(decode_value(&cols, text.as_bytes()).unwrap(), expected, "{text}");
        }
        for bad in [&b"{"[..], b"{\"id\": 1,}", b"{\"id\": 1} x", b"[1]", b"1", b"", b"\x0c{}"] {
            let fast = decode_value(&cols, bad).unwrap_err();
            let parsed = serde_json::from_slice::<Value>(bad);
            let expected = match parsed {
                Err(e) => format!("value is not valid JSON: {e}"),
                Ok(_) => "value is not a JSON object".to_string(),
            };
            assert_eq!(fast, expected, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn typed_encoding_round_trips_decimals_exactly() {
        let dec = SqlType::Decimal { precision: 30, scale: 4 };
        let cols = vec![
            Column { name: "d".into(), ty: dec.clone(), key: false },
            Column {
                name: "s".into(),
                ty: SqlType::Struct(vec![StructField { name: "x".into(), ty: dec.clone() }]),
                key: false,
            },
        ];
        let row = vec![
            normalize(&dec, Value::from("12345678901234567890.1234")).unwrap(),
            serde_json::json!({"x": "-0.5000"}),
        ];
        let bytes = encode_value(&cols, &row);
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), r#"{"d":12345678901234567890.1234,"s":{"x":-0.5000}}"#);
        // Without arbitrary precision serde_json reads the number as f64: decode the raw text.
        let back = decode_value(&cols, &bytes).unwrap();
        assert!(normalize(&cols[1].ty, back[1].clone()).is_ok());
        assert!(decode_value(&cols, b"[1]").is_err());
        assert!(decode_value(&cols, b"{").is_err());
        assert!(is_number_text("0.5") && !is_number_text("01") && !is_number_text("1e5") && !is_number_text("-"));
    }
}
