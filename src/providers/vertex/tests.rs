//! The Vertex AI provider's tests: URLs (regional and `global`), the key file, the JWT's claims
//! and signature, the token cache (refresh before expiry, one refresh shared by concurrent calls,
//! a failed refresh shared too, an early refresh that fails keeping the old token), and calls
//! against the fake Gemini's Vertex paths behind the fake token endpoint (a 401 → one refresh
//! and one more call; no token → a retryable error that sent nothing).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{DecodingKey, Validation};
use serde_json::json;

use super::*;
use crate::fake::gemini::{FakeGemini, FakeGeminiOptions};
use crate::fake::oauth::{FakeTokenEndpoint, FakeTokenOptions, IssuedTokens};

const TEST_KEY: &str = include_str!("testdata/test-key.pem");
const TEST_PUBLIC_KEY: &str = include_str!("testdata/test-key.pub.pem");
const OTHER_KEY: &str = include_str!("testdata/other-test-key.pem");
const EMAIL: &str = "nano-banana-test@test-project.iam.gserviceaccount.com";

/// A service-account key file's JSON, as the Cloud console makes it, with `private_key`.
fn key_json(private_key: &str, token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "0123456789abcdef",
        "private_key": private_key,
        "client_email": EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

fn test_key(token_uri: &str) -> ServiceAccountKey {
    ServiceAccountKey::from_json(&key_json(TEST_KEY, token_uri)).unwrap()
}

async fn token_endpoint(expires_in: Duration, latency: Duration) -> FakeTokenEndpoint {
    FakeTokenEndpoint::start(FakeTokenOptions {
        expires_in,
        latency,
        ..FakeTokenOptions::new(TEST_PUBLIC_KEY, EMAIL)
    })
    .await
    .unwrap()
}

fn source(endpoint: &FakeTokenEndpoint) -> Arc<TokenSource> {
    let url = Url::parse(&endpoint.token_url()).unwrap();
    Arc::new(
        TokenSource::new(
            test_key(url.as_str()),
            url,
            Duration::from_secs(5),
            upstream_tls().unwrap(),
        )
        .unwrap(),
    )
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

#[test]
fn the_global_location_has_the_global_host_and_regions_their_own() {
    assert_eq!(
        default_base_url("global").as_str(),
        "https://aiplatform.googleapis.com/"
    );
    assert_eq!(
        default_base_url("europe-west4").as_str(),
        "https://europe-west4-aiplatform.googleapis.com/"
    );
    let provider = |location: &str| {
        GeminiProvider::vertex(VertexConfig::new(
            "my-project",
            location,
            test_key(DEFAULT_TOKEN_URI),
        ))
        .unwrap()
    };
    assert_eq!(
        provider("global")
            .access
            .endpoint("gemini-3-pro-image")
            .as_str(),
        "https://aiplatform.googleapis.com/v1/projects/my-project/locations/global/publishers/\
         google/models/gemini-3-pro-image:generateContent"
    );
    assert_eq!(
        provider("us-central1")
            .access
            .endpoint("models/gemini-2.5-flash-image")
            .as_str(),
        "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/\
         us-central1/publishers/google/models/gemini-2.5-flash-image:generateContent"
    );
    assert_eq!(provider("global").name(), "vertex");
}

#[test]
fn models_urls_keep_a_base_path_and_refuse_bad_parts() {
    let base = Url::parse("http://127.0.0.1:9/proxy/").unwrap();
    assert_eq!(
        models_url(&base, "/v1beta1/", "p-1", "global")
            .unwrap()
            .as_str(),
        "http://127.0.0.1:9/proxy/v1beta1/projects/p-1/locations/global/publishers/google/models"
    );
    // A domain-scoped project id is one segment.
    assert_eq!(
        models_url(&base, "v1", "example.com:proj", "europe-west4")
            .unwrap()
            .path(),
        "/proxy/v1/projects/example.com:proj/locations/europe-west4/publishers/google/models"
    );
    for location in ["", "Europe-West4", "eu west", "evil.com/x", "-a", "a-"] {
        assert!(
            matches!(
                models_url(&base, "v1", "p", location),
                Err(VertexError::Location(_))
            ),
            "{location:?}"
        );
    }
    for project in ["", "a/b", "a b", "a?b"] {
        assert!(
            matches!(
                models_url(&base, "v1", project, "global"),
                Err(VertexError::Project(_))
            ),
            "{project:?}"
        );
    }
    assert!(matches!(
        models_url(&base, "v1/x", "p", "global"),
        Err(VertexError::ApiVersion(_))
    ));
    let ftp = Url::parse("ftp://example.com").unwrap();
    assert!(matches!(
        models_url(&ftp, "v1", "p", "global"),
        Err(VertexError::BaseUrl(_))
    ));
    let config = VertexConfig {
        token_url: Some(Url::parse("file:///token").unwrap()),
        ..VertexConfig::new("p", "global", test_key(DEFAULT_TOKEN_URI))
    };
    assert!(matches!(
        GeminiProvider::vertex(config),
        Err(VertexError::TokenUrl(_))
    ));
}

#[test]
fn key_files_are_read_and_their_errors_never_quote_the_key() {
    let key = test_key("https://oauth2.example/token");
    assert_eq!(key.client_email, EMAIL);
    assert_eq!(key.token_uri, "https://oauth2.example/token");
    assert_eq!(key.private_key_id.as_deref(), Some("0123456789abcdef"));
    let without_uri =
        json!({"type": "service_account", "client_email": EMAIL, "private_key": TEST_KEY});
    assert_eq!(
        ServiceAccountKey::from_json(&without_uri.to_string())
            .unwrap()
            .token_uri,
        DEFAULT_TOKEN_URI
    );

    let secret_line = TEST_KEY.lines().nth(1).unwrap();
    let shown = format!(
        "{key:?} {:?}",
        VertexConfig::new("p", "global", key.clone())
    );
    assert!(!shown.contains(secret_line), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");

    let refused = |json: String| ServiceAccountKey::from_json(&json).unwrap_err();
    assert!(matches!(refused("{not json".into()), KeyError::Json(_)));
    assert!(matches!(
        refused(
            json!({"type": "authorized_user", "client_email": EMAIL, "private_key": TEST_KEY})
                .to_string()
        ),
        KeyError::Type(_)
    ));
    assert!(matches!(
        refused(json!({"type": "service_account", "private_key": TEST_KEY}).to_string()),
        KeyError::Missing("client_email")
    ));
    assert!(matches!(
        refused(json!({"type": "service_account", "client_email": EMAIL}).to_string()),
        KeyError::Missing("private_key")
    ));
    // A damaged key: its body cut short.
    let damaged = format!("{}\n-----END PRIVATE KEY-----\n", &TEST_KEY[..200]);
    let error = refused(key_json(&damaged, DEFAULT_TOKEN_URI));
    assert!(matches!(error, KeyError::PrivateKey), "{error:?}");
    assert!(!error.to_string().contains(&damaged[40..80]));
}

#[test]
fn the_assertion_is_signed_rs256_with_googles_claims() {
    let key = test_key("https://oauth2.googleapis.com/token");
    let claims = Claims::new(&key, "https://oauth2.googleapis.com/token", 1_700_000_000);
    assert_eq!(
        claims,
        Claims {
            iss: EMAIL.to_owned(),
            scope: "https://www.googleapis.com/auth/cloud-platform".to_owned(),
            aud: "https://oauth2.googleapis.com/token".to_owned(),
            iat: 1_700_000_000,
            exp: 1_700_003_600,
        }
    );
    let jwt = assertion(&key, &claims).unwrap();
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.kid.as_deref(), Some("0123456789abcdef"));

    let mut validation = Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["https://oauth2.googleapis.com/token"]);
    validation.validate_exp = false;
    let public = DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY.as_bytes()).unwrap();
    let decoded = jsonwebtoken::decode::<Claims>(&jwt, &public, &validation).unwrap();
    assert_eq!(decoded.claims, claims);

    // Signed with another key, the signature does not verify against the test key's.
    let other = ServiceAccountKey::from_json(&key_json(OTHER_KEY, DEFAULT_TOKEN_URI)).unwrap();
    let forged = assertion(&other, &claims).unwrap();
    assert!(jsonwebtoken::decode::<Claims>(&forged, &public, &validation).is_err());
}

#[tokio::test]
async fn the_token_is_cached_and_refreshed_before_it_expires() {
    let endpoint = token_endpoint(Duration::from_secs(2), Duration::ZERO).await;
    let tokens = source(&endpoint);
    let first = tokens.token().await.unwrap();
    let again = tokens.token().await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(endpoint.request_count(), 1, "{:?}", endpoint.refusals());
    assert!(format!("{first:?}").contains("<redacted>"));
    assert!(!format!("{first:?} {tokens:?}").contains("ya29"));
    // A 2 s token is refreshed halfway (a long one 5 minutes before it expires).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = tokens.token().await.unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(endpoint.request_count(), 2);
    assert_eq!(endpoint.issued_count(), 2);
}

#[tokio::test]
async fn concurrent_calls_share_one_refresh_and_one_failure() {
    let endpoint = token_endpoint(Duration::from_secs(3600), Duration::from_millis(200)).await;
    let tokens = source(&endpoint);
    let all = futures_util::future::join_all((0..8).map(|_| {
        let tokens = tokens.clone();
        async move { tokens.token().await }
    }))
    .await;
    assert_eq!(endpoint.request_count(), 1);
    let first = all[0].as_ref().unwrap();
    assert!(all.iter().all(|t| Arc::ptr_eq(t.as_ref().unwrap(), first)));

    // Eight calls refused with that token: one refresh between them.
    let replaced = futures_util::future::join_all((0..8).map(|_| {
        let (tokens, refused) = (tokens.clone(), first.clone());
        async move { tokens.replace(&refused).await }
    }))
    .await;
    assert_eq!(endpoint.request_count(), 2);
    let second = replaced[0].as_ref().unwrap();
    assert!(!Arc::ptr_eq(first, second));
    assert!(
        replaced
            .iter()
            .all(|t| Arc::ptr_eq(t.as_ref().unwrap(), second))
    );

    // The endpoint fails: calls waiting on that refresh get its error instead of trying again.
    let fresh = source(&endpoint);
    endpoint.fail_with(Some(503));
    let failed = futures_util::future::join_all((0..4).map(|_| {
        let fresh = fresh.clone();
        async move { fresh.token().await }
    }))
    .await;
    assert_eq!(endpoint.request_count(), 3);
    for outcome in &failed {
        let error = outcome.as_ref().unwrap_err();
        assert!(
            matches!(error, TokenError::Refused { status: 503, .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("temporarily_unavailable"),
            "{error}"
        );
    }
    // The next call tries again.
    endpoint.fail_with(None);
    fresh.token().await.unwrap();
    assert_eq!(endpoint.request_count(), 4);
}

#[tokio::test]
async fn an_early_refresh_that_fails_keeps_the_valid_token() {
    let endpoint = token_endpoint(Duration::from_secs(4), Duration::ZERO).await;
    let tokens = source(&endpoint);
    let first = tokens.token().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    endpoint.fail_with(Some(500));
    let kept = tokens.token().await.unwrap();
    assert_eq!(kept.header, first.header, "still valid for ~2 s");
    assert_eq!(endpoint.request_count(), 2);
    // Retried later (after at most half of what is left), not by every call.
    tokens.token().await.unwrap();
    assert_eq!(endpoint.request_count(), 2);
}

#[tokio::test]
async fn a_signature_of_another_key_is_refused_by_the_token_endpoint() {
    let endpoint = token_endpoint(Duration::from_secs(3600), Duration::ZERO).await;
    let url = Url::parse(&endpoint.token_url()).unwrap();
    let other = ServiceAccountKey::from_json(&key_json(OTHER_KEY, url.as_str())).unwrap();
    let tokens =
        TokenSource::new(other, url, Duration::from_secs(5), upstream_tls().unwrap()).unwrap();
    let error = tokens.token().await.unwrap_err();
    assert!(
        matches!(error, TokenError::Refused { status: 400, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("invalid_grant"), "{error}");
    assert!(
        endpoint.refusals()[0].contains("InvalidSignature"),
        "{:?}",
        endpoint.refusals()
    );
}

struct Upstreams {
    gemini: FakeGemini,
    tokens: FakeTokenEndpoint,
    provider: VertexProvider,
}

/// A provider on the fake Gemini's Vertex paths, with tokens from the fake endpoint (named by
/// the key file's `token_uri`).
async fn upstreams(accepted: Option<IssuedTokens>) -> Upstreams {
    let tokens = token_endpoint(Duration::from_secs(3600), Duration::ZERO).await;
    let gemini = FakeGemini::start(FakeGeminiOptions {
        vertex_tokens: Some(accepted.unwrap_or_else(|| tokens.issued())),
        ..Default::default()
    })
    .await
    .unwrap();
    let provider = GeminiProvider::vertex(VertexConfig {
        base_url: Some(Url::parse(&gemini.base_url()).unwrap()),
        timeout: Duration::from_secs(5),
        ..VertexConfig::new("test-project", "global", test_key(&tokens.token_url()))
    })
    .unwrap();
    Upstreams {
        gemini,
        tokens,
        provider,
    }
}

#[tokio::test]
async fn calls_go_to_the_vertex_path_with_the_token_and_a_refused_token_is_replaced_once() {
    let up = upstreams(None).await;
    let image = up.provider.generate(&job("a pear")).await.unwrap();
    assert_eq!(image.mime_type, "image/png");
    let request = &up.gemini.requests()[0];
    assert_eq!(
        request.path,
        "/v1/projects/test-project/locations/global/publishers/google/models/\
         gemini-3-pro-image:generateContent"
    );
    assert!(
        request
            .bearer
            .as_deref()
            .unwrap()
            .starts_with("ya29.fake-1-")
    );
    assert_eq!(request.api_key, None);
    assert_eq!(request.body["contents"][0]["parts"][0]["text"], "a pear");

    up.tokens.issued().revoke_all();
    up.provider
        .generate(&job("after revocation"))
        .await
        .unwrap();
    assert_eq!(up.tokens.request_count(), 2, "one refresh");
    let requests = up.gemini.requests();
    assert_eq!(requests.len(), 3, "the refused call and its one retry");
    assert!(
        requests[2]
            .bearer
            .as_deref()
            .unwrap()
            .starts_with("ya29.fake-2-")
    );
}

#[tokio::test]
async fn the_bearer_token_goes_over_http2_too() {
    let up = upstreams(None).await;
    let h2c = GeminiProvider::vertex(VertexConfig {
        base_url: Some(Url::parse(&up.gemini.base_url()).unwrap()),
        connections: ConnectionSettings {
            h2c: true,
            ..ConnectionSettings::default()
        },
        ..VertexConfig::new(
            "test-project",
            "europe-west4",
            test_key(&up.tokens.token_url()),
        )
    })
    .unwrap();
    h2c.generate(&job("over h2c")).await.unwrap();
    let request = &up.gemini.requests()[0];
    assert_eq!(request.http_version, "HTTP/2.0");
    assert!(
        request.path.contains("/locations/europe-west4/"),
        "{}",
        request.path
    );
    assert!(
        up.tokens
            .issued()
            .accepts(request.bearer.as_deref().unwrap())
    );
}

#[tokio::test]
async fn a_token_refused_twice_fails_the_call_after_one_retry() {
    // The upstream accepts none of the endpoint's tokens (another project's, say).
    let up = upstreams(Some(IssuedTokens::default())).await;
    let error = up.provider.generate(&job("x")).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Upstream { status: 401, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(up.gemini.request_count(), 2);
    assert_eq!(up.tokens.request_count(), 2);
}

#[tokio::test]
async fn without_a_token_nothing_is_sent_and_the_error_is_retryable() {
    let up = upstreams(None).await;
    up.tokens.fail_with(Some(503));
    let error = up.provider.generate(&job("x")).await.unwrap_err();
    let ProviderError::Transport { message, sent } = &error else {
        panic!("{error:?}");
    };
    assert!(!sent);
    assert!(error.is_retryable());
    assert!(message.contains("access token"), "{message}");
    assert!(message.contains("/token answered HTTP 503"), "{message}");
    assert_eq!(up.gemini.request_count(), 0);

    // The endpoint gone altogether: refused connections, the same kind of error.
    let Upstreams {
        gemini,
        tokens,
        provider,
    } = up;
    tokens.shutdown();
    let error = provider.generate(&job("x")).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Transport { sent: false, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("could not be reached"),
        "{error}"
    );
    assert_eq!(gemini.request_count(), 0);
}
