//! Typed accumulators of a continuous aggregation, and their binary state.
//!
//! Sums are kept in their type's own arithmetic (BIGINT in i64, DECIMAL exactly in i128 units
//! of the argument's scale, DOUBLE in f64) and checked against the result type's range.
//! Every accumulator that keeps values (MIN, MAX, LATEST, EARLIEST, COUNT(DISTINCT), TOPK,
//! HISTOGRAM, COLLECT_LIST) keeps them in Arrow's row format for the argument's type:
//! typed, ordered as SQL orders them (so MIN and MAX compare bytes) and decoded back into
//! arrays with one call per batch of groups. Multisets (MIN/MAX over tables, COUNT DISTINCT,
//! TOPK, HISTOGRAM) map each value to its count, so a retraction finds the next extreme.
//!
//! A group's state is `encode_group`'s bytes (`group_state.rs`): a format byte, the row
//! count, the output row (read by pull and push queries without the accumulators) and the
//! accumulators.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use serde_json::Value;

use crate::error::{EddyError, Result};
use crate::format::types::format_decimal;
use crate::format::{cell_at, cells_to_array};
use crate::plan::AggFunc;

mod group_state;
pub use group_state::{decode_group, encode_group, group_row, output_row, Group, GROUP_STATE_FORMAT};

/// DECIMAL digits an i128 always holds (Arrow's Decimal128 precision).
const DECIMAL_DIGITS_MAX: u32 = 38;

/// One aggregate's accumulator for one group.
#[derive(Debug, Clone, PartialEq)]
pub enum Acc {
    Count(i64),
    /// SUM/AVG of integers: the sum and the count of values.
    SumInt {
        sum: i64,
        n: i64,
    },
    /// SUM/AVG of DECIMALs: the sum in units of 10^-scale of the argument.
    SumDecimal {
        sum: i128,
        n: i64,
    },
    /// SUM/AVG of DOUBLEs.
    SumFloat {
        sum: f64,
        n: i64,
    },
    /// MIN/MAX over a stream, LATEST, EARLIEST: one value (row format), or none yet.
    One(Option<Vec<u8>>),
    /// A multiset of values (row format) with their counts; none at zero.
    Set(BTreeMap<Vec<u8>, i64>),
    /// COLLECT_LIST: values in processing order.
    List(Vec<Vec<u8>>),
    /// STDDEV_*: the count, mean and sum of squared deviations (Welford's, with removal).
    Moments {
        n: i64,
        mean: f64,
        m2: f64,
    },
    /// CORRELATION(x, y): counts, means, sums of squared deviations and the co-moment.
    CoMoments {
        n: i64,
        mx: f64,
        my: f64,
        m2x: f64,
        m2y: f64,
        cxy: f64,
    },
}

/// How one aggregate reads its argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArgKind {
    /// Integers sum as BIGINT: past its range the row is rejected (Postgres: bigint out of range).
    Integer,
    /// DECIMAL at `scale`: sums are exact and may have at most `digits_max` digits (the result
    /// type's precision at this scale).
    Decimal { scale: u8, digits_max: u32 },
    /// DOUBLE: sums in f64.
    Float,
    /// Anything else: only kept as values.
    Value,
}

/// One aggregate of a query: its function, argument type and the row format of its values.
pub struct AggSlot {
    pub func: AggFunc,
    pub kind: ArgKind,
    /// The type arguments are cast to before folding.
    pub arg_type: DataType,
    /// The type of this aggregate's column (DataFusion's).
    pub out_type: DataType,
    values: RowConverter,
    /// A NULL argument in row format (what a group without a value decodes to).
    null_row: Vec<u8>,
    retractions: bool,
}

/// An argument column of one batch, read the way its aggregate folds it.
pub enum ArgColumn {
    Int(Int64Array),
    Decimal(Decimal128Array),
    Float(Float64Array),
    /// Values in row format, with the array for its nulls.
    Rows(Rows, ArrayRef),
    /// COUNT: only whether a value is there.
    Present(ArrayRef),
    /// CORRELATION's two arguments.
    Pair(Float64Array, Float64Array),
}

impl AggSlot {
    /// `arg_type`: the argument's type as planned; `out_type`: the aggregate's result type.
    pub fn new(func: AggFunc, arg_type: &DataType, out_type: &DataType, retractions: bool) -> Result<AggSlot> {
        let sums = matches!(func, AggFunc::Sum | AggFunc::Avg);
        let (kind, arg_type) = match arg_type {
            _ if matches!(func, AggFunc::Stddev { .. }) => (ArgKind::Float, DataType::Float64),
            t if func == AggFunc::Correlation => (ArgKind::Float, t.clone()),
            t if sums && t.is_integer() => (ArgKind::Integer, DataType::Int64),
            DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) if *s >= 0 => {
                let scale = *s as u8;
                // A SUM's digits at the argument's scale are bounded by its result type
                // (DataFusion: DECIMAL(min(38, p + 10), s)); AVG's sum only by i128.
                let digits_max = match out_type {
                    DataType::Decimal128(p, s) if func == AggFunc::Sum => {
                        (i32::from(*p) - i32::from(*s) + i32::from(scale)).clamp(1, DECIMAL_DIGITS_MAX as i32) as u32
                    }
                    _ => DECIMAL_DIGITS_MAX,
                };
                (ArgKind::Decimal { scale, digits_max }, DataType::Decimal128(*p, *s))
            }
            DataType::Decimal128(..) | DataType::Decimal256(..) => (ArgKind::Float, DataType::Float64),
            _ if sums => (ArgKind::Float, DataType::Float64),
            t if t.is_floating() => (ArgKind::Float, t.clone()),
            t if t.is_integer() => (ArgKind::Integer, t.clone()),
            t => (ArgKind::Value, t.clone()),
        };
        let values = RowConverter::new(vec![SortField::new(arg_type.clone())])
            .map_err(|e| EddyError::NotImplemented(format!("{} over {arg_type}: {e}", func.name())))?;
        let null_row = values.convert_columns(&[new_null_array(&arg_type, 1)])?.row(0).data().to_vec();
        Ok(AggSlot { func, kind, arg_type, out_type: out_type.clone(), values, null_row, retractions })
    }

    /// Where a group starts.
    pub fn initial(&self) -> Acc {
        match self.func {
            AggFunc::Count => Acc::Count(0),
            AggFunc::Sum | AggFunc::Avg => match self.kind {
                ArgKind::Integer => Acc::SumInt { sum: 0, n: 0 },
                ArgKind::Decimal { .. } => Acc::SumDecimal { sum: 0, n: 0 },
                ArgKind::Float | ArgKind::Value => Acc::SumFloat { sum: 0.0, n: 0 },
            },
            AggFunc::Min | AggFunc::Max if self.retractions => Acc::Set(BTreeMap::new()),
            AggFunc::Min | AggFunc::Max | AggFunc::Latest | AggFunc::Earliest => Acc::One(None),
            AggFunc::CountDistinct | AggFunc::TopK(_) | AggFunc::TopKDistinct(_) | AggFunc::Histogram => {
                Acc::Set(BTreeMap::new())
            }
            AggFunc::ByOffset { n: None, .. } => Acc::One(None),
            AggFunc::CollectList | AggFunc::CollectSet | AggFunc::ByOffset { .. } => Acc::List(Vec::new()),
            AggFunc::Stddev { .. } => Acc::Moments { n: 0, mean: 0.0, m2: 0.0 },
            AggFunc::Correlation => Acc::CoMoments { n: 0, mx: 0.0, my: 0.0, m2x: 0.0, m2y: 0.0, cxy: 0.0 },
        }
    }

    /// This aggregate's argument over a batch, read once for every row.
    pub fn column(&self, arg: ArrayRef) -> Result<ArgColumn> {
        if self.func == AggFunc::Correlation {
            // (x, y) as a struct of two columns (`plan::agg_spec`).
            let pair = arg
                .as_struct_opt()
                .filter(|s| s.num_columns() == 2)
                .ok_or_else(|| EddyError::Internal(format!("CORRELATION's arguments as {}", arg.data_type())))?;
            let float = |c: &ArrayRef| -> Result<Float64Array> {
                Ok(cast(c, &DataType::Float64)?.as_primitive::<Float64Type>().clone())
            };
            return Ok(ArgColumn::Pair(float(pair.column(0))?, float(pair.column(1))?));
        }
        let arg = if arg.data_type() == &self.arg_type { arg } else { cast(&arg, &self.arg_type)? };
        Ok(match (self.func, self.kind) {
            (AggFunc::Count, _) => ArgColumn::Present(arg),
            (AggFunc::Sum | AggFunc::Avg, ArgKind::Integer) => ArgColumn::Int(arg.as_primitive::<Int64Type>().clone()),
            (AggFunc::Sum | AggFunc::Avg, ArgKind::Decimal { .. }) => {
                ArgColumn::Decimal(arg.as_primitive::<Decimal128Type>().clone())
            }
            (AggFunc::Sum | AggFunc::Avg | AggFunc::Stddev { .. }, _) => {
                ArgColumn::Float(arg.as_primitive::<Float64Type>().clone())
            }
            _ => ArgColumn::Rows(self.values.convert_columns(std::slice::from_ref(&arg))?, arg),
        })
    }

    /// Folds row `row` of `column` into `acc` with `sign` (+1 add, -1 retract); NULLs are
    /// ignored, as in SQL. A sum that leaves its type's range is an error (the caller rejects
    /// the row), never a silent change of type or value.
    pub fn fold(&self, acc: &mut Acc, column: &ArgColumn, row: usize, sign: i64) -> Result<()> {
        match (acc, column) {
            (Acc::Count(c), ArgColumn::Present(a)) => {
                if a.is_valid(row) {
                    *c += sign;
                }
            }
            (Acc::SumInt { sum, n }, ArgColumn::Int(a)) => {
                if a.is_valid(row) {
                    let x = a.value(row);
                    *sum = x.checked_mul(sign).and_then(|x| sum.checked_add(x)).ok_or_else(|| {
                        let op = if sign < 0 { "minus" } else { "plus" };
                        EddyError::OutOfRange(format!("bigint out of range: SUM {sum} {op} {x} is past BIGINT's range"))
                    })?;
                    *n += sign;
                }
            }
            (Acc::SumDecimal { sum, n }, ArgColumn::Decimal(a)) => {
                if a.is_valid(row) {
                    *sum = self.add_decimal(*sum, a.value(row), sign)?;
                    *n += sign;
                }
            }
            (Acc::SumFloat { sum, n }, ArgColumn::Float(a)) => {
                if a.is_valid(row) {
                    let x = a.value(row);
                    let total = *sum + sign as f64 * x;
                    if !total.is_finite() {
                        return Err(EddyError::OutOfRange(format!(
                            "value out of range: overflow: SUM of {sum} and {x}"
                        )));
                    }
                    *sum = total;
                    *n += sign;
                }
            }
            (Acc::Moments { n, mean, m2 }, ArgColumn::Float(a)) => {
                if a.is_valid(row) {
                    let x = a.value(row);
                    if sign > 0 {
                        *n += 1;
                        let delta = x - *mean;
                        *mean += delta / *n as f64;
                        *m2 += delta * (x - *mean);
                    } else if *n > 1 {
                        let old = *mean;
                        *n -= 1;
                        *mean = (old * (*n + 1) as f64 - x) / *n as f64;
                        *m2 = (*m2 - (x - old) * (x - *mean)).max(0.0);
                    } else {
                        (*n, *mean, *m2) = (0, 0.0, 0.0);
                    }
                }
            }
            (Acc::CoMoments { n, mx, my, m2x, m2y, cxy }, ArgColumn::Pair(xs, ys)) => {
                if xs.is_valid(row) && ys.is_valid(row) {
                    let (x, y) = (xs.value(row), ys.value(row));
                    if sign > 0 {
                        *n += 1;
                        let (dx, dy) = (x - *mx, y - *my);
                        *mx += dx / *n as f64;
                        *my += dy / *n as f64;
                        *m2x += dx * (x - *mx);
                        *m2y += dy * (y - *my);
                        *cxy += dx * (y - *my);
                    } else if *n > 1 {
                        let (ox, oy) = (*mx, *my);
                        *n -= 1;
                        *mx = (ox * (*n + 1) as f64 - x) / *n as f64;
                        *my = (oy * (*n + 1) as f64 - y) / *n as f64;
                        *m2x = (*m2x - (x - ox) * (x - *mx)).max(0.0);
                        *m2y = (*m2y - (y - oy) * (y - *my)).max(0.0);
                        *cxy -= (x - ox) * (y - *my);
                    } else {
                        (*n, *mx, *my, *m2x, *m2y, *cxy) = (0, 0.0, 0.0, 0.0, 0.0, 0.0);
                    }
                }
            }
            (acc, ArgColumn::Rows(rows, array)) => {
                // NULLs are skipped, except by *_BY_OFFSET(..., ignoreNulls = false).
                let keeps_nulls = matches!(self.func, AggFunc::ByOffset { ignore_nulls: false, .. });
                if array.is_null(row) && !keeps_nulls {
                    return Ok(());
                }
                self.fold_value(acc, rows.row(row).data(), sign);
            }
            (acc, _) => {
                return Err(EddyError::Internal(format!(
                    "{}: accumulator {acc:?} does not match its argument",
                    self.func.name()
                )))
            }
        }
        Ok(())
    }

    fn fold_value(&self, acc: &mut Acc, v: &[u8], sign: i64) {
        match (self.func, acc) {
            (AggFunc::Latest, Acc::One(one)) => *one = Some(v.to_vec()),
            (AggFunc::Earliest, Acc::One(one)) if one.is_none() => *one = Some(v.to_vec()),
            (AggFunc::Min, Acc::One(one)) if one.as_deref().is_none_or(|old| v < old) => *one = Some(v.to_vec()),
            (AggFunc::Max, Acc::One(one)) if one.as_deref().is_none_or(|old| v > old) => *one = Some(v.to_vec()),
            (AggFunc::Earliest | AggFunc::Min | AggFunc::Max, Acc::One(_)) => {}
            (AggFunc::ByOffset { latest: true, .. }, Acc::One(one)) => *one = Some(v.to_vec()),
            (AggFunc::ByOffset { latest: false, .. }, Acc::One(one)) if one.is_none() => *one = Some(v.to_vec()),
            (AggFunc::ByOffset { latest, n: Some(k), .. }, Acc::List(items)) => {
                if latest {
                    items.push(v.to_vec());
                    if items.len() > k {
                        items.remove(0);
                    }
                } else if items.len() < k {
                    items.push(v.to_vec());
                }
            }
            (AggFunc::TopKDistinct(k), Acc::Set(set)) => {
                set_add(set, v, sign);
                if !self.retractions {
                    while set.len() > k {
                        set.pop_first();
                    }
                }
            }
            (func, Acc::Set(set)) => {
                set_add(set, v, sign);
                if let (AggFunc::TopK(k), false) = (func, self.retractions) {
                    trim_to_largest(set, k);
                }
            }
            // Over a stream a value seen before is not kept again; over a table every copy
            // is, so that retracting one leaves the others (the result lists each once).
            (AggFunc::CollectSet, Acc::List(items)) if sign > 0 && !self.retractions => {
                let unseen = !items.iter().any(|x| x == v);
                if unseen {
                    items.push(v.to_vec());
                }
            }
            (_, Acc::List(items)) => {
                if sign > 0 {
                    items.push(v.to_vec());
                } else if let Some(i) = items.iter().position(|x| x == v) {
                    items.remove(i);
                }
            }
            _ => {}
        }
    }

    fn add_decimal(&self, sum: i128, x: i128, sign: i64) -> Result<i128> {
        let ArgKind::Decimal { scale, digits_max } = self.kind else {
            return Err(EddyError::Internal("a DECIMAL sum of another type".into()));
        };
        let limit = 10i128.pow(digits_max);
        match x.checked_mul(i128::from(sign)).and_then(|x| sum.checked_add(x)) {
            Some(total) if total.unsigned_abs() < limit.unsigned_abs() => Ok(total),
            _ => Err(EddyError::OutOfRange(format!(
                "numeric field overflow: SUM of {} and {} needs more than {digits_max} digits",
                format_decimal(sum, scale),
                format_decimal(x, scale)
            ))),
        }
    }

    /// Adds `other` (an older session of the same group) into `acc`.
    pub fn merge(&self, acc: &mut Acc, other: &Acc) -> Result<()> {
        match (&mut *acc, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::SumInt { sum, n }, Acc::SumInt { sum: s2, n: n2 }) => {
                *sum = sum.checked_add(*s2).ok_or_else(|| {
                    EddyError::OutOfRange(format!("bigint out of range: SUM {sum} plus {s2} is past BIGINT's range"))
                })?;
                *n += n2;
            }
            (Acc::SumDecimal { sum, n }, Acc::SumDecimal { sum: s2, n: n2 }) => {
                *sum = self.add_decimal(*sum, *s2, 1)?;
                *n += n2;
            }
            (Acc::SumFloat { sum, n }, Acc::SumFloat { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            // Sessions are merged oldest first.
            (acc @ Acc::One(_), Acc::One(Some(v))) => self.fold_value(acc, v, 1),
            (Acc::Set(a), Acc::Set(b)) => {
                for (v, c) in b {
                    set_add(a, v, *c);
                }
                if let (AggFunc::TopK(k), false) = (self.func, self.retractions) {
                    trim_to_largest(a, k);
                }
            }
            (Acc::List(a), Acc::List(b)) => {
                a.extend(b.iter().cloned());
                match self.func {
                    AggFunc::ByOffset { latest: true, n: Some(k), .. } if a.len() > k => {
                        a.drain(..a.len() - k);
                    }
                    AggFunc::ByOffset { latest: false, n: Some(k), .. } => a.truncate(k),
                    _ => {}
                }
            }
            (Acc::Moments { n, mean, m2 }, Acc::Moments { n: n2, mean: mean2, m2: m22 }) if *n2 > 0 => {
                let total = *n + n2;
                let delta = mean2 - *mean;
                *m2 += m22 + delta * delta * (*n as f64) * (*n2 as f64) / total as f64;
                *mean += delta * *n2 as f64 / total as f64;
                *n = total;
            }
            (
                Acc::CoMoments { n, mx, my, m2x, m2y, cxy },
                Acc::CoMoments { n: n2, mx: mx2, my: my2, m2x: m2x2, m2y: m2y2, cxy: cxy2 },
            ) if *n2 > 0 => {
                let total = *n + n2;
                let (dx, dy) = (mx2 - *mx, my2 - *my);
                let w = (*n as f64) * (*n2 as f64) / total as f64;
                *m2x += m2x2 + dx * dx * w;
                *m2y += m2y2 + dy * dy * w;
                *cxy += cxy2 + dx * dy * w;
                *mx += dx * *n2 as f64 / total as f64;
                *my += dy * *n2 as f64 / total as f64;
                *n = total;
            }
            _ => {}
        }
        if let (AggFunc::TopKDistinct(k), Acc::Set(set), false) = (self.func, &mut *acc, self.retractions) {
            while set.len() > k {
                set.pop_first();
            }
        }
        Ok(())
    }

    /// This aggregate's column over some groups' accumulators, of its result type.
    pub fn finish(&self, accs: &[&Acc]) -> Result<ArrayRef> {
        let out = &self.out_type;
        let array: ArrayRef = match self.func {
            AggFunc::Count => {
                Arc::new(Int64Array::from_iter_values(accs.iter().map(|a| if let Acc::Count(c) = a { *c } else { 0 })))
            }
            AggFunc::CountDistinct => Arc::new(Int64Array::from_iter_values(accs.iter().map(|a| {
                if let Acc::Set(s) = a {
                    s.len() as i64
                } else {
                    0
                }
            }))),
            AggFunc::Sum => self.sums(accs)?,
            AggFunc::Avg => self.averages(accs)?,
            AggFunc::Stddev { sample } => Arc::new(
                accs.iter()
                    .map(|a| match a {
                        // ksqlDB: 0 for a single value.
                        Acc::Moments { n, .. } if *n == 1 => Some(0.0),
                        Acc::Moments { n, m2, .. } if *n > 1 => {
                            Some((m2.max(0.0) / (*n - i64::from(sample)) as f64).sqrt())
                        }
                        _ => None,
                    })
                    .collect::<Float64Array>(),
            ),
            AggFunc::Correlation => Arc::new(
                accs.iter()
                    .map(|a| match a {
                        Acc::CoMoments { n, m2x, m2y, cxy, .. } if *n > 1 && *m2x > 0.0 && *m2y > 0.0 => {
                            Some((cxy / (m2x * m2y).sqrt()).clamp(-1.0, 1.0))
                        }
                        _ => None,
                    })
                    .collect::<Float64Array>(),
            ),
            AggFunc::Min | AggFunc::Max | AggFunc::Latest | AggFunc::Earliest | AggFunc::ByOffset { n: None, .. } => {
                let picked: Vec<&[u8]> = accs
                    .iter()
                    .map(|a| match (a, self.func) {
                        (Acc::One(Some(v)), _) => v.as_slice(),
                        (Acc::Set(s), AggFunc::Min) => s.keys().next().map_or(&self.null_row[..], |v| v.as_slice()),
                        (Acc::Set(s), _) => s.keys().next_back().map_or(&self.null_row[..], |v| v.as_slice()),
                        _ => &self.null_row[..],
                    })
                    .collect();
                self.decode(&picked)?
            }
            AggFunc::TopK(_)
            | AggFunc::TopKDistinct(_)
            | AggFunc::ByOffset { .. }
            | AggFunc::CollectList
            | AggFunc::CollectSet
            | AggFunc::Histogram => {
                let cells = accs.iter().map(|a| self.cell(a)).collect::<Result<Vec<Value>>>()?;
                return Ok(cells_to_array(out, &cells)?);
            }
        };
        Ok(if array.data_type() == out { array } else { cast(&array, out)? })
    }

    /// Values in row format, decoded as the argument's type.
    fn decode(&self, values: &[&[u8]]) -> Result<ArrayRef> {
        if values.is_empty() {
            return Ok(new_null_array(&self.arg_type, 0));
        }
        let parser = self.values.parser();
        let mut arrays = self.values.convert_rows(values.iter().map(|v| parser.parse(v)))?;
        Ok(arrays.remove(0))
    }

    /// TOPK, COLLECT_LIST, COLLECT_SET and HISTOGRAM as the cells their result types are built from.
    fn cell(&self, acc: &Acc) -> Result<Value> {
        let cells = |values: &[&[u8]]| -> Result<Vec<Value>> {
            let array = self.decode(values)?;
            Ok((0..array.len()).map(|i| cell_at(array.as_ref(), i)).collect())
        };
        Ok(match (self.func, acc) {
            (AggFunc::TopK(k), Acc::Set(set)) => {
                // The largest k, largest first.
                let mut picked: Vec<&[u8]> = Vec::new();
                for (v, c) in set.iter().rev() {
                    for _ in 0..*c {
                        if picked.len() < k {
                            picked.push(v);
                        }
                    }
                }
                Value::Array(cells(&picked)?)
            }
            (AggFunc::TopKDistinct(k), Acc::Set(set)) => {
                let picked: Vec<&[u8]> = set.keys().rev().take(k).map(Vec::as_slice).collect();
                Value::Array(cells(&picked)?)
            }
            (AggFunc::CollectList | AggFunc::ByOffset { .. }, Acc::List(items)) => {
                Value::Array(cells(&items.iter().map(Vec::as_slice).collect::<Vec<_>>())?)
            }
            (AggFunc::CollectSet, Acc::List(items)) => {
                let mut seen = std::collections::HashSet::new();
                let distinct: Vec<&[u8]> = items.iter().map(Vec::as_slice).filter(|v| seen.insert(*v)).collect();
                Value::Array(cells(&distinct)?)
            }
            (AggFunc::Histogram, Acc::Set(set)) => {
                let values = cells(&set.keys().map(Vec::as_slice).collect::<Vec<_>>())?;
                let mut counts = serde_json::Map::new();
                for (v, c) in values.into_iter().zip(set.values()) {
                    let key = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let n = counts.get(&key).and_then(Value::as_i64).unwrap_or(0) + c;
                    counts.insert(key, Value::from(n));
                }
                counts.sort_keys();
                Value::Object(counts)
            }
            _ => Value::Null,
        })
    }

    fn sums(&self, accs: &[&Acc]) -> Result<ArrayRef> {
        Ok(match self.kind {
            ArgKind::Integer => Arc::new(
                accs.iter()
                    .map(|a| match a {
                        Acc::SumInt { sum, n } if *n > 0 => Some(*sum),
                        _ => None,
                    })
                    .collect::<Int64Array>(),
            ),
            // A DECIMAL sum is exact at the argument's scale, which is SUM's scale.
            ArgKind::Decimal { scale, .. } => {
                let sums: Decimal128Array = accs
                    .iter()
                    .map(|a| match a {
                        Acc::SumDecimal { sum, n } if *n > 0 => Some(*sum),
                        _ => None,
                    })
                    .collect();
                let precision = match self.out_type {
                    DataType::Decimal128(p, s) if s as u8 == scale => p,
                    _ => DECIMAL_DIGITS_MAX as u8,
                };
                Arc::new(sums.with_precision_and_scale(precision, scale as i8)?)
            }
            ArgKind::Float | ArgKind::Value => Arc::new(
                accs.iter()
                    .map(|a| match a {
                        Acc::SumFloat { sum, n } if *n > 0 => Some(*sum),
                        _ => None,
                    })
                    .collect::<Float64Array>(),
            ),
        })
    }

    fn averages(&self, accs: &[&Acc]) -> Result<ArrayRef> {
        if let (ArgKind::Decimal { scale, .. }, DataType::Decimal128(p, out_scale)) = (self.kind, &self.out_type) {
            if *out_scale >= 0 {
                let mut avgs = Vec::with_capacity(accs.len());
                for a in accs {
                    avgs.push(match a {
                        Acc::SumDecimal { sum, n } if *n > 0 => {
                            Some(divide_rounded(*sum, scale, *n, *out_scale as u8).ok_or_else(|| {
                                EddyError::OutOfRange(format!("numeric field overflow: AVG of {}", self.out_type))
                            })?)
                        }
                        _ => None,
                    });
                }
                return Ok(Arc::new(Decimal128Array::from(avgs).with_precision_and_scale(*p, *out_scale)?));
            }
        }
        Ok(Arc::new(
            accs.iter()
                .map(|a| match (a, self.kind) {
                    (Acc::SumInt { sum, n }, _) if *n > 0 => Some(*sum as f64 / *n as f64),
                    (Acc::SumDecimal { sum, n }, ArgKind::Decimal { scale, .. }) if *n > 0 => {
                        Some(*sum as f64 / 10f64.powi(i32::from(scale)) / *n as f64)
                    }
                    (Acc::SumFloat { sum, n }, _) if *n > 0 => Some(*sum / *n as f64),
                    _ => None,
                })
                .collect::<Float64Array>(),
        ))
    }
}

/// A multiset add: the value's count moves by `sign`; at zero the value goes.
fn set_add(set: &mut BTreeMap<Vec<u8>, i64>, v: &[u8], sign: i64) {
    match set.get_mut(v) {
        Some(c) => {
            *c += sign;
            if *c <= 0 {
                set.remove(v);
            }
        }
        None if sign > 0 => {
            set.insert(v.to_vec(), sign);
        }
        None => {}
    }
}

/// Keeps the k largest values (a stream's TOPK never retracts).
fn trim_to_largest(set: &mut BTreeMap<Vec<u8>, i64>, k: usize) {
    let mut total: i64 = set.values().sum();
    while total > k as i64 {
        let Some(mut first) = set.first_entry() else { break };
        let n = *first.get();
        let drop = n.min(total - k as i64);
        if drop >= n {
            first.remove();
        } else {
            *first.get_mut() = n - drop;
        }
        total -= drop;
    }
}

/// `units / 10^scale / count` at `out_scale`, rounded half away from zero (Postgres's
/// NUMERIC rounding); `None` when it does not fit in 38 digits.
fn divide_rounded(units: i128, scale: u8, count: i64, out_scale: u8) -> Option<i128> {
    let count = i128::from(count);
    if out_scale >= scale {
        // units * 10^k / count = q * 10^k + r * 10^k / count; r < count keeps it in range.
        let p = 10i128.checked_pow(u32::from(out_scale - scale))?;
        let (q, r) = (units / count, units % count);
        q.checked_mul(p)?.checked_add(div_half_away(r.checked_mul(p)?, count))
    } else {
        let den = count.checked_mul(10i128.checked_pow(u32::from(scale - out_scale))?)?;
        Some(div_half_away(units, den))
    }
}

/// `num / den` (den > 0) rounded half away from zero.
fn div_half_away(num: i128, den: i128) -> i128 {
    let (q, r) = (num / den, num % den);
    if r.unsigned_abs() >= den.unsigned_abs() - r.unsigned_abs() {
        q + num.signum()
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::Field;

    fn decimals(values: &[i128], scale: i8) -> ArrayRef {
        Arc::new(Decimal128Array::from(values.to_vec()).with_precision_and_scale(20, scale).unwrap())
    }

    fn fold_all(slot: &AggSlot, array: ArrayRef, signs: &[i64]) -> Result<Acc> {
        let mut acc = slot.initial();
        let column = slot.column(array)?;
        for (row, sign) in signs.iter().enumerate() {
            slot.fold(&mut acc, &column, row, *sign)?;
        }
        Ok(acc)
    }

    #[test]
    fn stddev_and_correlation_retract_to_the_statistics_of_what_is_left() {
        let f = |slot: &AggSlot, acc: &Acc| match cell_at(slot.finish(&[acc]).unwrap().as_ref(), 0) {
            Value::Number(n) => n.as_f64().unwrap(),
            other => panic!("{other}"),
        };
        let sd = AggSlot::new(AggFunc::Stddev { sample: true }, &DataType::Float64, &DataType::Float64, true).unwrap();
        let xs: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 4.0, 7.0, 100.0]));
        let acc = fold_all(&sd, xs.clone(), &[1, 1, 1, 1, 1]).unwrap();
        let mut retracted = acc.clone();
        sd.fold(&mut retracted, &sd.column(xs).unwrap(), 4, -1).unwrap();
        assert!((f(&sd, &retracted) - 7f64.sqrt()).abs() < 1e-9);
        // Two halves merged (session windows) equal the whole.
        let (a, b): (ArrayRef, ArrayRef) =
            (Arc::new(Float64Array::from(vec![1.0, 2.0])), Arc::new(Float64Array::from(vec![4.0, 7.0])));
        let mut left = fold_all(&sd, a, &[1, 1]).unwrap();
        sd.merge(&mut left, &fold_all(&sd, b, &[1, 1]).unwrap()).unwrap();
        assert!((f(&sd, &left) - 7f64.sqrt()).abs() < 1e-9);

        let pair = DataType::Struct(
            vec![Field::new("x", DataType::Float64, true), Field::new("y", DataType::Int64, true)].into(),
        );
        let corr = AggSlot::new(AggFunc::Correlation, &pair, &DataType::Float64, true).unwrap();
        let xy: ArrayRef = Arc::new(datafusion::arrow::array::StructArray::from(vec![
            (
                Arc::new(Field::new("x", DataType::Float64, true)),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 50.0])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("y", DataType::Int64, true)),
                Arc::new(Int64Array::from(vec![2, 4, 6, -9])) as ArrayRef,
            ),
        ]));
        let acc = fold_all(&corr, xy.clone(), &[1, 1, 1, 1]).unwrap();
        assert!(f(&corr, &acc) < 0.0);
        let mut retracted = acc.clone();
        corr.fold(&mut retracted, &corr.column(xy).unwrap(), 3, -1).unwrap();
        assert!((f(&corr, &retracted) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn decimal_sums_are_exact_and_bounded_by_the_result_type() {
        let slot =
            AggSlot::new(AggFunc::Sum, &DataType::Decimal128(20, 2), &DataType::Decimal128(30, 2), false).unwrap();
        let acc = fold_all(&slot, decimals(&[12345678901234567, 1, 12345678901234567], 2), &[1, 1, 1]).unwrap();
        let out = slot.finish(&[&acc]).unwrap();
        assert_eq!(cell_at(out.as_ref(), 0), Value::from("246913578024691.35"));
        let tight =
            AggSlot::new(AggFunc::Sum, &DataType::Decimal128(4, 2), &DataType::Decimal128(4, 2), false).unwrap();
        assert!(fold_all(&tight, decimals(&[9998, 1], 2), &[1, 1]).is_ok());
        let err = fold_all(&tight, decimals(&[9999, 1], 2), &[1, 1]).unwrap_err();
        assert!(matches!(err, EddyError::OutOfRange(ref m) if m.starts_with("numeric field overflow")), "{err}");
    }

    #[test]
    fn bigint_sums_reject_overflow_both_ways() {
        let slot = AggSlot::new(AggFunc::Sum, &DataType::Int64, &DataType::Int64, true).unwrap();
        let ints = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
        let err = fold_all(&slot, ints(vec![i64::MAX - 10, 11]), &[1, 1]).unwrap_err();
        assert!(err.to_string().starts_with("bigint out of range"), "{err}");
        let err = fold_all(&slot, ints(vec![i64::MAX - 10, -11]), &[1, -1]).unwrap_err();
        assert!(err.to_string().starts_with("bigint out of range"), "{err}");
        let acc = fold_all(&slot, ints(vec![i64::MAX - 10, 10]), &[1, 1]).unwrap();
        assert_eq!(cell_at(slot.finish(&[&acc]).unwrap().as_ref(), 0), Value::from(i64::MAX));
    }

    #[test]
    fn decimal_averages_round_half_away_from_zero() {
        assert_eq!(divide_rounded(2000, 2, 3, 6), Some(6_666_667));
        assert_eq!(divide_rounded(-2000, 2, 3, 6), Some(-6_666_667));
        assert_eq!(divide_rounded(5, 2, 2, 2), Some(3));
        assert_eq!(divide_rounded(-5, 2, 2, 2), Some(-3));
        assert_eq!(divide_rounded(5, 2, 2, 1), Some(0));
        assert_eq!(divide_rounded(i128::MAX, 2, 1, 40), None);
        let slot =
            AggSlot::new(AggFunc::Avg, &DataType::Decimal128(10, 2), &DataType::Decimal128(24, 6), true).unwrap();
        let acc = fold_all(&slot, decimals(&[1, 1, 0], 2), &[1, 1, 1]).unwrap();
        assert_eq!(cell_at(slot.finish(&[&acc]).unwrap().as_ref(), 0), Value::from("0.006667"));
    }

    #[test]
    fn extremes_order_by_value_and_retract_to_the_next() {
        for retractions in [false, true] {
            let slot =
                AggSlot::new(AggFunc::Max, &DataType::Decimal128(20, 2), &DataType::Decimal128(20, 2), retractions)
                    .unwrap();
            let acc = fold_all(&slot, decimals(&[999, 1000, -2000], 2), &[1, 1, 1]).unwrap();
            assert_eq!(cell_at(slot.finish(&[&acc]).unwrap().as_ref(), 0), Value::from("10.00"));
        }
        let slot = AggSlot::new(AggFunc::Min, &DataType::Utf8, &DataType::Utf8, true).unwrap();
        let words: ArrayRef = Arc::new(StringArray::from(vec!["b", "a", "c", "a", "a"]));
        let acc = fold_all(&slot, words, &[1, 1, 1, -1, -1]).unwrap();
        assert_eq!(cell_at(slot.finish(&[&acc]).unwrap().as_ref(), 0), Value::from("b"));
    }

    #[test]
    fn group_state_round_trips() {
        let mut set = BTreeMap::new();
        set.insert(vec![1, 2], 3);
        let g = Group {
            n: 7,
            accs: vec![
                Acc::Count(7),
                Acc::SumInt { sum: -4, n: 2 },
                Acc::SumDecimal { sum: i128::MIN + 1, n: 1 },
                Acc::SumFloat { sum: 0.5, n: 1 },
                Acc::One(None),
                Acc::One(Some(vec![9])),
                Acc::Set(set),
                Acc::List(vec![vec![], vec![5]]),
            ],
            row: Some(br#"[1,"x"]"#.to_vec()),
            dirty: false,
        };
        let bytes = encode_group(&g);
        assert_eq!(decode_group(&bytes).unwrap(), g);
        assert_eq!(group_row(&bytes).unwrap(), Some(vec![Value::from(1), Value::from("x")]));
        assert!(decode_group(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_group(br#"{"g":[]}"#).is_err());
    }
}
