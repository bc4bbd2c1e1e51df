//! `VALUE_FORMAT='AVRO'`: Confluent's wire format (magic byte 0, the writer schema's id as 4
//! big-endian bytes, the Avro body), with schemas from the Schema Registry (`registry.rs`).
//!
//! Decoding reads each record with its own writer schema and takes the fields by column name
//! (case-insensitively), guided by the column types. Encoding writes a row with the schema the
//! relation registered (`RelationDef::value_schema_id`), whose fields are the value columns.
//! Columns of a relation declared without any are inferred from a subject's schema
//! (`columns_of`), and `schema_for` gives the schema a query's output registers, in ksqlDB's
//! shape (every field optional).

use std::collections::HashMap;

use apache_avro::schema::{RecordSchema, UnionSchema};
use apache_avro::types::Value as Avro;
use apache_avro::{Decimal, Schema as AvroSchema};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::types::{format_decimal, parse_decimal, MAX_DECIMAL_PRECISION};
use super::{Column, SqlType, StructField};

/// Confluent's magic byte.
const MAGIC: u8 = 0;

/// The writer schema's id of a framed value, and the Avro body.
pub fn unframe(value: &[u8]) -> Result<(u32, &[u8]), String> {
    match value {
        [MAGIC, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [MAGIC, ..] => Err("AVRO value shorter than its 5-byte header".into()),
        _ => Err(format!(
            "AVRO value does not start with the Schema Registry's magic byte 0 (first byte {})",
            value.first().map_or("none".to_string(), |b| b.to_string())
        )),
    }
}

/// Whether a schema refers to a record inside itself. Such values can nest as deep as their
/// bytes allow, and the Avro reader recurses once per level: they are not read.
pub fn is_recursive(schema: &AvroSchema) -> bool {
    fn walk(s: &AvroSchema, enclosing: &mut Vec<String>) -> bool {
        match s {
            AvroSchema::Ref { name } => {
                enclosing.iter().any(|n| *n == name.fullname(None) || n.as_str() == name.name())
            }
            AvroSchema::Record(r) => {
                enclosing.push(r.name.fullname(None));
                let found = r.fields.iter().any(|f| walk(&f.schema, enclosing));
                enclosing.pop();
                found
            }
            AvroSchema::Array(a) => walk(&a.items, enclosing),
            AvroSchema::Map(m) => walk(&m.types, enclosing),
            AvroSchema::Union(u) => u.variants().iter().any(|v| walk(v, enclosing)),
            _ => false,
        }
    }
    walk(schema, &mut Vec::new())
}

/// Decodes a framed Avro value into a cell per column (NULL for key columns).
pub fn decode_value(columns: &[Column], value: &[u8]) -> Result<Vec<Value>, String> {
    let (id, body) = unframe(value)?;
    let registry = crate::registry::global().ok_or("no Schema Registry")?;
    let schema = registry.avro(id).map_err(|e| format!("AVRO value's schema id {id}: {}", e.message))?;
    decode_with(&schema, id, columns, body)
}

/// A framed Avro value as JSON, read with its writer schema (the REST Proxy's `avro`
/// consumers show records so): records as objects, unions as their branch's value, bytes
/// as arrays of numbers.
pub fn framed_to_json(value: &[u8]) -> Result<Value, String> {
    let (id, mut body) = unframe(value)?;
    let registry = crate::registry::global().ok_or("no Schema Registry")?;
    let schema = registry.avro(id).map_err(|e| format!("AVRO value's schema id {id}: {}", e.message))?;
    let datum = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .and_then(|reader| reader.read_value(&mut body))
        .map_err(|e| format!("AVRO value does not decode with schema {id}: {e}"))?;
    Value::try_from(datum).map_err(|e| format!("AVRO value of schema {id} has no JSON form: {e}"))
}

/// Decodes an Avro body (without framing) written with `schema` (registered as `id`).
pub fn decode_with(schema: &AvroSchema, id: u32, columns: &[Column], mut body: &[u8]) -> Result<Vec<Value>, String> {
    let datum = apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()
        .and_then(|reader| reader.read_value(&mut body))
        .map_err(|e| format!("AVRO value does not decode with schema {id}: {e}"))?;
    if !body.is_empty() {
        return Err(format!("AVRO value has {} bytes past its datum (schema {id})", body.len()));
    }
    let datum = unwrap_union(datum);
    let values: Vec<&Column> = columns.iter().filter(|c| !c.key).collect();
    match datum {
        Avro::Record(fields) => {
            let mut by_name: HashMap<String, Avro> =
                fields.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
            let record = match schema {
                AvroSchema::Record(r) => Some(r),
                _ => None,
            };
            columns
                .iter()
                .map(|c| {
                    if c.key {
                        return Ok(Value::Null);
                    }
                    match by_name.remove(&c.name.to_ascii_lowercase()) {
                        Some(v) => {
                            let ty = record.and_then(|r| field_decimal(r, &c.name)).unwrap_or_else(|| c.ty.clone());
                            to_cell(v, &ty).map_err(|e| format!("column {}: {e}", c.name))
                        }
                        None => Ok(Value::Null),
                    }
                })
                .collect()
        }
        // A value that is not a record is the one value column (ksqlDB's unwrapped single value).
        other if values.len() == 1 => {
            let cell = to_cell(other, &values[0].ty).map_err(|e| format!("column {}: {e}", values[0].name))?;
            Ok(columns.iter().map(|c| if c.key { Value::Null } else { cell.clone() }).collect())
        }
        other => Err(format!("AVRO value is {}, not a record", kind(&other))),
    }
}

/// A framed Avro datum as one column's cell: an unwrapped single key, whose datum is the
/// column itself (a record too, for a STRUCT key).
pub fn decode_single(c: &Column, value: &[u8]) -> Result<Value, String> {
    let (id, mut body) = unframe(value)?;
    let registry = crate::registry::global().ok_or("no Schema Registry")?;
    let schema = registry.avro(id).map_err(|e| format!("AVRO schema id {id}: {}", e.message))?;
    let datum = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .and_then(|reader| reader.read_value(&mut body))
        .map_err(|e| format!("AVRO datum does not decode with schema {id}: {e}"))?;
    if !body.is_empty() {
        return Err(format!("AVRO datum has {} bytes past its end (schema {id})", body.len()));
    }
    let ty = schema_decimal(&schema).unwrap_or_else(|| c.ty.clone());
    to_cell(datum, &ty).map_err(|e| format!("column {}: {e}", c.name))
}

/// One column's cell as a framed Avro datum of registered schema `schema_id` (an unwrapped
/// single key).
pub fn encode_single(c: &Column, v: &Value, schema_id: u32) -> Result<Vec<u8>, String> {
    let registry = crate::registry::global().ok_or("no Schema Registry")?;
    let schema = registry.avro(schema_id).map_err(|e| e.message)?;
    let ty = schema_decimal(&schema).unwrap_or_else(|| c.ty.clone());
    let datum = to_avro(v, &ty)?.resolve(&schema).map_err(|e| format!("column {}: {e}", c.name))?;
    frame(schema_id, &schema, datum)
}

/// The DECIMAL type of a schema that is a decimal, optional or not.
fn schema_decimal(schema: &AvroSchema) -> Option<SqlType> {
    let inner = match schema {
        AvroSchema::Union(u) => u.variants().iter().find(|v| **v != AvroSchema::Null)?,
        other => other,
    };
    match inner {
        AvroSchema::Decimal(d) => Some(SqlType::Decimal {
            precision: u8::try_from(d.precision).ok()?.min(MAX_DECIMAL_PRECISION),
            scale: u8::try_from(d.scale).ok()?,
        }),
        _ => None,
    }
}

/// The DECIMAL type of a record field whose schema is a decimal (optional or not): its
/// unscaled bytes are read and written at the schema's scale; `check_cell` then rescales a
/// read cell to the column's (or refuses it when it does not fit).
fn field_decimal(record: &RecordSchema, field: &str) -> Option<SqlType> {
    let f = record.fields.iter().find(|f| f.name.eq_ignore_ascii_case(field))?;
    schema_decimal(&f.schema)
}

fn kind(v: &Avro) -> &'static str {
    match v {
        Avro::Null => "null",
        Avro::Boolean(_) => "a boolean",
        Avro::Int(_) | Avro::Long(_) => "an integer",
        Avro::Float(_) | Avro::Double(_) => "a floating-point number",
        Avro::String(_) | Avro::Enum(..) => "a string",
        Avro::Array(_) => "an array",
        Avro::Map(_) => "a map",
        Avro::Record(_) => "a record",
        _ => "a value of another type",
    }
}

fn unwrap_union(v: Avro) -> Avro {
    match v {
        Avro::Union(_, inner) => unwrap_union(*inner),
        other => other,
    }
}

/// An Avro value as the canonical cell of a column of type `ty`.
fn to_cell(v: Avro, ty: &SqlType) -> Result<Value, String> {
    let v = unwrap_union(v);
    let mismatch = |v: &Avro| format!("expects {}, got {}", ty.name(), kind(v));
    Ok(match (ty, v) {
        (_, Avro::Null) => Value::Null,
        (SqlType::String, Avro::String(s)) | (SqlType::String, Avro::Enum(_, s)) => Value::String(s),
        (SqlType::String, Avro::Uuid(u)) => Value::String(u.to_string()),
        (SqlType::Boolean, Avro::Boolean(b)) => Value::Bool(b),
        (SqlType::Int, Avro::Int(i)) => Value::from(i),
        (SqlType::BigInt, Avro::Int(i)) => Value::from(i),
        (SqlType::BigInt, Avro::Long(i)) => Value::from(i),
        (SqlType::Double, Avro::Float(f)) => json!(f as f64),
        (SqlType::Double, Avro::Double(f)) => json!(f),
        (SqlType::Double, Avro::Int(i)) => json!(i as f64),
        (SqlType::Double, Avro::Long(i)) => json!(i as f64),
        (SqlType::Bytes, Avro::Bytes(b)) | (SqlType::Bytes, Avro::Fixed(_, b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (SqlType::Date, Avro::Date(d)) | (SqlType::Date, Avro::Int(d)) => Value::from(d),
        (SqlType::Time, Avro::TimeMillis(t)) | (SqlType::Time, Avro::Int(t)) => Value::from(t),
        (SqlType::Time, Avro::TimeMicros(t)) => Value::from(t / 1000),
        (SqlType::Timestamp, Avro::TimestampMillis(t))
        | (SqlType::Timestamp, Avro::LocalTimestampMillis(t))
        | (SqlType::Timestamp, Avro::Long(t)) => Value::from(t),
        (SqlType::Timestamp, Avro::TimestampMicros(t)) | (SqlType::Timestamp, Avro::LocalTimestampMicros(t)) => {
            Value::from(t.div_euclid(1000))
        }
        (SqlType::Timestamp, Avro::TimestampNanos(t)) | (SqlType::Timestamp, Avro::LocalTimestampNanos(t)) => {
            Value::from(t.div_euclid(1_000_000))
        }
        (SqlType::Decimal { scale, .. }, Avro::Decimal(d)) => {
            let bytes: Vec<u8> = Vec::try_from(d).map_err(|e| e.to_string())?;
            let unscaled = unscaled_of(&bytes).ok_or("DECIMAL wider than 38 digits")?;
            Value::String(format_decimal(unscaled, *scale))
        }
        (SqlType::Decimal { .. }, Avro::Double(f)) => json!(f),
        (SqlType::Decimal { .. }, Avro::Int(i)) => Value::from(i),
        (SqlType::Decimal { .. }, Avro::Long(i)) => Value::from(i),
        (SqlType::Decimal { .. }, Avro::String(s)) => Value::String(s),
        (SqlType::Array(t), Avro::Array(items)) => {
            Value::Array(items.into_iter().map(|i| to_cell(i, t)).collect::<Result<_, _>>()?)
        }
        (SqlType::Map(t), Avro::Map(entries)) => {
            let mut out = Map::new();
            let mut entries: Vec<(String, Avro)> = entries.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in entries {
                out.insert(k, to_cell(v, t)?);
            }
            Value::Object(out)
        }
        (SqlType::Struct(fields), Avro::Record(values)) => {
            let mut by_name: HashMap<String, Avro> =
                values.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
            let mut out = Map::new();
            for f in fields {
                let cell = match by_name.remove(&f.name.to_ascii_lowercase()) {
                    Some(v) => to_cell(v, &f.ty).map_err(|e| format!("field {}: {e}", f.name))?,
                    None => Value::Null,
                };
                out.insert(f.name.clone(), cell);
            }
            Value::Object(out)
        }
        (_, other) => return Err(mismatch(&other)),
    })
}

/// A big-endian two's-complement integer as an i128 (None past 16 bytes of magnitude).
pub(super) fn unscaled_of(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() {
        return Some(0);
    }
    let negative = bytes[0] & 0x80 != 0;
    let significant: &[u8] = {
        let fill = if negative { 0xff } else { 0x00 };
        let skip = bytes.iter().take_while(|b| **b == fill).count().min(bytes.len().saturating_sub(1));
        &bytes[skip..]
    };
    if significant.len() > 16 {
        return None;
    }
    let mut buf = if negative { [0xffu8; 16] } else { [0u8; 16] };
    buf[16 - significant.len()..].copy_from_slice(significant);
    Some(i128::from_be_bytes(buf))
}

/// Encodes the value columns of a row with registered schema `schema_id`: Confluent framing,
/// then the Avro datum.
pub fn encode_value(columns: &[Column], row: &[Value], schema_id: u32) -> Result<Vec<u8>, String> {
    let registry = crate::registry::global().ok_or("no Schema Registry")?;
    let schema = registry.avro(schema_id).map_err(|e| e.message)?;
    encode_with(&schema, schema_id, columns, row)
}

/// Encodes a row with `schema` (registered as `schema_id`), framed.
pub fn encode_with(schema: &AvroSchema, schema_id: u32, columns: &[Column], row: &[Value]) -> Result<Vec<u8>, String> {
    let AvroSchema::Record(record) = schema else {
        // A schema that is not a record holds the one value column.
        let (c, v) = columns.iter().zip(row).find(|(c, _)| !c.key).ok_or("no value column")?;
        let datum = to_avro(v, &c.ty)?.resolve(schema).map_err(|e| format!("column {}: {e}", c.name))?;
        return frame(schema_id, schema, datum);
    };
    let fields = record_fields(record, columns, row)?;
    let datum = Avro::Record(fields).resolve(schema).map_err(|e| format!("AVRO value for schema {schema_id}: {e}"))?;
    frame(schema_id, schema, datum)
}

fn record_fields(record: &RecordSchema, columns: &[Column], row: &[Value]) -> Result<Vec<(String, Avro)>, String> {
    record
        .fields
        .iter()
        .map(|f| {
            let found = columns.iter().zip(row).find(|(c, _)| !c.key && c.name.eq_ignore_ascii_case(&f.name));
            let v = match found {
                Some((c, v)) => {
                    let ty = field_decimal(record, &f.name).unwrap_or_else(|| c.ty.clone());
                    to_avro(v, &ty).map_err(|e| format!("column {}: {e}", c.name))?
                }
                None => Avro::Null,
            };
            Ok((f.name.clone(), v))
        })
        .collect()
}

pub(super) fn frame(schema_id: u32, schema: &AvroSchema, datum: Avro) -> Result<Vec<u8>, String> {
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|writer| writer.write_value_to_vec(datum))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// A canonical cell as the natural Avro value of its type (unions are picked by `resolve`).
fn to_avro(v: &Value, ty: &SqlType) -> Result<Avro, String> {
    if v.is_null() {
        return Ok(Avro::Null);
    }
    let bad = || format!("{v} is not a {}", ty.name());
    Ok(match ty {
        SqlType::String => Avro::String(v.as_str().map_or_else(|| v.to_string(), str::to_string)),
        SqlType::Boolean => Avro::Boolean(v.as_bool().ok_or_else(bad)?),
        SqlType::Int => Avro::Int(v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(bad)?),
        SqlType::BigInt => Avro::Long(v.as_i64().ok_or_else(bad)?),
        SqlType::Double => Avro::Double(v.as_f64().ok_or_else(bad)?),
        SqlType::Bytes => Avro::Bytes(
            base64::engine::general_purpose::STANDARD.decode(v.as_str().ok_or_else(bad)?).map_err(|_| bad())?,
        ),
        SqlType::Date => Avro::Date(v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(bad)?),
        SqlType::Time => Avro::TimeMillis(v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(bad)?),
        SqlType::Timestamp => Avro::TimestampMillis(v.as_i64().ok_or_else(bad)?),
        SqlType::Decimal { precision, scale } => {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            let unscaled = parse_decimal(&text, *precision, *scale).ok_or_else(bad)?;
            Avro::Decimal(Decimal::from(padded_be(unscaled, *precision)))
        }
        SqlType::Array(t) => {
            Avro::Array(v.as_array().ok_or_else(bad)?.iter().map(|i| to_avro(i, t)).collect::<Result<_, _>>()?)
        }
        SqlType::Map(t) => Avro::Map(
            v.as_object()
                .ok_or_else(bad)?
                .iter()
                .map(|(k, v)| Ok((k.clone(), to_avro(v, t)?)))
                .collect::<Result<_, String>>()?,
        ),
        SqlType::Struct(fields) => {
            let obj = v.as_object().ok_or_else(bad)?;
            Avro::Record(
                fields
                    .iter()
                    .map(|f| {
                        let value = super::types::lookup(obj, &f.name).unwrap_or(&Value::Null);
                        Ok((f.name.clone(), to_avro(value, &f.ty)?))
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
    })
}

/// Big-endian two's-complement bytes of an integer, as many as a DECIMAL of `precision`
/// digits may need (the Avro library checks the width against the precision).
pub(super) fn padded_be(n: i128, precision: u8) -> Vec<u8> {
    let width = (1..=16usize)
        .find(|len| ((8 * len - 1) as f64 * std::f64::consts::LOG10_2).floor() as usize >= precision as usize)
        .unwrap_or(16);
    let minimal = minimal_be(n);
    let fill = if n < 0 { 0xff } else { 0 };
    let mut out = vec![fill; width.saturating_sub(minimal.len())];
    out.extend_from_slice(&minimal);
    out
}

/// The shortest big-endian two's-complement bytes of an integer.
pub(super) fn minimal_be(n: i128) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let fill = if n < 0 { 0xff } else { 0 };
    let mut start = 0;
    while start < 15 && bytes[start] == fill && (bytes[start + 1] & 0x80 != 0) == (n < 0) {
        start += 1;
    }
    bytes[start..].to_vec()
}

/// The Avro schema a relation's value columns are written with, in ksqlDB's shape: a record
/// `io.confluent.ksql.avro_schemas.KsqlDataSourceSchema` whose fields are the value columns,
/// upper-cased (a STRUCT's fields keep their names), each optional (`["null", T]`, default null).
pub fn schema_for(columns: &[Column]) -> String {
    schema_named(columns, None)
}

/// `schema_for` with the record's full name (`VALUE_SCHEMA_FULL_NAME`: `ns.Name`, or a
/// name without a namespace) instead of ksqlDB's default.
pub fn schema_named(columns: &[Column], full_name: Option<&str>) -> String {
    let (namespace, name) = split_full_name(full_name, "KsqlDataSourceSchema");
    record_of(columns.iter().filter(|c| !c.key), namespace, &name)
}

/// A record of optional upper-case fields, one per column, as ksqlDB writes its schemas.
fn record_of<'a>(columns: impl Iterator<Item = &'a Column>, namespace: Option<String>, name: &str) -> String {
    let fields: Vec<Value> = columns
        .map(|c| {
            let field = c.name.to_ascii_uppercase();
            json!({ "name": field, "type": ["null", avro_type(&c.ty, &format!("{name}_{field}"))], "default": null })
        })
        .collect();
    let mut record = json!({ "type": "record", "name": name, "fields": fields });
    if let Some(ns) = namespace {
        record["namespace"] = json!(ns);
    }
    record.to_string()
}

/// A full name's namespace and name; without one, ksqlDB's namespace and `default`.
fn split_full_name(full_name: Option<&str>, default: &str) -> (Option<String>, String) {
    match full_name {
        None => (Some("io.confluent.ksql.avro_schemas".into()), default.to_string()),
        Some(full) => match full.rsplit_once('.') {
            Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
            None => (None, full.to_string()),
        },
    }
}

fn avro_type(ty: &SqlType, record_name: &str) -> Value {
    match ty {
        SqlType::String => json!("string"),
        SqlType::Int => json!("int"),
        SqlType::BigInt => json!("long"),
        SqlType::Double => json!("double"),
        SqlType::Boolean => json!("boolean"),
        SqlType::Bytes => json!("bytes"),
        SqlType::Date => json!({ "type": "int", "logicalType": "date" }),
        SqlType::Time => json!({ "type": "int", "logicalType": "time-millis" }),
        SqlType::Timestamp => json!({ "type": "long", "logicalType": "timestamp-millis" }),
        SqlType::Decimal { precision, scale } => {
            json!({ "type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale })
        }
        SqlType::Array(t) => json!({ "type": "array", "items": ["null", avro_type(t, record_name)] }),
        SqlType::Map(t) => json!({ "type": "map", "values": ["null", avro_type(t, record_name)] }),
        SqlType::Struct(fields) => {
            let fields: Vec<Value> = fields
                .iter()
                .map(|f| {
                    let name = &f.name;
                    json!({ "name": name, "type": ["null", avro_type(&f.ty, &format!("{record_name}_{name}"))], "default": null })
                })
                .collect();
            json!({ "type": "record", "name": record_name, "fields": fields })
        }
    }
}

/// The value columns a record schema gives (`CREATE STREAM s WITH (VALUE_FORMAT='AVRO')`
/// without columns): one per field, lower-cased, typed by ksqlDB's mapping.
pub fn columns_of(schema: &AvroSchema) -> Result<Vec<Column>, String> {
    let AvroSchema::Record(record) = schema else {
        return Err("the value schema is not a record: declare the one value column".into());
    };
    record
        .fields
        .iter()
        .map(|f| {
            let ty = sql_type(&f.schema).map_err(|e| format!("field {}: {e}", f.name))?;
            Ok(Column { name: f.name.to_ascii_lowercase(), ty, key: false })
        })
        .collect()
}

/// The key column a key schema gives: one column `rowkey` of its type, a record's as a
/// STRUCT (ksqlDB infers keys so: a single key is unwrapped).
pub fn key_columns_of(schema: &AvroSchema) -> Result<Vec<Column>, String> {
    Ok(vec![Column { name: "rowkey".into(), ty: sql_type(schema)?, key: true }])
}

/// The Avro schema a relation's key columns are written with, as ksqlDB writes it: a single
/// key column as its type itself (single keys are unwrapped), several as a record
/// `io.confluent.ksql.avro_schemas.{Relation}Key` (the relation's name in camel case) of
/// optional fields, or named `full_name` (`KEY_SCHEMA_FULL_NAME`; also a STRUCT key's).
pub fn key_schema_for(relation: &str, keys: &[Column], full_name: Option<&str>) -> String {
    let (namespace, name) = split_full_name(full_name, &format!("{}Key", camel(relation)));
    if let [c] = keys {
        let mut single = avro_type(&c.ty, &name);
        if let (Some(ns), Value::Object(record)) = (namespace, &mut single) {
            record.insert("namespace".into(), json!(ns));
        }
        return single.to_string();
    }
    record_of(keys.iter(), namespace, &name)
}

/// `T_STREAM` as `TStream`: each part between underscores capitalized.
fn camel(name: &str) -> String {
    name.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let lower = p.to_ascii_lowercase();
            let mut chars = lower.chars();
            chars.next().map(|f| f.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

fn sql_type(schema: &AvroSchema) -> Result<SqlType, String> {
    Ok(match schema {
        AvroSchema::String | AvroSchema::Enum(_) | AvroSchema::Uuid(_) => SqlType::String,
        AvroSchema::Boolean => SqlType::Boolean,
        AvroSchema::Int => SqlType::Int,
        AvroSchema::Long => SqlType::BigInt,
        AvroSchema::Float | AvroSchema::Double => SqlType::Double,
        AvroSchema::Bytes | AvroSchema::Fixed(_) => SqlType::Bytes,
        AvroSchema::Date => SqlType::Date,
        AvroSchema::TimeMillis | AvroSchema::TimeMicros => SqlType::Time,
        AvroSchema::TimestampMillis
        | AvroSchema::TimestampMicros
        | AvroSchema::TimestampNanos
        | AvroSchema::LocalTimestampMillis
        | AvroSchema::LocalTimestampMicros
        | AvroSchema::LocalTimestampNanos => SqlType::Timestamp,
        AvroSchema::Decimal(d) => {
            let precision = u8::try_from(d.precision).ok().filter(|p| *p <= MAX_DECIMAL_PRECISION);
            let scale = u8::try_from(d.scale).ok();
            match (precision, scale) {
                (Some(precision), Some(scale)) if scale <= precision => SqlType::Decimal { precision, scale },
                _ => return Err(format!("DECIMAL({}, {}) is past DECIMAL(38)", d.precision, d.scale)),
            }
        }
        AvroSchema::Array(a) => SqlType::Array(Box::new(sql_type(&a.items)?)),
        AvroSchema::Map(m) => SqlType::Map(Box::new(sql_type(&m.types)?)),
        AvroSchema::Record(r) => SqlType::Struct(
            r.fields
                .iter()
                .map(|f| Ok(StructField { name: f.name.clone(), ty: sql_type(&f.schema)? }))
                .collect::<Result<_, String>>()?,
        ),
        AvroSchema::Union(u) => optional(u)?,
        other => return Err(format!("Avro type {other:?} has no SQL type")),
    })
}

/// `["null", T]` is an optional T; other unions have no SQL type.
fn optional(u: &UnionSchema) -> Result<SqlType, String> {
    let non_null: Vec<&AvroSchema> = u.variants().iter().filter(|v| **v != AvroSchema::Null).collect();
    match non_null.as_slice() {
        [one] => sql_type(one),
        _ => Err("a union of several non-null types has no SQL type".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_through_twos_complement() {
        for n in [0i128, 1, -1, 127, 128, -128, -129, 12345, -9_999_999_999_999, i64::MAX as i128 * 1000] {
            assert_eq!(unscaled_of(&minimal_be(n)), Some(n), "{n}");
        }
        assert_eq!(minimal_be(128), vec![0, 128]);
        assert_eq!(minimal_be(-128), vec![128]);
        assert_eq!(padded_be(-310, 10), vec![0xff, 0xff, 0xff, 0xfe, 0xca]);
        assert_eq!(unscaled_of(&padded_be(-310, 10)), Some(-310));
        assert_eq!(padded_be(1, 38).len(), 16);
    }

    #[test]
    fn frames_are_checked() {
        assert!(unframe(b"{\"a\":1}").unwrap_err().contains("magic byte"));
        assert!(unframe(&[0, 0, 0]).unwrap_err().contains("shorter"));
        assert_eq!(unframe(&[0, 0, 0, 1, 7, 9]).unwrap(), (263, &[9u8][..]));
    }

    #[test]
    fn the_output_schema_is_ksqldbs_shape_and_parses() {
        let columns = vec![
            Column { name: "id".into(), ty: SqlType::BigInt, key: true },
            Column { name: "total".into(), ty: SqlType::Decimal { precision: 10, scale: 2 }, key: false },
            Column {
                name: "tags".into(),
                ty: SqlType::Array(Box::new(SqlType::Struct(vec![StructField {
                    name: "k".into(),
                    ty: SqlType::String,
                }]))),
                key: false,
            },
        ];
        let text = schema_for(&columns);
        let schema = AvroSchema::parse_str(&text).unwrap();
        let back = columns_of(&schema).unwrap();
        assert_eq!(back.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["total", "tags"]);
        assert_eq!(back[0].ty, SqlType::Decimal { precision: 10, scale: 2 });
    }
}
