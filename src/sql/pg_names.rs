//! Postgres's names for result columns that have no alias (its `FigureColname`): a
//! function call is named after the function (`count`, `date_trunc`), a cast after its
//! operand when that has a name and else after the type (`int4`, `timestamp`), `CASE` after
//! its ELSE branch or `case`, `ARRAY[...]` `array`, `EXISTS (...)` `exists`, a scalar
//! subquery after its column; everything else (`1`, `a + b`) is `?column?`. Without this,
//! clients would see DataFusion's display names (`Int64(1)`, `count(*)`,
//! `date_trunc(Utf8("hour"),readings.ts)`).
//!
//! Only pull queries are named so (a continuous query's columns follow ksqlDB). Postgres
//! allows two result columns of one name (`SELECT 1, 2`); DataFusion does not, so a repeated
//! name gets [`MARKER`] and a number, which [`strip_markers`] takes off the result's schema.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{self, Expr, SelectItem, SetExpr};

/// Separates a repeated column name from the number that keeps it unique during planning
/// (a private-use character: no name a user writes contains it).
pub const MARKER: char = '\u{E000}';

/// Gives each unaliased, computed column of the query's result an alias with Postgres's name
/// for it. Plain column references keep theirs (DataFusion already names them so). Whether
/// it named any: a query it left as it was need not be rendered again.
pub fn name_columns(query: &mut ast::Query) -> bool {
    let Some(select) = first_select(&mut query.body) else { return false };
    let mut changed = false;
    let mut taken: HashSet<String> = HashSet::new();
    for item in &mut select.projection {
        let name = match item {
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => crate::sql::normalize_ident(i),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                parts.last().map(crate::sql::normalize_ident).unwrap_or_default()
            }
            SelectItem::UnnamedExpr(e) => {
                let name = column_name(e).0.unwrap_or_else(|| "?column?".to_string());
                let unique = unique(&name, &taken);
                *item = SelectItem::ExprWithAlias { expr: e.clone(), alias: ast::Ident::with_quote('"', &unique) };
                taken.insert(unique);
                changed = true;
                name
            }
            SelectItem::ExprWithAlias { alias, .. } => crate::sql::normalize_ident(alias),
            _ => continue,
        };
        taken.insert(name);
    }
    changed
}

/// `name`, or `name` + MARKER + a number when an earlier column has that name.
fn unique(name: &str, taken: &HashSet<String>) -> String {
    if !taken.contains(name) {
        return name.to_string();
    }
    (2..).map(|n| format!("{name}{MARKER}{n}")).find(|c| !taken.contains(c)).unwrap_or_default()
}

/// The SELECT that names a query's columns: the query's own, or a set operation's first.
fn first_select(body: &mut SetExpr) -> Option<&mut ast::Select> {
    match body {
        SetExpr::Select(s) => Some(s),
        SetExpr::SetOperation { left, .. } => first_select(left),
        SetExpr::Query(q) => first_select(&mut q.body),
        _ => None,
    }
}

/// Postgres's name for an expression and how sure it is of it: 2 for a name from a column
/// or a function, 1 for a fallback (a type's name, `case`), 0 for none (`?column?`).
fn column_name(e: &Expr) -> (Option<String>, u8) {
    let named = |s: &str| (Some(s.to_string()), 2);
    match e {
        Expr::Identifier(i) => (Some(crate::sql::normalize_ident(i)), 2),
        Expr::CompoundIdentifier(parts) => (parts.last().map(crate::sql::normalize_ident), 2),
        // `a[1]`, `a['k']`: the base's name; `a[1].f`: the last field's.
        Expr::CompoundFieldAccess { root, access_chain } => match access_chain.last() {
            Some(ast::AccessExpr::Dot(Expr::Identifier(i))) => (Some(crate::sql::normalize_ident(i)), 2),
            _ => column_name(root),
        },
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => column_name(inner),
        Expr::Function(f) => match f.name.0.last() {
            Some(ast::ObjectNamePart::Identifier(i)) => (Some(crate::sql::normalize_ident(i)), 2),
            _ => (None, 0),
        },
        Expr::Cast { expr, data_type, .. } => match column_name(expr) {
            (Some(n), 2) => (Some(n), 2),
            _ => (Some(type_name(data_type)), 1),
        },
        Expr::TypedString(t) => (Some(type_name(&t.data_type)), 1),
        Expr::Interval(_) => (Some("interval".into()), 1),
        Expr::Case { else_result, .. } => match else_result.as_deref().map(column_name) {
            Some((Some(n), 2)) => (Some(n), 2),
            _ => (Some("case".into()), 1),
        },
        Expr::Array(_) => named("array"),
        Expr::Exists { .. } => named("exists"),
        Expr::Tuple(_) => named("row"),
        Expr::Extract { .. } => named("extract"),
        Expr::Substring { .. } => named("substring"),
        Expr::Position { .. } => named("position"),
        Expr::Overlay { .. } => named("overlay"),
        Expr::Trim { .. } => named("btrim"),
        Expr::Ceil { .. } => named("ceil"),
        Expr::Floor { .. } => named("floor"),
        Expr::Subquery(q) => match q.body.as_ref() {
            SetExpr::Select(s) => match s.projection.first() {
                Some(SelectItem::ExprWithAlias { alias, .. }) => (Some(crate::sql::normalize_ident(alias)), 2),
                Some(SelectItem::UnnamedExpr(inner)) => column_name(inner),
                _ => (None, 0),
            },
            _ => (None, 0),
        },
        _ => (None, 0),
    }
}

/// A type's name as Postgres prints it (`int4`, not `INTEGER`).
fn type_name(t: &ast::DataType) -> String {
    use ast::DataType as T;
    match t {
        T::SmallInt(_) | T::Int2(_) => "int2".into(),
        T::Int(_) | T::Integer(_) | T::Int4(_) => "int4".into(),
        T::BigInt(_) | T::Int8(_) => "int8".into(),
        T::Real | T::Float4 => "float4".into(),
        T::Double(_) | T::DoublePrecision | T::Float8 | T::Float(_) => "float8".into(),
        T::Numeric(_) | T::Decimal(_) | T::Dec(_) => "numeric".into(),
        T::Boolean | T::Bool => "bool".into(),
        T::Text | T::String(_) => "text".into(),
        T::Varchar(_) | T::CharacterVarying(_) => "varchar".into(),
        T::Char(_) | T::Character(_) => "bpchar".into(),
        T::Bytea => "bytea".into(),
        T::Date => "date".into(),
        T::Time(_, ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz) => "timetz".into(),
        T::Time(..) => "time".into(),
        T::Timestamp(_, ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz) => "timestamptz".into(),
        T::Timestamp(..) => "timestamp".into(),
        T::Interval { .. } => "interval".into(),
        T::JSON => "json".into(),
        T::JSONB => "jsonb".into(),
        T::Custom(name, _) => match name.0.last() {
            Some(ast::ObjectNamePart::Identifier(i)) => crate::sql::normalize_ident(i),
            _ => name.to_string().to_lowercase(),
        },
        other => other.to_string().to_lowercase(),
    }
}

/// The schema with each repeated name's marker and number taken off (see [`MARKER`]).
pub fn strip_markers(schema: SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| f.name().contains(MARKER)) {
        return schema;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.name().split_once(MARKER) {
            Some((name, _)) => f.as_ref().clone().with_name(name),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn names(sql: &str) -> Vec<String> {
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses").remove(0);
        let ast::Statement::Query(q) = &mut stmt else { panic!("a query") };
        let plain = matches!(q.body.as_ref(), SetExpr::Select(s) if s.projection.iter().all(|i| matches!(i,
            SelectItem::UnnamedExpr(Expr::Identifier(_) | Expr::CompoundIdentifier(_)) | SelectItem::ExprWithAlias { .. } | SelectItem::Wildcard(_))));
        assert_eq!(name_columns(q), !plain, "{sql}: whether anything was named");
        let s = first_select(&mut q.body).expect("a select");
        s.projection
            .iter()
            .map(|item| match item {
                SelectItem::ExprWithAlias { alias, .. } => alias.value.replace(MARKER, "#"),
                SelectItem::UnnamedExpr(e) => format!("({e})"),
                other => format!("({other})"),
            })
            .collect()
    }

    #[test]
    fn postgres_names_for_computed_columns() {
        assert_eq!(names("SELECT 1"), ["?column?"]);
        assert_eq!(names("SELECT 1, 2, 'a'"), ["?column?", "?column?#2", "?column?#3"]);
        assert_eq!(names("SELECT count(*), COUNT(x), Sum(x) FROM t"), ["count", "count#2", "sum"]);
        assert_eq!(names("SELECT date_trunc('hour', ts) FROM r"), ["date_trunc"]);
        assert_eq!(names("SELECT pg_catalog.format_type(1, 2)"), ["format_type"]);
        assert_eq!(names("SELECT 1::int, CAST('1' AS BIGINT), '1'::text"), ["int4", "int8", "text"]);
        assert_eq!(names("SELECT x::text, CAST(t.y AS DOUBLE PRECISION) FROM t"), ["x", "y"]);
        assert_eq!(names("SELECT TIMESTAMP '2026-01-01', DATE '2026-01-01'"), ["timestamp", "date"]);
        assert_eq!(names("SELECT CASE WHEN a THEN 1 END, CASE WHEN a THEN 1 ELSE b END FROM t"), ["case", "b"]);
        assert_eq!(names("SELECT a + 1, -a, a IS NULL FROM t"), ["?column?", "?column?#2", "?column?#3"]);
        assert_eq!(names("SELECT (lower(a)), ARRAY[1], EXISTS (SELECT 1)"), ["lower", "array", "exists"]);
        assert_eq!(names("SELECT (SELECT max(v) FROM t), (SELECT 1)"), ["max", "?column?"]);
        assert_eq!(names("SELECT arr[1], s['k'] FROM t"), ["arr", "s"]);
        assert_eq!(names("SELECT \"Upper\"(a), \"Mixed\" FROM t"), ["Upper", "(\"Mixed\")"]);
        assert_eq!(names("SELECT count(*) FROM t UNION SELECT 1"), ["count"]);
    }

    #[test]
    fn named_columns_and_plain_references_are_left_alone() {
        assert_eq!(names("SELECT a, t.b, c AS d, upper(e) AS f FROM t"), ["(a)", "(t.b)", "d", "f"]);
        // A lookup by key is left as written (not rendered again).
        assert_eq!(names("SELECT * FROM t WHERE k = 1"), ["(*)"]);
        // An explicit alias takes the name first: the computed column gets a number.
        assert_eq!(names("SELECT 1 AS count, count(*) FROM t"), ["count", "count#2"]);
        assert_eq!(names("SELECT a, lower(a) AS a2, upper(a) FROM t"), ["(a)", "a2", "upper"]);
    }

    #[test]
    fn markers_come_off_the_schema() {
        use datafusion::arrow::datatypes::DataType;
        let schema = Arc::new(Schema::new(vec![
            Field::new("?column?", DataType::Int64, false),
            Field::new(format!("?column?{MARKER}2"), DataType::Utf8, true),
        ]));
        let out = strip_markers(schema);
        let names: Vec<&str> = out.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["?column?", "?column?"]);
        assert_eq!(out.field(1).data_type(), &DataType::Utf8);
    }
}
