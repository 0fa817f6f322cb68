//! Switchboard's gateway: an OpenAI-compatible front door for chat traffic.
//!
//! A request's way through this crate:
//! [`connections`] (accepting clients, header and idle timeouts) → [`endpoints`] (HTTP routes;
//! what every handler takes, typed: the request id, the admitted tenant ([`auth`], [`keys`],
//! [`rate_limit`]), the JSON body ([`api`])) → [`pipeline`]: classify (what the router finds:
//! scores, private data, language) → plan (the facts the policy decides on, the decision, the
//! models that carry it out; the rules themselves are in the `switchboard-policies` crate, the
//! policy in force in [`policy`]; tenants' spend, reservations, rate limits and sticky threads
//! in [`shared_state`], in this process or in Redis for a fleet; [`conversations`] names
//! threads) → execute ([`catalog`]: model → local engine or remote fallback chain;
//! [`providers`]: the local engine, remote retries, fallbacks, wire formats);
//! each step notes what it did in the request's record, which settles once: cost, the tenant's
//! reservation, [`ledger`], [`metrics`] and the log line. Errors reach clients OpenAI-shaped
//! through [`error`].
//!
//! Around it: [`config`] (the policy file, plain data, validated), [`state`] (what every
//! handler shares, built from the config), [`server`] (binding, serving, graceful shutdown),
//! [`reload`] (the policy file read again when it changes), [`model_store`] (the default
//! models, fetched from pinned PyPI wheels), [`report`] (the ledger summed up, for
//! `GET /v1/usage` and `switchboard report`), [`cache`] (answers kept for repeated questions;
//! not yet in the request's way).

pub mod api;
pub mod auth;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod connections;
pub mod conversations;
pub mod endpoints;
pub mod error;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod model_store;
pub mod pipeline;
pub mod policy;
pub mod providers;
pub mod rate_limit;
pub mod reload;
pub mod report;
pub mod server;
pub mod shared_state;
pub mod state;
