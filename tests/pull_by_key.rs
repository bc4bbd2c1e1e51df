//! Pull queries that name a table's key read those rows only (issue 16): `k = v`, `k IN`,
//! ORs of those, ranges and `LIKE 'prefix%'` on the key become RocksDB point reads and range
//! scans. Each case is checked against the answer computed here from the rows inserted, over
//! tables declared on a topic and tables a query materializes (keys of several columns, in
//! another order than the SELECT's), with BIGINT, STRING, DOUBLE and DECIMAL keys; and a
//! lookup answers where a scan of the same table is over the statement's memory limit.

use crate::common::{query, row, sqlstate, Server};

type Rows = Vec<Vec<Option<String>>>;

/// A stream `orders` of `n` records and `by_region`, an aggregation of it keyed by two group
/// columns (GROUP BY in the other order than the SELECT's), read to the end (FLUSH).
async fn orders_by_region(c: &tokio_postgres::Client, n: usize) {
    query(c, "CREATE STREAM orders (id STRING KEY, region STRING, kind STRING, amount BIGINT) WITH (PARTITIONS=2)")
        .await;
    let values: Vec<String> =
        (0..n).map(|i| format!("('o{i}', 'r{}', '{}', {i})", i % 4, ["a", "b", "c"][i % 3])).collect();
    query(c, &format!("INSERT INTO orders (id, region, kind, amount) VALUES {}", values.join(", "))).await;
    query(
        c,
        "CREATE TABLE by_region AS SELECT region, kind, COUNT(*) AS n, SUM(amount) AS total FROM orders \
         GROUP BY kind, region EMIT CHANGES",
    )
    .await;
    query(c, "FLUSH").await;
}

fn sorted(mut rows: Rows) -> Rows {
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_filters_read_the_rows_they_name() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;

    query(&c, "CREATE TABLE users (id BIGINT PRIMARY KEY, name STRING, score DOUBLE) WITH (PARTITIONS=3)").await;
    let values: Vec<String> = (0..200).map(|i| format!("({i}, 'u{i:03}', {}.5)", i % 7)).collect();
    query(&c, &format!("INSERT INTO users (id, name, score) VALUES {}", values.join(", "))).await;
    // An update and a delete: lookups see the latest row, and no row for a deleted key.
    query(&c, "INSERT INTO users (id, name, score) VALUES (7, 'seven', 70.5)").await;
    query(&c, "CREATE TABLE words (w STRING PRIMARY KEY, n BIGINT) WITH (PARTITIONS=2)").await;
    let words = ["apple", "apricot", "banana", "band", "bandana", "berry", "cherry", "b", "ba", "c"];
    let values: Vec<String> = words.iter().enumerate().map(|(i, w)| format!("('{w}', {i})")).collect();
    query(&c, &format!("INSERT INTO words (w, n) VALUES {}", values.join(", "))).await;
    query(&c, "CREATE TABLE prices (p DECIMAL(10,2) PRIMARY KEY, label STRING) WITH (PARTITIONS=1, KEY_FORMAT='JSON')")
        .await;
    query(&c, "INSERT INTO prices (p, label) VALUES (12.30, 'a'), (12.31, 'b'), (-3.5, 'c'), (100, 'd')").await;
    query(&c, "CREATE TABLE small (n INT PRIMARY KEY, label STRING) WITH (PARTITIONS=1)").await;
    query(&c, "INSERT INTO small (n, label) VALUES (1, 'one'), (3, 'three'), (4, 'four'), (-2, 'minus two')").await;
    query(&c, "CREATE TABLE ratios (r DOUBLE PRIMARY KEY, label STRING) WITH (PARTITIONS=1)").await;
    query(&c, "INSERT INTO ratios (r, label) VALUES (5, 'five'), (2.5, 'two and a half'), (-1, 'minus one')").await;
    // A materialized table keyed by two group columns, selected in the other order.
    orders_by_region(&c, 60).await;

    let user = |i: i64| {
        if i == 7 {
            row(&["7", "seven", "70.5"])
        } else {
            row(&[&i.to_string(), &format!("u{i:03}"), &format!("{}.5", i % 7)])
        }
    };
    let users =
        |ids: &[i64]| -> Rows { sorted(ids.iter().filter(|&&i| (0..200).contains(&i)).map(|&i| user(i)).collect()) };
    let cases: Vec<(&str, Rows)> = vec![
        ("SELECT * FROM users WHERE id = 42", users(&[42])),
        ("SELECT * FROM users WHERE id = 7", users(&[7])),
        ("SELECT * FROM users WHERE id = 4000", users(&[])),
        ("SELECT * FROM users WHERE id = '42'", users(&[42])),
        ("SELECT * FROM users WHERE id IN (1, 3, 199, 200, -5)", users(&[1, 3, 199])),
        ("SELECT * FROM users WHERE id = 10 OR id = 11", users(&[10, 11])),
        ("SELECT * FROM users WHERE id = 12 AND name = 'u012'", users(&[12])),
        ("SELECT * FROM users WHERE id = 12 AND name = 'nobody'", users(&[])),
        ("SELECT * FROM users WHERE id BETWEEN 10 AND 14", users(&[10, 11, 12, 13, 14])),
        ("SELECT * FROM users WHERE id > 195", users(&[196, 197, 198, 199])),
        ("SELECT * FROM users WHERE id >= 195 AND id < 197", users(&[195, 196])),
        ("SELECT * FROM users WHERE id <= 2", users(&[0, 1, 2])),
        ("SELECT * FROM users WHERE 3 > id", users(&[0, 1, 2])),
        ("SELECT * FROM users WHERE id < -1", users(&[])),
    ];
    for (sql, expected) in cases {
        assert_eq!(sorted(query(&c, sql).await), expected, "{sql}");
    }

    let words_where = |pred: &dyn Fn(&str) -> bool| -> Rows {
        sorted(words.iter().enumerate().filter(|(_, w)| pred(w)).map(|(i, w)| row(&[w, &i.to_string()])).collect())
    };
    let cases: Vec<(&str, Rows)> = vec![
        ("SELECT * FROM words WHERE w = 'band'", words_where(&|w| w == "band")),
        ("SELECT * FROM words WHERE w IN ('b', 'ba', 'zzz')", words_where(&|w| w == "b" || w == "ba")),
        ("SELECT * FROM words WHERE w LIKE 'ban%'", words_where(&|w| w.starts_with("ban"))),
        ("SELECT * FROM words WHERE w LIKE 'b%'", words_where(&|w| w.starts_with('b'))),
        ("SELECT * FROM words WHERE w >= 'b' AND w < 'c'", words_where(&|w| ("b".."c").contains(&w))),
        ("SELECT * FROM words WHERE w > 'band' AND w <= 'c'", words_where(&|w| w > "band" && w <= "c")),
        ("SELECT * FROM words WHERE w BETWEEN 'ba' AND 'bz'", words_where(&|w| ("ba"..="bz").contains(&w))),
        // Not on the key: a scan, same answer.
        ("SELECT * FROM words WHERE n = 3", words_where(&|w| w == "band")),
    ];
    for (sql, expected) in cases {
        assert_eq!(sorted(query(&c, sql).await), expected, "{sql}");
    }

    let cases: Vec<(&str, Rows)> = vec![
        ("SELECT label FROM prices WHERE p = 12.30", vec![row(&["a"])]),
        ("SELECT label FROM prices WHERE p = 12.3", vec![row(&["a"])]),
        ("SELECT label FROM prices WHERE p = 12.305", vec![]),
        ("SELECT label FROM prices WHERE p = -3.50", vec![row(&["c"])]),
        ("SELECT label FROM prices WHERE p IN (100, 12.31)", vec![row(&["b"]), row(&["d"])]),
        ("SELECT label FROM small WHERE n = 3", vec![row(&["three"])]),
        ("SELECT label FROM small WHERE n IN (1, 4, 7)", vec![row(&["four"]), row(&["one"])]),
        ("SELECT label FROM small WHERE n < 2", vec![row(&["minus two"]), row(&["one"])]),
        ("SELECT label FROM ratios WHERE r = 5", vec![row(&["five"])]),
        ("SELECT label FROM ratios WHERE r = 5.0", vec![row(&["five"])]),
        ("SELECT label FROM ratios WHERE r = 2.5", vec![row(&["two and a half"])]),
        ("SELECT label FROM ratios WHERE r = -1", vec![row(&["minus one"])]),
        ("SELECT label FROM ratios WHERE r > 0", vec![row(&["five"]), row(&["two and a half"])]),
    ];
    for (sql, expected) in cases {
        assert_eq!(sorted(query(&c, sql).await), expected, "{sql}");
    }

    let group = |region: usize, kind: usize| -> Rows {
        let ids: Vec<usize> = (0..60).filter(|i| i % 4 == region && i % 3 == kind).collect();
        let total: usize = ids.iter().sum();
        if ids.is_empty() {
            return vec![];
        }
        vec![row(&[&format!("r{region}"), ["a", "b", "c"][kind], &ids.len().to_string(), &total.to_string()])]
    };
    let cases: Vec<(&str, Rows)> = vec![
        ("SELECT * FROM by_region WHERE region = 'r1' AND kind = 'b'", group(1, 1)),
        ("SELECT * FROM by_region WHERE kind = 'c' AND region = 'r3'", group(3, 2)),
        (
            "SELECT * FROM by_region WHERE region IN ('r0', 'r2') AND kind = 'a'",
            sorted([group(0, 0), group(2, 0)].concat()),
        ),
        ("SELECT * FROM by_region WHERE kind = 'b'", sorted((0..4).flat_map(|r| group(r, 1)).collect())),
        ("SELECT * FROM by_region WHERE region = 'r9' AND kind = 'a'", vec![]),
    ];
    for (sql, expected) in cases {
        assert_eq!(sorted(query(&c, sql).await), expected, "{sql}");
    }

    // Prepared, as drivers send it: the parameter arrives bound, in binary.
    let stmt = c.prepare("SELECT name FROM users WHERE id = $1").await.unwrap();
    for id in [0i64, 7, 150, 999] {
        let rows = c.query(&stmt, &[&id]).await.unwrap();
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let expected: Vec<String> = users(&[id]).into_iter().map(|r| r[1].clone().unwrap()).collect();
        assert_eq!(names, expected, "id = {id}");
    }

    // A join of two tables reads both from one snapshot, by key where it can.
    let rows = query(&c, "SELECT u.name, w.n FROM users u JOIN words w ON u.id = w.n WHERE u.id = 3").await;
    assert_eq!(rows, vec![row(&["u003", "3"])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_answers_where_a_scan_is_over_the_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(tmp.path(), 0, &["--query-memory-bytes", "65536"]);
    let c = server.client().await;
    query(&c, "CREATE TABLE big (k STRING PRIMARY KEY, v STRING) WITH (PARTITIONS=2)").await;
    let pad = "x".repeat(100);
    for chunk in 0..10 {
        let values: Vec<String> = (0..300).map(|i| format!("('k{:05}', '{pad}')", chunk * 300 + i)).collect();
        query(&c, &format!("INSERT INTO big (k, v) VALUES {}", values.join(", "))).await;
    }
    query(&c, "FLUSH").await;
    // 3,000 rows of over 100 bytes: a scan needs more than 64 KiB.
    assert_eq!(sqlstate(&c, "SELECT COUNT(*) FROM big").await.0, "54000");
    assert_eq!(query(&c, "SELECT k FROM big WHERE k = 'k02999'").await, vec![row(&["k02999"])]);
    assert_eq!(
        query(&c, "SELECT k FROM big WHERE k IN ('k00000', 'k01500', 'nope') ORDER BY k").await,
        vec![row(&["k00000"]), row(&["k01500"])]
    );
    assert_eq!(query(&c, "SELECT COUNT(*) FROM big WHERE k >= 'k00100' AND k < 'k00150'").await, vec![row(&["50"])]);
}

/// Regression: a tombstone's key went into the table's state as the JSON it was read as,
/// while a row's key went in normalized to the column's type, so a DECIMAL key written as
/// `12.3` for DECIMAL(10,2) named another key than the row's `12.30`: the delete was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_deletes_the_row_its_key_names() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(
        &c,
        "CREATE TABLE prices (p DECIMAL(10,2) PRIMARY KEY, label STRING) \
         WITH (KAFKA_TOPIC='prices', KEY_FORMAT='JSON', VALUE_FORMAT='JSON', PARTITIONS=1)",
    )
    .await;
    let broker = server.kafka.clone();
    let produce = |input: &'static str| {
        let broker = broker.clone();
        std::thread::spawn(move || {
            crate::common::kcat(&["-b", &broker, "-P", "-t", "prices", "-K", "|", "-Z"], Some(input.as_bytes()))
        })
        .join()
        .unwrap()
    };
    let (ok, _, err) = produce("{\"p\": 12.3}|{\"label\": \"a\"}\n{\"p\": 7}|{\"label\": \"b\"}\n");
    assert!(ok, "{err}");
    query(&c, "FLUSH").await;
    assert_eq!(query(&c, "SELECT label FROM prices ORDER BY label").await, vec![row(&["a"]), row(&["b"])]);
    // -Z: an empty value is a null one, a tombstone.
    let (ok, _, err) = produce("{\"p\": 12.3}|\n");
    assert!(ok, "{err}");
    query(&c, "FLUSH").await;
    assert_eq!(query(&c, "SELECT label FROM prices").await, vec![row(&["b"])]);
    assert_eq!(query(&c, "SELECT label FROM prices WHERE p = 12.30").await, Vec::<Vec<Option<String>>>::new());
}

/// What a statement gives over the simple protocol: column names and text rows, or its
/// SQLSTATE.
async fn outcome(c: &tokio_postgres::Client, sql: &str) -> Result<(Vec<String>, Rows), String> {
    match c.simple_query(sql).await {
        Ok(messages) => {
            let mut names = Vec::new();
            let mut rows = Vec::new();
            for m in messages {
                match m {
                    tokio_postgres::SimpleQueryMessage::RowDescription(d) => {
                        names = d.iter().map(|c| c.name().to_string()).collect()
                    }
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => {}
                }
            }
            Ok((names, sorted(rows)))
        }
        Err(e) => Err(e.as_db_error().map(|d| d.code().code().to_string()).unwrap_or_else(|| e.to_string())),
    }
}

/// A lookup by the whole key is answered without DataFusion (`engine/point_lookup.rs`): it
/// must give what the general path gives, names, types and rows, for every literal, including
/// those that take the general path (a BIGINT key against `5.5`, an INT key past its range).
/// `AND 1 = 1` sends the same statement down the general path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_key_lookups_answer_as_the_general_path_does() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "CREATE TABLE users (id BIGINT PRIMARY KEY, name STRING, score DOUBLE) WITH (PARTITIONS=3)").await;
    let values: Vec<String> = (-5..50).map(|i| format!("({i}, 'u{i}', {}.25)", i % 7)).collect();
    query(&c, &format!("INSERT INTO users (id, name, score) VALUES {}", values.join(", "))).await;
    query(&c, "CREATE TABLE words (w STRING PRIMARY KEY, n BIGINT) WITH (PARTITIONS=2)").await;
    query(&c, "INSERT INTO words (w, n) VALUES ('band', 1), ('Band', 2), ('5', 3), ('', 4), ('it''s', 5)").await;
    query(&c, "CREATE TABLE prices (p DECIMAL(10,2) PRIMARY KEY, label STRING) WITH (PARTITIONS=1, KEY_FORMAT='JSON')")
        .await;
    query(&c, "INSERT INTO prices (p, label) VALUES (12.30, 'a'), (12.31, 'b'), (-3.5, 'c'), (100, 'd'), (0, 'z')")
        .await;
    query(&c, "CREATE TABLE small (n INT PRIMARY KEY, label STRING) WITH (PARTITIONS=1)").await;
    query(&c, "INSERT INTO small (n, label) VALUES (1, 'one'), (-2, 'minus two')").await;
    query(&c, "CREATE TABLE ratios (r DOUBLE PRIMARY KEY, label STRING) WITH (PARTITIONS=1)").await;
    query(
        &c,
        "INSERT INTO ratios (r, label) VALUES (5, 'five'), (2.5, 'two and a half'), (-1, 'minus one'), (0, 'zero')",
    )
    .await;
    orders_by_region(&c, 40).await;

    let statements = [
        "SELECT * FROM users WHERE id = 7",
        "SELECT * FROM users WHERE id = -3",
        "SELECT * FROM users WHERE 7 = id",
        "SELECT * FROM users WHERE id = '7'",
        "SELECT * FROM users WHERE id = 5.5",
        "SELECT * FROM users WHERE id = 7.0",
        "SELECT * FROM users WHERE id = 1000",
        "SELECT * FROM users WHERE id = 99999999999999999999",
        "SELECT name FROM users WHERE id = 7",
        "SELECT name AS who, id FROM users WHERE id = 7",
        "SELECT u.name, u.score FROM users u WHERE u.id = 7",
        "SELECT users.name FROM users WHERE users.id = 8",
        "SELECT id, id FROM users WHERE id = 7",
        "SELECT * FROM users WHERE (id = 9)",
        "SELECT * FROM users WHERE id = 7 AND name = 'u7'",
        "SELECT * FROM users WHERE id = 7 LIMIT 0",
        "SELECT * FROM users WHERE id = 7 ORDER BY name",
        "SELECT DISTINCT name FROM users WHERE id = 7",
        "SELECT * FROM users WHERE ID = 7",
        "SELECT nope FROM users WHERE id = 7",
        "SELECT * FROM words WHERE w = 'band'",
        "SELECT * FROM words WHERE w = 'Band'",
        "SELECT * FROM words WHERE w = 5",
        "SELECT * FROM words WHERE w = '5'",
        "SELECT * FROM words WHERE w = ''",
        "SELECT * FROM words WHERE w = 'it''s'",
        "SELECT * FROM prices WHERE p = 12.3",
        "SELECT * FROM prices WHERE p = 12.30",
        "SELECT * FROM prices WHERE p = 12.300",
        "SELECT * FROM prices WHERE p = 12.305",
        "SELECT * FROM prices WHERE p = '12.31'",
        "SELECT * FROM prices WHERE p = -3.5",
        "SELECT * FROM prices WHERE p = 100",
        "SELECT * FROM prices WHERE p = 0",
        "SELECT * FROM prices WHERE p = 123456789.5",
        "SELECT * FROM small WHERE n = 1",
        "SELECT * FROM small WHERE n = -2",
        "SELECT * FROM small WHERE n = 3000000000",
        "SELECT * FROM ratios WHERE r = 5",
        "SELECT * FROM ratios WHERE r = 5.0",
        "SELECT * FROM ratios WHERE r = '2.5'",
        "SELECT * FROM ratios WHERE r = -1",
        "SELECT * FROM ratios WHERE r = 1e0",
        "SELECT * FROM ratios WHERE r = -0.0",
        "SELECT * FROM ratios WHERE r = 0",
        "SELECT * FROM by_region WHERE kind = 'a' AND region = 'r1'",
        "SELECT * FROM by_region WHERE region = 'r2' AND kind = 'c'",
        "SELECT n, total FROM by_region WHERE region = 'r0' AND kind = 'a'",
        "SELECT * FROM by_region WHERE region = 'r0'",
        "SELECT * FROM by_region WHERE region = 'r9' AND kind = 'a'",
    ];
    for sql in statements {
        let general = format!("{sql} AND 1 = 1");
        let general = match sql.find(" LIMIT ").or_else(|| sql.find(" ORDER BY ")) {
            Some(at) => format!("{} AND 1 = 1{}", &sql[..at], &sql[at..]),
            None => general,
        };
        assert_eq!(outcome(&c, sql).await, outcome(&c, &general).await, "{sql}");
    }
    // A lookup that finds its row, to be sure the comparisons above are not all empty.
    assert_eq!(outcome(&c, "SELECT name FROM users WHERE id = 7").await, Ok((vec!["name".into()], vec![row(&["u7"])])));

    // Prepared, with typed parameters (the extended protocol, binary results).
    let fast = c.prepare("SELECT * FROM users WHERE id = $1").await.unwrap();
    let general = c.prepare("SELECT * FROM users WHERE id = $1 AND 1 = 1").await.unwrap();
    for id in [-5i64, 0, 7, 49, 50, i64::MAX] {
        let a = c.query(&fast, &[&id]).await.unwrap();
        let b = c.query(&general, &[&id]).await.unwrap();
        assert_eq!(a.len(), b.len(), "id {id}");
        for (x, y) in a.iter().zip(&b) {
            let cells = |r: &tokio_postgres::Row| (r.get::<_, i64>(0), r.get::<_, String>(1), r.get::<_, f64>(2));
            assert_eq!(cells(x), cells(y), "id {id}");
            let types = |r: &tokio_postgres::Row| r.columns().iter().map(|c| c.type_().clone()).collect::<Vec<_>>();
            assert_eq!(types(x), types(y));
        }
    }
    let fast = c.prepare("SELECT label FROM prices WHERE p = $1").await.unwrap();
    let rows = c.query(&fast, &[&"12.30"]).await;
    let general = c.query("SELECT label FROM prices WHERE p = $1 AND 1 = 1", &[&"12.30"]).await;
    assert_eq!(rows.is_ok(), general.is_ok());
    if let (Ok(a), Ok(b)) = (rows, general) {
        let labels = |rows: Vec<tokio_postgres::Row>| rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>();
        assert_eq!(labels(a), labels(b));
    }
}
