//! Read-ahead: a query whose only input is one stream or table (no join) reads and decodes
//! its next chunks on threads of its own while the query's thread runs the operators on the
//! chunk before (`--query-threads` 2 or more). Decoding JSON is a large share of a simple
//! query's work, so it overlaps with the operators, and with several partitions it runs on
//! as many threads as `--query-threads` (half as many under an aggregation, whose fold has
//! threads of its own), each reading thread owning every Nth partition.
//!
//! Exactly-once is untouched: every chunk travels with the reading positions of its
//! thread's partitions after it, and the query's thread takes those positions only when it
//! processes the chunk, so a checkpoint commits the positions of what it processed and
//! nothing read ahead. A partition belongs to one reading thread, so its chunks arrive in
//! order. Records that fail to decode go to the processing log with their chunk (they ride
//! in the same checkpoint as the positions past them). The channel holds one chunk per
//! thread: memory stays at two fetches (`fetch_bytes_max`) per thread beyond the chunk
//! being processed.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;

use super::*;
use crate::log::{Log, LogRecord};

/// What a reading thread hands over. Positions are (partition index, next offset) of the
/// thread's own partitions.
pub(super) enum Read {
    /// A decoded chunk, the positions after it, and the processing-log entries of the
    /// records in it that failed to decode.
    Chunk { decoded: DecodedBatch, positions: Vec<(usize, i64)>, plog: Vec<LogRecord> },
    /// Nothing to read at these positions (they may still have moved: retention deleted
    /// records, or a fenced tail was cut back).
    CaughtUp { positions: Vec<(usize, i64)>, plog: Vec<LogRecord> },
}

pub(super) struct ReadAhead {
    rx: Option<Receiver<Result<Read>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts reading `source`'s partitions from `offsets` on `threads` threads (at most one
    /// per partition). `source` is the query's own: its event times order the reads; each
    /// reading thread opens its own copy.
    pub(super) fn start(
        rt: &Runtime,
        query_id: &str,
        source: &Source,
        offsets: Vec<i64>,
        threads: usize,
    ) -> Result<ReadAhead> {
        let threads = threads.clamp(1, source.partitions.len().max(1));
        let (tx, rx) = sync_channel(threads);
        let stop = Arc::new(AtomicBool::new(false));
        let mut read_ahead = ReadAhead { rx: Some(rx), stop, threads: Vec::new() };
        for n in 0..threads {
            let mut reader = Source::open(&rt.log, &source.relation)?;
            reader.time_ms = source.time_ms.clone();
            reader.lost_records = source.lost_records.clone();
            if let Some(unread) = &source.unread {
                reader.set_unread(unread.clone());
            }
            let owned: Vec<bool> = (0..source.partitions.len()).map(|p| p % threads == n).collect();
            reader.reads = Some(owned.clone());
            let (log, plog, stop, tx) =
                (rt.log.clone(), rt.processing_log.buffered(), read_ahead.stop.clone(), tx.clone());
            let (max_bytes, nice, id) = (rt.config.fetch_bytes_max, rt.config.nice, query_id.to_string());
            let offsets = offsets.clone();
            let thread = std::thread::Builder::new()
                .name(format!("read{n}-{query_id}"))
                .spawn(move || {
                    lower_thread_priority(nice);
                    let reading = Reading { log: &log, max_bytes, plog: &plog, query_id: &id, stop: &stop, tx: &tx };
                    reading.run(reader, offsets, &owned);
                })
                .map_err(|e| EddyError::Internal(format!("spawn a query's reading thread: {e}")))?;
            // On an error here, `read_ahead` is dropped: the threads started so far stop.
            read_ahead.threads.push(thread);
        }
        Ok(read_ahead)
    }

    /// The next chunk, waiting up to `timeout`; `None` when nothing came.
    pub(super) fn next(&self, timeout: Duration) -> Result<Option<Read>> {
        let Some(rx) = &self.rx else { return Ok(None) };
        match rx.recv_timeout(timeout) {
            Ok(read) => read.map(Some),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(EddyError::Internal("a query's reading thread stopped".into())),
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A reader blocked on a full channel wakes up with an error once the receiver goes.
        drop(self.rx.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One reading thread's shared parts.
struct Reading<'a> {
    log: &'a Log,
    max_bytes: usize,
    plog: &'a ProcessingLog,
    query_id: &'a str,
    stop: &'a AtomicBool,
    tx: &'a SyncSender<Result<Read>>,
}

impl Reading<'_> {
    fn run(&self, mut source: Source, mut offsets: Vec<i64>, owned: &[bool]) {
        let positions = |offsets: &[i64]| -> Vec<(usize, i64)> {
            offsets.iter().enumerate().filter(|(p, _)| owned[*p]).map(|(p, &o)| (p, o)).collect()
        };
        while !self.stop.load(Ordering::SeqCst) {
            let version = self.log.notifier.version();
            let read = match source.poll(&mut offsets, self.max_bytes, self.plog, self.query_id) {
                Ok(Some(decoded)) => {
                    // The next read goes to the partition furthest behind, as the query would pick.
                    if let Some(t) = source.time_ms.get_mut(decoded.partition) {
                        *t = (*t).max(decoded.max_timestamp_ms);
                    }
                    Read::Chunk { decoded, positions: positions(&offsets), plog: self.plog.take_buffered() }
                }
                Ok(None) => Read::CaughtUp { positions: positions(&offsets), plog: self.plog.take_buffered() },
                Err(e) => {
                    let _ = self.tx.send(Err(e));
                    return;
                }
            };
            let caught_up = matches!(read, Read::CaughtUp { .. });
            if self.tx.send(Ok(read)).is_err() {
                return;
            }
            if caught_up {
                self.log.notifier.wait_past(version, Duration::from_millis(100));
            }
        }
    }
}

impl QueryTask {
    /// The next chunk the reading thread decoded (waiting for it up to 100 ms): its reading
    /// positions become the query's, to be committed with the chunk's results.
    pub(super) fn read_ahead_next(&mut self) -> Result<Option<DecodedBatch>> {
        let Some(reader) = &self.read_ahead else { return Ok(None) };
        let (decoded, positions, plog) = match reader.next(Duration::from_millis(100))? {
            None => return Ok(None),
            Some(Read::Chunk { decoded, positions, plog }) => (Some(decoded), positions, plog),
            Some(Read::CaughtUp { positions, plog }) => (None, positions, plog),
        };
        for (p, offset) in positions {
            if self.offsets[p] != offset {
                self.offsets[p] = offset;
                self.dirty = true;
            }
        }
        if !plog.is_empty() {
            self.dirty = true;
        }
        self.rt.processing_log.extend_buffered(plog);
        self.source.note_positions(&self.offsets);
        Ok(decoded)
    }
}
