//! Idempotent-producer state: per (producer, partition), the epoch and the sequence ranges
//! of the last five batches (librdkafka keeps at most five in flight). A retried batch is
//! answered with its original offset; a gap is OUT_OF_ORDER_SEQUENCE_NUMBER. The state is
//! rebuilt at start from the batch headers at the tail of each partition, and producer ids
//! come from a counter kept in RocksDB, so both survive restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::error::{INVALID_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE_NUMBER};
use crate::log::{Log, LogBatchHeader, LogError};
use crate::state::{StateStore, CATALOG_CF};

const KEPT_BATCHES: usize = 5;
const NEXT_ID_KEY: &[u8] = b"meta/next_producer_id";

#[derive(Default)]
struct Entry {
    epoch: i16,
    /// (first sequence, last sequence, base offset) of recent batches, oldest first.
    batches: VecDeque<(i32, i32, i64)>,
}

pub enum Check {
    Append,
    Duplicate { base_offset: i64 },
    Reject(i16),
}

type Key = (String, i32, i64);
/// One lock per (topic, partition).
type PartitionLocks = HashMap<(String, i32), Arc<Mutex<()>>>;

pub struct ProducerStates {
    next_id: Mutex<i64>,
    store: StateStore,
    entries: Mutex<HashMap<Key, Entry>>,
    /// Serializes check + append + record for idempotent batches, per partition.
    locks: Mutex<PartitionLocks>,
}

impl ProducerStates {
    pub fn recover(log: &Log, store: &StateStore) -> std::io::Result<ProducerStates> {
        let stored = store
            .get(CATALOG_CF, NEXT_ID_KEY)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .and_then(|v| v.try_into().ok().map(i64::from_be_bytes))
            .unwrap_or(1000);
        let mut entries: HashMap<Key, Entry> = HashMap::new();
        let mut max_id = stored;
        for topic in log.topics() {
            for p in &topic.partitions {
                if p.offline_reason().is_some() {
                    continue; // nobody can write there until it is repaired
                }
                let headers = match p.tail_headers(2) {
                    Ok(headers) => headers,
                    // Damage found in a segment not scanned at open: the partition went
                    // offline just now, and nobody can write there either.
                    Err(LogError::Offline(_)) => continue,
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                };
                for h in headers {
                    if h.producer_id < 0 {
                        continue;
                    }
                    max_id = max_id.max(h.producer_id + 1);
                    let e = entries.entry((topic.name.clone(), p.id, h.producer_id)).or_default();
                    e.epoch = h.producer_epoch;
                    remember(e, &h, h.base_offset);
                }
            }
        }
        Ok(ProducerStates {
            next_id: Mutex::new(max_id),
            store: store.clone(),
            entries: Mutex::new(entries),
            locks: Mutex::default(),
        })
    }

    /// A new producer id, durable before it is handed out.
    pub fn allocate(&self) -> Result<i64, String> {
        let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = *next;
        let mut cp = self.store.checkpoint(CATALOG_CF);
        cp.put(&self.store, NEXT_ID_KEY, &(id + 1).to_be_bytes()).map_err(|e| e.to_string())?;
        self.store.commit(cp).map_err(|e| e.to_string())?;
        *next = id + 1;
        Ok(id)
    }

    pub fn partition_lock(&self, topic: &str, partition: i32) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry((topic.to_string(), partition)).or_default().clone()
    }

    pub fn check(&self, topic: &str, partition: i32, h: &LogBatchHeader) -> Check {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = entries.get(&(topic.to_string(), partition, h.producer_id)) else {
            return if h.base_sequence == 0 { Check::Append } else { Check::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER) };
        };
        if h.producer_epoch < e.epoch {
            return Check::Reject(INVALID_PRODUCER_EPOCH);
        }
        if h.producer_epoch > e.epoch {
            return if h.base_sequence == 0 { Check::Append } else { Check::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER) };
        }
        if let Some(&(_, _, base_offset)) = e.batches.iter().find(|(first, _, _)| *first == h.base_sequence) {
            return Check::Duplicate { base_offset };
        }
        let expected = e.batches.back().map(|(_, last, _)| last.wrapping_add(1)).unwrap_or(0);
        if h.base_sequence == expected {
            Check::Append
        } else {
            Check::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
        }
    }

    pub fn record(&self, topic: &str, partition: i32, h: &LogBatchHeader, base_offset: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = entries.entry((topic.to_string(), partition, h.producer_id)).or_default();
        if h.producer_epoch > e.epoch {
            e.batches.clear();
        }
        e.epoch = h.producer_epoch;
        remember(e, h, base_offset);
    }
}

fn remember(e: &mut Entry, h: &LogBatchHeader, base_offset: i64) {
    e.batches.push_back((h.base_sequence, h.base_sequence.wrapping_add(h.last_offset_delta), base_offset));
    while e.batches.len() > KEPT_BATCHES {
        e.batches.pop_front();
    }
}
