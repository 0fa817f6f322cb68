//! The gateway's side of routing: it gathers the facts that the policy decides on (the router's
//! scores, the request's size, the client's header, the tenant's standing, the load of both
//! routes), asks `switchboard_policies::decide`, and turns the decision into the models that
//! answer. The rules themselves live in `policies/src/decision.rs`.

use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderMap;
use switchboard_policies::decision::{
    Asked, Capacity, ContextNeed, RequestFacts, Scores, Target as Decided,
};
use switchboard_policies::spec::{ForcedRoute, PrivateDataRule, RemoteFailureRule};
use switchboard_policies::tenant::calendar;
use switchboard_policies::{Decision, Reason, Refusal, Routing, TierId, Usd, decide};

use crate::accounting::Findings;
use crate::api::ChatCompletionRequest;
use crate::auth::Tenant;
use crate::conversations::ConversationKey;
use crate::error::ApiError;
use crate::policy::Policy;
use crate::providers::Target;
use crate::providers::local::LocalModel;
use crate::server::Gateway;
use crate::standing::Reservation;

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
    pub cascade: Option<Cascade>,
}

/// The confidence cascade of one request: a complete local answer whose tokens' mean
/// log-probability is under `floor` is discarded and the request sent to `chain`.
pub struct Cascade {
    pub floor: f64,
    pub chain: Vec<Target>,
    /// Private data is to be redacted before it leaves.
    pub redact: bool,
}

/// The completion allowance of a request that gives no `max_tokens`, for estimates.
const DEFAULT_COMPLETION_ESTIMATE: u64 = 1024;

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
        }
    }
}

/// A model the client named, where it runs.
fn named(gateway: &Gateway, model: &str) -> Result<Route, ApiError> {
    let catalog = &gateway.catalog;
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
    gateway: &Gateway,
    routing: &'r Routing,
    tenant: &Tenant,
    request: &ChatCompletionRequest,
    headers: &HeaderMap,
) -> Result<Gathered<'r>, ApiError> {
    let catalog = &gateway.catalog;
    let asked = if request.model == routing.model {
        Asked::Routing
    } else {
        // A model that cannot answer is refused before anything is decided or reserved.
        let route = named(gateway, &request.model)?;
        Asked::Named {
            local: matches!(route, Route::Local(_)),
        }
    };
    let forced = forced_route(headers)?;
    let top_local = local_model(gateway, routing, routing.top_local())?;
    let local = match asked {
        Asked::Named { local: true } => catalog.local(&request.model).unwrap_or(&top_local),
        _ => &top_local,
    }
    .clone();
    let context = ContextNeed {
        tokens: local.context_need(request).await?,
        local_window: local.engine.info().context_length as u64,
    };
    let capacity = Capacity {
        local_busy: local.engine.is_full(),
        remote_available: routing
            .tiers
            .iter()
            .flat_map(|t| &t.targets)
            .filter_map(|m| catalog.target(m))
            .any(|t| t.provider.is_usable()),
    };
    let conversation = routing
        .sticky_for
        .and_then(|_| ConversationKey::of(&tenant.name, headers, &request.messages));
    let sticky = conversation
        .and_then(|key| gateway.conversations.tier(key, Instant::now()))
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
    })
}

/// Decides where `request` goes, and holds its estimated cost against its tenant's budget.
pub async fn plan(
    gateway: &Gateway,
    policy: &Policy,
    tenant: &Tenant,
    request: &ChatCompletionRequest,
    headers: &HeaderMap,
    findings: &Findings,
) -> Result<Plan, ApiError> {
    let Some(routing) = &policy.routing else {
        return Ok(Plan {
            route: named(gateway, &request.model)?,
            decision: None,
            reservation: None,
            local_fallback: None,
            cascade: None,
        });
    };
    let gathered = gather(gateway, routing, tenant, request, headers).await?;
    let facts = gathered.facts(findings);
    let rules = policy.tenant(&tenant.name);
    let today = calendar::day(crate::api::unix_now());
    // Whether one more escalation fits under the cap, read in the same breath as the decision.
    let mut may_escalate_later = false;
    let (decision, reservation) = gateway.standings.decide(&tenant.name, today, |state| {
        let decision = decide(routing, &rules, &facts, &state, gathered.capacity);
        may_escalate_later = state.escalations.allows_one_more(rules.escalation_cap);
        let (estimate, routed) = match decision.target {
            Decided::Tier(tier) => {
                let model = first_usable(gateway, routing, tier);
                let estimate = model.map_or(Usd::ZERO, |m| {
                    estimate(policy, m, request, gathered.context)
                });
                (estimate, Some(!routing.is_local(tier)))
            }
            Decided::Named => (
                estimate(policy, &request.model, request, gathered.context),
                None,
            ),
            Decided::Refuse(_) => (Usd::ZERO, None),
        };
        (decision, estimate, routed)
    });
    let route = resolve(gateway, &gathered, &decision, request, findings)?;
    if let (Some(key), Some(ttl), Decided::Tier(tier)) =
        (gathered.conversation, routing.sticky_for, decision.target)
        && !routing.is_local(tier)
    {
        let name = &routing.tier(tier).name;
        gateway
            .conversations
            .remember(key, name, ttl, Instant::now());
    }
    let local_fallback = match (&route, decision.target) {
        (Route::Remote(_), Decided::Tier(_))
            if routing.when_remote_fails == RemoteFailureRule::Local
                && gathered.context.fits_locally() =>
        {
            Some(gathered.top_local.clone())
        }
        _ => None,
    };
    let cascade = may_escalate_later
        .then(|| cascade(gateway, &gathered, &decision, request, findings))
        .flatten();
    Ok(Plan {
        route,
        decision: Some(decision),
        reservation: Some(reservation),
        local_fallback,
        cascade,
    })
}

/// The cascade of a request answered locally because of its complexity band alone (not a
/// rule that keeps it here), when the policy has one (the caller checks the escalation cap).
fn cascade(
    gateway: &Gateway,
    gathered: &Gathered<'_>,
    decision: &Decision,
    request: &ChatCompletionRequest,
    findings: &Findings,
) -> Option<Cascade> {
    let routing = gathered.routing;
    let floor = routing.cascade_min_mean_logprob?;
    let band_decided = matches!(
        decision.reason,
        Reason::Complexity { .. } | Reason::Unscored
    );
    let local = matches!(decision.target, Decided::Tier(tier) if routing.is_local(tier));
    if !(band_decided && local) || request.is_stream() {
        return None;
    }
    let private = !findings.private_data.is_empty();
    if private && routing.private_data == PrivateDataRule::LocalOnly {
        return None;
    }
    let domain = findings.classification.as_ref().map(|c| c.domain.as_str());
    let tier = domain
        .and_then(|d| routing.domains.get(d))
        .and_then(|rule| rule.escalate_to)
        .or(routing.first_remote())?;
    let chain = usable_targets(gateway, routing, tier);
    (!chain.is_empty()).then_some(Cascade {
        floor,
        chain,
        redact: private && routing.private_data == PrivateDataRule::Redact,
    })
}

/// What [`plan`] would decide now, without holding anything against the tenant's budget:
/// for `POST /v1/route/explain`. `None` without a routing section.
pub async fn explain(
    gateway: &Gateway,
    policy: &Policy,
    tenant: &Tenant,
    request: &ChatCompletionRequest,
    headers: &HeaderMap,
    findings: &Findings,
) -> Result<Option<(Decision, Result<Route, ApiError>)>, ApiError> {
    let Some(routing) = &policy.routing else {
        return Ok(None);
    };
    let gathered = gather(gateway, routing, tenant, request, headers).await?;
    let today = calendar::day(crate::api::unix_now());
    let state = gateway.standings.state(&tenant.name, today);
    let rules = policy.tenant(&tenant.name);
    let decision = decide(
        routing,
        &rules,
        &gathered.facts(findings),
        &state,
        gathered.capacity,
    );
    let route = resolve(gateway, &gathered, &decision, request, findings);
    Ok(Some((decision, route)))
}

/// The models that carry out a decision.
fn resolve(
    gateway: &Gateway,
    gathered: &Gathered<'_>,
    decision: &Decision,
    request: &ChatCompletionRequest,
    findings: &Findings,
) -> Result<Route, ApiError> {
    let routing = gathered.routing;
    match decision.target {
        Decided::Refuse(refusal) => Err(refused(refusal, decision, findings)),
        Decided::Named if gathered.asked == (Asked::Named { local: false }) => {
            named(gateway, &request.model)
        }
        Decided::Named => Ok(Route::Local(gathered.local.clone())),
        Decided::Tier(tier) if routing.is_local(tier) => {
            Ok(Route::Local(local_model(gateway, routing, tier)?))
        }
        Decided::Tier(tier) => {
            let name = &routing.tier(tier).name;
            if usable_targets(gateway, routing, tier).is_empty() {
                return Err(ApiError::Unavailable {
                    message: format!(
                        "No model of the tier '{name}' has a provider with an API key."
                    ),
                });
            }
            // Models whose context window is too small are skipped; when a whole tier is, the
            // next one up answers.
            let tokens = gathered.context.tokens;
            let fits = |t: &Target| {
                t.model
                    .context_window
                    .is_none_or(|w| tokens <= u64::from(w))
            };
            (tier.0..routing.tiers.len())
                .map(|t| usable_targets(gateway, routing, TierId(t)))
                .map(|chain| chain.into_iter().filter(fits).collect::<Vec<_>>())
                .find(|chain| !chain.is_empty())
                .map(Route::Remote)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        format!("The request needs about {tokens} tokens of context; no remote model from the tier '{name}' up takes that many."),
                        Some("messages"),
                    )
                })
        }
    }
}

/// The remote targets of a tier whose provider has its key, in the tier's order.
fn usable_targets(gateway: &Gateway, routing: &Routing, tier: TierId) -> Vec<Target> {
    routing
        .tier(tier)
        .targets
        .iter()
        .filter_map(|m| gateway.catalog.target(m))
        .filter(|t| t.provider.is_usable())
        .cloned()
        .collect()
}

/// `x-switchboard-route: local|remote|auto`.
fn forced_route(headers: &HeaderMap) -> Result<Option<ForcedRoute>, ApiError> {
    let Some(value) = headers.get("x-switchboard-route") else {
        return Ok(None);
    };
    match value.to_str().map(str::trim) {
        Ok("local") => Ok(Some(ForcedRoute::Local)),
        Ok("remote") => Ok(Some(ForcedRoute::Remote)),
        Ok("auto") => Ok(None),
        _ => Err(ApiError::bad_request(
            "The x-switchboard-route header must be local, remote or auto.",
            None,
        )),
    }
}

/// The first model of a local tier that is loaded (validated: they all are).
fn local_model(
    gateway: &Gateway,
    routing: &Routing,
    tier: TierId,
) -> Result<Arc<LocalModel>, ApiError> {
    let targets = &routing.tier(tier).targets;
    let mut loaded = targets.iter().filter_map(|m| gateway.catalog.local(m));
    let first = loaded.clone().next();
    // A tier of several local models: the first one with room in its queue.
    loaded
        .find(|m| !m.engine.is_full())
        .or(first)
        .cloned()
        .ok_or_else(|| ApiError::Unavailable {
            message: format!(
                "The local tier '{}' has no model loaded.",
                routing.tier(tier).name
            ),
        })
}

fn first_usable<'a>(gateway: &Gateway, routing: &'a Routing, tier: TierId) -> Option<&'a str> {
    routing
        .tier(tier)
        .targets
        .iter()
        .find(|m| {
            gateway.catalog.local(m).is_some()
                || gateway
                    .catalog
                    .target(m)
                    .is_some_and(|t| t.provider.is_usable())
        })
        .map(String::as_str)
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
            kinds: crate::classify::kinds_list(&findings.private_data),
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
