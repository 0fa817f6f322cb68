//! The policy in force: the validated routing rules, each tenant's rules and every model's
//! price, built from the file ([`crate::config::Config::policy_rules`]). The decision itself is
//! `switchboard_policies::decide`; this module answers what the gateway asks of the rules and
//! prices what was answered.

use std::collections::{BTreeMap, HashMap};

use switchboard_policies::problems::Problem;
use switchboard_policies::{ModelFacts, Price, Routing, TenantRules, Usd};

use crate::api::Usage;
use crate::config::{Config, PolicyRules};

#[derive(Debug)]
pub struct Policy {
    /// `None` when the file has no `routing:` section: every request names its model.
    pub routing: Option<Routing>,
    tenants: HashMap<String, TenantRules>,
    models: BTreeMap<String, ModelFacts>,
}

/// What one answered request cost, and what it would have cost at the reference model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Costs {
    pub actual: Usd,
    /// At the reference model's prices; equal to `actual` without a routing section.
    pub counterfactual: Usd,
}

impl Costs {
    pub fn savings(&self) -> Usd {
        self.counterfactual - self.actual
    }
}

impl Policy {
    pub fn from_config(config: &Config) -> Result<Self, Vec<Problem>> {
        let PolicyRules {
            routing,
            tenants,
            models,
        } = config.policy_rules()?;
        Ok(Self {
            routing,
            tenants,
            models,
        })
    }

    /// Whether the decision on a request for `model` reads its language: a request for the
    /// routing model when the local models serve only some languages.
    pub fn reads_language(&self, model: &str) -> bool {
        self.routing
            .as_ref()
            .is_some_and(|r| r.model == model && !r.local_languages.is_empty())
    }

    /// The tenants that have a budget, with it.
    pub fn budgets(&self) -> impl Iterator<Item = (&str, switchboard_policies::tenant::Budget)> {
        self.tenants
            .iter()
            .filter_map(|(name, rules)| Some((name.as_str(), rules.budget?)))
    }

    /// A tenant's rules; a tenant the file does not name has none.
    pub fn tenant(&self, name: &str) -> TenantRules {
        self.tenants.get(name).cloned().unwrap_or_default()
    }

    /// A model's price (free for a model the file does not price).
    pub fn price(&self, model: &str) -> Price {
        self.models.get(model).map_or(Price::FREE, |m| m.price)
    }

    /// What `model` charged for `usage`, and what the reference model would have.
    pub fn costs(&self, model: &str, usage: &Usage) -> Costs {
        let price = self.price(model);
        let actual = price.cost(usage.prompt_tokens, usage.completion_tokens);
        let counterfactual = match &self.routing {
            Some(routing) => routing
                .reference_price
                .cost(usage.prompt_tokens, usage.completion_tokens),
            None => actual,
        };
        Costs {
            actual,
            counterfactual,
        }
    }
}
