//! ksqlDB's aggregates DataFusion lacks, for pull queries and for planning continuous ones:
//! `TOPK(col, k)` (the k largest values, largest first) and `HISTOGRAM(col)` (a map from each
//! value to its count). Continuous queries fold them in `dataflow::operator::aggregate`;
//! these accumulators give the same answers over a batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Builder, MapBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility};
use datafusion::physical_expr::expressions::Literal;

pub fn udafs() -> Vec<AggregateUDF> {
    vec![AggregateUDF::from(TopK::new()), AggregateUDF::from(Histogram::new())]
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TopK {
    signature: Signature,
}

impl TopK {
    fn new() -> Self {
        TopK { signature: Signature::new(TypeSignature::Any(2), Volatility::Immutable) }
    }
}

impl AggregateUDFImpl for TopK {
    fn name(&self) -> &str {
        "topk"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new("item", args[0].clone(), true))))
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let k = args.exprs.get(1).and_then(|e| e.downcast_ref::<Literal>()).and_then(|l| match l.value() {
            ScalarValue::Int64(Some(k)) => Some(*k),
            ScalarValue::Int32(Some(k)) => Some(*k as i64),
            _ => None,
        });
        let Some(k) = k.filter(|k| (1..=10_000).contains(k)) else {
            return exec_err!("TOPK(col, k) takes a whole number k from 1 to 10000");
        };
        let item = args.expr_fields[0].data_type().clone();
        Ok(Box::new(TopKAccumulator { k: k as usize, item, values: Vec::new() }))
    }
}

#[derive(Debug)]
struct TopKAccumulator {
    k: usize,
    item: DataType,
    /// The largest values so far, largest first (at most k).
    values: Vec<ScalarValue>,
}

impl TopKAccumulator {
    fn add(&mut self, array: &ArrayRef) -> Result<()> {
        for i in 0..array.len() {
            if array.is_null(i) {
                continue;
            }
            self.values.push(ScalarValue::try_from_array(array, i)?);
        }
        self.values.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
        self.values.truncate(self.k);
        Ok(())
    }
}

impl Accumulator for TopKAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for i in 0..lists.len() {
            if !lists.is_null(i) {
                self.add(&lists.value(i))?;
            }
        }
        Ok(())
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::List(ScalarValue::new_list_nullable(&self.values, &self.item)))
    }
    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.iter().map(ScalarValue::size).sum::<usize>()
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Histogram {
    signature: Signature,
}

impl Histogram {
    fn new() -> Self {
        Histogram { signature: Signature::new(TypeSignature::Any(1), Volatility::Immutable) }
    }
}

/// `MAP<STRING, BIGINT>` as Arrow lays it out.
pub fn histogram_type() -> DataType {
    let entries =
        Fields::from(vec![Field::new("keys", DataType::Utf8, false), Field::new("values", DataType::Int64, true)]);
    DataType::Map(Arc::new(Field::new("entries", DataType::Struct(entries), false)), false)
}

impl AggregateUDFImpl for Histogram {
    fn name(&self) -> &str {
        "histogram"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(histogram_type())
    }
    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(HistogramAccumulator::default()))
    }
}

#[derive(Debug, Default)]
struct HistogramAccumulator {
    counts: BTreeMap<String, i64>,
}

impl Accumulator for HistogramAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let strings = datafusion::arrow::compute::cast(&values[0], &DataType::Utf8)?;
        let strings = strings.as_string::<i32>();
        for i in 0..strings.len() {
            if !strings.is_null(i) {
                *self.counts.entry(strings.value(i).to_string()).or_default() += 1;
            }
        }
        Ok(())
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let maps = states[0].as_map();
        for i in 0..maps.len() {
            if maps.is_null(i) {
                continue;
            }
            let entries = maps.value(i);
            let keys = entries.column(0).as_string::<i32>();
            let counts = entries.column(1).as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for j in 0..keys.len() {
                *self.counts.entry(keys.value(j).to_string()).or_default() += counts.value(j);
            }
        }
        Ok(())
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut builder = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
        for (k, n) in &self.counts {
            builder.keys().append_value(k);
            builder.values().append_value(*n);
        }
        builder.append(true)?;
        Ok(ScalarValue::Map(Arc::new(builder.finish())))
    }
    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.counts.keys().map(|k| k.len() + 24).sum::<usize>()
    }
}
