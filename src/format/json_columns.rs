//! JSON values straight into Arrow columns, for streams whose columns are all simple types
//! (STRING, INT, BIGINT, DOUBLE, BOOLEAN, TIMESTAMP): one pass over each value, no `Value`
//! per field, strings borrowed from the record. The rules are `json::decode_value` (which
//! field feeds which column) and `types::normalize` (which JSON fits which type) exactly; a
//! record this decoder does not take (a type mismatch, invalid JSON, a null event time) is
//! handed back, and the caller decodes it the general way (which logs why it is bad) and
//! appends the cells with `push_cells`, so the batch keeps log order.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::types::SqlType;
use super::{arrow_schema, Column};

/// A column's type, as the decoder reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Int32,
    Int64,
    TimestampMs,
    Float64,
    Boolean,
}

impl Kind {
    fn of(ty: &SqlType) -> Option<Kind> {
        Some(match ty {
            SqlType::String => Kind::Text,
            SqlType::Int => Kind::Int32,
            SqlType::BigInt => Kind::Int64,
            SqlType::Timestamp => Kind::TimestampMs,
            SqlType::Double => Kind::Float64,
            SqlType::Boolean => Kind::Boolean,
            _ => return None,
        })
    }
}

/// One field's value after `normalize`'s rules.
#[derive(Debug, Clone, PartialEq)]
enum Typed<'de> {
    Null,
    Int(i64),
    Float(f64),
    Text(Cow<'de, str>),
    Bool(bool),
}

enum Builder {
    Text(StringBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    TimestampMs(TimestampMillisecondBuilder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
}

impl Builder {
    /// A builder with room for `rows` values (and `text_bytes` of string data).
    fn with_capacity(kind: Kind, rows: usize, text_bytes: usize) -> Builder {
        match kind {
            Kind::Text => Builder::Text(StringBuilder::with_capacity(rows, text_bytes)),
            Kind::Int32 => Builder::Int32(Int32Builder::with_capacity(rows)),
            Kind::Int64 => Builder::Int64(Int64Builder::with_capacity(rows)),
            Kind::TimestampMs => Builder::TimestampMs(TimestampMillisecondBuilder::with_capacity(rows)),
            Kind::Float64 => Builder::Float64(Float64Builder::with_capacity(rows)),
            Kind::Boolean => Builder::Boolean(BooleanBuilder::with_capacity(rows)),
        }
    }

    /// Bytes of string data so far (0 for other kinds).
    fn text_bytes(&self) -> usize {
        match self {
            Builder::Text(b) => b.values_slice().len(),
            _ => 0,
        }
    }

    /// Appends a value the seed of this column's kind made.
    fn append(&mut self, v: &Typed<'_>) {
        match (self, v) {
            (Builder::Text(b), Typed::Text(s)) => b.append_value(s),
            (Builder::Int32(b), Typed::Int(i)) => b.append_value(*i as i32),
            (Builder::Int64(b), Typed::Int(i)) => b.append_value(*i),
            (Builder::TimestampMs(b), Typed::Int(i)) => b.append_value(*i),
            (Builder::Float64(b), Typed::Float(f)) => b.append_value(*f),
            (Builder::Boolean(b), Typed::Bool(x)) => b.append_value(*x),
            (b, _) => b.append_null(),
        }
    }

    /// Appends a canonical cell (what `normalize` made).
    fn append_cell(&mut self, v: &Value) {
        match (self, v) {
            (Builder::Text(b), Value::String(s)) => b.append_value(s),
            (Builder::Int32(b), Value::Number(n)) if n.as_i64().is_some() => {
                b.append_value(n.as_i64().unwrap_or(0) as i32)
            }
            (Builder::Int64(b), Value::Number(n)) if n.as_i64().is_some() => b.append_value(n.as_i64().unwrap_or(0)),
            (Builder::TimestampMs(b), Value::Number(n)) if n.as_i64().is_some() => {
                b.append_value(n.as_i64().unwrap_or(0))
            }
            (Builder::Float64(b), Value::Number(n)) if n.as_f64().is_some() => {
                b.append_value(n.as_f64().unwrap_or(0.0))
            }
            (Builder::Boolean(b), Value::Bool(x)) => b.append_value(*x),
            (b, _) => b.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Text(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::TimestampMs(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Boolean(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::TimestampMs(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Boolean(b) => Arc::new(b.finish()),
        }
    }
}

/// Decodes the JSON values of one stream into an Arrow batch of its columns (then ROWTIME,
/// ROWPARTITION, ROWOFFSET when it has pseudo-columns).
pub struct ColumnarDecoder {
    /// The value's columns (the relation's).
    columns: Vec<Column>,
    kinds: Vec<Kind>,
    /// All columns of the batch: the relation's, then the pseudo-columns.
    all: Vec<Column>,
    /// The kind of each column of `all`.
    all_kinds: Vec<Kind>,
    builders: Vec<Builder>,
    /// No two column names are equal ignoring case: a field that names a column exactly
    /// cannot also name another one by case.
    case_distinct: bool,
    /// The event-time column, when it is one of the value's.
    time_column: Option<usize>,
    pseudo: bool,
    /// Value columns (bit i: column i) that no operator reads: still decoded and checked,
    /// so a record is taken or refused exactly as with every column, but stored as NULL.
    unread: u64,
    rows: usize,
    /// The cells' vector, kept empty between records so each record does not allocate one.
    scratch: Vec<Typed<'static>>,
}

impl ColumnarDecoder {
    /// A decoder for `columns` (a stream's, no key columns), followed in the batch by
    /// `pseudo` columns; `None` when a type needs the general path. `time_column`: the
    /// relation's TIMESTAMP column, which must be an integer type here.
    pub fn new(columns: &[Column], pseudo: &[Column], time_column: Option<usize>) -> Option<ColumnarDecoder> {
        if columns.len() > 64 || columns.iter().any(|c| c.key) {
            return None;
        }
        let kinds: Vec<Kind> = columns.iter().map(|c| Kind::of(&c.ty)).collect::<Option<_>>()?;
        if let Some(t) = time_column {
            if !matches!(kinds.get(t), Some(Kind::Int32 | Kind::Int64 | Kind::TimestampMs)) {
                return None;
            }
        }
        let mut all = columns.to_vec();
        all.extend(pseudo.iter().cloned());
        let all_kinds: Vec<Kind> = all.iter().map(|c| Kind::of(&c.ty)).collect::<Option<_>>()?;
        let builders = all_kinds.iter().map(|&k| Builder::with_capacity(k, 0, 0)).collect();
        let case_distinct = columns
            .iter()
            .enumerate()
            .all(|(i, a)| columns[i + 1..].iter().all(|b| !a.name.eq_ignore_ascii_case(&b.name)));
        Some(ColumnarDecoder {
            columns: columns.to_vec(),
            kinds,
            all,
            all_kinds,
            builders,
            case_distinct,
            time_column,
            pseudo: !pseudo.is_empty(),
            unread: 0,
            rows: 0,
            scratch: Vec::new(),
        })
    }

    /// Stores the value columns marked `true` as NULL (nothing reads them).
    pub fn set_unread(&mut self, unread: &[bool]) {
        self.unread = unread.iter().take(self.columns.len()).enumerate().fold(0, |m, (i, &u)| m | (u as u64) << i);
    }

    /// Decodes one value and appends its row; returns its event time (the time column's
    /// value, else `record_ms`). `None`: nothing appended, decode it the general way.
    pub fn push(&mut self, value: &[u8], record_ms: i64, partition: i32, offset: i64) -> Option<i64> {
        if value.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) != Some(&b'{') {
            return None;
        }
        // One SIMD validation of the whole value, rather than serde_json checking each string.
        let text = simdutf8::basic::from_utf8(value).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let cells = serde::Deserializer::deserialize_map(
            &mut de,
            Fields {
                columns: &self.columns,
                kinds: &self.kinds,
                case_distinct: self.case_distinct,
                cells: recycle(std::mem::take(&mut self.scratch)),
            },
        )
        .ok()?;
        de.end().ok()?;
        let event_ms = match self.time_column {
            Some(t) => match &cells[t] {
                Typed::Int(ms) => *ms,
                _ => return None,
            },
            None => record_ms,
        };
        for (i, (b, v)) in self.builders.iter_mut().zip(&cells).enumerate() {
            if self.unread & (1 << i) == 0 {
                b.append(v);
            } else {
                b.append_null();
            }
        }
        self.scratch = recycle(cells);
        if self.pseudo {
            let n = self.columns.len();
            for (b, v) in self.builders[n..].iter_mut().zip([event_ms, partition as i64, offset]) {
                b.append(&Typed::Int(v));
            }
        }
        self.rows += 1;
        Some(event_ms)
    }

    /// Appends a row the general path decoded: canonical cells of every batch column.
    pub fn push_cells(&mut self, row: &[Value]) {
        for (i, (b, v)) in self.builders.iter_mut().zip(row).enumerate() {
            if i >= 64 || self.unread & (1 << i) == 0 {
                b.append_cell(v);
            } else {
                b.append_null();
            }
        }
        self.rows += 1;
    }

    /// The rows so far as a batch (`None` when there are none); the decoder starts over,
    /// with room for a batch like this one (builders that grow as they go copy and fault in
    /// their memory once per doubling).
    pub fn finish(&mut self) -> Option<RecordBatch> {
        if self.rows == 0 {
            return None;
        }
        let rows = std::mem::take(&mut self.rows);
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .zip(&self.all_kinds)
            .map(|(b, &kind)| {
                let text_bytes = b.text_bytes();
                std::mem::replace(b, Builder::with_capacity(kind, rows, text_bytes)).finish()
            })
            .collect();
        RecordBatch::try_new(arrow_schema(&self.all), arrays).ok()
    }
}

/// An empty vector with `cells`' allocation, for values of another lifetime (the standard
/// library collects a mapped `IntoIter` in place when the element layouts match).
fn recycle<'a, 'b>(mut cells: Vec<Typed<'a>>) -> Vec<Typed<'b>> {
    cells.clear();
    cells.into_iter().map(|_| Typed::Null).collect()
}

/// Visits one JSON object: each column's field, by `json::decode_value`'s matching.
struct Fields<'c, 'de> {
    columns: &'c [Column],
    kinds: &'c [Kind],
    case_distinct: bool,
    /// An empty vector to fill (its allocation reused).
    cells: Vec<Typed<'de>>,
}

impl<'de> Visitor<'de> for Fields<'_, 'de> {
    type Value = Vec<Typed<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let n = self.columns.len();
        let mut cells = self.cells;
        cells.resize(n, Typed::Null);
        let mut exact: u64 = 0;
        // Producers mostly write the fields in column order: look there first.
        let mut next = 0;
        while let Some(key) = map.next_key_seed(super::json::KeySeed)? {
            let exact_at = if self.columns.get(next).is_some_and(|c| c.name == *key) {
                Some(next)
            } else {
                self.columns.iter().position(|c| c.name == *key)
            };
            next = exact_at.map_or(next, |i| i + 1);
            // Columns this field would feed by a case-insensitive match (none has an exact one yet).
            let folded_into: Vec<usize> = if exact_at.is_some() && self.case_distinct {
                Vec::new()
            } else {
                (0..n)
                    .filter(|&j| {
                        Some(j) != exact_at && exact & (1 << j) == 0 && self.columns[j].name.eq_ignore_ascii_case(&key)
                    })
                    .collect()
            };
            match (exact_at, folded_into.as_slice()) {
                (None, []) => {
                    map.next_value::<IgnoredAny>()?;
                }
                (Some(i), []) => {
                    cells[i] = map.next_value_seed(CellSeed(self.kinds[i]))?;
                    exact |= 1 << i;
                }
                // A field matched by case only (or feeding several columns): the general path
                // knows which occurrence wins.
                _ => return Err(serde::de::Error::custom("field matched ignoring case")),
            }
        }
        Ok(cells)
    }
}

/// Reads one field's value for a column of `Kind`, by `types::normalize`'s rules.
struct CellSeed(Kind);

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Typed<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn mismatch<E: serde::de::Error>() -> E {
    E::custom("type mismatch")
}

fn int_in_range<E: serde::de::Error>(kind: Kind, i: i64) -> Result<Typed<'static>, E> {
    if kind == Kind::Int32 && i32::try_from(i).is_err() {
        return Err(mismatch());
    }
    Ok(Typed::Int(i))
}

impl<'de> Visitor<'de> for CellSeed {
    type Value = Typed<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a {:?} value", self.0)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Typed::Null)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        match self.0 {
            Kind::Text => Ok(Typed::Text(Cow::Borrowed(if v { "true" } else { "false" }))),
            Kind::Boolean => Ok(Typed::Bool(v)),
            _ => Err(mismatch()),
        }
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match self.0 {
            Kind::Text => Ok(Typed::Text(Cow::Owned(v.to_string()))),
            Kind::Int32 | Kind::Int64 | Kind::TimestampMs => int_in_range(self.0, v),
            Kind::Float64 => Ok(Typed::Float(v as f64)),
            Kind::Boolean => Err(mismatch()),
        }
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match self.0 {
            Kind::Text => Ok(Typed::Text(Cow::Owned(v.to_string()))),
            Kind::Int32 | Kind::Int64 | Kind::TimestampMs => {
                int_in_range(self.0, i64::try_from(v).map_err(|_| mismatch::<E>())?)
            }
            Kind::Float64 => Ok(Typed::Float(v as f64)),
            Kind::Boolean => Err(mismatch()),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        match self.0 {
            // As `Value`'s Display writes the number.
            Kind::Text => {
                serde_json::Number::from_f64(v).map(|n| Typed::Text(Cow::Owned(n.to_string()))).ok_or_else(mismatch)
            }
            Kind::Float64 => Ok(Typed::Float(v)),
            _ => Err(mismatch()),
        }
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        match self.0 {
            Kind::Text => Ok(Typed::Text(Cow::Borrowed(v))),
            _ => self.visit_str(v),
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match self.0 {
            Kind::Text => Ok(Typed::Text(Cow::Owned(v.to_string()))),
            Kind::Int32 | Kind::Int64 | Kind::TimestampMs => {
                int_in_range(self.0, v.trim().parse::<i64>().map_err(|_| mismatch::<E>())?)
            }
            Kind::Float64 => match v.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Typed::Float(f)),
                _ => Err(mismatch()),
            },
            Kind::Boolean => match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(Typed::Bool(true)),
                "false" => Ok(Typed::Bool(false)),
                _ => Err(mismatch()),
            },
        }
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
        Err(mismatch())
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Self::Value, A::Error> {
        Err(mismatch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{decode_row, rows_to_batch, KeyFormat, ValueFormat};

    /// Every value either takes the columnar path with exactly the batch the general path
    /// builds, or is handed back; what the general path accepts and the columnar one hands
    /// back still ends in the same batch through `push_cells`.
    #[test]
    fn recycling_the_cells_keeps_their_allocation() {
        let text = String::from("borrowed");
        let mut cells: Vec<Typed<'_>> = Vec::with_capacity(12);
        cells.push(Typed::Text(Cow::Borrowed(&text)));
        let ptr = cells.as_ptr() as usize;
        let again: Vec<Typed<'static>> = recycle(cells);
        assert!(again.is_empty());
        assert_eq!((again.as_ptr() as usize, again.capacity()), (ptr, 12));
    }

    #[test]
    fn columnar_decoding_matches_the_general_path() {
        let col = |name: &str, ty: SqlType| Column { name: name.into(), ty, key: false };
        let columns = vec![
            col("s", SqlType::String),
            col("i", SqlType::Int),
            col("b", SqlType::BigInt),
            col("d", SqlType::Double),
            col("t", SqlType::Boolean),
            col("ts", SqlType::Timestamp),
        ];
        let pseudo =
            vec![col("ROWTIME", SqlType::BigInt), col("ROWPARTITION", SqlType::Int), col("ROWOFFSET", SqlType::BigInt)];
        let values: Vec<&[u8]> = vec![
            br#"{"s": "plain", "i": 7, "b": -9, "d": 1.5, "t": true, "ts": 1000}"#,
            br#"{"s": 12, "i": "  42 ", "b": "77", "d": "2.5", "t": " TRUE ", "ts": 5, "extra": [1, {"x": 2}]}"#,
            br#"{"s": 1.0, "i": 2147483648, "ts": 6}"#,
            br#"{"s": true, "d": 3, "ts": 7, "S": "folded?", "I": 8}"#,
            br#"{"S": "only folded", "ts": 8}"#,
            br#"{"s": "esc\u00e9\n", "ts": null}"#,
            br#"{"s": [1], "ts": 9}"#,
            br#"{"b": 1.5, "ts": 10}"#,
            br#"{"b": 18446744073709551615, "ts": 11}"#,
            br#"{"d": "nan", "ts": 12}"#,
            br#"{"t": "yes", "ts": 13}"#,
            br#"not json"#,
            br#"{"s": "dup", "s": "last", "ts": 14}"#,
            br#"  {"s": "spaces"}  "#,
            br#"{"s": "trailing"} x"#,
        ];
        let mut columns_with_pseudo = columns.clone();
        columns_with_pseudo.extend(pseudo.clone());
        let mut decoder = ColumnarDecoder::new(&columns, &pseudo, Some(5)).expect("simple types");
        let mut general_rows = Vec::new();
        let mut taken = 0;
        for (offset, value) in values.iter().enumerate() {
            let general = decode_row(
                &columns,
                crate::format::KeyLayout::plain(KeyFormat::None),
                ValueFormat::Json,
                None,
                Some(value),
            );
            let general = general.ok().and_then(|mut row| {
                let ts = row[5].as_i64()?;
                row.extend([Value::from(ts), Value::from(0), Value::from(offset as i64)]);
                Some(row)
            });
            match decoder.push(value, 0, 0, offset as i64) {
                Some(ts) => {
                    taken += 1;
                    let row = general.unwrap_or_else(|| {
                        panic!("{}: columnar took what the general path refuses", String::from_utf8_lossy(value))
                    });
                    assert_eq!(Some(ts), row[5].as_i64());
                    general_rows.push(row);
                }
                None => {
                    if let Some(row) = general {
                        decoder.push_cells(&row);
                        general_rows.push(row);
                    }
                }
            }
        }
        assert_eq!(taken, 3, "the plain records take the columnar path");
        let expected = rows_to_batch(&columns_with_pseudo, &general_rows).unwrap();
        assert_eq!(decoder.finish().expect("rows"), expected);
        assert!(decoder.finish().is_none(), "finish starts over");
    }

    #[test]
    fn unread_columns_are_checked_but_stored_null() {
        let col = |name: &str, ty: SqlType| Column { name: name.into(), ty, key: false };
        let columns = vec![col("a", SqlType::BigInt), col("note", SqlType::String), col("n", SqlType::Int)];
        let mut decoder = ColumnarDecoder::new(&columns, &[], None).expect("simple types");
        decoder.set_unread(&[false, true, true]);
        assert_eq!(decoder.push(br#"{"a": 1, "note": "long text", "n": 2}"#, 0, 0, 0), Some(0));
        // A value that does not fit an unread column's type is refused as with every column read.
        assert_eq!(decoder.push(br#"{"a": 2, "note": "x", "n": "not a number"}"#, 0, 0, 1), None);
        decoder.push_cells(&[Value::from(3), Value::from("general"), Value::from(4)]);
        let batch = decoder.finish().expect("rows");
        assert_eq!(batch.num_rows(), 2);
        let a = batch.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap();
        assert_eq!(a.values().to_vec(), vec![1, 3]);
        assert_eq!(batch.column(1).null_count(), 2);
        assert_eq!(batch.column(2).null_count(), 2);
    }
}
