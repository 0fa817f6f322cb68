//! Switchboard's request classifier: the facts about a request that the policy decides on. So
//! far: private data ([`pii`]) and sentence embeddings ([`embedder`], micro-batched by
//! [`batcher`]); the complexity and domain heads and language detection come next.

pub mod batcher;
pub mod embedder;
pub mod pii;
