//! Parallel queries (`--query-threads`): a query over a stream of four partitions reads
//! ahead on threads of its own (a projection on four, one per partition; an aggregation on
//! two) and an aggregation folds each large batch's groups on four threads, split by group
//! key. Its results must be exact — equal to the same aggregates recomputed by a
//! pull query over the stream (DataFusion over the topic, not the dataflow) — across a
//! `kill -9` in the middle of a backlog, so no batch is lost or counted twice between the
//! threads and the one checkpoint.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{query, Server};

const ARGS: &[&str] = &["--query-threads", "4"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_threads_stay_exact_across_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(tmp.path(), 0, ARGS);
    let c = server.client().await;
    query(
        &c,
        "CREATE STREAM events (id STRING KEY, g BIGINT, v BIGINT, price DECIMAL(12,2)) \
         WITH (KAFKA_TOPIC='events', PARTITIONS=4)",
    )
    .await;
    // A backlog first: the queries then read it in large batches (thousands of rows each).
    for chunk in 0..40 {
        let values: Vec<String> = (0..1000)
            .map(|j| {
                let i = chunk * 1000 + j;
                format!("('e{i}', {}, {}, {}.{:02})", i % 997, (i * 7919) % 100_003 - 50_000, i % 500, i % 100)
            })
            .collect();
        query(&c, &format!("INSERT INTO events (id, g, v, price) VALUES {}", values.join(", "))).await;
    }
    query(
        &c,
        "CREATE TABLE agg AS SELECT g, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi, \
         SUM(price) AS p, COUNT(DISTINCT v % 13) AS d FROM events GROUP BY g EMIT CHANGES",
    )
    .await;
    query(&c, "CREATE STREAM thirds AS SELECT id, v FROM events WHERE v % 3 = 0 EMIT CHANGES").await;
    // Kill while the backlog is being processed, then add more after the restart.
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.kill9();
    let server = Server::start_with(tmp.path(), 0, ARGS);
    let c = server.client().await;
    let values: Vec<String> = (40_000..41_000).map(|i| format!("('e{i}', {}, {i}, 1.00)", i % 997)).collect();
    query(&c, &format!("INSERT INTO events (id, g, v, price) VALUES {}", values.join(", "))).await;
    query(&c, "FLUSH").await;

    let as_map = |rows: Vec<Vec<Option<String>>>| -> BTreeMap<String, Vec<Option<String>>> {
        rows.into_iter().map(|r| (r[0].clone().unwrap(), r[1..].to_vec())).collect()
    };
    let table = as_map(query(&c, "SELECT g, n, s, lo, hi, p, d FROM agg").await);
    let recomputed = as_map(
        query(
            &c,
            "SELECT g, COUNT(*), SUM(v), MIN(v), MAX(v), SUM(price), COUNT(DISTINCT v % 13) FROM events GROUP BY g",
        )
        .await,
    );
    assert_eq!(table.len(), 997);
    assert_eq!(table, recomputed, "the aggregation over four threads differs from the recomputation");

    let thirds = query(&c, "SELECT COUNT(*), COUNT(DISTINCT id) FROM thirds").await;
    let expected = query(&c, "SELECT COUNT(*) FROM events WHERE v % 3 = 0").await;
    assert_eq!(thirds[0][0], expected[0][0], "the read-ahead query lost or doubled records");
    assert_eq!(thirds[0][0], thirds[0][1]);
}
