//! Bounds that keep a bad client from hurting the server, over real sockets: a Kafka frame
//! before SASL authentication (Kafka's `sasl.server.max.receive.size`), a Postgres start-up
//! packet or pre-authentication message that claims a huge length, a compressed batch that
//! inflates without end (a zstd bomb), and the cursors one connection may hold open. Each
//! checks that the server answers promptly, did not grow, and still serves everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::common::{kcat, query, Server};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A `/proc/PID/status` field, in KiB (VmRSS: now; VmHWM: the peak so far).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Reads until the server closes the connection; what it sent first. Panics if it is still
/// open after `within`.
fn read_until_closed(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            // Reset: closed with our unread bytes still in its buffer.
            Err(_) => return got,
        }
        assert!(started.elapsed() < within, "the server kept the connection open (got {got:?})");
    }
}

const SASL_PLAIN: [&str; 8] = [
    "-X",
    "security.protocol=SASL_PLAINTEXT",
    "-X",
    "sasl.mechanisms=PLAIN",
    "-X",
    "sasl.username=alice",
    "-X",
    "sasl.password=s3cret",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_frames_before_sasl_authentication_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("users");
    std::fs::write(&users, "alice:s3cret\n").unwrap();
    let server = Server::start_with(&tmp.path().join("data"), 0, &["--users-file", users.to_str().unwrap()]);
    let pid = server.pid();
    let addr = server.kafka.clone();
    let rss_before = status_kib(pid, "VmRSS:");
    blocking(move || {
        // Twenty strangers each claim a 100 MiB request (under socket.request.max.bytes) and
        // start sending it: each is closed at the length prefix, nothing read or allocated.
        let mut conns = Vec::new();
        for _ in 0..20 {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(&(100i32 << 20).to_be_bytes()).unwrap();
            let _ = s.write_all(&[0u8; 1 << 20]);
            conns.push(s);
        }
        for mut s in conns {
            let got = read_until_closed(&mut s, Duration::from_secs(5));
            assert!(got.is_empty(), "no answer to a frame over the limit: {got:?}");
        }
        // Just over 512 KiB is refused as well; just under is read (and, not being a SASL
        // request, closes the connection too, but only after it is read whole).
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(&((512i32 << 10) + 1).to_be_bytes()).unwrap();
        assert!(read_until_closed(&mut s, Duration::from_secs(5)).is_empty());
    })
    .await;
    let rss_after = status_kib(pid, "VmRSS:");
    assert!(rss_after < rss_before + 40 * 1024, "RSS grew from {rss_before} KiB to {rss_after} KiB");

    // Authenticated clients still send requests of the usual size: a 700 KB record.
    let b = server.kafka.clone();
    let (ok, _, err) = blocking(move || {
        let big = vec![b'x'; 700_000];
        let mut args = vec!["-b", &b, "-P", "-t", "big", "-X", "message.max.bytes=1000000"];
        args.extend_from_slice(&SASL_PLAIN);
        kcat(&args, Some(&big))
    })
    .await;
    assert!(ok, "{err}");
    let b = server.kafka.clone();
    let (ok, out, err) = blocking(move || {
        let mut args = vec!["-b", &b, "-C", "-t", "big", "-e", "-f", "%S\n", "-X", "fetch.message.max.bytes=2000000"];
        args.extend_from_slice(&SASL_PLAIN);
        kcat(&args, None)
    })
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "700000", "{err}");
}

/// The bytes of one Postgres backend message of type `tag`, if `bytes` starts with it.
fn backend_message(bytes: &[u8], tag: u8) -> Option<&[u8]> {
    let (&first, rest) = bytes.split_first()?;
    if first != tag {
        return None;
    }
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    rest.get(4..len)
}

/// An ErrorResponse's SQLSTATE and message.
fn error_fields(bytes: &[u8]) -> (String, String) {
    let body = backend_message(bytes, b'E').unwrap_or_else(|| panic!("an ErrorResponse, got {bytes:?}"));
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let text = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'C' => code = text,
            b'M' => message = text,
            _ => {}
        }
    }
    (code, message)
}

fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", "eddy")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_messages_before_authentication_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path()).unwrap();
    let password = tmp.path().join("password");
    std::fs::write(&password, "adm1n-pw\n").unwrap();
    let server = Server::start_with(&tmp.path().join("data"), 0, &["--password-file", password.to_str().unwrap()]);
    let pid = server.pid();
    let addr = format!("127.0.0.1:{}", server.port);
    let rss_before = status_kib(pid, "VmRSS:");
    blocking(move || {
        // A start-up packet that claims 2 GiB: Postgres's answer, at once.
        for _ in 0..10 {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(&0x7fff_fff0i32.to_be_bytes()).unwrap();
            s.write_all(&196608i32.to_be_bytes()).unwrap();
            let got = read_until_closed(&mut s, Duration::from_secs(5));
            assert_eq!(error_fields(&got), ("08P01".into(), "invalid length of startup packet".into()));
        }
        // A password message that claims 100 MiB, after a proper start-up.
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(&startup_packet("eddy")).unwrap();
        let mut sasl = [0u8; 5];
        s.read_exact(&mut sasl).unwrap();
        assert_eq!(sasl[0], b'R', "AuthenticationSASL");
        let mut rest = vec![0u8; u32::from_be_bytes(sasl[1..].try_into().unwrap()) as usize - 4];
        s.read_exact(&mut rest).unwrap();
        s.write_all(b"p").unwrap();
        s.write_all(&(100i32 << 20).to_be_bytes()).unwrap();
        let got = read_until_closed(&mut s, Duration::from_secs(5));
        assert_eq!(error_fields(&got).0, "08P01", "{got:?}");
        // A 4 MiB Query before authenticating (pgwire would take up to 1 GiB): refused once
        // the unauthenticated allowance is read, not buffered whole.
        let mut conns = Vec::new();
        for _ in 0..10 {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(&startup_packet("eddy")).unwrap();
            let mut query = vec![b'Q'];
            query.extend_from_slice(&((4i32 << 20) + 4).to_be_bytes());
            query.resize(1 + 4 + (4 << 20), b' ');
            let _ = s.write_all(&query);
            conns.push(s);
        }
        for mut s in conns {
            let got = read_until_closed(&mut s, Duration::from_secs(10));
            // AuthenticationSASL first, then the refusal.
            let sasl_len = 1 + u32::from_be_bytes(got[1..5].try_into().unwrap()) as usize;
            let (code, message) = error_fields(&got[sasl_len..]);
            assert_eq!(code, "08P01");
            assert!(message.contains("before authentication"), "{message}");
        }
    })
    .await;
    let rss_after = status_kib(pid, "VmRSS:");
    assert!(rss_after < rss_before + 40 * 1024, "RSS grew from {rss_before} KiB to {rss_after} KiB");
    // Everyone else gets in.
    let conninfo = format!("host=127.0.0.1 port={} user=eddy password=adm1n-pw dbname=eddy", server.port);
    let (c, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.expect("a real client connects");
    tokio::spawn(conn);
    assert_eq!(query(&c, "SELECT 1").await, vec![vec![Some("1".into())]]);
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A v2 record batch holding one record whose value is `value_bytes` zeros, compressed with
/// zstd: a few kilobytes that inflate to `value_bytes`.
fn zstd_bomb(value_bytes: usize) -> Vec<u8> {
    let mut head = vec![0u8]; // attributes
    put_varint(&mut head, 0); // timestamp delta
    put_varint(&mut head, 0); // offset delta
    put_varint(&mut head, -1); // null key
    put_varint(&mut head, value_bytes as i64);
    let mut record = Vec::new();
    put_varint(&mut record, (head.len() + value_bytes + 1) as i64);
    record.extend_from_slice(&head);
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    z.write_all(&record).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = value_bytes;
    while left > 0 {
        let n = left.min(zeros.len());
        z.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    z.write_all(&[0]).unwrap(); // no headers
    let compressed = z.finish().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut b = BytesMut::new();
    b.put_i64(0); // base offset
    b.put_i32(0); // batch length, below
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // CRC, below
    b.put_i16(4); // attributes: zstd
    b.put_i32(0); // last offset delta
    b.put_i64(now);
    b.put_i64(now);
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(1); // records
    b.put_slice(&compressed);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.to_vec()
}

/// Produces `batch` to partition 0 of `topic` with a raw Produce v7; the partition's error code.
fn produce_raw(addr: &str, topic: &str, batch: Vec<u8>) -> i16 {
    const VERSION: i16 = 7;
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Produce as i16;
    header.request_api_version = VERSION;
    header.correlation_id = 1;
    header.client_id = Some(StrBytes::from_static_str("limits-test"));
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(Bytes::from(batch));
    let mut data = TopicProduceData::default();
    data.name = TopicName(StrBytes::from_string(topic.to_string()));
    data.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![data];
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header.encode(&mut frame, ApiKey::Produce.request_header_version(VERSION)).unwrap();
    request.encode(&mut frame, VERSION).unwrap();
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&frame).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let mut body = Bytes::from(body);
    ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(VERSION)).unwrap();
    let response = ProduceResponse::decode(&mut body, VERSION).unwrap();
    response.responses[0].partition_responses[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_batch_bomb_goes_to_the_processing_log() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let pid = server.pid();
    let c = server.client().await;
    query(&c, "CREATE STREAM raw (v INT) WITH (KAFKA_TOPIC='raw', VALUE_FORMAT='JSON', PARTITIONS=1)").await;
    query(&c, "CREATE STREAM copied AS SELECT v FROM raw EMIT CHANGES").await;
    query(&c, "INSERT INTO raw (v) VALUES (1)").await;
    query(&c, "FLUSH").await;
    let peak_before = status_kib(pid, "VmHWM:");
    // 256 MiB of zeros in a few kilobytes: stored as sent (a batch is kept byte for byte).
    let bomb = zstd_bomb(256 << 20);
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let addr = server.kafka.clone();
    assert_eq!(blocking(move || produce_raw(&addr, "raw", bomb)).await, 0);
    query(&c, "INSERT INTO raw (v) VALUES (2)").await;
    query(&c, "FLUSH").await;
    // The query read past it, reported it, and goes on.
    assert_eq!(
        query(&c, "SELECT v FROM copied ORDER BY v").await,
        vec![vec![Some("1".into())], vec![Some("2".into())]]
    );
    let log = query(&c, "SELECT query_id, topic, error FROM eddy_processing_log").await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0][1].as_deref(), Some("raw"));
    assert!(log[0][2].as_deref().unwrap().contains("inflates to more than"), "{log:?}");
    // A pull query over the topic skips it as well.
    assert_eq!(query(&c, "SELECT COUNT(*) FROM raw").await, vec![vec![Some("2".into())]]);
    let peak_after = status_kib(pid, "VmHWM:");
    assert!(
        peak_after < peak_before + 100 * 1024,
        "peak RSS grew from {peak_before} KiB to {peak_after} KiB: the batch was inflated"
    );
    let q = query(&c, "SHOW QUERIES").await;
    assert!(q.iter().any(|r| r[1].as_deref() == Some("RUNNING")), "{q:?}");
}

fn db_code(e: &tokio_postgres::Error) -> (String, String) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

async fn start_with_cursor_cap(dir: &Path, cap: &str) -> (Server, tokio_postgres::Client) {
    let server = Server::start_with(dir, 0, &["--max-cursors-per-connection", cap]);
    let c = server.client().await;
    (server, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_per_connection_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, mut c) = start_with_cursor_cap(tmp.path(), "3").await;
    query(&c, "CREATE STREAM ev (id STRING KEY, n INT) WITH (KAFKA_TOPIC='ev', VALUE_FORMAT='JSON', PARTITIONS=1)")
        .await;
    query(&c, "INSERT INTO ev (id, n) VALUES ('a', 1), ('b', 2), ('c', 3)").await;
    query(&c, "SET 'auto.offset.reset' = 'earliest'").await;
    for name in ["c1", "c2", "c3"] {
        query(&c, &format!("DECLARE {name} CURSOR FOR SELECT id, n FROM ev EMIT CHANGES")).await;
    }
    let e = c.simple_query("DECLARE c4 CURSOR FOR SELECT id FROM ev EMIT CHANGES").await.unwrap_err();
    let (code, message) = db_code(&e);
    assert_eq!(code, "53400", "{message}");
    assert!(message.contains("at most 3") && message.contains("--max-cursors-per-connection"), "{message}");
    // A pull query's cursor counts too.
    assert_eq!(db_code(&c.simple_query("DECLARE p CURSOR FOR SELECT id FROM ev").await.unwrap_err()).0, "53400");
    // The open cursors still work; closing one makes room.
    assert_eq!(query(&c, "FETCH 1 FROM c2").await, vec![vec![Some("a".into()), Some("1".into())]]);
    query(&c, "CLOSE c1").await;
    query(&c, "DECLARE c4 CURSOR FOR SELECT id, n FROM ev EMIT CHANGES").await;
    // Another connection has its own allowance.
    let other = server.client().await;
    query(&other, "DECLARE c1 CURSOR FOR SELECT id FROM ev EMIT CHANGES").await;

    // A partly fetched portal (Execute with a row limit) holds its query like a cursor.
    query(&c, "CLOSE ALL").await;
    query(&c, "DECLARE c1 CURSOR FOR SELECT id FROM ev EMIT CHANGES").await;
    query(&c, "DECLARE c2 CURSOR FOR SELECT id FROM ev EMIT CHANGES").await;
    let tx = c.transaction().await.unwrap();
    let first = tx.bind("SELECT id, n FROM ev EMIT CHANGES", &[]).await.unwrap();
    assert_eq!(tx.query_portal(&first, 1).await.unwrap().len(), 1);
    let second = tx.bind("SELECT id, n FROM ev EMIT CHANGES", &[]).await.unwrap();
    let e = tx.query_portal(&second, 1).await.unwrap_err();
    assert_eq!(db_code(&e).0, "53400");
    drop(tx);
    // Once the client closes its portal (tokio-postgres does when it is dropped), it no
    // longer counts.
    let tx = c.transaction().await.unwrap();
    let third = tx.bind("SELECT id, n FROM ev EMIT CHANGES", &[]).await.unwrap();
    drop(first);
    drop(second);
    tx.simple_query("SELECT 1").await.unwrap();
    assert_eq!(tx.query_portal(&third, 2).await.unwrap().len(), 2);
}
