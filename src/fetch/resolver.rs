//! The DNS resolver reqwest uses: the only place hostnames become addresses, so the filter cannot
//! be bypassed by a second lookup. Every answer is vetted by the same [`Rules`] as URLs and the
//! refused addresses are dropped; the connection then goes to exactly a checked address, so DNS
//! rebinding fails.
//!
//! What does not live here: IP-literal hosts, which never reach a resolver and are vetted by
//! `Rules::check_parsed` before a request is sent, and redirects (the redirect policy in `mod.rs`
//! checks each hop's URL; its host name comes back here).

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::addresses::{LOOPBACK, is_localhost_name};
use super::{Refusal, Rules};

/// Where host names become addresses: the system resolver, or canned answers in tests.
pub(super) enum Lookup {
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
            Lookup::Fixed(map) => map
                .get(&super::addresses::normalize_host(host))
                .cloned()
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such host (test lookup)")
                }),
        }
    }
}

/// The resolver given to reqwest: looks a name up, then keeps only the addresses `rules` allow.
pub(super) struct FilteringResolver {
    pub(super) rules: Arc<Rules>,
    pub(super) lookup: Arc<Lookup>,
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::tests::policy;
    use super::*;
    use crate::fetch::FetchPolicy;

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
}
