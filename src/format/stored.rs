//! Rows as state stores them: a compact binary encoding of a row's cells that keeps every
//! distinction a cell makes (an integer is not a float, `3` is not `3.0`, a DECIMAL stays
//! its exact text, a struct keeps its field order) and reads back without a schema.
//!
//! Tables over topics, a query's previous rows of a table it reads, the sides of a
//! table–table join, EMIT FINAL rows, an aggregation's output rows and stream–stream join
//! buffers are stored this way. State written before (`{"r": [...]}` in JSON) is still
//! read: [`row`] takes either, so a restart after an upgrade keeps its state and rewrites
//! each row in this format when it next changes.
//!
//! A stored row is `ROW_FORMAT`, the number of cells, then each cell: a tag byte and its
//! payload. Lengths and counts are LEB128; integers are zigzag LEB128.

use serde_json::{Map, Number, Value};

use crate::error::{EddyError, Result};

/// First byte of a stored row. JSON state began with `{` or `[`; other binary state formats
/// use other bytes (`0xA2` aggregate groups, `0xB2` joined-table rows in Arrow's row format).
pub const ROW_FORMAT: u8 = 0xB3;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const UINT: u8 = 4;
const FLOAT: u8 = 5;
const STRING: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

/// Cells nest no deeper than this (a corrupt value must not overflow the stack).
const MAX_DEPTH: usize = 128;

/// A row as stored: `ROW_FORMAT`, then the cells.
pub fn encode_row<V: std::borrow::Borrow<Value>>(cells: &[V]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 * cells.len());
    out.push(ROW_FORMAT);
    put_cells(&mut out, cells);
    out
}

/// The cells alone (a count, then each cell), appended to `out`: for formats that carry a
/// row among other fields.
pub fn put_cells<V: std::borrow::Borrow<Value>>(out: &mut Vec<u8>, cells: &[V]) {
    put_len(out, cells.len());
    for c in cells {
        put_cell(out, c.borrow());
    }
}

/// The row a stored value holds: this format, or the older JSON `{"r": [...]}` (`None` when
/// that held no row).
pub fn row(bytes: &[u8]) -> Result<Option<Vec<Value>>> {
    if bytes.first() == Some(&ROW_FORMAT) {
        let mut r = Reader { bytes: &bytes[1..] };
        let cells = r.cells()?;
        r.end()?;
        return Ok(Some(cells));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not a stored row: {e}")))?;
    Ok(match v.get("r") {
        Some(Value::Array(r)) => Some(r.clone()),
        _ => None,
    })
}

/// Reads `put_cells`' bytes at the start of `bytes`; returns the cells and the rest.
pub fn take_cells(bytes: &[u8]) -> Result<(Vec<Value>, &[u8])> {
    let mut r = Reader { bytes };
    let cells = r.cells()?;
    Ok((cells, r.bytes))
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    put_varint(out, n as u64);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_cell(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push(INT);
                put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
            } else if let Some(u) = n.as_u64() {
                out.push(UINT);
                out.extend_from_slice(&u.to_le_bytes());
            } else {
                out.push(FLOAT);
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(STRING);
            put_str(out, s);
        }
        Value::Array(items) => {
            out.push(ARRAY);
            put_cells(out, items);
        }
        Value::Object(fields) => {
            out.push(OBJECT);
            put_len(out, fields.len());
            for (k, v) in fields {
                put_str(out, k);
                put_cell(out, v);
            }
        }
    }
}

fn bad(message: String) -> EddyError {
    EddyError::Internal(format!("stored row: {message}"))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(bad("truncated".into()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7F) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(bad("varint too long".into()))
    }

    /// A length or count: never more than the bytes left (each item takes at least one).
    fn len(&mut self) -> Result<usize> {
        let n = self.varint()?;
        if n > self.bytes.len() as u64 {
            return Err(bad("length past the end".into()));
        }
        Ok(n as usize)
    }

    fn eight(&mut self) -> Result<[u8; 8]> {
        Ok(self.take(8)?.try_into().expect("8 bytes"))
    }

    fn string(&mut self) -> Result<String> {
        let n = self.len()?;
        let b = self.take(n)?;
        Ok(std::str::from_utf8(b).map_err(|e| bad(e.to_string()))?.to_owned())
    }

    fn cells(&mut self) -> Result<Vec<Value>> {
        self.cells_at(0)
    }

    fn cells_at(&mut self, depth: usize) -> Result<Vec<Value>> {
        let n = self.len()?;
        let mut cells = Vec::with_capacity(n);
        for _ in 0..n {
            cells.push(self.cell(depth)?);
        }
        Ok(cells)
    }

    fn cell(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(bad("nested too deep".into()));
        }
        Ok(match self.take(1)?[0] {
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            INT => {
                let z = self.varint()?;
                Value::from(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            UINT => Value::from(u64::from_le_bytes(self.eight()?)),
            FLOAT => {
                let f = f64::from_le_bytes(self.eight()?);
                Value::Number(Number::from_f64(f).ok_or_else(|| bad(format!("float {f}")))?)
            }
            STRING => Value::String(self.string()?),
            ARRAY => Value::Array(self.cells_at(depth + 1)?),
            OBJECT => {
                let n = self.len()?;
                let mut fields = Map::with_capacity(n);
                for _ in 0..n {
                    let k = self.string()?;
                    fields.insert(k, self.cell(depth + 1)?);
                }
                Value::Object(fields)
            }
            tag => return Err(bad(format!("cell tag {tag}"))),
        })
    }

    fn end(&self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(bad(format!("{} bytes after the row", self.bytes.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_of_cell_reads_back_as_written() {
        let cells = vec![
            Value::Null,
            json!(true),
            json!(false),
            json!(0),
            json!(-1),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(3.0),
            json!(-0.5),
            json!(1e300),
            json!("12345678901234567890.12"),
            json!(""),
            json!("ünïcødé"),
            json!([1, "x", null, [2.5, []]]),
            json!({"b": 1, "a": {"z": "1.50", "y": [true]}}),
        ];
        let bytes = encode_row(&cells);
        assert_eq!(bytes[0], ROW_FORMAT);
        let back = row(&bytes).unwrap().unwrap();
        assert_eq!(back, cells);
        // An integer stays an integer and a float a float; a struct keeps its field order.
        assert!(back[3].is_i64() && back[8].is_f64());
        assert_eq!(back[15].as_object().unwrap().keys().collect::<Vec<_>>(), ["b", "a"]);
        assert!(bytes.len() < serde_json::to_vec(&json!({ "r": cells })).unwrap().len());
    }

    #[test]
    fn rows_stored_as_json_before_are_still_read() {
        assert_eq!(row(br#"{"r":[7,"seven",1.5]}"#).unwrap(), Some(vec![json!(7), json!("seven"), json!(1.5)]));
        assert_eq!(row(br#"{"g":[1]}"#).unwrap(), None);
    }

    #[test]
    fn damaged_rows_are_errors_not_panics() {
        let good = encode_row(&[json!("abc"), json!([1, 2]), json!({"k": 1})]);
        for cut in 1..good.len() {
            assert!(row(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(row(&extra).is_err());
        assert!(row(&[ROW_FORMAT, 1, 99]).is_err());
        assert!(row(&[ROW_FORMAT, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).is_err());
        let mut deep = vec![ROW_FORMAT, 1];
        deep.extend(std::iter::repeat_n([ARRAY, 1], 10_000).flatten());
        assert!(row(&deep).is_err());
        assert!(row(&[ROW_FORMAT, 1, STRING, 2, 0xC3, 0x28]).is_err());
    }

    #[test]
    fn cells_can_sit_among_other_fields() {
        let mut out = vec![9];
        put_cells(&mut out, &[json!(1), json!("a")]);
        out.push(42);
        let (cells, rest) = take_cells(&out[1..]).unwrap();
        assert_eq!(cells, vec![json!(1), json!("a")]);
        assert_eq!(rest, [42]);
    }
}
