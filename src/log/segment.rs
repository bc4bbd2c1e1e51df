//! One segment file of a partition: its batches, its sparse offset and time indexes, how it
//! is opened (from its index file, or by a full scan that finds torn tails and damage), and
//! byte-position lookups. `partition.rs` owns the list of segments and every lock; a segment
//! knows nothing of writers, fences or visibility.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::{self, LogBatchHeader, HEADER_BYTES};
use super::index::{self, SegmentIndex};
use super::partition::sync_dir;
use super::LogError;

/// What recovery found in a segment.
pub(super) enum Recovered {
    Clean,
    /// A torn final write, cut off.
    TornTail,
    /// Damage that is not a torn tail, at a byte position; the file is untouched.
    Corrupt {
        position: u64,
        reason: &'static str,
    },
}

pub(super) struct Segment {
    pub(super) base_offset: i64,
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    pub(super) size_bytes: u64,
    /// Offset after the last record in this segment.
    pub(super) next_offset: i64,
    pub(super) max_timestamp_ms: i64,
    /// Wall-clock time the segment was opened, for roll by age.
    pub(super) created_ms: i64,
    /// Sparse offset index: (batch base offset, byte position), one entry per
    /// `index_interval_bytes` of log.
    pub(super) offset_index: Vec<(i64, u64)>,
    /// Sparse time index: (largest timestamp so far, batch base offset).
    pub(super) time_index: Vec<(i64, i64)>,
    pub(super) bytes_since_index: u64,
    /// Where the last batch starts (`index::NO_BATCH` while empty).
    pub(super) last_batch_position: u64,
    /// Whether every batch was CRC-checked since this process opened the file (scanned at
    /// open, or written since). A segment loaded from its index is not: reads check its
    /// batches as they return them.
    pub(super) verified: bool,
}

const INDEX_INTERVAL_BYTES: u64 = 4096;

impl Segment {
    pub(super) fn file_name(base_offset: i64) -> String {
        format!("{base_offset:020}.log")
    }

    /// A segment holding nothing yet, in `file`.
    pub(super) fn empty(base_offset: i64, path: PathBuf, file: File, now_ms: i64) -> Segment {
        Segment {
            base_offset,
            path,
            file: Arc::new(file),
            size_bytes: 0,
            next_offset: base_offset,
            max_timestamp_ms: -1,
            created_ms: now_ms,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: u64::MAX,
            last_batch_position: index::NO_BATCH,
            verified: true,
        }
    }

    pub(super) fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Segment, LogError> {
        let path = dir.join(Self::file_name(base_offset));
        // A leftover file at this base offset holds nothing we still reference.
        let _ = fs::remove_file(&path);
        index::remove(dir, base_offset)?;
        let file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        sync_dir(dir)?;
        Ok(Segment::empty(base_offset, path, file, now_ms))
    }

    /// Opens a segment from its index file without reading it, or says why the index cannot
    /// be used (`Ok(Err(reason))`: then the segment is scanned).
    pub(super) fn load(
        dir: &Path,
        path: &Path,
        base_offset: i64,
        now_ms: i64,
    ) -> Result<Result<Segment, String>, LogError> {
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        let index = match index::load(dir, base_offset, &file) {
            Ok(index) => index,
            Err(reason) => return Ok(Err(reason)),
        };
        Ok(Ok(Segment {
            base_offset,
            path: path.to_path_buf(),
            file: Arc::new(file),
            size_bytes: index.size_bytes,
            next_offset: index.next_offset,
            max_timestamp_ms: index.max_timestamp_ms,
            created_ms: now_ms,
            offset_index: index.offset_index,
            time_index: index.time_index,
            bytes_since_index: index.bytes_since_index,
            last_batch_position: index.last_batch_position,
            verified: false,
        }))
    }

    /// What a scan of this segment would find, for its index file.
    pub(super) fn index(&self) -> SegmentIndex {
        SegmentIndex {
            base_offset: self.base_offset,
            size_bytes: self.size_bytes,
            next_offset: self.next_offset,
            max_timestamp_ms: self.max_timestamp_ms,
            bytes_since_index: self.bytes_since_index,
            last_batch_position: self.last_batch_position,
            offset_index: self.offset_index.clone(),
            time_index: self.time_index.clone(),
        }
    }

    /// Opens a segment and scans every batch. A damaged batch with nothing valid after it is
    /// a torn tail (a crash mid-write): the file is cut there. Damage followed by valid data,
    /// or any damage in a sealed segment (`last == false`), is corruption: the file is left
    /// as it is and the caller takes the partition offline — never skipping data silently.
    pub(super) fn recover(
        path: &Path,
        base_offset: i64,
        now_ms: i64,
        last: bool,
    ) -> Result<(Segment, Recovered), LogError> {
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        let mut seg = Segment::empty(base_offset, path.to_path_buf(), file, now_ms);
        let mut position = 0u64;
        let mut header_buf = [0u8; HEADER_BYTES];
        let mut batch_buf = Vec::new();
        let mut damage = None;
        while position < len {
            if len - position < HEADER_BYTES as u64 {
                damage = Some("a partial batch header");
                break;
            }
            if seg.file.read_exact_at(&mut header_buf, position).is_err() {
                damage = Some("an unreadable batch header");
                break;
            }
            let Ok(header) = LogBatchHeader::parse(&header_buf) else {
                damage = Some("an invalid batch header");
                break;
            };
            // Compaction leaves gaps where it removed whole batches; offsets never go back.
            if header.base_offset < seg.next_offset {
                damage = Some("a batch out of offset order");
                break;
            }
            if position + header.total_bytes as u64 > len {
                damage = Some("a batch cut short");
                break;
            }
            batch_buf.resize(header.total_bytes, 0);
            if seg.file.read_exact_at(&mut batch_buf, position).is_err() || batch::validate(&batch_buf).is_err() {
                // Valid data after the bad batch means this is not a torn write.
                let next = position + header.total_bytes as u64;
                if next < len && seg.valid_batch_at(next, len) {
                    return Ok((seg, Recovered::Corrupt { position, reason: "a bad CRC with valid batches after it" }));
                }
                damage = Some("a bad CRC");
                break;
            }
            seg.note_batch(&header, position);
            position += header.total_bytes as u64;
        }
        match damage {
            None => Ok((seg, Recovered::Clean)),
            Some(reason) if !last => Ok((seg, Recovered::Corrupt { position, reason })),
            Some(_) => {
                seg.file.set_len(position)?;
                seg.file.sync_all()?;
                Ok((seg, Recovered::TornTail))
            }
        }
    }

    /// Whether a whole, CRC-valid batch starts at `position`.
    pub(super) fn valid_batch_at(&self, position: u64, len: u64) -> bool {
        let mut header_buf = [0u8; HEADER_BYTES];
        if len - position < HEADER_BYTES as u64 || self.file.read_exact_at(&mut header_buf, position).is_err() {
            return false;
        }
        let Ok(header) = LogBatchHeader::parse(&header_buf) else { return false };
        if position + header.total_bytes as u64 > len {
            return false;
        }
        let mut buf = vec![0u8; header.total_bytes];
        self.file.read_exact_at(&mut buf, position).is_ok() && batch::validate(&buf).is_ok()
    }

    pub(super) fn note_batch(&mut self, header: &LogBatchHeader, position: u64) {
        if self.bytes_since_index >= INDEX_INTERVAL_BYTES {
            self.offset_index.push((header.base_offset, position));
            self.time_index.push((self.max_timestamp_ms.max(header.max_timestamp_ms), header.base_offset));
            self.bytes_since_index = 0;
        }
        self.bytes_since_index = self.bytes_since_index.saturating_add(header.total_bytes as u64);
        self.size_bytes = position + header.total_bytes as u64;
        self.last_batch_position = position;
        self.next_offset = header.last_offset() + 1;
        self.max_timestamp_ms = self.max_timestamp_ms.max(header.max_timestamp_ms);
    }

    pub(super) fn append(&mut self, bytes: &[u8], header: &LogBatchHeader) -> Result<(), LogError> {
        let position = self.size_bytes;
        (&*self.file).write_all(bytes).inspect_err(|_| {
            // A partial write leaves garbage past `size_bytes`; cut it so the next append
            // starts on a batch boundary.
            let _ = self.file.set_len(position);
        })?;
        self.note_batch(header, position);
        Ok(())
    }

    /// Byte position of the batch holding `offset`, scanning forward from the index entry.
    pub(super) fn position_of(&self, offset: i64) -> Result<Option<(u64, LogBatchHeader)>, LogError> {
        let idx = self.offset_index.partition_point(|&(o, _)| o <= offset);
        let mut position = if idx == 0 { 0 } else { self.offset_index[idx - 1].1 };
        let mut buf = [0u8; HEADER_BYTES];
        while position < self.size_bytes {
            self.file.read_exact_at(&mut buf, position)?;
            let header = LogBatchHeader::parse(&buf)?;
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.total_bytes as u64;
        }
        Ok(None)
    }
}

/// A segment as compaction sees it, taken under the lock and used without it; the open file
/// is its identity (retention, truncation and compaction replace or drop it).
pub(super) struct SegmentView {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size_bytes: u64,
    pub max_timestamp_ms: i64,
    pub created_ms: i64,
    pub path: PathBuf,
    pub file: Arc<File>,
}
