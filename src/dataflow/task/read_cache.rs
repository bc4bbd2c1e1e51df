//! A query's recently read and written state values, kept across checkpoints, so that a hot
//! key (a joined table's row, a table input's previous row) is not read from RocksDB again
//! for every batch that touches it. A RocksDB read of a cached block
//! still costs a memtable search, an index and a filter partition per key; this is one hash
//! lookup.
//!
//! Correct because the query's task is the only writer of its column family while it runs:
//! every write goes through its pending map and a checkpoint, and the values a checkpoint
//! committed replace the cached ones (`committed`). Pending writes are read before the cache.
//! A failed checkpoint changes nothing here.
//!
//! Bounded: two generations of about half the query's budget each (a quarter of
//! `--query-memory-bytes`), and every query's caches together within `--query-memory-bytes`.
//! Entries go into the young one; when it is full it becomes the old one and the old one is
//! dropped. A hit in the old generation moves the entry back to the young one, so what is
//! read often stays. Sizes are reckoned, not measured (`ENTRY_OVERHEAD`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use foldhash::{HashMap, HashMapExt};

use crate::error::Result;
use crate::state::{StateStore, JOIN_ROW_PREFIX, PREVIOUS_ROW_PREFIX};

/// A value as stored (`None`: the key is known to be absent).
type Stored = Option<Vec<u8>>;

/// Bytes an entry is counted for beyond its key and value: the map's slot (two vectors) with
/// its share of the table's free slots, and the two allocations' rounding.
const ENTRY_OVERHEAD: usize = 128;

pub struct ReadCache {
    inner: Mutex<Generations>,
}

/// What every query's cache holds together, in bytes as `entry_bytes` counts them. A cache
/// that would take the total past its limit drops its own old generation first, and caches
/// nothing more while the others hold the rest.
static TOTAL_BYTES: AtomicUsize = AtomicUsize::new(0);

struct Generations {
    young: HashMap<Vec<u8>, Stored>,
    old: HashMap<Vec<u8>, Stored>,
    young_bytes: usize,
    old_bytes: usize,
    /// Bytes one generation may hold (half the query's budget); 0 turns the cache off.
    generation_bytes: usize,
    /// What all queries' caches may hold together, and hold now (`TOTAL_BYTES`).
    total_limit: usize,
    total: &'static AtomicUsize,
}

fn entry_bytes(key: &[u8], value: &Stored) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
}

/// Keys read through the cache: a joined table's rows (read by every stream row that joins
/// them, written once per table change) and a table input's previous rows. An aggregation's
/// groups are not: each read is followed by a write, their keys are often new (Nexmark q18:
/// 1.5 M groups), and caching them here made q18 a fifth slower and doubled its memory
/// (`benches/RESULTS.md`, "A cache in front of RocksDB").
fn cached(key: &[u8]) -> bool {
    matches!(key.first(), Some(&(JOIN_ROW_PREFIX | PREVIOUS_ROW_PREFIX)))
}

impl Generations {
    fn over_total(&self, bytes: usize) -> bool {
        self.total.load(Ordering::Relaxed).saturating_add(bytes) > self.total_limit
    }

    /// The young generation becomes the old one; the old one is dropped.
    fn roll(&mut self) {
        self.old = std::mem::replace(&mut self.young, HashMap::with_capacity(self.old.len()));
        self.total.fetch_sub(self.old_bytes, Ordering::Relaxed);
        self.old_bytes = std::mem::take(&mut self.young_bytes);
    }

    fn insert(&mut self, key: Vec<u8>, value: Stored) {
        if self.generation_bytes == 0 {
            return;
        }
        let bytes = entry_bytes(&key, &value);
        let full = self.young_bytes + bytes > self.generation_bytes;
        if full || self.over_total(bytes) {
            if !full && self.old.is_empty() {
                return;
            }
            self.roll();
            if self.over_total(bytes) {
                return;
            }
        }
        self.young_bytes += bytes;
        self.total.fetch_add(bytes, Ordering::Relaxed);
        let key_len = key.len();
        if let Some(before) = self.young.insert(key, value) {
            // Replaced, not added: its bytes were counted when it came in.
            let gone = entry_bytes(&[], &before) + key_len;
            self.young_bytes = self.young_bytes.saturating_sub(gone);
            self.total.fetch_sub(gone, Ordering::Relaxed);
        }
    }

    fn remove_old(&mut self, key: &[u8]) -> Option<(Vec<u8>, Stored)> {
        let (key, value) = self.old.remove_entry(key)?;
        let bytes = entry_bytes(&key, &value);
        self.old_bytes = self.old_bytes.saturating_sub(bytes);
        self.total.fetch_sub(bytes, Ordering::Relaxed);
        Some((key, value))
    }

    fn get(&mut self, key: &[u8]) -> Option<Stored> {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        let (key, value) = self.remove_old(key)?;
        self.insert(key, value.clone());
        Some(value)
    }
}

impl Drop for Generations {
    fn drop(&mut self) {
        self.total.fetch_sub(self.young_bytes + self.old_bytes, Ordering::Relaxed);
    }
}

impl ReadCache {
    /// A cache of at most about `budget_bytes` (0: none), within `total_limit` bytes for every
    /// query's cache together.
    pub fn new(budget_bytes: usize, total_limit: usize) -> ReadCache {
        ReadCache {
            inner: Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
                young_bytes: 0,
                old_bytes: 0,
                generation_bytes: budget_bytes / 2,
                total_limit,
                total: &TOTAL_BYTES,
            }),
        }
    }

    /// The values of `keys` (full keys in `cf`): a pending write first, then the cache, then
    /// one multi-get for the rest, whose answers are cached.
    pub fn read(
        &self,
        store: &StateStore,
        cf: &str,
        pending: &super::Pending,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Stored>> {
        let mut out: Vec<Stored> = vec![None; keys.len()];
        let mut missing: Vec<usize> = Vec::new();
        {
            let mut cache = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            for (i, k) in keys.iter().enumerate() {
                if let Some(p) = pending.get(k) {
                    out[i] = p.clone();
                } else if let Some(v) = cached(k).then(|| cache.get(k)).flatten() {
                    out[i] = v;
                } else {
                    missing.push(i);
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let wanted: Vec<Vec<u8>> = missing.iter().map(|&i| keys[i].clone()).collect();
        let found = store.multi_get(cf, &wanted)?;
        let mut cache = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for ((i, key), value) in missing.into_iter().zip(wanted).zip(found) {
            if cached(&key) {
                cache.insert(key, value.clone());
            }
            out[i] = value;
        }
        Ok(out)
    }

    /// A checkpoint committed these writes: they are now the stored values.
    pub fn committed(&self, writes: super::Pending) {
        let mut cache = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if cache.generation_bytes == 0 {
            return;
        }
        for (k, v) in writes.into_iter().filter(|(k, _)| cached(k)) {
            cache.remove_old(&k);
            cache.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Vec<u8> {
        let mut k = vec![JOIN_ROW_PREFIX];
        k.extend_from_slice(&n.to_be_bytes());
        k
    }

    #[test]
    fn what_is_read_often_stays_and_the_budget_holds() {
        let mut g = Generations {
            young: HashMap::new(),
            old: HashMap::new(),
            young_bytes: 0,
            old_bytes: 0,
            generation_bytes: 10 * (5 + 3 + ENTRY_OVERHEAD),
            total_limit: usize::MAX,
            total: Box::leak(Box::new(AtomicUsize::new(0))),
        };
        g.insert(key(0), Some(vec![1, 2, 3]));
        for n in 1..100 {
            g.insert(key(n), Some(vec![0; 3]));
            // Key 0 is read after every insert: it never leaves.
            assert_eq!(g.get(&key(0)), Some(Some(vec![1, 2, 3])), "after {n}");
            assert!(g.young.len() <= 10 && g.old.len() <= 10);
            assert!(g.young_bytes <= g.generation_bytes);
        }
        // An early key not read again is gone; a known absence is cached as one.
        assert_eq!(g.get(&key(1)), None);
        g.insert(key(500), None);
        assert_eq!(g.get(&key(500)), Some(None));
        // Replacing a value does not count its key twice.
        let before = g.young_bytes;
        g.insert(key(500), None);
        assert_eq!(g.young_bytes, before);
    }

    #[test]
    fn reads_see_pending_writes_then_commits_and_only_cached_prefixes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let backups = crate::state::backup::BackupConfig { keep: 0, interval: None, ..Default::default() };
        let store = StateStore::open(dir.path(), &backups).unwrap();
        store.ensure_cf("q").unwrap();
        let cache = ReadCache::new(1 << 20, usize::MAX);
        let mut pending = super::super::Pending::new();
        let (k, other) = (key(1), vec![b'o', 1]);
        // Absent, and remembered as absent.
        assert_eq!(cache.read(&store, "q", &pending, &[k.clone(), other.clone()]).unwrap(), vec![None, None]);
        assert_eq!(cache.inner.lock().unwrap().get(&k), Some(None));
        assert_eq!(cache.inner.lock().unwrap().get(&other), None, "offsets are not cached");
        // A pending write is read before the cache.
        pending.insert(k.clone(), Some(b"v1".to_vec()));
        assert_eq!(cache.read(&store, "q", &pending, std::slice::from_ref(&k)).unwrap(), vec![Some(b"v1".to_vec())]);
        // Committed: written to RocksDB and handed to the cache, which answers from then on.
        let mut cp = store.checkpoint("q");
        cp.put(&store, &k, b"v1").unwrap();
        store.commit(cp).unwrap();
        cache.committed(std::mem::take(&mut pending));
        let mut cp = store.checkpoint("q");
        cp.put(&store, &k, b"only in RocksDB").unwrap();
        store.commit(cp).unwrap();
        assert_eq!(cache.read(&store, "q", &pending, std::slice::from_ref(&k)).unwrap(), vec![Some(b"v1".to_vec())]);
        // A committed delete is cached as absent.
        pending.insert(k.clone(), None);
        cache.committed(pending);
        assert_eq!(cache.read(&store, "q", &Default::default(), &[k]).unwrap(), vec![None]);
    }

    #[test]
    fn every_query_s_caches_together_stay_within_the_total() {
        let total: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let entry = 5 + 3 + ENTRY_OVERHEAD;
        let cache = |generation| Generations {
            young: HashMap::new(),
            old: HashMap::new(),
            young_bytes: 0,
            old_bytes: 0,
            generation_bytes: generation,
            total_limit: 8 * entry,
            total,
        };
        let (mut a, mut b) = (cache(100 * entry), cache(100 * entry));
        for n in 0..6 {
            a.insert(key(n), Some(vec![0; 3]));
        }
        assert_eq!(total.load(Ordering::Relaxed), 6 * entry);
        // The other cache gets what is left, then caches nothing more.
        for n in 0..6 {
            b.insert(key(n), Some(vec![0; 3]));
        }
        assert_eq!((b.young.len(), total.load(Ordering::Relaxed)), (2, 8 * entry));
        // Past the limit, a cache with an old generation drops it for new entries.
        a.roll();
        assert_eq!(total.load(Ordering::Relaxed), 8 * entry);
        a.insert(key(50), Some(vec![0; 3]));
        a.insert(key(51), Some(vec![0; 3]));
        assert_eq!((a.young.len(), a.old.len()), (2, 0), "the first insert dropped the old six");
        assert_eq!(total.load(Ordering::Relaxed), 4 * entry);
        drop(a);
        drop(b);
        assert_eq!(total.load(Ordering::Relaxed), 0, "dropped caches give their bytes back");
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = ReadCache::new(0, usize::MAX);
        let mut writes = super::super::Pending::new();
        writes.insert(key(1), Some(vec![1]));
        cache.committed(writes);
        let mut g = cache.inner.lock().unwrap();
        assert_eq!(g.get(&key(1)), None);
    }
}
