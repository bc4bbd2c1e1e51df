//! Writes a large log quickly for `benches/restart.sh`: topic `bench` under `DATA_DIR/log`,
//! PARTITIONS partitions, GB gigabytes in all, 256 KiB batches of 1 KiB records appended
//! straight into the log (no Kafka round trips, no fsync per append), then closed cleanly.
//!
//! Run: `cargo bench --profile dev --bench restart_fill -- DATA_DIR GB [PARTITIONS]`.

use std::sync::Arc;
use std::time::Instant;

use eddy::log::batch::{encode_batch, LogRecord};
use eddy::log::{Clock, Log, SystemClock, TopicConfig};

const RECORDS_PER_BATCH: usize = 256;
const VALUE_BYTES: usize = 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let data_dir = std::path::PathBuf::from(args.first().expect("usage: restart_fill DATA_DIR GB [PARTITIONS]"));
    let gb: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let partitions: i32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let log = Arc::new(Log::open(&data_dir.join("log"), Arc::new(SystemClock)).expect("open log"));
    let config = TopicConfig {
        partitions,
        retention_ms: None,
        max_message_bytes: 4 << 20,
        flush_each_append: false,
        ..TopicConfig::default()
    };
    log.create_topic("bench", config).expect("create topic (is DATA_DIR empty?)");
    let now = SystemClock.now_ms();
    let records: Vec<LogRecord> = (0..RECORDS_PER_BATCH)
        .map(|i| LogRecord {
            offset: 0,
            timestamp_ms: now,
            key: Some(format!("k{i}").into_bytes()),
            value: Some(vec![b'x'; VALUE_BYTES]),
            headers: vec![],
        })
        .collect();
    let template = encode_batch(&records);
    let per_partition = (gb * 1e9 / partitions as f64 / template.len() as f64).ceil() as usize;
    let started = Instant::now();
    let writers: Vec<_> = (0..partitions)
        .map(|p| {
            let (log, template) = (log.clone(), template.clone());
            std::thread::spawn(move || {
                for _ in 0..per_partition {
                    log.append("bench", p, &mut template.clone()).expect("append");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    log.close().expect("close");
    let bytes = per_partition * partitions as usize * template.len();
    println!(
        "wrote {:.2} GB in {} batches over {partitions} partitions in {:.1} s",
        bytes as f64 / 1e9,
        per_partition * partitions as usize,
        started.elapsed().as_secs_f64()
    );
}
