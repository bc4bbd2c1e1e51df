//! Table–table join (`a [LEFT|FULL] JOIN b ON a.fk = b.pk`): the result is a table of joined
//! rows that changes whenever either side does. A change on either side becomes signed rows:
//! the joined rows it ends (-1) and the ones it starts (+1), each under its result key (the
//! left row's primary key, or the right key for a right row nothing on the left matches).
//! Aggregations and projections downstream take those signed rows as they take a table's.
//!
//! The join keeps both tables and an index from join key to left rows (a foreign key may
//! point many left rows at one right row) in the query's state, through `JoinState`.

use serde_json::Value;

use crate::error::Result;
use crate::format::memcomparable;
use crate::plan::JoinKind;

/// A row of one side.
pub type Row = Vec<Value>;

/// The join's state: both sides by key and the index from join key to left rows.
pub trait JoinState {
    fn left(&mut self, left_key: &[u8]) -> Result<Option<Row>>;
    fn set_left(&mut self, left_key: &[u8], row: Option<&Row>) -> Result<()>;
    fn right(&mut self, join_key: &[u8]) -> Result<Option<Row>>;
    fn set_right(&mut self, join_key: &[u8], row: Option<&Row>) -> Result<()>;
    /// Left rows (their keys) whose join key is `join_key`.
    fn lefts_for(&mut self, join_key: &[u8]) -> Result<Vec<Vec<u8>>>;
    fn index(&mut self, join_key: &[u8], left_key: &[u8], present: bool) -> Result<()>;
}

/// One signed joined row under its result key.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedRow {
    pub key: Vec<u8>,
    pub sign: i64,
    pub row: Row,
}

pub struct TableJoinOperator {
    pub kind: JoinKind,
    pub left_key_columns: Vec<usize>,
    pub left_width: usize,
    pub right_width: usize,
}

/// Result key of a right row with no left row (sorts apart from every memcomparable key).
fn right_only_key(join_key: &[u8]) -> Vec<u8> {
    let mut k = vec![0xFE];
    k.extend_from_slice(join_key);
    k
}

impl TableJoinOperator {
    /// The joined row of `left` and `right` under this join's kind, if it has one.
    fn joined(&self, left: Option<&Row>, right: Option<&Row>) -> Option<Row> {
        let keep = match self.kind {
            JoinKind::Inner => left.is_some() && right.is_some(),
            JoinKind::Left => left.is_some(),
            JoinKind::Full => left.is_some() || right.is_some(),
        };
        if !keep {
            return None;
        }
        let l = left.cloned().unwrap_or_else(|| vec![Value::Null; self.left_width]);
        let r = right.cloned().unwrap_or_else(|| vec![Value::Null; self.right_width]);
        Some(l.into_iter().chain(r).collect())
    }

    /// The join key of a left row (`None` when any part is NULL: it matches nothing).
    fn join_key(&self, left: &Row) -> Option<Vec<u8>> {
        let values: Vec<Value> = self.left_key_columns.iter().map(|&i| left[i].clone()).collect();
        (!values.iter().any(Value::is_null)).then(|| memcomparable(&values))
    }

    /// A left row changed (`new` is `None` for a delete).
    pub fn left_change(&self, state: &mut dyn JoinState, left_key: &[u8], new: Option<Row>) -> Result<Vec<SignedRow>> {
        let mut out = Vec::new();
        let full = self.kind == JoinKind::Full;
        if let Some(old) = state.left(left_key)? {
            let jk = self.join_key(&old);
            let right = match &jk {
                Some(jk) => state.right(jk)?,
                None => None,
            };
            if let Some(row) = self.joined(Some(&old), right.as_ref()) {
                out.push(SignedRow { key: left_key.to_vec(), sign: -1, row });
            }
            if let Some(jk) = &jk {
                state.index(jk, left_key, false)?;
                if full && right.is_some() && state.lefts_for(jk)?.is_empty() {
                    let row = self.joined(None, right.as_ref()).expect("full join keeps right rows");
                    out.push(SignedRow { key: right_only_key(jk), sign: 1, row });
                }
            }
        }
        if let Some(new) = &new {
            let jk = self.join_key(new);
            let right = match &jk {
                Some(jk) => state.right(jk)?,
                None => None,
            };
            if let Some(jk) = &jk {
                if full && right.is_some() && state.lefts_for(jk)?.is_empty() {
                    let row = self.joined(None, right.as_ref()).expect("full join keeps right rows");
                    out.push(SignedRow { key: right_only_key(jk), sign: -1, row });
                }
                state.index(jk, left_key, true)?;
            }
            if let Some(row) = self.joined(Some(new), right.as_ref()) {
                out.push(SignedRow { key: left_key.to_vec(), sign: 1, row });
            }
        }
        state.set_left(left_key, new.as_ref())?;
        Ok(out)
    }

    /// A right row changed (`join_key` is its primary key; `new` is `None` for a delete).
    pub fn right_change(&self, state: &mut dyn JoinState, join_key: &[u8], new: Option<Row>) -> Result<Vec<SignedRow>> {
        let mut out = Vec::new();
        let old = state.right(join_key)?;
        let lefts = state.lefts_for(join_key)?;
        if lefts.is_empty() {
            if let Some(row) = self.joined(None, old.as_ref()) {
                out.push(SignedRow { key: right_only_key(join_key), sign: -1, row });
            }
            if let Some(row) = self.joined(None, new.as_ref()) {
                out.push(SignedRow { key: right_only_key(join_key), sign: 1, row });
            }
        }
        for left_key in lefts {
            let Some(left) = state.left(&left_key)? else { continue };
            if let Some(row) = self.joined(Some(&left), old.as_ref()) {
                out.push(SignedRow { key: left_key.clone(), sign: -1, row });
            }
            if let Some(row) = self.joined(Some(&left), new.as_ref()) {
                out.push(SignedRow { key: left_key, sign: 1, row });
            }
        }
        state.set_right(join_key, new.as_ref())?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// The state as plain maps: the oracle the real (RocksDB) state must behave like.
    #[derive(Default)]
    struct Maps {
        left: BTreeMap<Vec<u8>, Row>,
        right: BTreeMap<Vec<u8>, Row>,
        index: BTreeSet<(Vec<u8>, Vec<u8>)>,
    }

    impl JoinState for Maps {
        fn left(&mut self, k: &[u8]) -> Result<Option<Row>> {
            Ok(self.left.get(k).cloned())
        }
        fn set_left(&mut self, k: &[u8], row: Option<&Row>) -> Result<()> {
            match row {
                Some(r) => self.left.insert(k.to_vec(), r.clone()),
                None => self.left.remove(k),
            };
            Ok(())
        }
        fn right(&mut self, k: &[u8]) -> Result<Option<Row>> {
            Ok(self.right.get(k).cloned())
        }
        fn set_right(&mut self, k: &[u8], row: Option<&Row>) -> Result<()> {
            match row {
                Some(r) => self.right.insert(k.to_vec(), r.clone()),
                None => self.right.remove(k),
            };
            Ok(())
        }
        fn lefts_for(&mut self, jk: &[u8]) -> Result<Vec<Vec<u8>>> {
            Ok(self.index.iter().filter(|(j, _)| j == jk).map(|(_, l)| l.clone()).collect())
        }
        fn index(&mut self, jk: &[u8], lk: &[u8], present: bool) -> Result<()> {
            if present {
                self.index.insert((jk.to_vec(), lk.to_vec()));
            } else {
                self.index.remove(&(jk.to_vec(), lk.to_vec()));
            }
            Ok(())
        }
    }

    /// Applies signed rows to a multiset of result rows by key.
    fn apply(result: &mut BTreeMap<Vec<u8>, Row>, rows: Vec<SignedRow>) {
        for r in rows {
            if r.sign > 0 {
                result.insert(r.key, r.row);
            } else {
                assert_eq!(result.remove(&r.key), Some(r.row), "retracted a row that was not there");
            }
        }
    }

    #[test]
    fn foreign_key_full_join_follows_both_sides() {
        use serde_json::json;
        // orders(id, customer) FULL JOIN customers(id, name) ON orders.customer = customers.id
        let op = TableJoinOperator { kind: JoinKind::Full, left_key_columns: vec![1], left_width: 2, right_width: 2 };
        let key = |v: Value| memcomparable(&[v]);
        let mut st = Maps::default();
        let mut result = BTreeMap::new();
        let c1 = || Some(vec![json!("c1"), json!("Ann")]);
        apply(&mut result, op.right_change(&mut st, &key(json!("c1")), c1()).unwrap());
        assert_eq!(result.len(), 1, "a customer alone shows with NULL order columns");
        apply(&mut result, op.left_change(&mut st, &key(json!(1)), Some(vec![json!(1), json!("c1")])).unwrap());
        apply(&mut result, op.left_change(&mut st, &key(json!(2)), Some(vec![json!(2), json!("c1")])).unwrap());
        assert_eq!(result.len(), 2, "two orders of c1, no right-only row");
        apply(&mut result, op.right_change(&mut st, &key(json!("c1")), Some(vec![json!("c1"), json!("Bo")])).unwrap());
        assert!(result.values().all(|r| r[3] == json!("Bo")));
        apply(&mut result, op.left_change(&mut st, &key(json!(1)), None).unwrap());
        apply(&mut result, op.left_change(&mut st, &key(json!(2)), Some(vec![json!(2), json!("c9")])).unwrap());
        // Order 2 now points nowhere; c1 has no orders again.
        assert_eq!(result.len(), 2);
        apply(&mut result, op.right_change(&mut st, &key(json!("c1")), None).unwrap());
        assert_eq!(result.len(), 1);
        assert_eq!(result.values().next().unwrap(), &vec![json!(2), json!("c9"), Value::Null, Value::Null]);
    }
}
