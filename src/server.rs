//! The server: opens the engine, listens, and shuts down cleanly on a signal.
//! One task per connection, capped by `max_connections`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::engine::{Engine, EngineConfig};
use crate::error::{EddyError, Result};
use crate::pgwire::{Handlers, PgServer, DATABASE};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub pg_listen: SocketAddr,
    pub kafka_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub max_connections: usize,
    pub allow_trust_anywhere: bool,
    pub kafka: crate::kafka::KafkaConfig,
    /// `name:password` lines; when set, Kafka clients must authenticate (SASL).
    pub users_file: Option<PathBuf>,
    pub query_memory_bytes: usize,
    pub checkpoint_interval: Duration,
}

/// Runs until `shutdown` resolves, then stops queries (state stays checkpointed).
pub async fn run(config: ServerConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    if !config.pg_listen.ip().is_loopback() && !config.allow_trust_anywhere {
        // Trust authentication (any user, no password) is only safe on loopback.
        return Err(EddyError::InvalidValue(format!(
            "refusing to listen on {} without passwords: trust authentication is allowed only on loopback (SCRAM users arrive with the Postgres-compatibility issue #5); pass --allow-trust-anywhere only inside a container published on loopback",
            config.pg_listen
        )));
    }
    let users = match &config.users_file {
        Some(path) => Some(Arc::new(crate::auth::Users::load(path).map_err(EddyError::InvalidValue)?)),
        None => None,
    };
    if !config.kafka_listen.ip().is_loopback() && !config.allow_trust_anywhere && users.is_none() {
        return Err(EddyError::InvalidValue(format!(
            "refusing to serve Kafka on {} without authentication; pass --users-file to require SASL, or use a loopback address",
            config.kafka_listen
        )));
    }
    let mut engine_config = EngineConfig::new(config.data_dir.clone());
    engine_config.query_memory_bytes = config.query_memory_bytes;
    engine_config.checkpoint_interval = config.checkpoint_interval;
    let engine = Engine::open(engine_config).await?;
    let listener = TcpListener::bind(config.pg_listen)
        .await
        .map_err(|e| EddyError::InvalidValue(format!("cannot listen on {}: {e}", config.pg_listen)))?;
    let addr = listener.local_addr().map_err(|e| EddyError::Internal(e.to_string()))?;
    let (kafka_listener, broker) =
        crate::kafka::bind(engine.log.clone(), engine.store.clone(), config.kafka.clone(), config.kafka_listen, users)
            .await
            .map_err(|e| EddyError::InvalidValue(format!("cannot listen on {} for Kafka: {e}", config.kafka_listen)))?;
    let kafka_addr = broker.advertised;
    let kafka_task = tokio::spawn(crate::kafka::serve(kafka_listener, broker));
    println!("Eddy is ready. Data in {}", config.data_dir.display());
    println!("  SQL:   psql -h {} -p {} -U eddy -d {DATABASE}", addr.ip(), addr.port());
    println!("  Kafka: kcat -b {kafka_addr} -L");
    println!("  (HTTP on {} arrives with a later release)", config.http_listen);

    let retention = {
        let log = engine.log.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let log = log.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || log.enforce_retention()).await {
                    tracing::warn!("retention: {e}");
                }
            }
        })
    };

    let server = PgServer::new(engine.clone());
    let permits = Arc::new(Semaphore::new(config.max_connections));
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
                tokio::spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
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
    drop(listener);
    let e = engine.clone();
    let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
    Ok(())
}
