//! The JSON value format: one object per record, fields matched to columns by name (exactly,
//! else case-insensitively). Decoding returns the raw field values for `types::normalize`;
//! encoding is type-directed so DECIMAL cells (exact text) are written as JSON numbers,
//! DATE as days, TIME as milliseconds and BYTES as base64, as ksqlDB writes them.

use serde_json::Value;

use super::types::{lookup, SqlType};
use super::Column;

/// The value object's field for each column (NULL where absent), not yet checked.
pub fn decode_value(columns: &[Column], value: &[u8]) -> Result<Vec<Value>, String> {
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
