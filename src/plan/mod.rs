//! Planning: DataFusion turns a SELECT into a logical plan; this module reads that plan into
//! a continuous dataflow (`ContinuousPlan`): filter → project, or filter → aggregate →
//! having → project, with every expression compiled once to a DataFusion physical
//! expression over Arrow batches. Plans it cannot run continuously (joins, windows, ORDER BY)
//! are refused with a clear "not supported yet" rather than run wrongly.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::catalog::RelationDef;
use crate::error::{EddyError, Result};
use crate::format::{arrow_schema, Column, SqlType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl AggFunc {
    fn parse(name: &str) -> Option<AggFunc> {
        Some(match name {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "avg" | "mean" => AggFunc::Avg,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Avg => "avg",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
        }
    }
}

pub struct AggSpec {
    pub func: AggFunc,
    pub arg: Arc<dyn PhysicalExpr>,
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
    Project { exprs: Vec<Arc<dyn PhysicalExpr>> },
    /// Grouped aggregation with state per group in RocksDB.
    Aggregate(AggregatePlan),
    /// A table over a topic: latest row per key (a null value deletes).
    Upsert,
}

pub struct ContinuousPlan {
    pub source: RelationDef,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub shape: PlanShape,
    pub output_columns: Vec<Column>,
    /// The dataflow as EXPLAIN shows it.
    pub description: String,
}

/// A DataFusion session for Eddy's queries: one partition (batches are small and the
/// machine is shared with the log and the runtime), Postgres-like identifiers.
pub fn session() -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(1).with_information_schema(true);
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    SessionContext::new_with_config(config)
}

/// The materializer of a table declared over a topic.
pub fn upsert_plan(source: &RelationDef) -> ContinuousPlan {
    ContinuousPlan {
        source: source.clone(),
        filter: None,
        shape: PlanShape::Upsert,
        output_columns: source.columns.clone(),
        description: format!(
            "UpsertOperator(latest row per key)\n  Source(topic={}, partitions={})",
            source.topic, source.partitions
        ),
    }
}

/// Plans a continuous SELECT over one source relation.
pub async fn plan_continuous(sql: &str, source: &RelationDef) -> Result<ContinuousPlan> {
    let ctx = session();
    let schema = arrow_schema(&source.columns);
    ctx.register_table(source.name.as_str(), Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
    let plan = ctx.state().create_logical_plan(sql).await?;
    let state = ctx.state();
    let phys = |e: &Expr, input: &LogicalPlan| -> Result<Arc<dyn PhysicalExpr>> {
        Ok(state.create_physical_expr(e.clone(), input.schema())?)
    };

    let LogicalPlan::Projection(top) = &plan else {
        return Err(unsupported(&plan));
    };
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
    if !matches!(node, LogicalPlan::TableScan(_)) {
        return Err(unsupported(node));
    }

    let top_input_schema: Schema = top.input.schema().as_arrow().clone();
    let mut output_columns = Vec::new();
    let mut lines = Vec::new();
    let shape = match aggregate {
        None => {
            let exprs = top.expr.iter().map(|e| phys(e, &top.input)).collect::<Result<Vec<_>>>()?;
            for (i, (e, pe)) in top.expr.iter().zip(&exprs).enumerate() {
                let key = matches!(e, Expr::Column(c) if source.column(&c.name).is_some_and(|sc| sc.key));
                output_columns.push(Column { name: output_name(e, i, &[]), ty: sql_type(pe, &top_input_schema)?, key });
            }
            lines.push(format!(
                "ProjectOperator({})",
                top.expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
            ));
            PlanShape::Project { exprs }
        }
        Some(a) => {
            let group = a.group_expr.iter().map(|e| phys(e, &a.input)).collect::<Result<Vec<_>>>()?;
            let mut aggs = Vec::new();
            for e in &a.aggr_expr {
                let inner = match e {
                    Expr::Alias(al) => al.expr.as_ref(),
                    other => other,
                };
                let Expr::AggregateFunction(af) = inner else {
                    return Err(EddyError::NotImplemented(format!("aggregate expression {e}")));
                };
                let func = AggFunc::parse(af.func.name()).ok_or_else(|| {
                    EddyError::NotImplemented(format!(
                        "aggregate {} in a continuous query (supported: COUNT, SUM, AVG, MIN, MAX; streaming SQL issue #4)",
                        af.func.name().to_uppercase()
                    ))
                })?;
                if af.params.distinct || af.params.filter.is_some() || !af.params.order_by.is_empty() {
                    return Err(EddyError::NotImplemented(format!(
                        "{e} (DISTINCT/FILTER/ORDER BY in aggregates, issue #4)"
                    )));
                }
                let arg = match af.params.args.first() {
                    Some(arg) => phys(arg, &a.input)?,
                    None => phys(&datafusion::prelude::lit(1i64), &a.input)?,
                };
                aggs.push(AggSpec { func, arg });
            }
            let agg_schema: SchemaRef = Arc::new(a.schema.as_arrow().clone());
            let agg_names: Vec<&str> = aggs.iter().map(|s| s.func.name()).collect();
            let project = top.expr.iter().map(|e| phys(e, &top.input)).collect::<Result<Vec<_>>>()?;
            let n_group = group.len();
            for (i, (e, pe)) in top.expr.iter().zip(&project).enumerate() {
                let key = matches!(e, Expr::Column(c) if a.schema.index_of_column(c).is_ok_and(|idx| idx < n_group));
                let mut names = vec![""; n_group];
                names.extend(agg_names.iter().copied());
                let name = match e {
                    Expr::Column(c) => match a.schema.index_of_column(c) {
                        Ok(idx) if idx >= n_group => names[idx].to_string(),
                        _ => output_name(e, i, &[]),
                    },
                    _ => output_name(e, i, &[]),
                };
                output_columns.push(Column { name, ty: sql_type(pe, &top_input_schema)?, key });
            }
            lines.push(format!(
                "ProjectOperator({})",
                top.expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
            ));
            if let Some(h) = having.as_ref() {
                lines.push(format!("HavingFilter({h})"));
            }
            lines.push(format!(
                "AggregateOperator(group=[{}], aggregates=[{}], state=RocksDB)",
                a.group_expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
                a.aggr_expr.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
            ));
            PlanShape::Aggregate(AggregatePlan { group, aggs, agg_schema, having, project })
        }
    };
    dedupe_names(&mut output_columns);
    if let Some(f) = filter.as_ref() {
        lines.push(format!("FilterOperator({f})"));
    }
    lines.push(format!(
        "Source(topic={}, partitions={}, format={})",
        source.topic, source.partitions, source.value_format
    ));
    let description =
        lines.iter().enumerate().map(|(i, l)| format!("{}{}", "  ".repeat(i), l)).collect::<Vec<_>>().join("\n");
    Ok(ContinuousPlan { source: source.clone(), filter, shape, output_columns, description })
}

fn skip_alias(plan: &LogicalPlan) -> &LogicalPlan {
    match plan {
        LogicalPlan::SubqueryAlias(a) => skip_alias(&a.input),
        other => other,
    }
}

fn unsupported(plan: &LogicalPlan) -> EddyError {
    EddyError::NotImplemented(format!(
        "{} in a continuous query (supported: one source with WHERE, GROUP BY, HAVING; joins and windows are streaming SQL issue #4)",
        plan.display()
    ))
}

fn sql_type(e: &Arc<dyn PhysicalExpr>, input: &Schema) -> Result<SqlType> {
    let dt = e.data_type(input)?;
    SqlType::from_arrow(&dt)
        .ok_or_else(|| EddyError::NotImplemented(format!("a column of type {dt} in a stream or table")))
}

/// Postgres-style output names: the alias, the column, or the function's name.
fn output_name(e: &Expr, i: usize, _agg: &[&str]) -> String {
    match e {
        Expr::Alias(a) => a.name.clone(),
        Expr::Column(c) => c.name.clone(),
        Expr::ScalarFunction(f) => f.func.name().to_string(),
        Expr::Cast(c) => output_name(&c.expr, i, _agg),
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
