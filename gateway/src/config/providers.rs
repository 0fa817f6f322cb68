//! `providers:`: the remote providers, each with its models, their prices and fallbacks.

use std::collections::BTreeMap;

use serde::Deserialize;
use switchboard_policies::Price;

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
