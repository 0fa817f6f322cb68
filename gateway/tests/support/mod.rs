//! Shared by the integration tests: a gateway served in-process over real HTTP, in front of
//! fake upstreams.

#![allow(dead_code)] // each test binary uses its own part of this

pub mod postgres_server;
pub mod redis_server;

use std::net::SocketAddr;

use fake_upstream::FakeUpstream;
use serde_json::{Value, json};
use switchboard_gateway::config::Config;
use switchboard_gateway::keys::KeyHash;
use switchboard_gateway::model_store::ModelStore;
use switchboard_gateway::server::Server;
use switchboard_gateway::state::Gateway;
use tokio::sync::oneshot;

pub const ACME_KEY: &str = "sk-acme-test";
pub const GLOBEX_KEY: &str = "sk-globex-test";
pub const UPSTREAM_KEY: &str = "sk-upstream-secret";

/// A running gateway; dropping it shuts it down.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub gateway: std::sync::Arc<Gateway>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start(yaml: &str) -> Self {
        Self::start_with_env(yaml, &[]).await
    }

    /// Starts a gateway that finds `vars` in its environment, besides the upstream key.
    pub async fn start_with_env(yaml: &str, vars: &[(&str, String)]) -> Self {
        let config = Config::from_yaml(yaml, "test config").expect("a valid test config");
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        let env = move |var: &str| match var {
            "UPSTREAM_KEY" => Some(UPSTREAM_KEY.to_owned()),
            _ => vars
                .iter()
                .find(|(name, _)| name == var)
                .map(|(_, v)| v.clone()),
        };
        let store = ModelStore::from_env();
        let server = Server::bind_with(&config, "127.0.0.1:0".parse().unwrap(), env, &store)
            .await
            .expect("the gateway binds");
        let addr = server.local_addr();
        let gateway = server.gateway().clone();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            gateway,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn chat(&self, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(body)
    }

    /// A successful chat completion's JSON.
    pub async fn chat_json(&self, key: &str, body: &Value) -> Value {
        let response = self.chat(key, body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// The JSON of an authenticated GET.
    pub async fn get_json(&self, path: &str, key: &str) -> Value {
        let request = self.http.get(self.url(path)).bearer_auth(key);
        request.send().await.unwrap().json().await.unwrap()
    }

    /// Starts the graceful shutdown.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The standard test setup: `gpt-test` on an OpenAI-compatible fake (falling back to
/// `claude-test` on an Anthropic fake), `solo` on the OpenAI fake with no fallback, `keyless`
/// whose key is not in the environment; tenant `acme` may use everything, `globex` only `solo`.
pub fn config(openai: &FakeUpstream, anthropic: &FakeUpstream, extra: &str) -> String {
    config_in(openai, anthropic, extra, &fresh_ledger_dir())
}

/// [`config`] with its ledger in `ledger`, to restart a gateway on the same one.
pub fn config_in(
    openai: &FakeUpstream,
    anthropic: &FakeUpstream,
    extra: &str,
    ledger: &std::path::Path,
) -> String {
    format!(
        r#"
limits:
  request_timeout: 3
  shutdown_grace: 5
ledger:
  path: {ledger}
upstream:
  connect_timeout: 1
  read_timeout: 2
  retry: {{ max_attempts: 3, initial_backoff: 0.01, max_backoff: 0.05, max_retry_after: 2 }}
providers:
  - name: fake-openai
    kind: openai
    base_url: {openai_url}
    api_key_env: UPSTREAM_KEY
    models:
      - name: gpt-test
        upstream_name: gpt-upstream-name
        price: {{ input_per_mtok: 1, output_per_mtok: 2 }}
        fallbacks: [claude-test]
      - name: solo
        price: {{ input_per_mtok: 1, output_per_mtok: 2 }}
  - name: fake-anthropic
    kind: anthropic
    base_url: {anthropic_url}
    api_key_env: UPSTREAM_KEY
    models:
      - name: claude-test
        upstream_name: claude-upstream-name
        price: {{ input_per_mtok: 3, output_per_mtok: 15 }}
        default_max_tokens: 64
  - name: keyless
    kind: openai
    base_url: http://127.0.0.1:9/v1
    api_key_env: SWITCHBOARD_TEST_UNSET_KEY
    models:
      - name: keyless-model
        price: {{ input_per_mtok: 1, output_per_mtok: 1 }}
tenants:
  - name: acme
    api_key_hashes: ["{acme}"]
    allowed_models: ["*"]
  - name: globex
    api_key_hashes: ["{globex}"]
    allowed_models: [solo]
{extra}"#,
        openai_url = openai.openai_base_url(),
        anthropic_url = anthropic.anthropic_base_url(),
        acme = KeyHash::of(ACME_KEY),
        globex = KeyHash::of(GLOBEX_KEY),
        ledger = ledger.display(),
    )
}

/// The embedding model and the router that reads it, as policy file sections.
pub const ROUTER_YAML: &str = "embedding_models:
  - name: minilm
    default_model: all-minilm-l6-v2
router:
  embedding_model: minilm
";

/// A response header's value (empty when absent).
pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap())
}

/// A loopback port the kernel just handed out and took back: free, barring a race.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A directory of its own for each gateway's ledger, under the target directory.
pub fn fresh_ledger_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("ledgers")
        .join(format!("{:016x}", fastrand::u64(..)))
}

/// Two fakes and a gateway in front of them.
pub async fn setup() -> (TestGateway, FakeUpstream, FakeUpstream) {
    setup_with("").await
}

pub async fn setup_with(extra: &str) -> (TestGateway, FakeUpstream, FakeUpstream) {
    let openai = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let anthropic = FakeUpstream::start_with_key(UPSTREAM_KEY).await;
    let gateway = TestGateway::start(&config(&openai, &anthropic, extra)).await;
    (gateway, openai, anthropic)
}

pub fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

pub fn hello_stream(model: &str, include_usage: bool) -> Value {
    let mut body = hello(model);
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// Reads an SSE response whole: the JSON of each `data:` event, and whether `[DONE]` ended it.
pub async fn read_sse(response: reqwest::Response) -> (Vec<Value>, bool) {
    let text = response.text().await.unwrap_or_default();
    let mut events = Vec::new();
    let mut done = false;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let data = block
            .strip_prefix("data: ")
            .expect("every frame is a data line");
        if data == "[DONE]" {
            done = true;
        } else {
            events.push(serde_json::from_str(data).expect("every event is JSON"));
        }
    }
    (events, done)
}

/// The text of a stream's content deltas.
pub fn streamed_text(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// The value of one sample in the Prometheus text, by its name and exact label set text.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
