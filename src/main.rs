//! `eddy`: the command line. Config is parsed and validated here, then handed to the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "eddy",
    version,
    about = "Eddy: a SQL-first streaming database (Kafka-style log, continuous SQL, Postgres wire)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server: the durable log, continuous queries, and the Postgres-wire endpoint.
    Server(ServerArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where topics, state and the catalog live.
    #[arg(long, env = "EDDY_DATA_DIR", default_value = "./eddy-data")]
    data_dir: PathBuf,
    /// Postgres-protocol listen address (psql, drivers, sqllogictest).
    #[arg(long, env = "EDDY_PG_LISTEN", default_value = "127.0.0.1:5433")]
    pg_listen: SocketAddr,
    /// Kafka-protocol listen address (librdkafka, kcat, confluent-kafka, kafka-python).
    #[arg(long, env = "EDDY_KAFKA_LISTEN", default_value = "127.0.0.1:9092")]
    kafka_listen: SocketAddr,
    /// HTTP listen address: Confluent's REST Proxy (v2, v3) and ksqlDB's REST API, HTTP/1.1
    /// and h2c on one port.
    #[arg(long, env = "EDDY_HTTP_LISTEN", default_value = "127.0.0.1:8082")]
    http_listen: SocketAddr,
    /// Also serve the Schema Registry on this address (it is always on --http-listen too).
    #[arg(long, env = "EDDY_SCHEMA_REGISTRY_LISTEN")]
    schema_registry_listen: Option<SocketAddr>,
    /// Most bytes of one HTTP request body; larger requests get 413.
    #[arg(long, env = "EDDY_HTTP_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    http_max_body_bytes: usize,
    /// Most push queries HTTP clients may run at once (/query, /query-stream).
    #[arg(long, env = "EDDY_HTTP_MAX_PUSH_QUERIES", default_value_t = 64)]
    http_max_push_queries: usize,
    /// Most REST Proxy consumer instances at once (more are refused with 429).
    #[arg(long, env = "EDDY_HTTP_MAX_CONSUMERS", default_value_t = 256)]
    http_max_consumers: usize,
    /// A REST Proxy consumer instance unused this long is closed, as kafka-rest's
    /// consumer.instance.timeout.ms (later calls get 40403).
    #[arg(long, env = "EDDY_HTTP_CONSUMER_IDLE_MS", default_value_t = 300_000)]
    http_consumer_idle_ms: u64,
    /// Most client connections at once; more are refused.
    #[arg(long, env = "EDDY_MAX_CONNECTIONS", default_value_t = 256)]
    max_connections: usize,
    /// Most bytes one pull query or bounded scan may load.
    #[arg(long, env = "EDDY_QUERY_MEMORY_BYTES", default_value_t = 256 << 20)]
    query_memory_bytes: usize,
    /// Allow passwordless (trust) connections on a non-loopback address. Only for
    /// containers whose port is published on the host's loopback; never on a shared network.
    #[arg(long, env = "EDDY_ALLOW_TRUST_ANYWHERE", default_value_t = false)]
    allow_trust_anywhere: bool,
    /// Create unknown topics on Kafka Metadata and Produce requests (Kafka's default).
    #[arg(long, env = "EDDY_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Partitions of topics created without a count (Kafka's num.partitions).
    #[arg(long, env = "EDDY_DEFAULT_PARTITIONS", default_value_t = 1)]
    default_partitions: i32,
    /// Users (`name:password` per line). With it, Kafka clients must authenticate with SASL
    /// PLAIN or SCRAM-SHA-256/512.
    #[arg(long, env = "EDDY_USERS_FILE")]
    users_file: Option<PathBuf>,
    /// A file holding the bootstrap superuser `eddy`'s password (or set EDDY_PASSWORD).
    /// With a password every Postgres and Kafka client must authenticate (SCRAM-SHA-256).
    #[arg(long, env = "EDDY_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// PEM certificate (chain) for TLS on the Postgres endpoint (with --tls-key).
    #[arg(long, env = "EDDY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "EDDY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Connection slots kept for superusers (Postgres's superuser_reserved_connections).
    #[arg(long, env = "EDDY_SUPERUSER_RESERVED_CONNECTIONS", default_value_t = 3)]
    superuser_reserved_connections: usize,
    /// Most cursors (DECLARE CURSOR, push or pull) and partly fetched portals one Postgres
    /// connection may hold open; more fail with SQLSTATE 53400.
    #[arg(long, env = "EDDY_MAX_CURSORS_PER_CONNECTION", default_value_t = eddy::pgwire::DEFAULT_MAX_CURSORS_PER_CONNECTION)]
    max_cursors_per_connection: usize,
    /// Most rows a pull query may return (0: no limit); more fail with SQLSTATE 54000.
    #[arg(long, env = "EDDY_MAX_RESULT_ROWS", default_value_t = 1_000_000)]
    max_result_rows: usize,
    /// Default statement timeout of pull queries, in milliseconds (0: none); sessions change
    /// it with SET statement_timeout.
    #[arg(long, env = "EDDY_STATEMENT_TIMEOUT_MS", default_value_t = 0)]
    statement_timeout_ms: u64,
    /// How often a busy continuous query checkpoints, in milliseconds.
    #[arg(long, env = "EDDY_CHECKPOINT_INTERVAL_MS", default_value_t = 200)]
    checkpoint_interval_ms: u64,
    /// A source partition with nothing to read for this many milliseconds no longer holds
    /// back its query's watermark (windows close and lateness is judged on the smallest event
    /// time of the partitions that do), so an idle partition cannot stall windows forever.
    #[arg(long, env = "EDDY_IDLE_PARTITION_TIMEOUT_MS", default_value_t = 1000)]
    idle_partition_timeout_ms: u64,
    /// Threads one continuous query may use. With 2 or more, a query over one stream or
    /// table reads and decodes its input on a thread of its own, and an aggregation splits
    /// its groups by key over this many threads; checkpoints stay one atomic write. 1 runs
    /// each query on one thread. Default: the machine's cores, at most 4.
    #[arg(long, env = "EDDY_QUERY_THREADS", default_value_t = eddy::dataflow::default_query_threads(), value_parser = clap::value_parser!(u16).range(1..=64))]
    query_threads: u16,
    /// With --query-threads above 1, an aggregation splits a batch over its threads only
    /// from this many rows on (smaller batches cost more to hand out than to fold).
    #[arg(long, env = "EDDY_QUERY_PARALLEL_MIN_ROWS", default_value_t = eddy::dataflow::DEFAULT_PARALLEL_MIN_ROWS)]
    query_parallel_min_rows: usize,
    /// CPU priority (nice value, 0–19) of continuous and push query threads (state backups
    /// always run at 19). Above 0, client sessions and Kafka requests come first when the cores are
    /// busy, and a query that falls behind shows its lag in SHOW QUERIES; with idle cores it
    /// changes nothing. On a machine shared with other busy programs, 0 keeps queries level
    /// with them.
    #[arg(long, env = "EDDY_QUERY_NICE", default_value_t = 19, value_parser = clap::value_parser!(i32).range(0..=19))]
    query_nice: i32,
    /// Close a Postgres, Kafka or HTTP connection whose socket write has made no progress for
    /// this many milliseconds, and end a streamed HTTP answer its client has taken nothing of
    /// for as long (the client stopped reading; 0: never).
    #[arg(long, env = "EDDY_CLIENT_WRITE_TIMEOUT_MS", default_value_t = 30_000)]
    client_write_timeout_ms: u64,
    /// Most Kafka-protocol connections open at once; more are closed on accept, with a log line.
    #[arg(long, env = "EDDY_KAFKA_MAX_CONNECTIONS", default_value_t = 1024)]
    kafka_max_connections: usize,
    /// Take a backup of the state store this often while it changes, in seconds (0: only at
    /// start and after DDL). A damaged store is replaced by the newest good backup at start.
    #[arg(long, env = "EDDY_STATE_BACKUP_INTERVAL_SECS", default_value_t = 300)]
    state_backup_interval_secs: u64,
    /// State store backups kept in <data-dir>/state-backups (0: none, and no fall-back).
    #[arg(long, env = "EDDY_STATE_BACKUPS", default_value_t = 3)]
    state_backups: usize,
}

fn main() -> anyhow_free::Result {
    eddy::alloc::tune();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("EDDY_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Server(args) => {
            let password = match (&args.password_file, std::env::var("EDDY_PASSWORD")) {
                (Some(path), _) => {
                    let text =
                        std::fs::read_to_string(path).map_err(|e| format!("password file {}: {e}", path.display()))?;
                    Some(text.trim_end_matches(['\n', '\r']).to_string())
                }
                (None, Ok(p)) if !p.is_empty() => Some(p),
                _ => None,
            };
            if password.as_deref() == Some("") {
                return Err("the password file is empty".into());
            }
            let config = eddy::server::ServerConfig {
                data_dir: args.data_dir,
                pg_listen: args.pg_listen,
                kafka_listen: args.kafka_listen,
                http_listen: args.http_listen,
                schema_registry_listen: args.schema_registry_listen,
                http: eddy::http::HttpConfig {
                    max_body_bytes: args.http_max_body_bytes.max(1),
                    max_push_queries: args.http_max_push_queries,
                    max_consumers: args.http_max_consumers,
                    consumer_idle_timeout: std::time::Duration::from_millis(args.http_consumer_idle_ms.max(1000)),
                    // 0: never (a day is as good).
                    write_timeout: std::time::Duration::from_millis(match args.client_write_timeout_ms {
                        0 => 86_400_000,
                        ms => ms,
                    }),
                    ..eddy::http::HttpConfig::default()
                },
                max_connections: args.max_connections.max(1),
                allow_trust_anywhere: args.allow_trust_anywhere,
                users_file: args.users_file,
                password,
                tls: args.tls_cert.zip(args.tls_key),
                superuser_reserved_connections: args.superuser_reserved_connections,
                max_cursors_per_connection: args.max_cursors_per_connection.max(1),
                max_result_rows: args.max_result_rows,
                statement_timeout: (args.statement_timeout_ms > 0)
                    .then(|| Duration::from_millis(args.statement_timeout_ms)),
                kafka: eddy::kafka::KafkaConfig {
                    auto_create_topics: args.auto_create_topics,
                    default_partitions: args.default_partitions.clamp(1, 10_000),
                    max_connections: args.kafka_max_connections.max(1),
                    ..Default::default()
                },
                query_memory_bytes: args.query_memory_bytes,
                checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms.clamp(10, 60_000)),
                query_nice: args.query_nice,
                idle_partition_timeout: Duration::from_millis(args.idle_partition_timeout_ms.min(86_400_000)),
                query_threads: usize::from(args.query_threads),
                query_parallel_min_rows: args.query_parallel_min_rows.max(1),
                backups: eddy::state::backup::BackupConfig {
                    interval: (args.state_backup_interval_secs > 0)
                        .then(|| Duration::from_secs(args.state_backup_interval_secs)),
                    keep: args.state_backups,
                    ..Default::default()
                },
                client_write_timeout: (args.client_write_timeout_ms > 0)
                    .then(|| Duration::from_millis(args.client_write_timeout_ms)),
            };
            // Blocking threads run log appends and fsyncs: a bounded pool, whose idle threads (and
            // the memory their allocator heaps hold) go after a few seconds.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(64)
                // Planning and evaluating an expression recurses once per operator (see
                // sql::MAX_OPERATORS); the pages are only touched when used.
                .thread_stack_size(eddy::sql::THREAD_STACK_BYTES)
                .thread_keep_alive(Duration::from_secs(3))
                .on_thread_park(eddy::alloc::release_when_idle)
                .build()?;
            if let Err(e) = runtime.block_on(eddy::server::run(config, shutdown_signal())) {
                eprintln!("eddy: {e}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `main`'s error: printed once, exit code 1.
mod anyhow_free {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
