//! The REST Proxy's schema-bearing embedded formats in v2 produce: `avro`, `protobuf` and
//! `jsonschema`.
//! A request gives each of key and value a schema (`value_schema`, registered under
//! `{topic}-value` as kafka-rest's TopicNameStrategy does) or a registered one
//! (`value_schema_id`); every record is then written in Confluent's wire format (magic byte,
//! schema id, the Avro body or the JSON text). A value that does not fit its schema (a JSON
//! value is checked against its JSON Schema) fails the whole request (42205), as a schema
//! the registry refuses does (its reason kept).

use axum::http::StatusCode;
use serde_json::Value;

use super::rest_proxy::RestError;
use crate::registry::{SchemaType, StoredSchema};

/// How one side (key or value) of the request's records is written.
enum Writer {
    Avro(std::sync::Arc<apache_avro::Schema>),
    /// The schema's first message, from proto3's JSON mapping.
    Protobuf(std::sync::Arc<crate::format::protobuf::Compiled>),
    /// JSON text after the framing, checked against the JSON Schema first.
    Json(std::sync::Arc<Value>),
}

/// The records' keys and values, encoded, and the schema ids used for each side.
pub(super) struct Encoded {
    pub keys: Vec<Option<Vec<u8>>>,
    pub values: Vec<Option<Vec<u8>>>,
    pub key_schema_id: Option<u32>,
    pub value_schema_id: Option<u32>,
}

fn unprocessable(code: u32, message: String) -> RestError {
    RestError(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// The schema `body` names for one side, registering it when given as text.
fn side(
    body: &Value,
    topic: &str,
    which: &str,
    schema_type: SchemaType,
    needed: bool,
) -> Result<Option<(u32, Writer)>, RestError> {
    side_of(
        body.get(format!("{which}_schema_id")),
        body.get(format!("{which}_schema")),
        topic,
        which,
        schema_type,
        needed,
    )
}

fn side_of(
    schema_id: Option<&Value>,
    schema_text: Option<&Value>,
    topic: &str,
    which: &str,
    schema_type: SchemaType,
    needed: bool,
) -> Result<Option<(u32, Writer)>, RestError> {
    let missing_code = if which == "key" { 42201 } else { 42202 };
    let registry = crate::registry::global()
        .ok_or_else(|| RestError(StatusCode::INTERNAL_SERVER_ERROR, 50001, "no Schema Registry".into()))?;
    let id = match (schema_id, schema_text) {
        (Some(Value::Number(n)), _) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| unprocessable(missing_code, format!("{which}_schema_id {n} is not a schema id")))?,
        (_, Some(Value::String(text))) => {
            let schema = StoredSchema { schema: text.clone(), schema_type, references: Vec::new() };
            registry.register(&format!("{topic}-{which}"), schema).map_err(|e| {
                unprocessable(42205, format!("the {which} schema could not be registered: {} ({})", e.message, e.code))
            })?
        }
        _ if needed => {
            return Err(unprocessable(
                missing_code,
                format!(
                    "Request includes {which}s and uses a format that requires schemas, but does not include the {which}_schema or {which}_schema_id fields"
                ),
            ))
        }
        _ => return Ok(None),
    };
    let stored =
        registry.schema(id).map_err(|e| unprocessable(missing_code, format!("{which}_schema_id: {}", e.message)))?;
    if stored.schema_type != schema_type {
        return Err(unprocessable(
            missing_code,
            format!("schema {id} is {}, not {}", stored.schema_type.name(), schema_type.name()),
        ));
    }
    let writer = match schema_type {
        SchemaType::Avro => Writer::Avro(registry.avro(id).map_err(|e| unprocessable(missing_code, e.message))?),
        SchemaType::Protobuf => {
            Writer::Protobuf(registry.protobuf(id).map_err(|e| unprocessable(missing_code, e.message))?)
        }
        SchemaType::Json => Writer::Json(std::sync::Arc::new(
            serde_json::from_str(&stored.schema).map_err(|e| unprocessable(missing_code, e.to_string()))?,
        )),
    };
    Ok(Some((id, writer)))
}

fn encode(
    writer: &Option<(u32, Writer)>,
    v: Option<&Value>,
    which: &str,
    i: usize,
) -> Result<Option<Vec<u8>>, RestError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let Some((id, writer)) = writer else { return Ok(None) };
    let encoded = match writer {
        Writer::Avro(schema) => crate::format::avro_json::json_to_framed(schema, *id, v),
        Writer::Protobuf(compiled) => {
            compiled.message(&[0]).and_then(|desc| crate::format::protobuf::json_to_framed(&desc, &[0], *id, v))
        }
        Writer::Json(schema) => {
            crate::format::json_schema_check::validate(schema, v)
                .map_err(|e| unprocessable(42205, format!("record {i}'s {which} does not fit schema {id}: {e}")))?;
            let mut out = vec![0u8];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(v.to_string().as_bytes());
            Ok(out)
        }
    };
    encoded.map(Some).map_err(|e| unprocessable(42205, format!("record {i}'s {which}: {e}")))
}

/// Encodes the `records` of a v2 request in a schema format.
pub(super) fn encode_records(
    schema_type: SchemaType,
    topic: &str,
    body: &Value,
    records: &[Value],
) -> Result<Encoded, RestError> {
    let has = |field: &str| records.iter().any(|r| r.get(field).is_some_and(|v| !v.is_null()));
    let key = side(body, topic, "key", schema_type, has("key"))?;
    let value = side(body, topic, "value", schema_type, has("value"))?;
    let mut keys = Vec::with_capacity(records.len());
    let mut values = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        keys.push(encode(&key, r.get("key"), "key", i)?);
        values.push(encode(&value, r.get("value"), "value", i)?);
    }
    Ok(Encoded {
        keys,
        values,
        key_schema_id: key.as_ref().map(|(id, _)| *id),
        value_schema_id: value.as_ref().map(|(id, _)| *id),
    })
}

/// One v3 key or value in a schema format: `{"type": "AVRO"|"PROTOBUF"|"JSONSCHEMA", "schema": text,
/// "data": ...}` or `{"schema_id": n, "data": ...}`. The framed bytes and the schema id.
pub(super) fn encode_v3(
    topic: &str,
    which: &str,
    schema_type: Option<SchemaType>,
    v: &Value,
) -> Result<(Vec<u8>, u32), String> {
    let registry = crate::registry::global().ok_or("no Schema Registry")?;
    let schema_type = match (schema_type, v.get("schema_id").and_then(Value::as_u64)) {
        (Some(t), _) => t,
        (None, Some(id)) => registry.schema(u32::try_from(id).unwrap_or(u32::MAX)).map_err(|e| e.message)?.schema_type,
        (None, None) => return Err(format!("a {which} with a schema needs \"schema_id\" or \"type\" and \"schema\"")),
    };
    let side = side_of(v.get("schema_id"), v.get("schema"), topic, which, schema_type, true).map_err(|e| e.2)?;
    let data = v.get("data").unwrap_or(&Value::Null);
    match encode(&side, Some(data), which, 0).map_err(|e| e.2)? {
        Some(bytes) => Ok((bytes, side.map_or(0, |(id, _)| id))),
        None => Err(format!("a {which} with a schema needs its \"data\"")),
    }
}
