//! `routing:` and the tenants' rules, built and checked by the `switchboard-policies` crate
//! against the configured models and the router's domains.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use switchboard_policies::problems::{KeyPath, Problem};
use switchboard_policies::{ModelFacts, Placement, Price, Routing, TenantRules};
use switchboard_router::domain::DEFAULT_DOMAINS;

use super::Config;

/// The rules a policy file gives: what the decision reads and what answers are priced at.
#[derive(Debug)]
pub struct PolicyRules {
    /// `None` when the file has no `routing:` section: every request names its model.
    pub routing: Option<Routing>,
    pub tenants: HashMap<String, TenantRules>,
    pub models: BTreeMap<String, ModelFacts>,
}

impl Config {
    /// Builds the routing rules and each tenant's rules, or says everything wrong with them.
    pub fn policy_rules(&self) -> Result<PolicyRules, Vec<Problem>> {
        let mut problems = Vec::new();
        let models = self.model_facts();
        let domains: Option<BTreeSet<String>> = self.router.as_ref().map(|router| {
            let defaults = DEFAULT_DOMAINS.iter().map(|d| d.to_string());
            defaults.chain(router.domains.keys().cloned()).collect()
        });
        let routing = self.routing.as_ref().and_then(|spec| {
            let at = KeyPath::root().key("routing");
            Routing::build(spec, &at, &models, domains.as_ref())
                .map_err(|found| problems.extend(found))
                .ok()
        });

        let anything_priced = models.values().any(|m| !m.price.is_free());
        let mut tenants = HashMap::new();
        for (t, tenant) in self.tenants.iter().enumerate() {
            let at = KeyPath::root().key("tenants").index(t);
            if tenant.budget.is_some() && self.routing.is_none() {
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
            Ok(PolicyRules {
                routing,
                tenants,
                models,
            })
        } else {
            Err(problems)
        }
    }

    /// What the policy needs to know of every configured model.
    fn model_facts(&self) -> BTreeMap<String, ModelFacts> {
        let remote = self.providers.iter().flat_map(|p| &p.models).map(|model| {
            let facts = ModelFacts {
                placement: Placement::Remote,
                price: model.price,
                context_window: model.context_window,
            };
            (model.name.clone(), facts)
        });
        let local = self.local_models.iter().map(|model| {
            let facts = ModelFacts {
                placement: Placement::Local,
                price: model.price.unwrap_or(Price::FREE),
                // The local engine's window is the model file's, weighed by the decision.
                context_window: None,
            };
            (model.name.clone(), facts)
        });
        remote.chain(local).collect()
    }
}
