//! ksqlDB's streaming clauses inside a SELECT, which sqlparser does not know: `WINDOW
//! TUMBLING|HOPPING|SESSION (...)`, `EMIT CHANGES|FINAL`, and Eddy's `LATE DATA TO name`.
//! They are read from the tokens and blanked out of the text (keeping every other
//! character's position, so DataFusion's errors still point at the user's text).

use datafusion::sql::sqlparser::tokenizer::Token;

use super::{normalize, Tokens};
use crate::error::EddyError;

/// ksqlDB's default grace period when a window does not give one (24 hours).
pub const DEFAULT_GRACE_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling,
    Hopping {
        advance_ms: i64,
    },
    /// Sessions close after `size_ms` of inactivity per key.
    Session,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    /// Window size (the inactivity gap for session windows).
    pub size_ms: i64,
    pub grace_ms: i64,
    /// How long closed windows stay queryable; `None` keeps them.
    pub retention_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// A pull query (no EMIT clause).
    #[default]
    None,
    Changes,
    Final,
}

/// The streaming clauses found in one SELECT, and its text without them.
#[derive(Debug, Clone, Default)]
pub struct StreamingClauses {
    pub text: String,
    pub emit: Emit,
    pub window: Option<WindowSpec>,
    pub late_data_to: Option<String>,
    pub within: Option<JoinWindow>,
    /// ksqlDB's `PARTITION BY col, ...`: the output's key columns (as written).
    pub partition_by: Vec<String>,
}

/// A stream–stream join's `WITHIN n unit | (before, after) [GRACE PERIOD n unit]`: a left
/// record at `t` matches right records in `[t - before_ms, t + after_ms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindow {
    pub before_ms: i64,
    pub after_ms: i64,
    pub grace_ms: i64,
}

pub fn extract(text: &str, offset_chars: usize) -> Result<StreamingClauses, EddyError> {
    let mut t = Tokens::new(text, offset_chars)?;
    let mut out = StreamingClauses::default();
    let mut cut: Vec<(usize, usize)> = Vec::new();
    // Parentheses open here: `PARTITION BY` inside `OVER (...)` is a window function's.
    let mut depth = 0usize;
    while !t.at_end() {
        let start = t.pos;
        match (t.peek_word(0).as_deref(), t.peek_word(1).as_deref()) {
            (Some("PARTITION"), Some("BY")) if depth == 0 => {
                t.pos += 2;
                if !out.partition_by.is_empty() {
                    return Err(t.error("a query takes one PARTITION BY clause"));
                }
                out.partition_by = partition_by(&mut t)?;
            }
            (Some("EMIT"), Some("CHANGES")) => {
                out.emit = Emit::Changes;
                t.pos += 2;
            }
            (Some("EMIT"), Some("FINAL")) => {
                out.emit = Emit::Final;
                t.pos += 2;
            }
            (Some("WINDOW"), Some(kind @ ("TUMBLING" | "HOPPING" | "SESSION"))) => {
                let kind = kind.to_string();
                t.pos += 2;
                if out.window.is_some() {
                    return Err(t.error("a query takes one WINDOW clause"));
                }
                out.window = Some(window_spec(&mut t, &kind)?);
            }
            (Some("WITHIN"), _) => {
                t.pos += 1;
                if out.within.is_some() {
                    return Err(
                        t.error("a query takes one WITHIN clause (joins of more than two streams are not supported)")
                    );
                }
                let (before_ms, after_ms) = if t.eat(&Token::LParen) {
                    let before = duration(&mut t)?;
                    t.expect(&Token::Comma)?;
                    let after = duration(&mut t)?;
                    t.expect(&Token::RParen)?;
                    (before, after)
                } else {
                    let n = duration(&mut t)?;
                    (n, n)
                };
                let grace_ms = if t.eat_word("GRACE") {
                    t.expect_word("PERIOD")?;
                    duration(&mut t)?
                } else {
                    DEFAULT_GRACE_MS
                };
                out.within = Some(JoinWindow { before_ms, after_ms, grace_ms });
            }
            (Some("LATE"), Some("DATA")) => {
                t.pos += 2;
                t.expect_word("TO")?;
                out.late_data_to = Some(t.ident()?);
            }
            _ => {
                match t.tokens[t.pos].token {
                    Token::LParen => depth += 1,
                    Token::RParen => depth = depth.saturating_sub(1),
                    _ => {}
                }
                t.pos += 1;
                continue;
            }
        }
        let a = t.index.byte(t.tokens[start].span.start);
        let b = t.index.byte(t.tokens[t.pos - 1].span.end);
        cut.push((a, b));
    }
    let mut sql = text.to_string();
    for (a, b) in cut.into_iter().rev() {
        let blank = " ".repeat(sql[a..b].chars().count());
        sql.replace_range(a..b, &blank);
    }
    if out.late_data_to.is_some() && out.window.is_none() {
        return Err(EddyError::InvalidValue(
            "LATE DATA TO needs a WINDOW clause (lateness is measured against a window's grace period)".into(),
        ));
    }
    out.text = sql;
    Ok(out)
}

/// After `PARTITION BY`: the expressions up to `EMIT`, `LIMIT` or the end, split at commas
/// outside parentheses.
fn partition_by(t: &mut Tokens) -> Result<Vec<String>, EddyError> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut first = t.pos;
    let mut piece = |t: &Tokens, from: usize, to: usize| -> Result<(), EddyError> {
        if from >= to {
            return Err(t.error("syntax error: PARTITION BY takes one or more expressions"));
        }
        let a = t.index.byte(t.tokens[from].span.start);
        let b = t.index.byte(t.tokens[to - 1].span.end);
        out.push(t.text[a..b].trim().to_string());
        Ok(())
    };
    while !t.at_end() {
        let ends = depth == 0 && matches!(t.peek_word(0).as_deref(), Some("EMIT" | "LIMIT"));
        if ends || (depth == 0 && t.tokens[t.pos].token == Token::SemiColon) {
            break;
        }
        match t.tokens[t.pos].token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Comma if depth == 0 => {
                piece(t, first, t.pos)?;
                first = t.pos + 1;
            }
            _ => {}
        }
        t.pos += 1;
    }
    piece(t, first, t.pos)?;
    Ok(out)
}

/// After `WINDOW kind`: `(SIZE n unit [, ADVANCE BY n unit] [, RETENTION n unit] [, GRACE PERIOD n unit])`,
/// or `(n unit, ...)` for sessions.
fn window_spec(t: &mut Tokens, kind: &str) -> Result<WindowSpec, EddyError> {
    t.expect(&Token::LParen)?;
    let mut size = None;
    let mut advance = None;
    let mut grace = None;
    let mut retention = None;
    if kind == "SESSION" {
        size = Some(duration(t)?);
    }
    loop {
        if t.eat(&Token::RParen) {
            break;
        }
        if size.is_some() || advance.is_some() {
            t.eat(&Token::Comma);
        }
        if t.eat_word("SIZE") {
            size = Some(duration(t)?);
        } else if t.eat_word("ADVANCE") {
            t.expect_word("BY")?;
            advance = Some(duration(t)?);
        } else if t.eat_word("RETENTION") {
            retention = Some(duration(t)?);
        } else if t.eat_word("GRACE") {
            t.expect_word("PERIOD")?;
            grace = Some(duration(t)?);
        } else {
            return Err(
                t.error("syntax error: expected SIZE, ADVANCE BY, RETENTION or GRACE PERIOD in the WINDOW clause")
            );
        }
    }
    let size_ms = size.ok_or_else(|| t.error(format!("a {kind} window needs a SIZE")))?;
    if size_ms <= 0 || advance.is_some_and(|a| a <= 0) {
        return Err(t.error("a window's SIZE and ADVANCE BY must be positive"));
    }
    let kind = match kind {
        "TUMBLING" => WindowKind::Tumbling,
        "HOPPING" => {
            let advance_ms = advance.ok_or_else(|| t.error("a HOPPING window needs ADVANCE BY"))?;
            if advance_ms > size_ms {
                return Err(t.error("a HOPPING window's ADVANCE BY must not exceed its SIZE"));
            }
            WindowKind::Hopping { advance_ms }
        }
        _ => WindowKind::Session,
    };
    if advance.is_some() && !matches!(kind, WindowKind::Hopping { .. }) {
        return Err(t.error("ADVANCE BY belongs to HOPPING windows"));
    }
    Ok(WindowSpec { kind, size_ms, grace_ms: grace.unwrap_or(DEFAULT_GRACE_MS), retention_ms: retention })
}

/// A whole text that is one duration (`'1 HOUR'` in WINDOW_SIZE), in milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let mut t = Tokens::new(text, 0).ok()?;
    let ms = duration(&mut t).ok()?;
    t.at_end().then_some(ms)
}

/// `n unit`, in milliseconds: MILLISECONDS to DAYS, singular or plural (window sizes,
/// WITHIN, ASSERT's TIMEOUT).
pub(super) fn duration(t: &mut Tokens) -> Result<i64, EddyError> {
    let n: i64 = match t.peek() {
        Some(Token::Number(n, _)) => n.parse().map_err(|_| t.error(format!("expected a whole number, not {n}")))?,
        _ => return Err(t.error("syntax error: expected a duration such as 5 MINUTES")),
    };
    t.pos += 1;
    let unit = match t.tokens.get(t.pos).map(|x| x.token.clone()) {
        Some(Token::Word(w)) => normalize(&w).to_ascii_uppercase(),
        _ => String::new(),
    };
    let ms = match unit.trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => return Err(t.error("syntax error: expected a time unit (MILLISECONDS, SECONDS, MINUTES, HOURS, DAYS)")),
    };
    t.pos += 1;
    n.checked_mul(ms).ok_or_else(|| t.error("duration too large"))
}
