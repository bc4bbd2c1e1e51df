//! The durable catalog: streams, tables and running queries.
//!
//! Every change is one synced RocksDB write, so a stream, a table, or a query and the table it
//! feeds survive `kill -9` together or not at all. The engine reads it at start to resume
//! queries. In-memory maps mirror what is on disk; disk is written first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::error::{EddyError, Result};
use crate::format::{Column, KeyFormat, KeyLayout, KeyWindow, SqlType, ValueFormat};
use crate::sql::{Privilege, RelationKind};
use crate::state::{StateStore, CATALOG_CF};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelationDef {
    pub name: String,
    pub kind: RelationKind,
    pub columns: Vec<Column>,
    pub topic: String,
    pub key_format: KeyFormat,
    /// A windowed table's window, carried in its record keys after the key columns (ksqlDB's
    /// windowed keys; `windowstart`/`windowend` are then key columns). `None`: not windowed,
    /// or windowed before Eddy wrote ksqlDB's keys (the bounds are then ordinary key columns
    /// of the key format).
    #[serde(default)]
    pub key_window: Option<KeyWindow>,
    /// A single JSON key column is written as its value (`5`), as ksqlDB writes it; relations
    /// made before (`false` in their catalog entries) keep writing `{"id":5}`, so that every
    /// record of a row in their topics has the same key bytes.
    #[serde(default)]
    pub single_json_key_unwrapped: bool,
    pub value_format: String,
    /// The registered schema an AVRO relation's rows are written with.
    #[serde(default)]
    pub value_schema_id: Option<u32>,
    /// The registered schema an AVRO, JSON_SR or PROTOBUF key is written with.
    #[serde(default)]
    pub key_schema_id: Option<u32>,
    /// `KEY_SCHEMA_FULL_NAME`: the Avro record or Protobuf message name of the key schema.
    #[serde(default)]
    pub key_schema_full_name: Option<String>,
    /// `VALUE_SCHEMA_FULL_NAME` (or ksqlDB's older `VALUE_AVRO_SCHEMA_FULL_NAME`).
    #[serde(default)]
    pub value_schema_full_name: Option<String>,
    /// `KEY_PROTOBUF_NULLABLE_REPRESENTATION` and `VALUE_...`: how the PROTOBUF schemas Eddy
    /// registers let fields be NULL.
    #[serde(default)]
    pub key_protobuf_nullable: crate::format::protobuf::Nullable,
    #[serde(default)]
    pub value_protobuf_nullable: crate::format::protobuf::Nullable,
    /// `VALUE_DELIMITER` of a DELIMITED value format (`,` when absent).
    #[serde(default)]
    pub value_delimiter: Option<char>,
    /// `WRAP_SINGLE_VALUE=false` on a JSON value: the single value column unwrapped.
    #[serde(default)]
    pub unwrap_single_value: bool,
    pub partitions: i32,
    /// Column whose value becomes the record timestamp (`TIMESTAMP='col'`).
    pub timestamp_column: Option<String>,
    /// Columns filled from the record's headers: (column, `None` for all headers or the key).
    #[serde(default)]
    pub header_columns: Vec<(String, Option<String>)>,
    /// Java-style pattern for a STRING timestamp column (`TIMESTAMP_FORMAT='...'`).
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// The persistent query writing this relation's topic (CREATE ... AS SELECT).
    pub written_by: Option<String>,
    /// The query whose state holds this table's current rows (tables only).
    pub materialized_by: Option<String>,
    /// How a row's key in that state is made (see `ContinuousPlan::state_key`); `None`: pull
    /// queries scan the table.
    #[serde(default)]
    pub state_key: Option<StateKey>,
    /// What catalogs written before keys were typed recorded instead of `state_key`: see
    /// `state_key()`.
    #[serde(default, rename = "state_key_columns")]
    pub legacy_state_key_columns: Option<Vec<usize>>,
    /// The user who created it (`None`: made by Eddy itself, or before owners were kept;
    /// then only superusers may drop or change it).
    #[serde(default)]
    pub owner: Option<String>,
    /// What other users may do with it (`GRANT`), by user.
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<Privilege>>,
}

/// The columns whose values, in this order, make a table row's key in its query's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateKey {
    pub columns: Vec<usize>,
    /// Keys are Arrow's row format over those columns' types (`format::row_keys`: an
    /// aggregation's groups); otherwise `format::memcomparable` over their values.
    pub row_format: bool,
}

impl RelationDef {
    /// How a row's key in the table's state is made. A table declared on a topic before keys
    /// were typed kept its key columns' values (`memcomparable`), as it still does; a table a
    /// query wrote then may be an aggregation, whose state is now recomputed with typed
    /// keys, so its old entry is not trusted (pull queries scan it).
    pub fn state_key(&self) -> Option<StateKey> {
        self.state_key.clone().or_else(|| {
            let columns = self.legacy_state_key_columns.clone().filter(|_| self.written_by.is_none())?;
            Some(StateKey { columns, row_format: false })
        })
    }

    /// Fills the header columns of a decoded row from the record's headers (BYTES as
    /// base64 text, the JSON form of BYTES).
    pub fn fill_headers(&self, row: &mut [serde_json::Value], headers: &[(String, Option<Vec<u8>>)]) {
        use base64::Engine as _;
        let b64 = |v: &Option<Vec<u8>>| match v {
            Some(b) => serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            None => serde_json::Value::Null,
        };
        for (column, key) in &self.header_columns {
            let Some(i) = self.columns.iter().position(|c| &c.name == column) else { continue };
            row[i] = match key {
                None => serde_json::Value::Array(
                    headers.iter().map(|(k, v)| serde_json::json!({ "key": k, "value": b64(v) })).collect(),
                ),
                Some(key) => headers.iter().rev().find(|(k, _)| k == key).map(|(_, v)| b64(v)).unwrap_or_default(),
            };
        }
    }

    /// The value format records are written in (checked when the relation was created).
    /// How its record keys are written and read.
    pub fn key_layout(&self) -> KeyLayout {
        KeyLayout {
            format: self.key_format,
            window: self.key_window,
            wrap_single_json: !self.single_json_key_unwrapped,
            schema_id: self.key_schema_id.unwrap_or(0),
            protobuf_nullable: self.key_protobuf_nullable,
        }
    }

    pub fn value_encoding(&self) -> ValueFormat {
        match self.value_format.as_str() {
            "DELIMITED" => ValueFormat::Delimited(self.value_delimiter.unwrap_or(',')),
            "KAFKA" => ValueFormat::Kafka,
            "AVRO" => ValueFormat::Avro { schema_id: self.value_schema_id.unwrap_or(0) },
            "JSON_SR" => ValueFormat::JsonSr { schema_id: self.value_schema_id.unwrap_or(0) },
            "PROTOBUF" => ValueFormat::Protobuf { schema_id: self.value_schema_id.unwrap_or(0) },
            "PROTOBUF_NOSR" => ValueFormat::ProtobufNosr { nullable: self.value_protobuf_nullable },
            _ if self.unwrap_single_value => ValueFormat::JsonUnwrapped,
            _ => ValueFormat::Json,
        }
    }

    /// A row's event time: its `TIMESTAMP` column (epoch ms, a TIMESTAMP, or a string in
    /// `TIMESTAMP_FORMAT`), otherwise the record's own timestamp.
    pub fn event_time_ms(&self, row: &[serde_json::Value], record_timestamp_ms: i64) -> Result<i64, String> {
        let Some(name) = &self.timestamp_column else { return Ok(record_timestamp_ms) };
        let Some(i) = self.columns.iter().position(|c| &c.name == name) else { return Ok(record_timestamp_ms) };
        match (&row[i], &self.timestamp_format) {
            (serde_json::Value::Null, _) => Err(format!("timestamp column {name} is null")),
            (serde_json::Value::String(s), Some(f)) => crate::functions::parse_timestamp_ms(s, f),
            (v, _) => v.as_i64().ok_or_else(|| format!("timestamp column {name} holds {v}, not epoch milliseconds")),
        }
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .or_else(|| self.columns.iter().find(|c| c.name.eq_ignore_ascii_case(name)))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryDef {
    /// ksqlDB style: CSAS_NAME_N, CTAS_NAME_N, or CTAB_NAME_N for a table's materializer.
    pub id: String,
    pub sql: String,
    pub source: String,
    /// Relation whose topic this query writes, if any.
    pub sink: Option<String>,
    /// Every relation the query reads (the source and a joined table).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// `PAUSE`d: not started (also at start-up) until `RESUME`.
    #[serde(default)]
    pub paused: bool,
}

pub struct Catalog {
    store: StateStore,
    relations: RwLock<BTreeMap<String, RelationDef>>,
    queries: RwLock<BTreeMap<String, QueryDef>>,
    /// ksqlDB's custom types (`CREATE TYPE`), by lower-case name.
    types: RwLock<BTreeMap<String, SqlType>>,
    /// Server-wide defaults of session properties (`ALTER SYSTEM`), by lower-case name.
    settings: RwLock<BTreeMap<String, String>>,
    /// Bumped after every change to the relations, for caches built from them.
    version: AtomicU64,
}

/// Catalog keys of custom types: this, then the lower-case name.
const TYPE_PREFIX: &[u8] = b"type/";
/// Catalog keys of `ALTER SYSTEM` settings: this, then the lower-case name.
const SETTING_PREFIX: &[u8] = b"system/";

fn rel_key(name: &str) -> Vec<u8> {
    format!("relation/{name}").into_bytes()
}
fn query_key(id: &str) -> Vec<u8> {
    format!("query/{id}").into_bytes()
}
fn pending_delete_key(topic: &str) -> Vec<u8> {
    format!("delete-topic/{topic}").into_bytes()
}

/// Everything one DDL statement changes in the catalog, written at once (`Catalog::apply`).
#[derive(Debug, Default)]
pub struct CatalogChange {
    pub put_relations: Vec<RelationDef>,
    pub remove_relations: Vec<String>,
    pub put_queries: Vec<QueryDef>,
    pub remove_queries: Vec<String>,
    /// Topics to delete once the change is committed (`DROP ... DELETE TOPIC`).
    pub delete_topics: Vec<String>,
}

impl Catalog {
    pub fn open(store: StateStore) -> Result<Catalog> {
        let mut relations = BTreeMap::new();
        for (_, v) in store.scan_prefix(CATALOG_CF, b"relation/", usize::MAX)? {
            let r: RelationDef =
                serde_json::from_slice(&v).map_err(|e| EddyError::Internal(format!("catalog entry: {e}")))?;
            relations.insert(r.name.clone(), r);
        }
        let mut queries = BTreeMap::new();
        for (_, v) in store.scan_prefix(CATALOG_CF, b"query/", usize::MAX)? {
            let q: QueryDef =
                serde_json::from_slice(&v).map_err(|e| EddyError::Internal(format!("catalog entry: {e}")))?;
            queries.insert(q.id.clone(), q);
        }
        let mut types = BTreeMap::new();
        for (k, v) in store.scan_prefix(CATALOG_CF, TYPE_PREFIX, usize::MAX)? {
            let ty: SqlType =
                serde_json::from_slice(&v).map_err(|e| EddyError::Internal(format!("catalog entry: {e}")))?;
            types.insert(String::from_utf8_lossy(&k[TYPE_PREFIX.len()..]).into_owned(), ty);
        }
        let mut settings = BTreeMap::new();
        for (k, v) in store.scan_prefix(CATALOG_CF, SETTING_PREFIX, usize::MAX)? {
            let name = String::from_utf8_lossy(&k[SETTING_PREFIX.len()..]).into_owned();
            settings.insert(name, String::from_utf8_lossy(&v).into_owned());
        }
        Ok(Catalog {
            store,
            relations: RwLock::new(relations),
            queries: RwLock::new(queries),
            types: RwLock::new(types),
            settings: RwLock::new(settings),
            version: AtomicU64::new(0),
        })
    }

    /// The custom types (`CREATE TYPE`), by lower-case name.
    pub fn types(&self) -> BTreeMap<String, SqlType> {
        self.types.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds (`Some`) or removes a custom type, durably.
    pub fn set_type(&self, name: &str, ty: Option<&SqlType>) -> Result<()> {
        let name = name.to_lowercase();
        let mut key = TYPE_PREFIX.to_vec();
        key.extend_from_slice(name.as_bytes());
        let mut cp = self.store.checkpoint(CATALOG_CF);
        match ty {
            Some(ty) => cp.put(&self.store, &key, &to_json(ty)?)?,
            None => cp.delete(&self.store, &key)?,
        }
        self.store.commit(cp)?;
        self.store.request_backup();
        let mut types = self.types.write().unwrap_or_else(|p| p.into_inner());
        match ty {
            Some(ty) => types.insert(name, ty.clone()),
            None => types.remove(&name),
        };
        Ok(())
    }

    /// The server-wide defaults of session properties (`ALTER SYSTEM`).
    pub fn system_settings(&self) -> BTreeMap<String, String> {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets (`Some`) or removes a server-wide default, durably.
    pub fn set_system_setting(&self, name: &str, value: Option<&str>) -> Result<()> {
        let mut key = SETTING_PREFIX.to_vec();
        key.extend_from_slice(name.as_bytes());
        let mut cp = self.store.checkpoint(CATALOG_CF);
        match value {
            Some(v) => cp.put(&self.store, &key, v.as_bytes())?,
            None => cp.delete(&self.store, &key)?,
        }
        self.store.commit(cp)?;
        self.store.request_backup();
        let mut settings = self.settings.write().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(v) => settings.insert(name.to_string(), v.to_string()),
            None => settings.remove(name),
        };
        Ok(())
    }

    pub fn relation(&self, name: &str) -> Option<RelationDef> {
        let rels = self.relations.read().unwrap_or_else(|p| p.into_inner());
        rels.get(name).cloned().or_else(|| rels.values().find(|r| r.name.eq_ignore_ascii_case(name)).cloned())
    }

    /// Changes whenever a relation is added, changed or removed. Read it before
    /// [`Catalog::relations`], so a cache built from both is never newer than its label.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn relations(&self) -> Vec<RelationDef> {
        self.relations.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn query(&self, id: &str) -> Option<QueryDef> {
        self.queries.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub fn queries(&self) -> Vec<QueryDef> {
        self.queries.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Adds a relation, and the query that feeds it, in one durable write.
    pub fn add(&self, relation: &RelationDef, query: Option<&QueryDef>) -> Result<()> {
        let mut change = CatalogChange::default();
        change.put_relations.push(relation.clone());
        change.put_queries.extend(query.cloned());
        self.apply(change)
    }

    pub fn update_relation(&self, relation: &RelationDef) -> Result<()> {
        self.add(relation, None)
    }

    pub fn remove_relation(&self, name: &str) -> Result<()> {
        self.apply(CatalogChange { remove_relations: vec![name.to_string()], ..Default::default() })
    }

    pub fn remove_query(&self, id: &str) -> Result<()> {
        self.apply(CatalogChange { remove_queries: vec![id.to_string()], ..Default::default() })
    }

    /// Applies every part of one DDL statement in one synced write: after a crash the
    /// catalog holds all of it or none of it.
    pub fn apply(&self, change: CatalogChange) -> Result<()> {
        let mut cp = self.store.checkpoint(CATALOG_CF);
        for r in &change.put_relations {
            cp.put(&self.store, &rel_key(&r.name), &to_json(r)?)?;
        }
        for name in &change.remove_relations {
            cp.delete(&self.store, &rel_key(name))?;
        }
        for q in &change.put_queries {
            cp.put(&self.store, &query_key(&q.id), &to_json(q)?)?;
        }
        for id in &change.remove_queries {
            cp.delete(&self.store, &query_key(id))?;
        }
        for topic in &change.delete_topics {
            cp.put(&self.store, &pending_delete_key(topic), b"")?;
        }
        self.store.commit(cp)?;
        self.store.request_backup();
        {
            let mut rels = self.relations.write().unwrap_or_else(|p| p.into_inner());
            for name in &change.remove_relations {
                rels.remove(name);
            }
            for r in change.put_relations {
                rels.insert(r.name.clone(), r);
            }
        }
        {
            let mut queries = self.queries.write().unwrap_or_else(|p| p.into_inner());
            for id in &change.remove_queries {
                queries.remove(id);
            }
            for q in change.put_queries {
                queries.insert(q.id.clone(), q);
            }
        }
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Topics a committed `DROP ... DELETE TOPIC` still has to delete (a crash came between
    /// the catalog write and the deletion).
    pub fn pending_topic_deletes(&self) -> Result<Vec<String>> {
        let prefix = pending_delete_key("");
        Ok(self
            .store
            .scan_prefix(CATALOG_CF, &prefix, usize::MAX)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }

    /// The topic is deleted: forget that it was to be.
    pub fn topic_deleted(&self, topic: &str) -> Result<()> {
        let mut cp = self.store.checkpoint(CATALOG_CF);
        cp.delete(&self.store, &pending_delete_key(topic))?;
        self.store.commit(cp)
    }

    /// Next free number for a query id, counting those ever used for that prefix.
    pub fn next_query_number(&self) -> Result<u64> {
        let n = self
            .store
            .get(CATALOG_CF, b"meta/next_query")?
            .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0u64);
        let mut cp = self.store.checkpoint(CATALOG_CF);
        cp.put(&self.store, b"meta/next_query", (n + 1).to_string().as_bytes())?;
        self.store.commit(cp)?;
        Ok(n)
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| EddyError::Internal(e.to_string()))
}
