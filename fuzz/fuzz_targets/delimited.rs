//! Fuzzes the DELIMITED value decoder: any line parses to fields or an error, never a
//! panic; and writing parsed fields back and parsing again gives the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[path = "../../src/format/delimited.rs"]
#[allow(dead_code)]
mod delimited;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let delimiter = [',', '|', '\t', ' ', ';'][first as usize % 5];
    let text = String::from_utf8_lossy(rest);
    let Ok(fields) = delimited::parse_line(&text, delimiter) else { return };
    let cells: Vec<Value> = fields.iter().map(|f| f.clone().map(Value::String).unwrap_or(Value::Null)).collect();
    let line = delimited::write_line(cells.iter(), delimiter);
    let again = delimited::parse_line(&line, delimiter).expect("a written line parses");
    assert_eq!(again, fields, "round trip of {text:?} through {line:?}");
});
