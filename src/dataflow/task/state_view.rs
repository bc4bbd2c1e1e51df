//! The state a table–table join reads and writes: its own rows in RocksDB as of the last
//! checkpoint (read through the query's cache), overlaid with the pending writes of the next one.

use super::*;

/// The join state of a table–table join: RocksDB as of the last checkpoint, overlaid with
/// this checkpoint's pending writes.
pub(super) struct StateView<'a> {
    pub(super) store: &'a StateStore,
    pub(super) cf: &'a str,
    pub(super) pending: &'a mut Pending,
    pub(super) cache: &'a ReadCache,
}

/// Index from a join key to the left rows holding it: `F` + join key + left key.
const JOIN_INDEX_PREFIX: u8 = b'F';

impl StateView<'_> {
    fn get_row(&self, key: Vec<u8>) -> Result<Option<Row>> {
        let bytes = self.cache.read(self.store, self.cf, self.pending, &[key])?.pop().flatten();
        Ok(bytes.map(|b| stored_row(&b)).transpose()?.flatten())
    }

    fn put_row(&mut self, key: Vec<u8>, row: Option<&Row>) {
        self.pending.insert(key, row.map(|r| crate::format::stored::encode_row(r)));
    }
}

impl JoinState for StateView<'_> {
    fn left(&mut self, left_key: &[u8]) -> Result<Option<Row>> {
        self.get_row(prefixed(PREVIOUS_ROW_PREFIX, left_key))
    }
    fn set_left(&mut self, left_key: &[u8], row: Option<&Row>) -> Result<()> {
        self.put_row(prefixed(PREVIOUS_ROW_PREFIX, left_key), row);
        Ok(())
    }
    fn right(&mut self, join_key: &[u8]) -> Result<Option<Row>> {
        self.get_row(join_row_key(0, join_key))
    }
    fn set_right(&mut self, join_key: &[u8], row: Option<&Row>) -> Result<()> {
        self.put_row(join_row_key(0, join_key), row);
        Ok(())
    }
    fn lefts_for(&mut self, join_key: &[u8]) -> Result<Vec<Vec<u8>>> {
        let prefix = prefixed(JOIN_INDEX_PREFIX, join_key);
        let mut keys: BTreeSet<Vec<u8>> =
            self.store.scan_prefix(self.cf, &prefix, usize::MAX)?.into_iter().map(|(k, _)| k).collect();
        for (k, v) in self.pending.range(prefix.clone()..) {
            if !k.starts_with(&prefix) {
                break;
            }
            if v.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        Ok(keys.into_iter().map(|k| k[prefix.len()..].to_vec()).collect())
    }
    fn index(&mut self, join_key: &[u8], left_key: &[u8], present: bool) -> Result<()> {
        let mut k = prefixed(JOIN_INDEX_PREFIX, join_key);
        k.extend_from_slice(left_key);
        self.pending.insert(k, present.then(Vec::new));
        Ok(())
    }
}
