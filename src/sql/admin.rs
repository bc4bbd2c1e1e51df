//! Postgres statements that are not ksqlDB's: users (`CREATE USER`, `ALTER USER`,
//! `DROP USER`, also spelled `ROLE`), privileges (`GRANT`, `REVOKE`), cursors (`DECLARE`,
//! `FETCH`, `MOVE`, `CLOSE`), `COPY (...) TO STDOUT`, `SET`, `ALTER SYSTEM` and savepoints.
//! Users are kept by `auth.rs`, grants by the catalog, cursors by the Postgres endpoint
//! (`pgwire/cursor.rs`).

use datafusion::sql::sqlparser::tokenizer::Token;

use super::{parse_select, Privilege, SelectStatement, Statement, Tokens};
use crate::error::EddyError;

/// `CREATE USER name [WITH] [PASSWORD 'p' | SUPERUSER | NOSUPERUSER | LOGIN | ...]`.
pub(super) fn parse_create_user(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.expect_word("CREATE")?;
    if !t.eat_word("USER") {
        t.expect_word("ROLE")?;
    }
    let name = t.ident()?;
    let (password, superuser) = role_options(t)?;
    Ok(Statement::CreateUser { name, password, superuser: superuser.unwrap_or(false) })
}

/// `ALTER USER name [WITH] PASSWORD 'p'` (and the other role options).
pub(super) fn parse_alter_user(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.expect_word("ALTER")?;
    if !t.eat_word("USER") {
        t.expect_word("ROLE")?;
    }
    let name = t.ident()?;
    let (password, superuser) = role_options(t)?;
    Ok(Statement::AlterUser { name, password, superuser })
}

/// `DROP USER [IF EXISTS] name`.
pub(super) fn parse_drop_user(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.expect_word("DROP")?;
    if !t.eat_word("USER") {
        t.expect_word("ROLE")?;
    }
    let if_exists = t.eat_if_exists()?;
    let name = t.ident()?;
    t.expect_end()?;
    Ok(Statement::DropUser { name, if_exists })
}

/// `GRANT {SELECT | INSERT}[, ...] | ALL [PRIVILEGES] ON [STREAM | TABLE] name[, ...] TO user[, ...]`,
/// and `REVOKE ... FROM user[, ...]`.
pub(super) fn parse_grant(t: &mut Tokens) -> Result<Statement, EddyError> {
    let revoke = t.eat_word("REVOKE");
    if !revoke {
        t.expect_word("GRANT")?;
    }
    let mut privileges = Vec::new();
    if t.eat_word("ALL") {
        t.eat_word("PRIVILEGES");
        privileges = vec![Privilege::Select, Privilege::Insert];
    } else {
        loop {
            if t.eat_word("SELECT") {
                privileges.push(Privilege::Select);
            } else if t.eat_word("INSERT") {
                privileges.push(Privilege::Insert);
            } else {
                return Err(t.error("syntax error: expected SELECT, INSERT or ALL (the privileges Eddy has)"));
            }
            if !t.eat(&Token::Comma) {
                break;
            }
        }
    }
    t.expect_word("ON")?;
    if !t.eat_word("STREAM") {
        t.eat_word("TABLE");
    }
    let relations = names(t)?;
    t.expect_word(if revoke { "FROM" } else { "TO" })?;
    let users = names(t)?;
    t.expect_end()?;
    Ok(Statement::Grant { privileges, relations, users, revoke })
}

/// `a, b, c`: one or more names.
fn names(t: &mut Tokens) -> Result<Vec<String>, EddyError> {
    let mut out = vec![t.ident()?];
    while t.eat(&Token::Comma) {
        out.push(t.ident()?);
    }
    Ok(out)
}

fn role_options(t: &mut Tokens) -> Result<(Option<String>, Option<bool>), EddyError> {
    t.eat_word("WITH");
    let mut password = None;
    let mut superuser = None;
    while !t.at_end() {
        if t.eat_word("PASSWORD") {
            match t.peek().cloned() {
                Some(Token::SingleQuotedString(s)) => {
                    t.pos += 1;
                    password = Some(s);
                }
                _ => return Err(t.error("syntax error: PASSWORD takes a quoted string")),
            }
        } else if t.eat_word("ENCRYPTED") {
            continue;
        } else if t.eat_word("SUPERUSER") {
            superuser = Some(true);
        } else if t.eat_word("NOSUPERUSER") {
            superuser = Some(false);
        } else if matches!(
            t.peek_word(0).as_deref(),
            Some(
                "LOGIN"
                    | "NOLOGIN"
                    | "INHERIT"
                    | "NOINHERIT"
                    | "CREATEDB"
                    | "NOCREATEDB"
                    | "CREATEROLE"
                    | "NOCREATEROLE"
            )
        ) {
            t.pos += 1;
        } else {
            return Err(t.error("syntax error: expected PASSWORD, SUPERUSER, NOSUPERUSER or LOGIN"));
        }
    }
    Ok((password, superuser))
}

/// `DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR
/// [{WITH | WITHOUT} HOLD] FOR query`.
pub(super) fn parse_declare(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.expect_word("DECLARE")?;
    let name = t.ident()?;
    loop {
        if t.eat_word("BINARY") {
            return Err(t.error("binary cursors are not supported"));
        }
        if !(t.eat_word("ASENSITIVE") || t.eat_word("INSENSITIVE") || t.eat_word("NO") || t.eat_word("SCROLL")) {
            break;
        }
    }
    t.expect_word("CURSOR")?;
    if t.eat_word("WITH") || t.eat_word("WITHOUT") {
        t.expect_word("HOLD")?;
    }
    t.expect_word("FOR")?;
    let offset = t.rest_offset_chars();
    let query: SelectStatement = parse_select(t.rest(), offset, true)?;
    Ok(Statement::DeclareCursor { name, query })
}

/// `FETCH [NEXT | FORWARD [n | ALL] | n | ALL] [FROM | IN] name`; `MOVE` takes the same
/// and discards the rows. `count` is `None` for ALL.
pub(super) fn parse_fetch(t: &mut Tokens) -> Result<Statement, EddyError> {
    let discard = t.eat_word("MOVE");
    if !discard {
        t.expect_word("FETCH")?;
    }
    let mut count = Some(1);
    if t.eat_word("NEXT") {
    } else if t.eat_word("ALL") {
        count = None;
    } else if t.eat_word("FORWARD") {
        if t.eat_word("ALL") {
            count = None;
        } else if matches!(t.peek(), Some(Token::Number(..))) {
            count = Some(t.number()? as usize);
        }
    } else if matches!(t.peek(), Some(Token::Number(..))) {
        count = Some(t.number()? as usize);
    } else if matches!(
        t.peek_word(0).as_deref(),
        Some("BACKWARD" | "PRIOR" | "FIRST" | "LAST" | "ABSOLUTE" | "RELATIVE")
    ) {
        return Err(EddyError::NotImplemented("cursors move forward only (FETCH [FORWARD] n)".into()));
    }
    let _ = t.eat_word("FROM") || t.eat_word("IN");
    let name = t.ident()?;
    t.expect_end()?;
    Ok(Statement::Fetch { name, count, discard })
}

/// `CLOSE name | CLOSE ALL`.
pub(super) fn parse_close(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.expect_word("CLOSE")?;
    let name = if t.eat_word("ALL") { None } else { Some(t.ident()?) };
    t.expect_end()?;
    Ok(Statement::CloseCursor { name })
}

/// `SET` names may be qualified (`eddy.fetch_timeout`).
pub(super) fn dotted_name(t: &mut Tokens, first: String) -> Result<String, EddyError> {
    let mut name = first;
    while t.eat(&Token::Period) {
        name.push('.');
        name.push_str(&t.ident()?);
    }
    Ok(name)
}

/// `ALTER SYSTEM 'prop' = 'value'` (ksqlDB), `ALTER SYSTEM SET name { = | TO } value`,
/// `ALTER SYSTEM RESET name` (Postgres).
pub(super) fn parse_alter_system(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.pos += 2;
    let reset = t.eat_word("RESET");
    let set = !reset && t.eat_word("SET");
    let name = t.property_name()?;
    let value = if reset {
        None
    } else {
        if !(t.eat(&Token::Eq) || (set && t.eat_word("TO"))) {
            return Err(t.error("syntax error: expected = after the property name"));
        }
        Some(setting_value(t)?)
    };
    t.expect_end()?;
    Ok(Statement::AlterSystem { name, value })
}

/// `SAVEPOINT name`, `RELEASE [SAVEPOINT] name`, `ROLLBACK TO [SAVEPOINT] name`, with the
/// name at word `at`: accepted (tag `tag`) so that drivers and ORMs that nest transactions
/// work (SQLAlchemy's `begin_nested`); like BEGIN and COMMIT they change nothing, since each
/// statement takes effect when it runs (README, "Transactions").
pub(super) fn savepoint(t: &mut Tokens, at: usize, tag: &str) -> Result<Statement, EddyError> {
    t.pos += at;
    if tag != "SAVEPOINT" {
        t.eat_word("SAVEPOINT");
    }
    match t.tokens.get(t.pos).map(|x| &x.token) {
        Some(Token::Word(_)) => t.pos += 1,
        _ => return Err(t.error("syntax error: expected a savepoint name")),
    }
    t.expect_end()?;
    Ok(Statement::NoOp { tag: tag.into() })
}

pub(super) fn parse_set(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.pos += 1;
    // SET SESSION CHARACTERISTICS AS TRANSACTION ... / SET TRANSACTION ... (JDBC, Metabase).
    if t.peek_word(0).as_deref() == Some("TRANSACTION")
        || (t.peek_word(0).as_deref() == Some("SESSION") && t.peek_word(1).as_deref() == Some("CHARACTERISTICS"))
    {
        return Ok(Statement::NoOp { tag: "SET".into() });
    }
    // SET TIME ZONE 'x' (pgcli).
    if t.peek_word(0).as_deref() == Some("TIME") && t.peek_word(1).as_deref() == Some("ZONE") {
        t.pos += 2;
        let value = match t.tokens.get(t.pos).map(|x| x.token.clone()) {
            Some(Token::SingleQuotedString(s)) => s,
            Some(Token::Word(w)) => w.value,
            _ => return Err(t.error("syntax error: expected a time zone")),
        };
        return Ok(Statement::Set { name: "timezone".into(), value });
    }
    t.eat_word("SESSION");
    t.eat_word("LOCAL");
    let name = t.property_name()?;
    if !t.eat(&Token::Eq) {
        t.expect_word("TO")?;
    }
    let value = setting_value(t)?;
    Ok(Statement::Set { name, value })
}

/// A property's value as SET and ALTER SYSTEM take it: quoted, a word or a number.
fn setting_value(t: &mut Tokens) -> Result<String, EddyError> {
    let value = match t.tokens.get(t.pos).map(|x| x.token.clone()) {
        Some(Token::SingleQuotedString(s)) => s,
        Some(Token::Word(w)) => w.value,
        Some(Token::Number(n, _)) => n,
        _ => return Err(t.error("syntax error: expected a value")),
    };
    t.pos += 1;
    Ok(value)
}

/// `COPY (SELECT ...) TO STDOUT` (a pull or push query streamed as COPY data).
pub(super) fn parse_copy(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.expect_word("COPY")?;
    if t.peek() != Some(&Token::LParen) {
        return Err(t.error("only COPY (SELECT ...) TO STDOUT is supported"));
    }
    let open = t.pos;
    let mut depth = 0;
    let mut close = None;
    for (i, tok) in t.tokens.iter().enumerate().skip(open) {
        match tok.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close.ok_or_else(|| t.error("syntax error: unclosed parenthesis"))?;
    let begin = t.index.byte(t.tokens[open + 1].span.start);
    let end = t.index.byte(t.tokens[close].span.start);
    let inner_offset = t.offset_chars + t.text[..begin].chars().count();
    let select = parse_select(&t.text[begin..end], inner_offset, true)?;
    t.pos = close + 1;
    t.expect_word("TO")?;
    t.expect_word("STDOUT")?;
    Ok(Statement::CopyOut(select))
}

#[cfg(test)]
mod tests {
    use crate::sql::{parse, Statement};

    fn one(sql: &str) -> Statement {
        parse(sql).unwrap().remove(0).statement
    }

    #[test]
    fn users() {
        assert!(matches!(
            one("CREATE USER alice WITH PASSWORD 's3cret'"),
            Statement::CreateUser { name, password: Some(p), superuser: false } if name == "alice" && p == "s3cret"
        ));
        assert!(matches!(
            one("ALTER ROLE alice PASSWORD 'x' SUPERUSER"),
            Statement::AlterUser { password: Some(_), superuser: Some(true), .. }
        ));
        assert!(matches!(one("DROP USER IF EXISTS alice"), Statement::DropUser { if_exists: true, .. }));
    }

    #[test]
    fn grants() {
        use crate::sql::Privilege::{Insert, Select};
        match one("GRANT SELECT, INSERT ON STREAM orders TO alice, bob") {
            Statement::Grant { privileges, relations, users, revoke: false } => {
                assert_eq!(privileges, vec![Select, Insert]);
                assert_eq!(relations, vec!["orders"]);
                assert_eq!(users, vec!["alice", "bob"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            one("REVOKE ALL PRIVILEGES ON totals FROM alice"),
            Statement::Grant { revoke: true, ref privileges, .. } if privileges.len() == 2
        ));
        assert!(parse("GRANT DELETE ON t TO alice").is_err());
        assert!(parse("REVOKE SELECT ON t TO alice").is_err());
    }

    #[test]
    fn cursors() {
        // What psycopg2's named cursors send.
        match one("DECLARE \"c1\" CURSOR WITHOUT HOLD FOR SELECT * FROM t EMIT CHANGES") {
            Statement::DeclareCursor { name, query } => {
                assert_eq!(name, "c1");
                assert!(query.emit_changes);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(one("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1"), Statement::DeclareCursor { .. }));
        assert!(matches!(one("FETCH FORWARD 5 FROM \"c1\""), Statement::Fetch { count: Some(5), discard: false, .. }));
        assert!(matches!(one("FETCH 2 c"), Statement::Fetch { count: Some(2), .. }));
        assert!(matches!(one("FETCH ALL IN c"), Statement::Fetch { count: None, .. }));
        assert!(matches!(one("FETCH NEXT FROM c"), Statement::Fetch { count: Some(1), .. }));
        assert!(matches!(one("MOVE 3 c"), Statement::Fetch { discard: true, .. }));
        assert!(matches!(one("CLOSE ALL"), Statement::CloseCursor { name: None }));
        assert!(
            matches!(one("SET eddy.fetch_timeout = '1s'"), Statement::Set { name, .. } if name == "eddy.fetch_timeout")
        );
    }
}
