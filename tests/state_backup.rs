//! A damaged state store falls back to its newest good backup, and exactly-once holds.
//!
//! A server runs a projection and an aggregation, with backups taken after DDL only (so
//! which data each backup holds is known), and is stopped cleanly (its memtables flushed to
//! table files). Copies of its data directory are then damaged: a flipped byte in every live
//! table file, a truncated manifest, a deleted CURRENT file, and a truncated manifest plus a
//! damaged newest backup. Each copy must start on a backup, and its queries, resumed from
//! that backup's offsets with their output cut back to its sink ends, must end with exactly
//! the results of the input: no record lost, none counted twice. Damage that keeps a table
//! file's size and time is not looked for at start but found by the background scrub, and the
//! start after it restores a backup. Without backups, damage stops the start with an error
//! naming the file, and the files are left as they were.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{query, Server};

const FIRST: i64 = 60;
const SECOND: i64 = 40;

fn files(dir: &Path, pick: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| pick(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    out.sort();
    out
}

fn backups(data: &Path) -> Vec<PathBuf> {
    files(&data.join("state-backups").join("meta"), |n| n.parse::<u32>().is_ok())
}

/// How long to wait for work the server does at nice 19 (backups, the scrub). With other
/// tests busy on both cores at nice 0 it gets about 1% of a core, so a backup that takes a
/// second alone has taken over 180 s in CI (a liveness wait, not a timing assertion).
const BACKGROUND_WAIT: Duration = Duration::from_secs(600);

/// Backups run at nice 19: with other tests busy on both cores they can wait their turn
/// for a long time.
async fn wait_for_backups(data: &Path, at_least: usize) {
    let deadline = Instant::now() + BACKGROUND_WAIT;
    while backups(data).len() < at_least {
        assert!(Instant::now() < deadline, "no backup appeared in {}", data.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn insert(c: &tokio_postgres::Client, from: i64, to: i64) {
    for i in from..to {
        query(c, &format!("INSERT INTO s (id, k) VALUES ({i}, 'k{}')", i % 4)).await;
    }
}

/// Per key, how many of the first `n` records it has.
fn expected(n: i64) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        *counts.entry(format!("k{}", i % 4)).or_insert(0) += 1;
    }
    counts
}

async fn counts(c: &tokio_postgres::Client) -> BTreeMap<String, i64> {
    query(c, "SELECT k, n FROM t")
        .await
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].as_ref().unwrap().parse().unwrap()))
        .collect()
}

/// Waits until the queries have caught up with all `n` records, then checks them exactly.
async fn check_results(c: &tokio_postgres::Client, n: i64, case: &str) {
    let deadline = Instant::now() + BACKGROUND_WAIT;
    loop {
        let rows = query(c, "SELECT COUNT(*), COUNT(DISTINCT id) FROM p").await;
        let (total, distinct): (i64, i64) =
            (rows[0][0].as_ref().unwrap().parse().unwrap(), rows[0][1].as_ref().unwrap().parse().unwrap());
        let got = counts(c).await;
        if total >= n && got.values().sum::<i64>() >= n {
            assert_eq!((total, distinct), (n, n), "{case}: the projection's output holds a record twice or lost one");
            assert_eq!(got, expected(n), "{case}: the aggregation differs from the input");
            return;
        }
        assert!(Instant::now() < deadline, "{case}: queries did not catch up: {total} rows, counts {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server's log once it holds `needle` (the scrub runs at nice 19, so this may take a
/// while with other tests busy: a liveness wait, not a timing assertion).
async fn log_once_it_says(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + BACKGROUND_WAIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "the log never said {needle:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn copy_of(pristine: &Path, name: &str) -> tempfile::TempDir {
    let to = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .args(["-a", &format!("{}/.", pristine.display()), &to.path().display().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    to
}

fn flip_byte(file: &Path) {
    let at = std::fs::metadata(file).unwrap().len() as usize / 3;
    flip_byte_at(file, at);
}

/// Flips the byte at `at`: offset 8 of a table file is inside its first data block, which
/// only a read of the data finds (the properties and index blocks are read at open).
fn flip_byte_at(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(file, bytes).unwrap();
}

fn truncate(file: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_store_falls_back_to_its_newest_good_backup() {
    // Backups only at start and after DDL (a request made while another waits joins it): the
    // one after `marker` holds the first FIRST records' results.
    let no_timer = ["--state-backup-interval-secs", "0"];
    let pristine = tempfile::tempdir().unwrap();
    let data = pristine.path();
    {
        let mut server = Server::start_with(data, 0, &no_timer);
        let c = server.client().await;
        // Each CREATE's backup is waited for before the next: a request made while another
        // still waits for the backup thread joins it (one pending request at most), so three
        // CREATEs in a row may give one backup, not three.
        wait_for_backups(data, 1).await;
        for ddl in [
            "CREATE STREAM s (id BIGINT, k STRING) WITH (KAFKA_TOPIC='s', PARTITIONS=2)",
            "CREATE STREAM p AS SELECT id, k FROM s EMIT CHANGES",
            "CREATE TABLE t AS SELECT k, COUNT(*) AS n FROM s GROUP BY k EMIT CHANGES",
        ] {
            let before = backups(data);
            query(&c, ddl).await;
            let deadline = Instant::now() + BACKGROUND_WAIT;
            while backups(data).last() == before.last() {
                assert!(Instant::now() < deadline, "no backup after {ddl}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let before_data = backups(data);
        insert(&c, 0, FIRST).await;
        check_results(&c, FIRST, "first batch").await;
        query(&c, "CREATE STREAM marker (id BIGINT) WITH (KAFKA_TOPIC='marker', PARTITIONS=1)").await;
        // The backup after `marker` is newer than every backup before the data.
        let deadline = Instant::now() + BACKGROUND_WAIT;
        while backups(data).last() == before_data.last() {
            assert!(Instant::now() < deadline, "no backup after the DDL");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        insert(&c, FIRST, FIRST + SECOND).await;
        check_results(&c, FIRST + SECOND, "second batch").await;
        assert!(server.terminate().success());
    }
    let state = |dir: &Path| dir.join("state");
    let live_tables = files(&state(data), |n| n.ends_with(".sst"));
    assert!(!live_tables.is_empty(), "a clean stop flushes the state to table files");
    let newest = backups(data).last().unwrap().file_name().unwrap().to_string_lossy().into_owned();

    type Damage = fn(&Path, &str);
    let cases: [(&str, Damage); 4] = [
        ("flipped byte in every table file", |dir, _| {
            for f in files(&dir.join("state"), |n| n.ends_with(".sst")) {
                flip_byte(&f);
            }
        }),
        ("truncated manifest", |dir, _| {
            for f in files(&dir.join("state"), |n| n.starts_with("MANIFEST-")) {
                truncate(&f, 40);
            }
        }),
        ("deleted CURRENT", |dir, _| std::fs::remove_file(dir.join("state").join("CURRENT")).unwrap()),
        ("truncated manifest and a damaged newest backup", |dir, newest| {
            for f in files(&dir.join("state"), |n| n.starts_with("MANIFEST-")) {
                truncate(&f, 40);
            }
            for f in files(&dir.join("state-backups").join("private").join(newest), |n| n.ends_with(".log")) {
                flip_byte(&f);
            }
        }),
    ];
    for (case, damage) in cases {
        let copy = copy_of(data, "eddy-backup-");
        damage(copy.path(), &newest);
        let log = copy.path().join("server.log");
        let server = Server::start_logging(copy.path(), &no_timer, &log);
        let c = server.client().await;
        check_results(&c, FIRST + SECOND, case).await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("is damaged") && text.contains("restored in its place"), "{case}: no loud line:\n{text}");
        if case.contains("newest backup") {
            assert!(text.contains(&format!("backup {newest} of the state store cannot be restored")), "{text}");
        }
        let aside = files(copy.path(), |n| n.starts_with("state.damaged-"));
        assert_eq!(aside.len(), 1, "{case}: the damaged store is kept aside");
        println!("{case}: restored a backup, {} records, results exact", FIRST + SECOND);
    }

    // Damage that keeps a table file's size and time: the start (which compares those with
    // the record written at the clean stop) reads no block of the queries' state, the
    // background scrub finds it and
    // marks the store, and the next start restores the newest backup.
    let copy = copy_of(data, "eddy-scrub-");
    // The queries' table files only: the catalog is read whole at every start.
    let of_queries = |f: &PathBuf| !std::fs::read(f).unwrap().windows(7).any(|w| w == b"catalog");
    let damaged: Vec<PathBuf> =
        files(&state(copy.path()), |n| n.ends_with(".sst")).into_iter().filter(of_queries).collect();
    assert!(!damaged.is_empty(), "the queries' state is in table files");
    for f in damaged {
        let modified = std::fs::metadata(&f).unwrap().modified().unwrap();
        flip_byte_at(&f, 8);
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(modified).unwrap();
    }
    let log = copy.path().join("server.log");
    let mut server = Server::start_full(copy.path(), 0, &no_timer, &[("EDDY_LOG", "info")], Some(&log));
    let text = log_once_it_says(&log, "is damaged").await;
    assert!(text.contains("table files as recorded"), "the start read every block:\n{text}");
    assert!(!text.contains("restored in its place"), "{text}");
    assert!(files(&state(copy.path()), |n| n == "EDDY-DAMAGED").len() == 1, "the scrub marks the store");
    server.kill9();
    let server = Server::start_full(copy.path(), 0, &no_timer, &[("EDDY_LOG", "info")], Some(&log));
    let c = server.client().await;
    check_results(&c, FIRST + SECOND, "damage found by the scrub").await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the scrub of an earlier run found") && text.contains("restored in its place"), "{text}");
    assert_eq!(files(copy.path(), |n| n.starts_with("state.damaged-")).len(), 1);
    drop(server);

    // A clean restart of an undamaged store reads no block at start; the scrub then reads
    // them all and finds nothing.
    let copy = copy_of(data, "eddy-clean-");
    let log = copy.path().join("server.log");
    let server = Server::start_full(copy.path(), 0, &no_timer, &[("EDDY_LOG", "info")], Some(&log));
    let c = server.client().await;
    check_results(&c, FIRST + SECOND, "clean restart").await;
    let text = log_once_it_says(&log, "state store scrubbed").await;
    assert!(text.contains("table files as recorded") && !text.contains("is damaged"), "{text}");
    drop(server);

    // Without backups the damage stops the start, and nothing is moved or cut.
    let copy = copy_of(data, "eddy-nobackup-");
    for f in files(&state(copy.path()), |n| n.starts_with("MANIFEST-")) {
        truncate(&f, 40);
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["server", "--state-backups", "0", "--pg-listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(copy.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a damaged store without backups");
    assert!(stderr.contains("MANIFEST"), "the error names the file: {stderr}");
    assert!(files(copy.path(), |n| n.starts_with("state.damaged-")).is_empty());
    assert!(!files(&state(copy.path()), |n| n.starts_with("MANIFEST-")).is_empty());
}
