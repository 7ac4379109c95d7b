//! Unit tests of the outbound-request policy: hostile URLs and addresses refused without a
//! connection, the allow list, redirects and size caps against real servers on 127.0.0.1.
//! Hostnames resolve from canned answers or are `localhost` names, which never reach DNS, so no
//! test emits a real query. The resolver's and the image module's (`data:` URIs, sniffing) own
//! tests sit in those files and borrow the `pub(super)` fixtures here.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Notify;

use super::*;
// The image crate, which the glob above would make ambiguous with `super::image`.
use ::image;

// ---- fixtures -------------------------------------------------------------------------

pub(super) fn encode(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

pub(super) fn png(w: u32, h: u32) -> Vec<u8> {
    encode(w, h, image::ImageFormat::Png)
}

/// A valid PNG whose IHDR declares `w` x `h` (CRC fixed up), with a 1x1 image's data.
pub(super) fn patched_png(w: u32, h: u32) -> Vec<u8> {
    let mut p = png(1, 1);
    assert_eq!(&p[12..16], b"IHDR");
    p[16..20].copy_from_slice(&w.to_be_bytes());
    p[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32fast::hash(&p[12..29]);
    p[29..33].copy_from_slice(&crc.to_be_bytes());
    p
}

/// A default policy plus these allow rules. Shared with the resolver's tests, like the other
/// `pub(super)` fixtures with the image module's.
pub(super) fn policy(allow: &[&str]) -> FetchPolicy {
    FetchPolicy {
        allow: allow.iter().map(|r| r.parse().unwrap()).collect(),
        ..FetchPolicy::default()
    }
}

/// A fetcher whose DNS answers come from `hosts` only, so no test can emit a real query.
fn fetcher_with_hosts(policy: FetchPolicy, hosts: &[(&str, &[&str])]) -> Fetcher {
    let map = hosts
        .iter()
        .map(|(h, ips)| {
            (
                h.to_string(),
                ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            )
        })
        .collect();
    Fetcher::build(policy, Lookup::Fixed(map)).unwrap()
}

pub(super) fn fetcher(policy: FetchPolicy) -> Fetcher {
    fetcher_with_hosts(policy, &[])
}

// ---- a loopback image host ------------------------------------------------------------

#[derive(Default)]
struct Probe {
    served: AtomicU64,
    body_dropped: Notify,
}

/// Signals when the server's streaming body is dropped, i.e. the connection is gone.
struct DropSignal(Arc<Probe>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.body_dropped.notify_one();
    }
}

struct TestServer {
    addr: SocketAddr,
    probe: Arc<Probe>,
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn png_response() -> Response {
    ([(header::CONTENT_TYPE, "image/png")], png(4, 3)).into_response()
}

async fn serve(bind: &str) -> TestServer {
    let listener = tokio::net::TcpListener::bind((bind, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let probe = Arc::new(Probe::default());
    let huge_probe = probe.clone();
    let slow_probe = probe.clone();
    let app = Router::new()
        .route("/png", get(|| async { png_response() }))
        .route(
            "/text",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "image/png")],
                    "<html>not an image</html>",
                )
            }),
        )
        .route(
            "/bomb",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "image/png")],
                    patched_png(100_000, 100_000),
                )
            }),
        )
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "nope") }),
        )
        .route(
            "/redirect",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                (StatusCode::FOUND, [(header::LOCATION, q["to"].clone())])
            }),
        )
        .route(
            "/chain/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    png_response()
                } else {
                    let next = format!("/chain/{}", n - 1);
                    (StatusCode::FOUND, [(header::LOCATION, next)]).into_response()
                }
            }),
        )
        // 2 MiB with an honest Content-Length.
        .route("/declared", get(|| async { vec![0u8; 2 << 20] }))
        // Up to 100 MiB, chunked (no Content-Length), counting what it hands to the socket.
        .route(
            "/huge",
            get(move || {
                let probe = huge_probe.clone();
                async move {
                    let stream = futures_util::stream::unfold(DropSignal(probe), |g| async move {
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
                let probe = slow_probe.clone();
                async move {
                    let stream = futures_util::stream::unfold(DropSignal(probe), |g| async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), g))
                    });
                    Body::from_stream(stream)
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestServer { addr, probe }
}

fn assert_refused<T: fmt::Debug>(r: Result<T, FetchError>, what: &str) {
    match r {
        Err(FetchError::Refused(_)) => {}
        other => panic!("{what}: expected Refused, got {other:?}"),
    }
}

// ---- hostile URLs, refused without any connection ---------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Refused,
    BadUrl,
}

fn kind(e: &FetchError) -> Option<Want> {
    match e {
        FetchError::Refused(_) => Some(Want::Refused),
        FetchError::BadUrl(_) => Some(Want::BadUrl),
        _ => None,
    }
}

const HOSTILE: &[(&str, Want)] = &[
    ("http://2130706433/", Want::Refused),
    ("http://0177.0.0.1/", Want::Refused),
    ("http://0x7f.0.0.1/", Want::Refused),
    ("http://0x7f000001/", Want::Refused),
    ("http://017700000001/", Want::Refused),
    ("http://127.1/", Want::Refused),
    ("http://127.0.0.1./", Want::Refused),
    ("http://127.0.0.1:8080/x.png", Want::Refused),
    ("http://[::1]/", Want::Refused),
    ("http://[::]/", Want::Refused),
    ("http://[::ffff:127.0.0.1]/", Want::Refused),
    ("http://[::ffff:7f00:1]/", Want::Refused),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", Want::Refused),
    ("http://[::ffff:a9fe:a9fe]/", Want::Refused),
    ("http://[::127.0.0.1]/", Want::Refused),
    ("http://0.0.0.0/", Want::Refused),
    ("http://0/", Want::Refused),
    ("http://169.254.169.254/latest/meta-data/", Want::Refused),
    ("http://[fd00::1]/", Want::Refused),
    ("http://[fe80::1]/", Want::Refused),
    ("http://[fec0::1]/", Want::Refused),
    ("http://[ff02::1]/", Want::Refused),
    ("http://[2001:db8::1]/", Want::Refused),
    ("http://[100::1]/", Want::Refused),
    ("http://100.64.0.1/", Want::Refused),
    ("http://192.168.1.1/", Want::Refused),
    ("http://10.0.0.1/", Want::Refused),
    ("http://172.16.0.1/", Want::Refused),
    ("http://172.31.255.255/", Want::Refused),
    ("http://198.18.0.1/", Want::Refused),
    ("http://192.0.0.1/", Want::Refused),
    ("http://192.0.2.1/", Want::Refused),
    ("http://192.88.99.1/", Want::Refused),
    ("http://198.51.100.7/", Want::Refused),
    ("http://203.0.113.9/", Want::Refused),
    ("http://224.0.0.1/", Want::Refused),
    ("http://240.0.0.1/", Want::Refused),
    ("http://255.255.255.255/", Want::Refused),
    ("http://[64:ff9b::7f00:1]/", Want::Refused),
    ("http://[64:ff9b::a9fe:a9fe]/", Want::Refused),
    ("http://[64:ff9b:1::808:808]/", Want::Refused),
    ("http://[2002:7f00:1::]/", Want::Refused),
    ("http://[2002:a00:1::1]/", Want::Refused),
    ("https://[::ffff:10.0.0.1]/", Want::Refused),
    ("http://localhost/", Want::Refused),
    ("http://localhost./", Want::Refused),
    ("HTTP://LOCALHOST:8080/", Want::Refused),
    ("http://metadata.localhost/", Want::Refused),
    ("file:///etc/passwd", Want::Refused),
    ("gopher://x/", Want::Refused),
    ("ftp://x/", Want::Refused),
    ("ws://x/", Want::Refused),
    ("javascript:alert(1)", Want::Refused),
    ("http://user:pass@example.com/", Want::Refused),
    ("http://example.com@127.0.0.1/", Want::Refused),
    ("http://127.0.0.1:80@example.com/", Want::Refused),
    ("http:///nohost", Want::BadUrl),
    ("http:/127.0.0.1/", Want::BadUrl),
    ("http:127.0.0.1/", Want::BadUrl),
    ("http:\\\\127.0.0.1\\", Want::BadUrl),
    ("http://127.0.0.1\t/", Want::BadUrl),
    ("http://exa\nmple.com/", Want::BadUrl),
    (" http://example.com/", Want::BadUrl),
    ("http://example.com/ ", Want::BadUrl),
    ("http://exa mple.com/", Want::BadUrl),
    ("http://evil.com\\@127.0.0.1/", Want::BadUrl),
    ("//127.0.0.1/", Want::BadUrl),
    ("", Want::BadUrl),
    ("http://", Want::BadUrl),
    ("http://[::1/", Want::BadUrl),
    ("http://256.0.0.1/", Want::BadUrl),
];

#[tokio::test]
async fn hostile_urls_are_refused_without_connecting() {
    assert!(HOSTILE.len() >= 30);
    let f = fetcher(FetchPolicy::default());
    for (raw, want) in HOSTILE {
        // check_url first: a literal that slipped through must fail here, before load_image
        // could try to connect to it.
        let e = f.check_url(raw).expect_err(raw);
        assert_eq!(kind(&e), Some(*want), "check_url({raw:?}) gave {e:?}");
        let e = f.load_image(raw).await.expect_err(raw);
        assert_eq!(kind(&e), Some(*want), "load_image({raw:?}) gave {e:?}");
        let e = f.request(reqwest::Method::POST, raw).expect_err(raw);
        assert_eq!(kind(&e), Some(*want), "request({raw:?}) gave {e:?}");
    }
}

#[test]
fn public_urls_pass_check_url() {
    let f = fetcher(FetchPolicy::default());
    for raw in [
        "https://example.com/a.png",
        "http://example.com:8080/a.png?x=1#frag",
        "https://images.example.org./a.png",
        "http://8.8.8.8/",
        "http://[2606:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
        "http://[64:ff9b::808:808]/",
        "http://[2002:808:808::1]/",
        "HTTPS://EXAMPLE.COM/",
        "https://example.com/my image.png",
    ] {
        assert!(f.check_url(raw).is_ok(), "{raw} should pass");
    }
}

#[test]
fn address_classification() {
    let refused = [
        "0.1.2.3",
        "10.1.1.1",
        "100.127.255.255",
        "127.255.0.1",
        "169.254.0.1",
        "172.20.0.1",
        "192.168.255.255",
        "198.19.255.255",
        "239.255.255.255",
        "250.1.1.1",
        "::",
        "::1",
        "::ffff:0.0.0.0",
        "::ffff:192.168.0.1",
        "fc00::1",
        "fdff::1",
        "febf::1",
        "ff0e::1",
        "2001:db8:ffff::1",
        "100::ffff",
        "2002:c0a8:101::",
        "2001:0:4136:e378::1",
        "5f00::1",
    ];
    for ip in refused {
        assert!(!is_global(ip.parse().unwrap()), "{ip} must be refused");
    }
    let global = [
        "1.1.1.1",
        "8.8.8.8",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.1",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
        "2606:4700::1",
        "2a00:1450::1",
        "::ffff:1.1.1.1",
        "64:ff9b::101:101",
        "2002:101:101::",
        "100:0:0:1::",
    ];
    for ip in global {
        assert!(is_global(ip.parse().unwrap()), "{ip} must be global");
    }
}

#[test]
fn allow_rules_parse() {
    let net = |s: &str| AllowRule::Net(s.parse().unwrap());
    assert_eq!(
        "10.0.0.0/8".parse::<AllowRule>().unwrap(),
        net("10.0.0.0/8")
    );
    assert_eq!(
        "127.0.0.1/32".parse::<AllowRule>().unwrap(),
        net("127.0.0.1/32")
    );
    assert_eq!("::1/128".parse::<AllowRule>().unwrap(), net("::1/128"));
    assert_eq!("10.1.2.3".parse::<AllowRule>().unwrap(), net("10.1.2.3/32"));
    assert_eq!(
        "10.1.2.3/8".parse::<AllowRule>().unwrap(),
        net("10.0.0.0/8")
    );
    assert_eq!(
        " Images.Internal. ".parse::<AllowRule>().unwrap(),
        AllowRule::Host("images.internal".into())
    );
    assert_eq!(
        "images.internal".parse::<AllowRule>().unwrap().to_string(),
        "images.internal"
    );
    for bad in [
        "",
        "10.0.0.0/33",
        "::1/129",
        "bad host",
        "a..b",
        "http://x",
        "x/y",
        "*.example.com",
    ] {
        assert!(
            matches!(bad.parse::<AllowRule>(), Err(FetchError::BadConfig(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn allow_list_opens_exactly_what_it_names() {
    let f = fetcher(policy(&["127.0.0.1/32", "images.localhost", "fd00:1::/64"]));
    assert!(f.check_url("http://127.0.0.1:9/").is_ok());
    assert!(f.check_url("http://[::ffff:127.0.0.1]:9/").is_ok());
    assert!(f.check_url("http://2130706433:9/").is_ok());
    assert_refused(f.check_url("http://127.0.0.2:9/"), "127.0.0.2");
    assert_refused(f.check_url("http://[::1]:9/"), "::1");
    assert!(f.check_url("http://[fd00:1::5]/").is_ok());
    assert_refused(f.check_url("http://[fd00:2::5]/"), "fd00:2::5");
    assert_refused(f.check_url("http://10.0.0.1/"), "10.0.0.1");
    assert!(f.check_url("http://images.localhost/").is_ok());
    assert!(f.check_url("http://IMAGES.localhost./").is_ok());
    // localhost itself resolves to 127.0.0.1 (allowed) and ::1 (dropped later).
    assert!(f.check_url("http://localhost/").is_ok());

    let f = fetcher(policy(&["images.localhost"]));
    assert!(f.check_url("http://images.localhost/").is_ok());
    assert_refused(f.check_url("http://other.localhost/"), "other.localhost");
    assert_refused(
        f.check_url("http://sub.images.localhost/"),
        "sub.images.localhost",
    );
    assert_refused(f.check_url("http://localhost/"), "localhost");
    assert_refused(
        f.check_url("http://127.0.0.1/"),
        "127.0.0.1 with a host rule only",
    );

    let f = fetcher(FetchPolicy {
        allow_private: true,
        ..FetchPolicy::default()
    });
    assert!(f.check_url("http://127.0.0.1/").is_ok());
    assert!(f.check_url("http://[fd00::1]/").is_ok());
    assert!(f.check_url("http://localhost/").is_ok());
    assert_refused(f.check_url("file:///etc/passwd"), "file with allow_private");
    assert_refused(
        f.check_url("http://u:p@127.0.0.1/"),
        "userinfo with allow_private",
    );
}

// ---- real loopback servers -------------------------------------------------------------

#[tokio::test]
async fn fetches_png_from_an_allowed_loopback_host_only() {
    let srv = serve("127.0.0.1").await;
    let img = fetcher(policy(&["127.0.0.1/32"]))
        .load_image(&srv.url("/png"))
        .await
        .unwrap();
    assert_eq!((img.mime_type, img.width, img.height), ("image/png", 4, 3));
    assert_eq!(&img.bytes[..], &png(4, 3)[..]);

    assert_refused(
        fetcher(FetchPolicy::default())
            .load_image(&srv.url("/png"))
            .await,
        "default",
    );
    assert_refused(
        fetcher(policy(&["127.0.0.2/32"]))
            .load_image(&srv.url("/png"))
            .await,
        "other /32",
    );
}

#[tokio::test]
async fn hostnames_go_through_the_filtering_resolver() {
    let srv = serve("127.0.0.1").await;
    let port = srv.addr.port();
    // `localhost` resolves to loopback, and the client (used for callbacks) refuses it even
    // without check_url.
    let f = Fetcher::new(FetchPolicy::default()).unwrap();
    let err = f
        .client()
        .get(format!("http://localhost:{port}/png"))
        .send()
        .await
        .unwrap_err();
    assert_refused(
        Err::<(), _>(FetchError::from(err)),
        "localhost via client()",
    );
    assert_refused(
        f.load_image(&format!("http://localhost:{port}/png")).await,
        "localhost",
    );

    // A name whose DNS answer is loopback (rebinding-style) is refused by the resolver.
    let hosts: &[(&str, &[&str])] = &[
        ("evil.test", &["127.0.0.1"]),
        ("images.test", &["127.0.0.1"]),
        ("mixed.test", &["127.0.0.2", "127.0.0.1"]),
    ];
    let f = fetcher_with_hosts(FetchPolicy::default(), hosts);
    assert!(
        f.check_url(&format!("http://evil.test:{port}/png")).is_ok(),
        "no DNS in check_url"
    );
    assert_refused(
        f.load_image(&format!("http://evil.test:{port}/png")).await,
        "evil.test",
    );
    let err = f
        .client()
        .post(format!("http://evil.test:{port}/png"))
        .send()
        .await
        .unwrap_err();
    assert_refused(
        Err::<(), _>(FetchError::from(err)),
        "evil.test via client()",
    );

    // A hostname rule opens that name, whatever it resolves to, and no other.
    let f = fetcher_with_hosts(policy(&["images.test"]), hosts);
    assert!(
        f.load_image(&format!("http://images.test:{port}/png"))
            .await
            .is_ok()
    );
    assert!(
        f.load_image(&format!("http://images.test.:{port}/png"))
            .await
            .is_ok()
    );
    assert_refused(
        f.load_image(&format!("http://evil.test:{port}/png")).await,
        "evil.test",
    );
    let f = Fetcher::new(policy(&["images.localhost"])).unwrap();
    assert!(
        f.load_image(&format!("http://images.localhost:{port}/png"))
            .await
            .is_ok()
    );
    assert_refused(
        f.load_image(&format!("http://other.localhost:{port}/png"))
            .await,
        "other",
    );

    // A CIDR rule keeps only the matching answers.
    let f = fetcher_with_hosts(policy(&["127.0.0.1/32"]), hosts);
    assert!(
        f.load_image(&format!("http://mixed.test:{port}/png"))
            .await
            .is_ok()
    );
    assert!(
        f.load_image(&format!("http://localhost:{port}/png"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn redirects_are_checked_on_every_hop() {
    let srv = serve("127.0.0.1").await;
    let port = srv.addr.port();
    let hosts: &[(&str, &[&str])] = &[("evil.test", &["127.0.0.2"])];
    let f = fetcher_with_hosts(policy(&["127.0.0.1/32"]), hosts);
    let via = |to: String| srv.url(&format!("/redirect?to={}", url_escape(&to)));

    // Same allowed host: followed.
    let img = f.load_image(&via("/png".into())).await.unwrap();
    assert_eq!(img.mime_type, "image/png");
    let img = f.load_image(&via(srv.url("/png"))).await.unwrap();
    assert_eq!(img.width, 4);

    for target in [
        format!("http://[::1]:{port}/png"),
        format!("http://127.0.0.2:{port}/png"),
        format!("http://[::ffff:127.0.0.2]:{port}/png"),
        format!("http://0x7f.0.0.2:{port}/png"),
        format!("http://169.254.169.254:{port}/latest/meta-data/"),
        format!("http://[fd00::1]:{port}/png"),
        format!("http://evil.test:{port}/png"),
        format!("http://user:pw@127.0.0.1:{port}/png"),
        "file:///etc/passwd".to_string(),
        "gopher://127.0.0.1/".to_string(),
    ] {
        assert_refused(f.load_image(&via(target.clone())).await, &target);
    }
}

#[tokio::test]
async fn redirect_from_an_allowed_host_to_a_refused_literal_elsewhere() {
    // Needs 127.0.0.2 to be bindable (it is on Linux); the target 127.0.0.1 is refused.
    let Ok(probe) = tokio::net::TcpListener::bind(("127.0.0.2", 0)).await else {
        eprintln!("127.0.0.2 not bindable here; skipped");
        return;
    };
    drop(probe);
    let srv = serve("127.0.0.2").await;
    let target = serve("127.0.0.1").await;
    let f = fetcher(policy(&["127.0.0.2/32"]));
    assert!(f.load_image(&srv.url("/png")).await.is_ok());
    let port = target.addr.port();
    for to in [
        format!("http://2130706433:{port}/png"),
        format!("http://127.1:{port}/png"),
    ] {
        let raw = srv.url(&format!("/redirect?to={}", url_escape(&to)));
        assert_refused(f.load_image(&raw).await, &to);
    }
}

#[tokio::test]
async fn redirect_hops_are_capped() {
    let srv = serve("127.0.0.1").await;
    let f = fetcher(FetchPolicy {
        max_redirects: 3,
        ..policy(&["127.0.0.1/32"])
    });
    assert!(f.load_image(&srv.url("/chain/3")).await.is_ok());
    assert_refused(f.load_image(&srv.url("/chain/4")).await, "4 redirects");
    let f = fetcher(FetchPolicy {
        max_redirects: 0,
        ..policy(&["127.0.0.1/32"])
    });
    assert!(f.load_image(&srv.url("/chain/0")).await.is_ok());
    assert_refused(
        f.load_image(&srv.url("/chain/1")).await,
        "1 redirect with max 0",
    );
}

#[tokio::test]
async fn oversized_streamed_body_stops_early() {
    let srv = serve("127.0.0.1").await;
    let f = fetcher(FetchPolicy {
        max_image_bytes: 1 << 20,
        ..policy(&["127.0.0.1/32"])
    });
    let err = f.load_image(&srv.url("/huge")).await.unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit } if limit == 1 << 20),
        "{err:?}"
    );
    assert!(err.is_too_large());
    // The server's body is dropped once we hang up; then count what it managed to hand over.
    tokio::time::timeout(Duration::from_secs(20), srv.probe.body_dropped.notified())
        .await
        .expect("the server kept streaming after TooLarge");
    let served = srv.probe.served.load(Ordering::SeqCst);
    eprintln!("served {served} bytes before the client hung up");
    assert!(served < 32 << 20, "served {served} bytes of 100 MiB");
}

#[tokio::test]
async fn declared_oversize_is_refused() {
    let srv = serve("127.0.0.1").await;
    let f = fetcher(FetchPolicy {
        max_image_bytes: 1 << 20,
        ..policy(&["127.0.0.1/32"])
    });
    assert!(
        f.load_image(&srv.url("/declared"))
            .await
            .unwrap_err()
            .is_too_large()
    );
}

#[tokio::test]
async fn slow_loris_times_out() {
    let srv = serve("127.0.0.1").await;
    let f = fetcher(FetchPolicy {
        timeout: Duration::from_millis(400),
        ..policy(&["127.0.0.1/32"])
    });
    let err = f.load_image(&srv.url("/slow")).await.unwrap_err();
    assert!(matches!(err, FetchError::Timeout), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn bad_answers_are_classified() {
    let srv = serve("127.0.0.1").await;
    let f = fetcher(policy(&["127.0.0.1/32"]));
    let err = f.load_image(&srv.url("/text")).await.unwrap_err();
    assert!(matches!(err, FetchError::NotAnImage(_)), "{err:?}");
    let err = f.load_image(&srv.url("/bomb")).await.unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::TooManyPixels {
                width: 100_000,
                height: 100_000
            }
        ),
        "{err:?}"
    );
    let err = f.load_image(&srv.url("/missing")).await.unwrap_err();
    assert!(matches!(err, FetchError::Status(404)), "{err:?}");
    assert!(!err.is_retryable());

    // Nothing listens on a just-closed port.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = f
        .load_image(&format!("http://127.0.0.1:{port}/png"))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Unreachable(_)), "{err:?}");
    assert!(err.is_retryable());
}

fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
