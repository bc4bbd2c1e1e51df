//! AVRO and JSON_SR relations and the Schema Registry: columns inferred from a subject's schema, the
//! schema a relation's rows are written with, and whether that schema is the relation's own.
//! Called by `ddl.rs` when streams and tables are created and by `INSERT INTO ... SELECT`.

use std::collections::BTreeMap;

use super::Engine;
use crate::catalog::RelationDef;
use crate::error::{EddyError, Result};
use crate::format::{Column, KeyFormat, ValueFormat};

impl Engine {
    /// An AVRO relation declared without value columns takes them from the Schema Registry:
    /// `VALUE_SCHEMA_ID`'s schema, else the latest of the subject `{topic}-value` (ksqlDB's
    /// schema inference). Returns the columns and the schema id they came from.
    pub(super) fn infer_value_columns(
        &self,
        name: &str,
        mut columns: Vec<Column>,
        props: &BTreeMap<String, String>,
    ) -> Result<(Vec<Column>, Option<u32>)> {
        let format = props.get("VALUE_FORMAT").or(props.get("FORMAT")).map(|f| f.to_ascii_uppercase());
        let avro = matches!(format.as_deref(), Some("AVRO" | "JSON_SR" | "PROTOBUF"));
        let schema_id = schema_id_property(props, "VALUE", avro)?;
        if !avro || (columns.iter().any(|c| !c.key) && schema_id.is_none()) {
            return Ok((columns, None));
        }
        if columns.iter().any(|c| !c.key) {
            return Err(EddyError::InvalidValue(
                "VALUE_SCHEMA_ID gives the value columns: declare key columns only".into(),
            ));
        }
        let topic = props.get("KAFKA_TOPIC").cloned().unwrap_or_else(|| name.to_string());
        let id = match schema_id {
            Some(id) => id,
            None => {
                let subject = format!("{topic}-value");
                self.registry
                    .version(&subject, crate::registry::VersionRef::Latest, false)
                    .map_err(|_| {
                        EddyError::InvalidValue(format!(
                            "Schema for message values on topic '{topic}' does not exist in the Schema Registry.Subject: {subject}"
                        ))
                    })?
                    .id
            }
        };
        let full_name = props.get("VALUE_AVRO_SCHEMA_FULL_NAME").or(props.get("VALUE_SCHEMA_FULL_NAME"));
        let inferred = if format.as_deref() == Some("PROTOBUF") {
            let compiled = self
                .registry
                .protobuf(id)
                .map_err(|e| EddyError::InvalidValue(format!("VALUE_SCHEMA_ID {id}: {}", e.message)))?;
            compiled
                .message_named(full_name.map(String::as_str))
                .and_then(|(_, m)| crate::format::protobuf::columns_of(&m))
        } else if format.as_deref() == Some("JSON_SR") {
            let stored = self
                .registry
                .schema(id)
                .map_err(|e| EddyError::InvalidValue(format!("VALUE_SCHEMA_ID {id}: {}", e.message)))?;
            if stored.schema_type != crate::registry::SchemaType::Json {
                return Err(EddyError::InvalidValue(format!(
                    "schema {id} of topic '{topic}' is {}, not a JSON Schema",
                    stored.schema_type.name()
                )));
            }
            crate::format::json_sr::columns_of(&stored.schema)
        } else {
            let schema = self
                .registry
                .avro(id)
                .map_err(|e| EddyError::InvalidValue(format!("VALUE_SCHEMA_ID {id}: {}", e.message)))?;
            crate::format::avro::columns_of(&schema)
        }
        .map_err(|e| EddyError::InvalidValue(format!("schema {id} of topic '{topic}': {e}")))?;
        for c in inferred {
            if columns.iter().any(|k| k.name == c.name) {
                continue;
            }
            columns.push(c);
        }
        Ok((columns, Some(id)))
    }

    /// A relation with a key format of the Schema Registry (AVRO, JSON_SR, PROTOBUF) declared
    /// without key columns takes them from `KEY_SCHEMA_ID`'s schema, else from the latest of
    /// the subject `{topic}-key` (ksqlDB's key inference). A key schema that is not a record
    /// (message, object) is one column `rowkey`. Returns the columns, key columns first, and
    /// the schema id they came from.
    pub(super) fn infer_key_columns(
        &self,
        name: &str,
        columns: Vec<Column>,
        props: &BTreeMap<String, String>,
    ) -> Result<(Vec<Column>, Option<u32>)> {
        let explicit = props.get("KEY_FORMAT").map(|f| f.to_ascii_uppercase());
        let format = explicit.clone().or_else(|| props.get("FORMAT").map(|f| f.to_ascii_uppercase()));
        let registered = matches!(format.as_deref(), Some("AVRO" | "JSON_SR" | "PROTOBUF"));
        let schema_id = schema_id_property(props, "KEY", registered)?;
        let has_keys = columns.iter().any(|c| c.key);
        if !registered || (has_keys && schema_id.is_none()) {
            return Ok((columns, None));
        }
        if has_keys {
            return Err(EddyError::InvalidValue(
                "KEY_SCHEMA_ID gives the key columns: declare value columns only".into(),
            ));
        }
        let topic = props.get("KAFKA_TOPIC").cloned().unwrap_or_else(|| name.to_string());
        let subject = format!("{topic}-key");
        let id = match schema_id {
            Some(id) => id,
            None => match self.registry.version(&subject, crate::registry::VersionRef::Latest, false) {
                Ok(latest) => latest.id,
                // `FORMAT` alone over a topic without key schemas: a stream without a key,
                // as before key formats took schemas.
                Err(_) if explicit.is_none() => return Ok((columns, None)),
                Err(_) => {
                    return Err(EddyError::InvalidValue(format!(
                        "Schema for message keys on topic '{topic}' does not exist in the Schema Registry.Subject: {subject}"
                    )))
                }
            },
        };
        let what =
            |e: crate::registry::RegistryError| EddyError::InvalidValue(format!("KEY_SCHEMA_ID {id}: {}", e.message));
        let inferred = match format.as_deref() {
            Some("PROTOBUF") => {
                let compiled = self.registry.protobuf(id).map_err(what)?;
                let full_name = props.get("KEY_SCHEMA_FULL_NAME").map(String::as_str);
                compiled.message_named(full_name).and_then(|(_, m)| crate::format::protobuf::columns_of(&m)).and_then(|cols| {
                    if cols.len() > 1 {
                        return Err(format!(
                            "The key schema for topic {topic} contains multiple columns, which is not supported by ksqlDB at this time."
                        ));
                    }
                    Ok(cols.into_iter().map(|c| Column { key: true, ..c }).collect::<Vec<_>>())
                })
            }
            Some("JSON_SR") => {
                let stored = self.registry.schema(id).map_err(what)?;
                if stored.schema_type != crate::registry::SchemaType::Json {
                    return Err(EddyError::InvalidValue(format!(
                        "schema {id} of topic '{topic}' is {}, not a JSON Schema",
                        stored.schema_type.name()
                    )));
                }
                crate::format::json_sr::key_columns_of(&stored.schema)
            }
            _ => crate::format::avro::key_columns_of(&*self.registry.avro(id).map_err(what)?),
        }
        .map_err(|e| EddyError::InvalidValue(format!("key schema {id} of topic '{topic}': {e}")))?;
        let values = columns.into_iter().filter(|c| !inferred.iter().any(|k| k.name == c.name));
        Ok((inferred.iter().cloned().chain(values).collect(), Some(id)))
    }

    /// The schema an AVRO, JSON_SR or PROTOBUF key is written with: the one its columns came
    /// from, else the subject `{topic}-key`'s latest (a relation declared over a topic), else
    /// one made from the key columns and registered there (a query's output, or a topic
    /// without a key subject yet).
    pub(super) fn attach_key_schema(&self, rel: &mut RelationDef, inferred: Option<u32>) -> Result<()> {
        let Some((schema_type, own)) = own_key_schema(rel)? else { return Ok(()) };
        let id = self.schema_to_write(rel, "key", rel.key_format.name(), inferred, schema_type, own)?;
        self.check_first_message(id, rel.key_schema_full_name.as_deref(), "KEY")?;
        rel.key_schema_id = Some(id);
        Ok(())
    }

    /// The schema an AVRO relation writes its rows with: the one its columns came from, else
    /// one made from its columns and registered under `{topic}-value` (a query's output, or a
    /// topic without a subject yet), else the subject's latest.
    pub(super) fn attach_value_schema(&self, rel: &mut RelationDef, inferred: Option<u32>) -> Result<()> {
        let (schema_type, own) = match rel.value_format.as_str() {
            "AVRO" => (
                crate::registry::SchemaType::Avro,
                crate::format::avro::schema_named(&rel.columns, rel.value_schema_full_name.as_deref()),
            ),
            "JSON_SR" => (crate::registry::SchemaType::Json, crate::format::json_sr::schema_for(&rel.columns)),
            "PROTOBUF" => (
                crate::registry::SchemaType::Protobuf,
                crate::format::protobuf::schema_named(
                    &rel.columns,
                    rel.value_schema_full_name.as_deref(),
                    rel.value_protobuf_nullable,
                )
                .map_err(|e| EddyError::InvalidValue(format!("{} has no PROTOBUF form: {e}", rel.name)))?,
            ),
            _ => return Ok(()),
        };
        let id = self.schema_to_write(rel, "value", &rel.value_format, inferred, schema_type, own)?;
        self.check_first_message(id, rel.value_schema_full_name.as_deref(), "VALUE")?;
        rel.value_schema_id = Some(id);
        Ok(())
    }

    /// The schema id one side (`key` or `value`) of a relation is written with: the one its
    /// columns came from, else (a relation declared over a topic) the subject's latest,
    /// which must be of the format's type, else `own` registered under the subject.
    fn schema_to_write(
        &self,
        rel: &RelationDef,
        side: &str,
        format: &str,
        inferred: Option<u32>,
        schema_type: crate::registry::SchemaType,
        own: String,
    ) -> Result<u32> {
        let subject = format!("{}-{side}", rel.topic);
        let latest = self.registry.version(&subject, crate::registry::VersionRef::Latest, false).ok();
        Ok(match (inferred, latest) {
            (Some(id), _) => id,
            (None, Some(latest)) if rel.written_by.is_none() => {
                if latest.schema.schema_type != schema_type {
                    return Err(EddyError::InvalidValue(format!(
                        "the subject {subject}'s latest schema (id {}) is {}, not what {}_FORMAT='{format}' reads",
                        latest.id,
                        latest.schema.schema_type.name(),
                        side.to_uppercase(),
                    )));
                }
                latest.id
            }
            _ => {
                let schema = crate::registry::StoredSchema { schema: own, schema_type, references: Vec::new() };
                self.registry.register(&subject, schema).map_err(|e| {
                    EddyError::InvalidValue(format!("registering the {side} schema of {}: {}", rel.name, e.message))
                })?
            }
        })
    }

    /// A PROTOBUF schema is written with its first message: `*_SCHEMA_FULL_NAME` naming
    /// another one is refused (reading would work, writing would not).
    fn check_first_message(&self, id: u32, full_name: Option<&str>, which: &str) -> Result<()> {
        let Some(full_name) = full_name else { return Ok(()) };
        if self.registry.schema_type(id) != Some(crate::registry::SchemaType::Protobuf) {
            return Ok(());
        }
        let compiled = self.registry.protobuf(id).map_err(|e| EddyError::InvalidValue(e.message))?;
        match compiled.message_named(Some(full_name)).map_err(EddyError::InvalidValue)? {
            (0, _) => Ok(()),
            (_, m) => Err(EddyError::NotImplemented(format!(
                "{which}_SCHEMA_FULL_NAME='{full_name}' names {}, not schema {id}'s first message, which Eddy writes with",
                m.full_name()
            ))),
        }
    }

    /// Whether an AVRO or PROTOBUF key is written with the schema made from the key columns
    /// (which takes any key of them); true for the other key formats.
    pub(super) fn writes_own_key_schema(&self, rel: &RelationDef) -> bool {
        if !matches!(rel.key_format, crate::format::KeyFormat::Avro | crate::format::KeyFormat::Protobuf) {
            return true;
        }
        let (Some(id), Ok(Some((_, own)))) = (rel.key_schema_id, own_key_schema(rel)) else { return false };
        self.registry.schema(id).is_ok_and(|s| {
            s.schema == own
                || serde_json::from_str::<serde_json::Value>(&s.schema).ok()
                    == serde_json::from_str::<serde_json::Value>(&own).ok()
        })
    }

    /// Whether an AVRO (or PROTOBUF) relation writes with the schema made from its own columns
    /// (every field optional), which takes any row of them.
    pub(super) fn writes_own_avro_schema(&self, rel: &RelationDef) -> bool {
        let Some(id) = rel.value_schema_id else { return false };
        if rel.value_format == "PROTOBUF" {
            let own = crate::format::protobuf::schema_named(
                &rel.columns,
                rel.value_schema_full_name.as_deref(),
                rel.value_protobuf_nullable,
            );
            return self.registry.schema(id).is_ok_and(|s| own.is_ok_and(|own| own == s.schema));
        }
        let own = crate::format::avro::schema_named(&rel.columns, rel.value_schema_full_name.as_deref());
        self.registry.schema(id).is_ok_and(|s| {
            serde_json::from_str::<serde_json::Value>(&s.schema).ok()
                == serde_json::from_str::<serde_json::Value>(&own).ok()
        })
    }
}

/// `{which}_SCHEMA_ID` (KEY or VALUE), allowed where that side's format uses the registry.
fn schema_id_property(props: &BTreeMap<String, String>, which: &str, allowed: bool) -> Result<Option<u32>> {
    let Some(id) = props.get(&format!("{which}_SCHEMA_ID")) else { return Ok(None) };
    if !allowed {
        return Err(EddyError::InvalidValue(format!(
            "{which}_SCHEMA_ID applies to {which}_FORMAT='AVRO', 'JSON_SR' or 'PROTOBUF'"
        )));
    }
    id.trim()
        .parse::<u32>()
        .map(Some)
        .map_err(|_| EddyError::InvalidValue(format!("{which}_SCHEMA_ID={id}: expected a schema id")))
}

/// The WITH properties about the schemas of AVRO and PROTOBUF keys and values.
pub(super) struct SchemaProperties {
    pub key_full_name: Option<String>,
    pub value_full_name: Option<String>,
    pub key_nullable: crate::format::protobuf::Nullable,
    pub value_nullable: crate::format::protobuf::Nullable,
}

/// `KEY_SCHEMA_FULL_NAME` and `VALUE_SCHEMA_FULL_NAME` (ksqlDB's older
/// `VALUE_AVRO_SCHEMA_FULL_NAME` first), for the AVRO and PROTOBUF formats only; and
/// `KEY_`/`VALUE_PROTOBUF_NULLABLE_REPRESENTATION`, for PROTOBUF and PROTOBUF_NOSR.
pub(super) fn schema_properties(
    props: &BTreeMap<String, String>,
    key_format: KeyFormat,
    value_format: ValueFormat,
) -> Result<SchemaProperties> {
    let key = props.get("KEY_SCHEMA_FULL_NAME").cloned();
    let value = props.get("VALUE_AVRO_SCHEMA_FULL_NAME").or(props.get("VALUE_SCHEMA_FULL_NAME")).cloned();
    if key.is_some() && !matches!(key_format, KeyFormat::Avro | KeyFormat::Protobuf) {
        return Err(EddyError::InvalidValue(format!(
            "KEY_SCHEMA_FULL_NAME applies to KEY_FORMAT='AVRO' or 'PROTOBUF', not '{}'",
            key_format.name()
        )));
    }
    if value.is_some() && !matches!(value_format, ValueFormat::Avro { .. } | ValueFormat::Protobuf { .. }) {
        return Err(EddyError::InvalidValue(format!(
            "VALUE_SCHEMA_FULL_NAME applies to VALUE_FORMAT='AVRO' or 'PROTOBUF', not '{}'",
            value_format.name()
        )));
    }
    for name in key.iter().chain(value.iter()) {
        if name.is_empty() || name.starts_with('.') || name.ends_with('.') || name.contains(char::is_whitespace) {
            return Err(EddyError::InvalidValue(format!("'{name}' is not a schema full name")));
        }
    }
    let nullable = |which: &str, is_protobuf: bool| -> Result<crate::format::protobuf::Nullable> {
        let prop = format!("{which}_PROTOBUF_NULLABLE_REPRESENTATION");
        let Some(text) = props.get(&prop) else { return Ok(Default::default()) };
        if !is_protobuf {
            return Err(EddyError::InvalidValue(format!("{prop} applies to {which}_FORMAT='PROTOBUF'")));
        }
        crate::format::protobuf::Nullable::parse(text)
            .ok_or_else(|| EddyError::InvalidValue(format!("{prop}='{text}': expected OPTIONAL or WRAPPER")))
    };
    Ok(SchemaProperties {
        key_full_name: key,
        value_full_name: value,
        key_nullable: nullable("KEY", matches!(key_format, KeyFormat::Protobuf | KeyFormat::ProtobufNosr))?,
        value_nullable: nullable(
            "VALUE",
            matches!(value_format, ValueFormat::Protobuf { .. } | ValueFormat::ProtobufNosr { .. }),
        )?,
    })
}

/// The key schema Eddy makes from a relation's key columns (without a windowed key's
/// bounds), and its type; `None` for key formats without the Schema Registry.
fn own_key_schema(rel: &RelationDef) -> Result<Option<(crate::registry::SchemaType, String)>> {
    use crate::format::KeyFormat;
    use crate::registry::SchemaType;
    let is_bound = |c: &Column| {
        rel.key_window.is_some()
            && (c.name == crate::format::key::WINDOW_START || c.name == crate::format::key::WINDOW_END)
    };
    let keys: Vec<Column> = rel.columns.iter().filter(|c| c.key && !is_bound(c)).cloned().collect();
    Ok(Some(match rel.key_format {
        KeyFormat::Avro => (
            SchemaType::Avro,
            crate::format::avro::key_schema_for(&rel.name, &keys, rel.key_schema_full_name.as_deref()),
        ),
        KeyFormat::JsonSr => (SchemaType::Json, crate::format::json_sr::key_schema_for(&keys)),
        KeyFormat::Protobuf => {
            let as_values: Vec<Column> = keys.iter().map(|c| Column { key: false, ..c.clone() }).collect();
            let proto = crate::format::protobuf::schema_named(
                &as_values,
                rel.key_schema_full_name.as_deref(),
                rel.key_protobuf_nullable,
            )
            .map_err(|e| EddyError::InvalidValue(format!("{}'s key has no PROTOBUF form: {e}", rel.name)))?;
            (SchemaType::Protobuf, proto)
        }
        _ => return Ok(None),
    }))
}
