//! ksqlDB's DELIMITED format: one line of fields in column order, separated by a delimiter
//! (`,` unless `VALUE_DELIMITER` says otherwise). A field holding the delimiter, a quote or
//! a line break is double-quoted, with `""` for a quote inside; an empty unquoted field is
//! NULL, `""` an empty string. Primitive types only: fields are read with the same rules as
//! JSON strings (`types::normalize`), so DATE may be days or 'YYYY-MM-DD', BYTES base64.

use serde_json::Value;

/// Splits one record into fields; `None` is an empty unquoted field (NULL).
pub fn parse_line(text: &str, delimiter: char) -> Result<Vec<Option<String>>, String> {
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(text);
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            chars.next();
            quoted = true;
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(format!("unterminated quoted field {}", fields.len() + 1)),
                }
            }
            match chars.peek() {
                None => {}
                Some(c) if *c == delimiter => {}
                Some(c) => return Err(format!("'{c}' after the closing quote of field {}", fields.len() + 1)),
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == delimiter {
                    break;
                }
                if c == '"' {
                    return Err(format!("a quote inside unquoted field {}", fields.len() + 1));
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(if quoted || !field.is_empty() { Some(field) } else { None });
        match chars.next() {
            Some(_) => continue, // the delimiter
            None => return Ok(fields),
        }
    }
}

/// Writes one record from canonical cells (NULL as an empty field).
pub fn write_line<'a>(cells: impl Iterator<Item = &'a Value>, delimiter: char) -> String {
    let mut out = String::new();
    for (i, v) in cells.enumerate() {
        if i > 0 {
            out.push(delimiter);
        }
        let text = match v {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if text.is_empty() || text.contains([delimiter, '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&text.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&text);
        }
    }
    out
}

/// `VALUE_DELIMITER`: one character, or TAB / SPACE as ksqlDB spells them.
pub fn parse_delimiter(s: &str) -> Result<char, String> {
    match s.to_ascii_uppercase().as_str() {
        "TAB" => return Ok('\t'),
        "SPACE" => return Ok(' '),
        _ => {}
    }
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c != '"' && !c.is_whitespace() => Ok(c),
        _ => Err(format!(
            "VALUE_DELIMITER='{s}': expected one character other than a quote or whitespace, or TAB or SPACE"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips() {
        let cells = [
            Value::from("plain"),
            Value::from("a,b"),
            Value::from("say \"hi\""),
            Value::Null,
            Value::from(""),
            Value::from(3),
            Value::from("line\nbreak"),
        ];
        let line = write_line(cells.iter(), ',');
        assert_eq!(line, "plain,\"a,b\",\"say \"\"hi\"\"\",,\"\",3,\"line\nbreak\"");
        let back = parse_line(&line, ',').unwrap();
        let expect: Vec<Option<String>> = vec![
            Some("plain".into()),
            Some("a,b".into()),
            Some("say \"hi\"".into()),
            None,
            Some(String::new()),
            Some("3".into()),
            Some("line\nbreak".into()),
        ];
        assert_eq!(back, expect);
        assert_eq!(parse_line("a|b\r\n", '|').unwrap(), vec![Some("a".into()), Some("b".into())]);
        assert_eq!(parse_line("", ',').unwrap(), vec![None]);
        assert_eq!(parse_line("1\t2", parse_delimiter("TAB").unwrap()).unwrap().len(), 2);
    }

    #[test]
    fn malformed_lines_are_errors_and_never_panic() {
        assert!(parse_line("\"open", ',').is_err());
        assert!(parse_line("\"a\"b,c", ',').is_err());
        assert!(parse_line("a\"b", ',').is_err());
        assert!(parse_delimiter("ab").is_err());
        assert!(parse_delimiter("\"").is_err());
        let alphabet = ['a', ',', '"', '\n', '\r', 'é', '|', ' '];
        let mut seed = 7u64;
        for _ in 0..5000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (seed >> 60) as usize;
            let s: String = (0..len).map(|i| alphabet[((seed >> (i * 3)) & 7) as usize]).collect();
            let _ = parse_line(&s, ',');
        }
    }
}
