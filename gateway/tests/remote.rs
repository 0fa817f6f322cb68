//! The remote path through real HTTP: both wire formats, streamed and not, retries, fallbacks,
//! timeouts, cancellation, shutdown.

mod support;

use std::time::{Duration, Instant};

use fake_upstream::Behaviour;
use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn openai_upstream_answers_non_streamed_requests() {
    let (gateway, openai, _anthropic) = setup().await;
    let mut body = hello("gpt-test");
    body["seed"] = json!(42);
    body["response_format"] = json!({"type": "text"});
    // Without a `routing:` section the routing headers mean nothing, even a malformed one.
    let request = gateway.chat(ACME_KEY, &body);
    let response = request
        .header("x-switchboard-route", "cloud")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["x-switchboard-provider"], "fake-openai");
    assert_eq!(headers["x-switchboard-model"], "gpt-test");
    assert!(
        headers["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "gpt-upstream-name says: hello there"
    );
    assert_eq!(answer["usage"]["prompt_tokens"], 2);

    let sent = &openai.received()[0];
    assert_eq!(
        sent.credential.as_deref(),
        Some("Bearer sk-upstream-secret")
    );
    assert_eq!(sent.body["model"], "gpt-upstream-name");
    assert_eq!(sent.body["seed"], 42, "unknown fields pass through");
    assert_eq!(sent.body["response_format"]["type"], "text");

    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_requests_total{domain="unclassified",model="gpt-test",route="remote",status="200",tenant="acme"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_tokens_total{kind="completion",model="gpt-test",route="remote"}"#
        ),
        Some(4.0)
    );
}

#[tokio::test]
async fn openai_upstream_streams_chunk_by_chunk() {
    let (gateway, openai, _anthropic) = setup().await;
    let response = gateway
        .chat(ACME_KEY, &hello_stream("gpt-test", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (events, done) = read_sse(response).await;
    assert!(done, "the stream ends with [DONE]");
    assert_eq!(
        streamed_text(&events),
        "gpt-upstream-name says: hello there"
    );
    assert!(
        events
            .iter()
            .all(|e| e.get("usage").is_none_or(Value::is_null)),
        "no usage chunk unless asked for"
    );
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    // The gateway asked the upstream for usage anyway, for its own accounting.
    assert_eq!(
        openai.received()[0].body["stream_options"]["include_usage"],
        true
    );
    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_tokens_total{kind="completion",model="gpt-test",route="remote"}"#
        ),
        Some(4.0)
    );
    assert!(metrics.contains(
        "switchboard_time_to_first_token_seconds_count{model=\"gpt-test\",route=\"remote\"} 1"
    ));

    let response = gateway
        .chat(ACME_KEY, &hello_stream("gpt-test", true))
        .send()
        .await
        .unwrap();
    let (events, done) = read_sse(response).await;
    assert!(done);
    let usage = &events.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 4);
    assert_eq!(usage["total_tokens"], 6);
}

#[tokio::test]
async fn anthropic_upstream_is_translated_both_ways() {
    let (gateway, _openai, anthropic) = setup().await;
    let body = json!({
        "model": "claude-test",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello there"}
        ],
        "stop": ["END"],
        "temperature": 0.2
    });
    let response = gateway.chat(ACME_KEY, &body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "claude-upstream-name says: hello there"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["prompt_tokens"], 5);
    assert_eq!(answer["usage"]["completion_tokens"], 4);

    let sent = &anthropic.received()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.credential.as_deref(), Some("sk-upstream-secret"));
    assert_eq!(sent.anthropic_version.as_deref(), Some("2023-06-01"));
    assert_eq!(sent.body["system"], "You are terse.");
    assert_eq!(sent.body["max_tokens"], 64, "the model's default");
    assert_eq!(sent.body["stop_sequences"], json!(["END"]));
    assert_eq!(sent.body["messages"].as_array().unwrap().len(), 1);

    // max_tokens reaches the upstream, and its stop reason comes back as `length`.
    let mut body = hello_stream("claude-test", true);
    body["max_tokens"] = json!(2);
    let response = gateway.chat(ACME_KEY, &body).send().await.unwrap();
    let (events, done) = read_sse(response).await;
    assert!(done);
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&events), "claude-upstream-name says: ");
    let finish: Vec<_> = events
        .iter()
        .filter_map(|e| e["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["length"]);
    let usage = &events.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 2);
    assert_eq!(usage["completion_tokens"], 2);
}

#[tokio::test]
async fn retryable_failures_are_retried_then_succeed() {
    let (gateway, openai, anthropic) = setup().await;
    openai.push([Behaviour::fail(503), Behaviour::fail(500)]);
    let response = gateway
        .chat(ACME_KEY, &hello("gpt-test"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchboard-provider"], "fake-openai");
    assert_eq!(openai.stats().requests, 3);
    assert_eq!(anthropic.stats().requests, 0);
    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_upstream_errors_total{kind="server_error",provider="fake-openai"}"#
        ),
        Some(2.0)
    );

    // A 429's Retry-After is waited out before the retry.
    openai.push([Behaviour::fail_with_retry_after(429, 1)]);
    let started = Instant::now();
    let response = gateway.chat(ACME_KEY, &hello("solo")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(openai.stats().requests, 5);
}

#[tokio::test]
async fn a_failing_model_falls_back_to_the_next_provider() {
    let (gateway, openai, anthropic) = setup().await;
    openai.push([
        Behaviour::fail(502),
        Behaviour::fail(502),
        Behaviour::fail(502),
    ]);
    let response = gateway
        .chat(ACME_KEY, &hello("gpt-test"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-switchboard-provider"],
        "fake-anthropic"
    );
    assert_eq!(response.headers()["x-switchboard-model"], "claude-test");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "claude-upstream-name says: hello there"
    );
    assert_eq!(openai.stats().requests, 3, "all attempts used first");
    assert_eq!(anthropic.stats().requests, 1);

    // A Retry-After beyond max_retry_after moves on at once, streaming too.
    openai.push([Behaviour::fail_with_retry_after(429, 30)]);
    let response = gateway
        .chat(ACME_KEY, &hello_stream("gpt-test", false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-switchboard-provider"],
        "fake-anthropic"
    );
    let (events, done) = read_sse(response).await;
    assert!(done);
    assert_eq!(
        streamed_text(&events),
        "claude-upstream-name says: hello there"
    );
    assert_eq!(openai.stats().requests, 4);

    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_fallbacks_total{from="gpt-test",reason="server_error",to="claude-test"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_fallbacks_total{from="gpt-test",reason="rate_limited",to="claude-test"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn exhausted_retries_without_fallback_give_502_and_rate_limits_give_429() {
    let (gateway, openai, _anthropic) = setup().await;
    openai.push([
        Behaviour::fail(500),
        Behaviour::fail(500),
        Behaviour::fail(500),
    ]);
    let response = gateway.chat(ACME_KEY, &hello("solo")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("500"));

    openai.push([Behaviour::fail_with_retry_after(429, 30)]);
    let response = gateway.chat(ACME_KEY, &hello("solo")).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "30");

    // A request the upstream calls malformed is neither retried nor sent to a fallback.
    openai.push([Behaviour::fail(400)]);
    let before = openai.stats().requests;
    let response = gateway
        .chat(ACME_KEY, &hello("gpt-test"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(openai.stats().requests, before + 1);
}

#[tokio::test]
async fn a_stream_that_breaks_after_its_first_byte_is_not_retried() {
    let (gateway, openai, anthropic) = setup().await;
    // The delay makes sure the first chunks are flushed to the wire before the connection breaks.
    openai.push([Behaviour {
        chunk_delay_ms: 50,
        ..Behaviour::drop_after(3)
    }]);
    let response = gateway
        .chat(ACME_KEY, &hello_stream("gpt-test", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (events, done) = read_sse(response).await;
    assert!(!done, "a broken stream does not claim to be complete");
    assert_eq!(streamed_text(&events), "gpt-upstream-name says: ");
    let last = events.last().unwrap();
    assert_eq!(last["error"]["code"], "upstream_error");
    assert_eq!(openai.stats().requests, 1, "no retry once bytes went out");
    assert_eq!(anthropic.stats().requests, 0, "no fallback either");

    // A stream that breaks before its first chunk is retried.
    openai.push([Behaviour::drop_after(0)]);
    let response = gateway
        .chat(ACME_KEY, &hello_stream("solo", false))
        .send()
        .await
        .unwrap();
    let (events, done) = read_sse(response).await;
    assert!(done);
    assert_eq!(streamed_text(&events), "solo says: hello there");
    assert_eq!(openai.stats().requests, 3);
}

#[tokio::test]
async fn the_deadline_gives_504() {
    let (gateway, openai, _anthropic) = setup_with("").await;
    // Longer than the 3 s request deadline, shorter than nothing: the read timeout (2 s) fires
    // first on each attempt, then the deadline ends the chain.
    openai.push(vec![Behaviour::delay(10_000); 3]);
    let started = Instant::now();
    let response = gateway.chat(ACME_KEY, &hello("solo")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_call() {
    let (gateway, openai, _anthropic) = setup().await;
    // A first request pays the scanners' one-time set-up, which must not eat the impatient
    // client's 300 ms.
    let warm = gateway.chat(ACME_KEY, &hello("solo")).send().await.unwrap();
    assert_eq!(warm.status(), 200);
    openai.push([Behaviour::delay(5_000)]);
    let impatient = gateway
        .chat(ACME_KEY, &hello("solo"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(impatient.is_err());
    let stats = openai.settled(Duration::from_secs(3)).await;
    assert_eq!(stats.cancelled, 1, "{stats:?}");
    assert_eq!(stats.active, 0);

    // Mid-stream: read one chunk, then hang up.
    openai.push([Behaviour {
        chunk_delay_ms: 200,
        ..Behaviour::default()
    }]);
    let mut response = gateway
        .chat(ACME_KEY, &hello_stream("solo", false))
        .send()
        .await
        .unwrap();
    assert!(response.chunk().await.unwrap().is_some());
    drop(response);
    let stats = openai.settled(Duration::from_secs(3)).await;
    assert_eq!(stats.cancelled, 2, "{stats:?}");

    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_requests_total{domain="unclassified",model="solo",route="remote",status="499",tenant="acme"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, "switchboard_in_flight_requests"),
        Some(0.0)
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let (mut gateway, openai, _anthropic) = setup().await;
    openai.push([Behaviour::delay(500)]);
    let slow = tokio::spawn(gateway.chat(ACME_KEY, &hello("solo")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    gateway.shutdown();
    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "solo says: hello there"
    );
    let task = gateway.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the server stops once the request is done")
        .unwrap();
    assert!(
        reqwest::Client::new()
            .get(gateway.url("/healthz"))
            .send()
            .await
            .is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test]
async fn private_data_is_flagged_by_kind_and_counted() {
    let (gateway, _openai, _anthropic) = setup().await;
    let body = json!({"model": "solo", "messages": [
        {"role": "system", "content": "You help with billing."},
        {"role": "user", "content": "My card 4111 1111 1111 1111 was charged twice, write to jo@example.com"}
    ]});
    let response = gateway.chat(ACME_KEY, &body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-switchboard-pii"],
        "email,payment_card"
    );
    let clean = gateway.chat(ACME_KEY, &hello("solo")).send().await.unwrap();
    assert!(clean.headers().get("x-switchboard-pii").is_none());
    let metrics = gateway.metrics().await;
    for kind in ["email", "payment_card"] {
        let series = format!("switchboard_pii_detections_total{{kind=\"{kind}\"}}");
        assert_eq!(sample(&metrics, &series), Some(1.0), "{kind}");
    }
}
