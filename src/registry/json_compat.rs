//! Compatibility of JSON Schema schemas, by Confluent's Schema Registry rules (Protobuf's
//! are in `protobuf_compat.rs`).
//!
//! As Confluent does, a check lists the differences from an original schema to an update
//! and refuses the update when any difference is not among the compatible kinds. BACKWARD
//! compares the previous version (original) with the new schema (update); FORWARD the other
//! way round. Each difference is named by Confluent's type (`TYPE_CHANGED`,
//! `FIELD_SCALAR_KIND_CHANGED`, ...) with the path where it is.
//!
//! Covered for JSON Schema: types (changed, narrowed, extended; `integer` widening to
//! `number`), object properties added or removed against open and closed content models
//! (`additionalProperties: false` closes one), `required`, `enum`, string and number bounds,
//! array items, and `oneOf`/`anyOf` branches by position. Not covered: `$ref` into
//! definitions, `patternProperties`.

use std::collections::BTreeSet;

use serde_json::Value;

/// Deepest nesting a JSON Schema comparison follows.
const MAX_DEPTH: usize = 64;

/// One difference between two schemas: Confluent's type, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub kind: &'static str,
    pub path: String,
}

impl Difference {
    /// Confluent's rendering of an incompatible difference.
    pub fn describe(&self) -> String {
        format!(
            "{{errorType:'{}', description:'The change at path '{}' between the new schema and the old schema is {}'}}",
            self.kind, self.path, self.kind
        )
    }
}

/// The JSON Schema differences from `original` to `update` that break readers of
/// `update` (as BACKWARD asks of a new schema against the previous one).
pub fn json_incompatible(original: &Value, update: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    json_diff(original, update, "#", 0, &mut out);
    out.retain(|d| !JSON_COMPATIBLE.contains(&d.kind));
    out
}

/// Confluent's compatible JSON Schema changes (`SchemaDiff.COMPATIBLE_CHANGES`), of those
/// this module finds.
const JSON_COMPATIBLE: &[&str] = &[
    "TYPE_EXTENDED",
    "SUM_TYPE_EXTENDED",
    "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL",
    "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL",
    "REQUIRED_ATTRIBUTE_REMOVED",
    "ENUM_ARRAY_EXTENDED",
    "MAX_LENGTH_INCREASED",
    "MIN_LENGTH_DECREASED",
    "MAXIMUM_INCREASED",
    "MINIMUM_DECREASED",
    "ADDITIONAL_PROPERTIES_ADDED",
];

pub(super) fn push(out: &mut Vec<Difference>, kind: &'static str, path: &str) {
    out.push(Difference { kind, path: path.to_string() });
}

/// The types a schema allows (`None`: any).
fn types_of(schema: &Value) -> Option<BTreeSet<String>> {
    match schema.get("type") {
        Some(Value::String(t)) => Some([t.clone()].into()),
        Some(Value::Array(ts)) => Some(ts.iter().filter_map(Value::as_str).map(str::to_string).collect()),
        _ if schema.get("properties").is_some() => Some(["object".to_string()].into()),
        _ => None,
    }
}

/// Whether every value of type `narrow` is one of `wide` (`integer` is a `number`).
fn covered(narrow: &BTreeSet<String>, wide: &BTreeSet<String>) -> bool {
    narrow.iter().all(|t| wide.contains(t) || (t == "integer" && wide.contains("number")))
}

/// Whether an object schema takes properties it does not name.
fn is_open(schema: &Value) -> bool {
    schema.get("additionalProperties") != Some(&Value::Bool(false))
}

fn required_of(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn json_diff(original: &Value, update: &Value, path: &str, depth: usize, out: &mut Vec<Difference>) {
    if depth > MAX_DEPTH || original == update {
        return;
    }
    // Boolean schemas: `true` takes anything, `false` nothing.
    match (original, update) {
        (_, Value::Bool(true)) => return,
        (Value::Bool(true), _) | (_, Value::Bool(false)) => return push(out, "TYPE_NARROWED", path),
        (Value::Bool(false), _) => return,
        _ => {}
    }
    for key in ["oneOf", "anyOf"] {
        let (a, b) = (original.get(key).and_then(Value::as_array), update.get(key).and_then(Value::as_array));
        match (a, b) {
            (Some(a), Some(b)) => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    json_diff(x, y, &format!("{path}/{key}/{i}"), depth + 1, out);
                }
                if b.len() > a.len() {
                    push(out, "SUM_TYPE_EXTENDED", path);
                } else if b.len() < a.len() {
                    push(out, "SUM_TYPE_NARROWED", path);
                }
                return;
            }
            // One side optional (`oneOf: [null, T]`), the other `T` alone.
            (Some(a), None) if a.iter().any(|x| !is_null_type(x)) => {
                push(out, "SUM_TYPE_NARROWED", path);
                if let Some(t) = a.iter().find(|x| !is_null_type(x)) {
                    json_diff(t, update, path, depth + 1, out);
                }
                return;
            }
            (None, Some(b)) if b.iter().any(|y| !is_null_type(y)) => {
                if let Some(t) = b.iter().find(|y| !is_null_type(y)) {
                    json_diff(original, t, path, depth + 1, out);
                }
                push(out, "SUM_TYPE_EXTENDED", path);
                return;
            }
            _ => {}
        }
    }
    match (types_of(original), types_of(update)) {
        (Some(a), Some(b)) if a != b => {
            if covered(&a, &b) {
                push(out, "TYPE_EXTENDED", path);
            } else if covered(&b, &a) {
                push(out, "TYPE_NARROWED", path);
            } else {
                push(out, "TYPE_CHANGED", path);
                return;
            }
        }
        (None, Some(_)) => push(out, "TYPE_NARROWED", path),
        (Some(_), None) => push(out, "TYPE_EXTENDED", path),
        _ => {}
    }
    // Enumerations.
    if let (Some(a), Some(b)) =
        (original.get("enum").and_then(Value::as_array), update.get("enum").and_then(Value::as_array))
    {
        if !a.iter().all(|v| b.contains(v)) {
            push(out, "ENUM_ARRAY_NARROWED", &format!("{path}/enum"));
        } else if b.len() > a.len() {
            push(out, "ENUM_ARRAY_EXTENDED", &format!("{path}/enum"));
        }
    } else if original.get("enum").is_none() && update.get("enum").is_some() {
        push(out, "ENUM_ARRAY_NARROWED", &format!("{path}/enum"));
    }
    // Bounds: a tighter one refuses values the original took.
    for (key, tighter, looser, lower_is_tighter) in [
        ("maxLength", "MAX_LENGTH_DECREASED", "MAX_LENGTH_INCREASED", true),
        ("minLength", "MIN_LENGTH_INCREASED", "MIN_LENGTH_DECREASED", false),
        ("maximum", "MAXIMUM_DECREASED", "MAXIMUM_INCREASED", true),
        ("minimum", "MINIMUM_INCREASED", "MINIMUM_DECREASED", false),
    ] {
        let (a, b) = (original.get(key).and_then(Value::as_f64), update.get(key).and_then(Value::as_f64));
        match (a, b) {
            (Some(a), Some(b)) if a != b => {
                let tighter_now = if lower_is_tighter { b < a } else { b > a };
                push(out, if tighter_now { tighter } else { looser }, &format!("{path}/{key}"));
            }
            (None, Some(_)) => push(out, tighter, &format!("{path}/{key}")),
            (Some(_), None) => push(out, looser, &format!("{path}/{key}")),
            _ => {}
        }
    }
    // Arrays.
    if let (Some(a), Some(b)) = (original.get("items"), update.get("items")) {
        json_diff(a, b, &format!("{path}/items"), depth + 1, out);
    }
    // Objects.
    let empty = serde_json::Map::new();
    let props = |s: &Value| s.get("properties").and_then(Value::as_object).cloned().unwrap_or_else(|| empty.clone());
    let (a, b) = (props(original), props(update));
    if a.is_empty() && b.is_empty() {
        return;
    }
    let (req_a, req_b) = (required_of(original), required_of(update));
    for (name, schema) in &a {
        let at = format!("{path}/properties/{name}");
        match b.get(name) {
            Some(other) => json_diff(schema, other, &at, depth + 1, out),
            None if is_open(update) => push(out, "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL", &at),
            None => push(out, "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", &at),
        }
    }
    for name in b.keys().filter(|n| !a.contains_key(*n)) {
        let at = format!("{path}/properties/{name}");
        let kind = match (is_open(original), req_b.contains(name)) {
            (true, true) => "REQUIRED_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
            (true, false) => "OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
            (false, true) => "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL",
            (false, false) => "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL",
        };
        push(out, kind, &at);
    }
    for name in req_b.difference(&req_a).filter(|n| a.contains_key(*n)) {
        push(out, "REQUIRED_ATTRIBUTE_ADDED", &format!("{path}/required/{name}"));
    }
    for name in req_a.difference(&req_b) {
        push(out, "REQUIRED_ATTRIBUTE_REMOVED", &format!("{path}/required/{name}"));
    }
    if !is_open(original) && is_open(update) {
        push(out, "ADDITIONAL_PROPERTIES_ADDED", path);
    } else if is_open(original) && !is_open(update) {
        push(out, "ADDITIONAL_PROPERTIES_REMOVED", path);
    }
}

fn is_null_type(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(d: &[Difference]) -> Vec<&'static str> {
        d.iter().map(|d| d.kind).collect()
    }

    #[test]
    fn json_schema_changes() {
        let v1 = json!({"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}});
        // Removing a property of an open model is compatible; changing a type is not.
        let removed = json!({"type": "object", "properties": {"id": {"type": "integer"}}});
        assert!(json_incompatible(&v1, &removed).is_empty());
        let changed = json!({"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}}});
        assert_eq!(kinds(&json_incompatible(&v1, &changed)), ["TYPE_CHANGED"]);
        assert_eq!(json_incompatible(&v1, &changed)[0].path, "#/properties/id");
        // Widening integer to number is compatible; narrowing back is not.
        let wider = json!({"type": "object", "properties": {"id": {"type": "number"}, "name": {"type": "string"}}});
        assert!(json_incompatible(&v1, &wider).is_empty());
        assert_eq!(kinds(&json_incompatible(&wider, &v1)), ["TYPE_NARROWED"]);
        // Adding a property to an open model is not compatible (Confluent's rule); to a
        // closed one, when optional, it is.
        let added = json!({"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "x": {"type": "string"}}});
        assert_eq!(kinds(&json_incompatible(&v1, &added)), ["OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL"]);
        let mut closed = v1.clone();
        closed["additionalProperties"] = json!(false);
        let mut closed_added = added.clone();
        closed_added["additionalProperties"] = json!(false);
        assert!(json_incompatible(&closed, &closed_added).is_empty());
        closed_added["required"] = json!(["x"]);
        assert_eq!(
            kinds(&json_incompatible(&closed, &closed_added)),
            ["REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"]
        );
        // A property newly required.
        let mut required = v1.clone();
        required["required"] = json!(["name"]);
        assert_eq!(kinds(&json_incompatible(&v1, &required)), ["REQUIRED_ATTRIBUTE_ADDED"]);
        assert!(json_incompatible(&required, &v1).is_empty());
        // Optional (oneOf null) to required-typed and back; a shorter maxLength.
        let opt = json!({"oneOf": [{"type": "null"}, {"type": "string"}]});
        assert!(json_incompatible(&json!({"type": "string"}), &opt).is_empty());
        assert_eq!(kinds(&json_incompatible(&opt, &json!({"type": "string"}))), ["SUM_TYPE_NARROWED"]);
        assert_eq!(
            kinds(&json_incompatible(
                &json!({"type": "string", "maxLength": 10}),
                &json!({"type": "string", "maxLength": 5})
            )),
            ["MAX_LENGTH_DECREASED"]
        );
    }
}
