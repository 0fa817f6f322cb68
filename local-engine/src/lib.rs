//! Switchboard's local engine: small language models in GGUF files, answered on this machine's
//! CPU, streamed token by token, cancellable.
//!
//! [`engine`] owns the queue and the generation thread; [`model`] runs the transformer (candle's
//! quantized models); [`tokenizer`] and [`chat_template`] come from the GGUF file's metadata;
//! [`sampling`] picks tokens; [`text_stream`] turns tokens into sendable text and applies stop
//! sequences.

pub mod chat_template;
pub mod engine;
mod metadata;
pub mod model;
pub mod sampling;
pub mod text_stream;
pub mod tokenizer;

pub use chat_template::Turn;
pub use engine::{
    Engine, EngineConfig, Event, FinishReason, Generation, GenerationRequest, LoadError, ModelInfo,
    SubmitError, TokenLogprob,
};
pub use sampling::SamplingParams;
