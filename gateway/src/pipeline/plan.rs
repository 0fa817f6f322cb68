//! The pipeline's second step: it gathers the facts that the policy decides on (the router's
//! findings, the request's size, the client's hints, the tenant's standing, the load of both
//! routes), asks `switchboard_policies::decide`, and turns the decision into the models that
//! answer. The rules themselves live in `policies/src/decision.rs`.

use std::sync::Arc;

use switchboard_policies::decision::{
    Asked, Capacity, ContextNeed, Destination, RequestFacts, Scores, TenantState,
};
use switchboard_policies::spec::ForcedRoute;
use switchboard_policies::tenant::calendar;
use switchboard_policies::{
    Decision, NoRemoteModel, Reason, Refusal, Routing, TenantRules, TierId, Usd, decide,
};

use super::{ClientHints, Findings};
use crate::api::ChatCompletionRequest;
use crate::auth::Tenant;
use crate::catalog::Catalog;
use crate::conversations::ConversationKey;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::providers::Target;
use crate::providers::local::{LocalModel, Reach};
use crate::shared_state::{Hold, Reservation, Reserved, SharedState, Unreachable};

/// Who answers a request, as decided.
pub enum Route {
    Local(Arc<LocalModel>),
    /// Remote targets, tried in order.
    Remote(Vec<Target>),
}

/// A request's route, with the decision behind it (`None`: no routing section, the request
/// goes to the model it names) and the estimate held against its tenant's budget.
pub struct Plan {
    pub route: Route,
    pub decision: Option<Decision>,
    pub reservation: Option<Reservation>,
    /// Who answers when every remote target fails, where the policy allows it.
    pub local_fallback: Option<Arc<LocalModel>>,
    /// For a local answer the policy may still escalate: where to, if the model was unsure.
    pub cascade: Option<CascadeChain>,
}

/// The decision's confidence cascade with the remote targets that carry it out: a complete
/// local answer whose tokens' mean log-probability is under `floor` is discarded and the
/// request sent to `chain`.
pub struct CascadeChain {
    pub floor: f64,
    pub chain: Vec<Target>,
    /// Private data is to be redacted before it leaves.
    pub redact: bool,
}

/// The completion allowance of a request that gives no `max_tokens`, for estimates.
const DEFAULT_COMPLETION_ESTIMATE: u64 = 1024;

/// What planning reads besides the request: the models, and the state shared with a fleet's
/// other replicas (the tenants' standings, the conversations that escalated).
#[derive(Clone, Copy)]
pub struct Planner<'g> {
    pub catalog: &'g Catalog,
    pub shared: &'g Arc<SharedState>,
    pub metrics: &'g Metrics,
}

/// How often a decision is made again because a concurrent request changed its tenant's
/// outlook (a budget spent, the cap reached) before the reservation: each time the outlook
/// moved, so more than a few means a flood, answered with 503.
const MAX_DECISIONS: usize = 8;

/// One request to plan, with what is known about it.
#[derive(Clone, Copy)]
pub struct Request<'r> {
    pub policy: &'r Policy,
    pub tenant: &'r Tenant,
    pub chat: &'r ChatCompletionRequest,
    pub hints: &'r ClientHints,
    pub findings: &'r Findings,
}

/// What the decision reads about one request, gathered once.
struct Gathered<'r> {
    routing: &'r Routing,
    asked: Asked,
    /// The local model whose context and queue the decision weighs: the one named, else the
    /// top local tier's.
    local: Arc<LocalModel>,
    top_local: Arc<LocalModel>,
    context: ContextNeed,
    capacity: Capacity,
    forced: Option<ForcedRoute>,
    /// The conversation, when the policy keeps escalated conversations on their tier.
    conversation: Option<ConversationKey>,
    /// The tier it escalated to, within the policy's time.
    sticky: Option<TierId>,
    stream: bool,
    /// Which members of a local pool may answer.
    reach: Reach,
}

impl Gathered<'_> {
    fn facts<'a>(&self, findings: &'a Findings) -> RequestFacts<'a> {
        RequestFacts {
            asked: self.asked,
            scores: findings.classification.as_ref().map(|c| Scores {
                complexity: f64::from(c.complexity),
                domain: &c.domain,
            }),
            language: findings.language,
            private_data: !findings.private_data.is_empty(),
            context: self.context,
            forced: self.forced,
            sticky_tier: self.sticky,
            stream: self.stream,
        }
    }
}

impl Planner<'_> {
    /// Decides where `request` goes, and holds its estimated cost against its tenant's budget.
    pub async fn plan(&self, request: Request<'_>) -> Result<Plan, ApiError> {
        let Request {
            policy,
            tenant,
            chat,
            findings,
            ..
        } = request;
        let Some(routing) = &policy.routing else {
            return Ok(Plan {
                route: self.named(&chat.model)?,
                decision: None,
                reservation: None,
                local_fallback: None,
                cascade: None,
            });
        };
        let gathered = self.gather(routing, request).await?;
        let facts = gathered.facts(findings);
        let rules = policy.tenant(&tenant.name);
        let (decision, reservation) = self
            .decide_and_hold(&tenant.name, &rules, |state| {
                let decision = decide(routing, &rules, &facts, state, gathered.capacity);
                let (estimate, routed) = match decision.destination {
                    Destination::Tier(tier) => {
                        let model = self.first_usable(routing, tier);
                        let estimate = model
                            .map_or(Usd::ZERO, |m| estimate(policy, m, chat, gathered.context));
                        (estimate, Some(!routing.is_local(tier)))
                    }
                    Destination::Named => {
                        (estimate(policy, &chat.model, chat, gathered.context), None)
                    }
                    Destination::Refuse(_) => (Usd::ZERO, None),
                };
                let hold = Hold {
                    outlook: rules.outlook(state),
                    estimate,
                    routed,
                };
                (decision, hold)
            })
            .await?;
        let route = self.resolve(&gathered, &decision, chat, findings)?;
        if let (Some(key), Some(ttl), Destination::Tier(tier)) = (
            gathered.conversation,
            routing.sticky_for,
            decision.destination,
        ) && !routing.is_local(tier)
        {
            let name = &routing.tier(tier).name;
            self.shared.stick(key, name, ttl).await;
        }
        let local_fallback = decision.local_fallback.then(|| gathered.top_local.clone());
        let cascade = decision.cascade.and_then(|cascade| {
            let chain = self.targets(&routing.usable_models(cascade.tier, |m| self.usable(m)));
            (!chain.is_empty()).then_some(CascadeChain {
                floor: cascade.floor,
                chain,
                redact: cascade.redact,
            })
        });
        Ok(Plan {
            route,
            decision: Some(decision),
            reservation,
            local_fallback,
            cascade,
        })
    }

    /// What [`Planner::plan`] would decide now, without holding anything against the tenant's
    /// budget: for `POST /v1/route/explain`. `None` without a routing section.
    pub async fn explain(
        &self,
        request: Request<'_>,
    ) -> Result<Option<(Decision, Result<Route, ApiError>)>, ApiError> {
        let Some(routing) = &request.policy.routing else {
            return Ok(None);
        };
        let gathered = self.gather(routing, request).await?;
        let today = calendar::day(crate::api::unix_now());
        let rules = request.policy.tenant(&request.tenant.name);
        let state = match self.shared.standing(&request.tenant.name, today).await {
            Ok(state) => state,
            Err(Unreachable) => self.uncounted(&rules, TenantState::default())?,
        };
        let decision = decide(
            routing,
            &rules,
            &gathered.facts(request.findings),
            &state,
            gathered.capacity,
        );
        let route = self.resolve(&gathered, &decision, request.chat, request.findings);
        Ok(Some((decision, route)))
    }

    /// Decides on the tenant's current state and holds the decision's estimate, deciding again
    /// when a concurrent request changed the tenant's outlook first. Without the store (a
    /// fleet's Redis unreachable), a tenant with a budget or an escalation cap is refused
    /// (503: its limits would not hold); any other is decided on an empty state, uncounted.
    async fn decide_and_hold(
        &self,
        tenant: &str,
        rules: &TenantRules,
        decide_on: impl Fn(&TenantState) -> (Decision, Hold),
    ) -> Result<(Decision, Option<Reservation>), ApiError> {
        let today = calendar::day(crate::api::unix_now());
        let mut state = self.shared.guess_standing(tenant, today).await;
        // Whether `state` is what the store has just replied, rather than a guess.
        let mut replied = false;
        for _ in 0..MAX_DECISIONS {
            let Ok(current) = state else {
                let decision = decide_on(&TenantState::default()).0;
                return Ok((self.uncounted(rules, decision)?, None));
            };
            let (decision, hold) = decide_on(&current);
            // A decision that holds and counts nothing (a refusal, a free model) stands when
            // made on the store's reply: checking it again could only chase holds coming and
            // going under a flood. One made on a guess is checked (the guess may be stale).
            if replied && hold.estimate == Usd::ZERO && hold.routed.is_none() {
                return Ok((decision, None));
            }
            match self.shared.reserve(tenant, today, rules, hold).await {
                Ok(Reserved::Held(reservation)) => return Ok((decision, Some(reservation))),
                Ok(Reserved::Changed(fresh)) => {
                    state = Ok(fresh);
                    replied = true;
                }
                Err(Unreachable) => return Ok((self.uncounted(rules, decision)?, None)),
            }
        }
        Err(ApiError::Overloaded {
            retry_after: std::time::Duration::from_secs(1),
        })
    }

    /// `value`, for a tenant whose limits do not depend on the unreachable store; else 503.
    fn uncounted<T>(&self, rules: &TenantRules, value: T) -> Result<T, ApiError> {
        if rules.budget.is_none() && rules.escalation_cap.is_none() {
            return Ok(value);
        }
        self.metrics.state_store_fallback("budget_refused");
        Err(ApiError::StateStoreUnreachable)
    }

    /// A model the client named, where it runs.
    fn named(&self, model: &str) -> Result<Route, ApiError> {
        let catalog = self.catalog;
        if let Some(local) = catalog.local(model) {
            return Ok(Route::Local(local.clone()));
        }
        match catalog.usable_chain(model) {
            Some(chain) => Ok(Route::Remote(chain.to_vec())),
            None if catalog.contains(model) => Err(ApiError::Unavailable {
                message: format!(
                    "The model '{model}' has no provider with an API key; ask your operator to set it."
                ),
            }),
            None => Err(ApiError::ModelNotFound(model.to_owned())),
        }
    }

    async fn gather<'r>(
        &self,
        routing: &'r Routing,
        request: Request<'_>,
    ) -> Result<Gathered<'r>, ApiError> {
        let Request {
            tenant,
            chat,
            hints,
            ..
        } = request;
        let catalog = self.catalog;
        let asked = if chat.model == routing.model {
            Asked::Routing
        } else {
            // A model that cannot answer is refused before anything is decided or reserved.
            let route = self.named(&chat.model)?;
            Asked::Named {
                local: matches!(route, Route::Local(_)),
            }
        };
        let forced = hints.forced()?;
        let reach = hints.local_reach;
        let top_local = self.local_model(routing, routing.top_local(), reach)?;
        let local = match asked {
            Asked::Named { local: true } => catalog.local(&chat.model).unwrap_or(&top_local),
            _ => &top_local,
        }
        .clone();
        let context = ContextNeed {
            tokens: local.context_need(chat).await?,
            local_window: local.context_window(),
        };
        let capacity = Capacity {
            local_busy: local.is_full(reach),
            remote_available: routing
                .tiers
                .iter()
                .flat_map(|t| &t.targets)
                .any(|m| self.usable(m)),
        };
        let conversation = routing.sticky_for.and_then(|_| {
            ConversationKey::of(&tenant.name, hints.conversation.as_deref(), &chat.messages)
        });
        let sticky = match conversation {
            Some(key) => self.shared.sticky_tier(key).await,
            None => None,
        };
        let sticky = sticky
            .and_then(|name| routing.tiers.iter().position(|t| t.name == name))
            .map(TierId);
        Ok(Gathered {
            routing,
            asked,
            local,
            top_local,
            context,
            capacity,
            forced,
            conversation,
            sticky,
            stream: chat.is_stream(),
            reach,
        })
    }

    /// The models that carry out a decision.
    fn resolve(
        &self,
        gathered: &Gathered<'_>,
        decision: &Decision,
        request: &ChatCompletionRequest,
        findings: &Findings,
    ) -> Result<Route, ApiError> {
        let routing = gathered.routing;
        match decision.destination {
            Destination::Refuse(refusal) => Err(refused(refusal, decision, findings)),
            Destination::Named if gathered.asked == (Asked::Named { local: false }) => {
                self.named(&request.model)
            }
            Destination::Named => Ok(Route::Local(gathered.local.clone())),
            Destination::Tier(tier) if routing.is_local(tier) => Ok(Route::Local(
                self.local_model(routing, tier, gathered.reach)?,
            )),
            Destination::Tier(tier) => {
                let tokens = gathered.context.tokens;
                let models = routing.remote_models(tier, tokens, |m| self.usable(m));
                let name = &routing.tier(tier).name;
                match models {
                    Ok(models) => Ok(Route::Remote(self.targets(&models))),
                    Err(NoRemoteModel::NoKey) => Err(ApiError::Unavailable {
                        message: format!(
                            "No model of the tier '{name}' has a provider with an API key."
                        ),
                    }),
                    Err(NoRemoteModel::TooLong) => Err(ApiError::bad_request(
                        format!(
                            "The request needs about {tokens} tokens of context; no remote model from the tier '{name}' up takes that many."
                        ),
                        Some("messages"),
                    )),
                }
            }
        }
    }

    /// Whether a remote model's provider has its key.
    fn usable(&self, model: &str) -> bool {
        let target = self.catalog.target(model);
        target.is_some_and(|t| t.provider.is_usable())
    }

    /// The catalog's targets of the models the policy chose.
    fn targets(&self, models: &[&str]) -> Vec<Target> {
        let targets = models.iter().filter_map(|m| self.catalog.target(m));
        targets.cloned().collect()
    }

    /// The first model of a local tier that is loaded (validated: they all are).
    fn local_model(
        &self,
        routing: &Routing,
        tier: TierId,
        reach: Reach,
    ) -> Result<Arc<LocalModel>, ApiError> {
        let targets = &routing.tier(tier).targets;
        let mut loaded = targets.iter().filter_map(|m| self.catalog.local(m));
        let first = loaded.clone().next();
        // A tier of several local models: the first one with room in its queue.
        loaded
            .find(|m| !m.is_full(reach))
            .or(first)
            .cloned()
            .ok_or_else(|| ApiError::Unavailable {
                message: format!(
                    "The local tier '{}' has no model loaded.",
                    routing.tier(tier).name
                ),
            })
    }

    fn first_usable<'a>(&self, routing: &'a Routing, tier: TierId) -> Option<&'a str> {
        let catalog = self.catalog;
        routing
            .tier(tier)
            .targets
            .iter()
            .find(|m| catalog.local(m).is_some() || self.usable(m))
            .map(String::as_str)
    }
}

/// What a request will cost at `model`, at most: its prompt (counted generously) and its
/// completion allowance.
fn estimate(
    policy: &Policy,
    model: &str,
    request: &ChatCompletionRequest,
    context: ContextNeed,
) -> Usd {
    let completion = request
        .max_output_tokens()
        .map_or(DEFAULT_COMPLETION_ESTIMATE, u64::from);
    let prompt = context
        .tokens
        .saturating_sub(request.max_output_tokens().map_or(0, u64::from));
    policy.price(model).cost(prompt, completion)
}

/// The client's error for a refusal.
fn refused(refusal: Refusal, decision: &Decision, findings: &Findings) -> ApiError {
    let reason = &decision.reason;
    match refusal {
        Refusal::BudgetSpent => ApiError::BudgetSpent {
            message: format!("Your {reason}; requests are refused until the budget renews."),
            retry_after: until_renewal(reason),
        },
        Refusal::PrivateData => ApiError::PrivateDataRefused {
            kinds: super::classify::kinds_list(&findings.private_data),
        },
        Refusal::TooLongForLocal => ApiError::bad_request(
            format!(
                "The request must be answered locally ({reason}), and it is longer than the local model's context."
            ),
            Some("messages"),
        ),
        Refusal::LocalBusy => ApiError::Overloaded {
            retry_after: std::time::Duration::from_secs(1),
        },
        Refusal::EscalationCap => ApiError::RateLimited {
            message: format!("The request needs a remote model and {reason}."),
            retry_after: None,
        },
        Refusal::NoRemote => ApiError::Unavailable {
            message: "The request needs a remote model, and no provider has an API key.".to_owned(),
        },
    }
}

/// Seconds until the spent window turns (UTC midnight; for a month, its first day).
fn until_renewal(reason: &Reason) -> std::time::Duration {
    use switchboard_policies::tenant::Window;
    let now = crate::api::unix_now();
    let today = calendar::day(now);
    let next = match reason {
        Reason::BudgetSpent {
            window: Window::Month,
            ..
        } => (today + 1..today + 32)
            .find(|&d| calendar::month(d) != calendar::month(today))
            .unwrap_or(today + 1),
        _ => today + 1,
    };
    std::time::Duration::from_secs((next * 86_400).saturating_sub(now))
}
