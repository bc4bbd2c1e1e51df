//! ksqlDB's aggregates DataFusion lacks, for pull queries and for planning continuous ones:
//! `TOPK(col, k)` (the k largest values, largest first), `TOPKDISTINCT(col, k)` (the k
//! largest distinct values), `HISTOGRAM(col)` (a map from each value to its count),
//! `COLLECT_SET(col)` (each distinct value once, in the order first seen) and
//! `EARLIEST/LATEST_BY_OFFSET(col [, N] [, ignoreNulls])` (the first/last value, or N of them
//! as an ARRAY; NULLs skipped unless `ignoreNulls` is false). All run the continuous aggregation's own accumulator
//! (`dataflow::operator::accumulator`), so a pull query and a continuous query agree.

use std::sync::Arc;

use crate::dataflow::operator::accumulator::{decode_group, encode_group, Acc, AggSlot, Group};
use crate::plan::AggFunc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{exec_err, plan_err, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility};
use datafusion::physical_expr::expressions::Literal;

pub fn udafs() -> Vec<AggregateUDF> {
    [
        ("topk", 2),
        ("topkdistinct", 2),
        ("histogram", 1),
        ("collect_set", 1),
        ("earliest_by_offset", 0),
        ("latest_by_offset", 0),
    ]
    .into_iter()
    .map(|(name, arity)| {
        let signature = match arity {
            0 => Signature::one_of((1..=3).map(TypeSignature::Any).collect(), Volatility::Immutable),
            n => Signature::new(TypeSignature::Any(n), Volatility::Immutable),
        };
        AggregateUDF::from(KsqlAggregate { name, signature })
    })
    .collect()
}

/// One of ksqlDB's aggregates, by name: the planning types and a [`SlotAccumulator`].
#[derive(Debug, PartialEq, Eq, Hash)]
struct KsqlAggregate {
    name: &'static str,
    signature: Signature,
}

fn list_of(item: &DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item.clone(), true)))
}

/// `EARLIEST/LATEST_BY_OFFSET`'s options after the column: `N` (an integer literal from 1),
/// then or instead `ignoreNulls` (a boolean literal; true when not given).
pub fn by_offset_options(args: &[datafusion::logical_expr::Expr]) -> Result<(Option<usize>, bool)> {
    use datafusion::logical_expr::Expr;
    let literal = |e: &Expr| match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(v, _) => Some(v.clone()),
            _ => None,
        },
        _ => None,
    };
    let values: Vec<Option<ScalarValue>> = args.iter().map(literal).collect();
    by_offset_values(&values)
}

fn by_offset_values(values: &[Option<ScalarValue>]) -> Result<(Option<usize>, bool)> {
    let count = |v: &ScalarValue| -> Option<i64> {
        match v {
            ScalarValue::Int64(Some(n)) => Some(*n),
            ScalarValue::Int32(Some(n)) => Some(i64::from(*n)),
            ScalarValue::Int16(Some(n)) => Some(i64::from(*n)),
            ScalarValue::Int8(Some(n)) => Some(i64::from(*n)),
            _ => None,
        }
    };
    let flag = |v: &ScalarValue| match v {
        ScalarValue::Boolean(Some(b)) => Some(*b),
        _ => None,
    };
    let usage = "EARLIEST_BY_OFFSET/LATEST_BY_OFFSET(col [, N] [, ignoreNulls]) take a whole number N of at least 1 and a boolean";
    match values {
        [] => Ok((None, true)),
        [Some(v)] if flag(v).is_some() => Ok((None, flag(v).unwrap_or(true))),
        [Some(v), rest @ ..] if rest.len() <= 1 => {
            let n = count(v).filter(|n| (1..=10_000).contains(n));
            let ignore = match rest {
                [] => Some(true),
                [Some(f)] => flag(f),
                _ => None,
            };
            match (n, ignore) {
                (Some(n), Some(ignore)) => Ok((Some(n as usize), ignore)),
                _ => plan_err!("{usage}"),
            }
        }
        _ => plan_err!("{usage}"),
    }
}

impl AggregateUDFImpl for KsqlAggregate {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(match self.name {
            "histogram" => histogram_type(),
            // With N (an integer), the first/last N values.
            "earliest_by_offset" | "latest_by_offset" if args.get(1).is_some_and(DataType::is_integer) => {
                list_of(&args[0])
            }
            "earliest_by_offset" | "latest_by_offset" => args[0].clone(),
            _ => list_of(&args[0]),
        })
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        binary_state(args)
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let literal = |i: usize| args.exprs.get(i).and_then(|e| e.downcast_ref::<Literal>()).map(|l| l.value().clone());
        let k = || -> Result<usize> {
            let k = match literal(1) {
                Some(ScalarValue::Int64(Some(k))) => Some(k),
                Some(ScalarValue::Int32(Some(k))) => Some(i64::from(k)),
                _ => None,
            };
            match k.filter(|k| (1..=10_000).contains(k)) {
                Some(k) => Ok(k as usize),
                None => exec_err!("{}(col, k) takes a whole number k from 1 to 10000", self.name.to_uppercase()),
            }
        };
        let func = match self.name {
            "topk" => AggFunc::TopK(k()?),
            "topkdistinct" => AggFunc::TopKDistinct(k()?),
            "histogram" => AggFunc::Histogram,
            "collect_set" => AggFunc::CollectSet,
            by => {
                let latest = by == "latest_by_offset";
                let options: Vec<Option<ScalarValue>> = (1..args.exprs.len()).map(literal).collect();
                match by_offset_values(&options)? {
                    (None, true) if latest => AggFunc::Latest,
                    (None, true) => AggFunc::Earliest,
                    (n, ignore_nulls) => AggFunc::ByOffset { latest, n, ignore_nulls },
                }
            }
        };
        let item = args.expr_fields[0].data_type();
        Ok(Box::new(SlotAccumulator::new(func, item, args.return_field.data_type())?))
    }
}

/// `MAP<STRING, BIGINT>` as Arrow lays it out.
pub fn histogram_type() -> DataType {
    let entries =
        Fields::from(vec![Field::new("keys", DataType::Utf8, false), Field::new("values", DataType::Int64, true)]);
    DataType::Map(Arc::new(Field::new("entries", DataType::Struct(entries), false)), false)
}

/// ksqlDB's aggregates over a batch: the continuous aggregation's own accumulator
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
        let retractions = !matches!(func, AggFunc::TopK(_) | AggFunc::TopKDistinct(_));
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
        !matches!(
            self.slot.func,
            AggFunc::TopK(_)
                | AggFunc::TopKDistinct(_)
                | AggFunc::Latest
                | AggFunc::Earliest
                | AggFunc::ByOffset { .. }
        )
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
