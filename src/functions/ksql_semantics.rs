//! ksqlDB's meaning of functions that DataFusion (and Postgres) also have under the same
//! name, with another meaning. Continuous and push queries call these (`sql::select` renames
//! the calls); pull queries keep Postgres's.
//!
//! - `ROUND(x [, scale])`: halves round towards positive infinity (`ROUND(-2.5)` is -2);
//!   `ROUND(DOUBLE)` is a BIGINT, `ROUND(DECIMAL(p, s))` a DECIMAL of scale 0, integers stay
//!   as they are; with a scale, a DOUBLE is rounded at that decimal place (as its shortest
//!   decimal text reads: `ROUND(1.005, 2)` is 1.01), a DECIMAL keeps its type.
//! - `SUBSTRING(s, pos [, len])`: 1-based; a negative `pos` counts from the end; positions
//!   past either end are clamped (Postgres shortens `len` by a start before 1).
//! - `INSTR(s, sub [, position [, occurrence]])`: the 1-based position of the occurrence-th
//!   match searching from `position`, backwards from the end when it is negative; 0 if none.
//! - `INITCAP(s)`: words are separated by whitespace only (`o'neil` is `O'neil`).
//! - `CEIL(x)`, `FLOOR(x)`: an integer keeps its type, a DECIMAL(p, s) becomes a DECIMAL of
//!   scale 0, a DOUBLE stays a DOUBLE (DataFusion makes every argument a DOUBLE).
//! - `TRIM(s)`: strips every character up to U+0020 at both ends (Java's `trim`: tabs and
//!   newlines too; Postgres strips spaces only).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Round,
    Substring,
    Instr,
    Initcap,
    Trim,
    Ceil,
    Floor,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct KsqlSemantics {
    kind: Kind,
    signature: Signature,
}

/// The internal names the continuous-query rewrite calls.
pub const ROUND: &str = "ksql_round";
pub const SUBSTRING: &str = "ksql_substring";
pub const INSTR: &str = "ksql_instr";
pub const INITCAP: &str = "ksql_initcap";
pub const TRIM: &str = "ksql_trim";
pub const CEIL: &str = "ksql_ceil";
pub const FLOOR: &str = "ksql_floor";

pub fn udfs() -> Vec<ScalarUDF> {
    [Kind::Round, Kind::Substring, Kind::Instr, Kind::Initcap, Kind::Trim, Kind::Ceil, Kind::Floor]
        .into_iter()
        .map(|kind| {
            ScalarUDF::new_from_impl(KsqlSemantics { kind, signature: Signature::user_defined(Volatility::Immutable) })
        })
        .collect()
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null)
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer() || *t == DataType::Null
}

impl ScalarUDFImpl for KsqlSemantics {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Round => ROUND,
            Kind::Substring => SUBSTRING,
            Kind::Instr => INSTR,
            Kind::Initcap => INITCAP,
            Kind::Trim => TRIM,
            Kind::Ceil => CEIL,
            Kind::Floor => FLOOR,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let shown = || match self.kind {
            Kind::Round => "ROUND(number [, INT scale])",
            Kind::Substring => "SUBSTRING(STRING, INT pos [, INT len])",
            Kind::Instr => "INSTR(STRING, STRING [, INT position [, INT occurrence]])",
            Kind::Initcap => "INITCAP(STRING)",
            Kind::Trim => "TRIM(STRING)",
            Kind::Ceil => "CEIL(number)",
            Kind::Floor => "FLOOR(number)",
        };
        let fits = match self.kind {
            Kind::Round => {
                (1..=2).contains(&args.len())
                    && (args[0].is_numeric() || args[0] == DataType::Null)
                    && args.get(1).is_none_or(is_integer)
            }
            Kind::Substring => (2..=3).contains(&args.len()) && is_text(&args[0]) && args[1..].iter().all(is_integer),
            Kind::Instr => {
                (2..=4).contains(&args.len())
                    && is_text(&args[0])
                    && is_text(&args[1])
                    && args[2..].iter().all(is_integer)
            }
            Kind::Initcap | Kind::Trim => args.len() == 1 && is_text(&args[0]),
            Kind::Ceil | Kind::Floor => args.len() == 1 && (args[0].is_numeric() || args[0] == DataType::Null),
        };
        if !fits {
            return plan_err!("{} cannot be called with {args:?}", shown());
        }
        Ok(args
            .iter()
            .enumerate()
            .map(|(i, t)| match (self.kind, i) {
                (Kind::Round, 0) => match t {
                    DataType::Decimal128(..) => t.clone(),
                    t if t.is_integer() => DataType::Int64,
                    _ => DataType::Float64,
                },
                (Kind::Round, _) => DataType::Int32,
                (Kind::Ceil | Kind::Floor, _) => match t {
                    DataType::Decimal128(..) | DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                        t.clone()
                    }
                    t if t.is_integer() => DataType::Int64,
                    _ => DataType::Float64,
                },
                (Kind::Substring | Kind::Instr, i) if i >= 2 || (self.kind == Kind::Substring && i == 1) => {
                    DataType::Int64
                }
                _ => DataType::Utf8,
            })
            .collect())
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Round => match (&args[0], args.len()) {
                (DataType::Decimal128(p, s), 1) => DataType::Decimal128(rounded_precision(*p, *s), 0),
                (DataType::Decimal128(p, s), _) => DataType::Decimal128(*p, *s),
                (DataType::Float64, 1) => DataType::Int64,
                (DataType::Float64, _) => DataType::Float64,
                _ => DataType::Int64,
            },
            Kind::Substring | Kind::Initcap | Kind::Trim => DataType::Utf8,
            Kind::Instr => DataType::Int32,
            Kind::Ceil | Kind::Floor => match &args[0] {
                DataType::Decimal128(p, s) => DataType::Decimal128(rounded_precision(*p, *s), 0),
                t => t.clone(),
            },
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(n)).collect::<Result<Vec<ArrayRef>>>()?;
        let out: ArrayRef = match self.kind {
            Kind::Round => round(&arrays, n)?,
            Kind::Ceil | Kind::Floor => ceil_or_floor(&arrays[0], self.kind == Kind::Ceil)?,
            Kind::Substring => substring(&arrays, n),
            Kind::Instr => instr(&arrays, n),
            Kind::Initcap => {
                let s = arrays[0].as_string::<i32>();
                let mut b = StringBuilder::with_capacity(n, s.value_data().len());
                (0..n).for_each(|i| b.append_option(s.is_valid(i).then(|| initcap(s.value(i)))));
                Arc::new(b.finish())
            }
            Kind::Trim => {
                let s = arrays[0].as_string::<i32>();
                let mut b = StringBuilder::with_capacity(n, s.value_data().len());
                (0..n).for_each(|i| b.append_option(s.is_valid(i).then(|| s.value(i).trim_matches(|c| c <= ' '))));
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The precision of `ROUND(DECIMAL(p, s))` (scale 0): the integer digits, plus one for a carry.
fn rounded_precision(p: u8, s: i8) -> u8 {
    (i16::from(p) - i16::from(s) + 1).clamp(1, 38) as u8
}

/// The `i`-th value of an optional Int64 argument (`None`: absent or NULL).
fn int_at(arrays: &[ArrayRef], arg: usize, i: usize) -> Option<Option<i64>> {
    arrays.get(arg).map(|a| {
        let a = a.as_primitive::<Int64Type>();
        a.is_valid(i).then(|| a.value(i))
    })
}

fn round(arrays: &[ArrayRef], n: usize) -> Result<ArrayRef> {
    let scales: Vec<Option<i64>> = match arrays.get(1) {
        Some(a) => {
            let a = cast(a, &DataType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            (0..n).map(|i| a.is_valid(i).then(|| a.value(i))).collect()
        }
        None => vec![Some(0); n],
    };
    let with_scale = arrays.len() > 1;
    Ok(match arrays[0].data_type() {
        DataType::Decimal128(p, s) => {
            let (p, s) = (*p, *s);
            let values = arrays[0].as_primitive::<Decimal128Type>();
            let (out_p, out_s) = if with_scale { (p, s) } else { (rounded_precision(p, s), 0) };
            let mut b = Decimal128Builder::with_capacity(n);
            for (i, &scale) in scales.iter().enumerate() {
                let (Some(scale), true) = (scale, values.is_valid(i)) else {
                    b.append_null();
                    continue;
                };
                // Rounded at `scale` places, in units of 10^-s; then moved to the output scale.
                let drop = i64::from(s) - scale;
                let v = values.value(i);
                let rounded = if drop <= 0 {
                    v
                } else if drop > 38 {
                    0
                } else {
                    let unit = 10i128.pow(drop as u32);
                    let floor = v.div_euclid(unit);
                    let rest = v.rem_euclid(unit);
                    (floor + i128::from(rest * 2 >= unit)) * unit
                };
                let out = if out_s == s { rounded } else { rounded / 10i128.pow(u32::from(s.unsigned_abs())) };
                b.append_value(out);
            }
            Arc::new(b.finish().with_precision_and_scale(out_p, out_s)?)
        }
        DataType::Float64 => {
            let values = arrays[0].as_primitive::<Float64Type>();
            if with_scale {
                let mut b = Float64Builder::with_capacity(n);
                for (i, &scale) in scales.iter().enumerate() {
                    b.append_option(match (scale, values.is_valid(i)) {
                        (Some(scale), true) => Some(round_double(values.value(i), scale)),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            } else {
                let mut b = Int64Builder::with_capacity(n);
                for i in 0..n {
                    // Java's Math.round: floor(x + 0.5), saturating.
                    b.append_option(values.is_valid(i).then(|| (values.value(i) + 0.5).floor() as i64));
                }
                Arc::new(b.finish())
            }
        }
        DataType::Int64 => {
            let values = arrays[0].as_primitive::<Int64Type>();
            let mut b = Int64Builder::with_capacity(n);
            for (i, &scale) in scales.iter().enumerate() {
                b.append_option(match (scale, values.is_valid(i)) {
                    (Some(scale), true) if scale < 0 => {
                        let unit = 10i64.checked_pow(scale.unsigned_abs() as u32);
                        Some(unit.map_or(0, |u| {
                            (values.value(i).div_euclid(u) + i64::from(values.value(i).rem_euclid(u) * 2 >= u)) * u
                        }))
                    }
                    (Some(_), true) => Some(values.value(i)),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        other => return exec_err!("ROUND of {other}"),
    })
}

/// CEIL (`up`) or FLOOR of one column, in its own type (see the module comment).
fn ceil_or_floor(x: &ArrayRef, up: bool) -> Result<ArrayRef> {
    Ok(match x.data_type() {
        DataType::Decimal128(p, s) if *s > 0 => {
            let unit = 10i128.pow(u32::from(s.unsigned_abs()));
            let values = x.as_primitive::<Decimal128Type>();
            let out = values.unary::<_, Decimal128Type>(|v| {
                let q = v.div_euclid(unit);
                if up && v.rem_euclid(unit) != 0 {
                    q + 1
                } else {
                    q
                }
            });
            Arc::new(out.with_precision_and_scale(rounded_precision(*p, *s), 0)?)
        }
        DataType::Decimal128(p, s) => {
            Arc::new(x.as_primitive::<Decimal128Type>().clone().with_precision_and_scale(rounded_precision(*p, *s), 0)?)
        }
        DataType::Float64 => {
            let values = x.as_primitive::<Float64Type>();
            Arc::new(values.unary::<_, Float64Type>(|v| if up { v.ceil() } else { v.floor() }))
        }
        _ => x.clone(),
    })
}

/// `x` rounded at `scale` decimal places, halves towards positive infinity, as the shortest
/// decimal text of `x` reads (Java's `BigDecimal.valueOf`).
fn round_double(x: f64, scale: i64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let text = format!("{}", x.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|d| d - b'0').collect();
    // Digits kept: those before the decimal point plus `scale` (fewer for a negative scale).
    let keep = int.len() as i64 + scale;
    if keep >= digits.len() as i64 {
        return x;
    }
    if keep < 0 {
        return 0.0;
    }
    let keep = keep as usize;
    let rest = &digits[keep..];
    let half_or_more = rest[0] >= 5;
    let above_half = rest[0] > 5 || (rest[0] == 5 && rest[1..].iter().any(|&d| d > 0));
    // Towards positive infinity: a positive value goes up from a half, a negative one only
    // past it.
    let up = if x >= 0.0 { half_or_more } else { above_half };
    let mut kept: Vec<u8> = digits[..keep].to_vec();
    if up {
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, 1);
                break;
            }
            i -= 1;
            if kept[i] == 9 {
                kept[i] = 0;
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    // The kept digits as a number, times 10^-scale.
    let mantissa: String = kept.iter().map(|d| char::from(b'0' + d)).collect();
    let value: f64 = format!("{mantissa}e{}", -scale).parse().unwrap_or(0.0);
    if x < 0.0 {
        -value
    } else {
        value
    }
}

fn substring(arrays: &[ArrayRef], n: usize) -> ArrayRef {
    let s = arrays[0].as_string::<i32>();
    let mut b = StringBuilder::with_capacity(n, s.value_data().len());
    for i in 0..n {
        let (Some(Some(pos)), true) = (int_at(arrays, 1, i), s.is_valid(i)) else {
            b.append_null();
            continue;
        };
        let len = int_at(arrays, 2, i);
        if len == Some(None) {
            b.append_null();
            continue;
        }
        let chars: Vec<char> = s.value(i).chars().collect();
        let count = chars.len() as i64;
        let start = if pos < 0 { (count + pos).max(0) } else { (pos - 1).clamp(0, count) };
        let end = match len.flatten() {
            Some(len) => start.saturating_add(len).min(count).max(start),
            None => count,
        };
        b.append_value(chars[start as usize..end as usize].iter().collect::<String>());
    }
    Arc::new(b.finish())
}

fn instr(arrays: &[ArrayRef], n: usize) -> ArrayRef {
    let (s, sub) = (arrays[0].as_string::<i32>(), arrays[1].as_string::<i32>());
    let mut b = Int32Builder::with_capacity(n);
    for i in 0..n {
        let position = int_at(arrays, 2, i).unwrap_or(Some(1));
        let occurrence = int_at(arrays, 3, i).unwrap_or(Some(1));
        let (Some(position), Some(occurrence), true, true) = (position, occurrence, s.is_valid(i), sub.is_valid(i))
        else {
            b.append_null();
            continue;
        };
        let hay: Vec<char> = s.value(i).chars().collect();
        let needle: Vec<char> = sub.value(i).chars().collect();
        b.append_value(find_occurrence(&hay, &needle, position, occurrence));
    }
    Arc::new(b.finish())
}

/// INSTR's search: the 1-based position of the `occurrence`-th match of `needle`, from
/// `position` forwards, or from `len + position` backwards when it is negative; 0 if none.
fn find_occurrence(hay: &[char], needle: &[char], position: i64, occurrence: i64) -> i32 {
    let len = hay.len() as i64;
    let at = |i: i64| i >= 0 && i + needle.len() as i64 <= len && hay[i as usize..].starts_with(needle);
    if occurrence <= 0 || position == 0 {
        return 0;
    }
    let mut found = 0;
    if position > 0 {
        let mut i = position - 1;
        while i + needle.len() as i64 <= len {
            if at(i) {
                found += 1;
                if found == occurrence {
                    return (i + 1) as i32;
                }
            }
            i += 1;
        }
    } else {
        let mut i = (len + position).min(len - needle.len() as i64);
        while i >= 0 {
            if at(i) {
                found += 1;
                if found == occurrence {
                    return (i + 1) as i32;
                }
            }
            i -= 1;
        }
    }
    0
}

/// Each whitespace-separated word with its first letter upper case and the rest lower.
fn initcap(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_whitespace() {
            start = true;
            out.push(c);
        } else if start {
            out.extend(c.to_uppercase());
            start = false;
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_round_half_up_at_their_decimal_text() {
        assert_eq!(round_double(1.005, 2), 1.01);
        assert_eq!(round_double(-1.005, 2), -1.0);
        assert_eq!(round_double(-1.0051, 2), -1.01);
        assert_eq!(round_double(2.5, 0), 3.0);
        assert_eq!(round_double(-2.5, 0), -2.0);
        assert_eq!(round_double(9.99, 1), 10.0);
        assert_eq!(round_double(1234.5, -2), 1200.0);
        assert_eq!(round_double(0.123, 5), 0.123);
    }

    #[test]
    fn substrings_count_negative_positions_from_the_end() {
        let run = |pos: i64, len: Option<i64>| {
            let mut arrays: Vec<ArrayRef> = vec![
                Arc::new(datafusion::arrow::array::StringArray::from(vec!["abcdef"])),
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![pos])),
            ];
            if let Some(len) = len {
                arrays.push(Arc::new(datafusion::arrow::array::Int64Array::from(vec![len])));
            }
            substring(&arrays, 1).as_string::<i32>().value(0).to_string()
        };
        assert_eq!(run(2, None), "bcdef");
        assert_eq!(run(-3, None), "def");
        assert_eq!(run(-3, Some(2)), "de");
        assert_eq!(run(0, Some(2)), "ab");
        assert_eq!(run(-10, Some(2)), "ab");
        assert_eq!(run(9, None), "");
    }

    #[test]
    fn instr_finds_occurrences_both_ways() {
        let hay: Vec<char> = "CORPORATE FLOOR".chars().collect();
        let or: Vec<char> = "OR".chars().collect();
        assert_eq!(find_occurrence(&hay, &or, 1, 1), 2);
        assert_eq!(find_occurrence(&hay, &or, 3, 2), 14);
        assert_eq!(find_occurrence(&hay, &or, -3, 2), 2);
        assert_eq!(find_occurrence(&hay, &or, 1, 4), 0);
        assert_eq!(initcap("o'neil of the  HILL"), "O'neil Of The  Hill");
    }
}
