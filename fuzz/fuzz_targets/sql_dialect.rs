//! Fuzzes Eddy's SQL dialect layer, `sql::parse`: the statement splitter, ksqlDB's own
//! statements (CREATE STREAM/TABLE with columns and WITH options, SHOW, DROP...), users and
//! cursors (`admin.rs`), and every SELECT through `window.rs` (WINDOW, EMIT, WITHIN, LATE
//! DATA TO), `access.rs` (`->`), sqlparser and `pg_rewrite.rs`, then `expand_wildcards` as
//! planning runs it; the sqlparser is the one DataFusion 55 uses (see shims/datafusion). Any
//! text gives statements or an error, never a panic, and:
//! - an error's position is a 1-based character of the input, or just past its end;
//! - parsing the same text twice gives the same result;
//! - each statement's text is the input's characters at its offset, in order, not
//!   overlapping, and parses alone to the same statement (the catalog keeps the text of a
//!   CREATE ... AS SELECT and parses it again at start-up);
//! - `window.rs` blanks its clauses out of a SELECT and leaves every other character in
//!   its place (so DataFusion's error positions still point at the user's text);
//! - windows have a positive SIZE, and a HOPPING window's ADVANCE BY is at most its SIZE;
//! - declared columns come back the same from the catalog's JSON;
//! - `${name}` substitution (`variables.rs`) gives text or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[path = "../stand_ins/error.rs"]
mod error;

#[path = "../../src/format/types.rs"]
#[allow(dead_code)]
pub mod types;

/// `crate::format` as the SQL layer sees it: the column types, and `Column`.
mod format {
    pub use crate::types;
    pub use crate::types::{SqlType, StructField};

    #[derive(Debug, Clone, PartialEq, Eq, super::Serialize, super::Deserialize)]
    pub struct Column {
        pub name: String,
        pub ty: SqlType,
        pub key: bool,
    }
}

#[path = "../../src/sql/mod.rs"]
#[allow(dead_code, unused_imports)]
mod sql;

use error::EddyError;
use sql::{Located, SelectStatement, Statement, WindowKind};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(clauses) = sql::window::extract(&text, 0) {
        let kept = text.chars().zip(clauses.text.chars()).all(|(a, b)| a == b || b == ' ');
        assert!(kept && clauses.text.chars().count() == text.chars().count(), "{text:?} blanked as {clauses:?}");
    }
    // ksqlDB's variables: substitution gives text or an error, never a panic, and leaves
    // text without a reference as it is.
    let vars = std::collections::BTreeMap::from([("v".to_string(), "x".to_string())]);
    match sql::variables::substitute(&text, &vars) {
        Ok(out) if !text.contains("${") => assert_eq!(out, *text),
        _ => {}
    }
    let result = sql::parse(&text);
    assert_eq!(format!("{result:?}"), format!("{:?}", sql::parse(&text)), "parsing {text:?} twice");
    match result {
        Ok(statements) => check_statements(&text, &statements),
        Err(e) => check_error(&text, &e),
    }
});

fn check_error(text: &str, e: &EddyError) {
    if let EddyError::Syntax { position: Some(p), .. } = e {
        assert!((1..=text.chars().count() + 1).contains(p), "position {p} outside {text:?}: {e:?}");
    }
}

fn check_statements(text: &str, statements: &[Located]) {
    let chars: Vec<char> = text.chars().collect();
    let mut end = 0;
    for located in statements {
        let len = located.text.chars().count();
        assert!(located.offset_chars >= end, "statements overlap in {text:?}");
        end = located.offset_chars + len;
        assert!(end <= chars.len(), "statement past the end of {text:?}");
        let at: String = chars[located.offset_chars..end].iter().collect();
        assert_eq!(at, located.text, "statement text not at its offset in {text:?}");
        let alone = sql::parse(&located.text).expect("a statement's own text parses");
        assert_eq!(alone.len(), 1, "{:?} alone is one statement", located.text);
        assert_eq!(
            format!("{:?}", alone[0].statement),
            format!("{:?}", located.statement),
            "{:?} alone parses the same",
            located.text
        );
        check_statement(&located.statement);
    }
}

/// How the catalog keeps a relation's columns (`catalog::RelationDef`, as JSON), at the same
/// depth.
#[derive(Serialize, Deserialize)]
struct CatalogEntry {
    columns: Vec<format::Column>,
}

fn check_statement(statement: &Statement) {
    match statement {
        Statement::CreateSource { columns, .. } => {
            let json = serde_json::to_vec(&CatalogEntry { columns: columns.clone() }).expect("columns as JSON");
            let entry: CatalogEntry = serde_json::from_slice(&json).expect("the catalog reads the columns back");
            assert_eq!(&entry.columns, columns);
        }
        Statement::Select(s) | Statement::CopyOut(s) => check_select(s),
        Statement::CreateAs { select, .. } => check_select(select),
        Statement::DeclareCursor { query, .. } => check_select(query),
        Statement::Explain(inner) => check_statement(inner),
        _ => {}
    }
}

fn check_select(s: &SelectStatement) {
    if let Some(w) = &s.window {
        assert!(w.size_ms > 0, "{w:?}");
        if let WindowKind::Hopping { advance_ms } = w.kind {
            assert!(advance_ms > 0 && advance_ms <= w.size_ms, "{w:?}");
        }
    }
    // What planning does next: `*` becomes the relations' columns.
    let columns = |_: &str| Some(vec!["a".to_string(), "B c".to_string()]);
    let _ = sql::expand_wildcards(&s.sql, &columns);
}
