//! ksqlDB's KAFKA format: one primitive value as Kafka's own serializers write it. STRING is
//! UTF-8, INT 4 bytes and BIGINT 8 bytes big-endian, DOUBLE an 8-byte big-endian IEEE 754,
//! BYTES the raw bytes. Used for record keys and for values with exactly one column.

use base64::Engine as _;
use serde_json::Value;

use super::types::SqlType;

/// Whether the KAFKA value format holds `ty` (ksqlDB rejects BOOLEAN and the rest).
pub fn supports_value(ty: &SqlType) -> bool {
    match ty {
        SqlType::String | SqlType::Int | SqlType::BigInt | SqlType::Double | SqlType::Bytes => true,
        SqlType::Boolean
        | SqlType::Timestamp
        | SqlType::Date
        | SqlType::Time
        | SqlType::Decimal { .. }
        | SqlType::Array(_)
        | SqlType::Map(_)
        | SqlType::Struct(_) => false,
    }
}

/// Whether a KAFKA key holds `ty` (keys also take TIMESTAMP and BOOLEAN, as Eddy always did).
pub fn supports_key(ty: &SqlType) -> bool {
    supports_value(ty) || matches!(ty, SqlType::Timestamp | SqlType::Boolean)
}

/// Decodes one primitive; the result is a canonical cell of `ty`.
pub fn decode(ty: &SqlType, bytes: &[u8]) -> Result<Value, String> {
    let exact = |n: usize| -> Result<&[u8], String> {
        if bytes.len() == n {
            Ok(bytes)
        } else {
            Err(format!("{} in KAFKA format is {n} bytes, got {}", ty.name(), bytes.len()))
        }
    };
    Ok(match ty {
        SqlType::String => Value::String(String::from_utf8(bytes.to_vec()).map_err(|_| "STRING is not UTF-8")?),
        SqlType::Int => Value::from(i32::from_be_bytes(exact(4)?.try_into().map_err(|_| "INT")?)),
        SqlType::BigInt | SqlType::Timestamp => {
            Value::from(i64::from_be_bytes(exact(8)?.try_into().map_err(|_| "BIGINT")?))
        }
        SqlType::Double => {
            let f = f64::from_be_bytes(exact(8)?.try_into().map_err(|_| "DOUBLE")?);
            serde_json::Number::from_f64(f).map(Value::Number).ok_or("DOUBLE is not a finite number")?
        }
        SqlType::Boolean => Value::Bool(exact(1)?[0] != 0),
        SqlType::Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        SqlType::Date
        | SqlType::Time
        | SqlType::Decimal { .. }
        | SqlType::Array(_)
        | SqlType::Map(_)
        | SqlType::Struct(_) => return Err(format!("the KAFKA format does not hold {}", ty.name())),
    })
}

/// Encodes one canonical cell; `None` for NULL (a null key or value).
pub fn encode(ty: &SqlType, v: &Value) -> Option<Vec<u8>> {
    if v.is_null() {
        return None;
    }
    match ty {
        SqlType::String => Some(match v {
            Value::String(s) => s.as_bytes().to_vec(),
            other => other.to_string().into_bytes(),
        }),
        SqlType::Int => v.as_i64().map(|i| (i as i32).to_be_bytes().to_vec()),
        SqlType::BigInt | SqlType::Timestamp => v.as_i64().map(|i| i.to_be_bytes().to_vec()),
        SqlType::Double => v.as_f64().map(|f| f.to_be_bytes().to_vec()),
        SqlType::Boolean => v.as_bool().map(|b| vec![b as u8]),
        SqlType::Bytes => v.as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()),
        // Not declarable (the DDL checks); written as JSON text rather than lost.
        SqlType::Date
        | SqlType::Time
        | SqlType::Decimal { .. }
        | SqlType::Array(_)
        | SqlType::Map(_)
        | SqlType::Struct(_) => Some(v.to_string().into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip_and_bad_lengths_fail() {
        for (ty, v) in [
            (SqlType::String, Value::from("héllo")),
            (SqlType::Int, Value::from(-7)),
            (SqlType::BigInt, Value::from(1i64 << 40)),
            (SqlType::Double, Value::from(2.5)),
            (SqlType::Bytes, Value::from("AAEC")),
        ] {
            let bytes = encode(&ty, &v).unwrap();
            assert_eq!(decode(&ty, &bytes).unwrap(), v);
        }
        assert_eq!(encode(&SqlType::Int, &Value::from(1)).unwrap(), vec![0, 0, 0, 1]);
        assert!(decode(&SqlType::Int, &[1, 2, 3]).is_err());
        assert!(decode(&SqlType::BigInt, &[]).is_err());
        assert!(decode(&SqlType::String, &[0xff, 0xfe]).is_err());
        assert!(decode(&SqlType::Double, &f64::NAN.to_be_bytes()).is_err());
        assert!(!supports_value(&SqlType::Boolean));
    }
}
