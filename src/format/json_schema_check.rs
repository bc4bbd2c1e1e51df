//! Checks a JSON value against a JSON Schema, as the REST Proxy does before it writes a
//! `jsonschema` record (kafka-rest refuses a value that does not fit with 42205).
//!
//! The keywords of draft 7 that records' schemas use: `type`, `enum`, `const`,
//! `properties`, `required`, `additionalProperties`, `items` (one schema or a list),
//! `minItems`/`maxItems`, `minLength`/`maxLength`, `minimum`/`maximum` and their exclusive
//! forms, `multipleOf`, `allOf`/`anyOf`/`oneOf`/`not`, and `$ref` to a place in the same
//! document (`#/definitions/T`, `#/$defs/T`). Others (`pattern`, `format`, a `$ref` to
//! another document) are not checked: a value is refused only for what is checked. Nesting
//! is bounded, as is a chain of `$ref`s, and so is the work: a budget that grows with the
//! value's size, past which the check fails (never passes) with its own error.

use serde_json::Value;

/// Deepest nesting of values and schemas followed (a `$ref` loop ends here too).
const MAX_DEPTH: usize = 64;
/// (schema, value) pairs one check may visit beyond eight per node of the value: `anyOf`s
/// nested in `anyOf`s would otherwise take time exponential in their depth.
const BASE_STEPS: usize = 100_000;

/// `Ok` when `value` fits `schema`; otherwise where and why it does not.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    let budget = BASE_STEPS.saturating_add(nodes(value, 0).saturating_mul(8));
    let mut steps = budget;
    let checked = check(&mut steps, schema, schema, value, "#", 0);
    if steps == 0 {
        return Err(format!("the schema takes more than {budget} steps to check this value"));
    }
    checked
}

/// How many JSON values `v` holds (itself included).
fn nodes(v: &Value, depth: usize) -> usize {
    match v {
        Value::Array(items) if depth < MAX_DEPTH => 1 + items.iter().map(|i| nodes(i, depth + 1)).sum::<usize>(),
        Value::Object(fields) if depth < MAX_DEPTH => 1 + fields.values().map(|i| nodes(i, depth + 1)).sum::<usize>(),
        _ => 1,
    }
}

/// `steps` counts down; at zero every check fails, and `validate` reports the budget (so
/// `not` and `oneOf` never turn an unfinished check into a pass).
fn check(steps: &mut usize, root: &Value, schema: &Value, value: &Value, at: &str, depth: usize) -> Result<(), String> {
    if *steps == 0 {
        return Err(format!("{at}: out of steps"));
    }
    *steps -= 1;
    if depth > MAX_DEPTH {
        return Err(format!("{at}: nested deeper than {MAX_DEPTH}"));
    }
    let schema = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(format!("{at}: no value is allowed here")),
        Value::Object(s) => s,
        _ => return Ok(()),
    };
    // A `$ref` to another document is not followed (not checked).
    if let Some(target) = schema.get("$ref").and_then(Value::as_str).and_then(|r| resolve(root, r)) {
        check(steps, root, target, value, at, depth + 1)?;
    }
    if let Some(t) = schema.get("type") {
        let allowed: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !allowed.is_empty() && !allowed.iter().any(|t| is_type(value, t)) {
            return Err(format!("{at}: expected {}, got {}", allowed.join(" or "), type_name(value)));
        }
    }
    if let Some(Value::Array(options)) = schema.get("enum") {
        if !options.iter().any(|o| same(o, value)) {
            return Err(format!("{at}: {value} is not one of {}", Value::Array(options.clone())));
        }
    }
    if let Some(c) = schema.get("const") {
        if !same(c, value) {
            return Err(format!("{at}: expected {c}, got {value}"));
        }
    }
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            if let Some(Value::Array(required)) = schema.get("required") {
                if let Some(missing) = required.iter().filter_map(Value::as_str).find(|r| !fields.contains_key(*r)) {
                    return Err(format!("{at}: required property {missing} is missing"));
                }
            }
            for (name, v) in fields {
                let here = format!("{at}/{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(s) => check(steps, root, s, v, &here, depth + 1)?,
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => return Err(format!("{at}: property {name} is not allowed")),
                        Some(s @ Value::Object(_)) => check(steps, root, s, v, &here, depth + 1)?,
                        _ => {}
                    },
                }
            }
        }
        Value::Array(items) => {
            bound(schema, "minItems", "maxItems", items.len() as f64, at, "items")?;
            match schema.get("items") {
                Some(Value::Array(each)) => {
                    for (i, (s, v)) in each.iter().zip(items).enumerate() {
                        check(steps, root, s, v, &format!("{at}/{i}"), depth + 1)?;
                    }
                }
                Some(s) => {
                    for (i, v) in items.iter().enumerate() {
                        check(steps, root, s, v, &format!("{at}/{i}"), depth + 1)?;
                    }
                }
                None => {}
            }
        }
        Value::String(text) => bound(schema, "minLength", "maxLength", text.chars().count() as f64, at, "characters")?,
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let num = |k: &str| schema.get(k).and_then(Value::as_f64);
            let fails = [
                (num("minimum").is_some_and(|m| x < m), "minimum"),
                (num("maximum").is_some_and(|m| x > m), "maximum"),
                (num("exclusiveMinimum").is_some_and(|m| x <= m), "exclusiveMinimum"),
                (num("exclusiveMaximum").is_some_and(|m| x >= m), "exclusiveMaximum"),
                (num("multipleOf").is_some_and(|m| m > 0.0 && !is_multiple(x, m)), "multipleOf"),
            ];
            if let Some((_, k)) = fails.iter().find(|(failed, _)| *failed) {
                return Err(format!("{at}: {x} does not meet {k} {}", schema.get(*k).unwrap_or(&Value::Null)));
            }
        }
        _ => {}
    }
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for s in all {
            check(steps, root, s, value, at, depth + 1)?;
        }
    }
    let out_of_steps = |steps: &usize| if *steps == 0 { Err(format!("{at}: out of steps")) } else { Ok(()) };
    if let Some(Value::Array(any)) = schema.get("anyOf") {
        let matched = any.iter().any(|s| check(steps, root, s, value, at, depth + 1).is_ok());
        out_of_steps(steps)?;
        if !matched {
            return Err(format!("{at}: {value} matches none of anyOf"));
        }
    }
    if let Some(Value::Array(one)) = schema.get("oneOf") {
        let matching = one.iter().filter(|s| check(steps, root, s, value, at, depth + 1).is_ok()).count();
        out_of_steps(steps)?;
        if matching != 1 {
            return Err(format!("{at}: {value} matches {matching} of oneOf's schemas, not exactly one"));
        }
    }
    if let Some(not) = schema.get("not") {
        let matched = check(steps, root, not, value, at, depth + 1).is_ok();
        out_of_steps(steps)?;
        if matched {
            return Err(format!("{at}: {value} matches what \"not\" excludes"));
        }
    }
    Ok(())
}

fn bound(
    schema: &serde_json::Map<String, Value>,
    min: &str,
    max: &str,
    n: f64,
    at: &str,
    what: &str,
) -> Result<(), String> {
    if let Some(m) = schema.get(min).and_then(Value::as_f64).filter(|m| n < *m) {
        return Err(format!("{at}: {n} {what}, fewer than {min} {m}"));
    }
    if let Some(m) = schema.get(max).and_then(Value::as_f64).filter(|m| n > *m) {
        return Err(format!("{at}: {n} {what}, more than {max} {m}"));
    }
    Ok(())
}

/// Whether `x` is a whole multiple of `m`, allowing for binary fractions (`0.3` is a
/// multiple of `0.1`).
fn is_multiple(x: f64, m: f64) -> bool {
    let q = x / m;
    (q - q.round()).abs() <= 1e-9 * q.abs().max(1.0)
}

/// A `$ref` within the document: `#` or a JSON pointer after it.
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        return Some(root);
    }
    root.pointer(pointer)
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// JSON equality with numbers by value (`1` is `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_fit_or_say_why() {
        let schema = json!({
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "name": {"type": "string", "maxLength": 5},
                "tags": {"type": "array", "items": {"type": "string"}},
                "kind": {"enum": ["a", "b"]},
                "owner": {"$ref": "#/definitions/Owner"},
                "note": {"oneOf": [{"type": "null"}, {"type": "string"}]}
            },
            "required": ["id"],
            "additionalProperties": false,
            "definitions": {"Owner": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}}
        });
        let ok = json!({"id": 3, "name": "ada", "tags": ["x"], "kind": "a", "owner": {"email": "e"}, "note": null});
        assert_eq!(validate(&schema, &ok), Ok(()));
        for (bad, why) in [
            (json!({"name": "ada"}), "required property id"),
            (json!({"id": "3"}), "#/id: expected integer"),
            (json!({"id": 0}), "minimum"),
            (json!({"id": 1, "name": "adaline"}), "maxLength"),
            (json!({"id": 1, "tags": ["x", 2]}), "#/tags/1"),
            (json!({"id": 1, "kind": "c"}), "not one of"),
            (json!({"id": 1, "owner": {}}), "required property email"),
            (json!({"id": 1, "extra": 1}), "property extra is not allowed"),
            (json!({"id": 1.5}), "expected integer"),
        ] {
            let e = validate(&schema, &bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // A $ref that loops ends at the depth bound, with an error.
        let looping = json!({"$ref": "#"});
        assert!(validate(&looping, &json!(1)).is_err());
        // A $ref to another document is not checked; multipleOf allows binary fractions.
        assert_eq!(validate(&json!({"$ref": "other.json#/x"}), &json!(1)), Ok(()));
        assert_eq!(validate(&json!({"multipleOf": 0.1}), &json!(0.3)), Ok(()));
        assert!(validate(&json!({"multipleOf": 0.1}), &json!(0.35)).is_err());
        // A long valid array is within the budget (it grows with the value).
        let items: Vec<Value> = (0..300_000).map(|i| json!(i)).collect();
        assert_eq!(validate(&json!({"type": "array", "items": {"type": "integer"}}), &Value::Array(items)), Ok(()));
        // anyOfs nested 18 deep, two branches each (2^18 paths), none matching: bounded work, an error.
        let mut nested = json!({"type": "string"});
        for _ in 0..18 {
            nested = json!({"anyOf": [nested.clone(), nested]});
        }
        assert!(validate(&nested, &json!(1)).unwrap_err().contains("steps"));
        // Out of steps is never a pass, even under "not".
        assert!(validate(&json!({"not": nested}), &json!(1)).unwrap_err().contains("steps"));
    }
}
