//! Every rule of the decision and their precedence, one row each; then the invariants that
//! must hold whatever the facts (property tests).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use switchboard_policies::decision::{
    Asked, Capacity, ContextNeed, RequestFacts, Scores, TenantState,
};
use switchboard_policies::problems::KeyPath;
use switchboard_policies::spec::{BudgetAction, ForcedRoute, RoutingSpec};
use switchboard_policies::tenant::{Budget, EscalationCount, Spend};
use switchboard_policies::{
    Destination, ModelFacts, NoRemoteModel, Placement, Price, Reason, Refusal, Routing,
    TenantRules, TierId, Usd, decide,
};

const POLICY: &str = r#"
reference_model: frontier-model
tiers:
  - { name: local, below: 0.4, targets: [slm] }
  - { name: cheap, below: 0.75, targets: [cheap-model, cheap-backup] }
  - { name: frontier, below: 0.9, targets: [frontier-model] }
  - { name: reasoning, targets: [reasoning-model] }
domains:
  small_talk: { route: local }
  legal: { route: remote }
  finance: { below: { local: 0.2 } }
  math: { escalate_to: reasoning }
private_data: local_only
local_languages: [en, de]
"#;

fn models() -> BTreeMap<String, ModelFacts> {
    let remote = |price| ModelFacts {
        placement: Placement::Remote,
        price: Price::per_million_tokens(price, price * 4.0).unwrap(),
        context_window: None,
    };
    let windowed = |price, window| ModelFacts {
        context_window: Some(window),
        ..remote(price)
    };
    BTreeMap::from([
        (
            "slm".to_owned(),
            ModelFacts {
                placement: Placement::Local,
                price: Price::FREE,
                context_window: None,
            },
        ),
        ("cheap-model".to_owned(), windowed(0.15, 16_000)),
        ("cheap-backup".to_owned(), windowed(0.8, 32_000)),
        ("frontier-model".to_owned(), remote(2.5)),
        ("reasoning-model".to_owned(), remote(1.1)),
    ])
}

fn domains() -> BTreeSet<String> {
    ["small_talk", "legal", "finance", "math", "it_helpdesk"]
        .map(String::from)
        .into()
}

fn routing_from(text: &str) -> Result<Routing, Vec<String>> {
    let spec: RoutingSpec = serde_yaml::from_str(text).unwrap();
    Routing::build(
        &spec,
        &KeyPath::root().key("routing"),
        &models(),
        Some(&domains()),
    )
    .map_err(|problems| problems.iter().map(ToString::to_string).collect())
}

fn routing() -> Routing {
    routing_from(POLICY).unwrap()
}

const LOCAL: TierId = TierId(0);
const CHEAP: TierId = TierId(1);
const FRONTIER: TierId = TierId(2);
const REASONING: TierId = TierId(3);

fn facts(complexity: f64, domain: &'static str) -> RequestFacts<'static> {
    RequestFacts {
        asked: Asked::Routing,
        scores: Some(Scores { complexity, domain }),
        language: Some("en"),
        private_data: false,
        context: ContextNeed {
            tokens: 500,
            local_window: 8192,
        },
        forced: None,
        sticky_tier: None,
        stream: false,
    }
}

const ROOM: Capacity = Capacity {
    local_busy: false,
    remote_available: true,
};

fn rules() -> TenantRules {
    TenantRules {
        budget: Some(Budget {
            daily: Some(Usd::from_dollars(1.0).unwrap()),
            monthly: None,
            when_spent: BudgetAction::LocalOnly,
        }),
        escalation_cap: None,
        may_force_route: true,
    }
}

/// A tenant whose escalations may be a quarter of its routed requests, and a state at that
/// cap (one more would make it 2 of 4).
fn capped() -> TenantRules {
    TenantRules {
        escalation_cap: Some(0.25),
        ..rules()
    }
}

fn at_cap() -> TenantState {
    TenantState {
        escalations: EscalationCount {
            routed: 3,
            escalated: 1,
        },
        ..TenantState::default()
    }
}

fn spent() -> TenantState {
    TenantState {
        spend: Spend {
            today: Usd::from_dollars(1.0).unwrap(),
            this_month: Usd::from_dollars(1.0).unwrap(),
        },
        escalations: EscalationCount::default(),
    }
}

struct Row {
    name: &'static str,
    request: RequestFacts<'static>,
    tenant: TenantRules,
    state: TenantState,
    capacity: Capacity,
    target: Destination,
    reason: &'static str,
}

fn row(
    name: &'static str,
    request: RequestFacts<'static>,
    target: Destination,
    reason: &'static str,
) -> Row {
    Row {
        name,
        request,
        tenant: rules(),
        state: TenantState::default(),
        capacity: ROOM,
        target,
        reason,
    }
}

#[test]
fn every_rule_and_its_precedence() {
    let long = ContextNeed {
        tokens: 9000,
        local_window: 8192,
    };
    let with = |mut f: RequestFacts<'static>, change: &dyn Fn(&mut RequestFacts<'static>)| {
        change(&mut f);
        f
    };
    let reject_budget = TenantRules {
        budget: Some(Budget {
            when_spent: BudgetAction::Reject,
            ..rules().budget.unwrap()
        }),
        ..rules()
    };
    let (capped, at_cap) = (capped(), at_cap());
    let no_force = TenantRules {
        may_force_route: false,
        ..rules()
    };
    let busy = Capacity {
        local_busy: true,
        remote_available: true,
    };
    let remote_off = Capacity {
        local_busy: false,
        remote_available: false,
    };
    let rows = vec![
        // The complexity bands.
        row(
            "low complexity",
            facts(0.1, "it_helpdesk"),
            Destination::Tier(LOCAL),
            "complexity 0.10 < 0.40",
        ),
        row(
            "middle band",
            facts(0.5, "it_helpdesk"),
            Destination::Tier(CHEAP),
            "complexity 0.50 >= 0.40",
        ),
        row(
            "on a bound",
            facts(0.75, "it_helpdesk"),
            Destination::Tier(FRONTIER),
            "complexity 0.75 >= 0.75",
        ),
        row(
            "top band",
            facts(0.95, "it_helpdesk"),
            Destination::Tier(REASONING),
            "complexity 0.95 >= 0.90",
        ),
        row(
            "domain's own bound",
            facts(0.3, "finance"),
            Destination::Tier(CHEAP),
            "complexity 0.30 >= 0.20 for domain finance",
        ),
        row(
            "under the domain's bound",
            facts(0.1, "finance"),
            Destination::Tier(LOCAL),
            "complexity 0.10 < 0.20 for domain finance",
        ),
        row(
            "domain escalates to its tier",
            facts(0.5, "math"),
            Destination::Tier(REASONING),
            "domain math escalates to reasoning",
        ),
        row(
            "easy math stays local",
            facts(0.1, "math"),
            Destination::Tier(LOCAL),
            "complexity 0.10 < 0.40",
        ),
        row(
            "domain always local",
            facts(0.99, "small_talk"),
            Destination::Tier(LOCAL),
            "domain small_talk always local",
        ),
        row(
            "domain always remote",
            facts(0.01, "legal"),
            Destination::Tier(CHEAP),
            "domain legal always remote",
        ),
        row(
            "unscored",
            with(facts(0.0, "x"), &|f| f.scores = None),
            Destination::Tier(LOCAL),
            "not scored by the router: lowest tier",
        ),
        // Language, context, stickiness, the client.
        row(
            "language not served",
            with(facts(0.1, "it_helpdesk"), &|f| f.language = Some("fr")),
            Destination::Tier(CHEAP),
            "language fr not served locally",
        ),
        row(
            "language served",
            with(facts(0.1, "it_helpdesk"), &|f| f.language = Some("de")),
            Destination::Tier(LOCAL),
            "complexity 0.10 < 0.40",
        ),
        row(
            "long context",
            with(facts(0.1, "small_talk"), &|f| f.context = long),
            Destination::Tier(CHEAP),
            "9000 tokens exceed the local context of 8192",
        ),
        row(
            "long hard context keeps its band",
            with(facts(0.8, "it_helpdesk"), &|f| f.context = long),
            Destination::Tier(FRONTIER),
            "9000 tokens exceed the local context of 8192",
        ),
        row(
            "sticky conversation",
            with(facts(0.1, "it_helpdesk"), &|f| {
                f.sticky_tier = Some(FRONTIER)
            }),
            Destination::Tier(FRONTIER),
            "conversation stays on frontier",
        ),
        row(
            "sticky never lowers",
            with(facts(0.8, "it_helpdesk"), &|f| f.sticky_tier = Some(CHEAP)),
            Destination::Tier(FRONTIER),
            "complexity 0.80 >= 0.75",
        ),
        row(
            "client forces local",
            with(facts(0.8, "legal"), &|f| {
                f.forced = Some(ForcedRoute::Local)
            }),
            Destination::Tier(LOCAL),
            "client forced local",
        ),
        row(
            "client forces remote",
            with(facts(0.1, "small_talk"), &|f| {
                f.forced = Some(ForcedRoute::Remote)
            }),
            Destination::Tier(CHEAP),
            "client forced remote",
        ),
        Row {
            tenant: no_force.clone(),
            ..row(
                "forcing needs the tenant's leave",
                with(facts(0.1, "it_helpdesk"), &|f| {
                    f.forced = Some(ForcedRoute::Remote)
                }),
                Destination::Tier(LOCAL),
                "complexity 0.10 < 0.40",
            )
        },
        row(
            "long context beats forced local",
            with(facts(0.1, "it_helpdesk"), &|f| {
                f.forced = Some(ForcedRoute::Local);
                f.context = long;
            }),
            Destination::Tier(CHEAP),
            "9000 tokens exceed the local context of 8192",
        ),
        row(
            "named remote model",
            with(facts(0.1, "it_helpdesk"), &|f| {
                f.asked = Asked::Named { local: false }
            }),
            Destination::Named,
            "client named the model",
        ),
        // Private data.
        row(
            "private data stays local",
            with(facts(0.9, "legal"), &|f| f.private_data = true),
            Destination::Tier(LOCAL),
            "private data found: local only",
        ),
        row(
            "private data beats a named remote model",
            with(facts(0.9, "it_helpdesk"), &|f| {
                f.private_data = true;
                f.asked = Asked::Named { local: false };
            }),
            Destination::Tier(LOCAL),
            "private data found: local only",
        ),
        row(
            "private data beats forced remote",
            with(facts(0.9, "it_helpdesk"), &|f| {
                f.private_data = true;
                f.forced = Some(ForcedRoute::Remote);
            }),
            Destination::Tier(LOCAL),
            "private data found: local only",
        ),
        row(
            "private data too long for local",
            with(facts(0.9, "it_helpdesk"), &|f| {
                f.private_data = true;
                f.context = long;
            }),
            Destination::Refuse(Refusal::TooLongForLocal),
            "private data found: local only",
        ),
        // Budgets.
        Row {
            state: spent(),
            ..row(
                "budget spent: local only",
                facts(0.9, "it_helpdesk"),
                Destination::Tier(LOCAL),
                "daily budget spent: local only",
            )
        },
        Row {
            state: spent(),
            ..row(
                "budget spent, named local model",
                with(facts(0.9, "it_helpdesk"), &|f| {
                    f.asked = Asked::Named { local: true }
                }),
                Destination::Named,
                "daily budget spent: local only",
            )
        },
        Row {
            state: spent(),
            tenant: reject_budget.clone(),
            ..row(
                "budget spent: reject",
                facts(0.1, "it_helpdesk"),
                Destination::Refuse(Refusal::BudgetSpent),
                "daily budget spent: rejected",
            )
        },
        Row {
            state: spent(),
            tenant: reject_budget,
            ..row(
                "a spent budget's 402 beats private data",
                with(facts(0.1, "it_helpdesk"), &|f| f.private_data = true),
                Destination::Refuse(Refusal::BudgetSpent),
                "daily budget spent: rejected",
            )
        },
        // Escalation cap, remote off.
        Row {
            state: at_cap,
            tenant: capped.clone(),
            ..row(
                "escalation cap reached",
                facts(0.9, "it_helpdesk"),
                Destination::Tier(LOCAL),
                "escalating would raise the share to 50%, over the cap of 25%: local",
            )
        },
        Row {
            state: TenantState {
                escalations: EscalationCount {
                    routed: 7,
                    escalated: 1,
                },
                ..TenantState::default()
            },
            tenant: capped.clone(),
            ..row(
                "under the cap",
                facts(0.9, "it_helpdesk"),
                Destination::Tier(REASONING),
                "complexity 0.90 >= 0.90",
            )
        },
        Row {
            state: at_cap,
            tenant: capped,
            ..row(
                "cap reached and too long for local",
                with(facts(0.9, "it_helpdesk"), &|f| f.context = long),
                Destination::Refuse(Refusal::EscalationCap),
                "escalating would raise the share to 50%, over the cap of 25%: local",
            )
        },
        Row {
            capacity: remote_off,
            ..row(
                "remote off",
                facts(0.9, "it_helpdesk"),
                Destination::Tier(LOCAL),
                "remote tier off (no provider key): local",
            )
        },
        Row {
            capacity: remote_off,
            ..row(
                "remote off and too long",
                with(facts(0.1, "it_helpdesk"), &|f| f.context = long),
                Destination::Refuse(Refusal::NoRemote),
                "remote tier off (no provider key): local",
            )
        },
        // A busy local model.
        Row {
            capacity: busy,
            ..row(
                "local busy: spill",
                facts(0.1, "it_helpdesk"),
                Destination::Tier(CHEAP),
                "local queue full: spill",
            )
        },
        Row {
            capacity: busy,
            ..row(
                "local busy, private data: 503",
                with(facts(0.1, "it_helpdesk"), &|f| f.private_data = true),
                Destination::Refuse(Refusal::LocalBusy),
                "private data found: local only",
            )
        },
        Row {
            capacity: busy,
            state: spent(),
            ..row(
                "local busy, budget spent: 503",
                facts(0.1, "it_helpdesk"),
                Destination::Refuse(Refusal::LocalBusy),
                "daily budget spent: local only",
            )
        },
        Row {
            capacity: Capacity {
                local_busy: true,
                remote_available: false,
            },
            ..row(
                "local busy, remote off: 503",
                facts(0.1, "it_helpdesk"),
                Destination::Refuse(Refusal::LocalBusy),
                "local queue full",
            )
        },
        Row {
            capacity: busy,
            ..row(
                "busy local does not matter to remote",
                facts(0.9, "it_helpdesk"),
                Destination::Tier(REASONING),
                "complexity 0.90 >= 0.90",
            )
        },
    ];
    let routing = routing();
    for row in rows {
        let decision = decide(
            &routing,
            &row.tenant,
            &row.request,
            &row.state,
            row.capacity,
        );
        assert_eq!(
            decision.destination, row.target,
            "{}: {decision:?}",
            row.name
        );
        assert_eq!(decision.reason.to_string(), row.reason, "{}", row.name);
        assert!(!decision.redact, "{}", row.name);
    }
}

#[test]
fn private_data_is_redacted_only_when_it_leaves() {
    let text = POLICY.replace("private_data: local_only", "private_data: redact");
    let routing = routing_from(&text).unwrap();
    let mut request = facts(0.9, "it_helpdesk");
    request.private_data = true;
    let state = TenantState::default();
    let decision = decide(&routing, &rules(), &request, &state, ROOM);
    assert_eq!(decision.destination, Destination::Tier(REASONING));
    assert!(decision.redact);
    request.scores = Some(Scores {
        complexity: 0.1,
        domain: "it_helpdesk",
    });
    let decision = decide(&routing, &rules(), &request, &state, ROOM);
    assert_eq!(decision.destination, Destination::Tier(LOCAL));
    assert!(!decision.redact);

    let rejecting = text.replace("private_data: redact", "private_data: reject");
    let routing = routing_from(&rejecting).unwrap();
    let decision = decide(&routing, &rules(), &request, &state, ROOM);
    assert_eq!(
        decision.destination,
        Destination::Refuse(Refusal::PrivateData)
    );
}

#[test]
fn every_problem_of_a_routing_section_is_reported() {
    // The last two tiers' bounds swapped, and a domain bound above the next tier's.
    let swapped = POLICY
        .replace(
            "{ name: frontier, below: 0.9, targets",
            "{ name: frontier, targets",
        )
        .replace(
            "{ name: reasoning, targets",
            "{ name: reasoning, below: 0.9, targets",
        )
        .replace("below: { local: 0.2 }", "below: { local: 0.8 }");
    let problems = routing_from(&swapped).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("routing.tiers[2]: a tier before the last needs `below`"));
    assert!(problems[1].starts_with("routing.tiers[3].below: the last tier has a bound"));
    assert!(
        problems[2]
            .starts_with("routing.domains.finance.below: with these bounds the bands overlap")
    );

    let broken = r#"
model: slm
reference_model: nope
tiers:
  - { name: remote, below: 0.5, targets: [cheap-model, ghost] }
  - { name: remote, below: 1.5, targets: [slm, cheap-model] }
  - { name: top, targets: [] }
domains:
  astrology: { route: local }
  math: { escalate_to: remote, below: { top: 0.5, nowhere: 2 } }
local_languages: [EN]
sticky_conversations: { ttl: 0 }
cascade: { min_mean_logprob: 0.5 }
"#;
    let problems = routing_from(broken).unwrap_err();
    let expected = [
        "routing.model: 'slm' is also a configured model's name",
        "routing.reference_model: 'nope' is not a configured model (hint: configured models: cheap-backup, cheap-model, frontier-model, reasoning-model, slm)",
        "routing.tiers[0].targets[1]: 'ghost' is not a configured model",
        "routing.tiers[1].name: tier name 'remote' is used twice",
        "routing.tiers[1].below: 1.5 is out of range",
        "routing.tiers[1].targets: mixes local and remote models",
        "routing.tiers[2].targets: no targets",
        "routing.tiers[0]: the first tier is not local",
        "routing.tiers[1]: a local tier above a remote one",
        "routing.domains.astrology: 'astrology' is not a domain",
        "routing.domains.math.below.nowhere: 'nowhere' is not a tier",
        "routing.domains.math.below.nowhere: 2 is out of range",
        "routing.domains.math.below.top: the last tier has no bound",
        "routing.local_languages[0]: 'EN' is not a language code",
        "routing.sticky_conversations.ttl: 0 is not a duration",
        "routing.cascade.min_mean_logprob: 0.5 is not a log-probability floor",
    ];
    for wanted in expected {
        assert!(
            problems.iter().any(|p| p.starts_with(wanted)),
            "missing {wanted:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}

#[test]
fn the_reference_price_is_the_reference_models() {
    let routing = routing();
    assert_eq!(routing.reference_model, "frontier-model");
    assert_eq!(
        routing.reference_price.cost(1_000_000, 0),
        Usd::from_dollars(2.5).unwrap()
    );
}

/// The policy with what comes after the first answer: the confidence cascade and the local
/// fallback.
fn routing_with_afterwards() -> Routing {
    let text = format!("{POLICY}cascade: {{ min_mean_logprob: -1.0 }}\nwhen_remote_fails: local\n");
    routing_from(&text).unwrap()
}

#[test]
fn a_band_decided_local_answer_may_cascade_and_a_remote_one_may_fall_back() {
    let routing = routing_with_afterwards();
    let decide_for = |request: &RequestFacts<'_>, state: &TenantState| {
        decide(&routing, &rules(), request, state, ROOM)
    };
    let easy = decide_for(&facts(0.1, "it_helpdesk"), &TenantState::default());
    assert_eq!(easy.destination, Destination::Tier(LOCAL));
    let cascade = easy.cascade.expect("a band-decided local answer cascades");
    assert_eq!(
        (cascade.floor, cascade.tier, cascade.redact),
        (-1.0, CHEAP, false)
    );
    assert!(!easy.local_fallback);

    // To the domain's own tier; not for a stream, a rule that keeps it local, private data
    // that must stay, or a tenant at its escalation cap.
    let math = decide_for(&facts(0.1, "math"), &TenantState::default());
    assert_eq!(math.cascade.map(|c| c.tier), Some(REASONING));
    let stream = RequestFacts {
        stream: true,
        ..facts(0.1, "it_helpdesk")
    };
    assert_eq!(decide_for(&stream, &TenantState::default()).cascade, None);
    let small_talk = decide_for(&facts(0.1, "small_talk"), &TenantState::default());
    assert_eq!(
        (small_talk.destination, small_talk.cascade),
        (Destination::Tier(LOCAL), None)
    );
    let private = RequestFacts {
        private_data: true,
        ..facts(0.1, "it_helpdesk")
    };
    assert_eq!(decide_for(&private, &TenantState::default()).cascade, None);
    let (capped, at_cap) = (capped(), at_cap());
    let request = facts(0.1, "it_helpdesk");
    assert_eq!(
        decide(&routing, &capped, &request, &at_cap, ROOM).cascade,
        None
    );
    // Redacted on its way out where the policy redacts.
    let redacting = POLICY.replace("private_data: local_only", "private_data: redact")
        + "cascade: { min_mean_logprob: -1.0 }\n";
    let redacting = routing_from(&redacting).unwrap();
    let decision = decide(
        &redacting,
        &rules(),
        &private,
        &TenantState::default(),
        ROOM,
    );
    assert_eq!(decision.cascade.map(|c| c.redact), Some(true));

    // A remote answer falls back to the local tier when the request fits it.
    let hard = decide_for(&facts(0.8, "it_helpdesk"), &TenantState::default());
    assert_eq!(hard.destination, Destination::Tier(FRONTIER));
    assert!(hard.local_fallback);
    assert_eq!(hard.cascade, None);
    let long = RequestFacts {
        context: ContextNeed {
            tokens: 9000,
            local_window: 8192,
        },
        ..facts(0.8, "it_helpdesk")
    };
    assert!(!decide_for(&long, &TenantState::default()).local_fallback);
    // Not where the policy says so (the default routing fails instead).
    let failing = routing_from(&POLICY.replace(
        "private_data: local_only",
        "when_remote_fails: fail\nprivate_data: local_only",
    ))
    .unwrap();
    let decision = decide(
        &failing,
        &rules(),
        &facts(0.8, "it_helpdesk"),
        &TenantState::default(),
        ROOM,
    );
    assert!(!decision.local_fallback);
}

#[test]
fn remote_models_skip_keyless_and_too_small_models_then_move_up_a_tier() {
    let routing = routing();
    let all = |_: &str| true;
    assert_eq!(
        routing.remote_models(CHEAP, 1_000, all),
        Ok(vec!["cheap-model", "cheap-backup"])
    );
    assert_eq!(
        routing.remote_models(CHEAP, 20_000, all),
        Ok(vec!["cheap-backup"])
    );
    // Beyond both windows of the tier: the next tier up, whose model gives no window.
    assert_eq!(
        routing.remote_models(CHEAP, 40_000, all),
        Ok(vec!["frontier-model"])
    );
    let keyless_backup = |m: &str| m != "cheap-backup";
    assert_eq!(
        routing.remote_models(CHEAP, 20_000, keyless_backup),
        Ok(vec!["frontier-model"])
    );
    let cheap_only = |m: &str| m.starts_with("cheap");
    assert_eq!(
        routing.remote_models(CHEAP, 40_000, cheap_only),
        Err(NoRemoteModel::TooLong)
    );
    assert_eq!(
        routing.remote_models(FRONTIER, 10, cheap_only),
        Err(NoRemoteModel::NoKey)
    );
}

/// Any request facts the router and the gateway could produce.
fn any_request() -> impl Strategy<Value = RequestFacts<'static>> {
    let domains = prop::sample::select(vec![
        "small_talk",
        "legal",
        "finance",
        "math",
        "it_helpdesk",
        "coding",
    ]);
    let languages = prop::sample::select(vec![None, Some("en"), Some("de"), Some("fr")]);
    let forced = prop::sample::select(vec![
        None,
        Some(ForcedRoute::Local),
        Some(ForcedRoute::Remote),
    ]);
    let asked = prop::sample::select(vec![
        Asked::Routing,
        Asked::Routing,
        Asked::Named { local: true },
        Asked::Named { local: false },
    ]);
    (
        asked,
        prop::option::weighted(0.9, (0.0..=1.0f64, domains)),
        languages,
        any::<bool>(),
        0u64..12_000,
        forced,
        prop::option::of(0usize..4),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(asked, scores, language, private_data, tokens, forced, sticky, stream)| {
                RequestFacts {
                    asked,
                    scores: scores.map(|(complexity, domain)| Scores { complexity, domain }),
                    language,
                    private_data,
                    context: ContextNeed {
                        tokens,
                        local_window: 8192,
                    },
                    forced,
                    sticky_tier: sticky.map(TierId),
                    stream,
                }
            },
        )
}

fn any_capacity() -> impl Strategy<Value = Capacity> {
    (prop::bool::weighted(0.2), prop::bool::weighted(0.9)).prop_map(
        |(local_busy, remote_available)| Capacity {
            local_busy,
            remote_available,
        },
    )
}

fn leaves(routing: &Routing, decision: &switchboard_policies::Decision, asked: Asked) -> bool {
    match decision.destination {
        Destination::Tier(tier) => routing.tiers[tier.0].placement == Placement::Remote,
        Destination::Named => asked == (Asked::Named { local: false }),
        Destination::Refuse(_) => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// A tenant whose budget is spent under `local_only` is never sent remote, and never
    /// refused for its budget.
    #[test]
    fn a_spent_local_only_tenant_never_leaves(request in any_request(), capacity in any_capacity()) {
        let routing = routing();
        let decision = decide(&routing, &rules(), &request, &spent(), capacity);
        prop_assert!(!leaves(&routing, &decision, request.asked), "{decision:?}");
        prop_assert_ne!(decision.destination, Destination::Refuse(Refusal::BudgetSpent));
    }

    /// Private data under `local_only` never leaves, whatever else is true.
    #[test]
    fn private_data_never_leaves(mut request in any_request(), capacity in any_capacity(), spend in 0.0..2.0f64) {
        request.private_data = true;
        let routing = routing();
        let state = TenantState { spend: Spend { today: Usd::from_dollars(spend).unwrap(), this_month: Usd::ZERO }, ..TenantState::default() };
        let decision = decide(&routing, &rules(), &request, &state, capacity);
        prop_assert!(!leaves(&routing, &decision, request.asked), "{decision:?}");
        prop_assert!(!decision.redact);
    }

    /// Private data under `local_only` is never cascaded away either.
    #[test]
    fn private_data_never_cascades_away(mut request in any_request(), capacity in any_capacity()) {
        request.private_data = true;
        let decision = decide(&routing_with_afterwards(), &rules(), &request, &TenantState::default(), capacity);
        prop_assert_eq!(decision.cascade, None);
    }

    /// A cascade only follows a local answer that its complexity band decided and that can be
    /// taken back, and goes to a remote tier; a local fallback only backs a remote tier, for a
    /// request that fits the local window.
    #[test]
    fn cascades_and_fallbacks_back_only_what_they_may(request in any_request(), capacity in any_capacity()) {
        let routing = routing_with_afterwards();
        let decision = decide(&routing, &rules(), &request, &TenantState::default(), capacity);
        if let Some(cascade) = decision.cascade {
            prop_assert!(matches!(decision.destination, Destination::Tier(t) if routing.is_local(t)), "{decision:?}");
            let band_decided = matches!(decision.reason, Reason::Complexity { .. } | Reason::Unscored);
            prop_assert!(band_decided, "{:?}", decision.reason);
            prop_assert!(!request.stream);
            prop_assert!(!routing.is_local(cascade.tier));
        }
        if decision.local_fallback {
            prop_assert!(matches!(decision.destination, Destination::Tier(t) if !routing.is_local(t)), "{decision:?}");
            prop_assert!(request.context.fits_locally());
        }
    }

    /// Over any sequence of routed requests, the share that escalated never exceeds the cap,
    /// at any point, counting the answers the cascade escalated (`unsure`).
    #[test]
    fn the_escalation_share_never_exceeds_the_cap(
        requests in prop::collection::vec((any_request(), any_capacity(), any::<bool>()), 1..200),
        cap in 0.0..=1.0f64,
    ) {
        let routing = routing_with_afterwards();
        let tenant = TenantRules { escalation_cap: Some(cap), ..rules() };
        let mut state = TenantState::default();
        for (mut request, capacity, unsure) in requests {
            request.asked = Asked::Routing;
            let decision = decide(&routing, &tenant, &request, &state, capacity);
            if let Destination::Tier(tier) = decision.destination {
                state.escalations.routed += 1;
                let cascaded = decision.cascade.is_some() && unsure;
                if routing.tiers[tier.0].placement == Placement::Remote || cascaded {
                    state.escalations.escalated += 1;
                }
            }
            prop_assert!(
                state.escalations.escalated as f64 <= cap * state.escalations.routed as f64 + 1e-9,
                "{:?} over the cap {cap}", state.escalations
            );
        }
    }

    /// A decision is a function of its inputs, and never panics on them.
    #[test]
    fn the_same_facts_give_the_same_decision(request in any_request(), capacity in any_capacity()) {
        let routing = routing();
        let a = decide(&routing, &rules(), &request, &TenantState::default(), capacity);
        let b = decide(&routing, &rules(), &request, &TenantState::default(), capacity);
        prop_assert_eq!(a, b);
    }
}
