//! The policy in force: the validated routing rules, each tenant's rules and every model's
//! price, built from the file. The decision itself is `switchboard_policies::decide`; this
//! module only assembles what it reads and prices what was answered.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use switchboard_policies::problems::{KeyPath, Problem};
use switchboard_policies::{ModelFacts, Placement, Price, Routing, TenantRules, Usd};
use switchboard_router::domain::DEFAULT_DOMAINS;

use crate::api::Usage;
use crate::config::Config;

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
        let mut problems = Vec::new();
        let mut models = BTreeMap::new();
        for model in config.providers.iter().flat_map(|p| &p.models) {
            let facts = ModelFacts {
                placement: Placement::Remote,
                price: model.price,
                context_window: model.context_window,
            };
            models.insert(model.name.clone(), facts);
        }
        for model in &config.local_models {
            let facts = ModelFacts {
                placement: Placement::Local,
                price: model.price.unwrap_or(Price::FREE),
                // The local engine's window is the model file's, weighed by the decision.
                context_window: None,
            };
            models.insert(model.name.clone(), facts);
        }

        let domains: Option<BTreeSet<String>> = config.router.as_ref().map(|router| {
            let defaults = DEFAULT_DOMAINS.iter().map(|d| d.to_string());
            defaults.chain(router.domains.keys().cloned()).collect()
        });
        let routing = config.routing.as_ref().and_then(|spec| {
            let at = KeyPath::root().key("routing");
            Routing::build(spec, &at, &models, domains.as_ref())
                .map_err(|found| problems.extend(found))
                .ok()
        });

        let anything_priced = models.values().any(|m| !m.price.is_free());
        let mut tenants = HashMap::new();
        for (t, tenant) in config.tenants.iter().enumerate() {
            let at = KeyPath::root().key("tenants").index(t);
            if tenant.budget.is_some() && config.routing.is_none() {
                problems.push(
                    Problem::new(at.key("budget"), "a budget needs a `routing:` section")
                        .hint("routing names the local tier that a spent budget falls back to"),
                );
            } else if tenant.budget.is_some() && !anything_priced {
                problems.push(
                    Problem::new(at.key("budget"), "a budget, but no model has a price")
                        .hint("nothing would count against it: give the models their prices"),
                );
            }
            let rules = TenantRules::build(
                tenant.budget.as_ref(),
                tenant.max_escalation_share,
                tenant.may_force_route,
                &at,
            );
            match rules {
                Ok(rules) => {
                    tenants.insert(tenant.name.clone(), rules);
                }
                Err(found) => problems.extend(found),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                routing,
                tenants,
                models,
            })
        } else {
            Err(problems)
        }
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
