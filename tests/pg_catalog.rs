//! Postgres catalog introspection with the clients that use it: psql's meta-commands,
//! SQLAlchemy reflection, pgcli, and the query shapes Grafana (simple protocol, like pgx) and
//! Metabase (extended protocol, like pgJDBC) send. Their SQL is in `tests/sql/`.

use std::process::Command;

use crate::common::{query, Server};

const SETUP: &[&str] = &[
    "CREATE STREAM orders (orderId STRING KEY, customerId STRING, amount DOUBLE, ts TIMESTAMP) \
     WITH (KAFKA_TOPIC='orders', VALUE_FORMAT='JSON', PARTITIONS=1)",
    "CREATE TABLE users (id STRING PRIMARY KEY, name STRING, score DECIMAL(10, 2)) \
     WITH (KAFKA_TOPIC='users', VALUE_FORMAT='JSON', PARTITIONS=1)",
    // 2026-11-25 10:01, 10:07 and 12:00 UTC.
    "INSERT INTO orders (orderId, customerId, amount, ts) VALUES ('o1', 'alice', 10, 1795600860000), \
     ('o2', 'bob', 5, 1795601220000), ('o3', 'alice', 1, 1795608000000)",
    "INSERT INTO users (id, name, score) VALUES ('u1', 'ann', 1.5)",
];

async fn server_with_data() -> (tempfile::TempDir, Server, tokio_postgres::Client) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    for s in SETUP {
        query(&c, s).await;
    }
    query(&c, "FLUSH").await;
    (tmp, server, c)
}

fn sql_file(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/sql/{name}.sql", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn psql(port: u16, command: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "eddy", "-d", "eddy", "-X", "-v", "ON_ERROR_STOP=1"])
        .args(["-c", command])
        .output()
        .expect("psql is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "psql {command}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows of psql's aligned output as trimmed cells (header and footer left out).
fn cells(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| l.contains('|') && !l.contains("---"))
        .skip(1)
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_list_and_describe_streams_and_tables() {
    let (_tmp, server, _c) = server_with_data().await;
    let p = |cmd: &str| psql(server.port, cmd);

    // \dt: tables; \dv: streams (views of their topic); \d: both.
    let dt = p("\\dt");
    assert!(dt.contains("List of relations"), "{dt}");
    assert_eq!(cells(&dt), vec![vec!["public", "users", "table", "eddy"]], "{dt}");
    let dv = cells(&p("\\dv"));
    assert!(dv.contains(&vec!["public".into(), "orders".into(), "view".into(), "eddy".into()]), "{dv:?}");
    assert!(dv.iter().all(|r| r[2] == "view"), "{dv:?}");
    let d = cells(&p("\\d"));
    let names: Vec<&str> = d.iter().map(|r| r[1].as_str()).collect();
    assert!(names.contains(&"orders") && names.contains(&"users"), "{d:?}");
    let d_plus = p("\\d+");
    assert!(d_plus.contains("Access method") && d_plus.contains("users"), "{d_plus}");

    // \d NAME: columns with Postgres types; the table's primary key as its index.
    let orders = p("\\d orders");
    assert!(orders.contains("View \"public.orders\""), "{orders}");
    assert_eq!(
        cells(&orders),
        vec![
            vec!["orderid", "text", "", "", ""],
            vec!["customerid", "text", "", "", ""],
            vec!["amount", "double precision", "", "", ""],
            vec!["ts", "timestamp without time zone", "", "", ""],
        ],
        "{orders}"
    );
    let users = p("\\d users");
    assert!(users.contains("Table \"public.users\""), "{users}");
    assert_eq!(cells(&users)[0], vec!["id", "text", "", "not null", ""], "{users}");
    assert_eq!(cells(&users)[2], vec!["score", "numeric(10,2)", "", "", ""], "{users}");
    assert!(users.contains("\"users_pkey\" PRIMARY KEY, btree (id)"), "{users}");
    // \d+ runs psql's footer queries too (policies, statistics, publications, inheritance).
    let users_plus = p("\\d+ users");
    assert!(users_plus.contains("Storage") && users_plus.contains("Access method: heap"), "{users_plus}");
    let orders_plus = p("\\d+ orders");
    assert!(orders_plus.contains("View definition:") && orders_plus.contains("topic 'orders'"), "{orders_plus}");
    let missing = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "eddy", "-d", "eddy", "-X", "-c", "\\d nope"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("Did not find any relation named \"nope\""));

    // \l, \dn, \df, \du.
    let l = cells(&p("\\l"));
    assert_eq!(&l[0][..4], &["eddy", "eddy", "UTF8", "C.UTF-8"], "{l:?}");
    assert_eq!(cells(&p("\\dn")), vec![vec!["public", "eddy"]]);
    let df = cells(&p("\\df"));
    assert!(df.contains(&vec!["public".into(), "ucase".into(), "text".into(), "text".into(), "func".into()]), "{df:?}");
    let du = cells(&p("\\du"));
    assert_eq!(du[0][0], "eddy", "{du:?}");
    assert!(du[0][1].contains("Superuser"), "{du:?}");

    // The server reports a Postgres version psql understands (no version warning above).
    let v = p("SELECT version()");
    assert!(v.contains("PostgreSQL 15.0 (Eddy"), "{v}");
    assert!(p("SHOW server_version").contains("15.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_query_shapes() {
    let (_tmp, _server, c) = server_with_data().await;
    // Save & test: pgx's ping is a comment-only simple query, answered with an empty result.
    let ping = c.simple_query("-- ping").await.unwrap();
    assert!(ping.iter().all(|m| !matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))), "{ping:?}");
    // Config auto-detection.
    let v = query(&c, "SELECT current_setting('server_version_num')::int/100 as version").await;
    assert_eq!(v, vec![vec![Some("1500".into())]]);
    assert!(query(&c, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").await.is_empty());
    // Table and column pickers.
    let tables: Vec<String> =
        query(&c, &sql_file("grafana_table_picker")).await.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert!(tables.contains(&"orders".to_string()) && tables.contains(&"users".to_string()), "{tables:?}");
    let columns = query(&c, &sql_file("grafana_column_picker")).await;
    assert_eq!(columns[2], vec![Some("amount".into()), Some("double precision".into())], "{columns:?}");
    assert_eq!(columns[3], vec![Some("ts".into()), Some("timestamp without time zone".into())], "{columns:?}");
    // A time series panel: $__timeGroupAlias(ts, '5m') and $__timeFilter(ts) as Grafana expands them.
    let series = query(
        &c,
        "SELECT floor(extract(epoch from ts)/300)*300 AS \"time\", sum(amount) AS total FROM orders \
         WHERE ts BETWEEN '2026-11-25T10:00:00Z' AND '2026-11-25T11:00:00Z' GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(
        series,
        vec![vec![Some("1795600800".into()), Some("10".into())], vec![Some("1795601100".into()), Some("5".into())]]
    );
    let by_minute = query(
        &c,
        "SELECT date_trunc('minute', ts) AS \"time\", customerid AS metric, count(*) AS n FROM orders \
         WHERE ts >= to_timestamp(1795600800) AND ts < to_timestamp(1795604400) GROUP BY 1, 2 ORDER BY 1",
    )
    .await;
    assert_eq!(by_minute.len(), 2, "{by_minute:?}");
    assert_eq!(by_minute[0][1].as_deref(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metabase_sync_queries() {
    let (_tmp, _server, c) = server_with_data().await;
    // Connection set-up, as pgJDBC and Metabase send it.
    for s in [
        "SET extra_float_digits = 2",
        "SET application_name = 'Metabase v0.55.1'",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
    ] {
        c.batch_execute(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let iso = c.query("SHOW TRANSACTION ISOLATION LEVEL", &[]).await.unwrap();
    assert_eq!(iso[0].get::<_, String>(0), "read committed");
    // pgJDBC getSchemas and its TypeInfoCache lookup (extended protocol, a parameter).
    let schemas: Vec<String> =
        c.query(&sql_file("pgjdbc_schemas"), &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(schemas, vec!["information_schema", "pg_catalog", "public"]);
    // pgJDBC declares its parameters' types in Parse (setInt: int4).
    let stmt = c.prepare_typed(&sql_file("pgjdbc_type_info"), &[tokio_postgres::types::Type::INT4]).await.unwrap();
    let ty = c.query(&stmt, &[&1009i32]).await.unwrap();
    assert_eq!((ty[0].get::<_, bool>(0), ty[0].get::<_, String>(2)), (true, "_text".to_string()));
    // describe-database: pg_class, pg_description, pg_stat_user_tables.
    let rels = c.query(&sql_file("metabase_describe_database"), &[]).await.unwrap();
    let rels: Vec<(String, String)> = rels.iter().map(|r| (r.get(1), r.get(2))).collect();
    assert!(rels.contains(&("users".into(), "TABLE".into())), "{rels:?}");
    assert!(rels.contains(&("orders".into(), "VIEW".into())), "{rels:?}");
    // describe-fields: information_schema.columns with udt names, primary keys.
    let fields = c.query(&sql_file("metabase_describe_fields"), &[]).await.unwrap();
    let users: Vec<(String, String, bool)> =
        fields.iter().filter(|r| r.get::<_, String>(4) == "users").map(|r| (r.get(0), r.get(1), r.get(5))).collect();
    assert_eq!(
        users,
        vec![
            ("id".into(), "text".into(), true),
            ("name".into(), "text".into(), false),
            ("score".into(), "numeric".into(), false)
        ]
    );
}

fn run_python(script: &str, port: u16) {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3").arg(&path).arg(port.to_string()).output().expect("python3");
    assert!(
        out.status.success(),
        "{script} failed (scripts/setup.sh --test installs its packages):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_reflects_tables_columns_and_primary_keys() {
    let (_tmp, server, _c) = server_with_data().await;
    let port = server.port;
    tokio::task::spawn_blocking(move || run_python("sqlalchemy_reflection.py", port)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgcli_starts_and_completes_a_query() {
    let (_tmp, server, _c) = server_with_data().await;
    let port = server.port.to_string();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("pgcli")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "eddy", "-d", "eddy", "--less-chatty"])
            .env("HOME", std::env::temp_dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("pgcli (scripts/setup.sh --test installs it)");
        child.stdin.take().unwrap().write_all(b"SELECT name FROM users\n").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| ann  |") && stdout.contains("SELECT 1"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
