//! ksqlDB's custom types: `CREATE TYPE [IF NOT EXISTS] name AS type`, `DROP TYPE [IF EXISTS]
//! name`, `SHOW TYPES`. A custom type's name stands for its type wherever a column type is
//! written (CREATE STREAM/TABLE columns, inside ARRAY, MAP and STRUCT, other custom types);
//! the type is resolved when the statement is parsed, so dropping it later changes nothing
//! already declared, as in ksqlDB. The server keeps the types in its catalog and hands them
//! here (`set`), where every parse sees them.

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::{parse_type, Statement, Tokens};
use crate::error::EddyError;
use crate::format::types::SqlType;

static TYPES: RwLock<BTreeMap<String, SqlType>> = RwLock::new(BTreeMap::new());

/// The custom types every parse from now on resolves (by lower-case name).
pub fn set(types: BTreeMap<String, SqlType>) {
    *TYPES.write().unwrap_or_else(|p| p.into_inner()) = types;
}

/// The custom type named `name` (any case), if there is one.
pub fn get(name: &str) -> Option<SqlType> {
    TYPES.read().unwrap_or_else(|p| p.into_inner()).get(&name.to_lowercase()).cloned()
}

/// Whether `name` is one of the built-in type names (which a custom type may not take).
pub fn is_builtin(name: &str) -> bool {
    let upper = name.to_uppercase();
    SqlType::parse(&upper).is_some()
        || matches!(upper.as_str(), "ARRAY" | "MAP" | "STRUCT" | "DECIMAL" | "NUMERIC" | "CHARACTER" | "PRECISION")
}

/// `CREATE TYPE [IF NOT EXISTS] name AS type` (after `CREATE`).
pub(super) fn parse_create_type(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.expect_word("TYPE")?;
    let if_not_exists = t.eat_if_not_exists()?;
    let name = t.ident()?;
    if is_builtin(&name) {
        t.pos -= 1;
        return Err(t.error(format!("{name} is a built-in type; a custom type needs another name")));
    }
    t.expect_word("AS")?;
    let ty = parse_type(t, 0)?;
    t.expect_end()?;
    Ok(Statement::CreateType { name, ty, if_not_exists })
}

/// `DROP TYPE [IF EXISTS] name` (after `DROP`).
pub(super) fn parse_drop_type(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.expect_word("TYPE")?;
    let if_exists = t.eat_if_exists()?;
    let name = t.ident()?;
    t.expect_end()?;
    Ok(Statement::DropType { name, if_exists })
}
