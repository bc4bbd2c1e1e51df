//! Fuzzes the JSON value decoder and the type checks behind it (`format::json` and
//! `format::types::normalize`, what every record of a JSON stream goes through): any bytes
//! decode to cells or an error, never a panic; cells that pass the checks are written back
//! as JSON and read again to the same cells.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[path = "../../src/format/types.rs"]
#[allow(dead_code)]
mod types;

#[path = "../../src/format/json.rs"]
#[allow(dead_code)]
mod json;

use types::{SqlType, StructField};

/// `format::Column`, as `json.rs` sees it (`super::Column`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
    pub key: bool,
}

fn columns() -> Vec<Column> {
    let col = |name: &str, ty: SqlType| Column { name: name.into(), ty, key: false };
    vec![
        col("s", SqlType::String),
        col("i", SqlType::Int),
        col("b", SqlType::BigInt),
        col("d", SqlType::Double),
        col("t", SqlType::Boolean),
        col("ts", SqlType::Timestamp),
        col("day", SqlType::Date),
        col("at", SqlType::Time),
        col("dec", SqlType::Decimal { precision: 10, scale: 2 }),
        col("raw", SqlType::Bytes),
        col("arr", SqlType::Array(Box::new(SqlType::Int))),
        col("m", SqlType::Map(Box::new(SqlType::Double))),
        col(
            "st",
            SqlType::Struct(vec![
                StructField { name: "a".into(), ty: SqlType::String },
                StructField { name: "n".into(), ty: SqlType::Array(Box::new(SqlType::BigInt)) },
            ]),
        ),
    ]
}

fuzz_target!(|data: &[u8]| {
    let cols = columns();
    let Ok(raw) = json::decode_value(&cols, data) else { return };
    let cells: Vec<serde_json::Value> = match cols.iter().zip(raw).map(|(c, v)| types::normalize(&c.ty, v)).collect() {
        Ok(cells) => cells,
        Err(_) => return,
    };
    let written = json::encode_value(&cols, &cells);
    let again = json::decode_value(&cols, &written).expect("Eddy's own JSON decodes");
    let again: Vec<serde_json::Value> = cols
        .iter()
        .zip(again)
        .map(|(c, v)| types::normalize(&c.ty, v).expect("Eddy's own JSON passes the checks"))
        .collect();
    assert_eq!(again, cells, "round trip through {}", String::from_utf8_lossy(&written));
});
