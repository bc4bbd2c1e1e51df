//! Canonical cells ⇄ Arrow arrays: `rows_to_batch` and `cells_to_array` build arrays of a
//! declared or planned type (nested types included), `cell_at` reads one cell back (for
//! output encoding, state and joins). The cell forms are the ones `types::normalize` makes.

use std::sync::Arc;

use base64::Engine as _;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int32Builder, Int64Builder, ListArray, MapArray, RecordBatch, StringBuilder, StructArray, Time32MillisecondBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, Time32MillisecondType, TimeUnit,
    TimestampMillisecondType,
};
use datafusion::arrow::error::ArrowError;
use serde_json::{Map, Value};

use super::types::{format_decimal, parse_decimal, SqlType};
use super::{arrow_schema, Cell, Column};

/// Builds an Arrow batch from rows of canonical cells.
pub fn rows_to_batch(columns: &[Column], rows: &[Vec<Cell>]) -> Result<RecordBatch, String> {
    let schema = arrow_schema(columns);
    let arrays = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let cells: Vec<&Cell> = rows.iter().map(|r| &r[i]).collect();
            build(&c.ty.arrow(), &cells)
        })
        .collect::<Result<Vec<ArrayRef>, ArrowError>>()
        .map_err(|e| e.to_string())?;
    RecordBatch::try_new(schema, arrays).map_err(|e| e.to_string())
}

/// Builds an array of exactly `dt` from cells.
pub fn cells_to_array(dt: &DataType, cells: &[Cell]) -> Result<ArrayRef, ArrowError> {
    build(dt, &cells.iter().collect::<Vec<_>>())
}

/// `cells_to_array` over borrowed cells (say one column of rows), without copying them.
pub fn cell_refs_to_array(dt: &DataType, cells: &[&Cell]) -> Result<ArrayRef, ArrowError> {
    build(dt, cells)
}

/// Builds the types Eddy declares directly; any other type through its nearest declared
/// type (or text) and a cast.
fn build(dt: &DataType, cells: &[&Cell]) -> Result<ArrayRef, ArrowError> {
    let array: ArrayRef = match dt {
        DataType::Utf8 => {
            let mut b = StringBuilder::new();
            cells.iter().for_each(|v| match v {
                Value::String(s) => b.append_value(s),
                Value::Null => b.append_null(),
                other => b.append_value(other.to_string()),
            });
            Arc::new(b.finish())
        }
        DataType::Int32 => {
            let mut b = Int32Builder::new();
            cells.iter().for_each(|v| b.append_option(v.as_i64().and_then(|i| i32::try_from(i).ok())));
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            cells.iter().for_each(|v| b.append_option(v.as_i64()));
            Arc::new(b.finish())
        }
        DataType::Timestamp(TimeUnit::Millisecond, None) => {
            let mut b = TimestampMillisecondBuilder::new();
            cells.iter().for_each(|v| b.append_option(v.as_i64()));
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::new();
            cells.iter().for_each(|v| b.append_option(v.as_f64()));
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            cells.iter().for_each(|v| b.append_option(v.as_bool()));
            Arc::new(b.finish())
        }
        DataType::Date32 => {
            let mut b = Date32Builder::new();
            cells.iter().for_each(|v| b.append_option(v.as_i64().and_then(|i| i32::try_from(i).ok())));
            Arc::new(b.finish())
        }
        DataType::Time32(TimeUnit::Millisecond) => {
            let mut b = Time32MillisecondBuilder::new();
            cells.iter().for_each(|v| b.append_option(v.as_i64().and_then(|i| i32::try_from(i).ok())));
            Arc::new(b.finish())
        }
        DataType::Decimal128(p, s) if *s >= 0 => {
            let mut b = Decimal128Builder::new().with_precision_and_scale(*p, *s)?;
            cells.iter().for_each(|v| {
                let text = match v {
                    Value::String(t) => Some(t.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
                b.append_option(text.and_then(|t| parse_decimal(&t, *p, *s as u8)));
            });
            Arc::new(b.finish())
        }
        DataType::Binary => {
            let mut b = BinaryBuilder::new();
            cells.iter().for_each(|v| {
                let bytes = v.as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
                b.append_option(bytes);
            });
            Arc::new(b.finish())
        }
        DataType::List(field) => {
            let mut offsets = vec![0i32];
            let mut items: Vec<&Cell> = Vec::new();
            for v in cells {
                if let Value::Array(a) = v {
                    items.extend(a.iter());
                }
                offsets.push(i32::try_from(items.len()).map_err(|_| overflow())?);
            }
            let values = build(field.data_type(), &items)?;
            let nulls = NullBuffer::from(cells.iter().map(|v| v.is_array()).collect::<Vec<bool>>());
            Arc::new(ListArray::try_new(field.clone(), OffsetBuffer::new(offsets.into()), values, Some(nulls))?)
        }
        DataType::Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else { return Err(unsupported(dt)) };
            if kv.len() != 2 {
                return Err(unsupported(dt));
            }
            let mut offsets = vec![0i32];
            let mut keys: Vec<Cell> = Vec::new();
            let mut values: Vec<&Cell> = Vec::new();
            for v in cells {
                if let Value::Object(o) = v {
                    for (k, v) in o {
                        keys.push(Value::String(k.clone()));
                        values.push(v);
                    }
                }
                offsets.push(i32::try_from(keys.len()).map_err(|_| overflow())?);
            }
            let key_array = build(kv[0].data_type(), &keys.iter().collect::<Vec<_>>())?;
            let value_array = build(kv[1].data_type(), &values)?;
            let entries_array = StructArray::try_new(kv.clone(), vec![key_array, value_array], None)?;
            let nulls = NullBuffer::from(cells.iter().map(|v| v.is_object()).collect::<Vec<bool>>());
            Arc::new(MapArray::try_new(
                entries.clone(),
                OffsetBuffer::new(offsets.into()),
                entries_array,
                Some(nulls),
                *sorted,
            )?)
        }
        DataType::Struct(fields) => {
            let children = fields
                .iter()
                .map(|f| {
                    let child: Vec<&Cell> = cells
                        .iter()
                        .map(|v| v.as_object().and_then(|o| super::types::lookup(o, f.name())).unwrap_or(&Value::Null))
                        .collect();
                    build(f.data_type(), &child)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let nulls = NullBuffer::from(cells.iter().map(|v| v.is_object()).collect::<Vec<bool>>());
            if fields.is_empty() {
                Arc::new(StructArray::new_empty_fields(cells.len(), Some(nulls)))
            } else {
                Arc::new(StructArray::try_new(fields.clone(), children, Some(nulls))?)
            }
        }
        other => {
            let via = SqlType::from_arrow(other).map(|t| t.arrow()).filter(|t| t != other).unwrap_or(DataType::Utf8);
            let array = build(&via, cells)?;
            return datafusion::arrow::compute::cast(&array, other);
        }
    };
    Ok(array)
}

fn overflow() -> ArrowError {
    ArrowError::ComputeError("more list items than a batch holds".into())
}

fn unsupported(dt: &DataType) -> ArrowError {
    ArrowError::NotYetImplemented(format!("cells of type {dt}"))
}

/// Reads one cell of an Arrow array back as its canonical JSON form.
pub fn cell_at(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => serde_json::Number::from_f64(array.as_primitive::<Float64Type>().value(row))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Value::from(array.as_primitive::<TimestampMillisecondType>().value(row))
        }
        DataType::Date32 => Value::from(array.as_primitive::<Date32Type>().value(row)),
        DataType::Time32(TimeUnit::Millisecond) => {
            Value::from(array.as_primitive::<Time32MillisecondType>().value(row))
        }
        DataType::Decimal128(_, s) if *s >= 0 => {
            Value::String(format_decimal(array.as_primitive::<Decimal128Type>().value(row), *s as u8))
        }
        DataType::Binary => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(array.as_binary::<i32>().value(row)))
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let obj: Map<String, Value> =
                fields.iter().zip(s.columns()).map(|(f, c)| (f.name().clone(), cell_at(c.as_ref(), row))).collect();
            Value::Object(obj)
        }
        DataType::List(_) => {
            let items = array.as_list::<i32>().value(row);
            Value::Array((0..items.len()).map(|i| cell_at(items.as_ref(), i)).collect())
        }
        DataType::LargeList(_) => {
            let items = array.as_list::<i64>().value(row);
            Value::Array((0..items.len()).map(|i| cell_at(items.as_ref(), i)).collect())
        }
        DataType::FixedSizeList(_, _) => {
            let items = array.as_fixed_size_list().value(row);
            Value::Array((0..items.len()).map(|i| cell_at(items.as_ref(), i)).collect())
        }
        DataType::Map(_, _) => {
            let entries = array.as_map().value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let obj: Map<String, Value> = (0..entries.len())
                .map(|i| {
                    let k = match cell_at(keys.as_ref(), i) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, cell_at(values.as_ref(), i))
                })
                .collect();
            Value::Object(obj)
        }
        other => {
            // Other Arrow types (from expressions): through the nearest declared type, else text.
            let target = match other {
                DataType::Int8 | DataType::Int16 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => {
                    DataType::Int64
                }
                DataType::Float16 | DataType::Float32 => DataType::Float64,
                t => SqlType::from_arrow(t).map(|s| s.arrow()).filter(|s| s != t).unwrap_or(DataType::Utf8),
            };
            if &target == other {
                return Value::Null;
            }
            match datafusion::arrow::compute::cast(&array.slice(row, 1), &target) {
                Ok(a) => cell_at(a.as_ref(), 0),
                Err(_) => Value::Null,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::types::StructField;

    #[test]
    fn nested_cells_round_trip_through_arrow() {
        let ty = SqlType::Struct(vec![
            StructField { name: "a".into(), ty: SqlType::Int },
            StructField { name: "tags".into(), ty: SqlType::Array(Box::new(SqlType::String)) },
            StructField { name: "m".into(), ty: SqlType::Map(Box::new(SqlType::Decimal { precision: 5, scale: 2 })) },
            StructField { name: "d".into(), ty: SqlType::Date },
            StructField { name: "t".into(), ty: SqlType::Time },
            StructField { name: "b".into(), ty: SqlType::Bytes },
        ]);
        let cells = vec![
            serde_json::json!({"a": 1, "tags": ["x", null], "m": {"k": "1.50"}, "d": 19000, "t": 1000, "b": "AQI="}),
            Value::Null,
            serde_json::json!({"a": null, "tags": [], "m": {}, "d": null, "t": null, "b": null}),
        ];
        let array = cells_to_array(&ty.arrow(), &cells).unwrap();
        assert_eq!(array.data_type(), &ty.arrow());
        for (i, c) in cells.iter().enumerate() {
            assert_eq!(&cell_at(array.as_ref(), i), c);
        }
        assert_eq!(SqlType::from_arrow(&ty.arrow()), Some(ty));
    }
}
