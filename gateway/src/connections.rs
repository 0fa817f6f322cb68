//! Client connections: at most `limits.max_connections` open at once (further clients wait in
//! the kernel's accept queue), each closed when a request's headers take longer than
//! `limits.header_timeout` to arrive (a slowloris client), when it sits idle that long
//! between requests, or when the client leaves what the gateway writes unread for
//! `limits.send_timeout` (a stream nobody reads), so that slow or silent clients cannot pin
//! sockets, tasks and upstream connections. HTTP/1.1, as axum is built here. Shutdown lets the
//! requests in progress finish and closes idle connections at once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use crate::config::Limits;
use crate::metrics::Metrics;

pub struct Connections {
    slots: Arc<Semaphore>,
    header_timeout: Duration,
    send_timeout: Duration,
    graceful: GracefulShutdown,
    metrics: Arc<Metrics>,
}

impl Connections {
    pub fn new(limits: &Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            header_timeout: limits.header_timeout,
            send_timeout: limits.send_timeout,
            graceful: GracefulShutdown::new(),
            metrics,
        }
    }

    /// Accepts connections and serves `app` on each, until the future is dropped.
    pub async fn accept(&self, listener: &TcpListener, app: Router) {
        loop {
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                return; // the semaphore is never closed
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: let some connections close.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Streamed tokens leave as they come, not when a segment fills.
            let _ = stream.set_nodelay(true);
            let stream = SendTimeout::new(stream, self.send_timeout);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
            let connection = self.graceful.watch(connection);
            let open = self.metrics.connection_opened();
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
                drop(open);
                drop(slot);
            });
        }
    }

    /// Closes idle connections and waits for the requests in progress on the others.
    pub async fn close(self) {
        self.graceful.shutdown().await;
    }
}

/// A client socket whose writes fail with `TimedOut` once one has waited `limit` for the
/// client to make room (its receive window stays shut): hyper then drops the connection and,
/// with it, the response being written.
struct SendTimeout {
    stream: TcpStream,
    limit: Duration,
    /// Armed while a write waits.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl SendTimeout {
    fn new(stream: TcpStream, limit: Duration) -> Self {
        Self {
            stream,
            limit,
            stalled: None,
        }
    }

    /// Passes on a write's outcome, timing how long it has been waiting.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client left the response unread",
        )))
    }
}

impl AsyncRead for SendTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server-side socket wrapped in [`SendTimeout`], and its client.
    async fn pair(limit: Duration) -> (SendTimeout, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (SendTimeout::new(server, limit), client)
    }

    #[tokio::test]
    async fn writes_nobody_reads_time_out() {
        let (mut server, _client) = pair(Duration::from_millis(200)).await;
        let chunk = vec![0u8; 64 * 1024];
        let failed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Err(error) = server.write_all(&chunk).await {
                    return error;
                }
            }
        });
        let error = failed
            .await
            .expect("the writes fail instead of waiting forever");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn writes_a_client_reads_go_through() {
        let (mut server, mut client) = pair(Duration::from_millis(200)).await;
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            client
                .read_to_end(&mut received)
                .await
                .map(|_| received.len())
        });
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..256 {
            server.write_all(&chunk).await.unwrap();
        }
        server.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), 256 * 64 * 1024);
    }
}
