//! A query's output is written by that query only, and topics that relations use are not
//! deleted under them (issue 15, items 2 and 3). Each path a write or a delete can take is
//! tried with a real client: INSERT over psql's protocol, a librdkafka producer, librdkafka's
//! admin DeleteTopics; and a query that cannot resume keeps its output fenced and says why.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::{query, sqlstate, Server};

fn kafka_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Produces one record; the error code librdkafka reports, if any.
async fn produce(bootstrap: &str, topic: &str, value: &str) -> Option<RDKafkaErrorCode> {
    let producer: FutureProducer =
        kafka_config(bootstrap).set("message.timeout.ms", "5000").set("retries", "0").create().unwrap();
    let sent = producer.send(FutureRecord::<str, str>::to(topic).payload(value), Duration::from_secs(10)).await;
    match sent {
        Ok(_) => None,
        Err((KafkaError::MessageProduction(code), _)) => Some(code),
        Err((e, _)) => panic!("produce to {topic}: unexpected error {e}"),
    }
}

/// Deletes a topic through Kafka's admin API; the error code, if refused.
async fn delete_topic(bootstrap: &str, topic: &str) -> Option<RDKafkaErrorCode> {
    let admin: AdminClient<DefaultClientContext> = kafka_config(bootstrap).create().unwrap();
    let res = admin.delete_topics(&[topic], &AdminOptions::new()).await.expect("DeleteTopics answered");
    res[0].as_ref().err().map(|(_, code)| *code)
}

const SOURCE: &str = "CREATE STREAM readings (sensor STRING, v DOUBLE) WITH (KAFKA_TOPIC='readings', PARTITIONS=1)";
const WINDOWED: &str =
    "SELECT sensor, COUNT(*) AS n FROM readings WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 0 SECONDS)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_data_to_never_feeds_its_own_input_nor_a_stream_another_query_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, SOURCE).await;
    // Its own source: late records would be read again as input (and cut at the next restart).
    let own = format!("CREATE TABLE w1 AS {WINDOWED} LATE DATA TO readings GROUP BY sensor EMIT CHANGES");
    assert_eq!(sqlstate(&c, &own).await.0, "22023");
    // The stream another query writes late records to.
    query(&c, &format!("CREATE TABLE w2 AS {WINDOWED} LATE DATA TO late_a GROUP BY sensor EMIT CHANGES")).await;
    let taken = format!("CREATE TABLE w3 AS {WINDOWED} LATE DATA TO late_a GROUP BY sensor EMIT CHANGES");
    assert_eq!(sqlstate(&c, &taken).await.0, "55006");
    // A CSAS's output stream (written by its query).
    query(&c, "CREATE STREAM copy AS SELECT sensor, v FROM readings EMIT CHANGES").await;
    let written = format!("CREATE TABLE w4 AS {WINDOWED} LATE DATA TO copy GROUP BY sensor EMIT CHANGES");
    assert!(["55006", "22023"].contains(&sqlstate(&c, &written).await.0.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_output_refuses_insert_and_kafka_produce_until_terminated() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, SOURCE).await;
    // An existing stream becomes a query's late-data target: it is the query's from now on.
    query(&c, "CREATE STREAM late_readings (sensor STRING, v DOUBLE) WITH (KAFKA_TOPIC='late_readings', PARTITIONS=1)")
        .await;
    query(&c, "INSERT INTO late_readings (sensor, v) VALUES ('before', 1.0)").await;
    query(&c, &format!("CREATE TABLE w AS {WINDOWED} LATE DATA TO late_readings GROUP BY sensor EMIT CHANGES")).await;
    query(&c, "CREATE STREAM copy AS SELECT sensor, v FROM readings EMIT CHANGES").await;

    assert_eq!(sqlstate(&c, "INSERT INTO late_readings (sensor, v) VALUES ('x', 1.0)").await.0, "42809");
    assert_eq!(sqlstate(&c, "INSERT INTO copy (sensor, v) VALUES ('x', 1.0)").await.0, "42809");
    assert_eq!(
        produce(&server.kafka, "late_readings", "{\"SENSOR\":\"k\",\"V\":1}").await,
        Some(RDKafkaErrorCode::PolicyViolation)
    );
    assert_eq!(
        produce(&server.kafka, "copy", "{\"SENSOR\":\"k\",\"V\":1}").await,
        Some(RDKafkaErrorCode::PolicyViolation)
    );
    // The late records themselves still arrive: one on time, one too late for its window.
    query(
        &c,
        "INSERT INTO readings (ROWTIME, sensor, v) VALUES (1000, 's1', 1.0), (12000, 's1', 3.0), (2000, 's1', 9.0)",
    )
    .await;
    query(&c, "FLUSH").await;
    let late = query(&c, "SELECT sensor FROM late_readings").await;
    assert_eq!(late, vec![vec![Some("before".to_string())], vec![Some("s1".to_string())]]);

    // TERMINATE gives the streams back to every writer.
    let ids = query(&c, "SHOW QUERIES").await;
    for id in ids.iter().filter_map(|r| r[0].clone()).filter(|id| !id.starts_with("MAT_")) {
        query(&c, &format!("TERMINATE {id}")).await;
    }
    query(&c, "INSERT INTO late_readings (sensor, v) VALUES ('after', 2.0)").await;
    query(&c, "INSERT INTO copy (sensor, v) VALUES ('after', 2.0)").await;
    assert_eq!(produce(&server.kafka, "late_readings", "{\"SENSOR\":\"k\",\"V\":1}").await, None);
    assert_eq!(produce(&server.kafka, "copy", "{\"SENSOR\":\"k\",\"V\":1}").await, None);
    let late = query(&c, "SELECT sensor FROM late_readings").await;
    assert_eq!(late.len(), 4, "{late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_delete_topics_refuses_topics_that_relations_use() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, SOURCE).await;
    query(&c, "CREATE TABLE per_sensor AS SELECT sensor, COUNT(*) AS n FROM readings GROUP BY sensor EMIT CHANGES")
        .await;
    query(&c, "INSERT INTO readings (sensor, v) VALUES ('s1', 1.0)").await;
    query(&c, "FLUSH").await;
    for topic in ["readings", "per_sensor", "eddy_processing_log"] {
        assert_eq!(delete_topic(&server.kafka, topic).await, Some(RDKafkaErrorCode::PolicyViolation), "{topic}");
    }
    // Still there, and the query still runs.
    query(&c, "INSERT INTO readings (sensor, v) VALUES ('s1', 2.0)").await;
    query(&c, "FLUSH").await;
    assert_eq!(query(&c, "SELECT n FROM per_sensor").await, vec![vec![Some("2".to_string())]]);
    // A topic nobody uses goes; DROP ... DELETE TOPIC removes a relation and its topic.
    query(&c, "CREATE STREAM spare (v INT) WITH (KAFKA_TOPIC='spare', PARTITIONS=1)").await;
    query(&c, "DROP STREAM spare").await;
    assert_eq!(delete_topic(&server.kafka, "spare").await, None);
    query(&c, "DROP TABLE per_sensor DELETE TOPIC").await;
    assert_eq!(delete_topic(&server.kafka, "per_sensor").await, Some(RDKafkaErrorCode::UnknownTopicOrPartition));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_cannot_resume_shows_error_and_keeps_its_output_fenced() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let server = Server::start(tmp.path());
        let c = server.client().await;
        query(&c, SOURCE).await;
        query(&c, "CREATE STREAM copy AS SELECT sensor, v FROM readings EMIT CHANGES").await;
        query(&c, "INSERT INTO readings (sensor, v) VALUES ('s1', 1.0)").await;
        query(&c, "FLUSH").await;
    }
    // The source's data is lost behind Eddy's back (an operator removed the directory).
    std::fs::remove_dir_all(tmp.path().join("log").join("readings")).unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    let queries = query(&c, "SHOW QUERIES").await;
    let csas = queries.iter().find(|r| r[0].as_deref().is_some_and(|id| id.starts_with("CSAS_COPY"))).expect("listed");
    let status = csas[1].clone().unwrap_or_default();
    assert!(status.starts_with("ERROR"), "{status}");
    // Its output stays its own: no writer slips in while it waits.
    assert_eq!(sqlstate(&c, "INSERT INTO copy (sensor, v) VALUES ('x', 1.0)").await.0, "42809");
    assert_eq!(
        produce(&server.kafka, "copy", "{\"SENSOR\":\"k\",\"V\":1}").await,
        Some(RDKafkaErrorCode::PolicyViolation)
    );
    assert_eq!(query(&c, "SELECT sensor FROM copy").await, vec![vec![Some("s1".to_string())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_retention_deleted_before_a_query_read_them_are_reported() {
    use eddy::log::batch::{encode_batch, LogRecord};
    use eddy::log::{Clock, Log, SystemClock};
    use rdkafka::admin::{NewTopic, TopicReplication};

    let tmp = tempfile::tempdir().unwrap();
    {
        let server = Server::start(tmp.path());
        // Small segments, so that retention has sealed segments to delete.
        let admin: AdminClient<DefaultClientContext> = kafka_config(&server.kafka).create().unwrap();
        let topic = NewTopic::new("readings", 1, TopicReplication::Fixed(1)).set("segment.bytes", "1024");
        let created = admin.create_topics(&[topic], &AdminOptions::new()).await.unwrap();
        assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
        let c = server.client().await;
        query(&c, SOURCE).await;
        query(&c, "CREATE STREAM copy AS SELECT sensor, v FROM readings EMIT CHANGES").await;
        query(&c, "INSERT INTO readings (ROWTIME, sensor, v) VALUES (500, 's0', 0.0)").await;
        query(&c, "FLUSH").await;
    }
    // While the server is down, records arrive and age past retention.ms (7 days) before the
    // query reads them: written with 1970 timestamps into the real log, then retention runs.
    {
        let log = Log::open(&tmp.path().join("log"), std::sync::Arc::new(SystemClock)).unwrap();
        for i in 0..40 {
            let value = format!("{{\"sensor\":\"old{i}\",\"v\":{i}}}").into_bytes();
            let rec =
                LogRecord { offset: 0, timestamp_ms: 1000 + i, key: None, value: Some(value), headers: Vec::new() };
            log.append("readings", 0, &mut encode_batch(&[rec])).unwrap();
        }
        let now = SystemClock.now_ms();
        let rec = LogRecord {
            offset: 0,
            timestamp_ms: now,
            key: None,
            value: Some(b"{\"sensor\":\"new\",\"v\":1}".to_vec()),
            headers: Vec::new(),
        };
        log.append("readings", 0, &mut encode_batch(&[rec])).unwrap();
        assert!(log.enforce_retention().unwrap() > 0, "retention deleted nothing");
    }
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "FLUSH").await;
    let entries = query(&c, "SELECT query_id, topic, source_offset, error FROM eddy_processing_log").await;
    let lost = entries.iter().find(|r| r[3].as_deref().is_some_and(|e| e.contains("retention deleted offsets 1 to")));
    let lost = lost.unwrap_or_else(|| panic!("no processing-log entry for the lost records: {entries:?}"));
    assert!(lost[0].as_deref().is_some_and(|q| q.starts_with("CSAS_COPY")), "{lost:?}");
    assert_eq!(lost[1].as_deref(), Some("readings"));
    assert_eq!(lost[2].as_deref(), Some("1"));
    let status = query(&c, "SHOW QUERIES").await;
    let csas = status.iter().find(|r| r[0].as_deref().is_some_and(|id| id.starts_with("CSAS_COPY"))).unwrap();
    assert!(csas[1].as_deref().is_some_and(|s| s.contains("deleted by retention")), "{csas:?}");
    // What survived retention was read.
    let copied = query(&c, "SELECT sensor FROM copy").await;
    assert_eq!(copied.first(), Some(&vec![Some("s0".to_string())]));
    assert_eq!(copied.last(), Some(&vec![Some("new".to_string())]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_and_terminate_are_whole_after_a_crash_inside_them() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let server = Server::start(tmp.path());
        let c = server.client().await;
        query(&c, SOURCE).await;
        query(&c, "CREATE STREAM copy AS SELECT sensor, v FROM readings EMIT CHANGES").await;
        query(&c, "CREATE STREAM big AS SELECT sensor, v FROM readings WHERE v > 10 EMIT CHANGES").await;
        query(&c, "INSERT INTO readings (sensor, v) VALUES ('s1', 1.0), ('s2', 20.0)").await;
        query(&c, "FLUSH").await;
    }
    // The process dies right after each statement's one catalog write.
    for statement in ["DROP STREAM copy DELETE TOPIC", "TERMINATE ALL"] {
        let server = Server::start_with_env(tmp.path(), 0, &[], &[("EDDY_FAILPOINTS", "ddl:after_catalog=1")]);
        let c = server.client().await;
        assert!(c.simple_query(statement).await.is_err(), "{statement}: the server should have died");
    }
    let server = Server::start(tmp.path());
    let c = server.client().await;
    // DROP ... DELETE TOPIC: the stream and its topic are both gone.
    assert_eq!(sqlstate(&c, "SELECT * FROM copy").await.0, "42P01");
    assert_eq!(delete_topic(&server.kafka, "copy").await, Some(RDKafkaErrorCode::UnknownTopicOrPartition));
    // TERMINATE ALL: no query left, and `big` takes other writers again.
    assert!(query(&c, "SHOW QUERIES").await.is_empty());
    query(&c, "INSERT INTO big (sensor, v) VALUES ('mine', 99.0)").await;
    assert_eq!(query(&c, "SELECT sensor FROM big").await.len(), 2);
}

/// ksqlDB's PAUSE / RESUME: a paused query reads nothing, keeps its state, where it read
/// to and its output stream (no one else writes it), also across a kill -9; RESUME goes on
/// from where it stopped, each input record counted once (its input gained a column by
/// ALTER STREAM meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_query_keeps_its_state_and_output_across_a_kill9_and_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE STREAM clicks (id STRING KEY, n BIGINT) WITH (KAFKA_TOPIC='clicks', PARTITIONS=2)").await;
    query(&c, "CREATE TABLE totals AS SELECT id, SUM(n) AS total FROM clicks GROUP BY id EMIT CHANGES").await;
    query(&c, "CREATE STREAM big AS SELECT id, n FROM clicks WHERE n >= 10 EMIT CHANGES").await;
    // A stream another query appends to (INSERT INTO ... SELECT), declared over a topic.
    query(&c, "CREATE STREAM merged (id STRING KEY, n BIGINT) WITH (KAFKA_TOPIC='merged', PARTITIONS=1)").await;
    query(&c, "INSERT INTO merged SELECT id, n FROM clicks EMIT CHANGES").await;
    query(&c, "INSERT INTO clicks (id, n) VALUES ('a', 1), ('b', 20)").await;
    query(&c, "FLUSH").await;
    let ids: Vec<String> = query(&c, "SHOW QUERIES").await.into_iter().filter_map(|r| r[0].clone()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    query(&c, "PAUSE ALL").await;
    let status =
        |rows: Vec<Vec<Option<String>>>| -> Vec<String> { rows.into_iter().map(|r| r[1].clone().unwrap()).collect() };
    assert_eq!(status(query(&c, "SHOW QUERIES").await), ["PAUSED", "PAUSED", "PAUSED"]);
    query(&c, "INSERT INTO clicks (id, n) VALUES ('a', 10), ('c', 30)").await;
    query(&c, "FLUSH").await;
    let totals = "SELECT id, total FROM totals ORDER BY id";
    let rows = |v: &[(&str, &str)]| -> Vec<Vec<Option<String>>> {
        v.iter().map(|(a, b)| vec![Some(a.to_string()), Some(b.to_string())]).collect()
    };
    assert_eq!(query(&c, totals).await, rows(&[("a", "1"), ("b", "20")]));
    // Its output is still its own while it is paused, and after a crash.
    assert_eq!(sqlstate(&c, "INSERT INTO big (id, n) VALUES ('x', 1)").await.0, "42809");
    // A column added meanwhile: the queries plan to the same output after the restart.
    query(&c, "ALTER STREAM clicks ADD COLUMN note STRING").await;
    // A server-wide default set before the crash is there after it.
    query(&c, "ALTER SYSTEM 'auto.offset.reset' = 'earliest'").await;
    server.kill9();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    assert_eq!(status(query(&c, "SHOW QUERIES").await), ["PAUSED", "PAUSED", "PAUSED"]);
    // The stream the paused INSERT query appends to is still closed to other writers: what
    // they wrote would be cut when the query resumes from its checkpoint.
    assert_eq!(sqlstate(&c, "INSERT INTO merged (id, n) VALUES ('x', 1)").await.0, "42809");
    assert_eq!(produce(&server.kafka, "merged", "{\"N\":1}").await, Some(RDKafkaErrorCode::PolicyViolation));
    let properties = query(&c, "SHOW PROPERTIES").await;
    assert!(properties.contains(&vec![
        Some("auto.offset.reset".into()),
        Some("earliest".into()),
        Some("system".into())
    ]));
    assert_eq!(produce(&server.kafka, "big", "{\"N\":1}").await, Some(RDKafkaErrorCode::PolicyViolation));
    query(&c, "FLUSH").await;
    assert_eq!(query(&c, totals).await, rows(&[("a", "1"), ("b", "20")]));
    // Pausing twice is fine; RESUME of one, then of all.
    query(&c, &format!("PAUSE {}", ids[0])).await;
    query(&c, &format!("RESUME {}", ids[0].to_lowercase())).await;
    query(&c, "RESUME ALL").await;
    assert_eq!(status(query(&c, "SHOW QUERIES").await), ["RUNNING", "RUNNING", "RUNNING"]);
    query(&c, "FLUSH").await;
    assert_eq!(query(&c, totals).await, rows(&[("a", "11"), ("b", "20"), ("c", "30")]));
    query(&c, "INSERT INTO clicks (id, n, note) VALUES ('c', 5, 'late')").await;
    query(&c, "FLUSH").await;
    assert_eq!(query(&c, totals).await, rows(&[("a", "11"), ("b", "20"), ("c", "35")]));
    let big = query(&c, "SELECT id, n FROM big ORDER BY id").await;
    assert_eq!(big, rows(&[("a", "10"), ("b", "20"), ("c", "30")]));
    let merged = query(&c, "SELECT id, SUM(n) FROM merged GROUP BY id ORDER BY id").await;
    assert_eq!(merged, rows(&[("a", "11"), ("b", "20"), ("c", "35")]));
    // Unknown ids are errors (a table's own materializer: sql-tests/12).
    assert_eq!(sqlstate(&c, "PAUSE NO_SUCH_QUERY").await.0, "42P01");
}
