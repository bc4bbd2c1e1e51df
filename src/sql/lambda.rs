//! ksqlDB's lambdas with several parameters, `(s, x) => body`, written so that sqlparser
//! reads them: inside a call, `x => body` parses as a named argument (one parameter), so
//! `(s, x) =>` becomes the one quoted name `"(s,x)" =>`. `functions::lambdas` turns both
//! forms into DataFusion lambdas when the statement is planned.

use super::*;

/// The text with every `( a, b, ... ) =>` written `"(a,b,...)" =>`; `None` when it has none.
pub fn rewrite_parameter_lists(sql: &str) -> Option<String> {
    if !sql.contains("=>") {
        return None;
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location().ok()?;
    let significant: Vec<&TokenWithSpan> = tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_))).collect();
    let index = LineIndex::new(sql);
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut i = 0;
    while i < significant.len() {
        if let Some((names, end)) = parameter_list(&significant, i) {
            let start = index.byte(significant[i].span.start);
            out.push_str(&sql[copied..start]);
            out.push_str(&format!("\"({})\"", names.join(",")));
            copied = index.byte(significant[end].span.end);
            i = end + 1;
            continue;
        }
        i += 1;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&sql[copied..]);
    Some(out)
}

/// `( name [, name]... ) =>` starting at `tokens[i]`: the names and the index of the `)`.
fn parameter_list(tokens: &[&TokenWithSpan], i: usize) -> Option<(Vec<String>, usize)> {
    if tokens[i].token != Token::LParen {
        return None;
    }
    let mut names = Vec::new();
    let mut j = i + 1;
    loop {
        match &tokens.get(j)?.token {
            Token::Word(w) if !w.value.contains(['"', ',', '(', ')']) => names.push(normalize(w)),
            _ => return None,
        }
        match &tokens.get(j + 1)?.token {
            Token::Comma => j += 2,
            Token::RParen if tokens.get(j + 2)?.token == Token::RArrow => return Some((names, j + 1)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_lists_become_one_quoted_name() {
        assert_eq!(
            rewrite_parameter_lists("SELECT REDUCE(a, 0, (S, x) => s + x), TRANSFORM(a, (x) => x) FROM t").unwrap(),
            "SELECT REDUCE(a, 0, \"(s,x)\" => s + x), TRANSFORM(a, \"(x)\" => x) FROM t"
        );
        // A single parameter stays as written; a tuple that is no lambda stays too.
        assert_eq!(rewrite_parameter_lists("SELECT TRANSFORM(a, x => x) FROM t"), None);
        assert_eq!(rewrite_parameter_lists("SELECT (a, b) FROM t WHERE c = '=>'"), None);
    }
}
