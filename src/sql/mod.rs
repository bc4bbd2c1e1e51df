//! The SQL frontend: ksqlDB's dialect parsed into Eddy's statements.
//!
//! ksqlDB's own statements (`CREATE STREAM`, `EMIT CHANGES`, `SHOW QUERIES`, `TERMINATE`...)
//! are read here from sqlparser's tokens; every `SELECT` and `INSERT` is handed to sqlparser
//! (and later DataFusion) whole, so the expression language is DataFusion's. Called by the
//! engine for each statement a client sends; it never touches state.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Word};

use crate::error::EddyError;
use crate::format::{Column, SqlType, StructField};

mod access;
mod admin;
mod create;
mod inspect;
pub use create::HeaderColumn;
use create::{parse_create, parse_type};
pub mod custom_types;
mod lambda;
pub use lambda::rewrite_parameter_lists as rewrite_lambda_parameter_lists;
mod select;
pub mod variables;
pub use select::{expand_wildcards, is_right_join, parse_select};
pub mod pg_names;
pub mod pg_rewrite;
pub mod window;
pub use window::{Emit, JoinWindow, WindowKind, WindowSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RelationKind {
    Stream,
    Table,
}

impl RelationKind {
    pub fn word(self) -> &'static str {
        match self {
            RelationKind::Stream => "STREAM",
            RelationKind::Table => "TABLE",
        }
    }
}

/// A SELECT as written, with the ksqlDB parts taken off.
#[derive(Debug, Clone)]
pub struct SelectStatement {
    /// The query text DataFusion plans (no `EMIT CHANGES`, no `LIMIT` for push queries).
    pub sql: String,
    /// `EMIT CHANGES` or `EMIT FINAL`: a continuous query.
    pub emit_changes: bool,
    /// `EMIT FINAL`: one row per window, once the window closes.
    pub emit_final: bool,
    pub window: Option<WindowSpec>,
    /// Eddy's `LATE DATA TO stream`: where records too late for their window go.
    pub late_data_to: Option<String>,
    /// A stream–stream join's `WITHIN` window.
    pub within: Option<JoinWindow>,
    pub limit: Option<usize>,
    /// The names in FROM clauses (lower-cased unless quoted).
    pub relations: Vec<String>,
    /// `PARTITION BY`: the result columns (by name) that key a persistent query's output.
    pub partition_by: Vec<String>,
}

/// What a user may do with a stream or table they do not own (Postgres's privileges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Privilege {
    /// Read it: pull, push and continuous queries, Kafka Fetch of its topic.
    Select,
    /// Write it: INSERT, Kafka Produce to its topic.
    Insert,
}

impl Privilege {
    pub fn word(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Statement {
    CreateSource {
        kind: RelationKind,
        name: String,
        columns: Vec<Column>,
        /// Columns read from the record's headers.
        headers: Vec<HeaderColumn>,
        props: BTreeMap<String, String>,
        if_not_exists: bool,
        /// `CREATE OR REPLACE`: new value columns at the end (as ALTER ADD COLUMN).
        or_replace: bool,
    },
    CreateAs {
        kind: RelationKind,
        name: String,
        props: BTreeMap<String, String>,
        select: SelectStatement,
        if_not_exists: bool,
        /// `CREATE OR REPLACE`: change the running query, keeping its state.
        or_replace: bool,
        /// The whole statement, stored in the catalog and shown by SHOW QUERIES.
        text: String,
    },
    Insert {
        target: String,
        columns: Vec<String>,
        rows: Vec<Vec<ast::Expr>>,
    },
    /// `INSERT INTO stream [WITH (QUERY_ID='...')] SELECT ...`: a persistent query that
    /// appends to an existing stream (ksqlDB's INSERTQUERY_n).
    InsertSelect {
        target: String,
        props: BTreeMap<String, String>,
        select: SelectStatement,
        /// The whole statement, stored in the catalog and shown by SHOW QUERIES.
        text: String,
    },
    Select(SelectStatement),
    CopyOut(SelectStatement),
    Show {
        what: String,
    },
    /// `DESCRIBE name [EXTENDED]`.
    Describe {
        name: String,
        extended: bool,
    },
    /// `DESCRIBE STREAMS | TABLES [EXTENDED]` (also `SHOW STREAMS | TABLES EXTENDED`).
    DescribeAll {
        kind: RelationKind,
        extended: bool,
    },
    Drop {
        kind: RelationKind,
        name: String,
        if_exists: bool,
        delete_topic: bool,
    },
    Terminate {
        query_id: Option<String>,
    },
    /// ksqlDB's `PAUSE | RESUME query_id | ALL` (`None`: all).
    PauseResume {
        query_id: Option<String>,
        pause: bool,
    },
    /// ksqlDB's `EXPLAIN query_id`.
    ExplainQuery {
        query_id: String,
    },
    /// ksqlDB's `ASSERT [NOT EXISTS] TOPIC name [WITH (...)] [TIMEOUT n unit]`.
    AssertTopic {
        topic: String,
        /// The name was quoted: its case must match.
        exact: bool,
        exists: bool,
        props: BTreeMap<String, String>,
        timeout_ms: Option<u64>,
    },
    /// ksqlDB's `ASSERT [NOT EXISTS] SCHEMA [SUBJECT 'name'] [ID n] [TIMEOUT n unit]`.
    AssertSchema {
        subject: Option<String>,
        id: Option<u32>,
        exists: bool,
        timeout_ms: Option<u64>,
    },
    /// ksqlDB's `PRINT topic [FROM BEGINNING] [INTERVAL | SAMPLE n] [LIMIT n]`: a topic's
    /// records as they are (`exact`: the name was quoted; unquoted it matches any case).
    Print {
        topic: String,
        exact: bool,
        from_beginning: bool,
        interval: u64,
        limit: Option<u64>,
    },
    /// ksqlDB's `DESCRIBE FUNCTION name`.
    DescribeFunction {
        name: String,
    },
    /// ksqlDB's `CREATE TYPE [IF NOT EXISTS] name AS type` (see `custom_types`).
    CreateType {
        name: String,
        ty: SqlType,
        if_not_exists: bool,
    },
    /// ksqlDB's `DROP TYPE [IF EXISTS] name`.
    DropType {
        name: String,
        if_exists: bool,
    },
    /// ksqlDB's `DEFINE name = 'value'` (a session variable, see `variables`).
    Define {
        name: String,
        value: String,
    },
    /// ksqlDB's `UNDEFINE name`.
    Undefine {
        name: String,
    },
    /// ksqlDB's `ALTER STREAM | TABLE name ADD [COLUMN] c type, ...` (value columns).
    AlterSource {
        kind: RelationKind,
        name: String,
        columns: Vec<Column>,
    },
    /// `ALTER SYSTEM 'prop' = 'value'` / `ALTER SYSTEM SET | RESET name` (`None`: reset).
    AlterSystem {
        name: String,
        value: Option<String>,
    },
    /// ksqlDB's `RUN SCRIPT 'path'`: the statements of a file the server reads.
    RunScript {
        path: String,
    },
    /// ksqlDB's `UNSET 'property'`: the session's SET of it is forgotten.
    Unset {
        name: String,
    },
    Explain(Box<Statement>),
    Flush,
    Set {
        name: String,
        value: String,
    },
    /// `CREATE USER name WITH PASSWORD '...'` (also `CREATE ROLE`).
    CreateUser {
        name: String,
        password: Option<String>,
        superuser: bool,
    },
    AlterUser {
        name: String,
        password: Option<String>,
        superuser: Option<bool>,
    },
    DropUser {
        name: String,
        if_exists: bool,
    },
    /// `GRANT SELECT, INSERT ON [STREAM|TABLE] name TO user` (`revoke`: `REVOKE ... FROM`).
    Grant {
        privileges: Vec<Privilege>,
        relations: Vec<String>,
        users: Vec<String>,
        revoke: bool,
    },
    /// `DECLARE name CURSOR FOR query` (kept per connection by the Postgres endpoint).
    DeclareCursor {
        name: String,
        query: SelectStatement,
    },
    /// `FETCH n FROM name` (`count` `None`: ALL); `MOVE` discards the rows.
    Fetch {
        name: String,
        count: Option<usize>,
        discard: bool,
    },
    /// `CLOSE name` (`None`: CLOSE ALL).
    CloseCursor {
        name: Option<String>,
    },
    /// Accepted for client compatibility and answered with this tag (BEGIN, COMMIT...).
    NoOp {
        tag: String,
    },
}

/// One statement with where it starts in the client's query string (1-based character).
#[derive(Debug, Clone)]
pub struct Located {
    pub statement: Statement,
    pub text: String,
    pub offset_chars: usize,
}

/// Splits a query string into statements and parses each.
pub fn parse(sql: &str) -> Result<Vec<Located>, EddyError> {
    let tokens = tokenize(sql, 0)?;
    let index = LineIndex::new(sql);
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut depth = 0i32;
    let flush = |from: usize, to_exclusive: usize, out: &mut Vec<Located>| -> Result<(), EddyError> {
        let significant: Vec<&TokenWithSpan> =
            tokens[from..to_exclusive].iter().filter(|t| !matches!(t.token, Token::Whitespace(_))).collect();
        let (Some(first), Some(last)) = (significant.first(), significant.last()) else { return Ok(()) };
        check_operator_count(&significant)?;
        let begin = index.byte(first.span.start);
        let end = index.byte(last.span.end);
        let text = &sql[begin..end];
        let offset_chars = sql[..begin].chars().count();
        let statement = parse_one(text, offset_chars)?;
        out.push(Located { statement, text: text.to_string(), offset_chars });
        Ok(())
    };
    for (i, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::SemiColon if depth <= 0 => {
                if let Some(s) = start.take() {
                    flush(s, i, &mut out)?;
                }
                continue;
            }
            Token::Whitespace(_) => continue,
            _ => {}
        }
        if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        flush(s, tokens.len(), &mut out)?;
    }
    Ok(out)
}

/// Most binary operators one statement may hold. Parsed expressions are trees as deep as
/// their operator chains, and parsing, planning, evaluating and freeing them recurse once
/// per level: `1+1+…` with 100,000 terms overflowed the stack (found by the `sql_dialect`
/// fuzz target), and in a debug build 256 terms did on a 2 MiB thread stack. Postgres
/// answers such input with 54001 "stack depth limit exceeded"; this refuses it up front,
/// with room to spare on threads of [`THREAD_STACK_BYTES`] (a debug build plans about
/// 2,000 levels there, a release build many more).
pub const MAX_OPERATORS: usize = 1024;

/// Stack of the threads that plan and run queries (the server's runtime, query threads).
pub const THREAD_STACK_BYTES: usize = 16 << 20;

fn check_operator_count(tokens: &[&TokenWithSpan]) -> Result<(), EddyError> {
    let operators = tokens
        .iter()
        .filter(|t| match &t.token {
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret
            | Token::Arrow
            | Token::LongArrow
            | Token::DoubleColon => true,
            Token::Word(w) => {
                w.quote_style.is_none()
                    && (w.value.eq_ignore_ascii_case("AND")
                        || w.value.eq_ignore_ascii_case("OR")
                        || w.value.eq_ignore_ascii_case("NOT"))
            }
            _ => false,
        })
        .count();
    if operators > MAX_OPERATORS {
        return Err(EddyError::LimitExceeded(format!(
            "statement too complex: {operators} operators, at most {MAX_OPERATORS}"
        )));
    }
    Ok(())
}

fn tokenize(sql: &str, offset_chars: usize) -> Result<Vec<TokenWithSpan>, EddyError> {
    Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location().map_err(|e| EddyError::Syntax {
        message: e.message.clone(),
        position: Some(offset_chars + LineIndex::new(sql).char_pos(e.location)),
    })
}

/// Maps sqlparser's (line, column) locations to byte and character positions.
struct LineIndex<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(sql: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { sql, line_starts }
    }

    fn byte(&self, loc: Location) -> usize {
        let line = (loc.line.max(1) as usize - 1).min(self.line_starts.len() - 1);
        let start = self.line_starts[line];
        let col = loc.column.max(1) as usize - 1;
        self.sql[start..].char_indices().nth(col).map(|(i, _)| start + i).unwrap_or(self.sql.len())
    }

    /// 1-based character position, as Postgres reports error positions.
    fn char_pos(&self, loc: Location) -> usize {
        self.sql[..self.byte(loc)].chars().count() + 1
    }
}

/// A cursor over one statement's significant tokens.
struct Tokens<'a> {
    text: &'a str,
    offset_chars: usize,
    tokens: Vec<TokenWithSpan>,
    pos: usize,
    index: LineIndex<'a>,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str, offset_chars: usize) -> Result<Self, EddyError> {
        let tokens =
            tokenize(text, offset_chars)?.into_iter().filter(|t| !matches!(t.token, Token::Whitespace(_))).collect();
        Ok(Tokens { text, offset_chars, tokens, pos: 0, index: LineIndex::new(text) })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|t| &t.token)
    }

    fn peek_word(&self, n: usize) -> Option<String> {
        match self.tokens.get(self.pos + n).map(|t| &t.token) {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    /// Error positioned at the current token.
    fn error(&self, message: impl Into<String>) -> EddyError {
        let position = match self.tokens.get(self.pos) {
            Some(t) => self.index.char_pos(t.span.start),
            None => self.text.chars().count() + 1,
        };
        EddyError::Syntax { message: message.into(), position: Some(self.offset_chars + position) }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if self.peek_word(0).as_deref() == Some(word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `IF EXISTS`, if it comes next.
    fn eat_if_exists(&mut self) -> Result<bool, EddyError> {
        Ok(self.eat_word("IF") && {
            self.expect_word("EXISTS")?;
            true
        })
    }

    /// `IF NOT EXISTS`, if it comes next.
    fn eat_if_not_exists(&mut self) -> Result<bool, EddyError> {
        Ok(self.eat_word("IF") && {
            self.expect_word("NOT")?;
            self.expect_word("EXISTS")?;
            true
        })
    }

    /// `STREAM` or `TABLE`, which must come next.
    fn relation_kind(&mut self) -> Result<RelationKind, EddyError> {
        if self.eat_word("STREAM") {
            Ok(RelationKind::Stream)
        } else if self.eat_word("TABLE") {
            Ok(RelationKind::Table)
        } else {
            Err(self.error("syntax error: expected STREAM or TABLE"))
        }
    }

    /// A property's name as SET and UNSET take it: `'auto.offset.reset'` or
    /// `eddy.fetch_timeout` (lower-cased).
    fn property_name(&mut self) -> Result<String, EddyError> {
        match self.tokens.get(self.pos).map(|x| x.token.clone()) {
            Some(Token::SingleQuotedString(s)) => {
                self.pos += 1;
                Ok(s.to_lowercase())
            }
            _ => {
                let first = self.ident()?;
                admin::dotted_name(self, first)
            }
        }
    }

    fn expect_word(&mut self, word: &str) -> Result<(), EddyError> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(self.error(format!("syntax error: expected {word}")))
        }
    }

    fn eat(&mut self, token: &Token) -> bool {
        if self.peek() == Some(token) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &Token) -> Result<(), EddyError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(format!("syntax error: expected {token}")))
        }
    }

    /// An identifier: unquoted names are case-insensitive (lower-cased), quoted kept.
    fn ident(&mut self) -> Result<String, EddyError> {
        match self.tokens.get(self.pos).map(|t| t.token.clone()) {
            Some(Token::Word(w)) => {
                self.pos += 1;
                Ok(normalize(&w))
            }
            _ => Err(self.error("syntax error: expected a name")),
        }
    }

    fn rest(&self) -> &'a str {
        match self.tokens.get(self.pos) {
            Some(t) => &self.text[self.index.byte(t.span.start)..],
            None => "",
        }
    }

    fn rest_offset_chars(&self) -> usize {
        match self.tokens.get(self.pos) {
            Some(t) => self.offset_chars + self.index.char_pos(t.span.start) - 1,
            None => self.offset_chars + self.text.chars().count(),
        }
    }

    /// `>` closing a type parameter list; `>>` closes two (`ARRAY<ARRAY<INT>>`).
    fn eat_gt(&mut self) -> bool {
        match self.peek() {
            Some(Token::Gt) => {
                self.pos += 1;
                true
            }
            Some(Token::ShiftRight) => {
                self.tokens[self.pos].token = Token::Gt;
                true
            }
            _ => false,
        }
    }

    fn expect_gt(&mut self) -> Result<(), EddyError> {
        if self.eat_gt() {
            Ok(())
        } else {
            Err(self.error("syntax error: expected >"))
        }
    }

    fn number(&mut self) -> Result<u64, EddyError> {
        match self.peek() {
            Some(Token::Number(n, _)) => {
                let n = n.parse().map_err(|_| self.error(format!("expected a whole number, got {n}")))?;
                self.pos += 1;
                Ok(n)
            }
            _ => Err(self.error("syntax error: expected a number")),
        }
    }

    fn expect_end(&self) -> Result<(), EddyError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.error("syntax error: unexpected text at end of statement"))
        }
    }
}

pub fn normalize(w: &Word) -> String {
    if w.quote_style.is_some() {
        w.value.clone()
    } else {
        w.value.to_lowercase()
    }
}

fn parse_one(text: &str, offset_chars: usize) -> Result<Statement, EddyError> {
    let mut t = Tokens::new(text, offset_chars)?;
    let first = t.peek_word(0).unwrap_or_default();
    let second = t.peek_word(1).unwrap_or_default();
    let user = matches!(second.as_str(), "USER" | "ROLE");
    match first.as_str() {
        "CREATE" if user => admin::parse_create_user(&mut t),
        "ALTER" if user => admin::parse_alter_user(&mut t),
        "ALTER" if second == "SYSTEM" => admin::parse_alter_system(&mut t),
        "ALTER" if matches!(second.as_str(), "STREAM" | "TABLE") => create::parse_alter(&mut t),
        "DROP" if user => admin::parse_drop_user(&mut t),
        "CREATE" if second == "TYPE" => {
            t.pos += 1;
            custom_types::parse_create_type(&mut t)
        }
        "DROP" if second == "TYPE" => {
            t.pos += 1;
            custom_types::parse_drop_type(&mut t)
        }
        "GRANT" | "REVOKE" => admin::parse_grant(&mut t),
        "DECLARE" => admin::parse_declare(&mut t),
        "FETCH" | "MOVE" => admin::parse_fetch(&mut t),
        "CLOSE" => admin::parse_close(&mut t),
        "CREATE" => parse_create(&mut t),
        "INSERT" => match insert_select(text, offset_chars)? {
            Some(statement) => Ok(statement),
            None => parse_insert(text, offset_chars),
        },
        "SELECT" | "WITH" | "VALUES" => Ok(Statement::Select(parse_select(text, offset_chars, true)?)),
        "COPY" => admin::parse_copy(&mut t),
        "RUN" => variables::parse_run_script(&mut t),
        "DEFINE" | "UNDEFINE" => match variables::define(text) {
            Some((name, Some(value))) => Ok(Statement::Define { name, value }),
            Some((name, None)) => Ok(Statement::Undefine { name }),
            None if first == "DEFINE" => Err(t.error("syntax error: expected DEFINE name = 'value'")),
            None => Err(t.error("syntax error: expected UNDEFINE name")),
        },
        "SHOW" | "LIST" => inspect::parse_show(&mut t),
        "DESCRIBE" | "DESC" => inspect::parse_describe(&mut t),
        "DROP" => {
            t.pos += 1;
            let kind = t.relation_kind()?;
            let if_exists = t.eat_if_exists()?;
            let name = t.ident()?;
            let delete_topic = t.eat_word("DELETE") && { t.expect_word("TOPIC")?; true };
            t.expect_end()?;
            Ok(Statement::Drop { kind, name, if_exists, delete_topic })
        }
        "PRINT" => inspect::parse_print(&mut t),
        "ASSERT" => inspect::parse_assert(&mut t),
        "TERMINATE" | "PAUSE" | "RESUME" => inspect::parse_query_control(&mut t, &first),
        "EXPLAIN" => inspect::parse_explain(&mut t),
        "FLUSH" => {
            t.pos += 1;
            t.expect_end()?;
            Ok(Statement::Flush)
        }
        "SET" => admin::parse_set(&mut t),
        "UNSET" => {
            t.pos += 1;
            let name = t.property_name()?;
            t.expect_end()?;
            Ok(Statement::Unset { name })
        }
        "RESET" | "DISCARD" | "DEALLOCATE" => Ok(Statement::NoOp { tag: first }),
        "BEGIN" | "START" => Ok(Statement::NoOp { tag: "BEGIN".into() }),
        "COMMIT" | "END" => Ok(Statement::NoOp { tag: "COMMIT".into() }),
        "ROLLBACK" | "ABORT" => {
            // ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name stays in the transaction.
            let at = if matches!(second.as_str(), "WORK" | "TRANSACTION") { 2 } else { 1 };
            if t.peek_word(at).as_deref() == Some("TO") {
                return admin::savepoint(&mut t, at + 1, "ROLLBACK TO");
            }
            Ok(Statement::NoOp { tag: "ROLLBACK".into() })
        }
        "SAVEPOINT" => admin::savepoint(&mut t, 1, "SAVEPOINT"),
        "RELEASE" => admin::savepoint(&mut t, 1, "RELEASE"),
        _ => Err(t.error(
            "syntax error: expected a statement (CREATE, INSERT, SELECT, SHOW, DESCRIBE, DROP, TERMINATE, EXPLAIN, FLUSH)",
        )),
    }
}

/// `WITH (KEY = value, ...)` if it comes next: upper-cased keys, values as written.
fn with_properties(t: &mut Tokens) -> Result<BTreeMap<String, String>, EddyError> {
    let mut props = BTreeMap::new();
    if !t.eat_word("WITH") {
        return Ok(props);
    }
    t.expect(&Token::LParen)?;
    loop {
        let key = t.ident()?.to_uppercase();
        t.expect(&Token::Eq)?;
        let value = match t.tokens.get(t.pos).map(|x| x.token.clone()) {
            Some(Token::SingleQuotedString(s)) => s,
            Some(Token::Number(n, _)) => n,
            Some(Token::Word(w)) => w.value,
            _ => return Err(t.error("syntax error: expected a property value")),
        };
        t.pos += 1;
        props.insert(key, value);
        if t.eat(&Token::RParen) {
            break;
        }
        t.expect(&Token::Comma)?;
    }
    Ok(props)
}

/// `INSERT INTO name [WITH (...)] SELECT ...`; `None` for any other INSERT.
fn insert_select(text: &str, offset_chars: usize) -> Result<Option<Statement>, EddyError> {
    let mut t = Tokens::new(text, offset_chars)?;
    if !(t.eat_word("INSERT") && t.eat_word("INTO")) {
        return Ok(None);
    }
    let target = t.ident()?;
    let props = with_properties(&mut t)?;
    if t.peek_word(0).as_deref() != Some("SELECT") {
        return Ok(None);
    }
    let offset = t.rest_offset_chars();
    let select = parse_select(t.rest(), offset, false)?;
    Ok(Some(Statement::InsertSelect { target, props, select, text: t.text.to_string() }))
}

fn parse_insert(text: &str, offset_chars: usize) -> Result<Statement, EddyError> {
    let stmt = parse_sqlparser(text, offset_chars)?;
    let ast::Statement::Insert(insert) = stmt else {
        return Err(EddyError::Syntax { message: "expected INSERT".into(), position: Some(offset_chars + 1) });
    };
    let target = match &insert.table {
        ast::TableObject::TableName(name) => object_name(name),
        _ => return Err(EddyError::NotImplemented("INSERT into a table function".into())),
    };
    let columns = insert.columns.iter().map(object_name).collect();
    let Some(source) = insert.source else {
        return Err(EddyError::NotImplemented("INSERT without VALUES".into()));
    };
    let ast::SetExpr::Values(values) = *source.body else {
        return Err(EddyError::NotImplemented(
            "this form of INSERT INTO ... SELECT (write INSERT INTO stream SELECT ..., without a column list)".into(),
        ));
    };
    Ok(Statement::Insert { target, columns, rows: values.rows.into_iter().map(|r| r.content).collect() })
}

/// An identifier as Eddy names it: unquoted lower-cased, quoted as written.
/// The `name := value` pairs of a `STRUCT(...)` or `MAP(...)` literal, with its name.
pub fn named_pairs(e: &ast::Expr) -> Option<(String, Vec<(ast::Expr, &ast::Expr)>)> {
    fn pair(x: &ast::Expr) -> Option<(ast::Expr, &ast::Expr)> {
        match x {
            ast::Expr::BinaryOp { left, op: ast::BinaryOperator::Assignment, right } => Some((*left.clone(), right)),
            _ => None,
        }
    }
    match e {
        ast::Expr::Struct { values, .. } => {
            Some(("STRUCT".into(), values.iter().map(pair).collect::<Option<Vec<_>>>()?))
        }
        ast::Expr::Function(f) => {
            let ast::FunctionArguments::List(list) = &f.args else { return None };
            let pairs = list
                .args
                .iter()
                .map(|arg| match arg {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => pair(x),
                    ast::FunctionArg::ExprNamed { name, arg: ast::FunctionArgExpr::Expr(v), .. } => {
                        Some((name.clone(), v))
                    }
                    ast::FunctionArg::Named { name, arg: ast::FunctionArgExpr::Expr(v), .. } => {
                        Some((ast::Expr::Identifier(name.clone()), v))
                    }
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some((f.name.to_string().to_ascii_uppercase(), pairs))
        }
        _ => None,
    }
}

pub fn normalize_ident(i: &ast::Ident) -> String {
    ident_name(i)
}

fn ident_name(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// The last part of a (possibly qualified) name: `public.orders` → `orders`.
fn object_name(name: &ast::ObjectName) -> String {
    name.0.last().and_then(|p| p.as_ident()).map(ident_name).unwrap_or_default()
}

fn parse_sqlparser(text: &str, offset_chars: usize) -> Result<ast::Statement, EddyError> {
    // ksqlDB's `(a, b) => ...` lambdas, in the form sqlparser reads (`sql::lambda`).
    let lambdas = lambda::rewrite_parameter_lists(text);
    let text = lambdas.as_deref().unwrap_or(text);
    let mut stmts = Parser::parse_sql(&GenericDialect {}, text)
        .map_err(|e| syntax_from_parser(&e.to_string(), text, offset_chars))?;
    if stmts.len() != 1 {
        return Err(EddyError::Syntax { message: "expected one statement".into(), position: Some(offset_chars + 1) });
    }
    Ok(stmts.remove(0))
}

/// sqlparser reports "... at Line: L, Column: C"; turn that into a character position.
pub fn syntax_from_parser(message: &str, text: &str, offset_chars: usize) -> EddyError {
    let mut position = None;
    if let Some(at) = message.rfind("at Line: ") {
        let tail = &message[at + 9..];
        let mut parts = tail.split(", Column: ");
        let line = parts.next().and_then(|l| l.trim().parse::<u64>().ok());
        let col =
            parts.next().and_then(|c| c.trim().trim_end_matches(|ch: char| !ch.is_ascii_digit()).parse::<u64>().ok());
        if let (Some(line), Some(column)) = (line, col) {
            position = Some(offset_chars + LineIndex::new(text).char_pos(Location { line, column }));
        }
    }
    let message = message.trim_start_matches("sql parser error: ");
    let message = match message.rfind(" at Line: ") {
        Some(i) => &message[..i],
        None => message,
    };
    EddyError::Syntax { message: format!("syntax error: {message}"), position: position.or(Some(offset_chars + 1)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `sql_dialect` fuzz target: 100,000 terms overflowed the stack.
    #[test]
    fn a_statement_with_too_many_operators_is_refused() {
        let terms = |n: usize| format!("SELECT {}", vec!["1"; n].join("+"));
        // Statements are parsed on threads of THREAD_STACK_BYTES (the server's runtime), where
        // the longest accepted one is also rendered back to text (its column named `?column?`).
        let longest = std::thread::Builder::new()
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || parse(&terms(MAX_OPERATORS + 1)).is_ok())
            .expect("a thread")
            .join()
            .expect("no overflow");
        assert!(longest);
        let Err(EddyError::LimitExceeded(message)) = parse(&terms(100_000)) else { panic!("not refused") };
        assert!(message.contains("too complex"), "{message}");
        let Err(EddyError::LimitExceeded(_)) = parse(&format!("SELECT 1 WHERE {}", vec!["a = 1"; 5000].join(" OR ")))
        else {
            panic!("not refused")
        };
    }

    #[test]
    fn create_stream_with_key_and_props() {
        let s = parse("CREATE STREAM Orders (orderId STRING KEY, customerId STRING, amount DOUBLE) WITH (KAFKA_TOPIC='orders', VALUE_FORMAT='JSON', PARTITIONS=3);").unwrap();
        let Statement::CreateSource { kind, name, columns, props, .. } = &s[0].statement else { panic!() };
        assert_eq!(*kind, RelationKind::Stream);
        assert_eq!(name, "orders");
        assert!(columns[0].key && columns[0].name == "orderid");
        assert_eq!(props["KAFKA_TOPIC"], "orders");
        assert_eq!(props["PARTITIONS"], "3");
    }

    #[test]
    fn push_query_strips_emit_changes_and_limit() {
        let s = parse("SELECT orderId, amount FROM orders WHERE amount > 100 EMIT CHANGES LIMIT 3").unwrap();
        let Statement::Select(sel) = &s[0].statement else { panic!() };
        assert!(sel.emit_changes);
        assert_eq!(sel.limit, Some(3));
        assert!(!sel.sql.to_uppercase().contains("LIMIT"));
        assert_eq!(sel.relations, vec!["orders"]);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("SELECT 1; SELEC x FROM y").unwrap_err();
        let EddyError::Syntax { position, .. } = err else { panic!() };
        assert_eq!(position, Some(11));
    }

    #[test]
    fn multiple_statements_and_copy() {
        let s = parse("FLUSH; COPY (SELECT * FROM s EMIT CHANGES LIMIT 2) TO STDOUT;").unwrap();
        assert_eq!(s.len(), 2);
        let Statement::CopyOut(sel) = &s[1].statement else { panic!() };
        assert_eq!(sel.limit, Some(2));
    }

    /// Caught by the fuzz target `sql_dialect`'s catalog check (on a crafted input): a STRUCT
    /// 45 deep was accepted, and the catalog could not read its JSON back at the next start.
    #[test]
    fn nested_types_stop_where_the_catalog_can_read_them() {
        let nested =
            |n: usize| format!("CREATE STREAM s (a {}INT{})", "STRUCT<a ARRAY<MAP<STRING, ".repeat(n), ">>>".repeat(n));
        let Statement::CreateSource { columns, .. } = &parse(&nested(10)).unwrap()[0].statement else { panic!() };
        let json = serde_json::to_vec(columns).unwrap();
        assert_eq!(&serde_json::from_slice::<Vec<Column>>(&json).unwrap(), columns);
        let err = parse(&nested(11)).unwrap_err();
        assert!(matches!(&err, EddyError::Syntax { message, .. } if message.contains("at most 32 deep")), "{err:?}");
        // Deeper than any stack: an error, not a stack overflow.
        assert!(parse(&nested(100_000)).is_err());
    }

    #[test]
    fn explain_of_explain_is_an_error_at_once() {
        assert!(matches!(parse("EXPLAIN FLUSH").unwrap()[0].statement, Statement::Explain(_)));
        let deep = format!("{}SELECT 1", "EXPLAIN ".repeat(100_000));
        let Err(EddyError::Syntax { position, .. }) = parse(&deep) else { panic!() };
        assert_eq!(position, Some(9));
    }

    #[test]
    fn token_soup_never_panics() {
        let parts = [
            "CREATE",
            "STREAM",
            "TABLE",
            "AS",
            "SELECT",
            "(",
            ")",
            ",",
            ";",
            "'x'",
            "\"Q\"",
            "a",
            "KEY",
            "PRIMARY",
            "WITH",
            "=",
            "EMIT",
            "CHANGES",
            "LIMIT",
            "3",
            "COPY",
            "TO",
            "STDOUT",
            "FROM",
            "\n",
            "é",
            "--c\n",
            "$1",
            "DROP",
            "IF",
            "EXISTS",
            "SHOW",
            "EXPLAIN",
            "INSERT",
            "INTO",
            "VALUES",
            "-",
            "1.5",
            "SET",
            "TERMINATE",
        ];
        let mut seed: u64 = 42;
        for _ in 0..20_000 {
            let mut sql = String::new();
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let n = (seed >> 59) as usize;
            for i in 0..n {
                let pick = ((seed >> (i % 50)) as usize).wrapping_mul(31).wrapping_add(i * 7) % parts.len();
                sql.push_str(parts[pick]);
                sql.push(if i % 3 == 0 { ' ' } else { '\t' });
            }
            let _ = parse(&sql);
        }
    }
}
