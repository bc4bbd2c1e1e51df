//! librdkafka through the `rdkafka` crate (what Eddy will use to reach external Kafka):
//! an idempotent producer, every codec with headers and timestamps, admin create/delete,
//! a two-member group splitting four partitions, and commits that survive a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::Server;

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap).create().unwrap();
    let res = admin
        .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .unwrap();
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
}

/// Polls until `want` messages arrived (or `secs` passed); returns (partition, key, value).
fn poll_all(consumer: &BaseConsumer, want: usize, secs: u64) -> Vec<(i32, String, String)> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while out.len() < want && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            out.push((m.partition(), key, value));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_codecs_headers_timestamps_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let b = server.kafka.clone();
    create_topic(&b, "rd", 1).await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let producer: FutureProducer = config(&b)
            .set("enable.idempotence", "true")
            .set("compression.type", codec)
            .set("linger.ms", "5")
            .create()
            .unwrap();
        for i in 0..10 {
            let key = format!("{codec}-{i}");
            let value = format!("value {i} {}", "y".repeat(100));
            let headers = OwnedHeaders::new().insert(Header { key: "codec", value: Some(codec) });
            let record =
                FutureRecord::to("rd").key(&key).payload(&value).headers(headers).timestamp(1_600_000_000_000 + i);
            producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
        }
    }
    let consumer: BaseConsumer =
        config(&b).set("group.id", "rd-check").set("auto.offset.reset", "earliest").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("rd", 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen < 50 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap()).into_owned();
            let (codec, i) = key.split_once('-').unwrap();
            let header = m.headers().unwrap().get(0);
            assert_eq!((header.key, header.value), ("codec", Some(codec.as_bytes())));
            assert_eq!(m.timestamp().to_millis(), Some(1_600_000_000_000 + i.parse::<i64>().unwrap()));
            assert_eq!(m.offset(), seen);
            seen += 1;
        }
    }
    assert_eq!(seen, 50);
    // Admin: delete a topic.
    create_topic(&b, "doomed", 2).await;
    let admin: AdminClient<DefaultClientContext> = config(&b).create().unwrap();
    let res = admin.delete_topics(&["doomed"], &AdminOptions::new()).await.unwrap();
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    let md = admin.inner().fetch_metadata(None, Duration::from_secs(10)).unwrap();
    assert!(!md.topics().iter().any(|t| t.name() == "doomed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_two_splits_four_partitions_and_resumes_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    let b = server.kafka.clone();
    create_topic(&b, "work", 4).await;
    let producer: FutureProducer = config(&b).set("enable.idempotence", "true").create().unwrap();
    for i in 0..80 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        producer
            .send(FutureRecord::to("work").key(&k).payload(&v).partition(i % 4), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let b2 = b.clone();
    let (parts_a, parts_b, total) = tokio::task::spawn_blocking(move || {
        let make = || -> BaseConsumer {
            config(&b2)
                .set("group.id", "pair")
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap()
        };
        let (a, bb) = (make(), make());
        a.subscribe(&["work"]).unwrap();
        bb.subscribe(&["work"]).unwrap();
        let mut seen: BTreeMap<String, (char, i32)> = BTreeMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < 80 && std::time::Instant::now() < deadline {
            for (c, name) in [(&a, 'a'), (&bb, 'b')] {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    seen.insert(String::from_utf8_lossy(m.payload().unwrap()).into_owned(), (name, m.partition()));
                }
            }
        }
        a.commit_consumer_state(CommitMode::Sync).unwrap();
        bb.commit_consumer_state(CommitMode::Sync).unwrap();
        let parts = |n: char| seen.values().filter(|(m, _)| *m == n).map(|(_, p)| *p).collect::<BTreeSet<_>>();
        (parts('a'), parts('b'), seen.len())
    })
    .await
    .unwrap();
    assert_eq!(total, 80);
    assert_eq!(parts_a.len() + parts_b.len(), 4, "{parts_a:?} {parts_b:?}");
    assert!(parts_a.is_disjoint(&parts_b));

    // Everything was committed: after a kill -9 and restart, the group has nothing new to read,
    // and new records are picked up from the committed offsets.
    server.kill9();
    let server = Server::start(tmp.path());
    let b = server.kafka.clone();
    let producer: FutureProducer = config(&b).create().unwrap();
    producer
        .send(FutureRecord::to("work").key("late").payload("late").partition(2), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let got = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = config(&b).set("group.id", "pair").set("auto.offset.reset", "earliest").create().unwrap();
        c.subscribe(&["work"]).unwrap();
        let got = poll_all(&c, 1, 60);
        // Nothing else arrives.
        let more = poll_all(&c, 1, 3);
        (got, more)
    })
    .await
    .unwrap();
    assert_eq!(got.0, vec![(2, "late".to_string(), "late".to_string())]);
    assert!(got.1.is_empty(), "already-committed records came back: {:?}", got.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_state_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    // A fixed Kafka port, so the producer reconnects to the restarted server.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Server::start_with(tmp.path(), 0, &["--kafka-listen", &listen]);
    create_topic(&server.kafka, "seq", 1).await;
    let producer: FutureProducer =
        config(&server.kafka).set("enable.idempotence", "true").set("message.timeout.ms", "60000").create().unwrap();
    for i in 0..10 {
        let v = format!("before {i}");
        producer
            .send(FutureRecord::<(), _>::to("seq").payload(&v), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    server.kill9();
    let server = Server::start_with(tmp.path(), 0, &["--kafka-listen", &listen]);
    // The same producer id goes on with sequence 10: the server must know where it stood,
    // or it answers OUT_OF_ORDER_SEQUENCE_NUMBER and the producer fails fatally.
    for i in 0..10 {
        let v = format!("after {i}");
        let delivery = producer
            .send(FutureRecord::<(), _>::to("seq").payload(&v), Duration::from_secs(60))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        assert_eq!(delivery.offset, 10 + i);
    }
    drop(server);
}

/// ksqlDB's header columns: `HEADERS` (all of them) and `HEADER('key')` (one, BYTES), read
/// from what a Kafka producer sent, in a continuous query and a bounded scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_columns_read_record_headers() {
    use crate::common::query;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(
        &c,
        "CREATE STREAM traced (id STRING, hs ARRAY<STRUCT<key STRING, value BYTES>> HEADERS, trace BYTES HEADER('trace')) \
         WITH (KAFKA_TOPIC='traced', PARTITIONS=1)",
    )
    .await;
    query(&c, "CREATE STREAM trace_ids AS SELECT id, trace, hs[1]->key AS first_key FROM traced EMIT CHANGES").await;
    let producer: FutureProducer = config(&server.kafka).create().unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "trace", value: Some("t-1") })
        .insert(Header { key: "origin", value: Some("web") });
    producer
        .send(FutureRecord::<(), _>::to("traced").payload(r#"{"id":"a"}"#).headers(headers), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    producer
        .send(FutureRecord::<(), _>::to("traced").payload(r#"{"id":"b"}"#), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    query(&c, "FLUSH").await;
    let rows = query(&c, "SELECT id, encode(trace, 'hex'), first_key FROM trace_ids ORDER BY id").await;
    assert_eq!(
        rows,
        vec![vec![Some("a".into()), Some("742d31".into()), Some("trace".into())], vec![Some("b".into()), None, None],]
    );
    let rows = query(&c, "SELECT id, cardinality(hs) FROM traced ORDER BY id").await;
    assert_eq!(rows, vec![vec![Some("a".into()), Some("2".into())], vec![Some("b".into()), Some("0".into())]]);
}
