//! The parameters of the extended protocol, which arrive as client bytes: how many a
//! statement names (`$n`), the types Describe reports for them, binary values read as the
//! text of a literal, and `$n` replaced by those literals before the statement is parsed.
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

/// How many parameters a statement takes: the highest `$n` outside quotes.
pub fn count_params(sql: &str) -> usize {
    let mut max = 0;
    let mut chars = sql.chars().peekable();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_quote = !in_quote;
        } else if c == '$' && !in_quote {
            let mut n = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            max = max.max(n.parse().unwrap_or(0));
        }
    }
    max
}

/// Replaces `$n` with the parameter as a quoted literal (parameters are TEXT).
pub fn substitute(sql: &str, params: &[Option<String>]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_quote = !in_quote;
        }
        if c == '$' && !in_quote && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            let mut n = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            let idx = n.parse::<usize>().unwrap_or(0);
            match params.get(idx.wrapping_sub(1)) {
                Some(Some(v)) => out.push_str(&format!("'{}'", v.replace('\'', "''"))),
                _ => out.push_str("NULL"),
            }
            continue;
        }
        out.push(c);
    }
    out
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
}
