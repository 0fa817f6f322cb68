//! `router:`: scoring every chat request (complexity, domain); off when absent.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The router: which embedding model it reads requests with, its heads, its custom domains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The name of an `embedding_models` entry (all-MiniLM-L6-v2 for the shipped heads).
    pub embedding_model: String,
    /// Heads made by `switchboard router train`; the shipped ones when absent.
    #[serde(default)]
    pub heads: Option<PathBuf>,
    /// Custom domains, each by a few example utterances; a default domain's name replaces it.
    #[serde(default)]
    pub domains: BTreeMap<String, Vec<String>>,
}
