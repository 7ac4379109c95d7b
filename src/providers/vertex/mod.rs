//! The Vertex AI provider (docs/upstreams.md, Vertex AI): Gemini's `generateContent` on Google
//! Cloud, at `{base}/{version}/projects/{project}/locations/{location}/publishers/google/models/
//! {model}:generateContent`, with an OAuth2 access token of a service account.
//!
//! What lives here: the configuration, the URL (`{location}-aiplatform.googleapis.com`, or
//! `aiplatform.googleapis.com` for `global`), and the call path — a token from the cache, one
//! call, and after a 401 one refresh and one more call. It is a [`GeminiProvider`] with a
//! [`Vertex`] access: the request and answer JSON, error classification and the HTTP clients are
//! the AI Studio provider's. The tokens (key file, JWT, exchange, cache) are in `token`.

use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use url::Url;

use super::gemini::{Auth, GeminiError, GeminiProvider, request_body, upstream_tls};
use super::lanes::ConnectionSettings;
use super::{GeneratedImage, ImageJob, ImageProvider, ProviderError};

mod token;

use token::{AccessToken, TokenSource};
pub use token::{
    Claims, DEFAULT_TOKEN_URI, GRANT_TYPE, KeyError, REFRESH_MARGIN, SCOPE, ServiceAccountKey,
    TokenError, assertion,
};

/// The Gemini provider on Vertex AI.
pub type VertexProvider = GeminiProvider<Vertex>;

/// `v1`, Vertex AI's stable API (the SDK uses `v1beta1`; both serve the image models).
pub const DEFAULT_API_VERSION: &str = "v1";

#[derive(Debug, Clone)]
pub struct VertexConfig {
    /// The Google Cloud project id.
    pub project: String,
    /// A region (`europe-west4`, `us-central1`) or `global` (the Gemini 3 image models are served
    /// only there).
    pub location: String,
    /// `None`: Google's endpoint for `location` ([`default_base_url`]). May carry a path prefix.
    pub base_url: Option<Url>,
    pub api_version: String,
    pub credentials: ServiceAccountKey,
    /// `None`: the key's `token_uri`.
    pub token_url: Option<Url>,
    /// The whole call, sending the inputs through reading the image.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub connections: ConnectionSettings,
}

impl VertexConfig {
    /// Google's endpoint for `location`, `v1`, the key's token URL and the default timeouts.
    pub fn new(
        project: impl Into<String>,
        location: impl Into<String>,
        credentials: ServiceAccountKey,
    ) -> VertexConfig {
        VertexConfig {
            project: project.into(),
            location: location.into(),
            base_url: None,
            api_version: DEFAULT_API_VERSION.to_owned(),
            credentials,
            token_url: None,
            timeout: super::gemini::DEFAULT_TIMEOUT,
            connect_timeout: super::gemini::DEFAULT_CONNECT_TIMEOUT,
            connections: ConnectionSettings::default(),
        }
    }
}

/// Why a [`VertexProvider`] could not be built; all are configuration mistakes.
#[derive(Debug, thiserror::Error)]
pub enum VertexError {
    #[error("the Vertex AI project {0:?} must be a project id (no slashes or spaces)")]
    Project(String),
    #[error(
        "the Vertex AI location {0:?} must be a region such as europe-west4 or us-central1, \
         or global"
    )]
    Location(String),
    #[error("the Vertex AI API version {0:?} must be one non-empty path segment, like v1")]
    ApiVersion(String),
    #[error("the Vertex AI base URL {0} must be an http:// or https:// URL")]
    BaseUrl(String),
    #[error("the token URL {0:?} must be an http:// or https:// URL")]
    TokenUrl(String),
    #[error("could not build the HTTP client for the token endpoint: {0}")]
    TokenClient(#[source] reqwest::Error),
    #[error("could not set up the HTTP client for Vertex AI: {0}")]
    Http(#[from] GeminiError),
}

/// Google's endpoint for a location: `https://aiplatform.googleapis.com` for `global`, else
/// `https://{location}-aiplatform.googleapis.com`. `location` must be valid
/// ([`VertexError::Location`]).
pub fn default_base_url(location: &str) -> Url {
    let host = if location == "global" {
        "aiplatform.googleapis.com".to_owned()
    } else {
        format!("{location}-aiplatform.googleapis.com")
    };
    Url::parse(&format!("https://{host}")).expect("a valid location makes a valid host")
}

/// `{base}/{version}/projects/{project}/locations/{location}/publishers/google/models`, to which
/// `{model}:generateContent` is appended.
pub fn models_url(
    base_url: &Url,
    api_version: &str,
    project: &str,
    location: &str,
) -> Result<Url, VertexError> {
    if project.is_empty()
        || project
            .chars()
            .any(|c| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c.is_control())
    {
        return Err(VertexError::Project(project.to_owned()));
    }
    if !valid_location(location) {
        return Err(VertexError::Location(location.to_owned()));
    }
    let version = api_version.trim_matches('/');
    if version.is_empty() || version.contains('/') {
        return Err(VertexError::ApiVersion(api_version.to_owned()));
    }
    if !matches!(base_url.scheme(), "http" | "https") {
        return Err(VertexError::BaseUrl(base_url.to_string()));
    }
    let mut url = base_url.clone();
    url.set_fragment(None);
    url.set_query(None);
    url.path_segments_mut()
        .map_err(|()| VertexError::BaseUrl(base_url.to_string()))?
        .pop_if_empty()
        .extend([
            version,
            "projects",
            project,
            "locations",
            location,
            "publishers",
            "google",
            "models",
        ]);
    Ok(url)
}

/// A region name (it becomes part of a host name) or `global`.
fn valid_location(location: &str) -> bool {
    !location.is_empty()
        && location.len() <= 63
        && !location.starts_with('-')
        && !location.ends_with('-')
        && location
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Vertex AI's access: its models URL and the service account's token.
#[derive(Debug)]
pub struct Vertex {
    models_url: Url,
    tokens: TokenSource,
}

impl Vertex {
    fn endpoint(&self, upstream_model: &str) -> Url {
        let model = upstream_model
            .strip_prefix("models/")
            .unwrap_or(upstream_model);
        let mut url = self.models_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(&format!("{model}:generateContent"));
        }
        url
    }
}

impl GeminiProvider<Vertex> {
    pub fn vertex(config: VertexConfig) -> Result<VertexProvider, VertexError> {
        let tls = upstream_tls().map_err(|e| VertexError::Http(GeminiError::Tls(e)))?;
        GeminiProvider::vertex_with_tls(config, tls)
    }

    /// With this TLS configuration instead of the platform's (tests: a CA of their own).
    fn vertex_with_tls(
        config: VertexConfig,
        tls: rustls::ClientConfig,
    ) -> Result<VertexProvider, VertexError> {
        if !valid_location(&config.location) {
            return Err(VertexError::Location(config.location));
        }
        let base_url = config
            .base_url
            .clone()
            .unwrap_or_else(|| default_base_url(&config.location));
        let models_url = models_url(
            &base_url,
            &config.api_version,
            &config.project,
            &config.location,
        )?;
        let token_url = match &config.token_url {
            Some(url) => url.clone(),
            None => Url::parse(&config.credentials.token_uri)
                .map_err(|_| VertexError::TokenUrl(config.credentials.token_uri.clone()))?,
        };
        if !matches!(token_url.scheme(), "http" | "https") {
            return Err(VertexError::TokenUrl(token_url.to_string()));
        }
        let tokens = TokenSource::new(
            config.credentials,
            token_url,
            config.connect_timeout,
            tls.clone(),
        )
        .map_err(VertexError::TokenClient)?;
        Ok(GeminiProvider::with_access(
            &base_url,
            (config.timeout, config.connect_timeout),
            config.connections,
            tls,
            Vertex { models_url, tokens },
        )?)
    }

    /// One image: the cached token (refreshed first when due), one call; a 401 means the token
    /// was refused (revoked, or expired early), so it is replaced — one refresh shared with every
    /// call refused alike — and the call made once more. A 401 is an answer, not a generation:
    /// nothing was billed, so the call may be sent again.
    async fn generate_with_token(&self, job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        let body = request_body(job)?;
        let url = self.access.endpoint(&job.upstream_model);
        let tokens = &self.access.tokens;
        let token = tokens.token().await.map_err(no_token)?;
        match self.call(url.clone(), bearer(&token), &body).await {
            Err(ProviderError::Upstream {
                status: 401,
                message,
                ..
            }) => {
                tracing::info!(
                    upstream_message = %message,
                    "Vertex AI refused the access token: refreshing it and calling once more"
                );
                let fresh = tokens.replace(&token).await.map_err(no_token)?;
                self.call(url, bearer(&fresh), &body).await
            }
            other => other,
        }
    }
}

fn bearer(token: &AccessToken) -> Auth<'_> {
    Auth {
        name: &AUTHORIZATION,
        value: &token.header,
    }
}

/// No token means no call was made: retryable, and the route cools down.
fn no_token(error: TokenError) -> ProviderError {
    ProviderError::Transport {
        message: format!("no Vertex AI access token: {error}"),
        sent: false,
    }
}

#[async_trait::async_trait]
impl ImageProvider for GeminiProvider<Vertex> {
    fn name(&self) -> &'static str {
        "vertex"
    }

    async fn generate(&self, job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        self.generate_with_token(job).await
    }
}

#[cfg(test)]
mod tests;
