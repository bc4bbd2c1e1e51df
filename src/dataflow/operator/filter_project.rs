//! Stateless WHERE + SELECT list: DataFusion physical expressions over one Arrow batch.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

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
}

pub struct ProjectOperator {
    pub exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Columns of `exprs` that are a table function's argument (see `functions::table`).
    pub table_functions: Vec<(usize, TableFunction)>,
    pub schema: SchemaRef,
}

impl ProjectOperator {
    pub fn process(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mut columns = self
            .exprs
            .iter()
            .map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?))
            .collect::<Result<Vec<_>>>()?;
        if !self.table_functions.is_empty() {
            columns = expand(&columns, &self.table_functions)?;
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
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
