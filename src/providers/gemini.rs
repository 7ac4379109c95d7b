// TEMPORARY STUB
use super::*;
use std::time::Duration;
pub struct GeminiConfig {
    pub base_url: url::Url,
    pub api_version: String,
    pub api_key: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}
pub struct GeminiProvider;
impl GeminiProvider {
    pub fn new(_c: GeminiConfig) -> Result<Self, ProviderError> {
        Ok(GeminiProvider)
    }
}
#[async_trait::async_trait]
impl ImageProvider for GeminiProvider {
    fn name(&self) -> &'static str {
        "gemini"
    }
    async fn generate(&self, _job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        Err(ProviderError::NoImage("stub".into()))
    }
}
