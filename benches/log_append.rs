//! Log append throughput with group-commit fsync: N writer threads append 100-byte records
//! in batches to one partition; prints records/s, MB/s and p50/p99 append latency.
//!
//! Run: `cargo bench --bench log_append` (optionally `-- THREADS RECORDS_PER_BATCH SECONDS`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::log::batch::{encode_batch, LogRecord};
use eddy::log::{Log, SystemClock, TopicConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let threads: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(4);
    let per_batch: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("eddy-bench-{}", std::process::id()));
    let log = Arc::new(Log::open(&dir, Arc::new(SystemClock)).expect("open log"));
    log.create_topic("bench", TopicConfig::default()).expect("create topic");
    let records: Vec<LogRecord> = (0..per_batch)
        .map(|i| LogRecord {
            offset: 0,
            timestamp_ms: 0,
            key: Some(format!("k{i}").into_bytes()),
            value: Some(vec![b'x'; 100]),
            headers: vec![],
        })
        .collect();
    let template = encode_batch(&records);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let log = log.clone();
            let template = template.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let mut batch = template.clone();
                    let t = Instant::now();
                    log.append("bench", 0, &mut batch).expect("append");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().expect("writer")).collect();
    latencies.sort();
    let batches = latencies.len();
    let recs = batches * per_batch;
    let bytes = batches * template.len();
    let pct = |p: f64| latencies[((batches as f64 * p) as usize).min(batches - 1)];
    println!(
        "threads={threads} records/batch={per_batch} fsync=on: {:.0} records/s, {:.1} MB/s, append p50={:?} p99={:?}",
        recs as f64 / seconds as f64,
        bytes as f64 / seconds as f64 / 1e6,
        pct(0.50),
        pct(0.99)
    );
    let _ = std::fs::remove_dir_all(dir);
}
