//! The parameters of the extended protocol, which arrive as client bytes: how many a
//! statement names (`$n`), the types Describe reports for them, binary values read as the
//! text of a literal, and `$n` replaced by those literals before the statement is parsed
//! (so a value can only ever be the contents of a string literal).
//! Called by the query parser and Execute in `mod.rs`; pure functions, no I/O, so the fuzz
//! target `pg_messages` runs them directly.

use pgwire::api::Type;

use crate::error::EddyError;

/// Parameter types for Describe: what the client declared in Parse, else what a cast right
/// at the placeholder says (`$1::bigint`, `CAST($1 AS int)`), else text. Drivers that encode
/// by the described type (asyncpg) then send numbers as numbers. Only types whose binary
/// form Eddy reads are inferred; the rest stay text.
pub fn param_types(sql: &str, declared: &[Option<Type>], count: usize) -> Vec<Type> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let mut out: Vec<Type> = (0..count).map(|i| declared.get(i).cloned().flatten().unwrap_or(Type::UNKNOWN)).collect();
    let tokens: Vec<Token> = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let type_of = |t: Option<&Token>| -> Option<Type> {
        let Some(Token::Word(w)) = t else { return None };
        Some(match w.value.to_ascii_lowercase().as_str() {
            "int2" | "smallint" => Type::INT2,
            "int" | "int4" | "integer" => Type::INT4,
            "int8" | "bigint" => Type::INT8,
            "float4" | "real" => Type::FLOAT4,
            "float8" | "double" => Type::FLOAT8,
            "bool" | "boolean" => Type::BOOL,
            _ => return None,
        })
    };
    for (i, t) in tokens.iter().enumerate() {
        let Token::Placeholder(p) = t else { continue };
        let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()).filter(|n| (1..=count).contains(n))
        else {
            continue;
        };
        if out[n - 1] != Type::UNKNOWN {
            continue;
        }
        // `$n::oid[]`: drivers send arrays of oids (asyncpg's type introspection).
        let is_array = matches!((tokens.get(i + 3), tokens.get(i + 4)), (Some(Token::LBracket), Some(Token::RBracket)));
        let array_of = |t: Option<&Token>| -> Option<Type> {
            let Some(Token::Word(w)) = t else { return None };
            Some(match w.value.to_ascii_lowercase().as_str() {
                "oid" => Type::OID_ARRAY,
                "int4" | "int" | "integer" => Type::INT4_ARRAY,
                "int8" | "bigint" => Type::INT8_ARRAY,
                "text" => Type::TEXT_ARRAY,
                _ => return None,
            })
        };
        let cast = match (tokens.get(i + 1), i.checked_sub(2).map(|j| (&tokens[j], &tokens[j + 1]))) {
            (Some(Token::DoubleColon), _) if is_array => array_of(tokens.get(i + 2)),
            (Some(Token::DoubleColon), _) => type_of(tokens.get(i + 2)),
            (Some(Token::Word(w)), Some((Token::Word(c), Token::LParen)))
                if w.value.eq_ignore_ascii_case("as") && c.value.eq_ignore_ascii_case("cast") =>
            {
                type_of(tokens.get(i + 2))
            }
            _ => None,
        };
        if let Some(ty) = cast {
            out[n - 1] = ty;
        }
    }
    out.into_iter().map(|t| if t == Type::UNKNOWN { Type::TEXT } else { t }).collect()
}

/// A one-dimensional array parameter in Postgres's binary layout, as array text `{a,b}`
/// (elements of oid, int4, int8 or text; NULL elements are refused).
pub fn binary_array_param(bytes: &[u8]) -> Result<String, String> {
    let int = |at: usize, n: usize| -> Result<i64, String> {
        let b = bytes.get(at..at + n).ok_or("array parameter cut short")?;
        Ok(match n {
            4 => i32::from_be_bytes(b.try_into().expect("4 bytes")) as i64,
            _ => i64::from_be_bytes(b.try_into().expect("8 bytes")),
        })
    };
    let ndim = int(0, 4)?;
    let elem = int(8, 4)? as u32;
    if ndim == 0 {
        return Ok("{}".into());
    }
    if ndim != 1 {
        return Err(format!("array parameters of {ndim} dimensions"));
    }
    let count = int(12, 4)?;
    let mut at = 20;
    let mut out = Vec::new();
    for _ in 0..count.max(0) {
        let len = int(at, 4)?;
        at += 4;
        if len < 0 {
            return Err("NULL in an array parameter".into());
        }
        let len = len as usize;
        let width = match elem {
            26 | 23 => 4,
            20 => 8,
            _ => len,
        };
        if len != width {
            return Err(format!("array element of {len} bytes (type oid {elem} takes {width})"));
        }
        let value = match elem {
            26 => (int(at, 4)? as u32).to_string(),
            23 => int(at, 4)?.to_string(),
            20 => int(at, 8)?.to_string(),
            _ => {
                let text = String::from_utf8_lossy(bytes.get(at..at + len).ok_or("array parameter cut short")?);
                format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
            }
        };
        out.push(value);
        at += len;
    }
    Ok(format!("{{{}}}", out.join(",")))
}

/// A parameter sent in binary, as the text of a literal (only the common scalar types).
pub fn binary_param(bytes: &[u8], ty: Option<&Type>) -> Result<String, EddyError> {
    let bad = || EddyError::InvalidValue(format!("binary parameter of {} bytes does not fit {ty:?}", bytes.len()));
    let text = match ty {
        Some(t) if *t == Type::INT2 => i16::from_be_bytes(bytes.try_into().map_err(|_| bad())?).to_string(),
        Some(t) if *t == Type::INT4 => i32::from_be_bytes(bytes.try_into().map_err(|_| bad())?).to_string(),
        Some(t) if *t == Type::INT8 => i64::from_be_bytes(bytes.try_into().map_err(|_| bad())?).to_string(),
        Some(t) if *t == Type::FLOAT4 => f32::from_be_bytes(bytes.try_into().map_err(|_| bad())?).to_string(),
        Some(t) if *t == Type::FLOAT8 => f64::from_be_bytes(bytes.try_into().map_err(|_| bad())?).to_string(),
        Some(t) if *t == Type::BOOL => (bytes.first() == Some(&1)).to_string(),
        Some(t) if *t == Type::TIMESTAMP || *t == Type::TIMESTAMPTZ => {
            let micros = i64::from_be_bytes(bytes.try_into().map_err(|_| bad())?);
            let text = timestamp_text(micros).ok_or_else(bad)?;
            if *t == Type::TIMESTAMPTZ {
                format!("{text}+00:00")
            } else {
                text
            }
        }
        Some(t) if *t == Type::DATE => {
            let days = i32::from_be_bytes(bytes.try_into().map_err(|_| bad())?);
            date_text(i64::from(days)).ok_or_else(bad)?
        }
        Some(t) if *t == Type::TIME => {
            let micros = i64::from_be_bytes(bytes.try_into().map_err(|_| bad())?);
            if !(0..=MICROS_PER_DAY).contains(&micros) {
                return Err(bad());
            }
            time_text(micros)
        }
        Some(t) if *t == Type::NUMERIC => numeric_text(bytes).ok_or_else(bad)?,
        Some(t) if [Type::OID_ARRAY, Type::INT4_ARRAY, Type::INT8_ARRAY, Type::TEXT_ARRAY].contains(t) => {
            binary_array_param(bytes).map_err(EddyError::InvalidValue)?
        }
        Some(t) if *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::UNKNOWN => {
            String::from_utf8_lossy(bytes).into_owned()
        }
        None => String::from_utf8_lossy(bytes).into_owned(),
        Some(other) => {
            return Err(EddyError::NotImplemented(format!("binary parameters of type {other} (send it as text)")));
        }
    };
    Ok(text)
}

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Days from 1970-01-01 to Postgres's epoch, 2000-01-01 (binary dates and times count from it).
const PG_EPOCH_DAYS: i64 = 10_957;

/// `YYYY-MM-DD` for a binary date (days since 2000-01-01); `None` for ±infinity and years
/// outside 1..=9999.
fn date_text(days: i64) -> Option<String> {
    // Howard Hinnant's civil_from_days, over days since 1970-01-01.
    let z = days.checked_add(PG_EPOCH_DAYS + 719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (1..=9999).contains(&year).then(|| format!("{year:04}-{month:02}-{day:02}"))
}

/// `HH:MM:SS.ffffff` for microseconds since midnight.
fn time_text(micros: i64) -> String {
    let (secs, us) = (micros / 1_000_000, micros % 1_000_000);
    format!("{:02}:{:02}:{:02}.{us:06}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` for a binary timestamp (microseconds since 2000-01-01).
fn timestamp_text(micros: i64) -> Option<String> {
    let date = date_text(micros.div_euclid(MICROS_PER_DAY))?;
    Some(format!("{date} {}", time_text(micros.rem_euclid(MICROS_PER_DAY))))
}

/// The decimal text of a binary NUMERIC: a header of four 16-bit fields (digit count,
/// weight of the first digit, sign, display scale), then base-10000 digits. `None` for NaN,
/// ±infinity and malformed values.
fn numeric_text(bytes: &[u8]) -> Option<String> {
    let field = |i: usize| bytes.get(2 * i..2 * i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (ndigits, weight, sign, dscale) = (field(0)? as usize, field(1)? as i16 as i64, field(2)?, field(3)? as usize);
    if bytes.len() != 8 + 2 * ndigits || dscale > 0x3FFF || !matches!(sign, 0 | 0x4000) {
        return None;
    }
    let digits: Vec<u16> = (0..ndigits).map(|i| field(4 + i)).collect::<Option<_>>()?;
    if digits.iter().any(|d| *d >= 10_000) {
        return None;
    }
    let digit = |i: i64| usize::try_from(i).ok().and_then(|i| digits.get(i)).copied().unwrap_or(0);
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&digit(0).to_string());
        (1..=weight).for_each(|i| out.push_str(&format!("{:04}", digit(i))));
    }
    if dscale > 0 {
        let mut fraction = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        fraction.truncate(dscale);
        out.push('.');
        out.push_str(&fraction);
    }
    Some(out)
}

/// The most parameters a statement takes: Bind counts the values in 16 bits.
pub const MAX_PARAMS: usize = u16::MAX as usize;

/// How many parameters a statement takes: the highest `$n` (see [`placeholders`]), at most
/// [`MAX_PARAMS`].
pub fn count_params(sql: &str) -> Result<usize, EddyError> {
    let count = placeholders(sql).iter().map(|p| p.number).max().unwrap_or(0);
    if count > MAX_PARAMS {
        return Err(EddyError::LimitExceeded(format!("parameter ${count}: a statement takes at most {MAX_PARAMS}")));
    }
    Ok(count)
}

/// Replaces each `$n` (see [`placeholders`]) with its parameter as a quoted literal
/// (parameters are TEXT), or NULL; the rest of the text is kept as written.
pub fn substitute(sql: &str, params: &[Option<String>]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for p in placeholders(sql) {
        out.push_str(&sql[copied..p.bytes.start]);
        // A space on each side keeps the replacement a token of its own: right after
        // `E'a\n'` or `U&` the literal would continue that token (the value could use its
        // escapes), and `NULL` followed by `@` or `$` would start a longer name.
        if !out.is_empty() && !out.ends_with(char::is_whitespace) {
            out.push(' ');
        }
        match params.get(p.number.wrapping_sub(1)) {
            Some(Some(v)) => out.push_str(&format!("'{}'", v.replace('\'', "''"))),
            _ => out.push_str("NULL"),
        }
        copied = p.bytes.end;
        if sql[copied..].starts_with(|c: char| !c.is_whitespace()) {
            out.push(' ');
        }
    }
    out.push_str(&sql[copied..]);
    out
}

/// One `$n` in a statement's text.
struct Placeholder {
    bytes: std::ops::Range<usize>,
    /// `n` (`usize::MAX` when it does not fit).
    number: usize,
}

/// The parameters `$n` of a statement, read from the tokens `sql::parse` reads (so none
/// inside string literals, quoted names or comments); none if the text does not tokenize,
/// which `sql::parse` then reports.
fn placeholders(sql: &str) -> Vec<Placeholder> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else { return Vec::new() };
    let mut at = Locator { sql, line: 1, column: 1, byte: 0 };
    let mut out = Vec::new();
    for t in tokens {
        let Token::Placeholder(p) = &t.token else { continue };
        let Some(digits) = p.strip_prefix('$').filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let start = at.byte_at(t.span.start.line, t.span.start.column);
        let end = at.byte_at(t.span.end.line, t.span.end.column);
        // sqlparser misplaces what it reads inside a MySQL-style hint (`/*! ... */`): a
        // placeholder that is not where its span says stays as written.
        if sql.get(start..end) != Some(p.as_str()) {
            continue;
        }
        out.push(Placeholder { bytes: start..end, number: digits.parse().unwrap_or(usize::MAX) });
    }
    out
}

/// Finds sqlparser's (line, column) locations in the text, in bytes, walking forward: the
/// tokens come in order, so one pass serves them all.
struct Locator<'a> {
    sql: &'a str,
    line: u64,
    column: u64,
    byte: usize,
}

impl Locator<'_> {
    fn byte_at(&mut self, line: u64, column: u64) -> usize {
        while (self.line, self.column) < (line, column) {
            let Some(c) = self.sql[self.byte..].chars().next() else { break };
            self.byte += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        self.byte
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_types_come_from_casts_or_the_client() {
        let sql = "SELECT $1::BIGINT + 1, CAST($2 AS int), $3, $4::bool, $5::oid[]";
        assert_eq!(param_types(sql, &[], 5), vec![Type::INT8, Type::INT4, Type::TEXT, Type::BOOL, Type::OID_ARRAY]);
        assert_eq!(param_types(sql, &[None, None, Some(Type::FLOAT8)], 5)[2], Type::FLOAT8);
    }

    #[test]
    fn binary_dates_times_and_numerics_become_their_text() {
        let ts = |micros: i64, ty: &Type| binary_param(&micros.to_be_bytes(), Some(ty)).ok();
        assert_eq!(ts(0, &Type::TIMESTAMP).as_deref(), Some("2000-01-01 00:00:00.000000"));
        // 2026-12-03 11:22:33.456789 is 9833 days and 40953.456789 s after 2000-01-01.
        let t = 9833 * MICROS_PER_DAY + 40_953_456_789;
        assert_eq!(ts(t, &Type::TIMESTAMP).as_deref(), Some("2026-12-03 11:22:33.456789"));
        assert_eq!(ts(t, &Type::TIMESTAMPTZ).as_deref(), Some("2026-12-03 11:22:33.456789+00:00"));
        assert_eq!(ts(-1, &Type::TIMESTAMP).as_deref(), Some("1999-12-31 23:59:59.999999"));
        assert_eq!(ts(i64::MAX, &Type::TIMESTAMP), None, "infinity");
        assert_eq!(ts(t, &Type::TIME), None, "past midnight");
        assert_eq!(ts(40_953_000_001, &Type::TIME).as_deref(), Some("11:22:33.000001"));
        let date = |days: i32| binary_param(&days.to_be_bytes(), Some(&Type::DATE)).ok();
        assert_eq!(date(9833).as_deref(), Some("2026-12-03"));
        assert_eq!(date(-10_957).as_deref(), Some("1970-01-01"));
        assert_eq!(date(59).as_deref(), Some("2000-02-29"));
        assert_eq!(date(i32::MAX), None);
        assert!(binary_param(&[0; 7], Some(&Type::TIMESTAMP)).is_err());

        let numeric = |weight: i16, sign: u16, dscale: u16, digits: &[u16]| {
            let mut b = Vec::new();
            for f in [digits.len() as u16, weight as u16, sign, dscale].iter().chain(digits) {
                b.extend_from_slice(&f.to_be_bytes());
            }
            binary_param(&b, Some(&Type::NUMERIC)).ok()
        };
        assert_eq!(numeric(0, 0, 2, &[12, 3400]).as_deref(), Some("12.34"));
        assert_eq!(numeric(1, 0x4000, 0, &[1, 2]).as_deref(), Some("-10002"));
        assert_eq!(numeric(2, 0, 0, &[5]).as_deref(), Some("500000000"));
        assert_eq!(numeric(-2, 0, 8, &[1]).as_deref(), Some("0.00000001"));
        assert_eq!(numeric(0, 0, 3, &[]).as_deref(), Some("0.000"));
        assert_eq!(
            numeric(4, 0, 2, &[1234, 5678, 9012, 3456, 7890, 1200]).as_deref(),
            Some("12345678901234567890.12"),
            "17+ significant digits stay exact"
        );
        assert_eq!(numeric(0, 0xC000, 0, &[]), None, "NaN");
        assert_eq!(numeric(0, 0, 0, &[10_000]), None, "a digit past 9999");
        assert!(binary_param(&[0, 1, 0, 0, 0, 0, 0, 0], Some(&Type::NUMERIC)).is_err(), "a digit missing");
    }

    #[test]
    fn binary_array_parameters_become_array_text() {
        // ndim 1, no nulls, element oid 26 (oid), 2 elements from 1; then (len, value) pairs.
        let mut b = Vec::new();
        for v in [1i32, 0, 26, 2, 1] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        for oid in [1016u32, 20] {
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&oid.to_be_bytes());
        }
        assert_eq!(binary_array_param(&b).unwrap(), "{1016,20}");
        assert!(binary_array_param(&b[..10]).is_err());
    }

    /// Found by the fuzz target `pg_messages`: a Parse message naming `$366666666` made
    /// Eddy allocate a slot for every parameter up to it (8.8 GB).
    #[test]
    fn parameter_numbers_stop_at_what_bind_can_send() {
        assert_eq!(count_params("SELECT $2, $1").unwrap(), 2);
        assert_eq!(count_params("SELECT $65535").unwrap(), MAX_PARAMS);
        assert!(matches!(count_params("SELECT $65536"), Err(EddyError::LimitExceeded(_))));
        assert!(count_params("SELECT $366666666").is_err());
        assert!(count_params("SELECT $99999999999999999999999").is_err());
    }

    /// Found by the fuzz target `pg_messages`: `$n` was replaced wherever a count of single
    /// quotes said it was outside a string, so in comments and quoted names too (a value
    /// with a newline ended the comment: the rest ran as SQL), and a quote in a comment
    /// left the real parameters unreplaced. Also: a literal right after `E'...'` joined it, and `NULL` the name after it.
    #[test]
    fn only_real_parameters_are_replaced() {
        let values = [Some("x'\nDROP STREAM s; --".to_string()), Some("it's".to_string())];
        for (sql, expected) in [
            ("SELECT $1 -- $2\n", "SELECT 'x''\nDROP STREAM s; --' -- $2\n"),
            ("SELECT /* $1 */ \"$1\", '$1', $$ $1 $$, $2", "SELECT /* $1 */ \"$1\", '$1', $$ $1 $$, 'it''s'"),
            ("-- don't\nSELECT $2, $3, $0, a$1", "-- don't\nSELECT 'it''s' , NULL , NULL , a$1"),
            ("SELECT ' unterminated $1", "SELECT ' unterminated $1"),
            ("SELECT E'\\n'$2, U&$2, $3@$$x$$", "SELECT E'\\n' 'it''s' , U& 'it''s' , NULL @$$x$$"),
        ] {
            assert_eq!(substitute(sql, &values), expected);
        }
        assert_eq!(count_params("SELECT '$7' -- $8\n, $1").unwrap(), 1);
        // Found by the fuzz target: the spans sqlparser gives inside a hint pointed 3 or more
        // characters early, and the wrong text was replaced.
        assert_eq!(substitute("SELECT /*!555 x$5, $1 */ 2", &values), "SELECT /*!555 x$5, $1 */ 2");
    }

    /// Found by the fuzz target `pg_messages`: an int8 element whose length said 6 MB was read
    /// as its first 8 bytes, and the array accepted although cut short.
    #[test]
    fn number_elements_have_their_width() {
        let array = |len: i32, value: &[u8]| {
            let mut b = Vec::new();
            for v in [1i32, 0, 20, 1, 1, len] {
                b.extend_from_slice(&v.to_be_bytes());
            }
            b.extend_from_slice(value);
            b
        };
        assert_eq!(binary_array_param(&array(8, &(-6i64).to_be_bytes())).unwrap(), "{-6}");
        assert!(binary_array_param(&array(0x60_0000, &5i64.to_be_bytes())).is_err());
        assert!(binary_array_param(&array(4, &5i64.to_be_bytes())).is_err());
    }
}
