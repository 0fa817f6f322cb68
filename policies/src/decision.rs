//! The routing decision: a pure function of the request's facts, the tenant's rules and state,
//! and the capacity of both routes. The rules, highest precedence first:
//!
//! 1. refusals nothing can avoid: the tenant's budget is spent and its rule is `reject` (402);
//!    the request holds private data and the rule is `reject` (400);
//! 2. what must stay on this machine: private data under `local_only`, a spent budget under
//!    `local_only` — answered by the local tier (or the local model the client named), else
//!    refused, never sent away;
//! 3. the client named a model (not the routing model): that model;
//! 4. for the routing model, the preferred tier: a context beyond the local model's (remote),
//!    the client's `x-switchboard-route` when its tenant may force one, a language the local
//!    models do not serve (remote), the domain's `route`, then the complexity band (with the
//!    domain's own bounds, its `escalate_to`, and at least the tier the conversation escalated
//!    to before);
//! 5. feasibility: a remote tier needs a provider with a key and room under the tenant's
//!    escalation cap, else the local tier answers (or, when the request cannot be local, it is
//!    refused); a local tier needs room in the local queue, else the request spills to the
//!    first remote tier (when `when_local_busy: spill` and step 5's remote conditions hold) or
//!    is refused with 503;
//! 6. what comes after the first answer: a remote tier's local fallback when every remote
//!    model fails (`when_remote_fails: local`), and a local answer's confidence cascade (see
//!    [`Cascade`]). Which models of a remote tier answer, by their keys and context windows, is
//!    [`Routing::remote_models`].

use std::fmt;

use crate::routing::{Routing, TierId};
use crate::spec::{
    BudgetAction, BusyRule, ForcedRoute, LongContextRule, PrivateDataRule, RemoteFailureRule,
};
use crate::tenant::{EscalationCount, Spend, TenantRules, Window};

/// What the router made of the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores<'a> {
    pub complexity: f64,
    /// The most likely domain.
    pub domain: &'a str,
}

/// Which model the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// The routing model (`auto`): the policy chooses.
    Routing,
    /// A model by its name, answered where it runs.
    Named { local: bool },
}

/// The facts of one request that the decision reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestFacts<'a> {
    pub asked: Asked,
    /// `None` when the router is off or could not score the request.
    pub scores: Option<Scores<'a>>,
    /// ISO 639-1, when the language could be told.
    pub language: Option<&'a str>,
    pub private_data: bool,
    /// Prompt tokens plus the completion's allowance, against the local model's window.
    pub context: ContextNeed,
    /// `x-switchboard-route`, when the client sent it.
    pub forced: Option<ForcedRoute>,
    /// The tier this conversation escalated to within the sticky window.
    pub sticky_tier: Option<TierId>,
    /// The answer is streamed (a streamed local answer cannot be taken back: no cascade).
    pub stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextNeed {
    pub tokens: u64,
    pub local_window: u64,
}

impl ContextNeed {
    pub fn fits_locally(&self) -> bool {
        self.tokens <= self.local_window
    }
}

/// The tenant's standing, from the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantState {
    pub spend: Spend,
    pub escalations: EscalationCount,
}

/// What both routes can take now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The local model's queue is full.
    pub local_busy: bool,
    /// Some provider of the remote tiers has its key.
    pub remote_available: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub destination: Destination,
    pub reason: Reason,
    /// Private data is to be replaced by placeholders before the request leaves.
    pub redact: bool,
    /// When every remote model fails, the top local tier answers (`when_remote_fails: local`,
    /// and the request fits the local window).
    pub local_fallback: bool,
    /// For a local answer: where it goes if the model is unsure of it.
    pub cascade: Option<Cascade>,
}

/// The confidence cascade of a local answer decided by its complexity band alone (not by a
/// rule that keeps it here): a complete answer whose tokens' mean log-probability is under
/// `floor` is discarded and the request sent to `tier`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cascade {
    pub floor: f64,
    /// The domain's `escalate_to`, else the first remote tier.
    pub tier: TierId,
    /// Private data is to be redacted before it leaves.
    pub redact: bool,
}

/// What happened after the decision that changed who answered; told after its reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Afterwards {
    /// Every remote model failed, and the local fallback answered.
    RemoteFailed,
    /// The local model was unsure of its answer: the cascade escalated it (`escalated`), or
    /// its remote models failed too and the local answer was kept.
    Unsure {
        mean_logprob: f64,
        floor: f64,
        escalated: bool,
    },
}

/// `; remote failed: local`: appended to the reason it follows.
impl fmt::Display for Afterwards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Afterwards::RemoteFailed => f.write_str("; remote failed: local"),
            Afterwards::Unsure {
                mean_logprob,
                floor,
                escalated,
            } => {
                write!(
                    f,
                    "; low confidence (mean logprob {mean_logprob:.2} < {floor:.2})"
                )?;
                f.write_str(if *escalated {
                    ": escalated"
                } else {
                    ", remote failed: local answer kept"
                })
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The models of a tier, tried in order.
    Tier(TierId),
    /// The model the client named.
    Named,
    /// Not answered.
    Refuse(Refusal),
}

/// Why a request is not answered; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 402: the tenant's budget is spent and its rule is `reject`.
    BudgetSpent,
    /// 400: the request holds private data and the rule is `reject`.
    PrivateData,
    /// 400: too long for the local model, and it may not (or cannot) leave.
    TooLongForLocal,
    /// 503: the local queue is full and the request may not (or cannot) spill.
    LocalBusy,
    /// 429: it must escalate, and the tenant's escalation cap is reached.
    EscalationCap,
    /// 503: it must escalate, and no remote provider has a key.
    NoRemote,
}

/// Why a request went where it went: a closed set, each printed for people.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// The complexity band. `lower` is the bound it reached (escalations), else `upper` the
    /// one it stayed under; `domain` when the bound is that domain's own.
    Complexity {
        complexity: f64,
        lower: Option<f64>,
        upper: Option<f64>,
        domain: Option<String>,
    },
    /// The router did not score the request: the lowest tier.
    Unscored,
    DomainEscalatesTo {
        domain: String,
        tier: String,
    },
    DomainRoute {
        domain: String,
        route: ForcedRoute,
    },
    StickyConversation {
        tier: String,
    },
    ClientForced(ForcedRoute),
    ClientNamedModel,
    LongContext {
        tokens: u64,
        local_window: u64,
    },
    Language {
        code: String,
    },
    PrivateData {
        rule: PrivateDataRule,
    },
    BudgetSpent {
        window: Window,
        action: BudgetAction,
    },
    EscalationCapReached {
        /// The share of escalated requests had this one escalated too.
        share_after: f64,
        cap: f64,
    },
    RemoteOff,
    LocalBusy {
        spilled: bool,
    },
}

impl Reason {
    /// A short fixed label, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Complexity { .. } => "complexity",
            Reason::Unscored => "unscored",
            Reason::DomainEscalatesTo { .. } | Reason::DomainRoute { .. } => "domain",
            Reason::StickyConversation { .. } => "sticky_conversation",
            Reason::ClientForced(_) => "client_forced",
            Reason::ClientNamedModel => "client_named_model",
            Reason::LongContext { .. } => "long_context",
            Reason::Language { .. } => "language",
            Reason::PrivateData { .. } => "private_data",
            Reason::BudgetSpent { .. } => "budget_spent",
            Reason::EscalationCapReached { .. } => "escalation_cap",
            Reason::RemoteOff => "remote_off",
            Reason::LocalBusy { .. } => "local_busy",
        }
    }
}

/// ASCII only: it goes into the `x-switchboard-reason` header.
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Complexity {
                complexity,
                lower,
                upper,
                domain,
            } => {
                match (lower, upper) {
                    (Some(lower), _) => write!(f, "complexity {complexity:.2} >= {lower:.2}")?,
                    (None, Some(upper)) => write!(f, "complexity {complexity:.2} < {upper:.2}")?,
                    (None, None) => write!(f, "complexity {complexity:.2}")?,
                }
                match domain {
                    Some(domain) => write!(f, " for domain {domain}"),
                    None => Ok(()),
                }
            }
            Reason::Unscored => f.write_str("not scored by the router: lowest tier"),
            Reason::DomainEscalatesTo { domain, tier } => {
                write!(f, "domain {domain} escalates to {tier}")
            }
            Reason::DomainRoute { domain, route } => {
                write!(f, "domain {domain} always {}", route.as_str())
            }
            Reason::StickyConversation { tier } => {
                write!(f, "conversation stays on {tier}")
            }
            Reason::ClientForced(route) => write!(f, "client forced {}", route.as_str()),
            Reason::ClientNamedModel => f.write_str("client named the model"),
            Reason::LongContext {
                tokens,
                local_window,
            } => write!(
                f,
                "{tokens} tokens exceed the local context of {local_window}"
            ),
            Reason::Language { code } => write!(f, "language {code} not served locally"),
            Reason::PrivateData { rule } => f.write_str(match rule {
                PrivateDataRule::LocalOnly => "private data found: local only",
                PrivateDataRule::Reject => "private data found: rejected",
                PrivateDataRule::Redact | PrivateDataRule::Allow => "private data found",
            }),
            Reason::BudgetSpent { window, action } => write!(
                f,
                "{} budget spent: {}",
                window.as_str(),
                match action {
                    BudgetAction::LocalOnly => "local only",
                    BudgetAction::Reject => "rejected",
                }
            ),
            Reason::EscalationCapReached { share_after, cap } => write!(
                f,
                "escalating would raise the share to {:.0}%, over the cap of {:.0}%: local",
                share_after * 100.0,
                cap * 100.0
            ),
            Reason::RemoteOff => f.write_str("remote tier off (no provider key): local"),
            Reason::LocalBusy { spilled: true } => f.write_str("local queue full: spill"),
            Reason::LocalBusy { spilled: false } => f.write_str("local queue full"),
        }
    }
}

/// Decides where one request goes, and what happens if its first answer fails or is unsure.
/// Pure: the same facts give the same decision.
pub fn decide(
    routing: &Routing,
    tenant: &TenantRules,
    request: &RequestFacts<'_>,
    state: &TenantState,
    capacity: Capacity,
) -> Decision {
    let Chosen {
        destination,
        reason,
        redact,
    } = choose(routing, tenant, request, state, capacity);
    let remote_tier = matches!(destination, Destination::Tier(tier) if !routing.is_local(tier));
    let local_fallback = remote_tier
        && routing.when_remote_fails == RemoteFailureRule::Local
        && request.context.fits_locally();
    let may_escalate = tenant.outlook(state).may_escalate;
    let cascade = cascade(routing, request, may_escalate, destination, &reason);
    Decision {
        destination,
        reason,
        redact,
        local_fallback,
        cascade,
    }
}

/// Where a request goes, why, and whether its private data is redacted.
struct Chosen {
    destination: Destination,
    reason: Reason,
    redact: bool,
}

/// The cascade of a local answer decided by its complexity band alone, when the policy has
/// one, the answer can be taken back (not streamed), its private data may leave, and one more
/// escalation fits under the tenant's cap.
fn cascade(
    routing: &Routing,
    request: &RequestFacts<'_>,
    may_escalate: bool,
    destination: Destination,
    reason: &Reason,
) -> Option<Cascade> {
    let floor = routing.cascade_min_mean_logprob?;
    let band_decided = matches!(reason, Reason::Complexity { .. } | Reason::Unscored);
    let local = matches!(destination, Destination::Tier(tier) if routing.is_local(tier));
    if !(band_decided && local && may_escalate) || request.stream {
        return None;
    }
    let private = request.private_data;
    if private && routing.private_data == PrivateDataRule::LocalOnly {
        return None;
    }
    let domain = request.scores.map(|s| s.domain);
    let tier = domain
        .and_then(|d| routing.domains.get(d))
        .and_then(|rule| rule.escalate_to)
        .or(routing.first_remote())?;
    Some(Cascade {
        floor,
        tier,
        redact: private && routing.private_data == PrivateDataRule::Redact,
    })
}

/// Steps 1 to 5 of the rules (see the module's documentation).
fn choose(
    routing: &Routing,
    tenant: &TenantRules,
    request: &RequestFacts<'_>,
    state: &TenantState,
    capacity: Capacity,
) -> Chosen {
    // The state is read only through its outlook (and the share for the reason's text), so
    // that states with one outlook get one decision.
    let outlook = tenant.outlook(state);
    let spent = tenant
        .budget
        .and_then(|b| outlook.spent.map(|w| (w, b.when_spent)));
    let refuse = |refusal, reason| Chosen {
        destination: Destination::Refuse(refusal),
        reason,
        redact: false,
    };

    // 1. Refusals nothing can avoid.
    if let Some((window, action @ BudgetAction::Reject)) = spent {
        return refuse(Refusal::BudgetSpent, Reason::BudgetSpent { window, action });
    }
    let private_rule = routing.private_data;
    if request.private_data && private_rule == PrivateDataRule::Reject {
        return refuse(
            Refusal::PrivateData,
            Reason::PrivateData { rule: private_rule },
        );
    }

    // 2. What must stay on this machine.
    let must_stay = if request.private_data && private_rule == PrivateDataRule::LocalOnly {
        Some(Reason::PrivateData { rule: private_rule })
    } else {
        spent.map(|(window, action)| Reason::BudgetSpent { window, action })
    };
    if let Some(reason) = must_stay {
        let destination = match request.asked {
            Asked::Named { local: true } => Destination::Named,
            _ if !request.context.fits_locally() => {
                return refuse(Refusal::TooLongForLocal, reason);
            }
            _ => Destination::Tier(routing.top_local()),
        };
        if capacity.local_busy {
            return refuse(Refusal::LocalBusy, reason);
        }
        return Chosen {
            destination,
            reason,
            redact: false,
        };
    }
    let redact_if_remote =
        |remote: bool| remote && request.private_data && private_rule == PrivateDataRule::Redact;

    // 3. The client named a model.
    if let Asked::Named { local } = request.asked {
        return Chosen {
            destination: Destination::Named,
            reason: Reason::ClientNamedModel,
            redact: redact_if_remote(!local),
        };
    }

    // 4. The preferred tier.
    let (preferred, reason) = preferred_tier(routing, tenant, request);

    // 5. Feasibility.
    let escalations = state.escalations;
    let may_escalate = || -> Result<(), Reason> {
        if !capacity.remote_available {
            Err(Reason::RemoteOff)
        } else if !outlook.may_escalate {
            Err(Reason::EscalationCapReached {
                share_after: escalations.share_with_one_more(),
                cap: tenant.escalation_cap.unwrap_or(1.0),
            })
        } else {
            Ok(())
        }
    };
    if !routing.is_local(preferred) {
        return match may_escalate() {
            Ok(()) => Chosen {
                destination: Destination::Tier(preferred),
                reason,
                redact: redact_if_remote(true),
            },
            Err(blocked) if !request.context.fits_locally() => {
                let refusal = match blocked {
                    Reason::RemoteOff => Refusal::NoRemote,
                    _ => Refusal::EscalationCap,
                };
                refuse(refusal, blocked)
            }
            Err(_) if capacity.local_busy => refuse(Refusal::LocalBusy, reason),
            Err(blocked) => Chosen {
                destination: Destination::Tier(routing.top_local()),
                reason: blocked,
                redact: false,
            },
        };
    }
    if capacity.local_busy {
        let spill = routing.when_local_busy == BusyRule::Spill;
        return match routing.first_remote() {
            Some(remote) if spill && may_escalate().is_ok() => Chosen {
                destination: Destination::Tier(remote),
                reason: Reason::LocalBusy { spilled: true },
                redact: redact_if_remote(true),
            },
            _ => refuse(Refusal::LocalBusy, Reason::LocalBusy { spilled: false }),
        };
    }
    Chosen {
        destination: Destination::Tier(preferred),
        reason,
        redact: false,
    }
}

/// Step 4: the tier a request for the routing model would go to with room everywhere.
fn preferred_tier(
    routing: &Routing,
    tenant: &TenantRules,
    request: &RequestFacts<'_>,
) -> (TierId, Reason) {
    let domain = request.scores.map(|s| s.domain);
    let rule = domain.and_then(|d| routing.domains.get(d).map(|rule| (d, rule)));
    let (band, band_reason) = match request.scores {
        Some(scores) => {
            let band = routing.band(scores.complexity, scores.domain);
            let reason = Reason::Complexity {
                complexity: scores.complexity,
                lower: band.lower,
                upper: band.upper,
                domain: band.domain_bound.then(|| scores.domain.to_owned()),
            };
            (band.tier, reason)
        }
        None => (TierId(0), Reason::Unscored),
    };
    // Where an escalation of this request goes: its domain's tier, else at least the first
    // remote one.
    let escalation = |at_least: TierId| -> TierId {
        match rule.and_then(|(_, r)| r.escalate_to) {
            Some(tier) => tier,
            None => routing.first_remote().map_or(at_least, |r| r.max(at_least)),
        }
    };

    if !request.context.fits_locally() && routing.long_context == LongContextRule::Remote {
        let reason = Reason::LongContext {
            tokens: request.context.tokens,
            local_window: request.context.local_window,
        };
        return (escalation(band), reason);
    }
    if tenant.may_force_route
        && let Some(route) = request.forced
    {
        let tier = match route {
            ForcedRoute::Local => routing.top_local(),
            ForcedRoute::Remote => escalation(band),
        };
        return (tier, Reason::ClientForced(route));
    }
    if let Some(code) = request.language
        && !routing.local_languages.is_empty()
        && !routing.local_languages.contains(code)
    {
        let reason = Reason::Language {
            code: code.to_owned(),
        };
        return (escalation(band), reason);
    }
    if let Some((domain, rule)) = rule
        && let Some(route) = rule.route
    {
        let tier = match route {
            ForcedRoute::Local => routing.top_local(),
            ForcedRoute::Remote => escalation(band),
        };
        let reason = Reason::DomainRoute {
            domain: domain.to_owned(),
            route,
        };
        return (tier, reason);
    }
    let (mut tier, mut reason) = (band, band_reason);
    if !routing.is_local(tier)
        && let Some((domain, rule)) = rule
        && let Some(to) = rule.escalate_to
    {
        tier = to;
        reason = Reason::DomainEscalatesTo {
            domain: domain.to_owned(),
            tier: routing.tier(to).name.clone(),
        };
    }
    if let Some(sticky) = request.sticky_tier
        && sticky > tier
        && sticky.0 < routing.tiers.len()
    {
        tier = sticky;
        reason = Reason::StickyConversation {
            tier: routing.tier(sticky).name.clone(),
        };
    }
    (tier, reason)
}
