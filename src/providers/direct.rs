//! Upstream calls over HTTP/2 on connections of our own, with hyper's client and no reqwest.
//!
//! A call that waits on a slow model keeps its state for the whole wait. Through reqwest that
//! state is ~13 KB (reqwest's and hyper-util's request futures, the copy of the request kept for
//! its retry policy, its pool's bookkeeping); here it is hyper's answer future and the stream in
//! the connection (BENCHMARKS.md, S3).
//!
//! A [`Target`] opens connections to one upstream: TCP, then TLS with ALPN for `https://` (the
//! shared configuration of the Gemini provider, offering `h2` first) or HTTP/2 with prior
//! knowledge for `http://`. A [`Connection`] is one lane's slot (see `lanes`): connected on its
//! first call and again when the connection has ended (closed, `GOAWAY`). What reqwest did for
//! these calls and is done here too: the connect timeout, and sending a request again when the
//! upstream said it did not process it (`REFUSED_STREAM`, or a `GOAWAY` before the stream) or
//! the connection was gone before the request was written. The caller applies the whole call's
//! timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use url::{Host, Url};

/// Calls sent again at most this many times when the upstream said it did not process them
/// (what reqwest allows for such calls).
const MAX_RESENDS: usize = 2;

/// Where and how connections to one upstream are made.
pub struct Target {
    host: String,
    port: u16,
    /// `None`: cleartext HTTP/2 (prior knowledge).
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    /// Connections made so far, all lanes together.
    connections_made: AtomicU64,
}

/// Why no connection could be made.
#[derive(Debug)]
pub enum ConnectError {
    /// The TLS upstream chose another protocol than HTTP/2 (or none): calls must go another way.
    NotH2,
    Failed(String),
}

/// Why a call failed.
#[derive(Debug)]
pub enum SendError {
    Connect(ConnectError),
    /// `sent`: the request may have reached the upstream (and been billed).
    Failed {
        message: String,
        sent: bool,
    },
}

impl Target {
    /// For `url`'s scheme, host and port. `tls` is used for `https://` URLs.
    pub fn new(
        url: &Url,
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
    ) -> Result<Target, String> {
        let (host, server_name) = match url.host() {
            Some(Host::Domain(domain)) => (
                domain.to_owned(),
                ServerName::try_from(domain.to_owned()).map_err(|e| e.to_string())?,
            ),
            Some(Host::Ipv4(ip)) => (ip.to_string(), ServerName::from(std::net::IpAddr::V4(ip))),
            Some(Host::Ipv6(ip)) => (ip.to_string(), ServerName::from(std::net::IpAddr::V6(ip))),
            None => return Err(format!("{url} has no host")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{url} has no port"))?;
        let tls =
            (url.scheme() == "https").then(|| (tokio_rustls::TlsConnector::from(tls), server_name));
        Ok(Target {
            host,
            port,
            tls,
            connect_timeout,
            connections_made: AtomicU64::new(0),
        })
    }

    /// Connections made so far, all lanes together.
    pub fn connections_made(&self) -> u64 {
        self.connections_made.load(Ordering::Relaxed)
    }

    /// Sends the request `request` makes (called again for each resend). `handed` is true while
    /// a request is with a connection that has not said it left it unprocessed: a timeout then
    /// may come after the upstream started (and billed) the work.
    pub async fn send(
        &self,
        connection: &Connection,
        request: impl Fn() -> Request<Full<Bytes>>,
        handed: &mut bool,
    ) -> Result<Response<Incoming>, SendError> {
        let mut resends = 0;
        loop {
            let (generation, mut sender) =
                self.sender(connection).await.map_err(SendError::Connect)?;
            *handed = true;
            let error = match sender.try_send_request(request()).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            // Not written (the connection ended meanwhile), or refused unprocessed: the
            // upstream did not start the work, so it can be asked again on a new connection.
            let unprocessed = error.message().is_some() || refused_unprocessed(error.error());
            if unprocessed && resends < MAX_RESENDS {
                resends += 1;
                *handed = false;
                tracing::debug!(error = %error.error(), "upstream call not processed; sending it again");
                connection.forget(generation).await;
                continue;
            }
            return Err(SendError::Failed {
                message: error_chain(error.error()),
                sent: !unprocessed,
            });
        }
    }

    /// The lane's connection, made now if it has none or its connection has ended.
    async fn sender(
        &self,
        connection: &Connection,
    ) -> Result<(u64, SendRequest<Full<Bytes>>), ConnectError> {
        let arrived = Instant::now();
        let mut slot = connection.slot.lock().await;
        if let Some(sender) = &slot.sender
            && !sender.is_closed()
        {
            return Ok((slot.generation, sender.clone()));
        }
        // A connect that failed while this call waited for the slot fails it too: the calls
        // queued on a lane do not each wait out a connect timeout in turn.
        if let Some((failed_at, message)) = &slot.failure
            && *failed_at >= arrived
        {
            return Err(ConnectError::Failed(message.clone()));
        }
        // Boxed: connecting (DNS, TCP, TLS, HTTP/2 handshake) is a large state that every
        // call's future would otherwise carry for its whole wait, to use it once per lane.
        let connected = Box::pin(tokio::time::timeout(self.connect_timeout, self.connect()))
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::Failed(format!(
                    "connecting to the upstream timed out after {:?}",
                    self.connect_timeout
                )))
            });
        let sender = match connected {
            Ok(sender) => sender,
            Err(ConnectError::Failed(message)) => {
                slot.failure = Some((Instant::now(), message.clone()));
                return Err(ConnectError::Failed(message));
            }
            Err(ConnectError::NotH2) => return Err(ConnectError::NotH2),
        };
        let made = self.connections_made.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            connections_made = made,
            "opened an HTTP/2 connection to the upstream"
        );
        slot.failure = None;
        slot.generation += 1;
        slot.sender = Some(sender.clone());
        Ok((slot.generation, sender))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ConnectError> {
        let failed = |what: &str, e: &dyn std::error::Error| {
            ConnectError::Failed(format!("{what}: {}", error_chain(e)))
        };
        let tcp = self
            .tcp()
            .await
            .map_err(|e| failed("connecting to the upstream", &e))?;
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, server_name)) => {
                let tls = connector
                    .connect(server_name.clone(), tcp)
                    .await
                    .map_err(|e| failed("TLS handshake with the upstream", &e))?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(ConnectError::NotH2);
                }
                handshake(tls).await
            }
        }
        .map_err(|e| failed("HTTP/2 handshake with the upstream", &e))
    }

    async fn tcp(&self) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect();
        let tcp = connect_happily(&addrs).await?;
        tcp.set_nodelay(true)?;
        // What reqwest sets: a peer or NAT that vanished during a minutes-long call is noticed
        // in about a minute, and an idle mapping is kept alive.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE)
            .with_interval(TCP_KEEPALIVE)
            .with_retries(3);
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
        Ok(tcp)
    }
}

/// Idle time before TCP keepalive probes, and between them.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// How long the first address family has before the other is tried alongside (RFC 8305).
const FALLBACK_DELAY: Duration = Duration::from_millis(300);

/// Connects to the first of `addrs` that answers. Addresses of the first address's family are
/// tried in turn; those of the other family start after [`FALLBACK_DELAY`] (at once if the
/// first family has failed), so a broken IPv6 route does not cost the whole connect timeout.
async fn connect_happily(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let Some(first) = addrs.first() else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the host name has no address",
        ));
    };
    let (primary, fallback): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
        .iter()
        .partition(|addr| addr.is_ipv6() == first.is_ipv6());
    if fallback.is_empty() {
        return connect_in_turn(&primary).await;
    }
    let primary_attempt = connect_in_turn(&primary);
    let (primary_failed, failed) = tokio::sync::oneshot::channel::<()>();
    let fallback_attempt = async {
        // Either the delay passes or the primary family fails (its sender dropped).
        let _ = tokio::time::timeout(FALLBACK_DELAY, failed).await;
        connect_in_turn(&fallback).await
    };
    tokio::pin!(primary_attempt, fallback_attempt);
    tokio::select! {
        primary = &mut primary_attempt => match primary {
            Ok(tcp) => Ok(tcp),
            Err(_) => {
                drop(primary_failed);
                fallback_attempt.await
            }
        },
        fallback = &mut fallback_attempt => match fallback {
            Ok(tcp) => Ok(tcp),
            Err(_) => primary_attempt.await,
        },
    }
}

async fn connect_in_turn(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no address to connect to")))
}

/// Starts HTTP/2 on `io`; the connection runs in a task of its own until it ends.
async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(sender)
}

/// One lane's HTTP/2 connection, made when first needed.
#[derive(Default)]
pub struct Connection {
    slot: tokio::sync::Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    /// Counts the connections made, so that a call can tell its connection from a newer one.
    generation: u64,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// When the last connect failed, and why.
    failure: Option<(Instant, String)>,
}

impl Connection {
    /// Stops using connection `generation` for new calls (its calls in flight go on).
    async fn forget(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if slot.generation == generation {
            slot.sender = None;
        }
    }
}

/// Reads at most `cap` bytes of `body`; `true` when it had more.
pub async fn read_capped(body: &mut Incoming, cap: usize) -> Result<(Vec<u8>, bool), String> {
    let hint = body.size_hint().exact().unwrap_or(0).min(cap as u64) as usize;
    let mut read = Vec::with_capacity(hint);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| error_chain(&e))?;
        if let Ok(chunk) = frame.into_data()
            && push_capped(&mut read, &chunk, cap)
        {
            return Ok((read, true));
        }
    }
    Ok((read, false))
}

/// Appends `chunk` to `body` up to `cap` bytes in all; `true` when some of it did not fit.
pub fn push_capped(body: &mut Vec<u8>, chunk: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(body.len());
    let fits = chunk.len().min(room);
    body.extend_from_slice(&chunk[..fits]);
    fits < chunk.len()
}

/// The upstream said it did not process the stream: `REFUSED_STREAM`, or a `GOAWAY` (with no
/// error) whose last processed stream came before this one.
fn refused_unprocessed(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return is_unprocessed(h2);
        }
        source = cause.source();
    }
    false
}

fn is_unprocessed(error: &h2::Error) -> bool {
    match error.reason() {
        Some(h2::Reason::REFUSED_STREAM) => true,
        Some(h2::Reason::NO_ERROR) => error.is_go_away() && error.is_remote(),
        _ => false,
    }
}

/// `error` and its causes, each once.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_and_goaway_streams_are_unprocessed_other_resets_are_not() {
        assert!(is_unprocessed(&h2::Error::from(h2::Reason::REFUSED_STREAM)));
        // A reset we made ourselves, or an error the server hit while working: maybe processed.
        assert!(!is_unprocessed(&h2::Error::from(h2::Reason::CANCEL)));
        assert!(!is_unprocessed(&h2::Error::from(
            h2::Reason::INTERNAL_ERROR
        )));
        // A local NO_ERROR is no GOAWAY from the upstream.
        assert!(!is_unprocessed(&h2::Error::from(h2::Reason::NO_ERROR)));
    }

    /// An HTTP/2 server (h2c) that answers each stream with `reset(n)` — the stream's number,
    /// counted over every connection — or, for `None`, a 200 with `ok`.
    async fn h2_server(reset: fn(usize) -> Option<h2::Reason>) -> (Url, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let streams = Arc::new(AtomicU64::new(0));
        let counted = streams.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut connection = h2::server::handshake(tcp).await?;
                    while let Some(stream) = connection.accept().await {
                        let (_request, mut respond) = stream?;
                        let n = counted.fetch_add(1, Ordering::SeqCst) as usize + 1;
                        match reset(n) {
                            Some(reason) => respond.send_reset(reason),
                            None => {
                                let mut body = respond.send_response(Response::new(()), false)?;
                                body.send_data(Bytes::from_static(b"ok"), true)?;
                            }
                        }
                    }
                    Ok::<_, h2::Error>(())
                });
            }
        });
        (url, streams)
    }

    /// A TLS configuration that trusts nothing (these targets never use it, or fail with it).
    fn no_roots() -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
    }

    fn h2c_target(url: &Url) -> Target {
        Target::new(url, no_roots(), Duration::from_secs(5)).unwrap()
    }

    fn post(url: &Url) -> impl Fn() -> Request<Full<Bytes>> {
        let uri: http::Uri = url.as_str().parse().unwrap();
        move || {
            let mut request = Request::new(Full::new(Bytes::from_static(b"{}")));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = uri.clone();
            request
        }
    }

    #[tokio::test]
    async fn a_stream_the_upstream_refused_unprocessed_is_sent_again() {
        let (url, streams) = h2_server(|n| (n == 1).then_some(h2::Reason::REFUSED_STREAM)).await;
        let target = h2c_target(&url);
        let connection = Connection::default();
        let mut handed = false;
        let mut response = target
            .send(&connection, post(&url), &mut handed)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            read_capped(response.body_mut(), 100).await.unwrap().0,
            b"ok"
        );
        assert!(handed);
        assert_eq!(streams.load(Ordering::SeqCst), 2);
        // On a new connection: the refusing one is no longer used for new calls.
        assert_eq!(target.connections_made(), 2);
    }

    /// A call to a server that resets every stream with `reason`: whether the failure says
    /// "maybe sent", and how many streams the server saw.
    async fn always_reset(reason: fn(usize) -> Option<h2::Reason>) -> (bool, u64) {
        let (url, streams) = h2_server(reason).await;
        let target = h2c_target(&url);
        let mut handed = false;
        let err = target
            .send(&Connection::default(), post(&url), &mut handed)
            .await
            .unwrap_err();
        let SendError::Failed { sent, .. } = err else {
            panic!("{err:?}")
        };
        (sent, streams.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_stream_reset_for_another_reason_may_have_been_processed_and_is_not_resent() {
        let (sent, streams) = always_reset(|_| Some(h2::Reason::INTERNAL_ERROR)).await;
        assert!(sent);
        assert_eq!(streams, 1);
    }

    #[tokio::test]
    async fn an_upstream_that_keeps_refusing_is_asked_three_times_then_reported_unsent() {
        let (sent, streams) = always_reset(|_| Some(h2::Reason::REFUSED_STREAM)).await;
        assert!(!sent);
        assert_eq!(streams, 1 + MAX_RESENDS as u64);
    }

    #[tokio::test]
    async fn a_family_that_fails_hands_over_to_the_other() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        // Nothing listens there (or there is no IPv6 at all): refused either way.
        let closed = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 9));
        let tcp = connect_happily(&[closed, open]).await.unwrap();
        assert_eq!(tcp.peer_addr().unwrap(), open);
        // The first family answering wins without waiting for the other.
        let tcp = connect_happily(&[open, closed]).await.unwrap();
        assert_eq!(tcp.peer_addr().unwrap(), open);
        let refused = connect_happily(&[closed]).await.unwrap_err();
        assert_ne!(refused.kind(), io::ErrorKind::NotFound);
        let none = connect_happily(&[]).await.unwrap_err();
        assert_eq!(none.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn targets_take_the_url_host_port_and_scheme() {
        let timeout = Duration::from_secs(1);
        let target = |url: &str| Target::new(&Url::parse(url).unwrap(), no_roots(), timeout);
        let google = target("https://generativelanguage.googleapis.com").unwrap();
        assert_eq!(
            (google.host.as_str(), google.port),
            ("generativelanguage.googleapis.com", 443)
        );
        assert!(google.tls.is_some());
        let local = target("http://[::1]:8080/proxy").unwrap();
        assert_eq!((local.host.as_str(), local.port), ("::1", 8080));
        assert!(local.tls.is_none());
        let ip = target("https://127.0.0.1:8443").unwrap();
        assert_eq!(
            ip.tls.map(|(_, name)| name),
            Some(ServerName::from(std::net::IpAddr::from([127, 0, 0, 1])))
        );
    }
}
