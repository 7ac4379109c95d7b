//! The provider's tests: calls against the fake upstream over both transports and through TLS
//! fronts, and the configuration checks. Parsing the answer and classifying errors are tested in
//! `wire` and `errors`; the fake itself in `crate::fake::gemini`.

use base64::Engine as _;
use base64::engine::general_purpose;
use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::domain::{AspectRatio, Resolution};
use crate::fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario, THOUGHT_IMAGE_SIDE};
use crate::providers::InputImage;

const KEY: &str = "test-key-123";

async fn fake() -> FakeGemini {
    FakeGemini::start(FakeGeminiOptions {
        api_key: Some(KEY.to_owned()),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn config(base_url: &str) -> GeminiConfig {
    GeminiConfig {
        base_url: Url::parse(base_url).unwrap(),
        ..GeminiConfig::new(KEY)
    }
}

fn provider(fake: &FakeGemini) -> GeminiProvider {
    GeminiProvider::new(config(&fake.base_url())).unwrap()
}

/// `config`, speaking cleartext HTTP/2 (on our own connections) when `h2c`.
fn transport_config(base_url: &str, h2c: bool) -> GeminiConfig {
    GeminiConfig {
        connections: ConnectionSettings {
            h2c,
            ..ConnectionSettings::default()
        },
        ..config(base_url)
    }
}

/// Over HTTP/1.1 through reqwest, and over HTTP/2 on connections of our own (`direct`).
fn both_transports(fake: &FakeGemini) -> [GeminiProvider; 2] {
    let h2c = GeminiProvider::new(transport_config(&fake.base_url(), true)).unwrap();
    assert!(h2c.direct.is_some());
    [provider(fake), h2c]
}

fn job(prompt: &str) -> ImageJob {
    ImageJob {
        prompt: prompt.to_owned(),
        model: "nano-banana-pro".to_owned(),
        upstream_model: "gemini-3-pro-image".to_owned(),
        inputs: Vec::new(),
        aspect_ratio: None,
        image_size: None,
        width: 1024,
        height: 1024,
    }
}

fn input(bytes: &'static [u8], mime_type: &'static str) -> InputImage {
    InputImage {
        bytes: Bytes::from_static(bytes),
        mime_type,
        width: 1,
        height: 1,
    }
}

fn dimensions(image: &GeneratedImage) -> (u32, u32) {
    let decoded = image::load_from_memory(&image.bytes).unwrap();
    (decoded.width(), decoded.height())
}

#[tokio::test]
async fn generate_sends_the_canonical_request_without_image_config() {
    let fake = fake().await;
    let image = provider(&fake).generate(&job("a banana")).await.unwrap();
    assert_eq!(image.mime_type, "image/png");
    assert_eq!(dimensions(&image), (1024, 1024));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        "/v1beta/models/gemini-3-pro-image:generateContent"
    );
    assert_eq!(request.model.as_deref(), Some("gemini-3-pro-image"));
    assert_eq!(request.api_key.as_deref(), Some(KEY));
    assert_eq!(request.query, None);
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        request.body,
        json!({
            "contents": [{"role": "user", "parts": [{"text": "a banana"}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
        })
    );
}

#[tokio::test]
async fn edit_sends_inputs_as_inline_data_after_the_text() {
    let fake = fake().await;
    let mut edit = job("make it red");
    edit.inputs = vec![
        input(b"\x89PNG first", "image/png"),
        input(b"\xff\xd8\xff second", "image/jpeg"),
    ];
    edit.aspect_ratio = Some(AspectRatio::R16x9);
    edit.image_size = Some(Resolution::R2K);
    let image = provider(&fake).generate(&edit).await.unwrap();
    assert_eq!(dimensions(&image), (2752, 1536));

    let body = &fake.requests()[0].body;
    assert_eq!(
        body["contents"][0]["parts"],
        json!([
            {"text": "make it red"},
            {"inline_data": {
                "mime_type": "image/png",
                "data": general_purpose::STANDARD.encode(b"\x89PNG first"),
            }},
            {"inline_data": {
                "mime_type": "image/jpeg",
                "data": general_purpose::STANDARD.encode(b"\xff\xd8\xff second"),
            }},
        ])
    );
    assert_eq!(
        body["generationConfig"]["imageConfig"],
        json!({"aspectRatio": "16:9", "imageSize": "2K"})
    );
}

#[tokio::test]
async fn image_config_carries_only_what_the_job_sets() {
    let fake = fake().await;
    let provider = provider(&fake);
    let mut only_ratio = job("wide");
    only_ratio.upstream_model = "gemini-2.5-flash-image".to_owned();
    only_ratio.aspect_ratio = Some(AspectRatio::R3x2);
    let image = provider.generate(&only_ratio).await.unwrap();
    assert_eq!(dimensions(&image), (1248, 832));

    let mut only_size = job("big");
    only_size.image_size = Some(Resolution::R4K);
    provider.generate(&only_size).await.unwrap();

    let requests = fake.requests();
    assert_eq!(
        requests[0].path,
        "/v1beta/models/gemini-2.5-flash-image:generateContent"
    );
    assert_eq!(
        requests[0].body["generationConfig"]["imageConfig"],
        json!({"aspectRatio": "3:2"})
    );
    assert_eq!(
        requests[1].body["generationConfig"]["imageConfig"],
        json!({"imageSize": "4K"})
    );
}

#[tokio::test]
async fn thought_images_are_skipped() {
    let fake = fake().await;
    fake.push_scenario(Scenario::ThoughtThenImage);
    let image = provider(&fake).generate(&job("think")).await.unwrap();
    assert_eq!(dimensions(&image), (1024, 1024));
    assert_ne!(dimensions(&image), (THOUGHT_IMAGE_SIDE, THOUGHT_IMAGE_SIDE));

    // Also through a prompt tag, on a 2.5 model.
    let mut tagged = job("think [fake:thought]");
    tagged.upstream_model = "gemini-2.5-flash-image".to_owned();
    let image = provider(&fake).generate(&tagged).await.unwrap();
    assert_eq!(dimensions(&image), (1024, 1024));
}

#[tokio::test]
async fn safety_outcomes_are_refusals() {
    let fake = fake().await;
    let provider = provider(&fake);
    fake.push_scenario(Scenario::PromptBlocked);
    fake.push_scenario(Scenario::ImageSafety);

    let err = provider.generate(&job("x")).await.unwrap_err();
    let ProviderError::Refused(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("PROHIBITED_CONTENT"), "{message}");
    assert!(!err.is_retryable());

    let err = provider.generate(&job("x")).await.unwrap_err();
    let ProviderError::Refused(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.starts_with("IMAGE_SAFETY: I can't create"),
        "{message}"
    );

    let err = provider
        .generate(&job("x [fake:image_safety]"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Refused(_)), "{err:?}");
}

#[tokio::test]
async fn no_image_and_text_only_are_no_image() {
    let fake = fake().await;
    let provider = provider(&fake);
    fake.push_scenario(Scenario::NoImage);
    let err = provider.generate(&job("x")).await.unwrap_err();
    let ProviderError::NoImage(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.starts_with("finish reason NO_IMAGE: I could not"),
        "{message}"
    );
    assert!(!err.is_retryable());

    let err = provider
        .generate(&job("x [fake:text_only]"))
        .await
        .unwrap_err();
    let ProviderError::NoImage(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("text only"), "{message}");
    assert!(message.contains("a small ripe banana"), "{message}");
}

#[tokio::test]
async fn rate_limit_reports_retry_info() {
    let fake = fake().await;
    for provider in both_transports(&fake) {
        fake.push_scenario(Scenario::RateLimited {
            retry_delay: "15s".to_owned(),
        });
        let err = provider.generate(&job("x")).await.unwrap_err();
        let ProviderError::Upstream {
            status,
            message,
            retry_after,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*status, 429);
        assert!(
            message.starts_with("RESOURCE_EXHAUSTED: You exceeded"),
            "{message}"
        );
        assert_eq!(*retry_after, Some(Duration::from_secs(15)));
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(15)));
    }
}

#[tokio::test]
async fn server_errors_are_retryable_upstream_errors() {
    let fake = fake().await;
    let provider = provider(&fake);
    for (scenario, code, canonical) in [
        (Scenario::ServerError, 500, "INTERNAL"),
        (Scenario::Unavailable, 503, "UNAVAILABLE"),
        (Scenario::GatewayTimeout, 504, "DEADLINE_EXCEEDED"),
    ] {
        fake.push_scenario(scenario);
        let err = provider.generate(&job("x")).await.unwrap_err();
        let ProviderError::Upstream {
            status, message, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*status, code);
        assert!(message.starts_with(canonical), "{message}");
        assert!(err.is_retryable());
    }
    fake.push_scenario(Scenario::Status(403));
    let err = provider.generate(&job("x")).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Upstream { status: 403, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn garbage_and_bad_base64_are_invalid_responses() {
    let fake = fake().await;
    let provider = provider(&fake);
    fake.push_scenario(Scenario::Garbage);
    fake.push_scenario(Scenario::BadBase64);
    let err = provider.generate(&job("x")).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
    let err = provider.generate(&job("x")).await.unwrap_err();
    let ProviderError::InvalidResponse(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("not base64"), "{message}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn over_h2c_calls_beyond_a_connections_streams_open_another_connection() {
    let fake = FakeGemini::start(FakeGeminiOptions {
        api_key: Some(KEY.to_owned()),
        latency: crate::fake::gemini::Latency::Fixed(Duration::from_millis(400)),
        ..Default::default()
    })
    .await
    .unwrap();
    let multiplexed = GeminiProvider::new(GeminiConfig {
        connections: ConnectionSettings {
            streams_per_connection: 2,
            h2c: true,
        },
        ..config(&fake.base_url())
    })
    .unwrap();
    let job = job("x");
    let calls = (0..5).map(|_| multiplexed.generate(&job));
    for result in futures_util::future::join_all(calls).await {
        assert!(result.is_ok(), "{result:?}");
    }
    let versions: Vec<String> = fake
        .requests()
        .into_iter()
        .map(|r| r.http_version)
        .collect();
    assert_eq!(versions, vec!["HTTP/2.0"; 5]);
    // Five calls at two per connection: three connections (one would have made the
    // calls beyond two wait). A racing connect may add one, never fewer.
    let connections = fake.connection_count();
    assert!((3..=5).contains(&connections), "{connections} connections");
    let direct = multiplexed.direct.as_ref().expect("h2c calls go direct");
    assert_eq!(direct.lanes.count(), 3);
    assert_eq!(direct.target.connections_made(), 3);

    // Without h2c the same provider speaks HTTP/1.1, one call per connection.
    let plain = provider(&fake);
    assert!(plain.generate(&job).await.is_ok());
    let last = fake.requests().pop().unwrap();
    assert_eq!(last.http_version, "HTTP/1.1");
}

#[tokio::test]
async fn a_slow_or_hanging_upstream_times_out_as_sent() {
    let fake = fake().await;
    // Over HTTP/1.1 (reqwest) and over HTTP/2 on our own connections.
    for h2c in [false, true] {
        fake.push_scenario(Scenario::Slow(Duration::from_secs(120)));
        fake.push_scenario(Scenario::Hang);
        let provider = GeminiProvider::new(GeminiConfig {
            timeout: Duration::from_millis(300),
            ..transport_config(&fake.base_url(), h2c)
        })
        .unwrap();
        assert_eq!(provider.direct.is_some(), h2c);
        for _ in 0..2 {
            let err = provider.generate(&job("x")).await.unwrap_err();
            assert!(
                matches!(err, ProviderError::Transport { sent: true, .. }),
                "{err:?}"
            );
            // It may have been billed: never re-sent.
            assert!(!err.is_retryable());
        }
    }
    assert_eq!(fake.request_count(), 4);
}

#[tokio::test]
async fn a_refused_connection_is_not_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    for h2c in [false, true] {
        let provider =
            GeminiProvider::new(transport_config(&format!("http://{addr}"), h2c)).unwrap();
        let err = provider.generate(&job("x")).await.unwrap_err();
        let ProviderError::Transport { sent, message } = &err else {
            panic!("{err:?}")
        };
        assert!(!sent, "{message}");
        assert!(err.is_retryable());
        assert!(!message.contains(KEY));
    }
}

#[tokio::test]
async fn an_http2_connection_that_ended_is_made_again() {
    let fake = fake().await;
    let front = Front::start(&fake, None).await;
    let provider = GeminiProvider::new(transport_config(&front.base_url, true)).unwrap();
    assert!(provider.generate(&job("x")).await.is_ok());
    // The connection is cut. The next call finds it ended and makes a new one — unless it
    // is written before the lane has noticed: then it fails (a broken pipe, as it would
    // through reqwest) and the call after it makes the new connection.
    front.cut();
    let mut attempts = 0;
    while let Err(err) = provider.generate(&job("x")).await {
        attempts += 1;
        assert!(
            matches!(err, ProviderError::Transport { .. }) && attempts < 5,
            "{err:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fake.connection_count(), 2);
    let direct = provider.direct.as_ref().unwrap();
    assert_eq!(direct.target.connections_made(), 2);
    assert_eq!(direct.lanes.count(), 1);
    let versions: Vec<String> = fake
        .requests()
        .into_iter()
        .map(|r| r.http_version)
        .collect();
    assert_eq!(versions, vec!["HTTP/2.0"; 2]);
}

/// A front for `fake` that passes bytes on, decrypting TLS first when given the ALPN
/// protocols to offer (with the test certificate: `127.0.0.1`, signed by `testdata/ca.der`).
struct Front {
    base_url: String,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Front {
    async fn start(fake: &FakeGemini, alpn: Option<&[&[u8]]>) -> Front {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let acceptor = alpn.map(|alpn| {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                include_bytes!("testdata/leaf.key.der").to_vec(),
            ));
            let leaf = CertificateDer::from(include_bytes!("testdata/leaf.der").to_vec());
            let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf], key)
            .unwrap();
            server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            tokio_rustls::TlsAcceptor::from(Arc::new(server))
        });
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let upstream = fake.local_addr();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let tracked = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let connection = tokio::spawn(async move {
                    let mut plain = tokio::net::TcpStream::connect(upstream).await?;
                    match acceptor {
                        Some(acceptor) => {
                            let mut tls = acceptor.accept(tcp).await?;
                            tokio::io::copy_bidirectional(&mut tls, &mut plain).await
                        }
                        None => {
                            let mut tcp = tcp;
                            tokio::io::copy_bidirectional(&mut tcp, &mut plain).await
                        }
                    }
                });
                tracked.lock().unwrap().push(connection.abort_handle());
            }
        });
        Front {
            base_url,
            connections,
        }
    }

    /// Closes every connection made so far, on both sides.
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// The client side: the test CA only, ALPN as `upstream_tls` offers it.
fn test_tls() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            include_bytes!("testdata/ca.der").to_vec(),
        ))
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = upstream_tls().unwrap().alpn_protocols;
    tls
}

/// Two calls through a TLS front that offers `alpn`: the provider, and the HTTP versions
/// the fake saw; with the fake's connection count.
async fn two_calls_over_tls(alpn: &[&[u8]]) -> (GeminiProvider, Vec<String>, usize) {
    let fake = fake().await;
    let front = Front::start(&fake, Some(alpn)).await;
    let provider = GeminiProvider::with_tls(config(&front.base_url), test_tls()).unwrap();
    for _ in 0..2 {
        assert!(provider.generate(&job("x")).await.is_ok());
    }
    let versions = fake
        .requests()
        .into_iter()
        .map(|r| r.http_version)
        .collect();
    (provider, versions, fake.connection_count())
}

#[tokio::test]
async fn a_tls_upstream_that_chooses_http2_is_called_on_our_own_connections() {
    let (provider, versions, connections) = two_calls_over_tls(&[b"h2", b"http/1.1"]).await;
    assert_eq!(versions, vec!["HTTP/2.0"; 2]);
    let direct = provider.direct.as_ref().unwrap();
    assert!(!direct.not_h2.load(Ordering::Relaxed));
    // One connection of ours, one TLS handshake, for both calls.
    assert_eq!(direct.target.connections_made(), 1);
    assert_eq!(connections, 1);
}

#[tokio::test]
async fn a_tls_upstream_that_chooses_http1_is_called_through_reqwest() {
    let (provider, versions, _) = two_calls_over_tls(&[b"http/1.1"]).await;
    assert_eq!(versions, vec!["HTTP/1.1"; 2]);
    let direct = provider.direct.as_ref().unwrap();
    assert!(direct.not_h2.load(Ordering::Relaxed));
    assert_eq!(direct.target.connections_made(), 0);
}

#[tokio::test]
async fn calls_waiting_on_a_connect_that_fails_fail_with_it() {
    // Accepts connections and never says a word: the TLS handshake times out.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(tcp);
        }
    });
    let provider = GeminiProvider::with_tls(
        GeminiConfig {
            connect_timeout: Duration::from_millis(300),
            ..config(&format!("https://{addr}"))
        },
        test_tls(),
    )
    .unwrap();
    let job = job("x");
    let calls = (0..3).map(|_| provider.generate(&job));
    for result in futures_util::future::join_all(calls).await {
        let Err(ProviderError::Transport { sent, message }) = &result else {
            panic!("{result:?}")
        };
        assert!(!sent && message.contains("timed out"), "{message}");
    }
    // One lane, one connect for the three calls (not one connect timeout after another).
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // A call that comes later tries again.
    assert!(provider.generate(&job).await.is_err());
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_tls_upstream_with_a_certificate_we_do_not_trust_is_refused_unsent() {
    let fake = fake().await;
    let front = Front::start(&fake, Some(&[b"h2"])).await;
    // The platform's roots: the test CA is not among them.
    let provider = GeminiProvider::new(config(&front.base_url)).unwrap();
    let err = provider.generate(&job("x")).await.unwrap_err();
    let ProviderError::Transport { sent, message } = &err else {
        panic!("{err:?}")
    };
    assert!(!sent, "{message}");
    assert!(message.contains("certificate"), "{message}");
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn an_html_error_page_becomes_an_excerpt() {
    let fake = fake().await;
    fake.push_scenario(Scenario::HtmlError);
    let err = provider(&fake).generate(&job("x")).await.unwrap_err();
    let ProviderError::Upstream {
        status, message, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 502);
    assert!(message.starts_with("BAD_GATEWAY: Error 502"), "{message}");
    assert!(message.contains("That’s an error."), "{message}");
    assert!(!message.contains("margin"), "styles leaked: {message}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_wrong_key_is_a_final_400() {
    let fake = fake().await;
    let provider = GeminiProvider::new(GeminiConfig {
        api_key: "wrong".to_owned(),
        ..config(&fake.base_url())
    })
    .unwrap();
    let err = provider.generate(&job("x")).await.unwrap_err();
    let ProviderError::Upstream {
        status, message, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 400);
    assert!(
        message.starts_with("INVALID_ARGUMENT: API key not valid"),
        "{message}"
    );
    assert!(!err.is_retryable());
    assert!(!format!("{provider:?}").contains("wrong"));
}

#[tokio::test]
async fn an_unknown_model_is_a_404() {
    let fake = fake().await;
    let mut unknown = job("x");
    unknown.upstream_model = "imagen-9".to_owned();
    let err = provider(&fake).generate(&unknown).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Upstream { status: 404, message, .. } if message.starts_with("NOT_FOUND")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_oversized_answer_is_rejected() {
    let fake = FakeGemini::start(FakeGeminiOptions {
        image_bytes: 200_000,
        ..Default::default()
    })
    .await
    .unwrap();
    for mut provider in both_transports(&fake) {
        let image = provider.generate(&job("x")).await.unwrap();
        assert!(image.bytes.len() > 150_000);
        provider.max_response_bytes = 100_000;
        let err = provider.generate(&job("x")).await.unwrap_err();
        assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
    }
}

#[test]
fn endpoint_keeps_a_base_path_prefix() {
    let endpoint = |base: &str, version: &str, model: &str| {
        GeminiProvider::new(GeminiConfig {
            api_version: version.to_owned(),
            ..config(base)
        })
        .unwrap()
        .endpoint(model)
        .to_string()
    };
    assert_eq!(
        endpoint(
            "https://generativelanguage.googleapis.com",
            "v1beta",
            "gemini-3-pro-image"
        ),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-3-pro-image:generateContent"
    );
    assert_eq!(
        endpoint(
            "http://127.0.0.1:9/proxy/google/",
            "v1",
            "models/gemini-3.1-flash-image"
        ),
        "http://127.0.0.1:9/proxy/google/v1/models/gemini-3.1-flash-image:generateContent"
    );
    assert_eq!(
        endpoint(
            "http://127.0.0.1:9/proxy",
            "/v1beta/",
            "gemini-2.5-flash-image"
        ),
        "http://127.0.0.1:9/proxy/v1beta/models/gemini-2.5-flash-image:generateContent"
    );
}

#[test]
fn bad_configuration_is_rejected_and_the_key_never_printed() {
    let err = |config: GeminiConfig| GeminiProvider::new(config).unwrap_err();
    assert!(matches!(err(GeminiConfig::new("")), GeminiError::ApiKey));
    assert!(matches!(
        err(GeminiConfig::new("a\nb")),
        GeminiError::ApiKey
    ));
    assert!(matches!(
        err(GeminiConfig {
            api_version: "v1/x".into(),
            ..GeminiConfig::new("k")
        }),
        GeminiError::ApiVersion(_)
    ));
    assert!(matches!(
        err(GeminiConfig {
            base_url: Url::parse("ftp://example.com").unwrap(),
            ..GeminiConfig::new("k")
        }),
        GeminiError::BaseUrl(_)
    ));
    let config = GeminiConfig::new("super-secret");
    assert!(!format!("{config:?}").contains("super-secret"));
    let provider = GeminiProvider::new(config).unwrap();
    assert!(!format!("{provider:?}").contains("super-secret"));
}

#[test]
fn a_proxy_in_the_environment_keeps_calls_with_reqwest() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| std::ffi::OsString::from(v))
        }
    };
    assert!(!proxy_named("https", env(&[])));
    assert!(proxy_named(
        "https",
        env(&[("HTTPS_PROXY", "http://proxy:3128")])
    ));
    assert!(proxy_named(
        "https",
        env(&[("all_proxy", "socks5://proxy:1080")])
    ));
    assert!(proxy_named(
        "http",
        env(&[("http_proxy", "http://proxy:3128")])
    ));
    // Another scheme's proxy, or an empty value, is no proxy for this one.
    assert!(!proxy_named(
        "https",
        env(&[("HTTP_PROXY", "http://proxy:3128")])
    ));
    assert!(!proxy_named("https", env(&[("HTTPS_PROXY", "")])));
}

#[test]
fn the_shared_tls_configuration_offers_http2_first() {
    let tls = upstream_tls().unwrap();
    // Set by hand: a preconfigured client takes the configuration as it is, and without
    // ALPN a TLS upstream would be spoken to in HTTP/1.1, a connection per call.
    assert_eq!(
        tls.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert!(tls.enable_sni);
}
