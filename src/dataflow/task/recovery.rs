//! What a query needs from its state when it starts: the state's format checked (older
//! aggregation state dropped, see `check_state_format`), and the processing-log entries of
//! its last checkpoint appended if a crash came before they were.

use super::*;

/// A checkpoint's processing-log entries, until they are appended: `P` + number.
pub(super) const PLOG_ENTRY_PREFIX: &[u8] = b"P";
/// The processing log's end when those entries were committed.
pub(super) const PLOG_FROM_KEY: &[u8] = b"Q";

pub(super) fn clear_plog_entries(store: &StateStore, cf: &str, n: usize) -> Result<()> {
    let mut cp = store.checkpoint(cf);
    cp.delete(store, PLOG_FROM_KEY)?;
    for i in 0..n {
        let mut key = PLOG_ENTRY_PREFIX.to_vec();
        key.extend_from_slice(&(i as u32).to_be_bytes());
        cp.delete(store, &key)?;
    }
    store.commit(cp)
}

/// Makes a query's state the current format (`STATE_FORMAT`). An aggregation whose groups
/// were written in format 1 cannot read them: its state is dropped with a warning and it
/// reads its inputs again from their earliest offsets (pre-1.0, state is not migrated). Its
/// output ends and pending processing-log entries stay, so nothing uncommitted becomes
/// visible; its output topic gets the recomputed rows after the old ones.
pub(super) fn check_state_format(store: &StateStore, cf: &str, id: &str, aggregate: bool) -> Result<()> {
    let current = STATE_FORMAT.to_be_bytes();
    match store.get(cf, STATE_FORMAT_KEY)? {
        Some(v) if v == current => return Ok(()),
        Some(v) => {
            let found = v.try_into().map(u32::from_be_bytes).unwrap_or(u32::MAX);
            if found > STATE_FORMAT {
                return Err(EddyError::State(format!(
                    "query {id}: its state has format {found}, written by a newer version of Eddy (this one reads format {STATE_FORMAT})"
                )));
            }
        }
        None => {}
    }
    let mut cp = store.checkpoint(cf);
    let groups_v1 = aggregate && (store.has_prefix(cf, &[ROW_PREFIX])? || store.has_prefix(cf, &[WORKING_PREFIX])?);
    if groups_v1 {
        let keep = |k: &[u8]| {
            matches!(k.first(), Some(&SINK_PREFIX | &LATE_SINK_PREFIX))
                || k.starts_with(PLOG_ENTRY_PREFIX)
                || k == PLOG_FROM_KEY
        };
        let mut dropped = 0usize;
        for (k, _) in store.scan_prefix(cf, &[], usize::MAX)? {
            if !keep(&k) {
                cp.delete(store, &k)?;
                dropped += 1;
            }
        }
        tracing::warn!(
            query = %id,
            "query {id}: its aggregation state was written by an older version of Eddy (state format 1) and is dropped \
             ({dropped} keys); the query reads its inputs again from the earliest offsets, and its output topic gets \
             the recomputed rows after the old ones"
        );
    }
    cp.put(store, STATE_FORMAT_KEY, &current)?;
    store.commit(cp)
}

/// After a crash between a checkpoint and the append of its processing-log entries: append
/// the ones the log does not hold yet (each entry has an id), so none is lost or doubled.
pub(super) fn recover_processing_log(rt: &Runtime, cf: &str) -> Result<()> {
    let stored = rt.store.scan_prefix(cf, PLOG_ENTRY_PREFIX, usize::MAX)?;
    if stored.is_empty() {
        return Ok(());
    }
    let from = match rt.store.get(cf, PLOG_FROM_KEY)? {
        Some(b) if b.len() == 8 => i64::from_be_bytes(b.try_into().expect("8 bytes")),
        _ => 0,
    };
    let present = rt.processing_log.entry_ids_since(from);
    let mut missing = Vec::new();
    for (_, value) in &stored {
        let id = serde_json::from_slice::<Value>(value).ok().and_then(|v| v.get("entry_id").cloned());
        if !matches!(&id, Some(Value::String(id)) if present.contains(id)) {
            let now = rt.log.clock.now_ms();
            missing.push(crate::log::LogRecord {
                offset: 0,
                timestamp_ms: now,
                key: None,
                value: Some(value.clone()),
                headers: Vec::new(),
            });
        }
    }
    rt.processing_log.append(missing);
    clear_plog_entries(&rt.store, cf, stored.len())
}
