//! Kill during ingest: idempotent librdkafka producers (acks=all) write to three partitions
//! while the server is killed with SIGKILL and restarted, cycle after cycle. Every send and
//! acknowledgement is recorded; afterwards every partition is read back. Pass: no
//! acknowledged record lost, none duplicated, each at the offset its acknowledgement gave,
//! offsets contiguous, and the server ready again within 10 s of every restart. Meanwhile a
//! consumer group reads and commits its offsets synchronously; after every restart the
//! group's committed offsets are at or past every commit acknowledged before the kill
//! (they never go backwards).
//! `EDDY_CHAOS_CYCLES` (default 3) and `EDDY_CHAOS_RECORDS` (default 3000) raise the run.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::Server;

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_idempotent_ingest_loses_and_duplicates_nothing() {
    let cycles: usize = std::env::var("EDDY_CHAOS_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let records: usize = std::env::var("EDDY_CHAOS_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Server::start_with(tmp.path(), 0, &["--kafka-listen", &listen]);
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &listen).create().unwrap();
    admin
        .create_topics(&[NewTopic::new("chaos", PARTITIONS, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .unwrap();

    // value -> (partition, offset) for every acknowledged send.
    let acked: Arc<Mutex<HashMap<String, (i32, i64)>>> = Arc::default();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &listen)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "120000")
        .set("reconnect.backoff.max.ms", "500")
        .create()
        .unwrap();
    let sends = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut in_flight = Vec::new();
            for i in 0..records {
                let producer = producer.clone();
                let acked = acked.clone();
                in_flight.push(tokio::spawn(async move {
                    let value = format!("record-{i}");
                    let key = format!("k{}", i % 17);
                    let partition = (i % PARTITIONS as usize) as i32;
                    let sent = producer
                        .send(
                            FutureRecord::to("chaos").key(&key).payload(&value).partition(partition),
                            Duration::from_secs(120),
                        )
                        .await;
                    match sent {
                        Ok(d) => {
                            acked.lock().unwrap().insert(value, (d.partition, d.offset));
                            true
                        }
                        Err((e, _)) => {
                            eprintln!("chaos: {value} not acknowledged: {e}");
                            false
                        }
                    }
                }));
                if i % 50 == 49 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let mut failed = 0;
            for t in in_flight {
                if !t.await.unwrap() {
                    failed += 1;
                }
            }
            failed
        })
    };

    // The consumer group: reads what is there and commits its position every 100 ms.
    // (highest acknowledged commit per partition, commits acknowledged since the last kill)
    let commits: Arc<Mutex<(BTreeMap<i32, i64>, usize)>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let committer = {
        let (commits, stop, bootstrap) = (commits.clone(), stop.clone(), listen.clone());
        std::thread::spawn(move || group_committer(&bootstrap, &commits, &stop))
    };

    let mut slowest_restart = Duration::ZERO;
    let mut checks = 0;
    for _ in 0..cycles {
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Kill only once the group has had a commit acknowledged since the last start.
        let waiting = Instant::now();
        while commits.lock().unwrap().1 == 0 && waiting.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let acknowledged = {
            let mut commits = commits.lock().unwrap();
            commits.1 = 0;
            commits.0.clone()
        };
        server.kill9();
        let started = Instant::now();
        server = Server::start_with(tmp.path(), 0, &["--kafka-listen", &listen]);
        slowest_restart = slowest_restart.max(started.elapsed());
        let bootstrap = listen.clone();
        let committed = tokio::task::spawn_blocking(move || group_offsets(&bootstrap)).await.unwrap();
        for (p, at) in &acknowledged {
            let now = committed.get(p).copied().unwrap_or(-1);
            assert!(now >= *at, "partition {p}: committed offset went back from {at} to {now} over a kill -9");
            checks += 1;
        }
    }
    let failed = sends.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let commits_acknowledged = committer.join().unwrap();
    let acked = acked.lock().unwrap().clone();

    // Read every partition back from the start.
    let bootstrap = server.kafka.clone();
    let log: Vec<(i32, i64, String)> = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "chaos-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset("chaos", p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_secs(5) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                out.push((m.partition(), m.offset(), String::from_utf8_lossy(m.payload().unwrap_or_default()).into()));
                quiet_since = Instant::now();
            }
        }
        out
    })
    .await
    .unwrap();

    let mut by_value: HashMap<&str, (i32, i64)> = HashMap::new();
    let mut duplicates = 0;
    for (p, o, v) in &log {
        if by_value.insert(v, (*p, *o)).is_some() {
            duplicates += 1;
        }
    }
    let lost: Vec<&String> = acked.keys().filter(|v| !by_value.contains_key(v.as_str())).collect();
    let misplaced: Vec<&String> =
        acked.iter().filter(|(v, at)| by_value.get(v.as_str()) != Some(at)).map(|(v, _)| v).collect();
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o, _) in &log {
        per_partition.entry(*p).or_default().push(*o);
    }
    for (p, offsets) in &mut per_partition {
        offsets.sort_unstable();
        let contiguous = offsets.iter().enumerate().all(|(i, o)| *o == offsets[0] + i as i64);
        assert!(contiguous, "partition {p}: offsets are not contiguous");
    }
    eprintln!(
        "chaos_ingest: {cycles} kill -9 cycles, {records} sends, {} acknowledged, {failed} not acknowledged, {} read, {} lost, {duplicates} duplicated, slowest restart {slowest_restart:?}; \
         {commits_acknowledged} group commits acknowledged, {checks} committed offsets checked after restarts, none went back",
        acked.len(),
        log.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged records lost: {:?}", &lost[..lost.len().min(10)]);
    assert_eq!(duplicates, 0, "records duplicated");
    assert!(
        misplaced.is_empty(),
        "records not at their acknowledged offset: {:?}",
        &misplaced[..misplaced.len().min(10)]
    );
    assert_eq!(failed, 0, "idempotent sends failed across restarts");
    assert!(slowest_restart < Duration::from_secs(10), "a restart took {slowest_restart:?}");
    assert!(commits_acknowledged > 0 && checks > 0, "the consumer group never had a commit acknowledged");
}

/// A consumer in group `chaos-group` that reads every partition and commits its position
/// synchronously every 100 ms, through the kills. Records the highest acknowledged commit
/// per partition; returns how many commits were acknowledged.
fn group_committer(
    bootstrap: &str,
    commits: &Mutex<(BTreeMap<i32, i64>, usize)>,
    stop: &std::sync::atomic::AtomicBool,
) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "chaos-group")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("reconnect.backoff.max.ms", "500")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("chaos", p, Offset::Stored).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut position: BTreeMap<i32, i64> = BTreeMap::new();
    let mut acknowledged = 0;
    let mut last_commit = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            position.insert(m.partition(), m.offset() + 1);
        }
        if last_commit.elapsed() >= Duration::from_millis(100) && !position.is_empty() {
            last_commit = Instant::now();
            let mut offsets = TopicPartitionList::new();
            for (p, o) in &position {
                offsets.add_partition_offset("chaos", *p, Offset::Offset(*o)).unwrap();
            }
            if consumer.commit(&offsets, CommitMode::Sync).is_ok() {
                acknowledged += 1;
                let mut commits = commits.lock().unwrap();
                commits.1 += 1;
                for (p, o) in &position {
                    let at = commits.0.entry(*p).or_insert(*o);
                    *at = (*at).max(*o);
                }
            }
        }
    }
    acknowledged
}

/// The committed offsets of group `chaos-group` (-1 where none), asked of the server with a
/// fresh client.
fn group_offsets(bootstrap: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "chaos-group")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition("chaos", p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(20)).expect("OffsetFetch after a restart");
    committed
        .elements()
        .iter()
        .map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { -1 }))
        .collect()
}
