//! Vertex AI's OAuth2 access tokens, from a Google service-account key (docs/upstreams.md,
//! Vertex AI): the key file, the JWT assertion signed RS256 with its private key (the JWT bearer
//! grant of RFC 7523), its exchange at the token endpoint, and the cache that holds the token and
//! refreshes it before it expires — one refresh at a time, shared by every call that needs it.
//!
//! The private key and the tokens never reach a log line or a `Debug` output: the key is held as
//! jsonwebtoken's `EncodingKey` (whose `Debug` redacts it), a token as a sensitive header value.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, USER_AGENT};
use serde::{Deserialize, Serialize};
use url::Url;

/// What the token may be used for: every Google Cloud API, Vertex AI among them.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Where Google's key files send assertions, when a file does not say.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// An assertion's lifetime: the most Google accepts.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// A token is refreshed this long before it expires (or halfway through its life, for a token
/// that lives less than twice as long).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// When a refresh fails while the old token is still valid, calls keep using it and the next
/// refresh is tried after this long (at most halfway to its expiry).
const RETRY_REFRESH_AFTER: Duration = Duration::from_secs(30);
/// The token endpoint answers in well under a second; past this it is down.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Token answers are a few hundred bytes.
const MAX_TOKEN_ANSWER_BYTES: usize = 64 << 10;
/// Token endpoint messages are cut to this many characters in errors.
const MAX_MESSAGE_CHARS: usize = 300;

/// The fields of a service-account key file that the token exchange needs.
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub client_email: String,
    /// Where assertions are exchanged for tokens (the file's `token_uri`).
    pub token_uri: String,
    /// Sent as the JWT's `kid`, as Google's own libraries do.
    pub private_key_id: Option<String>,
    signing_key: EncodingKey,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Why a service-account key was refused; none of these quote the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("it is not the JSON of a service-account key: {0}")]
    Json(String),
    #[error("its type is {0:?}, not \"service_account\" (user credentials cannot sign JWTs)")]
    Type(String),
    #[error("it has no {0}")]
    Missing(&'static str),
    #[error("its private_key is not a PEM RSA private key")]
    PrivateKey,
}

impl ServiceAccountKey {
    /// From the JSON of a key file, as the Cloud console downloads it.
    pub fn from_json(json: &str) -> Result<ServiceAccountKey, KeyError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(rename = "type")]
            kind: Option<String>,
            client_email: Option<String>,
            private_key: Option<String>,
            private_key_id: Option<String>,
            token_uri: Option<String>,
        }
        // serde_json's messages give a line and column, never the text.
        let file: File = serde_json::from_str(json).map_err(|e| KeyError::Json(e.to_string()))?;
        if let Some(kind) = file.kind.filter(|k| k != "service_account") {
            return Err(KeyError::Type(kind));
        }
        let present = |field: Option<String>| field.filter(|v| !v.trim().is_empty());
        let client_email = present(file.client_email).ok_or(KeyError::Missing("client_email"))?;
        let private_key = present(file.private_key).ok_or(KeyError::Missing("private_key"))?;
        let signing_key =
            EncodingKey::from_rsa_pem(private_key.as_bytes()).map_err(|_| KeyError::PrivateKey)?;
        Ok(ServiceAccountKey {
            client_email,
            token_uri: present(file.token_uri).unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned()),
            private_key_id: present(file.private_key_id),
            signing_key,
        })
    }
}

/// The claims of an assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub scope: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

impl Claims {
    /// For `key`, exchanged at `audience` (the token URL), issued at `iat` (Unix seconds).
    pub fn new(key: &ServiceAccountKey, audience: &str, iat: u64) -> Claims {
        Claims {
            iss: key.client_email.clone(),
            scope: SCOPE.to_owned(),
            aud: audience.to_owned(),
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        }
    }
}

/// The signed assertion: `header.claims.signature`, RS256.
pub fn assertion(key: &ServiceAccountKey, claims: &Claims) -> Result<String, TokenError> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = key.private_key_id.clone();
    jsonwebtoken::encode(&header, claims, &key.signing_key)
        .map_err(|e| TokenError::Sign(e.to_string()))
}

/// An access token, ready to send.
pub(super) struct AccessToken {
    /// `Bearer …`, marked sensitive.
    pub(super) header: HeaderValue,
    /// From then on the next call refreshes it.
    refresh_at: Instant,
    expires_at: Instant,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("refresh_at", &self.refresh_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why no token could be had. Never quotes the assertion or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("could not sign the JWT assertion: {0}")]
    Sign(String),
    #[error("the token endpoint {url} could not be reached: {message}")]
    Unreachable { url: String, message: String },
    #[error("the token endpoint {url} answered HTTP {status}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the token endpoint {url} answered without a usable token: {message}")]
    Invalid { url: String, message: String },
}

/// The cached token and the exchange that renews it.
pub(super) struct TokenSource {
    key: ServiceAccountKey,
    token_url: Url,
    /// `token_url` without user information or query, for messages.
    shown_url: String,
    http: reqwest::Client,
    state: Mutex<State>,
    /// Held while a refresh runs: calls that find the token stale wait here, then take the token
    /// that refresh got (or its error) instead of starting one of their own.
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    token: Option<Arc<AccessToken>>,
    /// Refreshes finished so far, successful or not.
    attempts: u64,
    /// Why the last refresh failed, when it did.
    failure: Option<TokenError>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("client_email", &self.key.client_email)
            .field("token_url", &self.shown_url)
            .field("cached", &self.state().token.is_some())
            .finish()
    }
}

impl TokenSource {
    pub(super) fn new(
        key: ServiceAccountKey,
        token_url: Url,
        connect_timeout: Duration,
        tls: rustls::ClientConfig,
    ) -> Result<TokenSource, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(TOKEN_TIMEOUT)
            .connect_timeout(connect_timeout)
            .tls_backend_preconfigured(tls)
            .build()?;
        let shown_url = format!(
            "{}{}",
            token_url.origin().ascii_serialization(),
            token_url.path()
        );
        Ok(TokenSource {
            key,
            token_url,
            shown_url,
            http,
            state: Mutex::new(State::default()),
            refresh: tokio::sync::Mutex::new(()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Each update is a few field writes: a panic elsewhere cannot leave one half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A token to call with: the cached one until its refresh time, else a new one. Concurrent
    /// callers share one refresh, and a refresh that failed while they waited fails them too.
    pub(super) async fn token(&self) -> Result<Arc<AccessToken>, TokenError> {
        let seen = {
            let state = self.state();
            if let Some(token) = state
                .token
                .as_ref()
                .filter(|t| t.refresh_at > Instant::now())
            {
                return Ok(token.clone());
            }
            state.attempts
        };
        let _refreshing = self.refresh.lock().await;
        {
            let state = self.state();
            if let Some(token) = state
                .token
                .as_ref()
                .filter(|t| t.refresh_at > Instant::now())
            {
                return Ok(token.clone());
            }
            if state.attempts != seen
                && let Some(failure) = &state.failure
            {
                return Err(failure.clone());
            }
        }
        self.refresh_now().await
    }

    /// A new token after the upstream refused `refused` (401): unless another call has already
    /// replaced it, a refresh — one, whatever the number of calls that were refused.
    pub(super) async fn replace(
        &self,
        refused: &Arc<AccessToken>,
    ) -> Result<Arc<AccessToken>, TokenError> {
        let seen = self.state().attempts;
        let _refreshing = self.refresh.lock().await;
        {
            let mut state = self.state();
            match &state.token {
                Some(current) if Arc::ptr_eq(current, refused) => state.token = None,
                Some(current) if current.expires_at > Instant::now() => return Ok(current.clone()),
                _ => {}
            }
            if state.attempts != seen
                && let Some(failure) = &state.failure
            {
                return Err(failure.clone());
            }
        }
        self.refresh_now().await
    }

    /// Exchanges a new assertion; the caller holds `refresh`.
    async fn refresh_now(&self) -> Result<Arc<AccessToken>, TokenError> {
        let outcome = self.exchange().await;
        let now = Instant::now();
        let mut state = self.state();
        state.attempts += 1;
        match outcome {
            Ok(token) => {
                metrics::counter!("nano_banana_vertex_token_refreshes_total", "outcome" => "ok")
                    .increment(1);
                tracing::debug!(
                    client_email = %self.key.client_email,
                    valid_s = token.expires_at.saturating_duration_since(now).as_secs(),
                    "Vertex AI access token refreshed"
                );
                state.failure = None;
                state.token = Some(token.clone());
                Ok(token)
            }
            Err(error) => {
                metrics::counter!("nano_banana_vertex_token_refreshes_total", "outcome" => "error")
                    .increment(1);
                // Refreshed early, the old token still works: keep it a little longer.
                if let Some(old) = state.token.as_ref().filter(|t| t.expires_at > now) {
                    let retry = RETRY_REFRESH_AFTER.min(old.expires_at.duration_since(now) / 2);
                    tracing::warn!(
                        error = %error,
                        retry_in_s = retry.as_secs_f64(),
                        "could not refresh the Vertex AI access token; the current one is still valid"
                    );
                    let kept = Arc::new(AccessToken {
                        header: old.header.clone(),
                        refresh_at: now + retry,
                        expires_at: old.expires_at,
                    });
                    state.failure = None;
                    state.token = Some(kept.clone());
                    return Ok(kept);
                }
                tracing::warn!(error = %error, "could not get a Vertex AI access token");
                state.token = None;
                state.failure = Some(error.clone());
                Err(error)
            }
        }
    }

    /// One assertion, exchanged for one token.
    async fn exchange(&self) -> Result<Arc<AccessToken>, TokenError> {
        let started = Instant::now();
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims::new(&self.key, self.token_url.as_str(), iat);
        let assertion = assertion(&self.key, &claims)?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", GRANT_TYPE)
            .append_pair("assertion", &assertion)
            .finish();
        let unreachable = |err: reqwest::Error| TokenError::Unreachable {
            url: self.shown_url.clone(),
            message: crate::providers::direct::error_chain(&err.without_url()),
        };
        let mut response = self
            .http
            .post(self.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, crate::providers::gemini::USER_AGENT_VALUE)
            .body(form)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if crate::providers::direct::push_capped(&mut body, &chunk, MAX_TOKEN_ANSWER_BYTES) {
                break;
            }
        }
        let invalid = |message: String| TokenError::Invalid {
            url: self.shown_url.clone(),
            message,
        };
        if !status.is_success() {
            return Err(TokenError::Refused {
                url: self.shown_url.clone(),
                status: status.as_u16(),
                message: refusal_message(&body),
            });
        }
        #[derive(Deserialize)]
        struct Answer {
            access_token: Option<String>,
            expires_in: Option<u64>,
            token_type: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("the answer is not the expected JSON: {e}")))?;
        if let Some(kind) = answer
            .token_type
            .as_deref()
            .filter(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(invalid(format!("token_type {kind:?}, not Bearer")));
        }
        let token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("no access_token".to_owned()))?;
        let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| invalid("the access_token cannot be sent in a header".to_owned()))?;
        header.set_sensitive(true);
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600).max(1));
        Ok(Arc::new(AccessToken {
            header,
            refresh_at: started + lifetime - REFRESH_MARGIN.min(lifetime / 2),
            expires_at: started + lifetime,
        }))
    }
}

/// OAuth's `{"error", "error_description"}`, or an excerpt of whatever came instead.
fn refusal_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct OAuthError {
        error: Option<String>,
        error_description: Option<String>,
    }
    let text = match serde_json::from_slice::<OAuthError>(body) {
        Ok(OAuthError {
            error: Some(error),
            error_description,
        }) => match error_description.filter(|d| !d.is_empty()) {
            Some(description) => format!("{error}: {description}"),
            None => error,
        },
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
            let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if collapsed.is_empty() {
                "(empty body)".to_owned()
            } else {
                collapsed
            }
        }
    };
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => text[..at].to_owned(),
        None => text,
    }
}
