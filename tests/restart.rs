//! Crash safety: kill -9 the server while it is ingesting and running queries, restart it,
//! and check that every acknowledged insert is there and every aggregate equals a
//! recomputation over the topic's contents (no lost and no doubled updates).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{query, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_stream_keeps_every_table_correct() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE STREAM orders (orderId STRING KEY, customerId STRING, amount BIGINT) WITH (KAFKA_TOPIC='orders', PARTITIONS=3)").await;
    query(&c, "CREATE TABLE totals AS SELECT customerId, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY customerId EMIT CHANGES").await;
    query(&c, "CREATE STREAM big AS SELECT orderId, customerId, amount FROM orders WHERE amount >= 50 EMIT CHANGES")
        .await;
    query(&c, "CREATE TABLE big_totals AS SELECT customerId, COUNT(*) AS n FROM big GROUP BY customerId EMIT CHANGES")
        .await;

    // Insert in the background; kill -9 while inserts and queries are in flight.
    let writer = server.client().await;
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let acked2 = acked.clone();
    let ingest = tokio::spawn(async move {
        for i in 0u64.. {
            let values: Vec<String> =
                (0..10).map(|j| format!("('o{i}_{j}', 'c{}', {})", (i + j) % 7, (i * 10 + j) % 100)).collect();
            let sql = format!("INSERT INTO orders (orderId, customerId, amount) VALUES {}", values.join(", "));
            if writer.simple_query(&sql).await.is_err() {
                break;
            }
            acked2.fetch_add(10, std::sync::atomic::Ordering::SeqCst);
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    let _ = ingest.await;
    let acked = acked.load(std::sync::atomic::Ordering::SeqCst);
    assert!(acked > 0, "nothing was inserted before the kill");

    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "INSERT INTO orders (orderId, customerId, amount) VALUES ('after', 'c1', 99)").await;
    query(&c, "FLUSH").await;

    let count: u64 = query(&c, "SELECT COUNT(*) FROM orders").await[0][0].as_deref().unwrap().parse().unwrap();
    assert!(count > acked, "acknowledged inserts were lost: {count} records, {acked} + 1 acknowledged");

    let as_map = |rows: Vec<Vec<Option<String>>>| -> BTreeMap<String, Vec<Option<String>>> {
        rows.into_iter().map(|r| (r[0].clone().unwrap(), r[1..].to_vec())).collect()
    };
    let table = as_map(query(&c, "SELECT customerid, n, total FROM totals").await);
    let recomputed =
        as_map(query(&c, "SELECT customerid, COUNT(*), SUM(amount) FROM orders GROUP BY customerid").await);
    assert_eq!(table, recomputed);

    // The derived stream holds each qualifying record exactly once.
    let big = query(&c, "SELECT COUNT(*), COUNT(DISTINCT orderid) FROM big").await;
    let expected = query(&c, "SELECT COUNT(*) FROM orders WHERE amount >= 50").await;
    assert_eq!(big[0][0], expected[0][0], "output of the derived stream was lost or doubled");
    assert_eq!(big[0][0], big[0][1]);
    let big_table = as_map(query(&c, "SELECT customerid, n FROM big_totals").await);
    let big_recomputed =
        as_map(query(&c, "SELECT customerid, COUNT(*) FROM orders WHERE amount >= 50 GROUP BY customerid").await);
    assert_eq!(big_table, big_recomputed);
}
