//! The `eddy` server under test: started as its own process (the release binary cargo built
//! for this bench), measured through /proc, driven with real clients (librdkafka, Postgres).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::events::EventRecord;

pub struct Server {
    child: Child,
    pub data_dir: PathBuf,
    pub pg_port: u16,
    pub kafka: String,
}

impl Server {
    /// Starts `eddy server` (the binary cargo built) on free loopback ports and waits for
    /// its banner.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_binary(data_dir, Path::new(env!("CARGO_BIN_EXE_eddy")))
    }

    /// Starts another build of `eddy` (to compare two side by side).
    pub fn start_binary(data_dir: &Path, binary: &Path) -> Server {
        let mut child = Command::new(binary)
            // Room for the row-count checks, which scan whole output streams.
            .args(["server", "--pg-listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"])
            .args(["--query-memory-bytes", "8589934592", "--data-dir"])
            .arg(data_dir)
            .env("EDDY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start eddy");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut port = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(" -p ").nth(1) {
                    port = rest.split_whitespace().next().and_then(|p| p.parse::<u16>().ok());
                }
                if let (Some(p), Some(rest)) = (port, line.split("kcat -b ").nth(1)) {
                    let _ = tx.send((p, rest.split_whitespace().next().unwrap_or_default().to_string()));
                }
            }
        });
        let (pg_port, kafka) = rx.recv_timeout(Duration::from_secs(120)).expect("eddy did not start");
        Server { child, data_dir: data_dir.to_path_buf(), pg_port, kafka }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let conn = format!("host=127.0.0.1 port={} user=eddy dbname=eddy", self.pg_port);
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system) the server process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        cpu_from_stat(&stat)
    }

    /// Waits (up to `limit`) until the server has been idle for half a second: at most one clock tick (10 ms) in
    /// each quarter second. A restarted server backs up its state store first (the table files its last
    /// run flushed at shutdown); engine mode times the query, not that.
    pub async fn wait_quiet(&self, limit: Duration) {
        let started = std::time::Instant::now();
        let mut last = self.cpu_seconds();
        let mut quiet_polls = 0;
        while quiet_polls < 2 && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.cpu_seconds();
            quiet_polls = if now - last < 0.015 { quiet_polls + 1 } else { 0 };
            last = now;
        }
    }

    /// The server's peak resident memory (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Bytes on disk under the state store directory.
    pub fn state_bytes(&self) -> u64 {
        dir_bytes(&self.data_dir.join("state"))
    }

    /// SIGTERM, and wait for the clean exit.
    pub fn stop(mut self) {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime from a /proc/PID/stat line, in seconds.
pub fn cpu_from_stat(stat: &str) -> f64 {
    // The fields after the command name (in parentheses, which may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / per_second
}

pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Runs statements one after another (simple protocol), failing loudly.
pub async fn run_sql(client: &tokio_postgres::Client, statements: &[impl AsRef<str>]) {
    for sql in statements {
        let sql = sql.as_ref();
        if let Err(e) = client.simple_query(sql).await {
            let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string());
            panic!("{sql}: {message}");
        }
    }
}

/// The rows of a query as text.
pub async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for m in client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")) {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            out.push((0..r.len()).map(|i| r.get(i).unwrap_or("").to_string()).collect());
        }
    }
    out
}

/// Waits until every running query has consumed its inputs to their ends (`lag` 0 in
/// SHOW QUERIES, as of its last checkpoint) and returns when that was seen.
pub async fn wait_caught_up(client: &tokio_postgres::Client, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        let queries = rows(client, "SHOW QUERIES").await;
        if let Some(bad) = queries.iter().find(|q| !q[1].starts_with("RUNNING")) {
            panic!("query {} is {}", bad[0], bad[1]);
        }
        if queries.iter().all(|q| q.last().is_some_and(|lag| lag == "0")) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "queries did not catch up in {limit:?}: {queries:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts delivery reports, and keeps the time each numbered record was acknowledged.
#[derive(Default)]
pub struct Acks {
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    /// For the latency runs: ack time by record number (the delivery opaque).
    pub times: Mutex<Vec<Option<Instant>>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.acked.fetch_add(1, Ordering::Relaxed);
        let mut times = self.times.lock().unwrap();
        if let Some(slot) = times.get_mut(seq) {
            *slot = Some(Instant::now());
        }
    }
}

/// A librdkafka producer (acks=all: every record is on disk when acknowledged).
pub fn producer(bootstrap: &str, linger_ms: &str) -> BaseProducer<Acks> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", linger_ms)
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Acks::default())
        .expect("producer")
}

/// Sends one record (numbered `seq` for its ack time), waiting while librdkafka's queue is full.
///
/// The record's timestamp is the produce time (librdkafka's default); the event time is the
/// `date_time` field. (Nexmark's 2026-01-01 event times as record times would fall to the
/// topics' 7-day retention as soon as a segment rolls.)
pub fn send(producer: &BaseProducer<Acks>, e: &EventRecord, seq: usize) {
    let mut record = BaseRecord::<[u8; 8], Vec<u8>, usize>::with_opaque_to(e.topic, seq).payload(&e.value);
    if let Some(key) = &e.key {
        record = record.key(key);
    }
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((_, back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
        }
    }
    producer.poll(Duration::ZERO);
}

/// Sends every event to its topic as fast as the broker takes them and waits for all acks;
/// fails if any was refused.
pub fn produce_all(producer: &BaseProducer<Acks>, events: &[EventRecord]) {
    for (seq, e) in events.iter().enumerate() {
        send(producer, e, seq);
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    let acks = producer.context();
    assert_eq!(acks.failed.load(Ordering::Relaxed), 0, "records were refused");
    assert_eq!(acks.acked.load(Ordering::Relaxed), events.len() as u64, "records were not acknowledged");
}

/// Starts `perf record` on every CPU (sampling, no call graphs: the release build has no
/// frame pointers); the report keeps the server's samples. (Attaching with `-p` misses the
/// query's thread, started after it.)
pub fn perf_record(data: &Path) -> Child {
    // EDDY_NEXMARK_PROFILE=graph: call graphs (DWARF unwinding, fewer samples), and the data
    // file is kept for `perf report -i`.
    let sampling: &[&str] = if call_graphs() { &["-F", "499", "--call-graph", "dwarf,32768"] } else { &["-F", "1999"] };
    let child = Command::new("perf")
        .args(["record", "-a"])
        .args(sampling)
        .arg("-o")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf (apt-get install linux-perf)");
    std::thread::sleep(Duration::from_millis(700));
    child
}

/// Stops `perf record` and writes the top of its report (by symbol) to `out`.
pub fn perf_report(mut perf: Child, pid: u32, data: &Path, out: &Path) {
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(perf.id() as i32, libc::SIGINT);
    }
    let _ = perf.wait();
    let report = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            // Resolving inlined frames through addr2line takes many minutes on a DWARF profile.
            "--no-inline",
            "--sort",
            "dso,symbol",
            "--percent-limit",
            "0.7",
            "--percentage",
            "relative",
            "--pid",
        ])
        .arg(pid.to_string())
        .arg("-i")
        .arg(data)
        .output()
        .expect("perf report");
    let text: String = String::from_utf8_lossy(&report.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && (!l.starts_with('#') || l.starts_with("# Samples")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(out, text).expect("profile file");
    if !call_graphs() {
        let _ = std::fs::remove_file(data);
    }
}

fn call_graphs() -> bool {
    std::env::var("EDDY_NEXMARK_PROFILE").is_ok_and(|v| v == "graph")
}
