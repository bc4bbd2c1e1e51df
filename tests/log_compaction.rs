//! Model-based test of log compaction: random appends over a small key space with tombstones,
//! fenced (unpublished) tails that are published or cut, compactions and reopens, checked
//! after every step against an in-memory oracle (every record ever written by offset, and the
//! latest record of each key). Time is a test clock moved by hand.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use eddy::log::batch::{decode_records, encode_batch, LogBatchHeader, LogRecord};
use eddy::log::{Clock, Log, TopicConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const DELETE_RETENTION_MS: i64 = 5_000;

fn read_all(log: &Log) -> Vec<LogRecord> {
    let p = log.partition("t", 0).unwrap();
    let mut out = Vec::new();
    let mut offset = p.log_start_offset();
    loop {
        let r = p.read(offset, 500).unwrap();
        if r.bytes.is_empty() {
            return out;
        }
        let mut pos = 0;
        while pos < r.bytes.len() {
            let h = LogBatchHeader::parse(&r.bytes[pos..]).unwrap();
            out.extend(
                decode_records(&r.bytes[pos..pos + h.total_bytes]).unwrap().into_iter().filter(|r| r.offset >= offset),
            );
            offset = offset.max(h.last_offset() + 1);
            pos += h.total_bytes;
        }
    }
}

struct Model {
    /// Every record ever appended and not cut off, by offset.
    history: BTreeMap<i64, LogRecord>,
    /// Offset of the latest published record of each key.
    latest: BTreeMap<Vec<u8>, i64>,
    /// Appended behind a fence, not yet published.
    pending: Vec<LogRecord>,
    /// Where the fence stands (everything below is published), when fenced.
    fenced_at: Option<i64>,
}

impl Model {
    fn publish(&mut self) {
        for r in self.pending.drain(..) {
            self.latest.insert(r.key.clone().unwrap(), r.offset);
        }
    }

    /// Checks what the log returns against the model at time `now_ms`.
    fn check(&self, log: &Log, now_ms: i64, context: &str) {
        let got = read_all(log);
        assert!(got.windows(2).all(|w| w[0].offset < w[1].offset), "{context}: offsets increase");
        let mut last_seen: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        for r in &got {
            let written = self.history.get(&r.offset).unwrap_or_else(|| panic!("{context}: no record at {}", r.offset));
            assert_eq!(r, written, "{context}: the record at offset {} changed", r.offset);
            last_seen.insert(r.key.clone().unwrap(), r.offset);
        }
        for (key, &offset) in &self.latest {
            let latest = &self.history[&offset];
            match (&latest.value, last_seen.get(key)) {
                (_, Some(&seen)) => assert_eq!(seen, offset, "{context}: key {key:?} reads back an older record"),
                (Some(_), None) => panic!("{context}: key {key:?} lost its value at offset {offset}"),
                (None, None) => assert!(
                    latest.timestamp_ms < now_ms - DELETE_RETENTION_MS,
                    "{context}: the tombstone of {key:?} at {offset} went before delete.retention.ms"
                ),
            }
        }
    }
}

#[test]
fn compaction_matches_the_oracle() {
    for seed in 0..12u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TestClock(AtomicI64::new(1_000_000)));
        let config = TopicConfig {
            segment_bytes: rng.random_range(200..900),
            delete_retention_ms: DELETE_RETENTION_MS,
            min_cleanable_dirty_ratio: [0.0, 0.3, 0.5][seed as usize % 3],
            min_compaction_lag_ms: if seed % 4 == 3 { 2_000 } else { 0 },
            ..TopicConfig::compacted(1)
        };
        let mut log = Log::open(dir.path(), clock.clone()).unwrap();
        log.create_topic("t", config).unwrap();
        let mut model =
            Model { history: BTreeMap::new(), latest: BTreeMap::new(), pending: Vec::new(), fenced_at: None };
        let mut appended_bytes = 0u64;
        for step in 0..400 {
            let now = clock.now_ms();
            let context = format!("seed {seed} step {step}");
            match rng.random_range(0..100) {
                0..=59 => {
                    let mut recs: Vec<LogRecord> = (0..rng.random_range(1..4))
                        .map(|_| LogRecord {
                            offset: 0,
                            timestamp_ms: now - rng.random_range(0..1_000),
                            key: Some(format!("k{}", rng.random_range(0..6)).into_bytes()),
                            value: (!rng.random_bool(0.2)).then(|| vec![b'v'; rng.random_range(0..60)]),
                            headers: Vec::new(),
                        })
                        .collect();
                    let mut bytes = encode_batch(&recs);
                    appended_bytes += bytes.len() as u64;
                    // While a query's sink owns the partition, only it appends.
                    let writer = model.fenced_at.map(|_| "q");
                    let info = log.partition("t", 0).unwrap().append_as(writer, &mut bytes, clock.now_ms()).unwrap();
                    for (i, r) in recs.iter_mut().enumerate() {
                        r.offset = info.base_offset + i as i64;
                        model.history.insert(r.offset, r.clone());
                    }
                    model.pending.extend(recs);
                    if model.fenced_at.is_none() {
                        model.publish();
                    }
                }
                60..=69 => {
                    clock.0.fetch_add(rng.random_range(0..3_000), Ordering::SeqCst);
                }
                70..=84 => {
                    log.compact_all();
                }
                85..=89 => {
                    // A query's sink takes the topic: from now on appends wait for publish.
                    let p = log.partition("t", 0).unwrap();
                    if model.fenced_at.is_none() {
                        model.fenced_at = Some(p.log_end_offset());
                        p.claim("q", p.log_end_offset());
                    } else if rng.random_bool(0.5) {
                        let end = p.log_end_offset();
                        p.publish(end);
                        model.fenced_at = Some(end);
                        model.publish();
                    } else {
                        // Its checkpoint failed: the unpublished tail is cut.
                        let at = model.fenced_at.unwrap();
                        p.truncate_to(at).unwrap();
                        model.history.retain(|&o, _| o < at);
                        model.pending.clear();
                    }
                }
                _ => {
                    drop(log);
                    log = Log::open(dir.path(), clock.clone()).unwrap();
                    if let Some(at) = model.fenced_at.take() {
                        // As a sink does when its query resumes, before anything else runs.
                        let p = log.partition("t", 0).unwrap();
                        p.claim("q", at);
                        p.truncate_to(at).unwrap();
                        model.fenced_at = Some(at);
                        model.history.retain(|&o, _| o < at);
                        model.pending.clear();
                    }
                }
            }
            model.check(&log, clock.now_ms(), &context);
        }
        // Everything published, every tombstone old enough, the active segment rolled away:
        // a full pass leaves one record per live key.
        let p = log.partition("t", 0).unwrap();
        if model.fenced_at.is_some() {
            p.publish(p.log_end_offset());
            model.publish();
        }
        clock.0.fetch_add(100_000, Ordering::SeqCst);
        let segments = p.segment_count();
        while p.segment_count() == segments {
            let mut bytes = encode_batch(&[LogRecord {
                offset: 0,
                timestamp_ms: 0,
                key: Some(b"filler".to_vec()),
                value: Some(vec![0; 50]),
                headers: Vec::new(),
            }]);
            let info = p.append_as(model.fenced_at.map(|_| "q"), &mut bytes, clock.now_ms()).unwrap();
            let mut r = decode_records(&bytes).unwrap().remove(0);
            r.offset = info.base_offset;
            model.history.insert(r.offset, r);
            model.latest.insert(b"filler".to_vec(), info.base_offset);
        }
        if model.fenced_at.is_some() {
            p.publish(p.log_end_offset());
        }
        drop(p);
        drop(log);
        let log = Log::open(dir.path(), clock.clone()).unwrap();
        log.compact_all();
        model.check(&log, clock.now_ms(), &format!("seed {seed}, final"));
        let got = read_all(&log);
        let live = model
            .latest
            .values()
            .filter(|&&o| model.history[&o].value.is_some() && model.history[&o].key != Some(b"filler".to_vec()))
            .count();
        let kept = got.iter().filter(|r| r.key != Some(b"filler".to_vec())).count();
        assert_eq!(kept, live, "seed {seed}: one record per live key after a full pass");
        let p = log.partition("t", 0).unwrap();
        assert!(
            p.size_bytes() < appended_bytes / 2,
            "seed {seed}: {} bytes left of {appended_bytes} appended",
            p.size_bytes()
        );
    }
}
