//! Nexmark on Eddy: `cargo bench --bench nexmark`.
//!
//! Events from the `nexmark` crate's standard generator go into three topics (person, auction,
//! bid) as JSON; the standard queries (`queries.rs`) run as Eddy continuous queries on the
//! release `eddy` server, one at a time, each on a fresh server process. Modes:
//! - `engine`: the events are in the log before the query starts; measures the query engine
//!   from CREATE until it has consumed everything (SHOW QUERIES lag 0).
//! - `end-to-end`: the query runs first; the events are produced through the Kafka protocol
//!   (librdkafka, acks=all) as fast as the broker takes them, until the query has caught up.
//! - `latency`: q0 with a push query open; bids produced at a fixed rate (10,000/s, then half
//!   of q0's end-to-end peak); latency from each record's produce acknowledgement to its row
//!   arriving on the push query.
//! - `datafusion-batch`: DataFusion runs each query that has a batch form once over the same
//!   events as JSON Lines files: the one-pass limit.
//!
//! Knobs: `EDDY_NEXMARK_EVENTS` (default 1,000,000), `EDDY_NEXMARK_QUERIES` (e.g. `q0,q3`;
//! default all), `EDDY_NEXMARK_MODES` (default all four), `EDDY_NEXMARK_LATENCY_SECS` (10),
//! `EDDY_NEXMARK_DIR` (work and event files, default `target/nexmark`), `EDDY_NEXMARK_OUT`
//! (the JSON results, default `target/nexmark/results.json`), `EDDY_NEXMARK_PROFILE=1` (engine
//! mode: `perf record` on the server while each query runs; the top of `perf report` goes to
//! `<dir>/profile-<query>.txt`; `=graph` records call graphs and keeps `<dir>/perf-<query>.data`
//! for `perf report -i`), `EDDY_NEXMARK_RUNS` (engine mode: runs of each query, default 3; the
//! median by per-core throughput is reported, with the range in its note; only the first run
//! is profiled), `EDDY_NEXMARK_COMPARE` (engine mode only: `label=/path/to/eddy,...`, each
//! query's runs alternate between these builds and each gets a result, mode `engine@label`:
//! two builds side by side in one run), `EDDY_NEXMARK_PARTITIONS` (partitions of each topic,
//! default 1), `EDDY_NEXMARK_KEEP_LOADED=1` (engine mode: keep `<dir>/loaded`, the data directory
//! with every event in the log, and reuse it in the next run when it holds the same events and
//! partitions: profiling one change after another without loading again). Per core means events divided by the CPU seconds the server process used (for
//! DataFusion: this process).

mod events;
mod queries;
mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use events::EventRecord;
use queries::{Query, EVENT_FIELDS, NOT_RUN, QUERIES};
use server::Server;

/// One measurement: a line on stdout and an object in the JSON results.
#[derive(Serialize, Default, Clone)]
struct Measurement {
    query: String,
    mode: String,
    events: u64,
    seconds: f64,
    events_per_sec: f64,
    events_per_sec_per_core: f64,
    cpu_seconds: f64,
    peak_rss_bytes: Option<u64>,
    state_bytes: Option<u64>,
    p50_latency_ms: Option<f64>,
    p99_latency_ms: Option<f64>,
    /// Records per second offered in a latency run.
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    /// Rows in the query's result, as a sanity check.
    #[serde(skip_serializing_if = "Option::is_none")]
    rows_out: Option<u64>,
    note: String,
}

impl Measurement {
    fn new(query: &Query, mode: &str, events: u64, seconds: f64, cpu_seconds: f64) -> Measurement {
        Measurement {
            query: query.name.into(),
            mode: mode.into(),
            events,
            seconds,
            events_per_sec: events as f64 / seconds.max(1e-9),
            events_per_sec_per_core: events as f64 / cpu_seconds.max(1e-9),
            cpu_seconds,
            note: query.note.into(),
            ..Default::default()
        }
    }

    fn print(&self) {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "nexmark {:<4} {:<16} events {:>9}  {:>7.2} s  {:>10.0} ev/s  {:>10.0} ev/s/core  cpu {:>6.2} s  \
             rss {:>5} MiB  state {:>6} KiB  p50 {} ms  p99 {} ms{}",
            self.query,
            self.mode,
            self.events,
            self.seconds,
            self.events_per_sec,
            self.events_per_sec_per_core,
            self.cpu_seconds,
            self.peak_rss_bytes.map_or("-".into(), |b| (b >> 20).to_string()),
            self.state_bytes.map_or("-".into(), |b| (b >> 10).to_string()),
            opt(self.p50_latency_ms),
            opt(self.p99_latency_ms),
            self.rows_out.map_or(String::new(), |r| format!("  rows out {r}")),
        );
    }
}

struct Settings {
    events: usize,
    queries: Vec<&'static Query>,
    modes: Vec<String>,
    latency_secs: u64,
    profile: bool,
    /// Engine-mode runs of each query (the median is reported).
    runs: usize,
    /// Builds to compare in engine mode: (label, binary); empty: the one cargo built.
    compare: Vec<(String, PathBuf)>,
    dir: PathBuf,
    out: PathBuf,
    /// Keep the loaded data directory for the next run, and reuse a matching one.
    keep_loaded: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = env("EDDY_NEXMARK_DIR").map(PathBuf::from).unwrap_or_else(|| manifest.join("target/nexmark"));
        let wanted: Option<Vec<String>> =
            env("EDDY_NEXMARK_QUERIES").map(|v| v.split(',').map(|q| q.trim().to_ascii_lowercase()).collect());
        if let Some(w) = &wanted {
            for name in w {
                if let Some((_, why)) = NOT_RUN.iter().find(|(q, _)| q == name) {
                    println!("nexmark {name}: not run: {why}");
                } else if !QUERIES.iter().any(|q| q.name == name) {
                    panic!("unknown query {name}");
                }
            }
        }
        Settings {
            events: env("EDDY_NEXMARK_EVENTS")
                .map_or(1_000_000, |v| v.replace('_', "").parse().expect("EDDY_NEXMARK_EVENTS")),
            queries: QUERIES.iter().filter(|q| wanted.as_ref().is_none_or(|w| w.iter().any(|n| n == q.name))).collect(),
            modes: env("EDDY_NEXMARK_MODES")
                .unwrap_or_else(|| "engine,end-to-end,latency,datafusion-batch".into())
                .split(',')
                .map(|m| m.trim().to_string())
                .collect(),
            latency_secs: env("EDDY_NEXMARK_LATENCY_SECS")
                .map_or(10, |v| v.parse().expect("EDDY_NEXMARK_LATENCY_SECS")),
            profile: env("EDDY_NEXMARK_PROFILE").is_some_and(|v| v != "0"),
            runs: env("EDDY_NEXMARK_RUNS").map_or(3, |v| v.parse::<usize>().expect("EDDY_NEXMARK_RUNS").max(1)),
            compare: env("EDDY_NEXMARK_COMPARE").map_or_else(Vec::new, |v| {
                v.split(',')
                    .map(|b| {
                        let (label, path) = b.split_once('=').expect("EDDY_NEXMARK_COMPARE: label=/path,...");
                        (label.trim().to_string(), PathBuf::from(path.trim()))
                    })
                    .collect()
            }),
            keep_loaded: env("EDDY_NEXMARK_KEEP_LOADED").is_some_and(|v| v != "0"),
            out: env("EDDY_NEXMARK_OUT").map(PathBuf::from).unwrap_or_else(|| dir.join("results.json")),
            dir,
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let settings = Settings::from_env();
    std::fs::create_dir_all(&settings.dir).expect("work directory");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let started = Instant::now();
    let events = events::generate(settings.events);
    events::write_files(&events, &settings.dir.join("events")).expect("event files");
    println!(
        "nexmark: {} events ({} person, {} auction, {} bid) generated in {:.1} s; files in {}",
        events.len(),
        events::count(&events, "person"),
        events::count(&events, "auction"),
        events::count(&events, "bid"),
        started.elapsed().as_secs_f64(),
        settings.dir.join("events").display()
    );
    for (name, why) in NOT_RUN {
        println!("nexmark {name}: not run: {why}");
    }

    let mut results: Vec<Measurement> = Vec::new();
    let record = |m: Measurement, results: &mut Vec<Measurement>| {
        m.print();
        results.push(m);
        let json = serde_json::to_string_pretty(&results).unwrap();
        if let Some(parent) = settings.out.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&settings.out, json).expect("results file");
    };
    let mode = |m: &str| settings.modes.iter().any(|x| x == m);

    if mode("engine") {
        let loaded = settings.dir.join("loaded");
        // What the loaded directory holds: reused only when it is the same.
        let partitions = std::env::var("EDDY_NEXMARK_PARTITIONS").unwrap_or_default();
        let marker = (loaded.join("NEXMARK-LOADED"), format!("events={} partitions={partitions}\n", events.len()));
        let reuse = settings.keep_loaded && std::fs::read_to_string(&marker.0).is_ok_and(|m| m == marker.1);
        if reuse {
            println!("nexmark: reusing the loaded log in {}", loaded.display());
        } else {
            runtime.block_on(load(&loaded, &events));
            std::fs::write(&marker.0, &marker.1).expect("loaded marker");
        }
        let builds: Vec<(String, PathBuf)> = if settings.compare.is_empty() {
            vec![(String::new(), PathBuf::from(env!("CARGO_BIN_EXE_eddy")))]
        } else {
            settings.compare.clone()
        };
        for q in &settings.queries {
            // Runs alternate between the builds, so both see the same machine.
            let mut runs: Vec<Vec<Measurement>> = vec![Vec::new(); builds.len()];
            for run in 0..settings.runs {
                for (b, (label, binary)) in builds.iter().enumerate() {
                    let profile = settings.profile && run == 0;
                    let mut m = runtime.block_on(engine(&settings, &loaded, q, &events, profile, (label, binary)));
                    if !label.is_empty() {
                        m.mode = format!("engine@{label}");
                    }
                    println!(
                        "nexmark {} {} run {}/{}: {:.0} ev/s/core",
                        q.name,
                        m.mode,
                        run + 1,
                        settings.runs,
                        m.events_per_sec_per_core
                    );
                    runs[b].push(m);
                }
            }
            for r in runs {
                record(median(r), &mut results);
            }
        }
        if !settings.keep_loaded {
            let _ = std::fs::remove_dir_all(&loaded);
        }
    }
    let mut q0_peak = None;
    if mode("end-to-end") {
        for q in &settings.queries {
            let m = runtime.block_on(end_to_end(&settings.dir, q, &events));
            if q.name == "q0" {
                q0_peak = Some(m.events_per_sec);
            }
            record(m, &mut results);
        }
    }
    if mode("latency") && settings.queries.iter().any(|q| q.name == "q0") {
        let q0 = QUERIES.iter().find(|q| q.name == "q0").unwrap();
        let half_peak = q0_peak.map(|p| (p / 2.0).max(1000.0));
        for rate in std::iter::once(10_000.0).chain(half_peak) {
            let m = runtime.block_on(latency(&settings.dir, q0, &events, rate, settings.latency_secs));
            record(m, &mut results);
        }
    }
    if mode("datafusion-batch") {
        for q in settings.queries.iter().filter(|q| q.batch.is_some()) {
            let m = runtime.block_on(datafusion_batch(&settings.dir.join("events"), q, &events));
            record(m, &mut results);
        }
    }
    println!("nexmark: results in {}", settings.out.display());
}

/// The run with the median per-core throughput; its note gives the range over all runs.
fn median(mut runs: Vec<Measurement>) -> Measurement {
    runs.sort_by(|a, b| a.events_per_sec_per_core.total_cmp(&b.events_per_sec_per_core));
    let n = runs.len();
    let (low, high) = (runs[0].events_per_sec_per_core, runs[n - 1].events_per_sec_per_core);
    let mut m = runs.swap_remove(n / 2);
    if n > 1 {
        m.note = format!("{}; median of {n} runs, per core {low:.0}–{high:.0}", m.note);
    }
    m
}

/// Events a query reads: those of its source topics.
fn events_read(q: &Query, events: &[EventRecord]) -> u64 {
    q.reads.iter().map(|t| events::count(events, t) as u64).sum()
}

fn fresh_dir(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
    std::fs::create_dir_all(path).expect("data directory");
}

/// A server on an empty data directory (`<work>/run`) with the sources and `q` created.
async fn start_with_query(work: &Path, q: &Query) -> (PathBuf, Server, tokio_postgres::Client) {
    let dir = work.join("run");
    fresh_dir(&dir);
    let server = Server::start(&dir);
    let c = server.client().await;
    server::run_sql(&c, &queries::sources()).await;
    server::run_sql(&c, q.statements).await;
    (dir, server, c)
}

/// A data directory with the sources defined and every event in the log.
async fn load(dir: &Path, events: &[EventRecord]) {
    fresh_dir(dir);
    let server = Server::start(dir);
    let c = server.client().await;
    server::run_sql(&c, &queries::sources()).await;
    let started = Instant::now();
    // Producing blocks this worker; the runtime's other worker keeps the connection going.
    tokio::task::block_in_place(|| server::produce_all(&server::producer(&server.kafka, "5"), events));
    let n = events.len();
    println!("nexmark: loaded {} events through Kafka in {:.1} s", n, started.elapsed().as_secs_f64());
    server::wait_caught_up(&c, Duration::from_secs(1800)).await;
    server.stop();
}

/// Copies a directory tree (the loaded data directory, for one query's run).
fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp");
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

/// The result's row count (a sanity check); `None`, with a line saying why, if it fails.
async fn count_rows(c: &tokio_postgres::Client, relation: &str) -> Option<u64> {
    let sql = format!("SELECT COUNT(*) FROM {relation}");
    match c.simple_query(&sql).await {
        Ok(messages) => messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        }),
        Err(e) => {
            let why = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string());
            println!("nexmark: {sql}: {why}");
            None
        }
    }
}

/// Engine mode: the events are already in the log.
async fn engine(
    settings: &Settings,
    loaded: &Path,
    q: &Query,
    events: &[EventRecord],
    profile: bool,
    (label, binary): (&str, &Path),
) -> Measurement {
    let dir = settings.dir.join("run");
    copy_dir(loaded, &dir);
    let server = Server::start_binary(&dir, binary);
    let c = server.client().await;
    server::wait_caught_up(&c, Duration::from_secs(600)).await;
    server.wait_quiet(Duration::from_secs(120)).await;
    let state_before = server.state_bytes();
    let cpu_before = server.cpu_seconds();
    let suffix = if label.is_empty() { String::new() } else { format!("-{label}") };
    let perf_data = settings.dir.join(format!("perf-{}{suffix}.data", q.name));
    let perf = profile.then(|| server::perf_record(&perf_data));
    let started = Instant::now();
    server::run_sql(&c, q.statements).await;
    let done = server::wait_caught_up(&c, Duration::from_secs(3600)).await;
    let seconds = (done - started).as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    if let Some(perf) = perf {
        server::perf_report(
            perf,
            server.pid(),
            &perf_data,
            &settings.dir.join(format!("profile-{}{suffix}.txt", q.name)),
        );
    }
    let mut m = Measurement::new(q, "engine", events_read(q, events), seconds, cpu);
    m.peak_rss_bytes = Some(server.peak_rss_bytes());
    m.state_bytes = Some(server.state_bytes().saturating_sub(state_before));
    m.rows_out = count_rows(&c, q.output).await;
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    m
}

/// End-to-end mode: the query runs while the events are produced through Kafka.
async fn end_to_end(work: &Path, q: &Query, events: &[EventRecord]) -> Measurement {
    let (dir, server, c) = start_with_query(work, q).await;
    // Only the events this query reads are produced.
    let mine: Vec<&EventRecord> = events.iter().filter(|e| q.reads.contains(&e.topic)).collect();
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let n = mine.len();
    tokio::task::block_in_place(|| {
        use rdkafka::producer::Producer;
        let producer = server::producer(&server.kafka, "5");
        for (seq, e) in mine.iter().enumerate() {
            server::send(&producer, e, seq);
        }
        producer.flush(Duration::from_secs(600)).expect("flush");
        assert_eq!(producer.context().failed.load(std::sync::atomic::Ordering::Relaxed), 0, "records were refused");
    });
    let done = server::wait_caught_up(&c, Duration::from_secs(3600)).await;
    let seconds = (done - started).as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    let mut m = Measurement::new(q, "end-to-end", n as u64, seconds, cpu);
    m.peak_rss_bytes = Some(server.peak_rss_bytes());
    m.state_bytes = Some(server.state_bytes());
    m.rows_out = count_rows(&c, q.output).await;
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    m
}

/// Latency: q0 with a push query open; bids at `rate` per second for `secs` seconds, each
/// tagged in `extra` with its number; latency from its ack to its row on the push query.
async fn latency(work: &Path, q: &Query, events: &[EventRecord], rate: f64, secs: u64) -> Measurement {
    use futures::StreamExt;
    let (dir, server, _c) = start_with_query(work, q).await;
    let n = ((rate * secs as f64) as usize).max(1);
    let bids: Vec<EventRecord> = events
        .iter()
        .filter(|e| e.topic == "bid")
        .cycle()
        .take(n)
        .enumerate()
        .map(|(seq, e)| {
            let mut value: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
            value["extra"] = serde_json::Value::String(format!("seq-{seq}"));
            EventRecord { topic: "bid", key: None, value: value.to_string().into_bytes() }
        })
        .collect();
    // The push query, reading rows as they come.
    let reader = server.client().await;
    let sql = format!("COPY (SELECT extra FROM {} EMIT CHANGES) TO STDOUT", q.output);
    let stream = reader.copy_out(sql.as_str()).await.expect("push query");
    let receiver = tokio::spawn(async move {
        let mut arrived: Vec<Option<Instant>> = vec![None; n];
        let mut seen = 0usize;
        let mut stream = Box::pin(stream);
        let mut partial = Vec::new();
        while seen < n {
            let Some(chunk) = stream.next().await else { break };
            let now = Instant::now();
            partial.extend_from_slice(&chunk.expect("push query data"));
            while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line);
                if let Some(seq) = text.trim().strip_prefix("seq-").and_then(|s| s.parse::<usize>().ok()) {
                    if seq < n && arrived[seq].is_none() {
                        arrived[seq] = Some(now);
                        seen += 1;
                    }
                }
            }
        }
        arrived
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let bootstrap = server.kafka.clone();
    let acks = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        // librdkafka's default linger (5 ms): the latency counts from the ack, after it.
        let producer = server::producer(&bootstrap, "5");
        *producer.context().times.lock().unwrap() = vec![None; n];
        let begin = Instant::now();
        for (seq, e) in bids.iter().enumerate() {
            let due = begin + Duration::from_secs_f64(seq as f64 / rate);
            loop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                producer.poll(Duration::ZERO);
                std::thread::sleep((due - now).min(Duration::from_micros(200)));
            }
            server::send(&producer, e, seq);
        }
        producer.flush(Duration::from_secs(600)).expect("flush");
        let times = producer.context().times.lock().unwrap().clone();
        times
    })
    .await
    .unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(120), receiver).await.expect("rows arrived").unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    let mut latencies: Vec<f64> = acks
        .iter()
        .zip(&arrived)
        .filter_map(|(a, r)| Some(r.as_ref()?.saturating_duration_since(*a.as_ref()?).as_secs_f64() * 1000.0))
        .collect();
    assert_eq!(latencies.len(), n, "every acknowledged record reaches the push query");
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let mut m = Measurement::new(q, "latency", n as u64, seconds, cpu);
    m.rate = Some(rate);
    m.p50_latency_ms = Some(pct(0.50));
    m.p99_latency_ms = Some(pct(0.99));
    m.peak_rss_bytes = Some(server.peak_rss_bytes());
    m.note = format!("{rate:.0} bids/s offered for {secs} s; from produce ack to the row on a push query");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    m
}

/// DataFusion, one batch over the JSON Lines files: the one-pass limit.
async fn datafusion_batch(dir: &Path, q: &Query, events: &[EventRecord]) -> Measurement {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::{JsonReadOptions, SessionConfig, SessionContext};
    use futures::StreamExt;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    let schemas: Vec<(&str, Schema)> = EVENT_FIELDS
        .iter()
        .map(|(name, fields)| {
            let fields = fields
                .iter()
                .map(|(f, bigint)| Field::new(*f, if *bigint { DataType::Int64 } else { DataType::Utf8 }, true));
            (*name, Schema::new(fields.collect::<Vec<_>>()))
        })
        .collect();
    for (name, schema) in &schemas {
        let path = dir.join(name).join("part-00000.json");
        let options = JsonReadOptions { schema: Some(schema), file_extension: ".json", ..Default::default() };
        ctx.register_json(*name, path.to_str().unwrap(), options).await.expect("register");
    }
    let self_cpu = || server::cpu_from_stat(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
    let cpu_before = self_cpu();
    let started = Instant::now();
    let mut stream = ctx.sql(q.batch.unwrap()).await.expect("plan").execute_stream().await.expect("execute");
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        rows += batch.expect("batch").num_rows() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = self_cpu() - cpu_before;
    let mut m = Measurement::new(q, "datafusion-batch", events_read(q, events), seconds, cpu);
    m.rows_out = Some(rows);
    m
}
