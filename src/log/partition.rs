//! One partition: an ordered list of segment files, group-committed appends, offset reads.
//!
//! Writers hold `inner` only while copying bytes into the active segment; durability is then
//! reached through `sync_to`, where the first writer to arrive runs one `fdatasync` that covers
//! every append written so far and the writers queued behind it find their offset already
//! durable (group commit). Readers never see past `visible_end`: data is visible once durable
//! and, for a query's output topic, once the query's checkpoint has published it.
//!
//! Opening reads each sealed segment's index file (see `index`) instead of the segment; only a
//! segment without a usable index, and the active one unless the log was closed cleanly, is
//! scanned and CRC-checked in full. The batches of a segment that was not scanned are
//! CRC-checked as they are read, and damage found then takes the partition offline just as
//! damage found by the scan does.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::batch::{self, LogBatchHeader, HEADER_BYTES};
use super::compaction::{self, Cleaner};
use super::index;
use super::segment::{Recovered, Segment, SegmentView};
use super::{LogError, Notifier, TopicConfig};

/// Where one appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
}

/// Bytes of whole batches returned by a read, and where the log stood.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub bytes: Vec<u8>,
    /// Offset readers may read up to (exclusive): Kafka's high watermark.
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// What opening a partition (or the whole log) had to read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Segments opened.
    pub segments: usize,
    /// Segments read in full: no usable index, or the active one after a crash.
    pub segments_scanned: usize,
    pub bytes_scanned: u64,
}

impl RecoveryStats {
    pub fn add(&mut self, other: &RecoveryStats) {
        self.segments += other.segments;
        self.segments_scanned += other.segments_scanned;
        self.bytes_scanned += other.bytes_scanned;
    }
}

/// `read_into`'s output while it reads.
struct ReadInto<'a> {
    bytes: &'a mut Vec<u8>,
    high_watermark: i64,
    log_start_offset: i64,
}

impl ReadInto<'_> {
    fn ends(&self) -> (i64, i64) {
        (self.high_watermark, self.log_start_offset)
    }
}

/// Appends exactly `len` bytes of `file` at `position` to `buf`, without zeroing them first.
fn pread_append(file: &File, buf: &mut Vec<u8>, len: usize, position: u64) -> Result<(), LogError> {
    use std::os::fd::AsRawFd;
    buf.reserve(len);
    let mut done = 0;
    while done < len {
        let spare = &mut buf.spare_capacity_mut()[..len - done];
        // SAFETY: `pread` writes at most `spare.len()` bytes into memory the Vec owns and has
        // reserved; only the bytes it reports written become part of the Vec below.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                (position + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        // SAFETY: the kernel initialized these `n` bytes, right after the Vec's current end.
        unsafe { buf.set_len(buf.len() + n as usize) };
        done += n as usize;
    }
    Ok(())
}

struct Inner {
    segments: Vec<Segment>,
    log_start_offset: i64,
}

impl Inner {
    fn active(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("a partition always has an active segment")
    }
    fn next_offset(&self) -> i64 {
        self.segments.last().expect("active segment").next_offset
    }
}

pub struct Partition {
    pub topic: String,
    pub id: i32,
    dir: PathBuf,
    /// The topic's settings (changed in place by `Log::alter_topic_config`).
    config: std::sync::RwLock<TopicConfig>,
    inner: Mutex<Inner>,
    /// Offset up to which the data is known to be on disk; the group-commit lock.
    synced: Mutex<i64>,
    durable_end: AtomicI64,
    /// Upper bound set by a query's sink on what readers may see (`i64::MAX` when the
    /// topic is not fenced by a checkpoint).
    publish_limit: AtomicI64,
    /// The queries whose sinks own this partition: only they append (`append_as`); every
    /// other writer (Kafka Produce, INSERT, anything later) is refused here, at the one gate.
    /// Several when `INSERT INTO ... SELECT` queries write a stream: their checkpoints take
    /// turns (`Topic::checkpoint_lock`), so at most one has unpublished output at a time.
    owner: Mutex<Vec<Arc<str>>>,
    notifier: Arc<Notifier>,
    /// Why the partition is offline (its log is damaged): it is neither read nor written
    /// nor changed until an operator repairs it. Set at open, or when a read finds damage
    /// in a segment that was not scanned at open.
    offline: OnceLock<String>,
    /// Set when an fsync failed: writes stop, reads go on.
    write_failure: Mutex<Option<String>>,
    /// Compaction's state (compacted topics only).
    cleaner: Cleaner,
}

impl Partition {
    fn check_online(&self) -> Result<(), LogError> {
        match self.offline.get() {
            Some(reason) => Err(LogError::Offline(format!("{}-{}: {reason}", self.topic, self.id))),
            None => Ok(()),
        }
    }

    pub fn offline_reason(&self) -> Option<&str> {
        self.offline.get().map(String::as_str)
    }

    /// Damage found in use: the partition goes offline (once, loudly) and the caller gets
    /// the error to return.
    pub(super) fn take_offline(&self, reason: String) -> LogError {
        if self.offline.set(reason).is_ok() {
            report_offline(&self.topic, self.id, self.offline_reason().unwrap_or_default());
        }
        self.check_online().expect_err("the partition was just taken offline")
    }

    /// `take_offline` for damage at `position` of `seg`.
    fn damaged(&self, seg: &Segment, position: u64, reason: &str) -> LogError {
        self.take_offline(format!("{}: {reason} at byte {position}", seg.path.display()))
    }

    /// A batch header of `seg` that does not parse is damage; other errors pass through.
    fn damage_in(&self, seg: &Segment, e: LogError) -> LogError {
        match e {
            LogError::CorruptBatch(reason) => self.take_offline(format!("{}: {reason}", seg.path.display())),
            other => other,
        }
    }

    /// Opens (or creates) the partition directory, recovering its segments: sealed ones from
    /// their index files where usable, the active one too when `clean_shutdown` says the log
    /// was closed cleanly (its index was then written last); every other segment is scanned.
    pub(super) fn open(
        topic: &str,
        id: i32,
        dir: PathBuf,
        config: TopicConfig,
        notifier: Arc<Notifier>,
        now_ms: i64,
        clean_shutdown: bool,
    ) -> Result<(Partition, RecoveryStats), LogError> {
        fs::create_dir_all(&dir)?;
        let bases = list_segments(&dir)?;
        let mut segments: Vec<Segment> = Vec::new();
        let mut offline = None;
        let mut stats = RecoveryStats::default();
        let n_segments = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let path = dir.join(Segment::file_name(base));
            let continues = segments.last().is_none_or(|s| s.next_offset == base);
            if !continues {
                offline = Some(format!(
                    "{}: starts at offset {base} but the segment before ends at {} (a segment is missing)",
                    path.display(),
                    segments.last().map_or(0, |s| s.next_offset)
                ));
                break;
            }
            let last = i + 1 == n_segments;
            let (seg, recovered) = open_segment(&dir, &path, base, now_ms, last, clean_shutdown || !last, &mut stats)?;
            match recovered {
                Recovered::Clean => {}
                Recovered::TornTail => tracing::warn!(topic, partition = id, base, "cut a torn write off the log tail"),
                Recovered::Corrupt { position, reason } => {
                    offline = Some(format!("{}: {reason} at byte {position}", path.display()));
                    segments.push(seg);
                    break;
                }
            }
            if seg.size_bytes == 0 && !segments.is_empty() && last {
                index::remove(&dir, base)?;
                fs::remove_file(&path)?;
                continue;
            }
            segments.push(seg);
        }
        if let Some(reason) = &offline {
            report_offline(topic, id, reason);
        }
        if segments.is_empty() {
            segments.push(Segment::create(&dir, 0, now_ms)?);
        }
        stats.segments = segments.len();
        let log_start_offset = segments[0].base_offset;
        let next = segments.last().map(|s| s.next_offset).unwrap_or(0);
        let cleaner = Cleaner::open(&dir, log_start_offset)?;
        let partition = Partition {
            topic: topic.to_string(),
            id,
            dir,
            config: std::sync::RwLock::new(config),
            inner: Mutex::new(Inner { segments, log_start_offset }),
            synced: Mutex::new(next),
            durable_end: AtomicI64::new(next),
            publish_limit: AtomicI64::new(i64::MAX),
            owner: Mutex::new(Vec::new()),
            notifier,
            offline: offline.map(OnceLock::from).unwrap_or_default(),
            write_failure: Mutex::new(None),
            cleaner,
        };
        Ok((partition, stats))
    }

    /// At a clean shutdown: makes the active segment durable and writes its index, so the
    /// next start need not scan it. A partition that is offline or stopped taking writes is
    /// left to the scan.
    pub(super) fn close(&self) -> Result<(), LogError> {
        if self.offline_reason().is_some() || self.write_failure.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return Ok(());
        }
        let inner = self.lock();
        let active = inner.segments.last().expect("a partition always has an active segment");
        active.file.sync_data()?;
        index::write(&self.dir, &active.index())?;
        sync_dir(&self.dir)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one batch: validates it, assigns offsets, writes it, and returns once it is
    /// durable (unless the topic trades durability for speed). Refused while a query owns
    /// the partition (its output is written by that query only).
    pub fn append(&self, bytes: &mut [u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        self.append_as(None, bytes, now_ms)
    }

    /// `append` by `writer`: `Some(query)` for a query's sink, `None` for everyone else.
    /// The write goes through only when `writer` is the partition's owner (or both are none).
    pub fn append_as(&self, writer: Option<&str>, bytes: &mut [u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        let info = self.write_as(writer, bytes, now_ms)?;
        self.make_durable(info.last_offset + 1)?;
        Ok(info)
    }

    /// Returns once everything below `end` is durable (one fsync for every batch written
    /// since the last one: a query's checkpoint writes many and syncs once per partition).
    /// Readers waiting for new records are woken once they can read them.
    pub fn make_durable(&self, end: i64) -> Result<(), LogError> {
        if self.config().flush_each_append {
            self.sync_to(end)?;
        } else {
            self.durable_end.fetch_max(end, Ordering::SeqCst);
        }
        self.notifier.notify();
        Ok(())
    }

    /// `append_as` without waiting for durability: nothing written is durable (nor read by
    /// consumers) until `make_durable` covers it.
    pub fn write_as(&self, writer: Option<&str>, bytes: &mut [u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        {
            let owners = self.owner.lock().unwrap_or_else(|p| p.into_inner());
            let allowed = match writer {
                Some(w) => owners.iter().any(|o| o.as_ref() == w),
                None => owners.is_empty(),
            };
            if !allowed {
                let reason = match owners.first() {
                    Some(q) => format!("query {q} writes this topic (its output); no other writer may"),
                    None => "no longer owned by this query (it was terminated)".to_string(),
                };
                return Err(LogError::Fenced { topic: self.topic.clone(), partition: self.id, reason });
            }
        }
        self.check_online()?;
        if let Some(reason) = self.write_failure.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Err(LogError::Offline(format!("{}-{}: {reason}", self.topic, self.id)));
        }
        let mut header = batch::validate(bytes)?;
        let config = self.config();
        if bytes.len() > config.max_message_bytes {
            return Err(LogError::MessageTooLarge { bytes: bytes.len(), max_bytes: config.max_message_bytes });
        }
        // Clients' records need a key in a compacted topic, as in Kafka. A query's own output
        // may hold a row without one (a FULL OUTER JOIN's unmatched side): compaction keeps
        // such records, and refusing them would stall the query's checkpoints for good.
        if config.cleanup_policy.compacts() && writer.is_none() {
            compaction::require_keys(bytes, &header)?;
        }
        let info = {
            let mut inner = self.lock();
            self.maybe_roll(&mut inner, bytes.len() as u64, now_ms)?;
            let base_offset = inner.next_offset();
            batch::set_base_offset(bytes, base_offset);
            header.base_offset = base_offset;
            inner.active().append(bytes, &header)?;
            AppendInfo { base_offset, last_offset: base_offset + header.last_offset_delta as i64 }
        };
        Ok(info)
    }

    /// Group commit: returns once everything below `end` is on disk.
    fn sync_to(&self, end: i64) -> Result<(), LogError> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= end {
            return Ok(());
        }
        let (target, file) = {
            let mut inner = self.lock();
            (inner.next_offset(), inner.active().file.clone())
        };
        let synced_ok = if crate::failpoint::should_fail("log:fsync") {
            Err(std::io::Error::other("injected fsync failure"))
        } else {
            file.sync_data()
        };
        if let Err(e) = synced_ok {
            // After a failed fsync the kernel may have dropped the dirty pages and a retry
            // would "succeed" without them (fsyncgate): stop writing instead.
            let reason = format!("fsync failed ({e}); the partition takes no more writes until a restart");
            tracing::error!(topic = %self.topic, partition = self.id, "{reason}");
            *self.write_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
            return Err(LogError::Offline(format!("{}-{}: {reason}", self.topic, self.id)));
        }
        *synced = target;
        self.durable_end.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }

    fn maybe_roll(&self, inner: &mut Inner, incoming_bytes: u64, now_ms: i64) -> Result<(), LogError> {
        let active = inner.active();
        let config = self.config();
        let full = active.size_bytes + incoming_bytes > config.segment_bytes;
        let old = now_ms - active.created_ms >= config.segment_ms;
        if active.size_bytes == 0 || !(full || old) {
            return Ok(());
        }
        // Everything in the sealed segment is made durable now, so group commit only ever
        // needs to sync the active file.
        active.file.sync_data()?;
        // Its index too: the next start reads that instead of the segment. Creating the next
        // segment fsyncs the directory, which makes the index's name durable as well.
        if let Err(e) = index::write(&self.dir, &active.index()) {
            tracing::warn!("{}: writing its index failed ({e}); the next start scans it", active.path.display());
        }
        let base = active.next_offset;
        inner.segments.push(Segment::create(&self.dir, base, now_ms)?);
        Ok(())
    }

    /// Offset readers may read up to (exclusive).
    pub fn high_watermark(&self) -> i64 {
        self.durable_end.load(Ordering::SeqCst).min(self.publish_limit.load(Ordering::SeqCst))
    }

    /// Offset the next append will get (includes data not yet visible).
    pub fn log_end_offset(&self) -> i64 {
        self.lock().next_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start_offset
    }

    /// Query `owner` takes the partition (alone, or beside the queries that own it
    /// already): from now on only owners append, and readers see only what `publish`
    /// allows. Returns the end of the committed output, where the log is to be cut: `offset`
    /// (the caller's last committed output) when no other query owns the partition, else
    /// what the owners published (callers hold the topic's `checkpoint_lock`).
    pub fn claim(&self, owner: &str, offset: i64) -> i64 {
        let mut owners = self.owner.lock().unwrap_or_else(|p| p.into_inner());
        let others = owners.iter().any(|o| o.as_ref() != owner);
        if !owners.iter().any(|o| o.as_ref() == owner) {
            owners.push(Arc::from(owner));
        }
        if others {
            self.publish_limit.load(Ordering::SeqCst)
        } else {
            self.publish_limit.store(offset, Ordering::SeqCst);
            offset
        }
    }

    /// Query `owner` stopped. When it was the last owner, whatever was appended past the
    /// last published checkpoint is cut off (never exposed), then every writer may come in
    /// again and readers see the whole log; other owners keep the partition otherwise.
    pub fn release(&self, owner: &str) -> Result<(), LogError> {
        let mut owners = self.owner.lock().unwrap_or_else(|p| p.into_inner());
        owners.retain(|o| o.as_ref() != owner);
        if !owners.is_empty() {
            return Ok(());
        }
        let published = self.publish_limit.load(Ordering::SeqCst);
        if published != i64::MAX && self.offline_reason().is_none() && self.log_end_offset() > published {
            self.truncate_to(published)?;
        }
        self.publish(i64::MAX);
        Ok(())
    }

    /// Where readers stop: the end of the last published checkpoint (`i64::MAX` when no
    /// query owns the partition).
    pub fn published_end(&self) -> i64 {
        self.publish_limit.load(Ordering::SeqCst)
    }

    /// Whether a query's sink owns this partition (its output is published by checkpoints).
    pub fn is_fenced(&self) -> bool {
        self.publish_limit.load(Ordering::SeqCst) != i64::MAX
    }

    /// The query that owns this partition, if any.
    pub fn owner(&self) -> Option<String> {
        self.owner.lock().unwrap_or_else(|p| p.into_inner()).first().map(|o| o.to_string())
    }

    /// Makes everything below `offset` visible to readers (a checkpoint committed).
    pub fn publish(&self, offset: i64) {
        self.publish_limit.fetch_max(offset, Ordering::SeqCst);
        self.notifier.notify();
    }

    /// Whole batches starting with the one that holds `offset`, at most `max_bytes`
    /// (but always at least one batch), never past the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        let mut out = ReadResult { bytes: Vec::new(), high_watermark: 0, log_start_offset: 0 };
        (out.high_watermark, out.log_start_offset) = self.read_into(offset, max_bytes, &mut out.bytes)?;
        Ok(out)
    }

    /// `read` into a buffer the caller keeps (a query's source reuses one: no fresh pages
    /// per poll). Returns the high watermark and the log start offset.
    pub fn read_into(&self, offset: i64, max_bytes: usize, bytes: &mut Vec<u8>) -> Result<(i64, i64), LogError> {
        self.check_online()?;
        let high_watermark = self.high_watermark();
        let inner = self.lock();
        bytes.clear();
        let out = ReadInto { bytes, high_watermark, log_start_offset: inner.log_start_offset };
        if offset < inner.log_start_offset || offset > high_watermark {
            return Err(LogError::OffsetOutOfRange { offset, start: inner.log_start_offset, end: high_watermark });
        }
        if offset == high_watermark {
            return Ok(out.ends());
        }
        let mut seg_idx = inner.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1);
        let mut next = offset;
        while seg_idx < inner.segments.len() && next < high_watermark {
            let seg = &inner.segments[seg_idx];
            let Some((mut position, _)) = seg.position_of(next).map_err(|e| self.damage_in(seg, e))? else {
                seg_idx += 1;
                continue;
            };
            // Offsets only grow inside a segment; a batch breaking that is damage.
            let mut lowest_next = seg.base_offset;
            // One read per stretch of the segment: as much as the budget allows, then cut back
            // to whole batches below the high watermark.
            while position < seg.size_bytes {
                let start = out.bytes.len();
                let room = max_bytes.saturating_sub(start).max(HEADER_BYTES);
                let len = (room as u64).min(seg.size_bytes - position) as usize;
                pread_append(&seg.file, out.bytes, len, position)?;
                let mut at = start;
                while at + HEADER_BYTES <= out.bytes.len() {
                    let batch_position = position + (at - start) as u64;
                    let Ok(header) = LogBatchHeader::parse(&out.bytes[at..at + HEADER_BYTES]) else {
                        return Err(self.damaged(seg, batch_position, "an invalid batch header"));
                    };
                    if header.base_offset < lowest_next
                        || header.last_offset() >= seg.next_offset
                        || batch_position + header.total_bytes as u64 > seg.size_bytes
                    {
                        return Err(self.damaged(
                            seg,
                            batch_position,
                            "a batch out of offset order or past the segment's end",
                        ));
                    }
                    lowest_next = header.last_offset() + 1;
                    if header.last_offset() >= high_watermark {
                        out.bytes.truncate(at);
                        return Ok(out.ends());
                    }
                    let end = at + header.total_bytes;
                    if end > out.bytes.len() {
                        if at == 0 {
                            // The first batch is always returned whole, whatever the budget.
                            let missing = end - out.bytes.len();
                            pread_append(&seg.file, out.bytes, missing, position + (out.bytes.len() - start) as u64)?;
                        } else {
                            out.bytes.truncate(at);
                            return Ok(out.ends());
                        }
                    }
                    if !seg.verified && batch::validate(&out.bytes[at..end]).is_err() {
                        return Err(self.damaged(seg, batch_position, "a bad CRC"));
                    }
                    next = header.last_offset() + 1;
                    at = end;
                }
                out.bytes.truncate(at);
                position += (at - start) as u64;
                if at == start || out.bytes.len() >= max_bytes {
                    return Ok(out.ends());
                }
            }
            seg_idx += 1;
        }
        Ok(out.ends())
    }

    /// The first offset whose batch has a timestamp at or after `timestamp_ms`
    /// (Kafka's ListOffsets by time); `None` when every record is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<i64>, LogError> {
        self.check_online()?;
        let inner = self.lock();
        let high_watermark = self.high_watermark();
        for seg in &inner.segments {
            if seg.max_timestamp_ms < timestamp_ms {
                continue;
            }
            let idx = seg.time_index.partition_point(|&(ts, _)| ts < timestamp_ms);
            let start = if idx == 0 { seg.base_offset } else { seg.time_index[idx - 1].1 };
            let Some((mut position, _)) = seg.position_of(start).map_err(|e| self.damage_in(seg, e))? else {
                continue;
            };
            let mut buf = vec![0u8; HEADER_BYTES];
            while position < seg.size_bytes {
                seg.file.read_exact_at(&mut buf[..HEADER_BYTES], position)?;
                let header = LogBatchHeader::parse(&buf).map_err(|e| self.damage_in(seg, e))?;
                if header.base_offset >= high_watermark {
                    return Ok(None);
                }
                // An empty batch (compaction emptied it) holds no record to point at.
                if header.max_timestamp_ms >= timestamp_ms && header.record_count > 0 {
                    buf.resize(header.total_bytes, 0);
                    seg.file.read_exact_at(&mut buf, position)?;
                    let found = batch::decode_records(&buf)
                        .ok()
                        .and_then(|recs| recs.into_iter().find(|r| r.timestamp_ms >= timestamp_ms))
                        .map(|r| r.offset)
                        .unwrap_or(header.base_offset);
                    return Ok(Some(found));
                }
                position += header.total_bytes as u64;
            }
        }
        Ok(None)
    }

    /// Removes every record at or after `offset` (which must be a batch boundary; a
    /// mid-batch offset removes that whole batch). Used to drop a query's output that was
    /// written after its last checkpoint. Returns the new log end offset.
    pub fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        self.check_online()?;
        let mut inner = self.lock();
        let now_ms = inner.active().created_ms;
        while inner.segments.len() > 1 && inner.segments.last().is_some_and(|s| s.base_offset >= offset) {
            let seg = inner.segments.pop().expect("checked");
            index::remove(&self.dir, seg.base_offset)?;
            fs::remove_file(&seg.path)?;
        }
        let new_end;
        {
            let seg = inner.active();
            if seg.next_offset > offset {
                let position = match seg.position_of(offset.max(seg.base_offset))? {
                    Some((p, _)) => p,
                    None => seg.size_bytes,
                };
                let path = seg.path.clone();
                let base = seg.base_offset;
                // Its index (from a roll or a clean shutdown) no longer describes it.
                index::remove(&self.dir, base)?;
                seg.file.set_len(position)?;
                seg.file.sync_all()?;
                let (recovered, _) = Segment::recover(&path, base, now_ms, true)?;
                *seg = recovered;
            }
            new_end = seg.next_offset;
        }
        if inner.segments.len() == 1 && inner.segments[0].size_bytes == 0 {
            inner.log_start_offset = inner.segments[0].base_offset;
        }
        self.cleaner.truncated(new_end);
        *self.synced.lock().unwrap_or_else(|p| p.into_inner()) = new_end;
        self.durable_end.store(new_end, Ordering::SeqCst);
        Ok(new_end)
    }

    /// Deletes sealed segments past the retention time or beyond the retention size.
    /// Returns how many segments it deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let config = self.config();
        if self.offline_reason().is_some() || !config.cleanup_policy.deletes() {
            return Ok(0);
        }
        let mut inner = self.lock();
        let mut deleted = 0;
        loop {
            if inner.segments.len() < 2 {
                break;
            }
            let total: u64 = inner.segments.iter().map(|s| s.size_bytes).sum();
            let first = &inner.segments[0];
            let too_old = config.retention_ms.is_some_and(|r| first.max_timestamp_ms < now_ms - r);
            let too_big = config.retention_bytes.is_some_and(|r| total - first.size_bytes >= r);
            if !(too_old || too_big) || first.next_offset > self.high_watermark() {
                break;
            }
            let seg = inner.segments.remove(0);
            index::remove(&self.dir, seg.base_offset)?;
            fs::remove_file(&seg.path)?;
            deleted += 1;
        }
        inner.log_start_offset = inner.log_start_offset.max(inner.segments[0].base_offset);
        Ok(deleted)
    }

    /// Headers of every batch in the last `segments` segments (producer-state recovery).
    pub fn tail_headers(&self, segments: usize) -> Result<Vec<LogBatchHeader>, LogError> {
        self.check_online()?;
        let inner = self.lock();
        let mut out = Vec::new();
        let mut buf = [0u8; HEADER_BYTES];
        for seg in inner.segments.iter().rev().take(segments).rev() {
            let mut position = 0;
            while position < seg.size_bytes {
                seg.file.read_exact_at(&mut buf, position)?;
                let Ok(header) = LogBatchHeader::parse(&buf) else {
                    return Err(self.damaged(seg, position, "an invalid batch header"));
                };
                if position + header.total_bytes as u64 > seg.size_bytes {
                    return Err(self.damaged(seg, position, "a batch past the segment's end"));
                }
                position += header.total_bytes as u64;
                out.push(header);
            }
        }
        Ok(out)
    }

    /// Number of segment files (for tests and `SHOW TOPICS`).
    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    /// Bytes of log held by this partition.
    pub fn size_bytes(&self) -> u64 {
        self.lock().segments.iter().map(|s| s.size_bytes).sum()
    }

    /// The topic's settings now.
    pub fn config(&self) -> TopicConfig {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set_config(&self, config: TopicConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    pub(super) fn cleaner(&self) -> &Cleaner {
        &self.cleaner
    }

    /// Every segment, the active one last.
    pub(super) fn segment_views(&self) -> Vec<SegmentView> {
        self.lock()
            .segments
            .iter()
            .map(|s| SegmentView {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                size_bytes: s.size_bytes,
                max_timestamp_ms: s.max_timestamp_ms,
                created_ms: s.created_ms,
                path: s.path.clone(),
                file: s.file.clone(),
            })
            .collect()
    }

    /// Compaction's swap: the fsynced `cleaned` file replaces the sealed segment `old`, by an
    /// atomic rename, unless the segment changed since `old` was taken (then `false`, nothing
    /// done). The new file is scanned before the lock is taken; the lock covers only the
    /// identity check, the rename and the swap of the open file.
    pub(super) fn replace_segment(
        &self,
        old: &SegmentView,
        cleaned: &Path,
        crash_at: &dyn Fn(&str) -> bool,
    ) -> Result<bool, LogError> {
        let (mut segment, recovered) = Segment::recover(cleaned, old.base_offset, old.created_ms, false)?;
        // The copy must read back whole and still end where the next segment begins (its
        // last batch is always kept).
        if !matches!(recovered, Recovered::Clean) || segment.next_offset != old.next_offset {
            return Err(LogError::CorruptBatch(format!(
                "bug: the compacted copy of {} does not read back whole",
                old.path.display()
            )));
        }
        segment.path = old.path.clone();
        let cleaned_index = segment.index();
        {
            let mut inner = self.lock();
            let sealed = inner.segments.len() - 1;
            let Some(at) = inner.segments[..sealed]
                .iter()
                .position(|s| Arc::ptr_eq(&s.file, &old.file) && s.size_bytes == old.size_bytes)
            else {
                return Ok(false);
            };
            if crash_at("log:compact:before-rename") {
                return Err(LogError::Io(std::io::Error::other("crash injected at log:compact:before-rename")));
            }
            // The old index goes first: a crash never leaves it beside the new file.
            index::remove(&self.dir, old.base_offset)?;
            fs::rename(cleaned, &old.path)?;
            if crash_at("log:compact:after-rename") {
                return Err(LogError::Io(std::io::Error::other("crash injected at log:compact:after-rename")));
            }
            inner.segments[at] = segment;
        }
        // Written outside the lock; should the segment change meanwhile, the index no longer
        // matches it and the next start scans it.
        if let Err(e) = index::write(&self.dir, &cleaned_index) {
            tracing::warn!("{}: writing its index failed ({e}); the next start scans it", old.path.display());
        }
        // Made durable before the next segment's rename: older records of a key must be gone
        // for good before a later tombstone of it can be removed.
        sync_dir(&self.dir)?;
        Ok(true)
    }

    /// Compaction reached `offset`: below it the log holds one record per key.
    pub(super) fn mark_cleaned(&self, offset: i64) {
        let inner = self.lock();
        self.cleaner.mark(offset, inner.next_offset());
    }
}

/// The base offsets of the segment files in `dir`, in order. Removes what a crash left
/// behind: an index being written, and the index of a segment that was deleted.
fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut bases: Vec<i64> = Vec::new();
    let mut indexes: Vec<i64> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(index::TMP_SUFFIX) {
            fs::remove_file(entry.path())?;
        } else if let Some(Ok(base)) = name.strip_suffix(".log").map(str::parse::<i64>) {
            bases.push(base);
        } else if let Some(Ok(base)) = name.strip_suffix(".index").map(str::parse::<i64>) {
            indexes.push(base);
        }
    }
    bases.sort_unstable();
    for orphan in indexes.into_iter().filter(|b| bases.binary_search(b).is_err()) {
        index::remove(dir, orphan)?;
    }
    Ok(bases)
}

/// Opens one segment at start: from its index when `trust_index` and the index is usable,
/// else by a full scan (which writes the index again for a sealed segment).
fn open_segment(
    dir: &Path,
    path: &Path,
    base: i64,
    now_ms: i64,
    last: bool,
    trust_index: bool,
    stats: &mut RecoveryStats,
) -> Result<(Segment, Recovered), LogError> {
    if trust_index {
        match Segment::load(dir, path, base, now_ms)? {
            Ok(seg) => return Ok((seg, Recovered::Clean)),
            Err(reason) => tracing::debug!("{}: {reason}; scanning the segment", path.display()),
        }
    }
    let (seg, recovered) = Segment::recover(path, base, now_ms, last)?;
    stats.segments_scanned += 1;
    stats.bytes_scanned += seg.size_bytes;
    if !last && matches!(recovered, Recovered::Clean) {
        // Sealed segments were made durable when they were rolled; the index's directory
        // entry is made durable with the next change to the directory (or at close).
        if let Err(e) = index::write(dir, &seg.index()) {
            tracing::warn!("{}: writing its index failed ({e}); the next start scans it again", path.display());
        }
    }
    Ok((seg, recovered))
}

fn report_offline(topic: &str, id: i32, reason: &str) {
    tracing::error!(
        topic,
        partition = id,
        "partition OFFLINE: the log is damaged ({reason}); nothing was cut or skipped — restore the file from a backup or move it away, then restart"
    );
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}
