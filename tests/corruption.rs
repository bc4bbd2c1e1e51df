//! Corruption: seeded damage to a partition's segment files while the server is down.
//! A torn tail (a partial batch after the last acknowledged one, or a final batch cut in
//! half) is cut off at the first bad CRC and the partition works on; damage inside a sealed
//! segment, or in the active one with valid batches after it, takes the partition offline
//! with an error naming the file — nothing is cut or skipped, the file is left as it was,
//! and the server's other partitions keep working. A segment opened from its index file (every
//! sealed one, and after a clean shutdown the active one too) is not read at start: its damage
//! is found by the first read that reaches it, with the same outcome; without an index the
//! start-up scan finds it. (A damaged index file only costs a scan: see `log::index`'s
//! tests. RocksDB checks its own files.)

use std::path::{Path, PathBuf};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use crate::common::{query, Server};

const RECORDS: usize = 80;

/// A server holding topic `c` (1 partition, 1 KiB segments) with RECORDS acknowledged
/// records, one batch each, and a healthy second stream `other`; stopped cleanly.
async fn seeded(dir: &Path) {
    let mut server = Server::start(dir);
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &server.kafka).create().unwrap();
    let topic = NewTopic::new("c", 1, TopicReplication::Fixed(1)).set("segment.bytes", "1024");
    admin.create_topics(&[topic], &AdminOptions::new()).await.unwrap();
    let c = server.client().await;
    query(&c, "CREATE STREAM c (id BIGINT, note STRING) WITH (KAFKA_TOPIC='c')").await;
    query(&c, "CREATE STREAM other (id BIGINT) WITH (KAFKA_TOPIC='other', PARTITIONS=1)").await;
    for i in 0..RECORDS {
        query(&c, &format!("INSERT INTO c (id, note) VALUES ({i}, 'record number {i}')")).await;
    }
    query(&c, "INSERT INTO other (id) VALUES (1)").await;
    assert!(server.terminate().success());
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log").join("c").join("0"))
        .or_else(|_| std::fs::read_dir(dir.join("c").join("0")))
        .expect("partition directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

async fn count(c: &tokio_postgres::Client) -> Result<usize, String> {
    match c.simple_query("SELECT COUNT(*), COUNT(DISTINCT id) FROM c").await {
        Ok(msgs) => {
            let row = msgs.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            });
            let row = row.expect("a row");
            assert_eq!(row.get(0), row.get(1), "a record was read twice");
            Ok(row.get(0).unwrap().parse().unwrap())
        }
        Err(e) => Err(e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tails_are_cut_and_damage_inside_takes_the_partition_offline() {
    let pristine = tempfile::tempdir().unwrap();
    seeded(pristine.path()).await;
    let files = segments(pristine.path());
    assert!(files.len() >= 4, "want several segments, got {}", files.len());

    let copy = |name: &str| -> tempfile::TempDir {
        let to = tempfile::Builder::new().prefix(name).tempdir().unwrap();
        let status = std::process::Command::new("cp")
            .args(["-a", &format!("{}/.", pristine.path().display()), &to.path().display().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        to
    };
    let rel = |dir: &Path, file: &Path| dir.join(file.strip_prefix(pristine.path()).unwrap());

    // 1. A partial batch after the last acknowledged one (a crash mid-write): cut off.
    let d = copy("garbage-tail");
    let last = rel(d.path(), files.last().unwrap());
    let mut bytes = std::fs::read(&last).unwrap();
    let len_before = bytes.len();
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 80, 0, 0, 1, 0, 7, 7]);
    std::fs::write(&last, &bytes).unwrap();
    let server = Server::start(d.path());
    let c = server.client().await;
    assert_eq!(count(&c).await, Ok(RECORDS), "a garbage tail cost acknowledged records");
    query(&c, "INSERT INTO c (id, note) VALUES (1000, 'after repair')").await;
    assert_eq!(count(&c).await, Ok(RECORDS + 1));
    drop(server);
    assert!(std::fs::metadata(&last).unwrap().len() > len_before as u64);

    // 2. The final batch cut in half (its write was torn): that batch goes, nothing else.
    let d = copy("torn-batch");
    let last = rel(d.path(), files.last().unwrap());
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() - 10]).unwrap();
    let server = Server::start(d.path());
    let c = server.client().await;
    assert_eq!(count(&c).await, Ok(RECORDS - 1));
    drop(server);

    // 3, 4 and 5. A flipped byte inside a sealed segment (found by the read, then by the
    // start-up scan when the indexes are gone), and inside the active segment with valid
    // batches after it: offline, loudly, with the file untouched.
    let cases = [
        ("sealed", files[1].clone()),
        ("sealed-without-index", files[1].clone()),
        ("active-middle", files.last().unwrap().clone()),
    ];
    for (name, file) in cases {
        let d = copy(name);
        let damaged = rel(d.path(), &file);
        if name == "sealed-without-index" {
            for index in std::fs::read_dir(damaged.parent().unwrap()).unwrap().map(|e| e.unwrap().path()) {
                if index.extension().is_some_and(|e| e == "index") {
                    std::fs::remove_file(index).unwrap();
                }
            }
        }
        let mut bytes = std::fs::read(&damaged).unwrap();
        let at = if name.starts_with("sealed") { bytes.len() / 2 } else { 70 };
        bytes[at] ^= 0x5a;
        std::fs::write(&damaged, &bytes).unwrap();
        let server = Server::start(d.path());
        let c = server.client().await;
        let err = count(&c).await.expect_err("a damaged partition must not be read as if whole");
        assert!(err.contains("offline") && err.contains(&damaged.display().to_string()), "{name}: {err}");
        let insert = c.simple_query("INSERT INTO c (id, note) VALUES (2000, 'x')").await;
        assert!(insert.is_err(), "{name}: wrote to an offline partition");
        // Other partitions are untouched.
        assert_eq!(query(&c, "SELECT COUNT(*) FROM other").await, vec![vec![Some("1".into())]]);
        drop(server);
        assert_eq!(std::fs::read(&damaged).unwrap(), bytes, "{name}: recovery changed the damaged file");
        let later: Vec<PathBuf> = segments(d.path());
        assert_eq!(later.len(), files.len(), "{name}: recovery deleted segments");
    }
}
