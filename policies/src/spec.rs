//! The policy's sections as written in the file (serde), before validation. Every section has
//! a documented default, so a file without `routing:` still routes sensibly.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `routing:` — how requests for the routing model are spread over tiers of models.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSpec {
    /// The model name that clients ask for to let the policy choose (`auto`).
    #[serde(default = "default_routing_model")]
    pub model: String,
    /// Whose prices make the counterfactual: what each request would have cost there.
    pub reference_model: String,
    /// Complexity bands, lowest first; the first one holds local models.
    pub tiers: Vec<TierSpec>,
    /// Rules for requests of one domain (the router's most likely domain).
    #[serde(default)]
    pub domains: BTreeMap<String, DomainRuleSpec>,
    /// What happens to a request that holds private data (emails, cards, keys…).
    #[serde(default)]
    pub private_data: PrivateDataRule,
    /// Languages (ISO 639-1) the local models serve; requests in others escalate. Empty: all.
    #[serde(default)]
    pub local_languages: Vec<String>,
    /// A request beyond the local model's context window.
    #[serde(default)]
    pub long_context: LongContextRule,
    /// The local model's queue is full.
    #[serde(default)]
    pub when_local_busy: BusyRule,
    /// Every remote target of the chosen tier failed or has no key.
    #[serde(default)]
    pub when_remote_fails: RemoteFailureRule,
    /// A conversation that escalated stays on its tier for a while.
    #[serde(default)]
    pub sticky_conversations: Option<StickySpec>,
    /// Local answers the model itself was unsure of are discarded and escalated.
    #[serde(default)]
    pub cascade: Option<CascadeSpec>,
}

fn default_routing_model() -> String {
    "auto".to_owned()
}

/// One band of complexity and the models that answer it, tried in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    pub name: String,
    /// The band's upper bound (exclusive); the last tier takes everything above the others.
    #[serde(default)]
    pub below: Option<f64>,
    /// Models tried in order; the first that answers wins.
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRuleSpec {
    /// `local`: always stays local; `remote`: always escalates.
    #[serde(default)]
    pub route: Option<ForcedRoute>,
    /// Tier name → its own upper bound for this domain (`{local: 0.3}`).
    #[serde(default)]
    pub below: BTreeMap<String, f64>,
    /// The tier this domain escalates to, whatever its complexity (a reasoning model for math).
    #[serde(default)]
    pub escalate_to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForcedRoute {
    Local,
    Remote,
}

impl ForcedRoute {
    pub fn as_str(self) -> &'static str {
        match self {
            ForcedRoute::Local => "local",
            ForcedRoute::Remote => "remote",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivateDataRule {
    /// Answered locally, whatever else the policy says.
    #[default]
    LocalOnly,
    /// Replaced by placeholders (`[EMAIL]`) before the request leaves; local answers see it.
    Redact,
    /// Refused with 400.
    Reject,
    /// No special treatment.
    Allow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongContextRule {
    /// Escalates to the first remote tier.
    #[default]
    Remote,
    /// Refused with 400.
    Reject,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusyRule {
    /// Sent to the first remote tier (when the policy lets this request leave).
    #[default]
    Spill,
    /// Refused with 503 and `Retry-After`.
    Reject,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteFailureRule {
    /// Answered by the local tier (when the request fits its context).
    #[default]
    Local,
    /// The client gets the upstream's error.
    Fail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickySpec {
    /// Seconds a conversation stays on the tier it escalated to, from its last request.
    pub ttl: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeSpec {
    /// A local answer whose mean token log-probability is below this is escalated.
    pub min_mean_logprob: f64,
}

/// A tenant's rules, as written under its entry in `tenants:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// USD per UTC day.
    #[serde(default)]
    pub daily_usd: Option<f64>,
    /// USD per calendar month (UTC).
    #[serde(default)]
    pub monthly_usd: Option<f64>,
    #[serde(default)]
    pub when_spent: BudgetAction,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAction {
    /// Requests are still answered, by the local tier only.
    #[default]
    LocalOnly,
    /// Requests are refused with 402 until the window turns.
    Reject,
}
