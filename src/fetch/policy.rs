//! What a URL may be, checked without DNS: http(s) only, no credentials, syntax stricter than the
//! WHATWG parser's repairs, IP-literal hosts and `localhost` names held to the address rules.
//! [`Rules`] is the policy as every check sees it, the one place that decides: the first URL
//! (`Fetcher::check_url`, and so `check_source` for anything not `data:`), each redirect hop, and
//! each address the resolver gets back.
//!
//! What does not live here: the address ranges and allow-list entries it decides on
//! (`addresses.rs`), resolving host names (`resolver.rs`), `data:` URIs and image bytes
//! (`image.rs`).

use std::net::IpAddr;

use url::{Host, Url};

use super::addresses::{AllowRule, LOOPBACK, is_global, is_localhost_name, normalize_host};
use super::{FetchError, FetchPolicy};

/// The parts of the policy the resolver and redirect policy need, shared with the client.
#[derive(Debug)]
pub(super) struct Rules {
    pub(super) policy: FetchPolicy,
}

impl Rules {
    /// Any address under `allow_private`; otherwise a global one or one in an allowed network.
    pub(super) fn address_allowed(&self, ip: IpAddr) -> bool {
        let p = &self.policy;
        p.allow_private
            || is_global(ip)
            || p.allow.iter().any(|r| match r {
                // A v4-mapped v6 address is the v4 host it embeds, for the allow-list too.
                AllowRule::Net(n) => n.contains(&ip) || n.contains(&ip.to_canonical()),
                AllowRule::Host(_) => false,
            })
    }

    /// Whether a hostname rule names `host`, which then passes whatever it resolves to.
    pub(super) fn host_allowed(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.policy
            .allow
            .iter()
            .any(|r| matches!(r, AllowRule::Host(h) if *h == host))
    }

    /// Every check that needs no DNS, on an already parsed URL (the first URL and each redirect).
    pub(super) fn check_parsed(&self, url: &Url) -> Result<(), FetchError> {
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

/// The bare reason, for a refusal that travels inside a reqwest error (see `Refusal`).
pub(super) fn refusal_text(e: &FetchError) -> String {
    match e {
        FetchError::Refused(m) | FetchError::BadUrl(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Whether `s` starts with `scheme:`, case-insensitively, without parsing it as a URL.
pub(super) fn has_scheme(s: &str, scheme: &str) -> bool {
    s.len() > scheme.len()
        && s.as_bytes()[scheme.len()] == b':'
        && s[..scheme.len()].eq_ignore_ascii_case(scheme)
}

/// Stricter than the WHATWG parser, which silently drops tabs and newlines, trims spaces, treats
/// `\` as `/` and accepts `http:///host`: an input that only parses thanks to such repairs is
/// refused, so what we check is what the user wrote. Interior spaces are left to the parser,
/// which percent-encodes them in paths and rejects them in hosts.
pub(super) fn strict_syntax(raw: &str) -> Result<(), FetchError> {
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
