//! The shared state's contract (`gateway/src/shared_state/mod.rs`), checked on both stores:
//! the embedded one and the fleet's, on a real Redis server. Then what only a fleet has:
//! holds that lapse, a second replica that does not seed twice, and Redis going away.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::redis_server::RedisServer;
use switchboard_gateway::api::ChatMessage;
use switchboard_gateway::auth::{Authenticator, Tenant};
use switchboard_gateway::config::{Config, FleetConfig, TenantConfig};
use switchboard_gateway::conversations::ConversationKey;
use switchboard_gateway::metrics::Metrics;
use switchboard_gateway::shared_state::{
    Embedded, Fleet, Hold, Reserved, Restored, SharedState, Unreachable,
};
use switchboard_policies::TenantRules;
use switchboard_policies::decision::TenantState;
use switchboard_policies::tenant::{Budget, calendar};
use switchboard_policies::{Usd, spec::BudgetAction};

/// A day in the middle of a month (2024-10-04), so that the next one is in the same month.
const DAY: u64 = 20_000;

fn usd(dollars: f64) -> Usd {
    Usd::from_dollars(dollars).unwrap()
}

fn fleet_config(hold_ttl: f64, replicas: u32, prefix: &str) -> FleetConfig {
    let yaml = format!(
        "fleet:\n  replicas: {replicas}\n  hold_ttl: {hold_ttl}\n  redis: {{ key_prefix: {prefix}, timeout: 0.2 }}\nlimits: {{ request_timeout: 0.5 }}\n"
    );
    let config = Config::from_yaml(&yaml, "fleet test").expect("a valid fleet section");
    config.fleet.unwrap()
}

/// A fleet store on `redis`, its keys under a prefix of its own unless `prefix` is given
/// (replicas of one fleet share one).
fn fleet_on(
    redis: &RedisServer,
    prefix: Option<&str>,
    hold_ttl: f64,
    replicas: u32,
) -> Arc<SharedState> {
    let prefix = prefix.map_or_else(|| format!("t{:08x}", fastrand::u32(..)), str::to_owned);
    let url = redis.url();
    let env = move |var: &str| (var == "SWITCHBOARD_REDIS_URL").then(|| url.clone());
    let config = fleet_config(hold_ttl, replicas, &prefix);
    let metrics = Arc::new(Metrics::new());
    let fleet = Fleet::new(&config, Duration::from_millis(500), env, metrics).unwrap();
    Arc::new(SharedState::Fleet(fleet))
}

/// Runs `check` on the embedded store and on a fleet store.
async fn on_both(check: impl AsyncFn(Arc<SharedState>)) {
    eprintln!("on the embedded store");
    check(Arc::new(SharedState::Embedded(Embedded::default()))).await;
    let redis = RedisServer::start();
    eprintln!("on the fleet store");
    check(fleet_on(&redis, None, 30.0, 1)).await;
}

fn rules(daily: Option<f64>, cap: Option<f64>) -> TenantRules {
    TenantRules {
        budget: daily.map(|d| Budget {
            daily: Some(usd(d)),
            monthly: None,
            when_spent: BudgetAction::Reject,
        }),
        escalation_cap: cap,
        may_force_route: false,
    }
}

async fn standing(store: &SharedState, tenant: &str, day: u64) -> TenantState {
    store
        .standing(tenant, day)
        .await
        .expect("the store answers")
}

/// Decides like the policy would, on a fresh state each time the outlook moved: remote
/// (holding `estimate`) while the budget is open and the cap allows, else local for nothing.
async fn decide_and_reserve(
    store: &Arc<SharedState>,
    tenant: &str,
    rules: &TenantRules,
    estimate: Usd,
) -> (bool, switchboard_gateway::shared_state::Reservation) {
    let mut state = standing(store, tenant, DAY).await;
    loop {
        let outlook = rules.outlook(&state);
        let remote = outlook.spent.is_none() && outlook.may_escalate;
        let hold = Hold {
            outlook,
            estimate: if remote { estimate } else { Usd::ZERO },
            routed: Some(remote),
        };
        match store.reserve(tenant, DAY, rules, hold).await.unwrap() {
            Reserved::Held(reservation) => return (remote, reservation),
            Reserved::Changed(fresh) => state = fresh,
        }
    }
}

#[tokio::test]
async fn holds_count_until_settled_and_windows_roll() {
    on_both(async |store: Arc<SharedState>| {
        let none = rules(None, None);
        let seen = |s: &TenantState| none.outlook(s);
        let state = standing(&store, "a", DAY).await;
        let hold = Hold {
            outlook: seen(&state),
            estimate: usd(0.25),
            routed: Some(true),
        };
        let Reserved::Held(reservation) = store.reserve("a", DAY, &none, hold).await.unwrap()
        else {
            panic!("nothing changed between the read and the reservation");
        };
        let state = standing(&store, "a", DAY).await;
        assert_eq!(state.spend.today, usd(0.25));
        assert_eq!(state.spend.this_month, usd(0.25));
        assert_eq!(
            (state.escalations.routed, state.escalations.escalated),
            (1, 1)
        );

        reservation.settle(usd(0.1), DAY * 86_400 + 10);
        store.settled().await;
        assert_eq!(standing(&store, "a", DAY).await.spend.today, usd(0.1));

        // Dropped unsettled: the hold is released, nothing is spent.
        let hold = Hold {
            outlook: seen(&standing(&store, "a", DAY).await),
            estimate: usd(0.5),
            routed: None,
        };
        let Reserved::Held(dropped) = store.reserve("a", DAY, &none, hold).await.unwrap() else {
            panic!("held");
        };
        assert_eq!(standing(&store, "a", DAY).await.spend.today, usd(0.6));
        drop(dropped);
        store.settled().await;
        assert_eq!(standing(&store, "a", DAY).await.spend.today, usd(0.1));

        // A request answered locally that escalated after all counts as escalated.
        let hold = Hold {
            outlook: seen(&standing(&store, "a", DAY).await),
            estimate: Usd::ZERO,
            routed: Some(false),
        };
        let Reserved::Held(mut cascaded) = store.reserve("a", DAY, &none, hold).await.unwrap()
        else {
            panic!("held");
        };
        cascaded.escalate();
        cascaded.settle(Usd::ZERO, DAY * 86_400 + 20);
        store.settled().await;
        let state = standing(&store, "a", DAY).await;
        assert_eq!(
            (state.escalations.routed, state.escalations.escalated),
            (2, 2)
        );

        // Another tenant's standing is its own.
        assert_eq!(standing(&store, "b", DAY).await, TenantState::default());

        // The next day: the day's totals start again, the month's go on.
        let next = standing(&store, "a", DAY + 1).await;
        assert_eq!(next.spend.today, Usd::ZERO);
        assert_eq!(next.spend.this_month, usd(0.1));
        assert_eq!(next.escalations.routed, 0);
    })
    .await;
}

#[tokio::test]
async fn a_reservation_on_a_stale_outlook_holds_nothing_and_returns_the_state() {
    on_both(async |store: Arc<SharedState>| {
        let budget = rules(Some(1.0), None);
        let fresh = standing(&store, "a", DAY).await;
        let seen = budget.outlook(&fresh);
        let hold = Hold {
            outlook: seen,
            estimate: usd(1.0),
            routed: Some(true),
        };
        let Reserved::Held(first) = store.reserve("a", DAY, &budget, hold).await.unwrap() else {
            panic!("the first request fits");
        };
        // A second request decided on the same (now stale) state: the budget is spent since.
        let Reserved::Changed(now) = store.reserve("a", DAY, &budget, hold).await.unwrap() else {
            panic!("the outlook moved: nothing may be held");
        };
        assert_eq!(now.spend.today, usd(1.0));
        assert_eq!(now.escalations.routed, 1);
        assert_eq!(standing(&store, "a", DAY).await, now);
        drop(first);
        store.settled().await;
    })
    .await;
}

/// 40 requests at once against a $1 daily budget, $0.30 each: exactly the requests that found
/// the budget open hold (0, 0.3, 0.6, 0.9 spent before them: four), the rest are decided
/// again on a spent budget. The overspend is bounded by the last hold.
#[tokio::test]
async fn concurrent_requests_overspend_by_at_most_one_estimate() {
    on_both(async |store: Arc<SharedState>| {
        let budget = rules(Some(1.0), None);
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let store = store.clone();
                let budget = budget.clone();
                tokio::spawn(
                    async move { decide_and_reserve(&store, "a", &budget, usd(0.3)).await },
                )
            })
            .collect();
        let mut held = Vec::new();
        for task in tasks {
            held.push(task.await.unwrap());
        }
        let remote = held.iter().filter(|(remote, _)| *remote).count();
        assert_eq!(remote, 4);
        let state = standing(&store, "a", DAY).await;
        assert_eq!(state.spend.today, usd(1.2));
        for (remote, reservation) in held {
            let cost = if remote { usd(0.3) } else { Usd::ZERO };
            reservation.settle(cost, DAY * 86_400);
        }
        store.settled().await;
        assert_eq!(standing(&store, "a", DAY).await.spend.today, usd(1.2));
    })
    .await;
}

/// A cap of 25 %: however many arrive at once, no more than a quarter of the routed requests
/// escalate.
#[tokio::test]
async fn the_escalation_cap_holds_under_concurrency() {
    on_both(async |store: Arc<SharedState>| {
        let capped = rules(None, Some(0.25));
        let tasks: Vec<_> = (0..60)
            .map(|_| {
                let store = store.clone();
                let capped = capped.clone();
                tokio::spawn(
                    async move { decide_and_reserve(&store, "a", &capped, Usd::ZERO).await.0 },
                )
            })
            .collect();
        let mut escalated = 0;
        for task in tasks {
            escalated += u64::from(task.await.unwrap());
        }
        let state = standing(&store, "a", DAY).await;
        assert_eq!(state.escalations.routed, 60);
        assert_eq!(state.escalations.escalated, escalated);
        assert_eq!(escalated, 15, "a quarter of 60");
        store.settled().await;
    })
    .await;
}

fn opening(text: &str) -> Vec<ChatMessage> {
    serde_json::from_value(serde_json::json!([{"role": "user", "content": text}])).unwrap()
}

fn tenant_with_rate(per_minute: u32) -> Arc<Tenant> {
    let config = TenantConfig {
        name: format!("rated-{:08x}", fastrand::u32(..)),
        api_key_hashes: vec![],
        allowed_models: vec!["*".to_owned()],
        rate_limit: Some(switchboard_gateway::config::RateLimitConfig {
            requests_per_minute: per_minute,
        }),
        budget: None,
        max_escalation_share: None,
        may_force_route: false,
        admin: false,
    };
    Authenticator::new(&[config]).tenants()[0].clone()
}

#[tokio::test]
async fn a_rate_limit_admits_a_minutes_worth_then_one_per_interval() {
    on_both(async |store: Arc<SharedState>| {
        let tenant = tenant_with_rate(5);
        for _ in 0..5 {
            assert_eq!(store.admit(&tenant).await, Ok(()));
        }
        let wait = store.admit(&tenant).await.unwrap_err();
        // One request every 12 s refills the bucket.
        assert!(
            wait > Duration::from_secs(11) && wait <= Duration::from_secs(12),
            "{wait:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_conversations_tier_is_kept_for_its_time_to_live() {
    on_both(async |store: Arc<SharedState>| {
        let messages = opening("Plan the migration");
        let key = ConversationKey::of("a", None, &messages).unwrap();
        let other = ConversationKey::of("b", None, &messages).unwrap();
        assert_eq!(store.sticky_tier(key).await, None);
        store
            .stick(key, "frontier", Duration::from_millis(300))
            .await;
        assert_eq!(store.sticky_tier(key).await.as_deref(), Some("frontier"));
        assert_eq!(store.sticky_tier(other).await, None);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.sticky_tier(key).await, None);
    })
    .await;
}

#[tokio::test]
async fn restored_totals_count_in_their_windows() {
    on_both(async |store: Arc<SharedState>| {
        let restored = Restored {
            today: usd(0.5),
            this_month: usd(2.0),
            routed: 4,
            escalated: 1,
        };
        store.restore(&[("a".to_owned(), restored)], DAY).await;
        let state = standing(&store, "a", DAY).await;
        assert_eq!(state.spend.today, usd(0.5));
        assert_eq!(state.spend.this_month, usd(2.0));
        assert_eq!(
            (state.escalations.routed, state.escalations.escalated),
            (4, 1)
        );
    })
    .await;
}

/// What only a fleet has: a replica that dies leaves holds that lapse; a second replica does
/// not seed what the first did; a settle is counted once however often it is sent.
#[tokio::test]
async fn a_dead_replicas_holds_lapse_and_replicas_seed_once() {
    let redis = RedisServer::start();
    let prefix = format!("lapse{:08x}", fastrand::u32(..));
    let replica = fleet_on(&redis, Some(&prefix), 1.0, 2);
    let none = rules(None, None);
    let hold = Hold {
        outlook: none.outlook(&TenantState::default()),
        estimate: usd(3.0),
        routed: Some(true),
    };
    let Reserved::Held(reservation) = replica.reserve("a", DAY, &none, hold).await.unwrap() else {
        panic!("held");
    };
    // The replica dies: its reservation is never settled nor released.
    std::mem::forget(reservation);
    assert_eq!(standing(&replica, "a", DAY).await.spend.today, usd(3.0));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let other = fleet_on(&redis, Some(&prefix), 1.0, 2);
    let state = standing(&other, "a", DAY).await;
    assert_eq!(state.spend.today, Usd::ZERO, "the hold lapsed");
    assert_eq!(state.escalations.routed, 1, "the decision still counts");

    let restored = Restored {
        today: usd(1.0),
        this_month: usd(1.0),
        routed: 0,
        escalated: 0,
    };
    let today = calendar::day(switchboard_gateway::api::unix_now());
    replica.restore(&[("b".to_owned(), restored)], today).await;
    other.restore(&[("b".to_owned(), restored)], today).await;
    assert_eq!(standing(&other, "b", today).await.spend.today, usd(1.0));
}

/// Redis stops answering: reads fail (the planner refuses budgeted tenants with 503), rate
/// limits admit this replica's share (6 a minute over 3 replicas: 2), sticky tiers are
/// forgotten; when it is back, everything works again without a restart.
#[tokio::test]
async fn without_redis_limits_fall_back_and_recover() {
    let mut redis = RedisServer::start();
    let store = fleet_on(&redis, None, 30.0, 3);
    let tenant = tenant_with_rate(6);
    assert!(store.standing("a", DAY).await.is_ok());

    redis.kill();
    assert_eq!(store.standing("a", DAY).await, Err(Unreachable));
    let none = rules(None, None);
    let hold = Hold {
        outlook: none.outlook(&TenantState::default()),
        estimate: usd(1.0),
        routed: None,
    };
    assert!(matches!(
        store.reserve("a", DAY, &none, hold).await,
        Err(Unreachable)
    ));
    assert_eq!(store.admit(&tenant).await, Ok(()));
    assert_eq!(store.admit(&tenant).await, Ok(()));
    assert!(store.admit(&tenant).await.is_err(), "a third of 6");
    let messages = opening("x");
    let key = ConversationKey::of("a", None, &messages).unwrap();
    store.stick(key, "frontier", Duration::from_secs(60)).await;
    assert_eq!(store.sticky_tier(key).await, None);

    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.standing("a", DAY).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the store reconnects");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.admit(&tenant).await, Ok(()));
}

/// A paused Redis (`CLIENT PAUSE`) answers too late: calls give up at the timeout.
#[tokio::test]
async fn a_paused_redis_times_out_instead_of_hanging() {
    let redis = RedisServer::start();
    let store = fleet_on(&redis, None, 30.0, 1);
    assert!(store.standing("a", DAY).await.is_ok());
    redis.pause(Duration::from_millis(1_500));
    let started = std::time::Instant::now();
    assert_eq!(store.standing("a", DAY).await, Err(Unreachable));
    assert!(started.elapsed() < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.standing("a", DAY).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store answers again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
