//! Backups of the state store, and the fall-back to them when the live state is damaged.
//!
//! The live store's WAL and files are the current checkpoint; RocksDB's BackupEngine keeps
//! earlier ones in `<state>-backups`: full copies (never hard links, so damage to a live file
//! cannot reach them), with table files shared between backups and checksummed. A backup is
//! taken at start, after every DDL and every `interval`; the last `keep` are kept.
//!
//! At start, a store that fails to open or to verify is moved aside to
//! `<state>.damaged-<ms>` (never deleted) and the newest backup that restores and verifies
//! takes its place. Everything in one backup is one consistent point: the catalog, each
//! query's state, its source offsets and its sink ends. So queries resume from that point,
//! cut their output back to the ends they had then and recompute it: exactly once still holds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::Env;

use super::Db;
use crate::error::{EddyError, Result};

/// How often, and how many, backups of the state store are kept.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// A backup every `interval` while the store changes (None: only at start and after DDL).
    pub interval: Option<Duration>,
    /// Backups kept (0: no backups at all).
    pub keep: usize,
    /// Least time between two backups asked for by DDL.
    pub min_spacing: Duration,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig { interval: Some(Duration::from_secs(300)), keep: 3, min_spacing: Duration::from_secs(1) }
    }
}

/// Where the backups of the store at `path` live: `<path>-backups`.
pub fn backups_dir(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    path.with_file_name(format!("{name}-backups"))
}

fn engine(dir: &Path) -> Result<BackupEngine> {
    std::fs::create_dir_all(dir).map_err(|e| EddyError::Internal(format!("{}: {e}", dir.display())))?;
    let mut opts = BackupEngineOptions::new(dir)?;
    opts.set_sync(true);
    Ok(BackupEngine::open(&opts, &Env::new()?)?)
}

/// The thread taking backups: ask it for one (after DDL) or stop it (at shutdown).
#[derive(Clone)]
pub struct BackupRequests(Arc<BackupThread>);

struct BackupThread {
    wake: SyncSender<()>,
    stop: AtomicBool,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl BackupRequests {
    /// A backup soon. Never blocks.
    pub fn request(&self) {
        let _ = self.0.wake.try_send(());
    }

    /// Waits for a backup in progress to finish and ends the thread: RocksDB must not be
    /// working while the process exits.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        let _ = self.0.wake.try_send(());
        let handle = self.0.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// Starts the thread that takes backups: one now, then on request and every interval.
pub fn start(db: Arc<Db>, path: &Path, config: &BackupConfig) -> Result<BackupRequests> {
    let (wake, rx) = sync_channel(1);
    let dir = backups_dir(path);
    let mut engine = engine(&dir)?;
    let config = config.clone();
    let thread = Arc::new(BackupThread { wake, stop: AtomicBool::new(false), handle: Mutex::new(None) });
    let shared = thread.clone();
    let handle = std::thread::Builder::new()
        .name("state-backup".into())
        .spawn(move || {
            // Backups are background work: sessions and queries come first.
            crate::dataflow::lower_thread_priority(19);
            run(&db, &mut engine, &dir, &config, &rx, &shared.stop)
        })
        .map_err(|e| EddyError::Internal(format!("backup thread: {e}")))?;
    *thread.handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    let requests = BackupRequests(thread);
    requests.request();
    Ok(requests)
}

fn run(db: &Db, engine: &mut BackupEngine, dir: &Path, config: &BackupConfig, rx: &Receiver<()>, stop: &AtomicBool) {
    let mut last_sequence = None;
    let mut last_backup: Option<Instant> = None;
    loop {
        let wait = config.interval.unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) if config.interval.is_some() => {}
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Some(at) = last_backup {
            let spacing = config.min_spacing.saturating_sub(at.elapsed());
            let _ = rx.recv_timeout(spacing);
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let sequence = db.latest_sequence_number();
        if last_sequence == Some(sequence) {
            continue;
        }
        let started = Instant::now();
        // The backup copies the WAL as well, so it is one consistent point across all
        // column families without flushing them.
        let done = engine.create_new_backup(db).and_then(|_| engine.purge_old_backups(config.keep));
        last_backup = Some(Instant::now());
        match done {
            Ok(()) => {
                last_sequence = Some(sequence);
                tracing::debug!(dir = %dir.display(), "state backup at sequence {sequence} in {:?}", started.elapsed());
            }
            // A full disk or an I/O error: the live store is unaffected; try again later.
            Err(e) => tracing::warn!(dir = %dir.display(), "state backup failed: {e}"),
        }
    }
}

/// Whether an error opening or reading the store means its files are damaged (rather than,
/// say, a full disk or a lock held by another process).
pub fn is_damage(e: &EddyError) -> bool {
    match e {
        EddyError::State(text) => {
            text.contains("Corruption")
                || (text.contains("IO error") && text.contains("No such file"))
                || text.starts_with(DAMAGED)
        }
        _ => false,
    }
}

/// How `verify` and `lost_current` errors begin.
pub const DAMAGED: &str = "damaged: ";

/// A store directory with table files or a manifest but no CURRENT file: RocksDB would take
/// it for a new, empty store.
pub fn lost_current(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else { return false };
    let names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    !names.iter().any(|n| n == "CURRENT") && names.iter().any(|n| n.ends_with(".sst") || n.starts_with("MANIFEST-"))
}

/// Whether there is any backup to restore.
pub fn any(path: &Path) -> bool {
    let dir = backups_dir(path);
    dir.join("meta").read_dir().map(|mut d| d.next().is_some()).unwrap_or(false)
}

/// Moves the damaged store at `path` aside and restores the newest backup that `open` accepts
/// (it opens and verifies). With no backup that works, the store is moved back and the error
/// names both. `damage` is why the live store was refused.
pub fn fall_back<T>(path: &Path, damage: &EddyError, open: impl Fn(&Path) -> Result<T>) -> Result<T> {
    let dir = backups_dir(path);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    let aside = path.with_file_name(format!(
        "{}.damaged-{now}",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let existed = path.exists();
    if existed {
        std::fs::rename(path, &aside)
            .map_err(|e| EddyError::Internal(format!("moving {} aside: {e}", path.display())))?;
    }
    let put_back = || {
        let _ = std::fs::remove_dir_all(path);
        if existed {
            let _ = std::fs::rename(&aside, path);
        }
    };
    let mut engine = match engine(&dir) {
        Ok(engine) => engine,
        Err(e) => {
            put_back();
            return Err(EddyError::Internal(format!(
                "the state store in {} is damaged ({damage}), and its backups in {} cannot be read: {e}",
                path.display(),
                dir.display()
            )));
        }
    };
    let mut backups = engine.get_backup_info();
    backups.sort_by_key(|b| std::cmp::Reverse(b.backup_id));
    let mut failures = Vec::new();
    for backup in &backups {
        let _ = std::fs::remove_dir_all(path);
        let restored = engine
            .restore_from_backup(path, path, &RestoreOptions::default(), backup.backup_id)
            .map_err(EddyError::from)
            .and_then(|()| open(path));
        match restored {
            Ok(store) => {
                tracing::error!(
                    "the state store in {} is damaged ({damage}); it was moved to {} and backup {} (taken at unix time {}) \
                     restored in its place. Queries resume from their offsets at that time and recompute their output after it{}",
                    path.display(),
                    aside.display(),
                    backup.backup_id,
                    backup.timestamp,
                    if failures.is_empty() { String::new() } else { format!("; newer backups failed: {}", failures.join("; ")) }
                );
                return Ok(store);
            }
            Err(e) => {
                tracing::error!("backup {} of the state store cannot be restored: {e}", backup.backup_id);
                failures.push(format!("backup {}: {e}", backup.backup_id));
            }
        }
    }
    put_back();
    Err(EddyError::Internal(format!(
        "the state store in {} is damaged ({damage}) and no backup in {} restores{}; the files are left as they were",
        path.display(),
        dir.display(),
        if failures.is_empty() { " (there are none)".to_string() } else { format!(": {}", failures.join("; ")) }
    )))
}
