//! `tenants:`: who may call, with which keys and models, how fast, and on what budget.

use serde::Deserialize;
use switchboard_policies::spec::BudgetSpec;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// `sha256:<hex>` of each key; `switchboard keys hash` prints one.
    pub api_key_hashes: Vec<String>,
    /// Model names this tenant may use; `"*"` allows every model.
    pub allowed_models: Vec<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Daily and monthly spending limits, and what happens when one is spent.
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
    /// The largest share of its routed requests that may escalate, over a UTC day.
    #[serde(default)]
    pub max_escalation_share: Option<f64>,
    /// Whether its clients' `x-switchboard-route: local|remote` is obeyed.
    #[serde(default)]
    pub may_force_route: bool,
    /// Whether its keys may read every tenant's usage (`GET /v1/usage`).
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests_per_minute: u32,
}
