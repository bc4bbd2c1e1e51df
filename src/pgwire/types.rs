//! Arrow → Postgres types for results: the type each column is described with, and the
//! values encoded in text or binary. int2/int4/int8, float4/float8, numeric, bool, text,
//! bytea, date, time, timestamp, timestamptz, interval, and one-dimensional arrays of
//! bool/int/float/text are sent as Postgres sends them; structs, maps and nested lists as
//! JSON text.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, IntervalMonthDayNanoType, IntervalUnit,
    TimeUnit, TimestampMicrosecondType,
};
use pgwire::api::results::DataRowEncoder;
use pgwire::api::Type;
use pgwire::error::PgWireResult;

/// The element type of a list Eddy sends as a Postgres array, if it is one.
fn array_element(item: &DataType) -> Option<(Type, DataType)> {
    Some(match item {
        DataType::Boolean => (Type::BOOL_ARRAY, DataType::Boolean),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            (Type::INT4_ARRAY, DataType::Int32)
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => (Type::INT8_ARRAY, DataType::Int64),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => (Type::FLOAT8_ARRAY, DataType::Float64),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => (Type::TEXT_ARRAY, DataType::Utf8),
        _ => return None,
    })
}

/// Types this module encodes itself (the rest is handled by the caller); `None` otherwise.
pub fn special(dt: &DataType) -> Option<(Type, DataType)> {
    Some(match dt {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => (Type::INT2, DataType::Int16),
        DataType::Float16 | DataType::Float32 => (Type::FLOAT4, DataType::Float32),
        DataType::Timestamp(_, Some(_)) => {
            (Type::TIMESTAMPTZ, DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())))
        }
        DataType::Interval(_) => (Type::INTERVAL, DataType::Interval(IntervalUnit::MonthDayNano)),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            let (ty, item) = array_element(f.data_type())?;
            (ty, DataType::List(std::sync::Arc::new(Field::new("item", item, true))))
        }
        _ => return None,
    })
}

/// Encodes one cell of a column already cast to the type `special` chose.
pub fn encode(encoder: &mut DataRowEncoder, c: &ArrayRef, row: usize) -> PgWireResult<bool> {
    let valid = c.is_valid(row);
    match c.data_type() {
        DataType::Int16 => encoder.encode_field(&valid.then(|| c.as_primitive::<Int16Type>().value(row)))?,
        DataType::Float32 => encoder.encode_field(&valid.then(|| c.as_primitive::<Float32Type>().value(row)))?,
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            let us = c.as_primitive::<TimestampMicrosecondType>().value(row);
            encoder.encode_field(&valid.then(|| chrono::DateTime::from_timestamp_micros(us)).flatten())?
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = c.as_primitive::<IntervalMonthDayNanoType>().value(row);
            let interval = pg_interval::Interval::new(v.months, v.days, v.nanoseconds / 1000);
            encoder.encode_field(&valid.then_some(interval))?
        }
        // Only the lists `special` cast to an array element type; others go out as JSON.
        DataType::List(f)
            if matches!(
                f.data_type(),
                DataType::Boolean | DataType::Int32 | DataType::Int64 | DataType::Float64 | DataType::Utf8
            ) =>
        {
            let items = valid.then(|| c.as_list::<i32>().value(row));
            match (f.data_type(), items) {
                (_, None) => encoder.encode_field(&None::<Vec<Option<i32>>>)?,
                (DataType::Boolean, Some(a)) => encoder.encode_field(&a.as_boolean().iter().collect::<Vec<_>>())?,
                (DataType::Int32, Some(a)) => {
                    encoder.encode_field(&a.as_primitive::<Int32Type>().iter().collect::<Vec<_>>())?
                }
                (DataType::Int64, Some(a)) => {
                    encoder.encode_field(&a.as_primitive::<Int64Type>().iter().collect::<Vec<_>>())?
                }
                (DataType::Float64, Some(a)) => {
                    encoder.encode_field(&a.as_primitive::<Float64Type>().iter().collect::<Vec<_>>())?
                }
                (_, Some(a)) => encoder
                    .encode_field(&a.as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>())?,
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Parameter types for Describe: what the client declared in Parse, else what a cast right
/// at the placeholder says (`$1::bigint`, `CAST($1 AS int)`), else text. Drivers that encode
/// by the described type (asyncpg) then send numbers as numbers. Only types whose binary
/// form Eddy reads are inferred; the rest stay text.
pub fn param_types(sql: &str, declared: &[Option<Type>], count: usize) -> Vec<Type> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let mut out: Vec<Type> = (0..count).map(|i| declared.get(i).cloned().flatten().unwrap_or(Type::UNKNOWN)).collect();
    let tokens: Vec<Token> = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let type_of = |t: Option<&Token>| -> Option<Type> {
        let Some(Token::Word(w)) = t else { return None };
        Some(match w.value.to_ascii_lowercase().as_str() {
            "int2" | "smallint" => Type::INT2,
            "int" | "int4" | "integer" => Type::INT4,
            "int8" | "bigint" => Type::INT8,
            "float4" | "real" => Type::FLOAT4,
            "float8" | "double" => Type::FLOAT8,
            "bool" | "boolean" => Type::BOOL,
            _ => return None,
        })
    };
    for (i, t) in tokens.iter().enumerate() {
        let Token::Placeholder(p) = t else { continue };
        let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()).filter(|n| (1..=count).contains(n))
        else {
            continue;
        };
        if out[n - 1] != Type::UNKNOWN {
            continue;
        }
        // `$n::oid[]`: drivers send arrays of oids (asyncpg's type introspection).
        let is_array = matches!((tokens.get(i + 3), tokens.get(i + 4)), (Some(Token::LBracket), Some(Token::RBracket)));
        let array_of = |t: Option<&Token>| -> Option<Type> {
            let Some(Token::Word(w)) = t else { return None };
            Some(match w.value.to_ascii_lowercase().as_str() {
                "oid" => Type::OID_ARRAY,
                "int4" | "int" | "integer" => Type::INT4_ARRAY,
                "int8" | "bigint" => Type::INT8_ARRAY,
                "text" => Type::TEXT_ARRAY,
                _ => return None,
            })
        };
        let cast = match (tokens.get(i + 1), i.checked_sub(2).map(|j| (&tokens[j], &tokens[j + 1]))) {
            (Some(Token::DoubleColon), _) if is_array => array_of(tokens.get(i + 2)),
            (Some(Token::DoubleColon), _) => type_of(tokens.get(i + 2)),
            (Some(Token::Word(w)), Some((Token::Word(c), Token::LParen)))
                if w.value.eq_ignore_ascii_case("as") && c.value.eq_ignore_ascii_case("cast") =>
            {
                type_of(tokens.get(i + 2))
            }
            _ => None,
        };
        if let Some(ty) = cast {
            out[n - 1] = ty;
        }
    }
    out.into_iter().map(|t| if t == Type::UNKNOWN { Type::TEXT } else { t }).collect()
}

/// A one-dimensional array parameter in Postgres's binary layout, as array text `{a,b}`
/// (elements of oid, int4, int8 or text; NULL elements are refused).
pub fn binary_array_param(bytes: &[u8]) -> Result<String, String> {
    let int = |at: usize, n: usize| -> Result<i64, String> {
        let b = bytes.get(at..at + n).ok_or("array parameter cut short")?;
        Ok(match n {
            4 => i32::from_be_bytes(b.try_into().expect("4 bytes")) as i64,
            _ => i64::from_be_bytes(b.try_into().expect("8 bytes")),
        })
    };
    let ndim = int(0, 4)?;
    let elem = int(8, 4)? as u32;
    if ndim == 0 {
        return Ok("{}".into());
    }
    if ndim != 1 {
        return Err(format!("array parameters of {ndim} dimensions"));
    }
    let count = int(12, 4)?;
    let mut at = 20;
    let mut out = Vec::new();
    for _ in 0..count.max(0) {
        let len = int(at, 4)?;
        at += 4;
        if len < 0 {
            return Err("NULL in an array parameter".into());
        }
        let len = len as usize;
        let value = match elem {
            26 => (int(at, 4)? as u32).to_string(),
            23 => int(at, 4)?.to_string(),
            20 => int(at, 8)?.to_string(),
            _ => {
                let text = String::from_utf8_lossy(bytes.get(at..at + len).ok_or("array parameter cut short")?);
                format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
            }
        };
        out.push(value);
        at += len;
    }
    Ok(format!("{{{}}}", out.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_types_come_from_casts_or_the_client() {
        let sql = "SELECT $1::BIGINT + 1, CAST($2 AS int), $3, $4::bool, $5::oid[]";
        assert_eq!(param_types(sql, &[], 5), vec![Type::INT8, Type::INT4, Type::TEXT, Type::BOOL, Type::OID_ARRAY]);
        assert_eq!(param_types(sql, &[None, None, Some(Type::FLOAT8)], 5)[2], Type::FLOAT8);
    }

    #[test]
    fn binary_array_parameters_become_array_text() {
        // ndim 1, no nulls, element oid 26 (oid), 2 elements from 1; then (len, value) pairs.
        let mut b = Vec::new();
        for v in [1i32, 0, 26, 2, 1] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        for oid in [1016u32, 20] {
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&oid.to_be_bytes());
        }
        assert_eq!(binary_array_param(&b).unwrap(), "{1016,20}");
        assert!(binary_array_param(&b[..10]).is_err());
    }
}
