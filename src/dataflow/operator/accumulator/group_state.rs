//! A group's stored state: format byte, row count, output row and accumulators, and the
//! reads that pull and push queries make of it without decoding the accumulators.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Acc;
use crate::error::{EddyError, Result};

/// First byte of a group's state in format 2 (format 1 was a JSON object, which starts `{`).
pub const GROUP_STATE_FORMAT: u8 = 0xA2;

/// A group as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// Rows in the group (added minus retracted); at zero a group over a table is deleted.
    pub n: i64,
    /// One accumulator per aggregate (empty: a new group).
    pub accs: Vec<Acc>,
    /// The output row as a JSON array, after HAVING and the SELECT list (`None`: HAVING hides it).
    pub row: Option<Vec<u8>>,
    /// Changed since the state store last had it (not stored).
    pub dirty: bool,
}

/// A group's state bytes: format byte, n, output row, accumulators (see the module comment).
pub fn encode_group(g: &Group) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(GROUP_STATE_FORMAT);
    out.extend_from_slice(&g.n.to_be_bytes());
    match &g.row {
        Some(r) => put_bytes(&mut out, r),
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
    out.extend_from_slice(&(g.accs.len() as u32).to_be_bytes());
    for acc in &g.accs {
        match acc {
            Acc::Count(c) => {
                out.push(0);
                out.extend_from_slice(&c.to_be_bytes());
            }
            Acc::SumInt { sum, n } => {
                out.push(1);
                out.extend_from_slice(&sum.to_be_bytes());
                out.extend_from_slice(&n.to_be_bytes());
            }
            Acc::SumDecimal { sum, n } => {
                out.push(2);
                out.extend_from_slice(&sum.to_be_bytes());
                out.extend_from_slice(&n.to_be_bytes());
            }
            Acc::SumFloat { sum, n } => {
                out.push(3);
                out.extend_from_slice(&sum.to_be_bytes());
                out.extend_from_slice(&n.to_be_bytes());
            }
            Acc::One(v) => {
                out.push(4);
                match v {
                    Some(v) => put_bytes(&mut out, v),
                    None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
                }
            }
            Acc::Set(set) => {
                out.push(5);
                out.extend_from_slice(&(set.len() as u32).to_be_bytes());
                for (v, c) in set {
                    put_bytes(&mut out, v);
                    out.extend_from_slice(&c.to_be_bytes());
                }
            }
            Acc::List(items) => {
                out.push(6);
                out.extend_from_slice(&(items.len() as u32).to_be_bytes());
                for v in items {
                    put_bytes(&mut out, v);
                }
            }
            Acc::Moments { n, mean, m2 } => {
                out.push(7);
                out.extend_from_slice(&n.to_be_bytes());
                for x in [mean, m2] {
                    out.extend_from_slice(&x.to_be_bytes());
                }
            }
            Acc::CoMoments { n, mx, my, m2x, m2y, cxy } => {
                out.push(8);
                out.extend_from_slice(&n.to_be_bytes());
                for x in [mx, my, m2x, m2y, cxy] {
                    out.extend_from_slice(&x.to_be_bytes());
                }
            }
        }
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// Reads `encode_group`'s bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(EddyError::Internal("aggregate state: truncated".into()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn i128(&mut self) -> Result<i128> {
        Ok(i128::from_be_bytes(self.take(16)?.try_into().expect("16 bytes")))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    /// Length-prefixed bytes; `u32::MAX` is none.
    fn bytes(&mut self) -> Result<Option<&'a [u8]>> {
        match self.u32()? {
            u32::MAX => Ok(None),
            n => Ok(Some(self.take(n as usize)?)),
        }
    }
}

/// The group a state value holds. Any other format is an error (a query's state of an
/// older format is dropped when it starts, see `dataflow::task`).
pub fn decode_group(bytes: &[u8]) -> Result<Group> {
    let mut r = Reader { bytes };
    if r.u8()? != GROUP_STATE_FORMAT {
        return Err(EddyError::Internal("aggregate state: not format 2".into()));
    }
    let n = r.i64()?;
    let row = r.bytes()?.map(<[u8]>::to_vec);
    let count = r.u32()? as usize;
    let mut accs = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        accs.push(match r.u8()? {
            0 => Acc::Count(r.i64()?),
            1 => Acc::SumInt { sum: r.i64()?, n: r.i64()? },
            2 => Acc::SumDecimal { sum: r.i128()?, n: r.i64()? },
            3 => Acc::SumFloat { sum: r.f64()?, n: r.i64()? },
            4 => Acc::One(r.bytes()?.map(<[u8]>::to_vec)),
            5 => {
                let len = r.u32()? as usize;
                let mut set = BTreeMap::new();
                for _ in 0..len {
                    let v = r.bytes()?.unwrap_or_default().to_vec();
                    set.insert(v, r.i64()?);
                }
                Acc::Set(set)
            }
            6 => {
                let len = r.u32()? as usize;
                let mut items = Vec::with_capacity(len.min(1 << 16));
                for _ in 0..len {
                    items.push(r.bytes()?.unwrap_or_default().to_vec());
                }
                Acc::List(items)
            }
            7 => Acc::Moments { n: r.i64()?, mean: r.f64()?, m2: r.f64()? },
            8 => {
                Acc::CoMoments { n: r.i64()?, mx: r.f64()?, my: r.f64()?, m2x: r.f64()?, m2y: r.f64()?, cxy: r.f64()? }
            }
            tag => return Err(EddyError::Internal(format!("aggregate state: accumulator tag {tag}"))),
        });
    }
    Ok(Group { n, accs, row, dirty: false })
}

/// The output row of a group's state (pull and push queries read only this).
pub fn group_row(bytes: &[u8]) -> Result<Option<Vec<Value>>> {
    let mut r = Reader { bytes };
    r.u8()?;
    r.i64()?;
    r.bytes()?.map(output_row).transpose()
}

/// A group's output row from its bytes: a stored row (`format::stored`), or a JSON array as
/// groups stored it before.
pub fn output_row(bytes: &[u8]) -> Result<Vec<Value>> {
    if bytes.first() == Some(&crate::format::stored::ROW_FORMAT) {
        return Ok(crate::format::stored::row(bytes)?.unwrap_or_default());
    }
    serde_json::from_slice(bytes).map_err(|e| EddyError::Internal(format!("aggregate row: {e}")))
}
