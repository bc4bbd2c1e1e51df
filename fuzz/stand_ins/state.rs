//! `crate::state` as `src/auth.rs` sees it, without RocksDB: a state store that is never
//! opened. The fuzz target keeps its users in memory (`Users::parse`, whose store is `None`),
//! so none of these methods is ever called.

pub const CATALOG_CF: &str = "catalog";

/// Nothing makes one (the field is private).
pub struct StateStore(());

pub struct Checkpoint(());

const NEVER: &str = "the fuzz targets open no state store";

impl StateStore {
    pub fn scan_prefix(&self, _cf: &str, _prefix: &[u8], _max_bytes: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
        unreachable!("{NEVER}")
    }

    pub fn checkpoint(&self, _cf: &str) -> Checkpoint {
        unreachable!("{NEVER}")
    }

    pub fn commit(&self, _checkpoint: Checkpoint) -> Result<(), String> {
        unreachable!("{NEVER}")
    }

    pub fn request_backup(&self) {
        unreachable!("{NEVER}")
    }
}

impl Checkpoint {
    pub fn put(&mut self, _store: &StateStore, _key: &[u8], _value: &[u8]) -> Result<(), String> {
        unreachable!("{NEVER}")
    }

    pub fn delete(&mut self, _store: &StateStore, _key: &[u8]) -> Result<(), String> {
        unreachable!("{NEVER}")
    }
}
