//! Push queries over tables (issue 16): the change kind of each row (`op`) is worked out
//! against the row its key had before, read by key from the table's materialization as of
//! where the push query starts, never from a copy of the whole table. Checked over an
//! aggregation (typed keys of two columns, grouped in another order than selected) and a
//! table declared on a topic (tombstones from kcat), with filters that move rows into and
//! out of the result, from the end and from the start of the changelog.

use crate::common::{kcat, query, Server};

type Rows = Vec<Vec<Option<String>>>;

fn sorted(mut rows: Rows) -> Rows {
    rows.sort();
    rows
}

fn row(cells: &[&str]) -> Vec<Option<String>> {
    cells.iter().map(|c| Some(c.to_string())).collect()
}

/// Writes `lines` (`key:value`, an empty value a tombstone) to `topic` with kcat.
async fn kcat_produce(kafka: &str, topic: &str, lines: &str) {
    let args = ["-P", "-b", kafka, "-t", topic, "-K:", "-Z"].map(String::from);
    let lines = lines.as_bytes().to_vec();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kcat(&args, Some(&lines))
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregation_pushes_inserts_updates_and_deletes_of_its_result() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE STREAM ev (id STRING KEY, region STRING, kind STRING) WITH (PARTITIONS=2)").await;
    query(&c, "CREATE TABLE counts AS SELECT region, kind, COUNT(*) AS n FROM ev GROUP BY kind, region EMIT CHANGES")
        .await;
    // Before the push query: (r0, a) 1, (r1, a) 2, (r2, b) 2, (r3, c) 3.
    let before =
        [("r0", "a"), ("r1", "a"), ("r1", "a"), ("r2", "b"), ("r2", "b"), ("r3", "c"), ("r3", "c"), ("r3", "c")];
    let values: Vec<String> = before.iter().enumerate().map(|(i, (r, k))| format!("('e{i}', '{r}', '{k}')")).collect();
    query(&c, &format!("INSERT INTO ev (id, region, kind) VALUES {}", values.join(", "))).await;
    query(&c, "FLUSH").await;
    assert_eq!(query(&c, "SELECT n FROM counts WHERE region = 'r3' AND kind = 'c'").await, vec![row(&["3"])]);

    query(&c, "BEGIN").await;
    query(&c, "DECLARE p CURSOR FOR SELECT region, kind, n FROM counts WHERE n BETWEEN 2 AND 3 EMIT CHANGES").await;
    // (r0, a) 1 -> 2 enters the result; (r1, a) 2 -> 3 stays in it; (r3, c) 3 -> 4 leaves it
    // (the delete carries the row it had); (r4, d) 0 -> 1 stays out.
    query(
        &c,
        "INSERT INTO ev (id, region, kind) VALUES ('f0', 'r0', 'a'), ('f1', 'r1', 'a'), ('f2', 'r3', 'c'), ('f3', 'r4', 'd')",
    )
    .await;
    query(&c, "SET eddy.fetch_timeout = '30s'").await;
    let got = query(&c, "FETCH 3 FROM p").await;
    assert_eq!(
        sorted(got),
        vec![row(&["r0", "a", "2", "insert"]), row(&["r1", "a", "3", "update"]), row(&["r3", "c", "3", "delete"])],
        "each kind against the row the key had when the push query started"
    );
    // Nothing else: (r4, d) is outside the result.
    query(&c, "SET eddy.fetch_timeout = '1s'").await;
    assert_eq!(query(&c, "FETCH 1 FROM p").await, Rows::new());
    query(&c, "COMMIT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_table_pushes_tombstones_of_rows_it_had_before() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(
        &c,
        "CREATE TABLE users (id STRING PRIMARY KEY, name STRING) WITH (KAFKA_TOPIC='users', VALUE_FORMAT='JSON', PARTITIONS=1)",
    )
    .await;
    query(&c, "INSERT INTO users (id, name) VALUES ('1', 'ann'), ('2', 'bo'), ('3', 'cy')").await;
    query(&c, "FLUSH").await;
    query(&c, "SET eddy.fetch_timeout = '30s'").await;

    // From the end: key 1 is deleted and written again (an insert: the deletion is
    // remembered, not read again from the rows the query started with), key 2 changes.
    query(&c, "BEGIN").await;
    query(&c, "DECLARE e CURSOR FOR SELECT id, name FROM users WHERE name <> 'zed' EMIT CHANGES").await;
    kcat_produce(&server.kafka, "users", "1:\n").await;
    query(&c, "INSERT INTO users (id, name) VALUES ('1', 'anne'), ('2', 'zed'), ('4', 'di')").await;
    let got = query(&c, "FETCH 4 FROM e").await;
    assert_eq!(
        got,
        vec![
            row(&["1", "ann", "delete"]),
            row(&["1", "anne", "insert"]),
            row(&["2", "bo", "delete"]),
            row(&["4", "di", "insert"]),
        ]
    );
    query(&c, "COMMIT").await;

    // From the start of the changelog: every write in order, kinds from the changelog itself,
    // then (once it has caught up with the table) a change of a key it read long before.
    query(&c, "SET 'auto.offset.reset' = 'earliest'").await;
    query(&c, "BEGIN").await;
    query(&c, "DECLARE s CURSOR FOR SELECT id, name FROM users EMIT CHANGES").await;
    let got = query(&c, "FETCH 7 FROM s").await;
    assert_eq!(
        got,
        vec![
            row(&["1", "ann", "insert"]),
            row(&["2", "bo", "insert"]),
            row(&["3", "cy", "insert"]),
            row(&["1", "ann", "delete"]),
            row(&["1", "anne", "insert"]),
            row(&["2", "zed", "update"]),
            row(&["4", "di", "insert"]),
        ]
    );
    query(&c, "FLUSH").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    query(&c, "INSERT INTO users (id, name) VALUES ('3', 'cyd')").await;
    kcat_produce(&server.kafka, "users", "4:\n").await;
    let got = query(&c, "FETCH 2 FROM s").await;
    assert_eq!(got, vec![row(&["3", "cyd", "update"]), row(&["4", "di", "delete"])]);
    query(&c, "COMMIT").await;
}
