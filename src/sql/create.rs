//! CREATE STREAM/TABLE over a topic: the column list (KEY / PRIMARY KEY, HEADERS and
//! HEADER('key') columns), column types (nested ARRAY, MAP and STRUCT, DECIMAL(p, s), custom
//! types from `custom_types`), and the WITH properties; `CREATE ... AS SELECT` hands its
//! query to `select.rs`. Also ksqlDB's `ALTER STREAM | TABLE name ADD [COLUMN] c type, ...`.

use super::*;

pub(super) fn parse_create(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.expect_word("CREATE")?;
    let or_replace = t.eat_word("OR") && {
        t.expect_word("REPLACE")?;
        true
    };
    t.eat_word("SOURCE");
    let kind = t.relation_kind()?;
    let if_not_exists = t.eat_if_not_exists()?;
    let name = t.ident()?;
    let mut columns = Vec::new();
    let mut headers = Vec::new();
    if t.eat(&Token::LParen) {
        loop {
            let (column, header) = parse_column(t, kind)?;
            columns.push(column);
            headers.extend(header);
            if t.eat(&Token::RParen) {
                break;
            }
            t.expect(&Token::Comma)?;
        }
    }
    let props = with_properties(t)?;
    if t.eat_word("AS") {
        if !columns.is_empty() {
            return Err(t.error("a CREATE ... AS SELECT takes its columns from the query; remove the column list"));
        }
        let offset = t.rest_offset_chars();
        let select = parse_select(t.rest(), offset, false)?;
        if !select.emit_changes && kind == RelationKind::Table {
            // ksqlDB requires EMIT CHANGES on persistent queries only in some versions; accept both.
        }
        return Ok(Statement::CreateAs {
            kind,
            name,
            props,
            select,
            if_not_exists,
            or_replace,
            text: t.text.to_string(),
        });
    }
    t.expect_end()?;
    // AVRO takes its value columns from the Schema Registry when none are declared.
    let inferred = props
        .get("VALUE_FORMAT")
        .or(props.get("FORMAT"))
        .is_some_and(|f| ["AVRO", "JSON_SR", "PROTOBUF"].iter().any(|s| f.eq_ignore_ascii_case(s)));
    if columns.is_empty() && !inferred {
        return Err(t.error(format!("CREATE {} needs a column list, e.g. (id STRING KEY, amount DOUBLE)", kind.word())));
    }
    Ok(Statement::CreateSource { kind, name, columns, headers, props, if_not_exists, or_replace })
}

/// A column filled from the Kafka record's headers: all of them (`HEADERS`, an
/// `ARRAY<STRUCT<KEY STRING, VALUE BYTES>>`) or one (`HEADER('key')`, BYTES).
pub type HeaderColumn = (String, Option<String>);

/// `ALTER STREAM | TABLE name ADD [COLUMN] name type [, ADD [COLUMN] name type ...]`: value
/// columns only.
pub(super) fn parse_alter(t: &mut Tokens) -> Result<Statement, EddyError> {
    t.expect_word("ALTER")?;
    let kind = t.relation_kind()?;
    let name = t.ident()?;
    let mut columns = Vec::new();
    loop {
        t.expect_word("ADD")?;
        t.eat_word("COLUMN");
        let column = t.ident()?;
        let ty = parse_type(t, 0)?;
        if t.peek_word(0).as_deref().is_some_and(|w| matches!(w, "KEY" | "PRIMARY" | "HEADERS" | "HEADER")) {
            return Err(t.error("ALTER adds value columns only (not key or header columns)"));
        }
        columns.push(Column { name: column, ty, key: false });
        if !t.eat(&Token::Comma) {
            break;
        }
    }
    t.expect_end()?;
    Ok(Statement::AlterSource { kind, name, columns })
}

fn parse_column(t: &mut Tokens, kind: RelationKind) -> Result<(Column, Option<HeaderColumn>), EddyError> {
    let name = t.ident()?;
    let ty = parse_type(t, 0)?;
    let mut key = false;
    if t.eat_word("PRIMARY") {
        t.expect_word("KEY")?;
        key = true;
    } else if t.eat_word("KEY") {
        key = true;
    }
    if key && kind == RelationKind::Stream && t.text.to_uppercase().contains("PRIMARY KEY") {
        return Err(t.error("streams have KEY columns, not PRIMARY KEY (tables have PRIMARY KEY)"));
    }
    let header = if t.eat_word("HEADERS") {
        let expected = SqlType::Array(Box::new(SqlType::Struct(vec![
            StructField { name: "key".into(), ty: SqlType::String },
            StructField { name: "value".into(), ty: SqlType::Bytes },
        ])));
        if ty != expected {
            return Err(t.error("a HEADERS column is ARRAY<STRUCT<key STRING, value BYTES>>"));
        }
        Some((name.clone(), None))
    } else if t.eat_word("HEADER") {
        t.expect(&Token::LParen)?;
        let header_key = match t.tokens.get(t.pos).map(|x| x.token.clone()) {
            Some(Token::SingleQuotedString(k)) => k,
            _ => return Err(t.error("syntax error: HEADER takes a quoted header key, e.g. HEADER('trace-id')")),
        };
        t.pos += 1;
        t.expect(&Token::RParen)?;
        if ty != SqlType::Bytes {
            return Err(t.error("a HEADER('key') column is BYTES"));
        }
        Some((name.clone(), Some(header_key)))
    } else {
        None
    };
    if header.is_some() && key {
        return Err(t.error("a header column cannot be a key column"));
    }
    Ok((Column { name, ty, key }, header))
}

/// A column type: a name with optional parameters (`VARCHAR(10)`, `DECIMAL(10, 2)`), or a
/// nested `ARRAY<T>`, `MAP<STRING, T>`, `STRUCT<name T, ...>` (inside `depth` others).
pub(super) fn parse_type(t: &mut Tokens, depth: usize) -> Result<SqlType, EddyError> {
    let mut type_name = t.ident().map_err(|_| t.error("syntax error: expected a column type"))?.to_uppercase();
    if matches!(type_name.as_str(), "ARRAY" | "MAP" | "STRUCT") && depth >= crate::format::types::MAX_TYPE_NESTING {
        t.pos -= 1;
        return Err(t.error(format!(
            "ARRAY, MAP and STRUCT types nest at most {} deep",
            crate::format::types::MAX_TYPE_NESTING
        )));
    }
    match type_name.as_str() {
        "ARRAY" => {
            t.expect(&Token::Lt)?;
            let item = parse_type(t, depth + 1)?;
            t.expect_gt()?;
            return Ok(SqlType::Array(Box::new(item)));
        }
        "MAP" => {
            t.expect(&Token::Lt)?;
            if parse_type(t, depth + 1)? != SqlType::String {
                return Err(t.error("MAP keys are STRING: MAP<STRING, T>"));
            }
            t.expect(&Token::Comma)?;
            let value = parse_type(t, depth + 1)?;
            t.expect_gt()?;
            return Ok(SqlType::Map(Box::new(value)));
        }
        "STRUCT" => {
            t.expect(&Token::Lt)?;
            let mut fields: Vec<StructField> = Vec::new();
            if !t.eat_gt() {
                loop {
                    let name = t.ident()?;
                    if fields.iter().any(|f| f.name == name) {
                        return Err(t.error(format!("duplicate STRUCT field {name}")));
                    }
                    fields.push(StructField { name, ty: parse_type(t, depth + 1)? });
                    if t.eat_gt() {
                        break;
                    }
                    t.expect(&Token::Comma)?;
                }
            }
            return Ok(SqlType::Struct(fields));
        }
        "DECIMAL" | "NUMERIC" => {
            if !t.eat(&Token::LParen) {
                return Err(t.error("DECIMAL needs a precision and scale, e.g. DECIMAL(10, 2)"));
            }
            let precision = t.number()?;
            let scale = if t.eat(&Token::Comma) { t.number()? } else { 0 };
            t.expect(&Token::RParen)?;
            if !(1..=crate::format::types::MAX_DECIMAL_PRECISION as u64).contains(&precision) || scale > precision {
                t.pos -= 1;
                return Err(t.error(format!(
                    "DECIMAL({precision}, {scale}): precision is 1 to 38 and scale at most the precision"
                )));
            }
            return Ok(SqlType::Decimal { precision: precision as u8, scale: scale as u8 });
        }
        _ => {}
    }
    // Two-word types and type parameters: DOUBLE PRECISION, CHARACTER VARYING(20), VARCHAR(10).
    if (type_name == "DOUBLE" && t.eat_word("PRECISION")) || (type_name == "CHARACTER" && t.eat_word("VARYING")) {
        type_name = if type_name == "DOUBLE" { "DOUBLE".into() } else { "VARCHAR".into() };
    }
    if t.eat(&Token::LParen) {
        while !t.eat(&Token::RParen) {
            if t.at_end() {
                return Err(t.error("syntax error: unclosed type parameters"));
            }
            t.pos += 1;
        }
    }
    if let Some(custom) = custom_types::get(&type_name).filter(|_| !custom_types::is_builtin(&type_name)) {
        return Ok(custom);
    }
    SqlType::parse(&type_name).ok_or_else(|| {
        t.pos -= 1;
        EddyError::NotImplemented(format!(
            "column type {type_name} (supported: STRING/VARCHAR, INT, BIGINT, DOUBLE, BOOLEAN, TIMESTAMP, DATE, TIME, DECIMAL(p, s), BYTES, ARRAY<T>, MAP<STRING, T>, STRUCT<name T, ...>)"
        ))
    })
}
