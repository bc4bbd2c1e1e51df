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

/// `log recovered: N segments, M scanned (B bytes) ...` from a server log: (N, M, B).
fn recovery_line(log: &std::path::Path) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(log).unwrap();
    let line =
        text.lines().find(|l| l.contains("log recovered: ")).unwrap_or_else(|| panic!("no recovery line:\n{text}"));
    let numbers: Vec<u64> = line
        .split("log recovered: ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}

/// Bytes in each partition's last segment file (what a crash recovery may scan).
fn active_segment_bytes(data: &std::path::Path) -> (u64, usize) {
    let (mut bytes, mut partitions) = (0, 0);
    for topic in std::fs::read_dir(data.join("log")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
        for partition in std::fs::read_dir(&topic).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
            let mut logs: Vec<_> = std::fs::read_dir(&partition)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect();
            logs.sort();
            bytes += logs.last().map_or(0, |f| std::fs::metadata(f).unwrap().len());
            partitions += 1;
        }
    }
    (bytes, partitions)
}

/// Restart time independent of the log's size (issue 16): after kill -9 only each
/// partition's active segment is scanned (sealed ones open from their index files) and every
/// acknowledged record is there; after a clean shutdown nothing is scanned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_scans_only_active_segments_and_a_clean_restart_scans_nothing() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;

    let tmp = tempfile::tempdir().unwrap();
    let logged = [("EDDY_LOG", "warn,eddy::log=info")];
    let mut server = Server::start(tmp.path());
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &server.kafka).create().unwrap();
    let topic = NewTopic::new("r", 2, TopicReplication::Fixed(1)).set("segment.bytes", "1024");
    admin.create_topics(&[topic], &AdminOptions::new()).await.unwrap();
    let c = server.client().await;
    query(&c, "CREATE STREAM r (id BIGINT, note STRING) WITH (KAFKA_TOPIC='r')").await;

    let writer = server.client().await;
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let acked2 = acked.clone();
    let ingest = tokio::spawn(async move {
        for i in 0u64.. {
            let sql = format!("INSERT INTO r (id, note) VALUES ({i}, 'record number {i}'), ({}, 'x')", i + 1_000_000);
            if writer.simple_query(&sql).await.is_err() {
                break;
            }
            acked2.store(i + 1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    tokio::time::sleep(Duration::from_millis(2000)).await;
    server.kill9();
    let _ = ingest.await;
    let acked = acked.load(std::sync::atomic::Ordering::SeqCst);
    assert!(acked > 50, "only {acked} inserts before the kill");

    let log = tmp.path().join("after-kill.log");
    let mut server = Server::start_logging_with_env(tmp.path(), &logged, &log);
    let (segments, scanned, bytes) = recovery_line(&log);
    let (active_bytes, partitions) = active_segment_bytes(tmp.path());
    assert!(scanned as usize <= partitions, "{scanned} segments scanned for {partitions} partitions");
    assert!(bytes <= active_bytes, "{bytes} bytes scanned, the active segments hold {active_bytes}");
    assert!(segments > 2 * partitions as u64, "want many sealed segments, got {segments}");
    let c = server.client().await;
    let ids: Vec<u64> = query(&c, "SELECT id FROM r WHERE id < 1000000")
        .await
        .into_iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    let ids: std::collections::BTreeSet<u64> = ids.into_iter().collect();
    assert!((0..acked).all(|i| ids.contains(&i)), "an acknowledged insert is missing after kill -9");
    let count = query(&c, "SELECT COUNT(*), COUNT(DISTINCT id) FROM r").await;
    assert_eq!(count[0][0], count[0][1], "a record was read twice");
    assert!(server.terminate().success());

    let log = tmp.path().join("after-clean.log");
    let server = Server::start_logging_with_env(tmp.path(), &logged, &log);
    assert_eq!(recovery_line(&log), (segments, 0, 0), "a clean restart reads no segment");
    let c = server.client().await;
    assert_eq!(query(&c, "SELECT COUNT(*), COUNT(DISTINCT id) FROM r").await, count);
}

/// State written before group state was typed (format 1: JSON groups) cannot be read by this
/// version: the aggregation drops it with a warning naming the query and the format, reads
/// its source again from the start, and its table is exact again (nothing counted twice or
/// lost), by scan and by key lookup. Simulated by rewriting a stopped server's groups as
/// format-1 JSON and removing the format key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_state_of_an_older_format_is_dropped_and_recomputed() {
    use eddy::state::backup::BackupConfig;
    use eddy::state::{StateStore, ROW_PREFIX, STATE_FORMAT_KEY};

    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE STREAM pay (id STRING KEY, acct STRING, amount BIGINT) WITH (PARTITIONS=2)").await;
    query(
        &c,
        "CREATE TABLE per_acct AS SELECT acct, COUNT(*) AS n, SUM(amount) AS total FROM pay GROUP BY acct EMIT CHANGES",
    )
    .await;
    let values: Vec<String> = (0..40).map(|i| format!("('p{i}', 'a{}', {i})", i % 4)).collect();
    query(&c, &format!("INSERT INTO pay (id, acct, amount) VALUES {}", values.join(", "))).await;
    query(&c, "FLUSH").await;
    let id = query(&c, "SHOW QUERIES").await.into_iter().map(|r| r[0].clone().unwrap()).next().unwrap();
    drop(c);
    assert!(server.terminate().success());

    let store =
        StateStore::open(&tmp.path().join("state"), &BackupConfig { keep: 0, interval: None, ..Default::default() })
            .unwrap();
    let cf = format!("q_{id}");
    let groups = store.scan_prefix(&cf, &[ROW_PREFIX], usize::MAX).unwrap();
    assert_eq!(groups.len(), 4, "one group per account");
    let mut cp = store.checkpoint(&cf);
    for (k, _) in &groups {
        cp.put(&store, k, br#"{"g":["a0"],"a":[10,[100,10]],"r":["a0",10,100],"n":10}"#).unwrap();
    }
    cp.delete(&store, STATE_FORMAT_KEY).unwrap();
    store.commit(cp).unwrap();
    store.close().unwrap();
    drop(store);

    let log = tmp.path().join("restart.log");
    let server = Server::start_logging(tmp.path(), &[], &log);
    let c = server.client().await;
    query(&c, "INSERT INTO pay (id, acct, amount) VALUES ('late', 'a1', 1000)").await;
    query(&c, "FLUSH").await;
    let rows = query(&c, "SELECT acct, n, total FROM per_acct ORDER BY acct").await;
    let expected: Vec<Vec<Option<String>>> = (0..4)
        .map(|a| {
            let ids: Vec<i64> = (0..40).filter(|i| i % 4 == a).collect();
            let extra = if a == 1 { 1000 } else { 0 };
            let n = ids.len() + usize::from(a == 1);
            vec![Some(format!("a{a}")), Some(n.to_string()), Some((ids.iter().sum::<i64>() + extra).to_string())]
        })
        .collect();
    assert_eq!(rows, expected);
    assert_eq!(query(&c, "SELECT total FROM per_acct WHERE acct = 'a2'").await, vec![expected[2][2..].to_vec()]);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains(&format!("query {id}: its aggregation state was written by an older version")), "{logged}");
}

/// Rows that an older Eddy stored as JSON are still read: every binary row in state (a table's
/// rows, a query's previous rows of a table, table–table join sides, the output row in each
/// aggregation group, session lists, stream–stream join buffers) is put back into the JSON
/// form older versions wrote, and the restarted server reads the same tables, retracts the old
/// rows exactly when they change, merges sessions with the old lists and joins new records
/// with the old buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stored_as_json_by_an_older_version_are_read_and_replaced() {
    use eddy::format::stored;
    use eddy::state::backup::BackupConfig;
    use eddy::state::StateStore;
    use serde_json::{json, Value};

    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    let c = server.client().await;
    for sql in [
        "CREATE TABLE accts (id STRING PRIMARY KEY, region STRING, bal DECIMAL(20,2), tags ARRAY<INT>) \
         WITH (PARTITIONS=1)",
        "CREATE TABLE regions (code STRING PRIMARY KEY, label STRING) WITH (PARTITIONS=1)",
        "CREATE STREAM clicks (u STRING, n INT) WITH (PARTITIONS=1)",
        "CREATE STREAM views (u STRING, m INT) WITH (PARTITIONS=1)",
        "CREATE TABLE by_region AS SELECT region, SUM(bal) AS total, COUNT(*) AS c, MAX(bal) AS hi FROM accts \
         GROUP BY region EMIT CHANGES",
        "CREATE TABLE named AS SELECT a.id, a.bal, r.label FROM accts a LEFT JOIN regions r ON a.region = r.code \
         EMIT CHANGES",
        "CREATE TABLE sess AS SELECT u, COUNT(*) AS c, SUM(n) AS s FROM clicks WINDOW SESSION (10 SECONDS) \
         GROUP BY u EMIT CHANGES",
        "CREATE STREAM sj AS SELECT c.u AS u, c.n, v.m FROM clicks c JOIN views v WITHIN 5 SECONDS ON c.u = v.u \
         EMIT CHANGES",
        "INSERT INTO regions (code, label) VALUES ('eu', 'Europe'), ('us', 'Americas')",
        "INSERT INTO accts (id, region, bal, tags) VALUES ('a', 'eu', 123456789012345.67, ARRAY[1, 2]), \
         ('b', 'eu', 0.01, NULL), ('c', 'us', -5.50, ARRAY[3])",
        "INSERT INTO clicks (ROWTIME, u, n) VALUES (1000, 'x', 1), (1500, 'y', 4)",
        "INSERT INTO views (ROWTIME, u, m) VALUES (3000, 'x', 7)",
        "FLUSH",
    ] {
        query(&c, sql).await;
    }
    let tables = ["accts", "by_region", "named", "sess", "sj"];
    let mut before = Vec::new();
    for t in tables {
        before.push(query(&c, &format!("SELECT * FROM {t} ORDER BY 1, 2")).await);
    }
    drop(c);
    assert!(server.terminate().success());

    // Every binary row back to JSON, as an older version wrote it.
    let state = tmp.path().join("state");
    let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &state).unwrap();
    let store = StateStore::open(&state, &BackupConfig { keep: 0, interval: None, ..Default::default() }).unwrap();
    let cells = |b: &[u8]| Value::Array(stored::row(b).unwrap().unwrap());
    let mut rewritten: BTreeMap<&str, usize> = BTreeMap::new();
    for cf in families.iter().filter(|f| f.starts_with("q_")) {
        let mut cp = store.checkpoint(cf);
        for (k, v) in store.scan_prefix(cf, &[], usize::MAX).unwrap() {
            let (kind, json) = match v.first() {
                Some(&stored::ROW_FORMAT) => ("row", json!({ "r": cells(&v) }).to_string().into_bytes()),
                Some(0xB4) => {
                    let pairs: Vec<[i64; 2]> = v[1..]
                        .chunks_exact(16)
                        .map(|p| {
                            [
                                i64::from_be_bytes(p[..8].try_into().unwrap()),
                                i64::from_be_bytes(p[8..].try_into().unwrap()),
                            ]
                        })
                        .collect();
                    ("session list", serde_json::to_vec(&pairs).unwrap())
                }
                Some(0xB5) => {
                    let (r, _) = stored::take_cells(&v[2..]).unwrap();
                    ("join buffer", json!({ "r": r, "m": v[1] == 1 }).to_string().into_bytes())
                }
                // A group: format byte, count (8), then its output row (length-prefixed).
                Some(0xA2) => {
                    let len = u32::from_be_bytes(v[9..13].try_into().unwrap());
                    if len == u32::MAX {
                        continue;
                    }
                    let end = 13 + len as usize;
                    let row = serde_json::to_vec(&cells(&v[13..end])).unwrap();
                    let mut g = v[..9].to_vec();
                    g.extend_from_slice(&(row.len() as u32).to_be_bytes());
                    g.extend_from_slice(&row);
                    g.extend_from_slice(&v[end..]);
                    ("group row", g)
                }
                _ => continue,
            };
            *rewritten.entry(kind).or_default() += 1;
            cp.put(&store, &k, &json).unwrap();
        }
        store.commit(cp).unwrap();
    }
    store.close().unwrap();
    drop(store);
    for kind in ["row", "session list", "join buffer", "group row"] {
        assert!(rewritten.get(kind).is_some_and(|&n| n > 0), "no {kind} rewritten: {rewritten:?}");
    }

    let log = tmp.path().join("restart.log");
    let server = Server::start_logging(tmp.path(), &[], &log);
    let c = server.client().await;
    query(&c, "FLUSH").await;
    for (t, rows) in tables.iter().zip(&before) {
        assert_eq!(&query(&c, &format!("SELECT * FROM {t} ORDER BY 1, 2")).await, rows, "{t} after the restart");
    }
    // Changes retract the old rows, merge with the old session lists and join with the old
    // buffered records.
    for sql in [
        "INSERT INTO accts (id, region, bal, tags) VALUES ('a', 'us', 1.00, ARRAY[9]), ('b', 'eu', 0.02, NULL)",
        "INSERT INTO regions (code, label) VALUES ('eu', 'EU')",
        "INSERT INTO clicks (ROWTIME, u, n) VALUES (4000, 'x', 2)",
        "INSERT INTO views (ROWTIME, u, m) VALUES (2500, 'y', 8)",
        "FLUSH",
    ] {
        query(&c, sql).await;
    }
    let r = |cells: &[&str]| cells.iter().map(|c| Some(c.to_string())).collect::<Vec<_>>();
    assert_eq!(
        query(&c, "SELECT region, CAST(total AS VARCHAR), c, CAST(hi AS VARCHAR) FROM by_region ORDER BY 1").await,
        vec![r(&["eu", "0.02", "1", "0.02"]), r(&["us", "-4.50", "2", "1.00"])]
    );
    assert_eq!(
        query(&c, "SELECT id, CAST(bal AS VARCHAR), label FROM named ORDER BY 1").await,
        vec![r(&["a", "1.00", "Americas"]), r(&["b", "0.02", "EU"]), r(&["c", "-5.50", "Americas"])]
    );
    assert_eq!(
        query(&c, "SELECT u, windowstart, windowend, c, s FROM sess ORDER BY 1, 2").await,
        vec![r(&["x", "1000", "4000", "2", "3"]), r(&["y", "1500", "1500", "1", "4"])]
    );
    assert_eq!(
        query(&c, "SELECT u, n, m FROM sj ORDER BY 1, 2").await,
        vec![r(&["x", "1", "7"]), r(&["x", "2", "7"]), r(&["y", "4", "8"])]
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("internal error"), "{logged}");
}
