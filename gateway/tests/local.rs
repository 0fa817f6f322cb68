//! Chat completions answered by the local engine (the real SmolLM2 GGUF from the model
//! directory), through real HTTP.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

async fn local_gateway(queue_capacity: usize) -> (TestGateway, fake_upstream::FakeUpstream) {
    let openai = fake_upstream::FakeUpstream::start().await;
    let anthropic = fake_upstream::FakeUpstream::start().await;
    // One generation at a time: the queue fills predictably (batching has its own tests).
    let extra = format!(
        "local_models:\n  - name: smollm2\n    default_model: smollm2\n    queue_capacity: {queue_capacity}\n    max_batch: 1\nembedding_models:\n  - name: minilm\n    default_model: all-minilm-l6-v2\n"
    );
    // Generation on a loaded test machine may outlast the remote tests' 3-second deadline.
    let yaml =
        config(&openai, &anthropic, &extra).replace("request_timeout: 3", "request_timeout: 60");
    let gateway = TestGateway::start(&yaml).await;
    (gateway, openai)
}

fn ask(text: &str, max_tokens: u32) -> Value {
    json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

#[tokio::test]
async fn local_answers_come_back_whole_and_streamed_with_usage() {
    let (gateway, openai) = local_gateway(4).await;
    let response = gateway
        .chat(ACME_KEY, &ask("How do I reset my VPN password?", 12))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchboard-route"], "local");
    assert_eq!(response.headers()["x-switchboard-model"], "smollm2");
    let answer: Value = response.json().await.unwrap();
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.starts_with("To reset your VPN password"), "{text}");
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 12);
    let prompt_tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 10);

    let mut body = ask("How do I reset my VPN password?", 12);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = gateway.chat(ACME_KEY, &body).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (events, done) = read_sse(response).await;
    assert!(done, "{events:?}");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        streamed_text(&events),
        text,
        "greedy: the same answer streamed"
    );
    let usage = &events.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], prompt_tokens);
    assert_eq!(usage["completion_tokens"], 12);
    assert_eq!(openai.stats().requests, 0, "nothing went to the cloud");

    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_requests_total{domain="unclassified",model="smollm2",route="local",status="200",tenant="acme"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_local_generated_tokens_total{model="smollm2"}"#
        ),
        Some(24.0)
    );
    let models: Value = gateway.get_json("/v1/models", ACME_KEY).await;
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "smollm2" && m["owned_by"] == "local")
    );
}

#[tokio::test]
async fn stop_sequences_logprobs_and_bad_requests() {
    let (gateway, _openai) = local_gateway(4).await;
    let mut body = ask("How do I reset my VPN password?", 24);
    body["stop"] = json!(["VPN password"]);
    let answer: Value = gateway.chat_json(ACME_KEY, &body).await;
    assert_eq!(answer["choices"][0]["message"]["content"], "To reset your ");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");

    let mut body = ask("Hi", 3);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    let answer: Value = gateway.chat_json(ACME_KEY, &body).await;
    let content = answer["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(content.len(), 3);
    for entry in content {
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(entry["top_logprobs"].as_array().unwrap().len(), 2);
    }

    let response = gateway
        .chat(ACME_KEY, &ask("Hi", 100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("100000") && message.contains("8192"),
        "{message}"
    );

    let mut body = ask("Hi", 3);
    body["n"] = json!(2);
    assert_eq!(
        gateway.chat(ACME_KEY, &body).send().await.unwrap().status(),
        400
    );
}

#[tokio::test]
async fn a_full_queue_sheds_and_a_gone_client_stops_its_generation() {
    let (gateway, _openai) = local_gateway(1).await;
    let mut long = ask("Count from one to one hundred.", 300);
    long["stream"] = json!(true);
    let mut running = gateway.chat(ACME_KEY, &long).send().await.unwrap();
    assert!(
        running.chunk().await.unwrap().is_some(),
        "the first token is out"
    );

    // The model is busy: one request may wait, the next is refused.
    let waiting = tokio::spawn(gateway.chat(ACME_KEY, &ask("Hi", 2)).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = gateway.chat(ACME_KEY, &ask("Hi", 2)).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"switchboard_local_queue_depth{model="smollm2"}"#
        ),
        Some(1.0)
    );

    drop(running);
    let waited = waiting.await.unwrap().unwrap();
    assert_eq!(waited.status(), 200);
    let tokens = |metrics: &str| {
        sample(
            metrics,
            r#"switchboard_local_generated_tokens_total{model="smollm2"}"#,
        )
        .unwrap()
    };
    let after = tokens(&gateway.metrics().await);
    assert!(
        after < 100.0,
        "the abandoned generation stopped early: {after} tokens"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        tokens(&gateway.metrics().await),
        after,
        "nothing runs in the background"
    );
}

#[tokio::test]
async fn embeddings_are_served_as_floats_and_base64() {
    let (gateway, _openai) = local_gateway(1).await;
    let embed = |input: Value, format: &str| {
        let body = json!({"model": "minilm", "input": input, "encoding_format": format});
        gateway
            .http
            .post(gateway.url("/v1/embeddings"))
            .bearer_auth(ACME_KEY)
            .json(&body)
            .send()
    };
    let texts = json!([
        "How do I reset my VPN password?",
        "I forgot my VPN password",
        "Prove Fermat's little theorem"
    ]);
    let response = embed(texts.clone(), "float").await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let vectors: Vec<Vec<f64>> = answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
        .collect();
    assert_eq!(vectors.len(), 3);
    assert_eq!(vectors[0].len(), 384);
    let cosine = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!(cosine(&vectors[0], &vectors[1]) > cosine(&vectors[0], &vectors[2]) + 0.3);
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() > 10);

    let answer: Value = embed(json!("How do I reset my VPN password?"), "base64")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let encoded = answer["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(encoded.len(), 384 * 4 / 3 * 4, "384 f32s in base64");
    let decoded = decode_f32s(encoded);
    for (a, b) in decoded.iter().zip(&vectors[0]) {
        assert!((f64::from(*a) - b).abs() < 1e-6, "base64 and float agree");
    }

    let bad = embed(json!([]), "float").await.unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = gateway
        .http
        .post(gateway.url("/v1/embeddings"))
        .bearer_auth(ACME_KEY)
        .json(&json!({"model": "nope", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

/// Standard base64 of little-endian f32s back to numbers.
fn decode_f32s(text: &str) -> Vec<f32> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let sextets: Vec<u32> = chunk
            .iter()
            .filter(|&&c| c != b'=')
            .map(|c| ALPHABET.iter().position(|a| a == c).unwrap() as u32)
            .collect();
        let n = sextets
            .iter()
            .enumerate()
            .fold(0, |n, (i, s)| n | s << (18 - 6 * i));
        bytes.extend((0..sextets.len() - 1).map(|i| (n >> (16 - 8 * i)) as u8));
    }
    bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[tokio::test]
async fn prompts_beyond_the_context_get_a_400_and_the_model_keeps_answering() {
    let (gateway, openai) = local_gateway(4).await;
    let many: Vec<Value> = (0..10_000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "ok"}))
        .collect();
    let long = json!({"model": "smollm2", "messages": many, "max_tokens": 4});
    let one_long_message = ask(&"reset my password ".repeat(20_000), 4);
    for body in [long, one_long_message] {
        let response = gateway.chat(ACME_KEY, &body).send().await.unwrap();
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_request", "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("context"), "{message}");
    }
    let answer = gateway
        .chat_json(ACME_KEY, &ask("How do I reset my VPN password?", 4))
        .await;
    assert_eq!(answer["usage"]["completion_tokens"], 4);
    assert_eq!(openai.stats().requests, 0, "nothing went to the cloud");
}
