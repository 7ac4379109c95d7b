//! The accept loop: HTTP/1.1, and HTTP/2 with prior knowledge (h2c), on one port.
//!
//! `axum::serve` tells the two apart by reading the first 24 bytes of a connection into a buffer
//! of its own and replaying them (hyper-util's `Rewind`). hyper's HTTP/1.1 reader then gets those
//! bytes alone in its first read, finds the request head incomplete, and grows its 8 KB read
//! buffer to 16 KB to read the rest: 8 KB more for every open connection, for as long as it is
//! open (BENCHMARKS.md, S3). Here the bytes are *peeked* at instead, so hyper's first read takes
//! the whole request into its 8 KB buffer.

use std::{
    io,
    pin::Pin,
    time::{Duration, Instant},
};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// What a client speaking HTTP/2 with prior knowledge sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a connection that has sent part of the HTTP/2 preface may take to send the rest
/// before it is served as HTTP/1.1 (which will refuse it unless it was one after all).
const PARTIAL_PREFACE_WAIT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` turns true; then stops accepting, asks every open
/// connection to finish its requests in flight and close, and returns when all have closed.
///
/// A connection that has not sent a whole request head `head_timeout` after it opened (or, on
/// HTTP/1.1, after its previous answer) is closed: a client cannot hold a connection, its task
/// and its file descriptor by sending nothing, or a header a byte at a time.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    head_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // Every connection task holds a receiver; `closed()` resolves when the last one is dropped.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to be released rather
                // than spin (what axum and hyper do).
                tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.wait_for(|stopped| *stopped) => break,
                }
            }
        };
        // A clone of the router is a reference count: no route table per connection. Each
        // request learns the connection's peer address (the console limits sign-ups by it).
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(PeerAddr(peer));
                request
            },
        ));
        let stop = stop.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, service, head_timeout, stop).await;
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}

/// The address of the client a request came from (the TCP peer; no proxy header is trusted).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

async fn serve_connection<S>(
    stream: TcpStream,
    service: TowerToHyperService<S>,
    head_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: tower::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let h2 = tokio::select! {
        sniffed = tokio::time::timeout(head_timeout, is_h2(&stream)) => match sniffed {
            Ok(Ok(Some(h2))) => h2,
            // Closed before sending anything, failed, or silent for too long: nothing to serve.
            Ok(Ok(None) | Err(_)) | Err(_) => return,
        },
        // An idle connection that never sent a request: close it.
        _ = stop.wait_for(|stopped| *stopped) => return,
    };
    let io = TokioIo::new(stream);
    if h2 {
        // Boxed: this future (and so every connection's task) is sized by its largest state,
        // and an HTTP/2 connection is the larger one; HTTP/1.1 connections are the common case.
        let connection = Box::pin(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service),
        );
        drive(
            connection,
            |c| c.get_mut().as_mut().graceful_shutdown(),
            stop,
        )
        .await;
    } else {
        // Half-close allowed: once a request is read, hyper would otherwise keep reading to
        // notice a client that goes away, and that read takes a second 8 KB buffer for every
        // waiting request (the first is still referenced by the request being handled). A
        // client that leaves now is noticed when its answer is written; its task runs on
        // either way.
        let connection = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            // The head's clock starts when hyper begins reading one: at the connection's start
            // and after each answer, never while a request is being handled.
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .serve_connection(io, service);
        drive(connection, |c| c.graceful_shutdown(), stop).await;
    }
}

/// Runs a connection until it ends, or until `stop`: then asks it to finish the request in
/// flight (HTTP/1.1) or its open streams (HTTP/2) and close, and waits for that.
async fn drive<C>(
    connection: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    mut stop: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    let ended = tokio::select! {
        result = connection.as_mut() => Some(result),
        _ = stop.wait_for(|stopped| *stopped) => None,
    };
    let result = match ended {
        Some(result) => result,
        None => {
            graceful_shutdown(connection.as_mut());
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// Whether the connection starts with the HTTP/2 preface, from bytes peeked at (left in the
/// socket for the HTTP server to read). `None`: closed before sending anything.
async fn is_h2(stream: &TcpStream) -> io::Result<Option<bool>> {
    let mut head = [0u8; H2_PREFACE.len()];
    let mut partial_since = None;
    loop {
        let n = stream.peek(&mut head).await?;
        if n == 0 {
            return Ok(None);
        }
        if head[..n] != H2_PREFACE[..n] {
            return Ok(Some(false));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(true));
        }
        // Part of the preface so far. Peeking leaves the socket readable, so waiting for
        // readiness again would return at once: poll gently until the rest arrives.
        let since = *partial_since.get_or_insert_with(Instant::now);
        if since.elapsed() > PARTIAL_PREFACE_WAIT {
            return Ok(Some(false));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Errors that end one connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
