//! A fake Google OAuth2 token endpoint, for the Vertex AI tests: a real axum server on loopback
//! that answers `POST /token` with the JWT bearer grant (docs/upstreams.md, Vertex AI) as Google
//! does. It checks the assertion — its RS256 signature against the service account's public key,
//! and its claims: `iss` the account, `aud` this endpoint's URL, `scope` cloud-platform, `iat`
//! not in the future, `exp` after now and at most an hour after `iat` — and issues opaque access
//! tokens with a chosen `expires_in`. The fake Gemini accepts on its Vertex paths the tokens this
//! endpoint issued and has not revoked ([`IssuedTokens`]).
//!
//! Counts every request, keeps why it refused an assertion, and can be told to fail (a status
//! instead of a token) or to answer slowly. Imports no other module of the crate.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

#[derive(Debug, Clone)]
pub struct FakeTokenOptions {
    /// The service account's public key (PEM), against which assertions are checked.
    pub public_key_pem: String,
    /// The `iss` an assertion must carry: the account's `client_email`.
    pub client_email: String,
    /// The `expires_in` of issued tokens (whole seconds, at least 1); they are refused by the fake
    /// Gemini once it has passed.
    pub expires_in: Duration,
    /// Waited before each answer.
    pub latency: Duration,
}

impl FakeTokenOptions {
    pub fn new(public_key_pem: impl Into<String>, client_email: impl Into<String>) -> Self {
        FakeTokenOptions {
            public_key_pem: public_key_pem.into(),
            client_email: client_email.into(),
            expires_in: Duration::from_secs(3600),
            latency: Duration::ZERO,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FakeTokenError {
    #[error("the public key is not a PEM RSA public key: {0}")]
    PublicKey(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The access tokens an endpoint issued, each with its expiry. Cloning shares them.
#[derive(Clone, Default)]
pub struct IssuedTokens {
    tokens: Arc<Mutex<HashMap<String, Instant>>>,
}

impl fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("count", &lock(&self.tokens).len())
            .finish()
    }
}

impl IssuedTokens {
    /// Issued, not revoked and not expired.
    pub fn accepts(&self, token: &str) -> bool {
        lock(&self.tokens)
            .get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    /// Every token issued so far is refused from now on (as after a key is disabled, or a token
    /// revoked): the next call with one gets a 401.
    pub fn revoke_all(&self) {
        lock(&self.tokens).clear();
    }

    /// Accepts `token` for `lifetime` (the endpoint does this for each token it issues).
    pub fn issue(&self, token: impl Into<String>, lifetime: Duration) {
        lock(&self.tokens).insert(token.into(), Instant::now() + lifetime);
    }
}

/// A running fake token endpoint. Dropping it stops it: connections are then refused.
pub struct FakeTokenEndpoint {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl fmt::Debug for FakeTokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeTokenEndpoint")
            .field("addr", &self.addr)
            .finish()
    }
}

struct Shared {
    key: DecodingKey,
    client_email: String,
    /// `http://127.0.0.1:PORT/token`: the `aud` an assertion must carry.
    token_url: String,
    expires_in_s: AtomicU64,
    latency: Mutex<Duration>,
    requests: AtomicUsize,
    issued_count: AtomicUsize,
    issued: IssuedTokens,
    failing: Mutex<Option<u16>>,
    refusals: Mutex<Vec<String>>,
}

impl FakeTokenEndpoint {
    /// Binds `127.0.0.1:0` and serves in a tokio task.
    pub async fn start(options: FakeTokenOptions) -> Result<FakeTokenEndpoint, FakeTokenError> {
        let key = DecodingKey::from_rsa_pem(options.public_key_pem.as_bytes())
            .map_err(|e| FakeTokenError::PublicKey(e.to_string()))?;
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            key,
            client_email: options.client_email,
            token_url: format!("http://{addr}/token"),
            expires_in_s: AtomicU64::new(options.expires_in.as_secs().max(1)),
            latency: Mutex::new(options.latency),
            requests: AtomicUsize::new(0),
            issued_count: AtomicUsize::new(0),
            issued: IssuedTokens::default(),
            failing: Mutex::new(None),
            refusals: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/token", post(token))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!("fake token endpoint stopped: {err}");
            }
        });
        Ok(FakeTokenEndpoint {
            addr,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn token_url(&self) -> String {
        self.shared.token_url.clone()
    }

    /// The tokens issued, for the fake Gemini to accept ([`crate::fake::gemini::FakeGeminiOptions`]).
    pub fn issued(&self) -> IssuedTokens {
        self.shared.issued.clone()
    }

    /// Every request received, whatever its outcome.
    pub fn request_count(&self) -> usize {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Tokens issued so far.
    pub fn issued_count(&self) -> usize {
        self.shared.issued_count.load(Ordering::Relaxed)
    }

    /// Why assertions were refused, oldest first.
    pub fn refusals(&self) -> Vec<String> {
        lock(&self.shared.refusals).clone()
    }

    /// The lifetime of the tokens issued from now on.
    pub fn set_expires_in(&self, lifetime: Duration) {
        self.shared
            .expires_in_s
            .store(lifetime.as_secs().max(1), Ordering::Relaxed);
    }

    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.latency) = latency;
    }

    /// `Some(status)`: answer every request with that status and an OAuth error, as an endpoint
    /// that is down (503) or refuses the account (400, 401); `None`: work again.
    pub fn fail_with(&self, status: Option<u16>) {
        *lock(&self.shared.failing) = status;
    }

    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for FakeTokenEndpoint {
    fn drop(&mut self) {
        // Frees the port at once.
        self.server.abort();
    }
}

/// The claims the fake reads; any other claim is ignored, as Google does.
#[derive(Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    scope: Option<String>,
    iat: u64,
    exp: u64,
}

async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let latency = *lock(&shared.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = *lock(&shared.failing) {
        let error = if status >= 500 {
            "temporarily_unavailable"
        } else {
            "invalid_client"
        };
        return oauth_error(status, error, "The fake token endpoint was told to fail.");
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return shared.refuse(
            "unsupported_grant_type",
            "Invalid grant_type.",
            format!("grant_type {:?}", form.get("grant_type")),
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return shared.refuse(
            "invalid_request",
            "Missing assertion.",
            "no assertion".into(),
        );
    };
    let claims = match shared.verify(assertion) {
        Ok(claims) => claims,
        Err(reason) => return shared.refuse("invalid_grant", "Invalid JWT Signature.", reason),
    };
    let n = shared.issued_count.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("ya29.fake-{n}-{:016x}", rand::random::<u64>());
    let expires_in = shared.expires_in_s.load(Ordering::Relaxed);
    shared
        .issued
        .issue(token.clone(), Duration::from_secs(expires_in));
    tracing::debug!(iss = %claims.iss, n, expires_in, "fake token endpoint issued a token");
    json_answer(
        StatusCode::OK,
        json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}),
    )
}

impl Shared {
    /// The assertion's claims, when its signature and claims are what Google requires.
    fn verify(&self, assertion: &str) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(assertion).map_err(|e| format!("header: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!("alg {:?}, not RS256", header.alg));
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.token_url]);
        validation.set_issuer(&[&self.client_email]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(assertion, &self.key, &validation)
            .map_err(|e| format!("signature or claims: {e}"))?;
        let claims = data.claims;
        if claims.aud != self.token_url {
            return Err(format!("aud {:?}", claims.aud));
        }
        if claims.scope.as_deref() != Some(CLOUD_PLATFORM_SCOPE) {
            return Err(format!("scope {:?}", claims.scope));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if claims.iat > now + 60 {
            return Err(format!("iat {} is in the future (now {now})", claims.iat));
        }
        if claims.exp <= claims.iat || claims.exp - claims.iat > 3600 {
            return Err(format!(
                "exp {} must be within an hour after iat {}",
                claims.exp, claims.iat
            ));
        }
        Ok(claims)
    }

    fn refuse(&self, error: &str, description: &str, reason: String) -> Response {
        tracing::debug!(%reason, "fake token endpoint refused an assertion");
        lock(&self.refusals).push(reason);
        oauth_error(400, error, description)
    }
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    json_answer(
        status,
        json!({"error": error, "error_description": description}),
    )
}

fn json_answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: usable after a panic elsewhere.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const PRIVATE: &str = include_str!("../providers/vertex/testdata/test-key.pem");
    const PUBLIC: &str = include_str!("../providers/vertex/testdata/test-key.pub.pem");
    const EMAIL: &str = "test@test-project.iam.gserviceaccount.com";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    async fn exchange(endpoint: &FakeTokenEndpoint, claims: Value) -> (u16, Value) {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(PRIVATE.as_bytes()).unwrap();
        let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::RS256), &claims, &key)
            .unwrap();
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", JWT_BEARER)
            .append_pair("assertion", &jwt)
            .finish();
        let answer = reqwest::Client::new()
            .post(endpoint.token_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap())
    }

    #[tokio::test]
    async fn assertions_are_checked_like_googles_and_tokens_expire_or_are_revoked() {
        let endpoint = FakeTokenEndpoint::start(FakeTokenOptions {
            expires_in: Duration::from_secs(1),
            ..FakeTokenOptions::new(PUBLIC, EMAIL)
        })
        .await
        .unwrap();
        let url = endpoint.token_url();
        let good = json!({"iss": EMAIL, "scope": CLOUD_PLATFORM_SCOPE, "aud": url, "iat": now(), "exp": now() + 3600});
        let with = |field: &str, value: Value| {
            let mut claims = good.clone();
            claims[field] = value;
            claims
        };
        for (claims, why) in [
            (with("iss", json!("someone@else.example")), "iss"),
            (
                with("aud", json!("https://oauth2.googleapis.com/token")),
                "aud",
            ),
            (
                with("scope", json!("https://www.googleapis.com/auth/drive")),
                "scope",
            ),
            (with("exp", json!(now() + 7200)), "exp"),
            (with("exp", json!(now() - 10)), "expired"),
            (with("iat", json!(now() + 600)), "iat"),
        ] {
            let (status, answer) = exchange(&endpoint, claims).await;
            assert_eq!(status, 400, "{why}");
            assert_eq!(answer["error"], "invalid_grant", "{why}");
        }
        assert_eq!(endpoint.refusals().len(), 6, "{:?}", endpoint.refusals());
        assert_eq!(endpoint.issued_count(), 0);

        let (status, answer) = exchange(&endpoint, good.clone()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["token_type"], "Bearer");
        assert_eq!(answer["expires_in"], 1);
        let token = answer["access_token"].as_str().unwrap().to_owned();
        let issued = endpoint.issued();
        assert!(issued.accepts(&token));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(!issued.accepts(&token), "expired");

        endpoint.set_expires_in(Duration::from_secs(60));
        let (_, answer) = exchange(&endpoint, good.clone()).await;
        let token = answer["access_token"].as_str().unwrap().to_owned();
        assert!(issued.accepts(&token));
        issued.revoke_all();
        assert!(!issued.accepts(&token));

        endpoint.fail_with(Some(503));
        let (status, answer) = exchange(&endpoint, good).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (503, Some("temporarily_unavailable"))
        );
        assert_eq!(endpoint.request_count(), 9);
    }
}
