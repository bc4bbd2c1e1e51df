//! ksqlDB's table functions, `EXPLODE(array)` and `CUBE_EXPLODE(array)`: one input row gives
//! zero or more output rows.
//!
//! In a continuous query they are planned as scalar functions of these names (typed as what
//! one output row holds: the element for EXPLODE, the array for CUBE_EXPLODE) and
//! `plan::plan_continuous` then evaluates their argument and hands the arrays to [`expand`],
//! which the SELECT list's operator applies to each batch. Called directly, the UDFs fail
//! with an error that says where they belong. A pull query reads `EXPLODE` as DataFusion's
//! `unnest` (`sql::select`).
//!
//! Rows, as in ksqlDB: an input row gives as many rows as its longest table function's
//! output; shorter outputs are padded with NULL; a NULL or empty array gives no rows.
//! CUBE_EXPLODE gives every combination of its elements and NULL (2^n arrays, the
//! all-NULL one first), each distinct combination once when elements are NULL.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, AsArray, ListArray, UInt32Array};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

/// The most elements CUBE_EXPLODE takes (2^16 combinations per row).
pub const CUBE_MAX_ELEMENTS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableFunction {
    Explode,
    CubeExplode,
}

impl TableFunction {
    pub fn from_name(name: &str) -> Option<TableFunction> {
        match name {
            "explode" => Some(TableFunction::Explode),
            "cube_explode" => Some(TableFunction::CubeExplode),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TableFunction::Explode => "explode",
            TableFunction::CubeExplode => "cube_explode",
        }
    }

    /// How many rows `list`'s row `row` gives.
    fn rows(self, list: &ListArray, row: usize) -> usize {
        if list.is_null(row) {
            return 0;
        }
        match self {
            TableFunction::Explode => list.value_length(row) as usize,
            TableFunction::CubeExplode => cube_masks(list, row).len(),
        }
    }
}

/// The planning stand-ins for the table functions.
pub fn udfs() -> Vec<ScalarUDF> {
    [TableFunction::Explode, TableFunction::CubeExplode]
        .into_iter()
        .map(|kind| {
            ScalarUDF::new_from_impl(TableUdf {
                kind,
                // Volatile: never folded into a constant (calling one fails).
                signature: Signature::new(TypeSignature::Any(1), Volatility::Volatile),
            })
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TableUdf {
    kind: TableFunction,
    signature: Signature,
}

impl ScalarUDFImpl for TableUdf {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match (&args[0], self.kind) {
            (DataType::List(field), TableFunction::Explode) => Ok(field.data_type().clone()),
            (list @ DataType::List(_), TableFunction::CubeExplode) => Ok(list.clone()),
            (DataType::Null, _) => Ok(DataType::Null),
            (other, _) => plan_err!("{} takes an ARRAY, not {other}", self.kind.name().to_uppercase()),
        }
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "{} is a table function: use it in the SELECT list of a query over a stream (not inside another expression)",
            self.kind.name().to_uppercase()
        )
    }
}

/// Expands a batch's projected columns: `functions` names the columns that hold a table
/// function's argument (an array per row); every other column is repeated for each row its
/// input row gives.
pub fn expand(columns: &[ArrayRef], functions: &[(usize, TableFunction)]) -> Result<Vec<ArrayRef>> {
    let Some(first) = columns.first() else { return Ok(Vec::new()) };
    // A NULL literal argument (`EXPLODE(NULL)`) is an untyped NULL array: no rows.
    let lists: Vec<(usize, TableFunction, Option<&ListArray>)> = functions
        .iter()
        .map(|&(col, f)| match columns[col].as_list_opt::<i32>() {
            Some(list) => Ok((col, f, Some(list))),
            None if columns[col].data_type() == &DataType::Null => Ok((col, f, None)),
            None => exec_err!("{} takes an ARRAY, not {}", f.name().to_uppercase(), columns[col].data_type()),
        })
        .collect::<Result<_>>()?;
    for (_, f, list) in &lists {
        let Some(list) = list else { continue };
        if *f == TableFunction::CubeExplode {
            for row in 0..list.len() {
                if list.is_valid(row) && list.value_length(row) as usize > CUBE_MAX_ELEMENTS {
                    return exec_err!(
                        "CUBE_EXPLODE takes at most {CUBE_MAX_ELEMENTS} elements (2^{CUBE_MAX_ELEMENTS} rows), not {}",
                        list.value_length(row)
                    );
                }
            }
        }
    }
    let n = first.len();
    let counts: Vec<usize> = (0..n)
        .map(|row| lists.iter().map(|(_, f, list)| list.map_or(0, |l| f.rows(l, row))).max().unwrap_or(1))
        .collect();
    let repeat: UInt32Array =
        counts.iter().enumerate().flat_map(|(row, &c)| std::iter::repeat_n(row as u32, c)).collect();
    let mut out = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        match lists.iter().find(|(col, _, _)| *col == i) {
            None => out.push(take(column.as_ref(), &repeat, None)?),
            Some((_, _, None)) => out.push(new_null_array(column.data_type(), repeat.len())),
            Some((_, TableFunction::Explode, Some(list))) => out.push(explode(list, &counts)?),
            Some((_, TableFunction::CubeExplode, Some(list))) => out.push(cube_explode(list, &counts)?),
        }
    }
    Ok(out)
}

/// Row `row`'s elements, one per output row, NULL past its length.
fn explode(list: &ListArray, counts: &[usize]) -> Result<ArrayRef> {
    let offsets = list.value_offsets();
    let mut indices: Vec<Option<u32>> = Vec::with_capacity(counts.iter().sum());
    for (row, &c) in counts.iter().enumerate() {
        let (start, len) =
            if list.is_valid(row) { (offsets[row] as u32, list.value_length(row) as usize) } else { (0, 0) };
        indices.extend((0..c).map(|j| (j < len).then(|| start + j as u32)));
    }
    let values = list.values();
    if values.data_type() == &DataType::Null {
        return Ok(new_null_array(&DataType::Null, indices.len()));
    }
    Ok(take(values.as_ref(), &UInt32Array::from(indices), None)?)
}

/// The combinations of row `row`'s elements, as masks over its elements (bit set: the
/// element is kept; the first element is the highest bit). A combination that keeps a NULL
/// element equals the one that drops it, which came first: it is left out.
fn cube_masks(list: &ListArray, row: usize) -> Vec<u32> {
    let len = (list.value_length(row) as usize).min(CUBE_MAX_ELEMENTS);
    let elements = list.value(row);
    let null_bits: u32 = (0..len).filter(|&i| elements.is_null(i)).map(|i| 1 << (len - 1 - i)).sum();
    (0..1u32 << len).filter(|mask| mask & null_bits == 0).collect()
}

fn cube_explode(list: &ListArray, counts: &[usize]) -> Result<ArrayRef> {
    let offsets = list.value_offsets();
    let mut indices: Vec<Option<u32>> = Vec::new();
    let mut lengths: Vec<usize> = Vec::new();
    let mut valid: Vec<bool> = Vec::new();
    for (row, &c) in counts.iter().enumerate() {
        let masks = if list.is_valid(row) { cube_masks(list, row) } else { Vec::new() };
        let len = if masks.is_empty() { 0 } else { list.value_length(row) as usize };
        for j in 0..c {
            match masks.get(j) {
                Some(mask) => {
                    let start = offsets[row] as u32;
                    indices.extend((0..len).map(|i| (mask & (1 << (len - 1 - i)) != 0).then(|| start + i as u32)));
                    lengths.push(len);
                    valid.push(true);
                }
                None => {
                    lengths.push(0);
                    valid.push(false);
                }
            }
        }
    }
    let DataType::List(field) = list.data_type() else {
        return exec_err!("CUBE_EXPLODE takes an ARRAY, not {}", list.data_type());
    };
    let values = take(list.values().as_ref(), &UInt32Array::from(indices), None)?;
    let nulls = valid.iter().any(|v| !v).then(|| NullBuffer::from(valid));
    Ok(Arc::new(ListArray::try_new(field.clone(), OffsetBuffer::from_lengths(lengths), values, nulls)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int32Builder, ListBuilder, StringArray};
    use datafusion::arrow::util::display::array_value_to_string;

    fn lists(rows: &[Option<Vec<Option<i32>>>]) -> ArrayRef {
        let mut b = ListBuilder::new(Int32Builder::new());
        for row in rows {
            match row {
                Some(items) => {
                    for i in items {
                        b.values().append_option(*i);
                    }
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        Arc::new(b.finish())
    }

    fn text(a: &ArrayRef) -> Vec<String> {
        (0..a.len()).map(|i| array_value_to_string(a, i).unwrap_or_default()).collect()
    }

    #[test]
    fn explode_repeats_other_columns_pads_shorter_arrays_and_drops_null_or_empty() {
        let names: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c", "d"]));
        let first = lists(&[Some(vec![Some(1), Some(2)]), None, Some(vec![]), Some(vec![Some(5)])]);
        let second = lists(&[Some(vec![Some(10)]), Some(vec![]), None, Some(vec![Some(50), None, Some(70)])]);
        let out = expand(&[names, first, second], &[(1, TableFunction::Explode), (2, TableFunction::Explode)]).unwrap();
        assert_eq!(text(&out[0]), ["a", "a", "d", "d", "d"]);
        assert_eq!(text(&out[1]), ["1", "2", "5", "", ""]);
        assert_eq!(text(&out[2]), ["10", "", "50", "", "70"]);
        assert_eq!(out[1].null_count(), 2);
        assert!(out[1].as_any().downcast_ref::<Int32Array>().is_some());
    }

    #[test]
    fn cube_explode_gives_every_combination_once() {
        let names: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
        let arrays = lists(&[Some(vec![Some(1), Some(2)]), Some(vec![Some(3), None])]);
        let out = expand(&[names, arrays], &[(1, TableFunction::CubeExplode)]).unwrap();
        assert_eq!(text(&out[0]), ["a", "a", "a", "a", "b", "b"]);
        assert_eq!(text(&out[1]), ["[, ]", "[, 2]", "[1, ]", "[1, 2]", "[, ]", "[3, ]"]);
    }

    #[test]
    fn cube_explode_refuses_huge_arrays() {
        let big = lists(&[Some((0..17).map(Some).collect())]);
        let err = expand(&[big], &[(0, TableFunction::CubeExplode)]).unwrap_err();
        assert!(err.to_string().contains("at most 16"), "{err}");
    }
}
