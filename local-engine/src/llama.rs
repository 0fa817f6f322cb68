//! Llama-architecture models (SmolLM2, TinyLlama, Mistral-style files) run by our own forward
//! pass on the quantized products of [`crate::quant`], where candle's CPU path is slow (a
//! scalar Q4_1 dot product, prompts processed row by row, a KV cache grown by concatenation).
//! Weights stay as the file has them (Q4_1 or Q8_0 blocks; norms in f32); activations are
//! quantized to 8 bits per block before each product, as llama.cpp does.
//!
//! The weights are shared and immutable; each sequence brings its own [`KvCache`], so one
//! [`Llama::forward`] runs several sequences together (their rows share every pass over the
//! weights: continuous batching). A file with other weight formats, or with rope frequency
//! factors, is left to candle (see [`crate::model`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Content;

pub use crate::attention::KvCache;
use crate::attention::{self, Context, Heads};
use crate::metadata::{Metadata, MetadataError};
use crate::quant::{self, Format, Isa, Q8Vector, QuantMatrix};
use crate::team::{self, part, split_rows};
use switchboard_vector_math::exp;

#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("tensor '{0}' is missing")]
    Missing(String),
    #[error("tensor '{name}' has shape {shape:?}, expected {expected:?}")]
    Shape {
        name: String,
        shape: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor '{name}' lies beyond the end of the file")]
    Truncated { name: String },
    #[error("tensor '{name}': {source}")]
    Quant {
        name: String,
        source: quant::QuantError,
    },
    #[error("cannot read tensor '{name}': {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
    #[error("the model's dimensions do not fit together: {0}")]
    Dimensions(String),
}

struct Config {
    dim: usize,
    heads: Heads,
    rope_dim: usize,
    eps: f32,
    context_length: usize,
}

struct Layer {
    attention_norm: Vec<f32>,
    query: QuantMatrix,
    key: QuantMatrix,
    value: QuantMatrix,
    attention_output: QuantMatrix,
    ffn_norm: Vec<f32>,
    gate: QuantMatrix,
    up: QuantMatrix,
    down: QuantMatrix,
}

/// One sequence's part of a [`Llama::forward`] batch.
pub struct Input<'a> {
    pub cache: &'a mut KvCache,
    /// The tokens after the cached positions.
    pub tokens: &'a [u32],
    /// Whether the logits after the last of `tokens` are wanted (not for a prompt's first
    /// chunks).
    pub logits: bool,
}

pub struct Llama {
    isa: Isa,
    config: Config,
    embeddings: QuantMatrix,
    /// `None`: the output layer is the embeddings (tied weights).
    output: Option<QuantMatrix>,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    inverse_frequencies: Vec<f32>,
}

/// Reads the tensors of a GGUF file, checking each against the file's size before reading it.
struct Tensors<'a> {
    content: &'a Content,
    file: &'a mut File,
    file_len: u64,
}

/// A tensor's type and dimensions (rows first), or `None` when it is not in the file.
type Found = Option<(GgmlDType, Vec<usize>)>;

impl Tensors<'_> {
    fn describe(&self, name: &str) -> Found {
        let info = self.content.tensor_infos.get(name)?;
        Some((info.ggml_dtype, info.shape.dims().to_vec()))
    }

    fn bytes(&mut self, name: &str) -> Result<Vec<u8>, LlamaError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| LlamaError::Missing(name.to_owned()))?;
        let dtype = info.ggml_dtype;
        let size = (info.shape.elem_count() / dtype.block_size() * dtype.type_size()) as u64;
        let start = self.content.tensor_data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(size));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(LlamaError::Truncated {
                name: name.to_owned(),
            });
        };
        if end > self.file_len {
            return Err(LlamaError::Truncated {
                name: name.to_owned(),
            });
        }
        let io = |source| LlamaError::Io {
            name: name.to_owned(),
            source,
        };
        let mut data = vec![0; size as usize];
        self.file.seek(SeekFrom::Start(start)).map_err(io)?;
        self.file.read_exact(&mut data).map_err(io)?;
        Ok(data)
    }

    /// The type of a tensor that must be in the file with these dimensions.
    fn dtype(&self, name: &str, expected: &[usize]) -> Result<GgmlDType, LlamaError> {
        let (dtype, dims) = self
            .describe(name)
            .ok_or_else(|| LlamaError::Missing(name.to_owned()))?;
        if dims != expected {
            return Err(LlamaError::Shape {
                name: name.to_owned(),
                shape: dims,
                expected: expected.to_vec(),
            });
        }
        Ok(dtype)
    }

    /// A `rows × columns` weight matrix, or `None` if its format is not one the kernels take.
    fn matrix(
        &mut self,
        name: &str,
        rows: usize,
        columns: usize,
    ) -> Result<Option<QuantMatrix>, LlamaError> {
        let format = match self.dtype(name, &[rows, columns])? {
            GgmlDType::Q4_1 => Format::Q4_1,
            GgmlDType::Q8_0 => Format::Q8_0,
            _ => return Ok(None),
        };
        let data = self.bytes(name)?;
        QuantMatrix::new(format, rows, columns, data)
            .map(Some)
            .map_err(|source| LlamaError::Quant {
                name: name.to_owned(),
                source,
            })
    }

    /// An f32 vector (a norm's weights), or `None` if it is stored otherwise.
    fn vector(&mut self, name: &str, len: usize) -> Result<Option<Vec<f32>>, LlamaError> {
        if self.dtype(name, &[len])? != GgmlDType::F32 {
            return Ok(None);
        }
        let bytes = self.bytes(name)?;
        Ok(Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ))
    }
}

/// Returns `None` from the enclosing function when a tensor is in a format we leave to candle.
macro_rules! or_candle {
    ($found:expr) => {
        match $found? {
            Some(value) => value,
            None => return Ok(None),
        }
    };
}

impl Llama {
    /// Loads a llama-architecture file, or returns `None` when its weights are in formats the
    /// kernels do not take (candle runs those).
    pub fn load(content: &Content, file: &mut File) -> Result<Option<Self>, LlamaError> {
        let metadata = Metadata(content);
        let number = |key: &str| -> Result<usize, LlamaError> {
            metadata
                .optional_u32(key)
                .map(|n| n as usize)
                .ok_or_else(|| MetadataError::Missing(key.to_owned()).into())
        };
        let dim = number("llama.embedding_length")?;
        let heads = number("llama.attention.head_count")?;
        let kv_heads = metadata
            .optional_u32("llama.attention.head_count_kv")
            .map_or(heads, |n| n as usize);
        let layers = number("llama.block_count")?;
        let hidden = number("llama.feed_forward_length")?;
        if heads == 0 || kv_heads == 0 || dim % heads != 0 || heads % kv_heads != 0 {
            return Err(LlamaError::Dimensions(format!(
                "{dim} wide, {heads} heads, {kv_heads} key/value heads"
            )));
        }
        let head_dim = dim / heads;
        let rope_dim = metadata
            .optional_u32("llama.rope.dimension_count")
            .map_or(head_dim, |n| n as usize);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(LlamaError::Dimensions(format!(
                "rotary dimensions {rope_dim} for heads of {head_dim}"
            )));
        }
        if content.tensor_infos.contains_key("rope_freqs.weight") {
            return Ok(None); // scaled rotary frequencies (Llama 3.1 and later): candle's
        }
        let eps = metadata
            .optional_f32("llama.attention.layer_norm_rms_epsilon")
            .unwrap_or(1e-5);
        let rope_base = metadata
            .optional_f32("llama.rope.freq_base")
            .unwrap_or(10_000.0);
        let context_length = metadata
            .optional_u32("llama.context_length")
            .map_or(2048, |n| n as usize);
        let config = Config {
            dim,
            heads: Heads {
                heads,
                kv_heads,
                head_dim,
            },
            rope_dim,
            eps,
            context_length,
        };

        let file_len = file
            .metadata()
            .map_err(|source| LlamaError::Io {
                name: "the file".to_owned(),
                source,
            })?
            .len();
        let mut tensors = Tensors {
            content,
            file,
            file_len,
        };
        let vocab = match tensors.describe("token_embd.weight") {
            Some((_, dims)) if dims.len() == 2 => dims[0],
            Some((_, dims)) => {
                return Err(LlamaError::Shape {
                    name: "token_embd.weight".to_owned(),
                    shape: dims,
                    expected: vec![0, dim],
                });
            }
            None => return Err(LlamaError::Missing("token_embd.weight".to_owned())),
        };
        let embeddings = or_candle!(tensors.matrix("token_embd.weight", vocab, dim));
        let output = match tensors.describe("output.weight") {
            Some(_) => Some(or_candle!(tensors.matrix("output.weight", vocab, dim))),
            None => None,
        };
        let output_norm = or_candle!(tensors.vector("output_norm.weight", dim));
        let kv_dim = config.heads.kv_dim();
        let mut blocks = Vec::with_capacity(layers);
        for l in 0..layers {
            let name = |part: &str| format!("blk.{l}.{part}.weight");
            blocks.push(Layer {
                attention_norm: or_candle!(tensors.vector(&name("attn_norm"), dim)),
                query: or_candle!(tensors.matrix(&name("attn_q"), dim, dim)),
                key: or_candle!(tensors.matrix(&name("attn_k"), kv_dim, dim)),
                value: or_candle!(tensors.matrix(&name("attn_v"), kv_dim, dim)),
                attention_output: or_candle!(tensors.matrix(&name("attn_output"), dim, dim)),
                ffn_norm: or_candle!(tensors.vector(&name("ffn_norm"), dim)),
                gate: or_candle!(tensors.matrix(&name("ffn_gate"), hidden, dim)),
                up: or_candle!(tensors.matrix(&name("ffn_up"), hidden, dim)),
                down: or_candle!(tensors.matrix(&name("ffn_down"), dim, hidden)),
            });
        }
        let inverse_frequencies = (0..rope_dim / 2)
            .map(|i| rope_base.powf(-2.0 * i as f32 / rope_dim as f32))
            .collect();
        Ok(Some(Self {
            isa: Isa::detect(),
            config,
            embeddings,
            output,
            output_norm,
            layers: blocks,
            inverse_frequencies,
        }))
    }

    /// The longest sequence the file says the model was trained for.
    pub fn context_length(&self) -> usize {
        self.config.context_length
    }

    /// An empty cache for a new sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len(), self.config.heads.kv_dim())
    }

    /// The sine and cosine of each rotary pair's angle at `position`, shared by every query
    /// and key head of that position.
    fn rotation(&self, position: usize) -> Vec<(f32, f32)> {
        self.inverse_frequencies
            .iter()
            .map(|&frequency| (position as f32 * frequency).sin_cos())
            .collect()
    }

    /// Runs each input's tokens after its cached positions, all inputs' rows together through
    /// each weight matrix, and returns the logits of each input that wants them.
    pub fn forward(&self, inputs: &mut [Input]) -> Vec<Option<Vec<f32>>> {
        let c = &self.config;
        let (dim, kv_dim) = (c.dim, c.heads.kv_dim());
        let isa = self.isa;
        // Each row's sequence and position; a sequence's rows are consecutive.
        let mut rows = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            assert!(!input.tokens.is_empty(), "at least one token per sequence");
            let start = input.cache.len();
            rows.extend((start..start + input.tokens.len()).map(|position| (i, position)));
        }
        let count = rows.len();
        // Each sequence's first row.
        let first_rows: Vec<usize> = inputs
            .iter()
            .scan(0, |first, input| {
                let this = *first;
                *first += input.tokens.len();
                Some(this)
            })
            .collect();
        // The rotary angles of each row's position, the same in every layer.
        let rotations: Vec<Vec<(f32, f32)>> = rows.iter().map(|&(_, p)| self.rotation(p)).collect();

        let mut x = vec![0.0f32; count * dim];
        let tokens = inputs.iter().flat_map(|input| input.tokens);
        for (row, &token) in x.chunks_exact_mut(dim).zip(tokens) {
            let token = (token as usize).min(self.embeddings.rows() - 1);
            self.embeddings.dequantize_row(token, row);
        }
        let mut normed = vec![0.0f32; count * dim];
        let mut quantized = vec![Q8Vector::default(); count];
        let mut queries = vec![0.0f32; count * dim];
        let mut keys = vec![0.0f32; count * kv_dim];
        let mut values = vec![0.0f32; count * kv_dim];
        let mut attended = vec![0.0f32; count * dim];
        let mut projected = vec![0.0f32; count * dim];
        let hidden = self.layers.first().map_or(0, |l| l.gate.rows());
        let mut gate = vec![0.0f32; count * hidden];
        let mut up = vec![0.0f32; count * hidden];
        let mut quantized_hidden = vec![Q8Vector::default(); count];

        for (l, layer) in self.layers.iter().enumerate() {
            norm_and_quantize(
                isa,
                &x,
                &layer.attention_norm,
                c.eps,
                &mut normed,
                &mut quantized,
            );
            products(
                isa,
                &mut [
                    (&layer.query, &mut queries),
                    (&layer.key, &mut keys),
                    (&layer.value, &mut values),
                ],
                &quantized,
            );
            let (query_rows, key_rows) =
                (split_rows(&mut queries, dim), split_rows(&mut keys, kv_dim));
            team::for_each(count, |r| {
                rotate(&mut part(&query_rows[r]), c, &rotations[r]);
                rotate(&mut part(&key_rows[r]), c, &rotations[r]);
            });
            // Each sequence's keys and values into its cache, the sequences in parallel (a
            // position's keys land on as many cache lines as they have channels).
            let caches = split_rows(inputs, 1);
            team::for_each(caches.len(), |i| {
                let input = &mut part(&caches[i])[0];
                let rows = first_rows[i]..first_rows[i] + input.tokens.len();
                let (range, start) = (rows.start * kv_dim..rows.end * kv_dim, input.cache.len());
                input
                    .cache
                    .store(l, start, &keys[range.clone()], &values[range]);
            });
            let contexts: Vec<Context> = rows
                .iter()
                .map(|&(i, position)| inputs[i].cache.context(l, position + 1))
                .collect();
            attention::attend(isa, c.heads, &queries, &contexts, &mut attended);
            quantize_rows(isa, &attended, dim, &mut quantized);
            product(isa, &layer.attention_output, &quantized, &mut projected);
            add(&mut x, &projected);

            norm_and_quantize(isa, &x, &layer.ffn_norm, c.eps, &mut normed, &mut quantized);
            products(
                isa,
                &mut [(&layer.gate, &mut gate), (&layer.up, &mut up)],
                &quantized,
            );
            let (gate_rows, hidden_rows) = (
                split_rows(&mut gate, hidden),
                split_rows(&mut quantized_hidden, 1),
            );
            team::for_each(count, |r| {
                vectorized(isa, || {
                    let mut gate = part(&gate_rows[r]);
                    for (g, u) in gate.iter_mut().zip(&up[r * hidden..]) {
                        *g = *g / (1.0 + exp(-*g)) * u;
                    }
                    part(&hidden_rows[r])[0].quantize_from(&gate);
                })
            });
            product(isa, &layer.down, &quantized_hidden, &mut projected);
            add(&mut x, &projected);
        }

        // The logits of each wanted sequence's last row, every such row in one product.
        let mut last_rows = Vec::new();
        for (input, first) in inputs.iter_mut().zip(&first_rows) {
            input.cache.extend(input.tokens.len());
            if input.logits {
                last_rows.push(first + input.tokens.len() - 1);
            }
        }
        let mut normed_last = vec![0.0f32; dim];
        let wanted: Vec<Q8Vector> = last_rows
            .iter()
            .map(|&r| {
                rms_norm(
                    &x[r * dim..][..dim],
                    &self.output_norm,
                    c.eps,
                    &mut normed_last,
                );
                Q8Vector::quantize(&normed_last)
            })
            .collect();
        let output = self.output.as_ref().unwrap_or(&self.embeddings);
        let vocab = output.rows();
        let mut logits = vec![0.0f32; wanted.len() * vocab];
        if !wanted.is_empty() {
            product(isa, output, &wanted, &mut logits);
        }
        let mut logits = logits.chunks_exact(vocab.max(1));
        inputs
            .iter()
            .map(|input| {
                input
                    .logits
                    .then(|| logits.next().map(<[f32]>::to_vec).unwrap_or_default())
            })
            .collect()
    }
}

/// `out = matrix · x` for each quantized row `x`.
fn product(isa: Isa, matrix: &QuantMatrix, xs: &[Q8Vector], out: &mut [f32]) {
    products(isa, &mut [(matrix, out)], xs);
}

/// Several matrices times the same quantized rows, in one parallel pass.
fn products(isa: Isa, outputs: &mut [(&QuantMatrix, &mut [f32])], xs: &[Q8Vector]) {
    match xs {
        [x] => quant::matvecs(isa, outputs, x),
        _ => quant::matmuls(isa, outputs, xs),
    }
}

/// Each row of `values` quantized, rows in parallel.
fn quantize_rows(isa: Isa, values: &[f32], width: usize, out: &mut [Q8Vector]) {
    let out = split_rows(out, 1);
    team::for_each(out.len(), |r| {
        vectorized(isa, || {
            part(&out[r])[0].quantize_from(&values[r * width..][..width]);
        })
    });
}

/// Each row of `x` normalised into `normed` and quantized, rows in parallel.
fn norm_and_quantize(
    isa: Isa,
    x: &[f32],
    weight: &[f32],
    eps: f32,
    normed: &mut [f32],
    quantized: &mut [Q8Vector],
) {
    let width = weight.len();
    let (normed, quantized) = (split_rows(normed, width), split_rows(quantized, 1));
    team::for_each(quantized.len(), |r| {
        vectorized(isa, || {
            let mut normed = part(&normed[r]);
            rms_norm(&x[r * width..][..width], weight, eps, &mut normed);
            part(&quantized[r])[0].quantize_from(&normed);
        })
    });
}

/// Runs a row's work (a norm, SiLU, quantizing) compiled for AVX2 where this CPU has it: its
/// loops then run eight lanes wide instead of the baseline's four. Nothing is fused or
/// reordered by it, so the results are the same.
#[inline(always)]
fn vectorized(isa: Isa, work: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn with_avx2(work: impl FnOnce()) {
            work();
        }
        // SAFETY: `Isa::detect` found AVX2, FMA and F16C on this CPU.
        unsafe { with_avx2(work) };
        return;
    }
    let _ = isa;
    work();
}

fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    // As llama.cpp: the squares summed in f64, then one scale.
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

fn add(x: &mut [f32], delta: &[f32]) {
    for (a, b) in x.iter_mut().zip(delta) {
        *a += b;
    }
}

/// Rotary position embedding of every head in `heads` by `angles` (the sines and cosines
/// of [`Llama::rotation`]), GGUF's llama convention: adjacent pairs `(2i, 2i + 1)` rotate
/// together.
fn rotate(heads: &mut [f32], config: &Config, angles: &[(f32, f32)]) {
    for head in heads.chunks_exact_mut(config.heads.head_dim) {
        for (pair, &(sin, cos)) in head[..config.rope_dim].chunks_exact_mut(2).zip(angles) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos - b * sin;
            pair[1] = a * sin + b * cos;
        }
    }
}
