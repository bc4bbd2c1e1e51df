//! Push queries with GROUP BY and over stream–stream joins (issue 17): transient queries
//! with state of their own, dropped when the client goes away. Checked with tokio-postgres:
//! the change kinds of an aggregate's rows (HAVING moves groups out), `auto.offset.reset`,
//! SHOW QUERIES and TERMINATE, and a client that vanishes without a word. Also ksqlDB's
//! PRINT (a topic's records as they are, streamed the same way) over records kcat wrote,
//! ASSERT TOPIC waiting for a topic kcat creates, and SHOW FUNCTIONS.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::{kcat, query, row, sqlstate, Server};

type Rows = Vec<Vec<Option<String>>>;

/// Fetches from cursor `p` until `done` holds for every row fetched so far (or 30 s pass).
async fn fetch_until(c: &tokio_postgres::Client, done: impl Fn(&Rows) -> bool) -> Rows {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rows = Rows::new();
    while !done(&rows) && Instant::now() < deadline {
        rows.extend(query(c, "FETCH 100 FROM p").await);
    }
    rows
}

/// The last row of each key (the first `key_width` cells).
fn last_per_key(rows: &Rows, key_width: usize) -> BTreeMap<Vec<Option<String>>, Vec<Option<String>>> {
    rows.iter().map(|r| (r[..key_width].to_vec(), r.clone())).collect()
}

/// The transient queries SHOW QUERIES lists.
async fn transient_queries(c: &tokio_postgres::Client) -> Rows {
    query(c, "SHOW QUERIES")
        .await
        .into_iter()
        .filter(|r| r[0].as_deref().unwrap_or("").starts_with("transient_"))
        .collect()
}

/// Waits until SHOW QUERIES lists no transient query.
async fn until_no_transient_query(c: &tokio_postgres::Client, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if transient_queries(c).await.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_by_push_query_sends_each_groups_changes_until_its_client_leaves() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE STREAM ev (id STRING KEY, region STRING, amount BIGINT) WITH (PARTITIONS=2)").await;
    query(&c, "INSERT INTO ev (id, region, amount) VALUES ('e0', 'r0', 1), ('e1', 'r1', 10), ('e2', 'r1', 20)").await;

    // From the start: every row so far, then what comes. r1 reaches 3 rows and leaves the
    // result (HAVING): a delete that carries its key.
    query(&c, "SET 'auto.offset.reset' = 'earliest'").await;
    query(&c, "SET eddy.fetch_timeout = '1s'").await;
    query(&c, "BEGIN").await;
    query(
        &c,
        "DECLARE p CURSOR FOR SELECT region, COUNT(*) AS n, SUM(amount) AS total FROM ev \
         GROUP BY region HAVING COUNT(*) < 3 EMIT CHANGES",
    )
    .await;
    let first = fetch_until(&c, |rows| {
        let last = last_per_key(rows, 1);
        last.get(&row(&["r0"])).is_some_and(|r| r[1].as_deref() == Some("1"))
            && last.get(&row(&["r1"])).is_some_and(|r| r[1].as_deref() == Some("2"))
    })
    .await;
    assert_eq!(
        last_per_key(&first, 1).into_values().collect::<Rows>(),
        vec![row(&["r0", "1", "1", "insert"]), row(&["r1", "2", "30", "insert"])],
        "{first:?}"
    );
    query(&c, "INSERT INTO ev (id, region, amount) VALUES ('e3', 'r1', 5), ('e4', 'r0', 2), ('e5', 'r2', 7)").await;
    let then = fetch_until(&c, |rows| last_per_key(rows, 1).len() == 3).await;
    let last = last_per_key(&then, 1);
    assert_eq!(last[&row(&["r0"])], row(&["r0", "2", "3", "update"]), "{then:?}");
    assert_eq!(last[&row(&["r1"])], vec![Some("r1".into()), None, None, Some("delete".into())], "{then:?}");
    assert_eq!(last[&row(&["r2"])], row(&["r2", "1", "7", "insert"]), "{then:?}");
    // Kinds follow each group: never an update before its insert.
    for r in &then {
        assert_ne!((r[0].as_deref(), r[3].as_deref()), (Some("r2"), Some("update")), "{then:?}");
    }

    // SHOW QUERIES lists it while it runs; closing the cursor ends it (and drops its state).
    let listed = transient_queries(&c).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0][4].as_deref().unwrap().contains("GROUP BY region"), "{listed:?}");
    query(&c, "CLOSE p").await;
    query(&c, "COMMIT").await;
    assert!(until_no_transient_query(&c, Duration::from_secs(10)).await, "the query outlived its cursor");

    // From the end (the default): only rows written after it started count.
    query(&c, "SET 'auto.offset.reset' = 'latest'").await;
    query(&c, "BEGIN").await;
    query(&c, "DECLARE p CURSOR FOR SELECT region, COUNT(*) AS n FROM ev GROUP BY region EMIT CHANGES").await;
    // The cursor's query starts with DECLARE; what it reads begins after this insert.
    query(&c, "INSERT INTO ev (id, region, amount) VALUES ('e6', 'r0', 1), ('e7', 'r0', 1)").await;
    let fresh =
        fetch_until(&c, |rows| last_per_key(rows, 1).get(&row(&["r0"])).is_some_and(|r| r[1].as_deref() == Some("2")))
            .await;
    assert_eq!(last_per_key(&fresh, 1)[&row(&["r0"])][..2], row(&["r0", "2"])[..], "{fresh:?}");
    query(&c, "CLOSE p").await;
    query(&c, "COMMIT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_query_ends_when_terminated_or_when_its_client_vanishes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE STREAM l (id STRING KEY, a BIGINT) WITH (PARTITIONS=1)").await;
    query(&c, "CREATE STREAM r (id STRING KEY, b BIGINT) WITH (PARTITIONS=1)").await;
    query(&c, "INSERT INTO l (id, a) VALUES ('k1', 1), ('k2', 2)").await;
    query(&c, "INSERT INTO r (id, b) VALUES ('k1', 10)").await;

    // A stream–stream join in a push query, ended by TERMINATE from another session: the
    // statement completes with what was sent.
    let other = server.client().await;
    let joined = tokio::spawn(async move {
        query(&other, "SET 'auto.offset.reset' = 'earliest'").await;
        query(&other, "SELECT l.id AS id, a, b FROM l JOIN r WITHIN 1 HOURS ON l.id = r.id EMIT CHANGES").await
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let listed = transient_queries(&c).await;
        if let Some(q) = listed.first() {
            break q[0].clone().unwrap();
        }
        assert!(Instant::now() < deadline, "the push query never showed in SHOW QUERIES");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    query(&c, "INSERT INTO r (id, b) VALUES ('k2', 20)").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    query(&c, &format!("TERMINATE {id}")).await;
    let mut rows = tokio::time::timeout(Duration::from_secs(20), joined).await.expect("ended").unwrap();
    rows.sort();
    assert_eq!(rows, vec![row(&["k1", "1", "10"]), row(&["k2", "2", "20"])]);
    assert!(until_no_transient_query(&c, Duration::from_secs(10)).await);

    // A client that goes away mid-query without a cancel (its socket just closes): the
    // server notices while the query has nothing to send, and stops it.
    let (gone, connection) = tokio_postgres::connect(&server.conn_string(), tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let waiting = tokio::spawn(async move {
        let _ = gone.simple_query("SELECT id, COUNT(*) AS n FROM l GROUP BY id EMIT CHANGES").await;
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while transient_queries(&c).await.is_empty() {
        assert!(Instant::now() < deadline, "the push query never showed in SHOW QUERIES");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    connection.abort();
    waiting.abort();
    assert!(
        until_no_transient_query(&c, Duration::from_secs(30)).await,
        "the query of a client that went away kept running"
    );
    // The server goes on.
    assert_eq!(query(&c, "SELECT 1").await, vec![row(&["1"])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_shows_a_topics_records_as_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    // Records no stream describes: text, a 4-byte number (KAFKA format), a tombstone.
    let kafka = server.kafka.clone();
    let lines = b"k1:{\"a\":1}\nk2:\x00\x00\x00\x2a\nk3:\n".to_vec();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        kcat(&["-P", "-b", &kafka, "-t", "Raw", "-K:", "-Z", "-p", "0"], Some(&lines))
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let columns = |rows: Rows| -> Rows { rows.into_iter().map(|r| r[1..].to_vec()).collect() };
    // Unquoted, any case matches; from the beginning; every record.
    let got = columns(query(&c, "PRINT raw FROM BEGINNING LIMIT 3").await);
    assert_eq!(
        got,
        vec![
            row(&["0", "0", "k1", "{\"a\":1}"]),
            row(&["0", "1", "k2", "\\x0000002a"]),
            vec![Some("0".into()), Some("2".into()), Some("k3".into()), None],
        ]
    );
    assert_eq!(columns(query(&c, "PRINT 'Raw' FROM BEGINNING INTERVAL 2 LIMIT 2").await)[1][1].as_deref(), Some("2"));
    assert_eq!(sqlstate(&c, "PRINT 'raw' FROM BEGINNING LIMIT 1").await.0, "42P01", "a quoted name keeps its case");

    // From the end: only what comes after it started.
    let printer = server.client().await;
    let waiting = tokio::spawn(async move { query(&printer, "PRINT Raw LIMIT 1").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kafka = server.kafka.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        kcat(&["-P", "-b", &kafka, "-t", "Raw", "-K:", "-p", "0"], Some(b"k4:later\n"))
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let later = tokio::time::timeout(Duration::from_secs(20), waiting).await.expect("PRINT ended").unwrap();
    assert_eq!(columns(later), vec![row(&["0", "3", "k4", "later"])]);

    // ASSERT TOPIC waits (up to its TIMEOUT) for a topic a Kafka producer creates.
    let asserter = server.client().await;
    let waiting =
        tokio::spawn(async move { asserter.simple_query("ASSERT TOPIC 'Later' TIMEOUT 30 SECONDS").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "ASSERT TOPIC did not wait for the topic");
    let kafka = server.kafka.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        kcat(&["-P", "-b", &kafka, "-t", "Later", "-K:", "-p", "0"], Some(b"k:v\n"))
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let asserted = tokio::time::timeout(Duration::from_secs(20), waiting).await.expect("ASSERT TOPIC ended").unwrap();
    assert!(asserted.is_ok(), "{asserted:?}");
    assert_eq!(sqlstate(&c, "ASSERT TOPIC 'later' TIMEOUT 10 MILLISECONDS").await.0, "42704");

    // SHOW FUNCTIONS: every kind, ksqlDB's names, none of Eddy's internal stand-ins.
    let functions = query(&c, "SHOW FUNCTIONS").await;
    let kind = |name: &str| functions.iter().find(|r| r[0].as_deref() == Some(name)).and_then(|r| r[1].clone());
    assert_eq!(kind("ROUND").as_deref(), Some("SCALAR"));
    assert_eq!(kind("TOPK").as_deref(), Some("AGGREGATE"));
    assert_eq!(kind("EXPLODE").as_deref(), Some("TABLE"));
    assert_eq!(kind("TRANSFORM").as_deref(), Some("SCALAR"));
    assert!(functions.iter().all(|r| !r[0].as_deref().unwrap_or("").starts_with("KSQL_")), "internal names listed");
}
