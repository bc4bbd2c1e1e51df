//! SELECT: ksqlDB's clauses taken off (`window.rs`), the LIMIT of push queries, the GROUP BY
//! a WINDOW implies, `*` expanded to declared columns, and the relations named in FROM.

use super::*;
/// Parses a SELECT, taking off ksqlDB's clauses (`WINDOW`, `EMIT`, `LATE DATA TO`) and, for
/// push queries, the `LIMIT`. A windowed aggregation groups by its window as well:
/// `WINDOWSTART` and `WINDOWEND` join the GROUP BY and, as in ksqlDB, the result's columns.
///
/// `postgres_names`: a pull query's result, which names its computed columns as Postgres
/// does (`pg_names`); a continuous query's columns are named as in ksqlDB.
pub fn parse_select(text: &str, offset_chars: usize, postgres_names: bool) -> Result<SelectStatement, EddyError> {
    let clauses = window::extract(text, offset_chars)?;
    let mut sql = clauses.text.clone();
    let emit_changes = clauses.emit != Emit::None;
    let arrows = access::rewrite_arrows(&sql);
    if let Some(rewritten) = &arrows {
        sql = rewritten.sql.clone();
    }
    let parsed = parse_sqlparser(&sql, offset_chars).map_err(|e| match (e, &arrows) {
        // The position is in the rewritten text: point at the user's.
        (EddyError::Syntax { message, position: Some(p) }, Some(a)) => EddyError::Syntax {
            message,
            position: Some(offset_chars + a.original_position(p.saturating_sub(offset_chars))),
        },
        (e, _) => e,
    })?;
    let mut query = match parsed {
        ast::Statement::Query(q) => q,
        _ => return Err(EddyError::Syntax { message: "expected a SELECT".into(), position: Some(offset_chars + 1) }),
    };
    if arrows.is_some() {
        access::alias_field_access(&mut query);
        sql = query.to_string();
    }
    // Rendered again only when a column got a name: a point lookup (`SELECT * FROM t WHERE
    // k = $1`) keeps its text as written.
    if postgres_names && !emit_changes && pg_names::name_columns(&mut query) {
        sql = query.to_string();
    }
    // A push query's columns are named as a persistent query's (ksqlDB's rules).
    let pull = postgres_names && !emit_changes;
    if !pull && ksql_names(&mut query) {
        sql = query.to_string();
    }
    if postgres_names && !clauses.partition_by.is_empty() {
        return Err(EddyError::InvalidValue(
            "PARTITION BY re-keys a persistent query's output: use it in CREATE STREAM ... AS SELECT".into(),
        ));
    }
    let partition_by = partition_columns(&mut query, &clauses.partition_by, offset_chars)?;
    if !partition_by.is_empty() {
        sql = query.to_string();
    }
    if pg_rewrite::rewrite(&mut query) {
        sql = query.to_string();
    }
    if !pull && pg_rewrite::ksql_functions(&mut query) {
        sql = query.to_string();
    }
    if pull && explode_as_unnest(&mut query) {
        sql = query.to_string();
    }
    let mut limit = None;
    if emit_changes {
        if let Some(ast::LimitClause::LimitOffset { limit: Some(expr), offset: None, .. }) = &query.limit_clause {
            limit = Some(literal_usize(expr)?);
            query.limit_clause = None;
        }
        sql = query.to_string();
    } else if let Some(ast::LimitClause::LimitOffset { limit: Some(expr), .. }) = &query.limit_clause {
        limit = literal_usize(expr).ok();
    }
    if clauses.window.is_some() {
        group_by_window(&mut query)?;
        sql = query.to_string();
    }
    if clauses.emit == Emit::Final && clauses.window.is_none() {
        return Err(EddyError::InvalidValue(
            "EMIT FINAL needs a WINDOW clause (a window's final result is known when it closes)".into(),
        ));
    }
    let mut relations = Vec::new();
    collect_relations(&query, &mut relations);
    Ok(SelectStatement {
        sql,
        emit_changes,
        emit_final: clauses.emit == Emit::Final,
        window: clauses.window,
        late_data_to: clauses.late_data_to,
        within: clauses.within,
        limit,
        relations,
        partition_by,
    })
}

/// ksqlDB's names for a continuous query's unaliased computed columns: `ksql_col_0`,
/// `ksql_col_1`, ... counted over the columns that need one (a plain column keeps its name;
/// a struct field read with `->` is named after the field by `access`), skipping a name the
/// SELECT list already uses. Eddy folds unquoted names to lower case, so ksqlDB's
/// `KSQL_COL_0` is `ksql_col_0` here (and matches `KSQL_COL_0` written unquoted).
/// Whether it named any.
fn ksql_names(query: &mut ast::Query) -> bool {
    let ast::SetExpr::Select(select) = query.body.as_mut() else { return false };
    let taken: Vec<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            ast::SelectItem::UnnamedExpr(ast::Expr::Identifier(i)) => Some(normalize_ident(i)),
            ast::SelectItem::UnnamedExpr(ast::Expr::CompoundIdentifier(parts)) => parts.last().map(normalize_ident),
            ast::SelectItem::ExprWithAlias { alias, .. } => Some(normalize_ident(alias)),
            _ => None,
        })
        .collect();
    let mut next = 0;
    let mut changed = false;
    for item in &mut select.projection {
        let ast::SelectItem::UnnamedExpr(e) = item else { continue };
        if matches!(e, ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_)) {
            continue;
        }
        let name = loop {
            let candidate = format!("ksql_col_{next}");
            next += 1;
            if !taken.contains(&candidate) {
                break candidate;
            }
        };
        *item = ast::SelectItem::ExprWithAlias { expr: e.clone(), alias: ast::Ident::new(name) };
        changed = true;
    }
    changed
}

/// ksqlDB's `PARTITION BY`: the name of each partitioning expression's result column. A
/// column or expression the SELECT list lacks is added to it, first (keys lead a ksqlDB
/// schema): a column under its name, an expression as `ksql_col_n`. An expression the SELECT
/// list holds is its column.
fn partition_columns(query: &mut ast::Query, exprs: &[String], offset_chars: usize) -> Result<Vec<String>, EddyError> {
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return if exprs.is_empty() {
            Ok(Vec::new())
        } else {
            Err(EddyError::NotImplemented("PARTITION BY on a set operation".into()))
        };
    };
    let wildcard = select
        .projection
        .iter()
        .any(|item| matches!(item, ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..)));
    let mut names = Vec::new();
    let mut added = 0;
    for e in exprs {
        let bad = || EddyError::Syntax { message: format!("bad PARTITION BY {e}"), position: None };
        let expr = match parse_sqlparser(&format!("SELECT {e}"), offset_chars)? {
            ast::Statement::Query(q) => match *q.body {
                ast::SetExpr::Select(s) => match s.projection.into_iter().next() {
                    Some(ast::SelectItem::UnnamedExpr(expr)) if !matches!(expr, ast::Expr::Wildcard(_)) => expr,
                    _ => return Err(bad()),
                },
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        let output_name = |item: &ast::SelectItem| match item {
            ast::SelectItem::UnnamedExpr(ast::Expr::Identifier(i)) => Some(normalize_ident(i)),
            ast::SelectItem::UnnamedExpr(ast::Expr::CompoundIdentifier(parts)) => parts.last().map(normalize_ident),
            ast::SelectItem::ExprWithAlias { alias, .. } => Some(normalize_ident(alias)),
            _ => None,
        };
        let column = match &expr {
            ast::Expr::Identifier(i) => Some(normalize_ident(i)),
            ast::Expr::CompoundIdentifier(parts) => parts.last().map(normalize_ident),
            _ => None,
        };
        let name = match column {
            Some(name) => {
                if !wildcard && !select.projection.iter().any(|item| output_name(item).as_deref() == Some(&name)) {
                    select.projection.insert(added, ast::SelectItem::UnnamedExpr(expr.clone()));
                    added += 1;
                }
                name
            }
            None => {
                let text = expr.to_string().to_lowercase();
                let held = select.projection.iter().find_map(|item| match item {
                    ast::SelectItem::ExprWithAlias { expr, alias } if expr.to_string().to_lowercase() == text => {
                        Some(normalize_ident(alias))
                    }
                    _ => None,
                });
                match held {
                    Some(name) => name,
                    None => {
                        let taken: Vec<String> = select.projection.iter().filter_map(output_name).collect();
                        let mut n = 0;
                        while taken.contains(&format!("ksql_col_{n}")) {
                            n += 1;
                        }
                        let name = format!("ksql_col_{n}");
                        let alias = ast::Ident::new(name.clone());
                        select.projection.insert(added, ast::SelectItem::ExprWithAlias { expr, alias });
                        added += 1;
                        name
                    }
                }
            }
        };
        names.push(name);
    }
    Ok(names)
}

/// Whether the query is `a RIGHT [OUTER] JOIN b` (one join), which a continuous query runs
/// as `b LEFT JOIN a` ([`expand_wildcards`] turns it so, after naming the columns of `*` in
/// the order written).
pub fn is_right_join(sql: &str) -> bool {
    let Ok(ast::Statement::Query(mut query)) = parse_sqlparser(sql, 0) else { return false };
    right_join_as_left(&mut query)
}

/// Turns `a RIGHT JOIN b ON ...` into `b LEFT JOIN a ON ...`; whether it did.
fn right_join_as_left(query: &mut ast::Query) -> bool {
    let ast::SetExpr::Select(select) = query.body.as_mut() else { return false };
    let [twj] = select.from.as_mut_slice() else { return false };
    let [join] = twj.joins.as_mut_slice() else { return false };
    let constraint = match &join.join_operator {
        ast::JoinOperator::Right(c) | ast::JoinOperator::RightOuter(c) => c.clone(),
        _ => return false,
    };
    std::mem::swap(&mut twj.relation, &mut join.relation);
    join.join_operator = ast::JoinOperator::LeftOuter(constraint);
    true
}

/// A pull query's `EXPLODE(arr)` is DataFusion's `unnest(arr)` (a continuous query plans it
/// as a table function: `functions::table`). Whether it found one.
fn explode_as_unnest(query: &mut ast::Query) -> bool {
    let mut changed = false;
    let _ = ast::visit_expressions_mut(query, |e| {
        if let ast::Expr::Function(f) = e {
            if let [ast::ObjectNamePart::Identifier(name)] = f.name.0.as_mut_slice() {
                if name.value.eq_ignore_ascii_case("explode") {
                    *name = ast::Ident::new("unnest");
                    changed = true;
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    changed
}

/// Adds `windowstart, windowend` to a windowed query's GROUP BY, and to its SELECT list
/// right after the leading group columns unless the query names them already.
fn group_by_window(query: &mut ast::Query) -> Result<(), EddyError> {
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return Err(EddyError::NotImplemented("WINDOW on a set operation".into()));
    };
    let ast::GroupByExpr::Expressions(group, _) = &mut select.group_by else {
        return Err(EddyError::NotImplemented("WINDOW with GROUP BY ALL".into()));
    };
    if group.is_empty() {
        return Err(EddyError::InvalidValue("a WINDOW clause needs GROUP BY (windows group an aggregation)".into()));
    }
    let is_named = |e: &ast::Expr, name: &str| matches!(e, ast::Expr::Identifier(i) if ident_name(i) == name);
    let leading = select
        .projection
        .iter()
        .take_while(|item| match item {
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => group.contains(e),
            _ => false,
        })
        .count();
    let mut insert_at = leading;
    for name in ["windowstart", "windowend"] {
        let ident = ast::Expr::Identifier(ast::Ident::new(name));
        if !group.iter().any(|e| is_named(e, name)) {
            group.push(ident.clone());
        }
        let projected = select.projection.iter().any(|item| match item {
            ast::SelectItem::UnnamedExpr(e) => is_named(e, name),
            ast::SelectItem::ExprWithAlias { expr, .. } => is_named(expr, name),
            _ => false,
        });
        if !projected {
            select.projection.insert(insert_at, ast::SelectItem::UnnamedExpr(ident));
            insert_at += 1;
        }
    }
    Ok(())
}

/// Replaces `*` and `name.*` in the outer SELECT list by the relations' declared columns,
/// so pseudo-columns (ROWTIME...) and window bounds appear only when named, as in ksqlDB;
/// in a join, names each column of `*` and each column two sources share after its source
/// (`l_id`), as ksqlDB does.
pub fn expand_wildcards(sql: &str, columns_of: &dyn Fn(&str) -> Option<Vec<String>>) -> Result<String, EddyError> {
    let ast::Statement::Query(mut query) = parse_sqlparser(sql, 0)? else { return Ok(sql.to_string()) };
    let ast::SetExpr::Select(select) = query.body.as_mut() else { return Ok(sql.to_string()) };
    let joined = select.from.iter().map(|t| 1 + t.joins.len()).sum::<usize>() > 1;
    if !joined
        && !select
            .projection
            .iter()
            .any(|i| matches!(i, ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..)))
    {
        return Ok(sql.to_string());
    }
    // (qualifier as written, relation name) for each FROM item.
    let mut from: Vec<(String, String)> = Vec::new();
    for twj in &select.from {
        for factor in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            if let ast::TableFactor::Table { name, alias, .. } = factor {
                let rel = object_name(name);
                let qualifier = alias.as_ref().map(|a| ident_name(&a.name)).unwrap_or_else(|| rel.clone());
                from.push((qualifier, rel));
            }
        }
    }
    let qualified = from.len() > 1;
    let columns = |qualifier: &str, rel: &str| -> Vec<ast::SelectItem> {
        columns_of(rel)
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                if qualified {
                    // ksqlDB names a join's columns after their source: `l.id` is `l_id`.
                    let alias = ast::Ident::with_quote('"', format!("{qualifier}_{c}"));
                    let col = ast::Ident::with_quote('"', c);
                    let expr = ast::Expr::CompoundIdentifier(vec![ast::Ident::with_quote('"', qualifier), col]);
                    ast::SelectItem::ExprWithAlias { expr, alias }
                } else {
                    ast::SelectItem::UnnamedExpr(ast::Expr::Identifier(ast::Ident::with_quote('"', c)))
                }
            })
            .collect()
    };
    let mut projection = Vec::new();
    for item in std::mem::take(&mut select.projection) {
        match item {
            ast::SelectItem::Wildcard(_) => {
                for (q, rel) in &from {
                    projection.extend(columns(q, rel));
                }
            }
            ast::SelectItem::QualifiedWildcard(ast::SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                let q = object_name(&name);
                match from.iter().find(|(fq, _)| *fq == q) {
                    Some((fq, rel)) => projection.extend(columns(fq, rel)),
                    None => return Err(EddyError::UndefinedRelation(format!("{q} in {q}.*"))),
                }
            }
            // ksqlDB names a join's column after its source when another source has a
            // column of that name (pseudo columns always do): `l.id, r.id` are `l_id, r_id`.
            ast::SelectItem::UnnamedExpr(ast::Expr::CompoundIdentifier(parts)) if qualified && parts.len() == 2 => {
                let (q, c) = (normalize_ident(&parts[0]), normalize_ident(&parts[1]));
                let sources =
                    from.iter().filter(|(_, rel)| columns_of(rel).is_some_and(|cols| cols.contains(&c))).count();
                let pseudo = ["rowtime", "rowpartition", "rowoffset", "windowstart", "windowend"].contains(&c.as_str());
                let expr = ast::Expr::CompoundIdentifier(parts);
                if sources > 1 || pseudo {
                    let alias = ast::Ident::with_quote('"', format!("{q}_{c}"));
                    projection.push(ast::SelectItem::ExprWithAlias { expr, alias });
                } else {
                    projection.push(ast::SelectItem::UnnamedExpr(expr));
                }
            }
            other => projection.push(other),
        }
    }
    select.projection = projection;
    right_join_as_left(&mut query);
    Ok(query.to_string())
}

fn literal_usize(expr: &ast::Expr) -> Result<usize, EddyError> {
    match expr {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse().map_err(|_| EddyError::InvalidValue(format!("LIMIT {n}"))),
            _ => Err(EddyError::InvalidValue("LIMIT takes a number".into())),
        },
        _ => Err(EddyError::InvalidValue("LIMIT takes a number".into())),
    }
}

fn collect_relations(query: &ast::Query, out: &mut Vec<String>) {
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            collect_relations(&cte.query, out);
        }
    }
    collect_set_expr(&query.body, out);
}

fn collect_set_expr(body: &ast::SetExpr, out: &mut Vec<String>) {
    match body {
        ast::SetExpr::Select(select) => {
            for twj in &select.from {
                collect_factor(&twj.relation, out);
                for j in &twj.joins {
                    collect_factor(&j.relation, out);
                }
            }
        }
        ast::SetExpr::Query(q) => collect_relations(q, out),
        ast::SetExpr::SetOperation { left, right, .. } => {
            collect_set_expr(left, out);
            collect_set_expr(right, out);
        }
        _ => {}
    }
}

fn collect_factor(f: &ast::TableFactor, out: &mut Vec<String>) {
    match f {
        ast::TableFactor::Table { name, .. } => out.push(object_name(name)),
        ast::TableFactor::Derived { subquery, .. } => collect_relations(subquery, out),
        ast::TableFactor::NestedJoin { table_with_joins, .. } => {
            collect_factor(&table_with_joins.relation, out);
            for j in &table_with_joins.joins {
                collect_factor(&j.relation, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_by_adds_what_the_select_list_lacks_in_front() {
        let s = parse_select("SELECT page FROM clicks PARTITION BY usr, UCASE(page) EMIT CHANGES", 0, false).unwrap();
        assert_eq!(s.partition_by, ["usr", "ksql_col_0"]);
        assert!(s.sql.starts_with("SELECT usr, UCASE(page) AS ksql_col_0, page FROM"), "{}", s.sql);
        // Held already: by name, by expression (its alias), or under `*`.
        let s = parse_select("SELECT c.usr, UCASE(page) AS up FROM clicks c PARTITION BY c.usr, UCASE(page)", 0, false)
            .unwrap();
        assert_eq!(s.partition_by, ["usr", "up"]);
        assert!(s.sql.starts_with("SELECT c.usr, UCASE(page) AS up FROM"), "{}", s.sql);
        let s = parse_select("SELECT * FROM clicks PARTITION BY usr", 0, false).unwrap();
        assert!(s.sql.starts_with("SELECT * FROM"), "{}", s.sql);
    }
}
