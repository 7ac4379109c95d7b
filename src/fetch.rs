// TEMPORARY STUB (replaced by the real module)
use crate::providers::InputImage;
use std::time::Duration;
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    pub allow_private: bool,
    pub allow: Vec<AllowRule>,
    pub max_image_bytes: usize,
    pub max_pixels: u64,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_redirects: usize,
}
impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allow_private: false,
            allow: vec![],
            max_image_bytes: 10 << 20,
            max_pixels: 50_000_000,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_redirects: 3,
        }
    }
}
#[derive(Debug, Clone)]
pub enum AllowRule {
    Host(String),
}
impl std::str::FromStr for AllowRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(AllowRule::Host(s.into()))
    }
}
#[derive(Clone)]
pub struct Fetcher {
    policy: FetchPolicy,
    client: reqwest::Client,
}
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("too large")]
    TooLarge { limit: usize },
    #[error("x {0}")]
    Refused(String),
}
impl FetchError {
    pub fn is_too_large(&self) -> bool {
        matches!(self, FetchError::TooLarge { .. })
    }
}
impl Fetcher {
    pub fn new(policy: FetchPolicy) -> Result<Self, FetchError> {
        Ok(Fetcher {
            policy,
            client: reqwest::Client::new(),
        })
    }
    pub fn check_url(&self, raw: &str) -> Result<url::Url, FetchError> {
        url::Url::parse(raw).map_err(|e| FetchError::Refused(e.to_string()))
    }
    pub async fn load_image(&self, _source: &str) -> Result<InputImage, FetchError> {
        Err(FetchError::Refused("stub".into()))
    }
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }
}
pub fn parse_data_uri(
    _s: &str,
    _max_bytes: usize,
    _max_pixels: u64,
) -> Result<InputImage, FetchError> {
    Err(FetchError::Refused("stub".into()))
}
