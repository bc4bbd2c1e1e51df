//! ksqlDB's `MAP_UNION(map1, map2)`: one map with the entries of both; where both hold a
//! key, `map2`'s value wins (in `map1`'s place). A NULL map counts as empty; both NULL give
//! NULL.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, MapArray, StructArray};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

#[derive(Debug, PartialEq, Eq, Hash)]
struct MapUnion {
    signature: Signature,
}

pub fn map_union() -> ScalarUDF {
    ScalarUDF::new_from_impl(MapUnion { signature: Signature::user_defined(Volatility::Immutable) })
}

impl ScalarUDFImpl for MapUnion {
    fn name(&self) -> &str {
        "map_union"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [a @ DataType::Map(..), b @ DataType::Map(..)] if a.equals_datatype(b) => Ok(vec![a.clone(), a.clone()]),
            [a @ DataType::Map(..), DataType::Null] | [DataType::Null, a @ DataType::Map(..)] => {
                Ok(vec![a.clone(), a.clone()])
            }
            _ => plan_err!("MAP_UNION(MAP, MAP) takes two maps of one type, not {args:?}"),
        }
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(n)).collect::<Result<Vec<ArrayRef>>>()?;
        let (a, b) = (arrays[0].as_map(), arrays[1].as_map());
        let DataType::Map(entries_field, sorted) = args.return_field.data_type().clone() else {
            return plan_err!("MAP_UNION: expected a map result");
        };
        // Per row, which entry (map, index) each output entry takes.
        let mut picks: Vec<(usize, usize)> = Vec::new();
        let mut offsets = vec![0i32];
        let mut valid = Vec::with_capacity(n);
        for row in 0..n {
            let mut row_picks: Vec<((usize, usize), String)> = Vec::new();
            for (m, map) in [a, b].into_iter().enumerate() {
                if map.is_null(row) {
                    continue;
                }
                let keys = map.keys();
                let start = map.value_offsets()[row] as usize;
                let end = map.value_offsets()[row + 1] as usize;
                for i in start..end {
                    let key = array_value_to_string(keys, i)?;
                    match row_picks.iter_mut().find(|(_, k)| *k == key) {
                        Some(slot) => slot.0 = (m, i),
                        None => row_picks.push(((m, i), key)),
                    }
                }
            }
            valid.push(a.is_valid(row) || b.is_valid(row));
            picks.extend(row_picks.into_iter().map(|(p, _)| p));
            offsets.push(picks.len() as i32);
        }
        let keys = interleave(&[a.keys().as_ref(), b.keys().as_ref()], &picks)?;
        let values = interleave(&[a.values().as_ref(), b.values().as_ref()], &picks)?;
        let DataType::Struct(fields) = entries_field.data_type() else {
            return plan_err!("MAP_UNION: unexpected map entries");
        };
        let entries = StructArray::try_new(fields.clone(), vec![keys, values], None)?;
        let map = MapArray::try_new(
            entries_field.clone(),
            OffsetBuffer::new(offsets.into()),
            entries,
            Some(NullBuffer::from(valid)),
            sorted,
        )?;
        Ok(ColumnarValue::Array(Arc::new(map)))
    }
}
