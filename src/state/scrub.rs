//! Checking the state store's table files: at start only what changed, the rest in the
//! background.
//!
//! Reading every block with its checksum takes time in proportion to the state (2.1 s for
//! 881 MB on a 2-core machine), so a start does not do it each time. RocksDB writes a table
//! file once and never changes it, so a start compares each live table file's size and
//! modification time with the record of them (`EDDY-TABLE-FILES`) written after the last full
//! check, at the last clean stop and after each background scrub. If every recorded file is as
//! it was, the start reads no block; if one was written to, cut or replaced, or there is no
//! record (the first start of an older store, a copied directory), the start reads every block
//! before anything runs, as before. Files written since the record (after a `kill -9`) were
//! written by RocksDB itself and are taken as they are, like every file a compaction writes.
//! The catalog (small: DDL and users) is read whole at every start, since the start reads it
//! anyway and damage there must fall back to a backup rather than stop the server.
//!
//! Damage that leaves a file's size and time alone (a failing disk) is found by the scrub: a
//! low-priority thread that reads every block once after such a start and once a day. What it
//! finds is logged as an error and marked in `EDDY-DAMAGED`, so the next start treats the
//! store as damaged and restores the newest backup (see `backup`). Until then reads of a
//! damaged block fail with RocksDB's checksum error; no wrong value is ever returned.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use rocksdb::{IteratorMode, Options, DB};

use super::backup::DAMAGED;
use super::Db;
use crate::error::{EddyError, Result};

/// The identities of the table files as of the last check or clean stop.
const RECORD: &str = "EDDY-TABLE-FILES";
const RECORD_HEADER: &str = "eddy table files 1";
/// Written by a scrub that found damage: the next start falls back to a backup.
const DAMAGE_MARK: &str = "EDDY-DAMAGED";
/// How often the scrub reads the whole store again while the server runs.
const SCRUB_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Keys between two looks at the stop flag.
const STOP_CHECK_KEYS: usize = 4096;

/// A table file as the file system describes it: size and modification time (ns).
type Identity = (u64, u128);

/// Reads every key of every column family with checksums on. Returns `Ok(false)` if `stop`
/// was raised before the end.
pub(super) fn read_every_block(db: &Db, stop: Option<&AtomicBool>) -> Result<bool> {
    let names = <DB>::list_cf(&Options::default(), db.path()).unwrap_or_default();
    read_blocks(db, &names, stop)
}

/// Reads every key of the column families `names` with checksums on.
pub(super) fn read_blocks(db: &Db, names: &[String], stop: Option<&AtomicBool>) -> Result<bool> {
    for name in names {
        let Some(handle) = db.cf_handle(name) else { continue };
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_verify_checksums(true);
        opts.fill_cache(false);
        for (i, item) in db.iterator_cf_opt(&handle, opts, IteratorMode::Start).enumerate() {
            if let Err(e) = item {
                return Err(EddyError::State(format!("{DAMAGED}column family {name}: {e}")));
            }
            if i % STOP_CHECK_KEYS == 0 && stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn live_identities(db: &Db) -> Result<Vec<(String, Identity)>> {
    // A compaction that ends between the listing and a file's stat deletes a listed file:
    // list again. A file still listed live but missing is damage.
    let mut attempts = 0;
    loop {
        match stat_live_files(db)? {
            Ok(files) => return Ok(files),
            Err((name, e)) => {
                let still_live = db.live_files()?.iter().any(|f| f.name.trim_start_matches('/') == name);
                attempts += 1;
                if e.kind() != std::io::ErrorKind::NotFound || still_live || attempts >= 10 {
                    return Err(EddyError::State(format!("{DAMAGED}table file {name}: {e}")));
                }
            }
        }
    }
}

/// The live table files with their identities, or the first that could not be read.
type Statted = std::result::Result<Vec<(String, Identity)>, (String, std::io::Error)>;

fn stat_live_files(db: &Db) -> Result<Statted> {
    let dir = db.path();
    let mut out = Vec::new();
    for file in db.live_files()? {
        let name = file.name.trim_start_matches('/').to_string();
        let meta = match std::fs::metadata(dir.join(&name)) {
            Ok(meta) => meta,
            Err(e) => return Ok(Err((name, e))),
        };
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
        out.push((name, (meta.len(), mtime.as_nanos())));
    }
    Ok(Ok(out))
}

fn read_record(dir: &Path) -> Option<HashMap<String, Identity>> {
    let text = std::fs::read_to_string(dir.join(RECORD)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != RECORD_HEADER {
        return None;
    }
    let mut files = HashMap::new();
    for line in lines {
        let mut parts = line.split('\t');
        let (name, size, mtime) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
        files.insert(name.to_string(), (size, mtime));
    }
    Some(files)
}

/// Records the live table files' identities (atomically: a new file renamed over the old).
pub(super) fn write_record(db: &Db) -> Result<()> {
    let dir = db.path();
    let mut text = format!("{RECORD_HEADER}\n");
    for (name, (size, mtime)) in live_identities(db)? {
        text.push_str(&format!("{name}\t{size}\t{mtime}\n"));
    }
    let tmp = dir.join(format!("{RECORD}.tmp"));
    let io = |e: std::io::Error| EddyError::Internal(format!("writing {}: {e}", dir.join(RECORD).display()));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, dir.join(RECORD)).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

/// Why the start must read every block: `None` when every recorded table file that is
/// still live is as it was recorded.
pub(super) fn why_full_check(db: &Db) -> Result<Option<String>> {
    let Some(recorded) = read_record(db.path()) else {
        return Ok(Some(format!("no readable {RECORD}")));
    };
    for (name, identity) in live_identities(db)? {
        match recorded.get(&name) {
            Some(was) if *was != identity => {
                return Ok(Some(format!(
                    "table file {name} changed since it was recorded (size {} -> {})",
                    was.0, identity.0
                )));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The damage an earlier scrub found, if it marked any.
pub(super) fn marked_damage(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path.join(DAMAGE_MARK)).ok()?;
    Some(format!(
        "{DAMAGED}the scrub of an earlier run found: {} (remove {} to start on this store as it is)",
        text.trim(),
        path.join(DAMAGE_MARK).display()
    ))
}

fn mark_damaged(path: &Path, what: &str) {
    let written = std::fs::File::create(path.join(DAMAGE_MARK)).and_then(|mut f| {
        f.write_all(what.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written {
        tracing::error!("could not mark the state store as damaged in {}: {e}", path.join(DAMAGE_MARK).display());
    }
}

/// The background scrub thread.
pub(super) struct Scrub {
    stop: Arc<AtomicBool>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Scrub {
    /// Starts the thread: a full read now if `now`, then one every day.
    pub(super) fn start(db: Arc<Db>, now: bool) -> Result<Scrub> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("state-scrub".into())
            .spawn(move || {
                crate::dataflow::lower_thread_priority(19);
                run(&db, now, &flag)
            })
            .map_err(|e| EddyError::Internal(format!("scrub thread: {e}")))?;
        Ok(Scrub { stop, handle: Mutex::new(Some(handle)) })
    }

    /// Ends the thread (a read in progress stops within a few thousand keys).
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

fn run(db: &Db, mut due: bool, stop: &AtomicBool) {
    let path: PathBuf = db.path().to_path_buf();
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if due {
            let started = Instant::now();
            match read_every_block(db, Some(stop)) {
                Ok(true) => {
                    tracing::info!(
                        "state store scrubbed (every block read, checksums good) in {:?}",
                        started.elapsed()
                    );
                    if let Err(e) = write_record(db) {
                        tracing::warn!("after the scrub: {e}");
                    }
                }
                Ok(false) => return,
                Err(e) => {
                    // Marked before it is logged: whoever sees the line (an operator about
                    // to restart, a test) finds the mark the next start acts on.
                    mark_damaged(&path, &e.to_string());
                    tracing::error!(
                        "the state store in {} is damaged ({e}): reads of the damaged blocks fail until the \
                         server restarts, and the next start restores the newest backup",
                        path.display()
                    );
                    return;
                }
            }
            last = Instant::now();
        }
        std::thread::park_timeout(Duration::from_secs(60));
        due = last.elapsed() >= SCRUB_INTERVAL;
    }
}
