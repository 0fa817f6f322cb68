//! The transformer itself, one variant per architecture: llama files whose weights are Q4_1 or
//! Q8_0 run on our own forward pass ([`crate::llama`]: several sequences per step, finished
//! ones' prefixes kept in a prefix cache), everything else on candle's quantized model code
//! (one sequence at a time). Everything else talks to it through [`Sequence`]s and
//! [`Model::step`].

use std::fs::File;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::models::{
    quantized_gemma3, quantized_llama, quantized_phi3, quantized_qwen2, quantized_qwen3,
};

use crate::llama::{Input, KvCache};
use crate::metadata::Metadata;
use crate::prefix_cache::PrefixCache;

pub const SUPPORTED: &str = "llama, qwen2, qwen3, phi3, gemma3";

enum Weights {
    Own(crate::llama::Llama),
    Candle(CandleWeights),
}

/// candle's models keep their one sequence's keys and values inside the weights.
enum CandleWeights {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
    Gemma3(quantized_gemma3::ModelWeights),
}

/// How many sequences run together, and how much memory keeps finished ones' prefixes.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Sequences decoded together on our llama path (candle's models take one).
    pub max_batch: usize,
    /// The bound on the prefix cache's keys and values (0: no cache).
    pub prefix_cache_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_batch: 8,
            prefix_cache_bytes: 256 << 20,
        }
    }
}

/// A loaded model. Sequences are [`Model::open`]ed, fed with [`Model::step`] (several at a
/// time on our llama path) and [`Model::close`]d.
pub struct Model {
    weights: Weights,
    settings: Settings,
    prefixes: PrefixCache<KvCache>,
    /// Which sequence candle's weights hold the state of (they hold one).
    candle_sequence: Option<u64>,
    next_id: u64,
    device: Device,
    pub architecture: String,
    /// The longest sequence (prompt and answer) the model can take.
    pub context_length: usize,
}

/// One sequence: the tokens run so far and, on our llama path, their keys and values.
pub struct Sequence {
    id: u64,
    tokens: Vec<u32>,
    /// `None` on candle's models, whose one sequence lives inside the weights.
    cache: Option<KvCache>,
}

impl Sequence {
    /// The tokens run so far, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

/// One sequence's part of a [`Model::step`].
pub struct Feed<'a> {
    pub sequence: &'a mut Sequence,
    /// The tokens that follow the sequence so far.
    pub tokens: &'a [u32],
    /// Whether the logits after the last of `tokens` are wanted.
    pub logits: bool,
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
    #[error("this model runs one sequence at a time, and that is not it")]
    NotTheSequence,
}

impl Model {
    /// Loads the weights described by `content` from `file`.
    pub fn load(content: Content, file: &mut File, settings: Settings) -> Result<Self, ModelError> {
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
                Weights::Candle(CandleWeights::Llama(
                    quantized_llama::ModelWeights::from_gguf(content, file, &device)?,
                )),
                // candle's rotary tables for llama stop here.
                quantized_llama::MAX_SEQ_LEN,
            ),
            ("qwen2", None) => (
                Weights::Candle(CandleWeights::Qwen2(
                    quantized_qwen2::ModelWeights::from_gguf(content, file, &device)?,
                )),
                usize::MAX,
            ),
            ("qwen3", None) => (
                Weights::Candle(CandleWeights::Qwen3(
                    quantized_qwen3::ModelWeights::from_gguf(content, file, &device)?,
                )),
                usize::MAX,
            ),
            ("phi3", None) => (
                Weights::Candle(CandleWeights::Phi3(
                    quantized_phi3::ModelWeights::from_gguf(false, content, file, &device)?,
                )),
                usize::MAX,
            ),
            ("gemma3", None) => (
                Weights::Candle(CandleWeights::Gemma3(
                    quantized_gemma3::ModelWeights::from_gguf(content, file, &device)?,
                )),
                quantized_gemma3::MAX_SEQ_LEN,
            ),
            (other, None) => return Err(ModelError::UnsupportedArchitecture(other.to_owned())),
        };
        let context_length = declared.min(table_limit);
        Ok(Self {
            weights,
            settings,
            prefixes: PrefixCache::new(settings.prefix_cache_bytes),
            candle_sequence: None,
            next_id: 0,
            device,
            architecture,
            context_length,
        })
    }

    /// How many sequences [`Model::step`] takes at once.
    pub fn max_batch(&self) -> usize {
        match self.weights {
            Weights::Own(_) => self.settings.max_batch.max(1),
            Weights::Candle(_) => 1,
        }
    }

    /// Whether a prompt may be fed over several steps (candle's models mask a prompt as a whole
    /// and must take it in one).
    pub fn takes_prompt_chunks(&self) -> bool {
        matches!(self.weights, Weights::Own(_))
    }

    /// Memory held by the prefix cache.
    pub fn prefix_cache_bytes(&self) -> usize {
        self.prefixes.bytes()
    }

    /// A new sequence for `prompt`, holding the longest prefix of it that the prefix cache has
    /// (never all of it: the last prompt token must run for its logits), and how many tokens
    /// that is. The caller feeds the rest. On candle's models this ends the sequence before.
    pub fn open(&mut self, prompt: &[u32]) -> (Sequence, usize) {
        self.next_id += 1;
        let id = self.next_id;
        let (tokens, cache) = match &mut self.weights {
            Weights::Own(llama) => {
                let limit = prompt.len().saturating_sub(1);
                match self.prefixes.lookup(prompt, limit) {
                    Some((shared, cache)) => (prompt[..shared].to_vec(), Some(cache)),
                    None => (Vec::new(), Some(llama.new_cache())),
                }
            }
            Weights::Candle(weights) => {
                weights.clear();
                self.candle_sequence = Some(id);
                (Vec::new(), None)
            }
        };
        let cached = tokens.len();
        (Sequence { id, tokens, cache }, cached)
    }

    /// Runs each feed's tokens after its sequence so far, and returns the logits of each feed
    /// that wants them.
    pub fn step(&mut self, feeds: &mut [Feed]) -> Result<Vec<Option<Vec<f32>>>, ModelError> {
        let weights = match &mut self.weights {
            Weights::Candle(weights) => weights,
            Weights::Own(llama) => {
                let mut inputs: Vec<Input> = feeds
                    .iter_mut()
                    .map(|feed| Input {
                        cache: feed
                            .sequence
                            .cache
                            .as_mut()
                            .expect("our sequences have a cache"),
                        tokens: feed.tokens,
                        logits: feed.logits,
                    })
                    .collect();
                let logits = llama.forward(&mut inputs);
                for feed in feeds.iter_mut() {
                    feed.sequence.tokens.extend_from_slice(feed.tokens);
                }
                return Ok(logits);
            }
        };
        let [feed] = feeds else {
            return Err(ModelError::NotTheSequence);
        };
        if self.candle_sequence != Some(feed.sequence.id) {
            return Err(ModelError::NotTheSequence);
        }
        let position = feed.sequence.tokens.len();
        let logits = weights.forward(feed.tokens, position, &self.device)?;
        feed.sequence.tokens.extend_from_slice(feed.tokens);
        Ok(vec![feed.logits.then_some(logits)])
    }

    /// Runs `tokens` after the sequence so far and returns the logits after the last one.
    pub fn feed(
        &mut self,
        sequence: &mut Sequence,
        tokens: &[u32],
    ) -> Result<Vec<f32>, ModelError> {
        let mut feeds = [Feed {
            sequence,
            tokens,
            logits: true,
        }];
        let [logits] = <[_; 1]>::try_from(self.step(&mut feeds)?).expect("one feed, one answer");
        Ok(logits.expect("logits were asked for"))
    }

    /// Ends a sequence; on our llama path its keys and values go to the prefix cache.
    pub fn close(&mut self, sequence: Sequence) {
        match sequence.cache {
            Some(cache) if cache.len() == sequence.tokens.len() => {
                self.prefixes.insert(sequence.tokens, cache);
            }
            Some(_) => {} // a failed step left it unfinished
            None => {
                if self.candle_sequence == Some(sequence.id) {
                    self.candle_sequence = None;
                }
            }
        }
    }

    /// Empties the prefix cache.
    pub fn clear_prefix_cache(&mut self) {
        self.prefixes.clear();
    }
}

impl CandleWeights {
    fn clear(&mut self) {
        match self {
            CandleWeights::Llama(w) => w.clear_kv_cache(),
            CandleWeights::Qwen2(w) => w.clear_kv_cache(),
            CandleWeights::Qwen3(w) => w.clear_kv_cache(),
            // These drop their cache when a sequence starts at position 0.
            CandleWeights::Phi3(_) | CandleWeights::Gemma3(_) => {}
        }
    }

    /// Runs `tokens` at positions `position..` and returns the logits of the last one.
    fn forward(
        &mut self,
        tokens: &[u32],
        position: usize,
        device: &Device,
    ) -> Result<Vec<f32>, ModelError> {
        let input = || Tensor::new(tokens, device)?.unsqueeze(0);
        let logits = match self {
            CandleWeights::Llama(w) => w.forward(&input()?, position)?,
            CandleWeights::Qwen2(w) => w.forward(&input()?, position)?,
            CandleWeights::Qwen3(w) => w.forward(&input()?, position)?,
            CandleWeights::Phi3(w) => w.forward(&input()?, position)?,
            CandleWeights::Gemma3(w) => w.forward(&input()?, position)?,
        };
        // [1, vocab] from most architectures, [1, tokens, vocab] from some: keep the last row.
        let mut logits = logits.squeeze(0)?;
        if logits.rank() == 2 {
            logits = logits.get(logits.dim(0)? - 1)?;
        }
        Ok(logits.to_dtype(candle_core::DType::F32)?.to_vec1()?)
    }
}
