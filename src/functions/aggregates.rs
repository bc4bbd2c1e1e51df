//! ksqlDB's aggregates DataFusion lacks, for pull queries and for planning continuous ones:
//! `TOPK(col, k)` (the k largest values, largest first), `HISTOGRAM(col)` (a map from each
//! value to its count) and `COLLECT_SET(col)` (each distinct value once, in the order first
//! seen). All run the continuous aggregation's own accumulator
//! (`dataflow::operator::accumulator`), so a pull query and a continuous query agree.

use std::sync::Arc;

use crate::dataflow::operator::accumulator::{decode_group, encode_group, Acc, AggSlot, Group};
use crate::plan::AggFunc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{exec_err, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility};
use datafusion::physical_expr::expressions::Literal;

pub fn udafs() -> Vec<AggregateUDF> {
    vec![AggregateUDF::from(TopK::new()), AggregateUDF::from(Histogram::new()), AggregateUDF::from(CollectSet::new())]
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
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        binary_state(args)
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
        let item = args.expr_fields[0].data_type();
        Ok(Box::new(SlotAccumulator::new(AggFunc::TopK(k as usize), item, args.return_field.data_type())?))
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
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        binary_state(args)
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let item = args.expr_fields[0].data_type();
        Ok(Box::new(SlotAccumulator::new(AggFunc::Histogram, item, args.return_field.data_type())?))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CollectSet {
    signature: Signature,
}

impl CollectSet {
    fn new() -> Self {
        CollectSet { signature: Signature::new(TypeSignature::Any(1), Volatility::Immutable) }
    }
}

impl AggregateUDFImpl for CollectSet {
    fn name(&self) -> &str {
        "collect_set"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new("item", args[0].clone(), true))))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        binary_state(args)
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let item = args.expr_fields[0].data_type();
        Ok(Box::new(SlotAccumulator::new(AggFunc::CollectSet, item, args.return_field.data_type())?))
    }
}

/// TOPK, HISTOGRAM and COLLECT_SET over a batch: the continuous aggregation's own accumulator
/// (`dataflow::operator::accumulator`), so both give the same answers. Its state between
/// partial aggregations is the accumulator's bytes.
struct SlotAccumulator {
    slot: AggSlot,
    acc: Acc,
}

impl std::fmt::Debug for SlotAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotAccumulator({})", self.slot.func.name())
    }
}

impl SlotAccumulator {
    fn new(func: AggFunc, arg: &DataType, out: &DataType) -> Result<SlotAccumulator> {
        // A TOPK that never retracts keeps only the k largest values.
        let retractions = !matches!(func, AggFunc::TopK(_));
        let slot = AggSlot::new(func, arg, out, retractions).map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(SlotAccumulator { acc: slot.initial(), slot })
    }

    fn fold(&mut self, values: &ArrayRef, sign: i64) -> Result<()> {
        let external = |e: crate::error::EddyError| DataFusionError::External(Box::new(e));
        let column = self.slot.column(values.clone()).map_err(external)?;
        for row in 0..values.len() {
            self.slot.fold(&mut self.acc, &column, row, sign).map_err(external)?;
        }
        Ok(())
    }
}

impl Accumulator for SlotAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.fold(&values[0], 1)
    }
    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.fold(&values[0], -1)
    }
    fn supports_retract_batch(&self) -> bool {
        !matches!(self.slot.func, AggFunc::TopK(_))
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let external = |e: crate::error::EddyError| DataFusionError::External(Box::new(e));
        let states = states[0].as_binary::<i32>();
        for i in 0..states.len() {
            if states.is_null(i) {
                continue;
            }
            let group = decode_group(states.value(i)).map_err(external)?;
            if let Some(other) = group.accs.first() {
                self.slot.merge(&mut self.acc, other).map_err(external)?;
            }
        }
        Ok(())
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let group = Group { n: 0, accs: vec![self.acc.clone()], row: None, dirty: false };
        Ok(vec![ScalarValue::Binary(Some(encode_group(&group)))])
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        let array = self.slot.finish(&[&self.acc]).map_err(|e| DataFusionError::External(Box::new(e)))?;
        ScalarValue::try_from_array(&array, 0)
    }
    fn size(&self) -> usize {
        let values = match &self.acc {
            Acc::Set(set) => set.keys().map(|k| k.len() + 48).sum(),
            Acc::List(items) => items.iter().map(|v| v.len() + 24).sum(),
            _ => 0,
        };
        std::mem::size_of_val(self) + values
    }
}

/// The state field of these UDAFs: the accumulator's bytes.
fn binary_state(args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
    Ok(vec![Arc::new(Field::new(format!("{}[acc]", args.name), DataType::Binary, true))])
}
