//! Switchboard's request classifier: the facts about a conversation that the policy decides on.
//!
//! - [`classifier`]: a conversation in, [`Scores`](classifier::Scores) out;
//! - what it reads: [`conversation`] (the routing text), [`features`] (cheap text features),
//!   [`embedder`] (all-MiniLM-L6-v2 on our own BERT forward pass, [`encoder`]; micro-batched by
//!   [`batcher`], repeats served by [`recent`]), [`pii`], [`language`];
//! - what it decides with: [`heads`] (trained complexity and domain heads, over the embedding
//!   and the words, [`lexical`]; the chat messages' vote on the domain, [`neighbours`]) and
//!   [`domain`] (custom domains by example);
//! - for the response cache: [`same_question`] (whether two questions' words let them share
//!   an answer).
//!
//! How the heads are made and judged is the `switchboard-router-train` crate's job.

pub mod batcher;
pub mod classifier;
pub mod conversation;
pub mod domain;
pub mod embedder;
pub mod encoder;
pub mod features;
pub mod heads;
pub mod language;
pub mod lexical;
pub mod neighbours;
pub mod pii;
pub mod recent;
pub mod same_question;
