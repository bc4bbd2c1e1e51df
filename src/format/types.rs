//! Declared column types (`SqlType`) and the cell values they hold.
//!
//! Owns the type names (ksqlDB and Postgres spellings), the mapping to and from Arrow, and
//! `normalize`: turning a decoded JSON value into the one canonical cell of its type (the
//! form rows take in operators, state and INSERT). Canonical cells: DATE is days since the
//! epoch, TIME milliseconds since midnight, DECIMAL a string with exactly `scale` digits
//! after the point, BYTES base64, STRUCT an object in declared field order, MAP an object,
//! ARRAY an array.

use std::sync::Arc;

use base64::Engine as _;
use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Column types a stream or table may declare. Nested types make this recursive; the
/// first six variants keep their serialized names (catalog entries written before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    String,
    Int,
    BigInt,
    Double,
    Boolean,
    Timestamp,
    Date,
    Time,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Bytes,
    Array(Box<SqlType>),
    /// `MAP<STRING, T>`: keys are strings, as in ksqlDB.
    Map(Box<SqlType>),
    Struct(Vec<StructField>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StructField {
    pub name: String,
    pub ty: SqlType,
}

/// The largest DECIMAL precision (Arrow's Decimal128).
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// How deep a declared ARRAY, MAP or STRUCT type may nest. The catalog keeps types as JSON,
/// which serde_json reads back at most 128 levels deep (a STRUCT level takes three), so a
/// deeper type would make the catalog unreadable at the next start.
pub const MAX_TYPE_NESTING: usize = 32;

const MS_PER_DAY: i64 = 86_400_000;

impl SqlType {
    /// Parses a type name without parameters (ksqlDB and Postgres spellings). DECIMAL and
    /// the nested types take parameters and are parsed by the SQL frontend.
    pub fn parse(name: &str) -> Option<SqlType> {
        Some(match name.to_ascii_uppercase().as_str() {
            "STRING" | "VARCHAR" | "TEXT" | "CHARACTER VARYING" => SqlType::String,
            "INT" | "INTEGER" | "INT4" => SqlType::Int,
            "BIGINT" | "INT8" | "LONG" => SqlType::BigInt,
            "DOUBLE" | "DOUBLE PRECISION" | "FLOAT" | "FLOAT8" | "REAL" => SqlType::Double,
            "BOOLEAN" | "BOOL" => SqlType::Boolean,
            "TIMESTAMP" => SqlType::Timestamp,
            "DATE" => SqlType::Date,
            "TIME" => SqlType::Time,
            "BYTES" | "BYTEA" => SqlType::Bytes,
            _ => return None,
        })
    }

    pub fn from_arrow(dt: &DataType) -> Option<SqlType> {
        Some(match dt {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::String,
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => SqlType::Int,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => SqlType::BigInt,
            DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal256(_, _) => SqlType::Double,
            DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
                match u8::try_from(*s) {
                    Ok(scale) if *p <= MAX_DECIMAL_PRECISION && scale <= *p => {
                        SqlType::Decimal { precision: *p, scale }
                    }
                    _ => SqlType::Double,
                }
            }
            DataType::Boolean => SqlType::Boolean,
            DataType::Timestamp(_, _) => SqlType::Timestamp,
            DataType::Date32 | DataType::Date64 => SqlType::Date,
            DataType::Time32(_) | DataType::Time64(_) => SqlType::Time,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                SqlType::Bytes
            }
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::FixedSizeList(f, _) => SqlType::Array(Box::new(SqlType::from_arrow(f.data_type())?)),
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => {
                    if SqlType::from_arrow(kv[0].data_type()) != Some(SqlType::String) {
                        return None;
                    }
                    SqlType::Map(Box::new(SqlType::from_arrow(kv[1].data_type())?))
                }
                _ => return None,
            },
            DataType::Struct(fields) => SqlType::Struct(
                fields
                    .iter()
                    .map(|f| Some(StructField { name: f.name().clone(), ty: SqlType::from_arrow(f.data_type())? }))
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => return None,
        })
    }

    pub fn arrow(&self) -> DataType {
        match self {
            SqlType::String => DataType::Utf8,
            SqlType::Int => DataType::Int32,
            SqlType::BigInt => DataType::Int64,
            SqlType::Double => DataType::Float64,
            SqlType::Boolean => DataType::Boolean,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
            SqlType::Date => DataType::Date32,
            SqlType::Time => DataType::Time32(TimeUnit::Millisecond),
            SqlType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale as i8),
            SqlType::Bytes => DataType::Binary,
            SqlType::Array(t) => DataType::List(Arc::new(Field::new_list_field(t.arrow(), true))),
            SqlType::Map(t) => {
                let kv =
                    Fields::from(vec![Field::new("key", DataType::Utf8, false), Field::new("value", t.arrow(), true)]);
                DataType::Map(Arc::new(Field::new("entries", DataType::Struct(kv), false)), false)
            }
            SqlType::Struct(fields) => {
                DataType::Struct(fields.iter().map(|f| Field::new(&f.name, f.ty.arrow(), true)).collect())
            }
        }
    }

    pub fn name(&self) -> String {
        match self {
            SqlType::String => "STRING".into(),
            SqlType::Int => "INTEGER".into(),
            SqlType::BigInt => "BIGINT".into(),
            SqlType::Double => "DOUBLE".into(),
            SqlType::Boolean => "BOOLEAN".into(),
            SqlType::Timestamp => "TIMESTAMP".into(),
            SqlType::Date => "DATE".into(),
            SqlType::Time => "TIME".into(),
            SqlType::Decimal { precision, scale } => format!("DECIMAL({precision}, {scale})"),
            SqlType::Bytes => "BYTES".into(),
            SqlType::Array(t) => format!("ARRAY<{}>", t.name()),
            SqlType::Map(t) => format!("MAP<STRING, {}>", t.name()),
            SqlType::Struct(fields) => {
                let inner: Vec<String> = fields.iter().map(|f| format!("{} {}", f.name, f.ty.name())).collect();
                format!("STRUCT<{}>", inner.join(", "))
            }
        }
    }

    /// ARRAY, MAP or STRUCT.
    pub fn is_nested(&self) -> bool {
        match self {
            SqlType::Array(_) | SqlType::Map(_) | SqlType::Struct(_) => true,
            SqlType::String
            | SqlType::Int
            | SqlType::BigInt
            | SqlType::Double
            | SqlType::Boolean
            | SqlType::Timestamp
            | SqlType::Date
            | SqlType::Time
            | SqlType::Decimal { .. }
            | SqlType::Bytes => false,
        }
    }
}

/// A value that does not fit its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch;

/// Turns a decoded value into the canonical cell of `ty`; numbers may widen, numbers and
/// booleans sent as strings are read as such (like ksqlDB's JSON format). `Err(Mismatch)` when
/// the value does not fit; the caller names the column.
pub fn normalize(ty: &SqlType, v: Value) -> Result<Value, Mismatch> {
    if v.is_null() {
        return Ok(v);
    }
    match ty {
        SqlType::String => match v {
            Value::String(_) => Ok(v),
            // Numbers and booleans read as strings keep their JSON text.
            Value::Number(_) | Value::Bool(_) => Ok(Value::String(v.to_string())),
            _ => Err(Mismatch),
        },
        SqlType::Int => match int_of(&v) {
            Some(i) if i32::try_from(i).is_ok() => Ok(Value::from(i)),
            _ => Err(Mismatch),
        },
        SqlType::BigInt | SqlType::Timestamp => int_of(&v).map(Value::from).ok_or(Mismatch),
        SqlType::Double => match v {
            Value::Number(_) => Ok(v),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Value::from(f)),
                _ => Err(Mismatch),
            },
            _ => Err(Mismatch),
        },
        SqlType::Boolean => match v {
            Value::Bool(_) => Ok(v),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(Mismatch),
            },
            _ => Err(Mismatch),
        },
        SqlType::Date => {
            let days = match &v {
                Value::String(s) if s.contains('-') && !s.trim().starts_with('-') => {
                    parse_date(s.trim()).ok_or(Mismatch)?
                }
                _ => int_of(&v).ok_or(Mismatch)?,
            };
            i32::try_from(days).map(Value::from).map_err(|_| Mismatch)
        }
        SqlType::Time => {
            let ms = match &v {
                Value::String(s) if s.contains(':') => parse_time(s.trim()).ok_or(Mismatch)?,
                _ => int_of(&v).ok_or(Mismatch)?,
            };
            if (0..MS_PER_DAY).contains(&ms) {
                Ok(Value::from(ms))
            } else {
                Err(Mismatch)
            }
        }
        SqlType::Decimal { precision, scale } => {
            let text = match &v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_string(),
                _ => return Err(Mismatch),
            };
            let unscaled = parse_decimal(&text, *precision, *scale).ok_or(Mismatch)?;
            Ok(Value::String(format_decimal(unscaled, *scale)))
        }
        SqlType::Bytes => match &v {
            Value::String(s) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|_| Mismatch)?;
                Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)))
            }
            _ => Err(Mismatch),
        },
        SqlType::Array(t) => match v {
            Value::Array(items) => {
                items.into_iter().map(|i| normalize(t, i)).collect::<Result<_, _>>().map(Value::Array)
            }
            _ => Err(Mismatch),
        },
        SqlType::Map(t) => match v {
            Value::Object(obj) => obj
                .into_iter()
                .map(|(k, v)| normalize(t, v).map(|v| (k, v)))
                .collect::<Result<Map<_, _>, _>>()
                .map(Value::Object),
            _ => Err(Mismatch),
        },
        SqlType::Struct(fields) => match v {
            Value::Object(obj) => {
                let mut out = Map::new();
                for f in fields {
                    let value = lookup(&obj, &f.name).cloned().unwrap_or(Value::Null);
                    out.insert(f.name.clone(), normalize(&f.ty, value)?);
                }
                Ok(Value::Object(out))
            }
            _ => Err(Mismatch),
        },
    }
}

/// A JSON object's field, matched exactly, else case-insensitively.
pub fn lookup<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

/// 'YYYY-MM-DD' → days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.signed_duration_since(chrono::NaiveDate::default()).num_days())
}

/// 'HH:MM[:SS[.fff]]' → milliseconds since midnight.
pub fn parse_time(s: &str) -> Option<i64> {
    use chrono::Timelike;
    let t = chrono::NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
        .or_else(|_| chrono::NaiveTime::parse_from_str(s, "%H:%M"))
        .ok()?;
    Some(t.num_seconds_from_midnight() as i64 * 1000 + (t.nanosecond() / 1_000_000).min(999) as i64)
}

/// Parses decimal text (`-12.5`, `1e3`) into the unscaled value at `scale`, rounding half
/// up; `None` when it is not a number or needs more than `precision` digits.
pub fn parse_decimal(text: &str, precision: u8, scale: u8) -> Option<i128> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i32>().ok()?),
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let digits = digits.trim_start_matches('0');
    // value = digits × 10^(exponent − frac_len); we want value × 10^scale.
    let shift = exponent as i64 - frac_part.len() as i64 + scale as i64;
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() as i64 + shift > precision as i64 {
        return None;
    }
    let mut unscaled: i128 = 0;
    let mut round_up = false;
    let keep = (digits.len() as i64 + shift).max(0) as usize;
    for (i, b) in digits.bytes().enumerate() {
        if i < keep {
            unscaled = unscaled.checked_mul(10)?.checked_add((b - b'0') as i128)?;
        } else {
            round_up = i == keep && b >= b'5';
            break;
        }
    }
    for _ in 0..shift.max(0) {
        unscaled = unscaled.checked_mul(10)?;
    }
    if round_up {
        unscaled += 1;
        if unscaled >= 10i128.pow(precision as u32) {
            return None;
        }
    }
    Some(if negative { -unscaled } else { unscaled })
}

/// An unscaled decimal as text with exactly `scale` digits after the point.
pub fn format_decimal(unscaled: i128, scale: u8) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_round_and_format() {
        assert_eq!(parse_decimal("12.5", 5, 2), Some(1250));
        assert_eq!(parse_decimal("-0.005", 5, 2), Some(-1));
        assert_eq!(parse_decimal("1e2", 5, 2), Some(10000));
        assert_eq!(parse_decimal("1234", 5, 2), None);
        assert_eq!(parse_decimal("999.995", 5, 2), None);
        assert_eq!(parse_decimal("abc", 5, 2), None);
        assert_eq!(parse_decimal("", 5, 2), None);
        assert_eq!(parse_decimal(".", 5, 2), None);
        assert_eq!(parse_decimal("1e999999999", 5, 2), None);
        assert_eq!(parse_decimal("1e-999999999", 5, 2), Some(0));
        assert_eq!(format_decimal(1250, 2), "12.50");
        assert_eq!(format_decimal(-1, 2), "-0.01");
        assert_eq!(format_decimal(7, 0), "7");
    }

    #[test]
    fn catalog_names_of_existing_types_still_read() {
        for (json, ty) in
            [("\"String\"", SqlType::String), ("\"BigInt\"", SqlType::BigInt), ("\"Timestamp\"", SqlType::Timestamp)]
        {
            assert_eq!(serde_json::from_str::<SqlType>(json).unwrap(), ty);
            assert_eq!(serde_json::to_string(&ty).unwrap(), json);
        }
        let nested = SqlType::Array(Box::new(SqlType::Decimal { precision: 4, scale: 1 }));
        assert_eq!(serde_json::from_str::<SqlType>(&serde_json::to_string(&nested).unwrap()).unwrap(), nested);
    }

    #[test]
    fn normalize_dates_times_bytes_and_nested() {
        assert_eq!(normalize(&SqlType::Date, Value::from("1970-01-02")), Ok(Value::from(1)));
        assert_eq!(normalize(&SqlType::Date, Value::from(-3)), Ok(Value::from(-3)));
        assert!(normalize(&SqlType::Date, Value::from("2024-13-01")).is_err());
        assert_eq!(normalize(&SqlType::Time, Value::from("00:00:01.5")), Ok(Value::from(1500)));
        assert!(normalize(&SqlType::Time, Value::from(86_400_000)).is_err());
        assert_eq!(normalize(&SqlType::Bytes, Value::from("AQI=")), Ok(Value::from("AQI=")));
        assert!(normalize(&SqlType::Bytes, Value::from("not base64!")).is_err());
        let st = SqlType::Struct(vec![
            StructField { name: "a".into(), ty: SqlType::Int },
            StructField { name: "b".into(), ty: SqlType::Array(Box::new(SqlType::String)) },
        ]);
        let v = normalize(&st, serde_json::json!({"B": ["x"], "A": "2", "c": 1})).unwrap();
        assert_eq!(v.to_string(), r#"{"a":2,"b":["x"]}"#);
        assert!(normalize(&st, serde_json::json!({"a": "x"})).is_err());
        assert!(normalize(&SqlType::Map(Box::new(SqlType::Int)), serde_json::json!([1])).is_err());
    }
}
