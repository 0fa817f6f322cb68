//! Requests for `auto` routed by the policy, end to end: the real router scores them, the real
//! local model answers what stays here, the fake upstreams stand in for the cloud.

mod support;

use std::time::Duration;

use fake_upstream::{Behaviour, FakeUpstream};
use serde_json::{Value, json};
use support::*;
use switchboard_gateway::keys::KeyHash;
use switchboard_gateway::ledger::Ledger;

const THRIFTY_KEY: &str = "sk-thrifty-test";
const FRUGAL_KEY: &str = "sk-frugal-test";

const EASY: &str = "How do I reset my VPN password?";
const HARD: &str = "Write a Python function that merges two sorted linked lists in O(n) time and explain its complexity.";

/// The standard fakes and models, the local SLM and the router, and a policy of three tiers:
/// `smollm2` below 0.35, `solo` (OpenAI fake) below 0.7, `claude-test` (Anthropic fake) above,
/// with `claude-test` as the reference. Two more tenants with a budget of a millionth of a
/// dollar a day: `thrifty` is refused once it is spent, `frugal` is kept local (and may force
/// a route, and is an admin: it may read every tenant's usage).
async fn routed_gateway(
    private_data: &str,
    queue_capacity: usize,
) -> (TestGateway, FakeUpstream, FakeUpstream) {
    let openai = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let anthropic = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let config = routed_config(&openai, &anthropic, private_data, queue_capacity);
    let gateway = TestGateway::start(&config).await;
    (gateway, openai, anthropic)
}

fn routed_config(
    openai: &FakeUpstream,
    anthropic: &FakeUpstream,
    private_data: &str,
    queue_capacity: usize,
) -> String {
    let extra = format!(
        r#"  - name: thrifty
    api_key_hashes: ["{thrifty}"]
    allowed_models: ["*"]
    budget: {{ daily_usd: 0.000001, when_spent: reject }}
  - name: frugal
    api_key_hashes: ["{frugal}"]
    allowed_models: ["*"]
    budget: {{ daily_usd: 0.000001, when_spent: local_only }}
    may_force_route: true
    admin: true
local_models:
  - name: smollm2
    default_model: smollm2
    queue_capacity: {queue_capacity}
    max_batch: 1  # one generation at a time: the queue fills predictably
{router}routing:
  reference_model: claude-test
  tiers:
    - {{ name: local, below: 0.35, targets: [smollm2] }}
    - {{ name: cheap, below: 0.7, targets: [solo] }}
    - {{ name: frontier, targets: [claude-test] }}
  private_data: {private_data}
  when_local_busy: spill
  when_remote_fails: local
  sticky_conversations: {{ ttl: 600 }}
"#,
        thrifty = KeyHash::of(THRIFTY_KEY),
        frugal = KeyHash::of(FRUGAL_KEY),
        router = ROUTER_YAML,
    );
    config(openai, anthropic, &extra)
}

fn auto(text: &str) -> Value {
    json!({
        "model": "auto",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 8,
        "temperature": 0,
    })
}

fn dollars(response: &reqwest::Response, name: &str) -> f64 {
    header(response, name).parse().unwrap()
}

#[tokio::test]
async fn easy_requests_stay_local_and_hard_ones_escalate_with_their_costs() {
    let (gateway, openai, anthropic) = routed_gateway("local_only", 4).await;

    let easy = gateway.chat(ACME_KEY, &auto(EASY)).send().await.unwrap();
    assert_eq!(easy.status(), 200);
    assert_eq!(header(&easy, "x-switchboard-route"), "local");
    assert_eq!(header(&easy, "x-switchboard-model"), "smollm2");
    assert!(
        header(&easy, "x-switchboard-reason").starts_with("complexity 0.0"),
        "{:?}",
        easy.headers()
    );
    assert!(header(&easy, "x-switchboard-reason").ends_with("< 0.35"));
    assert_eq!(header(&easy, "x-switchboard-domain"), "it_helpdesk");
    assert_eq!(dollars(&easy, "x-switchboard-cost-usd"), 0.0);
    let saved = dollars(&easy, "x-switchboard-savings-usd");
    let answer: Value = easy.json().await.unwrap();
    let (prompt, completion) = (
        answer["usage"]["prompt_tokens"].as_f64().unwrap(),
        answer["usage"]["completion_tokens"].as_f64().unwrap(),
    );
    // The counterfactual: the same tokens at claude-test's $3 / $15 per million.
    let reference = (prompt * 3.0 + completion * 15.0) / 1e6;
    assert!((saved - reference).abs() < 1e-9, "{saved} vs {reference}");

    let hard = gateway.chat(ACME_KEY, &auto(HARD)).send().await.unwrap();
    assert_eq!(hard.status(), 200);
    assert_eq!(header(&hard, "x-switchboard-route"), "remote");
    assert_eq!(header(&hard, "x-switchboard-model"), "claude-test");
    assert_eq!(header(&hard, "x-switchboard-domain"), "coding");
    let reason = header(&hard, "x-switchboard-reason");
    assert!(
        reason.starts_with("complexity 0.") && reason.ends_with(">= 0.70"),
        "{reason}"
    );
    // Answered by the reference model itself: it costs what it would have, and saves nothing.
    assert!(dollars(&hard, "x-switchboard-cost-usd") > 0.0);
    assert_eq!(dollars(&hard, "x-switchboard-savings-usd"), 0.0);
    assert_eq!(anthropic.stats().requests, 1);

    // A named model is the client's choice.
    let named = gateway.chat(ACME_KEY, &hello("solo")).send().await.unwrap();
    assert_eq!(header(&named, "x-switchboard-model"), "solo");
    assert_eq!(
        header(&named, "x-switchboard-reason"),
        "client named the model"
    );
    // solo ($1 / $2) is cheaper than the reference: a saving.
    assert!(dollars(&named, "x-switchboard-savings-usd") > 0.0);
    assert_eq!(openai.stats().requests, 1);

    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_escalations_total{reason="complexity",tenant="acme"}"#
        ),
        Some(1.0)
    );
    let counterfactual = sample(
        &metrics,
        r#"switchboard_counterfactual_cost_usd_total{tenant="acme"}"#,
    )
    .unwrap();
    let cost = sample(
        &metrics,
        r#"switchboard_cost_usd_total{model="claude-test",route="remote",tenant="acme"}"#,
    )
    .unwrap();
    let savings = sample(&metrics, r#"switchboard_savings_usd{tenant="acme"}"#).unwrap();
    assert!(counterfactual > cost && cost > 0.0);
    assert!((savings - (counterfactual - cost - solo_cost(&metrics))).abs() < 1e-9);
}

fn solo_cost(metrics: &str) -> f64 {
    sample(
        metrics,
        r#"switchboard_cost_usd_total{model="solo",route="remote",tenant="acme"}"#,
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn private_data_stays_local_or_leaves_redacted() {
    let (gateway, _openai, anthropic) = routed_gateway("local_only", 4).await;
    let text = format!("{HARD} Send it to jane.doe@example.com when done.");
    let mut forced = gateway.chat(FRUGAL_KEY, &auto(&text));
    forced = forced.header("x-switchboard-route", "remote");
    let response = forced.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-switchboard-route"), "local");
    assert_eq!(
        header(&response, "x-switchboard-reason"),
        "private data found: local only"
    );
    assert_eq!(header(&response, "x-switchboard-pii"), "email");
    // A named remote model does not take it either.
    let mut named = auto(&text);
    named["model"] = json!("claude-test");
    let response = gateway.chat(ACME_KEY, &named).send().await.unwrap();
    assert_eq!(header(&response, "x-switchboard-route"), "local");
    assert_eq!(anthropic.stats().requests, 0, "nothing private left");
    drop(gateway);

    let (gateway, openai, anthropic) = routed_gateway("redact", 4).await;
    let response = gateway.chat(ACME_KEY, &auto(&text)).send().await.unwrap();
    assert_eq!(header(&response, "x-switchboard-route"), "remote");
    // Whichever remote tier the complexity picked received it, redacted.
    let received: Vec<_> = anthropic
        .received()
        .into_iter()
        .chain(openai.received())
        .collect();
    assert_eq!(received.len(), 1);
    let sent = received[0].body["messages"][0]["content"].to_string();
    assert!(sent.contains("Send it to [EMAIL] when done."), "{sent}");
    assert!(!sent.contains("jane.doe"), "{sent}");
    drop(gateway);

    let (gateway, _openai, anthropic) = routed_gateway("reject", 4).await;
    let response = gateway.chat(ACME_KEY, &auto(&text)).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "private_data_refused");
    assert!(!body.to_string().contains("jane.doe"));
    assert_eq!(anthropic.stats().requests, 0);
}

#[tokio::test]
async fn a_spent_budget_refuses_or_keeps_requests_local() {
    let (gateway, _openai, anthropic) = routed_gateway("local_only", 4).await;
    // The first escalation fits (nothing is spent yet) and spends the budget.
    let first = gateway.chat(THRIFTY_KEY, &auto(HARD)).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-switchboard-route"), "remote");
    let refused = gateway.chat(THRIFTY_KEY, &auto(EASY)).send().await.unwrap();
    assert_eq!(refused.status(), 402);
    let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!((1..=86_400).contains(&retry_after));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(body["error"]["type"], "insufficient_quota");

    let first = gateway.chat(FRUGAL_KEY, &auto(HARD)).send().await.unwrap();
    assert_eq!(header(&first, "x-switchboard-route"), "remote");
    let kept = gateway.chat(FRUGAL_KEY, &auto(HARD)).send().await.unwrap();
    assert_eq!(kept.status(), 200);
    assert_eq!(header(&kept, "x-switchboard-route"), "local");
    assert_eq!(
        header(&kept, "x-switchboard-reason"),
        "daily budget spent: local only"
    );
    assert_eq!(anthropic.stats().requests, 2);

    let metrics = gateway.metrics().await;
    let remaining = sample(
        &metrics,
        r#"switchboard_budget_remaining_usd{tenant="frugal"}"#,
    )
    .unwrap();
    assert!(remaining < 0.0, "{remaining}");
}

#[tokio::test]
async fn a_failed_remote_tier_falls_back_to_the_local_model() {
    let (gateway, _openai, anthropic) = routed_gateway("local_only", 4).await;
    anthropic.push(vec![Behaviour::fail(500); 3]);
    let response = gateway.chat(ACME_KEY, &auto(HARD)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-switchboard-route"), "local");
    assert!(header(&response, "x-switchboard-reason").ends_with("; remote failed: local"));
    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_fallbacks_total{from="claude-test",reason="server_error",to="smollm2"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_full_local_queue_spills_to_the_first_remote_tier() {
    let (gateway, openai, _anthropic) = routed_gateway("local_only", 1).await;
    let mut long = auto("Count from one to one hundred.");
    long["model"] = json!("smollm2");
    long["max_tokens"] = json!(300);
    long["stream"] = json!(true);
    let mut running = gateway.chat(ACME_KEY, &long).send().await.unwrap();
    assert_eq!(header(&running, "x-switchboard-route"), "local");
    assert!(running.chunk().await.unwrap().is_some());
    let waiting = tokio::spawn(gateway.chat(ACME_KEY, &auto(EASY)).send());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let spilled = gateway.chat(ACME_KEY, &auto(EASY)).send().await.unwrap();
    assert_eq!(spilled.status(), 200);
    assert_eq!(header(&spilled, "x-switchboard-route"), "remote");
    assert_eq!(header(&spilled, "x-switchboard-model"), "solo");
    assert_eq!(
        header(&spilled, "x-switchboard-reason"),
        "local queue full: spill"
    );
    assert_eq!(openai.stats().requests, 1);
    drop(running);
    assert_eq!(waiting.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn explain_decides_without_answering_and_clients_may_force_a_route() {
    let (gateway, openai, anthropic) = routed_gateway("local_only", 4).await;
    let explain = |key: &'static str, body: Value| {
        gateway
            .http
            .post(gateway.url("/v1/route/explain"))
            .bearer_auth(key)
            .json(&body)
    };
    let response = explain(ACME_KEY, auto(HARD)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let explained: Value = response.json().await.unwrap();
    assert_eq!(explained["decision"]["route"], "remote", "{explained}");
    assert_eq!(explained["decision"]["tier"], "frontier");
    assert_eq!(explained["decision"]["models"], json!(["claude-test"]));
    assert_eq!(explained["decision"]["reason_code"], "complexity");
    assert_eq!(explained["scores"]["domain"], "coding");
    assert!(explained["scores"]["complexity"].as_f64().unwrap() > 0.7);

    let forced = explain(FRUGAL_KEY, auto(EASY))
        .header("x-switchboard-route", "remote")
        .send()
        .await
        .unwrap();
    let forced: Value = forced.json().await.unwrap();
    assert_eq!(forced["decision"]["reason"], "client forced remote");
    assert_eq!(forced["decision"]["models"], json!(["solo"]));
    // acme may not force a route: its header is ignored.
    let ignored = explain(ACME_KEY, auto(EASY)).header("x-switchboard-route", "remote");
    let ignored: Value = ignored.send().await.unwrap().json().await.unwrap();
    assert_eq!(ignored["decision"]["route"], "local");
    let bad = explain(ACME_KEY, auto(EASY)).header("x-switchboard-route", "cloud");
    assert_eq!(bad.send().await.unwrap().status(), 400);

    assert_eq!(
        openai.stats().requests + anthropic.stats().requests,
        0,
        "nothing generated"
    );
    let metrics = gateway.metrics().await;
    assert!(
        !metrics.contains("switchboard_requests_total{"),
        "explanations are not requests"
    );
}

#[tokio::test]
async fn the_ledger_survives_a_restart_and_its_reports_add_up() {
    let openai = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let anthropic = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let config = routed_config(&openai, &anthropic, "local_only", 4)
        .replace("ledger:\n", "ledger:\n  keep_routing_text: true\n");
    let mut gateway = TestGateway::start(&config).await;

    let mut made = Vec::new();
    let mut send = async |key: &str, body: Value| {
        let response = gateway.chat(key, &body).send().await.unwrap();
        made.push(header(&response, "x-request-id").to_owned());
        response
    };
    let easy = send(ACME_KEY, auto(EASY)).await;
    assert_eq!(header(&easy, "x-switchboard-route"), "local");
    let easy_id = header(&easy, "x-request-id").to_owned();
    assert_eq!(header(&easy, "x-switchboard-request-id"), easy_id);
    assert_eq!(send(ACME_KEY, auto(HARD)).await.status(), 200);
    assert_eq!(send(ACME_KEY, hello("solo")).await.status(), 200);
    let mut bad = auto(EASY);
    bad["temperature"] = json!(5);
    assert_eq!(send(ACME_KEY, bad).await.status(), 400);
    assert_eq!(send(GLOBEX_KEY, hello("solo")).await.status(), 200);
    assert_eq!(send(THRIFTY_KEY, auto(HARD)).await.status(), 200);

    let feedback = |key: &str, body: Value| {
        gateway
            .http
            .post(gateway.url("/v1/feedback"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let verdict = json!({"request_id": easy_id, "score": 1, "comment": "spot on"});
    assert_eq!(
        feedback(ACME_KEY, verdict.clone()).await.unwrap().status(),
        200
    );
    let theirs = feedback(GLOBEX_KEY, verdict).await.unwrap();
    assert_eq!(
        theirs.status(),
        404,
        "another tenant's request is not found"
    );
    let out_of_range = json!({"request_id": easy_id, "score": 3});
    assert_eq!(
        feedback(ACME_KEY, out_of_range).await.unwrap().status(),
        400
    );

    // Restart on the same ledger.
    gateway.shutdown();
    gateway.task.take().unwrap().await.unwrap();
    drop(gateway);
    let gateway = TestGateway::start(&config).await;

    // thrifty spent its day's budget before the restart: it still has.
    let refused = gateway.chat(THRIFTY_KEY, &auto(EASY)).send().await.unwrap();
    assert_eq!(refused.status(), 402);
    made.push(header(&refused, "x-request-id").to_owned());

    let usage = |key: &'static str, query: &'static str| {
        let url = gateway.url(&format!("/v1/usage?{query}"));
        let request = gateway.http.get(url).bearer_auth(key);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    // A tenant sees its own requests only, whatever it asks for.
    let own = usage(ACME_KEY, "by=route&tenant=globex").await;
    assert_eq!(own["total"]["requests"], 4, "{own}");
    assert_eq!(own["total"]["errors"], 1);
    assert_eq!(own["total"]["feedback"], 1);
    assert_eq!(own["total"]["feedback_mean"], 1.0);
    let routes: Vec<&str> = own["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["group"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["local", "remote"]);
    // An admin sees everyone, and the rows add up to the total.
    let all = usage(FRUGAL_KEY, "by=tenant&since=1d").await;
    assert_eq!(all["total"]["requests"], made.len(), "{all}");
    let rows = all["rows"].as_array().unwrap();
    let tenants: Vec<&str> = rows.iter().map(|r| r["group"].as_str().unwrap()).collect();
    assert_eq!(tenants, ["acme", "globex", "thrifty"]);
    for column in ["requests", "cost_usd", "counterfactual_usd", "savings_usd"] {
        let sum: f64 = rows.iter().map(|r| r[column].as_f64().unwrap()).sum();
        let total = all["total"][column].as_f64().unwrap();
        assert!((sum - total).abs() < 1e-12, "{column}: {sum} vs {total}");
    }
    let bad = gateway
        .http
        .get(gateway.url("/v1/usage?by=planet"))
        .bearer_auth(ACME_KEY);
    assert_eq!(bad.send().await.unwrap().status(), 400);

    // The ledger holds exactly the requests made, before and after the restart.
    let mut gateway = gateway;
    gateway.shutdown();
    gateway.task.take().unwrap().await.unwrap();
    drop(gateway);
    let parsed = switchboard_gateway::config::Config::from_yaml(&config, "test").unwrap();
    let ledger = Ledger::from_config(&parsed.ledger).unwrap();
    let mut recorded: Vec<String> = ledger.since(0).map(|e| e.unwrap().request_id).collect();
    recorded.sort();
    made.sort();
    assert_eq!(recorded, made);
    // The verdict on the local answer is a training label, with the text the router read.
    let labels = switchboard_gateway::report::feedback_labels(&ledger, 0).unwrap();
    assert_eq!(labels.len(), 1);
    assert_eq!((labels[0].text.as_str(), labels[0].hard), (EASY, false));
    assert_eq!(labels[0].domain.as_deref(), Some("it_helpdesk"));
}

#[tokio::test]
async fn a_changed_policy_file_is_reloaded_and_a_bad_one_refused() {
    let openai = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let anthropic = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let original = routed_config(&openai, &anthropic, "local_only", 4);
    let path = fresh_ledger_dir().with_extension("yaml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &original).unwrap();
    let gateway = TestGateway::start(&original).await;
    let watcher = switchboard_gateway::reload::watch(
        gateway.gateway.clone(),
        path.clone(),
        original.clone(),
        Duration::from_millis(50),
    );
    let watcher = tokio::spawn(watcher);
    let explain = async |key: &str| {
        let request = gateway.http.post(gateway.url("/v1/route/explain"));
        let response = request
            .bearer_auth(key)
            .json(&auto(EASY))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json::<Value>().await.unwrap_or_default())
    };
    assert_eq!(explain(ACME_KEY).await.0, 200);
    let write_and_wait = async |text: &str| {
        std::fs::write(&path, text).unwrap();
        // Modification times can be coarse: make sure this write is seen as a change.
        let later = std::time::SystemTime::now() + Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    };

    // A new key for acme and a routing change: both in force without a restart.
    let new_key = "sk-acme-rotated";
    let reloaded = original
        .replace(
            &format!("[\"{}\"]", KeyHash::of(ACME_KEY)),
            &format!("[\"{}\"]", KeyHash::of(new_key)),
        )
        .replace(
            "when_remote_fails: local",
            "when_remote_fails: local\n  domains: { it_helpdesk: { route: remote } }",
        );
    write_and_wait(&reloaded).await;
    assert_eq!(explain(ACME_KEY).await.0, 401, "the old key is gone");
    let (status, explained) = explain(new_key).await;
    assert_eq!(status, 200);
    assert_eq!(explained["decision"]["route"], "remote", "{explained}");

    // An invalid file, and one that changes a section only a restart applies: refused, and
    // the policy in force keeps serving.
    write_and_wait(&reloaded.replace("targets: [solo]", "targets: [ghost]")).await;
    assert_eq!(explain(new_key).await.0, 200);
    write_and_wait(&reloaded.replace("queue_capacity: 4", "queue_capacity: 5")).await;
    assert_eq!(explain(new_key).await.0, 200);
    assert_eq!(explain(ACME_KEY).await.0, 401);
    let refused = gateway.gateway.reload(
        &switchboard_gateway::reload::restart_sections(&original),
        &reloaded.replace("queue_capacity: 4", "queue_capacity: 5"),
        "policy.yaml",
    );
    assert_eq!(
        refused.unwrap_err().to_string(),
        "local_models changed: restart the gateway to apply it (the policy in force is unchanged)"
    );
    let invalid = gateway.gateway.reload(
        &switchboard_gateway::reload::restart_sections(&original),
        &reloaded.replace("targets: [solo]", "targets: [ghost]"),
        "policy.yaml",
    );
    let message = invalid.unwrap_err().to_string();
    let metrics = gateway.metrics().await;
    let reloads = |result: &str| {
        let series = format!("switchboard_policy_reloads_total{{result=\"{result}\"}}");
        sample(&metrics, &series).unwrap_or(0.0)
    };
    assert!(reloads("applied") >= 1.0, "{metrics}");
    assert!(reloads("invalid") >= 2.0);
    assert!(reloads("needs_restart") >= 2.0);
    assert!(
        message.contains("routing.tiers[1].targets[0]: 'ghost' is not a configured model"),
        "{message}"
    );
    assert!(message.contains("policy.yaml:"), "{message}");
    watcher.abort();
}

#[tokio::test]
async fn an_escalated_conversation_stays_on_its_tier() {
    let (gateway, _openai, anthropic) = routed_gateway("local_only", 4).await;
    let in_thread = |text: &str, thread: &str| {
        gateway
            .chat(ACME_KEY, &auto(text))
            .header("x-switchboard-conversation", thread)
            .send()
    };
    let opening = in_thread(HARD, "thread-1").await.unwrap();
    assert_eq!(header(&opening, "x-switchboard-model"), "claude-test");
    let follow_up = in_thread(EASY, "thread-1").await.unwrap();
    assert_eq!(header(&follow_up, "x-switchboard-model"), "claude-test");
    assert_eq!(
        header(&follow_up, "x-switchboard-reason"),
        "conversation stays on frontier"
    );
    let elsewhere = in_thread(EASY, "thread-2").await.unwrap();
    assert_eq!(header(&elsewhere, "x-switchboard-route"), "local");
    // Without a name, a thread is known by its opening messages.
    let mut thread = auto(HARD);
    let opening = gateway.chat(ACME_KEY, &thread).send().await.unwrap();
    assert_eq!(header(&opening, "x-switchboard-model"), "claude-test");
    thread["messages"] = json!([
        {"role": "user", "content": HARD},
        {"role": "assistant", "content": "def merge(a, b): ..."},
        {"role": "user", "content": EASY},
    ]);
    let continued = gateway.chat(ACME_KEY, &thread).send().await.unwrap();
    assert_eq!(
        header(&continued, "x-switchboard-reason"),
        "conversation stays on frontier"
    );
    assert_eq!(anthropic.stats().requests, 4);
}

#[tokio::test]
async fn an_unsure_local_answer_is_discarded_and_escalated() {
    let openai = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let anthropic = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let with_floor = |floor: &str| {
        // A ledger of its own each time: the first gateway may still hold its lock.
        routed_config(&openai, &anthropic, "local_only", 4).replace(
            "sticky_conversations: { ttl: 600 }",
            &format!(
                "sticky_conversations: {{ ttl: 600 }}\n  cascade: {{ min_mean_logprob: {floor} }}"
            ),
        )
    };
    // A floor no answer reaches: every local answer is escalated.
    let gateway = TestGateway::start(&with_floor("-0.000001")).await;
    let response = gateway.chat(ACME_KEY, &auto(EASY)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-switchboard-model"), "solo");
    let reason = header(&response, "x-switchboard-reason");
    assert!(
        reason.starts_with("complexity 0.0") && reason.ends_with("< -0.00): escalated"),
        "{reason}"
    );
    assert_eq!(openai.stats().requests, 1);
    // Streams are not cascaded: they are already on their way to the client.
    let mut stream = auto(EASY);
    stream["stream"] = json!(true);
    let streamed = gateway.chat(ACME_KEY, &stream).send().await.unwrap();
    assert_eq!(header(&streamed, "x-switchboard-route"), "local");
    let metrics = gateway.metrics().await;
    let wasted = sample(
        &metrics,
        r#"switchboard_cascade_wasted_tokens_total{model="smollm2"}"#,
    );
    assert!(wasted.unwrap() > 8.0, "{wasted:?}");
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_escalations_total{reason="low_confidence",tenant="acme"}"#
        ),
        Some(1.0)
    );
    drop(gateway);

    // A floor every answer clears: the local answer stands.
    let gateway = TestGateway::start(&with_floor("-50")).await;
    let response = gateway.chat(ACME_KEY, &auto(EASY)).send().await.unwrap();
    assert_eq!(header(&response, "x-switchboard-route"), "local");
    assert!(header(&response, "x-switchboard-reason").ends_with("< 0.35"));
    assert_eq!(openai.stats().requests, 1);
}

#[tokio::test]
async fn an_upstream_without_usage_is_priced_by_an_estimate() {
    let (gateway, openai, _anthropic) = routed_gateway("local_only", 4).await;
    let silent = Behaviour {
        omit_usage: true,
        ..Behaviour::default()
    };
    openai.push([silent.clone(), silent]);
    // The fake echoes "solo says: hello there" (23 bytes): about 6 tokens.
    let response = gateway.chat(ACME_KEY, &hello("solo")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["usage"].is_null(), "{body}");
    let mut stream = hello("solo");
    stream["stream"] = json!(true);
    let (_, done) = read_sse(gateway.chat(ACME_KEY, &stream).send().await.unwrap()).await;
    assert!(done);
    let metrics = gateway.metrics().await;
    // prompt "hello there" (11 bytes) = 3 tokens at $1/M, answer 23 bytes = 6 tokens at $2/M,
    // twice.
    let cost = sample(
        &metrics,
        r#"switchboard_cost_usd_total{model="solo",route="remote",tenant="acme"}"#,
    );
    assert_eq!(cost, Some(2.0 * (3.0 * 1.0 + 6.0 * 2.0) / 1e6));
    let tokens = sample(
        &metrics,
        r#"switchboard_tokens_total{kind="completion",model="solo",route="remote"}"#,
    );
    assert_eq!(tokens, Some(12.0));
}

#[tokio::test]
async fn a_request_too_long_for_a_tiers_models_goes_up_a_tier() {
    let openai = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let anthropic = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let config = routed_config(&openai, &anthropic, "local_only", 4)
        .replace(
            "      - name: solo\n",
            "      - name: solo\n        context_window: 2000\n",
        )
        .replace(
            "allowed_models: [\"*\"]\n  - name: globex",
            "allowed_models: [\"*\"]\n    may_force_route: true\n  - name: globex",
        );
    let gateway = TestGateway::start(&config).await;
    let forced = |text: String| {
        gateway
            .chat(ACME_KEY, &auto(&text))
            .header("x-switchboard-route", "remote")
            .send()
    };
    let short = forced(EASY.to_owned()).await.unwrap();
    assert_eq!(header(&short, "x-switchboard-model"), "solo");
    let long = forced(EASY.repeat(100)).await.unwrap();
    assert_eq!(long.status(), 200);
    assert_eq!(header(&long, "x-switchboard-model"), "claude-test");
}

#[tokio::test]
async fn concurrent_requests_cannot_pass_a_budget_only_one_fits() {
    let (gateway, _openai, anthropic) = routed_gateway("local_only", 4).await;
    // thrifty's budget is a millionth of a dollar: the first escalation's reservation fills it.
    let requests = (0..8).map(|_| gateway.chat(THRIFTY_KEY, &auto(HARD)).send());
    let statuses: Vec<u16> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 402).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(anthropic.stats().requests, 1);
}
