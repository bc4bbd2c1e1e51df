//! `information_schema` (tables, columns, views, schemata, table_constraints,
//! key_column_usage) and the `pg_catalog` views (`pg_tables`, `pg_views`, `pg_matviews`,
//! `pg_stat_user_tables`, `pg_settings`...), plus the catalogs Eddy never fills, which exist
//! with their columns and no rows. Part of [`super::pg_catalog`].

use super::pg_catalog::{format_type, setting, AddTable, TCol, DATABASE, OWNER, PUBLIC_OID, TYPES, V};
use crate::error::Result;

/// One relation: (oid, name, namespace oid, relkind, columns (name, type, typmod, not null), key).
type RelInfo<'a> = (i64, &'a str, i64, &'a str, &'a Vec<(String, i64, i32, bool)>, &'a Vec<usize>);

/// `information_schema.columns.data_type`: the SQL name, arrays as `ARRAY`.
fn data_type(ty: i64) -> String {
    if TYPES.iter().any(|t| t.0 == ty) {
        format_type(ty, -1).unwrap_or_default()
    } else {
        "ARRAY".into()
    }
}

fn udt_name(ty: i64) -> String {
    match TYPES.iter().find(|t| t.0 == ty) {
        Some(t) => t.1.to_string(),
        None => {
            let elem = super::pg_catalog::array_types().find(|(a, _)| *a == ty).map(|(_, e)| e);
            format!("_{}", TYPES.iter().find(|t| Some(t.0) == elem).map(|t| t.1).unwrap_or("json"))
        }
    }
}

#[rustfmt::skip]
pub fn add_views<'a>(rels: impl Iterator<Item = RelInfo<'a>>, add: &mut AddTable) -> Result<()> {
    use TCol::*;
    let user: Vec<RelInfo> = rels.filter(|r| r.2 == PUBLIC_OID).collect();
    let y = |b: bool| V::from(if b { "YES" } else { "NO" });
    let tables = user.iter().map(|r| vec![
        DATABASE.into(), "public".into(), r.1.into(),
        if r.3 == "r" { "BASE TABLE" } else { "VIEW" }.into(), V::Null, V::Null, V::Null, V::Null, V::Null,
        y(r.3 == "r"), "NO".into(), V::Null,
    ]).collect();
    add("information_schema", "tables", &[
        ("table_catalog", Text), ("table_schema", Text), ("table_name", Text), ("table_type", Text),
        ("self_referencing_column_name", Text), ("reference_generation", Text), ("user_defined_type_catalog", Text),
        ("user_defined_type_schema", Text), ("user_defined_type_name", Text), ("is_insertable_into", Text),
        ("is_typed", Text), ("commit_action", Text),
    ], tables)?;
    let mut columns = Vec::new();
    for r in &user {
        for (i, (name, ty, typmod, notnull)) in r.4.iter().enumerate() {
            let (precision, scale) = match (*ty, *typmod) {
                (1700, m) if m >= 4 => (V::I(((m - 4) >> 16) as i64), V::I(((m - 4) & 0xffff) as i64)),
                (20, _) => (V::I(64), V::I(0)),
                (23, _) => (V::I(32), V::I(0)),
                (701, _) => (V::I(53), V::Null),
                _ => (V::Null, V::Null),
            };
            let radix = if matches!(precision, V::I(_)) { V::I(if *ty == 1700 { 10 } else { 2 }) } else { V::Null };
            columns.push(vec![
                DATABASE.into(), "public".into(), r.1.into(), name.as_str().into(), V::I(i as i64 + 1), V::Null,
                y(!notnull), data_type(*ty).into(), V::Null, V::Null, precision, radix, scale, V::Null,
                DATABASE.into(), "pg_catalog".into(), udt_name(*ty).into(), V::I(i as i64 + 1), "NO".into(),
                "NO".into(), V::Null, "NEVER".into(), V::Null, y(r.3 == "r"),
            ]);
        }
    }
    add("information_schema", "columns", &[
        ("table_catalog", Text), ("table_schema", Text), ("table_name", Text), ("column_name", Text),
        ("ordinal_position", I32), ("column_default", Text), ("is_nullable", Text), ("data_type", Text),
        ("character_maximum_length", I32), ("character_octet_length", I32), ("numeric_precision", I32),
        ("numeric_precision_radix", I32), ("numeric_scale", I32), ("datetime_precision", I32),
        ("udt_catalog", Text), ("udt_schema", Text), ("udt_name", Text), ("dtd_identifier", Text),
        ("is_self_referencing", Text), ("is_identity", Text), ("identity_generation", Text), ("is_generated", Text),
        ("generation_expression", Text), ("is_updatable", Text),
    ], columns)?;
    let views = user.iter().filter(|r| r.3 == "v").map(|r| vec![
        DATABASE.into(), "public".into(), r.1.into(), V::Null, "NONE".into(), "NO".into(), "NO".into(), "NO".into(),
        "NO".into(), "NO".into(),
    ]).collect();
    add("information_schema", "views", &[
        ("table_catalog", Text), ("table_schema", Text), ("table_name", Text), ("view_definition", Text),
        ("check_option", Text), ("is_updatable", Text), ("is_insertable_into", Text),
        ("is_trigger_updatable", Text), ("is_trigger_deletable", Text), ("is_trigger_insertable_into", Text),
    ], views)?;
    let schemata = ["pg_catalog", "public", "information_schema"].iter().map(|s| vec![
        DATABASE.into(), (*s).into(), OWNER.into(), V::Null, V::Null, V::Null, V::Null,
    ]).collect();
    add("information_schema", "schemata", &[
        ("catalog_name", Text), ("schema_name", Text), ("schema_owner", Text),
        ("default_character_set_catalog", Text), ("default_character_set_schema", Text),
        ("default_character_set_name", Text), ("sql_path", Text),
    ], schemata)?;
    let keyed: Vec<&RelInfo> = user.iter().filter(|r| !r.5.is_empty()).collect();
    let constraints = keyed.iter().map(|r| vec![
        DATABASE.into(), "public".into(), format!("{}_pkey", r.1).into(), DATABASE.into(), "public".into(),
        r.1.into(), "PRIMARY KEY".into(), "NO".into(), "NO".into(), "YES".into(), V::Null,
    ]).collect();
    add("information_schema", "table_constraints", &[
        ("constraint_catalog", Text), ("constraint_schema", Text), ("constraint_name", Text),
        ("table_catalog", Text), ("table_schema", Text), ("table_name", Text), ("constraint_type", Text),
        ("is_deferrable", Text), ("initially_deferred", Text), ("enforced", Text), ("nulls_distinct", Text),
    ], constraints)?;
    let mut usage = Vec::new();
    for r in &keyed {
        for (pos, k) in r.5.iter().enumerate() {
            usage.push(vec![
                DATABASE.into(), "public".into(), format!("{}_pkey", r.1).into(), DATABASE.into(), "public".into(),
                r.1.into(), r.4[*k].0.as_str().into(), V::I(pos as i64 + 1), V::Null,
            ]);
        }
    }
    let usage_cols = [
        ("constraint_catalog", Text), ("constraint_schema", Text), ("constraint_name", Text),
        ("table_catalog", Text), ("table_schema", Text), ("table_name", Text), ("column_name", Text),
        ("ordinal_position", I32), ("position_in_unique_constraint", I32),
    ];
    add("information_schema", "key_column_usage", &usage_cols, usage)?;
    add("information_schema", "referential_constraints", &[
        ("constraint_catalog", Text), ("constraint_schema", Text), ("constraint_name", Text),
        ("unique_constraint_catalog", Text), ("unique_constraint_schema", Text), ("unique_constraint_name", Text),
        ("match_option", Text), ("update_rule", Text), ("delete_rule", Text),
    ], vec![])?;
    add("information_schema", "routines", &[
        ("specific_catalog", Text), ("specific_schema", Text), ("specific_name", Text), ("routine_catalog", Text),
        ("routine_schema", Text), ("routine_name", Text), ("routine_type", Text), ("data_type", Text),
    ], vec![])?;

    let pg_tables = user.iter().filter(|r| r.3 == "r").map(|r| vec![
        "public".into(), r.1.into(), OWNER.into(), V::Null, V::B(!r.5.is_empty()), V::B(false), V::B(false),
        V::B(false),
    ]).collect();
    add("pg_catalog", "pg_tables", &[
        ("schemaname", Text), ("tablename", Text), ("tableowner", Text), ("tablespace", Text),
        ("hasindexes", Bool), ("hasrules", Bool), ("hastriggers", Bool), ("rowsecurity", Bool),
    ], pg_tables)?;
    let pg_views = user.iter().filter(|r| r.3 == "v").map(|r| vec![
        "public".into(), r.1.into(), OWNER.into(), V::Null,
    ]).collect();
    add("pg_catalog", "pg_views", &[
        ("schemaname", Text), ("viewname", Text), ("viewowner", Text), ("definition", Text),
    ], pg_views)?;
    add("pg_catalog", "pg_matviews", &[
        ("schemaname", Text), ("matviewname", Text), ("matviewowner", Text), ("tablespace", Text),
        ("hasindexes", Bool), ("ispopulated", Bool), ("definition", Text),
    ], vec![])?;
    let stats: Vec<Vec<V>> = user.iter().filter(|r| r.3 == "r").map(|r| vec![
        V::I(r.0), "public".into(), r.1.into(), V::I(0), V::I(0), V::I(0), V::I(0), V::I(0), V::I(0), V::I(0),
        V::I(0), V::I(0),
    ]).collect();
    let stat_cols = [
        ("relid", Oid), ("schemaname", Text), ("relname", Text), ("seq_scan", Oid), ("seq_tup_read", Oid),
        ("idx_scan", Oid), ("idx_tup_fetch", Oid), ("n_tup_ins", Oid), ("n_tup_upd", Oid), ("n_tup_del", Oid),
        ("n_live_tup", Oid), ("n_dead_tup", Oid),
    ];
    add("pg_catalog", "pg_stat_user_tables", &stat_cols, stats.clone())?;
    add("pg_catalog", "pg_stat_all_tables", &stat_cols, stats)?;
    let settings = [
        "server_version", "server_version_num", "server_encoding", "client_encoding", "standard_conforming_strings",
        "integer_datetimes", "datestyle", "intervalstyle", "timezone", "search_path", "max_identifier_length",
        "max_index_keys", "block_size", "lc_collate", "lc_ctype", "transaction_isolation", "max_connections",
    ].iter().map(|n| vec![(*n).into(), setting(n).unwrap_or_default().into(), V::Null, "Eddy".into(), "".into(),
        "user".into(), "string".into(), "default".into()]).collect();
    add("pg_catalog", "pg_settings", &[
        ("name", Text), ("setting", Text), ("unit", Text), ("category", Text), ("short_desc", Text),
        ("context", Text), ("vartype", Text), ("source", Text),
    ], settings)?;
    Ok(())
}

/// Catalogs with their columns and never a row (see `sql::pg_rewrite::EMPTY_TABLES`).
#[rustfmt::skip]
pub fn add_empty(add: &mut AddTable) -> Result<()> {
    use TCol::*;
    let empty: &[(&str, &[(&str, TCol)])] = &[
        ("pg_description", &[("objoid", Oid), ("classoid", Oid), ("objsubid", I32), ("description", Text)]),
        ("pg_shdescription", &[("objoid", Oid), ("classoid", Oid), ("description", Text)]),
        ("pg_extension", &[("oid", Oid), ("extname", Text), ("extowner", Oid), ("extnamespace", Oid),
            ("extrelocatable", Bool), ("extversion", Text), ("extconfig", OidList), ("extcondition", TextList)]),
        ("pg_attrdef", &[("oid", Oid), ("adrelid", Oid), ("adnum", I16), ("adbin", Text)]),
        ("pg_collation", &[("oid", Oid), ("collname", Text), ("collnamespace", Oid), ("collowner", Oid),
            ("collprovider", Text), ("collisdeterministic", Bool), ("collencoding", I32), ("collcollate", Text),
            ("collctype", Text)]),
        ("pg_enum", &[("oid", Oid), ("enumtypid", Oid), ("enumsortorder", F64), ("enumlabel", Text)]),
        ("pg_range", &[("rngtypid", Oid), ("rngsubtype", Oid), ("rngmultitypid", Oid), ("rngcollation", Oid),
            ("rngsubopc", Oid), ("rngcanonical", Oid), ("rngsubdiff", Oid)]),
        ("pg_inherits", &[("inhrelid", Oid), ("inhparent", Oid), ("inhseqno", I32), ("inhdetachpending", Bool)]),
        ("pg_trigger", &[("oid", Oid), ("tgrelid", Oid), ("tgparentid", Oid), ("tgname", Text), ("tgfoid", Oid),
            ("tgtype", I16), ("tgenabled", Text), ("tgisinternal", Bool), ("tgconstraint", Oid)]),
        ("pg_rewrite", &[("oid", Oid), ("rulename", Text), ("ev_class", Oid), ("ev_type", Text),
            ("ev_enabled", Text), ("is_instead", Bool), ("ev_qual", Text), ("ev_action", Text)]),
        ("pg_policy", &[("oid", Oid), ("polname", Text), ("polrelid", Oid), ("polcmd", Text),
            ("polpermissive", Bool), ("polroles", OidList), ("polqual", Text), ("polwithcheck", Text)]),
        ("pg_statistic_ext", &[("oid", Oid), ("stxrelid", Oid), ("stxname", Text), ("stxnamespace", Oid),
            ("stxowner", Oid), ("stxstattarget", I32), ("stxkeys", I16List), ("stxkind", TextList),
            ("stxexprs", Text)]),
        ("pg_publication", &[("oid", Oid), ("pubname", Text), ("pubowner", Oid), ("puballtables", Bool),
            ("pubinsert", Bool), ("pubupdate", Bool), ("pubdelete", Bool), ("pubtruncate", Bool),
            ("pubviaroot", Bool)]),
        ("pg_publication_rel", &[("oid", Oid), ("prpubid", Oid), ("prrelid", Oid), ("prqual", Text),
            ("prattrs", I16List)]),
        ("pg_publication_namespace", &[("oid", Oid), ("pnpubid", Oid), ("pnnspid", Oid)]),
        ("pg_auth_members", &[("roleid", Oid), ("member", Oid), ("grantor", Oid), ("admin_option", Bool)]),
        ("pg_foreign_table", &[("ftrelid", Oid), ("ftserver", Oid), ("ftoptions", TextList)]),
        ("pg_foreign_server", &[("oid", Oid), ("srvname", Text), ("srvowner", Oid), ("srvfdw", Oid)]),
        ("pg_foreign_data_wrapper", &[("oid", Oid), ("fdwname", Text), ("fdwowner", Oid)]),
        ("pg_partitioned_table", &[("partrelid", Oid), ("partstrat", Text), ("partnatts", I16),
            ("partdefid", Oid), ("partattrs", I16List)]),
        ("pg_sequence", &[("seqrelid", Oid), ("seqtypid", Oid), ("seqstart", Oid), ("seqincrement", Oid),
            ("seqmax", Oid), ("seqmin", Oid), ("seqcache", Oid), ("seqcycle", Bool)]),
        ("pg_event_trigger", &[("oid", Oid), ("evtname", Text), ("evtevent", Text), ("evtowner", Oid),
            ("evtfoid", Oid), ("evtenabled", Text), ("evttags", TextList)]),
        ("pg_depend", &[("classid", Oid), ("objid", Oid), ("objsubid", I32), ("refclassid", Oid),
            ("refobjid", Oid), ("refobjsubid", I32), ("deptype", Text)]),
        ("pg_cast", &[("oid", Oid), ("castsource", Oid), ("casttarget", Oid), ("castfunc", Oid),
            ("castcontext", Text), ("castmethod", Text)]),
        ("pg_language", &[("oid", Oid), ("lanname", Text), ("lanowner", Oid), ("lanispl", Bool)]),
        ("pg_opclass", &[("oid", Oid), ("opcmethod", Oid), ("opcname", Text), ("opcnamespace", Oid),
            ("opcdefault", Bool)]),
        ("pg_operator", &[("oid", Oid), ("oprname", Text), ("oprnamespace", Oid), ("oprleft", Oid),
            ("oprright", Oid), ("oprresult", Oid)]),
        ("pg_conversion", &[("oid", Oid), ("conname", Text), ("connamespace", Oid)]),
        ("pg_stat_activity", &[("datid", Oid), ("datname", Text), ("pid", I32), ("usename", Text),
            ("application_name", Text), ("client_addr", Text), ("backend_start", Text), ("state", Text),
            ("query", Text)]),
        ("pg_locks", &[("locktype", Text), ("database", Oid), ("relation", Oid), ("pid", I32), ("mode", Text),
            ("granted", Bool)]),
        ("pg_prepared_xacts", &[("transaction", Oid), ("gid", Text), ("owner", Text), ("database", Text)]),
    ];
    for (name, cols) in empty {
        add("pg_catalog", name, cols, vec![])?;
    }
    Ok(())
}
