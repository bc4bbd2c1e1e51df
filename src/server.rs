//! The server: opens the engine, listens, and shuts down cleanly on a signal.
//! One task per connection, capped by `max_connections`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::engine::{Engine, EngineConfig};
use crate::error::{EddyError, Result};
use crate::pgwire::{Handlers, PgOptions, PgServer, DATABASE};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub pg_listen: SocketAddr,
    pub kafka_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// A second port for the Schema Registry alone (clients' configs often say 8081).
    pub schema_registry_listen: Option<SocketAddr>,
    /// Limits of the HTTP endpoint.
    pub http: crate::http::HttpConfig,
    pub max_connections: usize,
    pub allow_trust_anywhere: bool,
    pub kafka: crate::kafka::KafkaConfig,
    /// `name:password` lines; when set, clients must authenticate (SASL, SCRAM).
    pub users_file: Option<PathBuf>,
    /// The bootstrap superuser `eddy`'s password; when set, clients must authenticate.
    pub password: Option<String>,
    /// PEM certificate chain and private key: the Postgres endpoint offers TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Connection slots only superusers may take (Postgres's superuser_reserved_connections).
    pub superuser_reserved_connections: usize,
    /// Most cursors and partly fetched portals one Postgres connection may hold.
    pub max_cursors_per_connection: usize,
    pub query_memory_bytes: usize,
    /// Most rows a pull query may return (0: no limit).
    pub max_result_rows: usize,
    /// Default statement timeout for pull queries.
    pub statement_timeout: Option<Duration>,
    pub checkpoint_interval: Duration,
    /// Nice value of query threads (0: the server's own priority).
    pub query_nice: i32,
    /// See `RuntimeConfig::idle_partition_timeout`.
    pub idle_partition_timeout: Duration,
    /// See `RuntimeConfig::query_threads`.
    pub query_threads: usize,
    /// See `RuntimeConfig::parallel_min_rows`.
    pub query_parallel_min_rows: usize,
    /// Backups of the state store.
    pub backups: crate::state::backup::BackupConfig,
    /// A connection (Postgres or Kafka) whose socket write has not progressed for this long
    /// is closed: the client stopped reading. None: wait forever.
    pub client_write_timeout: Option<Duration>,
}

/// A TLS acceptor from PEM files (rustls with ring, as pgwire uses it), offering the ALPN
/// protocols given (HTTP's `h2` and `http/1.1`; none for Postgres).
fn tls_acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<pgwire::tokio::TlsAcceptor> {
    use pgwire::tokio::tokio_rustls::rustls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: String| EddyError::InvalidValue(format!("TLS {what}: {e}"));
    let cert_pem = std::fs::read(cert).map_err(|e| bad(&cert.display().to_string(), e.to_string()))?;
    let key_pem = std::fs::read(key).map_err(|e| bad(&key.display().to_string(), e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("certificate", format!("no certificate in {}", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad("key", e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("config", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate and key", e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

/// Runs until `shutdown` resolves, then stops queries (state stays checkpointed).
pub async fn run(config: ServerConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    // With a password (or a users file) every client authenticates; without, trust is
    // allowed only on loopback.
    let auth_required = config.password.is_some() || config.users_file.is_some();
    if !config.pg_listen.ip().is_loopback() && !config.allow_trust_anywhere && !auth_required {
        return Err(EddyError::InvalidValue(format!(
            "refusing to listen on {} without passwords: trust authentication is allowed only on loopback; set EDDY_PASSWORD (or --password-file) to require SCRAM passwords, or pass --allow-trust-anywhere only inside a container published on loopback",
            config.pg_listen
        )));
    }
    if !config.kafka_listen.ip().is_loopback() && !config.allow_trust_anywhere && !auth_required {
        return Err(EddyError::InvalidValue(format!(
            "refusing to serve Kafka on {} without authentication; set EDDY_PASSWORD or pass --users-file to require SASL, or use a loopback address",
            config.kafka_listen
        )));
    }
    if !config.http_listen.ip().is_loopback() && !config.allow_trust_anywhere && !auth_required {
        return Err(EddyError::InvalidValue(format!(
            "refusing to serve HTTP on {} without authentication; set EDDY_PASSWORD or pass --users-file to require HTTP Basic passwords, or use a loopback address",
            config.http_listen
        )));
    }
    if config.superuser_reserved_connections >= config.max_connections {
        return Err(EddyError::InvalidValue(format!(
            "--superuser-reserved-connections ({}) must be less than --max-connections ({})",
            config.superuser_reserved_connections, config.max_connections
        )));
    }
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key, &[])?),
        None => None,
    };
    let mut engine_config = EngineConfig::new(config.data_dir.clone());
    engine_config.query_memory_bytes = config.query_memory_bytes;
    engine_config.checkpoint_interval = config.checkpoint_interval;
    engine_config.query_nice = config.query_nice;
    engine_config.idle_partition_timeout = config.idle_partition_timeout;
    engine_config.query_threads = config.query_threads;
    engine_config.query_parallel_min_rows = config.query_parallel_min_rows;
    engine_config.max_result_rows = config.max_result_rows;
    engine_config.statement_timeout = config.statement_timeout;
    engine_config.backups = config.backups.clone();
    let engine = Engine::open(engine_config).await?;
    if let Some(path) = &config.users_file {
        engine.users.load_file(path).map_err(EddyError::InvalidValue)?;
    }
    if let Some(password) = &config.password {
        engine.users.bootstrap(password);
    }
    let listener = TcpListener::bind(config.pg_listen)
        .await
        .map_err(|e| EddyError::InvalidValue(format!("cannot listen on {}: {e}", config.pg_listen)))?;
    let addr = listener.local_addr().map_err(|e| EddyError::Internal(e.to_string()))?;
    let users = auth_required.then(|| engine.users.clone());
    let mut kafka_config = config.kafka.clone();
    kafka_config.write_timeout = config.client_write_timeout;
    let (kafka_listener, broker) =
        crate::kafka::bind(engine.log.clone(), engine.store.clone(), kafka_config, config.kafka_listen, users)
            .await
            .map_err(|e| EddyError::InvalidValue(format!("cannot listen on {} for Kafka: {e}", config.kafka_listen)))?;
    let kafka_addr = broker.advertised;
    // With --tls-cert the HTTP listeners speak HTTPS only (ALPN h2 and http/1.1).
    let http_tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key, &[b"h2", b"http/1.1"])?),
        None => None,
    };
    let scheme = if http_tls.is_some() { "https" } else { "http" };
    let (http_listener, http_addr) = crate::http::bind(config.http_listen)
        .await
        .map_err(|e| EddyError::InvalidValue(format!("cannot listen on {} for HTTP: {e}", config.http_listen)))?;
    let http_state = Arc::new(crate::http::HttpState {
        engine: engine.clone(),
        broker: broker.clone(),
        config: crate::http::HttpConfig { max_connections: config.max_connections, ..config.http.clone() },
        auth_required,
        push_queries: Default::default(),
        consumers: Default::default(),
        verified: Default::default(),
    });
    let registry_task = match config.schema_registry_listen {
        Some(addr) => {
            if !addr.ip().is_loopback() && !config.allow_trust_anywhere && !auth_required {
                return Err(EddyError::InvalidValue(format!(
                    "refusing to serve the Schema Registry on {addr} without authentication; set EDDY_PASSWORD or use a loopback address"
                )));
            }
            let (listener, bound) = crate::http::bind(addr).await.map_err(|e| {
                EddyError::InvalidValue(format!("cannot listen on {addr} for the Schema Registry: {e}"))
            })?;
            let app = crate::http::schema_registry_router(http_state.clone());
            Some((bound, tokio::spawn(crate::http::serve(listener, http_state.clone(), app, http_tls.clone()))))
        }
        None => None,
    };
    let app = crate::http::router(http_state.clone());
    let consumer_reaper = tokio::spawn(crate::http::expire_idle_consumers(http_state.clone()));
    let http_task = tokio::spawn(crate::http::serve(http_listener, http_state, app, http_tls));
    let kafka_task = tokio::spawn(crate::kafka::serve(kafka_listener, broker));
    println!("Eddy is ready. Data in {}", config.data_dir.display());
    println!("  SQL:   psql -h {} -p {} -U eddy -d {DATABASE}", addr.ip(), addr.port());
    if auth_required {
        println!("  (passwords required: SCRAM-SHA-256{})", if tls.is_some() { "; TLS offered" } else { "" });
    }
    println!("  Kafka: kcat -b {kafka_addr} -L");
    if let Some((addr, _)) = &registry_task {
        println!("  Schema Registry alone: {scheme}://{addr}");
    }
    println!("  HTTP:  curl {scheme}://{http_addr}/info   (REST Proxy, ksqlDB's REST API, Schema Registry, /metrics)");

    let retention = {
        let log = engine.log.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let log = log.clone();
                let cleaned = move || {
                    let deleted = log.enforce_retention();
                    log.compact_all();
                    deleted
                };
                if let Ok(Err(e)) = tokio::task::spawn_blocking(cleaned).await {
                    tracing::warn!("retention: {e}");
                }
            }
        })
    };

    let server = PgServer::with_options(
        engine.clone(),
        PgOptions {
            auth_required,
            max_connections: config.max_connections,
            superuser_reserved_connections: config.superuser_reserved_connections,
            max_cursors_per_connection: config.max_cursors_per_connection,
        },
    );
    // Sessions are admitted (or refused with 53300) at start-up; this caps sockets still
    // negotiating, so a flood cannot exhaust memory.
    let permits = Arc::new(Semaphore::new(config.max_connections + 64));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "refusing connection: {} connections open", config.max_connections);
                    drop(socket);
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let handlers = Handlers(server.clone());
                let tls = tls.clone();
                let write_timeout = config.client_write_timeout;
                tokio::spawn(async move {
                    let _open = crate::metrics::Open::new(&crate::metrics::PG_CONNECTIONS);
                    if let Err(e) = crate::pgwire::process_socket(socket, tls, handlers, write_timeout).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    drop(permit);
                });
            }
        }
    }
    println!("Eddy is shutting down");
    retention.abort();
    kafka_task.abort();
    http_task.abort();
    consumer_reaper.abort();
    if let Some((_, t)) = registry_task {
        t.abort();
    }
    drop(listener);
    let e = engine.clone();
    let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
    Ok(())
}
