//! Switchboard's routing policy, with no I/O: the gateway reads the file and gathers the facts,
//! this crate validates the rules and decides.
//!
//! - [`spec`]: the policy's sections as written in the file (serde);
//! - [`routing`]: the validated routing rules: tiers of models by complexity band, domain rules,
//!   and which models of a remote tier can answer ([`Routing::remote_models`]);
//! - [`tenant`]: a tenant's budgets, escalation cap and what it has spent;
//! - [`decision`]: the decision itself, [`decide`]: its [`Destination`], its reason, and what
//!   follows a first answer (the local fallback, the confidence cascade, [`Afterwards`]);
//! - [`money`]: exact amounts and prices;
//! - [`problems`]: what is wrong with a file, and where (line and column).

pub mod decision;
pub mod money;
pub mod problems;
pub mod routing;
pub mod spec;
pub mod tenant;

pub use decision::{Afterwards, Cascade, Decision, Destination, Reason, Refusal, decide};
pub use money::{Price, Usd};
pub use routing::{ModelFacts, NoRemoteModel, Placement, Routing, TierId};
pub use tenant::TenantRules;
