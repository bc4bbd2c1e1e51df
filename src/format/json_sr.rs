//! `VALUE_FORMAT='JSON_SR'`: JSON behind Confluent's framing (magic byte 0, the schema id as
//! 4 big-endian bytes), with JSON Schemas from the Schema Registry, as Confluent's
//! `JSONSerializer` writes and ksqlDB's JSON_SR reads.
//!
//! The JSON itself is read and written as `VALUE_FORMAT='JSON'` does; the framing's id must
//! name a schema the registry holds. Columns of a relation declared without value columns come
//! from the subject's JSON Schema (`columns_of`), and `schema_for` gives the schema a query's
//! output registers (every property optional, `connect.type` naming the integer widths as
//! Kafka Connect's JSON Schema converter does). Values are not validated against the schema.

use serde_json::{json, Map, Value};

use super::types::StructField;
use super::{json as json_format, Column, SqlType};

/// The schema id of a framed value, and the JSON after it.
pub fn unframe(value: &[u8]) -> Result<(u32, &[u8]), String> {
    match value {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [0, ..] => Err("JSON_SR value shorter than its 5-byte header".into()),
        _ => Err(format!(
            "JSON_SR value does not start with the Schema Registry's magic byte 0 (first byte {})",
            value.first().map_or("none".to_string(), |b| b.to_string())
        )),
    }
}

/// A framed JSON value as cells; its schema id must be registered.
pub fn decode_value(columns: &[Column], value: &[u8]) -> Result<Vec<Value>, String> {
    let (id, body) = unframe(value)?;
    let registry = crate::registry::global().ok_or("no Schema Registry")?;
    // Per record: only whether the id is registered, without copying its schema.
    if registry.schema_type(id).is_none() {
        return Err(format!("JSON_SR value's schema id {id}: Schema {id} not found"));
    }
    json_format::decode_value(columns, body)
}

/// The value columns of a row as JSON, framed with `schema_id`.
pub fn encode_value(columns: &[Column], row: &[Value], schema_id: u32) -> Vec<u8> {
    let body = json_format::encode_value(columns, row);
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn type_schema(ty: &SqlType) -> Value {
    match ty {
        SqlType::String => json!({ "type": "string" }),
        SqlType::Boolean => json!({ "type": "boolean" }),
        SqlType::Int => json!({ "type": "integer", "connect.type": "int32" }),
        SqlType::BigInt => json!({ "type": "integer", "connect.type": "int64" }),
        SqlType::Double => json!({ "type": "number", "connect.type": "float64" }),
        SqlType::Decimal { .. } => json!({ "type": "number" }),
        SqlType::Bytes => json!({ "type": "string", "connect.type": "bytes" }),
        SqlType::Date => {
            json!({ "type": "integer", "connect.type": "int32", "title": "org.apache.kafka.connect.data.Date" })
        }
        SqlType::Time => {
            json!({ "type": "integer", "connect.type": "int32", "title": "org.apache.kafka.connect.data.Time" })
        }
        SqlType::Timestamp => {
            json!({ "type": "integer", "connect.type": "int64", "title": "org.apache.kafka.connect.data.Timestamp" })
        }
        SqlType::Array(t) => json!({ "type": "array", "items": optional(t) }),
        SqlType::Map(t) => json!({ "type": "object", "additionalProperties": optional(t), "connect.type": "map" }),
        SqlType::Struct(fields) => object(fields.iter().map(|f| (f.name.as_str(), &f.ty))),
    }
}

fn optional(ty: &SqlType) -> Value {
    json!({ "oneOf": [{ "type": "null" }, type_schema(ty)] })
}

fn object<'a>(fields: impl Iterator<Item = (&'a str, &'a SqlType)>) -> Value {
    let mut properties = Map::new();
    for (i, (name, ty)) in fields.enumerate() {
        let mut p = optional(ty);
        p["connect.index"] = json!(i);
        properties.insert(name.to_string(), p);
    }
    // Closed (`additionalProperties: false`): under Confluent's rules a later version may
    // then add optional properties (columns) compatibly.
    json!({ "type": "object", "properties": properties, "additionalProperties": false })
}

/// The JSON Schema a relation's value columns are written with.
pub fn schema_for(columns: &[Column]) -> String {
    object(columns.iter().filter(|c| !c.key).map(|c| (c.name.as_str(), &c.ty))).to_string()
}

/// Value columns from a registered JSON Schema: an object's properties, in order.
pub fn columns_of(schema: &str) -> Result<Vec<Column>, String> {
    let schema: Value = serde_json::from_str(schema).map_err(|e| format!("the JSON Schema does not parse: {e}"))?;
    match sql_type(&schema)? {
        SqlType::Struct(fields) => {
            Ok(fields.into_iter().map(|f| Column { name: f.name.to_ascii_lowercase(), ty: f.ty, key: false }).collect())
        }
        _ => Err("the value schema is not an object with properties: declare the one value column".into()),
    }
}

/// The key column a key's JSON Schema gives: one column `rowkey` of its type, an object's
/// as a STRUCT (ksqlDB infers keys so: a single key is unwrapped).
pub fn key_columns_of(schema: &str) -> Result<Vec<Column>, String> {
    let parsed: Value = serde_json::from_str(schema).map_err(|e| format!("the JSON Schema does not parse: {e}"))?;
    Ok(vec![Column { name: "rowkey".into(), ty: sql_type(&parsed)?, key: true }])
}

/// The JSON Schema a relation's key columns are written with: a single key column's own
/// (optional) type, several as an object.
pub fn key_schema_for(keys: &[Column]) -> String {
    match keys {
        [c] => optional(&c.ty).to_string(),
        _ => object(keys.iter().map(|c| (c.name.as_str(), &c.ty))).to_string(),
    }
}

fn sql_type(schema: &Value) -> Result<SqlType, String> {
    // An optional type: `oneOf`/`anyOf` with `null`, or `"type": ["null", T]`.
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let real: Vec<&Value> =
                options.iter().filter(|o| o.get("type").and_then(Value::as_str) != Some("null")).collect();
            return match real.as_slice() {
                [one] => sql_type(one),
                _ => Err(format!("{key} with several non-null types is not supported")),
            };
        }
    }
    if schema.get("$ref").is_some() {
        return Err("$ref is not supported in JSON Schemas yet".into());
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => {
            let mut real = ts.iter().filter_map(Value::as_str).filter(|t| *t != "null");
            match (real.next(), real.next()) {
                (Some(one), None) => one,
                _ => return Err("a type list with several non-null types is not supported".into()),
            }
        }
        _ if schema.get("properties").is_some() => "object",
        _ => return Err(format!("no type in {schema}")),
    };
    let connect = schema.get("connect.type").and_then(Value::as_str);
    let title = schema.get("title").and_then(Value::as_str).unwrap_or("");
    Ok(match ty {
        "string" if connect == Some("bytes") => SqlType::Bytes,
        "string" => SqlType::String,
        "boolean" => SqlType::Boolean,
        "integer" if title.ends_with("connect.data.Timestamp") => SqlType::Timestamp,
        "integer" if title.ends_with("connect.data.Date") => SqlType::Date,
        "integer" if title.ends_with("connect.data.Time") => SqlType::Time,
        "integer" if matches!(connect, Some("int8" | "int16" | "int32")) => SqlType::Int,
        "integer" => SqlType::BigInt,
        "number" => SqlType::Double,
        "array" => SqlType::Array(Box::new(match schema.get("items") {
            Some(items) => sql_type(items)?,
            None => return Err("an array without items".into()),
        })),
        "object" => match (schema.get("properties").and_then(Value::as_object), schema.get("additionalProperties")) {
            (Some(props), _) => {
                // `connect.index` orders the properties when present (JSON objects have no order).
                let mut fields: Vec<(i64, StructField)> = props
                    .iter()
                    .enumerate()
                    .map(|(i, (name, p))| {
                        let index = p.get("connect.index").and_then(Value::as_i64).unwrap_or(i as i64);
                        Ok((
                            index,
                            StructField { name: name.clone(), ty: sql_type(p).map_err(|e| format!("{name}: {e}"))? },
                        ))
                    })
                    .collect::<Result<_, String>>()?;
                fields.sort_by_key(|(i, _)| *i);
                SqlType::Struct(fields.into_iter().map(|(_, f)| f).collect())
            }
            (None, Some(v)) if v.is_object() => SqlType::Map(Box::new(sql_type(v)?)),
            _ => return Err("an object needs properties or additionalProperties".into()),
        },
        other => return Err(format!("JSON Schema type {other} is not supported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip_through_the_schema() {
        let columns = vec![
            Column { name: "id".into(), ty: SqlType::BigInt, key: true },
            Column { name: "n".into(), ty: SqlType::Int, key: false },
            Column { name: "total".into(), ty: SqlType::Double, key: false },
            Column { name: "tags".into(), ty: SqlType::Array(Box::new(SqlType::String)), key: false },
            Column { name: "at".into(), ty: SqlType::Timestamp, key: false },
            Column {
                name: "addr".into(),
                ty: SqlType::Struct(vec![StructField { name: "city".into(), ty: SqlType::String }]),
                key: false,
            },
            Column { name: "m".into(), ty: SqlType::Map(Box::new(SqlType::BigInt)), key: false },
        ];
        let back = columns_of(&schema_for(&columns)).unwrap();
        assert_eq!(back, columns[1..].to_vec());
    }

    #[test]
    fn producer_schemas_and_framing() {
        let schema = r#"{"type":"object","properties":{"id":{"type":"integer"},"item":{"type":["null","string"]},
            "price":{"oneOf":[{"type":"null"},{"type":"number"}]}}}"#;
        let cols = columns_of(schema).unwrap();
        assert_eq!(
            cols.iter().map(|c| (c.name.as_str(), c.ty.clone())).collect::<Vec<_>>(),
            vec![("id", SqlType::BigInt), ("item", SqlType::String), ("price", SqlType::Double)]
        );
        assert!(columns_of(r#"{"type":"string"}"#).is_err());
        assert!(columns_of(r##"{"type":"object","properties":{"a":{"$ref":"#/x"}}}"##).is_err());
        assert_eq!(unframe(&[0, 0, 0, 0, 9, b'{', b'}']).unwrap(), (9, &b"{}"[..]));
        assert!(unframe(b"{}").unwrap_err().contains("magic byte"));
        let framed = encode_value(&cols, &[json!(1), json!("tea"), Value::Null], 9);
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 9]);
        assert_eq!(
            serde_json::from_slice::<Value>(&framed[5..]).unwrap(),
            json!({"id": 1, "item": "tea", "price": null})
        );
    }
}
