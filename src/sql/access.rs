//! ksqlDB's field access `col->field` (STRUCT fields, and MAP keys), turned into the
//! subscript DataFusion plans (`col['field']`, which becomes `get_field`). Done on tokens,
//! not on sqlparser's tree: sqlparser reads `->` as a binary operator that binds looser
//! than `=`, so `s->a = 1` would parse as `s -> (a = 1)`; a subscript is postfix and binds
//! tightest, as `->` does in ksqlDB. MAP and ARRAY subscripts (`m['k']`, `a[1]`, 1-based
//! as in ksqlDB) are DataFusion's own.

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::{normalize, LineIndex};

/// A statement's text with every `-> name` written `['name']`.
pub struct Arrows {
    pub sql: String,
    /// Each rewritten `-> name`: where its `['name']` starts and ends in `sql` and where the
    /// `->` started in the user's text (characters), to map error positions back.
    edits: Vec<Edit>,
}

struct Edit {
    start_chars: usize,
    end_chars: usize,
    original_start_chars: usize,
    original_end_chars: usize,
}

impl Arrows {
    /// The 1-based character of the user's text at `position` (1-based) of the rewritten
    /// one: after an edit it moves by what the edits added; inside one it is the `->`.
    pub fn original_position(&self, position: usize) -> usize {
        let at = position.saturating_sub(1);
        let mut shifted = at;
        for e in &self.edits {
            if at >= e.end_chars {
                shifted = at - e.end_chars + e.original_end_chars;
            } else if at >= e.start_chars {
                shifted = e.original_start_chars;
            }
        }
        shifted + 1
    }
}

/// Rewrites every `-> name` into `['name']`; `None` when the text has no `->`. The rest of
/// the text is copied as written.
pub fn rewrite_arrows(sql: &str) -> Option<Arrows> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location().ok()?;
    if !tokens.iter().any(|t| t.token == Token::Arrow) {
        return None;
    }
    let index = LineIndex::new(sql);
    let mut out = String::with_capacity(sql.len() + 8);
    let mut out_chars = 0;
    let mut edits = Vec::new();
    // The user's text is copied up to `copied` (a byte), which is `copied_chars` characters.
    let (mut copied, mut copied_chars) = (0, 0);
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].token == Token::Arrow {
            let mut j = i + 1;
            while matches!(tokens.get(j).map(|t| &t.token), Some(Token::Whitespace(_))) {
                j += 1;
            }
            let field = match tokens.get(j).map(|t| &t.token) {
                Some(Token::Word(w)) => Some(normalize(w)),
                Some(Token::SingleQuotedString(s)) => Some(s.clone()),
                _ => None,
            };
            if let Some(field) = field {
                let before = sql[copied..index.byte(tokens[i].span.start)].trim_end();
                out.push_str(before);
                out_chars += before.chars().count();
                let original_start_chars = copied_chars + before.chars().count();
                let subscript = format!("['{}']", field.replace('\'', "''"));
                out.push_str(&subscript);
                let start_chars = out_chars;
                out_chars += subscript.chars().count();
                let end = index.byte(tokens[j].span.end);
                copied_chars += sql[copied..end].chars().count();
                copied = end;
                edits.push(Edit {
                    start_chars,
                    end_chars: out_chars,
                    original_start_chars,
                    original_end_chars: copied_chars,
                });
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&sql[copied..]);
    Some(Arrows { sql: out, edits })
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
        assert!(rewrite_arrows("SELECT 1").is_none());
        assert_eq!(
            rewrite_arrows("SELECT a->B, a -> \"C\"->d FROM s WHERE a->x = '->y'").unwrap().sql,
            "SELECT a['b'], a['C']['d'] FROM s WHERE a['x'] = '->y'"
        );
    }

    /// Found by the fuzz target `sql_dialect`: the error pointed 2 characters past the end,
    /// at the rewritten text (`a->b` is `a['b']`).
    #[test]
    fn syntax_errors_after_arrows_point_at_the_users_text() {
        let sql = "SELECT s->city, t -> 'x' FROM users ORDER BY i )";
        let Err(crate::error::EddyError::Syntax { position, .. }) = crate::sql::parse(sql) else { panic!() };
        assert_eq!(position, Some(sql.chars().count()));
        let arrows = rewrite_arrows("a->b c").unwrap();
        assert_eq!(arrows.sql, "a['b'] c");
        // a, inside ['b'] (the ->), then c.
        assert_eq!([1, 2, 4, 8].map(|p| arrows.original_position(p)), [1, 2, 2, 6]);
    }
}
