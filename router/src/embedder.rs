//! Sentence embeddings with all-MiniLM-L6-v2: WordPiece tokens (truncated at 256, as
//! sentence-transformers does for this model), run by the router's own BERT forward pass
//! ([`crate::encoder`]), mean-pooled over the tokens and L2-normalised. Texts of a batch are not
//! padded, so a text embeds the same alone or in a batch.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::encoder::{BertEncoder, Isa};

/// The longest input, in tokens, that all-MiniLM-L6-v2 was trained on (sentence-transformers'
/// `max_seq_length`).
pub const MAX_TOKENS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum EmbedderError {
    #[error("cannot load the embedder from {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("embedding failed: {0}")]
    Run(String),
}

/// Anything that turns texts into unit vectors; our BERT encoder is one, an ONNX Runtime backend
/// could be another.
pub trait Embed: Send + Sync {
    /// One unit vector per text, and the number of tokens each text was read as.
    fn embed(&self, texts: &[&str]) -> Result<Embedded, EmbedderError>;
    fn dimensions(&self) -> usize;
}

#[derive(Debug, Clone, Default)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: Vec<usize>,
}

pub struct BertEmbedder {
    encoder: BertEncoder,
    tokenizer: Tokenizer,
}

impl BertEmbedder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`, with one
    /// thread per core (up to 8: a batch of short texts has no use for more).
    pub fn load(dir: &Path) -> Result<Self, EmbedderError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::load_with(dir, cores.min(8), Isa::detect())
    }

    /// As `load`, on `threads` threads with the kernels of `isa` (which the CPU must have).
    pub fn load_with(dir: &Path, threads: usize, isa: Isa) -> Result<Self, EmbedderError> {
        let fail = |reason: String| EmbedderError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| fail(e.to_string()))?;
        // The shipped tokenizer.json pads to 128; the encoder wants each text as it is.
        tokenizer.with_padding(None);
        let encoder = BertEncoder::load_with(dir, threads, isa).map_err(|e| fail(e.to_string()))?;
        Ok(Self { encoder, tokenizer })
    }
}

impl Embed for BertEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Embedded, EmbedderError> {
        if texts.is_empty() {
            return Ok(Embedded::default());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedderError::Run(e.to_string()))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        let vectors = self
            .encoder
            .encode(&ids)
            .map_err(|e| EmbedderError::Run(e.to_string()))?;
        Ok(Embedded {
            vectors,
            tokens: ids.iter().map(|ids| ids.len()).collect(),
        })
    }

    fn dimensions(&self) -> usize {
        self.encoder.config().hidden_size
    }
}

/// The cosine of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
