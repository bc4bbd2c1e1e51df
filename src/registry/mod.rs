//! The Schema Registry's store: schemas by id, subjects and their versions, compatibility
//! levels. Kept durably in the state store's catalog (one synced write per change), and in
//! memory for reads. Behaviour follows Confluent's Schema Registry: one id per distinct
//! schema (the same schema under a second subject gets the same id), registration is
//! idempotent, soft deletes before permanent ones, BACKWARD by default.
//!
//! Avro schemas are parsed, stored in a compact form, and checked for compatibility with
//! Avro's schema-resolution rules (`apache-avro`). JSON Schema documents must be JSON and
//! Protobuf schemas must compile; their compatibility follows Confluent's lists of
//! compatible changes (`json_compat.rs`, `protobuf_compat.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema as AvroSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::{StateStore, CATALOG_CF};

mod json_compat;
mod protobuf_compat;

const PREFIX: &str = "schemareg/";
/// Most schemas the registry holds; more are refused (a bound on memory).
pub const MAX_SCHEMAS: usize = 100_000;
/// Most bytes of one schema.
pub const MAX_SCHEMA_BYTES: usize = 1 << 20;
/// Most bytes of all schemas together (they are read whole at start, within `MAX_LOAD_BYTES`).
pub const MAX_TOTAL_SCHEMA_BYTES: usize = 256 << 20;
/// Most bytes of a subject name.
pub const MAX_SUBJECT_BYTES: usize = 1_000;

/// Confluent's schema types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SchemaType {
    #[serde(rename = "AVRO")]
    Avro,
    #[serde(rename = "JSON")]
    Json,
    #[serde(rename = "PROTOBUF")]
    Protobuf,
}

impl SchemaType {
    pub fn parse(s: &str) -> Option<SchemaType> {
        match s.to_ascii_uppercase().as_str() {
            "AVRO" => Some(SchemaType::Avro),
            "JSON" => Some(SchemaType::Json),
            "PROTOBUF" => Some(SchemaType::Protobuf),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }
}

/// A reference from one schema to a named schema registered under another subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSchema {
    pub schema: String,
    #[serde(rename = "schemaType")]
    pub schema_type: SchemaType,
    #[serde(default)]
    pub references: Vec<Reference>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct VersionEntry {
    id: u32,
    deleted: bool,
}

/// Confluent's compatibility levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_uppercase().as_str() {
            "NONE" => Level::None,
            "BACKWARD" => Level::Backward,
            "BACKWARD_TRANSITIVE" => Level::BackwardTransitive,
            "FORWARD" => Level::Forward,
            "FORWARD_TRANSITIVE" => Level::ForwardTransitive,
            "FULL" => Level::Full,
            "FULL_TRANSITIVE" => Level::FullTransitive,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(self, Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive)
    }
}

/// Errors with Confluent's codes (the HTTP status is the code's first three digits).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryError {
    pub code: u32,
    pub message: String,
}

impl RegistryError {
    fn new(code: u32, message: impl Into<String>) -> RegistryError {
        RegistryError { code, message: message.into() }
    }

    pub fn subject_not_found(subject: &str) -> RegistryError {
        RegistryError::new(40401, format!("Subject '{subject}' not found."))
    }

    pub fn version_not_found(version: &str) -> RegistryError {
        RegistryError::new(40402, format!("Version {version} not found."))
    }

    pub fn schema_not_found() -> RegistryError {
        RegistryError::new(40403, "Schema not found")
    }

    fn store(e: impl std::fmt::Display) -> RegistryError {
        RegistryError::new(50001, format!("Error in the backend data store: {e}"))
    }
}

/// Which version of a subject a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl VersionRef {
    pub fn parse(s: &str) -> Result<VersionRef, RegistryError> {
        if s == "latest" || s == "-1" {
            return Ok(VersionRef::Latest);
        }
        match s.parse::<u32>() {
            Ok(v) if v >= 1 => Ok(VersionRef::Number(v)),
            _ => Err(RegistryError::new(
                42202,
                format!("The specified version '{s}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""),
            )),
        }
    }
}

/// One registered version, as the API answers it.
#[derive(Debug, Clone)]
pub struct Registered {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: StoredSchema,
}

/// The registry the record formats read schemas from (set when the engine opens, as
/// `sql::custom_types` is): AVRO values name their writer schema by id in every record.
static GLOBAL: std::sync::RwLock<Option<std::sync::Arc<Registry>>> = std::sync::RwLock::new(None);

pub fn set_global(registry: std::sync::Arc<Registry>) {
    *GLOBAL.write().unwrap_or_else(|p| p.into_inner()) = Some(registry);
}

pub fn global() -> Option<std::sync::Arc<Registry>> {
    GLOBAL.read().unwrap_or_else(|p| p.into_inner()).clone()
}

#[derive(Default)]
struct Inner {
    /// Avro schemas parsed once, by id.
    parsed: HashMap<u32, std::sync::Arc<AvroSchema>>,
    /// Protobuf schemas compiled once, by id.
    compiled: HashMap<u32, std::sync::Arc<crate::format::protobuf::Compiled>>,
    schemas: BTreeMap<u32, StoredSchema>,
    by_identity: HashMap<(SchemaType, String, Vec<Reference>), u32>,
    /// Schema text as clients sent it (without references), by type, to the id it
    /// normalized to: registering the same text again under a subject that has it skips
    /// parsing (the REST Proxy's records name their schema inline, each one). At most
    /// `MAX_RAW_CACHE` entries; emptied when full.
    by_raw_text: HashMap<(SchemaType, String), u32>,
    subjects: BTreeMap<String, BTreeMap<u32, VersionEntry>>,
    global: Option<Level>,
    per_subject: BTreeMap<String, Level>,
}

pub struct Registry {
    store: StateStore,
    inner: Mutex<Inner>,
}

fn schema_key(id: u32) -> Vec<u8> {
    format!("{PREFIX}schema/{id:010}").into_bytes()
}

fn version_key(subject: &str, version: u32) -> Vec<u8> {
    format!("{PREFIX}subject/{subject}\0{version:010}").into_bytes()
}

fn config_key(subject: Option<&str>) -> Vec<u8> {
    format!("{PREFIX}config/{}", subject.unwrap_or("")).into_bytes()
}

/// Most bytes the registry's keys may take when read at start.
const MAX_LOAD_BYTES: usize = 1 << 30;

impl Registry {
    /// Reads what the catalog holds.
    pub fn open(store: StateStore) -> Result<Registry, String> {
        let mut inner = Inner::default();
        let rows = store.scan_prefix(CATALOG_CF, PREFIX.as_bytes(), MAX_LOAD_BYTES).map_err(|e| e.to_string())?;
        for (k, v) in rows {
            let key = String::from_utf8_lossy(&k[PREFIX.len()..]).to_string();
            if let Some(id) = key.strip_prefix("schema/") {
                let id: u32 = id.parse().map_err(|_| format!("bad registry key {key}"))?;
                let schema: StoredSchema =
                    serde_json::from_slice(&v).map_err(|e| format!("registry schema {id}: {e}"))?;
                inner.by_identity.insert((schema.schema_type, schema.schema.clone(), schema.references.clone()), id);
                inner.schemas.insert(id, schema);
            } else if let Some(rest) = key.strip_prefix("subject/") {
                let (subject, version) = rest.rsplit_once('\0').ok_or_else(|| format!("bad registry key {key}"))?;
                let version: u32 = version.parse().map_err(|_| format!("bad registry key {key}"))?;
                let entry: VersionEntry = serde_json::from_slice(&v).map_err(|e| format!("registry {subject}: {e}"))?;
                inner.subjects.entry(subject.to_string()).or_default().insert(version, entry);
            } else if let Some(subject) = key.strip_prefix("config/") {
                let level = Level::parse(&String::from_utf8_lossy(&v)).ok_or_else(|| format!("bad level in {key}"))?;
                if subject.is_empty() {
                    inner.global = Some(level);
                } else {
                    inner.per_subject.insert(subject.to_string(), level);
                }
            }
        }
        Ok(Registry { store, inner: Mutex::new(inner) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<(), RegistryError> {
        let mut cp = self.store.checkpoint(CATALOG_CF);
        for (k, v) in puts {
            cp.put(&self.store, k, v).map_err(RegistryError::store)?;
        }
        for k in deletes {
            cp.delete(&self.store, k).map_err(RegistryError::store)?;
        }
        self.store.commit(cp).map_err(RegistryError::store)?;
        // As the catalog does: a backup soon, so a restore loses as few ids as it can.
        self.store.request_backup();
        Ok(())
    }

    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        let inner = self.lock();
        inner
            .subjects
            .iter()
            .filter(|(_, versions)| deleted || versions.values().any(|v| !v.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, RegistryError> {
        let inner = self.lock();
        let versions = live_subject(&inner, subject, deleted)?;
        Ok(versions.iter().filter(|(_, e)| deleted || !e.deleted).map(|(v, _)| *v).collect())
    }

    pub fn version(&self, subject: &str, version: VersionRef, deleted: bool) -> Result<Registered, RegistryError> {
        let inner = self.lock();
        let versions = live_subject(&inner, subject, deleted)?;
        let found = match version {
            VersionRef::Latest => versions.iter().rev().find(|(_, e)| deleted || !e.deleted),
            VersionRef::Number(n) => versions.get_key_value(&n).filter(|(_, e)| deleted || !e.deleted),
        };
        let (v, entry) = found.ok_or_else(|| {
            RegistryError::version_not_found(&match version {
                VersionRef::Latest => "latest".to_string(),
                VersionRef::Number(n) => n.to_string(),
            })
        })?;
        let schema = inner.schemas.get(&entry.id).cloned().ok_or_else(RegistryError::schema_not_found)?;
        Ok(Registered { subject: subject.to_string(), version: *v, id: entry.id, schema })
    }

    /// Schema `id`, parsed as Avro (cached).
    pub fn avro(&self, id: u32) -> Result<std::sync::Arc<AvroSchema>, RegistryError> {
        let mut inner = self.lock();
        if let Some(s) = inner.parsed.get(&id) {
            return Ok(s.clone());
        }
        let stored = inner
            .schemas
            .get(&id)
            .cloned()
            .ok_or_else(|| RegistryError::new(40403, format!("Schema {id} not found")))?;
        if stored.schema_type != SchemaType::Avro {
            return Err(RegistryError::new(40403, format!("Schema {id} is {}, not AVRO", stored.schema_type.name())));
        }
        let parsed = std::sync::Arc::new(parse_avro(&inner, &stored.schema, &stored.references)?);
        if crate::format::avro::is_recursive(&parsed) {
            // Stored and served, but not read or written here (see `is_recursive`).
            return Err(RegistryError::new(
                42201,
                format!("Schema {id} is a recursive Avro schema, which this server does not read or write"),
            ));
        }
        inner.parsed.insert(id, parsed.clone());
        Ok(parsed)
    }

    /// Schema `id`, compiled as Protobuf (cached).
    pub fn protobuf(&self, id: u32) -> Result<std::sync::Arc<crate::format::protobuf::Compiled>, RegistryError> {
        let mut inner = self.lock();
        if let Some(c) = inner.compiled.get(&id) {
            return Ok(c.clone());
        }
        let stored = inner
            .schemas
            .get(&id)
            .cloned()
            .ok_or_else(|| RegistryError::new(40403, format!("Schema {id} not found")))?;
        if stored.schema_type != SchemaType::Protobuf {
            return Err(RegistryError::new(
                40403,
                format!("Schema {id} is {}, not PROTOBUF", stored.schema_type.name()),
            ));
        }
        let compiled = std::sync::Arc::new(parse_protobuf(&inner, &stored.schema, &stored.references)?);
        inner.compiled.insert(id, compiled.clone());
        Ok(compiled)
    }

    /// The type of schema `id`, if it is registered (without copying the schema).
    pub fn schema_type(&self, id: u32) -> Option<SchemaType> {
        self.lock().schemas.get(&id).map(|s| s.schema_type)
    }

    pub fn schema(&self, id: u32) -> Result<StoredSchema, RegistryError> {
        self.lock().schemas.get(&id).cloned().ok_or_else(|| RegistryError::new(40403, format!("Schema {id} not found")))
    }

    /// The (subject, version) pairs that use schema `id`.
    pub fn usages(&self, id: u32) -> Result<Vec<(String, u32)>, RegistryError> {
        let inner = self.lock();
        if !inner.schemas.contains_key(&id) {
            return Err(RegistryError::new(40403, format!("Schema {id} not found")));
        }
        Ok(inner
            .subjects
            .iter()
            .flat_map(|(s, versions)| {
                versions.iter().filter(|(_, e)| e.id == id && !e.deleted).map(move |(v, _)| (s.clone(), *v))
            })
            .collect())
    }

    pub fn level(&self, subject: Option<&str>) -> Option<Level> {
        let inner = self.lock();
        match subject {
            Some(s) => inner.per_subject.get(s).copied(),
            None => Some(inner.global.unwrap_or(Level::Backward)),
        }
    }

    fn effective_level(inner: &Inner, subject: &str) -> Level {
        inner.per_subject.get(subject).copied().or(inner.global).unwrap_or(Level::Backward)
    }

    pub fn set_level(&self, subject: Option<&str>, level: Level) -> Result<(), RegistryError> {
        if let Some(s) = subject {
            check_subject(s)?;
        }
        let mut inner = self.lock();
        self.write(&[(config_key(subject), level.name().as_bytes().to_vec())], &[])?;
        match subject {
            Some(s) => {
                inner.per_subject.insert(s.to_string(), level);
            }
            None => inner.global = Some(level),
        }
        Ok(())
    }

    /// Removes a subject's own level; returns what it was.
    pub fn delete_level(&self, subject: &str) -> Result<Level, RegistryError> {
        let mut inner = self.lock();
        let level = inner.per_subject.get(subject).copied().ok_or_else(|| {
            RegistryError::new(
                40408,
                format!("Subject '{subject}' does not have subject-level compatibility configured"),
            )
        })?;
        self.write(&[], &[config_key(Some(subject))])?;
        inner.per_subject.remove(subject);
        Ok(level)
    }

    /// Registers a schema under a subject (or finds it registered there): its id.
    pub fn register(&self, subject: &str, schema: StoredSchema) -> Result<u32, RegistryError> {
        check_subject(subject)?;
        let mut inner = self.lock();
        let raw = schema.references.is_empty().then(|| (schema.schema_type, schema.schema.clone()));
        if let Some(id) = raw.as_ref().and_then(|r| inner.by_raw_text.get(r)).copied() {
            if inner.subjects.get(subject).is_some_and(|v| v.values().any(|e| e.id == id && !e.deleted)) {
                return Ok(id);
            }
        }
        let schema = normalize(&inner, schema)?;
        let identity = (schema.schema_type, schema.schema.clone(), schema.references.clone());
        let existing_id = inner.by_identity.get(&identity).copied();
        if let (Some(id), Some(versions)) = (existing_id, inner.subjects.get(subject)) {
            if versions.values().any(|e| e.id == id && !e.deleted) {
                remember_raw(&mut inner, raw, id);
                return Ok(id);
            }
        }
        let level = Registry::effective_level(&inner, subject);
        let problems = check_compatible(&inner, subject, &schema, level, None)?;
        if !problems.is_empty() {
            return Err(RegistryError::new(
                409,
                format!(
                    "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
                    problems.join(", ")
                ),
            ));
        }
        let total: usize = inner.schemas.values().map(|s| s.schema.len()).sum();
        if existing_id.is_none()
            && (inner.schemas.len() >= MAX_SCHEMAS || total + schema.schema.len() > MAX_TOTAL_SCHEMA_BYTES)
        {
            return Err(RegistryError::new(
                42901,
                format!("the registry holds at most {MAX_SCHEMAS} schemas of {MAX_TOTAL_SCHEMA_BYTES} bytes in all"),
            ));
        }
        let id = existing_id.unwrap_or_else(|| inner.schemas.keys().next_back().map_or(1, |last| last + 1));
        let version = inner.subjects.get(subject).and_then(|v| v.keys().next_back().copied()).unwrap_or(0) + 1;
        let entry = VersionEntry { id, deleted: false };
        let mut puts = vec![(version_key(subject, version), serde_json::to_vec(&entry).unwrap_or_default())];
        if existing_id.is_none() {
            puts.push((schema_key(id), serde_json::to_vec(&schema).unwrap_or_default()));
        }
        self.write(&puts, &[])?;
        inner.schemas.insert(id, schema);
        inner.by_identity.insert(identity, id);
        inner.subjects.entry(subject.to_string()).or_default().insert(version, entry);
        remember_raw(&mut inner, raw, id);
        Ok(id)
    }

    /// The version of `subject` holding this schema.
    pub fn lookup(&self, subject: &str, schema: StoredSchema, deleted: bool) -> Result<Registered, RegistryError> {
        let inner = self.lock();
        let versions = live_subject(&inner, subject, deleted)?;
        let schema = normalize(&inner, schema)?;
        let identity = (schema.schema_type, schema.schema.clone(), schema.references.clone());
        let id = inner.by_identity.get(&identity).copied().ok_or_else(RegistryError::schema_not_found)?;
        let (version, _) = versions
            .iter()
            .rev()
            .find(|(_, e)| e.id == id && (deleted || !e.deleted))
            .ok_or_else(RegistryError::schema_not_found)?;
        Ok(Registered { subject: subject.to_string(), version: *version, id, schema })
    }

    /// Whether `schema` could be registered under `subject` (against `version` only, or
    /// what the subject's level compares with); the reasons when not.
    pub fn test_compatibility(
        &self,
        subject: &str,
        version: Option<VersionRef>,
        schema: StoredSchema,
    ) -> Result<Vec<String>, RegistryError> {
        let inner = self.lock();
        let schema = normalize(&inner, schema)?;
        let level = Registry::effective_level(&inner, subject);
        if let Some(v) = version {
            let versions = live_subject(&inner, subject, false)?;
            let found = match v {
                VersionRef::Latest => versions.iter().rev().find(|(_, e)| !e.deleted).map(|(n, _)| *n),
                VersionRef::Number(n) => versions.get(&n).filter(|e| !e.deleted).map(|_| n),
            };
            let n = found.ok_or_else(|| RegistryError::version_not_found(&format!("{v:?}")))?;
            return check_compatible(&inner, subject, &schema, level, Some(n));
        }
        check_compatible(&inner, subject, &schema, level, None)
    }

    /// Soft-deletes every version (or, `permanent`, removes soft-deleted ones); the versions.
    pub fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, RegistryError> {
        let mut inner = self.lock();
        let versions = inner.subjects.get(subject).ok_or_else(|| RegistryError::subject_not_found(subject))?;
        let live: Vec<u32> = versions.iter().filter(|(_, e)| !e.deleted).map(|(v, _)| *v).collect();
        if permanent {
            if !live.is_empty() {
                return Err(RegistryError::new(
                    40405,
                    format!("Subject '{subject}' was not deleted first before being permanently deleted"),
                ));
            }
            let all: Vec<u32> = versions.keys().copied().collect();
            let keys: Vec<Vec<u8>> = all.iter().map(|v| version_key(subject, *v)).collect();
            self.write(&[], &keys)?;
            inner.subjects.remove(subject);
            return Ok(all);
        }
        if live.is_empty() {
            return Err(RegistryError::new(40404, format!("Subject '{subject}' was soft deleted.")));
        }
        let puts: Vec<(Vec<u8>, Vec<u8>)> = live
            .iter()
            .map(|v| {
                let entry = VersionEntry { id: versions[v].id, deleted: true };
                (version_key(subject, *v), serde_json::to_vec(&entry).unwrap_or_default())
            })
            .collect();
        self.write(&puts, &[])?;
        if let Some(versions) = inner.subjects.get_mut(subject) {
            for v in &live {
                if let Some(e) = versions.get_mut(v) {
                    e.deleted = true;
                }
            }
        }
        Ok(live)
    }

    /// Soft-deletes one version (or removes a soft-deleted one); the version number.
    pub fn delete_version(&self, subject: &str, version: VersionRef, permanent: bool) -> Result<u32, RegistryError> {
        let mut inner = self.lock();
        let versions = inner.subjects.get(subject).ok_or_else(|| RegistryError::subject_not_found(subject))?;
        let n = match version {
            VersionRef::Latest => versions.iter().rev().find(|(_, e)| !e.deleted).map(|(n, _)| *n),
            VersionRef::Number(n) => versions.contains_key(&n).then_some(n),
        }
        .ok_or_else(|| RegistryError::version_not_found(&format!("{version:?}")))?;
        let entry = versions[&n];
        if permanent {
            if !entry.deleted {
                return Err(RegistryError::new(
                    40407,
                    format!("Subject '{subject}' Version {n} was not deleted first before being permanently deleted"),
                ));
            }
            self.write(&[], &[version_key(subject, n)])?;
            if let Some(versions) = inner.subjects.get_mut(subject) {
                versions.remove(&n);
                if versions.is_empty() {
                    inner.subjects.remove(subject);
                }
            }
            return Ok(n);
        }
        if entry.deleted {
            return Err(RegistryError::new(40406, format!("Subject '{subject}' Version {n} was soft deleted.")));
        }
        let deleted = VersionEntry { id: entry.id, deleted: true };
        self.write(&[(version_key(subject, n), serde_json::to_vec(&deleted).unwrap_or_default())], &[])?;
        if let Some(e) = inner.subjects.get_mut(subject).and_then(|v| v.get_mut(&n)) {
            e.deleted = true;
        }
        Ok(n)
    }
}

/// A subject's versions, if it has any not deleted (or any at all, with `deleted`).
fn live_subject<'a>(
    inner: &'a Inner,
    subject: &str,
    deleted: bool,
) -> Result<&'a BTreeMap<u32, VersionEntry>, RegistryError> {
    inner
        .subjects
        .get(subject)
        .filter(|v| deleted || v.values().any(|e| !e.deleted))
        .ok_or_else(|| RegistryError::subject_not_found(subject))
}

/// Subject names are stored in keys: no control characters (a NUL would split the key).
fn check_subject(subject: &str) -> Result<(), RegistryError> {
    if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES || subject.chars().any(char::is_control) {
        return Err(RegistryError::new(
            42208,
            format!("Invalid subject: a subject is 1 to {MAX_SUBJECT_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

/// Most raw schema texts `Inner::by_raw_text` keeps, and the longest text it keeps: at most
/// 160 MB in all, whatever whitespace variants clients send.
const MAX_RAW_CACHE: usize = 10_000;
const MAX_RAW_CACHED_BYTES: usize = 16 << 10;

fn remember_raw(inner: &mut Inner, raw: Option<(SchemaType, String)>, id: u32) {
    let Some(raw) = raw.filter(|(_, text)| text.len() <= MAX_RAW_CACHED_BYTES) else { return };
    if inner.by_raw_text.len() >= MAX_RAW_CACHE {
        inner.by_raw_text.clear();
    }
    inner.by_raw_text.insert(raw, id);
}

fn invalid(message: String) -> RegistryError {
    RegistryError::new(42201, message)
}

/// Checks a schema parses, and gives it the form it is stored and matched in: Avro and JSON
/// Schema as compact JSON (so whitespace does not make a second version), Protobuf as sent.
fn normalize(inner: &Inner, schema: StoredSchema) -> Result<StoredSchema, RegistryError> {
    if schema.schema.len() > MAX_SCHEMA_BYTES {
        return Err(invalid(format!("Invalid schema: larger than {MAX_SCHEMA_BYTES} bytes")));
    }
    let text = match schema.schema_type {
        SchemaType::Avro => {
            let json: Value = serde_json::from_str(&schema.schema)
                .or_else(|_| serde_json::from_str(&format!("\"{}\"", schema.schema)))
                .map_err(|e| invalid(format!("Invalid schema {}: {e}", schema.schema)))?;
            let compact = json.to_string();
            parse_avro(inner, &compact, &schema.references)?;
            compact
        }
        SchemaType::Json => {
            let json: Value = serde_json::from_str(&schema.schema)
                .map_err(|e| invalid(format!("Invalid schema {}: {e}", schema.schema)))?;
            if !json.is_object() && !json.is_boolean() {
                return Err(invalid(format!(
                    "Invalid schema {}: a JSON Schema is an object or a boolean",
                    schema.schema
                )));
            }
            json.to_string()
        }
        SchemaType::Protobuf => {
            parse_protobuf(inner, &schema.schema, &schema.references)?;
            schema.schema.clone()
        }
    };
    for r in &schema.references {
        let found = inner.subjects.get(&r.subject).and_then(|v| v.get(&r.version)).is_some_and(|e| !e.deleted);
        if !found {
            return Err(invalid(format!(
                "Invalid schema: reference {} to subject {} version {} is not registered",
                r.name, r.subject, r.version
            )));
        }
    }
    Ok(StoredSchema { schema: text, ..schema })
}

/// Compiles a Protobuf schema (`.proto` text or a base64 descriptor) with the schemas its
/// references name (as the files it imports).
fn parse_protobuf(
    inner: &Inner,
    text: &str,
    references: &[Reference],
) -> Result<crate::format::protobuf::Compiled, RegistryError> {
    let referenced = referenced_texts(inner, references);
    crate::format::protobuf::compile(text, &referenced).map_err(|e| invalid(format!("Invalid schema: {e}")))
}

/// Most levels of references followed (a schema referencing one that references ...).
const MAX_REFERENCE_DEPTH: usize = 32;

/// The schemas `references` name and, transitively, the ones those name: (name, text),
/// each once, every schema after the ones it references (as a descriptor pool adds them).
fn referenced_texts(inner: &Inner, references: &[Reference]) -> Vec<(String, String)> {
    fn walk(
        inner: &Inner,
        references: &[Reference],
        depth: usize,
        seen: &mut std::collections::HashSet<(String, u32)>,
        out: &mut Vec<(String, String)>,
    ) {
        if depth > MAX_REFERENCE_DEPTH {
            return;
        }
        for r in references {
            if !seen.insert((r.subject.clone(), r.version)) {
                continue;
            }
            let id = inner.subjects.get(&r.subject).and_then(|v| v.get(&r.version)).map(|e| e.id);
            if let Some(s) = id.and_then(|id| inner.schemas.get(&id)) {
                walk(inner, &s.references, depth + 1, seen, out);
                out.push((r.name.clone(), s.schema.clone()));
            }
        }
    }
    let mut out = Vec::new();
    walk(inner, references, 0, &mut std::collections::HashSet::new(), &mut out);
    out
}

/// Parses an Avro schema with the schemas its references name (transitively).
fn parse_avro(inner: &Inner, text: &str, references: &[Reference]) -> Result<AvroSchema, RegistryError> {
    let referenced: Vec<String> = referenced_texts(inner, references).into_iter().map(|(_, text)| text).collect();
    let parsed = if referenced.is_empty() {
        AvroSchema::parse_str(text)
    } else {
        let refs: Vec<&str> = referenced.iter().map(String::as_str).collect();
        AvroSchema::parse_str_with_list(text, refs).map(|(s, _)| s)
    };
    parsed.map_err(|e| invalid(format!("Invalid schema {text}: {e}")))
}

/// Reasons `schema` may not follow `subject`'s versions at `level` (empty: it may). With
/// `only`, it is compared with that version alone.
fn check_compatible(
    inner: &Inner,
    subject: &str,
    schema: &StoredSchema,
    level: Level,
    only: Option<u32>,
) -> Result<Vec<String>, RegistryError> {
    if level == Level::None {
        return Ok(Vec::new());
    }
    let Some(versions) = inner.subjects.get(subject) else {
        return Ok(Vec::new());
    };
    let mut previous: Vec<(u32, &StoredSchema)> = versions
        .iter()
        .filter(|(v, e)| !e.deleted && only.is_none_or(|o| o == **v))
        .filter_map(|(v, e)| inner.schemas.get(&e.id).map(|s| (*v, s)))
        .collect();
    if !level.transitive() && only.is_none() {
        previous = previous.split_off(previous.len().saturating_sub(1));
    }
    let mut problems = Vec::new();
    for (version, old) in previous {
        if old.schema_type != schema.schema_type {
            problems.push(format!(
                "{{oldSchemaVersion: {version}, oldSchema: '{}', compatibility: '{}', message: 'the schema type changed from {} to {}'}}",
                old.schema,
                level.name(),
                old.schema_type.name(),
                schema.schema_type.name()
            ));
            continue;
        }
        let backward =
            matches!(level, Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive);
        let forward = matches!(level, Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive);
        let mut reasons = Vec::new();
        if schema.schema_type != SchemaType::Avro {
            // Confluent's differences from the original schema to the update: BACKWARD takes
            // the previous version as the original, FORWARD the new schema.
            let differences = |original: &StoredSchema, update: &StoredSchema| -> Result<Vec<String>, RegistryError> {
                let found = if schema.schema_type == SchemaType::Json {
                    let parse = |s: &StoredSchema| {
                        serde_json::from_str::<Value>(&s.schema).map_err(|e| invalid(format!("Invalid schema: {e}")))
                    };
                    json_compat::json_incompatible(&parse(original)?, &parse(update)?)
                } else {
                    let a = parse_protobuf(inner, &original.schema, &original.references)?;
                    let b = parse_protobuf(inner, &update.schema, &update.references)?;
                    protobuf_compat::protobuf_incompatible(&a, &b)
                };
                Ok(found.iter().map(json_compat::Difference::describe).collect())
            };
            if backward {
                reasons.extend(differences(old, schema)?);
            }
            if forward {
                reasons.extend(differences(schema, old)?);
            }
            for r in reasons {
                problems.push(format!(
                    "{r}, {{oldSchemaVersion: {version}}}, {{oldSchema: '{}'}}, {{compatibility: '{}'}}",
                    old.schema,
                    level.name()
                ));
            }
            continue;
        }
        let new = parse_avro(inner, &schema.schema, &schema.references)?;
        let old_parsed = parse_avro(inner, &old.schema, &old.references)?;
        // BACKWARD: the new schema reads what the old one wrote.
        if backward {
            if let Some(r) = cannot_read(&old_parsed, &new) {
                reasons.push(format!("READER cannot read data written with version {version}: {r}"));
            }
        }
        if forward {
            if let Some(r) = cannot_read(&new, &old_parsed) {
                reasons.push(format!("version {version} cannot read data written with the new schema: {r}"));
            }
        }
        for r in reasons {
            problems.push(format!(
                "{{oldSchemaVersion: {version}, oldSchema: '{}', compatibility: '{}', message: '{r}'}}",
                old.schema,
                level.name()
            ));
        }
    }
    Ok(problems)
}

/// Why a reader schema cannot read what a writer schema wrote (`None`: it can, always).
fn cannot_read(writer: &AvroSchema, reader: &AvroSchema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => {
            Some("some values the writer may write cannot be read (enum symbols or union branches missing)".into())
        }
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(text: &str) -> StoredSchema {
        StoredSchema { schema: text.to_string(), schema_type: SchemaType::Avro, references: Vec::new() }
    }

    const V1: &str = r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"}]}"#;
    const V2_DEFAULT: &str = r#"{"type": "record", "name": "User", "fields": [{"name": "name", "type": "string"}, {"name": "age", "type": "int", "default": 0}]}"#;
    const V2_NO_DEFAULT: &str =
        r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"},{"name":"age","type":"int"}]}"#;

    #[test]
    fn references_resolve_transitively() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(StateStore::open(dir.path(), &Default::default()).unwrap()).unwrap();
        let proto = |text: &str, refs: Vec<Reference>| StoredSchema {
            schema: text.to_string(),
            schema_type: SchemaType::Protobuf,
            references: refs,
        };
        let r = |name: &str, subject: &str| Reference { name: name.into(), subject: subject.into(), version: 1 };
        reg.register("c", proto("syntax = \"proto3\"; package c; message C { int32 n = 1; }", vec![])).unwrap();
        reg.register(
            "b",
            proto(
                "syntax = \"proto3\"; package b; import \"c.proto\"; message B { c.C c = 1; }",
                vec![r("c.proto", "c")],
            ),
        )
        .unwrap();
        let a = reg
            .register(
                "a-value",
                proto("syntax = \"proto3\"; import \"b.proto\"; message A { b.B b = 1; }", vec![r("b.proto", "b")]),
            )
            .unwrap();
        let compiled = reg.protobuf(a).unwrap();
        assert_eq!(compiled.message(&[0]).unwrap().full_name(), "A");
        // Avro: a record naming a type whose own schema names another.
        let avro_ref = |text: &str, refs: Vec<Reference>| StoredSchema {
            schema: text.to_string(),
            schema_type: SchemaType::Avro,
            references: refs,
        };
        reg.register("z", avro_ref(r#"{"type":"record","name":"Z","fields":[{"name":"n","type":"int"}]}"#, vec![]))
            .unwrap();
        reg.register(
            "y",
            avro_ref(r#"{"type":"record","name":"Y","fields":[{"name":"z","type":"Z"}]}"#, vec![r("Z", "z")]),
        )
        .unwrap();
        let x = reg
            .register(
                "x-value",
                avro_ref(r#"{"type":"record","name":"X","fields":[{"name":"y","type":"Y"}]}"#, vec![r("Y", "y")]),
            )
            .unwrap();
        assert!(reg.avro(x).is_ok());
    }

    #[test]
    fn ids_versions_evolution_and_deletes_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), &Default::default()).unwrap();
        let reg = Registry::open(store.clone()).unwrap();
        let id = reg.register("users-value", avro(V1)).unwrap();
        assert_eq!(
            reg.register("users-value", avro(&format!(" {V1}\n"))).unwrap(),
            id,
            "whitespace is not a new version"
        );
        assert_eq!(reg.register("other-value", avro(V1)).unwrap(), id, "one id per schema across subjects");
        // BACKWARD: a new field needs a default.
        let e = reg.register("users-value", avro(V2_NO_DEFAULT)).unwrap_err();
        assert_eq!(e.code, 409, "{e:?}");
        assert!(e.message.contains("users-value") && e.message.contains("age"), "{}", e.message);
        let id2 = reg.register("users-value", avro(V2_DEFAULT)).unwrap();
        assert_ne!(id2, id);
        assert_eq!(reg.versions("users-value", false).unwrap(), vec![1, 2]);
        // FORWARD: the old schema must read the new one's data; removing a field without a
        // default in the old is refused.
        reg.set_level(Some("users-value"), Level::Forward).unwrap();
        assert!(reg.test_compatibility("users-value", None, avro(V1)).unwrap().is_empty());
        assert_eq!(reg.register("bad", avro("{\"type\":\"nope\"}")).unwrap_err().code, 42201);

        drop(reg);
        let reg = Registry::open(store.clone()).unwrap();
        assert_eq!(reg.version("users-value", VersionRef::Latest, false).unwrap().id, id2);
        assert_eq!(reg.level(Some("users-value")), Some(Level::Forward));
        assert_eq!(reg.usages(id).unwrap(), vec![("other-value".to_string(), 1), ("users-value".to_string(), 1)]);
        assert_eq!(reg.delete_subject("users-value", true).unwrap_err().code, 40405, "soft first");
        assert_eq!(reg.delete_subject("users-value", false).unwrap(), vec![1, 2]);
        assert!(!reg.subjects(false).contains(&"users-value".to_string()));
        assert_eq!(reg.version("users-value", VersionRef::Latest, false).unwrap_err().code, 40401);
        assert_eq!(reg.delete_subject("users-value", true).unwrap(), vec![1, 2]);
        assert!(!reg.subjects(true).contains(&"users-value".to_string()));
        // The schema itself stays readable by id.
        assert!(reg.schema(id2).is_ok());
        // Its text, seen before, registers anew: a subject without it gets a version.
        assert_eq!(reg.register("users-value", avro(V2_DEFAULT)).unwrap(), id2);
        assert_eq!(reg.versions("users-value", false).unwrap().len(), 1);
        assert_eq!(reg.register("users-value", avro(V2_DEFAULT)).unwrap(), id2);
        assert_eq!(reg.versions("users-value", false).unwrap().len(), 1, "the same text again is no new version");
    }
}
