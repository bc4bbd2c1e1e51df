//! ksqlDB's functions over JSON text: `IS_JSON_STRING`, `JSON_ARRAY_LENGTH`, `JSON_KEYS`,
//! `JSON_RECORDS`, `JSON_ARRAY_CONTAINS`, `JSON_CONCAT` and `TO_JSON_STRING`, as its function reference
//! describes them (text that is not JSON gives NULL or false, never an error).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Int32Builder, ListBuilder, MapBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    IsJsonString,
    JsonArrayLength,
    JsonKeys,
    JsonRecords,
    JsonArrayContains,
    JsonConcat,
    ToJsonString,
}

const ALL: [Kind; 7] = [
    Kind::IsJsonString,
    Kind::JsonArrayLength,
    Kind::JsonKeys,
    Kind::JsonRecords,
    Kind::JsonArrayContains,
    Kind::JsonConcat,
    Kind::ToJsonString,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::IsJsonString => "is_json_string",
            Kind::JsonArrayLength => "json_array_length",
            Kind::JsonKeys => "json_keys",
            Kind::JsonRecords => "json_records",
            Kind::JsonArrayContains => "json_array_contains",
            Kind::JsonConcat => "json_concat",
            Kind::ToJsonString => "to_json_string",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Kind::JsonArrayContains => "(STRING json_array, value)",
            Kind::JsonConcat => "(STRING json, STRING json, ...)",
            Kind::ToJsonString => "(any value)",
            _ => "(STRING json)",
        }
    }
}

/// Every function of this module as a DataFusion UDF.
pub fn udfs() -> Vec<ScalarUDF> {
    ALL.iter()
        .map(|&kind| {
            ScalarUDF::new_from_impl(JsonFunction { kind, signature: Signature::user_defined(Volatility::Immutable) })
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonFunction {
    kind: Kind,
    signature: Signature,
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null)
}

impl ScalarUDFImpl for JsonFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let fits = match self.kind {
            Kind::IsJsonString | Kind::JsonArrayLength | Kind::JsonKeys | Kind::JsonRecords => {
                args.len() == 1 && is_text(&args[0])
            }
            Kind::JsonArrayContains => args.len() == 2 && is_text(&args[0]),
            Kind::JsonConcat => args.len() >= 2 && args.iter().all(is_text),
            Kind::ToJsonString => args.len() == 1,
        };
        if !fits {
            return plan_err!(
                "{}{} cannot be called with {args:?}",
                self.kind.name().to_uppercase(),
                self.kind.usage()
            );
        }
        Ok(match self.kind {
            Kind::ToJsonString => args.to_vec(),
            Kind::JsonArrayContains => vec![DataType::Utf8, args[1].clone()],
            _ => vec![DataType::Utf8; args.len()],
        })
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::IsJsonString | Kind::JsonArrayContains => DataType::Boolean,
            Kind::JsonArrayLength => DataType::Int32,
            Kind::JsonKeys => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            // MAP<STRING, STRING> as Arrow's MapBuilder lays it out.
            Kind::JsonRecords => DataType::Map(
                Arc::new(Field::new(
                    "entries",
                    DataType::Struct(
                        vec![Field::new("keys", DataType::Utf8, false), Field::new("values", DataType::Utf8, true)]
                            .into(),
                    ),
                    false,
                )),
                false,
            ),
            Kind::JsonConcat | Kind::ToJsonString => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(n)).collect::<Result<Vec<ArrayRef>>>()?;
        let texts: Vec<Option<&StringArray>> = arrays.iter().map(|a| a.as_string_opt::<i32>()).collect();
        let parsed = |arg: usize, row: usize| -> Option<Value> {
            let a = texts[arg]?;
            if a.is_null(row) {
                return None;
            }
            serde_json::from_str(a.value(row)).ok()
        };
        let out: ArrayRef = match self.kind {
            Kind::IsJsonString => {
                let mut b = BooleanBuilder::with_capacity(n);
                (0..n).for_each(|row| b.append_value(parsed(0, row).is_some()));
                Arc::new(b.finish())
            }
            Kind::JsonArrayLength => {
                let mut b = Int32Builder::with_capacity(n);
                for row in 0..n {
                    b.append_option(match parsed(0, row) {
                        Some(Value::Array(items)) => i32::try_from(items.len()).ok(),
                        _ => None,
                    });
                }
                Arc::new(b.finish())
            }
            Kind::JsonKeys => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for row in 0..n {
                    match parsed(0, row) {
                        Some(Value::Object(fields)) => {
                            fields.keys().for_each(|k| b.values().append_value(k));
                            b.append(true);
                        }
                        _ => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
            // An object's fields, each value as its JSON text (`"abc"`, `{"c":1}`, `1`); text
            // that is no JSON object gives NULL.
            Kind::JsonRecords => {
                let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                for row in 0..n {
                    match parsed(0, row) {
                        Some(Value::Object(fields)) => {
                            for (k, v) in &fields {
                                b.keys().append_value(k);
                                b.values().append_value(v.to_string());
                            }
                            b.append(true)?;
                        }
                        _ => b.append(false)?,
                    }
                }
                Arc::new(b.finish())
            }
            Kind::JsonArrayContains => {
                let mut b = BooleanBuilder::with_capacity(n);
                for row in 0..n {
                    let wanted = crate::format::cell_at(arrays[1].as_ref(), row);
                    let found = match parsed(0, row) {
                        Some(Value::Array(items)) => items.iter().any(|item| same_json(item, &wanted)),
                        _ => false,
                    };
                    b.append_value(found);
                }
                Arc::new(b.finish())
            }
            Kind::JsonConcat => {
                let mut b = StringBuilder::new();
                for row in 0..n {
                    let values: Option<Vec<Value>> = (0..arrays.len()).map(|arg| parsed(arg, row)).collect();
                    b.append_option(values.map(|v| concat(v).to_string()));
                }
                Arc::new(b.finish())
            }
            Kind::ToJsonString => {
                let mut b = StringBuilder::new();
                for row in 0..n {
                    b.append_value(to_json(arrays[0].as_ref(), row));
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Equal as JSON values: numbers by value (`1` is `1.0`), everything else exactly.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// JSON_CONCAT's rules (Postgres's `||` on jsonb): objects merge, the later value of a key
/// winning; otherwise every value is an array (a non-array is one element) and they join.
fn concat(values: Vec<Value>) -> Value {
    if values.iter().all(Value::is_object) {
        let mut out = serde_json::Map::new();
        for v in values {
            if let Value::Object(fields) = v {
                out.extend(fields);
            }
        }
        return Value::Object(out);
    }
    let mut out = Vec::new();
    for v in values {
        match v {
            Value::Array(items) => out.extend(items),
            other => out.push(other),
        }
    }
    Value::Array(out)
}

/// A value as JSON text: DECIMAL as its exact number, strings quoted, NULL as `null`,
/// structs and maps as objects, arrays as arrays.
fn to_json(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "null".into();
    }
    if let DataType::Decimal128(..) = array.data_type() {
        if let Value::String(exact) = crate::format::cell_at(array, row) {
            return exact;
        }
    }
    crate::format::cell_at(array, row).to_string()
}

#[cfg(test)]
mod tests {
    use super::super::test_sql::row;

    #[tokio::test]
    async fn json_text_functions() {
        let r = row("SELECT is_json_string('[1, 2]'), is_json_string('abc'), is_json_string(NULL), \
                     json_array_length('[1, [2], {}]'), json_array_length('{}'), json_array_length('nope'), \
                     json_keys('{\"b\": 1, \"a\": {\"c\": 2}}'), json_keys('[1]'), \
                     json_array_contains('[1, \"x\", true]', 1), json_array_contains('[1.0]', 1), \
                     json_array_contains('[\"x\"]', 'x'), json_array_contains('[1]', 2), json_array_contains('{}', 1)")
        .await;
        assert_eq!(
            r,
            ["true", "false", "false", "3", "NULL", "NULL", "[b, a]", "NULL", "true", "true", "true", "false", "false"]
        );
        let r = row("SELECT json_concat('{\"a\": 1, \"b\": 2}', '{\"b\": 3}'), json_concat('[1]', '[2, 3]'), \
                     json_concat('[1]', '{\"a\": 1}', '2'), json_concat('[1]', NULL), json_concat('[1]', 'nope')")
        .await;
        assert_eq!(r, [r#"{"a":1,"b":3}"#, "[1,2,3]", r#"[1,{"a":1},2]"#, "NULL", "NULL"]);
        let r = row("SELECT to_json_string(1), to_json_string('a\"b'), to_json_string(CAST(NULL AS INT)), \
                     to_json_string(CAST(1.50 AS DECIMAL(5, 2))), to_json_string(make_array(1, 2)), \
                     to_json_string(named_struct('a', 1, 'b', 'x')), to_json_string(true)")
        .await;
        assert_eq!(r, ["1", r#""a\"b""#, "null", "1.50", "[1,2]", r#"{"a":1,"b":"x"}"#, "true"]);
        // JSON_RECORDS: each value as its JSON text, fields in order; no object, no map.
        let r = row("SELECT json_records('{\"a\": \"abc\", \"b\": {\"c\": [1, 2]}, \"d\": 1, \"e\": null}'), \
                     json_records('[1]'), json_records('nope'), json_records('{}')")
        .await;
        assert_eq!(r, [r#"{a: "abc", b: {"c":[1,2]}, d: 1, e: null}"#, "NULL", "NULL", "{}"]);
    }
}
