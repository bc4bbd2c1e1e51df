//! Fuzzes the AVRO value decoder (`format::avro`, what every record of an AVRO stream goes
//! through after its framing): any body decodes to cells or an error, never a panic, with a
//! writer schema of every type Eddy maps; cells that pass the column checks are encoded again
//! with the same schema without a panic. Input that is JSON also goes through
//! `format::avro_json` (the REST Proxy's `avro` embedded format) with the same schema.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[path = "../../src/format/types.rs"]
#[allow(dead_code)]
mod types;

#[path = "../../src/format/avro.rs"]
#[allow(dead_code)]
mod avro;

#[path = "../../src/format/avro_json.rs"]
#[allow(dead_code)]
mod avro_json;

/// `crate::registry` as `avro.rs` sees it: the fuzz target hands the schema over itself.
#[allow(dead_code)]
mod registry {
    pub struct Registry;
    pub struct Missing {
        pub message: String,
    }
    impl Registry {
        pub fn avro(&self, id: u32) -> Result<std::sync::Arc<apache_avro::Schema>, Missing> {
            Err(Missing { message: format!("no schema {id}") })
        }
    }
    pub fn global() -> Option<std::sync::Arc<Registry>> {
        None
    }
}

pub use types::{SqlType, StructField};

/// `format::Column`, as `avro.rs` sees it (`super::Column`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
    pub key: bool,
}

const SCHEMA: &str = r#"{"type": "record", "name": "R", "fields": [
  {"name": "s", "type": "string"},
  {"name": "i", "type": ["null", "int"]},
  {"name": "b", "type": "long"},
  {"name": "d", "type": "double"},
  {"name": "t", "type": "boolean"},
  {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "day", "type": {"type": "int", "logicalType": "date"}},
  {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
  {"name": "raw", "type": "bytes"},
  {"name": "arr", "type": {"type": "array", "items": "int"}},
  {"name": "m", "type": {"type": "map", "values": ["null", "double"]}},
  {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
  {"name": "st", "type": {"type": "record", "name": "S", "fields": [{"name": "a", "type": "string"}]}}
]}"#;

fuzz_target!(|data: &[u8]| {
    let schema = apache_avro::Schema::parse_str(SCHEMA).expect("the target's schema parses");
    let columns: Vec<Column> = avro::columns_of(&schema).expect("every field maps to a column");
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(framed) = avro_json::json_to_framed(&schema, 1, &json) {
            // What it writes decodes again.
            avro::decode_with(&schema, 1, &columns, &framed[5..]).expect("json_to_framed wrote a valid datum");
        }
    }
    let Ok(raw) = avro::decode_with(&schema, 1, &columns, data) else { return };
    let cells: Result<Vec<serde_json::Value>, _> =
        columns.iter().zip(raw).map(|(c, v)| types::normalize(&c.ty, v)).collect();
    if let Ok(cells) = cells {
        let _ = avro::encode_with(&schema, 1, &columns, &cells);
    }
});
