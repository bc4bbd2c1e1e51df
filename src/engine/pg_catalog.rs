//! `pg_catalog` and `information_schema` for Postgres clients (psql's `\d`, SQLAlchemy
//! reflection, Grafana's pickers, Metabase's sync, pgJDBC's type lookups).
//!
//! Built from Eddy's catalog as small in-memory tables, once per catalog version and shared
//! by every query until the next DDL ([`PgCatalog`]): tables are relations of
//! kind `'r'` (with a primary key constraint and its unique index), streams are views
//! (`'v'`, an append-only view of their topic). Columns carry Postgres types
//! ([`pg_type_of`]). Catalogs Eddy never fills (rules, triggers, policies, publications...)
//! exist with their columns and no rows. Oids are stable: a hash of the name
//! ([`relation_oid`]), so a client can look a name up in one query and use the oid in the next.
//!
//! Functions over these tables (`format_type`, `pg_get_indexdef`, `::regclass` lookups...)
//! live in [`super::pg_functions`]; syntax rewrites in `sql::pg_rewrite`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int16Builder, Int32Builder, Int64Array, Int64Builder, ListBuilder,
    RecordBatch, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::prelude::SessionContext;

use crate::catalog::RelationDef;
use crate::error::{EddyError, Result};
use crate::format::SqlType;
use crate::sql::RelationKind;

pub const DATABASE: &str = "eddy";
pub const OWNER: &str = "eddy";
pub const OWNER_OID: i64 = 10;
pub const DATABASE_OID: i64 = 16384;
pub const PG_CATALOG_OID: i64 = 11;
pub const PUBLIC_OID: i64 = 2200;
pub const INFORMATION_SCHEMA_OID: i64 = 13000;
/// `server_version` as reported at startup and by `SHOW`/`current_setting`.
pub const SERVER_VERSION: &str = "15.0";
pub const SERVER_VERSION_NUM: &str = "150000";

/// A Postgres setting's value, for SHOW, `current_setting` and `pg_settings`.
pub fn setting(name: &str) -> Option<String> {
    let v = match name.to_ascii_lowercase().as_str() {
        "server_version" => return Some(format!("{SERVER_VERSION} (Eddy {})", env!("CARGO_PKG_VERSION"))),
        "server_version_num" => SERVER_VERSION_NUM,
        "server_encoding" | "client_encoding" => "UTF8",
        "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "transaction_read_only" | "default_transaction_read_only" => "off",
        "standard_conforming_strings" | "integer_datetimes" => "on",
        "datestyle" => "ISO, MDY",
        "intervalstyle" => "postgres",
        "timezone" | "log_timezone" => "UTC",
        "search_path" => "\"$user\", public",
        "max_identifier_length" => "63",
        "max_index_keys" => "32",
        "block_size" => "8192",
        "lc_collate" | "lc_ctype" => "C.UTF-8",
        "application_name" => "",
        "is_superuser" => "on",
        "extra_float_digits" => "1",
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
        "max_connections" => "100",
        _ => return None,
    };
    Some(v.to_string())
}

/// A stable oid for a relation name (user oids start at 16384, as in Postgres).
pub fn relation_oid(name: &str) -> i64 {
    // FNV-1a: the same name gets the same oid in every query and after restarts.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    16384 + (h % 2_000_000_000) as i64
}

fn index_name(table: &str) -> String {
    format!("{table}_pkey")
}

/// The Postgres type (oid, typmod) a column of this type is shown as.
pub fn pg_type_of(ty: &SqlType) -> (i64, i32) {
    match ty {
        SqlType::String => (25, -1),
        SqlType::Int => (23, -1),
        SqlType::BigInt => (20, -1),
        SqlType::Double => (701, -1),
        SqlType::Boolean => (16, -1),
        SqlType::Timestamp => (1114, -1),
        SqlType::Date => (1082, -1),
        SqlType::Time => (1083, -1),
        SqlType::Decimal { precision, scale } => (1700, ((*precision as i32) << 16 | *scale as i32) + 4),
        SqlType::Bytes => (17, -1),
        SqlType::Array(item) => {
            let elem = pg_type_of(item).0;
            (TYPES.iter().find(|t| t.0 == elem).map(|t| t.4).filter(|a| *a != 0).unwrap_or(199), -1)
        }
        SqlType::Map(_) | SqlType::Struct(_) => (114, -1),
    }
}

/// (oid, typname, SQL name shown by format_type, typcategory, array type oid, typlen).
pub const TYPES: &[(i64, &str, &str, &str, i64, i64)] = &[
    (16, "bool", "boolean", "B", 1000, 1),
    (17, "bytea", "bytea", "U", 1001, -1),
    (18, "char", "\"char\"", "Z", 1002, 1),
    (19, "name", "name", "S", 1003, 64),
    (20, "int8", "bigint", "N", 1016, 8),
    (21, "int2", "smallint", "N", 1005, 2),
    (22, "int2vector", "int2vector", "A", 1006, -1),
    (23, "int4", "integer", "N", 1007, 4),
    (24, "regproc", "regproc", "N", 1008, 4),
    (25, "text", "text", "S", 1009, -1),
    (26, "oid", "oid", "N", 1028, 4),
    (30, "oidvector", "oidvector", "A", 1013, -1),
    (114, "json", "json", "U", 199, -1),
    (700, "float4", "real", "N", 1021, 4),
    (701, "float8", "double precision", "N", 1022, 8),
    (1033, "aclitem", "aclitem", "U", 1034, 12),
    (1042, "bpchar", "character", "S", 1014, -1),
    (1043, "varchar", "character varying", "S", 1015, -1),
    (1082, "date", "date", "D", 1182, 4),
    (1083, "time", "time without time zone", "D", 1183, 8),
    (1114, "timestamp", "timestamp without time zone", "D", 1115, 8),
    (1184, "timestamptz", "timestamp with time zone", "D", 1185, 8),
    (1186, "interval", "interval", "T", 1187, 16),
    (1700, "numeric", "numeric", "N", 1231, -1),
    (2205, "regclass", "regclass", "N", 2210, 4),
    (2206, "regtype", "regtype", "N", 2211, 4),
    (2950, "uuid", "uuid", "U", 2951, 16),
    (3802, "jsonb", "jsonb", "U", 3807, -1),
    (4089, "regnamespace", "regnamespace", "N", 4090, 4),
    (2249, "record", "record", "P", 2287, -1),
    (2283, "anyelement", "anyelement", "P", 0, 4),
    (2276, "any", "\"any\"", "P", 0, 4),
];

/// An array type: (oid, element oid).
pub fn array_types() -> impl Iterator<Item = (i64, i64)> {
    TYPES.iter().filter(|t| t.4 != 0).map(|t| (t.4, t.0))
}

/// `format_type(oid, typmod)`.
pub fn format_type(oid: i64, typmod: i64) -> Option<String> {
    if let Some(t) = TYPES.iter().find(|t| t.0 == oid) {
        return Some(match (oid, typmod) {
            (1700, m) if m >= 4 => format!("numeric({},{})", (m - 4) >> 16, (m - 4) & 0xffff),
            (1043, m) if m >= 4 => format!("character varying({})", m - 4),
            (1042, m) if m >= 4 => format!("character({})", m - 4),
            _ => t.2.to_string(),
        });
    }
    array_types().find(|(a, _)| *a == oid).and_then(|(_, e)| format_type(e, -1)).map(|e| format!("{e}[]"))
}

/// What a catalog cell holds.
#[derive(Debug, Clone)]
pub enum V {
    Null,
    I(i64),
    S(String),
    B(bool),
    F(f64),
    L(Vec<String>),
    LI(Vec<i64>),
}

impl From<&str> for V {
    fn from(s: &str) -> V {
        V::S(s.to_string())
    }
}
impl From<String> for V {
    fn from(s: String) -> V {
        V::S(s)
    }
}
impl From<i64> for V {
    fn from(i: i64) -> V {
        V::I(i)
    }
}
impl From<bool> for V {
    fn from(b: bool) -> V {
        V::B(b)
    }
}

/// Column types of catalog tables.
#[derive(Clone, Copy)]
pub enum T {
    /// oid, int8, and other 8-byte integers.
    Oid,
    I16,
    I32,
    F64,
    Text,
    Bool,
    TextList,
    I16List,
    OidList,
}

fn build(cols: &[(&str, T)], rows: &[Vec<V>]) -> Result<(Arc<Schema>, RecordBatch)> {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, t)| {
            let dt = match t {
                T::Oid => DataType::Int64,
                T::I16 => DataType::Int16,
                T::I32 => DataType::Int32,
                T::F64 => DataType::Float64,
                T::Text => DataType::Utf8,
                T::Bool => DataType::Boolean,
                T::TextList => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                T::I16List => DataType::List(Arc::new(Field::new("item", DataType::Int16, true))),
                T::OidList => DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            };
            Field::new(*n, dt, true)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let cell = |r: &Vec<V>, i: usize| r.get(i).cloned().unwrap_or(V::Null);
    let int = |v: V| match v {
        V::I(i) => Some(i),
        V::B(b) => Some(b as i64),
        V::S(s) => s.parse().ok(),
        _ => None,
    };
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
    for (i, (_, t)) in cols.iter().enumerate() {
        let a: ArrayRef = match t {
            T::Oid => Arc::new(rows.iter().map(|r| int(cell(r, i))).collect::<Int64Array>()),
            T::I16 => {
                let mut b = Int16Builder::new();
                rows.iter().for_each(|r| b.append_option(int(cell(r, i)).map(|x| x as i16)));
                Arc::new(b.finish())
            }
            T::I32 => {
                let mut b = Int32Builder::new();
                rows.iter().for_each(|r| b.append_option(int(cell(r, i)).map(|x| x as i32)));
                Arc::new(b.finish())
            }
            T::F64 => {
                let mut b = Float64Builder::new();
                rows.iter().for_each(|r| {
                    b.append_option(match cell(r, i) {
                        V::F(f) => Some(f),
                        V::I(x) => Some(x as f64),
                        _ => None,
                    })
                });
                Arc::new(b.finish())
            }
            T::Text => {
                let mut b = StringBuilder::new();
                rows.iter().for_each(|r| {
                    b.append_option(match cell(r, i) {
                        V::S(s) => Some(s),
                        V::I(x) => Some(x.to_string()),
                        _ => None,
                    })
                });
                Arc::new(b.finish())
            }
            T::Bool => {
                let mut b = BooleanBuilder::new();
                rows.iter().for_each(|r| {
                    b.append_option(match cell(r, i) {
                        V::B(x) => Some(x),
                        _ => None,
                    })
                });
                Arc::new(b.finish())
            }
            T::TextList => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for r in rows {
                    match cell(r, i) {
                        V::L(items) => {
                            items.iter().for_each(|s| b.values().append_value(s));
                            b.append(true);
                        }
                        _ => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
            T::I16List => {
                let mut b = ListBuilder::new(Int16Builder::new());
                for r in rows {
                    match cell(r, i) {
                        V::LI(items) => {
                            items.iter().for_each(|x| b.values().append_value(*x as i16));
                            b.append(true);
                        }
                        _ => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
            T::OidList => {
                let mut b = ListBuilder::new(Int64Builder::new());
                for r in rows {
                    match cell(r, i) {
                        V::LI(items) => {
                            items.iter().for_each(|x| b.values().append_value(*x));
                            b.append(true);
                        }
                        _ => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
        };
        arrays.push(a);
    }
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| EddyError::Internal(e.to_string()))?;
    Ok((schema, batch))
}

/// Everything the catalog functions look up, built once per query.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// oid → (schema, name) of every relation (and index) in pg_class.
    pub classes: HashMap<i64, (String, String)>,
    /// name → oid.
    pub class_oids: HashMap<String, i64>,
    /// index oid → `CREATE UNIQUE INDEX ...`.
    pub index_defs: HashMap<i64, String>,
    /// constraint oid → `PRIMARY KEY (...)`.
    pub constraint_defs: HashMap<i64, String>,
    /// view oid → its definition.
    pub view_defs: HashMap<i64, String>,
    /// function oid → (arguments, result).
    pub functions: HashMap<i64, (String, String)>,
}

impl Snapshot {
    pub fn namespace_name(oid: i64) -> Option<&'static str> {
        match oid {
            PG_CATALOG_OID => Some("pg_catalog"),
            PUBLIC_OID => Some("public"),
            INFORMATION_SCHEMA_OID => Some("information_schema"),
            _ => None,
        }
    }
}

/// A relation as the catalog shows it.
struct Rel {
    oid: i64,
    name: String,
    namespace: i64,
    kind: &'static str,
    /// (name, type oid, typmod, not null).
    columns: Vec<(String, i64, i32, bool)>,
    key: Vec<usize>,
}

fn user_relations(rels: &[RelationDef]) -> Vec<Rel> {
    rels.iter()
        .map(|r| Rel {
            oid: relation_oid(&r.name),
            name: r.name.clone(),
            namespace: PUBLIC_OID,
            kind: if r.kind == RelationKind::Table { "r" } else { "v" },
            columns: r
                .columns
                .iter()
                .map(|c| {
                    let (t, m) = pg_type_of(&c.ty);
                    (c.name.clone(), t, m, c.key && r.kind == RelationKind::Table)
                })
                .collect(),
            key: if r.kind == RelationKind::Table {
                r.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect()
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// The system tables' own rows in pg_class/pg_attribute (so `\d pg_class` works too).
fn system_relation(name: &str, namespace: i64, kind: &'static str, schema: &Schema) -> Rel {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Int64 => 26,
                DataType::Int16 => 21,
                DataType::Int32 => 23,
                DataType::Float64 => 701,
                DataType::Boolean => 16,
                DataType::List(_) => 1009,
                _ => 25,
            };
            (f.name().clone(), t, -1, false)
        })
        .collect();
    Rel { oid: relation_oid(&format!("{namespace}.{name}")), name: name.into(), namespace, kind, columns, key: vec![] }
}

/// `pg_catalog` and `information_schema` built for one version of Eddy's catalog.
pub struct PgCatalog {
    pg_catalog: Arc<MemorySchemaProvider>,
    information_schema: Arc<MemorySchemaProvider>,
    /// The pg_* tables, also reachable unqualified from `public`.
    unqualified: Vec<(String, Arc<dyn TableProvider>)>,
    pub snapshot: Arc<Snapshot>,
}

impl PgCatalog {
    /// Registers both schemas (and the pg_* names unqualified, where `public` has no relation of
    /// that name) on `ctx`.
    pub fn register(&self, ctx: &SessionContext) -> Result<()> {
        let catalog = ctx.catalog("datafusion").ok_or_else(|| EddyError::Internal("no catalog".into()))?;
        let public = catalog.schema("public").ok_or_else(|| EddyError::Internal("no public schema".into()))?;
        for (name, table) in &self.unqualified {
            if !public.table_exist(name) {
                public.register_table(name.clone(), table.clone())?;
            }
        }
        catalog.register_schema("pg_catalog", self.pg_catalog.clone())?;
        catalog.register_schema("information_schema", self.information_schema.clone())?;
        Ok(())
    }
}

/// Builds `pg_catalog` and `information_schema` from Eddy's relations and the functions a
/// session knows.
pub fn build_catalog(rels: &[RelationDef], functions: &[(String, &'static str)]) -> Result<PgCatalog> {
    let mut snapshot = Snapshot::default();
    let mut relations = user_relations(rels);
    for r in &relations {
        if !r.key.is_empty() {
            let cols: Vec<&str> = r.key.iter().map(|&i| r.columns[i].0.as_str()).collect();
            let idx = index_name(&r.name);
            let idx_oid = relation_oid(&idx);
            snapshot.index_defs.insert(
                idx_oid,
                format!("CREATE UNIQUE INDEX {idx} ON public.{} USING btree ({})", r.name, cols.join(", ")),
            );
            snapshot
                .constraint_defs
                .insert(relation_oid(&format!("{idx}/c")), format!("PRIMARY KEY ({})", cols.join(", ")));
        }
    }
    for d in rels {
        let def = match (&d.written_by, d.kind) {
            (Some(q), _) => format!("-- written by query {q}"),
            (None, _) => format!("-- the records of topic '{}' ({} values)", d.topic, d.value_format),
        };
        snapshot.view_defs.insert(relation_oid(&d.name), def);
    }

    let tables = catalog_tables(&relations, &snapshot, functions)?;
    // Register the system tables themselves as relations too.
    for (schema_name, name, schema, _) in &tables {
        let (ns, kind) =
            if *schema_name == "pg_catalog" { (PG_CATALOG_OID, "r") } else { (INFORMATION_SCHEMA_OID, "v") };
        relations.push(system_relation(name, ns, kind, schema));
    }
    // pg_class and pg_attribute list every relation, the system ones included.
    let (class_cols, class_rows, attr_cols, attr_rows) = class_and_attribute(&relations);
    let mut all = tables;
    let (s, b) = build(&class_cols, &class_rows)?;
    all.push(("pg_catalog", "pg_class".into(), s, b));
    let (s, b) = build(&attr_cols, &attr_rows)?;
    all.push(("pg_catalog", "pg_attribute".into(), s, b));

    for r in &relations {
        let ns = Snapshot::namespace_name(r.namespace).unwrap_or("public").to_string();
        snapshot.classes.insert(r.oid, (ns, r.name.clone()));
        snapshot.class_oids.entry(r.name.clone()).or_insert(r.oid);
        if !r.key.is_empty() {
            let idx = index_name(&r.name);
            snapshot.classes.insert(relation_oid(&idx), ("public".into(), idx.clone()));
            snapshot.class_oids.insert(idx.clone(), relation_oid(&idx));
        }
    }
    for (oid, args, ret) in function_rows(functions).iter().map(|r| (r.0, r.3.clone(), r.4.clone())) {
        snapshot.functions.insert(oid, (args, ret));
    }

    let pg_catalog = Arc::new(MemorySchemaProvider::new());
    let information_schema = Arc::new(MemorySchemaProvider::new());
    let mut unqualified = Vec::new();
    for (schema_name, name, schema, batch) in all {
        let table: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(schema, vec![vec![batch]])?);
        if schema_name == "pg_catalog" {
            pg_catalog.register_table(name.clone(), table.clone())?;
            unqualified.push((name, table));
        } else {
            information_schema.register_table(name, table)?;
        }
    }
    Ok(PgCatalog { pg_catalog, information_schema, unqualified, snapshot: Arc::new(snapshot) })
}

type Table = (&'static str, String, Arc<Schema>, RecordBatch);
type Columns = Vec<(&'static str, T)>;

#[rustfmt::skip]
fn class_and_attribute(relations: &[Rel]) -> (Columns, Vec<Vec<V>>, Columns, Vec<Vec<V>>) {
    use T::*;
    let class_cols = vec![
        ("oid", Oid), ("relname", Text), ("relnamespace", Oid), ("reltype", Oid), ("reloftype", Oid),
        ("relowner", Oid), ("relam", Oid), ("relfilenode", Oid), ("reltablespace", Oid), ("relpages", I32),
        ("reltuples", F64), ("relallvisible", I32), ("reltoastrelid", Oid), ("relhasindex", Bool),
        ("relisshared", Bool), ("relpersistence", Text), ("relkind", Text), ("relnatts", I16), ("relchecks", I16),
        ("relhasrules", Bool), ("relhastriggers", Bool), ("relhassubclass", Bool), ("relrowsecurity", Bool),
        ("relforcerowsecurity", Bool), ("relispopulated", Bool), ("relreplident", Text), ("relispartition", Bool),
        ("relrewrite", Oid), ("relfrozenxid", Oid), ("relminmxid", Oid), ("relacl", TextList),
        ("reloptions", TextList), ("relpartbound", Text),
    ];
    let class_row = |oid: i64, name: &str, ns: i64, kind: &str, am: i64, natts: usize, has_index: bool| -> Vec<V> {
        vec![
            V::I(oid), name.into(), V::I(ns), V::I(0), V::I(0), V::I(OWNER_OID), V::I(am), V::I(oid), V::I(0),
            V::I(0), V::F(-1.0), V::I(0), V::I(0), V::B(has_index), V::B(false), "p".into(), kind.into(),
            V::I(natts as i64), V::I(0), V::B(false), V::B(false), V::B(false), V::B(false), V::B(false),
            V::B(true), "d".into(), V::B(false), V::I(0), V::I(0), V::I(0), V::Null, V::Null, V::Null,
        ]
    };
    let mut class_rows = Vec::new();
    for r in relations {
        let am = if r.kind == "r" { 2 } else { 0 };
        class_rows.push(class_row(r.oid, &r.name, r.namespace, r.kind, am, r.columns.len(), !r.key.is_empty()));
        if !r.key.is_empty() {
            let idx = index_name(&r.name);
            class_rows.push(class_row(relation_oid(&idx), &idx, r.namespace, "i", 403, r.key.len(), false));
        }
    }
    let attr_cols = vec![
        ("attrelid", Oid), ("attname", Text), ("atttypid", Oid), ("attstattarget", I32), ("attlen", I16),
        ("attnum", I16), ("attndims", I32), ("attcacheoff", I32), ("atttypmod", I32), ("attbyval", Bool),
        ("attalign", Text), ("attstorage", Text), ("attcompression", Text), ("attnotnull", Bool),
        ("atthasdef", Bool), ("atthasmissing", Bool), ("attidentity", Text), ("attgenerated", Text),
        ("attisdropped", Bool), ("attislocal", Bool), ("attinhcount", I32), ("attcollation", Oid),
        ("attacl", TextList), ("attoptions", TextList), ("attfdwoptions", TextList), ("attmissingval", Text),
    ];
    let mut attr_rows = Vec::new();
    for r in relations {
        let mut push = |rel: i64, num: usize, (name, ty, typmod, notnull): &(String, i64, i32, bool)| {
            let len = TYPES.iter().find(|t| t.0 == *ty).map(|t| t.5).unwrap_or(-1);
            let collation = if matches!(ty, 25 | 1043 | 1042) { 100 } else { 0 };
            attr_rows.push(vec![
                V::I(rel), name.as_str().into(), V::I(*ty), V::I(-1), V::I(len), V::I(num as i64), V::I(0),
                V::I(-1), V::I(*typmod as i64), V::B(len > 0 && len <= 8), "i".into(),
                if len > 0 { "p" } else { "x" }.into(), "".into(), V::B(*notnull), V::B(false), V::B(false),
                "".into(), "".into(), V::B(false), V::B(true), V::I(0), V::I(collation), V::Null, V::Null, V::Null,
                V::Null,
            ]);
        };
        for (i, c) in r.columns.iter().enumerate() {
            push(r.oid, i + 1, c);
        }
        if !r.key.is_empty() {
            let idx = relation_oid(&index_name(&r.name));
            for (n, &k) in r.key.iter().enumerate() {
                push(idx, n + 1, &r.columns[k]);
            }
        }
    }
    (class_cols, class_rows, attr_cols, attr_rows)
}

/// (oid, name, namespace, arguments, result, kind).
fn function_rows(functions: &[(String, &'static str)]) -> Vec<(i64, String, i64, String, String, &'static str)> {
    functions
        .iter()
        .map(|(name, kind)| {
            let (ns, args, ret) = match crate::engine::pg_functions::eddy_function_signature(name) {
                Some((a, r)) => (PUBLIC_OID, a.to_string(), r.to_string()),
                None => (PG_CATALOG_OID, String::new(), String::new()),
            };
            (relation_oid(&format!("proc:{name}")), name.clone(), ns, args, ret, *kind)
        })
        .collect()
}

#[rustfmt::skip]
fn catalog_tables(relations: &[Rel], snapshot: &Snapshot, functions: &[(String, &'static str)]) -> Result<Vec<Table>> {
    use T::*;
    let mut out: Vec<Table> = Vec::new();
    let mut add = |schema: &'static str, name: &str, cols: &[(&str, T)], rows: Vec<Vec<V>>| -> Result<()> {
        let (s, b) = build(cols, &rows)?;
        out.push((schema, name.to_string(), s, b));
        Ok(())
    };
    let nsp = |oid: i64, name: &str| vec![V::I(oid), name.into(), V::I(OWNER_OID), V::Null];
    add(
        "pg_catalog",
        "pg_namespace",
        &[("oid", Oid), ("nspname", Text), ("nspowner", Oid), ("nspacl", TextList)],
        vec![nsp(PG_CATALOG_OID, "pg_catalog"), nsp(PUBLIC_OID, "public"), nsp(INFORMATION_SCHEMA_OID, "information_schema")],
    )?;
    let mut type_rows = Vec::new();
    let type_row = |oid: i64, name: &str, cat: &str, elem: i64, array: i64, len: i64, input: &str| {
        vec![
            V::I(oid), name.into(), V::I(PG_CATALOG_OID), V::I(OWNER_OID), V::I(len), V::B(len > 0 && len <= 8),
            if cat == "P" { "p" } else { "b" }.into(), cat.into(), V::B(false), V::B(true), ",".into(), V::I(0),
            V::I(elem), V::I(array), input.into(), input.replace("_in", "_out").into(), V::I(0), V::I(0), V::I(0),
            if len > 0 { "i" } else { "x" }.into(), V::B(false), V::I(0), V::I(-1), V::I(0),
            V::I(if matches!(oid, 25 | 1043 | 1042 | 19) { 100 } else { 0 }), V::Null, V::Null, V::Null,
        ]
    };
    for t in TYPES {
        let input = format!("{}in", t.1);
        type_rows.push(type_row(t.0, t.1, t.3, 0, t.4, t.5, &input));
    }
    for (array, elem) in array_types() {
        let name = format!("_{}", TYPES.iter().find(|t| t.0 == elem).map(|t| t.1).unwrap_or("unknown"));
        type_rows.push(type_row(array, &name, "A", elem, 0, -1, "array_in"));
    }
    add(
        "pg_catalog",
        "pg_type",
        &[
            ("oid", Oid), ("typname", Text), ("typnamespace", Oid), ("typowner", Oid), ("typlen", I16),
            ("typbyval", Bool), ("typtype", Text), ("typcategory", Text), ("typispreferred", Bool),
            ("typisdefined", Bool), ("typdelim", Text), ("typrelid", Oid), ("typelem", Oid), ("typarray", Oid),
            ("typinput", Text), ("typoutput", Text), ("typreceive", Oid), ("typsend", Oid), ("typmodin", Oid),
            ("typalign", Text), ("typnotnull", Bool), ("typbasetype", Oid), ("typtypmod", I32), ("typndims", I32),
            ("typcollation", Oid), ("typdefaultbin", Text), ("typdefault", Text), ("typacl", TextList),
        ],
        type_rows,
    )?;
    add(
        "pg_catalog",
        "pg_database",
        &[
            ("oid", Oid), ("datname", Text), ("datdba", Oid), ("encoding", I32), ("datlocprovider", Text),
            ("datistemplate", Bool), ("datallowconn", Bool), ("datconnlimit", I32), ("datfrozenxid", Oid),
            ("datminmxid", Oid), ("dattablespace", Oid), ("datcollate", Text), ("datctype", Text),
            ("daticulocale", Text), ("datcollversion", Text), ("datacl", TextList),
        ],
        vec![vec![
            V::I(DATABASE_OID), DATABASE.into(), V::I(OWNER_OID), V::I(6), "c".into(), V::B(false), V::B(true),
            V::I(-1), V::I(0), V::I(0), V::I(1663), "C.UTF-8".into(), "C.UTF-8".into(), V::Null, V::Null, V::Null,
        ]],
    )?;
    let role_cols = [
        ("oid", Oid), ("rolname", Text), ("rolsuper", Bool), ("rolinherit", Bool), ("rolcreaterole", Bool),
        ("rolcreatedb", Bool), ("rolcanlogin", Bool), ("rolreplication", Bool), ("rolconnlimit", I32),
        ("rolpassword", Text), ("rolvaliduntil", Text), ("rolbypassrls", Bool), ("rolconfig", TextList),
    ];
    let role = vec![
        V::I(OWNER_OID), OWNER.into(), V::B(true), V::B(true), V::B(true), V::B(true), V::B(true), V::B(true),
        V::I(-1), "********".into(), V::Null, V::B(true), V::Null,
    ];
    add("pg_catalog", "pg_roles", &role_cols, vec![role.clone()])?;
    add("pg_catalog", "pg_authid", &role_cols, vec![role])?;
    add(
        "pg_catalog",
        "pg_user",
        &[
            ("usename", Text), ("usesysid", Oid), ("usecreatedb", Bool), ("usesuper", Bool), ("userepl", Bool),
            ("usebypassrls", Bool), ("passwd", Text), ("valuntil", Text), ("useconfig", TextList),
        ],
        vec![vec![
            OWNER.into(), V::I(OWNER_OID), V::B(true), V::B(true), V::B(true), V::B(true), "********".into(),
            V::Null, V::Null,
        ]],
    )?;
    add(
        "pg_catalog",
        "pg_am",
        &[("oid", Oid), ("amname", Text), ("amhandler", Text), ("amtype", Text)],
        vec![
            vec![V::I(2), "heap".into(), "heap_tableam_handler".into(), "t".into()],
            vec![V::I(403), "btree".into(), "bthandler".into(), "i".into()],
        ],
    )?;
    add(
        "pg_catalog",
        "pg_tablespace",
        &[("oid", Oid), ("spcname", Text), ("spcowner", Oid), ("spcacl", TextList), ("spcoptions", TextList)],
        vec![
            vec![V::I(1663), "pg_default".into(), V::I(OWNER_OID)],
            vec![V::I(1664), "pg_global".into(), V::I(OWNER_OID)],
        ],
    )?;
    let proc_rows = function_rows(functions)
        .into_iter()
        .map(|(oid, name, ns, args, _, kind)| {
            let nargs = if args.is_empty() { 0 } else { args.split(',').count() as i64 };
            vec![
                V::I(oid), name.into(), V::I(ns), V::I(OWNER_OID), V::I(12), V::F(1.0), V::F(0.0), V::I(0),
                kind.into(), V::B(false), V::B(false), V::B(false), "s".into(), V::I(nargs), V::I(25),
                "".into(), V::Null, "".into(), V::Null, V::Null,
            ]
        })
        .collect();
    add(
        "pg_catalog",
        "pg_proc",
        &[
            ("oid", Oid), ("proname", Text), ("pronamespace", Oid), ("proowner", Oid), ("prolang", Oid),
            ("procost", F64), ("prorows", F64), ("provariadic", Oid), ("prokind", Text), ("prosecdef", Bool),
            ("proisstrict", Bool), ("proretset", Bool), ("provolatile", Text), ("pronargs", I16),
            ("prorettype", Oid), ("proargtypes", Text), ("proargnames", TextList), ("prosrc", Text),
            ("proconfig", TextList), ("proacl", TextList),
        ],
        proc_rows,
    )?;
    // Primary keys: one constraint and one unique btree index per table.
    let mut con_rows = Vec::new();
    let mut idx_rows = Vec::new();
    for r in relations.iter().filter(|r| !r.key.is_empty()) {
        let idx = index_name(&r.name);
        let idx_oid = relation_oid(&idx);
        let keys: Vec<i64> = r.key.iter().map(|k| *k as i64 + 1).collect();
        con_rows.push(vec![
            V::I(relation_oid(&format!("{idx}/c"))), idx.as_str().into(), V::I(r.namespace), "p".into(), V::B(false),
            V::B(false), V::B(true), V::I(r.oid), V::I(0), V::I(idx_oid), V::I(0), V::I(0), " ".into(), " ".into(),
            " ".into(), V::B(true), V::I(0), V::B(true), V::LI(keys.clone()), V::Null, V::Null,
        ]);
        idx_rows.push(vec![
            V::I(idx_oid), V::I(r.oid), V::I(keys.len() as i64), V::I(keys.len() as i64), V::B(true), V::B(false),
            V::B(true), V::B(false), V::B(true), V::B(false), V::B(true), V::B(false), V::B(true), V::B(true),
            V::B(false), V::LI(keys.clone()), V::Null, V::Null, V::LI(keys.iter().map(|_| 0).collect()),
            V::LI(keys.iter().map(|_| 1994).collect()), V::LI(keys.iter().map(|_| 100).collect()),
        ]);
    }
    let _ = snapshot;
    add(
        "pg_catalog",
        "pg_constraint",
        &[
            ("oid", Oid), ("conname", Text), ("connamespace", Oid), ("contype", Text), ("condeferrable", Bool),
            ("condeferred", Bool), ("convalidated", Bool), ("conrelid", Oid), ("contypid", Oid), ("conindid", Oid),
            ("conparentid", Oid), ("confrelid", Oid), ("confupdtype", Text), ("confdeltype", Text),
            ("confmatchtype", Text), ("conislocal", Bool), ("coninhcount", I32), ("connoinherit", Bool),
            ("conkey", I16List), ("confkey", I16List), ("conbin", Text),
        ],
        con_rows,
    )?;
    add(
        "pg_catalog",
        "pg_index",
        &[
            ("indexrelid", Oid), ("indrelid", Oid), ("indnatts", I16), ("indnkeyatts", I16), ("indisunique", Bool),
            ("indnullsnotdistinct", Bool), ("indisprimary", Bool), ("indisexclusion", Bool), ("indimmediate", Bool),
            ("indisclustered", Bool), ("indisvalid", Bool), ("indcheckxmin", Bool), ("indisready", Bool),
            ("indislive", Bool), ("indisreplident", Bool), ("indkey", I16List), ("indexprs", Text), ("indpred", Text),
            ("indoption", I16List), ("indclass", OidList), ("indcollation", OidList),
        ],
        idx_rows,
    )?;
    super::pg_views::add_views(relations.iter().map(|r| (r.oid, r.name.as_str(), r.namespace, r.kind, &r.columns, &r.key)), &mut add)?;
    super::pg_views::add_empty(&mut add)?;
    Ok(out)
}

/// Type used by [`super::pg_views`] to add a table.
pub type AddTable<'a> = dyn FnMut(&'static str, &str, &[(&str, TCol)], Vec<Vec<V>>) -> Result<()> + 'a;
pub use T as TCol;
