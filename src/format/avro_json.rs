//! JSON into Avro, guided by a schema: what the REST Proxy's `avro` embedded format sends.
//! Values may use Avro's JSON encoding (a union branch as `{"type": value}`, bytes as a
//! string of code points 0–255) or be plain (a union takes the first branch the value
//! fits); a record field left out takes its default. Decimals take numbers or strings.

use std::collections::HashMap;

use apache_avro::types::Value as Avro;
use apache_avro::{Decimal, Schema as AvroSchema};
use serde_json::Value;

use super::avro::frame;
use super::types::parse_decimal;

/// `value` written with `schema` (registered as `id`), framed as Confluent's wire format.
pub fn json_to_framed(schema: &AvroSchema, id: u32, value: &Value) -> Result<Vec<u8>, String> {
    let mut names = HashMap::new();
    collect_names(schema, &mut names);
    let datum = convert(schema, &names, value)?;
    let datum = datum.resolve(schema).map_err(|e| format!("does not match schema {id}: {e}"))?;
    frame(id, schema, datum)
}

/// Every named type of a schema, by full and short name (for `Ref`s).
fn collect_names<'a>(schema: &'a AvroSchema, names: &mut HashMap<String, &'a AvroSchema>) {
    let mut add = |name: &apache_avro::schema::Name| {
        names.insert(name.fullname(None), schema);
        names.insert(name.name().to_string(), schema);
    };
    match schema {
        AvroSchema::Record(r) => {
            add(&r.name);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        AvroSchema::Enum(e) => add(&e.name),
        AvroSchema::Fixed(f) => add(&f.name),
        AvroSchema::Array(a) => collect_names(&a.items, names),
        AvroSchema::Map(m) => collect_names(&m.types, names),
        AvroSchema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        _ => {}
    }
}

/// The name a union branch goes by in Avro's JSON encoding.
fn branch_name(schema: &AvroSchema) -> String {
    match schema {
        AvroSchema::Null => "null".into(),
        AvroSchema::Boolean => "boolean".into(),
        AvroSchema::Int | AvroSchema::Date | AvroSchema::TimeMillis => "int".into(),
        AvroSchema::Long
        | AvroSchema::TimeMicros
        | AvroSchema::TimestampMillis
        | AvroSchema::TimestampMicros
        | AvroSchema::TimestampNanos
        | AvroSchema::LocalTimestampMillis
        | AvroSchema::LocalTimestampMicros
        | AvroSchema::LocalTimestampNanos => "long".into(),
        AvroSchema::Float => "float".into(),
        AvroSchema::Double => "double".into(),
        AvroSchema::Bytes | AvroSchema::Decimal(_) | AvroSchema::BigDecimal => "bytes".into(),
        AvroSchema::String | AvroSchema::Uuid(_) => "string".into(),
        AvroSchema::Array(_) => "array".into(),
        AvroSchema::Map(_) => "map".into(),
        AvroSchema::Record(r) => r.name.fullname(None),
        AvroSchema::Enum(e) => e.name.fullname(None),
        AvroSchema::Fixed(f) | AvroSchema::Duration(f) => f.name.fullname(None),
        AvroSchema::Ref { name } => name.fullname(None),
        AvroSchema::Union(_) => "union".into(),
    }
}

/// Avro's JSON encoding of bytes: each character one byte.
fn json_bytes(v: &Value) -> Option<Vec<u8>> {
    v.as_str()?.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// Deepest nesting a value may have (each level recurses here and in the Avro writer).
const MAX_DEPTH: usize = 64;

fn convert(schema: &AvroSchema, names: &HashMap<String, &AvroSchema>, v: &Value) -> Result<Avro, String> {
    convert_at(schema, names, v, 0)
}

fn convert_at(
    schema: &AvroSchema,
    names: &HashMap<String, &AvroSchema>,
    v: &Value,
    depth: usize,
) -> Result<Avro, String> {
    if depth > MAX_DEPTH {
        return Err(format!("the value nests deeper than {MAX_DEPTH} levels"));
    }
    let convert =
        |schema: &AvroSchema, names: &HashMap<String, &AvroSchema>, v: &Value| convert_at(schema, names, v, depth + 1);
    let bad = || format!("{} is not a {}", short(v), branch_name(schema));
    let int = || v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(bad);
    Ok(match schema {
        AvroSchema::Ref { name } => {
            let target = names
                .get(&name.fullname(None))
                .or_else(|| names.get(name.name()))
                .ok_or_else(|| format!("unknown type {}", name.fullname(None)))?;
            return convert(target, names, v);
        }
        AvroSchema::Null if v.is_null() => Avro::Null,
        AvroSchema::Null => return Err(bad()),
        AvroSchema::Boolean => Avro::Boolean(v.as_bool().ok_or_else(bad)?),
        AvroSchema::Int | AvroSchema::Date | AvroSchema::TimeMillis => Avro::Int(int()?),
        AvroSchema::Long
        | AvroSchema::TimeMicros
        | AvroSchema::TimestampMillis
        | AvroSchema::TimestampMicros
        | AvroSchema::TimestampNanos
        | AvroSchema::LocalTimestampMillis
        | AvroSchema::LocalTimestampMicros
        | AvroSchema::LocalTimestampNanos => Avro::Long(v.as_i64().ok_or_else(bad)?),
        AvroSchema::Float => Avro::Float(v.as_f64().ok_or_else(bad)? as f32),
        AvroSchema::Double => Avro::Double(v.as_f64().ok_or_else(bad)?),
        AvroSchema::Bytes => Avro::Bytes(json_bytes(v).ok_or_else(bad)?),
        AvroSchema::Fixed(f) | AvroSchema::Duration(f) => {
            let bytes = json_bytes(v).filter(|b| b.len() == f.size).ok_or_else(bad)?;
            Avro::Fixed(f.size, bytes)
        }
        AvroSchema::String | AvroSchema::Uuid(_) => Avro::String(v.as_str().ok_or_else(bad)?.to_string()),
        AvroSchema::Decimal(d) => {
            let text = match v {
                Value::Number(n) => Some(n.to_string()),
                Value::String(s) => Some(s.clone()),
                _ => None,
            };
            let (precision, scale) = (u8::try_from(d.precision).unwrap_or(u8::MAX), u8::try_from(d.scale).unwrap_or(0));
            match text.as_deref().and_then(|t| parse_decimal(t, precision, scale)) {
                Some(unscaled) => Avro::Decimal(Decimal::from(super::avro::padded_be(unscaled, precision))),
                // Avro's JSON encoding: the two's-complement bytes as a string.
                None => Avro::Decimal(Decimal::from(json_bytes(v).ok_or_else(bad)?)),
            }
        }
        AvroSchema::BigDecimal => return Err("bigdecimal values are not supported in JSON records".into()),
        AvroSchema::Array(a) => Avro::Array(
            v.as_array().ok_or_else(bad)?.iter().map(|i| convert(&a.items, names, i)).collect::<Result<_, _>>()?,
        ),
        AvroSchema::Map(m) => Avro::Map(
            v.as_object()
                .ok_or_else(bad)?
                .iter()
                .map(|(k, i)| Ok((k.clone(), convert(&m.types, names, i)?)))
                .collect::<Result<_, String>>()?,
        ),
        AvroSchema::Enum(e) => {
            let s = v.as_str().ok_or_else(bad)?;
            let i = e
                .symbols
                .iter()
                .position(|x| x == s)
                .ok_or_else(|| format!("{s} is not a symbol of {}", e.name.name()))?;
            Avro::Enum(i as u32, s.to_string())
        }
        AvroSchema::Record(r) => {
            let obj = v.as_object().ok_or_else(bad)?;
            let mut fields = Vec::with_capacity(r.fields.len());
            for f in &r.fields {
                let value = match (obj.get(&f.name), &f.default) {
                    (Some(x), _) => convert(&f.schema, names, x),
                    // A union's default is of its first branch.
                    (None, Some(d)) => match &f.schema {
                        AvroSchema::Union(u) => match u.variants().first() {
                            Some(first) => convert(first, names, d).map(|x| Avro::Union(0, Box::new(x))),
                            None => Err(bad()),
                        },
                        s => convert(s, names, d),
                    },
                    (None, None) => Err(format!("field {} is missing and has no default", f.name)),
                }
                .map_err(|e| format!("field {}: {e}", f.name))?;
                fields.push((f.name.clone(), value));
            }
            Avro::Record(fields)
        }
        AvroSchema::Union(u) => {
            let variants = u.variants();
            if v.is_null() {
                let i = variants.iter().position(|s| *s == AvroSchema::Null).ok_or_else(bad)?;
                return Ok(Avro::Union(i as u32, Box::new(Avro::Null)));
            }
            if let Value::Object(o) = v {
                if let (1, Some((k, inner))) = (o.len(), o.iter().next()) {
                    if let Some(i) = variants.iter().position(|s| branch_name(s) == *k) {
                        return Ok(Avro::Union(i as u32, Box::new(convert(&variants[i], names, inner)?)));
                    }
                }
            }
            // A bare value takes the first branch of its JSON kind (for an object, the first
            // record whose fields it names, else a map), chosen without converting: trying
            // every branch deep down would take exponential time on nested unions.
            let i = variants
                .iter()
                .position(|b| fits_shallowly(resolve(b, names), v))
                .ok_or_else(|| format!("{} fits no branch of the union", short(v)))?;
            Avro::Union(i as u32, Box::new(convert(&variants[i], names, v)?))
        }
    })
}

/// A named reference's schema (others as they are).
fn resolve<'a>(schema: &'a AvroSchema, names: &HashMap<String, &'a AvroSchema>) -> &'a AvroSchema {
    match schema {
        AvroSchema::Ref { name } => {
            names.get(&name.fullname(None)).or_else(|| names.get(name.name())).copied().unwrap_or(schema)
        }
        s => s,
    }
}

/// Whether a JSON value is of the kind a schema takes, looking no deeper than an object's keys.
fn fits_shallowly(schema: &AvroSchema, v: &Value) -> bool {
    match (schema, v) {
        (AvroSchema::Null, Value::Null) => true,
        (AvroSchema::Boolean, Value::Bool(_)) => true,
        (AvroSchema::Int | AvroSchema::Date | AvroSchema::TimeMillis, Value::Number(n)) => {
            n.as_i64().is_some_and(|i| i32::try_from(i).is_ok())
        }
        (
            AvroSchema::Long
            | AvroSchema::TimeMicros
            | AvroSchema::TimestampMillis
            | AvroSchema::TimestampMicros
            | AvroSchema::TimestampNanos
            | AvroSchema::LocalTimestampMillis
            | AvroSchema::LocalTimestampMicros
            | AvroSchema::LocalTimestampNanos,
            Value::Number(n),
        ) => n.as_i64().is_some(),
        (AvroSchema::Float | AvroSchema::Double | AvroSchema::Decimal(_), Value::Number(_)) => true,
        (AvroSchema::String | AvroSchema::Uuid(_), Value::String(_)) => true,
        (AvroSchema::Bytes | AvroSchema::Fixed(_) | AvroSchema::Decimal(_), Value::String(_)) => true,
        (AvroSchema::Enum(e), Value::String(s)) => e.symbols.contains(s),
        (AvroSchema::Array(_), Value::Array(_)) => true,
        (AvroSchema::Map(_), Value::Object(_)) => true,
        (AvroSchema::Record(r), Value::Object(o)) => {
            o.keys().all(|k| r.fields.iter().any(|f| f.name == *k))
                && r.fields.iter().all(|f| f.default.is_some() || o.contains_key(&f.name))
        }
        _ => false,
    }
}

/// A value for an error message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(s: &str) -> AvroSchema {
        AvroSchema::parse_str(s).unwrap()
    }

    fn round_trip(s: &AvroSchema, v: Value) -> Value {
        let framed = json_to_framed(s, 7, &v).unwrap();
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 7]);
        let mut body = &framed[5..];
        let datum =
            apache_avro::reader::datum::GenericDatumReader::builder(s).build().unwrap().read_value(&mut body).unwrap();
        Value::try_from(datum).unwrap()
    }

    #[test]
    fn records_unions_enums_defaults_and_refs() {
        let s = schema(
            r#"{"type":"record","name":"Order","namespace":"shop","fields":[
                {"name":"id","type":"long"},
                {"name":"note","type":["null","string"],"default":null},
                {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}},
                {"name":"home","type":{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}},
                {"name":"work","type":["null","Address"],"default":null},
                {"name":"n","type":"int","default":3}]}"#,
        );
        let out = round_trip(
            &s,
            serde_json::json!({"id": 1, "note": {"string": "gift"}, "status": "PAID", "home": {"city": "Delft"},
                               "work": {"city": "Gouda"}}),
        );
        assert_eq!(
            out,
            serde_json::json!({"id": 1, "note": "gift", "status": "PAID", "home": {"city": "Delft"},
                               "work": {"city": "Gouda"}, "n": 3})
        );
        let out = round_trip(&s, serde_json::json!({"id": 2, "note": "plain", "status": "NEW", "home": {"city": "x"}}));
        assert_eq!(out["note"], "plain");
        assert_eq!(out["work"], Value::Null);
        let e = json_to_framed(&s, 7, &serde_json::json!({"id": 1, "status": "LOST", "home": {"city": "x"}}));
        assert!(e.unwrap_err().contains("LOST is not a symbol"));
        let e = json_to_framed(&s, 7, &serde_json::json!({"status": "NEW", "home": {"city": "x"}}));
        assert!(e.unwrap_err().contains("field id is missing"));
    }

    #[test]
    fn nested_unions_are_chosen_without_backtracking() {
        let s = schema(
            r#"{"type":"record","name":"A","fields":[{"name":"x","type":["null","A",
                {"type":"record","name":"B","fields":[{"name":"x","type":["null","A","B"]}]}]}]}"#,
        );
        let mut v = serde_json::json!({"x": 5});
        for _ in 0..60 {
            v = serde_json::json!({ "x": v });
        }
        let began = std::time::Instant::now();
        assert!(json_to_framed(&s, 1, &v).is_err());
        assert!(began.elapsed() < std::time::Duration::from_secs(5), "took {:?}", began.elapsed());
        let ok = serde_json::json!({"x": {"x": {"x": null}}});
        assert!(json_to_framed(&s, 1, &ok).is_ok());
        for _ in 0..100 {
            v = serde_json::json!({ "x": v });
        }
        assert!(json_to_framed(&s, 1, &v).unwrap_err().contains("deeper than"));
    }

    #[test]
    fn recursive_schemas_are_recognized() {
        let recursive = schema(r#"{"type":"record","name":"N","fields":[{"name":"next","type":["null","N"]}]}"#);
        assert!(crate::format::avro::is_recursive(&recursive));
        let flat = schema(
            r#"{"type":"record","name":"A","fields":[{"name":"b","type":{"type":"record","name":"B","fields":[]}},
                {"name":"c","type":"B"}]}"#,
        );
        assert!(!crate::format::avro::is_recursive(&flat));
    }

    #[test]
    fn decimals_from_numbers_and_strings() {
        let s = schema(r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}"#);
        for v in [serde_json::json!(10.25), serde_json::json!("10.25")] {
            let framed = json_to_framed(&s, 1, &v).unwrap();
            let mut body = &framed[5..];
            let datum = apache_avro::reader::datum::GenericDatumReader::builder(&s)
                .build()
                .unwrap()
                .read_value(&mut body)
                .unwrap();
            let Avro::Decimal(d) = datum else { panic!("{datum:?}") };
            let bytes: Vec<u8> = d.try_into().unwrap();
            assert_eq!(
                i128::from_be_bytes({
                    let mut b = [0u8; 16];
                    b[16 - bytes.len()..].copy_from_slice(&bytes);
                    b
                }),
                1025
            );
        }
    }
}
