//! Facts about addresses and host names, and the operator's allow list: the IPv4 and IPv6 ranges
//! that are never contacted unless allowed (std's `is_global` is unstable, so the ranges are
//! spelled out, looking through every IPv6 form that embeds an IPv4 address), the `localhost`
//! names of RFC 6761, and the allow-list entries ([`AllowRule`]: parsing and display).
//!
//! What does not live here: the decision whether a URL or an address may be reached, which
//! combines these facts with `allow_private` and the allow list (`Rules` in `policy.rs`), and DNS
//! (`resolver.rs`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

use super::FetchError;

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

/// The addresses `localhost` names stand for (RFC 6761); they are never looked up.
pub(super) const LOOPBACK: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// Host names compare lowercase and without the trailing dot of a fully qualified name.
pub(super) fn normalize_host(h: &str) -> String {
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

/// `localhost` and `*.localhost`: loopback by definition (RFC 6761), whatever DNS would say.
pub(super) fn is_localhost_name(h: &str) -> bool {
    let h = normalize_host(h);
    h == "localhost" || h.ends_with(".localhost")
}

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
