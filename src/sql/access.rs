//! ksqlDB's field access `col->field` (STRUCT fields, and MAP keys), turned into the
//! subscript DataFusion plans (`col['field']`, which becomes `get_field`). Done on tokens,
//! not on sqlparser's tree: sqlparser reads `->` as a binary operator that binds looser
//! than `=`, so `s->a = 1` would parse as `s -> (a = 1)`; a subscript is postfix and binds
//! tightest, as `->` does in ksqlDB. MAP and ARRAY subscripts (`m['k']`, `a[1]`, 1-based
//! as in ksqlDB) are DataFusion's own.

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::normalize;

/// Rewrites every `-> name` into `['name']`; `None` when the text has no `->`.
pub fn rewrite_arrows(sql: &str) -> Option<String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    if !tokens.contains(&Token::Arrow) {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == Token::Arrow {
            let mut j = i + 1;
            while matches!(tokens.get(j), Some(Token::Whitespace(_))) {
                j += 1;
            }
            let field = match tokens.get(j) {
                Some(Token::Word(w)) => Some(normalize(w)),
                Some(Token::SingleQuotedString(s)) => Some(s.clone()),
                _ => None,
            };
            if let Some(field) = field {
                out.truncate(out.trim_end().len());
                out.push_str(&format!("['{}']", field.replace('\'', "''")));
                i = j + 1;
                continue;
            }
        }
        out.push_str(&tokens[i].to_string());
        i += 1;
    }
    Some(out)
}

/// Names an unaliased `x->field` in the SELECT list after its field, as ksqlDB does
/// (unless another item already has that name).
pub fn alias_field_access(query: &mut ast::Query) {
    let ast::SetExpr::Select(select) = query.body.as_mut() else { return };
    let names: Vec<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            ast::SelectItem::UnnamedExpr(ast::Expr::Identifier(i)) => Some(super::ident_name(i)),
            ast::SelectItem::UnnamedExpr(ast::Expr::CompoundIdentifier(parts)) => parts.last().map(super::ident_name),
            ast::SelectItem::ExprWithAlias { alias, .. } => Some(super::ident_name(alias)),
            _ => None,
        })
        .collect();
    let mut taken = names;
    for item in select.projection.iter_mut() {
        let ast::SelectItem::UnnamedExpr(expr) = item else { continue };
        let Some(field) = accessed_field(expr) else { continue };
        if taken.contains(&field) {
            continue;
        }
        taken.push(field.clone());
        let expr = std::mem::replace(expr, ast::Expr::Value(ast::Value::Null.into()));
        *item = ast::SelectItem::ExprWithAlias { expr, alias: ast::Ident::with_quote('"', field) };
    }
}

/// The field (or key) an expression ends by accessing: `s['a']` → `a`.
fn accessed_field(expr: &ast::Expr) -> Option<String> {
    let ast::Expr::CompoundFieldAccess { access_chain, .. } = expr else { return None };
    match access_chain.last()? {
        ast::AccessExpr::Subscript(ast::Subscript::Index { index: ast::Expr::Value(v) }) => match &v.value {
            ast::Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrows_become_subscripts_outside_strings() {
        assert_eq!(rewrite_arrows("SELECT 1"), None);
        assert_eq!(
            rewrite_arrows("SELECT a->B, a -> \"C\"->d FROM s WHERE a->x = '->y'").unwrap(),
            "SELECT a['b'], a['C']['d'] FROM s WHERE a['x'] = '->y'"
        );
    }
}
