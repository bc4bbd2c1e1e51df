//! ksqlDB's common scalar functions as DataFusion scalar UDFs, plus the Java date-pattern
//! translation they share with the rest of the engine.
//!
//! Owns: `UCASE`, `LCASE`, `LEN`, `IFNULL`, `TIMESTAMPTOSTRING`, `STRINGTOTIMESTAMP`,
//! `FROM_UNIXTIME`, `UNIX_TIMESTAMP`, `EXTRACTJSONFIELD`, `FORMAT_`/`PARSE_TIMESTAMP`,
//! `FORMAT_`/`PARSE_DATE` (and the older `DATETOSTRING`/`STRINGTODATE`), `FORMAT_`/
//! `PARSE_TIME` and `CONVERT_TZ` (one [`ScalarUDFImpl`] whose behaviour is picked by
//! [`Kind`]), and the Java `DateTimeFormatter`/`SimpleDateFormat`
//! pattern compiler (a pattern becomes a list of chrono format items).
//!
//! Callers: whoever builds a `SessionContext` calls [`register`] (or registers [`udfs`]);
//! source decoding for `WITH (TIMESTAMP='col', TIMESTAMP_FORMAT='...')` calls
//! [`parse_timestamp_ms`] / [`format_timestamp_ms`].
//!
//! Time zones: 'UTC', 'Z', fixed offsets ('+02:00', '-0530', '+02') and IANA names (through
//! arrow's `Tz`, which DataFusion builds with chrono-tz). Every function is null in, null out.

pub mod aggregates;
mod byte_numbers;
mod json_strings;
pub mod ksql_semantics;
pub mod lambdas;
mod maps;
mod strings;
pub mod table;

/// One query over a session with this module's functions, for the tests of its submodules:
/// the first row's cells as text ("NULL" for nulls), or the error's text.
#[cfg(test)]
mod test_sql {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::prelude::SessionContext;

    fn session() -> SessionContext {
        let ctx = SessionContext::new();
        super::register(&ctx);
        ctx
    }

    pub async fn row(sql: &str) -> Vec<String> {
        let batches = session().sql(sql).await.expect("plans").collect().await.expect("runs");
        let batch = &batches[0];
        batch
            .columns()
            .iter()
            .map(|c| if c.is_null(0) { "NULL".to_string() } else { array_value_to_string(c, 0).expect("shows") })
            .collect()
    }

    pub async fn error(sql: &str) -> String {
        match session().sql(sql).await {
            Ok(df) => df.collect().await.expect_err("fails").to_string(),
            Err(e) => e.to_string(),
        }
    }
}

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::format::{Fixed, Item, Numeric, Pad, Parsed, StrftimeItems};
use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};

use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int64Array, Int64Builder, StringArray, StringBuilder, Time32MillisecondArray,
};
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::compute::{cast, is_not_null};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::common::{exec_datafusion_err, plan_err, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;

// ---------------------------------------------------------------------------------------------
// Java date-time patterns
// ---------------------------------------------------------------------------------------------

/// A Java pattern compiled to chrono format items (usable for both formatting and parsing).
type Pattern = Vec<Item<'static>>;

/// Compiles a Java `DateTimeFormatter`/`SimpleDateFormat` pattern. Supported letters: `y`/`u`
/// (`yy` = two-digit year), `M` (`M`, `MM`, `MMM`, `MMMM`), `d`, `D`, `H`, `h`, `m`, `s`,
/// `S` (3, 6 or 9 fraction digits), `a`, `E` (`EEE`, `EEEE`), `X`/`x`/`Z` offsets; `'text'`
/// is literal text and `''` a single quote. Any other ASCII letter is an error.
fn compile_pattern(pattern: &str) -> Result<Pattern, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut items = Vec::new();
    let mut lit = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                lit.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated quote in pattern '{pattern}'")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        lit.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        lit.push(ch);
                        i += 1;
                    }
                }
            }
            continue;
        }
        if !c.is_ascii_alphabetic() {
            lit.push(c);
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        i += n;
        let item = pattern_field(c, n)
            .ok_or_else(|| format!("unsupported field '{}' in pattern '{pattern}'", c.to_string().repeat(n)))?;
        if !lit.is_empty() {
            items.push(Item::OwnedLiteral(std::mem::take(&mut lit).into()));
        }
        items.push(item);
    }
    if !lit.is_empty() {
        items.push(Item::OwnedLiteral(lit.into()));
    }
    Ok(items)
}

/// The chrono item for a run of `n` copies of the Java pattern letter `c`.
fn pattern_field(c: char, n: usize) -> Option<Item<'static>> {
    let num = |f: Numeric| Item::Numeric(f, if n >= 2 { Pad::Zero } else { Pad::None });
    let fixed = |f: Fixed| Some(Item::Fixed(f));
    // chrono's fraction-without-dot items are only reachable through strftime specifiers.
    let strftime = |spec: &'static str| StrftimeItems::new(spec).next();
    match (c, n) {
        ('y' | 'u', 2) => Some(Item::Numeric(Numeric::YearMod100, Pad::Zero)),
        ('y' | 'u', _) => Some(Item::Numeric(Numeric::Year, if n >= 4 { Pad::Zero } else { Pad::None })),
        ('M' | 'L', 1 | 2) => Some(num(Numeric::Month)),
        ('M' | 'L', 3) => fixed(Fixed::ShortMonthName),
        ('M' | 'L', _) => fixed(Fixed::LongMonthName),
        ('d', 1 | 2) => Some(num(Numeric::Day)),
        ('D', 1..=3) => Some(num(Numeric::Ordinal)),
        ('H', 1 | 2) => Some(num(Numeric::Hour)),
        ('h', 1 | 2) => Some(num(Numeric::Hour12)),
        ('m', 1 | 2) => Some(num(Numeric::Minute)),
        ('s', 1 | 2) => Some(num(Numeric::Second)),
        ('S', 3) => strftime("%3f"),
        ('S', 6) => strftime("%6f"),
        ('S', 9) => strftime("%9f"),
        ('a', 1) => fixed(Fixed::UpperAmPm),
        ('E', 1..=3) => fixed(Fixed::ShortWeekdayName),
        ('E', 4) => fixed(Fixed::LongWeekdayName),
        ('X', 2 | 4) => fixed(Fixed::TimezoneOffsetZ),
        ('X', 3 | 5) | ('Z', 5) => fixed(Fixed::TimezoneOffsetColonZ),
        ('x', 2 | 4) | ('Z', 1..=3) => fixed(Fixed::TimezoneOffset),
        ('x', 3 | 5) => fixed(Fixed::TimezoneOffsetColon),
        _ => None,
    }
}

/// Parses a time zone argument: 'UTC', 'Z', a fixed offset or (via arrow's `Tz`) an IANA name.
fn parse_tz(tz: &str) -> Result<Tz, String> {
    let tz = tz.trim();
    let tz = if tz.eq_ignore_ascii_case("z") { "+00:00" } else { tz };
    tz.parse::<Tz>().map_err(|e| {
        format!("unknown time zone '{tz}' (expected 'UTC', 'Z', an offset like '+02:00' or an IANA name): {e}")
    })
}

fn format_with(ms: i64, pattern: &Pattern, tz: &Tz) -> Result<String, String> {
    let utc = DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| format!("timestamp {ms} ms is out of range"))?;
    let local = utc.with_timezone(tz).fixed_offset();
    let mut out = String::new();
    write!(out, "{}", local.format_with_items(pattern.iter()))
        .map_err(|_| format!("cannot format timestamp {ms} ms with this pattern"))?;
    Ok(out)
}

/// Parses `value` with a compiled pattern. Missing fields default like ksqlDB's parser: year
/// 1970, month and day 1, time 00:00:00.000; `yy` means 2000-2099; without an offset in the
/// pattern, the local time is read in `tz` (a time in a DST gap takes the pre-gap offset).
fn parse_with(value: &str, pattern: &Pattern, tz: &Tz) -> Result<i64, String> {
    let mut p = Parsed::new();
    chrono::format::parse(&mut p, value, pattern.iter()).map_err(|e| e.to_string())?;
    let ok = |r: chrono::format::ParseResult<()>| r.map_err(|e| e.to_string());
    if p.year().is_none() && p.year_div_100().is_none() {
        if p.year_mod_100().is_some() {
            ok(p.set_year_div_100(20))?;
        } else if p.isoyear().is_none() {
            ok(p.set_year(1970))?;
        }
    }
    if p.ordinal().is_none() && p.isoweek().is_none() {
        if p.month().is_none() {
            ok(p.set_month(1))?;
        }
        if p.day().is_none() {
            ok(p.set_day(1))?;
        }
    }
    match (p.hour_div_12(), p.hour_mod_12()) {
        (None, None) => ok(p.set_hour(0))?,
        (None, Some(_)) => ok(p.set_ampm(false))?,
        (Some(_), None) => ok(p.set_hour12(12))?,
        _ => {}
    }
    for (have, set) in [
        (p.minute(), Parsed::set_minute as fn(&mut Parsed, i64) -> _),
        (p.second(), Parsed::set_second),
        (p.nanosecond(), Parsed::set_nanosecond),
    ] {
        if have.is_none() {
            ok(set(&mut p, 0))?;
        }
    }
    let naive: NaiveDateTime = p.to_naive_datetime_with_offset(0).map_err(|e| e.to_string())?;
    let utc = match p.offset() {
        Some(secs) => naive - chrono::Duration::seconds(secs.into()),
        None => match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.naive_utc(),
            // In a DST gap, use the offset in force before the gap (as java.time does).
            LocalResult::None => naive - tz.offset_from_utc_datetime(&(naive - chrono::Duration::days(1))).fix(),
        },
    };
    Ok(utc.and_utc().timestamp_millis())
}

/// Parses `value` with a Java date-time pattern into epoch milliseconds. A pattern without an
/// offset field reads the value as UTC. Used for `WITH (TIMESTAMP_FORMAT='...')`.
pub fn parse_timestamp_ms(value: &str, java_pattern: &str) -> Result<i64, String> {
    let pattern = compile_pattern(java_pattern)?;
    parse_with(value, &pattern, &utc())
        .map_err(|e| format!("cannot parse '{value}' with pattern '{java_pattern}': {e}"))
}

/// Formats epoch milliseconds in UTC with a Java date-time pattern.
pub fn format_timestamp_ms(ms: i64, java_pattern: &str) -> Result<String, String> {
    format_with(ms, &compile_pattern(java_pattern)?, &utc())
}

fn utc() -> Tz {
    "+00:00".parse().expect("a fixed offset always parses")
}

/// Remembers the last compiled argument (pattern, zone, JSON path): the argument is almost
/// always a literal, so it is compiled once per batch instead of once per row.
struct Last<T> {
    key: Option<String>,
    value: Option<T>,
}

impl<T> Last<T> {
    fn new() -> Self {
        Last { key: None, value: None }
    }

    fn get(&mut self, key: &str, compile: impl FnOnce(&str) -> Result<T, String>) -> Result<&T> {
        if self.key.as_deref() != Some(key) {
            self.value = Some(compile(key).map_err(|e| exec_datafusion_err!("{e}"))?);
            self.key = Some(key.to_string());
        }
        Ok(self.value.as_ref().expect("set above"))
    }
}

// ---------------------------------------------------------------------------------------------
// JSON paths
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Parses the JSONPath subset `$`, `.name`, `[N]`, `['name']` and `["name"]`.
fn compile_json_path(path: &str) -> Result<Vec<Step>, String> {
    let bad = |why: &str| format!("invalid JSON path '{path}': {why}");
    let rest = path.trim().strip_prefix('$').ok_or_else(|| bad("must start with '$'"))?;
    let mut steps = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        if let Some(r) = s.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err(bad("empty field name"));
            }
            steps.push(Step::Key(r[..end].to_string()));
            s = &r[end..];
        } else if let Some(r) = s.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("missing ']'"))?;
            let inner = r[..end].trim();
            let quoted = ['\'', '"'].iter().find_map(|q| inner.strip_prefix(*q).and_then(|x| x.strip_suffix(*q)));
            steps.push(match quoted {
                Some(key) => Step::Key(key.to_string()),
                None => Step::Index(inner.parse().map_err(|_| bad("bad array index"))?),
            });
            s = &r[end + 1..];
        } else {
            return Err(bad("expected '.' or '['"));
        }
    }
    Ok(steps)
}

/// The field at `path` in `json`: strings unquoted, other values as JSON text; `None` for
/// invalid JSON, a missing field or a JSON null.
fn extract_json(json: &str, path: &[Step]) -> Option<String> {
    let root: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut v = &root;
    for step in path {
        v = match step {
            Step::Key(k) => v.as_object()?.get(k)?,
            Step::Index(i) => v.as_array()?.get(*i)?,
        };
    }
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// The UDFs
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Ucase,
    Lcase,
    Len,
    IfNull,
    TimestampToString,
    StringToTimestamp,
    FromUnixtime,
    UnixTimestamp,
    ExtractJsonField,
    FormatTimestamp,
    ParseTimestamp,
    FormatDate,
    ParseDate,
    FormatTime,
    ParseTime,
    ConvertTz,
    /// ksqlDB's deprecated forms of FORMAT_DATE / PARSE_DATE over days since the epoch (INT).
    DateToString,
    StringToDate,
}

#[rustfmt::skip]
const ALL: [Kind; 18] = [
    Kind::Ucase, Kind::Lcase, Kind::Len, Kind::IfNull, Kind::TimestampToString,
    Kind::StringToTimestamp, Kind::FromUnixtime, Kind::UnixTimestamp, Kind::ExtractJsonField,
    Kind::FormatTimestamp, Kind::ParseTimestamp, Kind::FormatDate, Kind::ParseDate,
    Kind::FormatTime, Kind::ParseTime, Kind::ConvertTz, Kind::DateToString, Kind::StringToDate,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ucase => "ucase",
            Kind::Lcase => "lcase",
            Kind::Len => "len",
            Kind::IfNull => "ifnull",
            Kind::TimestampToString => "timestamptostring",
            Kind::StringToTimestamp => "stringtotimestamp",
            Kind::FromUnixtime => "from_unixtime",
            Kind::UnixTimestamp => "unix_timestamp",
            Kind::ExtractJsonField => "extractjsonfield",
            Kind::FormatTimestamp => "format_timestamp",
            Kind::ParseTimestamp => "parse_timestamp",
            Kind::FormatDate => "format_date",
            Kind::ParseDate => "parse_date",
            Kind::FormatTime => "format_time",
            Kind::ParseTime => "parse_time",
            Kind::ConvertTz => "convert_tz",
            Kind::DateToString => "datetostring",
            Kind::StringToDate => "stringtodate",
        }
    }

    /// The accepted call shape, for error messages.
    fn usage(self) -> &'static str {
        match self {
            Kind::Ucase | Kind::Lcase | Kind::Len => "(STRING)",
            Kind::IfNull => "(a, b) with b castable to a's type",
            Kind::TimestampToString => "(BIGINT epoch_ms, STRING pattern [, STRING tz])",
            Kind::StringToTimestamp => "(STRING value, STRING pattern [, STRING tz])",
            Kind::FromUnixtime => "(BIGINT epoch_ms)",
            Kind::UnixTimestamp => "() or (TIMESTAMP)",
            Kind::ExtractJsonField => "(STRING json, STRING path)",
            Kind::FormatTimestamp => "(TIMESTAMP, STRING pattern [, STRING tz])",
            Kind::ParseTimestamp => "(STRING value, STRING pattern [, STRING tz])",
            Kind::FormatDate => "(DATE, STRING pattern)",
            Kind::ParseDate => "(STRING value, STRING pattern)",
            Kind::FormatTime => "(TIME, STRING pattern)",
            Kind::ParseTime => "(STRING value, STRING pattern)",
            Kind::ConvertTz => "(TIMESTAMP, STRING from_tz, STRING to_tz)",
            Kind::DateToString => "(INT days_since_epoch, STRING pattern)",
            Kind::StringToDate => "(STRING value, STRING pattern)",
        }
    }
}

/// One ksqlDB scalar function; arguments are coerced in `coerce_types` so `invoke` only sees
/// Utf8 strings, Int64 integers and millisecond timestamps.
#[derive(Debug, PartialEq, Eq, Hash)]
struct KsqlFunction {
    kind: Kind,
    signature: Signature,
}

fn string_type(t: &DataType) -> Option<DataType> {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null).then_some(DataType::Utf8)
}

fn int_type(t: &DataType) -> Option<DataType> {
    (t.is_integer() || t.is_null()).then_some(DataType::Int64)
}

fn date_type(t: &DataType) -> Option<DataType> {
    matches!(t, DataType::Date32 | DataType::Date64 | DataType::Null).then_some(DataType::Date32)
}

fn time_type(t: &DataType) -> Option<DataType> {
    matches!(t, DataType::Time32(_) | DataType::Time64(_) | DataType::Null)
        .then_some(DataType::Time32(TimeUnit::Millisecond))
}

fn timestamp_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Timestamp(_, tz) => Some(DataType::Timestamp(TimeUnit::Millisecond, tz.clone())),
        DataType::Null | DataType::Date32 | DataType::Date64 => Some(DataType::Timestamp(TimeUnit::Millisecond, None)),
        _ => None,
    }
}

impl ScalarUDFImpl for KsqlFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        type Rule = fn(&DataType) -> Option<DataType>;
        let (required, rules): (usize, &[Rule]) = match self.kind {
            Kind::IfNull if args.len() == 2 => {
                let t = if args[0].is_null() { &args[1] } else { &args[0] };
                return Ok(vec![t.clone(), t.clone()]);
            }
            Kind::IfNull => (2, &[]),
            Kind::Ucase | Kind::Lcase | Kind::Len => (1, &[string_type]),
            Kind::TimestampToString => (2, &[int_type, string_type, string_type]),
            Kind::StringToTimestamp => (2, &[string_type, string_type, string_type]),
            Kind::FromUnixtime => (1, &[int_type]),
            Kind::UnixTimestamp => (0, &[timestamp_type]),
            Kind::ExtractJsonField => (2, &[string_type, string_type]),
            Kind::FormatTimestamp => (2, &[timestamp_type, string_type, string_type]),
            Kind::ParseTimestamp => (2, &[string_type, string_type, string_type]),
            Kind::FormatDate => (2, &[date_type, string_type]),
            Kind::FormatTime => (2, &[time_type, string_type]),
            Kind::ParseDate | Kind::ParseTime | Kind::StringToDate => (2, &[string_type, string_type]),
            Kind::DateToString => (2, &[int_type, string_type]),
            Kind::ConvertTz => (3, &[timestamp_type, string_type, string_type]),
        };
        let coerced: Option<Vec<DataType>> = (args.len() >= required && args.len() <= rules.len())
            .then(|| args.iter().zip(rules).map(|(t, rule)| rule(t)).collect())
            .flatten();
        match coerced {
            Some(types) => Ok(types),
            None => {
                plan_err!("{}{} cannot be called with {args:?}", self.kind.name().to_uppercase(), self.kind.usage())
            }
        }
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Ucase | Kind::Lcase | Kind::TimestampToString | Kind::ExtractJsonField => DataType::Utf8,
            Kind::Len | Kind::StringToDate => DataType::Int32,
            Kind::DateToString => DataType::Utf8,
            Kind::IfNull => args.first().cloned().unwrap_or(DataType::Null),
            Kind::StringToTimestamp | Kind::UnixTimestamp => DataType::Int64,
            Kind::FromUnixtime | Kind::ParseTimestamp | Kind::ConvertTz => {
                DataType::Timestamp(TimeUnit::Millisecond, None)
            }
            Kind::FormatTimestamp | Kind::FormatDate | Kind::FormatTime => DataType::Utf8,
            Kind::ParseDate => DataType::Date32,
            Kind::ParseTime => DataType::Time32(TimeUnit::Millisecond),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(n)).collect::<Result<Vec<ArrayRef>>>()?;
        let out: ArrayRef = match self.kind {
            Kind::Ucase => map_strings(&arrays[0], str::to_uppercase),
            Kind::Lcase => map_strings(&arrays[0], str::to_lowercase),
            Kind::Len => Arc::new(
                arrays[0]
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.map(|s| s.chars().count() as i32))
                    .collect::<Int32Array>(),
            ),
            Kind::IfNull if arrays[0].data_type().is_null() => Arc::clone(&arrays[1]),
            Kind::IfNull => zip(&is_not_null(&arrays[0])?, &arrays[0], &arrays[1])?,
            Kind::TimestampToString => timestamp_to_string(&arrays, "TIMESTAMPTOSTRING")?,
            Kind::StringToTimestamp => string_to_timestamp(&arrays, "STRINGTOTIMESTAMP")?,
            Kind::FormatTimestamp => {
                let mut args = vec![cast(&arrays[0], &DataType::Int64)?];
                args.extend_from_slice(&arrays[1..]);
                timestamp_to_string(&args, "FORMAT_TIMESTAMP")?
            }
            Kind::ParseTimestamp => cast(
                &string_to_timestamp(&arrays, "PARSE_TIMESTAMP")?,
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )?,
            Kind::FormatDate | Kind::DateToString => {
                let days = cast(&arrays[0], &DataType::Int64)?;
                let ms: Int64Array = days
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|d| d.and_then(|d| d.checked_mul(MS_PER_DAY)))
                    .collect();
                timestamp_to_string(&[Arc::new(ms), arrays[1].clone()], &self.kind.name().to_uppercase())?
            }
            Kind::ParseDate | Kind::StringToDate => {
                let ms = string_to_timestamp(&arrays, &self.kind.name().to_uppercase())?;
                let days: Int32Array = ms
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|m| m.and_then(|m| i32::try_from(m.div_euclid(MS_PER_DAY)).ok()))
                    .collect();
                match self.kind {
                    Kind::ParseDate => cast(&days, &DataType::Date32)?,
                    _ => Arc::new(days),
                }
            }
            Kind::FormatTime => {
                let ms = cast(&cast(&arrays[0], &DataType::Int32)?, &DataType::Int64)?;
                timestamp_to_string(&[ms, arrays[1].clone()], "FORMAT_TIME")?
            }
            Kind::ParseTime => {
                let ms = string_to_timestamp(&arrays, "PARSE_TIME")?;
                let times: Time32MillisecondArray =
                    ms.as_primitive::<Int64Type>().iter().map(|m| m.map(|m| m.rem_euclid(MS_PER_DAY) as i32)).collect();
                Arc::new(times)
            }
            Kind::ConvertTz => convert_tz(&arrays)?,
            Kind::FromUnixtime => cast(&arrays[0], &DataType::Timestamp(TimeUnit::Millisecond, None))?,
            Kind::UnixTimestamp if arrays.is_empty() => {
                Arc::new(Int64Array::from_value(Utc::now().timestamp_millis(), n))
            }
            Kind::UnixTimestamp => cast(&arrays[0], &DataType::Int64)?,
            Kind::ExtractJsonField => extract_json_field(&arrays)?,
        };
        Ok(ColumnarValue::Array(out))
    }
}

fn map_strings(a: &ArrayRef, f: impl Fn(&str) -> String) -> ArrayRef {
    Arc::new(a.as_string::<i32>().iter().map(|s| s.map(&f)).collect::<StringArray>())
}

/// The pattern and optional zone arguments shared by the two timestamp/string conversions.
struct PatternArgs<'a> {
    patterns: &'a StringArray,
    zones: Option<&'a StringArray>,
    pattern: Last<Pattern>,
    zone: Last<Tz>,
    utc: Tz,
}

impl<'a> PatternArgs<'a> {
    fn new(arrays: &'a [ArrayRef]) -> Self {
        PatternArgs {
            patterns: arrays[1].as_string::<i32>(),
            zones: arrays.get(2).map(|a| a.as_string::<i32>()),
            pattern: Last::new(),
            zone: Last::new(),
            utc: utc(),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        self.patterns.is_null(i) || self.zones.is_some_and(|z| z.is_null(i))
    }

    fn at(&mut self, i: usize) -> Result<(&Pattern, &Tz, &str)> {
        let text = self.patterns.value(i);
        let pattern = self.pattern.get(text, compile_pattern)?;
        let tz = match self.zones {
            Some(z) => self.zone.get(z.value(i), parse_tz)?,
            None => &self.utc,
        };
        Ok((pattern, tz, text))
    }
}

const MS_PER_DAY: i64 = 86_400_000;

/// CONVERT_TZ: the wall-clock time a TIMESTAMP shows in `from_tz`, as the wall-clock time of
/// the same instant in `to_tz` (a time in a DST gap takes the offset before the gap).
fn convert_tz(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let ms = cast(&arrays[0], &DataType::Int64)?;
    let ms = ms.as_primitive::<Int64Type>();
    let (from, to) = (arrays[1].as_string::<i32>(), arrays[2].as_string::<i32>());
    let (mut from_tz, mut to_tz) = (Last::new(), Last::new());
    let mut out = Int64Builder::with_capacity(ms.len());
    for i in 0..ms.len() {
        if ms.is_null(i) || from.is_null(i) || to.is_null(i) {
            out.append_null();
            continue;
        }
        let naive = DateTime::<Utc>::from_timestamp_millis(ms.value(i))
            .ok_or_else(|| exec_datafusion_err!("CONVERT_TZ: timestamp {} ms is out of range", ms.value(i)))?
            .naive_utc();
        let source = from_tz.get(from.value(i), parse_tz)?;
        let instant = match source.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.naive_utc(),
            LocalResult::None => naive - source.offset_from_utc_datetime(&(naive - chrono::Duration::days(1))).fix(),
        };
        let target = to_tz.get(to.value(i), parse_tz)?;
        let shown = target.from_utc_datetime(&instant).naive_local();
        out.append_value(shown.and_utc().timestamp_millis());
    }
    Ok(cast(&(Arc::new(out.finish()) as ArrayRef), &DataType::Timestamp(TimeUnit::Millisecond, None))?)
}

fn timestamp_to_string(arrays: &[ArrayRef], function: &str) -> Result<ArrayRef> {
    let ms = arrays[0].as_primitive::<Int64Type>();
    let mut args = PatternArgs::new(arrays);
    let mut out = StringBuilder::with_capacity(ms.len(), ms.len() * 24);
    for i in 0..ms.len() {
        if ms.is_null(i) || args.is_null(i) {
            out.append_null();
            continue;
        }
        let (pattern, tz, _) = args.at(i)?;
        let text = format_with(ms.value(i), pattern, tz).map_err(|e| exec_datafusion_err!("{function}: {e}"))?;
        out.append_value(text);
    }
    Ok(Arc::new(out.finish()))
}

fn string_to_timestamp(arrays: &[ArrayRef], function: &str) -> Result<ArrayRef> {
    let values = arrays[0].as_string::<i32>();
    let mut args = PatternArgs::new(arrays);
    let mut out = Int64Builder::with_capacity(values.len());
    for i in 0..values.len() {
        if values.is_null(i) || args.is_null(i) {
            out.append_null();
            continue;
        }
        let (pattern, tz, text) = args.at(i)?;
        let value = values.value(i);
        let ms = parse_with(value, pattern, tz)
            .map_err(|e| exec_datafusion_err!("{function}: cannot parse '{value}' with pattern '{text}': {e}"))?;
        out.append_value(ms);
    }
    Ok(Arc::new(out.finish()))
}

fn extract_json_field(arrays: &[ArrayRef]) -> Result<ArrayRef> {
    let (docs, paths) = (arrays[0].as_string::<i32>(), arrays[1].as_string::<i32>());
    let mut path = Last::new();
    let mut out = StringBuilder::with_capacity(docs.len(), 0);
    for i in 0..docs.len() {
        if docs.is_null(i) || paths.is_null(i) {
            out.append_null();
            continue;
        }
        let steps = path.get(paths.value(i), compile_json_path)?;
        out.append_option(extract_json(docs.value(i), steps));
    }
    Ok(Arc::new(out.finish()))
}

/// Every function in this module as a DataFusion UDF.
pub fn udfs() -> Vec<ScalarUDF> {
    let mut all = ksql_udfs();
    all.extend(strings::udfs());
    all.extend(json_strings::udfs());
    all.extend(strings::byte_codecs());
    all.push(maps::map_union());
    all.push(maps::entries());
    all.extend(byte_numbers::udfs());
    all.extend(ksql_semantics::udfs());
    all.extend(table::udfs());
    all
}

fn ksql_udfs() -> Vec<ScalarUDF> {
    ALL.iter()
        .map(|&kind| {
            // unix_timestamp() reads the clock on every call.
            let volatility = match kind {
                Kind::UnixTimestamp => Volatility::Volatile,
                _ => Volatility::Immutable,
            };
            ScalarUDF::new_from_impl(KsqlFunction { kind, signature: Signature::user_defined(volatility) })
        })
        .collect()
}

/// Registers every function in this module on `ctx` (replacing DataFusion's own
/// `from_unixtime`, which takes seconds).
pub fn register(ctx: &SessionContext) {
    for udf in udfs() {
        ctx.register_udf(udf);
    }
    {
        use datafusion::execution::FunctionRegistry;
        // Always Ok (the state keeps a list of planners).
        let _ = ctx.state_ref().write().register_expr_planner(Arc::new(strings::StringPlus));
    }
    // ksqlDB's aggregate names for DataFusion's own aggregates (batch semantics in pull
    // queries; continuous queries implement them in `dataflow::operator::aggregate`).
    use datafusion::functions_aggregate::{array_agg::array_agg_udaf, correlation::corr_udaf, stddev::stddev_udaf};
    let aliased = [(array_agg_udaf(), "collect_list"), (stddev_udaf(), "stddev_sample"), (corr_udaf(), "correlation")];
    for (udaf, alias) in aliased {
        ctx.register_udaf(udaf.as_ref().clone().with_aliases([alias]));
    }
    for udaf in aggregates::udafs() {
        ctx.register_udaf(udaf);
    }
    for function in lambdas::functions() {
        ctx.register_higher_order_function(function);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::display::array_value_to_string;

    fn ctx() -> SessionContext {
        let ctx = SessionContext::new();
        register(&ctx);
        ctx
    }

    /// Runs `sql` and renders every row's columns as strings ("NULL" for nulls).
    async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<Vec<String>>> {
        let mut rows = Vec::new();
        for batch in ctx.sql(sql).await?.collect().await? {
            for r in 0..batch.num_rows() {
                let cell = |c: &ArrayRef| match c.is_null(r) {
                    true => "NULL".to_string(),
                    false => array_value_to_string(c, r).unwrap(),
                };
                rows.push(batch.columns().iter().map(cell).collect());
            }
        }
        Ok(rows)
    }

    async fn row(sql: &str) -> Vec<String> {
        query(&ctx(), sql).await.unwrap().remove(0)
    }

    async fn error(sql: &str) -> String {
        let ctx = ctx();
        match ctx.sql(sql).await {
            Ok(df) => df.collect().await.expect_err("query should fail").to_string(),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn string_functions() {
        let r = row("SELECT UCASE('aBc'), lcase('aBc'), len('héllo'), ucase(NULL), len(NULL), \
                     ifnull(NULL, 'x'), ifnull('a', 'b'), ifnull(CAST(NULL AS INT), 7)")
        .await;
        assert_eq!(r, ["ABC", "abc", "5", "NULL", "NULL", "x", "a", "7"]);
    }

    #[tokio::test]
    async fn functions_over_a_table_with_nulls() {
        let ctx = ctx();
        ctx.sql(
            "CREATE TABLE t (s VARCHAR, n BIGINT, i INT) AS VALUES \
                 ('ab', 0, 1), (NULL, NULL, NULL), ('Xyz', 86400000, 2)",
        )
        .await
        .unwrap();
        let rows = query(
            &ctx,
            "SELECT ucase(s), len(s), ifnull(s, 'none'), timestamptostring(n, 'yyyy-MM-dd'), \
             timestamptostring(i, 'SSS'), from_unixtime(n), ifnull(i, -1) FROM t",
        )
        .await
        .unwrap();
        assert_eq!(rows[0], ["AB", "2", "ab", "1970-01-01", "001", "1970-01-01T00:00:00", "1"]);
        assert_eq!(rows[1], ["NULL", "NULL", "none", "NULL", "NULL", "NULL", "-1"]);
        assert_eq!(rows[2], ["XYZ", "3", "Xyz", "1970-01-02", "002", "1970-01-02T00:00:00", "2"]);
        let schema = ctx.sql("SELECT len(s), ifnull(i, 0) FROM t").await.unwrap();
        let types: Vec<_> = schema.schema().fields().iter().map(|f| f.data_type().clone()).collect();
        assert_eq!(types, [DataType::Int32, DataType::Int32]);
    }

    #[tokio::test]
    async fn timestamp_to_string() {
        // 2024-03-05T14:07:09.042Z, a Tuesday.
        let r = row("SELECT \
            timestamptostring(1709647629042, 'yyyy-MM-dd''T''HH:mm:ss.SSSXXX'), \
            timestamptostring(1709647629042, 'yy/M/d h:mm a EEE MMM', 'UTC'), \
            timestamptostring(1709647629042, 'EEEE dd MMMM yyyy HH:mm Z', '+02:00'), \
            timestamptostring(1709647629042, 'HH:mm XXX', 'Z'), \
            timestamptostring(1709647629042, '''at'' HH ''o''''clock''', '-05:30'), \
            timestamptostring(1709647629042, 'HH:mm', 'Europe/Paris'), \
            timestamptostring(CAST(NULL AS BIGINT), 'yyyy'), \
            timestamptostring(1709647629042, NULL)")
        .await;
        assert_eq!(
            r,
            [
                "2024-03-05T14:07:09.042Z",
                "24/3/5 2:07 PM Tue Mar",
                "Tuesday 05 March 2024 16:07 +0200",
                "14:07 Z",
                "at 08 o'clock",
                "15:07",
                "NULL",
                "NULL"
            ]
        );
    }

    #[tokio::test]
    async fn typed_date_and_time_functions() {
        // 2024-03-05T14:07:09.042Z, a Tuesday.
        let r = row("SELECT \
            format_timestamp(from_unixtime(1709647629042), 'yyyy-MM-dd HH:mm:ss.SSS'), \
            format_timestamp(from_unixtime(1709647629042), 'HH:mm', 'Europe/Paris'), \
            CAST(parse_timestamp('2024-03-05 16:07:09.042', 'yyyy-MM-dd HH:mm:ss.SSS', '+02:00') AS BIGINT), \
            format_date(DATE '2024-03-05', 'dd/MM/yyyy EEE'), \
            CAST(parse_date('05/03/2024', 'dd/MM/yyyy') AS VARCHAR), \
            format_time(TIME '14:07:09', 'h:mm a'), \
            CAST(parse_time('2:07 PM', 'h:mm a') AS VARCHAR), \
            CAST(convert_tz(from_unixtime(1709647629042), 'UTC', 'America/New_York') AS VARCHAR), \
            CAST(convert_tz(from_unixtime(1709647629042), 'Asia/Kolkata', 'UTC') AS VARCHAR), \
            format_date(CAST(NULL AS DATE), 'yyyy'), \
            parse_time(NULL, 'HH')")
        .await;
        assert_eq!(
            r,
            [
                "2024-03-05 14:07:09.042",
                "15:07",
                "1709647629042",
                "05/03/2024 Tue",
                "2024-03-05",
                "2:07 PM",
                "14:07:00",
                "2024-03-05T09:07:09.042",
                "2024-03-05T08:37:09.042",
                "NULL",
                "NULL"
            ]
        );
        let types: Vec<DataType> = ctx()
            .sql("SELECT parse_timestamp('1', 'H'), parse_date('1', 'd'), parse_time('1', 'H'), format_time(TIME '01:00:00', 'H')")
            .await
            .unwrap()
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Timestamp(TimeUnit::Millisecond, None),
                DataType::Date32,
                DataType::Time32(TimeUnit::Millisecond),
                DataType::Utf8
            ]
        );
        let e = error("SELECT parse_date('2024-13-01', 'yyyy-MM-dd')").await;
        assert!(e.contains("PARSE_DATE: cannot parse '2024-13-01'"), "{e}");
        let e = error("SELECT format_date(1, 'yyyy')").await;
        assert!(e.contains("FORMAT_DATE(DATE, STRING pattern) cannot be called with"), "{e}");
    }

    #[tokio::test]
    async fn string_to_timestamp() {
        let r = row("SELECT \
            stringtotimestamp('2024-03-05T14:07:09.042Z', 'yyyy-MM-dd''T''HH:mm:ss.SSSXXX'), \
            stringtotimestamp('2024-03-05 16:07:09.042', 'yyyy-MM-dd HH:mm:ss.SSS', '+02:00'), \
            stringtotimestamp('05/03/24 2:07:09 PM', 'dd/MM/yy h:mm:ss a'), \
            stringtotimestamp('1970-01-02', 'yyyy-MM-dd'), \
            stringtotimestamp(NULL, 'yyyy'), \
            stringtotimestamp('2024-07-01 12:00', 'yyyy-MM-dd HH:mm', 'Europe/Paris'), \
            stringtotimestamp('2024-03-31 02:30', 'yyyy-MM-dd HH:mm', 'Europe/Paris')")
        .await;
        assert_eq!(
            r,
            ["1709647629042", "1709647629042", "1709647629000", "86400000", "NULL", "1719828000000", "1711848600000"]
        );
    }

    #[tokio::test]
    async fn errors_are_clear() {
        let e = error("SELECT stringtotimestamp('2024-13-01', 'yyyy-MM-dd')").await;
        assert!(e.contains("cannot parse '2024-13-01' with pattern 'yyyy-MM-dd'"), "{e}");
        let e = error("SELECT timestamptostring(0, 'yyyy', 'Mars/Olympus')").await;
        assert!(e.contains("unknown time zone 'Mars/Olympus'"), "{e}");
        let e = error("SELECT timestamptostring(0, 'yyyy QQ')").await;
        assert!(e.contains("unsupported field 'QQ'"), "{e}");
        let e = error("SELECT ucase(1)").await;
        assert!(e.contains("UCASE(STRING) cannot be called with"), "{e}");
        let e = error("SELECT extractjsonfield('{}', 'a.b')").await;
        assert!(e.contains("must start with '$'"), "{e}");
    }

    #[tokio::test]
    async fn unix_time() {
        let r = row("SELECT from_unixtime(1709647629042), \
                     unix_timestamp(CAST('2024-03-05T14:07:09.042Z' AS TIMESTAMP)), \
                     unix_timestamp(from_unixtime(5)), unix_timestamp(CAST(NULL AS TIMESTAMP)), \
                     from_unixtime(CAST(7 AS INT))")
        .await;
        assert_eq!(r, ["2024-03-05T14:07:09.042", "1709647629042", "5", "NULL", "1970-01-01T00:00:00.007"]);
        let before = Utc::now().timestamp_millis();
        let now: i64 = row("SELECT unix_timestamp()").await[0].parse().unwrap();
        assert!(now >= before && now <= Utc::now().timestamp_millis());
    }

    #[tokio::test]
    async fn extract_json_field() {
        let doc = r#"'{"a": {"b": "x", "n": 1.5, "arr": [{"c": true}, null], "o": {"k": [1, 2]}}, "q w": "s"}'"#;
        let r = row(&format!(
            "SELECT extractjsonfield({doc}, '$.a.b'), extractjsonfield({doc}, '$.a.n'), \
             extractjsonfield({doc}, '$.a.arr[0].c'), extractjsonfield({doc}, '$.a.o'), \
             extractjsonfield({doc}, '$[''q w'']'), extractjsonfield({doc}, '$.a.missing'), \
             extractjsonfield({doc}, '$.a.arr[1]'), extractjsonfield({doc}, '$.a.arr[5]'), \
             extractjsonfield('not json', '$.a'), extractjsonfield(NULL, '$.a'), \
             extractjsonfield({doc}, '$[\"a\"][\"b\"]')"
        ))
        .await;
        assert_eq!(r, ["x", "1.5", "true", r#"{"k":[1,2]}"#, "s", "NULL", "NULL", "NULL", "NULL", "NULL", "x"]);
    }

    #[test]
    fn plain_helpers() {
        assert_eq!(parse_timestamp_ms("2024-03-05 14:07:09", "yyyy-MM-dd HH:mm:ss"), Ok(1709647629000));
        assert_eq!(parse_timestamp_ms("20240305", "yyyyMMdd"), Ok(1709596800000));
        assert_eq!(parse_timestamp_ms("1970-01-01T02:00:00+02:00", "yyyy-MM-dd'T'HH:mm:ssXXX"), Ok(0));
        assert_eq!(format_timestamp_ms(1709647629042, "dd.MM.yyyy HH:mm:ss.SSS"), Ok("05.03.2024 14:07:09.042".into()));
        assert_eq!(format_timestamp_ms(-1, "yyyy-MM-dd HH:mm:ss.SSS"), Ok("1969-12-31 23:59:59.999".into()));
        assert!(parse_timestamp_ms("nope", "yyyy").unwrap_err().contains("cannot parse 'nope'"));
        assert!(format_timestamp_ms(0, "'open").unwrap_err().contains("unterminated quote"));
    }
}
