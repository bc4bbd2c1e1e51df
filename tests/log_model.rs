//! Model-based tests of the log engine: random appends, reads, restarts, truncations and
//! torn tails checked against an in-memory oracle (a Vec of records per partition).

use std::io::Write;
use std::sync::Arc;

use eddy::log::batch::{decode_records, encode_batch, LogBatchHeader, LogRecord};
use eddy::log::{Log, SystemClock, TopicConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn read_all(log: &Log, topic: &str, partition: i32, from: i64) -> Vec<LogRecord> {
    let p = log.partition(topic, partition).unwrap();
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let r = p.read(offset, 700).unwrap();
        if r.bytes.is_empty() {
            return out;
        }
        let mut pos = 0;
        while pos < r.bytes.len() {
            let h = LogBatchHeader::parse(&r.bytes[pos..]).unwrap();
            for rec in decode_records(&r.bytes[pos..pos + h.total_bytes]).unwrap() {
                if rec.offset >= offset {
                    out.push(rec);
                }
            }
            offset = offset.max(h.last_offset() + 1);
            pos += h.total_bytes;
        }
    }
}

fn random_records(rng: &mut SmallRng) -> Vec<LogRecord> {
    (0..rng.random_range(1..6))
        .map(|_| LogRecord {
            offset: 0,
            timestamp_ms: rng.random_range(0..1_000_000),
            key: rng.random_bool(0.5).then(|| (0..rng.random_range(0..8)).map(|_| rng.random()).collect()),
            value: Some((0..rng.random_range(0..200)).map(|_| rng.random()).collect()),
            headers: Vec::new(),
        })
        .collect()
}

#[test]
fn random_operations_match_the_oracle() {
    for seed in 0..8u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let config = TopicConfig { partitions: 2, segment_bytes: 2048, retention_ms: None, ..TopicConfig::default() };
        let mut log = Log::open(dir.path(), Arc::new(SystemClock)).unwrap();
        log.create_topic("t", config).unwrap();
        let mut oracle: Vec<Vec<LogRecord>> = vec![Vec::new(), Vec::new()];
        for _ in 0..300 {
            let p = rng.random_range(0..2);
            match rng.random_range(0..100) {
                0..=59 => {
                    let mut recs = random_records(&mut rng);
                    let info = log.append("t", p as i32, &mut encode_batch(&recs)).unwrap();
                    assert_eq!(info.base_offset, oracle[p].len() as i64);
                    for (i, r) in recs.iter_mut().enumerate() {
                        r.offset = info.base_offset + i as i64;
                    }
                    oracle[p].extend(recs);
                }
                60..=79 => {
                    let from = rng.random_range(0..=oracle[p].len()) as i64;
                    let got = read_all(&log, "t", p as i32, from);
                    assert_eq!(got, oracle[p][from as usize..], "seed {seed}: read from {from}");
                }
                80..=89 => {
                    drop(log);
                    log = Log::open(dir.path(), Arc::new(SystemClock)).unwrap();
                }
                _ => {
                    // Truncate at a batch boundary found by reading.
                    let part = log.partition("t", p as i32).unwrap();
                    let r = part.read(0, 1 << 20).unwrap();
                    let mut boundaries = vec![0i64];
                    let mut pos = 0;
                    while pos < r.bytes.len() {
                        let h = LogBatchHeader::parse(&r.bytes[pos..]).unwrap();
                        boundaries.push(h.last_offset() + 1);
                        pos += h.total_bytes;
                    }
                    let at = boundaries[rng.random_range(0..boundaries.len())];
                    if at <= r.high_watermark {
                        let end = part.truncate_to(at).unwrap();
                        oracle[p].truncate(end as usize);
                    }
                }
            }
        }
        for (p, expected) in oracle.iter().enumerate() {
            assert_eq!(&read_all(&log, "t", p as i32, 0), expected, "seed {seed}, final state");
        }
    }
}

#[test]
fn torn_tail_is_truncated_at_the_first_bad_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Arc::new(SystemClock)).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let rec =
        |i: u8| LogRecord { offset: 0, timestamp_ms: 1, key: None, value: Some(vec![i; 10]), headers: Vec::new() };
    for i in 0..3 {
        log.append("t", 0, &mut encode_batch(&[rec(i)])).unwrap();
    }
    drop(log);
    let seg = dir.path().join("t/0/00000000000000000000.log");
    let len = std::fs::metadata(&seg).unwrap().len();
    // Flip a byte inside the last batch (bad CRC), then add a torn half-batch after it.
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&encode_batch(&[rec(9)])[..30]).unwrap();
    drop(f);

    let log = Log::open(dir.path(), Arc::new(SystemClock)).unwrap();
    let got = read_all(&log, "t", 0, 0);
    assert_eq!(got.len(), 2, "the corrupt third batch and the torn tail are gone");
    assert!(std::fs::metadata(&seg).unwrap().len() < len);
    // Appends continue at the truncation point.
    let info = log.append("t", 0, &mut encode_batch(&[rec(7)])).unwrap();
    assert_eq!(info.base_offset, 2);
    assert_eq!(read_all(&log, "t", 0, 0).len(), 3);
}

#[test]
fn segments_roll_and_retention_deletes_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Arc::new(SystemClock)).unwrap();
    let config =
        TopicConfig { segment_bytes: 300, retention_bytes: Some(600), retention_ms: None, ..TopicConfig::default() };
    log.create_topic("t", config).unwrap();
    for i in 0..40u8 {
        let rec =
            LogRecord { offset: 0, timestamp_ms: i as i64, key: None, value: Some(vec![i; 50]), headers: Vec::new() };
        log.append("t", 0, &mut encode_batch(&[rec])).unwrap();
    }
    let p = log.partition("t", 0).unwrap();
    assert!(p.segment_count() > 5);
    assert!(log.enforce_retention().unwrap() > 0);
    assert!(p.size_bytes() <= 600 + 300);
    let start = p.log_start_offset();
    assert!(start > 0);
    assert!(p.read(0, 100).is_err(), "reads below the log start are out of range");
    assert_eq!(read_all(&log, "t", 0, start).len() as i64, 40 - start);
    // Time index: the first record with timestamp >= 35 is offset 35.
    assert_eq!(p.offset_for_timestamp(35).unwrap(), Some(35));
}

fn one_record(i: u8) -> Vec<u8> {
    encode_batch(&[LogRecord { offset: 0, timestamp_ms: 1, key: None, value: Some(vec![i; 10]), headers: Vec::new() }])
}

/// Regression: `Log::open` deleted every directory named `*.creating` or `*.deleted-*`, and
/// `create_topic` built topic `x` in `x.creating` — but those are valid topic names, so a
/// user's topic `y.creating` was acknowledged and then gone after a restart.
#[test]
fn topics_named_like_temporary_directories_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Arc::new(SystemClock)).unwrap();
    let names = ["y.creating", "z.creating", "a.deleted-1", "x.creating"];
    for (i, name) in names.iter().enumerate() {
        log.create_topic(name, TopicConfig::default()).unwrap();
        log.append(name, 0, &mut one_record(i as u8)).unwrap();
    }
    // Creating `x` while `x.creating` exists, and deleting `a` next to `a.deleted-1`.
    log.create_topic("x", TopicConfig::default()).unwrap();
    log.append("x", 0, &mut one_record(9)).unwrap();
    log.create_topic("a", TopicConfig::default()).unwrap();
    log.delete_topic("a").unwrap();
    drop(log);
    let log = Log::open(dir.path(), Arc::new(SystemClock)).unwrap();
    for (i, name) in names.iter().enumerate() {
        let got = read_all(&log, name, 0, 0);
        assert_eq!(got.len(), 1, "topic {name} after a restart");
        assert_eq!(got[0].value, Some(vec![i as u8; 10]), "topic {name} after a restart");
    }
    assert_eq!(read_all(&log, "x", 0, 0)[0].value, Some(vec![9; 10]));
    assert!(log.topic("a").is_none());
    let mut topics: Vec<String> = log.topics().iter().map(|t| t.name.clone()).collect();
    topics.sort();
    assert_eq!(topics, ["a.deleted-1", "x", "x.creating", "y.creating", "z.creating"]);
}

/// A `topic.properties` written before compaction existed still opens, with Kafka's defaults.
#[test]
fn old_topic_properties_still_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("old")).unwrap();
    std::fs::write(
        dir.path().join("old/topic.properties"),
        "partitions=2\nsegment.bytes=1024\nsegment.ms=604800000\nretention.ms=-1\nretention.bytes=-1\nmax.message.bytes=1048576\neddy.flush.each.append=true\n",
    )
    .unwrap();
    let log = Log::open(dir.path(), Arc::new(SystemClock)).unwrap();
    let config = &log.topic("old").unwrap().config();
    assert_eq!(config.partitions, 2);
    assert_eq!(config.retention_ms, None);
    assert_eq!(config.cleanup_policy, eddy::log::CleanupPolicy::Delete);
    assert_eq!(config.delete_retention_ms, 86_400_000);
    // And a compacted topic's settings round-trip through the file.
    let compacted = TopicConfig { min_cleanable_dirty_ratio: 0.25, ..TopicConfig::compacted(3) };
    log.create_topic("c", compacted.clone()).unwrap();
    drop(log);
    let log = Log::open(dir.path(), Arc::new(SystemClock)).unwrap();
    assert_eq!(log.topic("c").unwrap().config(), compacted);
    let entries = compacted.entries();
    assert!(entries.contains(&("cleanup.policy", "compact".to_string())));
    assert!(entries.contains(&("retention.ms", "-1".to_string())));
}
