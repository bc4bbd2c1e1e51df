//! ksqlDB's statements that look at what runs and change whether it runs: `SHOW`/`LIST`,
//! `DESCRIBE`, `EXPLAIN`, `PRINT`, `ASSERT [NOT EXISTS] TOPIC`, `TERMINATE`, `PAUSE`, `RESUME`.

use datafusion::sql::sqlparser::tokenizer::Token;

use super::{parse_one, with_properties, RelationKind, Statement, Tokens};
use crate::error::EddyError;

/// `SHOW | LIST what [EXTENDED]`; `SHOW STREAMS|TABLES EXTENDED` is `DESCRIBE STREAMS|TABLES
/// EXTENDED`, as in ksqlDB.
pub(super) fn parse_show(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.pos += 1;
    let what = t.ident()?;
    let what = if what == "all" && t.eat_word("QUERIES") { "queries".to_string() } else { what };
    // SHOW TRANSACTION ISOLATION LEVEL (pgJDBC, Metabase).
    let what = if what == "transaction" && t.eat_word("ISOLATION") && t.eat_word("LEVEL") {
        "transaction_isolation".to_string()
    } else if what == "time" && t.eat_word("ZONE") {
        "timezone".to_string()
    } else {
        what
    };
    let extended = t.eat_word("EXTENDED");
    t.expect_end()?;
    Ok(match (what.as_str(), extended) {
        ("streams", true) => Statement::DescribeAll { kind: RelationKind::Stream, extended },
        ("tables", true) => Statement::DescribeAll { kind: RelationKind::Table, extended },
        _ => Statement::Show { what },
    })
}

/// `DESCRIBE [STREAM | TABLE] name [EXTENDED]`, `DESCRIBE STREAMS | TABLES [EXTENDED]`,
/// `DESCRIBE FUNCTION name`.
pub(super) fn parse_describe(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.pos += 1;
    if t.eat_word("FUNCTION") {
        let name = t.ident()?;
        t.expect_end()?;
        return Ok(Statement::DescribeFunction { name });
    }
    // A relation named `streams` is still reachable: `DESCRIBE STREAM streams`, `"streams"`.
    let all = match t.peek_word(0).as_deref() {
        Some("STREAMS") => Some(RelationKind::Stream),
        Some("TABLES") => Some(RelationKind::Table),
        _ => None,
    };
    if let Some(kind) = all {
        t.pos += 1;
        let extended = t.eat_word("EXTENDED");
        t.expect_end()?;
        return Ok(Statement::DescribeAll { kind, extended });
    }
    if !t.eat_word("STREAM") {
        t.eat_word("TABLE");
    }
    let name = t.ident()?;
    let extended = t.eat_word("EXTENDED");
    t.expect_end()?;
    Ok(Statement::Describe { name, extended })
}

/// `EXPLAIN statement` or ksqlDB's `EXPLAIN query_id` (one name and nothing else).
pub(super) fn parse_explain(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.pos += 1;
    // As in Postgres; each level would parse the rest again (and recurse).
    if t.peek_word(0).as_deref() == Some("EXPLAIN") {
        return Err(t.error("syntax error: EXPLAIN of an EXPLAIN"));
    }
    if let (Some(Token::Word(w)), None) = (t.tokens.get(t.pos).map(|x| &x.token), t.tokens.get(t.pos + 1)) {
        if w.keyword == datafusion::sql::sqlparser::keywords::Keyword::NoKeyword || w.quote_style.is_some() {
            return Ok(Statement::ExplainQuery { query_id: w.value.to_uppercase() });
        }
    }
    let offset = t.rest_offset_chars();
    Ok(Statement::Explain(Box::new(parse_one(t.rest(), offset)?)))
}

/// `PRINT topic [FROM BEGINNING] [INTERVAL | SAMPLE n] [LIMIT n]`.
pub(super) fn parse_print(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.pos += 1;
    let (topic, exact) = topic_name(t)?;
    let (mut from_beginning, mut interval, mut limit) = (false, 1, None);
    loop {
        if t.eat_word("FROM") {
            t.expect_word("BEGINNING")?;
            from_beginning = true;
        } else if t.eat_word("INTERVAL") || t.eat_word("SAMPLE") {
            interval = t.number()?;
            if interval == 0 {
                return Err(t.error("INTERVAL must be at least 1"));
            }
        } else if t.eat_word("LIMIT") {
            limit = Some(t.number()?);
        } else {
            break;
        }
    }
    t.expect_end()?;
    Ok(Statement::Print { topic, exact, from_beginning, interval, limit })
}

/// `ASSERT [NOT EXISTS] TOPIC name [WITH (PARTITIONS = n, REPLICAS = n, ...)]
/// [TIMEOUT n unit]`.
pub(super) fn parse_assert(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.pos += 1;
    let exists = !(t.eat_word("NOT") && {
        t.expect_word("EXISTS")?;
        true
    });
    if t.eat_word("SCHEMA") {
        return parse_assert_schema(t, exists);
    }
    t.expect_word("TOPIC")?;
    let (topic, exact) = topic_name(t)?;
    let props = with_properties(t)?;
    let timeout_ms = if t.eat_word("TIMEOUT") { Some(super::window::duration(t)?.unsigned_abs()) } else { None };
    t.expect_end()?;
    Ok(Statement::AssertTopic { topic, exact, exists, props, timeout_ms })
}

/// The rest of `ASSERT [NOT EXISTS] SCHEMA [SUBJECT 'name'] [ID n] [TIMEOUT n unit]` (one of
/// SUBJECT and ID at least).
fn parse_assert_schema(t: &mut Tokens, exists: bool) -> Result<Statement, EddyError> {
    let subject = if t.eat_word("SUBJECT") {
        match t.tokens.get(t.pos).map(|x| x.token.clone()) {
            Some(Token::SingleQuotedString(s)) => {
                t.pos += 1;
                Some(s)
            }
            Some(Token::Word(w)) => {
                t.pos += 1;
                Some(w.value)
            }
            _ => return Err(t.error("syntax error: expected a subject name")),
        }
    } else {
        None
    };
    let id = if t.eat_word("ID") {
        let n = t.number()?;
        Some(u32::try_from(n).map_err(|_| t.error(format!("schema id {n} is out of range")))?)
    } else {
        None
    };
    if subject.is_none() && id.is_none() {
        return Err(t.error("ASSERT SCHEMA statements must include a subject name or an id"));
    }
    let timeout_ms = if t.eat_word("TIMEOUT") { Some(super::window::duration(t)?.unsigned_abs()) } else { None };
    t.expect_end()?;
    Ok(Statement::AssertSchema { subject, id, exists, timeout_ms })
}

/// `TERMINATE | PAUSE | RESUME query_id | ALL`.
pub(super) fn parse_query_control(t: &mut Tokens, word: &str) -> Result<Statement, EddyError> {
    t.pos += 1;
    let query_id = if t.eat_word("ALL") { None } else { Some(t.ident()?.to_uppercase()) };
    t.expect_end()?;
    Ok(match word {
        "TERMINATE" => Statement::Terminate { query_id },
        "PAUSE" => Statement::PauseResume { query_id, pause: true },
        _ => Statement::PauseResume { query_id, pause: false },
    })
}

/// A topic's name as PRINT and ASSERT take it (`exact`: quoted, else any case matches).
fn topic_name(t: &mut Tokens) -> Result<(String, bool), EddyError> {
    let name = match t.tokens.get(t.pos).map(|x| x.token.clone()) {
        Some(Token::Word(w)) => (w.value.clone(), w.quote_style.is_some()),
        Some(Token::SingleQuotedString(s)) => (s, true),
        _ => return Err(t.error("syntax error: expected a topic name")),
    };
    t.pos += 1;
    Ok(name)
}
