//! The policy file (`policies/default.yaml` ships): where the gateway listens, its limits, the
//! upstream providers with their models and prices, the local models, the tenants with their
//! key hashes and budgets, and the routing rules.
//!
//! Parsing is strict (unknown keys are errors, so a typo never silently falls back to a default),
//! and [`Config::validate`] reports every cross-reference problem at once, each at the line and
//! column of the offending entry, with a hint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use switchboard_policies::Price;
use switchboard_policies::problems::{KeyPath, Location, Problem, locate};
use switchboard_policies::spec::{BudgetSpec, RoutingSpec};

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
    /// Where requests for the routing model (`auto`) go; off when absent.
    #[serde(default)]
    pub routing: Option<RoutingSpec>,
    /// The durable record of every request.
    #[serde(default)]
    pub ledger: LedgerConfig,
}

/// Where the ledger lives and how often it reaches the disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// A directory; `$SWITCHBOARD_HOME/ledger` (else `~/.local/share/switchboard/ledger`)
    /// when absent.
    pub path: Option<std::path::PathBuf>,
    /// sled writes its log to disk at least this often: what a crash may lose of the records
    /// that no answer waited for.
    pub flush_every_ms: u64,
    /// An answer's last bytes wait until its record is on disk (a group commit), so that a
    /// crash loses no answered request. Off: more throughput on slow disks, and a crash may
    /// lose the last `flush_every_ms` of records.
    pub durable_answers: bool,
    /// Keep the text the router read of each request (prompt text), so that users' feedback
    /// can become training labels (`switchboard report --feedback-labels`). Off: the ledger
    /// holds no prompt text.
    pub keep_routing_text: bool,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            path: None,
            flush_every_ms: 500,
            durable_answers: true,
            keep_routing_text: false,
        }
    }
}

impl LedgerConfig {
    pub fn path(&self) -> std::path::PathBuf {
        self.path
            .clone()
            .unwrap_or_else(crate::ledger::default_path)
    }

    pub fn open(&self) -> Result<crate::ledger::Ledger, crate::ledger::LedgerError> {
        crate::ledger::Ledger::open(&self.path(), self.flush_every_ms, self.durable_answers)
    }
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
    /// Client connections open at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a request's headers may take to arrive, and how long a connection may sit
    /// idle between requests, before it is closed.
    #[serde(with = "seconds")]
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive; slower clients get 408.
    #[serde(with = "seconds")]
    pub body_timeout: Duration,
    /// How long the gateway waits for a client to read what it writes (a stream nobody reads)
    /// before it closes the connection.
    #[serde(with = "seconds")]
    pub send_timeout: Duration,
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
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
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
    /// Its context window in tokens: a routed request that needs more skips it.
    #[serde(default)]
    pub context_window: Option<u32>,
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
    /// Generations decoded together (continuous batching; models that run on candle take one
    /// at a time).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Memory for finished requests' keys and values, reused by prompts that start the same
    /// way (a shared system prompt); 0 turns the prefix cache off.
    #[serde(default = "default_prefix_cache_mib")]
    pub prefix_cache_mib: usize,
}

fn default_queue_capacity() -> usize {
    16
}

fn default_max_batch() -> usize {
    8
}

fn default_prefix_cache_mib() -> usize {
    256
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
    /// Daily and monthly spending limits, and what happens when one is spent.
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
    /// The largest share of its routed requests that may escalate, over a UTC day.
    #[serde(default)]
    pub max_escalation_share: Option<f64>,
    /// Whether its clients' `x-switchboard-route: local|remote` is obeyed.
    #[serde(default)]
    pub may_force_route: bool,
    /// Whether its keys may read every tenant's usage (`GET /v1/usage`).
    #[serde(default)]
    pub admin: bool,
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
    #[error("{path} has {} problem(s):\n{}", problems.len(), located(path, problems))]
    Invalid {
        path: String,
        problems: Vec<(Option<Location>, Problem)>,
    },
}

/// `file:line:column: path: message (hint: …)`, one per line.
fn located(file: &str, problems: &[(Option<Location>, Problem)]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|(location, problem)| match location {
            Some(at) => format!("  {file}:{at}: {problem}"),
            None => format!("  {file}: {problem}"),
        })
        .collect();
    lines.join("\n")
}

impl ConfigError {
    /// The problems of an invalid file, for tests and tools.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { problems, .. } => {
                problems.iter().map(|(_, p)| p.to_string()).collect()
            }
            other => vec![other.to_string()],
        }
    }
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
        let mut problems = config.validate();
        if let Err(policy_problems) = crate::policy::Policy::from_config(&config) {
            problems.extend(policy_problems);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            let problems = problems
                .into_iter()
                .map(|problem| (locate(text, &problem.path), problem))
                .collect();
            Err(ConfigError::Invalid {
                path: origin.to_owned(),
                problems,
            })
        }
    }

    /// Every problem that parsing alone cannot catch: duplicates, dangling references, values
    /// out of range. The routing rules and tenants' budgets are checked by
    /// [`crate::policy::Policy::from_config`].
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let root = KeyPath::root();
        let mut problem =
            |path: KeyPath, message: String| problems.push(Problem::new(path, message));
        let limits = &self.limits;
        let at = root.key("limits");
        if limits.max_body_bytes == 0 {
            problem(at.key("max_body_bytes"), "must be above 0".to_owned());
        }
        if limits.max_in_flight == 0 {
            problem(at.key("max_in_flight"), "must be above 0".to_owned());
        }
        if limits.max_connections == 0 {
            problem(at.key("max_connections"), "must be above 0".to_owned());
        }
        let timeouts = [
            ("request_timeout", limits.request_timeout),
            ("header_timeout", limits.header_timeout),
            ("body_timeout", limits.body_timeout),
            ("send_timeout", limits.send_timeout),
        ];
        for (key, timeout) in timeouts {
            if timeout.is_zero() {
                problem(at.key(key), "must be above 0".to_owned());
            }
        }
        if self.upstream.retry.max_attempts == 0 {
            let at = root.key("upstream").key("retry").key("max_attempts");
            problem(at, "must be at least 1".to_owned());
        }

        let mut provider_names = HashSet::new();
        let mut model_owner: HashMap<&str, usize> = HashMap::new();
        for (p, provider) in self.providers.iter().enumerate() {
            let at = root.key("providers").index(p);
            if provider.name.is_empty() {
                problem(at.key("name"), "is empty".to_owned());
            }
            if !provider_names.insert(provider.name.as_str()) {
                let message = format!("provider name '{}' is used twice", provider.name);
                problem(at.key("name"), message);
            }
            let base_url = at.key("base_url");
            match reqwest::Url::parse(&provider.base_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => problem(
                    base_url,
                    format!("scheme '{}' is not http or https", url.scheme()),
                ),
                Err(e) => problem(base_url, e.to_string()),
            }
            if let Some(var) = &provider.api_key_env
                && (var.is_empty() || var.contains('='))
            {
                problem(
                    at.key("api_key_env"),
                    "must be the NAME of an environment variable".to_owned(),
                );
            }
            for (name, header) in provider
                .headers
                .keys()
                .map(|name| (name, at.key("headers").key(name)))
                .chain(
                    provider
                        .api_key_header
                        .iter()
                        .map(|n| (n, at.key("api_key_header"))),
                )
            {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problem(header, format!("'{name}' is not a valid header name"));
                }
            }
            for (name, value) in &provider.headers {
                if reqwest::header::HeaderValue::from_str(value).is_err() {
                    let message = "not a valid header value".to_owned();
                    problem(at.key("headers").key(name), message);
                }
            }
            if provider.models.is_empty() {
                problem(at.key("models"), "is empty".to_owned());
            }
            for (m, model) in provider.models.iter().enumerate() {
                let at = at.key("models").index(m);
                if model_owner.insert(&model.name, p).is_some() {
                    let message = format!("model name '{}' is used twice", model.name);
                    problem(at.key("name"), message);
                }
                if model.default_max_tokens == Some(0) {
                    problem(at.key("default_max_tokens"), "must be above 0".to_owned());
                }
                if model.context_window == Some(0) {
                    problem(at.key("context_window"), "must be above 0".to_owned());
                }
            }
        }
        for (p, provider) in self.providers.iter().enumerate() {
            for (m, model) in provider.models.iter().enumerate() {
                let mut seen = HashSet::new();
                for (f, fallback) in model.fallbacks.iter().enumerate() {
                    let at = root.key("providers").index(p).key("models").index(m);
                    let at = at.key("fallbacks").index(f);
                    if fallback == &model.name {
                        problem(at.clone(), "a model cannot fall back to itself".to_owned());
                    } else if !model_owner.contains_key(fallback.as_str()) {
                        let message = format!("fallback '{fallback}' is not a configured model");
                        problem(at.clone(), message);
                    }
                    if !seen.insert(fallback) {
                        problem(at, format!("fallback '{fallback}' is listed twice"));
                    }
                }
            }
        }

        for (l, local) in self.local_models.iter().enumerate() {
            let at = root.key("local_models").index(l);
            if model_owner.insert(&local.name, usize::MAX).is_some() {
                let message = format!("model name '{}' is used twice", local.name);
                problem(at.key("name"), message);
            }
            match (&local.default_model, &local.path) {
                (Some(id), None) => {
                    if crate::model_store::Package::named(id).is_none_or(|p| p.id != "smollm2") {
                        problem(
                            at.key("default_model"),
                            format!("'{id}' is not a default language model (known: smollm2)"),
                        );
                    }
                }
                (None, Some(_)) => {}
                _ => problem(
                    at.clone(),
                    "give exactly one of default_model and path".to_owned(),
                ),
            }
            if local.queue_capacity == 0 {
                problem(at.key("queue_capacity"), "must be above 0".to_owned());
            }
            if local.max_batch == 0 {
                problem(at.key("max_batch"), "must be above 0".to_owned());
            }
        }

        for (e, embedding) in self.embedding_models.iter().enumerate() {
            let at = root.key("embedding_models").index(e);
            if model_owner.insert(&embedding.name, usize::MAX).is_some() {
                let message = format!("model name '{}' is used twice", embedding.name);
                problem(at.key("name"), message);
            }
            match (&embedding.default_model, &embedding.path) {
                (Some(id), None) if id != "all-minilm-l6-v2" => problem(
                    at.key("default_model"),
                    format!("'{id}' is not a default embedding model (known: all-minilm-l6-v2)"),
                ),
                (Some(_), None) | (None, Some(_)) => {}
                _ => problem(at, "give exactly one of default_model and path".to_owned()),
            }
        }

        if let Some(router) = &self.router {
            let at = root.key("router");
            if !self
                .embedding_models
                .iter()
                .any(|m| m.name == router.embedding_model)
            {
                problem(
                    at.key("embedding_model"),
                    format!(
                        "'{}' is not one of embedding_models",
                        router.embedding_model
                    ),
                );
            }
            for (name, examples) in &router.domains {
                let at = at.key("domains").key(name);
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    problem(
                        at.clone(),
                        format!("'{name}' is not a domain name (letters, digits and _)"),
                    );
                }
                if examples.iter().all(|e| e.trim().is_empty()) {
                    problem(at, "give at least one example".to_owned());
                }
            }
        }

        let mut tenant_names = HashSet::new();
        let mut hashes = HashSet::new();
        for (t, tenant) in self.tenants.iter().enumerate() {
            let at = root.key("tenants").index(t);
            if tenant.name.is_empty() {
                problem(at.key("name"), "is empty".to_owned());
            } else if tenant.name.chars().any(char::is_control) {
                problem(at.key("name"), "holds a control character".to_owned());
            }
            if !tenant_names.insert(tenant.name.as_str()) {
                let message = format!("tenant name '{}' is used twice", tenant.name);
                problem(at.key("name"), message);
            }
            if tenant.api_key_hashes.is_empty() {
                problem(at.key("api_key_hashes"), "is empty".to_owned());
            }
            for (h, hash) in tenant.api_key_hashes.iter().enumerate() {
                let at = at.key("api_key_hashes").index(h);
                match hash.parse::<KeyHash>() {
                    Ok(parsed) => {
                        if !hashes.insert(parsed) {
                            problem(at, format!("key hash {hash} is used twice"));
                        }
                    }
                    Err(e) => problem(at, e.to_string()),
                }
            }
            for (m, model) in tenant.allowed_models.iter().enumerate() {
                let routing_model = self.routing.as_ref().map(|r| r.model.as_str());
                if model != "*"
                    && !model_owner.contains_key(model.as_str())
                    && Some(model.as_str()) != routing_model
                {
                    problem(
                        at.key("allowed_models").index(m),
                        format!("'{model}' is not a configured model"),
                    );
                }
            }
            if let Some(limit) = tenant.rate_limit
                && limit.requests_per_minute == 0
            {
                let at = at.key("rate_limit").key("requests_per_minute");
                problem(at, "must be above 0".to_owned());
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
        let problems = Config::from_yaml(&text, "test").unwrap_err().problems();
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
        let problems = Config::from_yaml(&text, "test").unwrap_err().problems();
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
        let problems = Config::from_yaml(&text, "test").unwrap_err().problems();
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

    #[test]
    fn routing_problems_are_reported_at_their_line_and_column() {
        let text = format!(
            "{VALID}local_models:\n  - {{ name: slm, path: /models/slm.gguf }}\nrouting:\n  reference_model: gpt-4o-mini\n  tiers:\n    - {{ name: local, below: 0.4, targets: [slm] }}\n    - {{ name: remote, targets: [gpt-4o-mini, claude-hiaku] }}\n"
        );
        let error = Config::from_yaml(&text, "policy.yaml")
            .unwrap_err()
            .to_string();
        let line = text
            .lines()
            .position(|l| l.contains("claude-hiaku"))
            .unwrap()
            + 1;
        let column = text
            .lines()
            .nth(line - 1)
            .unwrap()
            .find("claude-hiaku")
            .unwrap()
            + 1;
        assert!(
            error.contains(&format!(
                "policy.yaml:{line}:{column}: routing.tiers[1].targets[1]: 'claude-hiaku' is not a configured model (hint: configured models: claude-haiku, gpt-4o-mini, slm)"
            )),
            "{error}"
        );

        let budget = text.replace("claude-hiaku", "claude-haiku").replace(
            "allowed_models: [\"*\"]",
            "allowed_models: [\"*\"]\n    budget: { monthly_usd: 10 }",
        );
        assert!(Config::from_yaml(&budget, "policy.yaml").is_ok());
        let without_routing = budget.split("routing:").next().unwrap();
        let problems = Config::from_yaml(without_routing, "p")
            .unwrap_err()
            .problems();
        assert_eq!(
            problems,
            [
                "tenants[0].budget: a budget needs a `routing:` section (hint: routing names the local tier that a spent budget falls back to)"
            ]
        );
    }

    /// The shipped policy file, cut, with lines dropped or duplicated, or with characters
    /// replaced: loading it gives a config or problems (each located in the text), never a
    /// panic.
    #[test]
    fn damaged_policy_files_load_or_report_problems() {
        use proptest::prelude::*;
        let shipped = include_str!("../../policies/default.yaml");
        let lines: Vec<&str> = shipped.lines().collect();
        let cut = (0..shipped.len()).prop_map(|at| {
            let at = (0..=at)
                .rev()
                .find(|&i| shipped.is_char_boundary(i))
                .unwrap_or(0);
            shipped[..at].to_owned()
        });
        let n = lines.len();
        let edited = proptest::collection::vec((0..n, 0..3u8), 1..6).prop_map(move |edits| {
            let mut lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            for (at, how) in edits {
                let at = at % lines.len().max(1);
                match how {
                    0 if !lines.is_empty() => {
                        lines.remove(at);
                    }
                    1 if !lines.is_empty() => lines.insert(at, lines[at].clone()),
                    _ => lines.insert(at, "  - { name: [, price: -1 }".to_owned()),
                }
            }
            lines.join("\n")
        });
        let replaced = (
            0..shipped.len(),
            prop_oneof![
                Just(":"),
                Just("-"),
                Just(" "),
                Just("{"),
                Just("\t"),
                Just("0")
            ],
        )
            .prop_map(|(at, with)| {
                let at = (0..=at)
                    .rev()
                    .find(|&i| shipped.is_char_boundary(i))
                    .unwrap_or(0);
                let end = (at + 1..=shipped.len())
                    .find(|&i| shipped.is_char_boundary(i))
                    .unwrap_or(at);
                format!("{}{with}{}", &shipped[..at], &shipped[end..])
            });
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 500,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&prop_oneof![cut, edited, replaced], |text| {
                let _ = Config::from_yaml(&text, "damaged.yaml");
                Ok(())
            })
            .unwrap();
    }
}
