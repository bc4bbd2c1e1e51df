//! Segment index files: what a full scan of a segment would compute, kept beside it so a
//! restart need not read the segment (Kafka's `.index` and `.timeindex`, in one file).
//!
//! Written when a segment is sealed (rolled), when compaction rewrites one, and for the
//! active segment at a clean shutdown; always to `<segment>.index.tmp`, fsynced, then renamed
//! over `{base:020}.index` (the caller fsyncs the directory). Read by `Partition::open`: an
//! index is used only when its checksum holds, it describes a file of the segment's exact
//! length, and the batch it names last really ends the file; anything else falls back to the
//! full scan, which writes the index again. It never decides what data exists, only how fast
//! the partition opens.
//!
//! ```text
//! magic "EDDYIDX1" | base_offset i64 | size_bytes u64 | next_offset i64 |
//! max_timestamp_ms i64 | bytes_since_index u64 | last_batch_position u64 |
//! offset_entries u32 | time_entries u32 |
//! offset_entries × (offset i64, position u64) | time_entries × (timestamp_ms i64, offset i64) |
//! crc32c u32 (of everything before it)
//! ```
//! Integers are little-endian.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::LogError;

const MAGIC: &[u8; 8] = b"EDDYIDX1";
const FIXED_BYTES: usize = 8 + 6 * 8 + 2 * 4;
const ENTRY_BYTES: usize = 16;
const CRC_BYTES: usize = 4;
/// Suffix of an index being written; a crash may leave one, removed at open.
pub(super) const TMP_SUFFIX: &str = ".index.tmp";
/// No batch in the segment (it is empty).
pub(super) const NO_BATCH: u64 = u64::MAX;

/// The scan's results for one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SegmentIndex {
    pub base_offset: i64,
    pub size_bytes: u64,
    pub next_offset: i64,
    pub max_timestamp_ms: i64,
    pub bytes_since_index: u64,
    /// Where the last batch starts (`NO_BATCH` when empty): checked at load against the file,
    /// so an index that outlived a rewrite of its segment is not trusted.
    pub last_batch_position: u64,
    pub offset_index: Vec<(i64, u64)>,
    pub time_index: Vec<(i64, i64)>,
}

pub(super) fn path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

fn tmp_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}{TMP_SUFFIX}"))
}

impl SegmentIndex {
    fn encode(&self) -> Vec<u8> {
        let entries = self.offset_index.len() + self.time_index.len();
        let mut out = Vec::with_capacity(FIXED_BYTES + entries * ENTRY_BYTES + CRC_BYTES);
        out.extend_from_slice(MAGIC);
        for v in [self.base_offset, self.size_bytes as i64, self.next_offset, self.max_timestamp_ms] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.bytes_since_index.to_le_bytes());
        out.extend_from_slice(&self.last_batch_position.to_le_bytes());
        out.extend_from_slice(&(self.offset_index.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.time_index.len() as u32).to_le_bytes());
        for &(offset, position) in &self.offset_index {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&position.to_le_bytes());
        }
        for &(timestamp_ms, offset) in &self.time_index {
            out.extend_from_slice(&timestamp_ms.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The index in `bytes`, or why it cannot be used.
    fn decode(bytes: &[u8]) -> Result<SegmentIndex, &'static str> {
        if bytes.len() < FIXED_BYTES + CRC_BYTES || &bytes[..8] != MAGIC {
            return Err("not an index file");
        }
        let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err("a bad checksum");
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes")) as usize;
        let (offset_entries, time_entries) = (u32_at(56), u32_at(60));
        if body.len() != FIXED_BYTES + (offset_entries + time_entries) * ENTRY_BYTES {
            return Err("entry counts that do not match its length");
        }
        let pair = |i: usize| {
            let at = FIXED_BYTES + i * ENTRY_BYTES;
            (u64_at(at), u64_at(at + 8))
        };
        let index = SegmentIndex {
            base_offset: u64_at(8) as i64,
            size_bytes: u64_at(16),
            next_offset: u64_at(24) as i64,
            max_timestamp_ms: u64_at(32) as i64,
            bytes_since_index: u64_at(40),
            last_batch_position: u64_at(48),
            offset_index: (0..offset_entries).map(|i| (pair(i).0 as i64, pair(i).1)).collect(),
            time_index: (offset_entries..offset_entries + time_entries)
                .map(|i| (pair(i).0 as i64, pair(i).1 as i64))
                .collect(),
        };
        index.check()?;
        Ok(index)
    }

    /// What any index the scan wrote satisfies; a checksum can be right over wrong content only
    /// through a bug, and then the partition is scanned instead.
    fn check(&self) -> Result<(), &'static str> {
        let empty = self.size_bytes == 0;
        let sane = self.next_offset >= self.base_offset
            && empty == (self.last_batch_position == NO_BATCH)
            && (empty || self.last_batch_position < self.size_bytes)
            && self.offset_index.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && self
                .offset_index
                .iter()
                .all(|&(o, p)| o >= self.base_offset && o < self.next_offset && p < self.size_bytes)
            && self.time_index.len() == self.offset_index.len()
            && self.time_index.iter().zip(&self.offset_index).all(|(t, o)| t.1 == o.0);
        if sane {
            Ok(())
        } else {
            Err("entries out of order or out of the segment")
        }
    }
}

/// Writes the index of segment `index.base_offset` in `dir`, durably except for the
/// directory entry (the caller fsyncs `dir`, once for whatever else it renamed).
pub(super) fn write(dir: &Path, index: &SegmentIndex) -> Result<(), LogError> {
    let tmp = tmp_path(dir, index.base_offset);
    let written = (|| {
        let mut file = OpenOptions::new().create(true).write(true).truncate(true).open(&tmp)?;
        file.write_all(&index.encode())?;
        file.sync_all()?;
        fs::rename(&tmp, path(dir, index.base_offset))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(LogError::from)
}

/// The index of segment `base_offset` in `dir` if it describes `segment` as it is now (same
/// length, same last batch); `Err(reason)` when it is missing or cannot be used.
pub(super) fn load(dir: &Path, base_offset: i64, segment: &File) -> Result<SegmentIndex, String> {
    let bytes = match fs::read(path(dir, base_offset)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("no index".into()),
        Err(e) => return Err(format!("an unreadable index ({e})")),
    };
    let index = SegmentIndex::decode(&bytes).map_err(|reason| format!("an index with {reason}"))?;
    if index.base_offset != base_offset {
        return Err("an index of another segment".into());
    }
    let len = segment.metadata().map_err(|e| format!("an unreadable segment ({e})"))?.len();
    if len != index.size_bytes {
        return Err(format!("an index for {} bytes, the segment has {len}", index.size_bytes));
    }
    if !last_batch_ends_file(segment, &index) {
        return Err("an index whose last batch does not end the segment".into());
    }
    Ok(index)
}

/// Whether a batch header at `last_batch_position` ends exactly at the end of the file with
/// the index's next offset (one 61-byte read).
fn last_batch_ends_file(segment: &File, index: &SegmentIndex) -> bool {
    use super::batch::{LogBatchHeader, HEADER_BYTES};
    use std::os::unix::fs::FileExt;
    if index.size_bytes == 0 {
        return true;
    }
    let mut buf = [0u8; HEADER_BYTES];
    if segment.read_exact_at(&mut buf, index.last_batch_position).is_err() {
        return false;
    }
    LogBatchHeader::parse(&buf).is_ok_and(|h| {
        index.last_batch_position + h.total_bytes as u64 == index.size_bytes && h.last_offset() + 1 == index.next_offset
    })
}

/// Removes the index of segment `base_offset` (the segment is going away or changing).
pub(super) fn remove(dir: &Path, base_offset: i64) -> Result<(), LogError> {
    match fs::remove_file(path(dir, base_offset)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::log::batch::{decode_records, encode_batch, LogRecord};
    use crate::log::{Log, LogBatchHeader, SystemClock, TopicConfig};

    fn config() -> TopicConfig {
        TopicConfig { segment_bytes: 400, retention_ms: None, ..TopicConfig::default() }
    }

    fn record(i: u8) -> Vec<u8> {
        let r =
            LogRecord { offset: 0, timestamp_ms: 100 + i as i64, key: None, value: Some(vec![i; 60]), headers: vec![] };
        encode_batch(&[r])
    }

    /// A log with topic `t` of several sealed segments and an active one holding `n` records.
    fn filled(dir: &Path, n: u8) -> Log {
        let log = Log::open(dir, Arc::new(SystemClock)).unwrap();
        log.create_topic("t", config()).unwrap();
        for i in 0..n {
            log.append("t", 0, &mut record(i)).unwrap();
        }
        log
    }

    fn values(log: &Log) -> Vec<u8> {
        let p = log.partition("t", 0).unwrap();
        let read = p.read(p.log_start_offset(), 1 << 20).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        while at < read.bytes.len() {
            let h = LogBatchHeader::parse(&read.bytes[at..]).unwrap();
            out.extend(
                decode_records(&read.bytes[at..at + h.total_bytes])
                    .unwrap()
                    .iter()
                    .map(|r| r.value.as_ref().unwrap()[0]),
            );
            at += h.total_bytes;
        }
        out
    }

    fn partition_dir(dir: &Path) -> PathBuf {
        dir.join("t/0")
    }

    fn segment_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(partition_dir(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        files.sort();
        files
    }

    fn reopen(dir: &Path) -> Log {
        Log::open(dir, Arc::new(SystemClock)).unwrap()
    }

    #[test]
    fn an_index_round_trips_and_a_flipped_byte_is_refused() {
        let index = SegmentIndex {
            base_offset: 7,
            size_bytes: 9000,
            next_offset: 40,
            max_timestamp_ms: 123,
            bytes_since_index: 12,
            last_batch_position: 8000,
            offset_index: vec![(7, 0), (20, 4100)],
            time_index: vec![(100, 7), (123, 20)],
        };
        let bytes = index.encode();
        assert_eq!(SegmentIndex::decode(&bytes), Ok(index.clone()));
        for at in [0, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(SegmentIndex::decode(&bad).is_err(), "a flip at byte {at} went unnoticed");
        }
        assert!(SegmentIndex::decode(&bytes[..bytes.len() - 1]).is_err());
        let out_of_order = SegmentIndex { offset_index: vec![(20, 4100), (7, 0)], ..index };
        assert!(SegmentIndex::decode(&out_of_order.encode()).is_err());
    }

    #[test]
    fn a_crash_scans_only_the_active_segment_and_a_clean_close_scans_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 40);
        let expected = values(&log);
        let segments = log.partition("t", 0).unwrap().segment_count();
        assert!(segments > 4, "want several segments, got {segments}");
        assert_eq!(segment_files(dir.path(), ".index").len(), segments - 1, "one index per sealed segment");
        let active_bytes = fs::metadata(segment_files(dir.path(), ".log").last().unwrap()).unwrap().len();
        drop(log);

        // A crash (no close): only the active segment is read.
        let log = reopen(dir.path());
        let r = log.recovery();
        assert_eq!((r.segments, r.segments_scanned, r.bytes_scanned), (segments, 1, active_bytes));
        assert_eq!(values(&log), expected);
        let p = log.partition("t", 0).unwrap();
        assert_eq!(p.offset_for_timestamp(135).unwrap(), Some(35), "the time index came back");
        assert_eq!(log.append("t", 0, &mut record(40)).unwrap().base_offset, 40);
        let expected = values(&log);

        // A clean close: nothing is read at the next start, and the marker is gone after it.
        log.close().unwrap();
        drop((p, log));
        let log = reopen(dir.path());
        assert_eq!(log.recovery().segments_scanned, 0);
        assert_eq!(log.recovery().bytes_scanned, 0);
        assert!(!dir.path().join(crate::log::CLEAN_SHUTDOWN).exists());
        assert_eq!(values(&log), expected);
        assert_eq!(log.append("t", 0, &mut record(41)).unwrap().base_offset, 41);
        // The active index loaded at the clean start is stale now: a crash scans the segment.
        drop(log);
        let log = reopen(dir.path());
        assert_eq!(log.recovery().segments_scanned, 1);
        assert_eq!(values(&log).len(), 42);
    }

    #[test]
    fn a_missing_or_damaged_index_falls_back_to_the_scan_and_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 40);
        let expected = values(&log);
        log.close().unwrap();
        drop(log);
        let indexes = segment_files(dir.path(), ".index");
        fs::remove_file(&indexes[0]).unwrap();
        let mut bytes = fs::read(&indexes[1]).unwrap();
        bytes[30] ^= 0x01;
        fs::write(&indexes[1], &bytes).unwrap();
        let log = reopen(dir.path());
        let sizes: u64 = segment_files(dir.path(), ".log")[..2].iter().map(|f| fs::metadata(f).unwrap().len()).sum();
        assert_eq!((log.recovery().segments_scanned, log.recovery().bytes_scanned), (2, sizes));
        assert_eq!(values(&log), expected);
        // Both were written again by the scan.
        log.close().unwrap();
        drop(log);
        let log = reopen(dir.path());
        assert_eq!(log.recovery().segments_scanned, 0);
        assert_eq!(values(&log), expected);
    }

    #[test]
    fn an_index_for_another_length_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 40);
        log.close().unwrap();
        drop(log);
        // A sealed segment grew behind the log's back: its index no longer matches, the
        // segment is scanned, and the scan finds the garbage (a sealed segment is never cut).
        let sealed = &segment_files(dir.path(), ".log")[1];
        let mut bytes = fs::read(sealed).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 80, 0, 0, 1, 0, 7, 7]);
        fs::write(sealed, &bytes).unwrap();
        let file = File::open(sealed).unwrap();
        let base: i64 = sealed.file_stem().unwrap().to_string_lossy().parse().unwrap();
        let refused = load(&partition_dir(dir.path()), base, &file).unwrap_err();
        assert!(refused.contains("the segment has"), "{refused}");
        let log = reopen(dir.path());
        assert_eq!(log.recovery().segments_scanned, 1, "the grown segment, where the scan stops at the damage");
        let reason = log.partition("t", 0).unwrap().offline_reason().map(str::to_string);
        assert!(reason.is_some_and(|r| r.contains(&sealed.display().to_string())));
        assert_eq!(fs::read(sealed).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn damage_inside_a_segment_opened_from_its_index_is_found_by_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 40);
        log.close().unwrap();
        drop(log);
        let sealed = &segment_files(dir.path(), ".log")[1];
        let mut bytes = fs::read(sealed).unwrap();
        let at = bytes.len() - 10;
        bytes[at] ^= 0x5a;
        fs::write(sealed, &bytes).unwrap();
        let log = reopen(dir.path());
        assert_eq!(log.recovery().segments_scanned, 0, "the start does not read sealed segments");
        let p = log.partition("t", 0).unwrap();
        let err = p.read(0, 1 << 20).unwrap_err();
        assert!(
            matches!(&err, LogError::Offline(m) if m.contains(&sealed.display().to_string()) && m.contains("CRC")),
            "{err}"
        );
        assert!(p.offline_reason().is_some());
        assert!(matches!(log.append("t", 0, &mut record(1)), Err(LogError::Offline(_))), "no writes either");
        assert_eq!(fs::read(sealed).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn retention_and_truncation_remove_the_indexes_of_what_they_remove() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Arc::new(SystemClock)).unwrap();
        log.create_topic("t", TopicConfig { retention_bytes: Some(800), ..config() }).unwrap();
        for i in 0..40 {
            log.append("t", 0, &mut record(i)).unwrap();
        }
        let p = log.partition("t", 0).unwrap();
        assert!(log.enforce_retention().unwrap() > 0);
        let bases = |suffix: &str| -> Vec<String> {
            segment_files(dir.path(), suffix)
                .iter()
                .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let mut logs = bases(".log");
        logs.pop();
        assert_eq!(bases(".index"), logs, "an index for every sealed segment and no other");
        let start = p.log_start_offset();
        p.truncate_to(start + 1).unwrap();
        assert_eq!(bases(".log").len(), 1);
        assert!(bases(".index").is_empty(), "the cut segment's index went with the cut");
        assert_eq!(values(&log), vec![start as u8]);
        drop(p);
        drop(log);
        let log = reopen(dir.path());
        assert_eq!(values(&log), vec![start as u8]);
    }

    #[test]
    fn a_compacted_segment_gets_its_index_and_opens_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Arc::new(SystemClock)).unwrap();
        log.create_topic("t", TopicConfig { segment_bytes: 400, ..TopicConfig::compacted(1) }).unwrap();
        for i in 0..40u8 {
            let r = LogRecord {
                offset: 0,
                timestamp_ms: 100,
                key: Some(vec![i % 3]),
                value: Some(vec![i; 60]),
                headers: vec![],
            };
            log.append("t", 0, &mut encode_batch(&[r])).unwrap();
        }
        let p = log.partition("t", 0).unwrap();
        assert!(p.compact(200).unwrap().segments_rewritten > 0);
        let expected = values(&log);
        log.close().unwrap();
        drop(p);
        drop(log);
        let log = reopen(dir.path());
        assert_eq!(log.recovery().segments_scanned, 0);
        assert_eq!(values(&log), expected);
    }
}
