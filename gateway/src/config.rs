//! The gateway's configuration file (`switchboard.yaml`): where it listens, its limits, the
//! upstream providers with their models and prices, and the tenants with their key hashes.
//!
//! Parsing is strict (unknown keys are errors, so a typo never silently falls back to a default),
//! and [`Config::validate`] reports every cross-reference problem at once, each with the path of
//! the offending entry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::KeyHash;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub upstream: UpstreamSettings,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Models answered in-process by the local engine.
    #[serde(default)]
    pub local_models: Vec<LocalModelConfig>,
    /// Embedding models served in-process at `/v1/embeddings`.
    #[serde(default)]
    pub embedding_models: Vec<EmbeddingModelConfig>,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Scoring every chat request (complexity, domain); off when absent.
    #[serde(default)]
    pub router: Option<RouterConfig>,
}

/// The router: which embedding model it reads requests with, its heads, its custom domains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The name of an `embedding_models` entry (all-MiniLM-L6-v2 for the shipped heads).
    pub embedding_model: String,
    /// Heads made by `switchboard router train`; the shipped ones when absent.
    #[serde(default)]
    pub heads: Option<std::path::PathBuf>,
    /// Custom domains, each by a few example utterances; a default domain's name replaces it.
    #[serde(default)]
    pub domains: BTreeMap<String, Vec<String>>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// Bounds on what one client and the whole server may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Requests handled at once; beyond this the gateway sheds load with 503 + `Retry-After`.
    pub max_in_flight: usize,
    /// The overall deadline of one request, retries, fallbacks and streaming included.
    #[serde(with = "seconds")]
    pub request_timeout: Duration,
    /// After SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[serde(with = "seconds")]
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_in_flight: 1024,
            request_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// How the one shared HTTP client talks to every provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
    /// Longest silence between two reads of a response (headers or body bytes).
    #[serde(with = "seconds")]
    pub read_timeout: Duration,
    pub retry: RetrySettings,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            retry: RetrySettings::default(),
        }
    }
}

/// Retries of one target before the fallback chain moves on: exponential backoff with full
/// jitter, at least as long as the upstream's `Retry-After`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts per target, the first one included (1 = no retry).
    pub max_attempts: u32,
    #[serde(with = "seconds")]
    pub initial_backoff: Duration,
    #[serde(with = "seconds")]
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the chain moves to its next target.
    #[serde(with = "seconds")]
    pub max_retry_after: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any server that speaks OpenAI's chat completions API.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// For `openai`, the URL that `/chat/completions` is appended to (e.g.
    /// `https://api.openai.com/v1`); for `anthropic`, the URL that `/v1/messages` is appended to.
    pub base_url: String,
    /// The NAME of the environment variable holding the key, never the key itself. Leave it out
    /// for servers that need no key (a local vLLM or Ollama).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Which header carries the key. Defaults: `authorization` (Bearer) for `openai`,
    /// `x-api-key` for `anthropic`; Azure OpenAI wants `api-key`.
    #[serde(default)]
    pub api_key_header: Option<String>,
    /// Extra headers sent on every call (e.g. `OpenAI-Organization`, `anthropic-version`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameters added to every call (e.g. Azure's `api-version`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    pub models: Vec<ModelConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients ask for; unique across all providers.
    pub name: String,
    /// The provider's own name for it (an Azure deployment, a dated snapshot), if different.
    #[serde(default)]
    pub upstream_name: Option<String>,
    pub price: Price,
    /// Models tried in order when this one fails after its retries.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// `max_tokens` sent when the client gives none (Anthropic requires one).
    #[serde(default)]
    pub default_max_tokens: Option<u32>,
}

impl ModelConfig {
    pub fn upstream_name(&self) -> &str {
        self.upstream_name.as_deref().unwrap_or(&self.name)
    }
}

/// A GGUF model run by the local engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalModelConfig {
    /// The name clients ask for; unique across all models.
    pub name: String,
    /// One of the default models that `switchboard models fetch` puts in the model directory
    /// (`smollm2`); `serve` fetches it on first start.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Or the path of any GGUF chat model of a supported architecture.
    #[serde(default)]
    pub path: Option<std::path::PathBuf>,
    /// What a local token costs (an amortised hardware cost); free by default.
    #[serde(default)]
    pub price: Option<Price>,
    /// Requests that may wait for the model; beyond them, 503 + `Retry-After`.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Caps the context length the model declares (memory).
    #[serde(default)]
    pub max_context: Option<usize>,
}

fn default_queue_capacity() -> usize {
    16
}

/// A sentence-embedding model (BERT family, safetensors) served at `/v1/embeddings`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingModelConfig {
    pub name: String,
    /// `all-minilm-l6-v2`, fetched into the model directory.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Or a directory with `config.json`, `tokenizer.json` and `model.safetensors`.
    #[serde(default)]
    pub path: Option<std::path::PathBuf>,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// `sha256:<hex>` of each key; `switchboard keys hash` prints one.
    pub api_key_hashes: Vec<String>,
    /// Model names this tenant may use; `"*"` allows every model.
    pub allowed_models: Vec<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests_per_minute: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("{path} has {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid { path: String, problems: Vec<String> },
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Self::from_yaml(&text, &display)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source,
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_owned(),
                problems,
            })
        }
    }

    /// Every problem that parsing alone cannot catch: duplicates, dangling references, values
    /// out of range.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let limits = &self.limits;
        if limits.max_body_bytes == 0 {
            problems.push("limits.max_body_bytes must be above 0".to_owned());
        }
        if limits.max_in_flight == 0 {
            problems.push("limits.max_in_flight must be above 0".to_owned());
        }
        if limits.request_timeout.is_zero() {
            problems.push("limits.request_timeout must be above 0".to_owned());
        }
        if self.upstream.retry.max_attempts == 0 {
            problems.push("upstream.retry.max_attempts must be at least 1".to_owned());
        }

        let mut provider_names = HashSet::new();
        let mut model_owner: HashMap<&str, usize> = HashMap::new();
        for (p, provider) in self.providers.iter().enumerate() {
            let at = format!("providers[{p}] ({})", provider.name);
            if provider.name.is_empty() {
                problems.push(format!("providers[{p}].name is empty"));
            }
            if !provider_names.insert(provider.name.as_str()) {
                problems.push(format!("{at}: provider name is used twice"));
            }
            match reqwest::Url::parse(&provider.base_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => problems.push(format!(
                    "{at}.base_url: scheme '{}' is not http or https",
                    url.scheme()
                )),
                Err(e) => problems.push(format!("{at}.base_url: {e}")),
            }
            if let Some(var) = &provider.api_key_env
                && (var.is_empty() || var.contains('='))
            {
                problems.push(format!(
                    "{at}.api_key_env must be the NAME of an environment variable"
                ));
            }
            for name in provider
                .headers
                .keys()
                .chain(provider.api_key_header.as_ref())
            {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problems.push(format!("{at}: '{name}' is not a valid header name"));
                }
            }
            for (name, value) in &provider.headers {
                if reqwest::header::HeaderValue::from_str(value).is_err() {
                    problems.push(format!("{at}.headers.{name}: not a valid header value"));
                }
            }
            if provider.models.is_empty() {
                problems.push(format!("{at}.models is empty"));
            }
            for (m, model) in provider.models.iter().enumerate() {
                if model_owner.insert(&model.name, p).is_some() {
                    problems.push(format!(
                        "{at}.models[{m}]: model name '{}' is used twice",
                        model.name
                    ));
                }
                let valid = |usd: f64| usd.is_finite() && usd >= 0.0;
                if !valid(model.price.input_per_mtok) || !valid(model.price.output_per_mtok) {
                    problems.push(format!(
                        "{at}.models[{m}] ({}): prices must be finite and not negative",
                        model.name
                    ));
                }
                if model.default_max_tokens == Some(0) {
                    problems.push(format!(
                        "{at}.models[{m}] ({}): default_max_tokens must be above 0",
                        model.name
                    ));
                }
            }
        }
        for (p, provider) in self.providers.iter().enumerate() {
            for (m, model) in provider.models.iter().enumerate() {
                let mut seen = HashSet::new();
                for fallback in &model.fallbacks {
                    if fallback == &model.name {
                        problems.push(format!(
                            "providers[{p}].models[{m}] ({}): a model cannot fall back to itself",
                            model.name
                        ));
                    } else if !model_owner.contains_key(fallback.as_str()) {
                        problems.push(format!(
                            "providers[{p}].models[{m}] ({}): fallback '{fallback}' is not a configured model",
                            model.name
                        ));
                    }
                    if !seen.insert(fallback) {
                        problems.push(format!(
                            "providers[{p}].models[{m}] ({}): fallback '{fallback}' is listed twice",
                            model.name
                        ));
                    }
                }
            }
        }

        for (l, local) in self.local_models.iter().enumerate() {
            let at = format!("local_models[{l}] ({})", local.name);
            if model_owner.insert(&local.name, usize::MAX).is_some() {
                problems.push(format!("{at}: model name '{}' is used twice", local.name));
            }
            match (&local.default_model, &local.path) {
                (Some(id), None) => {
                    if crate::model_store::Package::named(id).is_none_or(|p| p.id != "smollm2") {
                        problems.push(format!(
                            "{at}.default_model: '{id}' is not a default language model (known: smollm2)"
                        ));
                    }
                }
                (None, Some(_)) => {}
                _ => problems.push(format!("{at}: give exactly one of default_model and path")),
            }
            if local.queue_capacity == 0 {
                problems.push(format!("{at}.queue_capacity must be above 0"));
            }
        }

        for (e, embedding) in self.embedding_models.iter().enumerate() {
            let at = format!("embedding_models[{e}] ({})", embedding.name);
            if model_owner.insert(&embedding.name, usize::MAX).is_some() {
                problems.push(format!(
                    "{at}: model name '{}' is used twice",
                    embedding.name
                ));
            }
            match (&embedding.default_model, &embedding.path) {
                (Some(id), None) if id != "all-minilm-l6-v2" => problems.push(format!(
                    "{at}.default_model: '{id}' is not a default embedding model (known: all-minilm-l6-v2)"
                )),
                (Some(_), None) | (None, Some(_)) => {}
                _ => problems.push(format!("{at}: give exactly one of default_model and path")),
            }
        }

        if let Some(router) = &self.router {
            if !self
                .embedding_models
                .iter()
                .any(|m| m.name == router.embedding_model)
            {
                problems.push(format!(
                    "router.embedding_model: '{}' is not one of embedding_models",
                    router.embedding_model
                ));
            }
            for (name, examples) in &router.domains {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    problems.push(format!(
                        "router.domains: '{name}' is not a domain name (letters, digits and _)"
                    ));
                }
                if examples.iter().all(|e| e.trim().is_empty()) {
                    problems.push(format!("router.domains.{name}: give at least one example"));
                }
            }
        }

        let mut tenant_names = HashSet::new();
        let mut hashes = HashSet::new();
        for (t, tenant) in self.tenants.iter().enumerate() {
            let at = format!("tenants[{t}] ({})", tenant.name);
            if tenant.name.is_empty() {
                problems.push(format!("tenants[{t}].name is empty"));
            }
            if !tenant_names.insert(tenant.name.as_str()) {
                problems.push(format!("{at}: tenant name is used twice"));
            }
            if tenant.api_key_hashes.is_empty() {
                problems.push(format!("{at}.api_key_hashes is empty"));
            }
            for hash in &tenant.api_key_hashes {
                match hash.parse::<KeyHash>() {
                    Ok(parsed) => {
                        if !hashes.insert(parsed) {
                            problems.push(format!("{at}: key hash {hash} is used twice"));
                        }
                    }
                    Err(e) => problems.push(format!("{at}.api_key_hashes: {e}")),
                }
            }
            for model in &tenant.allowed_models {
                if model != "*" && !model_owner.contains_key(model.as_str()) {
                    problems.push(format!(
                        "{at}.allowed_models: '{model}' is not a configured model"
                    ));
                }
            }
            if let Some(limit) = tenant.rate_limit
                && limit.requests_per_minute == 0
            {
                problems.push(format!(
                    "{at}.rate_limit.requests_per_minute must be above 0"
                ));
            }
        }
        problems
    }
}

/// Durations are written in the file as seconds (fractions allowed: `0.25`).
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs)
            .map_err(|_| D::Error::custom(format!("{secs} is not a valid number of seconds")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
listen: 127.0.0.1:9000
limits: { max_body_bytes: 1000, request_timeout: 2.5 }
providers:
  - name: openai
    kind: openai
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
    models:
      - name: gpt-4o-mini
        price: { input_per_mtok: 0.15, output_per_mtok: 0.6 }
        fallbacks: [claude-haiku]
  - name: anthropic
    kind: anthropic
    base_url: https://api.anthropic.com
    api_key_env: ANTHROPIC_API_KEY
    models:
      - name: claude-haiku
        upstream_name: claude-3-5-haiku-latest
        price: { input_per_mtok: 0.8, output_per_mtok: 4 }
tenants:
  - name: acme
    api_key_hashes: ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]
    allowed_models: ["*"]
"#;

    #[test]
    fn a_valid_file_parses_with_defaults_filled_in() {
        let config = Config::from_yaml(VALID, "test").unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.max_body_bytes, 1000);
        assert_eq!(config.limits.request_timeout, Duration::from_millis(2500));
        assert_eq!(config.limits.max_in_flight, 1024);
        assert_eq!(config.upstream.retry.max_attempts, 3);
        assert_eq!(
            config.providers[1].models[0].upstream_name(),
            "claude-3-5-haiku-latest"
        );
        assert_eq!(config.providers[0].models[0].upstream_name(), "gpt-4o-mini");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_location() {
        let text = VALID.replace("max_body_bytes", "max_body_byte");
        let err = Config::from_yaml(&text, "test").unwrap_err().to_string();
        assert!(err.contains("max_body_byte"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn every_cross_reference_problem_is_reported_at_once() {
        let text = VALID
            .replace(
                "fallbacks: [claude-haiku]",
                "fallbacks: [nope, gpt-4o-mini]",
            )
            .replace("allowed_models: [\"*\"]", "allowed_models: [ghost]")
            .replace("sha256:2c26", "sha256:zz26")
            .replace("https://api.anthropic.com", "ftp://x");
        let Err(ConfigError::Invalid { problems, .. }) = Config::from_yaml(&text, "test") else {
            panic!("expected validation errors");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("fallback 'nope' is not a configured model"),
            "{all}"
        );
        assert!(all.contains("cannot fall back to itself"), "{all}");
        assert!(all.contains("'ghost' is not a configured model"), "{all}");
        assert!(all.contains("api_key_hashes"), "{all}");
        assert!(all.contains("scheme 'ftp'"), "{all}");
        assert_eq!(problems.len(), 5, "{all}");
    }

    #[test]
    fn duplicate_models_and_key_hashes_are_rejected() {
        let text = VALID.replace("name: claude-haiku", "name: gpt-4o-mini").replace(
            "allowed_models: [\"*\"]",
            "allowed_models: [\"*\"]\n  - name: beta\n    api_key_hashes: [\"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"]\n    allowed_models: []",
        );
        let Err(ConfigError::Invalid { problems, .. }) = Config::from_yaml(&text, "test") else {
            panic!("expected validation errors");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("model name 'gpt-4o-mini' is used twice"),
            "{all}"
        );
        assert!(all.contains("is used twice"), "{all}");
        assert!(all.contains("key hash"), "{all}");
    }

    #[test]
    fn the_router_must_name_an_embedding_model_and_give_examples() {
        let text = format!(
            "{VALID}router:\n  embedding_model: ghost\n  domains:\n    payroll: []\n    \"bad name\": [x]\n"
        );
        let Err(ConfigError::Invalid { problems, .. }) = Config::from_yaml(&text, "test") else {
            panic!("expected validation errors");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("'ghost' is not one of embedding_models"),
            "{all}"
        );
        assert!(
            all.contains("router.domains.payroll: give at least one example"),
            "{all}"
        );
        assert!(all.contains("'bad name' is not a domain name"), "{all}");
        assert_eq!(problems.len(), 3, "{all}");
    }
}
