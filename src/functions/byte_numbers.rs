//! ksqlDB's `INT_FROM_BYTES`, `BIGINT_FROM_BYTES` and `DOUBLE_FROM_BYTES(bytes [, byteOrder])`:
//! a number read from exactly 4 or 8 bytes, big-endian unless `'LITTLE_ENDIAN'` is given.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Builder, Int32Builder, Int64Builder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Number {
    Int,
    BigInt,
    Double,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FromBytes {
    number: Number,
    signature: Signature,
}

pub fn udfs() -> Vec<ScalarUDF> {
    [Number::Int, Number::BigInt, Number::Double]
        .into_iter()
        .map(|number| {
            ScalarUDF::new_from_impl(FromBytes { number, signature: Signature::user_defined(Volatility::Immutable) })
        })
        .collect()
}

impl FromBytes {
    fn width(&self) -> usize {
        if self.number == Number::Int {
            4
        } else {
            8
        }
    }
}

impl ScalarUDFImpl for FromBytes {
    fn name(&self) -> &str {
        match self.number {
            Number::Int => "int_from_bytes",
            Number::BigInt => "bigint_from_bytes",
            Number::Double => "double_from_bytes",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let bytes = matches!(
            args.first(),
            Some(DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null)
        );
        let order = args
            .get(1)
            .is_none_or(|t| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null));
        if !bytes || !order || args.len() > 2 {
            return plan_err!(
                "{}(BYTES [, STRING byteOrder]) cannot be called with {args:?}",
                self.name().to_uppercase()
            );
        }
        Ok([DataType::Binary, DataType::Utf8].into_iter().take(args.len()).collect())
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.number {
            Number::Int => DataType::Int32,
            Number::BigInt => DataType::Int64,
            Number::Double => DataType::Float64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(n)).collect::<Result<Vec<ArrayRef>>>()?;
        let input = arrays[0].as_binary::<i32>();
        let orders = arrays.get(1).map(|a| a.as_string::<i32>());
        let name = self.name().to_uppercase();
        // Each row's bytes in big-endian order (NULL for a NULL input).
        let mut rows: Vec<Option<[u8; 8]>> = Vec::with_capacity(n);
        for row in 0..n {
            if input.is_null(row) {
                rows.push(None);
                continue;
            }
            let bytes = input.value(row);
            if bytes.len() != self.width() {
                return exec_err!("{name}: expected {} bytes, got {}", self.width(), bytes.len());
            }
            let little = match orders.filter(|o| o.is_valid(row)).map(|o| o.value(row).to_ascii_uppercase()) {
                None => false,
                Some(o) if o == "BIG_ENDIAN" => false,
                Some(o) if o == "LITTLE_ENDIAN" => true,
                Some(o) => return exec_err!("{name}: byte order '{o}' (BIG_ENDIAN or LITTLE_ENDIAN)"),
            };
            let mut word = [0u8; 8];
            word[8 - bytes.len()..].copy_from_slice(bytes);
            if little {
                word[8 - bytes.len()..].reverse();
            }
            rows.push(Some(word));
        }
        let out: ArrayRef = match self.number {
            Number::Int => {
                let mut b = Int32Builder::with_capacity(n);
                rows.iter().for_each(|w| b.append_option(w.map(|w| i32::from_be_bytes([w[4], w[5], w[6], w[7]]))));
                Arc::new(b.finish())
            }
            Number::BigInt => {
                let mut b = Int64Builder::with_capacity(n);
                rows.iter().for_each(|w| b.append_option(w.map(i64::from_be_bytes)));
                Arc::new(b.finish())
            }
            Number::Double => {
                let mut b = Float64Builder::with_capacity(n);
                rows.iter().for_each(|w| b.append_option(w.map(f64::from_be_bytes)));
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}
