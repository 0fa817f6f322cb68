//! The transformer itself, one variant per architecture: llama files whose weights are Q4_1 or
//! Q8_0 run on our own forward pass ([`crate::llama`]), everything else on candle's quantized
//! model code. Everything else talks to it through [`Model::forward`].

use std::fs::File;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::models::{
    quantized_gemma3, quantized_llama, quantized_phi3, quantized_qwen2, quantized_qwen3,
};

use crate::metadata::Metadata;

pub const SUPPORTED: &str = "llama, qwen2, qwen3, phi3, gemma3";

enum Weights {
    Own(crate::llama::Llama),
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
    Gemma3(quantized_gemma3::ModelWeights),
}

/// A loaded model with its state for one sequence (the KV cache inside the weights).
pub struct Model {
    weights: Weights,
    /// The tokens whose keys and values are in the cache, in order.
    sequence: Vec<u32>,
    device: Device,
    pub architecture: String,
    /// The longest sequence (prompt and answer) the model can take.
    pub context_length: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("architecture '{0}' is not supported (supported: {SUPPORTED})")]
    UnsupportedArchitecture(String),
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Llama(#[from] crate::llama::LlamaError),
}

impl Model {
    /// Loads the weights described by `content` from `file`.
    pub fn load(content: Content, file: &mut File) -> Result<Self, ModelError> {
        let device = Device::Cpu;
        let metadata = Metadata(&content);
        let architecture = metadata.string("general.architecture")?.to_owned();
        let declared = metadata
            .optional_u32(&format!("{architecture}.context_length"))
            .map_or(usize::MAX, |n| n as usize);
        let own = match architecture.as_str() {
            "llama" => crate::llama::Llama::load(&content, file)?,
            _ => None,
        };
        let (weights, table_limit) = match (architecture.as_str(), own) {
            (_, Some(own)) => {
                let limit = own.context_length();
                (Weights::Own(own), limit)
            }
            ("llama", None) => (
                Weights::Llama(quantized_llama::ModelWeights::from_gguf(
                    content, file, &device,
                )?),
                // candle's rotary tables for llama stop here.
                quantized_llama::MAX_SEQ_LEN,
            ),
            ("qwen2", None) => (
                Weights::Qwen2(quantized_qwen2::ModelWeights::from_gguf(
                    content, file, &device,
                )?),
                usize::MAX,
            ),
            ("qwen3", None) => (
                Weights::Qwen3(quantized_qwen3::ModelWeights::from_gguf(
                    content, file, &device,
                )?),
                usize::MAX,
            ),
            ("phi3", None) => (
                Weights::Phi3(quantized_phi3::ModelWeights::from_gguf(
                    false, content, file, &device,
                )?),
                usize::MAX,
            ),
            ("gemma3", None) => (
                Weights::Gemma3(quantized_gemma3::ModelWeights::from_gguf(
                    content, file, &device,
                )?),
                quantized_gemma3::MAX_SEQ_LEN,
            ),
            (other, None) => return Err(ModelError::UnsupportedArchitecture(other.to_owned())),
        };
        let context_length = declared.min(table_limit);
        Ok(Self {
            weights,
            sequence: Vec::new(),
            device,
            architecture,
            context_length,
        })
    }

    /// Starts a sequence at `prompt` and returns the logits of its last token, with how many of
    /// its tokens came from the cache: our llama path keeps the keys and values of the longest
    /// prefix the prompt shares with the sequence before (a repeated system prompt costs its
    /// prefill once); candle's models start over.
    pub fn start(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize), ModelError> {
        let shared = match self.weights {
            Weights::Own(_) => self
                .sequence
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
                // The last prompt token runs again: its logits are the answer's first.
                .min(prompt.len().saturating_sub(1)),
            _ => 0,
        };
        if shared == 0 {
            self.reset();
        }
        self.sequence.truncate(shared);
        let logits = self.forward(&prompt[shared..], shared)?;
        self.sequence.extend_from_slice(&prompt[shared..]);
        Ok((logits, shared))
    }

    /// Appends a token to the sequence and returns the logits after it.
    pub fn next(&mut self, token: u32) -> Result<Vec<f32>, ModelError> {
        let logits = self.forward(&[token], self.sequence.len())?;
        self.sequence.push(token);
        Ok(logits)
    }

    /// Forgets the sequence so far.
    pub fn reset(&mut self) {
        self.sequence.clear();
        match &mut self.weights {
            Weights::Own(w) => w.reset(),
            Weights::Llama(w) => w.clear_kv_cache(),
            Weights::Qwen2(w) => w.clear_kv_cache(),
            Weights::Qwen3(w) => w.clear_kv_cache(),
            // These two drop their cache when a sequence starts at position 0.
            Weights::Phi3(_) | Weights::Gemma3(_) => {}
        }
    }

    /// Runs `tokens` at positions `position..`, and returns the logits of the last one.
    pub fn forward(&mut self, tokens: &[u32], position: usize) -> Result<Vec<f32>, ModelError> {
        let input = || Tensor::new(tokens, &self.device)?.unsqueeze(0);
        let logits = match &mut self.weights {
            Weights::Own(w) => return Ok(w.forward(tokens, position)),
            Weights::Llama(w) => w.forward(&input()?, position)?,
            Weights::Qwen2(w) => w.forward(&input()?, position)?,
            Weights::Qwen3(w) => w.forward(&input()?, position)?,
            Weights::Phi3(w) => w.forward(&input()?, position)?,
            Weights::Gemma3(w) => w.forward(&input()?, position)?,
        };
        // [1, vocab] from most architectures, [1, tokens, vocab] from some: keep the last row.
        let mut logits = logits.squeeze(0)?;
        if logits.rank() == 2 {
            logits = logits.get(logits.dim(0)? - 1)?;
        }
        Ok(logits.to_dtype(candle_core::DType::F32)?.to_vec1()?)
    }
}
