//! Hostile input, end to end through the real server: URLs that try to reach what the outbound
//! policy protects (as `image_urls` and as `callback_url`), redirects that try the same from an
//! allowed host, oversized, slow, bomb and fake images, bad `data:` URIs, and request bodies
//! that try the parser. Each must get the contract's error (or, for callbacks, be accepted and
//! never called) and nothing else may happen.
//!
//! Everything listens on loopback only. The test policy allows 127.0.0.1/32, so the hostile URLs
//! aim at the loopback neighbours it must keep closed — 127.0.0.2, `[::1]`, 0.0.0.0 (which Linux
//! delivers to the local host) — in every spelling, or at 127.0.0.1 itself through a trick
//! (credentials, another scheme, a syntax the WHATWG parser would repair). A `Trap` listens on
//! the same port on 127.0.0.1, 127.0.0.2 and [::1], serves a valid PNG to anyone, and counts
//! every TCP connection: it must count none.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::Query,
    http::{StatusCode, header},
    routing::get,
    serve::ListenerExt,
};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::helpers::{
    Answer, TestApp, answer, assert_error, data_uri, png, spawn_app, spawn_app_with,
};

// ---- listeners ----------------------------------------------------------------------------

/// A listener on one port of several loopback addresses that counts connections. Any
/// connection at all is a policy failure.
struct Trap {
    port: u16,
    connections: Arc<AtomicUsize>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Trap {
    async fn start() -> Trap {
        for _ in 0..50 {
            let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = first.local_addr().unwrap().port();
            let Ok(second) = tokio::net::TcpListener::bind(("127.0.0.2", port)).await else {
                continue;
            };
            // Some sandboxes have no IPv6 loopback; the [::1] cases then prove less, not more.
            let third = tokio::net::TcpListener::bind(("::1", port)).await;
            if third.is_err() {
                eprintln!("[::1]:{port} not bindable: the IPv6 trap is off");
            }
            let connections = Arc::new(AtomicUsize::new(0));
            let mut servers = Vec::new();
            for listener in [Some(first), Some(second), third.ok()]
                .into_iter()
                .flatten()
            {
                let count = connections.clone();
                let listener = listener.tap_io(move |_| {
                    count.fetch_add(1, Ordering::SeqCst);
                });
                let app = Router::new()
                    .fallback(|| async { ([(header::CONTENT_TYPE, "image/png")], png(16, 16)) });
                servers.push(tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                }));
            }
            return Trap {
                port,
                connections,
                servers,
            };
        }
        panic!("no port free on 127.0.0.1, 127.0.0.2 and [::1] at once");
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Replaces `PORT` in a URL template with the trap's port.
    fn url(&self, template: &str) -> String {
        template.replace("PORT", &self.port.to_string())
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// What a hostile image host can do, counted so a test can tell how far a request got.
#[derive(Default)]
struct Probe {
    /// Requests by path.
    hits: std::sync::Mutex<HashMap<String, usize>>,
    /// Bytes handed to the socket by `/huge`.
    served: AtomicU64,
    /// Notified when a streaming body is dropped (the client hung up).
    body_dropped: Notify,
}

struct DropSignal(Arc<Probe>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.body_dropped.notify_one();
    }
}

/// A loopback (127.0.0.1, allowed by the test policy) image host with hostile routes.
struct HostileHost {
    port: u16,
    probe: Arc<Probe>,
    server: tokio::task::JoinHandle<()>,
}

/// A valid PNG whose IHDR declares `width` x `height` (CRC fixed up) over a 1x1 image's data:
/// what a decompression bomb looks like to anything that reads the header.
fn bomb_png(width: u32, height: u32) -> Vec<u8> {
    let mut p = png(1, 1);
    assert_eq!(&p[12..16], b"IHDR");
    p[16..20].copy_from_slice(&width.to_be_bytes());
    p[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32fast::hash(&p[12..29]);
    p[29..33].copy_from_slice(&crc.to_be_bytes());
    p
}

impl HostileHost {
    async fn start() -> HostileHost {
        let probe = Arc::new(Probe::default());
        let huge = probe.clone();
        let slow = probe.clone();
        let redirect = |status: StatusCode| {
            move |Query(q): Query<HashMap<String, String>>| async move {
                let to = q.get("to").cloned().unwrap_or_default();
                (status, [(header::LOCATION, to)])
            }
        };
        let app = Router::new()
            .route(
                "/png",
                get(|| async { ([(header::CONTENT_TYPE, "image/png")], png(40, 30)) }),
            )
            .route(
                "/html",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "image/png")],
                        "<html><body>not an image</body></html>",
                    )
                }),
            )
            .route(
                "/svg",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "image/svg+xml")],
                        "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>",
                    )
                }),
            )
            .route(
                "/bomb",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "image/png")],
                        bomb_png(100_000, 100_000),
                    )
                }),
            )
            .route(
                "/redirect",
                get(redirect(StatusCode::FOUND)).post(redirect(StatusCode::FOUND)),
            )
            .route(
                "/redirect307",
                get(redirect(StatusCode::TEMPORARY_REDIRECT))
                    .post(redirect(StatusCode::TEMPORARY_REDIRECT)),
            )
            // Up to 100 MiB in 64 KiB chunks, no Content-Length, counting what it hands over.
            .route(
                "/huge",
                get(move || {
                    let probe = huge.clone();
                    async move {
                        let stream =
                            futures_util::stream::unfold(DropSignal(probe), |g| async move {
                                let sent = g.0.served.fetch_add(64 * 1024, Ordering::SeqCst);
                                if sent >= 100 << 20 {
                                    return None;
                                }
                                Some((
                                    Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 64 * 1024])),
                                    g,
                                ))
                            });
                        (
                            [(header::CONTENT_TYPE, "image/png")],
                            Body::from_stream(stream),
                        )
                    }
                }),
            )
            // Headers at once, then one byte every 50 ms, forever.
            .route(
                "/slow",
                get(move || {
                    let probe = slow.clone();
                    async move {
                        let stream =
                            futures_util::stream::unfold(DropSignal(probe), |g| async move {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"\x89")), g))
                            });
                        (
                            [(header::CONTENT_TYPE, "image/png")],
                            Body::from_stream(stream),
                        )
                    }
                }),
            )
            // Never even sends the headers.
            .route("/stall", get(std::future::pending::<&'static str>))
            .layer(axum::middleware::from_fn_with_state(
                probe.clone(),
                |axum::extract::State(probe): axum::extract::State<Arc<Probe>>,
                 request: axum::extract::Request,
                 next: axum::middleware::Next| async move {
                    *probe
                        .hits
                        .lock()
                        .unwrap()
                        .entry(request.uri().path().to_owned())
                        .or_default() += 1;
                    next.run(request).await
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HostileHost {
            port,
            probe,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `/redirect?to=<target>` (302) or `/redirect307?to=<target>`.
    fn redirect_to(&self, route: &str, target: &str) -> String {
        let to: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
        self.url(&format!("{route}?to={to}"))
    }

    fn hits(&self, path: &str) -> usize {
        self.probe
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for HostileHost {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ---- assertions -----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Refusal {
    /// Refused by the outbound policy: scheme, credentials, or an address it keeps closed.
    Policy,
    /// Not a URL we accept at all (syntax the WHATWG parser would have repaired, no host, …).
    Syntax,
}

impl Refusal {
    fn words(self) -> &'static str {
        match self {
            Refusal::Policy => "refused by the outbound request policy",
            Refusal::Syntax => "invalid URL",
        }
    }
}

/// A contract error about `image_urls[index]`, whose message starts as `prefix` does.
fn assert_input_error(answer: &Answer, status: u16, code: &str, index: usize, prefix: &str) {
    assert_error(answer, status, code);
    let message = answer.body["error"]["message"].as_str().unwrap_or_default();
    let expected = format!("image_urls[{index}] {prefix}");
    assert!(
        message.starts_with(&expected),
        "want a message starting {expected:?}, got {message:?}"
    );
}

fn message(answer: &Answer) -> &str {
    answer.body["error"]["message"].as_str().unwrap_or_default()
}

async fn edit_with(app: &TestApp, source: &str) -> Answer {
    app.post_images(json!({"action": "edit", "prompt": "x", "image_urls": [source]}))
        .await
}

/// Waits until the task's callback has reached `state` after `attempts` attempts.
async fn wait_for_callback(app: &TestApp, task_id: &str, attempts: i64, state: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = app.db.callback_status(task_id).await.unwrap();
        if status == Some((attempts, state.to_owned())) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: callback status {status:?}, want ({attempts}, {state})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends each URL as the `callback_url` of a generate: accepted at once, the task succeeds,
/// and the one delivery attempt is refused (recorded `failed` after 1 attempt, never retried).
async fn assert_callbacks_refused(app: &TestApp, urls: &[String]) {
    let mut ids = Vec::new();
    for url in urls {
        let accepted = app
            .post_images(json!({"prompt": "x", "callback_url": url}))
            .await;
        assert_eq!(accepted.status, 200, "{url}: {}", accepted.body);
        assert_eq!(accepted.body["success"], true, "{url}");
        assert!(accepted.body.get("data").is_none(), "{url}");
        ids.push((url, accepted.body["task_id"].as_str().unwrap().to_owned()));
    }
    for (url, id) in &ids {
        assert_eq!(
            app.wait_for_task(id).await["state"],
            "succeeded",
            "{url}: a refused callback never fails the task"
        );
        wait_for_callback(app, id, 1, "failed", url).await;
    }
}

// ---- the hostile URL table ------------------------------------------------------------------

/// URLs that must be refused under the test policy (allow 127.0.0.1/32). `PORT` is the trap's.
const HOSTILE: &[(&str, Refusal)] = &[
    // 127.0.0.2, which the trap listens on, in every IPv4 spelling the WHATWG parser accepts.
    ("http://127.0.0.2:PORT/", Refusal::Policy),
    ("http://2130706434:PORT/", Refusal::Policy),
    ("http://0177.0.0.2:PORT/", Refusal::Policy),
    ("http://0x7f.0.0.2:PORT/", Refusal::Policy),
    ("http://0x7f000002:PORT/", Refusal::Policy),
    ("http://017700000002:PORT/", Refusal::Policy),
    ("http://127.2:PORT/", Refusal::Policy),
    ("http://127.0.2:PORT/", Refusal::Policy),
    ("http://127.0.0.2.:PORT/", Refusal::Policy),
    ("HTTP://127.0.0.2:PORT/x.png", Refusal::Policy),
    // ... and through the IPv6 forms that embed it.
    ("http://[::ffff:127.0.0.2]:PORT/", Refusal::Policy),
    ("http://[::ffff:7f00:2]:PORT/", Refusal::Policy),
    ("http://[0:0:0:0:0:ffff:127.0.0.2]:PORT/", Refusal::Policy),
    ("http://[::127.0.0.2]:PORT/", Refusal::Policy),
    ("http://[64:ff9b::7f00:2]:PORT/", Refusal::Policy),
    ("http://[2002:7f00:2::]:PORT/", Refusal::Policy),
    // IPv6 loopback, where the trap listens too.
    ("http://[::1]:PORT/", Refusal::Policy),
    ("http://[0:0:0:0:0:0:0:1]:PORT/", Refusal::Policy),
    ("http://[0000::0001]:PORT/", Refusal::Policy),
    // "Unspecified" addresses: the kernel delivers them to the local host.
    ("http://0.0.0.0:PORT/", Refusal::Policy),
    ("http://0:PORT/", Refusal::Policy),
    ("http://0x0:PORT/", Refusal::Policy),
    ("http://[::]:PORT/", Refusal::Policy),
    ("http://[::ffff:0.0.0.0]:PORT/", Refusal::Policy),
    // The cloud metadata address (refused before any connection).
    ("http://169.254.169.254/latest/meta-data/", Refusal::Policy),
    (
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        Refusal::Policy,
    ),
    // Credentials, even in front of the allowed 127.0.0.1.
    ("http://user@127.0.0.1:PORT/", Refusal::Policy),
    ("http://user:pass@127.0.0.1:PORT/", Refusal::Policy),
    ("http://127.0.0.1:PORT@127.0.0.2:PORT/", Refusal::Policy),
    ("http://example.com@127.0.0.2:PORT/", Refusal::Policy),
    ("http://127.0.0.1%2F@127.0.0.2:PORT/", Refusal::Policy),
    // Other schemes, aimed at the allowed 127.0.0.1.
    ("file:///etc/passwd", Refusal::Policy),
    ("file://127.0.0.1/etc/passwd", Refusal::Policy),
    ("gopher://127.0.0.1:PORT/_GET%20/", Refusal::Policy),
    ("ftp://127.0.0.1:PORT/", Refusal::Policy),
    ("dict://127.0.0.1:PORT/info", Refusal::Policy),
    ("ws://127.0.0.1:PORT/", Refusal::Policy),
    ("javascript:alert(1)", Refusal::Policy),
    // Syntax that only parses because the WHATWG parser repairs it.
    ("http:\\\\127.0.0.1:PORT\\", Refusal::Syntax),
    ("http:/127.0.0.1:PORT/", Refusal::Syntax),
    ("http:127.0.0.1:PORT/", Refusal::Syntax),
    ("http:///127.0.0.1:PORT/", Refusal::Syntax),
    ("http://127.0.0.1\t:PORT/", Refusal::Syntax),
    ("http://127.0.0\n.2:PORT/", Refusal::Syntax),
    ("http://127.0.0.1:PORT/\r\nX-Injected: 1", Refusal::Syntax),
    ("http://evil.example\\@127.0.0.2:PORT/", Refusal::Syntax),
    ("//127.0.0.2:PORT/", Refusal::Syntax),
    ("http://[::1:PORT/", Refusal::Syntax),
    ("http://256.0.0.1:PORT/", Refusal::Syntax),
    ("http://", Refusal::Syntax),
];

#[tokio::test]
async fn hostile_image_urls_are_bad_requests_naming_the_input() {
    assert!(HOSTILE.len() >= 30);
    let trap = Trap::start().await;
    let app = spawn_app().await;
    for (template, refusal) in HOSTILE {
        let url = trap.url(template);
        let answer = edit_with(&app, &url).await;
        assert_input_error(&answer, 400, "bad_request", 0, "cannot be used: ");
        assert!(
            message(&answer).contains(refusal.words()),
            "{url:?}: want {:?}, got {}",
            refusal.words(),
            answer.body
        );
        // Refused while checking the request: no task was ever created.
        assert!(
            answer.body.get("task_id").is_none(),
            "{url:?}: {}",
            answer.body
        );
        // As the second input, the message names the second.
        let answer = app
            .post_images(json!({
                "action": "edit", "prompt": "x", "image_urls": [data_uri(&png(4, 4)), url]
            }))
            .await;
        assert_input_error(&answer, 400, "bad_request", 1, "cannot be used: ");
    }
    assert_eq!(trap.connections(), 0, "the trap was reached");
}

#[tokio::test]
async fn hostile_callback_urls_are_accepted_and_never_called() {
    let trap = Trap::start().await;
    let app = spawn_app().await;
    let urls: Vec<String> = HOSTILE.iter().map(|(t, _)| trap.url(t)).collect();
    assert_callbacks_refused(&app, &urls).await;
    assert_eq!(trap.connections(), 0, "the trap was reached");
}

/// `localhost` and `*.localhost` are loopback by definition (RFC 6761) and never asked of DNS.
/// Under the test policy they resolve to the allowed 127.0.0.1, so these run with an allow-list
/// that names only 127.0.0.2: then every loopback name, and 127.0.0.1 itself in any spelling,
/// is closed, while the trap listens on 127.0.0.1 and [::1].
const LOOPBACK_NAMES: &[&str] = &[
    "http://localhost:PORT/",
    "http://localhost.:PORT/",
    "http://LOCALHOST:PORT/",
    "http://LocalHost.:PORT/x.png",
    "http://images.localhost:PORT/",
    "http://a.b.localhost.:PORT/",
    "http://127.0.0.1:PORT/",
    "http://127.1:PORT/",
    "http://2130706433:PORT/",
    "http://0x7f.1:PORT/",
    "http://[::ffff:127.0.0.1]:PORT/",
    "http://[::1]:PORT/",
];

#[tokio::test]
async fn loopback_names_are_refused_unless_the_allow_list_covers_them() {
    let trap = Trap::start().await;
    let app = spawn_app_with(|c| c.fetch.allow = vec!["127.0.0.2/32".parse().unwrap()]).await;
    let urls: Vec<String> = LOOPBACK_NAMES.iter().map(|t| trap.url(t)).collect();
    for url in &urls {
        let answer = edit_with(&app, url).await;
        assert_input_error(&answer, 400, "bad_request", 0, "cannot be used: ");
        assert!(
            message(&answer).contains(Refusal::Policy.words()),
            "{url}: {}",
            answer.body
        );
    }
    assert_callbacks_refused(&app, &urls).await;
    assert_eq!(trap.connections(), 0, "the trap was reached");
}

#[tokio::test]
async fn the_allow_list_opens_exactly_what_it_names() {
    let trap = Trap::start().await;
    let app = spawn_app_with(|c| c.fetch.allow = vec!["127.0.0.2/32".parse().unwrap()]).await;
    // The named address works, in any spelling of it.
    for url in [
        "http://127.0.0.2:PORT/in.png",
        "http://2130706434:PORT/in.png",
        "http://[::ffff:127.0.0.2]:PORT/in.png",
    ] {
        let url = trap.url(url);
        let answer = edit_with(&app, &url).await;
        assert_eq!(answer.status, 200, "{url}: {}", answer.body);
        assert_eq!(answer.body["data"].as_array().map(Vec::len), Some(1));
    }
    // The spellings are one host to the connection pool, so they may share a connection.
    let reached = trap.connections();
    assert!(reached >= 1, "the named address was fetched");
    // Its neighbours do not.
    for url in [
        "http://127.0.0.1:PORT/in.png",
        "http://127.0.0.3:PORT/in.png",
        "http://[::1]:PORT/in.png",
    ] {
        let answer = edit_with(&app, &trap.url(url)).await;
        assert_input_error(&answer, 400, "bad_request", 0, "cannot be used: refused");
    }
    assert_eq!(trap.connections(), reached, "a neighbour was reached");

    // The default policy (no allow-list) opens no loopback address at all.
    let closed = spawn_app_with(|c| c.fetch.allow.clear()).await;
    for url in [
        "http://127.0.0.1:PORT/in.png",
        "http://127.0.0.2:PORT/in.png",
        "http://localhost:PORT/",
    ] {
        let answer = edit_with(&closed, &trap.url(url)).await;
        assert_input_error(&answer, 400, "bad_request", 0, "cannot be used: refused");
    }
    assert_eq!(trap.connections(), reached);
}

// ---- redirects --------------------------------------------------------------------------------

/// Redirect targets that the allowed host (127.0.0.1) must not be able to send us to.
const REDIRECT_TARGETS: &[&str] = &[
    "http://127.0.0.2:PORT/",
    "http://2130706434:PORT/",
    "http://0x7f.0.0.2:PORT/",
    "http://[::ffff:127.0.0.2]:PORT/",
    "http://[::1]:PORT/",
    "http://0.0.0.0:PORT/",
    "http://[::]:PORT/",
    "http://169.254.169.254/latest/meta-data/",
    "http://user@127.0.0.1:PORT/",
];

#[tokio::test]
async fn redirects_from_an_allowed_host_to_a_closed_address_are_refused() {
    let trap = Trap::start().await;
    let host = HostileHost::start().await;
    let app = spawn_app().await;
    // The redirect itself works when it stays on the allowed host.
    let answer = edit_with(&app, &host.redirect_to("/redirect", &host.url("/png"))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let mut inputs = Vec::new();
    for target in REDIRECT_TARGETS {
        let target = trap.url(target);
        inputs.push(host.redirect_to("/redirect", &target));
        inputs.push(host.redirect_to("/redirect307", &target));
        // Two hops: the first stays on the allowed host, the second leaves it.
        inputs.push(host.redirect_to("/redirect", &host.redirect_to("/redirect", &target)));
    }
    let before = host.hits("/redirect") + host.hits("/redirect307");
    for url in &inputs {
        let answer = edit_with(&app, url).await;
        // The first URL is allowed, so the task exists and fails at the hop.
        assert_input_error(&answer, 400, "bad_request", 0, "cannot be used: ");
        assert!(
            message(&answer).contains("refused by the outbound request policy: redirect"),
            "{url}: {}",
            answer.body
        );
        assert!(answer.body["task_id"].is_string(), "{url}: {}", answer.body);
    }
    let after = host.hits("/redirect") + host.hits("/redirect307");
    assert_eq!(
        after - before,
        inputs.len() + REDIRECT_TARGETS.len(),
        "every first hop was asked"
    );

    // Redirects to other schemes are refused for inputs too (reqwest does not follow them).
    for target in ["file:///etc/passwd", "gopher://127.0.0.1:PORT/"] {
        let answer = edit_with(&app, &host.redirect_to("/redirect", &trap.url(target))).await;
        assert_input_error(&answer, 400, "bad_request", 0, "cannot be used: refused");
    }

    assert_callbacks_refused(&app, &inputs).await;
    assert_eq!(trap.connections(), 0, "the trap was reached");
}

// ---- what comes back ------------------------------------------------------------------------

#[tokio::test]
async fn an_oversized_streamed_image_is_refused_without_reading_it_all() {
    let host = HostileHost::start().await;
    let app = spawn_app_with(|c| c.fetch.max_image_bytes = 1 << 20).await;
    let answer = edit_with(&app, &host.url("/huge")).await;
    assert_input_error(&answer, 413, "request_too_large", 0, "is too large: ");
    // The host's body is dropped once we hang up; then count what it managed to hand over.
    tokio::time::timeout(Duration::from_secs(20), host.probe.body_dropped.notified())
        .await
        .expect("the host kept streaming after the refusal");
    let served = host.probe.served.load(Ordering::SeqCst);
    assert!(served < 32 << 20, "the host served {served} of 100 MiB");
}

#[tokio::test]
async fn a_slow_loris_image_host_times_out() {
    let host = HostileHost::start().await;
    let app = spawn_app_with(|c| c.fetch.timeout = Duration::from_millis(600)).await;
    for path in ["/slow", "/stall"] {
        let started = Instant::now();
        let answer = edit_with(&app, &host.url(path)).await;
        assert_input_error(
            &answer,
            400,
            "bad_request",
            0,
            "cannot be used: the request timed out",
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path}: took {:?}",
            started.elapsed()
        );
        assert_eq!(host.hits(path), 1, "{path}: asked once");
    }
    tokio::time::timeout(Duration::from_secs(10), host.probe.body_dropped.notified())
        .await
        .expect("the slow body was not dropped");
}

#[tokio::test]
async fn decompression_bombs_are_refused_from_the_header() {
    let host = HostileHost::start().await;
    let app = spawn_app().await;
    // 100000 x 100000 would be 40 GB of RGBA; the file is a few dozen bytes.
    let bomb = bomb_png(100_000, 100_000);
    assert!(bomb.len() < 100);
    let answer = edit_with(&app, &data_uri(&bomb)).await;
    assert_input_error(
        &answer,
        400,
        "bad_request",
        0,
        "cannot be used: the image is too large: 100000x100000",
    );
    assert!(
        answer.body.get("task_id").is_none(),
        "refused before a task exists"
    );

    let answer = edit_with(&app, &host.url("/bomb")).await;
    assert_input_error(
        &answer,
        400,
        "bad_request",
        0,
        "cannot be used: the image is too large: 100000x100000",
    );

    // One side over 16384, and an area over 50 megapixels with both sides under it.
    for (w, h) in [(16_385, 1), (10_000, 5_001)] {
        let answer = edit_with(&app, &data_uri(&bomb_png(w, h))).await;
        assert_input_error(
            &answer,
            400,
            "bad_request",
            0,
            &format!("cannot be used: the image is too large: {w}x{h}"),
        );
    }
}

#[tokio::test]
async fn non_images_with_an_image_content_type_are_refused() {
    let host = HostileHost::start().await;
    let app = spawn_app().await;
    for path in ["/html", "/svg"] {
        let answer = edit_with(&app, &host.url(path)).await;
        assert_input_error(
            &answer,
            400,
            "bad_request",
            0,
            "cannot be used: not a supported image",
        );
    }
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for bytes in [
        &b"<html>hello</html>"[..],
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"BM6\x00\x00\x00",
        b"\x89PNG\r\n\x1a\n",
        &png(8, 8)[..40],
    ] {
        let answer = edit_with(&app, &format!("data:image/png;base64,{}", b64(bytes))).await;
        assert_input_error(
            &answer,
            400,
            "bad_request",
            0,
            "cannot be used: not a supported image",
        );
    }
}

#[tokio::test]
async fn bad_data_uris_are_refused() {
    use base64::Engine;
    let app = spawn_app().await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(png(4, 4));
    for uri in [
        format!("data:image/png,{b64}"),
        format!("data:image/png;base64{b64}"),
        format!("data:text/plain;base64,{b64}"),
        format!("data:;base64,{b64}"),
        format!("data:,{b64}"),
        format!("data:image/;base64,{b64}"),
        format!("data:image/png;bogus;base64,{b64}"),
        format!("data:image/png;base64;x=y,{b64}"),
        "data:image/png;base64,!!!!".to_owned(),
        "data:image/png;base64,iVBORw0KGgo-_".to_owned(),
        "data:image/png;base64,A".to_owned(),
        format!("data:image/png;base64,{}%3D", &b64[..b64.len() - 1]),
        "data:image/png;base64".to_owned(),
        "data:".to_owned(),
    ] {
        let answer = edit_with(&app, &uri).await;
        assert_input_error(
            &answer,
            400,
            "bad_request",
            0,
            "cannot be used: invalid data URI",
        );
    }
    // Schemes are case-insensitive: an upper-case data URI is one too (checked as one when
    // the request arrives, loaded as one when the task runs).
    let answer = edit_with(&app, &format!("DATA:IMAGE/PNG;BASE64,{b64}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Empty data: nothing to sniff.
    let answer = edit_with(&app, "data:image/png;base64,").await;
    assert_input_error(
        &answer,
        400,
        "bad_request",
        0,
        "cannot be used: not a supported image",
    );

    // Over the cap, the size is refused from the encoded length, before any decoding.
    let app = spawn_app_with(|c| c.fetch.max_image_bytes = 1000).await;
    let answer = edit_with(
        &app,
        &format!("data:image/png;base64,{}", "!".repeat(2 << 20)),
    )
    .await;
    assert_input_error(&answer, 413, "request_too_large", 0, "is too large: ");
}

// ---- request bodies ---------------------------------------------------------------------------

async fn post_raw(app: &TestApp, body: impl Into<reqwest::Body>) -> Answer {
    let response = app
        .client
        .post(format!("{}/nano-banana/images", app.address))
        .header("authorization", format!("Bearer {}", app.token))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    answer(response).await
}

/// A 400 `bad_request` whose message is exactly `expected`.
fn assert_bad_request(answer: &Answer, expected: &str, case: &str) {
    assert_error(answer, 400, "bad_request");
    assert_eq!(message(answer), expected, "{case}");
}

#[tokio::test]
async fn field_limits_are_bad_requests_naming_the_field() {
    let app = spawn_app_with(|c| c.max_prompt_chars = 100).await;

    let answer = app.post_images(json!({"prompt": "x".repeat(101)})).await;
    assert_bad_request(
        &answer,
        "prompt is too long: at most 100 characters.",
        "101 chars",
    );
    // Characters, not bytes: 100 three-byte characters fit.
    let answer = app.post_images(json!({"prompt": "長".repeat(100)})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let small = data_uri(&png(4, 4));
    let answer = app
        .post_images(
            json!({"action": "edit", "prompt": "x", "image_urls": vec![small.clone(); 17]}),
        )
        .await;
    assert_bad_request(
        &answer,
        "image_urls has 17 items: at most 16 are allowed.",
        "17 urls",
    );
    let answer = app
        .post_images(json!({"action": "edit", "prompt": "x", "image_urls": vec![small; 16]}))
        .await;
    assert_eq!(answer.status, 200, "16 inputs are fine: {}", answer.body);

    for count in [
        json!(0),
        json!(5),
        json!("2"),
        json!(1.5),
        json!(-1),
        json!(true),
        json!([1]),
        json!(1e300),
    ] {
        let answer = app
            .post_images(json!({"prompt": "x", "count": count}))
            .await;
        assert_bad_request(
            &answer,
            "count must be an integer from 1 to 4.",
            &count.to_string(),
        );
    }
    // 2^64 does not fit any integer type: serde_json reads it as a float.
    let answer = post_raw(&app, r#"{"prompt": "x", "count": 18446744073709551616}"#).await;
    assert_bad_request(&answer, "count must be an integer from 1 to 4.", "2^64");

    // A megabyte in each string field: refused naming the field, never echoed back.
    let mega = "A".repeat(1 << 20);
    let cases = [
        (json!({"prompt": "x", "model": mega}), "model is invalid."),
        (
            json!({"prompt": "x", "action": mega}),
            "action must be one of: generate, edit.",
        ),
        (
            json!({"prompt": "x", "aspect_ratio": mega}),
            "aspect_ratio must be one of: 1:1, 3:2, 2:3, 16:9, 9:16, 4:3, 3:4.",
        ),
        (
            json!({"prompt": "x", "resolution": mega}),
            "resolution must be one of: 1K, 2K, 4K.",
        ),
        (
            json!({"prompt": "x", "callback_url": mega}),
            "callback_url is too long: at most 4096 characters.",
        ),
        (
            json!({"prompt": mega}),
            "prompt is too long: at most 100 characters.",
        ),
        (
            json!({"action": "edit", "prompt": "x", "image_urls": [format!("https://example.com/{mega}")]}),
            "image_urls[0] is too long: at most 4096 characters.",
        ),
    ];
    for (body, expected) in cases {
        let answer = app.post_images(body).await;
        assert_bad_request(&answer, expected, expected);
        assert!(answer.body.to_string().len() < 1000, "the body stays small");
    }
}

#[tokio::test]
async fn malformed_bodies_are_bad_requests_not_crashes() {
    let app = spawn_app().await;
    // Wrong types and nested garbage, each named.
    let cases = [
        (json!({"prompt": {"$ne": null}}), "prompt must be a string."),
        (json!({"prompt": ["x"]}), "prompt must be a string."),
        (
            json!({"prompt": "x", "model": ["nano-banana"]}),
            "model must be a string.",
        ),
        (
            json!({"prompt": "x", "async": "true"}),
            "async must be a boolean.",
        ),
        (
            json!({"prompt": "x", "callback_url": {"url": "http://x/"}}),
            "callback_url must be a string.",
        ),
        (
            json!({"prompt": "x", "action": {"edit": true}}),
            "action must be a string.",
        ),
        (
            json!({"action": "edit", "prompt": "x", "image_urls": [["https://a/b.png"]]}),
            "image_urls[0] must be a string.",
        ),
        (
            json!({"action": "edit", "prompt": "x", "image_urls": {"0": "https://a/b.png"}}),
            "image_urls must be an array of strings.",
        ),
        (
            json!({"action": "edit", "prompt": "x", "image_urls": [null]}),
            "image_urls[0] must be a string.",
        ),
        (json!(null), "the request body must be a JSON object."),
        (json!(0), "the request body must be a JSON object."),
        (json!(true), "the request body must be a JSON object."),
        (json!("x"), "the request body must be a JSON object."),
        (json!([]), "the request body must be a JSON object."),
        (
            json!([{"prompt": "x"}]),
            "the request body must be a JSON object.",
        ),
    ];
    for (body, expected) in cases {
        let answer = app.post_images(body.clone()).await;
        assert_bad_request(&answer, expected, &body.to_string());
    }

    // Not JSON at all: a 400 that says so.
    let mut raw: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("truncated".into(), br#"{"prompt": "x""#.to_vec()),
        (
            "trailing".into(),
            br#"{"prompt": "x"} {"prompt": "y"}"#.to_vec(),
        ),
        ("single quotes".into(), b"{'prompt': 'x'}".to_vec()),
        ("comment".into(), b"{\"prompt\": \"x\" /* hi */}".to_vec()),
        ("NaN".into(), br#"{"prompt": "x", "count": NaN}"#.to_vec()),
        (
            "huge exponent".into(),
            br#"{"prompt": "x", "count": 1e999999}"#.to_vec(),
        ),
        ("lone surrogate".into(), br#"{"prompt": "\ud800"}"#.to_vec()),
        ("bad escape".into(), br#"{"prompt": "\x41"}"#.to_vec()),
        (
            "raw control character".into(),
            b"{\"prompt\": \"a\x01b\"}".to_vec(),
        ),
        (
            "UTF-8 BOM".into(),
            b"\xef\xbb\xbf{\"prompt\": \"x\"}".to_vec(),
        ),
        (
            "invalid UTF-8".into(),
            b"{\"prompt\": \"\xff\xfe\"}".to_vec(),
        ),
        (
            "overlong UTF-8".into(),
            b"{\"prompt\": \"\xc0\xaf\"}".to_vec(),
        ),
        (
            "UTF-8 surrogate".into(),
            b"{\"prompt\": \"\xed\xa0\x80\"}".to_vec(),
        ),
        ("cut UTF-8".into(), b"{\"prompt\": \"\xe9\xab\"}".to_vec()),
        (
            "UTF-16".into(),
            "{\"prompt\": \"x\"}"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
        ),
        ("NUL bytes".into(), vec![0; 64]),
    ];
    // Deep nesting: serde_json's recursion limit (128) makes these errors, not stack overflows.
    let deep = 100_000;
    raw.push(("100k [".into(), "[".repeat(deep).into_bytes()));
    raw.push((
        "100k [ closed".into(),
        format!("{}{}", "[".repeat(deep), "]".repeat(deep)).into_bytes(),
    ));
    raw.push(("100k {".into(), "{\"a\":".repeat(deep).into_bytes()));
    raw.push((
        "deep unknown field".into(),
        format!(
            r#"{{"prompt": "x", "extra": {}1{}}}"#,
            "[".repeat(deep),
            "]".repeat(deep)
        )
        .into_bytes(),
    ));
    for (case, bytes) in raw {
        let answer = post_raw(&app, bytes).await;
        assert_error(&answer, 400, "bad_request");
        assert!(
            message(&answer).starts_with("The request body is not valid JSON"),
            "{case}: {}",
            answer.body
        );
    }
    // Depth up to the limit is fine; it is the content that decides.
    let answer = post_raw(
        &app,
        format!(
            r#"{{"prompt": "x", "extra": {}1{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Strange but valid text is a prompt like any other.
    let answer = app
        .post_images(json!({"prompt": "a\u{0}b\u{202e}c\u{200b}\u{1f600}\u{fffd}\r\n\t\u{7f}"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn bodies_over_the_limit_are_request_too_large() {
    let app = spawn_app_with(|c| c.max_body_bytes = 4096).await;
    let big = json!({"prompt": "x".repeat(5000)}).to_string();
    // With a Content-Length ...
    let answer = post_raw(&app, big.clone()).await;
    assert_error(&answer, 413, "request_too_large");
    // ... and streamed without one, so the limit is on what is read, not on what is declared.
    let chunks: Vec<Result<Bytes, std::io::Error>> = big
        .into_bytes()
        .chunks(512)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let answer = post_raw(
        &app,
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_error(&answer, 413, "request_too_large");
    // Just under the limit is read and judged on its content.
    let answer = post_raw(&app, json!({"prompt": "x".repeat(3000)}).to_string()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn the_tasks_endpoint_survives_the_same_garbage() {
    let app = spawn_app().await;
    let post = |body: Vec<u8>| {
        let request = app
            .client
            .post(format!("{}/nano-banana/tasks", app.address))
            .header("authorization", format!("Bearer {}", app.token))
            .body(body);
        async move { answer(request.send().await.expect("request sent")).await }
    };
    for body in [
        "[".repeat(100_000).into_bytes(),
        b"{\"id\": \"\xff\"}".to_vec(),
        b"null".to_vec(),
        br#"{"id": {"$gt": ""}}"#.to_vec(),
        br#"{"action": "retrieve_batch", "ids": [1]}"#.to_vec(),
        json!({"action": "retrieve_batch", "ids": vec!["x"; 51]})
            .to_string()
            .into_bytes(),
    ] {
        let answer = post(body).await;
        assert_error(&answer, 400, "bad_request");
    }
    // An absurd id is simply unknown.
    let answer = post(json!({"id": "x".repeat(1 << 20)}).to_string().into_bytes()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, Value::Object(Default::default()));
}

#[tokio::test]
async fn the_server_still_answers_after_all_of_it() {
    // A smoke check that the worst bodies above did not take the process down with them: the
    // same app answers a normal request after each.
    let app = spawn_app().await;
    for bytes in [
        "[".repeat(100_000).into_bytes(),
        vec![0xff; 1024],
        Vec::new(),
    ] {
        assert_eq!(post_raw(&app, bytes).await.status, 400);
        let answer = app.post_images(json!({"prompt": "still here"})).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}
