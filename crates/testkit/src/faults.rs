//! Dependencies that fail on demand, for the fault tests (`tests/api/faults.rs`): a TCP proxy
//! that the server reaches PostgreSQL, Redis or S3 through ([`FaultProxy`]: pass, cut and refuse,
//! or answer every new connection with canned bytes such as a 503), and callback receivers that
//! accept a connection and then never answer, or answer one byte at a time ([`StallingReceiver`]).
//!
//! Why a proxy and not the service itself: the services are shared by every test running at once
//! (and `initdb` refuses to run as root, so a private PostgreSQL is not portable); a proxy in
//! front of them fails for one test only.
//!
//! What it does not do: speak any of the protocols it carries (it copies bytes), or decide what a
//! test asserts.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// What the proxy does with connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward every byte both ways to the target.
    Pass,
    /// Every open connection is closed and new ones are refused (nothing listens at the port,
    /// so a client gets "connection refused", as from a server that is down).
    Refuse,
    /// Every open connection is closed; each new one reads the request, gets these bytes, and
    /// is closed (e.g. an HTTP 503 from a load balancer in front of a service that is down).
    Answer(Vec<u8>),
}

/// A TCP proxy on 127.0.0.1 (a random port) in front of `target`; stops when dropped.
pub struct FaultProxy {
    address: SocketAddr,
    mode: watch::Sender<(u64, ProxyMode)>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// An HTTP 503 with an empty body, for [`FaultProxy::answer_with`].
pub const HTTP_503: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = bind_fixed().await?;
        let address = listener.local_addr()?;
        // The generation changes with every mode change: connections of an older one close.
        let (mode, watched) = watch::channel((0, ProxyMode::Pass));
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            Some(listener),
            address,
            target,
            watched,
            accepted.clone(),
        ));
        Ok(FaultProxy {
            address,
            mode,
            accepted,
            task,
        })
    }

    /// `127.0.0.1:PORT`, to put in the server's URL instead of the service's.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.set(ProxyMode::Refuse);
    }

    /// Closes every connection; new ones get `response` and are closed.
    pub fn answer_with(&self, response: &[u8]) {
        self.set(ProxyMode::Answer(response.to_vec()));
    }

    /// Forwards again (connections closed by a fault stay closed: clients reconnect).
    pub fn restore(&self) {
        self.set(ProxyMode::Pass);
    }

    /// Connections accepted so far (in any mode).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    fn set(&self, mode: ProxyMode) {
        self.mode.send_modify(|(generation, current)| {
            *generation += 1;
            *current = mode;
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    mut listener: Option<TcpListener>,
    address: SocketAddr,
    target: SocketAddr,
    mut mode: watch::Receiver<(u64, ProxyMode)>,
    accepted: Arc<AtomicUsize>,
) {
    loop {
        let (generation, current) = mode.borrow_and_update().clone();
        // Refusing: the listener is closed, so connections are refused, and bound again at the
        // same port to resume (the port lies below the kernel's ephemeral range, where no
        // outgoing connection can take it meanwhile: see `bind_fixed`).
        match (&current, listener.is_some()) {
            (ProxyMode::Refuse, true) => listener = None,
            (ProxyMode::Pass | ProxyMode::Answer(_), false) => {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    match TcpListener::bind(address).await {
                        Ok(bound) => {
                            listener = Some(bound);
                            break;
                        }
                        Err(e) if std::time::Instant::now() > deadline => {
                            eprintln!("fault proxy: cannot listen at {address} again: {e}");
                            return;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
            _ => {}
        }
        let Some(bound) = &listener else {
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        };
        let stream = tokio::select! {
            accepted = bound.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        let mut watched = mode.clone();
        tokio::spawn(async move {
            let cut = async move {
                let _ = watched.wait_for(|(g, _)| *g != generation).await;
            };
            tokio::select! {
                _ = serve(stream, target, current) => {}
                _ = cut => {}
            }
        });
    }
}

/// A listener on 127.0.0.1 at a port below the kernel's ephemeral range (where ports for
/// outgoing connections and port-0 binds come from), so that the port is still free when the
/// proxy binds it again after refusing.
async fn bind_fixed() -> io::Result<TcpListener> {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_100));
    let mut last = io::Error::other("no port tried");
    for _ in 0..100 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let port = low + (hasher.finish() % u64::from(high - low)) as u16;
        match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn serve(mut client: TcpStream, target: SocketAddr, mode: ProxyMode) {
    match mode {
        ProxyMode::Pass => {
            let Ok(mut upstream) = TcpStream::connect(target).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
        ProxyMode::Answer(response) => {
            // Read what the client sends first, so that closing does not reset the connection
            // before it reads the answer.
            let mut buffer = vec![0; 64 * 1024];
            let _ =
                tokio::time::timeout(Duration::from_millis(200), client.read(&mut buffer)).await;
            let _ = client.write_all(&response).await;
            let _ = client.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while matches!(client.read(&mut buffer).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        ProxyMode::Refuse => {}
    }
}

/// How a [`StallingReceiver`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Reads the request and never answers, keeping the connection open.
    Silent,
    /// Answers `200 OK`, one byte every this long.
    Trickle(Duration),
}

/// A callback receiver at the TCP level (the HTTP receiver cannot send a status line slowly):
/// counts the requests it got and answers as `Stall` says.
pub struct StallingReceiver {
    port: u16,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingReceiver {
    pub async fn start(stall: Stall) -> io::Result<StallingReceiver> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(stall_one(stream, stall, seen.clone()));
            }
        });
        Ok(StallingReceiver {
            port,
            requests,
            task,
        })
    }

    /// The URL to give as `callback_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.port)
    }

    /// Requests that arrived so far (their first bytes: the head and what came with it).
    pub fn requests(&self) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for StallingReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn stall_one(mut stream: TcpStream, stall: Stall, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut buffer = vec![0; 64 * 1024];
    let Ok(n) = stream.read(&mut buffer).await else {
        return;
    };
    if n == 0 {
        return;
    }
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(buffer[..n].to_vec());
    match stall {
        Stall::Silent => {
            // Keep reading (and discarding) until the client gives up.
            while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
        }
        Stall::Trickle(every) => {
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
            for byte in answer {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(address: SocketAddr) -> io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(address).await?;
        stream.write_all(b"ping").await?;
        let mut got = vec![0; 4];
        stream.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_proxy_forwards_cuts_refuses_answers_and_restores() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        assert_eq!(round_trip(proxy.address()).await.unwrap(), b"ping");

        // An open connection is closed by the cut; a new one is refused.
        let mut open = TcpStream::connect(proxy.address()).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut one = [0; 1];
        open.read_exact(&mut one).await.unwrap();
        proxy.cut();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), open.read_to_end(&mut rest))
            .await
            .expect("closed at once");
        assert!(closed.is_err() || rest.is_empty());
        let refused = loop {
            match TcpStream::connect(proxy.address()).await {
                Err(e) => break e,
                // The accept loop may not have seen the cut yet.
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

        proxy.answer_with(HTTP_503);
        let answer = loop {
            if let Ok(mut stream) = TcpStream::connect(proxy.address()).await {
                stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer).await;
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");

        proxy.restore();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            match round_trip(proxy.address()).await {
                Ok(got) if got == b"ping" => break,
                _ => {
                    assert!(std::time::Instant::now() < deadline, "restored");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        assert!(proxy.accepted() >= 3);
    }

    #[tokio::test]
    async fn a_trickling_receiver_answers_one_byte_at_a_time() {
        let receiver = StallingReceiver::start(Stall::Trickle(Duration::from_millis(20)))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let answer = reqwest::Client::new()
            .post(receiver.url())
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(20 * 30));
        assert_eq!(receiver.requests(), 1);
    }
}
