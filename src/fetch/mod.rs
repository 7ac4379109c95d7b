//! The one outbound-request policy: every request to a user-supplied address goes through here,
//! both downloads of input images (`image_urls`) and POSTs to `callback_url`s.
//!
//! What lives here: URL vetting (scheme, userinfo, IP literals), a DNS resolver that drops refused
//! addresses (the connection then goes to exactly the checked address, so DNS rebinding fails),
//! a redirect policy that vets every hop, streaming size caps, `data:` URI parsing, and sniffing
//! of the image format and header-only dimensions (decompression-bomb guard).
//! What does not: pixel decoding, retries, callback signing and scheduling. Imports `domain` and
//! `providers` (the input image type) only.
//!
//! This file holds [`Fetcher`] with its [`FetchPolicy`] and [`FetchError`], the redirect policy
//! and the capped download. Which URLs and addresses pass is decided in `policy.rs` (`Rules`),
//! from the ranges and allow-list entries of `addresses.rs`; `resolver.rs` is the vetting DNS
//! resolver, `image.rs` the `data:` URI parser and the sniffer.
//!
//! Callers that send their own requests with [`Fetcher::client`] must vet the first URL with
//! [`Fetcher::check_url`] (or use [`Fetcher::request`]): IP-literal hosts never reach a resolver,
//! so only that check stands between a literal and the connection.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use url::Url;

use crate::providers::InputImage;

mod addresses;
mod image;
mod policy;
mod resolver;

pub use self::addresses::{AllowRule, is_global};
pub use self::image::{parse_data_uri, sniff_image};
use self::policy::{Rules, has_scheme, refusal_text, strict_syntax};
use self::resolver::{FilteringResolver, Lookup};

#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Allow every address, including loopback and private ranges. Tests and trusted setups only.
    pub allow_private: bool,
    /// Operator allow-list: these networks and hostnames are reachable even when not global.
    pub allow: Vec<AllowRule>,
    /// Per image, after base64 decoding; also the cap on any downloaded body.
    pub max_image_bytes: usize,
    /// Largest `width * height` accepted, read from the header before any decoding.
    pub max_pixels: u64,
    pub connect_timeout: Duration,
    /// Whole request: connect, headers and body.
    pub timeout: Duration,
    pub max_redirects: usize,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allow_private: false,
            allow: Vec::new(),
            max_image_bytes: 10 * 1024 * 1024,
            max_pixels: 50_000_000,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_redirects: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The image (or body) is over `limit` bytes. Maps to 413 `request_too_large`.
    #[error("the image is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The address is not allowed by policy: scheme, userinfo, a non-global address (directly,
    /// through DNS or through a redirect), or too many redirects.
    #[error("refused by the outbound request policy: {0}")]
    Refused(String),
    #[error("invalid URL: {0}")]
    BadUrl(String),
    #[error("invalid data URI: {0}")]
    BadDataUri(String),
    /// DNS failure, connection refused or reset: the host could not be talked to.
    #[error("the host could not be reached: {0}")]
    Unreachable(String),
    #[error("the request timed out")]
    Timeout,
    /// The host answered with a non-2xx status.
    #[error("the host answered HTTP {0}")]
    Status(u16),
    /// The bytes are not PNG, JPEG, WebP, GIF, HEIC or HEIF, or their header is unreadable.
    #[error("not a supported image: {0}")]
    NotAnImage(String),
    /// Refused from the header alone, before any pixel was decoded.
    #[error("the image is too large: {width}x{height} pixels")]
    TooManyPixels { width: u32, height: u32 },
    /// The policy itself is unusable (a bad allow rule, a client that cannot be built).
    #[error("invalid fetch configuration: {0}")]
    BadConfig(String),
}

impl FetchError {
    pub fn is_too_large(&self) -> bool {
        matches!(self, FetchError::TooLarge { .. })
    }

    /// Whether the same request may succeed later (for callback retries): unreachable hosts,
    /// timeouts, 408, 429 and 5xx. Policy refusals and bad input are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Unreachable(_) | FetchError::Timeout => true,
            FetchError::Status(s) => *s == 408 || *s == 429 || *s >= 500,
            _ => false,
        }
    }
}

/// Maps a reqwest error. A refusal raised inside the resolver or the redirect policy travels as
/// the source of reqwest's error, so the chain is searched for it first.
impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        let mut src: Option<&(dyn StdError + 'static)> = Some(&e);
        while let Some(s) = src {
            if let Some(r) = s.downcast_ref::<Refusal>() {
                return FetchError::Refused(r.0.clone());
            }
            src = s.source();
        }
        if e.is_timeout() {
            return FetchError::Timeout;
        }
        // The URL is the caller's own input; the source chain is the useful part of the message.
        let e = e.without_url();
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        FetchError::Unreachable(msg)
    }
}

/// A policy refusal raised inside reqwest's machinery (resolver, redirect policy).
#[derive(Debug)]
struct Refusal(String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Refusal {}

/// Downloads and vets user-supplied images; cheap to clone (one shared client).
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    rules: Arc<Rules>,
    client: reqwest::Client,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("policy", &self.inner.rules.policy)
            .finish()
    }
}

impl Fetcher {
    pub fn new(policy: FetchPolicy) -> Result<Self, FetchError> {
        Self::build(policy, Lookup::System)
    }

    fn build(policy: FetchPolicy, lookup: Lookup) -> Result<Self, FetchError> {
        let rules = Arc::new(Rules { policy });
        let resolver = FilteringResolver {
            rules: rules.clone(),
            lookup: Arc::new(lookup),
        };
        let redirect_rules = rules.clone();
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            // `previous` holds the original URL plus every hop already followed.
            if attempt.previous().len() > redirect_rules.policy.max_redirects {
                let msg = format!(
                    "more than {} redirects",
                    redirect_rules.policy.max_redirects
                );
                return attempt.error(Refusal(msg));
            }
            match redirect_rules.check_parsed(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(Refusal(format!("redirect: {}", refusal_text(&e)))),
            }
        });
        let client = reqwest::Client::builder()
            // With a proxy, the proxy would resolve the target and our resolver would be moot.
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .redirect(redirect)
            .connect_timeout(rules.policy.connect_timeout)
            .timeout(rules.policy.timeout)
            .user_agent(concat!("nano-banana/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::BadConfig(format!("cannot build the HTTP client: {e}")))?;
        Ok(Fetcher {
            inner: Arc::new(Inner { rules, client }),
        })
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.inner.rules.policy
    }

    /// A client with the same resolver filter, redirect checks, timeouts and no proxy.
    /// Check the first URL with [`Fetcher::check_url`] before using it (see the module docs).
    pub fn client(&self) -> &reqwest::Client {
        &self.inner.client
    }

    /// `check_url` followed by a request builder on [`Fetcher::client`]: the safe way to send
    /// anything else (callbacks) to a user-supplied URL.
    pub fn request(
        &self,
        method: reqwest::Method,
        raw: &str,
    ) -> Result<reqwest::RequestBuilder, FetchError> {
        let url = self.check_url(raw)?;
        Ok(self.inner.client.request(method, url))
    }

    /// Syntax, scheme, userinfo and IP-literal checks, without DNS. Hostnames are vetted later by
    /// the resolver, except `localhost` and `*.localhost`, which are loopback by definition
    /// (RFC 6761) and are checked here already.
    pub fn check_url(&self, raw: &str) -> Result<Url, FetchError> {
        strict_syntax(raw)?;
        let url = Url::parse(raw).map_err(|e| FetchError::BadUrl(e.to_string()))?;
        self.inner.rules.check_parsed(&url)?;
        Ok(url)
    }

    /// Everything about an input image source that can be checked before a task exists, without
    /// any network traffic: a `data:` URI is decoded and its header read (it carries the image
    /// itself); a URL gets [`Fetcher::check_url`].
    pub fn check_source(&self, source: &str) -> Result<(), FetchError> {
        let policy = &self.inner.rules.policy;
        if has_scheme(source, "data") {
            parse_data_uri(source, policy.max_image_bytes, policy.max_pixels).map(|_| ())
        } else {
            self.check_url(source).map(|_| ())
        }
    }

    /// Loads one input image from a `data:` URI or an http(s) URL: size-capped, sniffed from the
    /// bytes, its dimensions read from the header and bounded.
    pub async fn load_image(&self, source: &str) -> Result<InputImage, FetchError> {
        let policy = &self.inner.rules.policy;
        if has_scheme(source, "data") {
            return parse_data_uri(source, policy.max_image_bytes, policy.max_pixels);
        }
        let url = self.check_url(source)?;
        // reqwest's own total timeout covers the body too; this outer one is a backstop so that
        // no code path here can outlive the policy.
        let bytes = tokio::time::timeout(policy.timeout, self.download(url))
            .await
            .map_err(|_| FetchError::Timeout)??;
        let (mime_type, width, height) = sniff_image(&bytes, policy.max_pixels)?;
        Ok(InputImage {
            bytes,
            mime_type,
            width,
            height,
        })
    }

    async fn download(&self, url: Url) -> Result<Bytes, FetchError> {
        let max = self.inner.rules.policy.max_image_bytes;
        let mut resp = self
            .inner
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "image/*")
            .send()
            .await?;
        let status = resp.status();
        // A redirect that reaches us was not followed: its target is not http(s) at all.
        if status.is_redirection() && resp.headers().contains_key(reqwest::header::LOCATION) {
            return Err(FetchError::Refused(
                "redirect to a non-http(s) location".into(),
            ));
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        // Content-Length is only trusted to refuse early, never to size what we accept.
        let declared = resp.content_length();
        if declared.is_some_and(|len| len > max as u64) {
            return Err(FetchError::TooLarge { limit: max });
        }
        let initial = declared.map_or(64 * 1024, |len| len as usize).min(max);
        let mut buf = Vec::with_capacity(initial);
        while let Some(chunk) = resp.chunk().await? {
            if buf.len() + chunk.len() > max {
                // Dropping the response mid-body closes the connection.
                return Err(FetchError::TooLarge { limit: max });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests;
