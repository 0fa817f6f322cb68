//! Switchboard's local engine: small language models in GGUF files, answered on this machine's
//! CPU, streamed token by token, cancellable, several requests decoded together.
//!
//! [`engine`] owns the queue and the generation thread, which batches running requests step by
//! step (continuous batching); [`model`] runs the transformer over [`model::Sequence`]s: for
//! llama files [`llama`], our own forward pass on [`quant`]'s quantized products (SIMD kernels
//! picked at run time) with `attention` over each sequence's KV cache, its loops shared by a
//! `team` of threads, finished sequences kept in a `prefix_cache`; for the others candle's
//! quantized models, one sequence at a time. [`tokenizer`] and [`chat_template`] come from the
//! GGUF file's metadata; [`sampling`] picks tokens; [`text_stream`] turns tokens into sendable
//! text and applies stop sequences.

mod attention;
pub mod chat_template;
pub mod engine;
pub mod llama;
mod metadata;
pub mod model;
mod prefix_cache;
pub mod quant;
pub mod sampling;
mod team;
pub mod text_stream;
pub mod tokenizer;

pub use chat_template::Turn;
pub use engine::{
    Engine, EngineConfig, Event, FinishReason, Generation, GenerationRequest, LoadError, ModelInfo,
    SubmitError, TokenLogprob,
};
pub use model::Settings as ModelSettings;
pub use sampling::SamplingParams;
