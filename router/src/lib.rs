//! Switchboard's request classifier: the facts about a request that the policy decides on. So
//! far: private data ([`pii`]), the language of a message ([`language`]) and sentence embeddings
//! ([`embedder`], micro-batched by [`batcher`]); the complexity and domain heads come next.

pub mod batcher;
pub mod embedder;
pub mod language;
pub mod pii;
