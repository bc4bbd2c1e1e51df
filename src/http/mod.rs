//! The HTTP endpoint on `--http-listen`: Confluent's REST Proxy (v2 and v3, `rest_proxy`)
//! and ksqlDB's REST API (`ksql`), on axum over hyper. One port speaks HTTP/1.1 and HTTP/2
//! with prior knowledge (h2c), as ksqlDB's Java client uses it.
//!
//! Same users as the other endpoints: with passwords configured every request carries HTTP
//! Basic credentials (checked against the SCRAM verifiers); without, requests act as the
//! bootstrap superuser, and the listener must be on loopback.

mod consumers;
mod embedded;
mod ksql;
mod metrics;
mod rest_admin;
mod rest_proxy;
mod schema_registry;

use std::future::Future as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::engine::Engine;
use crate::kafka::Broker;

/// Whether the listeners speak HTTPS (`--tls-cert`): the links the APIs return say so.
pub(crate) static HTTPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The user a request acts as when no passwords are configured (loopback trust).
const TRUSTED_USER: &str = "eddy";

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Most bytes of one request body; more is refused with 413.
    pub max_body_bytes: usize,
    /// Most HTTP connections at once; more are closed at accept.
    pub max_connections: usize,
    /// A client that has not sent a whole request head in this long is disconnected.
    pub header_read_timeout: Duration,
    /// Most push queries (`/query`, `/query-stream`) open over HTTP at once.
    pub max_push_queries: usize,
    /// Most REST Proxy consumer instances at once.
    pub max_consumers: usize,
    /// A consumer instance unused this long is closed (kafka-rest's `consumer.instance.timeout.ms`).
    pub consumer_idle_timeout: Duration,
    /// A client that takes nothing of what it is sent for this long is disconnected, and a
    /// streamed answer it does not read ends.
    pub write_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 16 << 20,
            max_connections: 256,
            header_read_timeout: Duration::from_secs(30),
            max_push_queries: 64,
            max_consumers: 256,
            consumer_idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// What every handler reaches.
pub struct HttpState {
    pub engine: Arc<Engine>,
    pub broker: Arc<Broker>,
    pub config: HttpConfig,
    /// With passwords configured, requests must authenticate.
    pub auth_required: bool,
    /// Push queries running for HTTP clients, by query id (`/close-query` ends them).
    pub push_queries: ksql::PushQueries,
    /// The REST Proxy's consumer instances.
    pub consumers: consumers::Consumers,
    /// Basic credentials verified lately (user, SHA-256 of the password): a password check
    /// is a PBKDF2 run, too slow to repeat for every request.
    pub verified: std::sync::Mutex<std::collections::HashMap<(String, Vec<u8>), std::time::Instant>>,
}

/// How long a verified password is taken without checking it again.
const VERIFIED_FOR: Duration = Duration::from_secs(10);
/// Most remembered verifications (the map is cleared when full).
const MAX_VERIFIED: usize = 4_096;

impl HttpState {
    /// Whether `password` is `user`'s: from the recent verifications, else checked (off the
    /// async runtime) and remembered.
    async fn verify(self: &Arc<Self>, user: &str, password: &str) -> bool {
        let key =
            (user.to_string(), ring::digest::digest(&ring::digest::SHA256, password.as_bytes()).as_ref().to_vec());
        {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.get(&key).is_some_and(|at| at.elapsed() < VERIFIED_FOR) {
                return true;
            }
        }
        let state = self.clone();
        let (u, p) = (user.to_string(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || state.engine.users.verify(&u, &p)).await.unwrap_or(false);
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(key, std::time::Instant::now());
        }
        ok
    }
}

/// The authenticated (or trusted) user of a request, put there by `authenticate`.
#[derive(Clone, Debug)]
pub struct User(pub String);

/// Closes REST Proxy consumer instances idle past their timeout; runs for the server's life.
pub async fn expire_idle_consumers(state: Arc<HttpState>) {
    consumers::expire_idle(state).await
}

/// Binds the listener (so the caller can print its real address).
pub async fn bind(listen: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Every HTTP API on one port.
pub fn router(state: Arc<HttpState>) -> Router {
    let routes = Router::new()
        .merge(rest_proxy::routes())
        .merge(consumers::routes())
        .merge(rest_admin::routes())
        .merge(ksql::routes())
        .merge(schema_registry::routes())
        .route("/metrics", axum::routing::get(metrics::metrics));
    with_layers(routes, state)
}

/// The Schema Registry alone (`--schema-registry-listen`).
pub fn schema_registry_router(state: Arc<HttpState>) -> Router {
    with_layers(schema_registry::routes(), state)
}

fn with_layers(routes: Router<Arc<HttpState>>, state: Arc<HttpState>) -> Router {
    let limit = state.config.max_body_bytes;
    routes
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(count_requests))
        .with_state(state)
}

/// Serves connections until the task is aborted: one task per connection, at most
/// `max_connections` of them; over TLS when an acceptor is given (a client that has not
/// finished its handshake within the request-head timeout is dropped).
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, app: Router, tls: Option<pgwire::tokio::TlsAcceptor>) {
    if tls.is_some() {
        HTTPS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let permits = Arc::new(Semaphore::new(state.config.max_connections));
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(state.config.header_read_timeout);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(64).keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("http accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "refusing HTTP connection: {} connections open", state.config.max_connections);
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let tls = tls.clone();
        let handshake_timeout = state.config.header_read_timeout;
        let socket = WriteTimeout::new(socket, state.config.write_timeout);
        tokio::spawn(async move {
            let served = match tls {
                None => builder.serve_connection(TokioIo::new(socket), service).await,
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => builder.serve_connection(TokioIo::new(stream), service).await,
                    Ok(Err(e)) => Err(format!("TLS handshake: {e}").into()),
                    Err(_) => Err("TLS handshake timed out".into()),
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "http connection ended: {e}");
            }
            drop(permit);
        });
    }
}

/// A connection whose writes fail once the peer has taken nothing for `timeout`: a client
/// that stops reading cannot hold a connection (and what feeds it) forever.
struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Running while a write waits for the peer.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, timeout: Duration) -> WriteTimeout<S> {
        WriteTimeout { inner, timeout, stalled: None }
    }

    /// A write's outcome: progress resets the clock; waiting past the timeout is an error.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took nothing for {} ms", timeout.as_millis()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The sending half of a streamed answer (`streamed_answer`): each part waits at most the
/// write timeout for the client to take the ones before it.
pub struct AnswerSender {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    aborted: Arc<std::sync::atomic::AtomicBool>,
    timeout: Duration,
    gone: bool,
}

impl AnswerSender {
    /// Sends one part; `false` once the client is gone or has taken nothing for the timeout
    /// (an HTTP/2 stream it stopped reading): then the answer ends, as an error the client
    /// sees (never as a complete-looking answer with parts missing).
    pub async fn send(&mut self, part: Bytes) -> bool {
        if self.gone {
            return false;
        }
        match self.tx.send_timeout(part, self.timeout).await {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                tracing::info!(
                    "ending a streamed HTTP answer: its client took nothing for {} ms",
                    self.timeout.as_millis()
                );
                self.aborted.store(true, std::sync::atomic::Ordering::Relaxed);
                self.gone = true;
                false
            }
            Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => {
                self.gone = true;
                false
            }
        }
    }

    /// Whether the client went away or was given up on.
    pub fn is_gone(&self) -> bool {
        self.gone || self.tx.is_closed()
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A streamed answer's body and its sender (`capacity` parts in flight). The body ends
/// when the sender is dropped, with an error if the sender gave up on a slow client.
pub fn streamed_answer(capacity: usize, timeout: Duration) -> (AnswerSender, axum::body::Body) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(capacity);
    let aborted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = AnswerSender { tx, aborted: aborted.clone(), timeout, gone: false };
    let mut finished = false;
    let stream = futures::stream::poll_fn(move |cx| {
        if finished {
            return std::task::Poll::Ready(None);
        }
        match rx.poll_recv(cx) {
            std::task::Poll::Ready(Some(part)) => std::task::Poll::Ready(Some(Ok(part))),
            std::task::Poll::Ready(None) => {
                finished = true;
                if aborted.load(std::sync::atomic::Ordering::Relaxed) {
                    let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stopped reading the answer");
                    std::task::Poll::Ready(Some(Err(e)))
                } else {
                    std::task::Poll::Ready(None)
                }
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    });
    (sender, axum::body::Body::from_stream(stream))
}

/// Counts every answer by status class, and its time to the response head.
async fn count_requests(request: Request, next: Next) -> Response {
    let began = std::time::Instant::now();
    let response = next.run(request).await;
    let class = (response.status().as_u16() / 100) as usize;
    if let Some(n) = crate::metrics::HTTP_REQUESTS.get(class) {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    crate::metrics::HTTP_REQUEST_DURATION.observe(began.elapsed());
    response
}

/// Checks HTTP Basic credentials when passwords are configured; puts the user in the
/// request's extensions.
async fn authenticate(State(state): State<Arc<HttpState>>, mut request: Request, next: Next) -> Response {
    let user = if state.auth_required {
        let credentials = basic_credentials(request.headers().get(header::AUTHORIZATION));
        let verified = match &credentials {
            Some((user, password)) => state.verify(user, password).await,
            None => false,
        };
        match credentials {
            Some((user, _)) if verified => user,
            _ => {
                let mut response = error_response(
                    StatusCode::UNAUTHORIZED,
                    40101,
                    "Unauthorized: this server requires HTTP Basic authentication with a user and password",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"eddy\""));
                return response;
            }
        }
    } else {
        TRUSTED_USER.to_string()
    };
    request.extensions_mut().insert(User(user));
    next.run(request).await
}

fn basic_credentials(value: Option<&HeaderValue>) -> Option<(String, String)> {
    let text = value?.to_str().ok()?;
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `{"error_code": .., "message": ..}`: the error body both Confluent's REST Proxy and
/// ksqlDB answer with.
pub fn error_response(status: StatusCode, error_code: u32, message: &str) -> Response {
    let body = serde_json::json!({ "error_code": error_code, "message": message });
    json_response(status, "application/json", &body)
}

/// A JSON body with the given content type.
pub fn json_response(status: StatusCode, content_type: &'static str, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_read_as_rfc_7617_says() {
        let header = HeaderValue::from_static("Basic YWxpY2U6czNjcjN0OndpdGg6Y29sb25z");
        assert_eq!(basic_credentials(Some(&header)), Some(("alice".into(), "s3cr3t:with:colons".into())));
        assert_eq!(basic_credentials(Some(&HeaderValue::from_static("Bearer abc"))), None);
        assert_eq!(basic_credentials(Some(&HeaderValue::from_static("Basic !!!"))), None);
        assert_eq!(basic_credentials(None), None);
    }
}
