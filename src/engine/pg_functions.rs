//! Postgres's system information functions as DataFusion UDFs, for catalog queries:
//! `version()` (which says Eddy), `current_setting`, `current_schema(s)`, `format_type`,
//! `pg_get_indexdef`/`constraintdef`/`viewdef`, `pg_table_is_visible`, `has_*_privilege`,
//! `quote_ident`, `format`, `parse_ident`, `array_lower`/`array_upper`, and the lookups behind
//! `::regclass`/`::regtype`/`::regnamespace`/`::regrole` (`eddy_regclass(x)` gives an oid from
//! a name or an oid, `eddy_regclass_name(x)` the name; see `sql::pg_rewrite`).
//!
//! Every function here works row by row on text: arguments are coerced to Utf8 (an array
//! argument is passed as its length, which is all `array_lower`/`array_upper` need).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder, Int64Builder, ListBuilder, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;

use super::pg_catalog::{
    format_type, setting, Snapshot, DATABASE, INFORMATION_SCHEMA_OID, OWNER, OWNER_OID, PG_CATALOG_OID, PUBLIC_OID,
    SERVER_VERSION, TYPES, V,
};

type RowFn = dyn Fn(&[Option<String>]) -> Option<V> + Send + Sync;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Ret {
    Text,
    Int,
    Bool,
    List,
}

struct PgFn {
    name: &'static str,
    ret: Ret,
    signature: Signature,
    f: Arc<RowFn>,
}

impl std::fmt::Debug for PgFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgFn({})", self.name)
    }
}
impl PartialEq for PgFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for PgFn {}
impl std::hash::Hash for PgFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

fn is_list(t: &DataType) -> bool {
    matches!(t, DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _))
}

impl ScalarUDFImpl for PgFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        Ok(args.iter().map(|t| if is_list(t) { t.clone() } else { DataType::Utf8 }).collect())
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.ret {
            Ret::Text => DataType::Utf8,
            Ret::Int => DataType::Int64,
            Ret::Bool => DataType::Boolean,
            Ret::List => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let cols: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| {
                let a = a.to_array(n)?;
                Ok(if is_list(a.data_type()) || a.data_type() == &DataType::Utf8 {
                    a
                } else {
                    cast(&a, &DataType::Utf8)?
                })
            })
            .collect::<Result<_>>()?;
        let values: Vec<Option<V>> = (0..n)
            .map(|row| {
                let vals: Vec<Option<String>> = cols
                    .iter()
                    .map(|c| {
                        if c.is_null(row) {
                            None
                        } else if let Some(l) = c.as_list_opt::<i32>() {
                            Some(l.value(row).len().to_string())
                        } else {
                            Some(c.as_string::<i32>().value(row).to_string())
                        }
                    })
                    .collect();
                (self.f)(&vals)
            })
            .collect();
        let out: ArrayRef = match self.ret {
            Ret::Text => {
                let mut b = StringBuilder::new();
                for v in values {
                    b.append_option(match v {
                        Some(V::S(s)) => Some(s),
                        Some(V::I(i)) => Some(i.to_string()),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            Ret::Int => {
                let mut b = Int64Builder::new();
                values.into_iter().for_each(|v| b.append_option(if let Some(V::I(i)) = v { Some(i) } else { None }));
                Arc::new(b.finish())
            }
            Ret::Bool => {
                let mut b = BooleanBuilder::new();
                values.into_iter().for_each(|v| b.append_option(if let Some(V::B(x)) = v { Some(x) } else { None }));
                Arc::new(b.finish())
            }
            Ret::List => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for v in values {
                    match v {
                        Some(V::L(items)) => {
                            items.iter().for_each(|s| b.values().append_value(s));
                            b.append(true);
                        }
                        _ => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Argument lists and result type of Eddy's own (ksqlDB) functions, as `\df` shows them.
pub fn eddy_function_signature(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "ucase" | "lcase" => ("text", "text"),
        "len" => ("text", "integer"),
        "ifnull" => ("anyelement, anyelement", "anyelement"),
        "timestamptostring" => ("bigint, text, text", "text"),
        "stringtotimestamp" => ("text, text, text", "bigint"),
        "from_unixtime" => ("bigint", "timestamp without time zone"),
        "unix_timestamp" => ("timestamp without time zone", "bigint"),
        "extractjsonfield" => ("text, text", "text"),
        "format_timestamp" => ("timestamp without time zone, text, text", "text"),
        "parse_timestamp" => ("text, text, text", "timestamp without time zone"),
        "format_date" => ("date, text", "text"),
        "parse_date" => ("text, text", "date"),
        "datetostring" => ("integer, text", "text"),
        "stringtodate" => ("text, text", "integer"),
        "format_time" => ("time without time zone, text", "text"),
        "parse_time" => ("text, text", "time without time zone"),
        "convert_tz" => ("timestamp without time zone, text, text", "timestamp without time zone"),
        "split" | "regexp_split_to_array" => ("text, text", "text[]"),
        "regexp_extract" => ("text, text, bigint", "text"),
        "regexp_extract_all" => ("text, text, bigint", "text[]"),
        "mask" => ("text, text, text, text, text", "text"),
        "is_json_string" => ("text", "boolean"),
        "url_extract_port" => ("text", "integer"),
        "url_extract_parameter" => ("text, text", "text"),
        "url_extract_fragment"
        | "url_extract_host"
        | "url_extract_path"
        | "url_extract_protocol"
        | "url_extract_query"
        | "url_encode_param"
        | "url_decode_param" => ("text", "text"),
        "json_array_length" => ("text", "integer"),
        "json_keys" => ("text", "text[]"),
        "json_array_contains" => ("text, anyelement", "boolean"),
        "json_concat" => ("text, text", "text"),
        "to_json_string" => ("anyelement", "text"),
        "mask_keep_left" | "mask_keep_right" | "mask_left" | "mask_right" => {
            ("text, bigint, text, text, text, text", "text")
        }
        _ => return None,
    })
}

/// Postgres's `quote_ident`: quotes unless the name is a plain lower-case identifier.
pub fn quote_ident(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && !matches!(s, "user" | "select" | "from" | "where" | "table" | "order" | "group" | "end" | "all");
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// Postgres's `parse_ident`: `public."My Table"` → [public, My Table].
pub fn parse_ident(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.trim().chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            c if quoted => cur.push(c),
            c => cur.extend(c.to_lowercase()),
        }
    }
    parts.push(cur);
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

/// Postgres's `format` with `%s`, `%I`, `%L` and `%%`.
pub fn format(args: &[Option<String>]) -> Option<String> {
    let fmt = args.first()?.as_ref()?;
    let mut out = String::new();
    let mut next = 1;
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec = chars.next()?;
        if spec == '%' {
            out.push('%');
            continue;
        }
        let arg = args.get(next).cloned().flatten();
        next += 1;
        match spec {
            's' => out.push_str(arg.as_deref().unwrap_or("")),
            'I' => out.push_str(&quote_ident(arg.as_deref().unwrap_or(""))),
            'L' => match arg {
                Some(a) => out.push_str(&format!("'{}'", a.replace('\'', "''"))),
                None => out.push_str("NULL"),
            },
            _ => return None,
        }
    }
    Some(out)
}

fn pg_size_pretty(bytes: i64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = bytes;
    let mut i = 0;
    while v.abs() >= 10 * 1024 && i < units.len() - 1 {
        v = (v + 512) / 1024;
        i += 1;
    }
    format!("{v} {}", units[i])
}

fn namespace_oid(name: &str) -> Option<i64> {
    match name {
        "pg_catalog" => Some(PG_CATALOG_OID),
        "public" => Some(PUBLIC_OID),
        "information_schema" => Some(INFORMATION_SCHEMA_OID),
        _ => None,
    }
}

fn int(v: &Option<String>) -> Option<i64> {
    v.as_deref().and_then(|s| s.trim().parse().ok())
}

/// Registers every function on `ctx`; `snapshot` answers the lookups by oid and name.
pub fn register(ctx: &SessionContext, snapshot: Arc<Snapshot>) {
    let mut fns: Vec<(&'static str, Ret, Arc<RowFn>)> = Vec::new();
    let text = |s: &'static str| -> Arc<RowFn> { Arc::new(move |_| Some(V::S(s.to_string()))) };
    let yes: Arc<RowFn> = Arc::new(|_| Some(V::B(true)));
    let no: Arc<RowFn> = Arc::new(|_| Some(V::B(false)));
    let null: Arc<RowFn> = Arc::new(|_| None);
    let zero: Arc<RowFn> = Arc::new(|_| Some(V::I(0)));
    fns.push(("current_database", Ret::Text, text(DATABASE)));
    fns.push(("current_schema", Ret::Text, text("public")));
    for name in ["current_user", "session_user", "current_role"] {
        fns.push((name, Ret::Text, text(OWNER)));
    }
    fns.push((
        "version",
        Ret::Text,
        Arc::new(|_| {
            Some(V::S(format!(
                "PostgreSQL {SERVER_VERSION} (Eddy {}) on {}-{}, compiled by rustc, 64-bit",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH,
                std::env::consts::OS
            )))
        }),
    ));
    fns.push(("current_setting", Ret::Text, Arc::new(|a| a.first()?.as_deref().and_then(setting).map(V::S))));
    fns.push(("set_config", Ret::Text, Arc::new(|a| a.get(1).cloned().flatten().map(V::S))));
    fns.push((
        "current_schemas",
        Ret::List,
        Arc::new(|a| {
            let implicit = a.first().cloned().flatten().is_some_and(|s| s == "true");
            let mut v = if implicit { vec!["pg_catalog".to_string()] } else { vec![] };
            v.push("public".into());
            Some(V::L(v))
        }),
    ));
    fns.push(("pg_get_userbyid", Ret::Text, Arc::new(|a| int(a.first()?).map(|_| V::S(OWNER.into())))));
    fns.push((
        "format_type",
        Ret::Text,
        Arc::new(|a| {
            let oid = int(a.first()?)?;
            Some(V::S(format_type(oid, int(a.get(1).unwrap_or(&None)).unwrap_or(-1)).unwrap_or_else(|| "???".into())))
        }),
    ));
    let s = snapshot.clone();
    fns.push(("pg_get_indexdef", Ret::Text, Arc::new(move |a| s.index_defs.get(&int(a.first()?)?).cloned().map(V::S))));
    let s = snapshot.clone();
    fns.push((
        "pg_get_constraintdef",
        Ret::Text,
        Arc::new(move |a| s.constraint_defs.get(&int(a.first()?)?).cloned().map(V::S)),
    ));
    let s = snapshot.clone();
    fns.push(("pg_get_viewdef", Ret::Text, Arc::new(move |a| s.view_defs.get(&int(a.first()?)?).cloned().map(V::S))));
    let s = snapshot.clone();
    fns.push((
        "pg_get_function_result",
        Ret::Text,
        Arc::new(move |a| s.functions.get(&int(a.first()?)?).map(|f| V::S(f.1.clone()))),
    ));
    for name in ["pg_get_function_arguments", "pg_get_function_identity_arguments"] {
        let s = snapshot.clone();
        fns.push((name, Ret::Text, Arc::new(move |a| s.functions.get(&int(a.first()?)?).map(|f| V::S(f.0.clone())))));
    }
    for name in [
        "pg_get_expr",
        "pg_get_ruledef",
        "pg_get_triggerdef",
        "pg_get_statisticsobjdef_columns",
        "pg_get_partkeydef",
        "obj_description",
        "col_description",
        "shobj_description",
        "pg_get_serial_sequence",
    ] {
        fns.push((name, Ret::Text, null.clone()));
    }
    fns.push(("pg_encoding_to_char", Ret::Text, Arc::new(|a| int(a.first()?).map(|_| V::S("UTF8".into())))));
    fns.push(("pg_size_pretty", Ret::Text, Arc::new(|a| int(a.first()?).map(|b| V::S(pg_size_pretty(b))))));
    fns.push(("quote_ident", Ret::Text, Arc::new(|a| a.first()?.as_deref().map(|s| V::S(quote_ident(s))))));
    fns.push(("format", Ret::Text, Arc::new(|a| format(a).map(V::S))));
    fns.push(("parse_ident", Ret::List, Arc::new(|a| a.first()?.as_deref().map(|s| V::L(parse_ident(s))))));
    for name in ["pg_table_size", "pg_relation_size", "pg_total_relation_size", "pg_indexes_size", "pg_database_size"] {
        fns.push((name, Ret::Int, zero.clone()));
    }
    fns.push(("pg_backend_pid", Ret::Int, Arc::new(|_| Some(V::I(std::process::id() as i64)))));
    fns.push(("pg_char_to_encoding", Ret::Int, Arc::new(|_| Some(V::I(6)))));
    // Arrays arrive as their length (see the module comment); Eddy's arrays are 1-based, 1-D.
    fns.push(("array_lower", Ret::Int, Arc::new(|a| int(a.first()?).filter(|n| *n > 0).map(|_| V::I(1)))));
    fns.push(("array_upper", Ret::Int, Arc::new(|a| int(a.first()?).filter(|n| *n > 0).map(V::I))));
    for name in [
        "pg_table_is_visible",
        "pg_function_is_visible",
        "pg_type_is_visible",
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_any_column_privilege",
        "has_column_privilege",
        "has_function_privilege",
        "has_sequence_privilege",
        "pg_has_role",
    ] {
        fns.push((name, Ret::Bool, yes.clone()));
    }
    for name in ["pg_relation_is_publishable", "pg_is_in_recovery"] {
        fns.push((name, Ret::Bool, no.clone()));
    }
    // The ::reg* casts: oid from a name (or an oid), and back.
    let s = snapshot.clone();
    fns.push((
        "eddy_regclass",
        Ret::Int,
        Arc::new(move |a| {
            let v = a.first()?.as_deref()?;
            if let Ok(oid) = v.trim().parse::<i64>() {
                return Some(V::I(oid));
            }
            let name = parse_ident(v).pop()?;
            s.class_oids.get(&name).map(|o| V::I(*o))
        }),
    ));
    let s = snapshot.clone();
    fns.push((
        "eddy_regclass_name",
        Ret::Text,
        Arc::new(move |a| {
            let v = a.first()?.as_deref()?;
            match v.trim().parse::<i64>() {
                Ok(oid) => {
                    Some(V::S(s.classes.get(&oid).map(|c| quote_ident(&c.1)).unwrap_or_else(|| oid.to_string())))
                }
                Err(_) => Some(V::S(v.to_string())),
            }
        }),
    ));
    fns.push((
        "eddy_regtype",
        Ret::Int,
        Arc::new(|a| {
            let v = a.first()?.as_deref()?.trim().to_lowercase();
            if let Ok(oid) = v.parse::<i64>() {
                return Some(V::I(oid));
            }
            let v = v.trim_start_matches("pg_catalog.");
            TYPES.iter().find(|t| t.1 == v || t.2 == v).map(|t| V::I(t.0))
        }),
    ));
    fns.push((
        "eddy_regtype_name",
        Ret::Text,
        Arc::new(|a| {
            let v = a.first()?.as_deref()?;
            Some(V::S(match v.trim().parse::<i64>() {
                Ok(oid) => format_type(oid, -1).unwrap_or_else(|| oid.to_string()),
                Err(_) => v.to_string(),
            }))
        }),
    ));
    fns.push((
        "eddy_regnamespace",
        Ret::Int,
        Arc::new(|a| {
            let v = a.first()?.as_deref()?;
            v.trim().parse::<i64>().ok().or_else(|| namespace_oid(&parse_ident(v).pop()?)).map(V::I)
        }),
    ));
    fns.push((
        "eddy_regnamespace_name",
        Ret::Text,
        Arc::new(|a| {
            let v = a.first()?.as_deref()?;
            let oid = v.trim().parse::<i64>().ok();
            Some(V::S(oid.and_then(Snapshot::namespace_name).map(str::to_string).unwrap_or_else(|| v.to_string())))
        }),
    ));
    fns.push((
        "eddy_regrole",
        Ret::Int,
        Arc::new(|a| {
            let v = a.first()?.as_deref()?;
            v.trim().parse::<i64>().ok().or_else(|| (parse_ident(v).pop()? == OWNER).then_some(OWNER_OID)).map(V::I)
        }),
    ));
    fns.push(("eddy_regrole_name", Ret::Text, Arc::new(|a| a.first()?.as_ref().map(|_| V::S(OWNER.into())))));
    // to_regclass('name') and friends: the same lookups (NULL when the name is unknown).
    let aliases: Vec<(&'static str, Ret, Arc<RowFn>)> = fns
        .iter()
        .filter_map(|(name, ret, f)| {
            let to = match *name {
                "eddy_regclass" => "to_regclass",
                "eddy_regtype" => "to_regtype",
                "eddy_regnamespace" => "to_regnamespace",
                "eddy_regrole" => "to_regrole",
                _ => return None,
            };
            Some((to, *ret, f.clone()))
        })
        .collect();
    fns.extend(aliases);
    for (name, ret, f) in fns {
        let signature = Signature::one_of(vec![TypeSignature::Nullary, TypeSignature::UserDefined], Volatility::Stable);
        ctx.register_udf(ScalarUDF::new_from_impl(PgFn { name, ret, signature, f }));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(PgTypeof { signature: Signature::any(1, Volatility::Immutable) }));
}

/// `pg_typeof(x)`: the name of the Postgres type a result of `x`'s type is sent as
/// (`integer`, `numeric`, `timestamp without time zone`, ...); `unknown` for a bare NULL.
#[derive(Debug)]
struct PgTypeof {
    signature: Signature,
}
impl PartialEq for PgTypeof {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for PgTypeof {}
impl std::hash::Hash for PgTypeof {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "pg_typeof".hash(state)
    }
}

/// The name `pg_typeof` gives a value of Arrow type `dt`.
fn pg_type_name(dt: &DataType) -> String {
    if dt == &DataType::Null {
        return "unknown".into();
    }
    let oid = i64::from(crate::pgwire::pg_type(dt).0.oid());
    format_type(oid, -1).unwrap_or_else(|| "unknown".into())
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = args.args.first().map(|a| pg_type_name(&a.data_type())).unwrap_or_else(|| "unknown".into());
        Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::Utf8(Some(name))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_identifiers() {
        assert_eq!(quote_ident("orders"), "orders");
        assert_eq!(quote_ident("Orders"), "\"Orders\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(parse_ident("public.\"My Table\""), vec!["public", "My Table"]);
        assert_eq!(parse_ident("Public.Games"), vec!["public", "games"]);
        let s = |x: &str| Some(x.to_string());
        assert_eq!(format(&[s("%I.%I"), s("public"), s("My T")]).unwrap(), "public.\"My T\"");
        assert_eq!(format(&[s("%L and %s%%"), s("it's"), None]).unwrap(), "'it''s' and %");
        assert_eq!(pg_size_pretty(20_000), "20 kB");
    }

    #[test]
    fn pg_typeof_names_the_postgres_type() {
        use datafusion::arrow::datatypes::TimeUnit;
        assert_eq!(pg_type_name(&DataType::Int32), "integer");
        assert_eq!(pg_type_name(&DataType::Int64), "bigint");
        assert_eq!(pg_type_name(&DataType::Float64), "double precision");
        assert_eq!(pg_type_name(&DataType::Decimal128(10, 2)), "numeric");
        assert_eq!(pg_type_name(&DataType::Boolean), "boolean");
        assert_eq!(pg_type_name(&DataType::Timestamp(TimeUnit::Millisecond, None)), "timestamp without time zone");
        assert_eq!(pg_type_name(&DataType::Date32), "date");
        assert_eq!(pg_type_name(&DataType::Null), "unknown");
    }

    #[test]
    fn type_names() {
        assert_eq!(format_type(1700, ((10 << 16) | 2) + 4).unwrap(), "numeric(10,2)");
        assert_eq!(format_type(1009, -1).unwrap(), "text[]");
        assert_eq!(format_type(1114, -1).unwrap(), "timestamp without time zone");
    }
}
