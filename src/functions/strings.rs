//! ksqlDB's string functions that DataFusion has no function of the same meaning for:
//! `SPLIT`, `REGEXP_EXTRACT`, `REGEXP_EXTRACT_ALL`, `REGEXP_SPLIT_TO_ARRAY`, the `MASK`
//! family and the `URL_*` functions (a string that is no URL gives NULL). Semantics follow ksqlDB's function reference: NULL in, NULL out; regular
//! expressions in Rust's `regex` syntax (ksqlDB's are Java's; the common subset is the same).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Int64Array, ListBuilder, MapBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::common::{exec_datafusion_err, plan_err, DFSchema, Result};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;
use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Split,
    RegexpExtract,
    RegexpExtractAll,
    RegexpSplitToArray,
    Mask,
    MaskKeepLeft,
    MaskKeepRight,
    MaskLeft,
    MaskRight,
    UrlExtractFragment,
    UrlExtractHost,
    UrlExtractParameter,
    UrlExtractPath,
    UrlExtractPort,
    UrlExtractProtocol,
    UrlExtractQuery,
    UrlEncodeParam,
    UrlDecodeParam,
    SplitToMap,
    Encode,
}

const ALL: [Kind; 20] = [
    Kind::Split,
    Kind::RegexpExtract,
    Kind::RegexpExtractAll,
    Kind::RegexpSplitToArray,
    Kind::Mask,
    Kind::MaskKeepLeft,
    Kind::MaskKeepRight,
    Kind::MaskLeft,
    Kind::MaskRight,
    Kind::UrlExtractFragment,
    Kind::UrlExtractHost,
    Kind::UrlExtractParameter,
    Kind::UrlExtractPath,
    Kind::UrlExtractPort,
    Kind::UrlExtractProtocol,
    Kind::UrlExtractQuery,
    Kind::UrlEncodeParam,
    Kind::UrlDecodeParam,
    Kind::SplitToMap,
    Kind::Encode,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Split => "split",
            Kind::RegexpExtract => "regexp_extract",
            Kind::RegexpExtractAll => "regexp_extract_all",
            Kind::RegexpSplitToArray => "regexp_split_to_array",
            Kind::Mask => "mask",
            Kind::MaskKeepLeft => "mask_keep_left",
            Kind::MaskKeepRight => "mask_keep_right",
            Kind::MaskLeft => "mask_left",
            Kind::MaskRight => "mask_right",
            Kind::UrlExtractFragment => "url_extract_fragment",
            Kind::UrlExtractHost => "url_extract_host",
            Kind::UrlExtractParameter => "url_extract_parameter",
            Kind::UrlExtractPath => "url_extract_path",
            Kind::UrlExtractPort => "url_extract_port",
            Kind::UrlExtractProtocol => "url_extract_protocol",
            Kind::UrlExtractQuery => "url_extract_query",
            Kind::UrlEncodeParam => "url_encode_param",
            Kind::UrlDecodeParam => "url_decode_param",
            Kind::SplitToMap => "split_to_map",
            // ENCODE(s, from, to); `sql::pg_rewrite` renames the three-argument form, leaving
            // DataFusion's (and Postgres's) two-argument `encode(bytes, 'hex')` alone.
            Kind::Encode => "ksql_encode",
        }
    }

    /// Argument kinds: `S` a string, `I` an integer; the first `required` are required.
    fn arguments(self) -> (usize, &'static str) {
        match self {
            Kind::Split | Kind::RegexpSplitToArray => (2, "SS"),
            Kind::RegexpExtract | Kind::RegexpExtractAll => (2, "SSI"),
            Kind::Mask => (1, "SSSSS"),
            Kind::MaskKeepLeft | Kind::MaskKeepRight | Kind::MaskLeft | Kind::MaskRight => (2, "SISSSS"),
            Kind::UrlExtractParameter => (2, "SS"),
            Kind::SplitToMap | Kind::Encode => (3, "SSS"),
            _ => (1, "S"),
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Kind::Split => "(STRING, STRING delimiter)",
            Kind::SplitToMap => "(STRING, STRING entryDelimiter, STRING kvDelimiter)",
            Kind::Encode => "(STRING, STRING inputEncoding, STRING outputEncoding), encodings hex, utf8, ascii, base64",
            Kind::RegexpExtract | Kind::RegexpExtractAll => "(STRING regex, STRING [, INT group])",
            Kind::RegexpSplitToArray => "(STRING, STRING regex)",
            Kind::Mask => "(STRING [, upper, lower, digit, other])",
            Kind::MaskKeepLeft | Kind::MaskKeepRight | Kind::MaskLeft | Kind::MaskRight => {
                "(STRING, INT n [, upper, lower, digit, other])"
            }
            Kind::UrlExtractParameter => "(STRING url, STRING name)",
            _ => "(STRING)",
        }
    }
}

/// Every function of this module as a DataFusion UDF.
pub fn udfs() -> Vec<ScalarUDF> {
    ALL.iter()
        .map(|&kind| {
            ScalarUDF::new_from_impl(KsqlString { kind, signature: Signature::user_defined(Volatility::Immutable) })
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct KsqlString {
    kind: Kind,
    signature: Signature,
}

fn list_of_strings() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

impl ScalarUDFImpl for KsqlString {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let (required, kinds) = self.kind.arguments();
        let fits = |t: &DataType, k: u8| match k {
            b'S' => matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null),
            _ => t.is_integer() || t.is_null(),
        };
        if args.len() < required || args.len() > kinds.len() || !args.iter().zip(kinds.bytes()).all(|(t, k)| fits(t, k))
        {
            return plan_err!(
                "{}{} cannot be called with {args:?}",
                self.kind.name().to_uppercase(),
                self.kind.usage()
            );
        }
        Ok(kinds.bytes().take(args.len()).map(|k| if k == b'S' { DataType::Utf8 } else { DataType::Int64 }).collect())
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Split | Kind::RegexpExtractAll | Kind::RegexpSplitToArray => list_of_strings(),
            Kind::UrlExtractPort => DataType::Int32,
            Kind::SplitToMap => string_map_type(),
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(n)).collect::<Result<Vec<ArrayRef>>>()?;
        let strings: Vec<Option<&StringArray>> = arrays.iter().map(|a| a.as_string_opt::<i32>()).collect();
        let ints: Vec<Option<&Int64Array>> = arrays.iter().map(|a| a.as_primitive_opt::<Int64Type>()).collect();
        let text = |arg: usize, row: usize| strings[arg].filter(|a| a.is_valid(row)).map(|a| a.value(row));
        let int = |arg: usize, row: usize| ints[arg].filter(|a| a.is_valid(row)).map(|a| a.value(row));
        let mut regex = Last::default();
        let name = self.kind.name().to_uppercase();
        let out: ArrayRef = match self.kind {
            Kind::Split | Kind::RegexpSplitToArray | Kind::RegexpExtractAll => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for row in 0..n {
                    let pieces: Option<Vec<String>> = match self.kind {
                        Kind::Split => text(0, row).zip(text(1, row)).map(|(s, d)| split(s, d)),
                        Kind::RegexpSplitToArray => match text(0, row).zip(text(1, row)) {
                            Some((s, "")) => Some(split(s, "")),
                            Some((s, r)) => Some(regex.get(r, &name)?.split(s).map(str::to_string).collect()),
                            None => None,
                        },
                        _ => match text(0, row).zip(text(1, row)) {
                            Some((r, s)) => {
                                let group = group_of(&ints, 2, row, int)?;
                                group
                                    .map(|g| {
                                        regex.get(r, &name).map(|re| {
                                            re.captures_iter(s)
                                                .filter_map(|c| Some(c.get(g)?.as_str().to_string()))
                                                .collect()
                                        })
                                    })
                                    .transpose()?
                            }
                            None => None,
                        },
                    };
                    match pieces {
                        Some(pieces) => {
                            pieces.iter().for_each(|p| b.values().append_value(p));
                            b.append(true);
                        }
                        None => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
            Kind::RegexpExtract => {
                let mut b = StringBuilder::new();
                for row in 0..n {
                    let found = match (text(0, row), text(1, row), group_of(&ints, 2, row, int)?) {
                        (Some(r), Some(s), Some(g)) => {
                            regex.get(r, &name)?.captures(s).and_then(|c| Some(c.get(g)?.as_str().to_string()))
                        }
                        _ => None,
                    };
                    b.append_option(found);
                }
                Arc::new(b.finish())
            }
            Kind::SplitToMap => {
                let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                for row in 0..n {
                    match (text(0, row), text(1, row), text(2, row)) {
                        (Some(s), Some(entry), Some(kv)) if !entry.is_empty() && !kv.is_empty() => {
                            for (k, v) in split_to_map(s, entry, kv) {
                                b.keys().append_value(k);
                                b.values().append_value(v);
                            }
                            b.append(true)?;
                        }
                        _ => b.append(false)?,
                    }
                }
                Arc::new(b.finish())
            }
            Kind::Encode => {
                let mut b = StringBuilder::new();
                for row in 0..n {
                    match (text(0, row), text(1, row), text(2, row)) {
                        (Some(s), Some(from), Some(to)) => b.append_value(encode(s, from, to)?),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            Kind::UrlExtractPort => {
                let mut b = datafusion::arrow::array::Int32Builder::with_capacity(n);
                for row in 0..n {
                    b.append_option(text(0, row).and_then(|u| url::Url::parse(u).ok()?.port()).map(i32::from));
                }
                Arc::new(b.finish())
            }
            Kind::UrlExtractFragment
            | Kind::UrlExtractHost
            | Kind::UrlExtractParameter
            | Kind::UrlExtractPath
            | Kind::UrlExtractProtocol
            | Kind::UrlExtractQuery
            | Kind::UrlEncodeParam
            | Kind::UrlDecodeParam => {
                let mut b = StringBuilder::new();
                for row in 0..n {
                    let Some(s) = text(0, row) else {
                        b.append_null();
                        continue;
                    };
                    let out = match self.kind {
                        Kind::UrlEncodeParam => Some(url::form_urlencoded::byte_serialize(s.as_bytes()).collect()),
                        Kind::UrlDecodeParam => Some(
                            url::form_urlencoded::parse(format!("x={}", s.replace('&', "%26")).as_bytes())
                                .next()
                                .map(|(_, v)| v.into_owned())
                                .unwrap_or_default(),
                        ),
                        kind => url::Url::parse(s).ok().and_then(|u| match kind {
                            Kind::UrlExtractFragment => u.fragment().map(str::to_string),
                            Kind::UrlExtractHost => u.host_str().map(str::to_string),
                            Kind::UrlExtractPath => Some(u.path().to_string()),
                            Kind::UrlExtractProtocol => Some(u.scheme().to_string()),
                            Kind::UrlExtractQuery => u.query().map(str::to_string),
                            _ => {
                                let name = text(1, row)?;
                                u.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
                            }
                        }),
                    };
                    b.append_option(out);
                }
                Arc::new(b.finish())
            }
            Kind::Mask | Kind::MaskKeepLeft | Kind::MaskKeepRight | Kind::MaskLeft | Kind::MaskRight => {
                let first_char = if self.kind == Kind::Mask { 1 } else { 2 };
                let mut b = StringBuilder::new();
                for row in 0..n {
                    let Some(s) = text(0, row) else {
                        b.append_null();
                        continue;
                    };
                    // A replacement given as NULL keeps that class of characters as it is.
                    let with = |k: usize, default: char| -> Option<char> {
                        match strings.get(first_char + k) {
                            None => Some(default),
                            Some(_) => text(first_char + k, row).and_then(|r| r.chars().next()),
                        }
                    };
                    let masks = [with(0, 'X'), with(1, 'x'), with(2, 'n'), with(3, '-')];
                    let len = s.chars().count();
                    let count = match self.kind {
                        Kind::Mask => 0,
                        _ => match int(1, row) {
                            Some(c) if c >= 0 => (c as usize).min(len),
                            Some(c) => {
                                return Err(exec_datafusion_err!("{name}: the number of characters is {c}, below 0"))
                            }
                            None => {
                                b.append_null();
                                continue;
                            }
                        },
                    };
                    let masked = |i: usize| match self.kind {
                        Kind::Mask => true,
                        Kind::MaskKeepLeft => i >= count,
                        Kind::MaskKeepRight => i < len - count,
                        Kind::MaskLeft => i < count,
                        _ => i >= len - count,
                    };
                    b.append_value(
                        s.chars()
                            .enumerate()
                            .map(|(i, c)| if masked(i) { mask_char(c, &masks) } else { c })
                            .collect::<String>(),
                    );
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// ksqlDB's SPLIT: the pieces between delimiters; an empty delimiter splits into characters.
fn split(s: &str, delimiter: &str) -> Vec<String> {
    if delimiter.is_empty() {
        return s.chars().map(String::from).collect();
    }
    s.split(delimiter).map(str::to_string).collect()
}

/// The capturing group a REGEXP_EXTRACT call asks for (0, the whole match, when not given);
/// `None` when it is given as NULL.
fn group_of(
    ints: &[Option<&Int64Array>],
    arg: usize,
    row: usize,
    int: impl Fn(usize, usize) -> Option<i64>,
) -> Result<Option<usize>> {
    if ints.len() <= arg {
        return Ok(Some(0));
    }
    match int(arg, row) {
        Some(g) => usize::try_from(g).map(Some).map_err(|_| exec_datafusion_err!("capturing group {g} is below 0")),
        None => Ok(None),
    }
}

fn mask_char(c: char, masks: &[Option<char>; 4]) -> char {
    let class = if c.is_uppercase() {
        0
    } else if c.is_lowercase() {
        1
    } else if c.is_ascii_digit() {
        2
    } else {
        3
    };
    masks[class].unwrap_or(c)
}

/// The last regular expression compiled (the pattern is nearly always a literal).
#[derive(Default)]
struct Last {
    compiled: Option<(String, Regex)>,
}

impl Last {
    fn get(&mut self, source: &str, function: &str) -> Result<&Regex> {
        if self.compiled.as_ref().is_none_or(|(s, _)| s != source) {
            // A bounded size: a pattern cannot make the query use unbounded memory.
            let re = regex::RegexBuilder::new(source)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| exec_datafusion_err!("{function}: invalid regular expression '{source}': {e}"))?;
            return Ok(&self.compiled.insert((source.to_string(), re)).1);
        }
        self.compiled.as_ref().map(|(_, re)| re).ok_or_else(|| exec_datafusion_err!("{function}: no expression"))
    }
}

/// `MAP<STRING, STRING>` as Arrow's MapBuilder lays it out.
fn string_map_type() -> DataType {
    let entries = datafusion::arrow::datatypes::Fields::from(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("values", DataType::Utf8, true),
    ]);
    DataType::Map(Arc::new(Field::new("entries", DataType::Struct(entries), false)), false)
}

/// SPLIT_TO_MAP's entries: `k=v` pieces between entry delimiters; a piece without the
/// key–value delimiter is left out; a repeated key keeps its last value, in its first place.
fn split_to_map<'a>(s: &'a str, entry: &str, kv: &str) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for piece in s.split(entry) {
        let Some((k, v)) = piece.split_once(kv) else { continue };
        match out.iter_mut().find(|(seen, _)| *seen == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    out
}

/// ENCODE(s, from, to): `s` read as bytes in `from` and written in `to` (hex, utf8, ascii,
/// base64, any case). Text that does not read as `from` is an error.
fn encode(s: &str, from: &str, to: &str) -> Result<String> {
    text_of(&bytes_of(s, from, "ENCODE")?, to, "ENCODE")
}

/// The bytes `s` writes in `encoding` (hex, utf8, ascii, base64, any case).
fn bytes_of(s: &str, encoding: &str, function: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let bad = |what: &str| exec_datafusion_err!("{function}: '{s}' is not {what}");
    Ok(match encoding.to_ascii_lowercase().as_str() {
        "hex" => {
            let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
            if !digits.len().is_multiple_of(2) {
                return Err(bad("hex"));
            }
            (0..digits.len())
                .step_by(2)
                .map(|i| digits.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| bad("hex"))?
        }
        "utf8" => s.as_bytes().to_vec(),
        "ascii" if s.is_ascii() => s.as_bytes().to_vec(),
        "ascii" => return Err(bad("ascii")),
        "base64" => b64.decode(s).map_err(|_| bad("base64"))?,
        other => return plan_err!("{function}: unknown encoding '{other}' (hex, utf8, ascii, base64)"),
    })
}

/// `bytes` written in `encoding` (hex, utf8, ascii, base64, any case).
fn text_of(bytes: &[u8], encoding: &str, function: &str) -> Result<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(match encoding.to_ascii_lowercase().as_str() {
        "hex" => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        "utf8" => String::from_utf8_lossy(bytes).into_owned(),
        "ascii" => bytes.iter().map(|&b| if b.is_ascii() { b as char } else { char::REPLACEMENT_CHARACTER }).collect(),
        "base64" => b64.encode(bytes),
        other => return plan_err!("{function}: unknown encoding '{other}' (hex, utf8, ascii, base64)"),
    })
}

/// ksqlDB's `TO_BYTES(string, encoding)` and `FROM_BYTES(bytes, encoding)` (hex, utf8, ascii,
/// base64), on ENCODE's conversions.
#[derive(Debug, PartialEq, Eq, Hash)]
struct BytesCodec {
    to_bytes: bool,
    signature: Signature,
}

/// TO_BYTES and FROM_BYTES as DataFusion UDFs.
pub fn byte_codecs() -> Vec<ScalarUDF> {
    [true, false]
        .into_iter()
        .map(|to_bytes| {
            ScalarUDF::new_from_impl(BytesCodec { to_bytes, signature: Signature::user_defined(Volatility::Immutable) })
        })
        .collect()
}

impl ScalarUDFImpl for BytesCodec {
    fn name(&self) -> &str {
        if self.to_bytes {
            "to_bytes"
        } else {
            "from_bytes"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let text =
            |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null);
        let bytes = |t: &DataType| {
            matches!(t, DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null)
        };
        let first_ok = if self.to_bytes { text(&args[0]) } else { bytes(&args[0]) };
        if args.len() != 2 || !first_ok || !text(&args[1]) {
            return plan_err!(
                "{}({}, STRING encoding) cannot be called with {args:?}",
                self.name().to_uppercase(),
                if self.to_bytes { "STRING" } else { "BYTES" }
            );
        }
        Ok(vec![if self.to_bytes { DataType::Utf8 } else { DataType::Binary }, DataType::Utf8])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(if self.to_bytes { DataType::Binary } else { DataType::Utf8 })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(n)).collect::<Result<Vec<ArrayRef>>>()?;
        let encodings = arrays[1].as_string::<i32>();
        let name = self.name().to_uppercase();
        let out: ArrayRef = if self.to_bytes {
            let input = arrays[0].as_string::<i32>();
            let mut b = BinaryBuilder::with_capacity(n, 0);
            for row in 0..n {
                match (input.is_valid(row), encodings.is_valid(row)) {
                    (true, true) => b.append_value(bytes_of(input.value(row), encodings.value(row), &name)?),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        } else {
            let input = arrays[0].as_binary::<i32>();
            let mut b = StringBuilder::with_capacity(n, 0);
            for row in 0..n {
                match (input.is_valid(row), encodings.is_valid(row)) {
                    (true, true) => b.append_value(text_of(input.value(row), encodings.value(row), &name)?),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// ksqlDB's `+` on two strings: concatenation (NULL in, NULL out, as `||`). DataFusion has no
/// string `+`; this planner sees the operands' types while SQL is turned into a plan.
#[derive(Debug)]
pub struct StringPlus;

impl ExprPlanner for StringPlus {
    fn plan_binary_op(&self, expr: RawBinaryExpr, schema: &DFSchema) -> Result<PlannerResult<RawBinaryExpr>> {
        let text =
            |e: &Expr| matches!(e.get_type(schema), Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View));
        if expr.op == BinaryOperator::Plus && text(&expr.left) && text(&expr.right) {
            let concat = BinaryExpr::new(Box::new(expr.left), Operator::StringConcat, Box::new(expr.right));
            return Ok(PlannerResult::Planned(Expr::BinaryExpr(concat)));
        }
        Ok(PlannerResult::Original(expr))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_sql::{error, row};

    #[tokio::test]
    async fn split_and_regular_expressions() {
        let r = row("SELECT split('a,b,,c', ','), split('abc', ''), split('abc', 'x'), split(NULL, ','), \
                     regexp_split_to_array('a.b-c', '[.-]'), regexp_split_to_array('ab', ''), \
                     regexp_extract('[0-9]+', 'ab 12 cd 345'), regexp_extract('(\\w+)@(\\w+)', 'x ann@home', 2), \
                     regexp_extract('z', 'abc'), regexp_extract_all('[0-9]+', 'ab 12 cd 345'), \
                     regexp_extract_all('(\\w)(\\d)', 'a1 b2 c', 2), regexp_extract_all('z', 'abc')")
        .await;
        assert_eq!(
            r,
            [
                "[a, b, , c]",
                "[a, b, c]",
                "[abc]",
                "NULL",
                "[a, b, c]",
                "[a, b]",
                "12",
                "home",
                "NULL",
                "[12, 345]",
                "[1, 2]",
                "[]"
            ]
        );
    }

    #[tokio::test]
    async fn split_to_map_and_encode() {
        let r = row("SELECT split_to_map('a=1;b=2;c;a=3', ';', '='), split_to_map(NULL, ';', '='), \
                     split_to_map('a=1', '', '='), ksql_encode('4869', 'hex', 'utf8'), \
                     ksql_encode('Hi', 'utf8', 'base64'), ksql_encode('SGk=', 'base64', 'hex'), \
                     ksql_encode('Hi', 'ascii', 'hex'), ksql_encode(NULL, 'hex', 'utf8')")
        .await;
        assert_eq!(r, ["{a: 3, b: 2}", "NULL", "NULL", "Hi", "SGk=", "4869", "4869", "NULL"]);
        let e = error("SELECT ksql_encode('zz', 'hex', 'utf8')").await;
        assert!(e.contains("'zz' is not hex"), "{e}");
        let e = error("SELECT ksql_encode('a', 'rot13', 'utf8')").await;
        assert!(e.contains("unknown encoding 'rot13'"), "{e}");
    }

    #[tokio::test]
    async fn masks() {
        let r = row("SELECT mask('Ab-12 é'), mask('Ab-12', '*', NULL, '#', NULL), mask_keep_left('Ab-12', 2), \
                     mask_keep_right('Ab-12', 2), mask_left('Ab-12', 2), mask_right('Ab-12', 2), \
                     mask_left('Ab', 10), mask(NULL), mask_left('Ab', NULL)")
        .await;
        assert_eq!(r, ["Xx-nn-x", "*b-##", "Ab-nn", "Xx-12", "Xx-12", "Ab-nn", "Xx", "NULL", "NULL"]);
    }

    #[tokio::test]
    async fn urls() {
        let r = row("SELECT url_extract_protocol('https://x.io:8080/a/b?q=1&name=ann%20b#top'), \
                     url_extract_host('https://x.io:8080/a/b?q=1#top'), url_extract_port('https://x.io:8080/a'), \
                     url_extract_port('https://x.io/a'), url_extract_path('https://x.io:8080/a/b?q=1'), \
                     url_extract_query('https://x.io/a?q=1&r=2'), url_extract_fragment('https://x.io/a#top'), \
                     url_extract_parameter('https://x.io/a?q=1&name=ann%20b', 'name'), \
                     url_extract_parameter('https://x.io/a?q=1', 'nope'), url_extract_host('not a url'), \
                     url_encode_param('a b&c=d/é'), url_decode_param('a+b%26c%3Dd')")
        .await;
        assert_eq!(
            r,
            [
                "https",
                "x.io",
                "8080",
                "NULL",
                "/a/b",
                "q=1&r=2",
                "top",
                "ann b",
                "NULL",
                "NULL",
                "a+b%26c%3Dd%2F%C3%A9",
                "a b&c=d"
            ]
        );
    }

    #[tokio::test]
    async fn errors_name_the_function() {
        let e = error("SELECT regexp_extract('(', 'abc')").await;
        assert!(e.contains("REGEXP_EXTRACT: invalid regular expression '('"), "{e}");
        let e = error("SELECT split(1, ',')").await;
        assert!(e.contains("SPLIT(STRING, STRING delimiter) cannot be called with"), "{e}");
        let e = error("SELECT mask_left('ab', -1)").await;
        assert!(e.contains("below 0"), "{e}");
    }
}
