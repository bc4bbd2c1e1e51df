//! Stalled-client protection shared by the Postgres and Kafka servers.
//!
//! [`WriteTimeout`] wraps a connection's stream: when a write (or flush) has made no progress
//! for the configured time — the client stopped reading, its receive window and our send
//! buffer are full — the write fails with `TimedOut`, a warning is logged, and every later
//! write fails at once, so the connection task ends and frees its buffers (and a push query's
//! thread, whose channel closes). Reads pass through untouched: an idle client is not stalled.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub struct WriteTimeout<S> {
    inner: S,
    timeout: Option<Duration>,
    /// Armed when a write first returns Pending; disarmed by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
    failed: bool,
    peer: SocketAddr,
    protocol: &'static str,
}

impl<S> WriteTimeout<S> {
    /// `timeout` None: writes may wait forever.
    pub fn new(inner: S, timeout: Option<Duration>, peer: SocketAddr, protocol: &'static str) -> Self {
        WriteTimeout { inner, timeout, stalled: None, failed: false, peer, protocol }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "client write timeout: the client stopped reading")
    }

    /// Passes progress through; on Pending, runs the stall timer.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => {
                let Some(timeout) = self.timeout else { return Poll::Pending };
                let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.failed = true;
                self.stalled = None;
                tracing::warn!(
                    peer = %self.peer,
                    "closing {} connection: no write progress for {} ms (client not reading; --client-write-timeout-ms)",
                    self.protocol,
                    timeout.as_millis()
                );
                Poll::Ready(Err(self.timed_out()))
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Err(this.timed_out()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Err(this.timed_out()));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Err(this.timed_out()));
        }
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Ok(()));
        }
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::WriteTimeout;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// A peer that never reads: writes fill the buffers, then fail after the timeout.
    #[tokio::test]
    async fn stalled_peer_fails_the_write() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let mut w = WriteTimeout::new(server, Some(Duration::from_millis(200)), peer, "test");
        let chunk = vec![0u8; 1 << 16];
        let started = std::time::Instant::now();
        let err = loop {
            if let Err(e) = w.write_all(&chunk).await {
                break e;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "never timed out");
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(w.write_all(b"x").await.is_err(), "stays failed");
    }
}
