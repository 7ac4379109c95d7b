//! The upstreams of the TOML file: named providers (`[providers.NAME]`) and each model's routes
//! (`[models."NAME"]`), checked when the configuration is read so that a typo fails at start,
//! not at the first request. Building the providers from these is `app`'s job.
//!
//! ```toml
//! [providers.vertex-eu]
//! kind = "vertex"
//! project = "my-project"
//! location = "europe-west4"
//! credentials_file = "/etc/nano-banana/vertex.json"
//!
//! [models."nano-banana-pro"]
//! routes = [
//!   { provider = "gemini", upstream_model = "gemini-3-pro-image", priority = 1, weight = 3 },
//!   { provider = "vertex-eu", priority = 2 },
//! ]
//! ```

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::domain::Model;

/// Provider names that need no `[providers.NAME]` table: the AI Studio upstream of
/// `--gemini-api-key`, the `:official` models' upstream, and the offline renderer.
pub const BUILT_IN_PROVIDERS: [&str; 3] = ["gemini", "official", "placeholder"];

/// The kinds of upstream a `[providers.NAME]` table may declare: `gemini` (AI Studio), `vertex`
/// (Vertex AI), `openai` (OpenAI's images API, or a compatible server), `chat` (chat completions
/// with image output, OpenRouter), `nano-banana` (the original service), `placeholder`.
pub const PROVIDER_KINDS: [&str; 6] = [
    "gemini",
    "vertex",
    "openai",
    "chat",
    "nano-banana",
    "placeholder",
];

/// One `[providers.NAME]` table: an upstream that routes name. Which fields apply depends on the
/// kind; the others must be left out.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// What it speaks: see `PROVIDER_KINDS`.
    pub kind: String,
    pub base_url: Option<String>,
    /// The key itself (several comma-separated make a pool, for `gemini`). Prefer `api_key_env`.
    pub api_key: Option<String>,
    /// The environment variable that holds the key.
    pub api_key_env: Option<String>,
    /// The API version in the path [default: v1beta for `gemini`, v1 for `vertex`].
    pub api_version: Option<String>,
    /// `nano-banana`: between two polls of a task there, in milliseconds [default: 1000].
    pub poll_interval_ms: Option<u64>,
    /// `vertex`: the Google Cloud project id.
    pub project: Option<String>,
    /// `vertex`: the region (`europe-west4`) or `global`.
    pub location: Option<String>,
    /// `vertex`: the service account's JSON key file.
    pub credentials_file: Option<String>,
    /// `vertex`: the environment variable that holds the key file's JSON itself.
    pub credentials_env: Option<String>,
    /// `vertex`: where to exchange the JWT for a token [default: the key's `token_uri`].
    pub token_url: Option<String>,
    /// `openai`: sent as `OpenAI-Organization`.
    pub organization: Option<String>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("api_version", &self.api_version)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("project", &self.project)
            .field("location", &self.location)
            .field("credentials_file", &self.credentials_file)
            .field("credentials_env", &self.credentials_env)
            .field("token_url", &self.token_url)
            .field("organization", &self.organization)
            .finish()
    }
}

impl ProviderConfig {
    /// The key: `api_key`, else the variable `api_key_env` names (which must be set).
    pub fn key(&self, name: &str) -> anyhow::Result<Option<String>> {
        if let Some(key) = self.api_key.clone().filter(|k| !k.is_empty()) {
            return Ok(Some(key));
        }
        match &self.api_key_env {
            None => Ok(None),
            Some(variable) => std::env::var(variable)
                .ok()
                .filter(|k| !k.is_empty())
                .map(Some)
                .with_context(|| format!("[providers.{name}] api_key_env: {variable} is not set")),
        }
    }
}

impl ProviderConfig {
    /// `vertex`: refuses a table without its project, location or credentials, or with fields
    /// that belong to other kinds.
    pub fn check_vertex(&self, name: &str) -> anyhow::Result<()> {
        let given = |field: &Option<String>| field.as_deref().is_some_and(|v| !v.trim().is_empty());
        for (field, value) in [("project", &self.project), ("location", &self.location)] {
            if !given(value) {
                bail!("[providers.{name}] a vertex provider needs {field}");
            }
        }
        match (given(&self.credentials_file), given(&self.credentials_env)) {
            (false, false) => bail!(
                "[providers.{name}] a vertex provider needs credentials_file (a service-account \
                 key file) or credentials_env (a variable holding its JSON)"
            ),
            (true, true) => {
                bail!("[providers.{name}] give credentials_file or credentials_env, not both")
            }
            _ => {}
        }
        if self.api_key.is_some() || self.api_key_env.is_some() {
            bail!(
                "[providers.{name}] a vertex provider authenticates with its service account: \
                 remove api_key and api_key_env"
            );
        }
        Ok(())
    }

    /// The first `vertex`-only field this table sets.
    fn vertex_field(&self) -> Option<&'static str> {
        [
            ("project", &self.project),
            ("location", &self.location),
            ("credentials_file", &self.credentials_file),
            ("credentials_env", &self.credentials_env),
            ("token_url", &self.token_url),
        ]
        .into_iter()
        .find_map(|(field, value)| value.is_some().then_some(field))
    }

    /// `vertex`: the service-account key's JSON, and where it came from (for messages): the
    /// file `credentials_file`, or the variable `credentials_env` (which must be set).
    pub fn credentials(&self, name: &str) -> anyhow::Result<(String, String)> {
        if let Some(path) = self.credentials_file.as_deref().filter(|p| !p.is_empty()) {
            let json = std::fs::read_to_string(path).with_context(|| {
                format!("[providers.{name}] credentials_file {path:?} could not be read")
            })?;
            return Ok((json, format!("credentials_file {path:?}")));
        }
        match self.credentials_env.as_deref().filter(|v| !v.is_empty()) {
            Some(variable) => std::env::var(variable)
                .ok()
                .filter(|json| !json.trim().is_empty())
                .map(|json| (json, format!("credentials_env {variable}")))
                .with_context(|| {
                    format!("[providers.{name}] credentials_env: {variable} is not set")
                }),
            None => bail!(
                "[providers.{name}] a vertex provider needs credentials_file or credentials_env"
            ),
        }
    }
}

/// One `[models."NAME"]` table: the model's routes. `provider` and `upstream_model` give a
/// single route; `routes` several (failover by priority, shares by weight).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A provider name (built in, or a `[providers.NAME]` table), or `disabled` (requests for
    /// the model answer `api_not_implemented`).
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub routes: Option<Vec<RouteEntry>>,
}

/// One route of `routes = [...]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    pub provider: String,
    /// [default: the model's default upstream model]
    pub upstream_model: Option<String>,
    /// 1 is tried before 2 [default: 1].
    #[serde(default = "one")]
    pub priority: u32,
    /// The share of calls among routes of the same priority [default: 1].
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Refuses what cannot work: unknown model names, unknown or misnamed providers, empty route
/// lists, zero weights.
pub fn check(
    providers: &BTreeMap<String, ProviderConfig>,
    models: &BTreeMap<String, RouteConfig>,
) -> anyhow::Result<()> {
    for (name, provider) in providers {
        if BUILT_IN_PROVIDERS.contains(&name.as_str()) || name == "disabled" {
            bail!("[providers.{name}]: {name:?} is a built-in name; choose another");
        }
        if !PROVIDER_KINDS.contains(&provider.kind.as_str()) {
            bail!(
                "[providers.{name}] kind {:?} is not known: use one of {}",
                provider.kind,
                PROVIDER_KINDS.join(", ")
            );
        }
        if provider.kind == "vertex" {
            provider.check_vertex(name)?;
        } else if let Some(field) = provider.vertex_field() {
            bail!("[providers.{name}] {field} is for kind = \"vertex\" only");
        }
    }
    let known =
        |provider: &str| BUILT_IN_PROVIDERS.contains(&provider) || providers.contains_key(provider);
    for (name, route) in models {
        if Model::parse(name).is_none() {
            bail!("[models.{name:?}] in the config file: unknown model name");
        }
        if let Some(p) = &route.provider
            && p != "disabled"
            && !known(p)
        {
            bail!(
                "[models.{name:?}] provider {p:?} is not known: use \"gemini\", \"official\", \
                 \"placeholder\", \"disabled\" or the name of a [providers.NAME] table"
            );
        }
        if let Some(routes) = &route.routes {
            if route.provider.is_some() || route.upstream_model.is_some() {
                bail!("[models.{name:?}]: give either routes or provider/upstream_model, not both");
            }
            if routes.is_empty() {
                bail!(
                    "[models.{name:?}] routes is empty: list at least one, or use provider = \"disabled\""
                );
            }
            for entry in routes {
                if !known(&entry.provider) {
                    bail!(
                        "[models.{name:?}] a route names provider {:?}, which is not known",
                        entry.provider
                    );
                }
                if entry.weight == 0 {
                    bail!("[models.{name:?}] a route's weight must be at least 1");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers(toml_text: &str) -> BTreeMap<String, ProviderConfig> {
        toml::from_str(toml_text).expect("valid TOML")
    }

    fn refusal(toml_text: &str) -> String {
        check(&providers(toml_text), &BTreeMap::new())
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn a_vertex_table_needs_project_location_and_one_credential() {
        let good = r#"
            [vertex-eu]
            kind = "vertex"
            project = "my-project"
            location = "europe-west4"
            credentials_file = "/etc/nano-banana/vertex.json"
            token_url = "http://127.0.0.1:9/token"
        "#;
        check(&providers(good), &BTreeMap::new()).unwrap();
        let parsed = &providers(good)["vertex-eu"];
        assert_eq!(parsed.location.as_deref(), Some("europe-west4"));

        let vertex = |fields: &str| format!("[v]\nkind = \"vertex\"\n{fields}");
        let error = refusal(&vertex("location = \"global\"\ncredentials_env = \"K\""));
        assert!(
            error.contains("[providers.v]") && error.contains("project"),
            "{error}"
        );
        let error = refusal(&vertex("project = \"p\"\ncredentials_env = \"K\""));
        assert!(error.contains("location"), "{error}");
        let error = refusal(&vertex("project = \"p\"\nlocation = \"global\""));
        assert!(error.contains("credentials_file"), "{error}");
        let error = refusal(&vertex(
            "project = \"p\"\nlocation = \"global\"\ncredentials_env = \"K\"\ncredentials_file = \"f\"",
        ));
        assert!(error.contains("not both"), "{error}");
        let error = refusal(&vertex(
            "project = \"p\"\nlocation = \"global\"\ncredentials_env = \"K\"\napi_key = \"x\"",
        ));
        assert!(error.contains("remove api_key"), "{error}");
        let error = refusal("[g]\nkind = \"gemini\"\napi_key = \"k\"\nproject = \"p\"");
        assert!(
            error.contains("project is for kind = \"vertex\""),
            "{error}"
        );
        assert!(
            toml::from_str::<BTreeMap<String, ProviderConfig>>(
                "[v]\nkind = \"vertex\"\nregion = \"x\""
            )
            .is_err()
        );
    }

    #[test]
    fn vertex_credentials_come_from_the_file_or_the_variable_and_errors_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        std::fs::write(&path, "{\"type\": \"service_account\"}").unwrap();
        let config = ProviderConfig {
            kind: "vertex".into(),
            credentials_file: Some(path.display().to_string()),
            ..Default::default()
        };
        let (json, source) = config.credentials("v").unwrap();
        assert!(json.contains("service_account"));
        assert!(source.contains("key.json"), "{source}");

        let missing = ProviderConfig {
            credentials_file: Some("/no/such/dir/key.json".into()),
            ..config.clone()
        };
        let error = format!("{:#}", missing.credentials("v").unwrap_err());
        assert!(error.contains("/no/such/dir/key.json"), "{error}");

        let unset = ProviderConfig {
            kind: "vertex".into(),
            credentials_env: Some("NANO_BANANA_TEST_NO_SUCH_VARIABLE".into()),
            ..Default::default()
        };
        let error = unset.credentials("v").unwrap_err().to_string();
        assert!(
            error.contains("NANO_BANANA_TEST_NO_SUCH_VARIABLE is not set"),
            "{error}"
        );
    }
}
