//! ksqlDB's timestamp strings compared with `ROWTIME`, `WINDOWSTART` or `WINDOWEND` (epoch
//! milliseconds): `WHERE ROWTIME >= '2017-11-17T04:53:45'`, `ROWTIME BETWEEN '2020-01' AND
//! '2020-02-01T00:00Z'`. The string becomes its epoch milliseconds; one that does not read as
//! a timestamp is left alone (and the comparison fails to plan, saying why).

use chrono::NaiveDate;

use super::*;

/// `expr` with the timestamp strings it compares with ROWTIME, WINDOWSTART or WINDOWEND as
/// epoch milliseconds; `None` when it has none.
pub(super) fn time_strings(e: &Expr) -> Option<Expr> {
    match e {
        Expr::BinaryOp { left, op, right } if is_comparison(op) => {
            let (left, right) = match (is_time_column(left), is_time_column(right)) {
                (true, false) => (left.as_ref().clone(), as_epoch_ms(right)?),
                (false, true) => (as_epoch_ms(left)?, right.as_ref().clone()),
                _ => return None,
            };
            Some(Expr::BinaryOp { left: Box::new(left), op: op.clone(), right: Box::new(right) })
        }
        Expr::Between { expr, negated, low, high } if is_time_column(expr) => {
            let (new_low, new_high) = (as_epoch_ms(low), as_epoch_ms(high));
            if new_low.is_none() && new_high.is_none() {
                return None;
            }
            Some(Expr::Between {
                expr: expr.clone(),
                negated: *negated,
                low: Box::new(new_low.unwrap_or_else(|| low.as_ref().clone())),
                high: Box::new(new_high.unwrap_or_else(|| high.as_ref().clone())),
            })
        }
        _ => None,
    }
}

fn is_comparison(op: &BinaryOperator) -> bool {
    matches!(
        op,
        BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
    )
}

fn is_time_column(e: &Expr) -> bool {
    let name = match e {
        Expr::Identifier(i) => i,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(i) => i,
            None => return false,
        },
        _ => return false,
    };
    ["rowtime", "windowstart", "windowend"].iter().any(|c| name.value.eq_ignore_ascii_case(c))
}

/// A string literal that reads as a timestamp, as a number literal of its epoch ms.
fn as_epoch_ms(e: &Expr) -> Option<Expr> {
    let Expr::Value(v) = e else { return None };
    let ast::Value::SingleQuotedString(text) = &v.value else { return None };
    Some(Expr::Value(ast::Value::Number(epoch_ms(text)?.to_string(), false).into()))
}

/// `yyyy[-MM[-dd[THH[:mm[:ss[.fff]]]]]]` with an optional zone after the time (`Z`, `±HH`,
/// `±HHmm`, `±HH:mm`; UTC without one), the parts left out at their least (ksqlDB's partial
/// timestamps): epoch milliseconds.
pub(super) fn epoch_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year = number(parts.next()?, 4)?;
    let month = parts.next().map(|m| number(m, 2)).unwrap_or(Some(1))?;
    let day = parts.next().map(|d| number(d, 2)).unwrap_or(Some(1))?;
    if parts.next().is_some() {
        return None;
    }
    let (clock, offset_minutes) = match time {
        Some(t) => split_zone(t)?,
        None => ("", 0),
    };
    let (clock, millis) = match clock.split_once('.') {
        Some((c, f)) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            (c, f.bytes().take(3).chain(std::iter::repeat(b'0')).take(3).fold(0, |n, b| n * 10 + (b - b'0') as u32))
        }
        Some(_) => return None,
        None => (clock, 0),
    };
    let mut hms = [0u32; 3];
    if !clock.is_empty() {
        let fields: Vec<&str> = clock.split(':').collect();
        if fields.len() > 3 {
            return None;
        }
        for (slot, field) in hms.iter_mut().zip(&fields) {
            *slot = number(field, 2)?;
        }
    }
    let at = NaiveDate::from_ymd_opt(year as i32, month, day)?.and_hms_milli_opt(hms[0], hms[1], hms[2], millis)?;
    Some(at.and_utc().timestamp_millis() - i64::from(offset_minutes) * 60_000)
}

/// The time of day and its zone's offset in minutes east of UTC.
fn split_zone(time: &str) -> Option<(&str, i32)> {
    if let Some(clock) = time.strip_suffix('Z') {
        return Some((clock, 0));
    }
    let Some(at) = time.rfind(['+', '-']) else { return Some((time, 0)) };
    let (clock, zone) = time.split_at(at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let digits = zone[1..].replace(':', "");
    let (hours, minutes) = match digits.len() {
        2 => (number(&digits, 2)?, 0),
        4 => (number(&digits[..2], 2)?, number(&digits[2..], 2)?),
        _ => return None,
    };
    (hours <= 18 && minutes < 60).then_some((clock, sign * (hours * 60 + minutes) as i32))
}

/// Exactly `width` ASCII digits.
fn number(text: &str, width: usize) -> Option<u32> {
    (text.len() == width && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::epoch_ms;

    #[test]
    fn partial_timestamps_with_and_without_zones() {
        assert_eq!(epoch_ms("2017-11-17T04:53:45"), Some(1_510_894_425_000));
        assert_eq!(epoch_ms("2017-11-17T04:53:45.5"), Some(1_510_894_425_500));
        assert_eq!(epoch_ms("2017-11-17T04:53:45.123456"), Some(1_510_894_425_123));
        assert_eq!(epoch_ms("2017-11-17T04:53"), Some(1_510_894_380_000));
        assert_eq!(epoch_ms("2017-11-17"), Some(1_510_876_800_000));
        assert_eq!(epoch_ms("2017-11"), Some(1_509_494_400_000));
        assert_eq!(epoch_ms("1970"), Some(0));
        assert_eq!(epoch_ms("2017-11-17T04:53:45Z"), Some(1_510_894_425_000));
        assert_eq!(epoch_ms("2017-11-17T05:53:45+01:00"), Some(1_510_894_425_000));
        assert_eq!(epoch_ms("2017-11-17T00:23:45-0430"), Some(1_510_894_425_000));
        assert_eq!(epoch_ms("2017-11-17T06:53+02"), Some(1_510_894_380_000));
        for bad in ["", "17-11-17", "2017-13-01", "2017-11-31", "2017-11-17T25:00", "2017-11-17 04:53", "x", "2017-1-1"]
        {
            assert_eq!(epoch_ms(bad), None, "{bad}");
        }
    }
}
