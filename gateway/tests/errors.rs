//! Every error status a client can get, with its OpenAI-shaped body; authentication and
//! tenancy; the other endpoints; and random bodies that must never cause a 5xx.

mod support;

use std::time::Duration;

use fake_upstream::Behaviour;
use proptest::prelude::*;
use serde_json::{Value, json};
use support::*;

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("an error body is JSON");
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(error["code"].is_string(), "{body}");
    (status, body)
}

async fn chat_error(gateway: &TestGateway, key: &str, body: &Value) -> (u16, Value) {
    error_of(gateway.chat(key, body).send().await.unwrap()).await
}

#[tokio::test]
async fn bad_requests_get_precise_400s() {
    let (gateway, openai, _anthropic) = setup().await;
    let user = r#"[{"role":"user","content":"x"}]"#;
    // (body, the `param` expected, a fragment of the message expected)
    let cases = [
        ("{not json".to_owned(), None, "Invalid request body"),
        (String::new(), None, "empty"),
        (
            r#"{"model":"solo","messages":"hi"}"#.to_owned(),
            Some("messages"),
            "invalid type",
        ),
        (
            r#"{"model":"solo","messages":[{"role":"wizard","content":"hi"}]}"#.to_owned(),
            Some("messages[0].role"),
            "unknown variant",
        ),
        (
            r#"{"model":"solo","messages":[]}"#.to_owned(),
            Some("messages"),
            "at least one",
        ),
        (format!(r#"{{"messages":{user}}}"#), None, "model"),
        (
            format!(r#"{{"model":"solo","messages":{user},"temperature":7}}"#),
            Some("temperature"),
            "between 0 and 2",
        ),
        (
            format!(r#"{{"model":"solo","messages":{user},"max_tokens":-1}}"#),
            Some("max_tokens"),
            "invalid value",
        ),
        (
            format!(r#"{{"model":"solo","messages":{user}}} trailing"#),
            None,
            "trailing",
        ),
        // Valid OpenAI, but Anthropic has no `n`.
        (
            format!(r#"{{"model":"claude-test","messages":{user},"n":3}}"#),
            None,
            "'n'",
        ),
    ];
    for (body, param, fragment) in cases {
        let response = gateway
            .http
            .post(gateway.url("/v1/chat/completions"))
            .bearer_auth(ACME_KEY)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (status, error) = error_of(response).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["param"].as_str(), param, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{body}: {message}");
    }
    assert_eq!(openai.stats().requests, 0, "nothing invalid went upstream");
}

#[tokio::test]
async fn keys_and_tenants_are_enforced() {
    let (gateway, openai, _anthropic) = setup().await;
    let no_key = gateway
        .http
        .post(gateway.url("/v1/chat/completions"))
        .json(&hello("solo"))
        .send()
        .await
        .unwrap();
    let (status, missing) = error_of(no_key).await;
    assert_eq!(status, 401);
    let (status, wrong) = chat_error(&gateway, "sk-wrong", &hello("solo")).await;
    assert_eq!(status, 401);
    assert_eq!(
        missing, wrong,
        "a missing key and a wrong key look the same"
    );
    assert_eq!(wrong["error"]["code"], "invalid_api_key");

    // globex may use `solo` only; another model looks like it does not exist.
    let response = gateway
        .chat(GLOBEX_KEY, &hello("solo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, denied) = chat_error(&gateway, GLOBEX_KEY, &hello("gpt-test")).await;
    assert_eq!(status, 404);
    let (_, unknown) = chat_error(&gateway, GLOBEX_KEY, &hello("no-such-model")).await;
    assert_eq!(denied["error"]["code"], "model_not_found");
    assert_eq!(unknown["error"]["code"], "model_not_found");
    assert_eq!(openai.stats().requests, 1);

    let models = |key: &'static str| {
        gateway
            .http
            .get(gateway.url("/v1/models"))
            .bearer_auth(key)
            .send()
    };
    let list: Value = models(GLOBEX_KEY).await.unwrap().json().await.unwrap();
    let ids: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["solo"]);
    let list: Value = models(ACME_KEY).await.unwrap().json().await.unwrap();
    let ids: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["claude-test", "gpt-test", "solo"],
        "keyless-model is not usable"
    );
    assert_eq!(models("sk-wrong").await.unwrap().status(), 401);
    let one: Value = gateway.get_json("/v1/models/solo", GLOBEX_KEY).await;
    assert_eq!(one["owned_by"], "fake-openai");
}

#[tokio::test]
async fn limits_give_413_429_and_503() {
    let extra = r#"
  - name: limited
    api_key_hashes: ["sha256:a7c3f2e0a9d8e34f9b7a58e41b5cc1a1bb4f7fb27b8d9d3c8ef7f5a1f6cf3f10"]
    allowed_models: ["*"]
    rate_limit: { requests_per_minute: 2 }
"#;
    let limited_key = "sk-limited";
    let extra = extra.replace(
        "sha256:a7c3f2e0a9d8e34f9b7a58e41b5cc1a1bb4f7fb27b8d9d3c8ef7f5a1f6cf3f10",
        &switchboard_gateway::keys::KeyHash::of(limited_key).to_string(),
    );
    let openai = fake_upstream::FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let anthropic = fake_upstream::FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let yaml = config(&openai, &anthropic, &extra).replace(
        "request_timeout: 3",
        "request_timeout: 3\n  max_body_bytes: 2000\n  max_in_flight: 2",
    );
    let gateway = TestGateway::start(&yaml).await;

    let mut big = hello("solo");
    big["messages"][0]["content"] = json!("x".repeat(5000));
    let (status, body) = error_of(gateway.chat(ACME_KEY, &big).send().await.unwrap()).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "request_too_large");

    for _ in 0..2 {
        assert_eq!(
            gateway
                .chat(limited_key, &hello("solo"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let response = gateway
        .chat(limited_key, &hello("solo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "30");
    let (status, body) = error_of(response).await;
    assert_eq!(status, 429);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limited")
    );
    // Explaining a request runs the same router, so it draws on the same limit.
    let explain = gateway
        .http
        .post(gateway.url("/v1/route/explain"))
        .bearer_auth(limited_key)
        .json(&hello("solo"));
    assert_eq!(explain.send().await.unwrap().status(), 429);

    // Two slow requests fill the gateway; the third is shed at once.
    openai.push([Behaviour::delay(1_000), Behaviour::delay(1_000)]);
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(gateway.chat(ACME_KEY, &hello("solo")).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = gateway.chat(ACME_KEY, &hello("solo")).send().await.unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = error_of(response).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "overloaded");
    for request in slow {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }

    // A model whose only provider has no key.
    let (status, body) = chat_error(&gateway, ACME_KEY, &hello("keyless-model")).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "no_provider_available");
}

#[tokio::test]
async fn other_endpoints_answer() {
    let (gateway, _openai, _anthropic) = setup().await;
    let get = |path: &str| gateway.http.get(gateway.url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready: Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    let keyless = ready["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "keyless")
        .unwrap();
    assert_eq!(keyless["usable"], false);

    let (status, body) = error_of(get("/v1/nothing").await.unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_url");
    let (status, _) = error_of(get("/v1/chat/completions").await.unwrap()).await;
    assert_eq!(status, 404);

    let metrics = gateway.metrics().await;
    for name in ["switchboard_build_info", "switchboard_in_flight_requests"] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}

/// Bodies built from valid requests by truncation, byte flips and random JSON values.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    let valid = serde_json::to_vec(&json!({
        "model": "solo", "stream": false, "temperature": 0.5,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }))
    .unwrap();
    let json_value = proptest::collection::vec(any::<u8>(), 0..64);
    let valid_for_cut = valid.clone();
    prop_oneof![
        (0..valid.len()).prop_map(move |cut| valid_for_cut[..cut].to_vec()),
        (0..valid.len(), any::<u8>()).prop_map(move |(at, byte)| {
            let mut body = valid.clone();
            body[at] = byte;
            body
        }),
        json_value,
        any::<(Option<i64>, Option<String>, bool)>().prop_map(|(n, s, b)| {
            serde_json::to_vec(&json!({"model": s, "messages": [{"role": "user", "content": n}], "stream": b, "n": n}))
                .unwrap()
        }),
    ]
}

#[test]
fn random_and_truncated_bodies_never_get_a_5xx() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (gateway, openai, _anthropic) = runtime.block_on(setup());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&hostile_body(), |body| {
            let response = runtime.block_on(async {
                gateway
                    .http
                    .post(gateway.url("/v1/chat/completions"))
                    .bearer_auth(ACME_KEY)
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap()
            });
            let status = response.status().as_u16();
            // A body that happens to be a valid request is answered.
            prop_assert!(
                status < 500,
                "status {status} for {:?}",
                String::from_utf8_lossy(&body)
            );
            Ok(())
        })
        .unwrap();
    drop(openai);
}
