//! Serving: INSERT (path 1 from SQL), pull queries and bounded scans over a snapshot
//! (DataFusion), and push queries that stream from the live log (path 4).

use std::sync::Arc;

use datafusion::catalog::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast;
use serde_json::Value;

use super::pull_table::TableRows;
use super::{Engine, Output, Session};
use crate::catalog::RelationDef;
use crate::dataflow::sink::murmur2;
use crate::error::{EddyError, Result};
use crate::format::{arrow_schema, check_cell, decode_row, rows_to_batch, SqlType};
use crate::log::batch::{encode_batch, LogBatchHeader, LogRecord};
use crate::log::Log;
use crate::plan::{plan_continuous, session_with};
use crate::sql::{RelationKind, SelectStatement};

impl Engine {
    /// INSERT INTO s (cols) VALUES (...): every row is checked before anything is written.
    pub(super) async fn insert(&self, target: &str, columns: &[String], rows: &[Vec<ast::Expr>]) -> Result<Output> {
        let rel = self
            .catalog
            .relation(target)
            .ok_or_else(|| EddyError::UndefinedRelation(format!("stream or table {target}")))?;
        if let Some(q) = &rel.written_by {
            return Err(EddyError::WrongObjectType(format!(
                "cannot INSERT INTO {target}: query {q} writes it (TERMINATE {q} first)"
            )));
        }
        if let Some(w) = rel.key_window {
            return Err(EddyError::WrongObjectType(format!(
                "cannot INSERT INTO {target}: it is a windowed {} (WINDOW_TYPE='{}'); produce its records to topic {}",
                rel.kind.word().to_lowercase(),
                w.type_name(),
                rel.topic
            )));
        }
        // ksqlDB lets INSERT set ROWTIME, the record's timestamp; it is not a column.
        const ROWTIME_TARGET: usize = usize::MAX;
        let targets: Vec<usize> = if columns.is_empty() {
            (0..rel.columns.len()).collect()
        } else {
            columns
                .iter()
                .map(|c| {
                    rel.columns
                        .iter()
                        .position(|rc| rc.name == *c || rc.name.eq_ignore_ascii_case(c))
                        .or_else(|| c.eq_ignore_ascii_case(crate::plan::ROWTIME).then_some(ROWTIME_TARGET))
                        .ok_or_else(|| EddyError::UndefinedColumn(c.clone()))
                })
                .collect::<Result<_>>()?
        };
        let now = self.log.clock.now_ms();
        // First every cell: literals directly; anything else (a string for a TIMESTAMP, a
        // `CAST`, `now()`, arithmetic) as Postgres would, by evaluating it (`evaluate_values`).
        let mut rows_in: Vec<(Vec<Value>, Option<i64>)> = Vec::with_capacity(rows.len());
        let mut pending: Vec<(usize, usize, &ast::Expr)> = Vec::new();
        for (n, exprs) in rows.iter().enumerate() {
            if exprs.len() != targets.len() {
                return Err(EddyError::InvalidValue(format!(
                    "INSERT has {} target columns but row {} has {} values",
                    targets.len(),
                    n + 1,
                    exprs.len()
                )));
            }
            let mut row = vec![Value::Null; rel.columns.len()];
            let mut rowtime = None;
            for (&i, e) in targets.iter().zip(exprs) {
                if i == ROWTIME_TARGET {
                    let v = literal(e)?;
                    rowtime = Some(v.as_i64().ok_or_else(|| {
                        EddyError::TypeMismatch(format!("ROWTIME takes epoch milliseconds (BIGINT), not {v}"))
                    })?);
                    continue;
                }
                let col = &rel.columns[i];
                match typed_literal(&col.ty, e).and_then(|v| check_cell(col, v).map_err(EddyError::TypeMismatch)) {
                    Ok(v) => row[i] = v,
                    Err(_) if is_scalar(&col.ty) => pending.push((n, i, e)),
                    Err(err) => return Err(err),
                }
            }
            rows_in.push((row, rowtime));
        }
        if !pending.is_empty() {
            let cells = evaluate_values(&rel.columns, &pending).await?;
            for ((n, i, _), v) in pending.iter().zip(cells) {
                rows_in[*n].0[*i] = v;
            }
        }
        let mut by_partition: Vec<Vec<LogRecord>> = vec![Vec::new(); rel.partitions.max(1) as usize];
        for (n, (row, rowtime)) in rows_in.into_iter().enumerate() {
            if rel.kind == RelationKind::Table && rel.columns.iter().zip(&row).any(|(c, v)| c.key && v.is_null()) {
                return Err(EddyError::InvalidValue(format!(
                    "INSERT INTO table {target} needs a value for its PRIMARY KEY"
                )));
            }
            let timestamp_ms = match rowtime {
                Some(t) => t,
                None => rel.event_time_ms(&row, now).map_err(EddyError::InvalidValue)?,
            };
            let key = crate::format::try_encode_key(&rel.columns, rel.key_layout(), &row)
                .map_err(|e| EddyError::InvalidValue(format!("INSERT INTO {target}: {e}")))?;
            let partition = match &key {
                Some(k) => (murmur2(k) & 0x7fff_ffff) as usize % by_partition.len(),
                None => n % by_partition.len(),
            };
            let value = crate::format::try_encode_value(&rel.columns, rel.value_encoding(), &row)
                .map_err(|e| EddyError::InvalidValue(format!("INSERT INTO {target}: {e}")))?;
            by_partition[partition].push(LogRecord { offset: 0, timestamp_ms, key, value, headers: Vec::new() });
        }
        let log = self.log.clone();
        let topic = rel.topic.clone();
        let count = rows.len();
        tokio::task::spawn_blocking(move || -> Result<()> {
            for (p, records) in by_partition.into_iter().enumerate() {
                if !records.is_empty() {
                    log.append(&topic, p as i32, &mut encode_batch(&records))?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| EddyError::Internal(format!("insert task: {e}")))??;
        Ok(Output::Command { tag: format!("INSERT 0 {count}") })
    }

    /// A DataFusion session with each referenced stream (bounded scan of what its topic
    /// holds now) and table (its current rows, read as the plan asks: by key, by key range,
    /// or whole) registered. Every table is read from one snapshot of the state store.
    pub(super) async fn pull_context(&self, select: &SelectStatement, load: bool) -> Result<SessionContext> {
        let ctx = session_with(false);
        let mut budget = self.config.query_memory_bytes;
        let mut names = select.relations.clone();
        names.sort();
        names.dedup();
        let snapshot = Arc::new(self.store.snapshot());
        for name in names {
            let Some(rel) = self.catalog.relation(&name) else { continue };
            let table: Arc<dyn datafusion::catalog::TableProvider> = if rel.kind == RelationKind::Table {
                Arc::new(TableRows::new(rel.clone(), snapshot.clone(), self.config.query_memory_bytes))
            } else {
                // ROWTIME, ROWPARTITION and ROWOFFSET, when the query names them (so that
                // `SELECT *` otherwise stays the declared columns, as in ksqlDB).
                let sql = select.sql.to_ascii_lowercase();
                let pseudo: Vec<_> = crate::plan::pseudo_columns(&rel)
                    .into_iter()
                    .filter(|_| ["rowtime", "rowpartition", "rowoffset"].iter().any(|p| sql.contains(p)))
                    .collect();
                let columns: Vec<_> = rel.columns.iter().cloned().chain(pseudo.iter().cloned()).collect();
                let rows = if load {
                    let (log, stream, limit) = (self.log.clone(), rel.clone(), self.config.query_memory_bytes);
                    let with_pseudo = !pseudo.is_empty();
                    let (rows, left) = tokio::task::spawn_blocking(move || {
                        let mut budget = budget;
                        stream_rows(&log, &stream, &mut budget, limit, with_pseudo).map(|rows| (rows, budget))
                    })
                    .await
                    .map_err(|e| EddyError::Internal(format!("stream scan task: {e}")))??;
                    budget = left;
                    rows
                } else {
                    Vec::new()
                };
                let batch = rows_to_batch(&columns, &rows).map_err(EddyError::Internal)?;
                Arc::new(MemTable::try_new(arrow_schema(&columns), vec![vec![batch]])?)
            };
            ctx.register_table(rel.name.as_str(), table)?;
        }
        self.register_pg_catalog(&ctx)?;
        Ok(ctx)
    }

    /// `pg_catalog`, `information_schema` and Postgres's catalog functions, for clients that
    /// introspect (psql, SQLAlchemy, Grafana, Metabase).
    fn register_pg_catalog(&self, ctx: &SessionContext) -> Result<()> {
        let version = self.catalog.version();
        let cached = self.pg_catalog.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let pg = match cached {
            Some((v, pg)) if v == version => pg,
            _ => {
                let state = ctx.state();
                let mut functions: Vec<(String, &'static str)> = Vec::new();
                functions.extend(state.scalar_functions().keys().map(|n| (n.clone(), "f")));
                functions.extend(state.aggregate_functions().keys().map(|n| (n.clone(), "a")));
                functions.extend(state.window_functions().keys().map(|n| (n.clone(), "w")));
                functions.sort();
                functions.dedup_by(|a, b| a.0 == b.0);
                let pg = Arc::new(super::pg_catalog::build_catalog(&self.catalog.relations(), &functions)?);
                *self.pg_catalog.lock().unwrap_or_else(|p| p.into_inner()) = Some((version, pg.clone()));
                pg
            }
        };
        pg.register(ctx)?;
        super::pg_functions::register(ctx, pg.snapshot.clone());
        Ok(())
    }

    pub(super) async fn pull_query(&self, select: &SelectStatement) -> Result<Output> {
        if let Some(rows) = self.point_lookup(select).await? {
            return Ok(rows);
        }
        let ctx = self.pull_context(select, true).await?;
        let df = crate::functions::lambdas::plan_sql(&ctx, &select.sql).await?;
        let schema = crate::sql::pg_names::strip_markers(Arc::new(df.schema().as_arrow().clone()));
        let cap = self.config.max_result_rows;
        let plan = cooperative(df.create_physical_plan().await?)?;
        let mut stream = datafusion::physical_plan::execute_stream(plan, ctx.task_ctx())?;
        let mut batches = Vec::new();
        let mut rows = 0usize;
        while let Some(batch) = futures::StreamExt::next(&mut stream).await {
            let batch = batch?;
            rows += batch.num_rows();
            if cap > 0 && rows > cap {
                return Err(EddyError::LimitExceeded(format!(
                    "the query returns more than {cap} rows (--max-result-rows); add a LIMIT, aggregate, or use a push query"
                )));
            }
            batches.push(batch);
        }
        Ok(Output::Rows { schema, batches, tag: "SELECT".into() })
    }

    pub(super) async fn push_query(&self, session: &Session, select: &SelectStatement) -> Result<Output> {
        let inputs = self.sources(select)?;
        let plan = plan_continuous(select, &inputs).await?;
        let schema = push_schema(&plan);
        // A small queue: a slow client holds the query back instead of growing memory.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let shown = format!("{} EMIT CHANGES", select.sql.trim_end());
        self.runtime.start_push(plan, session.earliest(), tx, &shown, &session.user)?;
        Ok(Output::Push { schema, limit: select.limit, rx })
    }
}

impl Engine {
    /// TERMINATE of a push query: its client's statement ends with the rows sent so far.
    pub(super) fn terminate_push(&self, user: &str, id: &str) -> Result<Output> {
        let queries = self.runtime.push_queries.lock().unwrap_or_else(|p| p.into_inner());
        let (id, query) = queries
            .iter()
            .find(|(q, _)| q.eq_ignore_ascii_case(id))
            .ok_or_else(|| EddyError::UndefinedRelation(format!("query {id}")))?;
        if query.user != user && !self.users.is_superuser(user) {
            return Err(EddyError::PermissionDenied(format!("must be the user who started push query {id}")));
        }
        query.stop();
        Ok(Output::Command { tag: "TERMINATE".into() })
    }
}

impl Engine {
    /// The columns a statement returns, for the extended protocol's Describe (`None`: no rows).
    pub async fn result_schema(
        &self,
        stmt: &crate::sql::Statement,
    ) -> Result<Option<datafusion::arrow::datatypes::SchemaRef>> {
        use crate::sql::Statement;
        Ok(match stmt {
            Statement::Select(select) if select.emit_changes => {
                let inputs = self.sources(select)?;
                Some(push_schema(&plan_continuous(select, &inputs).await?))
            }
            Statement::Select(select) => {
                let ctx = self.pull_context(select, false).await?;
                let schema =
                    Arc::new(crate::functions::lambdas::plan_sql(&ctx, &select.sql).await?.schema().as_arrow().clone());
                Some(crate::sql::pg_names::strip_markers(schema))
            }
            Statement::Print { .. } => Some(super::print::print_schema()),
            Statement::Show { .. }
            | Statement::Describe { .. }
            | Statement::DescribeAll { .. }
            | Statement::ExplainQuery { .. }
            | Statement::DescribeFunction { .. }
            | Statement::Explain(_) => {
                let located = crate::sql::Located { statement: stmt.clone(), text: String::new(), offset_chars: 0 };
                match self.execute(&mut Session::default(), located).await? {
                    Output::Rows { schema, .. } => Some(schema),
                    _ => None,
                }
            }
            _ => None,
        })
    }
}

impl Engine {
    /// The types DataFusion infers for the `$n` placeholders of a pull query, by position
    /// (`WHERE id = $1` over a BIGINT `id`: BIGINT), as Postgres infers them for Describe;
    /// `None` where it cannot tell or the statement is not a pull query.
    pub async fn placeholder_types(
        &self,
        sql: &str,
        count: usize,
    ) -> Vec<Option<datafusion::arrow::datatypes::DataType>> {
        let unknown = vec![None; count];
        let Ok(located) = crate::sql::parse(sql) else { return unknown };
        // INSERT ... VALUES ($1, ...): a parameter takes its target column's type.
        if let [crate::sql::Located { statement: crate::sql::Statement::Insert { target, columns, rows }, .. }] =
            located.as_slice()
        {
            let Some(rel) = self.catalog.relation(target) else { return unknown };
            let mut out = unknown;
            for exprs in rows {
                for (k, e) in exprs.iter().enumerate() {
                    let ast::Expr::Value(v) = e else { continue };
                    let ast::Value::Placeholder(p) = &v.value else { continue };
                    let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else { continue };
                    let column = match columns.get(k) {
                        Some(name) => rel.columns.iter().find(|c| c.name == *name || c.name.eq_ignore_ascii_case(name)),
                        None if columns.is_empty() => rel.columns.get(k),
                        None => None,
                    };
                    if let (Some(slot), Some(c)) = (n.checked_sub(1).and_then(|i| out.get_mut(i)), column) {
                        *slot = Some(c.ty.arrow());
                    }
                }
            }
            return out;
        }
        let [crate::sql::Located { statement: crate::sql::Statement::Select(select), .. }] = located.as_slice() else {
            return unknown;
        };
        if select.emit_changes {
            return unknown;
        }
        let Ok(ctx) = self.pull_context(select, false).await else { return unknown };
        let Ok(plan) = crate::functions::lambdas::logical_plan(&ctx, &select.sql).await else { return unknown };
        let Ok(types) = plan.get_parameter_types() else { return unknown };
        (1..=count).map(|i| types.get(&format!("${i}")).cloned().flatten()).collect()
    }
}

/// Every operator's input passes through a `CooperativeExec`, which spends tokio's task
/// budget per batch: a CPU-bound query (a large join) yields now and then, so the statement
/// timeout and cancel requests (both drop the query's future) take effect.
fn cooperative(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::coop::CooperativeExec;
    let is_coop = |p: &Arc<dyn datafusion::physical_plan::ExecutionPlan>| p.downcast_ref::<CooperativeExec>().is_some();
    let plan = plan.transform_up(|p| {
        if is_coop(&p) || p.children().is_empty() || p.children().iter().all(|c| is_coop(c)) {
            return Ok(Transformed::no(p));
        }
        let children = p
            .children()
            .into_iter()
            .map(|c| if is_coop(c) { c.clone() } else { Arc::new(CooperativeExec::new(c.clone())) as _ })
            .collect();
        Ok(Transformed::yes(datafusion::physical_plan::execution_plan::replace_children_if_necessary(p, children)?))
    })?;
    Ok(plan.data)
}

/// A push query's columns; over a table, a last `op` column says what changed.
fn push_schema(plan: &crate::plan::ContinuousPlan) -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = arrow_schema(&plan.output_columns);
    if !crate::dataflow::push_has_op(plan) {
        return schema;
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(crate::dataflow::changes::OP_COLUMN, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// A literal in VALUES for a column of type `ty`: DECIMAL numbers keep their exact text;
/// ARRAY takes `ARRAY[...]`, STRUCT takes `STRUCT(name := value, ...)`, MAP takes
/// `MAP('key' := value, ...)`, and all three take JSON text (`'{"a": 1}'`).
fn typed_literal(ty: &SqlType, e: &ast::Expr) -> Result<Value> {
    let bad = |what: &str| EddyError::TypeMismatch(format!("{what} does not fit {}", ty.name()));
    match (ty, e) {
        (SqlType::Decimal { .. }, ast::Expr::Value(v)) => match &v.value {
            ast::Value::Number(n, _) => Ok(Value::String(n.clone())),
            _ => literal(e),
        },
        (SqlType::Decimal { .. }, ast::Expr::UnaryOp { op: ast::UnaryOperator::Minus, expr }) => {
            match typed_literal(ty, expr)? {
                Value::String(s) if !s.starts_with('-') => Ok(Value::String(format!("-{s}"))),
                _ => Err(bad(&e.to_string())),
            }
        }
        (SqlType::Array(item), ast::Expr::Array(a)) => {
            a.elem.iter().map(|x| typed_literal(item, x)).collect::<Result<Vec<_>>>().map(Value::Array)
        }
        (SqlType::Struct(_) | SqlType::Map(_), ast::Expr::Struct { .. } | ast::Expr::Function(_)) => {
            let (name, pairs) = crate::sql::named_pairs(e).ok_or_else(|| bad(&format!("{e} (write name := value)")))?;
            let mut obj = serde_json::Map::new();
            for (key, value) in pairs {
                let key = match &key {
                    ast::Expr::Identifier(i) => crate::sql::normalize_ident(i),
                    other => match literal(other)? {
                        Value::String(s) => s,
                        v => v.to_string(),
                    },
                };
                let field_ty = match ty {
                    SqlType::Struct(fields) if name == "STRUCT" => fields
                        .iter()
                        .find(|f| f.name == key || f.name.eq_ignore_ascii_case(&key))
                        .map(|f| &f.ty)
                        .ok_or_else(|| bad(&format!("field {key}")))?,
                    SqlType::Map(value_ty) if name == "MAP" => value_ty.as_ref(),
                    _ => return Err(bad(&e.to_string())),
                };
                obj.insert(key, typed_literal(field_ty, value)?);
            }
            Ok(Value::Object(obj))
        }
        (SqlType::Array(_) | SqlType::Map(_) | SqlType::Struct(_), _) => match literal(e)? {
            Value::String(s) => serde_json::from_str(&s).map_err(|_| bad(&format!("'{s}'"))),
            other => Ok(other),
        },
        _ => literal(e),
    }
}

/// Column types whose values `evaluate_values` can compute: nested ones take literals, and
/// BYTES takes base64 text only (evaluated, any text would pass as its own bytes).
fn is_scalar(ty: &SqlType) -> bool {
    !matches!(ty, SqlType::Array(_) | SqlType::Map(_) | SqlType::Struct(_) | SqlType::Bytes)
}

/// The cells of VALUES that are no plain literal of their column's type, computed as
/// Postgres computes them: each expression evaluated (DataFusion, one `SELECT` for the
/// whole statement) and its result cast to the column's type, so `'2026-01-01 00:00:00'`,
/// `'2026-01-01T00:00:00+02:00'` (stored in UTC), `TIMESTAMP '...'`, `now()`, `'t'` for a
/// BOOLEAN, `'12.5'` for a DECIMAL and `1 + 2` all work. A string that does not read as the
/// type is refused as Postgres refuses it (22P02, "invalid input syntax for type ...").
async fn evaluate_values(
    columns: &[crate::format::Column],
    cells: &[(usize, usize, &ast::Expr)],
) -> Result<Vec<Value>> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::{cast_with_options, CastOptions};
    let list: Vec<String> = cells.iter().enumerate().map(|(k, (_, _, e))| format!("({e}) AS c{k}")).collect();
    let ctx = session_with(false);
    let batches = ctx.sql(&format!("SELECT {}", list.join(", "))).await?.collect().await?;
    let batch =
        batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| EddyError::Internal("VALUES gave no row".into()))?;
    let options = CastOptions { safe: false, ..Default::default() };
    cells
        .iter()
        .enumerate()
        .map(|(k, (_, i, e))| {
            let col = &columns[*i];
            let target = col.ty.arrow();
            let array = &match (batch.column(k).as_string_opt::<i32>(), &target) {
                (Some(text), datafusion::arrow::datatypes::DataType::Timestamp(..)) => {
                    let texts: datafusion::arrow::array::StringArray =
                        text.iter().map(|t| t.map(with_zone_minutes)).collect();
                    Arc::new(texts) as datafusion::arrow::array::ArrayRef
                }
                // A DATE reads the date of a timestamp's text (`'2026-05-06 07:08:09+02'`, as
                // pgjdbc sends dates), as Postgres does.
                (Some(text), datafusion::arrow::datatypes::DataType::Date32) => {
                    let texts: datafusion::arrow::array::StringArray =
                        text.iter().map(|t| t.map(|t| t.trim().split([' ', 'T']).next().unwrap_or(t))).collect();
                    Arc::new(texts) as datafusion::arrow::array::ArrayRef
                }
                _ => batch.column(k).clone(),
            };
            let cast = cast_with_options(array, &target, &options).map_err(|err| {
                let shown = match crate::format::cell_at(array.as_ref(), 0) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let reason = err.to_string().to_ascii_lowercase();
                let is_text = matches!(
                    array.data_type(),
                    datafusion::arrow::datatypes::DataType::Utf8 | datafusion::arrow::datatypes::DataType::Utf8View
                );
                if ["overflow", "too large", "precision", "out of range"].iter().any(|w| reason.contains(w)) {
                    // Postgres's wording per type.
                    let what = match col.ty {
                        SqlType::Decimal { .. } => "numeric field overflow",
                        SqlType::Int => "integer out of range",
                        SqlType::BigInt => "bigint out of range",
                        _ => "value out of range",
                    };
                    EddyError::OutOfRange(format!(
                        "{what}: {shown} does not fit column {} ({})",
                        col.name,
                        col.ty.name()
                    ))
                } else if is_text {
                    EddyError::InvalidTextRepresentation(format!(
                        "invalid input syntax for type {}: \"{shown}\"",
                        col.ty.name().to_lowercase()
                    ))
                } else {
                    EddyError::TypeMismatch(format!(
                        "column {} is of type {} but expression {e} is of type {}",
                        col.name,
                        col.ty.name(),
                        array.data_type()
                    ))
                }
            })?;
            check_cell(col, crate::format::cell_at(cast.as_ref(), 0)).map_err(EddyError::TypeMismatch)
        })
        .collect()
}

/// A timestamp's text with an hours-only zone (`+02`, as Postgres and pgjdbc write it)
/// given its minutes (`+02:00`), which is how Arrow reads zones.
fn with_zone_minutes(text: &str) -> String {
    let b = text.trim_end().as_bytes();
    let hours_only = b.len() > 11
        && matches!(b[b.len() - 3], b'+' | b'-')
        && b[b.len() - 2..].iter().all(u8::is_ascii_digit)
        && b[b.len() - 4].is_ascii_digit();
    if hours_only {
        format!("{}:00", text.trim_end())
    } else {
        text.to_string()
    }
}

/// A literal in VALUES as JSON: numbers, strings, booleans, NULL, and negated numbers.
fn literal(e: &ast::Expr) -> Result<Value> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| n.parse::<f64>().map(Value::from))
                .map_err(|_| EddyError::InvalidValue(format!("invalid number {n}"))),
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => Ok(Value::String(s.clone())),
            ast::Value::Boolean(b) => Ok(Value::Bool(*b)),
            ast::Value::Null => Ok(Value::Null),
            other => Err(EddyError::NotImplemented(format!("value {other} in INSERT"))),
        },
        ast::Expr::UnaryOp { op: ast::UnaryOperator::Minus, expr } => match literal(expr)? {
            Value::Number(n) => {
                Ok(n.as_i64().map(|i| Value::from(-i)).unwrap_or_else(|| Value::from(-n.as_f64().unwrap_or(0.0))))
            }
            _ => Err(EddyError::TypeMismatch(format!("cannot negate {expr}"))),
        },
        ast::Expr::Nested(inner) => literal(inner),
        other => Err(EddyError::NotImplemented(format!("expression {other} in INSERT VALUES (literals only)"))),
    }
}

/// Most processing-log entries one pull query over a stream writes for records it cannot
/// decode (then one entry counts the rest): the records are skipped, never silently, and a
/// query run over and over does not flood the log.
const MAX_PULL_QUERY_LOG_ENTRIES: usize = 100;

/// Every decodable record the topic holds now; the others are skipped and reported to the
/// processing log (see `MAX_PULL_QUERY_LOG_ENTRIES`). `pseudo`: each row followed by its
/// ROWTIME (the event time), ROWPARTITION and ROWOFFSET.
fn stream_rows(
    log: &Arc<Log>,
    rel: &RelationDef,
    budget: &mut usize,
    limit: usize,
    pseudo: bool,
) -> Result<Vec<Vec<Value>>> {
    let Some(topic) = log.topic(&rel.topic) else { return Ok(Vec::new()) };
    // Entries are written together, in one append, when the scan ends.
    let processing_log = crate::dataflow::sink::ProcessingLog::direct(log.clone()).buffered();
    let mut skipped = 0usize;
    let mut report = |partition: usize, offset: i64, error: &str, record: Option<&[u8]>| {
        skipped += 1;
        if skipped <= MAX_PULL_QUERY_LOG_ENTRIES {
            processing_log.record(PULL_QUERY_ID, &rel.topic, partition as i32, offset, error, record);
        }
    };
    let mut rows = Vec::new();
    for (partition, p) in topic.partitions.iter().enumerate() {
        let end = p.high_watermark();
        let mut offset = p.log_start_offset();
        while offset < end {
            let read = p.read(offset, 1 << 20)?;
            if read.bytes.is_empty() {
                break;
            }
            if read.bytes.len() > *budget {
                return Err(EddyError::LimitExceeded(format!(
                    "scanning {} needs more than the {} bytes a query may use (--query-memory-bytes)",
                    rel.name, limit
                )));
            }
            *budget -= read.bytes.len();
            let mut pos = 0;
            while pos < read.bytes.len() {
                let header = LogBatchHeader::parse(&read.bytes[pos..])?;
                let batch = &read.bytes[pos..pos + header.total_bytes];
                pos += header.total_bytes;
                offset = offset.max(header.last_offset() + 1);
                let records = match crate::format::decode_batch(batch) {
                    Ok(records) => records,
                    Err(e) => {
                        report(
                            partition,
                            header.base_offset,
                            &format!("a batch of records does not decode: {e}"),
                            None,
                        );
                        Vec::new()
                    }
                };
                // A compressed batch holds more than it takes on disk: charge the rest.
                let inflated: usize = records
                    .iter()
                    .map(|r| r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len))
                    .sum();
                let extra = inflated.saturating_sub(batch.len());
                if extra > *budget {
                    return Err(EddyError::LimitExceeded(format!(
                        "scanning {} needs more than the {} bytes a query may use (--query-memory-bytes)",
                        rel.name, limit
                    )));
                }
                *budget -= extra;
                for r in records {
                    let decoded = decode_row(
                        &rel.columns,
                        rel.key_layout(),
                        rel.value_encoding(),
                        r.key.as_deref(),
                        r.value.as_deref(),
                    );
                    match decoded {
                        Err(bad) => report(partition, r.offset, &bad.error, r.value.as_deref()),
                        Ok(mut row) => {
                            rel.fill_headers(&mut row, &r.headers);
                            if pseudo {
                                let rowtime = rel.event_time_ms(&row, r.timestamp_ms).unwrap_or(r.timestamp_ms);
                                row.extend([Value::from(rowtime), Value::from(partition), Value::from(r.offset)]);
                            }
                            rows.push(row);
                        }
                    }
                }
            }
        }
    }
    if skipped > MAX_PULL_QUERY_LOG_ENTRIES {
        let more = skipped - MAX_PULL_QUERY_LOG_ENTRIES;
        let error = format!("and {more} more records of {} that do not decode (not logged one by one)", rel.name);
        processing_log.record(PULL_QUERY_ID, &rel.topic, -1, -1, &error, None);
    }
    processing_log.append(processing_log.take_buffered());
    Ok(rows)
}

/// The query id processing-log entries of pull queries carry.
const PULL_QUERY_ID: &str = "pull_query";
