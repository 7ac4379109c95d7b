//! Logging and metrics setup. Logs: human-readable lines on stderr, filtered by `RUST_LOG`
//! (default `info`); `redact_url` keeps secrets out of them. Metrics: a process-wide Prometheus
//! recorder, rendered at `GET /metrics`. Imports nothing of the crate.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt};

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,reqwest=warn"));
    // A second init (tests start many apps in one process) is harmless: keep the first.
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process's Prometheus recorder, installed on first use. `None` when another recorder was
/// installed first (then `/metrics` says so instead of lying with empty numbers).
pub fn metrics() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Image tasks take seconds to minutes; upstream calls likewise.
            let buckets = [
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &buckets)
                .and_then(|builder| builder.install_recorder())
                .map_err(|e| tracing::warn!(error = %e, "metrics are unavailable"))
                .ok()
        })
        .as_ref()
}

/// A URL fit for logs: any password replaced by `<redacted>`; a string that is not a URL shows
/// only its scheme (it might be all secret).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = parsed.set_password(Some("<redacted>"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => match url.split_once(':') {
            Some((scheme, _)) if !scheme.is_empty() && !scheme.contains('/') => {
                format!("{scheme}:<redacted>")
            }
            _ => "<redacted>".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_logs_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.internal:5432/nb"),
            "postgres://app:%3Credacted%3E@db.internal:5432/nb"
        );
        assert_eq!(
            redact_url("redis://:s3cret-pw@cache:6379/0"),
            "redis://:%3Credacted%3E@cache:6379/0"
        );
        assert_eq!(
            redact_url("postgres://root@127.0.0.1/test"),
            "postgres://root@127.0.0.1/test"
        );
        assert_eq!(
            redact_url("sqlite://./data/nano-banana.db"),
            "sqlite://./data/nano-banana.db"
        );
    }

    #[test]
    fn what_is_not_a_url_is_hidden() {
        assert_eq!(redact_url("::s3cret-pw::"), "<redacted>");
        assert_eq!(redact_url("s3cret-pw"), "<redacted>");
        assert_eq!(redact_url("redis://u:pw@host:port"), "redis:<redacted>");
    }
}
