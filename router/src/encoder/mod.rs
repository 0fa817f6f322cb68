//! A BERT sentence encoder for CPUs, built for the router's one job: turn a few short texts into
//! unit vectors in a few milliseconds, on the two cores that the gateway shares with everything
//! else.
//!
//! Why our own forward pass rather than a general tensor library: the texts of a batch are laid
//! end to end (no padding: each attends only to itself), the query, key and value projections
//! are one product, the dense layers and the attention run BF16 kernels chosen for the CPU at
//! run time (`matmul`, `attention`), GELU and softmax are vector code without libm calls (`math`), and the threads
//! are a small rayon pool that splits each product by output columns.

mod attention;
pub mod cpu;
mod math;
mod matmul;
mod weights;

use std::path::Path;

use rayon::prelude::*;
use serde::Deserialize;

use attention::Head;
pub use cpu::Isa;
use matmul::{Activation, Linear};
use weights::{Checkpoint, Norm};

/// Names the encoder's arithmetic (BF16 products, f32 sums, the shared Cephes `exp` in
/// softmax): stored embeddings are valid only for the arithmetic that made them, so caches of
/// them carry this name.
pub const ARITHMETIC: &str = "bf16-cephes-exp";

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("config.json: {0}")]
    Config(String),
    #[error("model.safetensors: {0}")]
    Weights(String),
    #[error("token {id} is outside the vocabulary of {vocabulary}")]
    UnknownToken { id: u32, vocabulary: usize },
    #[error("a text of {tokens} tokens is longer than the model's {limit} positions")]
    TooLong { tokens: usize, limit: usize },
    #[error("this CPU lacks the instructions of {0:?}")]
    Unsupported(Isa),
    #[error("cannot start the encoder's threads: {0}")]
    Threads(String),
}

/// The fields of a Hugging Face BERT `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_activation")]
    pub hidden_act: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_activation() -> String {
    "gelu".to_owned()
}

struct Embeddings {
    words: Vec<f32>,
    positions: Vec<f32>,
    /// Token type 0: every text is a single segment.
    segment: Vec<f32>,
    norm: Norm,
}

struct Layer {
    query_key_value: Linear,
    attention_output: Linear,
    attention_norm: Norm,
    up: Linear,
    down: Linear,
    output_norm: Norm,
}

pub struct BertEncoder {
    config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    isa: Isa,
    threads: rayon::ThreadPool,
}

impl BertEncoder {
    /// Loads `config.json` and `model.safetensors` from `dir`, for `threads` threads (at least
    /// one) and the CPU's best kernels.
    pub fn load(dir: &Path, threads: usize) -> Result<Self, EncoderError> {
        Self::load_with(dir, threads, Isa::detect())
    }

    /// As `load`, with the kernels of a given instruction set, which the CPU must have.
    pub fn load_with(dir: &Path, threads: usize, isa: Isa) -> Result<Self, EncoderError> {
        if isa > Isa::detect() {
            return Err(EncoderError::Unsupported(isa));
        }
        let config = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| EncoderError::Config(e.to_string()))?;
        let config: BertConfig =
            serde_json::from_str(&config).map_err(|e| EncoderError::Config(e.to_string()))?;
        if config.hidden_act != "gelu" {
            return Err(EncoderError::Config(format!(
                "hidden_act {:?}: only gelu is supported",
                config.hidden_act
            )));
        }
        if config.type_vocab_size == 0 {
            return Err(EncoderError::Config(
                "type_vocab_size must be at least 1".to_owned(),
            ));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(EncoderError::Config(
                "hidden_size must be a multiple of num_attention_heads".to_owned(),
            ));
        }
        let bytes = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| EncoderError::Weights(e.to_string()))?;
        let checkpoint = Checkpoint::parse(&bytes)?;
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("encoder-{i}"))
            .build()
            .map_err(|e| EncoderError::Threads(e.to_string()))?;
        Ok(Self {
            embeddings: Self::read_embeddings(&checkpoint, &config)?,
            layers: (0..config.num_hidden_layers)
                .map(|i| Self::read_layer(&checkpoint, &config, i))
                .collect::<Result<_, _>>()?,
            config,
            isa,
            threads,
        })
    }

    fn read_embeddings(
        checkpoint: &Checkpoint,
        config: &BertConfig,
    ) -> Result<Embeddings, EncoderError> {
        let hidden = config.hidden_size;
        let types = checkpoint.tensor(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, hidden],
        )?;
        Ok(Embeddings {
            words: checkpoint.tensor(
                "embeddings.word_embeddings.weight",
                &[config.vocab_size, hidden],
            )?,
            positions: checkpoint.tensor(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, hidden],
            )?,
            segment: types[..hidden].to_vec(),
            norm: checkpoint.norm("embeddings.LayerNorm", hidden, config.layer_norm_eps as f32)?,
        })
    }

    fn read_layer(
        checkpoint: &Checkpoint,
        config: &BertConfig,
        index: usize,
    ) -> Result<Layer, EncoderError> {
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps as f32;
        let name = |part: &str| format!("encoder.layer.{index}.{part}");
        let projections = ["query", "key", "value"].map(|p| name(&format!("attention.self.{p}")));
        Ok(Layer {
            query_key_value: checkpoint.fused_linear(&projections, hidden, hidden)?,
            attention_output: checkpoint.linear(&name("attention.output.dense"), hidden, hidden)?,
            attention_norm: checkpoint.norm(&name("attention.output.LayerNorm"), hidden, eps)?,
            up: checkpoint.linear(
                &name("intermediate.dense"),
                config.intermediate_size,
                hidden,
            )?,
            down: checkpoint.linear(&name("output.dense"), hidden, config.intermediate_size)?,
            output_norm: checkpoint.norm(&name("output.LayerNorm"), hidden, eps)?,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// One unit vector per text (token ids with the special tokens, already truncated): the
    /// mean of the last layer's token states, L2-normalised, as sentence-transformers does.
    pub fn encode(&self, texts: &[&[u32]]) -> Result<Vec<Vec<f32>>, EncoderError> {
        for ids in texts {
            if ids.len() > self.config.max_position_embeddings {
                return Err(EncoderError::TooLong {
                    tokens: ids.len(),
                    limit: self.config.max_position_embeddings,
                });
            }
            if let Some(&id) = ids
                .iter()
                .find(|&&id| id as usize >= self.config.vocab_size)
            {
                return Err(EncoderError::UnknownToken {
                    id,
                    vocabulary: self.config.vocab_size,
                });
            }
        }
        Ok(self.threads.install(|| self.forward(texts)))
    }

    fn forward(&self, texts: &[&[u32]]) -> Vec<Vec<f32>> {
        let hidden = self.config.hidden_size;
        let mut spans = Vec::with_capacity(texts.len());
        let mut start = 0;
        for ids in texts {
            spans.push(start..start + ids.len());
            start += ids.len();
        }
        let rows = start;
        let mut states = self.embed(texts, rows);
        let mut query_key_value = vec![0f32; rows * 3 * hidden];
        let mut context = vec![0f32; rows * hidden];
        let mut projected = vec![0f32; rows * hidden];
        let mut intermediate = vec![0f32; rows * self.config.intermediate_size];
        for layer in &self.layers {
            let isa = self.isa;
            layer
                .query_key_value
                .forward(isa, &states, &mut query_key_value, Activation::Identity);
            self.attend(&query_key_value, &spans, &mut context);
            layer
                .attention_output
                .forward(isa, &context, &mut projected, Activation::Identity);
            layer
                .attention_norm
                .add_and_normalize(isa, &mut states, &projected);
            layer
                .up
                .forward(isa, &states, &mut intermediate, Activation::Gelu);
            layer
                .down
                .forward(isa, &intermediate, &mut projected, Activation::Identity);
            layer
                .output_norm
                .add_and_normalize(isa, &mut states, &projected);
        }
        spans
            .iter()
            .map(|span| mean_unit_vector(&states[span.start * hidden..span.end * hidden], hidden))
            .collect()
    }

    /// Word + position + segment embeddings, normalised.
    fn embed(&self, texts: &[&[u32]], rows: usize) -> Vec<f32> {
        let hidden = self.config.hidden_size;
        let table = &self.embeddings;
        let mut states = Vec::with_capacity(rows * hidden);
        for ids in texts {
            for (position, &id) in ids.iter().enumerate() {
                let word = &table.words[id as usize * hidden..][..hidden];
                let place = &table.positions[position * hidden..][..hidden];
                states.extend(
                    word.iter()
                        .zip(place)
                        .zip(&table.segment)
                        .map(|((w, p), s)| w + p + s),
                );
            }
        }
        table.norm.normalize(self.isa, &mut states);
        states
    }

    /// Self-attention of every head of every text, heads in parallel.
    fn attend(
        &self,
        query_key_value: &[f32],
        spans: &[std::ops::Range<usize>],
        context: &mut [f32],
    ) {
        let hidden = self.config.hidden_size;
        let width = hidden / self.config.num_attention_heads;
        let heads: Vec<Head> = spans
            .iter()
            .flat_map(|rows| {
                (0..self.config.num_attention_heads).map(move |h| Head {
                    rows: rows.clone(),
                    column: h * width,
                    width,
                    hidden,
                })
            })
            .collect();
        let results: Vec<Vec<f32>> = heads
            .par_iter()
            .map(|head| attention::attend(self.isa, query_key_value, head))
            .collect();
        for (head, values) in heads.iter().zip(results) {
            for (i, row) in head.rows.clone().zip(values.chunks_exact(width)) {
                context[i * hidden + head.column..][..width].copy_from_slice(row);
            }
        }
    }
}

fn mean_unit_vector(states: &[f32], hidden: usize) -> Vec<f32> {
    let mut mean = vec![0f32; hidden];
    for row in states.chunks_exact(hidden) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    mean.iter_mut().for_each(|v| *v /= norm);
    mean
}
