//! Log compaction, Kafka's `cleanup.policy=compact`: a partition keeps, for every key, at least
//! its latest record; older records of a key are removed, and so are tombstones (a key with a
//! null value) once they are older than `delete.retention.ms`.
//!
//! Called by [`Partition::compact`] (the server runs it periodically through
//! `Log::compact_all`). It never touches the active segment, anything at or past the high
//! watermark (a query's sink may still cut its unpublished tail), nor records younger than
//! `min.compaction.lag.ms`. Offsets never change: a rewritten batch keeps its base offset, last
//! offset delta, producer fields and the original offset delta and timestamp of every surviving
//! record, so the log has gaps where records were removed, as Kafka's has. A batch that loses
//! every record is dropped, except the last batch of a segment (so every segment still ends
//! where the next begins) and a producer's last batch (its sequence numbers survive a
//! restart); those are kept as empty batches. Control batches are kept as they are.
//!
//! One pass: (1) read the dirty part of the log — from the cleaner's mark (`cleaned_to`) up to
//! the high watermark, active segment included — into a map key → latest offset; (2) rewrite,
//! oldest first, each cleanable segment that loses anything into `<segment>.cleaned`, fsync it,
//! and rename it over the segment (atomic; the partition lock is held only for the rename and
//! the handle swap). Oldest first matters: a tombstone is removed only after every older record
//! of its key, so a crash between two renames never brings a deleted key back. Leftover
//! `.cleaned` files are removed when the partition opens. Everything below `cleaned_to` holds
//! one record per key; the mark lives in memory, so the first pass after a restart reads the
//! whole partition once.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use super::batch::{self, LogBatchHeader, LogRecord, HEADER_BYTES};
use super::partition::Partition;
use super::segment::SegmentView;
use super::{LogError, TopicConfig};

/// What one compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl CompactionStats {
    pub fn add(&mut self, other: &CompactionStats) {
        self.segments_rewritten += other.segments_rewritten;
        self.records_removed += other.records_removed;
        self.tombstones_removed += other.tombstones_removed;
        self.bytes_before += other.bytes_before;
        self.bytes_after += other.bytes_after;
    }
}

/// Suffix of a segment being rewritten; removed at open if a crash left one.
pub(super) const CLEANED_SUFFIX: &str = ".cleaned";
/// Bytes the key map may hold (Kafka's `log.cleaner.dedupe.buffer.size` is 128 MiB). A dirty
/// part with more distinct keys is cleaned in several passes, one stretch of segments each.
const KEY_MAP_BYTES_MAX: usize = 128 << 20;
/// What one map entry costs besides its key (the Vec, the offset, the table slot).
const KEY_ENTRY_OVERHEAD_BYTES: usize = 48;
/// Bytes read from a segment at a time.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// A partition's compaction state.
pub(super) struct Cleaner {
    /// One pass at a time per partition.
    running: Mutex<()>,
    /// Below this offset the log holds one record per key (Kafka's cleaner checkpoint).
    cleaned_to: AtomicI64,
}

impl Cleaner {
    /// Removes what a crash mid-rewrite left in `dir`; the segments themselves are whole
    /// either way (the rename is atomic).
    pub(super) fn open(dir: &Path, log_start_offset: i64) -> Result<Cleaner, LogError> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(CLEANED_SUFFIX) {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(Cleaner { running: Mutex::new(()), cleaned_to: AtomicI64::new(log_start_offset) })
    }

    /// The log was cut at `end`: what comes after it has not been cleaned. Called, like
    /// `mark`, under the partition lock, so a truncation and a pass never interleave here.
    pub(super) fn truncated(&self, end: i64) {
        self.cleaned_to.fetch_min(end, Ordering::SeqCst);
    }

    /// Everything below `offset` (at most the log end) now holds one record per key.
    pub(super) fn mark(&self, offset: i64, log_end_offset: i64) {
        self.cleaned_to.fetch_max(offset.min(log_end_offset), Ordering::SeqCst);
    }
}

/// Rejects a batch with a record without a key: a compacted topic could never remove it
/// (Kafka refuses these too, with INVALID_RECORD).
pub(super) fn require_keys(bytes: &[u8], header: &LogBatchHeader) -> Result<(), LogError> {
    if is_control(header) {
        return Ok(());
    }
    let keyless = if header.compression() == 0 {
        batch::decode_record_refs(bytes)?.iter().position(|r| r.key.is_none())
    } else {
        decode_any(bytes, header)?.iter().position(|r| r.key.is_none())
    };
    match keyless {
        Some(i) => Err(LogError::InvalidRecord(format!(
            "record {i} of the batch has no key, and a compacted topic keeps records by key"
        ))),
        None => Ok(()),
    }
}

fn is_control(header: &LogBatchHeader) -> bool {
    header.attributes & 0x20 != 0
}

/// A record's timestamp as Kafka defines it: the batch's when the topic stamps append time.
fn record_time_ms(header: &LogBatchHeader, record: &LogRecord) -> i64 {
    if header.attributes & 0x08 != 0 {
        header.max_timestamp_ms
    } else {
        record.timestamp_ms
    }
}

/// The records of one batch, compressed or not.
fn decode_any(bytes: &[u8], header: &LogBatchHeader) -> Result<Vec<LogRecord>, LogError> {
    if header.compression() == 0 {
        return batch::decode_records(bytes);
    }
    batch::decode_records(&decompressed(bytes, header)?)
}

/// The same batch with its records section decompressed (CRC not recomputed: only decoded).
fn decompressed(bytes: &[u8], header: &LogBatchHeader) -> Result<Vec<u8>, LogError> {
    // Bounded: a few kilobytes of zstd may inflate to gigabytes (see `decompress`).
    let body = &bytes[HEADER_BYTES..header.total_bytes.min(bytes.len())];
    let records = super::decompress::decompress(
        header.compression() as u8,
        body,
        super::decompress::MAX_DECOMPRESSED_BATCH_BYTES,
    )
    .map_err(|e| LogError::CorruptBatch(format!("cannot decompress a batch: {e}")))?;
    let mut out = Vec::with_capacity(HEADER_BYTES + records.len());
    out.extend_from_slice(&bytes[..HEADER_BYTES]);
    out.extend_from_slice(&records);
    let length = (out.len() - batch::LENGTH_PREFIX_BYTES) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = header.attributes & !0x7;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    Ok(out)
}

/// Reads the batches of one segment file front to back, a chunk at a time.
struct BatchReader<'a> {
    file: &'a File,
    path: &'a Path,
    /// Set for a segment wholly below the high watermark (nothing there changes any more but
    /// by compaction): each batch's CRC is checked, and damage takes this partition offline.
    /// A segment opened from its index was not scanned at start, and a damaged batch must
    /// never be rewritten under a fresh CRC.
    checked_for: Option<&'a Partition>,
    /// Bytes of the file that belong to the segment.
    end: u64,
    /// File position of `buf[at]`.
    position: u64,
    buf: Vec<u8>,
    at: usize,
}

/// A batch as `BatchReader` returns it: its file position, header and bytes.
type BatchAt<'b> = (u64, LogBatchHeader, &'b [u8]);

impl<'a> BatchReader<'a> {
    fn new(seg: &'a SegmentView, checked_for: Option<&'a Partition>) -> BatchReader<'a> {
        let (file, path, end) = (&*seg.file, seg.path.as_path(), seg.size_bytes);
        BatchReader { file, path, checked_for, end, position: 0, buf: Vec::new(), at: 0 }
    }

    fn damaged(&self, position: u64, reason: impl std::fmt::Display) -> LogError {
        let reason = format!("{}: {reason} at byte {position}", self.path.display());
        match self.checked_for {
            Some(partition) => partition.take_offline(reason),
            None => LogError::CorruptBatch(reason),
        }
    }

    /// The next batch: its position, header and bytes.
    fn next_batch(&mut self) -> Result<Option<BatchAt<'_>>, LogError> {
        if self.position >= self.end {
            return Ok(None);
        }
        self.fill(HEADER_BYTES)?;
        let header = LogBatchHeader::parse(&self.buf[self.at..]).map_err(|e| self.damaged(self.position, e))?;
        self.fill(header.total_bytes)?;
        let (start, position) = (self.at, self.position);
        if self.checked_for.is_some() {
            if let Err(e) = batch::validate(&self.buf[start..start + header.total_bytes]) {
                return Err(self.damaged(position, e));
            }
        }
        self.at += header.total_bytes;
        self.position += header.total_bytes as u64;
        Ok(Some((position, header, &self.buf[start..start + header.total_bytes])))
    }

    fn fill(&mut self, need: usize) -> Result<(), LogError> {
        let have = self.buf.len() - self.at;
        if have >= need {
            return Ok(());
        }
        self.buf.drain(..self.at);
        self.at = 0;
        let from = self.position + have as u64;
        let left = (self.end - from.min(self.end)) as usize;
        if left < need - have {
            return Err(self.damaged(self.position, "a batch cut short"));
        }
        let want = (need - have).max(READ_CHUNK_BYTES).min(left);
        let old = self.buf.len();
        self.buf.resize(old + want, 0);
        self.file.read_exact_at(&mut self.buf[old..], from)?;
        Ok(())
    }
}

/// The dirty part of the log, read: every key's latest offset and every producer's last batch.
struct KeyMap {
    latest: HashMap<Vec<u8>, i64>,
    /// Producer id → base offset of its last batch.
    producers: HashMap<i64, i64>,
    /// Every record in [from, end) is in the map (some after `end` may be too).
    end: i64,
}

impl KeyMap {
    /// Reads the records in [`from`, `high_watermark`), stopping at a segment boundary when the
    /// map is full.
    fn build(
        partition: &Partition,
        segments: &[SegmentView],
        from: i64,
        high_watermark: i64,
    ) -> Result<KeyMap, LogError> {
        let mut map = KeyMap { latest: HashMap::new(), producers: HashMap::new(), end: high_watermark };
        let mut bytes = 0usize;
        for seg in segments.iter().filter(|s| s.next_offset > from) {
            if bytes > KEY_MAP_BYTES_MAX {
                map.end = seg.base_offset.max(from);
                return Ok(map);
            }
            let stable = seg.next_offset <= high_watermark;
            let mut reader = BatchReader::new(seg, stable.then_some(partition));
            while let Some((_, header, bytes_of_batch)) = reader.next_batch()? {
                if header.last_offset() >= high_watermark {
                    return Ok(map);
                }
                if header.last_offset() < from || is_control(&header) {
                    continue;
                }
                if header.producer_id >= 0 {
                    map.producers.insert(header.producer_id, header.base_offset);
                }
                // A batch we cannot decode supersedes nothing (and is never removed).
                let Ok(records) = decode_any(bytes_of_batch, &header) else { continue };
                for r in records.into_iter().filter(|r| r.offset >= from) {
                    let Some(key) = r.key else { continue };
                    match map.latest.get_mut(&key) {
                        Some(offset) => *offset = (*offset).max(r.offset),
                        None => {
                            bytes += key.len() + KEY_ENTRY_OVERHEAD_BYTES;
                            map.latest.insert(key, r.offset);
                        }
                    }
                }
            }
        }
        Ok(map)
    }
}

/// What to do with one record.
enum Verdict {
    Keep,
    /// A later record of its key exists.
    Superseded,
    /// The latest record of its key is a tombstone older than `delete.retention.ms`.
    ExpiredTombstone,
}

fn verdict(map: &KeyMap, header: &LogBatchHeader, r: &LogRecord, tombstone_horizon_ms: i64) -> Verdict {
    // A record without a key predates the topic's compaction: it is kept, never guessed about.
    let Some(key) = r.key.as_deref() else { return Verdict::Keep };
    if map.latest.get(key).is_some_and(|&latest| latest > r.offset) {
        return Verdict::Superseded;
    }
    if r.value.is_none() && record_time_ms(header, r) < tombstone_horizon_ms {
        return Verdict::ExpiredTombstone;
    }
    Verdict::Keep
}

/// A segment being rewritten: created at the first change, the unchanged prefix copied in.
struct Rewrite {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Rewrite {
    fn start(seg: &SegmentView, unchanged_bytes: u64) -> Result<Rewrite, LogError> {
        let mut name = seg.path.file_name().unwrap_or_default().to_os_string();
        name.push(CLEANED_SUFFIX);
        let path = seg.path.with_file_name(name);
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
        let mut out = BufWriter::with_capacity(READ_CHUNK_BYTES, file);
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        let mut position = 0u64;
        while position < unchanged_bytes {
            let n = ((unchanged_bytes - position) as usize).min(buf.len());
            seg.file.read_exact_at(&mut buf[..n], position)?;
            out.write_all(&buf[..n])?;
            position += n as u64;
        }
        Ok(Rewrite { path, out })
    }

    /// Flushes and fsyncs the new segment; returns its path.
    fn finish(self) -> Result<PathBuf, LogError> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(self.path)
    }
}

/// Writes the cleaned copy of one sealed segment next to it, or returns `None` when nothing in
/// it can go.
fn clean_segment(
    partition: &Partition,
    seg: &SegmentView,
    map: &KeyMap,
    config: &TopicConfig,
    now_ms: i64,
    stats: &mut CompactionStats,
) -> Result<Option<PathBuf>, LogError> {
    let tombstone_horizon_ms = now_ms.saturating_sub(config.delete_retention_ms);
    let mut rewrite: Option<Rewrite> = None;
    let result = (|| {
        let mut reader = BatchReader::new(seg, Some(partition));
        let mut removed = (0u64, 0u64);
        while let Some((position, header, bytes)) = reader.next_batch()? {
            let last_in_segment = position + header.total_bytes as u64 >= seg.size_bytes;
            let decoded = if is_control(&header) { None } else { decode_any(bytes, &header).ok() };
            // Control batches and batches we cannot decode are kept whole.
            let Some(records) = decoded else {
                if let Some(w) = rewrite.as_mut() {
                    w.out.write_all(bytes)?;
                }
                continue;
            };
            let mut kept = Vec::with_capacity(records.len());
            for r in records {
                match verdict(map, &header, &r, tombstone_horizon_ms) {
                    Verdict::Keep => kept.push(r),
                    Verdict::Superseded => removed.0 += 1,
                    Verdict::ExpiredTombstone => removed.1 += 1,
                }
            }
            let producers_last = header.producer_id >= 0
                && map.producers.get(&header.producer_id).is_none_or(|&base| base == header.base_offset);
            let drop_batch = kept.is_empty() && !last_in_segment && !producers_last;
            if kept.len() == header.record_count as usize && !drop_batch {
                if let Some(w) = rewrite.as_mut() {
                    w.out.write_all(bytes)?;
                }
                continue;
            }
            let w = match rewrite.as_mut() {
                Some(w) => w,
                None => rewrite.insert(Rewrite::start(seg, position)?),
            };
            if !drop_batch {
                w.out.write_all(&batch::encode_retained(bytes, &header, &kept))?;
            }
        }
        Ok::<_, LogError>(removed)
    })();
    let (superseded, tombstones) = match result {
        Ok(removed) => removed,
        Err(e) => {
            if let Some(w) = rewrite {
                let _ = fs::remove_file(&w.path);
            }
            return Err(e);
        }
    };
    let Some(w) = rewrite else { return Ok(None) };
    let path = w.path.clone();
    let finished = w.finish().inspect_err(|_| {
        let _ = fs::remove_file(&path);
    })?;
    stats.records_removed += superseded;
    stats.tombstones_removed += tombstones;
    Ok(Some(finished))
}

impl Partition {
    /// One compaction pass, if the topic compacts and enough of the log is dirty
    /// (`min.cleanable.dirty.ratio`). Readers and appends go on while it runs.
    pub fn compact(&self, now_ms: i64) -> Result<CompactionStats, LogError> {
        self.compact_with(now_ms, &|point| {
            crate::failpoint::hit(point);
            false
        })
    }

    /// `compact`, where `crash_at(point)` returning true stops the pass right there as a crash
    /// would, leaving the files as they are (tests).
    pub(super) fn compact_with(
        &self,
        now_ms: i64,
        crash_at: &dyn Fn(&str) -> bool,
    ) -> Result<CompactionStats, LogError> {
        let config = self.config();
        let mut stats = CompactionStats::default();
        if !config.cleanup_policy.compacts() || self.offline_reason().is_some() {
            return Ok(stats);
        }
        let cleaner = self.cleaner();
        let _running = cleaner.running.lock().unwrap_or_else(|p| p.into_inner());
        let high_watermark = self.high_watermark();
        let segments = self.segment_views();
        let Some((_active, sealed)) = segments.split_last() else { return Ok(stats) };
        let from = cleaner.cleaned_to.load(Ordering::SeqCst).max(segments[0].base_offset);
        let lag_horizon_ms = now_ms.saturating_sub(config.min_compaction_lag_ms);
        let cleanable = sealed
            .iter()
            .take_while(|s| {
                s.next_offset <= high_watermark
                    && (config.min_compaction_lag_ms == 0 || s.max_timestamp_ms <= lag_horizon_ms)
            })
            .count();
        let (clean, dirty) = sealed[..cleanable].iter().fold((0u64, 0u64), |(c, d), s| {
            if s.next_offset <= from {
                (c + s.size_bytes, d)
            } else {
                (c, d + s.size_bytes)
            }
        });
        if dirty == 0 || (dirty as f64) < config.min_cleanable_dirty_ratio * (clean + dirty) as f64 {
            return Ok(stats);
        }
        let map = KeyMap::build(self, &segments, from, high_watermark)?;
        let to_clean = sealed[..cleanable].iter().take_while(|s| s.next_offset <= map.end).count();
        if to_clean == 0 {
            return Err(LogError::Unsupported(format!(
                "compaction of {}-{}: the keys of one segment do not fit in the {KEY_MAP_BYTES_MAX}-byte key map",
                self.topic, self.id
            )));
        }
        for seg in &sealed[..to_clean] {
            let Some(cleaned) = clean_segment(self, seg, &map, &config, now_ms, &mut stats)? else { continue };
            let size_bytes = fs::metadata(&cleaned)?.len();
            if !self.replace_segment(seg, &cleaned, crash_at)? {
                // Retention or a truncation changed the log meanwhile: the next pass starts over.
                let _ = fs::remove_file(&cleaned);
                return Ok(stats);
            }
            stats.segments_rewritten += 1;
            stats.bytes_before += seg.size_bytes;
            stats.bytes_after += size_bytes;
        }
        self.mark_cleaned(sealed[to_clean - 1].next_offset);
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;
    use std::sync::Arc;

    use super::*;
    use crate::log::batch::encode_batch;
    use crate::log::{Clock, Log};

    struct TestClock(AtomicI64);

    impl Clock for TestClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn rec(key: &str, value: Option<&str>, timestamp_ms: i64) -> LogRecord {
        LogRecord {
            offset: 0,
            timestamp_ms,
            key: Some(key.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: vec![("h".into(), Some(b"x".to_vec()))],
        }
    }

    fn config() -> TopicConfig {
        TopicConfig { segment_bytes: 300, delete_retention_ms: 1_000, ..TopicConfig::compacted(1) }
    }

    /// Every record readable from offset 0, in order.
    fn read_all(log: &Log) -> Vec<LogRecord> {
        let p = log.partition("t", 0).unwrap();
        let read = p.read(p.log_start_offset(), 1 << 20).unwrap();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < read.bytes.len() {
            let h = LogBatchHeader::parse(&read.bytes[pos..]).unwrap();
            out.extend(batch::decode_records(&read.bytes[pos..pos + h.total_bytes]).unwrap());
            pos += h.total_bytes;
        }
        out
    }

    /// Key → (offset, value) of the latest record of each key still readable.
    fn latest(records: &[LogRecord]) -> std::collections::BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
        records.iter().map(|r| (r.key.clone().unwrap(), (r.offset, r.value.clone()))).collect()
    }

    /// Sealed segments with superseded values, a tombstone for `b` (older than the
    /// tombstone retention at time 10_000) and one live key after it.
    fn fill(log: &Log) {
        for round in 0..6 {
            for key in ["a", "b", "c"] {
                let value = format!("{key}{round}-{}", "x".repeat(40));
                log.append("t", 0, &mut encode_batch(&[rec(key, Some(&value), 100 + round)])).unwrap();
            }
        }
        log.append("t", 0, &mut encode_batch(&[rec("b", None, 200)])).unwrap();
        for i in 0..8 {
            log.append("t", 0, &mut encode_batch(&[rec("d", Some(&format!("d{i}{}", "y".repeat(40))), 300)])).unwrap();
        }
    }

    #[test]
    fn compaction_keeps_the_latest_record_of_each_key_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TestClock(AtomicI64::new(500)));
        let log = Log::open(dir.path(), clock.clone()).unwrap();
        log.create_topic("t", config()).unwrap();
        fill(&log);
        let before = read_all(&log);
        let p = log.partition("t", 0).unwrap();
        let size_before = p.size_bytes();
        let stats = p.compact(500).unwrap();
        assert!(stats.segments_rewritten > 0 && stats.records_removed > 0, "{stats:?}");
        assert_eq!(stats.tombstones_removed, 0, "the tombstone is younger than delete.retention.ms");
        let after = read_all(&log);
        assert_eq!(latest(&after), latest(&before));
        assert!(after.windows(2).all(|w| w[0].offset < w[1].offset));
        assert!(p.size_bytes() < size_before);
        // Tombstone retention passed: `b` goes entirely; nothing of it comes back on reopen.
        clock.0.store(10_000, Ordering::SeqCst);
        p.compact(10_000).unwrap();
        drop(p);
        drop(log);
        let log = Log::open(dir.path(), clock.clone()).unwrap();
        log.partition("t", 0).unwrap().compact(10_000).unwrap();
        let after = read_all(&log);
        assert!(after.iter().all(|r| r.key.as_deref() != Some(b"b".as_slice())), "{after:?}");
        let mut expected = latest(&before);
        expected.remove(b"b".as_slice());
        assert_eq!(latest(&after), expected);
        // Appends continue at the same next offset.
        let end = before.last().unwrap().offset + 1;
        assert_eq!(log.append("t", 0, &mut encode_batch(&[rec("e", Some("1"), 1)])).unwrap().base_offset, end);
    }

    #[test]
    fn a_crash_at_each_point_of_the_swap_reopens_with_every_key() {
        for point in ["log:compact:before-rename", "log:compact:after-rename"] {
            for nth in 1..=3 {
                let dir = tempfile::tempdir().unwrap();
                let clock = Arc::new(TestClock(AtomicI64::new(10_000)));
                let log = Log::open(dir.path(), clock.clone()).unwrap();
                log.create_topic("t", config()).unwrap();
                fill(&log);
                let before = read_all(&log);
                let p = log.partition("t", 0).unwrap();
                let hits = std::cell::Cell::new(0);
                let crashed = p.compact_with(10_000, &|at| {
                    if at == point {
                        hits.set(hits.get() + 1);
                    }
                    at == point && hits.get() == nth
                });
                assert!(crashed.is_err(), "{point} #{nth} was reached");
                let leftovers = |dir: &Path| {
                    fs::read_dir(dir.join("t/0"))
                        .unwrap()
                        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(CLEANED_SUFFIX))
                        .count()
                };
                assert_eq!(leftovers(dir.path()), usize::from(point.ends_with("before-rename")));
                drop(p);
                drop(log);
                let log = Log::open(dir.path(), clock.clone()).unwrap();
                assert_eq!(leftovers(dir.path()), 0, "the temporary copy is removed at open");
                let p = log.partition("t", 0).unwrap();
                assert!(p.offline_reason().is_none(), "{point}: {:?}", p.offline_reason());
                let mut expected = latest(&before);
                let got = latest(&read_all(&log));
                // The tombstone of `b` may be gone (it is old enough), but then so is all of `b`.
                if !got.contains_key(b"b".as_slice()) {
                    expected.remove(b"b".as_slice());
                }
                assert_eq!(got, expected, "{point} #{nth}");
                p.compact(10_000).unwrap();
                expected.remove(b"b".as_slice());
                assert_eq!(latest(&read_all(&log)), expected, "{point} #{nth}, compacted after the restart");
            }
        }
    }

    #[test]
    fn a_compacted_topic_refuses_records_without_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Arc::new(TestClock(AtomicI64::new(0)))).unwrap();
        log.create_topic("t", config()).unwrap();
        let mut keyless = rec("a", Some("v"), 1);
        keyless.key = None;
        let err = log.append("t", 0, &mut encode_batch(&[rec("a", Some("v"), 1), keyless])).unwrap_err();
        assert!(matches!(err, LogError::InvalidRecord(_)), "{err}");
        assert_eq!(log.partition("t", 0).unwrap().log_end_offset(), 0, "nothing of the batch was written");
    }

    #[test]
    fn compressed_batches_are_compacted_and_written_uncompressed() {
        use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
        let record = |offset: i64, key: &str, value: &str| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32,
            timestamp: 5 + offset,
            key: Some(bytes::Bytes::from(key.to_string())),
            value: Some(bytes::Bytes::from(value.to_string())),
            headers: Default::default(),
            delete_horizon: false,
        };
        let mut buf = bytes::BytesMut::new();
        let records = [record(0, "a", "1"), record(1, "b", "2"), record(2, "a", "3")];
        let options = RecordEncodeOptions { version: 2, compression: Compression::Gzip };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Arc::new(TestClock(AtomicI64::new(0)))).unwrap();
        log.create_topic("t", TopicConfig { segment_bytes: 1, ..config() }).unwrap();
        log.append("t", 0, &mut buf.to_vec()).unwrap();
        log.append("t", 0, &mut encode_batch(&[rec("c", Some("4"), 9)])).unwrap();
        let p = log.partition("t", 0).unwrap();
        assert_eq!(p.compact(0).unwrap().records_removed, 1);
        let got: Vec<_> = read_all(&log).into_iter().map(|r| (r.offset, r.key.unwrap(), r.timestamp_ms)).collect();
        assert_eq!(got, vec![(1, b"b".to_vec(), 6), (2, b"a".to_vec(), 7), (3, b"c".to_vec(), 9)]);
    }
}
