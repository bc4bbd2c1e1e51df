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
    if columns.len() > 64 || value.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) != Some(&b'{') {
        return decode_value_through_map(columns, value);
    }
    let mut de = serde_json::Deserializer::from_slice(value);
    let cells = serde::Deserializer::deserialize_map(&mut de, Fields { columns }).map_err(invalid)?;
    de.end().map_err(invalid)?;
    Ok(cells)
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

/// Writes the value columns of a row as one JSON object.
pub fn encode_value(columns: &[Column], row: &[Value]) -> Vec<u8> {
    let mut out = String::from("{");
    for (i, (c, v)) in columns.iter().zip(row).filter(|(c, _)| !c.key).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(c.name.clone()).to_string());
        out.push(':');
        write(&c.ty, v, &mut out);
    }
    out.push('}');
    out.into_bytes()
}

/// Writes one cell as JSON text.
pub fn write(ty: &SqlType, v: &Value, out: &mut String) {
    match (ty, v) {
        (SqlType::Decimal { .. }, Value::String(s)) if is_number_text(s) => out.push_str(s),
        (SqlType::Array(t), Value::Array(items)) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(t, item, out);
            }
            out.push(']');
        }
        (SqlType::Map(t), Value::Object(obj)) => {
            out.push('{');
            for (i, (k, item)) in obj.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write(t, item, out);
            }
            out.push('}');
        }
        (SqlType::Struct(fields), Value::Object(obj)) => {
            out.push('{');
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(f.name.clone()).to_string());
                out.push(':');
                write(&f.ty, lookup(obj, &f.name).unwrap_or(&Value::Null), out);
            }
            out.push('}');
        }
        _ => out.push_str(&v.to_string()),
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
