//! Stateless WHERE + SELECT list: DataFusion physical expressions over one Arrow batch.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{conjunction_opt, split_conjunction, PhysicalExpr};
use datafusion::physical_expr_common::physical_expr::is_volatile;

use crate::error::{EddyError, Result};
use crate::functions::table::{expand, TableFunction};

pub struct FilterOperator {
    pub predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOperator {
    /// Keeps the rows where the predicate is true (NULL counts as false, as in SQL).
    pub fn process(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        Ok(filter_record_batch(batch, &self.mask(batch)?)?)
    }

    /// The predicate per row (NULL where it is NULL).
    pub fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let mask = self.predicate.evaluate(batch)?.into_array(batch.num_rows())?;
        let mask = mask.as_boolean_opt().ok_or_else(|| {
            EddyError::TypeMismatch(format!("WHERE must be a boolean expression, not {}", mask.data_type()))
        })?;
        Ok(mask.clone())
    }

    /// The conjuncts that read only the columns in `range`, over a batch of just those
    /// columns (`None`: there are none). `stable`: only those that give a row the same
    /// answer each time (no RANDOM()). Over a stream–table join's stream columns, that part
    /// can run before the lookup: a stream row it drops needs none (an INNER join drops it
    /// too; a LEFT join keeps the stream's row, which the WHERE drops anyway).
    pub fn part_within(&self, range: Range<usize>, stable: bool) -> Result<Option<Self>> {
        let part = split_conjunction(&self.predicate)
            .into_iter()
            .filter(|c| within(c, &range) && !(stable && is_volatile(c)))
            .map(|c| {
                Arc::clone(c)
                    .transform(|e| match e.downcast_ref::<Column>() {
                        Some(col) => Ok(Transformed::yes(
                            Arc::new(Column::new(col.name(), col.index() - range.start)) as Arc<dyn PhysicalExpr>
                        )),
                        None => Ok(Transformed::no(e)),
                    })
                    .map(|t| t.data)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(conjunction_opt(part).map(|predicate| FilterOperator { predicate }))
    }
}

fn within(expr: &Arc<dyn PhysicalExpr>, range: &Range<usize>) -> bool {
    collect_columns(expr).iter().all(|c| range.contains(&c.index()))
}

pub struct ProjectOperator {
    pub exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Columns of `exprs` that are a table function's argument (see `functions::table`).
    pub table_functions: Vec<(usize, TableFunction)>,
    pub schema: SchemaRef,
}

impl ProjectOperator {
    pub fn process(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        Ok(self.process_timed(batch, None)?.0)
    }

    /// The projected rows, and each one's event time from `times` (one per input row; a
    /// table function's rows all carry their input row's).
    pub fn process_timed(
        &self,
        batch: &RecordBatch,
        times: Option<&Int64Array>,
    ) -> Result<(RecordBatch, Option<Int64Array>)> {
        let mut columns = self
            .exprs
            .iter()
            .map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?))
            .collect::<Result<Vec<_>>>()?;
        let mut times = times.cloned();
        if !self.table_functions.is_empty() {
            let n = columns.len();
            if let Some(t) = times.take() {
                columns.push(Arc::new(t));
            }
            columns = expand(&columns, &self.table_functions)?;
            if columns.len() > n {
                times = columns.pop().and_then(|c| c.as_primitive_opt::<Int64Type>().cloned());
            }
        }
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(
                |(array, f)| {
                    if array.data_type() == f.data_type() {
                        Ok(array)
                    } else {
                        Ok(cast(&array, f.data_type())?)
                    }
                },
            )
            .collect::<Result<Vec<_>>>()?;
        Ok((RecordBatch::try_new(self.schema.clone(), columns)?, times))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    #[test]
    fn a_where_has_a_stream_part_and_a_table_part() {
        // Joined rows: the table's two columns, then the stream's two.
        let joined = Schema::new(vec![
            Field::new("t0", DataType::Utf8, true),
            Field::new("t1", DataType::Int64, true),
            Field::new("s0", DataType::Int64, true),
            Field::new("s1", DataType::Int64, true),
        ]);
        let c = |name: &str| col(name, &joined).unwrap();
        let and = |a, b| binary(a, Operator::And, b, &joined).unwrap();
        let stream_only = binary(c("s0"), Operator::Gt, lit(1i64), &joined).unwrap();
        let table_only = binary(c("t1"), Operator::Eq, lit(2i64), &joined).unwrap();
        let both = binary(c("s1"), Operator::Lt, c("t1"), &joined).unwrap();
        let stream_pair = binary(c("s1"), Operator::Lt, c("s0"), &joined).unwrap();
        let predicate = and(and(and(stream_only, table_only), both), stream_pair);
        let table_part = FilterOperator { predicate: predicate.clone() }.part_within(0..2, true).unwrap();
        assert_eq!(table_part.unwrap().predicate.to_string(), "t1@1 = 2");
        let before = FilterOperator { predicate: predicate.clone() }.part_within(2..4, true).unwrap().unwrap();
        assert_eq!(before.predicate.to_string(), "s0@0 > 1 AND s1@1 < s0@0");
        // The first part runs over the stream's own batch.
        let stream = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("s0", DataType::Int64, true),
                Field::new("s1", DataType::Int64, true),
            ])),
            vec![Arc::new(Int64Array::from(vec![0, 5, 5])), Arc::new(Int64Array::from(vec![0, 9, 3]))],
        )
        .unwrap();
        assert_eq!(before.process(&stream).unwrap().num_rows(), 1);
        // Nothing of the stream's alone: no first part.
        let predicate = binary(c("t1"), Operator::Eq, lit(2i64), &joined).unwrap();
        assert!(FilterOperator { predicate }.part_within(2..4, true).unwrap().is_none());
    }
}
