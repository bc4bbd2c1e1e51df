//! One Postgres connection's message loop: pgwire's `process_socket`, with the socket wrapped
//! in [`WriteTimeout`] so a client that stops reading (a stalled push query) is disconnected
//! after `--client-write-timeout-ms` instead of holding its query and buffers forever.
//! The loop is pgwire 0.42's own, built from its public pieces.
//!
//! Before authentication a client is a stranger: pgwire already refuses a start-up or
//! password message over 10,000 bytes (Postgres's `MAX_STARTUP_PACKET_LENGTH`) before
//! buffering it, and [`PreAuthLimit`] caps everything read until the session is admitted at
//! [`PRE_AUTH_BYTES`], so no other message type (a 1 GiB Query) is buffered either. A message
//! that breaks either bound, or does not decode, is answered with FATAL 08P01 (Postgres's
//! "invalid length of startup packet" for the start-up packet) and the connection closed.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use crate::net::WriteTimeout;

/// As pgwire: a client must finish start-up (and authentication) within a minute.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Most bytes read from a client before its session is admitted: a start-up packet (10,000 at
/// most) and a SCRAM exchange (two messages of a few hundred bytes; Postgres allows 65,535
/// each), with room to spare.
pub const PRE_AUTH_BYTES: usize = 256 << 10;

/// Whether a connection is still starting up or authenticating.
fn before_auth(state: PgWireConnectionState) -> bool {
    matches!(
        state,
        PgWireConnectionState::AwaitingSslRequest
            | PgWireConnectionState::AwaitingStartup
            | PgWireConnectionState::AuthenticationInProgress
    )
}

/// Serves one TCP connection until the client leaves, a fatal error, or a write timeout.
pub async fn process_socket<H: PgWireServerHandlers>(
    tcp: TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    handlers: H,
    write_timeout: Option<Duration>,
) -> std::io::Result<()> {
    let peer = tcp.peer_addr()?;
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        socket = negotiate_tls(tcp, tls) => socket?,
    };
    let Some(negotiated) = negotiated else { return Ok(()) };
    let old = negotiated.into_parts();
    let io = PreAuthLimit::new(WriteTimeout::new(old.io, write_timeout, peer, "Postgres"));
    let mut parts = FramedParts::new(io, old.codec);
    parts.read_buf = old.read_buf;
    parts.write_buf = old.write_buf;
    let mut socket = Framed::from_parts(parts);

    let startup_handler = handlers.startup_handler();
    let simple_query_handler = handlers.simple_query_handler();
    let extended_query_handler = handlers.extended_query_handler();
    let copy_handler = handlers.copy_handler();
    let cancel_handler = handlers.cancel_handler();
    let error_handler = handlers.error_handler();
    let socket = &mut socket;
    loop {
        let msg = if before_auth(socket.state()) {
            tokio::select! {
                _ = &mut startup_timeout => None,
                msg = socket.next() => msg,
            }
        } else {
            socket.get_mut().lift();
            socket.next().await
        };
        let msg = match msg {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                refuse(socket, e).await;
                break;
            }
            None => break,
        };
        // Terminate: the client is leaving; close (asyncpg waits for the server to hang up).
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let is_extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(is_extended_query) => is_extended_query,
            _ => msg.is_extended_query(),
        };
        let is_cancel_request = matches!(msg, PgWireFrontendMessage::CancelRequest(_));
        if let Err(mut e) = process_message(
            msg,
            socket,
            startup_handler.clone(),
            simple_query_handler.clone(),
            extended_query_handler.clone(),
            copy_handler.clone(),
            cancel_handler.clone(),
        )
        .await
        {
            error_handler.on_error(socket, &mut e);
            let is_fatal = e.is_fatal();
            process_error(socket, e, is_extended_query).await?;
            if is_fatal {
                break;
            }
        }
        if is_cancel_request {
            break;
        }
    }
    Ok(())
}

/// Answers a message that could not be read (too long, or not decodable) with Postgres's
/// FATAL 08P01, unless the socket itself failed.
async fn refuse<S>(socket: &mut S, e: PgWireError)
where
    S: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin,
{
    let message = match &e {
        PgWireError::IoError(io) if io.get_ref().is_some_and(|i| i.is::<PreAuthOverflow>()) => {
            format!("more than {PRE_AUTH_BYTES} bytes sent before authentication")
        }
        PgWireError::IoError(_) => return,
        PgWireError::MessageTooLarge(..) if matches!(socket.state(), PgWireConnectionState::AwaitingStartup) => {
            "invalid length of startup packet".to_string()
        }
        PgWireError::MessageTooLarge(max, len) => format!("invalid message length {len} (at most {max} bytes here)"),
        other => format!("invalid message: {other}"),
    };
    tracing::warn!(peer = %socket.socket_addr(), "closing Postgres connection: {message}");
    let info = ErrorInfo::new("FATAL".into(), "08P01".into(), message);
    let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
}

/// The reason a read failed when a client sent more than [`PRE_AUTH_BYTES`] unauthenticated.
#[derive(Debug)]
struct PreAuthOverflow;

impl std::fmt::Display for PreAuthOverflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {PRE_AUTH_BYTES} bytes before authentication")
    }
}

impl std::error::Error for PreAuthOverflow {}

/// Caps the bytes read from a stream until [`PreAuthLimit::lift`]; past the cap a read fails
/// (with [`PreAuthOverflow`]), so nothing more is buffered. Writes pass through.
pub struct PreAuthLimit<S> {
    inner: S,
    /// Bytes still allowed; None once lifted.
    remaining: Option<usize>,
}

impl<S> PreAuthLimit<S> {
    pub fn new(inner: S) -> Self {
        PreAuthLimit { inner, remaining: Some(PRE_AUTH_BYTES) }
    }

    /// The client has authenticated: the usual message limits apply from now on.
    pub fn lift(&mut self) {
        self.remaining = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PreAuthLimit<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(remaining) = this.remaining else { return Pin::new(&mut this.inner).poll_read(cx, buf) };
        if remaining == 0 {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, PreAuthOverflow)));
        }
        // Read into at most `remaining` bytes of the caller's buffer (zeroed first: safe code).
        let room = remaining.min(buf.remaining());
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room));
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        buf.advance(n);
        this.remaining = Some(remaining - n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreAuthLimit<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{PreAuthLimit, PreAuthOverflow, PRE_AUTH_BYTES};

    #[tokio::test]
    async fn reads_stop_at_the_cap_until_lifted() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&vec![7u8; PRE_AUTH_BYTES + 10]).await.unwrap();
        let mut limited = PreAuthLimit::new(server);
        let mut got = vec![0u8; PRE_AUTH_BYTES];
        limited.read_exact(&mut got).await.unwrap();
        let e = limited.read_u8().await.unwrap_err();
        assert!(e.get_ref().is_some_and(|i| i.is::<PreAuthOverflow>()), "{e}");
        limited.lift();
        let mut rest = [0u8; 10];
        limited.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, [7u8; 10]);
    }
}
