//! The state store: one RocksDB holding the catalog and every query's operator state.
//!
//! Each persistent query owns one column family (`q_<QUERY_ID>`) holding its table rows and
//! aggregate accumulators (keys in memcomparable order, prefix `r`), the source offsets it
//! has consumed (prefix `o`) and its sink's output positions (prefix `s`). A checkpoint writes
//! all three in one `WriteBatch` with `sync`, so after any crash they agree.

pub mod backup;
mod scrub;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, MultiThreaded,
    Options, WriteBatch, WriteOptions, DB,
};

use self::backup::{BackupConfig, BackupRequests, DAMAGED};
use crate::error::{EddyError, Result};

pub type Db = rocksdb::DBWithThreadMode<MultiThreaded>;

pub const CATALOG_CF: &str = "catalog";

/// In `CATALOG_CF`: where a topic's committed query output ends, per partition, written by
/// every checkpoint of a query that writes the topic (in the same atomic write as its own
/// ends). Several queries may write one stream (`INSERT INTO ... SELECT`): a query resuming
/// after a crash cuts the topic at the newest of these, never at its own older end, which
/// would drop what the others committed since.
pub fn sink_end_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = format!("sink-end/{topic}/").into_bytes();
    key.extend_from_slice(&partition.to_be_bytes());
    key
}
// Key prefixes inside a query's column family.
/// A result row (group or table row) by its memcomparable key.
pub const ROW_PREFIX: u8 = b'r';
/// An EMIT FINAL aggregation's groups while their windows are open.
pub const WORKING_PREFIX: u8 = b'a';
/// Next source offset per partition.
pub const OFFSET_PREFIX: u8 = b'o';
/// Committed end of the sink per partition.
pub const SINK_PREFIX: u8 = b's';
/// Committed end of the `LATE DATA TO` stream per partition.
pub const LATE_SINK_PREFIX: u8 = b'l';
/// Next offset of a joined table's topic per partition.
pub const JOIN_OFFSET_PREFIX: u8 = b'j';
/// A joined table's row by primary key (the query's own copy of the table).
pub const JOIN_ROW_PREFIX: u8 = b'k';
/// The previous row of a source table's key, to retract it when the key changes.
pub const PREVIOUS_ROW_PREFIX: u8 = b'p';
/// Open windows by close time: `w` + close ms (big-endian, sign-flipped) + group key.
pub const WINDOW_OPEN_PREFIX: u8 = b'w';
/// Closed windows by expiry (RETENTION): `x` + expiry ms + group key.
pub const WINDOW_EXPIRY_PREFIX: u8 = b'x';
/// The query's watermark (windows close on it). Before per-partition event times were kept
/// it was the largest event time seen; state written then resumes with it as the watermark.
pub const STREAM_TIME_KEY: &[u8] = b"t";
/// The format of the query's state (u32, big-endian): see `STATE_FORMAT`.
pub const STATE_FORMAT_KEY: &[u8] = b"V";
/// 2: aggregate groups are typed (binary accumulators, keys in Arrow's row format). Queries
/// without the key wrote format 1 (JSON groups, keys over JSON values).
pub const STATE_FORMAT: u32 = 2;
/// An input partition's event time: `T` + input (0 the source, 1 a joined stream) + partition.
pub const PARTITION_TIME_PREFIX: u8 = b'T';

/// Table blocks RocksDB keeps decoded in memory, shared by every column family.
const BLOCK_CACHE_BYTES: usize = 128 << 20;
/// Memtables of all column families together (each flushes at 64 MiB on its own).
const MEMTABLE_BYTES: usize = 256 << 20;
/// WAL kept across all column families (see `open_db`).
const MAX_WAL_BYTES: u64 = 128 << 20;

/// The options of every column family. State is mostly short-lived (window groups, join
/// buffers, offsets), so flushes write table files uncompressed and only the bottom level,
/// where data that lasts ends up, is compressed; point reads (`multi_get` per batch) skip
/// files through bloom filters, and index and filter blocks live in the bounded cache.
///
/// Index and filter blocks are partitioned (4 KiB partitions under a pinned top level). Whole,
/// a 64 MiB table file's filter is about 6 MiB, larger than a shard of the block cache (RocksDB
/// splits 128 MiB into 64 shards of 2 MiB) and a block larger than its shard is dropped as soon
/// as it has been read: every point read that reached the file read and checksummed the whole
/// filter again (about 1 ms a lookup at 10 M keys: 35% of the time copying file pages, 19% in
/// XXH3). Partitions fit and stay cached. (Four shards of 32 MiB instead were measured too:
/// the whole filters then stay until data blocks push them out, and lookups' p99 was 2-3 ms.)
fn column_family_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_pin_top_level_index_and_filter(true);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_bottommost_compression_type(DBCompressionType::Lz4);
    opts
}

#[derive(Clone)]
pub struct StateStore {
    db: Arc<Db>,
    /// The block cache every column family shares.
    cache: Cache,
    /// Opened read-only because the disk was full at start: writes are refused.
    pub read_only: bool,
    /// The thread taking backups (none when read-only or backups are off).
    backups: Option<BackupRequests>,
    /// The thread reading every block in the background (none when read-only).
    scrub: Option<Arc<scrub::Scrub>>,
}

/// One atomic set of writes to one query's column family.
pub struct Checkpoint {
    cf: String,
    batch: WriteBatch,
}

impl Checkpoint {
    pub fn put(&mut self, store: &StateStore, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = store.cf(&self.cf)?;
        self.batch.put_cf(&cf, key, value);
        Ok(())
    }
    pub fn delete(&mut self, store: &StateStore, key: &[u8]) -> Result<()> {
        let cf = store.cf(&self.cf)?;
        self.batch.delete_cf(&cf, key);
        Ok(())
    }
    /// Deletes every key that starts with `prefix` (one range tombstone: nothing is read).
    pub fn delete_prefix(&mut self, store: &StateStore, prefix: &[u8]) -> Result<()> {
        let cf = store.cf(&self.cf)?;
        self.batch.delete_range_cf(&cf, prefix, prefix_end(prefix).as_slice());
        Ok(())
    }
    /// Many puts (`Some`) and deletes (`None`), the column family looked up once.
    pub fn write_all<'a>(
        &mut self,
        store: &StateStore,
        writes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Result<()> {
        let cf = store.cf(&self.cf)?;
        for (k, v) in writes {
            match v {
                Some(v) => self.batch.put_cf(&cf, k, v),
                None => self.batch.delete_cf(&cf, k),
            }
        }
        Ok(())
    }
    /// A put into another column family, in the same atomic write.
    pub fn put_in(&mut self, store: &StateStore, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = store.cf(cf)?;
        self.batch.put_cf(&cf, key, value);
        Ok(())
    }
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

impl StateStore {
    /// Opens the store at `path` and checks it (see `scrub`: every block's checksum when its
    /// table files changed since they were recorded, else in the background). A damaged store
    /// is replaced by its newest good backup (see `backup`); backups then run as `backups` says.
    pub fn open(path: &Path, backups: &BackupConfig) -> Result<StateStore> {
        let mut store = if backups.keep > 0 && !path.exists() && backup::any(path) {
            let missing = EddyError::State(format!("{DAMAGED}the directory is missing"));
            backup::fall_back(path, &missing, Self::open_verified)?
        } else {
            match Self::open_verified(path) {
                Ok(store) => store,
                Err(e) if backups.keep > 0 && backup::is_damage(&e) => {
                    backup::fall_back(path, &e, Self::open_verified)?
                }
                Err(e) => return Err(e),
            }
        };
        if backups.keep > 0 && !store.read_only {
            store.backups = Some(backup::start(store.db.clone(), path, backups)?);
        }
        Ok(store)
    }

    fn open_verified(path: &Path) -> Result<StateStore> {
        if backup::lost_current(path) {
            return Err(EddyError::State(format!("{DAMAGED}{} has table files but no CURRENT file", path.display())));
        }
        if let Some(damage) = scrub::marked_damage(path) {
            return Err(EddyError::State(damage));
        }
        let mut store = Self::open_db(path)?;
        let started = std::time::Instant::now();
        let checked_now = match scrub::why_full_check(&store.db)? {
            Some(why) => {
                // Damage in a table file shows up now, at start, rather than in a query.
                scrub::read_every_block(&store.db, None)?;
                tracing::info!("state store verified in {:?}: every block read ({why})", started.elapsed());
                if !store.read_only {
                    scrub::write_record(&store.db)?;
                }
                true
            }
            None => {
                scrub::read_blocks(&store.db, &[CATALOG_CF.to_string()], None)?;
                tracing::info!(
                    "state store checked in {:?}: table files as recorded, the catalog read; every other block is read \
                     in the background",
                    started.elapsed()
                );
                false
            }
        };
        if !store.read_only {
            store.scrub = Some(Arc::new(scrub::Scrub::start(store.db.clone(), !checked_now)?));
        }
        Ok(store)
    }

    fn open_db(path: &Path) -> Result<StateStore> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_paranoid_checks(true);
        // Bound what RocksDB may keep open and buffer (limits on everything).
        opts.set_max_open_files(512);
        opts.set_write_buffer_size(16 << 20);
        opts.set_db_write_buffer_size(MEMTABLE_BYTES);
        // WAL files live until every column family with writes in them has flushed: one
        // quiet query kept a busy one's old WAL files (seen: two 55 MB files beside a 10 M-row
        // table). Past this total, RocksDB flushes the column families that hold the oldest
        // WAL, so the disk holds, and a start after a crash replays, at most about this much.
        opts.set_max_total_wal_size(MAX_WAL_BYTES);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut names = <DB>::list_cf(&opts, path).unwrap_or_default();
        if !names.iter().any(|n| n == CATALOG_CF) {
            names.push(CATALOG_CF.to_string());
        }
        let cfs = || names.iter().map(|n| ColumnFamilyDescriptor::new(n, column_family_options(&cache)));
        match Db::open_cf_descriptors(&opts, path, cfs()) {
            Ok(db) => Ok(StateStore { db: Arc::new(db), cache, read_only: false, backups: None, scrub: None }),
            // Opening writes (a new manifest, a flushed WAL): on a full disk, come up
            // read-only so reads and pull queries still work.
            Err(e) if e.to_string().contains("No space left on device") => {
                tracing::error!(
                    "the disk is full: starting READ-ONLY (reads and pull queries work; writes, DDL and \
                     continuous queries wait for a restart with free space): {e}"
                );
                let db = Db::open_cf_descriptors_read_only(&opts, path, cfs(), false)?;
                Ok(StateStore { db: Arc::new(db), cache, read_only: true, backups: None, scrub: None })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Asks for a backup soon: the catalog changed (DDL, users).
    pub fn request_backup(&self) {
        if let Some(b) = &self.backups {
            b.request();
        }
    }

    /// At a clean shutdown: stops the backup thread and writes every memtable to table files
    /// (the next start replays no WAL).
    pub fn close(&self) -> Result<()> {
        if let Some(b) = &self.backups {
            b.stop();
        }
        if let Some(s) = &self.scrub {
            s.stop();
        }
        if self.read_only {
            return Ok(());
        }
        let names = <DB>::list_cf(&Options::default(), self.db.path()).unwrap_or_default();
        for name in names {
            if let Some(handle) = self.db.cf_handle(&name) {
                self.db.flush_cf(&handle)?;
            }
        }
        // The next start finds these files as they are now and reads none of their blocks.
        scrub::write_record(&self.db)
    }

    fn cf(&self, name: &str) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>> {
        self.db.cf_handle(name).ok_or_else(|| EddyError::Internal(format!("column family {name} missing")))
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(EddyError::ReadOnly(
                "the disk was full when the server started; free space and restart it to write".into(),
            ));
        }
        Ok(())
    }

    pub fn ensure_cf(&self, name: &str) -> Result<()> {
        self.writable()?;
        if self.db.cf_handle(name).is_none() {
            self.db.create_cf(name, &column_family_options(&self.cache))?;
        }
        Ok(())
    }

    /// RocksDB's estimate of the live data in every column family, in bytes.
    pub fn live_bytes(&self) -> u64 {
        self.column_families()
            .iter()
            .filter_map(|name| self.db.cf_handle(name))
            .filter_map(|cf| self.db.property_int_value_cf(&cf, "rocksdb.estimate-live-data-size").ok().flatten())
            .sum()
    }

    /// The names of the store's column families.
    pub fn column_families(&self) -> Vec<String> {
        <DB>::list_cf(&Options::default(), self.db.path()).unwrap_or_default()
    }

    pub fn drop_cf(&self, name: &str) -> Result<()> {
        self.writable()?;
        if self.db.cf_handle(name).is_some() {
            self.db.drop_cf(name)?;
        }
        Ok(())
    }

    pub fn checkpoint(&self, cf: &str) -> Checkpoint {
        Checkpoint { cf: cf.to_string(), batch: WriteBatch::default() }
    }

    /// A checkpoint whose batch has room for about `bytes` of keys and values from the start:
    /// grown by doubling instead, a batch of tens of MiB is copied and its new pages faulted in
    /// again at every doubling (2.5% of Nexmark q4's time went to copying it in a profile; the
    /// change alone measured 1.05× on q4, within run-to-run spread).
    pub fn checkpoint_with_capacity(&self, cf: &str, bytes: usize) -> Checkpoint {
        Checkpoint { cf: cf.to_string(), batch: WriteBatch::with_capacity_bytes(bytes) }
    }

    /// Writes a checkpoint durably (fsync'd WAL) and atomically.
    pub fn commit(&self, checkpoint: Checkpoint) -> Result<()> {
        self.writable()?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(checkpoint.batch, &wo)?;
        Ok(())
    }

    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(&self.cf(cf)?, key)?)
    }

    /// Point reads for a whole batch of keys at once.
    pub fn multi_get(&self, cf: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let handle = self.cf(cf)?;
        self.db
            .batched_multi_get_cf(&handle, keys.iter(), false)
            .into_iter()
            .map(|r| r.map(|o| o.map(|p| p.to_vec())).map_err(EddyError::from))
            .collect()
    }

    /// A consistent view of every column family as of now, for reads that must agree with
    /// each other (a pull query over several tables).
    pub fn snapshot(&self) -> StoreSnapshot {
        let db = self.db.clone();
        // SAFETY: the snapshot borrows the `Db` inside the `Arc`, whose address never moves;
        // `StoreSnapshot` keeps that `Arc` and drops the snapshot first (field order).
        let snapshot = unsafe {
            std::mem::transmute::<rocksdb::SnapshotWithThreadMode<'_, Db>, rocksdb::SnapshotWithThreadMode<'static, Db>>(
                db.snapshot(),
            )
        };
        StoreSnapshot { snapshot, db }
    }

    /// Whether any key starts with `prefix`.
    pub fn has_prefix(&self, cf: &str, prefix: &[u8]) -> Result<bool> {
        let handle = self.cf(cf)?;
        let mut it = self.db.iterator_cf(&handle, IteratorMode::From(prefix, Direction::Forward));
        Ok(match it.next() {
            Some(item) => item?.0.starts_with(prefix),
            None => false,
        })
    }

    /// Every (key, value) whose key starts with `prefix`, read from one consistent snapshot.
    /// `max_bytes` bounds the memory a scan may take.
    pub fn scan_prefix(&self, cf: &str, prefix: &[u8], max_bytes: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let never = std::sync::atomic::AtomicBool::new(false);
        self.snapshot().scan_range(cf, prefix, &prefix_end(prefix), max_bytes, &never)
    }
}

/// The smallest key past every key that starts with `prefix` (empty: there is none, every
/// key from `prefix` on starts with it).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            break;
        }
    }
    end
}

/// A read-only view of the store at one point in time (one RocksDB snapshot). Cheap to take;
/// while it lives RocksDB keeps the versions it sees, so it is held for one statement only.
pub struct StoreSnapshot {
    // Declared before `db`: dropped first, while the database it points into still exists.
    snapshot: rocksdb::SnapshotWithThreadMode<'static, Db>,
    db: Arc<Db>,
}

impl StoreSnapshot {
    fn cf(&self, name: &str) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>> {
        self.db.cf_handle(name).ok_or_else(|| EddyError::Internal(format!("column family {name} missing")))
    }

    fn read_options(&self) -> rocksdb::ReadOptions {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        opts
    }

    /// Point reads of `keys` (sorted or not), as of the snapshot.
    pub fn multi_get(&self, cf: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let handle = self.cf(cf)?;
        self.db
            .batched_multi_get_cf_opt(&handle, keys.iter(), false, &self.read_options())
            .into_iter()
            .map(|r| r.map(|o| o.map(|p| p.to_vec())).map_err(EddyError::from))
            .collect()
    }

    /// Every (key, value) with `from <= key < to` (`to` empty: no upper bound), in key order,
    /// as of the snapshot. Stops with 54000 past `max_bytes`, and with 57014 once `cancel`
    /// is set (the statement timed out or was cancelled).
    pub fn scan_range(
        &self,
        cf: &str,
        from: &[u8],
        to: &[u8],
        max_bytes: usize,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let handle = self.cf(cf)?;
        let mut opts = self.read_options();
        if !to.is_empty() {
            opts.set_iterate_upper_bound(to.to_vec());
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (n, item) in
            self.db.iterator_cf_opt(&handle, opts, IteratorMode::From(from, Direction::Forward)).enumerate()
        {
            if n % 1024 == 1023 && cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(EddyError::Canceled);
            }
            let (k, v) = item?;
            bytes += k.len() + v.len();
            if bytes > max_bytes {
                return Err(EddyError::LimitExceeded(format!(
                    "scan of more than {max_bytes} bytes (raise --query-memory-bytes)"
                )));
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}
