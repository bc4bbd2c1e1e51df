//! ksqlDB's map functions DataFusion lacks: `MAP_UNION(map1, map2)`, one map with the entries
//! of both (where both hold a key, `map2`'s value wins, in `map1`'s place; a NULL map counts
//! as empty, both NULL give NULL); `ENTRIES(map, sorted)`, an array of `STRUCT<K, V>`, one per
//! entry, by key when `sorted` (NULL for a NULL map).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray, MapArray, StructArray, UInt32Array};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::{interleave, take};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
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

#[derive(Debug, PartialEq, Eq, Hash)]
struct Entries {
    signature: Signature,
}

pub fn entries() -> ScalarUDF {
    ScalarUDF::new_from_impl(Entries { signature: Signature::user_defined(Volatility::Immutable) })
}

/// `ENTRIES`' element: ksqlDB's `STRUCT<K key, V value>`.
fn entry_type(map: &DataType) -> Option<DataType> {
    let DataType::Map(entries, _) = map else { return None };
    let DataType::Struct(kv) = entries.data_type() else { return None };
    let [k, v] = [kv.first()?, kv.get(1)?];
    let fields =
        Fields::from(vec![Field::new("K", k.data_type().clone(), true), Field::new("V", v.data_type().clone(), true)]);
    Some(DataType::Struct(fields))
}

impl ScalarUDFImpl for Entries {
    fn name(&self) -> &str {
        "entries"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [m @ DataType::Map(..), DataType::Boolean | DataType::Null] => Ok(vec![m.clone(), DataType::Boolean]),
            _ => plan_err!("ENTRIES(MAP, BOOLEAN sorted) takes a map and whether to sort by key, not {args:?}"),
        }
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match entry_type(&args[0]) {
            Some(t) => Ok(DataType::List(Arc::new(Field::new("item", t, true)))),
            None => plan_err!("ENTRIES: expected a map, got {}", args[0]),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(n)).collect::<Result<Vec<ArrayRef>>>()?;
        let (map, sorted) = (arrays[0].as_map(), arrays[1].as_boolean());
        let Some(DataType::Struct(fields)) = entry_type(arrays[0].data_type()) else {
            return plan_err!("ENTRIES: expected a map");
        };
        let mut picks: Vec<u32> = Vec::new();
        let mut offsets = vec![0i32];
        for row in 0..n {
            if map.is_valid(row) {
                let (start, end) = (map.value_offsets()[row] as u32, map.value_offsets()[row + 1] as u32);
                let mut row_picks: Vec<u32> = (start..end).collect();
                if sorted.is_valid(row) && sorted.value(row) {
                    let keys = row_picks
                        .iter()
                        .map(|i| array_value_to_string(map.keys(), *i as usize))
                        .collect::<std::result::Result<Vec<String>, _>>()?;
                    let mut by_key: Vec<(String, u32)> = keys.into_iter().zip(row_picks).collect();
                    by_key.sort();
                    row_picks = by_key.into_iter().map(|(_, i)| i).collect();
                }
                picks.extend(row_picks);
            }
            offsets.push(picks.len() as i32);
        }
        let picks = UInt32Array::from(picks);
        let kv = StructArray::try_new(
            fields.clone(),
            vec![take(map.keys().as_ref(), &picks, None)?, take(map.values().as_ref(), &picks, None)?],
            None,
        )?;
        let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
        let list = ListArray::try_new(item, OffsetBuffer::new(offsets.into()), Arc::new(kv), map.nulls().cloned())?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}
