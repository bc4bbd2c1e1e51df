//! `INSERT INTO stream SELECT ...` (issue 17): several persistent queries append to one
//! stream, each exactly once, through kill -9 in the middle of their checkpoints; one writer
//! stopping leaves the others' output and fence in place.

use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::common::{query, row, sqlstate, Server};

const SETUP: &[&str] = &[
    "CREATE STREAM a (id INT KEY, n INT) WITH (KAFKA_TOPIC='a', PARTITIONS=2)",
    "CREATE STREAM b (id INT KEY, n INT) WITH (KAFKA_TOPIC='b', PARTITIONS=1)",
    "CREATE STREAM c (id INT KEY, n INT, tag STRING) WITH (KAFKA_TOPIC='c', PARTITIONS=3)",
    "CREATE STREAM merged AS SELECT id, n, 'a' AS src FROM a EMIT CHANGES",
    "INSERT INTO merged SELECT id, n, 'b' AS src FROM b EMIT CHANGES",
    "INSERT INTO merged WITH (QUERY_ID='from_c') SELECT id, n, tag AS src FROM c",
];

/// Per source: how many rows `merged` holds and how many distinct `n` among them.
async fn counts(c: &tokio_postgres::Client) -> Vec<Vec<Option<String>>> {
    query(c, "FLUSH").await;
    query(c, "SELECT src, COUNT(*), COUNT(DISTINCT n) FROM merged GROUP BY src ORDER BY src").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_queries_append_to_one_stream_exactly_once_through_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    let c = server.client().await;
    for s in SETUP {
        query(&c, s).await;
    }
    let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
    let (rounds, per_round) = (5, 400);
    for round in 0..rounds {
        let c = server.client().await;
        // Acknowledged rows into each source, then a kill -9 while the queries work on them.
        for (stream, extra) in [("a", ""), ("b", ""), ("c", ", 'c'")] {
            let values: Vec<String> =
                (0..per_round).map(|i| format!("({i}, {}{extra})", round * per_round + i)).collect();
            query(&c, &format!("INSERT INTO {stream} VALUES {}", values.join(", "))).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..120))).await;
        server.kill9();
        server = Server::start(tmp.path());
    }
    let c = server.client().await;
    let n = (rounds * per_round).to_string();
    let expected: Vec<_> = ["a", "b", "c"].iter().map(|s| row(&[s, &n, &n])).collect();
    assert_eq!(counts(&c).await, expected, "every source's rows once, none lost, none twice");
}

/// The id of the query whose id starts with `prefix` (SHOW QUERIES).
async fn query_id(c: &tokio_postgres::Client, prefix: &str) -> String {
    let rows = query(c, "SHOW QUERIES").await;
    rows.into_iter().filter_map(|r| r[0].clone()).find(|id| id.starts_with(prefix)).expect("the query runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_writer_keeps_the_others_and_what_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    let c = server.client().await;
    for s in SETUP {
        query(&c, s).await;
    }
    query(&c, "INSERT INTO a VALUES (1, 1), (2, 2)").await;
    query(&c, "INSERT INTO b VALUES (3, 3)").await;
    query(&c, "INSERT INTO c VALUES (4, 4, 'c')").await;
    let before = counts(&c).await;
    assert_eq!(before, vec![row(&["a", "2", "2"]), row(&["b", "1", "1"]), row(&["c", "1", "1"])]);

    // Refused, with ksqlDB's reasons.
    let (code, _) = sqlstate(&c, "INSERT INTO merged SELECT id, n FROM b").await;
    assert_eq!(code, "22023", "columns that differ from the stream's");
    assert_eq!(sqlstate(&c, "INSERT INTO merged SELECT id, n, src FROM merged").await.0, "22023", "its own input");
    assert_eq!(sqlstate(&c, "INSERT INTO nowhere SELECT id, n FROM b").await.0, "42P01");
    query(&c, "CREATE TABLE totals AS SELECT id, SUM(n) AS n FROM b GROUP BY id EMIT CHANGES").await;
    assert_eq!(sqlstate(&c, "INSERT INTO totals SELECT id, n FROM b").await.0, "22023", "a table");
    assert_eq!(sqlstate(&c, "DROP STREAM merged").await.0, "55006", "INSERT queries write it");
    // Queries write it: other writers are refused.
    assert_eq!(sqlstate(&c, "INSERT INTO merged VALUES (9, 9, 'x')").await.0, "42809");

    // The query that made the stream stops; a kill -9 follows before the others checkpoint
    // again: what it wrote stays (a resuming writer cuts at the newest committed end).
    let insert_b = query_id(&c, "INSERTQUERY_").await;
    query(&c, &format!("TERMINATE {}", query_id(&c, "CSAS_MERGED_").await)).await;
    server.kill9();
    server = Server::start(tmp.path());
    let c = server.client().await;
    assert_eq!(counts(&c).await, before);
    query(&c, "INSERT INTO b VALUES (5, 5)").await;
    query(&c, "INSERT INTO a VALUES (6, 6)").await;
    let after = counts(&c).await;
    assert_eq!(after, vec![row(&["a", "2", "2"]), row(&["b", "2", "2"]), row(&["c", "1", "1"])]);
    // Still fenced: the INSERT queries write it.
    assert_eq!(sqlstate(&c, "INSERT INTO merged VALUES (9, 9, 'x')").await.0, "42809");
    query(&c, &format!("TERMINATE {insert_b}")).await;
    query(&c, "TERMINATE FROM_C").await;
    // No query writes it now: anyone may, and it can be dropped.
    query(&c, "INSERT INTO merged VALUES (9, 9, 'x')").await;
    assert_eq!(query(&c, "SELECT COUNT(*) FROM merged").await, vec![row(&["6"])]);
    query(&c, "DROP STREAM merged").await;
}
