//! Starts and stops the real server binary.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    /// `host:port` of the Kafka listener.
    pub kafka: String,
    /// `http://host:port` of the HTTP listener (REST Proxy, ksqlDB's REST API).
    pub http: String,
    /// `http://host:port` of the Schema Registry's own listener, when one was asked for.
    pub registry: Option<String>,
}

impl Server {
    /// Starts `eddy server` on a free loopback port and waits until it is ready.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_on(data_dir, 0)
    }

    /// Starts on a given port (0: any free one).
    pub fn start_on(data_dir: &Path, port: u16) -> Server {
        Server::start_with(data_dir, port, &[])
    }

    /// Starts with extra `eddy server` arguments.
    pub fn start_with(data_dir: &Path, port: u16, extra: &[&str]) -> Server {
        Server::start_with_env(data_dir, port, extra, &[])
    }

    /// Starts with extra arguments and environment variables (e.g. `EDDY_FAILPOINTS`).
    pub fn start_with_env(data_dir: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_full(data_dir, port, extra, env, None)
    }

    /// Starts with extra arguments, the server's log (stderr) written to `log`.
    pub fn start_logging(data_dir: &Path, extra: &[&str], log: &Path) -> Server {
        Server::start_full(data_dir, 0, extra, &[], Some(log))
    }

    /// Starts with environment variables (e.g. `EDDY_LOG`), the server's log written to `log`.
    pub fn start_logging_with_env(data_dir: &Path, env: &[(&str, &str)], log: &Path) -> Server {
        Server::start_full(data_dir, 0, &[], env, Some(log))
    }

    pub fn start_full(data_dir: &Path, port: u16, extra: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> Server {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create server log")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["server", "--checkpoint-interval-ms", "50", "--pg-listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .args(if extra.contains(&"--kafka-listen") { &[][..] } else { &["--kafka-listen", "127.0.0.1:0"][..] })
            .args(if extra.contains(&"--http-listen") { &[][..] } else { &["--http-listen", "127.0.0.1:0"][..] })
            .arg("--data-dir")
            .arg(data_dir)
            .env("EDDY_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start eddy");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut port, mut kafka, mut registry) = (None, None, None);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(" -p ").nth(1) {
                    port = rest.split_whitespace().next().and_then(|p| p.parse::<u16>().ok());
                }
                if let Some(rest) = line.split("Schema Registry alone: ").nth(1) {
                    registry = Some(rest.trim().to_string());
                }
                if let Some(rest) = line.split("kcat -b ").nth(1) {
                    kafka = rest.split_whitespace().next().map(str::to_string);
                }
                if let (Some(p), Some(k), Some(rest)) = (port, &kafka, line.split("curl ").nth(1)) {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send((p, k.clone(), url.trim_end_matches("/info").to_string(), registry.clone()));
                }
            }
        });
        let (port, kafka, http, registry) =
            rx.recv_timeout(Duration::from_secs(120)).expect("eddy did not print its banner in time");
        Server { child: Some(child), port, kafka, http, registry }
    }

    /// The server process's id (for /proc/PID/status and /proc/PID/fd).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn conn_string(&self) -> String {
        format!("host=127.0.0.1 port={} user=eddy dbname=eddy", self.port)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) =
            tokio_postgres::connect(&self.conn_string(), tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// SIGKILL: no chance to flush or checkpoint.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A result row as `query` returns it, from its cells' text (none NULL).
pub fn row(cells: &[&str]) -> Vec<Option<String>> {
    cells.iter().map(|c| Some(c.to_string())).collect()
}

/// Runs statements with the simple protocol and returns the rows as text.
pub async fn query(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for m in client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}")) {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            out.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
        }
    }
    out
}

/// The SQLSTATE (and error) of a statement that must fail.
pub async fn sqlstate(
    client: &tokio_postgres::Client,
    sql: &str,
) -> (String, Option<tokio_postgres::error::ErrorPosition>) {
    match client.simple_query(sql).await {
        Ok(_) => panic!("expected {sql} to fail"),
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: not a server error: {e}"));
            (db.code().code().to_string(), db.position().cloned())
        }
    }
}

/// Runs `tests/python/<script>` with arguments (off the async runtime) and returns what it
/// printed; fails the test, showing its output, if it fails.
pub async fn python_output(script: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    python_run(script, &args).await
}

/// Runs `tests/python/<script>` with arguments (off the async runtime) and fails the test,
/// showing its output, if it fails.
pub async fn python(script: &str, args: &[String]) {
    python_run(script, args).await;
}

async fn python_run(script: &str, args: &[String]) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let args = args.to_vec();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").arg(&path).args(&args).output().expect("python3")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{script} failed (scripts/setup.sh --test installs the Python clients):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs kcat with `args`, feeding it `stdin`; (success, stdout, stderr).
pub fn kcat(args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/setup.sh)");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
