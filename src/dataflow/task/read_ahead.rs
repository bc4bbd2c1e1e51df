//! Read-ahead: a query whose only input is one stream or table (no join) reads and decodes
//! its next chunk on a thread of its own while the query's thread runs the operators on the
//! chunk before (`--query-threads` 2 or more). Decoding JSON is a large share of a simple
//! query's work, so the two overlap on two cores.
//!
//! Exactly-once is untouched: every chunk travels with the reading positions after it, and
//! the query's thread takes those positions only when it processes the chunk, so a
//! checkpoint commits the positions of what it processed and nothing read ahead. Records
//! that fail to decode go to the processing log with their chunk (they ride in the same
//! checkpoint as the positions past them). The channel holds one chunk: memory stays at two
//! fetches (`fetch_bytes_max`) beyond the chunk being processed.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;

use super::*;
use crate::log::{Log, LogRecord};

/// What the reading thread hands over.
pub(super) enum Read {
    /// A decoded chunk, the positions after it, and the processing-log entries of the
    /// records in it that failed to decode.
    Chunk { decoded: DecodedBatch, offsets: Vec<i64>, plog: Vec<LogRecord> },
    /// Nothing to read at these positions (they may still have moved: retention deleted
    /// records, or a fenced tail was cut back).
    CaughtUp { offsets: Vec<i64>, plog: Vec<LogRecord> },
}

pub(super) struct ReadAhead {
    rx: Option<Receiver<Result<Read>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts reading `source`'s partitions from `offsets` on a new thread. `source` is the
    /// query's own: its event times order the reads; the reading thread opens its own copy.
    pub(super) fn start(rt: &Runtime, query_id: &str, source: &Source, offsets: Vec<i64>) -> Result<ReadAhead> {
        let mut reader = Source::open(&rt.log, &source.relation)?;
        reader.time_ms = source.time_ms.clone();
        reader.lost_records = source.lost_records.clone();
        let (tx, rx) = sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, plog, stop) = (rt.log.clone(), rt.processing_log.buffered(), stop.clone());
            let (max_bytes, nice, id) = (rt.config.fetch_bytes_max, rt.config.nice, query_id.to_string());
            std::thread::Builder::new()
                .name(format!("read-{query_id}"))
                .spawn(move || {
                    lower_thread_priority(nice);
                    read_loop(&log, reader, offsets, max_bytes, &plog, &id, &stop, &tx);
                })
                .map_err(|e| EddyError::Internal(format!("spawn a query's reading thread: {e}")))?
        };
        Ok(ReadAhead { rx: Some(rx), stop, thread: Some(thread) })
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
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn read_loop(
    log: &Log,
    mut source: Source,
    mut offsets: Vec<i64>,
    max_bytes: usize,
    plog: &ProcessingLog,
    query_id: &str,
    stop: &AtomicBool,
    tx: &SyncSender<Result<Read>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let version = log.notifier.version();
        let read = match source.poll(&mut offsets, max_bytes, plog, query_id) {
            Ok(Some(decoded)) => {
                // The next read goes to the partition furthest behind, as the query would pick.
                if let Some(t) = source.time_ms.get_mut(decoded.partition) {
                    *t = (*t).max(decoded.max_timestamp_ms);
                }
                Read::Chunk { decoded, offsets: offsets.clone(), plog: plog.take_buffered() }
            }
            Ok(None) => Read::CaughtUp { offsets: offsets.clone(), plog: plog.take_buffered() },
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let caught_up = matches!(read, Read::CaughtUp { .. });
        if tx.send(Ok(read)).is_err() {
            return;
        }
        if caught_up {
            log.notifier.wait_past(version, Duration::from_millis(100));
        }
    }
}

impl QueryTask {
    /// The next chunk the reading thread decoded (waiting for it up to 100 ms): its reading
    /// positions become the query's, to be committed with the chunk's results.
    pub(super) fn read_ahead_next(&mut self) -> Result<Option<DecodedBatch>> {
        let Some(reader) = &self.read_ahead else { return Ok(None) };
        let (decoded, offsets, plog) = match reader.next(Duration::from_millis(100))? {
            None => return Ok(None),
            Some(Read::Chunk { decoded, offsets, plog }) => (Some(decoded), offsets, plog),
            Some(Read::CaughtUp { offsets, plog }) => (None, offsets, plog),
        };
        if offsets != self.offsets || !plog.is_empty() {
            self.dirty = true;
        }
        self.offsets = offsets;
        self.rt.processing_log.extend_buffered(plog);
        self.source.note_positions(&self.offsets);
        Ok(decoded)
    }
}
