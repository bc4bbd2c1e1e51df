//! A stream–stream join whose buffers outgrow `--query-memory-bytes` spills keys to the state
//! store and reads them back when they are probed or expire (issue 16, memory bounds): the
//! output is exactly what the join owes — every match once, every unmatched record of an
//! outer join once with NULLs — across a `kill -9` that restarts it with keys spilled.

use std::collections::BTreeSet;

use crate::common::{kcat, query, Server};

type Joined = (Option<String>, Option<String>, Option<String>, Option<String>);

fn produce_rows(side: &str, keys: impl Iterator<Item = usize>, ms: impl Fn(usize) -> usize, pad: &str) -> String {
    let rows: Vec<String> = keys
        .map(|i| match side {
            "l" => format!("({}, 'k{i}', 'v{i}', '{pad}')", ms(i)),
            _ => format!("({}, 'k{i}', 'w{i}')", ms(i)),
        })
        .collect();
    match side {
        "l" => format!("INSERT INTO l (ROWTIME, k, v, pad) VALUES {}", rows.join(", ")),
        _ => format!("INSERT INTO r (ROWTIME, k, w) VALUES {}", rows.join(", ")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_buffers_past_the_memory_bound_spill_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--query-memory-bytes", "262144"];
    let mut server = Server::start_with(tmp.path(), 0, &args);
    let c = server.client().await;
    query(&c, "CREATE STREAM l (k STRING, v STRING, pad STRING) WITH (PARTITIONS=1)").await;
    query(&c, "CREATE STREAM r (k STRING, w STRING) WITH (PARTITIONS=1)").await;
    query(
        &c,
        "CREATE STREAM j AS SELECT l.k AS lk, r.k AS rk, l.v AS v, r.w AS w FROM l FULL OUTER JOIN r \
         WITHIN 1 HOUR GRACE PERIOD 0 SECONDS ON l.k = r.k EMIT CHANGES",
    )
    .await;
    // 2,000 left records of about 450 bytes buffered: over 900 KB against a 256 KiB bound.
    let pad = "p".repeat(200);
    for chunk in 0..4 {
        query(&c, &produce_rows("l", chunk * 500..(chunk + 1) * 500, |i| 1_000 + i * 10, &pad)).await;
        query(&c, "FLUSH").await;
    }
    let status = query(&c, "SHOW QUERIES").await;
    assert!(status.iter().flatten().flatten().any(|s| s.contains("keys spilled to the state store")), "{status:?}");
    // Even keys find their match, some of them spilled and read back.
    query(&c, &produce_rows("r", (0..1000).map(|i| i * 2), |i| 1_005 + i * 10, "")).await;
    query(&c, "FLUSH").await;
    drop(c);
    server.kill9();

    let server = Server::start_with(tmp.path(), 0, &args);
    let c = server.client().await;
    // More right records after the restart (its buffers restored with keys left spilled),
    // then one far ahead on each side: every buffered record expires, odd left keys unmatched.
    query(&c, &produce_rows("r", (0..500).map(|i| i * 4 + 1).filter(|i| i % 8 == 1), |i| 1_007 + i * 10, "")).await;
    // Read before the far records: a join's time is the later of its inputs' (as in Kafka
    // Streams), so a right record read after `end-l` would be late.
    query(&c, "FLUSH").await;
    query(&c, "INSERT INTO l (ROWTIME, k, v, pad) VALUES (100000000, 'end-l', 'x', '')").await;
    query(&c, "INSERT INTO r (ROWTIME, k, w) VALUES (100000000, 'end-r', 'y')").await;
    query(&c, "FLUSH").await;

    assert_eq!(query(&c, "SELECT COUNT(*) FROM eddy_processing_log").await, vec![vec![Some("0".to_string())]]);
    let broker = server.kafka.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        kcat(&["-b", &broker, "-C", "-t", "j", "-e", "-q", "-o", "beginning", "-f", "%s\n"], None)
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let text = |v: &serde_json::Value, name: &str| v.get(name).and_then(|x| x.as_str()).map(str::to_string);
    let got: Vec<Joined> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            (text(&v, "lk"), text(&v, "rk"), text(&v, "v"), text(&v, "w"))
        })
        .collect();
    let s = |x: String| Some(x);
    let mut expected: Vec<Joined> = Vec::new();
    let late_right: BTreeSet<usize> = (0..500).map(|i| i * 4 + 1).filter(|i| i % 8 == 1).collect();
    for i in 0..2000 {
        if i % 2 == 0 || late_right.contains(&i) {
            expected.push((s(format!("k{i}")), s(format!("k{i}")), s(format!("v{i}")), s(format!("w{i}"))));
        } else {
            expected.push((s(format!("k{i}")), None, s(format!("v{i}")), None));
        }
    }
    let got_set: BTreeSet<Joined> = got.iter().cloned().collect();
    let expected_set: BTreeSet<Joined> = expected.iter().cloned().collect();
    let missing: Vec<&Joined> = expected_set.difference(&got_set).take(10).collect();
    let extra: Vec<&Joined> = got_set.difference(&expected_set).take(10).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, unexpected {extra:?}");
    assert_eq!(got.len(), expected.len(), "every match once, every unmatched left key once with NULLs");
}
