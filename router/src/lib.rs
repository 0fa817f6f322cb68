//! Switchboard's request classifier: the facts about a conversation that the policy decides on.
//!
//! - [`classifier`]: a conversation in, [`Scores`](classifier::Scores) out;
//! - what it reads: [`conversation`] (the routing text), [`features`] (cheap text features),
//!   [`embedder`] (all-MiniLM-L6-v2 on our own BERT forward pass, [`encoder`]; micro-batched by
//!   [`batcher`], repeats served by [`recent`]), [`pii`], [`language`];
//! - what it decides with: [`heads`] (trained complexity and domain heads, over the embedding
//!   and the words, [`lexical`]; the chat messages' vote on the domain, [`neighbours`]) and
//!   [`domain`] (custom domains by example);
//! - how the heads are made and judged: [`dataset`], [`enterprise`] (the development set written
//!   like employees' chat), [`labelling`] (labels for your own local model), [`fit`], [`topics`] (the MMLU topic regions of the complexity prior),
//!   [`training`], [`evaluation`], [`pii_benchmark`].

pub mod batcher;
pub mod classifier;
pub mod conversation;
pub mod dataset;
pub mod domain;
pub mod embedder;
pub mod encoder;
pub mod enterprise;
pub mod evaluation;
pub mod features;
pub mod fit;
pub mod heads;
pub mod labelling;
pub mod language;
pub mod lexical;
pub mod neighbours;
pub mod pii;
pub mod pii_benchmark;
pub mod recent;
pub mod topics;
pub mod training;
