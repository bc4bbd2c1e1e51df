//! Fuzzes the PROTOBUF value decoder (`format::protobuf`, what every record of a PROTOBUF
//! stream goes through): the framing and message indexes, then the message bytes against a
//! schema with every kind Eddy maps (scalars, `optional` and wrapper fields, enums, nested
//! and repeated messages, maps, `google.protobuf.Timestamp`, `confluent.type.Decimal`, a
//! recursive message), into JSON and then cells. Any bytes give cells or an error, never a
//! panic or a stack overflow; cells that come out are written again with the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[path = "../../src/format/types.rs"]
#[allow(dead_code)]
mod types;

#[path = "../../src/format/avro.rs"]
#[allow(dead_code)]
mod avro;

#[path = "../../src/format/json.rs"]
#[allow(dead_code)]
mod json;

#[path = "../../src/format/protobuf.rs"]
#[allow(dead_code)]
mod protobuf;

/// `crate::registry` as the format modules see it: the target holds the schema itself.
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
        pub fn protobuf(&self, _id: u32) -> Result<std::sync::Arc<crate::protobuf::Compiled>, Missing> {
            Ok(crate::compiled())
        }
    }
    pub fn global() -> Option<std::sync::Arc<Registry>> {
        Some(std::sync::Arc::new(Registry))
    }
}

pub use types::{SqlType, StructField};

/// `format::Column`, as the format modules see it (`super::Column`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
    pub key: bool,
}

const SCHEMA: &str = r#"syntax = "proto3";
package f;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
import "confluent/type/decimal.proto";
message R {
  string s = 1;
  optional int32 i = 2;
  int64 b = 3;
  double d = 4;
  bool t = 5;
  google.protobuf.Timestamp ts = 6;
  confluent.type.Decimal dec = 7;
  bytes raw = 8;
  repeated int32 arr = 9;
  map<string, double> m = 10;
  E e = 11;
  S st = 12;
  google.protobuf.StringValue w = 13;
  repeated S sts = 14;
  map<string, confluent.type.Decimal> decs = 15;
  enum E { A = 0; B = 1; }
  message S { string a = 1; repeated string more = 2; }
  Tree tree = 16;
}
message Tree { string a = 1; repeated Tree kids = 2; }
"#;

fn compiled() -> std::sync::Arc<protobuf::Compiled> {
    static COMPILED: std::sync::OnceLock<std::sync::Arc<protobuf::Compiled>> = std::sync::OnceLock::new();
    COMPILED
        .get_or_init(|| std::sync::Arc::new(protobuf::compile(SCHEMA, &[]).expect("the target's schema compiles")))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let compiled = compiled();
    let desc = compiled.message(&[0]).expect("the schema has a first message");
    // A recursive message has no columns (it could nest as deep as its bytes allow), but its
    // records still decode safely: R holds one, which the columns below leave out.
    assert!(protobuf::columns_of(&desc).is_err(), "R holds a recursive message");
    let tree = compiled.message(&[1]).expect("the schema has a second message");
    assert!(protobuf::columns_of(&tree).is_err(), "Tree is recursive");
    let columns: Vec<Column> = desc
        .fields()
        .filter(|f| f.name() != "tree")
        .map(|f| {
            let ty = match f.name() {
                "s" | "w" | "e" => SqlType::String,
                "i" => SqlType::Int,
                "b" => SqlType::BigInt,
                "d" => SqlType::Double,
                "t" => SqlType::Boolean,
                "ts" => SqlType::Timestamp,
                "dec" => SqlType::Decimal { precision: 38, scale: 9 },
                "raw" => SqlType::Bytes,
                "arr" => SqlType::Array(Box::new(SqlType::Int)),
                "m" => SqlType::Map(Box::new(SqlType::Double)),
                "decs" => SqlType::Map(Box::new(SqlType::Decimal { precision: 38, scale: 9 })),
                _ => SqlType::Struct(vec![
                    StructField { name: "a".into(), ty: SqlType::String },
                    StructField { name: "more".into(), ty: SqlType::Array(Box::new(SqlType::String)) },
                ]),
            };
            let ty = if f.name() == "sts" { SqlType::Array(Box::new(ty)) } else { ty };
            Column { name: f.name().to_string(), ty, key: false }
        })
        .collect();
    // As a framed record (magic byte, id, indexes, message) and as a bare message.
    let _ = protobuf::decode_value(&columns, data);
    let Ok(json) = protobuf::message_to_row_json(&desc, data) else { return };
    let Ok(bytes) = serde_json::to_vec(&json) else { return };
    let Ok(raw) = json::decode_value(&columns, &bytes) else { return };
    let cells: Result<Vec<serde_json::Value>, _> =
        columns.iter().zip(raw).map(|(c, v)| types::normalize(&c.ty, v)).collect();
    if let Ok(cells) = cells {
        let _ = protobuf::encode_value(&columns, &cells, 1);
    }
});
