//! Tables live on compacted topics (issue 15, item 1): a table's topic keeps the latest row of
//! every key for as long as the table exists. Kafka's DescribeConfigs shows the policy,
//! AlterConfigs changes settings (a table's topic stays compacted), and after the clock moves
//! 30 days — past any time retention — a new query over the table and a stream–table join
//! still see every key with its latest value, while the topic shrinks toward one record per
//! key. `EDDY_COMPACTION_KEYS` sets the key count (default 20,000; each rewritten 10 times).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::common::{python_output, query, Server};

const THIRTY_DAYS_MS: i64 = 30 * 24 * 3600 * 1000;
const REWRITES: usize = 10;

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap()
}

async fn topic_configs(bootstrap: &str, topic: &str) -> HashMap<String, String> {
    let res = admin(bootstrap)
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("DescribeConfigs answered");
    let resource = res.into_iter().next().unwrap().expect("the topic's configs");
    resource.entries.into_iter().map(|e| (e.name, e.value.unwrap_or_default())).collect()
}

/// Produces `value(i)` under key `key{i}` for every `i` (JSON values), to partitions by key.
fn produce_all(bootstrap: &str, topic: &str, keys: usize, rounds: usize, value: impl Fn(usize, usize) -> String) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    for round in 0..rounds {
        for i in 0..keys {
            let key = format!("key{i}");
            let payload = value(round, i);
            let mut record = BaseRecord::<String, String>::to(topic).key(&key).payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("every record acknowledged");
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        total += if p.is_dir() { dir_bytes(&p) } else { e.metadata().map(|m| m.len()).unwrap_or(0) };
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_keep_every_key_on_compacted_topics_past_any_retention() {
    let keys: usize = std::env::var("EDDY_COMPACTION_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let tmp = tempfile::tempdir().unwrap();
    let topic_dir = tmp.path().join("log").join("users");
    let before_bytes;
    {
        let server = Server::start(tmp.path());
        let c = server.client().await;
        query(&c, "CREATE TABLE users (id STRING PRIMARY KEY, v BIGINT) WITH (KAFKA_TOPIC='users', PARTITIONS=2)")
            .await;
        query(&c, "CREATE STREAM clicks (id STRING KEY, n INT) WITH (KAFKA_TOPIC='clicks', PARTITIONS=2)").await;
        query(&c, "CREATE TABLE per_user AS SELECT id, COUNT(*) AS n FROM clicks GROUP BY id EMIT CHANGES").await;
        query(&c, "CREATE STREAM kept (id STRING, n INT) WITH (KAFKA_TOPIC='kept', CLEANUP_POLICY='compact', RETENTION_MS=1000)")
            .await;

        // A table's topic and a CTAS table's are compacted with no time retention; a
        // stream's keeps Kafka's 7 days; WITH (CLEANUP_POLICY=...) says otherwise.
        let users = topic_configs(&server.kafka, "users").await;
        assert_eq!(users["cleanup.policy"], "compact");
        assert_eq!(users["retention.ms"], "-1");
        assert_eq!(topic_configs(&server.kafka, "per_user").await["cleanup.policy"], "compact");
        let clicks = topic_configs(&server.kafka, "clicks").await;
        assert_eq!((clicks["cleanup.policy"].as_str(), clicks["retention.ms"].as_str()), ("delete", "604800000"));
        let kept = topic_configs(&server.kafka, "kept").await;
        assert_eq!((kept["cleanup.policy"].as_str(), kept["retention.ms"].as_str()), ("compact", "1000"));

        // Settings change through Kafka's AlterConfigs APIs, but a table's topic stays
        // compacted; small segments give compaction sealed segments to clean.
        python_output("kafka_configs.py", &[&server.kafka, "users"]).await;
        assert_eq!(topic_configs(&server.kafka, "users").await["segment.bytes"], "262144");

        // Every key written REWRITES times; the last round's value is the latest.
        let bootstrap = server.kafka.clone();
        tokio::task::spawn_blocking(move || {
            produce_all(&bootstrap, "users", keys, REWRITES, |round, i| format!("{{\"v\":{}}}", round * keys + i))
        })
        .await
        .unwrap();
        query(&c, "FLUSH").await;
        before_bytes = dir_bytes(&topic_dir);
    }

    // 30 days later (the log's clock moved): retention would have expired every sealed
    // segment of a `delete` topic; compaction cleans the table's instead.
    let server = Server::start_with_env(tmp.path(), 0, &[], &[("EDDY_CLOCK_OFFSET_MS", &THIRTY_DAYS_MS.to_string())]);
    let c = server.client().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while dir_bytes(&topic_dir) * 3 > before_bytes && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after_bytes = dir_bytes(&topic_dir);
    println!("users topic: {before_bytes} bytes before compaction, {after_bytes} after ({keys} keys x {REWRITES})");
    assert!(after_bytes * 3 <= before_bytes, "the topic did not shrink: {before_bytes} -> {after_bytes} bytes");

    // A new query over the table, and a stream–table join, read the table from its topic.
    query(&c, "CREATE TABLE users_copy AS SELECT id, v FROM users EMIT CHANGES").await;
    query(&c, "CREATE STREAM lookups (id STRING KEY, x INT) WITH (KAFKA_TOPIC='lookups', PARTITIONS=2)").await;
    query(
        &c,
        "CREATE STREAM joined AS SELECT l.id AS id, u.v AS v FROM lookups l JOIN users u ON l.id = u.id EMIT CHANGES",
    )
    .await;
    let bootstrap = server.kafka.clone();
    tokio::task::spawn_blocking(move || produce_all(&bootstrap, "lookups", keys, 1, |_, _| "{\"x\":1}".to_string()))
        .await
        .unwrap();
    query(&c, "FLUSH").await;
    let latest: u64 = (0..keys).map(|i| ((REWRITES - 1) * keys + i) as u64).sum();
    let want = vec![vec![Some(keys.to_string()), Some(latest.to_string())]];
    assert_eq!(query(&c, "SELECT COUNT(*), SUM(v) FROM users_copy").await, want, "a new CTAS over the table");
    assert_eq!(query(&c, "SELECT COUNT(*), SUM(v) FROM joined").await, want, "a stream-table join");
    assert_eq!(query(&c, "SELECT COUNT(*), SUM(v) FROM users").await, want, "the table itself");
}
