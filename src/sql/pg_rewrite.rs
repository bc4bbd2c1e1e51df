//! Postgres client syntax that DataFusion's planner does not take, rewritten on the way in.
//!
//! psql, SQLAlchemy, Grafana, Metabase and pgJDBC introspect the catalog with Postgres-only
//! constructs. [`rewrite`] turns them into equivalents DataFusion plans, on sqlparser's AST:
//!
//! - `a OPERATOR(pg_catalog.~) b` → `a ~ b` (any operator spelled that way);
//! - `x COLLATE pg_catalog.default` → `x` (Eddy compares strings bytewise);
//! - `pg_catalog.fn(...)` → `fn(...)`, and `pg_catalog.text`, `int2[]`, `oid`, `name`, `"char"`
//!   casts → DataFusion types;
//! - `x::regclass` / `regtype` / `regnamespace` / `regrole` → `eddy_regclass(x)` (an oid, from
//!   a name or an oid), and `x::regclass::text` → `eddy_regclass_name(x)`; `'f'::regproc` → `'f'`;
//! - `ARRAY(SELECT e FROM ...)` → `(SELECT array_agg(e) FROM ...)`;
//! - a query over a catalog table Eddy never fills (policies, rules, triggers, publications,
//!   inheritance, statistics...) is known to return no rows: it becomes `SELECT NULL AS col, ...
//!   WHERE false` with the same column names, and a scalar subquery over one becomes `NULL`
//!   (`EXISTS` → `false`, `IN (...)` → `false`), so the rest of it need not be plannable;
//! - a plain function in FROM (`FROM string_to_array(...) s`) becomes a one-row derived table,
//!   as Postgres reads it, and `generate_series(a, b) AS i` names its column `i`.
//!
//! Callers: [`super::parse_select`] runs it on every SELECT; it changes nothing in a query
//! that uses none of these.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, CastKind, DataType, Expr, FunctionArguments, Ident, ObjectName, Query, SelectItem, SetExpr,
    TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Catalog tables that are always empty in Eddy (no rules, triggers, policies, publications,
/// inheritance, extended statistics, defaults, comments, extensions or enums).
pub const EMPTY_TABLES: &[&str] = &[
    "pg_policy",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_inherits",
    "pg_rewrite",
    "pg_trigger",
    "pg_attrdef",
    "pg_description",
    "pg_extension",
    "pg_enum",
    "pg_collation",
    "pg_foreign_table",
    "pg_partitioned_table",
    "pg_sequence",
    "pg_event_trigger",
    "pg_depend",
    "pg_shdescription",
];

/// Catalog columns that are always NULL in Eddy (no options, ACLs, partitions or index
/// expressions), so `unnest(c.reloptions)` in FROM yields no rows.
pub const NULL_COLUMNS: &[&str] = &[
    "reloptions",
    "relacl",
    "relpartbound",
    "attacl",
    "attoptions",
    "datacl",
    "nspacl",
    "proacl",
    "proconfig",
    "rolconfig",
    "typacl",
    "indexprs",
    "indpred",
    "conbin",
];

/// Rewrites `query` in place; returns whether anything changed.
mod ksql;
mod rowtime;
pub use ksql::ksql_functions;
use ksql::{constructor, ksql_alias, time_arithmetic};

pub fn rewrite(query: &mut Query) -> bool {
    let mut r = Rewriter { changed: false };
    let _ = query.visit(&mut r);
    r.changed
}

struct Rewriter {
    changed: bool,
}

fn parse_expr(sql: &str) -> Expr {
    Parser::new(&GenericDialect {}).try_with_sql(sql).and_then(|mut p| p.parse_expr()).expect("a valid expression")
}

/// `sql` as an expression, or `None` (for text built from the user's own expressions).
fn try_parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&GenericDialect {}).try_with_sql(sql).and_then(|mut p| p.parse_expr()).ok()
}

fn last_part(name: &ObjectName) -> String {
    name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_lowercase()).unwrap_or_default()
}

fn is_catalog_schema(name: &ObjectName) -> bool {
    name.0.len() == 2
        && name.0[0].as_ident().is_some_and(|i| {
            i.value.eq_ignore_ascii_case("pg_catalog") || i.value.eq_ignore_ascii_case("information_schema")
        })
}

/// The DataFusion type for a Postgres type name (`None`: leave it as written).
fn plain_type(name: &str) -> Option<DataType> {
    Some(match name {
        "text" | "name" | "char" | "bpchar" | "varchar" | "\"char\"" => DataType::Text,
        "oid" | "int8" | "xid" | "regproc" | "regprocedure" | "regoper" => DataType::BigInt(None),
        "int4" => DataType::Int(None),
        "int2" => DataType::SmallInt(None),
        "bool" => DataType::Boolean,
        "float8" => DataType::Double(ast::ExactNumberInfo::None),
        "float4" => DataType::Real,
        "int2vector" | "oidvector" => DataType::Text,
        _ => return None,
    })
}

/// `regclass`, `regtype`, `regnamespace`, `regrole`: the kind, for the lookup function.
fn reg_kind(dt: &DataType) -> Option<&'static str> {
    if *dt == DataType::Regclass {
        return Some("regclass");
    }
    let DataType::Custom(name, _) = dt else { return None };
    match last_part(name).as_str() {
        "regclass" => Some("regclass"),
        "regtype" => Some("regtype"),
        "regnamespace" => Some("regnamespace"),
        "regrole" => Some("regrole"),
        _ => None,
    }
}

fn is_text_type(dt: &DataType) -> bool {
    match dt {
        DataType::Text | DataType::Varchar(_) | DataType::String(_) => true,
        DataType::Custom(name, _) => matches!(last_part(name).as_str(), "text" | "name" | "varchar"),
        _ => false,
    }
}

/// Maps `pg_catalog.x` / custom type names (and arrays of them) to DataFusion types.
fn map_type(dt: &DataType) -> Option<DataType> {
    match dt {
        DataType::Custom(name, _) => plain_type(&last_part(name)),
        DataType::Array(ast::ArrayElemTypeDef::SquareBracket(inner, size)) => {
            map_type(inner).map(|t| DataType::Array(ast::ArrayElemTypeDef::SquareBracket(Box::new(t), *size)))
        }
        _ => None,
    }
}

fn function(name: &str, arg: Expr) -> Expr {
    let call = parse_expr(&format!("{name}(NULL)"));
    match call {
        Expr::Function(mut f) => {
            if let FunctionArguments::List(list) = &mut f.args {
                list.args = vec![ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))];
            }
            Expr::Function(f)
        }
        other => other,
    }
}

fn is_null_column(e: &Expr) -> bool {
    match e {
        Expr::Identifier(i) => NULL_COLUMNS.contains(&i.value.as_str()),
        Expr::CompoundIdentifier(ids) => ids.last().is_some_and(|i| NULL_COLUMNS.contains(&i.value.as_str())),
        _ => false,
    }
}

fn is_empty_table(factor: &TableFactor) -> bool {
    match factor {
        TableFactor::Table { name, args: None, .. } => EMPTY_TABLES.contains(&last_part(name).as_str()),
        TableFactor::Table { name, args: Some(args), .. } => {
            last_part(name) == "unnest"
                && matches!(args.args.first(), Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e))) if is_null_column(e))
        }
        TableFactor::Derived { subquery, .. } => query_is_empty(subquery),
        _ => false,
    }
}

/// Whether a query is known to return no rows without running it.
pub fn query_is_empty(query: &Query) -> bool {
    set_is_empty(&query.body)
}

fn set_is_empty(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(select) => {
            let inner_join = |op: &ast::JoinOperator| {
                matches!(op, ast::JoinOperator::Join(_) | ast::JoinOperator::Inner(_) | ast::JoinOperator::CrossJoin(_))
            };
            let never = matches!(&select.selection, Some(Expr::Value(v)) if v.value == ast::Value::Boolean(false));
            never
                || select.from.iter().any(|twj| {
                    is_empty_table(&twj.relation)
                        || twj.joins.iter().any(|j| inner_join(&j.join_operator) && is_empty_table(&j.relation))
                })
        }
        SetExpr::Query(q) => query_is_empty(q),
        SetExpr::SetOperation { op, left, right, .. } => match op {
            ast::SetOperator::Union => set_is_empty(left) && set_is_empty(right),
            ast::SetOperator::Intersect => set_is_empty(left) || set_is_empty(right),
            _ => set_is_empty(left),
        },
        _ => false,
    }
}

/// The output names of the first SELECT of a set expression.
fn output_names(body: &SetExpr) -> Vec<String> {
    match body {
        SetExpr::Select(select) => select
            .projection
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                SelectItem::UnnamedExpr(Expr::Identifier(id)) => id.value.to_lowercase(),
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(ids)) => {
                    ids.last().map(|i| i.value.to_lowercase()).unwrap_or_default()
                }
                SelectItem::UnnamedExpr(Expr::Function(f)) => last_part(&f.name),
                _ => format!("column{}", i + 1),
            })
            .collect(),
        SetExpr::Query(q) => output_names(&q.body),
        SetExpr::SetOperation { left, .. } => output_names(left),
        _ => vec!["column1".into()],
    }
}

/// `SELECT NULL AS a, NULL AS b WHERE false`, keeping the query's column names.
fn empty_body(body: &SetExpr) -> SetExpr {
    let mut names = output_names(body);
    for i in 0..names.len() {
        if names[..i].contains(&names[i]) {
            names[i] = format!("{}_{}", names[i], i + 1);
        }
    }
    let cols: Vec<String> = names.iter().map(|n| format!("NULL AS \"{}\"", n.replace('"', "\"\""))).collect();
    let sql = format!("SELECT {} WHERE false", cols.join(", "));
    let Ok(ast::Statement::Query(q)) =
        Parser::new(&GenericDialect {}).try_with_sql(&sql).and_then(|mut p| p.parse_statement())
    else {
        unreachable!("generated SQL parses")
    };
    *q.body
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if query_is_empty(query) && !is_trivially_empty(&query.body) {
            *query.body = empty_body(&query.body);
            query.order_by = None;
            query.limit_clause = None;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, select: &mut ast::Select) -> ControlFlow<()> {
        // DataFusion runs `x IN (SELECT ...)` only in filters: in a SELECT list it becomes
        // `array_has((SELECT array_agg(...) ...), x)`.
        for item in &mut select.projection {
            if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                self.changed |= in_to_array_has(e);
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let Some(q) = sort_by_subquery(query) {
            *query = q;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, args: Some(args), .. } = factor {
            let fname = last_part(name);
            if is_catalog_schema(name) {
                *name = ObjectName::from(vec![Ident::new(fname.clone())]);
                self.changed = true;
            }
            match fname.as_str() {
                "generate_series" | "unnest" | "range" => {
                    // Postgres names a one-column function's column after the table alias.
                    if let Some(a) = alias.as_mut().filter(|a| a.columns.is_empty()) {
                        a.columns = vec![ast::TableAliasColumnDef::from_name(a.name.value.clone())];
                        self.changed = true;
                    }
                }
                _ if !fname.starts_with("pg_") => {
                    // A scalar function in FROM: one row, one column named after the alias.
                    let alias_name = alias.as_ref().map(|a| a.name.value.clone()).unwrap_or_else(|| fname.clone());
                    let call =
                        format!("{fname}({})", args.args.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "));
                    let sql = format!("SELECT {call} AS \"{alias_name}\"");
                    if let Ok(ast::Statement::Query(q)) =
                        Parser::new(&GenericDialect {}).try_with_sql(&sql).and_then(|mut p| p.parse_statement())
                    {
                        *factor = TableFactor::Derived {
                            lateral: false,
                            subquery: q,
                            alias: Some(ast::TableAlias {
                                explicit: true,
                                name: Ident::new(alias_name),
                                columns: Vec::new(),
                                at: None,
                            }),
                            sample: None,
                        };
                        self.changed = true;
                    }
                }
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(new) = self.rewrite_expr(expr) {
            *expr = new;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

fn is_trivially_empty(body: &SetExpr) -> bool {
    matches!(body, SetExpr::Select(s) if s.from.is_empty()
        && matches!(&s.selection, Some(Expr::Value(v)) if v.value == ast::Value::Boolean(false)))
}

/// The elements of a one-dimensional Postgres array text `{a,b,"c d"}` (no NULLs).
fn array_elements(text: &str) -> Option<Vec<String>> {
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    if body.trim().is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => cur.extend(chars.next()),
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            '{' | '}' if !quoted => return None,
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    Some(out)
}

/// `CASE WHEN t.typtype = 'd' | 'c' THEN (subquery) ELSE NULL END` is NULL: Eddy's pg_type
/// has no domains and no composite types, so the subquery (a correlated one DataFusion cannot
/// run, as asyncpg's type introspection sends) is never reached.
fn is_unreachable_type_branch(conditions: &[ast::CaseWhen], else_result: Option<&Expr>) -> bool {
    let [when] = conditions else { return false };
    let names_typtype = |e: &Expr| match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case("typtype"),
        Expr::CompoundIdentifier(parts) => parts.last().is_some_and(|i| i.value.eq_ignore_ascii_case("typtype")),
        _ => false,
    };
    let no_such_kind = |e: &Expr| matches!(e, Expr::Value(v) if matches!(&v.value, ast::Value::SingleQuotedString(k) if k == "d" || k == "c"));
    let is_subquery = |e: &Expr| match e {
        Expr::Subquery(_) => true,
        Expr::Nested(inner) => matches!(inner.as_ref(), Expr::Subquery(_)),
        _ => false,
    };
    matches!(&when.condition, Expr::BinaryOp { left, op: BinaryOperator::Eq, right }
        if names_typtype(left) && no_such_kind(right))
        && is_subquery(&when.result)
        && else_result.is_none_or(|e| matches!(e, Expr::Value(v) if v.value == ast::Value::Null))
}

impl Rewriter {
    fn rewrite_expr(&mut self, expr: &mut Expr) -> Option<Expr> {
        if let Some(built) = constructor(expr)
            .or_else(|| time_arithmetic(expr))
            .or_else(|| ksql_alias(expr))
            .or_else(|| rowtime::time_strings(expr))
        {
            return Some(built);
        }
        match expr {
            Expr::Case { operand: None, conditions, else_result, .. }
                if is_unreachable_type_branch(conditions, else_result.as_deref()) =>
            {
                Some(Expr::Value(ast::Value::Null.into()))
            }
            Expr::BinaryOp { left, op: BinaryOperator::PGCustomBinaryOperator(parts), right } => {
                let op = match parts.last().map(String::as_str) {
                    Some("~") => BinaryOperator::PGRegexMatch,
                    Some("~*") => BinaryOperator::PGRegexIMatch,
                    Some("!~") => BinaryOperator::PGRegexNotMatch,
                    Some("!~*") => BinaryOperator::PGRegexNotIMatch,
                    Some("~~") => BinaryOperator::PGLikeMatch,
                    Some("=") => BinaryOperator::Eq,
                    Some("<>") => BinaryOperator::NotEq,
                    Some("<") => BinaryOperator::Lt,
                    Some(">") => BinaryOperator::Gt,
                    Some("<=") => BinaryOperator::LtEq,
                    Some(">=") => BinaryOperator::GtEq,
                    Some("||") => BinaryOperator::StringConcat,
                    _ => return None,
                };
                Some(Expr::BinaryOp { left: left.clone(), op, right: right.clone() })
            }
            Expr::Collate { expr, .. } => Some(*expr.clone()),
            // Bare `user` is Postgres's `current_user` (Grafana's search_path lookup uses it).
            Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("user") => {
                Some(parse_expr("current_user()"))
            }
            Expr::Function(f) if last_part(&f.name) == "user" && f.args == FunctionArguments::None => {
                Some(parse_expr("current_user()"))
            }
            Expr::Like { pattern, escape_char, .. } | Expr::ILike { pattern, escape_char, .. } => {
                // DataFusion escapes with `\` only: translate `ESCAPE '/'` (SQLAlchemy) to it.
                let ast::Value::SingleQuotedString(e) = &escape_char.as_ref()?.value else { return None };
                if e == "\\" {
                    return None;
                }
                let translated = parse_expr(&format!(
                    "replace(replace({pattern}, '\\', '\\\\'), '{}', '\\')",
                    e.replace('\'', "''")
                ));
                **pattern = translated;
                *escape_char = None;
                self.changed = true;
                None
            }
            Expr::Function(f) => {
                if is_catalog_schema(&f.name) {
                    f.name = ObjectName::from(vec![Ident::new(last_part(&f.name))]);
                    self.changed = true;
                }
                let name = last_part(&f.name);
                // Postgres's other clocks: within one statement they all read as now().
                let no_args = matches!(&f.args, FunctionArguments::List(l) if l.args.is_empty());
                if no_args
                    && matches!(name.as_str(), "clock_timestamp" | "statement_timestamp" | "transaction_timestamp")
                {
                    return Some(parse_expr("now()"));
                }
                if name == "generate_subscripts" {
                    // generate_subscripts(a, 1) → unnest(range(1, array_length(a, 1) + 1)).
                    let FunctionArguments::List(list) = &f.args else { return None };
                    let [array, dim] = &list.args[..] else { return None };
                    return Some(parse_expr(&format!(
                        "unnest(range(1, CAST(array_length({array}, {dim}) AS BIGINT) + 1))"
                    )));
                }
                if name == "array" {
                    if let FunctionArguments::Subquery(q) = &f.args {
                        if query_is_empty(q) {
                            return Some(Expr::value(ast::Value::Null));
                        }
                        return Some(array_of_subquery(q));
                    }
                }
                None
            }
            Expr::Subquery(q) if query_is_empty(q) => Some(Expr::value(ast::Value::Null)),
            Expr::Subquery(q) => {
                // DataFusion plans a correlated scalar subquery only when it aggregates; one
                // that returns at most one row means the same under max().
                let SetExpr::Select(select) = q.body.as_mut() else { return None };
                if select.projection.len() != 1 || select.group_by != ast::GroupByExpr::Expressions(vec![], vec![]) {
                    return None;
                }
                let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) =
                    &mut select.projection[0]
                else {
                    return None;
                };
                if q.limit_clause.is_some() || has_aggregate(e) || select.from.is_empty() {
                    return None;
                }
                *e = parse_expr(&format!("max({e})"));
                self.changed = true;
                None
            }
            Expr::Exists { subquery, negated } if query_is_empty(subquery) => {
                Some(Expr::value(ast::Value::Boolean(*negated)))
            }
            Expr::InSubquery { subquery, negated, .. } if query_is_empty(subquery) => {
                Some(Expr::value(ast::Value::Boolean(*negated)))
            }
            Expr::Cast { kind, expr: inner, data_type, .. } => {
                if let Some(kind_name) = reg_kind(data_type) {
                    return Some(function(&format!("eddy_{kind_name}"), *inner.clone()));
                }
                if let DataType::Custom(name, _) = data_type {
                    if matches!(last_part(name).as_str(), "regproc" | "regprocedure") {
                        // `'pg_catalog.array_in'::regproc`: pg_type keeps function names.
                        if let Expr::Value(v) = inner.as_ref() {
                            if let ast::Value::SingleQuotedString(s) = &v.value {
                                let short = s.rsplit('.').next().unwrap_or(s).to_string();
                                return Some(Expr::value(ast::Value::SingleQuotedString(short)));
                            }
                        }
                        return Some(*inner.clone());
                    }
                }
                if is_text_type(data_type) {
                    if let Expr::Function(f) = inner.as_ref() {
                        let name = last_part(&f.name);
                        if let Some(kind) = name.strip_prefix("eddy_reg").filter(|k| !k.ends_with("_name")) {
                            let FunctionArguments::List(list) = &f.args else { return None };
                            let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg)) = list.args.first()? else {
                                return None;
                            };
                            return Some(function(&format!("eddy_reg{kind}_name"), arg.clone()));
                        }
                    }
                }
                // `'{1,2}'::oid[]`, Postgres's array text (how drivers send array parameters):
                // an ARRAY of the elements, cast element by element.
                let array_text = match (&*data_type, inner.as_ref()) {
                    (DataType::Array(_), Expr::Value(v)) => match &v.value {
                        ast::Value::SingleQuotedString(t) => array_elements(t),
                        _ => None,
                    },
                    _ => None,
                };
                let had_text = array_text.is_some();
                let inner: Box<Expr> = match array_text {
                    Some(elems) => Box::new(Expr::Array(ast::Array {
                        elem: elems.into_iter().map(|e| Expr::value(ast::Value::SingleQuotedString(e))).collect(),
                        named: true,
                    })),
                    None => inner.clone(),
                };
                let mapped = match map_type(data_type) {
                    Some(m) => m,
                    None if had_text => data_type.clone(),
                    None => return None,
                };
                Some(Expr::Cast {
                    kind: if *kind == CastKind::DoubleColon { CastKind::Cast } else { kind.clone() },
                    expr: inner,
                    data_type: mapped,
                    array: false,
                    format: None,
                })
            }
            _ => None,
        }
    }
}

/// `x IN (SELECT ...)` → `array_has((SELECT array_agg(...) ...), x)` inside `e`.
fn in_to_array_has(e: &mut Expr) -> bool {
    let mut changed = false;
    let _ = ast::visit_expressions_mut(e, |x| {
        if let Expr::InSubquery { expr, subquery, negated } = x {
            let array = array_of_subquery(subquery);
            let not = if *negated { "NOT " } else { "" };
            *x = parse_expr(&format!("{not}array_has({array}, {expr})"));
            changed = true;
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

fn has_subquery(e: &Expr) -> bool {
    let mut found = false;
    let _ = ast::visit_expressions(e, |x| {
        found |= matches!(x, Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. });
        ControlFlow::<()>::Continue(())
    });
    found
}

/// DataFusion cannot sort by a subquery (Grafana's table picker does): compute the sort key
/// as a column of an inner query, sort the outer query by it and leave it out.
fn sort_by_subquery(query: &Query) -> Option<Query> {
    let Some(ast::OrderBy { kind: ast::OrderByKind::Expressions(exprs), .. }) = &query.order_by else { return None };
    if !exprs.iter().any(|o| has_subquery(&o.expr)) {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else { return None };
    let named = select.projection.iter().all(|i| {
        matches!(
            i,
            SelectItem::ExprWithAlias { .. }
                | SelectItem::UnnamedExpr(Expr::Identifier(_) | Expr::CompoundIdentifier(_))
        )
    });
    if !named {
        return None;
    }
    let names = output_names(&query.body);
    let mut inner = query.clone();
    inner.order_by = None;
    inner.limit_clause = None;
    let mut keys = Vec::new();
    if let SetExpr::Select(s) = inner.body.as_mut() {
        for (k, o) in exprs.iter().enumerate() {
            let key = match &o.expr {
                Expr::Value(v) => match &v.value {
                    ast::Value::Number(n, _) => names.get(n.parse::<usize>().ok()?.checked_sub(1)?)?.clone(),
                    _ => return None,
                },
                e => {
                    let alias = format!("__eddy_sort_{k}");
                    let mut e = e.clone();
                    in_to_array_has(&mut e);
                    s.projection.push(SelectItem::ExprWithAlias { expr: e, alias: Ident::new(alias.clone()) });
                    alias
                }
            };
            let dir = match o.options.asc {
                Some(false) => " DESC",
                _ => "",
            };
            keys.push(format!("\"{key}\"{dir}"));
        }
    }
    let cols: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let limit = query.limit_clause.as_ref().map(|l| format!(" {l}")).unwrap_or_default();
    let sql = format!("SELECT {} FROM ({inner}) AS _eddy_sorted ORDER BY {}{limit}", cols.join(", "), keys.join(", "));
    match Parser::new(&GenericDialect {}).try_with_sql(&sql).and_then(|mut p| p.parse_statement()) {
        Ok(ast::Statement::Query(q)) => Some(*q),
        _ => None,
    }
}

fn has_aggregate(e: &Expr) -> bool {
    const AGGREGATES: &[&str] =
        &["count", "sum", "min", "max", "avg", "array_agg", "string_agg", "bool_and", "bool_or", "every", "json_agg"];
    let mut found = false;
    let _ = ast::visit_expressions(e, |x| {
        if let Expr::Function(f) = x {
            found |= AGGREGATES.contains(&last_part(&f.name).as_str());
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// `ARRAY(SELECT e FROM ... ORDER BY o)` → `(SELECT array_agg(e ORDER BY o) FROM ...)`.
fn array_of_subquery(q: &Query) -> Expr {
    let mut q = q.clone();
    let order = q.order_by.take();
    if let SetExpr::Select(select) = q.body.as_mut() {
        if let Some(SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = select.projection.first()
        {
            let order_sql = match &order {
                Some(o) => format!(" {o}"),
                None => String::new(),
            };
            let agg = parse_expr(&format!("array_agg({e}{order_sql})"));
            select.projection = vec![SelectItem::UnnamedExpr(agg)];
        }
    }
    Expr::Subquery(Box::new(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(sql: &str) -> String {
        let Ok(ast::Statement::Query(mut q)) =
            Parser::new(&GenericDialect {}).try_with_sql(sql).and_then(|mut p| p.parse_statement())
        else {
            panic!("parse {sql}")
        };
        rewrite(&mut q);
        q.to_string()
    }

    #[test]
    fn asyncpg_type_introspection_shapes() {
        // No domains or composite types in Eddy's pg_type: those branches are NULL.
        let got = rw(
            "SELECT (CASE WHEN t.typtype = 'd' THEN (SELECT x FROM y WHERE y.a = t.oid) ELSE NULL END) FROM pg_type t",
        );
        assert_eq!(got, "SELECT (NULL) FROM pg_type t");
        // Array text, as drivers send array parameters, becomes an ARRAY.
        let got = rw("SELECT 1 FROM pg_type WHERE oid = any('{1016,20}'::oid[])");
        assert!(got.contains("ARRAY['1016', '20']"), "{got}");
        assert_eq!(array_elements(r#"{a,"b c",d}"#), Some(vec!["a".into(), "b c".into(), "d".into()]));
        assert_eq!(array_elements("{}"), Some(vec![]));
        assert_eq!(array_elements("{{1},{2}}"), None);
    }

    #[test]
    fn operators_and_collations() {
        assert_eq!(
            rw("SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default"),
            "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname ~ '^(orders)$'"
        );
    }

    #[test]
    fn qualified_functions_and_types() {
        assert_eq!(
            rw("SELECT pg_catalog.format_type(a.atttypid, a.atttypmod), x::pg_catalog.text, y::pg_catalog.int2[] FROM t"),
            "SELECT format_type(a.atttypid, a.atttypmod), CAST(x AS TEXT), CAST(y AS SMALLINT[]) FROM t"
        );
    }

    #[test]
    fn reg_casts() {
        assert_eq!(rw("SELECT 'pg_class'::regclass"), "SELECT eddy_regclass('pg_class')");
        assert_eq!(rw("SELECT CAST('x' AS REGCLASS)"), "SELECT eddy_regclass('x')");
        assert_eq!(
            rw("SELECT generate_subscripts(i.indkey, 1) FROM t"),
            "SELECT unnest(range(1, CAST(array_length(i.indkey, 1) AS BIGINT) + 1)) FROM t"
        );
        assert_eq!(
            rw("SELECT c.oid::pg_catalog.regclass::pg_catalog.text FROM t"),
            "SELECT eddy_regclass_name(c.oid) FROM t"
        );
        assert_eq!(
            rw("SELECT typinput = 'pg_catalog.array_in'::regproc FROM t"),
            "SELECT typinput = 'array_in' FROM t"
        );
        assert_eq!(rw("SELECT x::regtype::text FROM t"), "SELECT eddy_regtype_name(x) FROM t");
    }

    #[test]
    fn queries_over_empty_catalogs_return_no_rows() {
        assert_eq!(
            rw("SELECT pol.polname AS name, pol.polpermissive FROM pg_catalog.pg_policy pol WHERE pol.polrelid = '1' ORDER BY 1"),
            "SELECT NULL AS \"name\", NULL AS \"polpermissive\" WHERE false"
        );
        assert_eq!(
            rw("SELECT a, (SELECT d.adbin FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid) FROM pg_attribute a"),
            "SELECT a, NULL FROM pg_attribute a"
        );
        // A LEFT JOIN of an empty table keeps the rows.
        let sql = "SELECT c.relname FROM pg_class c LEFT JOIN pg_description d ON d.objoid = c.oid";
        assert_eq!(rw(sql), sql);
        // A UNION is empty only when every branch is.
        let union = "SELECT a FROM pg_publication UNION SELECT b FROM pg_class";
        assert_eq!(rw(union), union);
        assert_eq!(
            rw("SELECT pubname FROM pg_publication p UNION SELECT pubname FROM pg_publication_rel ORDER BY 1"),
            "SELECT NULL AS \"pubname\" WHERE false"
        );
    }

    #[test]
    fn array_subquery_and_from_functions() {
        assert_eq!(
            rw("SELECT ARRAY(SELECT rolname FROM pg_roles ORDER BY 1)"),
            "SELECT (SELECT array_agg(rolname ORDER BY 1) FROM pg_roles)"
        );
        assert_eq!(
            rw("SELECT (SELECT t.typcollation FROM pg_type t WHERE t.oid = a.atttypid) FROM pg_attribute a"),
            "SELECT (SELECT max(t.typcollation) FROM pg_type t WHERE t.oid = a.atttypid) FROM pg_attribute a"
        );
        assert_eq!(
            rw("SELECT c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x) FROM t"),
            "SELECT c.reloptions || NULL FROM t"
        );
        assert_eq!(
            rw("SELECT s[i] FROM generate_series(1, 2) AS i, string_to_array('a,b', ',') s"),
            "SELECT s[i] FROM generate_series(1, 2) AS i (i), (SELECT string_to_array('a,b', ',') AS \"s\") AS s"
        );
    }

    #[test]
    fn sort_by_a_subquery() {
        assert_eq!(
            rw("SELECT a AS \"table\" FROM t ORDER BY CASE WHEN a IN (SELECT b FROM u) THEN 0 ELSE 1 END, 1"),
            "SELECT \"table\" FROM (SELECT a AS \"table\", CASE WHEN array_has((SELECT array_agg(b) FROM u), a) \
             THEN 0 ELSE 1 END AS __eddy_sort_0 FROM t) AS _eddy_sorted ORDER BY \"__eddy_sort_0\", \"table\""
        );
    }

    #[test]
    fn in_subquery_in_select_list() {
        assert_eq!(
            rw("SELECT CASE WHEN a IN (SELECT b FROM u) THEN 1 END FROM t WHERE a IN (SELECT b FROM u)"),
            "SELECT CASE WHEN array_has((SELECT array_agg(b) FROM u), a) THEN 1 END FROM t WHERE a IN (SELECT b FROM u)"
        );
    }

    #[test]
    fn bare_user() {
        assert_eq!(rw("SELECT user"), "SELECT current_user");
        assert_eq!(rw("SELECT \"user\" FROM t"), "SELECT \"user\" FROM t");
    }

    #[test]
    fn like_escape() {
        assert_eq!(
            rw("SELECT 1 FROM t WHERE n NOT LIKE 'pg/_' || '%' ESCAPE '/'"),
            "SELECT 1 FROM t WHERE n NOT LIKE replace(replace('pg/_' || '%', '\\', '\\\\'), '/', '\\')"
        );
    }

    #[test]
    fn ordinary_queries_are_untouched() {
        let sql = "SELECT a, COUNT(*) FROM orders WHERE b ~ 'x' GROUP BY a";
        assert_eq!(rw(sql), sql);
    }
}
