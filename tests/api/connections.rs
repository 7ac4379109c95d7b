//! The connection layer: HTTP/1.1 and HTTP/2 with prior knowledge on one port, told apart from
//! bytes peeked at (so HTTP/1.1 reads each request into one buffer), whatever the way the first
//! bytes arrive; connections that never send a request closed at shutdown, and those that send
//! no whole request head in time closed at once; a client that half-closes after its request
//! still answered.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario};

use crate::helpers::{Answer, assert_error, spawn_app, spawn_app_with};

fn host_port(app: &crate::helpers::TestApp) -> &str {
    app.address.trim_start_matches("http://")
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_on_the_same_port() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let health = client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.version(), reqwest::Version::HTTP_2);
    assert_eq!(health.status(), 200);
    let answer = client
        .post(format!("{}/nano-banana/images", app.address))
        .bearer_auth(&app.token)
        .json(&json!({"prompt": "over h2c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["success"], true, "{body}");
    assert!(body["data"][0]["image_url"].is_string(), "{body}");
    // And HTTP/1.1 next to it.
    let health = app.get("/healthz").await;
    assert_eq!(health.version(), reqwest::Version::HTTP_11);
    assert_eq!(health.status(), 200);
}

/// Reads one HTTP/1.1 answer sent with `Connection: close` to its end.
async fn exchange(stream: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answered in time")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.get(9..12))
        .expect("a status line");
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("a header line");
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    Answer {
        status: StatusCode::from_bytes(status.as_bytes()).unwrap(),
        headers,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

/// A sync generate request as raw HTTP/1.1, with `extra_headers` (each ending in CRLF).
fn raw_generate(app: &crate::helpers::TestApp, prompt: &str, extra_headers: &str) -> String {
    let body = json!({ "prompt": prompt }).to_string();
    format!(
        "POST /nano-banana/images HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        app.token,
        body.len(),
    )
}

/// A successful sync generate: 200 with an image URL.
fn assert_image_answer(answer: &Answer) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body["data"][0]["image_url"].is_string(),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn a_request_whose_first_byte_arrives_alone_is_served_as_http1() {
    // "P" is also how the HTTP/2 preface ("PRI * HTTP/2.0…") starts: the server must wait for
    // more before it decides, then serve HTTP/1.1.
    let app = spawn_app().await;
    let request = raw_generate(&app, "slow start", "Connection: close\r\n");
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(&request.as_bytes()[..1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    stream.write_all(&request.as_bytes()[1..]).await.unwrap();
    assert_image_answer(&exchange(&mut stream).await);

    // The same with a prefix of the preface that then turns out not to be one: plain
    // HTTP/1.1 garbage, refused by the HTTP/1.1 server, not held open.
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(b"PRI * HT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    stream
        .write_all(b"XP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(exchange(&mut stream).await.status, 400);

    // A request the router refuses still gets the contract's answer after a split start.
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    stream
        .write_all(
            b"UT /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    assert_error(&exchange(&mut stream).await, 404, "no_api");
}

#[tokio::test]
async fn connections_that_never_sent_a_request_do_not_hold_the_shutdown() {
    let app = spawn_app().await;
    let mut silent = TcpStream::connect(host_port(&app)).await.unwrap();
    let mut partial = TcpStream::connect(host_port(&app)).await.unwrap();
    partial.write_all(b"PRI * HTTP/2").await.unwrap();
    // Give the server time to accept both.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the server stops with idle connections open");
    for stream in [&mut silent, &mut partial] {
        let rest = assert_closed_by_server(stream).await;
        assert!(rest.is_empty(), "{rest:?}");
    }
}

#[tokio::test]
async fn running_out_of_file_descriptors_pauses_accepting_until_some_are_free() {
    use std::os::unix::process::CommandExt;
    const LIMIT: u64 = 64;
    let data = tempfile::tempdir().unwrap();
    let port = nano_banana_testkit::free_port();
    // Nothing listens on the upstream's port: only /healthz is asked for.
    let mut command = crate::procs::server_command(data.path(), port, "http://127.0.0.1:9", &[]);
    // SAFETY: the closure runs in the child between fork and exec and only calls setrlimit,
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut server = crate::procs::start(command, port).await;
    let address = format!("127.0.0.1:{port}");
    // More connections than the server may have files: the kernel completes them all, the
    // server accepts until it is out of descriptors and leaves the rest in the backlog.
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    let health = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut waiting = TcpStream::connect(&address).await.unwrap();
    waiting.write_all(health).await.unwrap();
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_secs(1), waiting.read_to_end(&mut answer)).await;
    assert!(
        early.is_err(),
        "answered while out of descriptors: {answer:?}"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );

    // Freed descriptors: the server accepts again, the waiting request is answered.
    drop(held);
    let answer = exchange(&mut waiting).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["status"], "ok");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    // Some clients shut down their sending side once the request is out (`shutdown(SHUT_WR)`).
    // The server does not read on while a request is handled, so it does not take that for a
    // client gone away.
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    fake.push_scenario(Scenario::Slow(Duration::from_millis(300)));
    let base_url = fake.base_url();
    let app = spawn_app_with(move |c| {
        crate::helpers::use_gemini(c, &base_url, "k");
    })
    .await;
    let request = raw_generate(&app, "half closed", "");
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_image_answer(&exchange(&mut stream).await);
    assert_eq!(fake.request_count(), 1);
}

/// Closed by the server: an end of stream, or a reset where bytes we sent were left unread.
async fn assert_closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("closed by the server");
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }
    rest
}

#[tokio::test]
async fn a_connection_that_sends_no_whole_request_head_in_time_is_closed() {
    let app = spawn_app_with(|c| c.request_head_timeout = Duration::from_secs(1)).await;
    let mut silent = TcpStream::connect(host_port(&app)).await.unwrap();
    let mut partial = TcpStream::connect(host_port(&app)).await.unwrap();
    partial
        .write_all(b"POST /nano-banana/images HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut preface = TcpStream::connect(host_port(&app)).await.unwrap();
    preface.write_all(b"PRI * HTTP/2").await.unwrap();
    assert!(assert_closed_by_server(&mut silent).await.is_empty());
    let answered = assert_closed_by_server(&mut partial).await;
    // hyper may say why before closing; it never answers the half-sent request.
    assert!(
        answered.is_empty() || answered.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answered)
    );
    assert_closed_by_server(&mut preface).await;
    // The server still serves.
    let health = reqwest::get(format!("{}/healthz", app.address))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_request_longer_than_the_head_timeout_is_answered_then_the_idle_connection_closed() {
    // The head's clock runs only while the server waits for a request: not while one is handled
    // (here 1.5 s upstream against a 1 s limit). Once answered, the kept-alive connection is
    // closed when no next request comes in time (the answer is read to the end of the stream).
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    fake.push_scenario(Scenario::Slow(Duration::from_millis(1500)));
    let base_url = fake.base_url();
    let app = spawn_app_with(move |c| {
        crate::helpers::use_gemini(c, &base_url, "k");
        c.request_head_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    stream
        .write_all(raw_generate(&app, "slow", "").as_bytes())
        .await
        .unwrap();
    assert_image_answer(&exchange(&mut stream).await);
    assert_eq!(fake.request_count(), 1);
}
