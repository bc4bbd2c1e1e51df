//! The Postgres endpoint with real clients: tokio-postgres (simple and extended protocol)
//! and the `psql` binary.

use std::process::Command;
use std::time::Duration;

use crate::common::{query, sqlstate, Server};

const ORDERS: &str = "CREATE STREAM orders (orderId STRING KEY, customerId STRING, amount DOUBLE) \
    WITH (KAFKA_TOPIC='orders', VALUE_FORMAT='JSON', PARTITIONS=2)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_insert_aggregate_and_pull() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, ORDERS).await;
    query(
        &c,
        "CREATE TABLE order_totals AS SELECT customerId, COUNT(*) AS orders, SUM(amount) AS total, \
               AVG(amount) AS avg_amount, MIN(amount) AS smallest, MAX(amount) AS largest \
               FROM orders GROUP BY customerId EMIT CHANGES",
    )
    .await;
    query(&c, "INSERT INTO orders (orderId, customerId, amount) VALUES ('o1', 'alice', 10.0), ('o2', 'bob', 250.5), ('o3', 'alice', 30.0)").await;
    query(&c, "FLUSH").await;
    let rows = query(
        &c,
        "SELECT customerid, orders, total, avg_amount, smallest, largest FROM order_totals ORDER BY customerid",
    )
    .await;
    assert_eq!(
        rows,
        vec![
            vec![
                Some("alice".into()),
                Some("2".into()),
                Some("40".into()),
                Some("20".into()),
                Some("10".into()),
                Some("30".into())
            ],
            vec![
                Some("bob".into()),
                Some("1".into()),
                Some("250.5".into()),
                Some("250.5".into()),
                Some("250.5".into()),
                Some("250.5".into())
            ],
        ]
    );
    // Extended protocol with a parameter, binary results.
    let rows = c.query("SELECT orders, total FROM order_totals WHERE customerid = $1", &[&"alice"]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 2);
    assert_eq!(rows[0].get::<_, f64>(1), 40.0);
    // A bounded scan of the stream, and the stream's own topic.
    let rows = query(&c, "SELECT COUNT(*) FROM orders WHERE amount > 20").await;
    assert_eq!(rows, vec![vec![Some("2".into())]]);
    let topics = query(&c, "SHOW TOPICS").await;
    assert!(topics.iter().any(|r| r[0].as_deref() == Some("orders") && r[1].as_deref() == Some("2")), "{topics:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_query_with_limit_and_filter() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, ORDERS).await;
    let reader = server.client().await;
    let push = tokio::spawn(async move {
        query(&reader, "SELECT orderId, amount FROM orders WHERE amount > 100 EMIT CHANGES LIMIT 2").await
    });
    // The push query starts at the end of the stream: insert until it has seen two rows.
    let mut n = 0;
    while !push.is_finished() && n < 200 {
        query(
            &c,
            &format!("INSERT INTO orders (orderId, customerId, amount) VALUES ('a{n}', 'c', 50), ('b{n}', 'c', 150)"),
        )
        .await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = push.await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r[0].as_deref().unwrap().starts_with('b') && r[1].as_deref() == Some("150")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_push_query_gives_57014() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, ORDERS).await;
    let token = c.cancel_token();
    let push = tokio::spawn(async move { c.simple_query("SELECT * FROM orders EMIT CHANGES").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!push.is_finished(), "a push query without LIMIT runs until cancelled");
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err =
        tokio::time::timeout(Duration::from_secs(10), push).await.expect("cancel took effect").unwrap().unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014", "{err:?}");
    // The server is fine afterwards.
    let c2 = server.client().await;
    assert_eq!(query(&c2, "SELECT 1").await, vec![vec![Some("1".into())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_streams_push_rows_live() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, ORDERS).await;
    query(&c, "SET 'auto.offset.reset' = 'earliest'").await;
    let port = server.port.to_string();
    let psql = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "eddy", "-d", "eddy", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("COPY (SELECT orderId, customerId, amount FROM orders WHERE amount > 100 EMIT CHANGES LIMIT 2) TO STDOUT")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("psql is installed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    query(&c, "INSERT INTO orders (orderId, customerId, amount) VALUES ('o1', 'alice', 500), ('o2', 'bob', 5), ('o3', 'carol', 101.5)").await;
    let out = tokio::task::spawn_blocking(move || psql.wait_with_output().unwrap()).await.unwrap();
    assert!(out.status.success());
    let mut lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines, vec!["o1\talice\t500".to_string(), "o3\tcarol\t101.5".to_string()]);

    // tokio-postgres COPY OUT sees the same.
    let stream = c.copy_out("COPY (SELECT orderId FROM orders EMIT CHANGES LIMIT 1) TO STDOUT").await;
    assert!(stream.is_ok(), "{:?}", stream.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_statements_and_reports_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let port = server.port.to_string();
    let psql = |sql: &str| {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "eddy",
                "-d",
                "eddy",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap()
    };
    assert!(psql(ORDERS).status.success());
    assert!(psql("INSERT INTO orders (orderId, customerId, amount) VALUES ('o1', 'alice', 5)").status.success());
    let out = psql("SHOW STREAMS");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("orders|orders|KAFKA|JSON"), "{text}");
    let bad = psql("SELEC 1");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("syntax error"), "{}", String::from_utf8_lossy(&bad.stderr));
    // psql to another database: Postgres's 3D000.
    let other = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "eddy", "-d", "postgres", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&other.stderr).contains("does not exist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_sqlstates_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, ORDERS).await;
    let (code, pos) = sqlstate(&c, "SELECT * FROM orders WHER amount > 1").await;
    assert_eq!(code, "42601");
    assert!(matches!(pos, Some(tokio_postgres::error::ErrorPosition::Original(p)) if p > 20), "{pos:?}");
    assert_eq!(sqlstate(&c, "SELECT * FROM nope").await.0, "42P01");
    assert_eq!(sqlstate(&c, "SELECT nope FROM orders").await.0, "42703");
    let unknown = c.simple_query("SELECT o.nope FROM orders o").await.unwrap_err();
    assert_eq!(unknown.as_db_error().map(|e| e.message()), Some("column nope does not exist"));
    assert_eq!(sqlstate(&c, "INSERT INTO nope (a) VALUES (1)").await.0, "42P01");
    assert_eq!(sqlstate(&c, "INSERT INTO orders (nope) VALUES (1)").await.0, "42703");
    // Text that does not read as the column's type, in any row, writes nothing (22P02, as
    // Postgres: invalid input syntax for type double).
    assert_eq!(
        sqlstate(
            &c,
            "INSERT INTO orders (orderId, customerId, amount) VALUES ('ok', 'a', 1), ('bad', 'b', 'not a number')"
        )
        .await
        .0,
        "22P02"
    );
    assert_eq!(query(&c, "SELECT COUNT(*) FROM orders").await, vec![vec![Some("0".into())]]);
    assert_eq!(sqlstate(&c, ORDERS).await.0, "42P07");
    assert_eq!(sqlstate(&c, "DROP STREAM nope").await.0, "42P01");
    assert_eq!(sqlstate(&c, "TERMINATE CSAS_NOPE_0").await.0, "42P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_go_to_the_processing_log() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    // Two views of one topic: text that the typed view cannot read is a bad record there.
    query(&c, "CREATE STREAM raw (v STRING) WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='JSON')").await;
    query(&c, "CREATE STREAM typed (v INT) WITH (KAFKA_TOPIC='readings', VALUE_FORMAT='JSON')").await;
    query(&c, "CREATE STREAM doubled AS SELECT v * 2 AS v2 FROM typed EMIT CHANGES").await;
    query(&c, "INSERT INTO raw (v) VALUES ('1'), ('not a number'), ('3')").await;
    query(&c, "FLUSH").await;
    let out = query(&c, "SELECT v2 FROM doubled ORDER BY v2").await;
    assert_eq!(out, vec![vec![Some("2".into())], vec![Some("6".into())]]);
    let log = query(&c, "SELECT query_id, topic, error FROM eddy_processing_log").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0][0].as_deref().unwrap().starts_with("CSAS_DOUBLED"));
    assert!(log[0][2].as_deref().unwrap().contains("expects INTEGER"), "{log:?}");
    // The query is still running.
    let q = query(&c, "SHOW QUERIES").await;
    assert!(q.iter().any(|r| r[1].as_deref() == Some("RUNNING")), "{q:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_restarts_on_the_same_port() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, ORDERS).await;
    query(&c, "CREATE TABLE by_customer AS SELECT customerId, COUNT(*) AS n FROM orders GROUP BY customerId").await;
    query(&c, "INSERT INTO orders (orderId, customerId, amount) VALUES ('o1', 'alice', 5)").await;
    query(&c, "FLUSH").await;
    drop(c);
    let port = server.port;
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    // The same port is free again at once.
    let server = Server::start_on(tmp.path(), port);
    assert_eq!(server.port, port);
    let c = server.client().await;
    assert_eq!(query(&c, "SELECT n FROM by_customer").await, vec![vec![Some("1".into())]]);
    let q = query(&c, "SHOW QUERIES").await;
    assert!(
        q.iter()
            .any(|r| r[0].as_deref().unwrap().starts_with("CTAS_BY_CUSTOMER") && r[1].as_deref() == Some("RUNNING")),
        "{q:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_cursor_stream_sees_rows_live() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    crate::common::python("psycopg_stream.py", &[server.port.to_string()]).await;
}

/// Raw bytes of a value in the binary protocol, whatever its type.
struct Raw(Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_types_in_binary_results() {
    use tokio_postgres::types::Type;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(
        &c,
        "CREATE STREAM things (id STRING KEY, d DATE, t TIME, n DECIMAL(6, 2), b BYTES, s STRUCT<x INT>) \
         WITH (PARTITIONS=1)",
    )
    .await;
    query(
        &c,
        "INSERT INTO things (id, d, t, n, b, s) VALUES ('a', '2000-01-03', '00:00:01.5', -12.5, 'AQI=', STRUCT(x := 7))",
    )
    .await;
    // The extended protocol: tokio-postgres asks for binary results.
    let rows = c.query("SELECT d, t, n, b, s FROM things", &[]).await.unwrap();
    let types: Vec<Type> = rows[0].columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(types, vec![Type::DATE, Type::TIME, Type::NUMERIC, Type::BYTEA, Type::JSON]);
    let raw = |i: usize| rows[0].get::<_, Raw>(i).0;
    assert_eq!(raw(0), 2i32.to_be_bytes()); // days since 2000-01-01
    assert_eq!(raw(1), 1_500_000i64.to_be_bytes()); // microseconds
                                                    // numeric: 2 digits (12, 5000), weight 0, negative, scale 2.
    let numeric: Vec<u8> = [2i16, 0, 0x4000, 2, 12, 5000].iter().flat_map(|w| w.to_be_bytes()).collect();
    assert_eq!(raw(2), numeric);
    assert_eq!(raw(3), vec![1, 2]);
    assert_eq!(String::from_utf8(raw(4)).unwrap(), r#"{"x":7}"#);
}

/// INSERT coercions, parameter types, column names, pg_typeof and savepoints, through
/// psycopg 3, psycopg2, asyncpg and SQLAlchemy 2.1 (`tests/python/pg_typing.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_get_postgres_typing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    crate::common::python("pg_typing.py", &[server.port.to_string()]).await;
}

/// The same through JDBC's protocol path: pgjdbc (Debian's libpostgresql-jdbc-java, which
/// `scripts/setup.sh --test` installs) running `tests/java/PgTyping.java`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_gets_postgres_typing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let source = format!("{}/tests/java/PgTyping.java", env!("CARGO_MANIFEST_DIR"));
    let port = server.port.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("java")
            .args(["-Duser.timezone=UTC", "-cp", "/usr/share/java/postgresql.jar", &source, &port])
            .output()
            .expect("java (scripts/setup.sh --test installs it)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "PgTyping.java failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_reads_every_type_in_text_and_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    crate::common::python("pg_types.py", &[server.port.to_string()]).await;
}

/// A stream–stream join created over two streams already full of records (a replay): both
/// sides are read in event-time order, record by record even inside one large batch, so with
/// a GRACE PERIOD far shorter than a batch's span no record is late. (Read side by side in
/// large chunks, one side's stream time ran past the other's records, and nearly all of them
/// were dropped as late.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_replays_both_streams_in_time_order() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    for side in ["l", "r"] {
        query(
            &c,
            &format!(
                "CREATE STREAM {side} (k BIGINT, pad STRING, ts BIGINT) \
                 WITH (KAFKA_TOPIC='{side}', PARTITIONS=1, VALUE_FORMAT='JSON', TIMESTAMP='ts')"
            ),
        )
        .await;
    }
    // 1,000 records a side, 100 ms apart (100 s of event time), about 500 bytes each, each
    // side in one batch (one INSERT), all of the left side before any of the right.
    let pad = "p".repeat(500);
    for side in ["l", "r"] {
        let rows: Vec<String> = (0..1000).map(|i| format!("({i}, '{pad}', {})", i * 100)).collect();
        query(&c, &format!("INSERT INTO {side} (k, pad, ts) VALUES {}", rows.join(", "))).await;
    }
    query(
        &c,
        "CREATE STREAM j AS SELECT l.k AS k, r.ts AS rts FROM l JOIN r WITHIN 1 SECONDS GRACE PERIOD 2 SECONDS \
         ON l.k = r.k EMIT CHANGES",
    )
    .await;
    query(&c, "FLUSH").await;
    let joined = query(&c, "SELECT COUNT(*), COUNT(DISTINCT k) FROM j").await;
    assert_eq!(joined, vec![vec![Some("1000".into()), Some("1000".into())]], "records were dropped as late");
}

/// ksqlDB's RUN SCRIPT from psql: a file of statements (with variables) runs in order; a
/// query or SHOW in it stops it before anything runs; a failing statement is named by line,
/// with its own SQLSTATE, and the statements before it stay done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_script_runs_a_file_of_statements_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let port = server.port.to_string();
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "eddy", "-d", "eddy", "-X", "-A", "-t"])
            .args(["-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-c", sql])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let script = tmp.path().join("setup.sql");
    std::fs::write(
        &script,
        "-- the pageviews example\n\
         DEFINE topic = 'views';\n\
         CREATE STREAM pageviews (userid STRING KEY, pageid STRING)\n  WITH (KAFKA_TOPIC='${topic}', PARTITIONS=1);\n\
         CREATE TABLE per_user AS SELECT userid, COUNT(*) AS n FROM pageviews GROUP BY userid EMIT CHANGES;\n\
         INSERT INTO pageviews (userid, pageid) VALUES ('u1', 'home'), ('u1', 'cart'), ('u2', 'home');\n",
    )
    .unwrap();
    let (ok, _, err) = psql(&format!("RUN SCRIPT '{}'", script.display()));
    assert!(ok, "{err}");
    assert!(psql("FLUSH").0);
    assert_eq!(psql("SELECT userid, n FROM per_user ORDER BY userid").1, "u1|2\nu2|1\n");
    assert_eq!(psql("SHOW TOPICS").1.lines().filter(|l| l.starts_with("views|")).count(), 1);

    // A SELECT in a script: nothing of it runs.
    std::fs::write(&script, "CREATE STREAM a (x INT) WITH (KAFKA_TOPIC='a', PARTITIONS=1);\nSELECT * FROM a;\n")
        .unwrap();
    let (ok, _, err) = psql(&format!("RUN SCRIPT '{}'", script.display()));
    assert!(!ok && err.contains("statement 2 at line 2") && err.contains("not `SELECT * FROM`"), "{err}");
    assert!(psql("DESCRIBE a").2.contains("does not exist"));

    // The second statement fails (its stream exists): the first stays, the third never runs.
    std::fs::write(
        &script,
        "CREATE STREAM b (x INT) WITH (KAFKA_TOPIC='b', PARTITIONS=1);\n\n\
         CREATE STREAM pageviews (x INT) WITH (KAFKA_TOPIC='b');\n\
         CREATE STREAM c (x INT) WITH (KAFKA_TOPIC='c', PARTITIONS=1);\n",
    )
    .unwrap();
    let (ok, _, err) = psql(&format!("RUN SCRIPT '{}'", script.display()));
    assert!(!ok && err.contains("42P07") && err.contains("statement 2 at line 3"), "{err}");
    assert!(psql("DESCRIBE b").0);
    assert!(!psql("DESCRIBE c").0);

    // A syntax error is placed by line; a missing file is an error too.
    std::fs::write(&script, "CREATE STREAM d (x INT) WITH (KAFKA_TOPIC='d', PARTITIONS=1);\nCREATE STREM e (x INT);\n")
        .unwrap();
    let (ok, _, err) = psql(&format!("RUN SCRIPT '{}'", script.display()));
    assert!(!ok && err.contains("42601") && err.contains("line 2"), "{err}");
    assert!(!psql("DESCRIBE d").0, "nothing runs when a statement does not parse");
    let (ok, _, err) = psql("RUN SCRIPT '/no/such/file.sql'");
    assert!(!ok && err.contains("cannot read /no/such/file.sql"), "{err}");
    // Only regular files: a device's or a directory's size says nothing.
    for path in ["/dev/zero", "/tmp"] {
        let (ok, _, err) = psql(&format!("RUN SCRIPT '{path}'"));
        assert!(!ok && err.contains("is not a regular file"), "{path}: {err}");
    }
}
