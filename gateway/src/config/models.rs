//! `local_models:` and `embedding_models:`: the models answered in-process, and the default
//! models that Switchboard fetches itself.

use std::path::PathBuf;

use serde::Deserialize;
use switchboard_policies::Price;

/// The id of the default local model, SmolLM2-135M-Instruct.
pub const DEFAULT_LOCAL_MODEL: &str = "smollm2";

/// The id of the default embedding model, all-MiniLM-L6-v2: the one the shipped router heads
/// read.
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

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
    pub path: Option<PathBuf>,
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
