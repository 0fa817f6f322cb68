//! `local_models:` and `embedding_models:`: the models answered on the company's own machines
//! (in-process, or by a pool of servers), and the default models that Switchboard fetches itself.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchboard_policies::Price;

use super::seconds;

/// The id of the default local model, SmolLM2-135M-Instruct.
pub const DEFAULT_LOCAL_MODEL: &str = "smollm2";

/// The id of the default embedding model, all-MiniLM-L6-v2: the one the shipped router heads
/// read.
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// A model of the local tier: a GGUF model run by the in-process engine, a pool of servers that
/// answer it (other Switchboard nodes, llama.cpp or vLLM servers), or both. Each request goes
/// to the least-loaded member that is up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalModelConfig {
    /// The name clients ask for; unique across all models.
    pub name: String,
    /// The in-process engine's model: one of the default models that `switchboard models
    /// fetch` puts in the model directory (`smollm2`); `serve` fetches it on first start.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Or the path of any GGUF chat model of a supported architecture.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Servers that answer this model besides (or, with neither of the above, instead of) the
    /// in-process engine.
    #[serde(default)]
    pub servers: Vec<LocalServerConfig>,
    /// How often each server is probed (`GET {url}/models`); one that fails a probe or refuses
    /// a connection gets no requests until a probe succeeds again.
    #[serde(default = "default_health_every", with = "seconds")]
    pub health_every: Duration,
    /// What a local token costs (an amortised hardware cost); free by default.
    #[serde(default)]
    pub price: Option<Price>,
    /// Requests that may wait for the model; beyond them, 503 + `Retry-After`.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Caps the context length the model declares (memory). Required for a model answered by
    /// servers only: it is the window that the decision weighs.
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

impl LocalModelConfig {
    /// Whether the in-process engine answers it (a model file is named).
    pub fn runs_in_process(&self) -> bool {
        self.default_model.is_some() || self.path.is_some()
    }
}

/// A server of a local model's pool: anything that speaks OpenAI's chat completions API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalServerConfig {
    /// The URL that `/chat/completions` and `/models` are appended to
    /// (`http://10.0.0.7:8080/v1`).
    pub url: String,
    /// The server's own name for the model; the pool's `name` by default.
    #[serde(default)]
    pub model: Option<String>,
    /// The NAME of the environment variable holding its key (another Switchboard node's
    /// tenant key); none for a server that takes no key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Requests it is sent at once; beyond them the pool counts it full.
    #[serde(default = "default_server_in_flight")]
    pub max_in_flight: usize,
}

fn default_server_in_flight() -> usize {
    8
}

fn default_health_every() -> Duration {
    Duration::from_secs(5)
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
    pub path: Option<PathBuf>,
}

impl EmbeddingModelConfig {
    /// The default embedding model, fetched by Switchboard: the one the shipped router heads
    /// read.
    pub fn shipped() -> Self {
        Self {
            name: DEFAULT_EMBEDDING_MODEL.to_owned(),
            default_model: Some(DEFAULT_EMBEDDING_MODEL.to_owned()),
            path: None,
        }
    }
}
