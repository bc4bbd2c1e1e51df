//! Event time across partitions: windows close and lateness is judged on the watermark, the
//! smallest event time of the input's partitions, so a result does not depend on which
//! partition the query happens to read first (after a restart, it reads the one furthest
//! behind). An idle partition stops holding windows back after `--idle-partition-timeout-ms`.

use std::time::{Duration, Instant};

use crate::common::{query, Server};

/// A key that Kafka's default partitioner (which INSERT uses) puts in `partition` of 2.
fn key_in(partition: u32) -> String {
    (0..)
        .map(|i| format!("key{i}"))
        .find(|k| (eddy::dataflow::sink::murmur2(k.as_bytes()) & 0x7fff_ffff) % 2 == partition)
        .expect("some key hashes there")
}

/// `(k, windowstart, c)` rows of a windowed count, sorted.
async fn counts(client: &tokio_postgres::Client, table: &str) -> Vec<(String, i64, i64)> {
    let mut rows: Vec<(String, i64, i64)> = query(client, &format!("SELECT k, WINDOWSTART, c FROM {table}"))
        .await
        .into_iter()
        .map(|r| {
            let cell = |i: usize| r[i].clone().expect("not NULL");
            (cell(0), cell(1).parse().expect("a number"), cell(2).parse().expect("a number"))
        })
        .collect();
    rows.sort();
    rows
}

async fn late_records(client: &tokio_postgres::Client) -> Vec<Vec<Option<String>>> {
    query(client, "SELECT query_id, error FROM eddy_processing_log WHERE error LIKE 'late record%'").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_ahead_in_event_time_makes_no_record_late() {
    let tmp = tempfile::tempdir().unwrap();
    // No partition goes idle here: the result must not depend on the wall clock.
    let args = ["--idle-partition-timeout-ms", "600000"];
    let mut server = Server::start_with(tmp.path(), 0, &args);
    let mut client = server.client().await;
    let (ahead, behind) = (key_in(0), key_in(1));
    client
        .batch_execute(
            "CREATE STREAM clicks (k STRING KEY, n INT) WITH (PARTITIONS=2); \
             CREATE TABLE click_counts AS SELECT k, COUNT(*) AS c FROM clicks \
             WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 0 SECONDS) GROUP BY k EMIT CHANGES; \
             CREATE TABLE click_finals AS SELECT k, COUNT(*) AS c FROM clicks \
             WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 0 SECONDS) GROUP BY k EMIT FINAL; \
             CREATE STREAM click_partitions AS SELECT k, ROWPARTITION AS p FROM clicks",
        )
        .await
        .unwrap();
    // Partition 0's records are 20 s ahead of partition 1's; both rise. Each round's records
    // go in with one INSERT, and the server is killed between rounds: every restart reads
    // partition 0's records (written, like partition 1's, before the crash) in some order.
    for round in 0..4i64 {
        let mut values = Vec::new();
        for j in [1_000, 4_000, 7_000] {
            let t = round * 10_000 + j;
            values.push(format!("({}, '{ahead}', 1)", t + 20_000));
            values.push(format!("({t}, '{behind}', 1)"));
        }
        client
            .batch_execute(&format!("INSERT INTO clicks (ROWTIME, k, n) VALUES {}", values.join(", ")))
            .await
            .unwrap();
        if round % 2 == 1 {
            client.batch_execute("FLUSH").await.unwrap();
        }
        server.kill9();
        server = Server::start_with(tmp.path(), 0, &args);
        client = server.client().await;
    }
    client.batch_execute("FLUSH").await.unwrap();
    let partitions = query(&client, "SELECT k, p FROM click_partitions").await;
    assert_eq!(partitions.len(), 24);
    for row in &partitions {
        let want = if row[0].as_deref() == Some(ahead.as_str()) { "0" } else { "1" };
        assert_eq!(row[1].as_deref(), Some(want), "{row:?}: the test's keys must land in the partitions it meant");
    }
    let mut want = Vec::new();
    for round in 0..4i64 {
        want.push((ahead.clone(), 20_000 + round * 10_000, 3));
        want.push((behind.clone(), round * 10_000, 3));
    }
    want.sort();
    assert_eq!(counts(&client, "click_counts").await, want, "every window exact");
    assert_eq!(late_records(&client).await, Vec::<Vec<Option<String>>>::new(), "no record is late");
    // The watermark is partition 1's time (37 s): only windows ending by then are final.
    let finals: Vec<_> = want.into_iter().filter(|(_, start, _)| start + 10_000 <= 37_000).collect();
    assert_eq!(counts(&client, "click_finals").await, finals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_does_not_hold_windows_back() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let client = server.client().await;
    let key = key_in(0);
    client
        .batch_execute(&format!(
            "CREATE STREAM taps (k STRING KEY, n INT) WITH (PARTITIONS=2); \
             CREATE TABLE tap_finals AS SELECT k, COUNT(*) AS c FROM taps \
             WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 0 SECONDS) GROUP BY k EMIT FINAL; \
             INSERT INTO taps (ROWTIME, k, n) VALUES (1000, '{key}', 1), (2000, '{key}', 1), (15000, '{key}', 1)"
        ))
        .await
        .unwrap();
    // Partition 1 never had data: after the idle timeout (1 s by default) it no longer holds
    // the watermark, and the window [0, 10 s) closes without any further record.
    let started = Instant::now();
    loop {
        let rows = counts(&client, "tap_finals").await;
        if !rows.is_empty() {
            assert_eq!(rows, vec![(key.clone(), 0, 2)]);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the window never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Columns no operator reads are not stored while a query decodes its input, yet a late
/// record's report still holds every column (read again from the log), and a value that does
/// not fit an unread column's type still makes its record refused, as when all are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_columns_are_still_checked_and_reported_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(tmp.path(), 0, &[]);
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM visits (k STRING KEY, n INT, note STRING) \
             WITH (KAFKA_TOPIC='visits', VALUE_FORMAT='JSON', PARTITIONS=1); \
             CREATE TABLE visit_counts AS SELECT k, COUNT(*) AS c FROM visits \
             WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 0 SECONDS) GROUP BY k EMIT CHANGES; \
             CREATE TABLE visitors (k STRING PRIMARY KEY, label STRING) WITH (KAFKA_TOPIC='visitors', PARTITIONS=1); \
             INSERT INTO visitors (k, label) VALUES ('a', 'regular'); \
             FLUSH",
        )
        .await
        .unwrap();
    // The same across a join with a table: the stream's unread columns stay NULL there too.
    client
        .batch_execute(
            "CREATE TABLE label_counts AS SELECT v.label, COUNT(*) AS c FROM visits s JOIN visitors v ON s.k = v.k \
             WINDOW TUMBLING (SIZE 10 SECONDS, GRACE PERIOD 0 SECONDS) GROUP BY v.label EMIT CHANGES",
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO visits (ROWTIME, k, n, note) VALUES \
             (20000, 'a', 1, 'on time'), (1000, 'a', 2, 'too late, with a note')",
        )
        .await
        .unwrap();
    query(&client, "FLUSH").await;
    let late = query(&client, "SELECT record FROM eddy_processing_log WHERE error LIKE 'late record%'").await;
    assert_eq!(late.len(), 2, "one report per query: {late:?}");
    for row in late {
        let record = row[0].clone().expect("the late record is reported");
        assert!(record.contains("too late, with a note") && record.contains('2'), "{record}");
    }

    // Raw JSON whose unread column `n` is not an INT: refused and logged, not counted.
    let input = "c:{\"n\": \"not a number\", \"note\": \"x\"}\nd:{\"n\": 4, \"note\": \"y\"}";
    let broker = server.kafka.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        crate::common::kcat(&["-b", &broker, "-P", "-t", "visits", "-K:"], Some(input.as_bytes()))
    })
    .await
    .unwrap();
    assert!(ok, "kcat: {err}");
    query(&client, "FLUSH").await;
    let counts = query(&client, "SELECT k, c FROM visit_counts WHERE k IN ('c', 'd')").await;
    assert_eq!(counts, vec![vec![Some("d".to_string()), Some("1".to_string())]]);
    let refused = query(&client, "SELECT error FROM eddy_processing_log WHERE record LIKE '%not a number%'").await;
    assert_eq!(refused.len(), 2, "one report per query: {refused:?}");
    let labelled = query(&client, "SELECT label, c FROM label_counts").await;
    assert_eq!(labelled, vec![vec![Some("regular".to_string()), Some("1".to_string())]], "only 'a' on time");
}
