//! Exact numbers in continuous aggregates (issue 15): SUM and AVG over DECIMAL are exact to
//! the last digit (over streams, over tables whose rows are updated, and across merged
//! session windows), and a BIGINT sum past 2^63 rejects the row that caused it, into the
//! processing log, instead of turning into a float or a NULL.

use crate::common::{query, Server};

fn row(cells: &[&str]) -> Vec<Option<String>> {
    cells.iter().map(|c| Some(c.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimal_sum_and_avg_over_a_stream_are_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE STREAM pay (id STRING KEY, acct STRING, amount DECIMAL(20,2)) WITH (PARTITIONS=1)").await;
    query(
        &c,
        "CREATE TABLE totals AS SELECT acct, SUM(amount) AS total, AVG(amount) AS mean, MIN(amount) AS lo, \
         MAX(amount) AS hi, COUNT(DISTINCT amount) AS d FROM pay GROUP BY acct EMIT CHANGES",
    )
    .await;
    // 17 significant digits: a DOUBLE holds about 16, so a sum through f64 is off by cents.
    query(
        &c,
        "INSERT INTO pay (id, acct, amount) VALUES ('p1', 'a', 123456789012345.67), ('p2', 'a', 0.01), \
         ('p3', 'a', 100000000000000.03), ('p4', 'a', 123456789012345.66), \
         ('p5', 'b', 9.99), ('p6', 'b', 10.00), ('p7', 'b', 0.01)",
    )
    .await;
    query(&c, "FLUSH").await;
    let rows = query(
        &c,
        "SELECT acct, CAST(total AS VARCHAR), CAST(mean AS VARCHAR), CAST(lo AS VARCHAR), CAST(hi AS VARCHAR), d \
         FROM totals ORDER BY acct",
    )
    .await;
    assert_eq!(
        rows,
        vec![
            // 346913578024691.37 / 4 = 86728394506172.8425
            row(&["a", "346913578024691.37", "86728394506172.842500", "0.01", "123456789012345.67", "4"]),
            // 20.00 / 3 = 6.666666..., rounded half away from zero at AVG's scale (s + 4).
            row(&["b", "20.00", "6.666667", "0.01", "10.00", "3"]),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimal_sum_over_an_updated_table_retracts_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE TABLE accts (id STRING PRIMARY KEY, region STRING, balance DECIMAL(20,2)) WITH (PARTITIONS=1)")
        .await;
    query(
        &c,
        "CREATE TABLE by_region AS SELECT region, SUM(balance) AS total, AVG(balance) AS mean, COUNT(*) AS n \
         FROM accts GROUP BY region EMIT CHANGES",
    )
    .await;
    query(
        &c,
        "INSERT INTO accts (id, region, balance) VALUES ('a', 'eu', 123456789012345.67), ('b', 'eu', 0.01), \
         ('c', 'eu', -0.05)",
    )
    .await;
    query(&c, "FLUSH").await;
    let sql = "SELECT region, CAST(total AS VARCHAR), CAST(mean AS VARCHAR), n FROM by_region ORDER BY region";
    assert_eq!(query(&c, sql).await, vec![row(&["eu", "123456789012345.63", "41152263004115.210000", "3"])]);
    // Each update retracts the old balance and adds the new one, to the cent.
    query(&c, "INSERT INTO accts (id, region, balance) VALUES ('a', 'eu', 123456789012345.66)").await;
    query(&c, "INSERT INTO accts (id, region, balance) VALUES ('b', 'eu', 99999999999999.99)").await;
    query(&c, "FLUSH").await;
    assert_eq!(query(&c, sql).await, vec![row(&["eu", "223456789012345.60", "74485596337448.533333", "3"])]);
    // 'a' moves away: the rest is exact again.
    query(&c, "INSERT INTO accts (id, region, balance) VALUES ('a', 'us', 123456789012345.66)").await;
    query(&c, "FLUSH").await;
    assert_eq!(
        query(&c, sql).await,
        vec![
            row(&["eu", "99999999999999.94", "49999999999999.970000", "2"]),
            row(&["us", "123456789012345.66", "123456789012345.660000", "1"]),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimal_sums_stay_exact_when_sessions_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE STREAM taps (userId STRING, amount DECIMAL(20,2)) WITH (PARTITIONS=1)").await;
    query(
        &c,
        "CREATE TABLE sessions AS SELECT userId, SUM(amount) AS total FROM taps WINDOW SESSION (30 SECONDS) \
         GROUP BY userId EMIT CHANGES",
    )
    .await;
    query(&c, "INSERT INTO taps (ROWTIME, userId, amount) VALUES (0, 'a', 123456789012345.67), (50000, 'a', 0.01)")
        .await;
    query(&c, "FLUSH").await;
    // 25000 bridges the two sessions: they merge into one.
    query(&c, "INSERT INTO taps (ROWTIME, userId, amount) VALUES (25000, 'a', 100000000000000.03)").await;
    query(&c, "FLUSH").await;
    let rows = query(&c, "SELECT userid, windowstart, windowend, CAST(total AS VARCHAR) FROM sessions").await;
    assert_eq!(rows, vec![row(&["a", "0", "50000", "223456789012345.71"])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigint_sum_past_2_63_rejects_the_row_into_the_processing_log() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE STREAM ticks (id STRING KEY, g STRING, v BIGINT) WITH (PARTITIONS=1)").await;
    query(&c, "CREATE TABLE sums AS SELECT g, SUM(v) AS total, COUNT(*) AS n FROM ticks GROUP BY g EMIT CHANGES").await;
    query(&c, "INSERT INTO ticks (id, g, v) VALUES ('t1', 'g', 9223372036854775000)").await;
    query(&c, "FLUSH").await;
    // t2 would take the sum past 2^63 - 1; t3, in the same batch, is fine.
    query(&c, "INSERT INTO ticks (id, g, v) VALUES ('t2', 'g', 1000), ('t3', 'h', 1)").await;
    query(&c, "FLUSH").await;
    let sql = "SELECT g, total, n FROM sums ORDER BY g";
    assert_eq!(query(&c, sql).await, vec![row(&["g", "9223372036854775000", "1"]), row(&["h", "1", "1"])]);
    let log = query(&c, "SELECT query_id, topic, source_offset, error FROM eddy_processing_log").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0][0].as_deref().unwrap().starts_with("CTAS_SUMS"), "{log:?}");
    assert_eq!(log[0][1].as_deref(), Some("ticks"), "{log:?}");
    assert_eq!(log[0][2].as_deref(), Some("1"), "the offset of t2: {log:?}");
    assert!(log[0][3].as_deref().unwrap().starts_with("bigint out of range"), "{log:?}");
    // The query keeps running: smaller values still add, and the type stays BIGINT.
    query(&c, "INSERT INTO ticks (id, g, v) VALUES ('t4', 'g', 7), ('t5', 'g', -5)").await;
    query(&c, "FLUSH").await;
    assert_eq!(query(&c, sql).await, vec![row(&["g", "9223372036854775002", "3"]), row(&["h", "1", "1"])]);
    let typed = c.query("SELECT total FROM sums WHERE g = 'g'", &[]).await.unwrap();
    assert_eq!(typed[0].get::<_, i64>(0), 9223372036854775002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_numbers_are_equal_join_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE TABLE prices (sku INT PRIMARY KEY, price DECIMAL(10,2)) WITH (PARTITIONS=1)").await;
    query(&c, "CREATE STREAM sales (id STRING KEY, sku DOUBLE) WITH (PARTITIONS=1)").await;
    query(
        &c,
        "CREATE STREAM priced AS SELECT s.id AS id, p.price AS price FROM sales s JOIN prices p ON s.sku = p.sku \
         EMIT CHANGES",
    )
    .await;
    query(&c, "INSERT INTO prices (sku, price) VALUES (3, 1.50), (4, 2.00)").await;
    query(&c, "FLUSH").await;
    // A DOUBLE 3.0 is the INT key 3; 3.5 is no INT key at all (not 3, truncated).
    query(&c, "INSERT INTO sales (id, sku) VALUES ('s1', 3.0), ('s2', 3.5), ('s3', 4), ('s4', -0.0)").await;
    query(&c, "FLUSH").await;
    let rows = query(&c, "SELECT id, CAST(price AS VARCHAR) FROM priced ORDER BY id").await;
    assert_eq!(rows, vec![row(&["s1", "1.50"]), row(&["s3", "2.00"])]);
}
