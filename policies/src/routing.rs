//! The validated routing policy: tiers of models by complexity band, domain rules, and what
//! happens to private data, long contexts, other languages and a busy local model.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::money::Price;
use crate::problems::{KeyPath, Problem};
use crate::spec::{
    BusyRule, ForcedRoute, LongContextRule, PrivateDataRule, RemoteFailureRule, RoutingSpec,
};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In-process, on this machine.
    Local,
    /// At a remote provider.
    Remote,
}

impl Placement {
    /// `local` or `remote`: the `route` of metrics, headers and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Local => "local",
            Placement::Remote => "remote",
        }
    }
}

/// What the policy needs to know of each configured model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelFacts {
    pub placement: Placement,
    pub price: Price,
    /// The most tokens (prompt and completion) it takes, when its configuration says.
    pub context_window: Option<u32>,
}

/// A tier's index in [`Routing::tiers`], lowest band first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TierId(pub usize);

#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    /// Upper bound (exclusive) of its complexity band; `None` for the last tier.
    pub below: Option<f64>,
    /// Models tried in order.
    pub targets: Vec<String>,
    pub placement: Placement,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DomainRule {
    pub route: Option<ForcedRoute>,
    /// Per tier: this domain's own upper bound, where it has one.
    pub below: Vec<Option<f64>>,
    /// The remote tier this domain escalates to.
    pub escalate_to: Option<TierId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// The model name that asks for routing.
    pub model: String,
    pub reference_model: String,
    /// The reference model's price: the counterfactual of every request.
    pub reference_price: Price,
    pub tiers: Vec<Tier>,
    pub domains: BTreeMap<String, DomainRule>,
    pub private_data: PrivateDataRule,
    /// Empty: the local models serve every language.
    pub local_languages: BTreeSet<String>,
    pub long_context: LongContextRule,
    pub when_local_busy: BusyRule,
    pub when_remote_fails: RemoteFailureRule,
    pub sticky_for: Option<Duration>,
    pub cascade_min_mean_logprob: Option<f64>,
    /// The context windows of the configured models that give one (remote models; the local
    /// engine's window is the model file's).
    pub context_windows: BTreeMap<String, u32>,
}

/// Why no remote model can answer for a remote tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRemoteModel {
    /// No model of the tier has a provider with a key.
    NoKey,
    /// The request is longer than every usable model's window, from the tier up.
    TooLong,
}

impl Routing {
    /// Validates a `routing:` section against the configured models and the router's domains
    /// (`None`: the router is off, so domain rules cannot apply). Every problem is reported,
    /// each at its path under `at`.
    pub fn build(
        spec: &RoutingSpec,
        at: &KeyPath,
        models: &BTreeMap<String, ModelFacts>,
        domains: Option<&BTreeSet<String>>,
    ) -> Result<Routing, Vec<Problem>> {
        let mut problems = Vec::new();
        let known_models = || {
            let names: Vec<&str> = models.keys().map(String::as_str).collect();
            format!("configured models: {}", names.join(", "))
        };

        if spec.model.trim().is_empty() {
            problems.push(Problem::new(at.key("model"), "is empty"));
        } else if models.contains_key(&spec.model) {
            problems.push(
                Problem::new(
                    at.key("model"),
                    format!("'{}' is also a configured model's name", spec.model),
                )
                .hint("the routing model needs a name of its own, such as auto"),
            );
        }
        let reference_price = match models.get(&spec.reference_model) {
            Some(facts) => {
                if facts.price.is_free() {
                    problems.push(
                        Problem::new(
                            at.key("reference_model"),
                            format!("'{}' has no price", spec.reference_model),
                        )
                        .hint("the counterfactual is priced at the reference model: give it its provider's price"),
                    );
                }
                facts.price
            }
            None => {
                problems.push(
                    Problem::new(
                        at.key("reference_model"),
                        format!("'{}' is not a configured model", spec.reference_model),
                    )
                    .hint(known_models()),
                );
                Price::FREE
            }
        };

        let tiers_at = at.key("tiers");
        if spec.tiers.is_empty() {
            problems.push(
                Problem::new(tiers_at.clone(), "no tiers")
                    .hint("give at least a local tier and a remote one"),
            );
        }
        let mut tiers = Vec::new();
        let mut names = BTreeSet::new();
        let mut last_bound = 0.0;
        for (t, tier) in spec.tiers.iter().enumerate() {
            let here = tiers_at.index(t);
            if !names.insert(tier.name.as_str()) {
                problems.push(Problem::new(
                    here.key("name"),
                    format!("tier name '{}' is used twice", tier.name),
                ));
            }
            let last = t + 1 == spec.tiers.len();
            match (tier.below, last) {
                (Some(_), true) => problems.push(
                    Problem::new(here.key("below"), "the last tier has a bound")
                        .hint("the last tier takes every request above the others: remove `below`"),
                ),
                (None, false) => problems.push(
                    Problem::new(here.clone(), "a tier before the last needs `below`")
                        .hint("`below: 0.5` sends requests of complexity under 0.5 to this tier"),
                ),
                (Some(bound), false) => {
                    if !(bound > 0.0 && bound <= 1.0) {
                        problems.push(
                            Problem::new(here.key("below"), format!("{bound} is out of range"))
                                .hint(
                                    "complexity is a probability: give a bound above 0, at most 1",
                                ),
                        );
                    } else if bound <= last_bound {
                        problems.push(
                            Problem::new(
                                here.key("below"),
                                format!("{bound} is not above the tier before ({last_bound})"),
                            )
                            .hint("tiers go from the lowest complexity band to the highest"),
                        );
                    }
                    last_bound = bound;
                }
                (None, true) => {}
            }
            if tier.targets.is_empty() {
                problems.push(Problem::new(here.key("targets"), "no targets"));
            }
            let mut placements = BTreeSet::new();
            let mut seen = BTreeSet::new();
            for (m, target) in tier.targets.iter().enumerate() {
                if !seen.insert(target) {
                    problems.push(Problem::new(
                        here.key("targets").index(m),
                        format!("'{target}' is listed twice"),
                    ));
                }
                match models.get(target) {
                    Some(facts) => {
                        placements.insert(facts.placement == Placement::Local);
                    }
                    None => problems.push(
                        Problem::new(
                            here.key("targets").index(m),
                            format!("'{target}' is not a configured model"),
                        )
                        .hint(known_models()),
                    ),
                }
            }
            if placements.len() > 1 {
                problems.push(
                    Problem::new(here.key("targets"), "mixes local and remote models").hint(
                        "a tier is local or remote; put the local models in a tier of their own",
                    ),
                );
            }
            let placement = if placements.contains(&true) {
                Placement::Local
            } else {
                Placement::Remote
            };
            tiers.push(Tier {
                name: tier.name.clone(),
                below: tier.below,
                targets: tier.targets.clone(),
                placement,
            });
        }
        if let Some(first) = tiers.first()
            && first.placement != Placement::Local
        {
            problems.push(
                Problem::new(tiers_at.index(0), "the first tier is not local")
                    .hint("the lowest band is answered on this machine: name a local model"),
            );
        }
        if let Some(t) = tiers
            .windows(2)
            .position(|w| w[0].placement == Placement::Remote && w[1].placement == Placement::Local)
        {
            problems.push(
                Problem::new(tiers_at.index(t + 1), "a local tier above a remote one")
                    .hint("local tiers come first, then the remote ones"),
            );
        }
        let tier_id = |name: &str| tiers.iter().position(|t| t.name == name).map(TierId);
        let has_remote = tiers.iter().any(|t| t.placement == Placement::Remote);

        let mut domain_rules = BTreeMap::new();
        for (name, rule) in &spec.domains {
            let here = at.key("domains").key(name);
            match domains {
                None => problems.push(
                    Problem::new(here.clone(), "domain rules need the router")
                        .hint("add a `router:` section, or remove the domain rules"),
                ),
                Some(known) if !known.contains(name) => problems.push(
                    Problem::new(here.clone(), format!("'{name}' is not a domain")).hint(format!(
                        "domains: {} (custom ones come from router.domains)",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    )),
                ),
                Some(_) => {}
            }
            let mut below = vec![None; tiers.len()];
            for (tier_name, &bound) in &rule.below {
                match tier_id(tier_name) {
                    Some(TierId(t)) if tiers[t].below.is_some() => below[t] = Some(bound),
                    Some(_) => problems.push(
                        Problem::new(
                            here.key("below").key(tier_name),
                            "the last tier has no bound",
                        )
                        .hint("bound the tiers below it instead"),
                    ),
                    None => problems.push(Problem::new(
                        here.key("below").key(tier_name),
                        format!("'{tier_name}' is not a tier"),
                    )),
                }
                if !(bound > 0.0 && bound <= 1.0) {
                    problems.push(
                        Problem::new(
                            here.key("below").key(tier_name),
                            format!("{bound} is out of range"),
                        )
                        .hint("give a bound above 0, at most 1"),
                    );
                }
            }
            let effective: Vec<f64> = tiers
                .iter()
                .zip(&below)
                .filter_map(|(tier, own)| own.or(tier.below))
                .collect();
            if !rule.below.is_empty() && effective.windows(2).any(|w| w[0] >= w[1]) {
                problems.push(
                    Problem::new(here.key("below"), "with these bounds the bands overlap")
                        .hint("each tier's bound must stay above the one of the tier before"),
                );
            }
            let escalate_to = rule.escalate_to.as_deref().and_then(|tier_name| {
                let found = tier_id(tier_name);
                match found {
                    Some(TierId(t)) if tiers[t].placement == Placement::Local => {
                        problems.push(Problem::new(
                            here.key("escalate_to"),
                            format!("'{tier_name}' is a local tier"),
                        ));
                    }
                    Some(_) => {}
                    None => problems.push(Problem::new(
                        here.key("escalate_to"),
                        format!("'{tier_name}' is not a tier"),
                    )),
                }
                found
            });
            if rule.route == Some(ForcedRoute::Local) && rule.escalate_to.is_some() {
                problems.push(
                    Problem::new(here.key("escalate_to"), "the domain always stays local")
                        .hint("remove `route: local` or `escalate_to`"),
                );
            }
            if rule.route == Some(ForcedRoute::Remote) && !has_remote {
                problems.push(Problem::new(here.key("route"), "there is no remote tier"));
            }
            domain_rules.insert(
                name.clone(),
                DomainRule {
                    route: rule.route,
                    below,
                    escalate_to,
                },
            );
        }

        let mut local_languages = BTreeSet::new();
        for (l, code) in spec.local_languages.iter().enumerate() {
            if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_lowercase()) {
                problems.push(
                    Problem::new(
                        at.key("local_languages").index(l),
                        format!("'{code}' is not a language code"),
                    )
                    .hint("ISO 639-1, lowercase: en, de, fr…"),
                );
            }
            local_languages.insert(code.clone());
        }
        let sticky_for = spec.sticky_conversations.as_ref().and_then(|sticky| {
            let ttl = Duration::try_from_secs_f64(sticky.ttl)
                .ok()
                .filter(|d| !d.is_zero());
            if ttl.is_none() {
                problems.push(
                    Problem::new(
                        at.key("sticky_conversations").key("ttl"),
                        format!("{} is not a duration", sticky.ttl),
                    )
                    .hint("seconds, above 0"),
                );
            }
            ttl
        });
        let cascade_min_mean_logprob = spec.cascade.as_ref().map(|cascade| {
            let floor = cascade.min_mean_logprob;
            if !(floor.is_finite() && floor < 0.0) {
                problems.push(
                    Problem::new(
                        at.key("cascade").key("min_mean_logprob"),
                        format!("{floor} is not a log-probability floor"),
                    )
                    .hint("a negative number: -1.0 discards answers whose tokens averaged under 37% probability"),
                );
            }
            floor
        });

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Routing {
            model: spec.model.clone(),
            reference_model: spec.reference_model.clone(),
            reference_price,
            tiers,
            domains: domain_rules,
            private_data: spec.private_data,
            local_languages,
            long_context: spec.long_context,
            when_local_busy: spec.when_local_busy,
            when_remote_fails: spec.when_remote_fails,
            sticky_for,
            cascade_min_mean_logprob,
            context_windows: models
                .iter()
                .filter_map(|(name, facts)| Some((name.clone(), facts.context_window?)))
                .collect(),
        })
    }

    /// The models that answer for remote tier `tier`, in order: those whose provider has its
    /// key (`usable`) and whose context window takes `tokens`; when no model of the tier
    /// takes them, the next tier up answers (the tiers above a remote tier are remote: local
    /// tiers come first).
    pub fn remote_models(
        &self,
        tier: TierId,
        tokens: u64,
        usable: impl Fn(&str) -> bool,
    ) -> Result<Vec<&str>, NoRemoteModel> {
        if self.usable_models(tier, &usable).is_empty() {
            return Err(NoRemoteModel::NoKey);
        }
        let fits = |model: &&str| {
            let window = self.context_windows.get(*model);
            window.is_none_or(|&w| tokens <= u64::from(w))
        };
        (tier.0..self.tiers.len())
            .map(|t| {
                let models = self.usable_models(TierId(t), &usable).into_iter();
                models.filter(fits).collect::<Vec<_>>()
            })
            .find(|models| !models.is_empty())
            .ok_or(NoRemoteModel::TooLong)
    }

    /// The models of remote tier `tier` whose provider has its key (`usable`), in order,
    /// whatever their context windows: where the confidence cascade sends an unsure answer.
    pub fn usable_models(&self, tier: TierId, usable: impl Fn(&str) -> bool) -> Vec<&str> {
        let targets = self.tier(tier).targets.iter().map(String::as_str);
        targets.filter(|m| usable(m)).collect()
    }

    pub fn tier(&self, id: TierId) -> &Tier {
        &self.tiers[id.0]
    }

    pub fn is_local(&self, id: TierId) -> bool {
        self.tier(id).placement == Placement::Local
    }

    /// The highest local tier (local tiers come first).
    pub fn top_local(&self) -> TierId {
        let locals = self
            .tiers
            .iter()
            .take_while(|t| t.placement == Placement::Local)
            .count();
        TierId(locals.saturating_sub(1))
    }

    /// The lowest remote tier, if there is one.
    pub fn first_remote(&self) -> Option<TierId> {
        self.tiers
            .iter()
            .position(|t| t.placement == Placement::Remote)
            .map(TierId)
    }

    /// The tier whose band holds `complexity` for a request of `domain`: the first tier whose
    /// bound (the domain's own, else the tier's) is above it.
    pub fn band(&self, complexity: f64, domain: &str) -> Band {
        let rule = self.domains.get(domain);
        let mut band = Band {
            tier: TierId(0),
            lower: None,
            upper: None,
            domain_bound: false,
        };
        for (t, tier) in self.tiers.iter().enumerate() {
            band.tier = TierId(t);
            let own = rule.and_then(|r| r.below[t]);
            let Some(upper) = own.or(tier.below) else {
                band.upper = None;
                break;
            };
            band.upper = Some(upper);
            if complexity < upper {
                // Within the first band, its upper bound decided; above, the lower one did.
                if band.lower.is_none() {
                    band.domain_bound = own.is_some();
                }
                break;
            }
            band.lower = Some(upper);
            band.domain_bound = own.is_some();
        }
        band
    }
}

/// The complexity band a request falls in, with the bounds that put it there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub tier: TierId,
    /// The bound the complexity reached, for a band above the first.
    pub lower: Option<f64>,
    /// The bound it stayed under, for a band below the last.
    pub upper: Option<f64>,
    /// Whether the deciding bound is the request domain's own.
    pub domain_bound: bool,
}
