//! Kill during processing: the server aborts at a failure point inside a checkpoint (after a
//! query's output is appended but before its state commits; after the commit but before the
//! output is published; after publishing), is restarted, and every result must equal a
//! recomputation over the input log, with no output record twice and none from a rolled-back
//! step. Covers a grouped aggregate (with an exact DECIMAL sum of 17-digit amounts), a
//! tumbling window, a stream–table join and a filter.
//! `EDDY_CRASH_CYCLES` raises the number of crash cycles per failure point (default 2).

use std::collections::BTreeMap;

use crate::common::{query, Server};

const SETUP: &[&str] = &[
    "CREATE STREAM events (id STRING, k STRING, v BIGINT, ts BIGINT, amt DECIMAL(20,2)) \
     WITH (KAFKA_TOPIC='events', PARTITIONS=2, TIMESTAMP='ts')",
    "CREATE TABLE ks (k STRING PRIMARY KEY, label STRING) WITH (KAFKA_TOPIC='ks', PARTITIONS=1)",
    "INSERT INTO ks (k, label) VALUES ('k0', 'zero'), ('k1', 'one'), ('k2', 'two')",
    "CREATE TABLE per_k AS SELECT k, COUNT(*) AS n, SUM(v) AS total, SUM(amt) AS money FROM events GROUP BY k EMIT CHANGES",
    "CREATE TABLE per_window AS SELECT k, COUNT(*) AS n FROM events WINDOW TUMBLING (SIZE 10 SECONDS) GROUP BY k EMIT CHANGES",
    "CREATE STREAM labelled AS SELECT e.id, e.v, l.label FROM events e LEFT JOIN ks l ON e.k = l.k EMIT CHANGES",
    "CREATE STREAM big AS SELECT id, v FROM events WHERE v >= 50 EMIT CHANGES",
];

fn rows_by_first(rows: Vec<Vec<Option<String>>>) -> BTreeMap<String, Vec<Option<String>>> {
    rows.into_iter().map(|r| (r[0].clone().unwrap_or_default(), r[1..].to_vec())).collect()
}

async fn insert_batch(c: &tokio_postgres::Client, batch: u64) -> bool {
    let values: Vec<String> = (0..20)
        .map(|j| {
            let n = batch * 20 + j;
            // 17 significant digits: sums through a DOUBLE would be off by cents.
            let amt =
                format!("{}{}.{:02}", if n.is_multiple_of(3) { "-" } else { "" }, 123_456_789_012_345 + n * 7, n % 100);
            format!("('e{n}', 'k{}', {}, {}, {amt})", n % 4, (n * 37) % 100, n * 700)
        })
        .collect();
    c.simple_query(&format!("INSERT INTO events (id, k, v, ts, amt) VALUES {}", values.join(", "))).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_inside_checkpoints_lose_and_double_nothing() {
    let cycles: u64 = std::env::var("EDDY_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let mut crashes = 0;
    for point in ["checkpoint:after_sink_append", "checkpoint:after_commit", "checkpoint:after_publish"] {
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(tmp.path());
        let c = server.client().await;
        for sql in SETUP {
            query(&c, sql).await;
        }
        drop(c);
        drop(server);
        let mut batch = 0u64;
        let mut acked = 0u64;
        for cycle in 0..cycles {
            // Abort at a hit after start-up (each of the 5 queries checkpoints once as it
            // resumes, before the server is ready).
            let armed = format!("{point}={}", 6 + 3 * cycle);
            let server = Server::start_with_env(tmp.path(), 0, &[], &[("EDDY_FAILPOINTS", &armed)]);
            let c = server.client().await;
            let mut died = false;
            for _ in 0..200 {
                // Every attempt gets new ids: an INSERT cut off by the crash may or may not
                // have been written, and must not collide with the next one.
                let ok = insert_batch(&c, batch).await;
                batch += 1;
                if !ok {
                    died = true;
                    break;
                }
                acked += 20;
                if c.simple_query("FLUSH").await.is_err() {
                    died = true;
                    break;
                }
            }
            assert!(died, "{point} was never reached in 200 batches");
            crashes += 1;
            drop(server);
        }
        let server = Server::start(tmp.path());
        let c = server.client().await;
        query(&c, "FLUSH").await;
        let inserted: u64 = query(&c, "SELECT COUNT(*) FROM events").await[0][0].as_deref().unwrap().parse().unwrap();
        assert!(inserted >= acked, "{point}: acknowledged inserts lost ({inserted} < {acked})");

        let table = rows_by_first(query(&c, "SELECT k, n, total, CAST(money AS VARCHAR) FROM per_k").await);
        let recomputed = rows_by_first(
            query(&c, "SELECT k, COUNT(*), SUM(v), CAST(SUM(amt) AS VARCHAR) FROM events GROUP BY k").await,
        );
        assert_eq!(table, recomputed, "{point}: aggregate differs from a recomputation");
        assert!(acked > 0 && table.len() == 4, "{point}: {acked} rows acknowledged, {} groups", table.len());
        assert!(table.values().all(|r| r[2].as_deref().is_some_and(|m| m.len() > 17)), "{point}: {table:?}");

        let windows = query(&c, "SELECT k, windowstart, n FROM per_window ORDER BY k, windowstart").await;
        let expected = query(
            &c,
            "SELECT k, ts - ts % 10000 AS ws, COUNT(*) FROM events GROUP BY k, ts - ts % 10000 ORDER BY k, ws",
        )
        .await;
        assert_eq!(windows, expected, "{point}: windowed counts differ from a recomputation");

        for (name, expected_sql) in
            [("labelled", "SELECT COUNT(*) FROM events"), ("big", "SELECT COUNT(*) FROM events WHERE v >= 50")]
        {
            let got = query(&c, &format!("SELECT COUNT(*), COUNT(DISTINCT id) FROM {name}")).await;
            let want = query(&c, expected_sql).await;
            assert_eq!(got[0][0], want[0][0], "{point}: {name} lost or doubled output");
            assert_eq!(got[0][0], got[0][1], "{point}: {name} holds a record twice");
        }
        // Only k3 has no row in ks.
        let unlabelled = query(&c, "SELECT COUNT(*) FROM labelled WHERE label IS NULL").await;
        let k3 = query(&c, "SELECT COUNT(*) FROM events WHERE k = 'k3'").await;
        assert_eq!(unlabelled, k3, "{point}: the join lost its table rows");
    }
    eprintln!("crash_points: {crashes} crashes inside checkpoints, every result recomputed and checked");
}

/// Runs `CREATE STREAM copy <with> AS SELECT id FROM src` over 50 records with `failpoints`
/// armed (the server may die or carry on), restarts without them, and checks that `copy`
/// holds each record exactly once.
async fn copy_once_despite(failpoints: &str, with: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(tmp.path(), 0, &[], &[("EDDY_FAILPOINTS", failpoints)]);
    let c = server.client().await;
    query(&c, "CREATE STREAM src (id BIGINT) WITH (KAFKA_TOPIC='src', PARTITIONS=1)").await;
    let values: Vec<String> = (0..50).map(|i| format!("({i})")).collect();
    query(&c, &format!("INSERT INTO src (id) VALUES {}", values.join(", "))).await;
    let _ = c.simple_query(&format!("CREATE STREAM copy {with} AS SELECT id FROM src EMIT CHANGES")).await;
    let _ = c.simple_query("FLUSH").await;
    drop(c);
    drop(server);
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "FLUSH").await;
    let got = query(&c, "SELECT COUNT(*), COUNT(DISTINCT id) FROM copy").await;
    assert_eq!(got, vec![vec![Some("50".into()), Some("50".into())]], "{failpoints}: output lost or doubled");
}

/// A query's very first checkpoint: the server dies after the query appended its first
/// output and before that output was committed. The restart must drop that output (the
/// query records where its output starts before writing any) and produce it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_new_querys_first_checkpoint_doubles_nothing() {
    copy_once_despite("checkpoint:after_sink_append=1", "").await;
}

/// A checkpoint whose commit fails is rolled back (its output cut) and retried. When the
/// roll-back itself fails, the retry must still not append the output a second time; and a
/// crash halfway through a roll-back (one partition cut, not the other) must double nothing.
/// The copy has two partitions, so that a roll-back can stop between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_interrupted_roll_backs_double_nothing() {
    for failpoints in
        ["checkpoint:fail_commit=1,checkpoint:roll_back_error=1", "checkpoint:fail_commit=1,checkpoint:in_roll_back=1"]
    {
        copy_once_despite(failpoints, "WITH (PARTITIONS=2)").await;
    }
}
