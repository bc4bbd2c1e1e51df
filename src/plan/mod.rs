//! Planning: DataFusion turns a SELECT into a logical plan; this module reads that plan into
//! a continuous dataflow (`ContinuousPlan`): filter → project (with table functions), or
//! filter → aggregate → having → project, with every expression compiled once to a
//! DataFusion physical expression over Arrow batches. Inputs: one stream or table, or a join
//! (`joins.rs`: stream–table, stream–stream, table–table, and their result's key); windows
//! are assigned before the aggregation. Plans it cannot run continuously (ORDER BY, joins of
//! several streams) are refused with a clear "not supported yet" rather than run wrongly.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemTable, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider,
};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::TableReference;
use datafusion::execution::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan, Operator};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::catalog::RelationDef;
use crate::error::{EddyError, Result};
use crate::format::{arrow_schema, Column, SqlType};
use crate::functions::table::TableFunction;
use crate::sql::{JoinWindow, RelationKind, SelectStatement, WindowKind, WindowSpec};

mod joins;
use joins::{interval_join_plan, join_plan, key_items, lookup_chain, result_key_slots, table_join_plan};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    Count,
    CountDistinct,
    /// LATEST_BY_OFFSET: the last non-null value in processing order.
    Latest,
    /// EARLIEST_BY_OFFSET: the first non-null value.
    Earliest,
    /// COLLECT_LIST: every non-null value, in processing order.
    CollectList,
    /// COLLECT_SET: each distinct non-null value once, in the order first seen.
    CollectSet,
    /// TOPK(col, k): the k largest values, largest first.
    TopK(usize),
    /// HISTOGRAM: each value's count.
    Histogram,
    Sum,
    Avg,
    Min,
    Max,
    /// EARLIEST/LATEST_BY_OFFSET(col, N) or (col, [N,] ignoreNulls): the first/last N values
    /// as an ARRAY (one value without N), NULLs kept when `ignore_nulls` is false.
    ByOffset {
        latest: bool,
        n: Option<usize>,
        ignore_nulls: bool,
    },
    /// TOPKDISTINCT(col, k): the k largest distinct values, largest first.
    TopKDistinct(usize),
    /// STDDEV_SAMP / STDDEV_SAMPLE (`sample`: divided by n - 1) and STDDEV_POP, as DOUBLE.
    Stddev {
        sample: bool,
    },
    /// CORRELATION(x, y): Pearson's coefficient, as DOUBLE.
    Correlation,
}

impl AggFunc {
    fn parse(name: &str) -> Option<AggFunc> {
        Some(match name {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "avg" | "mean" => AggFunc::Avg,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "last_value" | "latest_by_offset" => AggFunc::Latest,
            "first_value" | "earliest_by_offset" => AggFunc::Earliest,
            "array_agg" | "collect_list" => AggFunc::CollectList,
            "collect_set" => AggFunc::CollectSet,
            "histogram" => AggFunc::Histogram,
            "stddev" | "stddev_samp" | "stddev_sample" => AggFunc::Stddev { sample: true },
            "stddev_pop" => AggFunc::Stddev { sample: false },
            "corr" | "correlation" => AggFunc::Correlation,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::CountDistinct => "count",
            AggFunc::Latest => "latest_by_offset",
            AggFunc::Earliest => "earliest_by_offset",
            AggFunc::CollectList => "collect_list",
            AggFunc::CollectSet => "collect_set",
            AggFunc::TopK(_) => "topk",
            AggFunc::Histogram => "histogram",
            AggFunc::Sum => "sum",
            AggFunc::Avg => "avg",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::ByOffset { latest: true, .. } => "latest_by_offset",
            AggFunc::ByOffset { latest: false, .. } => "earliest_by_offset",
            AggFunc::TopKDistinct(_) => "topkdistinct",
            AggFunc::Stddev { sample: true } => "stddev_samp",
            AggFunc::Stddev { sample: false } => "stddev_pop",
            AggFunc::Correlation => "correlation",
        }
    }
}

pub struct AggSpec {
    pub func: AggFunc,
    pub arg: Arc<dyn PhysicalExpr>,
    /// The argument's type over the aggregation's input.
    pub arg_type: DataType,
}

pub struct AggregatePlan {
    pub group: Vec<Arc<dyn PhysicalExpr>>,
    pub aggs: Vec<AggSpec>,
    /// Group columns then aggregate columns, as DataFusion typed them.
    pub agg_schema: SchemaRef,
    pub having: Option<Arc<dyn PhysicalExpr>>,
    pub project: Vec<Arc<dyn PhysicalExpr>>,
}

pub enum PlanShape {
    /// Stateless: each input row gives at most one output row.
    /// With table functions (`EXPLODE`), a row gives as many rows as they do: `table_functions`
    /// names the columns of `exprs` that hold their arguments.
    Project { exprs: Vec<Arc<dyn PhysicalExpr>>, table_functions: Vec<(usize, TableFunction)> },
    /// Grouped aggregation with state per group in RocksDB.
    Aggregate(AggregatePlan),
    /// A table over a topic: latest row per key (a null value deletes).
    Upsert,
}

/// A stream–table join: each stream row looks up the table's current row by primary key.
pub struct JoinPlan {
    pub table: RelationDef,
    /// INNER drops stream rows without a match; LEFT keeps them with NULL table columns.
    pub left_outer: bool,
    /// The stream side's key expressions, in the order of the table's key columns.
    pub stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Whether the stream's columns come first in the joined rows (it was on the left).
    pub stream_first: bool,
    /// The joined rows' schema at this step.
    pub schema: SchemaRef,
}

/// A stream–stream join within a time window: both sides are buffered (in RocksDB) for as
/// long as a match may still come.
pub struct IntervalJoinPlan {
    pub right: RelationDef,
    pub kind: JoinKind,
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub window: JoinWindow,
    /// ROWTIME's position in each side's decoded rows.
    pub left_rowtime: usize,
    pub right_rowtime: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    /// Unmatched left rows are emitted with NULLs once their window closes.
    Left,
    /// Unmatched rows of either side are emitted with NULLs once their window closes.
    Full,
}

/// A table–table join on the right table's PRIMARY KEY, from the left table's primary key
/// or any of its columns (a foreign key).
pub struct TableJoinPlan {
    pub right: RelationDef,
    pub kind: JoinKind,
    /// Left columns whose values look up the right table, in its key columns' order.
    pub left_key_columns: Vec<usize>,
}

/// Window assignment over the input rows (before the aggregation).
pub struct WindowPlan {
    pub spec: WindowSpec,
    /// Columns of the input batch: the event time, and the window bounds to fill in.
    pub rowtime: usize,
    /// Over a stream–stream join: the right side's event time. A joined row's time is the
    /// later of its two sides' (as in ksqlDB).
    pub other_rowtime: Option<usize>,
    pub window_start: usize,
    pub window_end: usize,
}

pub struct ContinuousPlan {
    /// The input that drives the query (the stream of a stream–table join).
    pub source: RelationDef,
    /// The rows the operators see: the source's columns and pseudo-columns (+ window bounds),
    /// then a joined table's columns.
    pub input_schema: SchemaRef,
    /// Stream–table lookups, innermost first (a stream may be enriched by several tables).
    pub join: Vec<JoinPlan>,
    /// A stream–stream join (the source is its left side).
    pub interval: Option<IntervalJoinPlan>,
    /// A table–table join (the source is its left side): a table of joined rows.
    pub table_join: Option<TableJoinPlan>,
    pub window: Option<WindowPlan>,
    /// Where each input row's event time is (and, over a stream–stream join, the other
    /// side's): the records a stream's rows make carry it, as in ksqlDB. `None`: a table's
    /// changes carry their own.
    pub row_time: Option<(usize, Option<usize>)>,
    /// For an aggregation: where each key column of the output (in output order) is among a
    /// change's key values (its group values, in GROUP BY order), for tombstones, which have
    /// no row to take the key from. `None`: in output order.
    pub change_key_order: Option<Vec<usize>>,
    /// Emit a window's row once, when it closes (`EMIT FINAL`).
    pub emit_final: bool,
    /// Where records too late for their window go (`LATE DATA TO`).
    pub late_data_to: Option<String>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub shape: PlanShape,
    pub output_columns: Vec<Column>,
    /// The dataflow as EXPLAIN shows it.
    pub description: String,
    /// What the query's state depends on, part by part (CREATE OR REPLACE keeps the state
    /// only when these are equal).
    pub state_shape: Vec<(&'static str, String)>,
    /// The output columns whose values, in this order, make a result row's state key, when
    /// they do: pull queries then look rows up by key instead of scanning. `None`: the key is
    /// not made of output columns (a projection or join of tables, session windows, EMIT
    /// FINAL, a group column selected with another type), and pull queries scan.
    pub state_key: Option<crate::catalog::StateKey>,
}

/// ksqlDB's pseudo-columns of a stream record, appended to its columns in continuous queries.
pub const ROWTIME: &str = "rowtime";
pub const ROWPARTITION: &str = "rowpartition";
pub const ROWOFFSET: &str = "rowoffset";
pub const WINDOWSTART: &str = "windowstart";
pub const WINDOWEND: &str = "windowend";

/// The pseudo-columns a relation's decoded rows carry (none for tables, or when the
/// relation has a column of the same name: its own column wins).
pub fn pseudo_columns(rel: &RelationDef) -> Vec<Column> {
    let names = [(ROWTIME, SqlType::BigInt), (ROWPARTITION, SqlType::Int), (ROWOFFSET, SqlType::BigInt)];
    if rel.kind == RelationKind::Table || names.iter().any(|(n, _)| rel.column(n).is_some()) {
        return Vec::new();
    }
    names.iter().map(|(n, ty)| Column { name: n.to_string(), ty: ty.clone(), key: false }).collect()
}

/// The columns a continuous query sees of a relation.
pub fn input_columns(rel: &RelationDef, windowed: bool) -> Vec<Column> {
    let mut cols = rel.columns.clone();
    cols.extend(pseudo_columns(rel));
    if windowed {
        for n in [WINDOWSTART, WINDOWEND] {
            cols.push(Column { name: n.to_string(), ty: SqlType::BigInt, key: false });
        }
    }
    cols
}

/// A DataFusion session for Eddy's queries: one partition (batches are small and the
/// machine is shared with the log and the runtime), Postgres-like identifiers.
/// ksqlDB's function names (UCASE, TIMESTAMPTOSTRING...) are registered next to DataFusion's.
pub fn session() -> SessionContext {
    session_with(true)
}

/// [`session`], with or without DataFusion's own `information_schema` (pull queries replace
/// it with Postgres's, see `engine::pg_catalog`).
///
/// The configured state (hundreds of functions) is built once per flavour; each session
/// starts from a copy of it with an empty catalog of its own.
pub fn session_with(information_schema: bool) -> SessionContext {
    static BASE: [OnceLock<SessionState>; 2] = [OnceLock::new(), OnceLock::new()];
    let base = BASE[usize::from(information_schema)].get_or_init(|| {
        let mut config = SessionConfig::new().with_target_partitions(1).with_information_schema(information_schema);
        config.options_mut().sql_parser.map_string_types_to_utf8view = false;
        let ctx = SessionContext::new_with_config(config);
        crate::functions::register(&ctx);
        ctx.state()
    });
    let ctx = SessionContext::new_with_state(base.clone());
    let public = MemoryCatalogProvider::new();
    public.register_schema("public", Arc::new(MemorySchemaProvider::new())).expect("a new catalog takes a schema");
    let catalogs = MemoryCatalogProviderList::new();
    catalogs.register_catalog("datafusion".into(), Arc::new(public));
    ctx.register_catalog_list(Arc::new(catalogs));
    ctx
}

/// The materializer of a table declared over a topic.
pub fn upsert_plan(source: &RelationDef) -> ContinuousPlan {
    ContinuousPlan {
        source: source.clone(),
        input_schema: arrow_schema(&source.columns),
        join: Vec::new(),
        interval: None,
        table_join: None,
        window: None,
        row_time: None,
        change_key_order: None,
        emit_final: false,
        late_data_to: None,
        filter: None,
        shape: PlanShape::Upsert,
        output_columns: source.columns.clone(),
        state_shape: Vec::new(),
        // The upsert operator keys rows by the primary key columns, in column order.
        state_key: Some(crate::catalog::StateKey {
            columns: source.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect(),
            row_format: false,
        }),
        description: format!(
            "UpsertOperator(latest row per key)\n  Source(topic={}, partitions={})",
            source.topic, source.partitions
        ),
    }
}

/// Plans a continuous SELECT over its FROM relations (one stream or table, or a stream
/// joined with a table).
pub async fn plan_continuous(select: &SelectStatement, relations: &[RelationDef]) -> Result<ContinuousPlan> {
    // `a RIGHT JOIN b` runs as `b LEFT JOIN a` (`sql::expand_wildcards` turns the SQL; the
    // window of a stream–stream join turns with it).
    let right = relations.len() == 2 && crate::sql::is_right_join(&select.sql);
    let turned: Vec<RelationDef>;
    let relations = if right {
        turned = vec![relations[1].clone(), relations[0].clone()];
        turned.as_slice()
    } else {
        relations
    };
    let within =
        select.within.map(|w| if right { JoinWindow { before_ms: w.after_ms, after_ms: w.before_ms, ..w } } else { w });
    let (source, table) = match relations {
        [one] => (one, None),
        [a, b] => match (a.kind, b.kind) {
            (RelationKind::Stream, RelationKind::Table) => (a, Some(b)),
            (RelationKind::Table, RelationKind::Stream) => (b, Some(a)),
            (RelationKind::Stream, RelationKind::Stream) | (RelationKind::Table, RelationKind::Table) => (a, Some(b)),
        },
        [] => return Err(EddyError::InvalidValue("a continuous query needs FROM a stream or table".into())),
        many => {
            // A stream enriched by several tables: a chain of lookups.
            let streams: Vec<&RelationDef> = many.iter().filter(|r| r.kind == RelationKind::Stream).collect();
            match streams.as_slice() {
                [one] => (*one, None),
                _ => {
                    return Err(EddyError::NotImplemented(
                        "joins of more than two inputs in a continuous query need one stream and the rest tables"
                            .into(),
                    ))
                }
            }
        }
    };
    let lookup_tables: Vec<&RelationDef> = if relations.len() > 2 {
        relations.iter().filter(|r| r.kind == RelationKind::Table).collect()
    } else {
        Vec::new()
    };
    if select.window.is_some() && source.kind == RelationKind::Table {
        return Err(EddyError::InvalidValue(format!(
            "{} is a table: windows apply to streams (a table has no event order to window)",
            source.name
        )));
    }
    let ctx = session();
    let windowed = select.window.is_some();
    let mut columns_of = std::collections::HashMap::new();
    for rel in relations {
        let cols = input_columns(rel, windowed && rel.name == source.name);
        columns_of.insert(rel.name.clone(), rel.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
        let schema = arrow_schema(&cols);
        ctx.register_table(rel.name.as_str(), Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
    }
    let sql = crate::sql::expand_wildcards(&select.sql, &|name| columns_of.get(name).cloned())?;
    let plan = crate::functions::lambdas::logical_plan(&ctx, &sql).await?;
    let state = ctx.state();
    // Expressions are coerced and simplified as DataFusion's optimizer would (some
    // functions, like COALESCE, only run after simplification), then compiled once.
    let phys = |e: &Expr, input: &LogicalPlan| -> Result<Arc<dyn PhysicalExpr>> {
        let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_schema(input.schema().clone()).build());
        let coerced = simplifier.coerce(e.clone(), input.schema()).unwrap_or_else(|_| e.clone());
        let simplified = simplifier.simplify(coerced)?;
        Ok(state.create_physical_expr(simplified, input.schema())?)
    };

    let LogicalPlan::Projection(top) = &plan else {
        return Err(unsupported(&plan));
    };
    // Table functions belong to the SELECT list (`table_function`), not to WHERE, GROUP BY,
    // an aggregate or a join.
    let below = top.input.exists(|node| {
        Ok(node.expressions().iter().any(|e| e.exists(|x| Ok(is_table_function(x))).unwrap_or(false)))
    })?;
    if below {
        return Err(EddyError::NotImplemented(
            "a table function (EXPLODE) outside the SELECT list, or with GROUP BY".into(),
        ));
    }
    let mut node = skip_alias(&top.input);
    let mut having = None;
    let mut aggregate = None;
    let mut filter = None;
    if let LogicalPlan::Filter(f) = node {
        if matches!(skip_alias(&f.input), LogicalPlan::Aggregate(_)) {
            having = Some(phys(&f.predicate, &f.input)?);
            node = skip_alias(&f.input);
        }
    }
    if let LogicalPlan::Aggregate(a) = node {
        aggregate = Some(a);
        node = skip_alias(&a.input);
    }
    if let LogicalPlan::Filter(f) = node {
        filter = Some(phys(&f.predicate, &f.input)?);
        node = skip_alias(&f.input);
    }
    let input_plan = node;
    let mut lines = Vec::new();
    let mut interval = None;
    let mut table_join = None;
    let join = match (input_plan, table) {
        (LogicalPlan::TableScan(_), None) => Vec::new(),
        (LogicalPlan::Join(_), None) => {
            let chain = lookup_chain(input_plan, source, &lookup_tables, &phys)?;
            lines.extend(chain.iter().rev().map(|(_, l)| l.clone()));
            chain.into_iter().map(|(p, _)| p).collect()
        }
        (LogicalPlan::Join(j), Some(right)) if right.kind == RelationKind::Stream => {
            let within = within.ok_or_else(|| {
                EddyError::InvalidValue(
                    "a stream–stream join needs a WITHIN clause, e.g. FROM a JOIN b WITHIN 1 MINUTE ON a.id = b.id"
                        .into(),
                )
            })?;
            let (plan, line) = interval_join_plan(j, source, right, within, &phys)?;
            lines.push(line);
            interval = Some(plan);
            Vec::new()
        }
        (LogicalPlan::Join(j), Some(right)) if source.kind == RelationKind::Table => {
            let (plan, line) = table_join_plan(j, source, right)?;
            lines.push(line);
            table_join = Some(plan);
            Vec::new()
        }
        (LogicalPlan::Join(j), Some(table)) => {
            let (plan, line) = join_plan(j, table, &phys)?;
            lines.push(line);
            vec![plan]
        }
        _ => return Err(unsupported(input_plan)),
    };
    if within.is_some() && interval.is_none() {
        return Err(EddyError::InvalidValue("WITHIN belongs to a join of two streams".into()));
    }
    let input_schema: SchemaRef = Arc::new(input_plan.schema().as_arrow().clone());
    let find = |name: &str| -> Result<usize> {
        input_plan
            .schema()
            .qualified_field_with_name(Some(&TableReference::bare(source.name.as_str())), name)
            .ok()
            .and_then(|(q, f)| input_plan.schema().index_of_column_by_name(q, f.name()))
            .or_else(|| input_schema.index_of(name).ok())
            .ok_or_else(|| EddyError::Internal(format!("the query's input lacks {name}")))
    };
    // A stream–stream join's other side's event time: a joined row's time is the later of
    // the two (the window bounds sit among the source's columns, which the join's left rows
    // leave NULL for the window to fill in).
    let other_rowtime = match (&interval, input_plan) {
        (Some(_), LogicalPlan::Join(j)) => {
            let right = j.right.schema().fields().iter().position(|f| f.name() == ROWTIME);
            let right = right.ok_or_else(|| EddyError::Internal("a joined stream lacks rowtime".into()))?;
            Some(j.left.schema().fields().len() + right)
        }
        _ => None,
    };
    // Each input row's event time, which the records it makes carry (a stream's; a table's
    // changes carry their own).
    let row_time = match source.kind {
        RelationKind::Stream if !pseudo_columns(source).is_empty() => Some((find(ROWTIME)?, other_rowtime)),
        _ => None,
    };
    let window = match &select.window {
        None => None,
        Some(spec) => {
            if spec.retention_ms.is_some_and(|r| r < spec.size_ms.saturating_add(spec.grace_ms)) {
                return Err(EddyError::InvalidValue(
                    "a window's RETENTION must be at least its SIZE plus its GRACE PERIOD".into(),
                ));
            }
            if aggregate.is_none() {
                return Err(EddyError::InvalidValue("a WINDOW clause needs an aggregation with GROUP BY".into()));
            }
            Some(WindowPlan {
                spec: *spec,
                rowtime: find(ROWTIME)?,
                other_rowtime,
                window_start: find(WINDOWSTART)?,
                window_end: find(WINDOWEND)?,
            })
        }
    };
    if select.late_data_to.is_some() && interval.is_some() {
        return Err(EddyError::NotImplemented(
            "LATE DATA TO over a stream–stream join (a late joined row is two records); late rows go to the processing log"
                .into(),
        ));
    }
    if select.emit_final && aggregate.is_none() {
        return Err(EddyError::InvalidValue("EMIT FINAL needs a windowed aggregation".into()));
    }

    let top_input_schema: Schema = top.input.schema().as_arrow().clone();
    let key_slots = result_key_slots(input_plan, source, &top.input, interval.is_some(), table_join.is_some());
    let mut output_columns = Vec::new();
    let mut state_key = None;
    let mut change_key_order = None;
    let shape = match aggregate {
        None => {
            let exprs = top.expr.iter().map(|e| phys(e, &top.input)).collect::<Result<Vec<_>>>()?;
            // A table function's column is its argument; the operator expands the rows.
            let mut table_functions = Vec::new();
            let mut evaluated = exprs.clone();
            for (i, e) in top.expr.iter().enumerate() {
                if let Some((f, arg)) = table_function(e)? {
                    if source.kind == RelationKind::Table {
                        return Err(EddyError::InvalidValue(format!(
                            "{} is a table: table functions (EXPLODE) apply to streams",
                            source.name
                        )));
                    }
                    evaluated[i] = phys(arg, &top.input)?;
                    table_functions.push((i, f));
                }
            }
            let keys = key_items(&top.expr, top.input.schema(), &key_slots);
            for (i, (e, pe)) in top.expr.iter().zip(&exprs).enumerate() {
                let key = keys.contains(&i);
                output_columns.push(Column { name: output_name(e, i), ty: sql_type(pe, &top_input_schema)?, key });
            }
            if !select.partition_by.is_empty() {
                partition_keys(&mut output_columns, &select.partition_by, source)?;
            }
            lines.insert(
                0,
                format!("ProjectOperator({})", top.expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")),
            );
            PlanShape::Project { exprs: evaluated, table_functions }
        }
        Some(_) if !select.partition_by.is_empty() => {
            return Err(EddyError::InvalidValue(
                "PARTITION BY with GROUP BY: an aggregation's output is keyed by its GROUP BY".into(),
            ))
        }
        Some(a) => {
            let group = a.group_expr.iter().map(|e| phys(e, &a.input)).collect::<Result<Vec<_>>>()?;
            let mut aggs = Vec::new();
            for e in &a.aggr_expr {
                aggs.push(agg_spec(e, &a.input, &phys)?);
            }
            let agg_schema: SchemaRef = Arc::new(a.schema.as_arrow().clone());
            let agg_names: Vec<String> = aggs.iter().map(|s| s.func.name().to_string()).collect();
            let project = top.expr.iter().map(|e| phys(e, &top.input)).collect::<Result<Vec<_>>>()?;
            let n_group = group.len();
            // A group's state key is its group values in GROUP BY order; when every one is
            // selected as a plain column, a pull query finds the row from those columns.
            let sessions = window.as_ref().is_some_and(|w| matches!(w.spec.kind, WindowKind::Session));
            let mut key_positions = None;
            if !sessions && !select.emit_final {
                let selects_group = |g: usize, e: &Expr| {
                    let e = match e {
                        Expr::Alias(al) => al.expr.as_ref(),
                        other => other,
                    };
                    matches!(e, Expr::Column(c) if a.schema.index_of_column(c).is_ok_and(|idx| idx == g))
                };
                key_positions =
                    (0..n_group).map(|g| top.expr.iter().position(|e| selects_group(g, e))).collect::<Option<Vec<_>>>();
            }
            for (i, (e, pe)) in top.expr.iter().zip(&project).enumerate() {
                // A group column keys the result, under its alias too (`GROUP BY v + 1` with
                // `v + 1 AS ksql_col_0` in the SELECT list).
                let column = match e {
                    Expr::Alias(al) => al.expr.as_ref(),
                    other => other,
                };
                let group = match column {
                    Expr::Column(c) => a.schema.index_of_column(c).ok().filter(|&idx| idx < n_group),
                    _ => None,
                };
                let key = group.is_some();
                change_key_order.get_or_insert_with(Vec::new).extend(group);
                let name = match e {
                    Expr::Column(c) => match a.schema.index_of_column(c) {
                        Ok(idx) if idx >= n_group => agg_names[idx - n_group].clone(),
                        _ => output_name(e, i),
                    },
                    _ => output_name(e, i),
                };
                output_columns.push(Column { name, ty: sql_type(pe, &top_input_schema)?, key });
            }
            // Group keys are typed by the group columns (`format::row_keys`); a pull query
            // encodes its literals by the table's column types, so those must be the same.
            let same_type = |(g, &pos): (usize, &usize)| {
                output_columns
                    .get(pos)
                    .is_some_and(|c: &Column| &c.ty.arrow() == a.schema.as_arrow().field(g).data_type())
            };
            state_key = key_positions
                .filter(|p| p.iter().enumerate().all(same_type))
                .map(|columns| crate::catalog::StateKey { columns, row_format: true });
            let mut agg_lines = vec![format!(
                "ProjectOperator({})",
                top.expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
            )];
            if let Some(h) = having.as_ref() {
                agg_lines.push(format!("HavingFilter({h})"));
            }
            agg_lines.push(format!(
                "AggregateOperator(group=[{}], aggregates=[{}], state=RocksDB{})",
                a.group_expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
                a.aggr_expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
                if source.kind == RelationKind::Table { ", retractions" } else { "" }
            ));
            if let Some(w) = &window {
                agg_lines.push(format!(
                    "WindowOperator({:?}, size={}ms, grace={}ms{}{})",
                    w.spec.kind,
                    w.spec.size_ms,
                    w.spec.grace_ms,
                    if select.emit_final { ", emit=final" } else { ", emit=changes" },
                    select.late_data_to.as_ref().map(|l| format!(", late data to {l}")).unwrap_or_default()
                ));
            }
            lines.splice(0..0, agg_lines);
            if source.kind == RelationKind::Table
                && aggs.iter().any(|a| matches!(a.func, AggFunc::Latest | AggFunc::Earliest | AggFunc::ByOffset { .. }))
            {
                return Err(EddyError::InvalidValue(
                    "LATEST_BY_OFFSET and EARLIEST_BY_OFFSET aggregate streams; a table has no offsets to order by"
                        .into(),
                ));
            }
            PlanShape::Aggregate(AggregatePlan { group, aggs, agg_schema, having, project })
        }
    };
    dedupe_names(&mut output_columns);
    if let Some(f) = filter.as_ref() {
        let join_lines = join.len() + usize::from(interval.is_some()) + usize::from(table_join.is_some());
        let at = lines.len() - join_lines;
        lines.insert(at, format!("FilterOperator({f})"));
    }
    lines.push(format!(
        "Source(topic={}, partitions={}, format={})",
        source.topic, source.partitions, source.value_format
    ));
    let description =
        lines.iter().enumerate().map(|(i, l)| format!("{}{}", "  ".repeat(i), l)).collect::<Vec<_>>().join("\n");
    let mut state_shape: Vec<(&'static str, String)> = vec![
        ("its inputs", relations.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")),
        ("its join", lines.iter().filter(|l| l.contains("Join")).cloned().collect::<Vec<_>>().join(" ")),
        ("its WINDOW", format!("{:?}", select.window)),
        ("EMIT FINAL", select.emit_final.to_string()),
    ];
    for j in &join {
        state_shape.push(("its join keys", format!("{:?}", j.stream_keys)));
    }
    if let Some(j) = &interval {
        state_shape.push(("its join keys", format!("{:?} {:?} {:?}", j.left_keys, j.right_keys, j.window)));
    }
    if let Some(j) = &table_join {
        state_shape.push(("its join keys", format!("{:?}", j.left_key_columns)));
    }
    if let PlanShape::Aggregate(a) = &shape {
        state_shape.push(("its GROUP BY", format!("{:?}", a.group)));
        state_shape.push((
            "its aggregates",
            a.aggs.iter().map(|s| format!("{:?}({})", s.func, s.arg)).collect::<Vec<_>>().join(", "),
        ));
    }
    if source.kind == RelationKind::Table {
        // Retractions must undo exactly what was added: the filter is part of the state.
        state_shape.push(("its WHERE over a table", format!("{filter:?}")));
        if let PlanShape::Project { exprs, .. } = &shape {
            state_shape.push(("its SELECT list over a table", format!("{exprs:?}")));
        }
    }
    Ok(ContinuousPlan {
        state_shape,
        source: source.clone(),
        input_schema,
        join,
        interval,
        table_join,
        window,
        row_time,
        change_key_order,
        emit_final: select.emit_final,
        late_data_to: select.late_data_to.clone(),
        filter,
        shape,
        output_columns,
        description,
        state_key,
    })
}

/// ksqlDB's `PARTITION BY`: the named result columns become the output's key (and its
/// records go to the partition their key hashes to), in place of the source's key.
fn partition_keys(output: &mut [Column], names: &[String], source: &RelationDef) -> Result<()> {
    if source.kind == RelationKind::Table {
        return Err(EddyError::InvalidValue(format!(
            "PARTITION BY over a table: {} is keyed by its PRIMARY KEY (re-key a stream instead)",
            source.name
        )));
    }
    output.iter_mut().for_each(|c| c.key = false);
    for name in names {
        let column =
            output.iter_mut().find(|c| c.name == *name || c.name.eq_ignore_ascii_case(name)).ok_or_else(|| {
                EddyError::InvalidValue(format!(
                    "PARTITION BY {name}: the key must be a column of the SELECT list, as in ksqlDB (add {name} to it)"
                ))
            })?;
        column.key = true;
    }
    Ok(())
}

type Phys<'a> = dyn Fn(&Expr, &LogicalPlan) -> Result<Arc<dyn PhysicalExpr>> + 'a;

fn agg_spec(e: &Expr, input: &LogicalPlan, phys: &Phys<'_>) -> Result<AggSpec> {
    let inner = match e {
        Expr::Alias(al) => al.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(af) = inner else {
        return Err(EddyError::NotImplemented(format!("aggregate expression {e}")));
    };
    let name = af.func.name().to_lowercase();
    let func = match (name.as_str(), af.params.distinct) {
        ("count", true) => AggFunc::CountDistinct,
        ("topk" | "topkdistinct", false) => {
            let k = match af.params.args.get(1) {
                Some(Expr::Literal(v, _)) => v.to_string().parse::<usize>().ok(),
                _ => None,
            };
            let k = k.filter(|k| (1..=10_000).contains(k)).ok_or_else(|| {
                EddyError::InvalidValue(format!(
                    "{}(col, k) takes a whole number k from 1 to 10000",
                    name.to_uppercase()
                ))
            })?;
            if name == "topk" {
                AggFunc::TopK(k)
            } else {
                AggFunc::TopKDistinct(k)
            }
        }
        (by @ ("earliest_by_offset" | "latest_by_offset"), false) if af.params.args.len() > 1 => {
            let (n, ignore_nulls) = crate::functions::aggregates::by_offset_options(&af.params.args[1..])
                .map_err(|e| EddyError::InvalidValue(e.to_string()))?;
            AggFunc::ByOffset { latest: by == "latest_by_offset", n, ignore_nulls }
        }
        (_, true) => {
            return Err(EddyError::NotImplemented(format!("{e}: DISTINCT is supported in COUNT(DISTINCT ...) only")))
        }
        (n, false) => AggFunc::parse(n).ok_or_else(|| {
            EddyError::NotImplemented(format!(
                "aggregate {} in a continuous query (supported: COUNT, COUNT(DISTINCT), SUM, AVG, MIN, MAX, LATEST_BY_OFFSET, EARLIEST_BY_OFFSET, COLLECT_LIST, COLLECT_SET, TOPK, HISTOGRAM)",
                af.func.name().to_uppercase()
            ))
        })?,
    };
    if af.params.filter.is_some() || !af.params.order_by.is_empty() {
        return Err(EddyError::NotImplemented(format!("{e} (FILTER/ORDER BY in aggregates)")));
    }
    let arg = match (func, af.params.args.as_slice()) {
        // CORRELATION's two arguments travel as one struct column.
        (AggFunc::Correlation, [x, y]) => {
            use datafusion::prelude::lit;
            let pair =
                datafusion::functions::core::expr_fn::named_struct(vec![lit("x"), x.clone(), lit("y"), y.clone()]);
            phys(&pair, input)?
        }
        (AggFunc::Correlation, _) => {
            return Err(EddyError::InvalidValue("CORRELATION(x, y) takes two arguments".into()))
        }
        (_, [arg, ..]) => phys(arg, input)?,
        (_, []) => phys(&datafusion::prelude::lit(1i64), input)?,
    };
    let arg_type = arg.data_type(input.schema().as_arrow())?;
    Ok(AggSpec { func, arg, arg_type })
}

/// A SELECT item that is a table function (`EXPLODE(arr)`, aliased or not): the function and
/// its argument. A table function inside another expression is refused.
fn table_function(e: &Expr) -> Result<Option<(TableFunction, &Expr)>> {
    let inner = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    if let Expr::ScalarFunction(f) = inner {
        if let (Some(kind), [arg]) = (TableFunction::from_name(f.func.name()), f.args.as_slice()) {
            if arg.exists(|x| Ok(is_table_function(x)))? {
                return Err(EddyError::NotImplemented("a table function inside a table function".into()));
            }
            return Ok(Some((kind, arg)));
        }
    }
    if inner.exists(|x| Ok(is_table_function(x)))? {
        return Err(EddyError::NotImplemented(format!(
            "{e}: a table function (EXPLODE) must be a whole SELECT item, not part of an expression"
        )));
    }
    Ok(None)
}

fn is_table_function(e: &Expr) -> bool {
    matches!(e, Expr::ScalarFunction(f) if TableFunction::from_name(f.func.name()).is_some())
}

fn skip_alias(plan: &LogicalPlan) -> &LogicalPlan {
    match plan {
        LogicalPlan::SubqueryAlias(a) => skip_alias(&a.input),
        other => other,
    }
}

fn unsupported(plan: &LogicalPlan) -> EddyError {
    EddyError::NotImplemented(format!(
        "{} in a continuous query (supported: a stream or table, or a stream joined with a table, with WHERE, WINDOW, GROUP BY, HAVING)",
        plan.display()
    ))
}

fn sql_type(e: &Arc<dyn PhysicalExpr>, input: &Schema) -> Result<SqlType> {
    let dt = e.data_type(input)?;
    SqlType::from_arrow(&dt)
        .ok_or_else(|| EddyError::NotImplemented(format!("a column of type {dt} in a stream or table")))
}

/// Postgres-style output names: the alias, the column, or the function's name.
fn output_name(e: &Expr, i: usize) -> String {
    match e {
        Expr::Alias(a) => a.name.clone(),
        Expr::Column(c) => c.name.clone(),
        Expr::ScalarFunction(f) => f.func.name().to_string(),
        Expr::Cast(c) => output_name(&c.expr, i),
        _ => format!("ksql_col_{i}"),
    }
}

fn dedupe_names(cols: &mut [Column]) {
    for i in 0..cols.len() {
        let mut n = 1;
        while cols[..i].iter().any(|c| c.name == cols[i].name) {
            cols[i].name = format!("{}_{n}", cols[i].name.trim_end_matches(char::is_numeric).trim_end_matches('_'));
            n += 1;
        }
    }
}
