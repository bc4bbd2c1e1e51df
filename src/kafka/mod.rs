//! The Kafka-protocol server: librdkafka, kcat, confluent-kafka and kafka-python talk to the
//! built-in log through it. Messages are decoded and encoded by the `kafka-protocol` crate
//! (generated from Kafka's own schemas); this module keeps to framing, dispatch, semantics
//! and storage. Record batches are stored and served byte for byte.
//!
//! One task per connection (capped), requests answered in order. A frame whose length is
//! negative or over `max_request_bytes` closes the connection before anything is allocated;
//! so does a request that does not decode. Until a connection has authenticated (when SASL
//! is on), frames are capped at [`SASL_MAX_RECEIVE_BYTES`]; and a frame's buffer grows with
//! the bytes that arrive, never to its declared length up front. The server never panics on
//! client input.

pub mod consumer_protocol;
pub mod decode;
pub mod error;
pub mod group;
mod handlers;
mod producer;
mod sasl;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

use crate::log::{Log, TopicConfig};
use crate::net::WriteTimeout;
use crate::state::StateStore;

/// Kafka's `sasl.server.max.receive.size`: the largest frame a connection may send before it
/// has authenticated, so a stranger cannot make the server hold `max_request_bytes`.
pub const SASL_MAX_RECEIVE_BYTES: usize = 512 << 10;

/// A frame's buffer starts at most this big and doubles as bytes arrive.
const FRAME_CHUNK_BYTES: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `auto.create.topics.enable`: Metadata and Produce create unknown topics.
    pub auto_create_topics: bool,
    /// `num.partitions` for auto-created topics.
    pub default_partitions: i32,
    /// `socket.request.max.bytes`.
    pub max_request_bytes: usize,
    pub max_connections: usize,
    /// Close a connection whose response write has not progressed for this long.
    pub write_timeout: Option<Duration>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            auto_create_topics: true,
            default_partitions: 1,
            max_request_bytes: 100 << 20,
            max_connections: 1024,
            write_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Shared by every connection.
pub struct Broker {
    pub log: Arc<Log>,
    pub store: StateStore,
    pub config: KafkaConfig,
    pub coordinator: Arc<group::Coordinator>,
    pub producers: producer::ProducerStates,
    /// Woken on every append or publish, for long-polling Fetch.
    pub appended: Arc<Notify>,
    /// Host and port clients are told to connect to.
    pub advertised: SocketAddr,
    /// With users configured, every connection must authenticate with SASL first.
    pub users: Option<Arc<crate::auth::Users>>,
}

impl Broker {
    pub fn topic_config(&self, partitions: i32) -> TopicConfig {
        TopicConfig { partitions, ..TopicConfig::default() }
    }
}

/// Binds the listener (so the caller can print its real address) and returns the broker.
pub async fn bind(
    log: Arc<Log>,
    store: StateStore,
    config: KafkaConfig,
    listen: SocketAddr,
    users: Option<Arc<crate::auth::Users>>,
) -> std::io::Result<(TcpListener, Arc<Broker>)> {
    let listener = TcpListener::bind(listen).await?;
    let advertised = listener.local_addr()?;
    let appended = Arc::new(Notify::new());
    let wake = appended.clone();
    log.notifier.subscribe(Box::new(move || wake.notify_waiters()));
    let producers = {
        let log = log.clone();
        let store = store.clone();
        tokio::task::spawn_blocking(move || producer::ProducerStates::recover(&log, &store))
            .await
            .map_err(std::io::Error::other)??
    };
    let broker = Arc::new(Broker {
        log,
        store,
        config,
        coordinator: group::Coordinator::new(),
        producers,
        appended,
        advertised,
        users,
    });
    let coordinator = broker.coordinator.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            coordinator.tick().await;
        }
    });
    Ok((listener, broker))
}

/// Accepts connections until the listener is dropped with the task.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    let permits = Arc::new(Semaphore::new(broker.config.max_connections));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("kafka accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                %peer,
                "refusing Kafka connection: {} connections open (--kafka-max-connections)",
                broker.config.max_connections
            );
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let broker = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(socket, peer, broker).await {
                tracing::debug!(%peer, "kafka connection closed: {e}");
            }
            drop(permit);
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(String),
}

/// One client connection: read a frame, answer it, repeat.
async fn connection(socket: TcpStream, peer: SocketAddr, broker: Arc<Broker>) -> Result<(), ConnError> {
    // At most one response is buffered per connection (written before the next request is
    // read); a client that stops reading is closed after the write timeout.
    let mut socket = WriteTimeout::new(socket, broker.config.write_timeout, peer, "Kafka");
    let _open = crate::metrics::Open::new(&crate::metrics::KAFKA_CONNECTIONS);
    let mut len_buf = [0u8; 4];
    let mut session = sasl::Session::new(broker.users.is_none());
    loop {
        match socket.read_exact(&mut len_buf).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let len = i32::from_be_bytes(len_buf);
        let max = if session.authenticated() {
            broker.config.max_request_bytes
        } else {
            broker.config.max_request_bytes.min(SASL_MAX_RECEIVE_BYTES)
        };
        // A bare SASL token (after SaslHandshake v0) has no request header; a PLAIN one
        // can be a few bytes.
        let min = if session.raw_tokens() { 1 } else { 8 };
        if len < min || len as usize > max {
            if !session.authenticated() && len as usize > max {
                tracing::warn!(
                    %peer,
                    "closing Kafka connection: a {len}-byte request before SASL authentication (at most {max}, sasl.server.max.receive.size)"
                );
            }
            return Err(ConnError::Frame(format!("request length {len} outside {min}..={max}")));
        }
        let frame = read_frame(&mut socket, len as usize).await?;
        crate::metrics::KAFKA_BYTES_IN.fetch_add(len as u64 + 4, std::sync::atomic::Ordering::Relaxed);
        if session.raw_tokens() {
            // After SaslHandshake v0, SASL tokens come as bare length-prefixed frames.
            let reply = session.raw_step(&broker, &frame).map_err(ConnError::Frame)?;
            socket.write_all(&(reply.len() as i32).to_be_bytes()).await?;
            socket.write_all(&reply).await?;
            continue;
        }
        let response = handle_frame(frame, peer, &broker, &mut session).await?;
        if let Some(bytes) = response {
            crate::metrics::KAFKA_BYTES_OUT.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            socket.write_all(&bytes).await?;
        }
        if session.failed() {
            return Err(ConnError::Frame("SASL authentication failed".into()));
        }
    }
}

/// Reads a frame of `len` bytes. Its buffer doubles as the bytes arrive (exactly, never past
/// `len`), so a length prefix alone reserves nothing: memory follows what the client sent.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(socket: &mut R, len: usize) -> std::io::Result<Bytes> {
    let mut frame = Vec::new();
    while frame.len() < len {
        if frame.len() == frame.capacity() {
            let grow = frame.capacity().max(FRAME_CHUNK_BYTES).min(len - frame.len());
            frame.reserve_exact(grow);
        }
        let room = (frame.capacity() - frame.len()).min(len - frame.len());
        if (&mut *socket).take(room as u64).read_buf(&mut frame).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(Bytes::from(frame))
}

async fn handle_frame(
    mut frame: Bytes,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    session: &mut sasl::Session,
) -> Result<Option<Bytes>, ConnError> {
    let start = decode::frame_start(&frame).map_err(ConnError::Frame)?;
    let (key, api_version) = (start.key, start.version);
    let sasl_api = matches!(key, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
    if !session.authenticated() && !sasl_api {
        return Err(ConnError::Frame(format!("{key:?} before SASL authentication")));
    }
    if key == ApiKey::ApiVersions && !handlers::supported(key, api_version) {
        // KIP-511: answer an unknown ApiVersions version in v0 with the supported ranges.
        let body = handlers::api_versions_response(error::UNSUPPORTED_VERSION);
        return Ok(Some(encode_response(start.correlation_id, key, 0, &body)?));
    }
    if !handlers::supported(key, api_version) {
        return Err(ConnError::Frame(format!("{key:?} v{api_version} is not supported")));
    }
    let header = decode::header(&mut frame, &start).map_err(ConnError::Frame)?;
    if matches!(key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
        return session.handle(broker, key, api_version, start.correlation_id, frame).map(Some);
    }
    let principal = session.user().map(str::to_string);
    let ctx = handlers::Ctx { broker: broker.clone(), version: api_version, header, peer, principal };
    let began = std::time::Instant::now();
    let response = handlers::dispatch(key, ctx, frame).await;
    crate::metrics::kafka_request(key as i16, began.elapsed());
    response
}

/// Frames a response: length, header (in the version the API and version call for), body.
pub(crate) fn encode_response<M: Encodable>(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    body: &M,
) -> Result<Bytes, ConnError> {
    let header_version = if key == ApiKey::ApiVersions { 0 } else { key.response_header_version(version) };
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, header_version).map_err(|e| ConnError::Frame(format!("encode header: {e}")))?;
    body.encode(&mut buf, version).map_err(|e| ConnError::Frame(format!("encode {key:?} v{version}: {e}")))?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    /// The fuzz target's property on a deterministic stream of inputs: valid request
    /// prefixes followed by junk, for every served API and version. Never a panic.
    #[test]
    fn request_decoder_survives_junk() {
        let mut seed: u64 = 7;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for (key, lo, hi) in super::decode::VERSIONS {
            for v in *lo..=*hi {
                for len in [0usize, 1, 3, 8, 17, 64, 300] {
                    let mut frame = Vec::new();
                    frame.extend_from_slice(&(*key as i16).to_be_bytes());
                    frame.extend_from_slice(&v.to_be_bytes());
                    frame.extend_from_slice(&1i32.to_be_bytes());
                    frame.extend((0..len).map(|_| next() as u8));
                    let _ = super::decode::decode_request(&frame);
                }
            }
        }
    }

    /// Found by cargo fuzz: ListGroups v4 whose states array claims 2^32 entries made
    /// kafka-protocol reserve ~50 GiB and abort the process.
    #[test]
    fn regression_huge_array_length_does_not_abort() {
        let frame = [0u8, 16, 0, 4, 183, 179, 179, 90, 0, 0, 0, 255, 255, 255, 255, 133];
        assert!(super::decode::decode_request(&frame).is_err());
    }
}
