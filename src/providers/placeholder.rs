// TEMPORARY STUB
use super::*;
pub struct PlaceholderProvider;
impl PlaceholderProvider {
    pub fn new() -> Self {
        PlaceholderProvider
    }
}
#[async_trait::async_trait]
impl ImageProvider for PlaceholderProvider {
    fn name(&self) -> &'static str {
        "placeholder"
    }
    async fn generate(&self, _job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        Err(ProviderError::NoImage("stub".into()))
    }
}
