//! A table's current rows as a pull query sees them: read from the RocksDB state of the query
//! that materializes the table, as of one snapshot shared by every table of the statement (so
//! a join of two tables sees one moment of both).
//!
//! Filters that pin the whole key (`k = v`, `k IN (...)`, ORs of those) become point reads;
//! a range on the key's first column (`<`, `<=`, `>`, `>=`, `BETWEEN`, `LIKE 'prefix%'`)
//! becomes a range scan; anything else scans the table, bounded by `--query-memory-bytes`.
//! Filters are pushed down as *inexact*: DataFusion still applies each one to the rows read,
//! so a lookup may read too much but never too little. Reads run on tokio's blocking pool,
//! never on the threads that serve connections.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{new_null_array, Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Like, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use serde_json::Value;

use crate::catalog::RelationDef;
use crate::dataflow::state_cf;
use crate::error::{EddyError, Result};
use crate::format::row_keys::RowKeys;
use crate::format::{arrow_schema, cell_at, memcomparable, rows_to_batch, SqlType};
use crate::state::{prefix_end, StoreSnapshot, ROW_PREFIX};

/// More point reads than this in one statement scan instead (`k IN (...)` with a huge list,
/// or the product of several key columns' lists).
const MAX_LOOKUP_KEYS: usize = 10_000;

pub struct TableRows {
    rel: RelationDef,
    /// How the table's state keys are made (`RelationDef::state_key`).
    state_key: Option<crate::catalog::StateKey>,
    /// The key's encoding when keys are typed (`StateKey::row_format`).
    row_keys: Option<RowKeys>,
    schema: SchemaRef,
    /// The materializing query's column family (`None`: the table has no rows yet).
    cf: Option<String>,
    snapshot: Arc<StoreSnapshot>,
    /// Bytes a scan of this table may read (`--query-memory-bytes` left for the statement).
    max_bytes: usize,
}

impl fmt::Debug for TableRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableRows({})", self.rel.name)
    }
}

/// State-key bounds on a key's first column: inclusive lower, exclusive upper (`None`: open).
type KeyRange = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Which rows of a table a statement's filters let it read.
#[derive(Debug, PartialEq)]
enum Access {
    /// These state keys (without the row prefix), and nothing else.
    Keys(Vec<Vec<u8>>),
    /// State keys in `[from, to)` (`to` empty: to the end).
    Range {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Scan,
}

impl TableRows {
    pub fn new(rel: RelationDef, snapshot: Arc<StoreSnapshot>, max_bytes: usize) -> TableRows {
        let schema = arrow_schema(&rel.columns);
        let state_key = rel.state_key();
        let row_keys = state_key.as_ref().filter(|k| k.row_format).and_then(|k| {
            let types: Vec<DataType> = k.columns.iter().map(|&c| schema.field(c).data_type().clone()).collect();
            RowKeys::new(&types).ok()
        });
        TableRows {
            schema,
            state_key,
            row_keys,
            cf: rel.materialized_by.as_deref().map(state_cf),
            rel,
            snapshot,
            max_bytes,
        }
    }

    /// The key columns (indexes into the table's columns), in state-key order, when every
    /// one has a type whose literals are known to encode as the stored keys do (tested in
    /// `tests/pull_by_key.rs`); tables keyed otherwise (TIMESTAMP, DATE, BYTES, nested) scan.
    fn key_columns(&self) -> Option<&[usize]> {
        let keys = self.state_key.as_ref().map(|k| k.columns.as_slice()).filter(|k| !k.is_empty())?;
        let known = |&i: &usize| {
            self.rel.columns.get(i).is_some_and(|c| {
                matches!(
                    c.ty,
                    SqlType::String | SqlType::Int | SqlType::BigInt | SqlType::Double | SqlType::Decimal { .. }
                )
            })
        };
        keys.iter().all(known).then_some(keys)
    }

    /// The values `filter` pins column `column` to, when it does (`col = v`, `col IN (...)`,
    /// ORs of those), each as the bytes that column adds to a state key.
    fn pinned_values(&self, column: usize, filter: &Expr) -> Option<Vec<Vec<u8>>> {
        match filter {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => {
                let literal = match (self.column_of(left), self.column_of(right)) {
                    (Some(c), None) if c == column => right,
                    (None, Some(c)) if c == column => left,
                    _ => return None,
                };
                Some(self.encodings(column, literal_of(literal)?))
            }
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
                let mut values = self.pinned_values(column, left)?;
                values.extend(self.pinned_values(column, right)?);
                Some(values)
            }
            Expr::InList(list) if !list.negated && self.column_of(&list.expr) == Some(column) => {
                let mut values = Vec::new();
                for item in &list.list {
                    values.extend(self.encodings(column, literal_of(item)?));
                }
                Some(values)
            }
            _ => None,
        }
    }

    /// The table column an expression reads, if it is a bare column (or a cast of an integer
    /// or string column: `k = '42'` compares `CAST(k AS VARCHAR)`, and an integer's or a
    /// string's text names exactly one value).
    fn column_of(&self, e: &Expr) -> Option<usize> {
        let (e, cast) = match e {
            Expr::Cast(c) => (c.expr.as_ref(), true),
            Expr::TryCast(c) => (c.expr.as_ref(), true),
            other => (other, false),
        };
        let Expr::Column(c) = e else { return None };
        let i = self.rel.columns.iter().position(|col| col.name == c.name)?;
        let exact_text = matches!(self.rel.columns[i].ty, SqlType::Int | SqlType::BigInt | SqlType::String);
        (!cast || exact_text).then_some(i)
    }

    /// A literal cast to column `column`'s type, or `None` when it does not convert or is NULL
    /// (it names no row).
    fn literal_array(&self, column: usize, literal: &ScalarValue) -> Option<ArrayRef> {
        let ty = self.schema.field(column).data_type();
        let array = literal.to_array_of_size(1).ok()?;
        let array = datafusion::arrow::compute::cast(&array, ty).ok()?;
        array.is_valid(0).then_some(array)
    }

    /// A literal as the bytes key column `column` adds to the state keys of the rows that
    /// hold it. Typed keys encode it by the column's type. Keys over JSON values
    /// (`memcomparable`) encode the cell the query wrote; an integral DOUBLE may have been
    /// stored from JSON as an integer or as a float, so both are tried.
    fn encodings(&self, column: usize, literal: &ScalarValue) -> Vec<Vec<u8>> {
        let Some(array) = self.literal_array(column, literal) else { return Vec::new() };
        if let Some(keys) = &self.row_keys {
            let field = self.key_columns().and_then(|k| k.iter().position(|&c| c == column));
            return field
                .and_then(|f| keys.encode_field(f, &array).ok())
                .map(|r| r.row(0).data().to_vec())
                .into_iter()
                .collect();
        }
        let cell = cell_at(array.as_ref(), 0);
        let mut out = vec![memcomparable(std::slice::from_ref(&cell))];
        if let (Value::Number(n), DataType::Float64 | DataType::Float32) = (&cell, array.data_type()) {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                out.push(memcomparable(&[Value::from(f as i64)]));
            }
        }
        out
    }

    /// (inclusive lower, exclusive upper) state-key bounds around every key whose first
    /// column holds literal `e`.
    fn bounds(&self, first: usize, e: &Expr) -> Option<(Vec<u8>, Vec<u8>)> {
        let literal = literal_of(e)?;
        if self.row_keys.is_some() {
            // Typed keys: a key column's encoding is a prefix of every key it starts.
            let enc = self.encodings(first, literal).into_iter().next()?;
            let upper = successor(&enc)?;
            return Some((enc, upper));
        }
        // JSON-valued keys hold DECIMALs as text, which does not sort by value.
        if matches!(self.rel.columns[first].ty, SqlType::Decimal { .. }) {
            return None;
        }
        let v = cell_at(self.literal_array(first, literal)?.as_ref(), 0);
        Some((lower_bound(&v), upper_bound(&v)))
    }

    /// The range `filter` puts on the key's first column, as (inclusive lower, exclusive
    /// upper) state-key bounds; a bound is `None` when the filter leaves that side open.
    fn range_of(&self, filter: &Expr) -> Option<KeyRange> {
        let first = *self.key_columns()?.first()?;
        match filter {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, literal) = match (self.column_of(left), self.column_of(right)) {
                    (Some(c), None) if c == first => (*op, right),
                    (None, Some(c)) if c == first => (op.swap()?, left),
                    _ => return None,
                };
                // Casts compare text: the order of `CAST(k AS VARCHAR)` is not k's.
                if matches!(left.as_ref(), Expr::Cast(_) | Expr::TryCast(_))
                    || matches!(right.as_ref(), Expr::Cast(_) | Expr::TryCast(_))
                {
                    return None;
                }
                let (lower, upper) = self.bounds(first, literal)?;
                match op {
                    Operator::Gt | Operator::GtEq => Some((Some(lower), None)),
                    Operator::Lt | Operator::LtEq => Some((None, Some(upper))),
                    _ => None,
                }
            }
            Expr::Between(Between { expr, negated: false, low, high }) if matches!(expr.as_ref(), Expr::Column(_)) => {
                (self.column_of(expr)? == first).then_some(())?;
                Some((Some(self.bounds(first, low)?.0), Some(self.bounds(first, high)?.1)))
            }
            Expr::Like(Like { negated: false, expr, pattern, escape_char: None, case_insensitive: false })
                if matches!(expr.as_ref(), Expr::Column(_))
                    && self.column_of(expr) == Some(first)
                    && self.row_keys.is_none() =>
            {
                let Some(ScalarValue::Utf8(Some(p))) = literal_of(pattern) else { return None };
                let prefix = p.strip_suffix('%')?;
                if prefix.contains(['%', '_', '\\', '\0']) {
                    return None;
                }
                // The string's tag and bytes, without its terminator: every longer string.
                let mut from = memcomparable(&[Value::String(prefix.to_string())]);
                from.truncate(from.len() - 2);
                let to = successor(&from)?;
                Some((Some(from), Some(to)))
            }
            _ => None,
        }
    }

    /// What the filters let this scan read.
    fn access(&self, filters: &[Expr]) -> Access {
        let Some(key_columns) = self.key_columns() else { return Access::Scan };
        // Point reads when every key column is pinned (to few enough values).
        let mut keys: Option<Vec<Vec<u8>>> = Some(vec![Vec::new()]);
        for &column in key_columns {
            let (Some(values), Some(prefixes)) =
                (filters.iter().find_map(|f| self.pinned_values(column, f)), keys.take())
            else {
                break;
            };
            let product: Vec<Vec<u8>> = prefixes
                .iter()
                .flat_map(|prefix| values.iter().map(move |v| [prefix.as_slice(), v.as_slice()].concat()))
                .collect();
            keys = (product.len() <= MAX_LOOKUP_KEYS).then_some(product);
        }
        if let Some(keys) = keys {
            let mut encoded = keys;
            encoded.sort();
            encoded.dedup();
            return Access::Keys(encoded);
        }
        // Otherwise the tightest range on the first key column.
        let (mut from, mut to): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
        for (lower, upper) in filters.iter().filter_map(|f| self.range_of(f)) {
            if let Some(l) = lower {
                from = Some(from.map_or(l.clone(), |f: Vec<u8>| f.max(l)));
            }
            if let Some(u) = upper {
                to = Some(to.map_or(u.clone(), |t: Vec<u8>| t.min(u)));
            }
        }
        match (from, to) {
            (None, None) => Access::Scan,
            (from, to) => Access::Range { from: from.unwrap_or_default(), to: to.unwrap_or_default() },
        }
    }
}

/// The literal an expression is (after DataFusion's simplifier folded constants).
fn literal_of(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

/// The smallest state key whose first value is `v` or more. Numbers key on their f64 (see
/// `memcomparable`); one step down keeps integers past 2^53 inside the range.
fn lower_bound(v: &Value) -> Vec<u8> {
    match v {
        Value::Number(n) => number_prefix(n.as_f64().unwrap_or(f64::NAN).next_down()),
        other => memcomparable(std::slice::from_ref(other)),
    }
}

/// The smallest state key past every key whose first value is `v` or less.
fn upper_bound(v: &Value) -> Vec<u8> {
    match v {
        Value::Number(n) => number_prefix(n.as_f64().unwrap_or(f64::NAN).next_up())
            .into_iter()
            .chain(std::iter::repeat_n(0xFF, 9))
            .collect(),
        other => {
            let enc = memcomparable(std::slice::from_ref(other));
            successor(&enc).unwrap_or_default()
        }
    }
}

/// `memcomparable`'s tag and f64 bytes of a number, without the exact-integer suffix.
fn number_prefix(f: f64) -> Vec<u8> {
    let mut enc = memcomparable(&[serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)]);
    enc.truncate(9);
    enc
}

/// The smallest byte string greater than every string starting with `prefix`.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    Some(prefix_end(prefix)).filter(|end| !end.is_empty())
}

/// A stored table row (`format::stored`) with the table's width; anything else (an EMIT FINAL
/// group still open, a HAVING that drops the group) is no row.
fn stored_row(bytes: &[u8], width: usize) -> Result<Option<Vec<Value>>> {
    Ok(crate::dataflow::stored_row(bytes)?.filter(|r| r.len() == width))
}

fn prefixed(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(ROW_PREFIX);
    k.extend_from_slice(key);
    k
}

/// Reads the rows `access` names from the snapshot (blocking: RocksDB reads); a scan stops
/// once `cancel` is set.
fn read_rows(
    snapshot: &StoreSnapshot,
    cf: &str,
    access: Access,
    width: usize,
    max_bytes: usize,
    cancel: &AtomicBool,
) -> Result<Vec<Vec<Value>>> {
    let values: Vec<Vec<u8>> = match access {
        Access::Keys(keys) => {
            let keys: Vec<Vec<u8>> = keys.iter().map(|k| prefixed(k)).collect();
            snapshot.multi_get(cf, &keys)?.into_iter().flatten().collect()
        }
        Access::Range { from, to } => {
            let to = if to.is_empty() { vec![ROW_PREFIX + 1] } else { prefixed(&to) };
            snapshot.scan_range(cf, &prefixed(&from), &to, max_bytes, cancel)?.into_iter().map(|(_, v)| v).collect()
        }
        Access::Scan => snapshot
            .scan_range(cf, &[ROW_PREFIX], &[ROW_PREFIX + 1], max_bytes, cancel)?
            .into_iter()
            .map(|(_, v)| v)
            .collect(),
    };
    let mut rows = Vec::with_capacity(values.len());
    for v in values {
        rows.extend(stored_row(&v, width)?);
    }
    Ok(rows)
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[async_trait]
impl TableProvider for TableRows {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        let Some(key_columns) = self.key_columns() else {
            return Ok(vec![TableProviderFilterPushDown::Unsupported; filters.len()]);
        };
        Ok(filters
            .iter()
            .map(|f| {
                let useful =
                    key_columns.iter().any(|&c| self.pinned_values(c, f).is_some()) || self.range_of(f).is_some();
                if useful {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let batch = self.read(self.access(filters)).await?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema.clone(), projection.cloned())?)
    }
}

impl TableRows {
    /// The rows `access` names, as one batch in the table's schema.
    async fn read(&self, access: Access) -> Result<RecordBatch> {
        let rows = match &self.cf {
            None => Vec::new(),
            Some(cf) => {
                let (snapshot, cf, width, max_bytes) =
                    (self.snapshot.clone(), cf.clone(), self.rel.columns.len(), self.max_bytes);
                // A statement timeout or cancel request drops this future: the guard then
                // stops the read on the blocking pool too.
                let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
                let flag = cancel.0.clone();
                tokio::task::spawn_blocking(move || read_rows(&snapshot, &cf, access, width, max_bytes, &flag))
                    .await
                    .map_err(|e| EddyError::Internal(format!("table read task: {e}")))??
            }
        };
        if rows.is_empty() {
            let columns = self.schema.fields().iter().map(|f| new_null_array(f.data_type(), 0)).collect();
            return Ok(RecordBatch::try_new(self.schema.clone(), columns)?);
        }
        rows_to_batch(&self.rel.columns, &rows).map_err(EddyError::Internal)
    }

    /// The rows `filters` pin by their whole key (point reads), or `None` when they do not.
    pub(super) async fn read_by_key(&self, filters: &[Expr]) -> Result<Option<RecordBatch>> {
        match self.access(filters) {
            access @ Access::Keys(_) => Ok(Some(self.read(access).await?)),
            _ => Ok(None),
        }
    }

    pub(super) fn column_name(&self, column: usize) -> &str {
        &self.rel.columns[column].name
    }

    pub(super) fn width(&self) -> usize {
        self.rel.columns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_enclose_every_key_of_the_range() {
        let key = |v: Value| memcomparable(&[v]);
        // Integers: [5, 9] holds 5, 7 and 9 (with their exact-integer suffix), not 4 or 10.
        let (lo, hi) = (lower_bound(&Value::from(5)), upper_bound(&Value::from(9)));
        for i in [5, 7, 9] {
            assert!(lo <= key(Value::from(i)) && key(Value::from(i)) < hi, "{i}");
        }
        assert!(key(Value::from(4)) < lo && key(Value::from(10)) >= hi);
        // Strings: ['b', 'c'] holds "b", "bz" and "c", not "a" or "ca".
        let (lo, hi) = (lower_bound(&Value::from("b")), upper_bound(&Value::from("c")));
        for s in ["b", "bz", "c"] {
            assert!(lo <= key(Value::from(s)) && key(Value::from(s)) < hi, "{s}");
        }
        assert!(key(Value::from("a")) < lo && key(Value::from("ca")) >= hi);
        assert_eq!(successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(successor(&[0xFF]), None);
    }
}
