//! The one outbound-request policy: every request to a user-supplied address goes through here,
//! both downloads of input images (`image_urls`) and POSTs to `callback_url`s.
//!
//! What lives here: URL vetting (scheme, userinfo, IP literals), a DNS resolver that drops refused
//! addresses (the connection then goes to exactly the checked address, so DNS rebinding fails),
//! a redirect policy that vets every hop, streaming size caps, `data:` URI parsing, and sniffing
//! of the image format and header-only dimensions (decompression-bomb guard).
//! What does not: pixel decoding, retries, callback signing and scheduling.
//!
//! Callers that send their own requests with [`Fetcher::client`] must vet the first URL with
//! [`Fetcher::check_url`] (or use [`Fetcher::request`]): IP-literal hosts never reach a resolver,
//! so only that check stands between a literal and the connection.

use std::error::Error as StdError;
use std::fmt;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use ipnet::IpNet;
use url::{Host, Url};

use crate::providers::InputImage;

/// Larger sides are refused whatever `max_pixels` says: no upstream takes them and some decoders
/// misbehave near `u16`/`i32` limits.
pub const MAX_SIDE: u32 = 16_384;

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

/// One entry of the operator allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    /// Addresses in this network are allowed. A bare address parses as a single-host network.
    Net(IpNet),
    /// This exact hostname (lowercase, no trailing dot) is allowed whatever it resolves to.
    /// Subdomains are not included.
    Host(String),
}

impl FromStr for AllowRule {
    type Err = FetchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || {
            FetchError::BadConfig(format!(
                "invalid allow rule {s:?}: want a CIDR or a hostname"
            ))
        };
        if s.contains('/') {
            return IpNet::from_str(s)
                .map(|n| AllowRule::Net(n.trunc()))
                .map_err(|_| bad());
        }
        if let Ok(ip) = IpAddr::from_str(s) {
            return Ok(AllowRule::Net(IpNet::from(ip)));
        }
        let host = normalize_host(s);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(bad());
        }
        Ok(AllowRule::Host(host))
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowRule::Net(n) => write!(f, "{n}"),
            AllowRule::Host(h) => f.write_str(h),
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

/// The parts of the policy the resolver and redirect policy need, shared with the client.
#[derive(Debug)]
struct Rules {
    policy: FetchPolicy,
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

impl Rules {
    fn address_allowed(&self, ip: IpAddr) -> bool {
        let p = &self.policy;
        p.allow_private
            || is_global(ip)
            || p.allow.iter().any(|r| match r {
                // A v4-mapped v6 address is the v4 host it embeds, for the allow-list too.
                AllowRule::Net(n) => n.contains(&ip) || n.contains(&ip.to_canonical()),
                AllowRule::Host(_) => false,
            })
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.policy
            .allow
            .iter()
            .any(|r| matches!(r, AllowRule::Host(h) if *h == host))
    }

    /// Every check that needs no DNS, on an already parsed URL (the first URL and each redirect).
    fn check_parsed(&self, url: &Url) -> Result<(), FetchError> {
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(FetchError::Refused(format!(
                    "scheme {other:?} is not allowed"
                )));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::Refused(
                "credentials in URLs are not allowed".into(),
            ));
        }
        match url.host() {
            None => Err(FetchError::BadUrl("the URL has no host".into())),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(Host::Domain(d)) => {
                if d.is_empty() {
                    return Err(FetchError::BadUrl("the URL has no host".into()));
                }
                if is_localhost_name(d)
                    && !self.host_allowed(d)
                    && !LOOPBACK.iter().any(|ip| self.address_allowed(*ip))
                {
                    return Err(FetchError::Refused(format!("host {d} is loopback")));
                }
                Ok(())
            }
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), FetchError> {
        if self.address_allowed(ip) {
            Ok(())
        } else {
            Err(FetchError::Refused(format!("address {ip} is not allowed")))
        }
    }
}

fn refusal_text(e: &FetchError) -> String {
    match e {
        FetchError::Refused(m) | FetchError::BadUrl(m) => m.clone(),
        other => other.to_string(),
    }
}

const LOOPBACK: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

fn normalize_host(h: &str) -> String {
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

fn is_localhost_name(h: &str) -> bool {
    let h = normalize_host(h);
    h == "localhost" || h.ends_with(".localhost")
}

fn has_scheme(s: &str, scheme: &str) -> bool {
    s.len() > scheme.len()
        && s.as_bytes()[scheme.len()] == b':'
        && s[..scheme.len()].eq_ignore_ascii_case(scheme)
}

/// Stricter than the WHATWG parser, which silently drops tabs and newlines, trims spaces, treats
/// `\` as `/` and accepts `http:///host`: an input that only parses thanks to such repairs is
/// refused, so what we check is what the user wrote. Interior spaces are left to the parser,
/// which percent-encodes them in paths and rejects them in hosts.
fn strict_syntax(raw: &str) -> Result<(), FetchError> {
    if raw.bytes().any(|b| b.is_ascii_control() || b == b'\\') {
        return Err(FetchError::BadUrl(
            "control characters or backslashes".into(),
        ));
    }
    if raw.starts_with(' ') || raw.ends_with(' ') {
        return Err(FetchError::BadUrl("leading or trailing spaces".into()));
    }
    let rest = if has_scheme(raw, "http") {
        &raw[5..]
    } else if has_scheme(raw, "https") {
        &raw[6..]
    } else {
        // Not http(s): let the parser name the scheme so the refusal says which.
        return match Url::parse(raw) {
            Ok(u) => Err(FetchError::Refused(format!(
                "scheme {:?} is not allowed",
                u.scheme()
            ))),
            Err(e) => Err(FetchError::BadUrl(e.to_string())),
        };
    };
    match rest.strip_prefix("//") {
        Some(after) if !after.is_empty() && !after.starts_with('/') => Ok(()),
        _ => Err(FetchError::BadUrl("expected scheme://host/…".into())),
    }
}

// ---------------------------------------------------------------------------------------------
// Address classification. std's `is_global` is unstable, so the ranges are spelled out.

/// IPv4 ranges that are never contacted unless allowed explicitly.
const REFUSED_V4: &[(u32, u8)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
    (0x0a00_0000, 8),  // 10/8
    (0x6440_0000, 10), // 100.64/10 CGNAT
    (0x7f00_0000, 8),  // 127/8
    (0xa9fe_0000, 16), // 169.254/16 link-local, cloud metadata
    (0xac10_0000, 12), // 172.16/12
    (0xc000_0000, 24), // 192.0.0/24 IETF protocol assignments
    (0xc000_0200, 24), // 192.0.2/24 TEST-NET-1
    (0xc058_6300, 24), // 192.88.99/24 6to4 relay anycast
    (0xc0a8_0000, 16), // 192.168/16
    (0xc612_0000, 15), // 198.18/15 benchmarking
    (0xc633_6400, 24), // 198.51.100/24 TEST-NET-2
    (0xcb00_7100, 24), // 203.0.113/24 TEST-NET-3
    (0xe000_0000, 4),  // 224/4 multicast
    (0xf000_0000, 4),  // 240/4 reserved, includes 255.255.255.255
];

/// IPv6 ranges refused outright (the ranges that embed an IPv4 address are handled apart).
const REFUSED_V6: &[(u128, u8)] = &[
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // 100::/64 discard-only
    (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48), // 64:ff9b:1::/48 local-use NAT64
    (0x2001_0000_0000_0000_0000_0000_0000_0000, 32), // 2001::/32 Teredo (obfuscated v4 inside)
    (0x2001_0002_0000_0000_0000_0000_0000_0000, 48), // 2001:2::/48 benchmarking
    (0x2001_0010_0000_0000_0000_0000_0000_0000, 28), // 2001:10::/28 ORCHID
    (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // 2001:db8::/32 documentation
    (0x3fff_0000_0000_0000_0000_0000_0000_0000, 20), // 3fff::/20 documentation
    (0x5f00_0000_0000_0000_0000_0000_0000_0000, 16), // 5f00::/16 SRv6 SIDs
    (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // fc00::/7 unique local
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // fe80::/10 link-local
    (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10), // fec0::/10 deprecated site-local
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8),  // ff00::/8 multicast
];

fn in_v4(ip: u32, (net, len): (u32, u8)) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    ip & mask == net
}

fn in_v6(ip: u128, (net, len): (u128, u8)) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    ip & mask == net
}

/// Whether the address is publicly routable, looking through every IPv6 form that embeds an
/// IPv4 address a router or the kernel would actually deliver to.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let n = u32::from(ip);
    !REFUSED_V4.iter().any(|r| in_v4(n, *r))
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let n = u128::from(ip);
    let low32 = Ipv4Addr::from((n & 0xffff_ffff) as u32);
    // ::/96 (IPv4-compatible, which also holds :: and ::1) and ::ffff:0:0/96 (IPv4-mapped).
    if in_v6(n, (0, 96)) || in_v6(n, (0xffff_0000_0000, 96)) {
        return n > 1 && is_global_v4(low32);
    }
    // 64:ff9b::/96 well-known NAT64 prefix: the gateway connects to the embedded address.
    if in_v6(n, (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96)) {
        return is_global_v4(low32);
    }
    // 2002::/16 6to4: the relay forwards to the IPv4 address in bits 16..48.
    if in_v6(n, (0x2002_0000_0000_0000_0000_0000_0000_0000, 16)) {
        return is_global_v4(Ipv4Addr::from((n >> 80) as u32));
    }
    !REFUSED_V6.iter().any(|r| in_v6(n, *r))
}

// ---------------------------------------------------------------------------------------------
// The resolver: the only place hostnames become addresses, so the filter cannot be bypassed by
// a second lookup.

enum Lookup {
    System,
    /// Canned answers, so tests can exercise the filter without any real DNS traffic.
    #[cfg(test)]
    Fixed(std::collections::HashMap<String, Vec<IpAddr>>),
}

impl Lookup {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        // RFC 6761: these names are loopback; asking DNS would leak them and could be lied to.
        if is_localhost_name(host) {
            return Ok(LOOPBACK.to_vec());
        }
        match self {
            Lookup::System => {
                let addrs = tokio::net::lookup_host((host, 0)).await?;
                Ok(addrs.map(|a| a.ip()).collect())
            }
            #[cfg(test)]
            Lookup::Fixed(map) => map.get(&normalize_host(host)).cloned().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such host (test lookup)")
            }),
        }
    }
}

struct FilteringResolver {
    rules: Arc<Rules>,
    lookup: Arc<Lookup>,
}

impl FilteringResolver {
    async fn resolve_filtered(
        rules: &Rules,
        lookup: &Lookup,
        host: &str,
    ) -> Result<Vec<IpAddr>, Box<dyn StdError + Send + Sync>> {
        let addrs = lookup.lookup(host).await?;
        if rules.host_allowed(host) {
            return Ok(addrs);
        }
        let total = addrs.len();
        let kept: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|ip| rules.address_allowed(*ip))
            .collect();
        if kept.is_empty() {
            let why = if total == 0 {
                "resolves to nothing"
            } else {
                "resolves only to refused addresses"
            };
            return Err(Box::new(Refusal(format!("host {host} {why}"))));
        }
        if kept.len() < total {
            tracing::debug!(
                host,
                dropped = total - kept.len(),
                "dropped refused addresses"
            );
        }
        Ok(kept)
    }
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rules = self.rules.clone();
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let ips = Self::resolve_filtered(&rules, &lookup, name.as_str()).await?;
            // Port 0 is replaced by the URL's port (or the scheme default) by reqwest.
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// data: URIs and sniffing.

/// The most bytes `n` base64 characters (no whitespace, no padding) can decode to.
fn decoded_len_at_most(n: usize) -> usize {
    n / 4 * 3 + n % 4 * 3 / 4
}

/// Parses `data:image/<type>[;param=value]*;base64,<data>`.
///
/// ASCII whitespace inside the base64 is tolerated (line-wrapped output of `base64(1)` is common)
/// and padding is optional, as in the Fetch standard's forgiving base64. The declared media type
/// must be `image/*` but is otherwise ignored: the sniffed type wins.
pub fn parse_data_uri(
    s: &str,
    max_bytes: usize,
    max_pixels: u64,
) -> Result<InputImage, FetchError> {
    let bad = |m: &str| FetchError::BadDataUri(m.to_string());
    if !has_scheme(s, "data") {
        return Err(bad("does not start with data:"));
    }
    let (header, payload) = s[5..]
        .split_once(',')
        .ok_or_else(|| bad("no ',' before the data"))?;
    let mut params = header.split(';');
    let media_type = params.next().unwrap_or("").trim();
    let (kind, subtype) = media_type
        .split_once('/')
        .ok_or_else(|| bad("no image media type"))?;
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if !kind.eq_ignore_ascii_case("image") || !token(subtype) {
        return Err(bad("the media type is not image/*"));
    }
    let params: Vec<&str> = params.map(str::trim).collect();
    match params.split_last() {
        Some((last, rest)) if last.eq_ignore_ascii_case("base64") => {
            if rest
                .iter()
                .any(|p| !p.split_once('=').is_some_and(|(k, _)| token(k)))
            {
                return Err(bad("malformed media type parameter"));
            }
        }
        _ => return Err(bad("only ;base64 data URIs are accepted")),
    }

    // Refuse from the encoded length before allocating anything for the decoded bytes. The
    // exact count (whitespace and padding left out) is a byte-by-byte pass over megabytes, so
    // it is made only when the whole length could decode to more than the limit.
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c');
    if decoded_len_at_most(payload.len()) > max_bytes {
        let significant = payload.bytes().filter(|b| !is_ws(b)).count();
        let pads = payload
            .bytes()
            .rev()
            .filter(|b| !is_ws(b))
            .take(2)
            .filter(|b| *b == b'=')
            .count();
        if decoded_len_at_most(significant - pads) > max_bytes {
            return Err(FetchError::TooLarge { limit: max_bytes });
        }
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    // Whitespace is not base64: when the decoder stops at some, decode a copy without it.
    let decoded = match engine.decode(payload) {
        Err(_) if payload.bytes().any(|b| is_ws(&b)) => {
            engine.decode(payload.bytes().filter(|b| !is_ws(b)).collect::<Vec<u8>>())
        }
        decoded => decoded,
    }
    .map_err(|e| FetchError::BadDataUri(format!("invalid base64: {e}")))?;
    if decoded.len() > max_bytes {
        return Err(FetchError::TooLarge { limit: max_bytes });
    }
    let (mime_type, width, height) = sniff_image(&decoded, max_pixels)?;
    Ok(InputImage {
        bytes: Bytes::from(decoded),
        mime_type,
        width,
        height,
    })
}

/// Identifies the format from magic numbers and reads the dimensions from the header only.
/// Refuses `TooManyPixels` when a side exceeds [`MAX_SIDE`] or `w * h > max_pixels`.
pub fn sniff_image(bytes: &[u8], max_pixels: u64) -> Result<(&'static str, u32, u32), FetchError> {
    use image::ImageFormat;
    let raster = |format: ImageFormat| -> Result<(u32, u32), FetchError> {
        image::ImageReader::with_format(Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(|e| FetchError::NotAnImage(format!("unreadable {format:?} header: {e}")))
    };
    let (mime, (width, height)) = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        ("image/png", raster(ImageFormat::Png)?)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        ("image/jpeg", raster(ImageFormat::Jpeg)?)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        ("image/gif", raster(ImageFormat::Gif)?)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        ("image/webp", raster(ImageFormat::WebP)?)
    } else if let Some(mime) = heif_mime(bytes) {
        (mime, heif_dimensions(bytes)?)
    } else {
        return Err(FetchError::NotAnImage("unrecognised format".into()));
    };
    if width == 0 || height == 0 {
        return Err(FetchError::NotAnImage(format!(
            "{mime} with a zero dimension"
        )));
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > max_pixels {
        return Err(FetchError::TooManyPixels { width, height });
    }
    Ok((mime, width, height))
}

const HEIC_BRANDS: [&[u8; 4]; 6] = [b"heic", b"heix", b"hevc", b"heim", b"heis", b"hevm"];
const HEIF_BRANDS: [&[u8; 4]; 2] = [b"mif1", b"msf1"];

/// `image/heic` or `image/heif` from the `ftyp` box's major brand. Generic HEIF (`mif1`) files
/// that also list an HEVC brand are HEIC; AVIF (`avif`, `avis` major brands) is not accepted.
fn heif_mime(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 16 || &bytes[4..8] != b"ftyp" {
        return None;
    }
    let major = &bytes[8..12];
    if HEIC_BRANDS.iter().any(|b| &b[..] == major) {
        return Some("image/heic");
    }
    if HEIF_BRANDS.iter().any(|b| &b[..] == major) {
        let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let compatible = bytes.get(16..size.min(bytes.len())).unwrap_or(&[]);
        let is_hevc = compatible
            .chunks_exact(4)
            .any(|c| HEIC_BRANDS.iter().any(|b| &b[..] == c));
        return Some(if is_hevc { "image/heic" } else { "image/heif" });
    }
    None
}

/// Reads the dimensions from the `ispe` properties (`meta` → `iprp` → `ipco` → `ispe`). A file
/// holds one per item (thumbnails, tiles, the grid); the largest is taken, which is the full
/// image for grids and errs on the refusing side otherwise.
fn heif_dimensions(bytes: &[u8]) -> Result<(u32, u32), FetchError> {
    let not = |m: &str| FetchError::NotAnImage(format!("HEIF: {m}"));
    let meta = find_box(bytes, b"meta").ok_or_else(|| not("no meta box"))?;
    // `meta` is a full box: version and flags come first.
    let iprp = find_box(meta.get(4..).ok_or_else(|| not("short meta"))?, b"iprp")
        .ok_or_else(|| not("no iprp box"))?;
    let ipco = find_box(iprp, b"ipco").ok_or_else(|| not("no ipco box"))?;
    let mut best: Option<(u32, u32)> = None;
    for (kind, body) in boxes(ipco) {
        if &kind != b"ispe" || body.len() < 12 {
            continue;
        }
        let w = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        let h = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
        let area = u64::from(w) * u64::from(h);
        if best.is_none_or(|(bw, bh)| area > u64::from(bw) * u64::from(bh)) {
            best = Some((w, h));
        }
    }
    best.ok_or_else(|| not("no ispe property"))
}

fn find_box<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| k == kind).map(|(_, body)| body)
}

/// Iterates ISO-BMFF boxes as (type, body); stops at the first malformed header.
fn boxes(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 8 {
            return None;
        }
        let size32 = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let kind = [data[4], data[5], data[6], data[7]];
        let (header, size) = match size32 {
            0 => (8, data.len()),
            1 => {
                let large = data.get(8..16)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(large);
                (16, usize::try_from(u64::from_be_bytes(b)).ok()?)
            }
            n => (8, n as usize),
        };
        if size < header || size > data.len() {
            data = &[];
            return None;
        }
        let body = &data[header..size];
        data = &data[size..];
        Some((kind, body))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::Router;
    use axum::body::Body;
    use axum::extract::{Path, Query};
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use base64::engine::general_purpose::STANDARD as B64;
    use tokio::sync::Notify;

    use super::*;

    // ---- fixtures -------------------------------------------------------------------------

    fn encode(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, format)
            .unwrap();
        out.into_inner()
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        encode(w, h, image::ImageFormat::Png)
    }

    /// A valid PNG whose IHDR declares `w` x `h` (CRC fixed up), with a 1x1 image's data.
    fn patched_png(w: u32, h: u32) -> Vec<u8> {
        let mut p = png(1, 1);
        assert_eq!(&p[12..16], b"IHDR");
        p[16..20].copy_from_slice(&w.to_be_bytes());
        p[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32fast::hash(&p[12..29]);
        p[29..33].copy_from_slice(&crc.to_be_bytes());
        p
    }

    fn bmff(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    /// A minimal HEIF: ftyp + meta(iprp(ipco(ispe...))). Enough for the header reader.
    fn heif(major: &[u8; 4], compat: &[&[u8; 4]], sizes: &[(u32, u32)]) -> Vec<u8> {
        let mut ftyp = major.to_vec();
        ftyp.extend_from_slice(&0u32.to_be_bytes());
        for c in compat {
            ftyp.extend_from_slice(&c[..]);
        }
        let mut ipco = Vec::new();
        for (w, h) in sizes {
            let mut ispe = vec![0, 0, 0, 0];
            ispe.extend_from_slice(&w.to_be_bytes());
            ispe.extend_from_slice(&h.to_be_bytes());
            ipco.extend(bmff(b"ispe", &ispe));
        }
        let iprp = bmff(b"iprp", &bmff(b"ipco", &ipco));
        let mut meta = vec![0, 0, 0, 0];
        meta.extend(bmff(b"hdlr", &[0u8; 24]));
        meta.extend(iprp);
        let mut out = bmff(b"ftyp", &ftyp);
        out.extend(bmff(b"meta", &meta));
        out.extend(bmff(b"mdat", b"not really hevc"));
        out
    }

    fn data_uri(mime: &str, bytes: &[u8]) -> String {
        format!("data:{mime};base64,{}", B64.encode(bytes))
    }

    fn policy(allow: &[&str]) -> FetchPolicy {
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

    fn fetcher(policy: FetchPolicy) -> Fetcher {
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
                    let probe = slow_probe.clone();
                    async move {
                        let stream =
                            futures_util::stream::unfold(DropSignal(probe), |g| async move {
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

    #[tokio::test]
    async fn resolver_drops_refused_addresses() {
        let lookup = Lookup::Fixed(HashMap::from([
            (
                "mixed.test".to_string(),
                vec![
                    "169.254.169.254".parse().unwrap(),
                    "10.0.0.1".parse().unwrap(),
                    "127.0.0.1".parse().unwrap(),
                    "::1".parse().unwrap(),
                ],
            ),
            (
                "public.test".to_string(),
                vec!["8.8.8.8".parse().unwrap(), "192.168.0.1".parse().unwrap()],
            ),
            ("empty.test".to_string(), vec![]),
        ]));
        let rules = Rules {
            policy: policy(&["127.0.0.1/32"]),
        };
        let got = FilteringResolver::resolve_filtered(&rules, &lookup, "mixed.test")
            .await
            .unwrap();
        assert_eq!(got, vec![IpAddr::from([127, 0, 0, 1])]);
        let got = FilteringResolver::resolve_filtered(&rules, &lookup, "public.test")
            .await
            .unwrap();
        assert_eq!(got, vec![IpAddr::from([8, 8, 8, 8])]);
        let err = FilteringResolver::resolve_filtered(&rules, &lookup, "empty.test")
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<Refusal>().is_some());
        let got = FilteringResolver::resolve_filtered(&rules, &lookup, "localhost")
            .await
            .unwrap();
        assert_eq!(got, vec![IpAddr::from([127, 0, 0, 1])]);

        let rules = Rules {
            policy: FetchPolicy::default(),
        };
        let err = FilteringResolver::resolve_filtered(&rules, &lookup, "mixed.test")
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<Refusal>().is_some(), "{err}");
        let err = FilteringResolver::resolve_filtered(&rules, &lookup, "localhost.")
            .await
            .unwrap_err();
        assert!(err.downcast_ref::<Refusal>().is_some(), "{err}");

        // A host rule lets every address of that name through, and nothing else.
        let rules = Rules {
            policy: policy(&["mixed.test"]),
        };
        let got = FilteringResolver::resolve_filtered(&rules, &lookup, "MIXED.test.")
            .await
            .unwrap();
        assert_eq!(got.len(), 4);
        assert!(
            FilteringResolver::resolve_filtered(&rules, &lookup, "public.test")
                .await
                .unwrap()
                .len()
                == 1
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

    // ---- data: URIs --------------------------------------------------------------------------

    const MAX: usize = 10 * 1024 * 1024;
    const PIXELS: u64 = 50_000_000;

    #[tokio::test]
    async fn data_uris_are_decoded_and_sniffed() {
        let p = png(5, 2);
        let img = parse_data_uri(&data_uri("image/png", &p), MAX, PIXELS).unwrap();
        assert_eq!((img.mime_type, img.width, img.height), ("image/png", 5, 2));
        assert_eq!(&img.bytes[..], &p[..]);

        // The sniffed type wins over the declared one.
        let img = parse_data_uri(&data_uri("image/jpeg", &p), MAX, PIXELS).unwrap();
        assert_eq!(img.mime_type, "image/png");

        // Parameters, case, line wrapping and missing padding are tolerated.
        let b64 = B64.encode(&p);
        let wrapped: Vec<String> = b64
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        for uri in [
            format!("data:image/png;charset=utf-8;base64,{b64}"),
            format!("DATA:Image/PNG;BASE64,{b64}"),
            format!("data:image/png;base64,{}", wrapped.join("\r\n")),
            format!("data:image/png;base64, {} ", wrapped.join("\n")),
            format!("data:image/png;base64,{}", b64.trim_end_matches('=')),
        ] {
            let img = parse_data_uri(&uri, MAX, PIXELS).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(&img.bytes[..], &p[..]);
        }

        // load_image routes data: URIs here, with the policy's limits.
        let f = fetcher(FetchPolicy {
            max_image_bytes: 100,
            ..FetchPolicy::default()
        });
        assert!(
            f.load_image(&format!("Data:image/png;base64,{b64}"))
                .await
                .is_ok()
        );
        let big = png(64, 64);
        assert!(big.len() > 100);
        assert!(
            f.load_image(&data_uri("image/png", &big))
                .await
                .unwrap_err()
                .is_too_large()
        );
    }

    #[test]
    fn bad_data_uris_are_refused() {
        let b64 = B64.encode(png(2, 2));
        for uri in [
            format!("data:image/png,{b64}"),
            format!("data:image/png;base64{b64}"),
            format!("data:text/plain;base64,{b64}"),
            format!("data:;base64,{b64}"),
            format!("data:,{b64}"),
            format!("data:image/;base64,{b64}"),
            format!("data:image;base64,{b64}"),
            format!("data:image/png;base64;x=y,{b64}"),
            format!("data:image/png;bogus;base64,{b64}"),
            format!("data:image/p g;base64,{b64}"),
            "data:image/png;base64,!!!!".to_string(),
            "data:image/png;base64,iVBORw0KGgo-_".to_string(),
            "data:image/png;base64,A".to_string(),
            format!("data:image/png;base64,{b64}%20"),
            // Whitespace (decoded again without it) and then a byte that is not base64.
            format!("data:image/png;base64,{b64}\n!!!!"),
            "datum:image/png;base64,AAAA".to_string(),
        ] {
            let err = parse_data_uri(&uri, MAX, PIXELS).unwrap_err();
            assert!(matches!(err, FetchError::BadDataUri(_)), "{uri}: {err:?}");
        }
        // Valid base64 that is not an image.
        let err = parse_data_uri(
            &data_uri("image/png", b"GIF8 nope, plain text"),
            MAX,
            PIXELS,
        );
        assert!(matches!(err, Err(FetchError::NotAnImage(_))), "{err:?}");
        let err = parse_data_uri("data:image/png;base64,", MAX, PIXELS);
        assert!(matches!(err, Err(FetchError::NotAnImage(_))), "{err:?}");
        // A bomb inside a data URI.
        let err = parse_data_uri(
            &data_uri("image/png", &patched_png(100_000, 100_000)),
            MAX,
            PIXELS,
        );
        assert!(
            matches!(err, Err(FetchError::TooManyPixels { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn data_uri_size_is_checked_before_decoding() {
        // Invalid base64, but far over the cap: refused for size without being decoded.
        let uri = format!("data:image/png;base64,{}", "!".repeat(4000));
        assert!(matches!(
            parse_data_uri(&uri, 100, PIXELS),
            Err(FetchError::TooLarge { limit: 100 })
        ));
        // Whitespace does not count towards the size.
        let p = png(1, 1);
        let spaced = B64
            .encode(&p)
            .chars()
            .flat_map(|c| [c, '\n'])
            .collect::<String>();
        assert!(
            parse_data_uri(&format!("data:image/png;base64,{spaced}"), p.len(), PIXELS).is_ok()
        );
        // Exactly at the cap passes; one byte under it does not.
        let uri = data_uri("image/png", &p);
        assert!(parse_data_uri(&uri, p.len(), PIXELS).is_ok());
        assert!(
            parse_data_uri(&uri, p.len() - 1, PIXELS)
                .unwrap_err()
                .is_too_large()
        );
        let unpadded = uri.trim_end_matches('=');
        assert!(parse_data_uri(unpadded, p.len(), PIXELS).is_ok());
        assert!(
            parse_data_uri(unpadded, p.len() - 1, PIXELS)
                .unwrap_err()
                .is_too_large()
        );
    }

    // ---- sniffing ---------------------------------------------------------------------------

    #[test]
    fn sniffs_every_supported_format() {
        use image::ImageFormat;
        for (format, mime) in [
            (ImageFormat::Png, "image/png"),
            (ImageFormat::Jpeg, "image/jpeg"),
            (ImageFormat::Gif, "image/gif"),
            (ImageFormat::WebP, "image/webp"),
        ] {
            let bytes = encode(7, 3, format);
            assert_eq!(
                sniff_image(&bytes, PIXELS).unwrap(),
                (mime, 7, 3),
                "{format:?}"
            );
        }
        let heic = heif(b"heic", &[b"mif1", b"heic"], &[(320, 240), (4032, 3024)]);
        assert_eq!(
            sniff_image(&heic, PIXELS).unwrap(),
            ("image/heic", 4032, 3024)
        );
        let heif_generic = heif(b"mif1", &[b"mif1"], &[(640, 480)]);
        assert_eq!(
            sniff_image(&heif_generic, PIXELS).unwrap(),
            ("image/heif", 640, 480)
        );
        let heif_hevc = heif(b"mif1", &[b"mif1", b"heic"], &[(640, 480)]);
        assert_eq!(
            sniff_image(&heif_hevc, PIXELS).unwrap(),
            ("image/heic", 640, 480)
        );
    }

    #[test]
    fn refuses_non_images_and_bombs_from_the_header() {
        for bytes in [
            &b""[..],
            b"hello",
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            b"BM\x00\x00\x00\x00",
            b"\x89PNG\r\n\x1a\n",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR garbage",
            b"GIF89a",
            b"RIFF\x00\x00\x00\x00WEBPVP8 ",
            b"\xff\xd8\xff",
        ] {
            let err = sniff_image(bytes, PIXELS).unwrap_err();
            assert!(
                matches!(err, FetchError::NotAnImage(_)),
                "{bytes:?}: {err:?}"
            );
        }
        let avif = heif(b"avif", &[b"mif1", b"avif"], &[(64, 64)]);
        assert!(matches!(
            sniff_image(&avif, PIXELS),
            Err(FetchError::NotAnImage(_))
        ));
        let no_ispe = heif(b"heic", &[], &[]);
        assert!(matches!(
            sniff_image(&no_ispe, PIXELS),
            Err(FetchError::NotAnImage(_))
        ));
        let truncated = &heif(b"heic", &[], &[(64, 64)])[..40];
        assert!(matches!(
            sniff_image(truncated, PIXELS),
            Err(FetchError::NotAnImage(_))
        ));

        let too_many =
            |r: Result<_, FetchError>| matches!(r, Err(FetchError::TooManyPixels { .. }));
        // JPEG: patch the SOF0 frame size; GIF: the logical screen and the first frame.
        let mut jpeg = encode(8, 8, image::ImageFormat::Jpeg);
        let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xff, 0xdc, 0xff, 0xdc]);
        assert!(matches!(
            sniff_image(&jpeg, PIXELS),
            Err(FetchError::TooManyPixels {
                width: 65_500,
                height: 65_500
            })
        ));
        let mut gif = encode(8, 8, image::ImageFormat::Gif);
        gif[6..10].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let img_desc = gif.iter().position(|b| *b == 0x2c).unwrap();
        gif[img_desc + 5..img_desc + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(
            too_many(sniff_image(&gif, PIXELS)),
            "{:?}",
            sniff_image(&gif, PIXELS)
        );
        assert!(too_many(sniff_image(
            &patched_png(100_000, 100_000),
            PIXELS
        )));
        // Side limit even when the area is small.
        assert!(too_many(sniff_image(&patched_png(16_385, 1), PIXELS)));
        assert!(sniff_image(&patched_png(16_384, 1), PIXELS).is_ok());
        // Area limit with both sides under MAX_SIDE.
        assert!(too_many(sniff_image(&patched_png(10_000, 5_001), PIXELS)));
        assert!(sniff_image(&patched_png(10_000, 5_000), PIXELS).is_ok());
        assert!(too_many(sniff_image(
            &heif(b"heic", &[], &[(20_000, 20_000)]),
            PIXELS
        )));
        assert!(matches!(
            sniff_image(&patched_png(0, 10), PIXELS),
            Err(FetchError::NotAnImage(_)) | Err(FetchError::TooManyPixels { .. })
        ));
    }
}
