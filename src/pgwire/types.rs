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
