//! The providers and routes of the configuration, built: one client per named upstream (shared
//! by every route that names it), then each model's routes. A model with no `[models.*]` table
//! goes to the AI Studio upstream of `--gemini-api-key` (its `:official` variant to the
//! `--official-*` one), or to the offline placeholder when no key is configured.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::{Context, bail};

use crate::{
    config::{Config, ProviderConfig, RouteConfig, RouteEntry, UpstreamConfig},
    domain::Model,
    providers::{
        ImageProvider, ModelRoutes, Route, Routes,
        chat::{self, ChatConfig, ChatProvider},
        gemini::{self, GeminiConfig, GeminiProvider},
        openai::{self, OpenAiConfig, OpenAiProvider},
        origin::{OriginConfig, OriginProvider},
        placeholder::PlaceholderProvider,
        vertex::{self, ServiceAccountKey, VertexConfig},
    },
};

/// Every model's routes, from the configuration.
pub fn build_routes(config: &Config) -> anyhow::Result<Routes> {
    let providers = Providers::build(config)?;
    let mut routes = Routes::default();
    for model in Model::all() {
        let entries = match config.models.get(model.name()) {
            Some(RouteConfig {
                routes: Some(entries),
                ..
            }) => entries.clone(),
            Some(RouteConfig {
                provider: Some(p), ..
            }) if p == "disabled" => continue,
            configured => vec![RouteEntry {
                provider: match configured.and_then(|c| c.provider.as_deref()) {
                    // `gemini` has always meant the model's own Gemini upstream: for an
                    // `:official` model, the official one.
                    Some("gemini") if model.is_official() => "official".to_owned(),
                    Some(name) => name.to_owned(),
                    None => providers.default_for(model).to_owned(),
                },
                upstream_model: configured.and_then(|c| c.upstream_model.clone()),
                priority: 1,
                weight: 1,
            }],
        };
        let mut model_routes = Vec::with_capacity(entries.len());
        for entry in entries {
            let provider = providers.get(&entry.provider).with_context(|| {
                format!("[models.{:?}] routes to {:?}", model.name(), entry.provider)
            })?;
            let upstream_model = entry
                .upstream_model
                .unwrap_or_else(|| model.default_upstream_model().to_owned());
            model_routes.push(Route::new(
                entry.provider,
                provider,
                upstream_model,
                entry.priority,
                entry.weight,
            ));
        }
        if let Some(model_routes) = ModelRoutes::new(model_routes) {
            routes.insert(model, model_routes);
        }
    }
    Ok(routes)
}

/// The configured upstreams by name.
struct Providers {
    by_name: HashMap<String, Arc<dyn ImageProvider>>,
    /// Whether `--gemini-api-key` (and so `gemini` and `official`) is configured.
    has_gemini: bool,
}

impl Providers {
    fn build(config: &Config) -> anyhow::Result<Providers> {
        let mut by_name: HashMap<String, Arc<dyn ImageProvider>> = HashMap::new();
        by_name.insert("placeholder".into(), Arc::new(PlaceholderProvider::new()));
        if let Some(upstream) = &config.gemini {
            by_name.insert("gemini".into(), gemini_provider(config, upstream)?);
        }
        if let Some(upstream) = &config.official {
            by_name.insert("official".into(), gemini_provider(config, upstream)?);
        }
        for (name, provider) in &config.providers {
            let built = build_provider(config, name, provider)
                .with_context(|| format!("[providers.{name}] (kind {:?})", provider.kind))?;
            by_name.insert(name.clone(), built);
        }
        Ok(Providers {
            by_name,
            has_gemini: config.gemini.is_some(),
        })
    }

    /// Where a model without a configured route goes.
    fn default_for(&self, model: Model) -> &'static str {
        match (self.has_gemini, model.is_official()) {
            (false, _) => "placeholder",
            (true, false) => "gemini",
            (true, true) => "official",
        }
    }

    fn get(&self, name: &str) -> anyhow::Result<Arc<dyn ImageProvider>> {
        match self.by_name.get(name) {
            Some(provider) => Ok(provider.clone()),
            None if name == "gemini" || name == "official" => {
                bail!("{name} needs a Gemini API key (--gemini-api-key or GEMINI_API_KEY)")
            }
            None => bail!("no provider is named {name:?}"),
        }
    }
}

/// One `[providers.NAME]` table's client.
fn build_provider(
    config: &Config,
    name: &str,
    provider: &ProviderConfig,
) -> anyhow::Result<Arc<dyn ImageProvider>> {
    match provider.kind.as_str() {
        "placeholder" => Ok(Arc::new(PlaceholderProvider::new())),
        "gemini" => {
            let api_key = provider
                .key(name)?
                .context("a gemini provider needs api_key or api_key_env")?;
            let upstream = UpstreamConfig {
                base_url: provider
                    .base_url
                    .clone()
                    .unwrap_or_else(|| gemini::DEFAULT_BASE_URL.to_owned()),
                api_version: provider
                    .api_version
                    .clone()
                    .unwrap_or_else(|| gemini::DEFAULT_API_VERSION.to_owned()),
                api_key,
            };
            gemini_provider(config, &upstream)
        }
        "nano-banana" => {
            let base_url = provider
                .base_url
                .clone()
                .context("a nano-banana provider needs base_url: the service's address")?;
            url::Url::parse(&base_url)
                .with_context(|| format!("base_url {base_url:?} is not a URL"))?;
            let token = provider
                .key(name)?
                .context("a nano-banana provider needs api_key or api_key_env: our token there")?;
            let origin = OriginProvider::new(OriginConfig {
                base_url,
                token,
                poll_interval: Duration::from_millis(
                    provider.poll_interval_ms.unwrap_or(1000).max(10),
                ),
                timeout: config.upstream_timeout,
                connect_timeout: Duration::from_secs(10),
            })
            .context("building the HTTP client")?;
            Ok(Arc::new(origin))
        }
        "vertex" => vertex_provider(config, name, provider),
        "openai" => openai_provider(config, name, provider),
        "chat" => chat_provider(config, name, provider),
        other => bail!("kind {other:?} is not supported"),
    }
}

fn gemini_provider(
    config: &Config,
    upstream: &UpstreamConfig,
) -> anyhow::Result<Arc<dyn ImageProvider>> {
    let base_url = url::Url::parse(&upstream.base_url)
        .with_context(|| format!("the Gemini base URL {:?} is not a URL", upstream.base_url))?;
    let provider = GeminiProvider::new(GeminiConfig {
        base_url,
        api_version: upstream.api_version.clone(),
        api_key: upstream.api_key.clone(),
        timeout: config.upstream_timeout,
        connect_timeout: Duration::from_secs(10),
        connections: config.upstream_connections,
    })
    .map_err(|e| anyhow::anyhow!("building the Gemini client: {e}"))?;
    Ok(Arc::new(provider))
}

/// A `kind = "vertex"` table's client: its key file read and parsed now, so that a missing or
/// malformed key fails the start, naming the file.
fn vertex_provider(
    config: &Config,
    name: &str,
    provider: &ProviderConfig,
) -> anyhow::Result<Arc<dyn ImageProvider>> {
    provider.check_vertex(name)?;
    let (json, source) = provider.credentials(name)?;
    let credentials = ServiceAccountKey::from_json(&json).with_context(|| {
        format!("[providers.{name}] {source} is not a usable service-account key")
    })?;
    let url = |field: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| {
                url::Url::parse(v)
                    .with_context(|| format!("[providers.{name}] {field} {v:?} is not a URL"))
            })
            .transpose()
    };
    let provider = vertex::VertexProvider::vertex(VertexConfig {
        base_url: url("base_url", &provider.base_url)?,
        token_url: url("token_url", &provider.token_url)?,
        api_version: provider
            .api_version
            .clone()
            .unwrap_or_else(|| vertex::DEFAULT_API_VERSION.to_owned()),
        timeout: config.upstream_timeout,
        connections: config.upstream_connections,
        ..VertexConfig::new(
            provider.project.clone().unwrap_or_default(),
            provider.location.clone().unwrap_or_default(),
            credentials,
        )
    })
    .with_context(|| format!("[providers.{name}] building the Vertex AI client"))?;
    Ok(Arc::new(provider))
}

/// A `kind = "openai"` table: OpenAI's images API, or a compatible server at `base_url`.
fn openai_provider(
    config: &Config,
    name: &str,
    provider: &ProviderConfig,
) -> anyhow::Result<Arc<dyn ImageProvider>> {
    if provider.api_version.is_some() {
        bail!("api_version is for kind \"gemini\"; put the version in base_url (…/v1)");
    }
    let (base_url, api_key) = base_url_and_key(name, provider, openai::DEFAULT_BASE_URL)?;
    let built = OpenAiProvider::new(OpenAiConfig {
        base_url,
        api_key,
        organization: provider.organization.clone().filter(|o| !o.is_empty()),
        timeout: config.upstream_timeout,
        connect_timeout: openai::DEFAULT_CONNECT_TIMEOUT,
    })
    .map_err(|e| anyhow::anyhow!("building the OpenAI client: {e}"))?;
    Ok(Arc::new(built))
}

/// A `kind = "chat"` table: chat completions with image output (OpenRouter by default).
fn chat_provider(
    config: &Config,
    name: &str,
    provider: &ProviderConfig,
) -> anyhow::Result<Arc<dyn ImageProvider>> {
    if provider.api_version.is_some() || provider.organization.is_some() {
        bail!("a chat provider takes base_url, api_key and api_key_env only");
    }
    let (base_url, api_key) = base_url_and_key(name, provider, chat::DEFAULT_BASE_URL)?;
    let built = ChatProvider::new(ChatConfig {
        base_url,
        api_key,
        timeout: config.upstream_timeout,
        connect_timeout: openai::DEFAULT_CONNECT_TIMEOUT,
    })
    .map_err(|e| anyhow::anyhow!("building the chat-completions client: {e}"))?;
    Ok(Arc::new(built))
}

/// The base URL (or `default`) and the key, which only a server at a `base_url` of the
/// operator's own may go without.
fn base_url_and_key(
    name: &str,
    provider: &ProviderConfig,
    default: &str,
) -> anyhow::Result<(url::Url, Option<String>)> {
    let api_key = provider.key(name)?;
    if api_key.is_none() && provider.base_url.is_none() {
        bail!(
            "needs api_key or api_key_env (only a server at a base_url of your own may go without)"
        );
    }
    let base_url = provider.base_url.as_deref().unwrap_or(default);
    let parsed = url::Url::parse(base_url)
        .with_context(|| format!("the base URL {base_url:?} is not a URL"))?;
    Ok((parsed, api_key))
}
