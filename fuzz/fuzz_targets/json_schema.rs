//! Fuzzes what Eddy does with JSON Schemas clients send: the checker the REST Proxy runs on
//! `jsonschema` records (`format::json_schema_check`) and the registry's compatibility
//! differences (`registry::json_compat`). The input is a schema and a value (split at the
//! first NUL byte); any of them is an answer or an error, never a panic or a stack
//! overflow, and a schema never differs from itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/format/json_schema_check.rs"]
mod json_schema_check;

#[path = "../../src/registry/json_compat.rs"]
#[allow(dead_code)]
mod json_compat;

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&c| c == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let (Ok(schema), value) = (serde_json::from_slice::<serde_json::Value>(a), serde_json::from_slice::<serde_json::Value>(b))
    else {
        return;
    };
    let value = value.unwrap_or(serde_json::Value::Null);
    let _ = json_schema_check::validate(&schema, &value);
    assert!(json_compat::json_incompatible(&schema, &schema).is_empty(), "a schema differs from itself");
    let _ = json_compat::json_incompatible(&schema, &value);
    let _ = json_compat::json_incompatible(&value, &schema);
});
