//! Disk full and fsync errors. The server runs on a small tmpfs (mounted by the test; CI
//! runs as root): once the disk fills, INSERT gets SQLSTATE 53100 and a librdkafka producer
//! gets KAFKA_STORAGE_ERROR (retried until its timeout), and nothing is acknowledged that is
//! not stored; reads go on; freeing space lets writes resume; a
//! restart finds exactly the acknowledged records. An injected fsync failure stops that
//! partition's writer (no retry that could hide lost pages) while reads and other
//! partitions go on; a restart brings it back.

use std::path::{Path, PathBuf};

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::{query, sqlstate, Server};

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .status()
            .expect("run mount");
        assert!(status.success(), "the disk-full test mounts a tmpfs and needs root (CI runs as root)");
        Tmpfs(mnt)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: statvfs writes into the zeroed struct we pass.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

async fn count(c: &tokio_postgres::Client, stream: &str) -> u64 {
    query(c, &format!("SELECT COUNT(*) FROM {stream}")).await[0][0].as_deref().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(tmp.path(), "96m");
    let data = fs.0.join("data");
    let mut server = Server::start(&data);
    let c = server.client().await;
    query(&c, "CREATE STREAM blobs (id BIGINT, body STRING) WITH (KAFKA_TOPIC='blobs', PARTITIONS=1)").await;
    // Room kept aside to create a query once the disk is full.
    let reserve = fs.0.join("reserve");
    std::fs::write(&reserve, vec![0u8; 512 << 10]).unwrap();
    // Leave about 2 MiB free.
    let filler = fs.0.join("filler");
    let keep = 2 << 20;
    let fill = free_bytes(&fs.0).saturating_sub(keep);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();

    let body = "x".repeat(100_000);
    let mut acked = 0u64;
    let mut refused = None;
    for i in 0..200 {
        match c.simple_query(&format!("INSERT INTO blobs (id, body) VALUES ({i}, '{body}')")).await {
            Ok(_) => acked += 1,
            Err(e) => {
                refused = e.as_db_error().map(|d| (d.code().code().to_string(), d.message().to_string()));
                break;
            }
        }
    }
    let (code, message) = refused.expect("the disk never filled");
    assert_eq!(code, "53100", "{message}");
    assert!(acked > 0);
    // Reads go on while the disk is full.
    assert_eq!(count(&c, "blobs").await, acked);
    // Still full: still refused, still nothing half-written.
    assert_eq!(sqlstate(&c, &format!("INSERT INTO blobs (id, body) VALUES (999, '{body}')")).await.0, "53100");
    // A Kafka producer meets the full disk too: KAFKA_STORAGE_ERROR, which librdkafka retries
    // until its message timeout; nothing is acknowledged.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &server.kafka)
        .set("acks", "all")
        .set("message.timeout.ms", "3000")
        .create()
        .unwrap();
    let big = format!("{{\"id\": 1001, \"body\": \"{body}\"}}");
    let sent = producer.send(FutureRecord::<(), _>::to("blobs").payload(&big), Duration::from_secs(10)).await;
    let (error, _) = sent.expect_err("a produce was acknowledged on a full disk");
    eprintln!("disk_full: produce on the full disk failed with: {error}");
    assert_eq!(count(&c, "blobs").await, acked);

    // A query that copies the records needs more room than there is: its checkpoint must
    // wait and retry (visible in SHOW QUERIES), not stop or write anything half.
    std::fs::remove_file(&reserve).unwrap();
    query(&c, "CREATE STREAM ids AS SELECT id, body FROM blobs EMIT CHANGES").await;
    let mut retrying = false;
    for _ in 0..100 {
        let shown = query(&c, "SHOW QUERIES").await;
        if shown.iter().any(|r| r.iter().flatten().any(|v| v.contains("checkpoint failed, retrying"))) {
            retrying = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(retrying, "the query's checkpoint never met the full disk");
    std::fs::remove_file(&filler).unwrap();
    query(&c, "INSERT INTO blobs (id, body) VALUES (1000, 'after')").await;
    assert_eq!(count(&c, "blobs").await, acked + 1);
    // With room again, the same producer's next record is stored and acknowledged.
    let delivered = producer
        .send(
            FutureRecord::<(), _>::to("blobs").payload("{\"id\": 1001, \"body\": \"kafka\"}"),
            Duration::from_secs(10),
        )
        .await
        .expect("a produce after space was freed");
    assert_eq!(delivered.offset as u64, acked + 1, "the Kafka record's offset");
    let acked = acked + 1;
    query(&c, "FLUSH").await;
    let ids = query(&c, "SELECT COUNT(*), COUNT(DISTINCT id) FROM ids").await;
    assert_eq!(ids[0][0].as_deref(), Some((acked + 1).to_string().as_str()), "the query lost output to the full disk");
    assert_eq!(ids[0][0], ids[0][1], "the query doubled output after the full disk");
    assert!(server.terminate().success());
    let server = Server::start(&data);
    let c = server.client().await;
    assert_eq!(count(&c, "blobs").await, acked + 1, "the restart found other records than were acknowledged");
    query(&c, "FLUSH").await;
    assert_eq!(count(&c, "ids").await, acked + 1);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_writer_instead_of_retrying() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Server::start(tmp.path());
    let c = setup.client().await;
    query(&c, "CREATE STREAM a (id BIGINT) WITH (KAFKA_TOPIC='a', PARTITIONS=1)").await;
    query(&c, "CREATE STREAM b (id BIGINT) WITH (KAFKA_TOPIC='b', PARTITIONS=1)").await;
    drop(c);
    drop(setup);
    // The 4th fsync after start fails.
    let server = Server::start_with_env(tmp.path(), 0, &[], &[("EDDY_FAILPOINTS", "log:fsync=4")]);
    let c = server.client().await;
    let mut acked = 0;
    let mut failed_at = None;
    for i in 0..10 {
        match c.simple_query(&format!("INSERT INTO a (id) VALUES ({i})")).await {
            Ok(_) => acked += 1,
            Err(e) => {
                failed_at = Some(e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default());
                break;
            }
        }
    }
    let message = failed_at.expect("the injected fsync failure never came");
    assert!(message.contains("fsync failed"), "{message}");
    // The writer stays stopped: no retry can report success for pages the kernel dropped.
    let again = c.simple_query("INSERT INTO a (id) VALUES (100)").await.unwrap_err();
    assert!(again.as_db_error().unwrap().message().contains("takes no more writes"));
    // Reads and other partitions go on.
    assert_eq!(count(&c, "a").await, acked);
    query(&c, "INSERT INTO b (id) VALUES (1)").await;
    assert_eq!(count(&c, "b").await, 1);
    drop(server);
    let server = Server::start(tmp.path());
    let c = server.client().await;
    query(&c, "INSERT INTO a (id) VALUES (200)").await;
    assert!(count(&c, "a").await > acked, "writes did not resume after a restart");
}

/// Starting on a full disk: the server comes up read-only with a clear error for writes
/// (25006) and DDL, reads and pull queries work; a restart with free space writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_on_a_full_disk_comes_up_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(tmp.path(), "64m");
    let data = fs.0.join("data");
    let mut server = Server::start(&data);
    let c = server.client().await;
    query(&c, "CREATE STREAM notes (id BIGINT, body STRING) WITH (KAFKA_TOPIC='notes', PARTITIONS=1)").await;
    query(&c, "INSERT INTO notes (id, body) VALUES (1, 'kept'), (2, 'kept too')").await;
    assert!(server.terminate().success());

    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![0u8; free_bytes(&fs.0) as usize]).unwrap();
    let server = Server::start(&data);
    let c = server.client().await;
    assert_eq!(count(&c, "notes").await, 2, "reads must work on a full disk");
    // DDL needs the disk (a topic directory, a catalog write): disk full or read-only.
    let (code, _) = sqlstate(&c, "CREATE STREAM more (id BIGINT) WITH (PARTITIONS=1)").await;
    assert!(code == "53100" || code == "25006", "DDL on a read-only start: {code}");
    drop(server);

    std::fs::remove_file(&filler).unwrap();
    let server = Server::start(&data);
    let c = server.client().await;
    query(&c, "INSERT INTO notes (id, body) VALUES (3, 'room again')").await;
    assert_eq!(count(&c, "notes").await, 3);
}
