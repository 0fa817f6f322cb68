//! The response cache: a repeated question costs nothing, and no wrong answer is served from
//! it. Two tiers, each within one tenant's entries (and one user's, where the policy says):
//! the exact tier ([`key`]: the whole request's SHA-256) and the semantic tier (the last user
//! message's embedding, compared only within the same context, at a high cosine, and only when
//! the two questions' words agree: `switchboard_router::same_question`). Only greedy text
//! answers are kept ([`key::reusable`]). Entries live in [`store`].

pub mod key;
pub mod store;
