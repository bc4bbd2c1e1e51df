//! `VALUE_FORMAT='PROTOBUF'`: Confluent's wire format for Protobuf (magic byte 0, the schema
//! id as 4 big-endian bytes, the message indexes, the message), with `.proto` schemas from the
//! Schema Registry.
//!
//! A registered schema is `.proto` text (compiled with protox, well-known `google/protobuf`
//! imports and referenced schemas resolved) or, as Confluent's Python and Go serializers
//! register it, a base64 `FileDescriptorProto`. The message indexes pick the message within
//! the file (`[0]`, written as one zero byte, is the first). Records decode through
//! prost-reflect's dynamic messages into the JSON mapping of proto3 (field names as written in
//! the `.proto`), then into cells as JSON values do; rows encode the other way. Columns of a
//! relation declared without value columns come from the first message (`columns_of`), and
//! `schema_for` gives the schema a query's output registers (message `ConnectDefault1`, as
//! ksqlDB names it).

use std::collections::HashMap;

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions};
use serde_json::Value;

use super::types::StructField;
use super::{Column, SqlType};

/// The file name a registered schema compiles as.
const FILE: &str = "schema.proto";
/// Confluent's decimal type (`confluent/type/decimal.proto`), which ksqlDB writes DECIMAL
/// columns as and every Confluent client knows without a reference: the unscaled value as
/// big-endian two's-complement bytes, with its precision and scale.
const DECIMAL_FILE: &str = "confluent/type/decimal.proto";
const DECIMAL_PROTO: &str = "syntax = \"proto3\";\n\npackage confluent.type;\n\nmessage Decimal {\n  bytes value = 1;\n  uint32 precision = 2;\n  int32 scale = 3;\n}\n";
const DECIMAL_MESSAGE: &str = "confluent.type.Decimal";
/// The DECIMAL a column inferred from a `confluent.type.Decimal` field has (its precision
/// and scale are in each value, not in the schema).
const INFERRED_DECIMAL: SqlType = SqlType::Decimal { precision: 38, scale: 9 };
/// Most message indexes a framed value may carry (nesting depth).
const MAX_INDEXES: usize = 64;

/// A compiled schema: the pool holding its file (and imports), and the file's name.
#[derive(Debug)]
pub struct Compiled {
    pub pool: DescriptorPool,
    pub file: String,
}

/// In-memory `.proto` sources by import name.
struct Sources(HashMap<String, String>);

impl protox::file::FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match self.0.get(name) {
            Some(source) => protox::file::File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// A registered Protobuf schema compiled: `.proto` text, or a base64 `FileDescriptorProto`.
/// `references` are the imports it names (import name, that schema's text), themselves text
/// or base64.
pub fn compile(schema: &str, references: &[(String, String)]) -> Result<Compiled, String> {
    let mut pool = DescriptorPool::global();
    if !references.iter().any(|(name, _)| name == DECIMAL_FILE) {
        pool.add_file_descriptor_proto(decimal_file()?).map_err(|e| format!("{DECIMAL_FILE}: {e}"))?;
    }
    // Referenced schemas first (the files this one imports), in either form.
    let mut sources: HashMap<String, String> = HashMap::new();
    for (name, text) in references {
        match descriptor_of(text) {
            Some(fdp) => {
                let mut fdp = fdp;
                fdp.name = Some(name.clone());
                pool.add_file_descriptor_proto(fdp).map_err(|e| format!("referenced schema {name}: {e}"))?;
            }
            None => {
                sources.insert(name.clone(), text.clone());
            }
        }
    }
    if let Some(mut fdp) = descriptor_of(schema) {
        let file = fdp.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| FILE.to_string());
        fdp.name = Some(file.clone());
        if pool.get_file_by_name(&file).is_none() {
            pool.add_file_descriptor_proto(fdp).map_err(|e| format!("the Protobuf descriptor does not link: {e}"))?;
        }
        return Ok(Compiled { pool, file });
    }
    sources.insert(FILE.to_string(), schema.to_string());
    sources.entry(DECIMAL_FILE.to_string()).or_insert_with(|| DECIMAL_PROTO.to_string());
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(Sources(sources));
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_file(FILE).map_err(|e| format!("the Protobuf schema does not compile: {e}"))?;
    let set = compiler.file_descriptor_set();
    for fdp in set.file {
        if pool.get_file_by_name(fdp.name()).is_none() {
            pool.add_file_descriptor_proto(fdp).map_err(|e| format!("the Protobuf schema does not link: {e}"))?;
        }
    }
    Ok(Compiled { pool, file: FILE.to_string() })
}

/// `confluent/type/decimal.proto`, compiled once.
fn decimal_file() -> Result<prost_types::FileDescriptorProto, String> {
    static FILE: std::sync::OnceLock<Result<prost_types::FileDescriptorProto, String>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let mut compiler = protox::Compiler::with_file_resolver(Sources(HashMap::from([(
            DECIMAL_FILE.to_string(),
            DECIMAL_PROTO.to_string(),
        )])));
        compiler.open_file(DECIMAL_FILE).map_err(|e| e.to_string())?;
        compiler.file_descriptor_set().file.into_iter().next().ok_or_else(|| "no file".to_string())
    })
    .clone()
}

/// A base64 `FileDescriptorProto` (what Confluent's serializers register), if `text` is one.
fn descriptor_of(text: &str) -> Option<prost_types::FileDescriptorProto> {
    let trimmed = text.trim();
    if trimmed.contains(' ') || trimmed.contains('\n') || trimmed.contains(';') {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(trimmed).ok()?;
    prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok()
}

/// The schema as Confluent's `format=serialized` gives it: a base64 `FileDescriptorProto`.
pub fn serialized(compiled: &Compiled) -> Option<String> {
    let file = compiled.pool.get_file_by_name(&compiled.file)?;
    Some(base64::engine::general_purpose::STANDARD.encode(file.file_descriptor_proto().encode_to_vec()))
}

impl Compiled {
    /// The message `full_name` picks (`*_SCHEMA_FULL_NAME`), else the file's first; with its
    /// position among the file's messages (Eddy writes the first only).
    pub fn message_named(&self, full_name: Option<&str>) -> Result<(usize, MessageDescriptor), String> {
        let Some(full_name) = full_name else { return Ok((0, self.message(&[0])?)) };
        let file = self.pool.get_file_by_name(&self.file).ok_or("the schema's file is missing")?;
        let found = file.messages().enumerate().find(|(_, m)| m.full_name() == full_name || m.name() == full_name);
        match found {
            Some(found) => Ok(found),
            None if self.pool.get_message_by_name(full_name).is_some() => {
                Err(format!("{full_name} is a nested message; name one of the schema's top-level messages"))
            }
            None => Err(format!("the schema has no message {full_name}")),
        }
    }

    /// The message at Confluent's message indexes (`[0]`: the file's first message).
    pub fn message(&self, indexes: &[i32]) -> Result<MessageDescriptor, String> {
        let file = self.pool.get_file_by_name(&self.file).ok_or("the schema's file is missing")?;
        let (first, rest) = match indexes {
            [] => (0, &[][..]),
            [first, rest @ ..] => (*first, rest),
        };
        let mut message = usize::try_from(first)
            .ok()
            .and_then(|i| file.messages().nth(i))
            .ok_or_else(|| format!("message index {first} is past the schema's messages"))?;
        for i in rest {
            message = usize::try_from(*i)
                .ok()
                .and_then(|i| message.child_messages().nth(i))
                .ok_or_else(|| format!("nested message index {i} is past {}'s messages", message.name()))?;
        }
        Ok(message)
    }
}

fn read_varint(body: &mut &[u8]) -> Result<i64, String> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = body.split_first().ok_or("PROTOBUF value ends inside its message indexes")?;
        *body = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            // Zigzag, as Confluent writes them.
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err("PROTOBUF message index varint is too long".into())
}

fn write_varint(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// The schema id, message indexes and message bytes of a framed value.
pub fn unframe(value: &[u8]) -> Result<(u32, Vec<i32>, &[u8]), String> {
    let mut body = match value {
        [0, _, _, _, _, body @ ..] => body,
        [0, ..] => return Err("PROTOBUF value shorter than its 5-byte header".into()),
        _ => {
            return Err(format!(
                "PROTOBUF value does not start with the Schema Registry's magic byte 0 (first byte {})",
                value.first().map_or("none".to_string(), |b| b.to_string())
            ))
        }
    };
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    let count = read_varint(&mut body)?;
    // A lone 0 is the common case: the first message.
    let indexes = if count == 0 {
        vec![0]
    } else {
        let count = usize::try_from(count)
            .ok()
            .filter(|c| *c <= MAX_INDEXES)
            .ok_or("PROTOBUF message index count out of range")?;
        (0..count)
            .map(|_| {
                read_varint(&mut body).and_then(|i| i32::try_from(i).map_err(|_| "message index out of range".into()))
            })
            .collect::<Result<_, String>>()?
    };
    Ok((id, indexes, body))
}

/// A message (its bytes) as the JSON mapping of proto3, field names as in the `.proto`.
pub fn message_to_json(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Value, String> {
    let message = DynamicMessage::decode(desc.clone(), bytes)
        .map_err(|e| format!("does not decode as {}: {e}", desc.full_name()))?;
    let options =
        SerializeOptions::new().use_proto_field_name(true).skip_default_fields(false).stringify_64_bit_integers(false);
    let mut json =
        message.serialize_with_options(serde_json::value::Serializer, &options).map_err(|e| e.to_string())?;
    absent_as_null(&message, &mut json, 0);
    Ok(json)
}

/// Fields that track presence (proto3 `optional`, wrapper types and other messages, proto2
/// fields) and are not set: NULL, where proto3's JSON shows their defaults. This is how
/// ksqlDB's `OPTIONAL` and `WRAPPER` nullable representations carry a NULL.
fn absent_as_null(message: &DynamicMessage, json: &mut Value, depth: usize) {
    let Value::Object(fields) = json else { return };
    if depth > MAX_INDEXES {
        return;
    }
    for field in prost_reflect::ReflectMessage::descriptor(message).fields() {
        let Some(v) = fields.get_mut(field.name()) else { continue };
        if field.supports_presence() && !message.has_field(&field) {
            *v = Value::Null;
            continue;
        }
        if !matches!(field.kind(), Kind::Message(_)) || field.is_map() {
            continue;
        }
        match (message.get_field(&field).as_ref(), v) {
            (prost_reflect::Value::Message(m), v) => absent_as_null(m, v, depth + 1),
            (prost_reflect::Value::List(items), Value::Array(out)) => {
                for (item, v) in items.iter().zip(out.iter_mut()) {
                    if let prost_reflect::Value::Message(m) = item {
                        absent_as_null(m, v, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
}

/// JSON (proto3's mapping) as a message of `desc`, framed with `id` and the message indexes.
pub fn json_to_framed(desc: &MessageDescriptor, indexes: &[i32], id: u32, json: &Value) -> Result<Vec<u8>, String> {
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let message = DynamicMessage::deserialize_with_options(desc.clone(), json.clone(), &options)
        .map_err(|e| format!("does not fit {}: {e}", desc.full_name()))?;
    let mut out = vec![0u8];
    out.extend_from_slice(&id.to_be_bytes());
    if indexes == [0] {
        out.push(0);
    } else {
        write_varint(indexes.len() as i64, &mut out);
        for i in indexes {
            write_varint(i64::from(*i), &mut out);
        }
    }
    message.encode(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decodes a framed value into a cell per column, through the registry's compiled schema.
pub fn decode_value(columns: &[Column], value: &[u8]) -> Result<Vec<Value>, String> {
    let (id, indexes, body) = unframe(value)?;
    let registry = crate::registry::global().ok_or("no Schema Registry")?;
    let compiled = registry.protobuf(id).map_err(|e| format!("PROTOBUF value's schema id {id}: {}", e.message))?;
    let desc = compiled.message(&indexes)?;
    let json = message_to_row_json(&desc, body).map_err(|e| format!("PROTOBUF value (schema {id}): {e}"))?;
    let bytes = serde_json::to_vec(&json).map_err(|e| e.to_string())?;
    super::json::decode_value(columns, &bytes)
}

/// A message as JSON for the JSON decoder's cells: proto3's mapping, unset fields that
/// track presence as NULL, `confluent.type.Decimal`s as their text.
pub fn message_to_row_json(desc: &MessageDescriptor, body: &[u8]) -> Result<Value, String> {
    let mut json = message_to_json(desc, body)?;
    decimals_as_text(desc, &mut json, 0)?;
    Ok(json)
}

/// Replaces each `confluent.type.Decimal` in a message's JSON with the decimal's text.
fn decimals_as_text(desc: &MessageDescriptor, json: &mut Value, depth: usize) -> Result<(), String> {
    each_decimal(desc, json, depth, &decimal_text)
}

/// Replaces each decimal's text where the message has a `confluent.type.Decimal` with that
/// message's JSON.
fn decimals_as_messages(desc: &MessageDescriptor, json: &mut Value, depth: usize) -> Result<(), String> {
    each_decimal(desc, json, depth, &decimal_message)
}

/// Applies `f` to the JSON of every `confluent.type.Decimal` field of a message's JSON,
/// in nested messages, lists and map values too.
fn each_decimal(
    desc: &MessageDescriptor,
    json: &mut Value,
    depth: usize,
    f: &dyn Fn(&Value) -> Result<Value, String>,
) -> Result<(), String> {
    if depth > MAX_INDEXES {
        return Ok(());
    }
    let Value::Object(fields) = json else { return Ok(()) };
    for field in desc.fields() {
        let Some(v) = fields.get_mut(field.name()) else { continue };
        let message = match field.kind() {
            Kind::Message(m) if field.is_map() => m.map_entry_value_field().kind().as_message().cloned(),
            Kind::Message(m) => Some(m),
            _ => None,
        };
        let Some(m) = message else { continue };
        let each: Vec<&mut Value> = match v {
            Value::Array(items) if field.is_list() => items.iter_mut().collect(),
            Value::Object(entries) if field.is_map() => entries.values_mut().collect(),
            other => vec![other],
        };
        for item in each {
            if m.full_name() == DECIMAL_MESSAGE {
                *item = f(item)?;
            } else {
                each_decimal(&m, item, depth + 1, f)?;
            }
        }
    }
    Ok(())
}

/// A decimal's text as a `confluent.type.Decimal` in proto3's JSON: its scale is the
/// digits after the point, its precision all of its digits.
fn decimal_message(v: &Value) -> Result<Value, String> {
    let text = match v {
        Value::Null | Value::Object(_) => return Ok(v.clone()),
        Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    let digits = text.trim_start_matches(['-', '+']);
    let scale = digits.split_once('.').map_or(0, |(_, frac)| frac.len());
    let precision = digits.chars().filter(char::is_ascii_digit).count().max(scale + 1);
    let (p, sc) = (u8::try_from(precision).unwrap_or(u8::MAX), u8::try_from(scale).unwrap_or(u8::MAX));
    let unscaled = super::types::parse_decimal(&text, p, sc).ok_or_else(|| format!("{text} is not a DECIMAL"))?;
    Ok(serde_json::json!({
        "value": base64::engine::general_purpose::STANDARD.encode(super::avro::minimal_be(unscaled)),
        "precision": precision,
        "scale": scale,
    }))
}

/// A `confluent.type.Decimal` in proto3's JSON (`value` as base64) as the decimal's text.
fn decimal_text(v: &Value) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let bytes = match v.get("value").and_then(Value::as_str) {
        Some(b64) => {
            base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("Decimal value: {e}"))?
        }
        None => Vec::new(),
    };
    let unscaled = super::avro::unscaled_of(&bytes).ok_or("a Decimal wider than 38 digits")?;
    let scale = v.get("scale").and_then(Value::as_i64).unwrap_or(0);
    let scale = u8::try_from(scale).map_err(|_| format!("a Decimal of scale {scale}"))?;
    Ok(Value::String(super::types::format_decimal(unscaled, scale)))
}

/// Encodes the value columns of a row with registered schema `schema_id` (its first message).
pub fn encode_value(columns: &[Column], row: &[Value], schema_id: u32) -> Result<Vec<u8>, String> {
    let registry = crate::registry::global().ok_or("no Schema Registry")?;
    let compiled = registry.protobuf(schema_id).map_err(|e| e.message)?;
    let desc = compiled.message(&[0])?;
    json_to_framed(&desc, &[0], schema_id, &row_object(&desc, columns, row)?)
}

/// `VALUE_FORMAT='PROTOBUF_NOSR'`: the value columns as the message of the schema made from
/// them (`schema_named`), without the registry's framing.
pub fn encode_nosr(columns: &[Column], row: &[Value], nullable: Nullable) -> Result<Vec<u8>, String> {
    let compiled = nosr_schema(columns, nullable)?;
    let desc = compiled.message(&[0])?;
    let object = row_object(&desc, columns, row)?;
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let message = DynamicMessage::deserialize_with_options(desc.clone(), object, &options)
        .map_err(|e| format!("does not fit {}: {e}", desc.full_name()))?;
    Ok(message.encode_to_vec())
}

/// A `PROTOBUF_NOSR` value (a bare message of the columns' schema) as a cell per column.
pub fn decode_nosr(columns: &[Column], value: &[u8], nullable: Nullable) -> Result<Vec<Value>, String> {
    let compiled = nosr_schema(columns, nullable)?;
    let desc = compiled.message(&[0])?;
    let json = message_to_row_json(&desc, value).map_err(|e| format!("PROTOBUF_NOSR value: {e}"))?;
    let bytes = serde_json::to_vec(&json).map_err(|e| e.to_string())?;
    super::json::decode_value(columns, &bytes)
}

/// The compiled schema of a relation's value columns, made once per shape (at most
/// `MAX_NOSR_SCHEMAS` kept).
fn nosr_schema(columns: &[Column], nullable: Nullable) -> Result<std::sync::Arc<Compiled>, String> {
    const MAX_NOSR_SCHEMAS: usize = 1_000;
    static CACHE: std::sync::Mutex<Option<HashMap<String, std::sync::Arc<Compiled>>>> = std::sync::Mutex::new(None);
    let text = schema_named(columns, None, nullable)?;
    if let Some(c) = CACHE.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashMap::new).get(&text) {
        return Ok(c.clone());
    }
    let compiled = std::sync::Arc::new(compile(&text, &[])?);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if cache.len() >= MAX_NOSR_SCHEMAS {
        cache.clear();
    }
    cache.insert(text, compiled.clone());
    Ok(compiled)
}

/// A row's value columns as `desc`'s JSON (proto3's mapping), NULLs left out.
fn row_object(desc: &MessageDescriptor, columns: &[Column], row: &[Value]) -> Result<Value, String> {
    let mut object = serde_json::Map::new();
    for (c, v) in columns.iter().zip(row) {
        if c.key || v.is_null() {
            continue;
        }
        let field = desc
            .fields()
            .find(|f| f.name().eq_ignore_ascii_case(&c.name))
            .ok_or_else(|| format!("column {} has no field in {}", c.name, desc.full_name()))?;
        object.insert(field.name().to_string(), proto_json(&c.ty, v));
    }
    let mut object = Value::Object(object);
    decimals_as_messages(desc, &mut object, 0)?;
    Ok(object)
}

/// A canonical cell in proto3's JSON mapping: timestamps (epoch ms) as RFC 3339 text,
/// DECIMALs as their text (`decimals_as_messages` then writes the schema's
/// `confluent.type.Decimal` fields as messages).
fn proto_json(ty: &SqlType, v: &Value) -> Value {
    match (ty, v) {
        (SqlType::Timestamp, Value::Number(n)) => n
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
            .unwrap_or(Value::Null),
        (SqlType::Decimal { .. }, v) => Value::String(v.as_str().map_or_else(|| v.to_string(), str::to_string)),
        (SqlType::Array(t), Value::Array(items)) => Value::Array(items.iter().map(|i| proto_json(t, i)).collect()),
        (SqlType::Map(t), Value::Object(o)) => {
            Value::Object(o.iter().map(|(k, i)| (k.clone(), proto_json(t, i))).collect())
        }
        (SqlType::Struct(fields), Value::Object(o)) => Value::Object(
            fields
                .iter()
                .filter_map(|f| {
                    let v = super::types::lookup(o, &f.name)?;
                    (!v.is_null()).then(|| (f.name.clone(), proto_json(&f.ty, v)))
                })
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// Value columns from a message's fields.
pub fn columns_of(desc: &MessageDescriptor) -> Result<Vec<Column>, String> {
    let mut enclosing = vec![desc.full_name().to_string()];
    desc.fields()
        .map(|f| {
            let ty = field_type(&f, &mut enclosing).map_err(|e| format!("field {}: {e}", f.name()))?;
            Ok(Column { name: f.name().to_ascii_lowercase(), ty, key: false })
        })
        .collect()
}

/// A field's SQL type. `enclosing` holds the messages around it: a message within itself
/// (a recursive schema) has no SQL type, as it could nest as deep as its bytes allow.
fn field_type(f: &prost_reflect::FieldDescriptor, enclosing: &mut Vec<String>) -> Result<SqlType, String> {
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else { return Err("a map without an entry".into()) };
        if !matches!(entry.map_entry_key_field().kind(), Kind::String) {
            return Err("maps with keys other than strings are not supported".into());
        }
        return Ok(SqlType::Map(Box::new(kind_type(&entry.map_entry_value_field().kind(), enclosing)?)));
    }
    let ty = kind_type(&f.kind(), enclosing)?;
    Ok(if f.is_list() { SqlType::Array(Box::new(ty)) } else { ty })
}

fn kind_type(kind: &Kind, enclosing: &mut Vec<String>) -> Result<SqlType, String> {
    Ok(match kind {
        Kind::String | Kind::Enum(_) => SqlType::String,
        Kind::Bool => SqlType::Boolean,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => SqlType::Int,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint32 | Kind::Fixed32 => SqlType::BigInt,
        Kind::Uint64 | Kind::Fixed64 => SqlType::BigInt,
        Kind::Float | Kind::Double => SqlType::Double,
        Kind::Bytes => SqlType::Bytes,
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => SqlType::Timestamp,
        Kind::Message(m) if m.full_name() == DECIMAL_MESSAGE => INFERRED_DECIMAL,
        Kind::Message(m) if wrapped_type(m.full_name()).is_some() => {
            wrapped_type(m.full_name()).unwrap_or(SqlType::String)
        }
        Kind::Message(m) if enclosing.iter().any(|e| e == m.full_name()) => {
            return Err(format!("message {} contains itself (a recursive schema has no SQL type)", m.full_name()))
        }
        Kind::Message(m) => {
            enclosing.push(m.full_name().to_string());
            let fields = m
                .fields()
                .map(|f| Ok(StructField { name: f.name().to_string(), ty: field_type(&f, enclosing)? }))
                .collect::<Result<_, String>>();
            enclosing.pop();
            SqlType::Struct(fields?)
        }
    })
}

/// The SQL type a `google.protobuf` wrapper holds (ksqlDB's `WRAPPER` nullable
/// representation).
fn wrapped_type(message: &str) -> Option<SqlType> {
    Some(match message.strip_prefix("google.protobuf.")? {
        "StringValue" => SqlType::String,
        "BoolValue" => SqlType::Boolean,
        "Int32Value" => SqlType::Int,
        "Int64Value" | "UInt32Value" | "UInt64Value" => SqlType::BigInt,
        "FloatValue" | "DoubleValue" => SqlType::Double,
        "BytesValue" => SqlType::Bytes,
        _ => return None,
    })
}

/// How a relation's PROTOBUF schema lets a field be NULL (ksqlDB's
/// `*_PROTOBUF_NULLABLE_REPRESENTATION`): not at all (proto3's defaults), as proto3
/// `optional` fields, or as `google.protobuf` wrapper messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Nullable {
    #[default]
    None,
    Optional,
    Wrapper,
}

impl Nullable {
    pub fn parse(text: &str) -> Option<Nullable> {
        match text.to_ascii_uppercase().as_str() {
            "OPTIONAL" => Some(Nullable::Optional),
            "WRAPPER" => Some(Nullable::Wrapper),
            _ => None,
        }
    }
}

/// The `.proto` a relation's value columns are written with: `ConnectDefault1`, a field per
/// value column in order (STRUCTs as nested messages, TIMESTAMP as
/// `google.protobuf.Timestamp`, DECIMAL as `confluent.type.Decimal`, as ksqlDB writes them).
pub fn schema_for(columns: &[Column]) -> Result<String, String> {
    schema_named(columns, None, Nullable::None)
}

/// `schema_for` with the message's full name (`VALUE_SCHEMA_FULL_NAME`: `package.Name`)
/// instead of `ConnectDefault1`.
pub fn schema_named(columns: &[Column], full_name: Option<&str>, nullable: Nullable) -> Result<String, String> {
    let (package, name) = match full_name.map(|f| f.rsplit_once('.').unwrap_or(("", f))) {
        Some((package, name)) => (package, name),
        None => ("", "ConnectDefault1"),
    };
    let valid =
        |s: &str| !s.is_empty() && s.split('.').all(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    if !valid(name) || (!package.is_empty() && !valid(package)) {
        return Err(format!("{} is not a Protobuf message name", full_name.unwrap_or_default()));
    }
    let mut body = String::new();
    let mut nested = 1;
    let fields: Vec<(&str, &SqlType)> = columns.iter().filter(|c| !c.key).map(|c| (c.name.as_str(), &c.ty)).collect();
    message(name, &fields, &mut nested, 0, nullable, &mut body)?;
    if !package.is_empty() {
        body = format!("package {package};\n\n{body}");
    }
    let mut import = String::new();
    if body.contains("google.protobuf.Timestamp") {
        import.push_str("import \"google/protobuf/timestamp.proto\";\n");
    }
    if body.contains(DECIMAL_MESSAGE) {
        import.push_str(&format!("import \"{DECIMAL_FILE}\";\n"));
    }
    let wrappers = ["StringValue", "BoolValue", "Int32Value", "Int64Value", "DoubleValue", "BytesValue"];
    if wrappers.iter().any(|w| body.contains(&format!("google.protobuf.{w} "))) {
        import.push_str("import \"google/protobuf/wrappers.proto\";\n");
    }
    if !import.is_empty() {
        import.push('\n');
    }
    Ok(format!("syntax = \"proto3\";\n\n{import}{body}"))
}

fn message(
    name: &str,
    fields: &[(&str, &SqlType)],
    nested: &mut usize,
    depth: usize,
    nullable: Nullable,
    out: &mut String,
) -> Result<(), String> {
    let pad = "  ".repeat(depth);
    out.push_str(&format!("{pad}message {name} {{\n"));
    for (i, (field, ty)) in fields.iter().enumerate() {
        let (repeated, ty) = match ty {
            SqlType::Array(t) => ("repeated ", t.as_ref()),
            t => ("", *t),
        };
        let mut proto = match ty {
            SqlType::Map(v) => format!("map<string, {}>", scalar(v, nested, depth, nullable, out)?),
            SqlType::Array(_) => return Err(format!("column {field}: arrays of arrays have no Protobuf form")),
            t => scalar(t, nested, depth, nullable, out)?,
        };
        // A single scalar field may be NULL as the relation's representation says.
        let is_scalar = !proto.contains('.') && !proto.starts_with("map<") && !proto.starts_with("ConnectDefault");
        if repeated.is_empty() && is_scalar {
            match nullable {
                Nullable::None => {}
                Nullable::Optional => proto = format!("optional {proto}"),
                Nullable::Wrapper => proto = format!("google.protobuf.{}", wrapper_of(&proto)),
            }
        }
        if !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || field.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!("column {field} is not a Protobuf field name"));
        }
        out.push_str(&format!("{pad}  {repeated}{proto} {field} = {};\n", i + 1));
    }
    out.push_str(&format!("{pad}}}\n"));
    Ok(())
}

/// The `google.protobuf` wrapper message of a scalar type.
fn wrapper_of(scalar: &str) -> &'static str {
    match scalar {
        "bool" => "BoolValue",
        "int32" => "Int32Value",
        "int64" => "Int64Value",
        "double" => "DoubleValue",
        "bytes" => "BytesValue",
        _ => "StringValue",
    }
}

/// A non-repeated field's type; a STRUCT's message is written (nested) first.
fn scalar(
    ty: &SqlType,
    nested: &mut usize,
    depth: usize,
    nullable: Nullable,
    out: &mut String,
) -> Result<String, String> {
    Ok(match ty {
        SqlType::String => "string".into(),
        SqlType::Decimal { .. } => DECIMAL_MESSAGE.into(),
        SqlType::Boolean => "bool".into(),
        SqlType::Int | SqlType::Date | SqlType::Time => "int32".into(),
        SqlType::BigInt => "int64".into(),
        SqlType::Double => "double".into(),
        SqlType::Bytes => "bytes".into(),
        SqlType::Timestamp => "google.protobuf.Timestamp".into(),
        SqlType::Struct(fields) => {
            *nested += 1;
            let name = format!("ConnectDefault{nested}");
            let fs: Vec<(&str, &SqlType)> = fields.iter().map(|f| (f.name.as_str(), &f.ty)).collect();
            message(&name, &fs, nested, depth + 1, nullable, out)?;
            name
        }
        SqlType::Array(_) | SqlType::Map(_) => return Err("nested collections have no Protobuf form".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<Column> {
        vec![
            Column { name: "id".into(), ty: SqlType::BigInt, key: true },
            Column { name: "n".into(), ty: SqlType::Int, key: false },
            Column { name: "tags".into(), ty: SqlType::Array(Box::new(SqlType::String)), key: false },
            Column { name: "at".into(), ty: SqlType::Timestamp, key: false },
            Column {
                name: "addr".into(),
                ty: SqlType::Struct(vec![StructField { name: "city".into(), ty: SqlType::String }]),
                key: false,
            },
            Column { name: "m".into(), ty: SqlType::Map(Box::new(SqlType::Double)), key: false },
        ]
    }

    #[test]
    fn the_schema_of_columns_compiles_and_gives_them_back() {
        let text = schema_for(&columns()).unwrap();
        assert!(text.contains("message ConnectDefault1") && text.contains("google/protobuf/timestamp.proto"), "{text}");
        let compiled = compile(&text, &[]).unwrap();
        let desc = compiled.message(&[0]).unwrap();
        assert_eq!(columns_of(&desc).unwrap(), columns()[1..].to_vec());
        // The base64 descriptor Confluent's serializers register compiles to the same message.
        let again = compile(&serialized(&compiled).unwrap(), &[]).unwrap();
        assert_eq!(again.message(&[0]).unwrap().full_name(), "ConnectDefault1");
        assert!(compile("message {", &[]).is_err());
        assert!(schema_for(&[Column {
            name: "x".into(),
            ty: SqlType::Array(Box::new(SqlType::Array(Box::new(SqlType::Int)))),
            key: false
        }])
        .is_err());
    }

    #[test]
    fn recursive_messages_have_no_columns() {
        let compiled = compile("syntax = \"proto3\"; message T { string a = 1; repeated T kids = 2; }", &[]).unwrap();
        let e = columns_of(&compiled.message(&[0]).unwrap()).unwrap_err();
        assert!(e.contains("contains itself"), "{e}");
        let mutual = compile("syntax = \"proto3\"; message A { B b = 1; } message B { A a = 1; }", &[]).unwrap();
        assert!(columns_of(&mutual.message(&[0]).unwrap()).is_err());
    }

    #[test]
    fn decimals_are_confluent_decimal_messages() {
        let cols = vec![
            Column { name: "d".into(), ty: SqlType::Decimal { precision: 10, scale: 2 }, key: false },
            Column {
                name: "ds".into(),
                ty: SqlType::Array(Box::new(SqlType::Decimal { precision: 5, scale: 1 })),
                key: false,
            },
        ];
        let text = schema_for(&cols).unwrap();
        assert!(
            text.contains("import \"confluent/type/decimal.proto\"") && text.contains("confluent.type.Decimal d = 1"),
            "{text}"
        );
        let compiled = compile(&text, &[]).unwrap();
        let desc = compiled.message(&[0]).unwrap();
        let mut json = serde_json::json!({"d": "-1234.05", "ds": ["0.5", "-0.1"]});
        decimals_as_messages(&desc, &mut json, 0).unwrap();
        assert_eq!(json["d"]["scale"], 2);
        let framed = json_to_framed(&desc, &[0], 1, &json).unwrap();
        let (_, _, body) = unframe(&framed).unwrap();
        let mut back = message_to_json(&desc, body).unwrap();
        decimals_as_text(&desc, &mut back, 0).unwrap();
        assert_eq!(back, serde_json::json!({"d": "-1234.05", "ds": ["0.5", "-0.1"]}));
        // Inferred, a Decimal field is a DECIMAL column.
        assert!(matches!(columns_of(&desc).unwrap()[0].ty, SqlType::Decimal { .. }));
    }

    #[test]
    fn rows_round_trip_through_framing_and_message_indexes() {
        let compiled = compile(
            "syntax = \"proto3\";\nmessage A { int64 id = 1; message B { string s = 1; } }\nmessage C { bool b = 1; }",
            &[],
        )
        .unwrap();
        let b = compiled.message(&[0, 0]).unwrap();
        assert_eq!(b.full_name(), "A.B");
        let framed = json_to_framed(&b, &[0, 0], 42, &serde_json::json!({"s": "x"})).unwrap();
        let (id, indexes, body) = unframe(&framed).unwrap();
        assert_eq!((id, indexes.as_slice()), (42, &[0, 0][..]));
        assert_eq!(message_to_json(&b, body).unwrap(), serde_json::json!({"s": "x"}));
        let c = compiled.message(&[1]).unwrap();
        let framed = json_to_framed(&c, &[1], 1, &serde_json::json!({"b": true})).unwrap();
        assert_eq!(unframe(&framed).unwrap().1, vec![1]);
        let first = json_to_framed(&compiled.message(&[0]).unwrap(), &[0], 1, &serde_json::json!({"id": 5})).unwrap();
        assert_eq!(first[5], 0, "the first message is written as one zero byte");
        assert!(compiled.message(&[7]).is_err());
        assert!(unframe(b"{}").unwrap_err().contains("magic byte"));
        assert!(json_to_framed(&c, &[1], 1, &serde_json::json!({"b": "no"})).is_err());
    }
}
