//! Switchboard's request classifier: the facts about a request that the policy decides on. So
//! far: private data ([`pii`]) and sentence embeddings ([`embedder`]); the complexity and domain
//! heads and language detection come next.

pub mod embedder;
pub mod pii;
