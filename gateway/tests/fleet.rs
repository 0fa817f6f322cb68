//! Three replicas of the gateway sharing one real Redis, end to end over HTTP: one budget and
//! one rate limit hold across all of them, and a Redis outage refuses what it must (budgeted
//! tenants: 503) and nothing else, then heals without a restart.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fake_upstream::FakeUpstream;
use serde_json::{Value, json};
use support::redis_server::RedisServer;
use support::*;
use switchboard_gateway::keys::KeyHash;
use switchboard_gateway::shared_state::SharedState;
use switchboard_policies::Usd;
use switchboard_policies::tenant::calendar;

const SHARED_KEY: &str = "sk-shared-budget";
const RATED_KEY: &str = "sk-rated";

const HARD: &str = "Write a Python function that merges two sorted linked lists in O(n) time and explain its complexity.";

/// The daily budget of tenant `shared`: a few dozen escalations to `claude-test`.
const BUDGET_USD: f64 = 0.01;

/// The routed setup of `tests/routing.rs`, trimmed, as one replica of a fleet whose keys live
/// under `prefix`: tenant `shared` has a daily budget (refused once spent), tenant `rated` may
/// send 30 requests a minute.
fn replica_config(openai: &FakeUpstream, anthropic: &FakeUpstream, prefix: &str) -> String {
    let extra = format!(
        r#"  - name: shared
    api_key_hashes: ["{shared}"]
    allowed_models: ["*"]
    budget: {{ daily_usd: {BUDGET_USD}, when_spent: reject }}
  - name: rated
    api_key_hashes: ["{rated}"]
    allowed_models: ["*"]
    rate_limit: {{ requests_per_minute: 30 }}
local_models:
  - name: smollm2
    default_model: smollm2
{router}routing:
  reference_model: claude-test
  tiers:
    - {{ name: local, below: 0.35, targets: [smollm2] }}
    - {{ name: frontier, targets: [claude-test] }}
fleet:
  replicas: 3
  redis: {{ key_prefix: {prefix} }}
"#,
        shared = KeyHash::of(SHARED_KEY),
        rated = KeyHash::of(RATED_KEY),
        router = ROUTER_YAML,
    );
    config(openai, anthropic, &extra)
}

struct Fleet {
    replicas: Vec<TestGateway>,
    redis: RedisServer,
    _upstreams: (FakeUpstream, FakeUpstream),
}

async fn fleet_of_three() -> Fleet {
    let redis = RedisServer::start();
    let openai = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let anthropic = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let prefix = format!("fleet{:08x}", fastrand::u32(..));
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let config = replica_config(&openai, &anthropic, &prefix);
        let env = [("SWITCHBOARD_REDIS_URL", redis.url())];
        replicas.push(TestGateway::start_with_env(&config, &env).await);
    }
    Fleet {
        replicas,
        redis,
        _upstreams: (openai, anthropic),
    }
}

fn auto(text: &str) -> Value {
    json!({"model": "auto", "messages": [{"role": "user", "content": text}], "max_tokens": 8})
}

/// 200 escalations at once against one daily budget, spread over three replicas: the spend
/// passes the budget by less than one request's cost, and the ledgers, Redis and the cost
/// headers agree to the nano-dollar.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_budget_holds_across_three_replicas() {
    let fleet = fleet_of_three().await;
    let requests = (0..200).map(|i| {
        let replica = &fleet.replicas[i % 3];
        async move {
            let response = replica.chat(SHARED_KEY, &auto(HARD)).send().await.unwrap();
            let status = response.status().as_u16();
            let cost = response
                .headers()
                .get("x-switchboard-cost-usd")
                .map(|v| v.to_str().unwrap().parse::<f64>().unwrap());
            let body: Value = response.json().await.unwrap();
            (status, cost, body)
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    let answered: Vec<f64> = answers
        .iter()
        .filter(|(status, _, _)| *status == 200)
        .map(|(_, cost, _)| cost.expect("an answer carries its cost"))
        .collect();
    let refused = answers.iter().filter(|(status, ..)| *status == 402).count();
    let others: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| ![200, 402].contains(status))
        .collect();
    assert!(
        others.is_empty(),
        "only answers and 402s: {:?}",
        others.first()
    );
    assert_eq!(answered.len() + refused, 200);
    assert!(
        answered.len() >= 2,
        "the budget pays for several: {}",
        answered.len()
    );
    for (status, _, body) in answers.iter().filter(|(status, ..)| *status == 402) {
        assert_eq!(body["error"]["code"], "budget_exceeded", "{status}");
    }

    for replica in &fleet.replicas {
        replica.gateway.shared.settled().await;
    }
    let today = calendar::day(switchboard_gateway::api::unix_now());
    let shared: &Arc<SharedState> = &fleet.replicas[0].gateway.shared;
    let in_redis = shared.standing("shared", today).await.unwrap().spend.today;
    let mut in_ledgers = Usd::ZERO;
    let mut largest = Usd::ZERO;
    for replica in &fleet.replicas {
        for entry in replica.gateway.ledger.since(0) {
            let entry = entry.unwrap();
            if entry.tenant == "shared" {
                in_ledgers += entry.cost;
                largest = largest.max(entry.cost);
            }
        }
    }
    let in_headers: f64 = answered.iter().sum();
    assert_eq!(in_redis, in_ledgers, "Redis and the ledgers agree");
    assert!(
        (in_ledgers.as_dollars() - in_headers).abs() < 1e-9 * answered.len() as f64,
        "the headers sum to the ledgers' total: {in_headers} vs {}",
        in_ledgers.as_dollars()
    );
    // Estimates (at `max_tokens`) are held while requests run, so the answers' actual costs
    // may leave part of the budget unspent; they never pass it by more than one request.
    let budget = Usd::from_dollars(BUDGET_USD).unwrap();
    assert!(
        in_redis < budget + largest,
        "spent {in_redis:?}: over the budget by more than one request"
    );
}

/// 30 requests a minute for the whole fleet, not for each replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_rate_limit_holds_across_three_replicas() {
    let fleet = fleet_of_three().await;
    let mut admitted = 0;
    for i in 0..90 {
        let response = fleet.replicas[i % 3]
            .chat(RATED_KEY, &hello("gpt-test"))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => assert!(response.headers().contains_key("retry-after")),
            other => panic!("status {other}"),
        }
    }
    // The bucket refills one request every 2 s while the test runs.
    assert!((30..=31).contains(&admitted), "admitted {admitted}");
}

/// Redis goes away: the budgeted tenant gets 503 + Retry-After (its budget would not hold),
/// others are still answered and the rate limit falls back to each replica's share (a third
/// of 30); Redis comes back: all is answered again, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_fails_budgets_closed_and_heals() {
    let mut fleet = fleet_of_three().await;
    let replica = &fleet.replicas[0];
    let easy = hello("gpt-test");
    let answered = replica.chat(SHARED_KEY, &easy).send().await.unwrap();
    assert_eq!(answered.status(), 200);

    fleet.redis.kill();
    let refused = replica.chat(SHARED_KEY, &easy).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "state_store_unreachable");
    let other = replica.chat(ACME_KEY, &easy).send().await.unwrap();
    assert_eq!(other.status(), 200, "a tenant without limits is answered");
    let mut admitted = 0;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let status = replica
            .chat(RATED_KEY, &easy)
            .send()
            .await
            .unwrap()
            .status();
        admitted += u32::from(status == 200);
    }
    // The share refills one request every 6 s while the requests run.
    let refilled = started.elapsed().as_secs().div_ceil(6) as u32;
    assert!(
        (10..=10 + refilled).contains(&admitted),
        "this replica's share of 30 a minute: {admitted} admitted, {refilled} refilled"
    );
    let metrics = replica.metrics().await;
    assert!(
        metrics.contains("switchboard_state_store_up 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"switchboard_state_store_fallbacks_total{kind="budget_refused"} 1"#),
        "{metrics}"
    );

    fleet.redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = replica
            .chat(SHARED_KEY, &easy)
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        replica
            .metrics()
            .await
            .contains("switchboard_state_store_up 1")
    );
}

/// A replica decides from the last state Redis replied; when that guess is out of date (here:
/// it still counts the first request's estimate, which its actual cost has replaced since), the
/// reservation's check has the request decided again on the real state instead of refusing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_guess_is_decided_again_not_refused() {
    let fleet = fleet_of_three().await;
    let replica = &fleet.replicas[0];
    // An estimate at 1,000 completion tokens fills the budget; the answer costs far less.
    let mut big = auto(HARD);
    big["max_tokens"] = serde_json::json!(1000);
    let first = replica.chat(SHARED_KEY, &big).send().await.unwrap();
    assert_eq!(first.status(), 200);
    replica.gateway.shared.settled().await;
    let today = calendar::day(switchboard_gateway::api::unix_now());
    // Read through another replica, so that this one keeps its guess.
    let other = &fleet.replicas[1].gateway.shared;
    let spent = other.standing("shared", today).await.unwrap();
    assert!(
        spent.spend.today < Usd::from_dollars(BUDGET_USD).unwrap(),
        "{spent:?}"
    );

    let second = replica.chat(SHARED_KEY, &big).send().await.unwrap();
    assert_eq!(second.status(), 200, "{:?}", second.text().await);
}
