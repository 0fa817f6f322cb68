//! A server of a local model's pool: another Switchboard node, or any server that speaks
//! OpenAI's chat completions (llama.cpp, vLLM). It is called once per request, without retries
//! (the pool tries its next member instead), and counted: its requests in flight, whether it is
//! up, what it answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use super::Declined;
use crate::api::ChatCompletionRequest;
use crate::config::{LocalServerConfig, ModelConfig, ProviderConfig, ProviderKind};
use crate::providers::{ChunkStream, Completion, Provider, Target, UpstreamError};
use switchboard_policies::Price;

/// How long a health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct PoolServer {
    /// `host:port`: names it in metrics and logs (a URL could carry credentials).
    pub label: String,
    /// The model on the server, spoken to in OpenAI's format with the server's key.
    target: Target,
    models_url: reqwest::Url,
    http: reqwest::Client,
    max_in_flight: usize,
    in_flight: Arc<AtomicUsize>,
    up: AtomicBool,
    answered: AtomicU64,
    failed: AtomicU64,
}

/// What a server has done, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct ServerStats {
    pub up: bool,
    pub in_flight: usize,
    pub answered: u64,
    pub failed: u64,
}

/// One request's place on a server; dropping it frees the place.
pub(super) struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PoolServer {
    /// A server of the pool `model`, reading its key through `env`. It counts as down until
    /// its first probe succeeds.
    pub fn new(
        model: &str,
        config: &LocalServerConfig,
        http: reqwest::Client,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let base = config.url.trim_end_matches('/');
        // Validated with the config: an unparsable URL fails every probe.
        let models_url = reqwest::Url::parse(&format!("{base}/models"))
            .unwrap_or_else(|_| reqwest::Url::parse("http://invalid.invalid/").expect("valid"));
        let label = match (models_url.host_str(), models_url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => "invalid".to_owned(),
        };
        let provider = ProviderConfig {
            name: format!("{model}@{label}"),
            kind: ProviderKind::Openai,
            base_url: base.to_owned(),
            api_key_env: config.api_key_env.clone(),
            api_key_header: None,
            // A Switchboard node answers it in-process only: no loop between nodes that list
            // each other.
            headers: [(super::POOL_HOP_HEADER.to_owned(), "1".to_owned())].into(),
            query: Default::default(),
            models: Vec::new(),
        };
        let model = ModelConfig {
            name: model.to_owned(),
            upstream_name: config.model.clone(),
            // What a local answer costs is the pool's price, counted by the gateway.
            price: Price::FREE,
            fallbacks: Vec::new(),
            default_max_tokens: None,
            context_window: None,
        };
        Self {
            label,
            target: Target {
                provider: Arc::new(Provider::new(&provider, env)),
                model,
            },
            models_url,
            http,
            max_in_flight: config.max_in_flight,
            in_flight: Arc::new(AtomicUsize::new(0)),
            up: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> ServerStats {
        ServerStats {
            up: self.is_up(),
            in_flight: self.in_flight(),
            answered: self.answered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether a request would find a place on it now.
    pub(super) fn has_room(&self) -> bool {
        self.is_up() && self.in_flight() < self.max_in_flight
    }

    /// Takes a place for one request, if it is up and has one.
    pub(super) fn take_place(&self) -> Option<Place> {
        if !self.is_up() {
            return None;
        }
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_in_flight).then_some(n + 1)
            });
        taken.ok().map(|_| Place(self.in_flight.clone()))
    }

    /// Asks the server whether it serves (`GET {url}/models`), and marks it up or down.
    pub async fn probe(&self) {
        let models_url = self.models_url.clone();
        let up = self
            .target
            .answers_get(&self.http, models_url, PROBE_TIMEOUT)
            .await;
        self.mark(up);
    }

    fn mark(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            let model = &self.target.model.name;
            if up {
                tracing::info!(model, server = %self.label, "a local pool server is up");
            } else {
                tracing::warn!(
                    model,
                    server = %self.label,
                    "a local pool server is down: it gets no requests until a probe succeeds"
                );
            }
        }
    }

    /// The whole answer, and the mean log-probability of its tokens when `measure` asks for it
    /// (the server is asked for log-probabilities; the client sees them only if it asked).
    pub(super) async fn complete(
        &self,
        request: &ChatCompletionRequest,
        measure: bool,
        deadline: Instant,
    ) -> Result<(Completion, Option<f64>), Declined> {
        let wants_logprobs = request.extra.get("logprobs").and_then(Value::as_bool) == Some(true);
        let asks_logprobs = measure && !wants_logprobs;
        let call = async {
            if asks_logprobs {
                let mut request = request.clone();
                request
                    .extra
                    .insert("logprobs".to_owned(), Value::Bool(true));
                self.target.complete_once(&self.http, &request).await
            } else {
                self.target.complete_once(&self.http, request).await
            }
        };
        let result = timeout_at(deadline, call).await;
        let completion = self.outcome(result.unwrap_or(Err(UpstreamError::Timeout)))?;
        if !measure {
            return Ok((completion, None));
        }
        Ok(measured(completion, asks_logprobs))
    }

    /// The stream of an answer, once its first chunk is in.
    pub(super) async fn stream(
        &self,
        request: &ChatCompletionRequest,
        deadline: Instant,
    ) -> Result<ChunkStream, Declined> {
        let call = self.target.stream_once(&self.http, request);
        let result = timeout_at(deadline, call).await;
        let start = self.outcome(result.unwrap_or(Err(UpstreamError::Timeout)))?;
        let first = futures_util::stream::once(async move { Ok(start.first) });
        Ok(Box::pin(first.chain(start.rest)))
    }

    /// Counts an attempt's outcome. Whatever the error, the pool's next member may still answer
    /// (a server may refuse what another takes: a longer prompt, tools), so each passes the
    /// request on. A server that refused the connection, or the pool's key or model name, is
    /// down until a probe finds it serving.
    fn outcome<T>(&self, result: Result<T, UpstreamError>) -> Result<T, Declined> {
        let error = match result {
            Ok(value) => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                return Ok(value);
            }
            Err(error) => error,
        };
        self.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            model = %self.target.model.name,
            server = %self.label,
            kind = error.kind(),
            status = error.status(),
            "a local pool server failed"
        );
        let misconfigured = matches!(
            error,
            UpstreamError::Connect(_)
                | UpstreamError::NoCredentials { .. }
                | UpstreamError::Status {
                    status: 401 | 403 | 404,
                    ..
                }
        );
        if misconfigured {
            self.mark(false);
        }
        // Named by its model: the server's address is the operator's business.
        Err(Declined::TryNext(
            error.into_api_error(&self.target.model.name),
        ))
    }
}

/// A server's answer with the mean log-probability of its tokens (OpenAI's
/// `choices[0].logprobs.content[].logprob`), without them where only the gateway asked for
/// them (`strip`).
fn measured(completion: Completion, strip: bool) -> (Completion, Option<f64>) {
    let Ok(mut answer) = serde_json::from_slice::<Value>(&completion.body) else {
        return (completion, None);
    };
    let tokens = answer
        .pointer("/choices/0/logprobs/content")
        .and_then(Value::as_array);
    let logprobs: Vec<f64> = tokens
        .into_iter()
        .flatten()
        .filter_map(|token| token.get("logprob")?.as_f64())
        .collect();
    let mean = (!logprobs.is_empty()).then(|| logprobs.iter().sum::<f64>() / logprobs.len() as f64);
    if !strip {
        return (completion, mean);
    }
    let choices = answer.get_mut("choices").and_then(Value::as_array_mut);
    for choice in choices.into_iter().flatten() {
        if let Some(choice) = choice.as_object_mut() {
            choice.insert("logprobs".to_owned(), Value::Null);
        }
    }
    match serde_json::to_vec(&answer) {
        Ok(body) => (
            Completion {
                body: body.into(),
                usage: completion.usage,
            },
            mean,
        ),
        Err(_) => (completion, mean),
    }
}

impl std::fmt::Debug for PoolServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolServer")
            .field("label", &self.label)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measured_answer_keeps_logprobs_only_for_a_client_that_asked() {
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"logprobs":{"content":[{"token":"h","logprob":-1.0},{"token":"i","logprob":-3.0}]}}]}"#;
        let completion = || Completion {
            body: bytes::Bytes::from_static(body),
            usage: None,
        };
        let (kept, mean) = measured(completion(), false);
        assert_eq!(mean, Some(-2.0));
        assert_eq!(kept.body, completion().body);
        let (stripped, mean) = measured(completion(), true);
        assert_eq!(mean, Some(-2.0));
        let stripped: Value = serde_json::from_slice(&stripped.body).unwrap();
        assert!(stripped["choices"][0]["logprobs"].is_null());
        assert_eq!(stripped["choices"][0]["message"]["content"], "hi");
        // Log-probabilities in a shape not read still leave when the gateway asked for them.
        let odd = Completion {
            body: bytes::Bytes::from_static(br#"{"choices":[{"logprobs":{"tokens":[-1]}}]}"#),
            usage: None,
        };
        let (stripped, mean) = measured(odd, true);
        assert_eq!(mean, None);
        let stripped: Value = serde_json::from_slice(&stripped.body).unwrap();
        assert!(stripped["choices"][0]["logprobs"].is_null());
    }
}
