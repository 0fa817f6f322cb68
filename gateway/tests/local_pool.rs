//! The local tier as a pool: a local model answered by other servers (fakes that speak OpenAI's
//! wire, and a second real Switchboard node running the SmolLM2 engine), chosen least-loaded
//! among those that pass their health probes, with the policy's spill rule when all are full.

mod support;

use std::time::Duration;

use fake_upstream::{Behaviour, FakeUpstream};
use serde_json::{Value, json};
use support::*;
use switchboard_gateway::keys::KeyHash;

const NODE_KEY: &str = "sk-node-b";

/// A servers-only local model `pool` on `servers` (`url, model, max_in_flight` each), probed
/// every 0.1 s, with the router and a policy whose local tier is the pool (spilling to `solo`).
fn pool_config(
    openai: &FakeUpstream,
    anthropic: &FakeUpstream,
    servers: &[(String, &str, usize)],
) -> String {
    let servers: String = servers
        .iter()
        .map(|(url, model, max_in_flight)| {
            format!(
                "      - {{ url: '{url}', model: {model}, max_in_flight: {max_in_flight}, api_key_env: UPSTREAM_KEY }}\n"
            )
        })
        .collect();
    let extra = format!(
        r#"local_models:
  - name: pool
    max_context: 4096
    health_every: 0.1
    servers:
{servers}{router}routing:
  reference_model: claude-test
  tiers:
    - {{ name: local, below: 0.35, targets: [pool] }}
    - {{ name: cheap, targets: [solo] }}
  when_local_busy: spill
"#,
        router = ROUTER_YAML,
    );
    config(openai, anthropic, &extra)
}

fn ask(model: &str, text: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 16,
        "temperature": 0,
    })
}

/// Who answered, by the fake's reply `"<model> says: …"`.
fn speaker(answer: &Value) -> String {
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    text.split(" says:").next().unwrap().to_owned()
}

/// Waits until `metrics` of `gateway` shows `line`, or fails after a few seconds.
async fn wait_for_metric(gateway: &TestGateway, line: &str) {
    for _ in 0..100 {
        if gateway.metrics().await.contains(line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never saw {line}");
}

/// The value of the metric line that starts with `series` (`name{labels}`).
fn metric(metrics: &str, series: &str) -> f64 {
    let line = metrics.lines().find(|l| l.starts_with(series));
    let line = line.unwrap_or_else(|| panic!("no {series} in:\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `switchboard_local_server_<name>` of the pool's server at `server` (`host:port`).
fn server_series(name: &str, server: &str, outcome: Option<&str>) -> String {
    match outcome {
        Some(outcome) => format!(
            "switchboard_local_server_{name}{{model=\"pool\",outcome=\"{outcome}\",server=\"{server}\"}}"
        ),
        None => format!("switchboard_local_server_{name}{{model=\"pool\",server=\"{server}\"}}"),
    }
}

/// Waits until the pool's servers hold `places` requests together.
async fn wait_for_places(gateway: &TestGateway, places: usize) {
    for _ in 0..100 {
        let metrics = gateway.metrics().await;
        let held: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("switchboard_local_server_in_flight{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if held as usize == places {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the servers never held {places} requests");
}

#[tokio::test]
async fn requests_go_to_the_least_loaded_server_that_is_up() {
    let (openai, anthropic) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    // Nothing listens there: down from the first probe.
    let dead_address = format!("127.0.0.1:{}", free_port());
    let servers = [
        (a.openai_base_url(), "node-a", 4),
        (b.openai_base_url(), "node-b", 4),
        (format!("http://{dead_address}/v1"), "node-dead", 4),
    ];
    let gateway = TestGateway::start(&pool_config(&openai, &anthropic, &servers)).await;

    // Four slow answers at once: each server has room for all four, and the least loaded
    // takes each one (the first with room would take them all; a dead one taken for up would
    // get one).
    a.push(vec![Behaviour::delay(600); 2]);
    b.push(vec![Behaviour::delay(600); 2]);
    let mut running = Vec::new();
    for started in 0..4 {
        let request = gateway.chat(ACME_KEY, &ask("pool", "hello"));
        running.push(tokio::spawn(request.send()));
        // Each sees the places the earlier ones took.
        wait_for_places(&gateway, started + 1).await;
    }
    let mut speakers = Vec::new();
    for answer in running {
        let answer: Value = answer.await.unwrap().unwrap().json().await.unwrap();
        speakers.push(speaker(&answer));
    }
    speakers.sort();
    assert_eq!(speakers, ["node-a", "node-a", "node-b", "node-b"]);
    assert_eq!((a.stats().requests, b.stats().requests), (2, 2));
    // Each got the server's own model name, the server's key, and the pool's mark: a
    // Switchboard node there would not pass it on again.
    let sent = &a.received()[0];
    assert_eq!(sent.body["model"], "node-a");
    assert_eq!(
        sent.credential.as_deref(),
        Some("Bearer sk-upstream-secret")
    );
    let hop = sent.switchboard_headers.get("x-switchboard-pool-hop");
    assert_eq!(hop.map(String::as_str), Some("1"));

    // The pool's answers are local answers: the pool's price (free), nothing remote counted.
    let response = gateway
        .chat(ACME_KEY, &ask("pool", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-switchboard-route"), "local");
    assert_eq!(header(&response, "x-switchboard-model"), "pool");
    let cost: f64 = header(&response, "x-switchboard-cost-usd").parse().unwrap();
    assert_eq!(cost, 0.0);
    assert_eq!(openai.stats().requests, 0);

    // A stream through the pool arrives whole, in OpenAI's chunks, and gives its place back.
    let mut streamed = ask("pool", "stream me");
    streamed["stream"] = json!(true);
    let response = gateway.chat(ACME_KEY, &streamed).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("says:") && body.trim_end().ends_with("data: [DONE]"),
        "{body}"
    );
    wait_for_places(&gateway, 0).await;

    let metrics = gateway.metrics().await;
    let (a_address, b_address) = (a.addr().to_string(), b.addr().to_string());
    assert_eq!(
        metric(&metrics, &server_series("up", &a_address, None)),
        1.0
    );
    assert_eq!(
        metric(&metrics, &server_series("up", &dead_address, None)),
        0.0
    );
    let answered = |server: &str| {
        metric(
            &metrics,
            &server_series("requests_total", server, Some("answered")),
        )
    };
    assert_eq!(answered(&a_address) + answered(&b_address), 6.0);
    // Never tried: the first probe took it out.
    let dead_failed = server_series("requests_total", &dead_address, Some("failed"));
    assert_eq!(metric(&metrics, &dead_failed), 0.0);

    // A request another node's pool sent here is answered in-process only, never passed on:
    // this pool has no engine, so it is full for it.
    let (a_before, b_before) = (a.stats().requests, b.stats().requests);
    let hop = gateway.chat(ACME_KEY, &ask("pool", "from a peer"));
    let response = hop
        .header("x-switchboard-pool-hop", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        (a.stats().requests, b.stats().requests),
        (a_before, b_before)
    );
}

#[tokio::test]
async fn a_failing_server_passes_the_request_on_and_a_full_pool_spills() {
    let (openai, anthropic) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let servers = [
        (a.openai_base_url(), "node-a", 1),
        (b.openai_base_url(), "node-b", 1),
    ];
    let gateway = TestGateway::start(&pool_config(&openai, &anthropic, &servers)).await;
    let a_up = |up: u8| format!("{} {up}", server_series("up", &a.addr().to_string(), None));

    // A server error, or a refusal another server may not share: the next member answers.
    for refusal in [503, 400] {
        a.push([Behaviour::fail(refusal)]);
        let answer = gateway.chat_json(ACME_KEY, &ask("pool", "hello")).await;
        assert_eq!(speaker(&answer), "node-b");
    }
    assert_eq!((a.stats().requests, b.stats().requests), (2, 2));
    // When every member refuses, the client gets the last refusal.
    a.push([Behaviour::fail(400)]);
    b.push([Behaviour::fail(400)]);
    let response = gateway
        .chat(ACME_KEY, &ask("pool", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'pool'") && !message.contains("127.0.0.1"),
        "{message}"
    );

    // A server that refuses the pool's key is out until a probe passes (this one does).
    a.push([Behaviour::fail(401)]);
    let answer = gateway.chat_json(ACME_KEY, &ask("pool", "hello")).await;
    assert_eq!(speaker(&answer), "node-b");
    wait_for_metric(&gateway, &a_up(1)).await;

    // A server failing its probes gets nothing until it passes one again.
    a.set_healthy(false);
    wait_for_metric(&gateway, &a_up(0)).await;
    let a_before = a.stats().requests;
    for _ in 0..3 {
        let answer = gateway.chat_json(ACME_KEY, &ask("pool", "hello")).await;
        assert_eq!(speaker(&answer), "node-b");
    }
    assert_eq!(a.stats().requests, a_before);

    // Every place taken (a is down, b busy): an easy request routed to the local tier spills
    // to the first remote tier, and a request naming the pool gets 503.
    b.push([Behaviour::delay(1500)]);
    let busy = tokio::spawn(gateway.chat(ACME_KEY, &ask("pool", "hold")).send());
    wait_for_places(&gateway, 1).await;
    let spilled = gateway.chat(ACME_KEY, &ask("auto", "How do I reset my VPN password?"));
    let spilled = spilled.send().await.unwrap();
    let refused = gateway
        .chat(ACME_KEY, &ask("pool", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.await.unwrap().unwrap().status(), 200);
    assert_eq!(spilled.status(), 200);
    assert_eq!(header(&spilled, "x-switchboard-route"), "remote");
    assert_eq!(header(&spilled, "x-switchboard-model"), "solo");
    assert_eq!(
        header(&spilled, "x-switchboard-reason"),
        "local queue full: spill"
    );
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));

    // Healthy again: back in the pool within a probe or two, and first again on a tie.
    a.set_healthy(true);
    wait_for_metric(&gateway, &a_up(1)).await;
    let routed = gateway
        .chat(ACME_KEY, &ask("auto", "How do I reset my VPN password?"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&routed, "x-switchboard-route"), "local");
    assert_eq!(header(&routed, "x-switchboard-model"), "pool");
    let answer: Value = routed.json().await.unwrap();
    assert_eq!(speaker(&answer), "node-a");
}

#[tokio::test]
async fn another_switchboard_node_answers_with_its_engine() {
    let (openai, anthropic) = (FakeUpstream::start().await, FakeUpstream::start().await);
    // Node B runs SmolLM2 in-process; its tenant `node-a` is how node A signs in.
    let node_b_extra = format!(
        r#"  - name: node-a
    api_key_hashes: ["{hash}"]
    allowed_models: [smollm2]
local_models:
  - name: smollm2
    default_model: smollm2
    max_batch: 1
"#,
        hash = KeyHash::of(NODE_KEY),
    );
    let node_b = config(&openai, &anthropic, &node_b_extra)
        .replace("request_timeout: 3", "request_timeout: 60");
    let node_b = TestGateway::start(&node_b).await;

    // Node A answers `smollm2` with node B only, signing in with B's tenant key; B's requests
    // come marked as a pool's, so B answers them with its engine.
    let node_a_extra = format!(
        r#"local_models:
  - name: smollm2
    max_context: 2048
    servers:
      - {{ url: '{url}', api_key_env: NODE_B_KEY }}
"#,
        url = node_b.url("/v1"),
    );
    let node_a = config(&openai, &anthropic, &node_a_extra)
        .replace("request_timeout: 3", "request_timeout: 60");
    let node_a = TestGateway::start_with_env(&node_a, &[("NODE_B_KEY", NODE_KEY.to_owned())]).await;

    let question = ask("smollm2", "What is the capital of France?");
    let answer = node_a.chat_json(ACME_KEY, &question).await;
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty());
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    // The same greedy answer as node B gives directly: its engine wrote it.
    let direct = node_b.chat_json(NODE_KEY, &question).await;
    assert_eq!(direct["choices"][0]["message"]["content"], text);

    let mut streamed = question.clone();
    streamed["stream"] = json!(true);
    let response = node_a.chat(ACME_KEY, &streamed).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let pieces: String = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(pieces, text);

    // Node B's ledger holds the three answers of its engine for its tenant `node-a`: two
    // through node A, one asked directly.
    let mut usage = Value::Null;
    for _ in 0..50 {
        usage = node_b.get_json("/v1/usage?by=route", NODE_KEY).await;
        if usage["total"]["requests"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(usage["total"]["requests"], 3, "{usage}");
    assert_eq!(usage["rows"][0]["group"], "local", "{usage}");
}

#[tokio::test]
async fn the_engine_and_a_server_share_the_load_and_what_the_engine_refuses() {
    let (openai, anthropic) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let fake = FakeUpstream::start().await;
    let extra = format!(
        r#"local_models:
  - name: smollm2
    default_model: smollm2
    max_batch: 1
    servers:
      - {{ url: '{url}', model: node-f, api_key_env: UPSTREAM_KEY }}
"#,
        url = fake.openai_base_url(),
    );
    let yaml =
        config(&openai, &anthropic, &extra).replace("request_timeout: 3", "request_timeout: 60");
    let gateway = TestGateway::start(&yaml).await;
    let engine_answered = |answer: &Value| {
        let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
        !text.starts_with("node-f says:")
    };

    // Both idle: the engine, listed first, answers.
    let answer = gateway
        .chat_json(ACME_KEY, &ask("smollm2", "Hi there"))
        .await;
    assert!(engine_answered(&answer), "{answer}");
    assert_eq!(fake.stats().requests, 0);

    // The engine busy with a long answer: the server has fewer requests in flight.
    let mut long = ask("smollm2", "Write a long story about a lighthouse keeper.");
    long["max_tokens"] = json!(200);
    long["stream"] = json!(true);
    let mut busy = gateway.chat(ACME_KEY, &long).send().await.unwrap();
    assert_eq!(busy.status(), 200);
    busy.chunk().await.unwrap();
    let answer = gateway
        .chat_json(ACME_KEY, &ask("smollm2", "Hi there"))
        .await;
    assert_eq!(speaker(&answer), "node-f");
    drop(busy);

    // Tools, which the engine does not take, are passed on to the server.
    let mut tools = ask("smollm2", "What is the weather in Paris?");
    tools["tools"] = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]);
    let answer = gateway.chat_json(ACME_KEY, &tools).await;
    assert_eq!(speaker(&answer), "node-f");
    assert_eq!(fake.stats().requests, 2);
}
