//! Pull queries that read a table by its whole key skip DataFusion. The shape is
//! `SELECT <columns, or *> FROM t WHERE k1 = v1 [AND k2 = v2 ...]`, which is what a prepared
//! lookup `WHERE id = $1` becomes. The planning costs about 2 ms a statement: a session, the
//! catalog's registration, SQL planning, optimization and a physical plan. The lookup costs
//! one RocksDB get from the statement's snapshot.
//!
//! The path is taken only when the answer cannot differ from the general path's:
//! - the statement has no other clause (checked by printing it back);
//! - every key column is pinned exactly once, and nothing else is filtered;
//! - each literal is plainly of its key column's type (`'42'` or `42` for BIGINT, a string
//!   for STRING, a decimal with no more places than the column's scale), so no coercion
//!   question arises;
//! - the output names are unique, as DataFusion requires.
//!
//! Anything else, including a name that does not resolve, takes the general path, which
//! also gives the errors.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{and, filter_record_batch};
use datafusion::arrow::datatypes::Float64Type;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::pull_table::TableRows;
use super::{Engine, Output};
use crate::catalog::RelationDef;
use crate::error::{EddyError, Result};
use crate::format::SqlType;
use crate::sql::{RelationKind, SelectStatement};

/// A statement of the lookup shape, resolved against its table.
struct Lookup {
    /// (column index, output name), in output order.
    output: Vec<(usize, String)>,
    /// (key column index, its value as the column's type).
    pins: Vec<(usize, ScalarValue)>,
}

impl Engine {
    /// The statement's rows when it is a lookup by the whole key (see the module comment);
    /// `None`: it takes the general path.
    pub(super) async fn point_lookup(&self, select: &SelectStatement) -> Result<Option<Output>> {
        let [name] = select.relations.as_slice() else { return Ok(None) };
        let Some(rel) = self.catalog.relation(name).filter(|r| r.kind == RelationKind::Table) else {
            return Ok(None);
        };
        let Some(lookup) = lookup_of(&select.sql, &rel) else { return Ok(None) };
        let table = TableRows::new(rel.clone(), Arc::new(self.store.snapshot()), self.config.query_memory_bytes);
        let Some(batch) = table.read_pinned(&lookup.pins).await? else { return Ok(None) };
        // The read may return more than the key's row (a DOUBLE key stored as `5` and as
        // `5.0`): keep the rows whose key columns equal the values, as the filter would.
        let mut mask: Option<BooleanArray> = None;
        for (column, value) in &lookup.pins {
            let matches = match (value, batch.column(*column).as_primitive_opt::<Float64Type>()) {
                // SQL's equality, where -0.0 = 0.0 (Arrow's kernel orders them apart).
                (ScalarValue::Float64(Some(v)), Some(cells)) => {
                    cells.iter().map(|cell| Some(cell.is_some_and(|c| c == *v))).collect()
                }
                _ => eq(batch.column(*column), &value.to_scalar()?)?,
            };
            mask = Some(match mask {
                Some(m) => and(&m, &matches)?,
                None => matches,
            });
        }
        let batch = match mask {
            Some(m) => filter_record_batch(&batch, &m)?,
            None => batch,
        };
        let fields: Vec<Field> =
            lookup.output.iter().map(|(c, name)| batch.schema().field(*c).clone().with_name(name)).collect();
        let columns: Vec<ArrayRef> = lookup.output.iter().map(|(c, _)| batch.column(*c).clone()).collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(Some(Output::Rows { schema, batches: vec![batch], tag: "SELECT".into() }))
    }
}

/// `sql` as a lookup of `rel` by its whole key, if it is one.
fn lookup_of(sql: &str, rel: &RelationDef) -> Option<Lookup> {
    let mut statements = Parser::parse_sql(&GenericDialect {}, sql).ok()?;
    let ast::Statement::Query(query) = statements.pop().filter(|_| statements.is_empty())? else { return None };
    let ast::SetExpr::Select(select) = query.body.as_ref() else { return None };
    let [from] = select.from.as_slice() else { return None };
    let ast::TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        ..
    } = &from.relation
    else {
        return None;
    };
    if !from.joins.is_empty() || !with_hints.is_empty() || !partitions.is_empty() {
        return None;
    }
    let selection = select.selection.as_ref()?;
    // Nothing but the SELECT list, FROM and WHERE: the statement prints back as exactly that.
    let items: Vec<String> = select.projection.iter().map(ToString::to_string).collect();
    let canonical = format!("SELECT {} FROM {} WHERE {selection}", items.join(", "), from.relation);
    if canonical != query.to_string() {
        return None;
    }
    let [table_name] = name.0.as_slice() else { return None };
    let qualifiers: Vec<String> = [table_name.as_ident().map(ident_name), alias.as_ref().map(|a| ident_name(&a.name))]
        .into_iter()
        .flatten()
        .collect();
    let column = |e: &ast::Expr| -> Option<usize> {
        let name = match e {
            ast::Expr::Identifier(i) => ident_name(i),
            ast::Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [q, c] if qualifiers.contains(&ident_name(q)) => ident_name(c),
                _ => return None,
            },
            _ => return None,
        };
        rel.columns.iter().position(|c| c.name == name)
    };

    let mut output: Vec<(usize, String)> = Vec::new();
    for item in &select.projection {
        match item {
            ast::SelectItem::Wildcard(options) if options.to_string().is_empty() => {
                output.extend(rel.columns.iter().enumerate().map(|(i, c)| (i, c.name.clone())));
            }
            ast::SelectItem::UnnamedExpr(e) => {
                let c = column(e)?;
                output.push((c, rel.columns[c].name.clone()));
            }
            ast::SelectItem::ExprWithAlias { expr, alias } => output.push((column(expr)?, ident_name(alias))),
            _ => return None,
        }
    }
    let mut names: Vec<&str> = output.iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }

    let mut conjuncts = Vec::new();
    split_and(selection, &mut conjuncts);
    let mut pins: Vec<(usize, ScalarValue)> = Vec::new();
    for c in conjuncts {
        let ast::Expr::BinaryOp { left, op: ast::BinaryOperator::Eq, right } = c else { return None };
        let (c, value) = match (column(left), column(right)) {
            (Some(c), None) => (c, right.as_ref()),
            (None, Some(c)) => (c, left.as_ref()),
            _ => return None,
        };
        if pins.iter().any(|(p, _)| *p == c) {
            return None;
        }
        pins.push((c, typed_literal(&rel.columns[c].ty, value)?));
    }
    let key_columns: Vec<usize> = rel.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
    let mut pinned: Vec<usize> = pins.iter().map(|(c, _)| *c).collect();
    pinned.sort_unstable();
    (pinned == key_columns).then_some(Lookup { output, pins })
}

fn split_and<'a>(e: &'a ast::Expr, out: &mut Vec<&'a ast::Expr>) {
    match e {
        ast::Expr::BinaryOp { left, op: ast::BinaryOperator::And, right } => {
            split_and(left, out);
            split_and(right, out);
        }
        ast::Expr::Nested(inner) => split_and(inner, out),
        other => out.push(other),
    }
}

fn ident_name(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// A literal as a value of `ty` when it plainly is one (no rounding, no coercion between
/// kinds); `None` otherwise.
fn typed_literal(ty: &SqlType, e: &ast::Expr) -> Option<ScalarValue> {
    let (text, quoted) = match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, false) => (n.clone(), false),
            ast::Value::SingleQuotedString(s) => (s.clone(), true),
            _ => return None,
        },
        ast::Expr::UnaryOp { op: ast::UnaryOperator::Minus, expr } => match expr.as_ref() {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::Number(n, false) => (format!("-{n}"), false),
                _ => return None,
            },
            _ => return None,
        },
        _ => return None,
    };
    match ty {
        SqlType::String if quoted => Some(ScalarValue::Utf8(Some(text))),
        SqlType::BigInt => text.parse::<i64>().ok().map(|v| ScalarValue::Int64(Some(v))),
        SqlType::Int => text.parse::<i32>().ok().map(|v| ScalarValue::Int32(Some(v))),
        SqlType::Double => {
            let simple = text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.'));
            // -0.0 keys as 0.0 (`format::row_keys`).
            let v = text.parse::<f64>().ok().filter(|v| v.is_finite() && simple)? + 0.0;
            // Beyond 15 significant digits a float literal and the column may round apart.
            (text.bytes().filter(u8::is_ascii_digit).count() <= 15).then_some(ScalarValue::Float64(Some(v)))
        }
        SqlType::Decimal { precision, scale } => {
            decimal_units(&text, *precision, *scale).map(|v| ScalarValue::Decimal128(Some(v), *precision, *scale as i8))
        }
        _ => None,
    }
}

/// `text` (`-12.5`) in units of `10^-scale`, when it is plain digits with no more places
/// than `scale` (so `parse_decimal` has nothing to round) and fits `precision`.
fn decimal_units(text: &str, precision: u8, scale: u8) -> Option<i128> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !plain(whole) || !plain(fraction) || fraction.len() > usize::from(scale) {
        return None;
    }
    crate::format::types::parse_decimal(text, precision, scale)
}

impl TableRows {
    /// The rows whose key columns hold the pinned values (the key read from this table's
    /// snapshot), as one batch in the table's schema; `None` when the table's keys cannot be
    /// read by value (the caller takes the general path).
    pub(super) async fn read_pinned(&self, pins: &[(usize, ScalarValue)]) -> Result<Option<RecordBatch>> {
        use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
        let filters: Vec<Expr> = pins
            .iter()
            .map(|(c, v)| {
                Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(Expr::Column(datafusion::common::Column::new_unqualified(self.column_name(*c)))),
                    Operator::Eq,
                    Box::new(Expr::Literal(v.clone(), None)),
                ))
            })
            .collect();
        let Some(batch) = self.read_by_key(&filters).await? else { return Ok(None) };
        if batch.num_columns() != self.width() {
            return Err(EddyError::Internal("a table's rows do not have its columns".into()));
        }
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_literals_convert_only_without_rounding() {
        assert_eq!(decimal_units("12.5", 10, 2), Some(1250));
        assert_eq!(decimal_units("-0.07", 10, 2), Some(-7));
        assert_eq!(decimal_units("12", 10, 2), Some(1200));
        assert_eq!(decimal_units(".5", 10, 2), Some(50));
        assert_eq!(decimal_units("12.555", 10, 2), None);
        assert_eq!(decimal_units("123456789", 10, 2), None);
        assert_eq!(decimal_units("1e3", 10, 2), None);
        assert_eq!(decimal_units("", 10, 2), None);
    }
}
