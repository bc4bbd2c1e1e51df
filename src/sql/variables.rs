//! ksqlDB's variables: `DEFINE name = 'value';`, `UNDEFINE name;`, `SHOW VARIABLES`, and
//! `${name}` anywhere in a later statement of the session (identifiers, string literals,
//! numbers) replaced by the value's text before the statement is parsed, as ksqlDB's
//! variable substitution does. Names are case-insensitive. A statement that names an
//! undefined variable is refused, naming it. Also `RUN SCRIPT 'path'`, whose file of
//! statements is substituted the same way.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::tokenizer::Token;

use super::{Statement, Tokens};
use crate::error::EddyError;

/// `RUN SCRIPT 'path'`.
pub(super) fn parse_run_script(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.pos += 1;
    t.expect_word("SCRIPT")?;
    let Some(Token::SingleQuotedString(path)) = t.peek().cloned() else {
        return Err(t.error("syntax error: expected the script's path in quotes: RUN SCRIPT '/path/to/statements.sql'"));
    };
    t.pos += 1;
    t.expect_end()?;
    Ok(Statement::RunScript { path })
}

/// `sql` with every `${name}` replaced, statement by statement: a `DEFINE` or `UNDEFINE`
/// earlier in the same text counts for the statements after it (the session's `vars` are not
/// changed here; running those statements does that).
pub fn substitute(sql: &str, vars: &BTreeMap<String, String>) -> Result<String, EddyError> {
    if !sql.contains("${") {
        return Ok(sql.to_string());
    }
    let mut vars = vars.clone();
    let mut out = String::with_capacity(sql.len());
    for statement in split_statements(sql) {
        let replaced = replace(statement, &vars)?;
        match define(&replaced) {
            Some((name, Some(value))) => {
                vars.insert(name, value);
            }
            Some((name, None)) => {
                vars.remove(&name);
            }
            None => {}
        }
        out.push_str(&replaced);
    }
    Ok(out)
}

/// `DEFINE name = 'value'` as (name, Some(value)), `UNDEFINE name` as (name, None).
pub fn define(statement: &str) -> Option<(String, Option<String>)> {
    let text = skip_comments(statement).trim_end_matches(';').trim();
    let (word, rest) = text.split_once(char::is_whitespace)?;
    let rest = rest.trim();
    if word.eq_ignore_ascii_case("UNDEFINE") {
        return is_name(rest).then(|| (rest.to_lowercase(), None));
    }
    if !word.eq_ignore_ascii_case("DEFINE") {
        return None;
    }
    let (name, value) = rest.split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    let quoted = value.strip_prefix('\'')?.strip_suffix('\'')?;
    if !is_name(name) || (quoted.replace("''", "").contains('\'')) {
        return None;
    }
    Some((name.to_lowercase(), Some(quoted.replace("''", "'"))))
}

/// `text` after its leading whitespace and comments (`-- ...` lines, `/* ... */`).
fn skip_comments(text: &str) -> &str {
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, next)| next).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, next)| next).trim_start();
        } else {
            return rest;
        }
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_') && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Each `${name}` of `statement` replaced by its value.
fn replace(statement: &str, vars: &BTreeMap<String, String>) -> Result<String, EddyError> {
    let mut out = String::with_capacity(statement.len());
    let mut rest = statement;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[at..]);
            return Ok(out);
        };
        let name = &after[..end];
        if !is_name(name) {
            out.push_str("${");
            rest = after;
            continue;
        }
        let value = vars.get(&name.to_lowercase()).ok_or_else(|| {
            EddyError::UndefinedObject(format!("variable {name} is not defined (DEFINE {name} = '...' first)"))
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `sql` cut after each `;` that ends a statement (not inside quotes or comments); the
/// pieces keep every character, so joined they are `sql`.
fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut pieces = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                pieces.push(&sql[start..=i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < sql.len() {
        pieces.push(&sql[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_replaced_after_their_define() {
        let vars = BTreeMap::from([("fmt".to_string(), "JSON".to_string())]);
        let sql =
            "DEFINE name = 'orders'; CREATE STREAM ${Name} (id INT) WITH (VALUE_FORMAT='${fmt}');\nUNDEFINE name;";
        assert_eq!(
            substitute(sql, &vars).unwrap(),
            "DEFINE name = 'orders'; CREATE STREAM orders (id INT) WITH (VALUE_FORMAT='JSON');\nUNDEFINE name;"
        );
        let err = substitute("UNDEFINE fmt; SELECT ${fmt}", &vars).unwrap_err();
        assert!(err.to_string().contains("variable fmt is not defined"), "{err}");
        // Not a reference: left as written.
        assert_eq!(substitute("SELECT '$' || '{x' || '${1x}'", &vars).unwrap(), "SELECT '$' || '{x' || '${1x}'");
        // A `;` inside quotes does not end the statement that DEFINEs.
        assert_eq!(substitute("DEFINE v = 'a;b'; SELECT '${v}'", &vars).unwrap(), "DEFINE v = 'a;b'; SELECT 'a;b'");
    }

    #[test]
    fn define_and_undefine_are_read() {
        assert_eq!(define("DEFINE a_1 = 'x y';"), Some(("a_1".into(), Some("x y".into()))));
        assert_eq!(define("undefine A_1"), Some(("a_1".into(), None)));
        assert_eq!(define("DEFINE a = x"), None);
        assert_eq!(define("DEFINED a = 'x'"), None);
        // After comments (a script's first statement, a psql file).
        assert_eq!(define("-- topics\n  -- more\nDEFINE t = 'v';"), Some(("t".into(), Some("v".into()))));
        assert_eq!(define("/* drop it */ UNDEFINE t"), Some(("t".into(), None)));
    }
}
