//! The Postgres endpoint's security and limits, and push queries through cursors and portals,
//! with real clients: SCRAM passwords (psql, psycopg 3, tokio-postgres, and Kafka SASL from
//! the same users), TLS, the connection limit, the statement timeout, the result cap,
//! DECLARE / FETCH / CLOSE (psql FETCH_COUNT, psycopg2, psycopg 3), and partial Execute.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{query, sqlstate, Server};

fn python(script: &str, args: &[&str]) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3").arg(&path).args(args).output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {args:?} failed (scripts/setup.sh --test installs the clients):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// `psql -c sql...` with extra connection settings; (success, stdout, stderr).
fn psql(port: u16, conninfo: &str, password: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("psql");
    cmd.arg(format!("host=127.0.0.1 port={port} dbname=eddy {conninfo}"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env_remove("PGPASSWORD");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().expect("psql is installed (scripts/setup.sh)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn connect(port: u16, user: &str, password: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conninfo = format!("host=127.0.0.1 port={port} user={user} password={password} dbname=eddy");
    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn db_code(e: &tokio_postgres::Error) -> (String, String) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

fn start_with_password(dir: &Path, extra: &[&str]) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("password");
    std::fs::write(&file, "adm1n-pw\n").unwrap();
    let mut args = vec!["--password-file", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start_with(&dir.join("data"), 0, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_passwords_for_postgres_and_kafka_from_one_user_store() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = start_with_password(tmp.path(), &[]);
    let port = server.port;
    // The bootstrap superuser: right password in, wrong one 28P01 with Postgres's message.
    let admin = connect(port, "eddy", "adm1n-pw").await.expect("eddy with the right password");
    let e = connect(port, "eddy", "nope").await.expect_err("a wrong password is refused");
    assert_eq!(db_code(&e), ("28P01".into(), "password authentication failed for user \"eddy\"".into()));
    let e = connect(port, "nobody", "x").await.expect_err("an unknown user is refused");
    assert_eq!(db_code(&e).0, "28P01");
    // psql with PGPASSWORD.
    let (ok, out, err) = blocking(move || psql(port, "user=eddy", Some("adm1n-pw"), &["-c", "SELECT 40 + 2"])).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "42");
    let (ok, _, err) = blocking(move || psql(port, "user=eddy", Some("wrong"), &["-c", "SELECT 1"])).await;
    assert!(!ok);
    assert!(err.contains("password authentication failed for user \"eddy\""), "{err}");

    // CREATE USER stores a SCRAM verifier; the user logs in from psycopg 3 and Kafka.
    query(&admin, "CREATE USER alice WITH PASSWORD 's3cret'").await;
    assert_eq!(sqlstate(&admin, "CREATE USER alice WITH PASSWORD 'x'").await.0, "42710");
    let out = blocking(move || python("pg_auth.py", &[&port.to_string(), "alice", "s3cret"])).await;
    assert!(out.contains("psycopg scram ok"), "{out}");
    let alice = connect(port, "alice", "s3cret").await.expect("alice");
    assert_eq!(sqlstate(&alice, "CREATE USER mallory WITH PASSWORD 'x'").await.0, "42501");
    assert_eq!(sqlstate(&alice, "ALTER USER eddy PASSWORD 'x'").await.0, "42501");
    let kafka = server.kafka.clone();
    blocking(move || python("sasl_clients.py", &[&kafka])).await;
    // Users change their own password; the old one stops working.
    query(&alice, "ALTER USER alice WITH PASSWORD 'n3w-pass!'").await;
    assert_eq!(db_code(&connect(port, "alice", "s3cret").await.err().unwrap()).0, "28P01");
    connect(port, "alice", "n3w-pass!").await.expect("the new password");
    query(&admin, "CREATE ROLE bob WITH LOGIN PASSWORD 'b0b'").await;
    drop((admin, alice));

    // Durable: after a restart the users are there, and only verifiers were written.
    server.terminate();
    let server = start_with_password(tmp.path(), &[]);
    let port = server.port;
    connect(port, "alice", "n3w-pass!").await.expect("alice after a restart");
    let admin = connect(port, "eddy", "adm1n-pw").await.unwrap();
    query(&admin, "DROP USER bob").await;
    assert_eq!(sqlstate(&admin, "DROP USER bob").await.0, "42704");
    query(&admin, "DROP USER IF EXISTS bob").await;
    assert_eq!(db_code(&connect(port, "bob", "b0b").await.err().unwrap()).0, "28P01");
    // Only verifiers are written: no file holds the password itself.
    let files = walk(&tmp.path().join("data"));
    let holds = |needle: &[u8]| {
        files.iter().any(|f| std::fs::read(f).unwrap_or_default().windows(needle.len()).any(|w| w == needle))
    };
    assert!(holds(b"SCRAM-SHA-256$4096:"), "a SCRAM verifier is stored");
    assert!(!holds(b"n3w-pass!"), "the password itself is never written");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_sslmode_require_from_psql_and_psycopg() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let server =
        start_with_password(tmp.path(), &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let port = server.port;
    let (ok, out, err) =
        blocking(move || psql(port, "user=eddy sslmode=require", Some("adm1n-pw"), &["-c", "\\conninfo"])).await;
    assert!(ok, "{err}");
    assert!(out.contains("SSL connection (protocol: TLSv1.3"), "{out}");
    let out = blocking(move || python("pg_auth.py", &[&port.to_string(), "eddy", "adm1n-pw", "tls"])).await;
    assert!(out.contains("psycopg scram ok"), "{out}");

    // Without TLS configured, an SSLRequest is answered 'N': require fails, prefer falls back.
    let plain = Server::start(&tmp.path().join("plain"));
    let port = plain.port;
    let (ok, _, err) = blocking(move || psql(port, "user=eddy sslmode=require", None, &["-c", "SELECT 1"])).await;
    assert!(!ok);
    assert!(err.contains("server does not support SSL"), "{err}");
    let (ok, out, err) = blocking(move || psql(port, "user=eddy sslmode=prefer", None, &["-c", "SELECT 1"])).await;
    assert!(ok && out.trim() == "1", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_53300_keeps_a_slot_for_the_superuser() {
    let tmp = tempfile::tempdir().unwrap();
    let server =
        Server::start_with(tmp.path(), 0, &["--max-connections", "3", "--superuser-reserved-connections", "1"]);
    let port = server.port;
    let trust = |user: &str| {
        let conninfo = format!("host=127.0.0.1 port={port} user={user} dbname=eddy");
        async move {
            let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, tokio_postgres::Error>(client)
        }
    };
    let a1 = trust("alice").await.unwrap();
    let _a2 = trust("alice").await.unwrap();
    let e = trust("alice").await.expect_err("the last slot is reserved");
    assert_eq!(
        db_code(&e),
        ("53300".into(), "remaining connection slots are reserved for roles with the SUPERUSER attribute".into())
    );
    let admin = trust("eddy").await.expect("the superuser takes the reserved slot");
    assert_eq!(query(&admin, "SELECT 1").await, vec![vec![Some("1".into())]]);
    let e = trust("eddy").await.expect_err("full");
    assert_eq!(db_code(&e), ("53300".into(), "sorry, too many clients already".into()));
    // A closed connection frees its slot.
    drop(a1);
    let mut reconnected = None;
    for _ in 0..100 {
        match trust("eddy").await {
            Ok(c) => {
                reconnected = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(reconnected.is_some(), "a slot came free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_and_result_cap_for_pull_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(tmp.path(), 0, &["--max-result-rows", "5"]);
    let c = server.client().await;
    query(&c, "CREATE STREAM s (id INT KEY, v STRING) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON', PARTITIONS=1)").await;
    let values: Vec<String> = (0..8).map(|i| format!("({i}, 'v{i}')")).collect();
    query(&c, &format!("INSERT INTO s (id, v) VALUES {}", values.join(", "))).await;
    let e = c.simple_query("SELECT * FROM s").await.unwrap_err();
    let (code, message) = db_code(&e);
    assert_eq!(code, "54000");
    assert!(message.contains("more than 5 rows (--max-result-rows)"), "{message}");
    assert_eq!(query(&c, "SELECT id FROM s ORDER BY id LIMIT 5").await.len(), 5);
    assert_eq!(query(&c, "SELECT COUNT(*) FROM s").await, vec![vec![Some("8".into())]]);

    query(&c, "SET statement_timeout = '200ms'").await;
    let e = c.simple_query("SELECT SUM(a.id + b.id + c.id + d.id + e.id + f.id + g.id + h.id + i.id) FROM s a, s b, s c, s d, s e, s f, s g, s h, s i").await.unwrap_err();
    assert_eq!(db_code(&e), ("57014".into(), "canceling statement due to statement timeout".into()));
    // The session goes on; 0 turns the timeout off.
    query(&c, "SET statement_timeout = 0").await;
    assert_eq!(query(&c, "SELECT COUNT(*) FROM s a, s b").await, vec![vec![Some("64".into())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_fetch_close_over_push_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE STREAM ev (id STRING KEY, n INT) WITH (KAFKA_TOPIC='ev', VALUE_FORMAT='JSON', PARTITIONS=1)")
        .await;
    query(&c, "BEGIN").await;
    query(&c, "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT id, n FROM ev EMIT CHANGES").await;
    // Nothing yet: FETCH returns no rows once eddy.fetch_timeout expires.
    query(&c, "SET eddy.fetch_timeout = '200ms'").await;
    assert_eq!(query(&c, "FETCH 2 FROM c").await, Vec::<Vec<Option<String>>>::new());
    let writer = server.client().await;
    query(&writer, "INSERT INTO ev (id, n) VALUES ('a', 1), ('b', 2), ('c', 3)").await;
    // With rows on their way FETCH returns as soon as it has n (the timeout is only a bound).
    query(&c, "SET eddy.fetch_timeout = '30s'").await;
    let rows = query(&c, "FETCH FORWARD 2 FROM c").await;
    assert_eq!(rows, vec![vec![Some("a".into()), Some("1".into())], vec![Some("b".into()), Some("2".into())]]);
    query(&c, "SET eddy.fetch_timeout = '300ms'").await;
    let tag = c.simple_query("FETCH 5 FROM c").await.unwrap();
    assert!(matches!(tag.last(), Some(tokio_postgres::SimpleQueryMessage::CommandComplete(1))), "{tag:?}");
    query(&c, "CLOSE c").await;
    assert_eq!(sqlstate(&c, "FETCH 1 FROM c").await.0, "34000");
    query(&c, "COMMIT").await;

    // A pull query through a cursor, and through the extended protocol.
    query(&c, "DECLARE p CURSOR FOR SELECT id FROM ev ORDER BY id").await;
    let rows = c.query("FETCH 2 FROM p", &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(query(&c, "FETCH ALL FROM p").await, vec![vec![Some("c".into())]]);
    query(&c, "CLOSE ALL").await;

    // psql's FETCH_COUNT runs the push query through a cursor, two rows at a time.
    let port = server.port;
    let (ok, out, err) = blocking(move || {
        psql(
            port,
            "user=eddy",
            None,
            &[
                "-v",
                "FETCH_COUNT=2",
                "-c",
                "SET 'auto.offset.reset' = 'earliest'",
                "-c",
                "SELECT id, n FROM ev EMIT CHANGES LIMIT 3",
            ],
        )
    })
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>(), vec!["SET", "a|1", "b|2", "c|3"], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_partial_fetch_of_a_push_query() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let mut c = server.client().await;
    query(&c, "CREATE STREAM ev (id STRING KEY, n INT) WITH (KAFKA_TOPIC='ev', VALUE_FORMAT='JSON', PARTITIONS=1)")
        .await;
    query(&c, "INSERT INTO ev (id, n) VALUES ('a', 1), ('b', 2), ('c', 3), ('d', 4), ('e', 5)").await;
    query(&c, "SET 'auto.offset.reset' = 'earliest'").await;
    let tx = c.transaction().await.unwrap();
    let portal = tx.bind("SELECT id, n FROM ev EMIT CHANGES", &[]).await.unwrap();
    let first = tx.query_portal(&portal, 2).await.unwrap();
    assert_eq!(first.iter().map(|r| r.get::<_, i32>(1)).collect::<Vec<_>>(), vec![1, 2]);
    let second = tx.query_portal(&portal, 2).await.unwrap();
    assert_eq!(second.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), vec!["c", "d"]);
    drop(portal);
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_push_queries_carry_the_change_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(
        &c,
        "CREATE TABLE users (id STRING PRIMARY KEY, name STRING) WITH (KAFKA_TOPIC='users', VALUE_FORMAT='JSON', PARTITIONS=1)",
    )
    .await;
    query(&c, "INSERT INTO users (id, name) VALUES ('1', 'ann')").await;
    query(&c, "FLUSH").await;
    query(&c, "DECLARE t CURSOR FOR SELECT id, name FROM users EMIT CHANGES").await;
    query(&c, "INSERT INTO users (id, name) VALUES ('1', 'anne'), ('2', 'bo')").await;
    // A tombstone (null value) deletes key 2.
    let kafka = server.kafka.clone();
    let (ok, err) = blocking(move || {
        let mut child = Command::new("kcat")
            .args(["-P", "-b", &kafka, "-t", "users", "-K:", "-Z"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kcat is installed");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"2:\n").unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
    assert!(ok, "{err}");
    query(&c, "SET eddy.fetch_timeout = '30s'").await;
    let rows = query(&c, "FETCH 3 FROM t").await;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        vec![
            vec![s("1"), s("anne"), s("update")],
            vec![s("2"), s("bo"), s("insert")],
            vec![s("2"), s("bo"), s("delete")]
        ]
    );
    // Streams have no op column.
    query(&c, "CREATE STREAM st (id STRING KEY) WITH (KAFKA_TOPIC='st', VALUE_FORMAT='JSON', PARTITIONS=1)").await;
    let stmt = c.prepare("SELECT id FROM st EMIT CHANGES").await.unwrap();
    assert_eq!(stmt.columns().len(), 1);
    let stmt = c.prepare("SELECT id, name FROM users EMIT CHANGES").await.unwrap();
    assert_eq!(stmt.columns().iter().map(|c| c.name()).collect::<Vec<_>>(), vec!["id", "name", "op"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_from_psycopg2_psycopg3_and_asyncpg() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let port = server.port.to_string();
    let out = blocking(move || python("pg_cursors.py", &[&port])).await;
    for part in ["psycopg2 named cursor ok", "psycopg 3 server cursor ok", "asyncpg ok"] {
        assert!(out.contains(part), "{out}");
    }
}

/// Deep expressions: a chain of operators as long as the limit plans and runs (in the debug
/// build, 256 terms overflowed a 2 MiB thread stack and killed the server); a longer one is
/// refused with 54000, and the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_expressions_are_planned_or_refused_never_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    let terms = |n: usize| vec!["1"; n].join("+");
    let limit = eddy::sql::MAX_OPERATORS;
    assert_eq!(query(&c, &format!("SELECT {}", terms(limit + 1))).await, vec![vec![Some((limit + 1).to_string())]]);
    for n in [limit + 2, 100_000] {
        let e = c.simple_query(&format!("SELECT {}", terms(n))).await.unwrap_err();
        let (code, message) = db_code(&e);
        assert_eq!(code, "54000", "{message}");
        assert!(message.contains("statement too complex"), "{message}");
    }
    // A continuous query evaluates a long chain on its own thread.
    query(&c, "CREATE STREAM s (a INT) WITH (KAFKA_TOPIC='s', PARTITIONS=1)").await;
    let sum = vec!["a"; limit / 2].join(" + ");
    let any = vec!["a = 1"; limit / 4].join(" OR ");
    query(&c, &format!("CREATE STREAM t AS SELECT {sum} AS big FROM s WHERE {any} EMIT CHANGES")).await;
    query(&c, "INSERT INTO s (a) VALUES (1), (2), (1)").await;
    query(&c, "FLUSH").await;
    let expected = (limit / 2).to_string();
    assert_eq!(query(&c, "SELECT COUNT(*), MAX(big) FROM t").await, vec![vec![Some("2".into()), Some(expected)]]);
    assert_eq!(query(&c, "SELECT 1").await, vec![vec![Some("1".into())]]);
}
