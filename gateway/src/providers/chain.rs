//! Calling a model's fallback chain: each target is tried with bounded retries (backoff, jitter,
//! `Retry-After`), then the next target, all within the request's deadline. A streamed answer is
//! only committed once its first chunk is in, so everything before that can still be retried;
//! nothing after it ever is.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::{ChunkStream, Completion, Provider, StreamChunk, UpstreamError, check_status, retry};
use crate::api::ChatCompletionRequest;
use crate::config::{ModelConfig, RetrySettings, UpstreamSettings};
use crate::metrics::Metrics;

/// One model on one provider.
#[derive(Debug, Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    pub model: ModelConfig,
}

impl Target {
    /// One attempt at this target, without retries: for a server of the local pool, whose pool
    /// tries its next member instead.
    pub async fn complete_once(
        &self,
        http: &reqwest::Client,
        request: &ChatCompletionRequest,
    ) -> Result<Completion, UpstreamError> {
        self.has_credentials()?;
        let body = self.provider.body(&self.model, request)?;
        CompleteCall.call(http, self, body).await
    }

    /// [`Target::complete_once`] for a stream: it has started once its first chunk is in.
    pub async fn stream_once(
        &self,
        http: &reqwest::Client,
        request: &ChatCompletionRequest,
    ) -> Result<StreamStart, UpstreamError> {
        self.has_credentials()?;
        let body = self.provider.body(&self.model, request)?;
        StreamCall.call(http, self, body).await
    }

    /// Whether it answers a GET of `url` with a success status within `timeout`.
    pub async fn answers_get(
        &self,
        http: &reqwest::Client,
        url: reqwest::Url,
        timeout: Duration,
    ) -> bool {
        if self.has_credentials().is_err() {
            return false;
        }
        let probe = self.provider.get(http, url).timeout(timeout).send().await;
        probe.is_ok_and(|response| response.status().is_success())
    }

    /// Refuses to call a provider whose key's variable is unset.
    fn has_credentials(&self) -> Result<(), UpstreamError> {
        match self.provider.credentials() {
            super::Credentials::Missing { env } => {
                Err(UpstreamError::NoCredentials { env: env.clone() })
            }
            _ => Ok(()),
        }
    }
}

/// A stream whose first chunk has arrived.
pub struct StreamStart {
    pub first: StreamChunk,
    pub rest: ChunkStream,
}

/// The one shared, connection-pooled HTTP client and the retry rules.
pub struct RemoteClient {
    http: reqwest::Client,
    retry: RetrySettings,
    metrics: Arc<Metrics>,
}

/// What came back and from which target of the chain.
pub struct FromTarget<'a, T> {
    pub value: T,
    pub target: &'a Target,
}

/// The chain failed; `provider` names the target whose error is reported.
pub struct ChainFailed {
    pub error: UpstreamError,
    pub provider: String,
}

impl RemoteClient {
    pub fn new(settings: &UpstreamSettings, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let idle = Duration::from_secs(90);
        let http = super::http_client(settings.connect_timeout, settings.read_timeout, idle)?;
        Ok(Self {
            http,
            retry: settings.retry.clone(),
            metrics,
        })
    }

    /// A non-streamed answer from the first target of `chain` that gives one.
    pub async fn complete<'a>(
        &self,
        chain: &'a [Target],
        request: &ChatCompletionRequest,
        deadline: Instant,
    ) -> Result<FromTarget<'a, Completion>, ChainFailed> {
        self.run(chain, request, deadline, &CompleteCall).await
    }

    /// A stream from the first target of `chain` that delivers a first chunk.
    pub async fn stream<'a>(
        &self,
        chain: &'a [Target],
        request: &ChatCompletionRequest,
        deadline: Instant,
    ) -> Result<FromTarget<'a, StreamStart>, ChainFailed> {
        self.run(chain, request, deadline, &StreamCall).await
    }

    async fn run<'a, C: Call>(
        &self,
        chain: &'a [Target],
        request: &ChatCompletionRequest,
        deadline: Instant,
        call: &C,
    ) -> Result<FromTarget<'a, C::Output>, ChainFailed> {
        let mut failed: Option<(&Target, UpstreamError)> = None;
        for target in chain {
            if let Some((previous, error)) = &failed {
                let (from, to) = (&previous.model.name, &target.model.name);
                self.metrics.fell_back(from, to, error.kind());
            }
            let error = match self.try_target(target, request, deadline, call).await {
                Ok(value) => return Ok(FromTarget { value, target }),
                Err(error) => error,
            };
            let stop = !error.allows_fallback() || Instant::now() >= deadline;
            failed = Some((target, error));
            if stop {
                break;
            }
        }
        Err(match failed {
            Some((target, error)) => ChainFailed {
                error,
                provider: target.provider.name.clone(),
            },
            None => ChainFailed {
                error: UpstreamError::Unsupported("the model has no targets".to_owned()),
                provider: String::new(),
            },
        })
    }

    async fn try_target<C: Call>(
        &self,
        target: &Target,
        request: &ChatCompletionRequest,
        deadline: Instant,
        call: &C,
    ) -> Result<C::Output, UpstreamError> {
        let provider = &target.provider;
        target.has_credentials()?;
        let body = provider.body(&target.model, request)?;
        let mut retries = 0;
        loop {
            let result =
                tokio::time::timeout_at(deadline, call.call(&self.http, target, body.clone()))
                    .await
                    .unwrap_or(Err(UpstreamError::Timeout));
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            self.metrics.upstream_error(&provider.name, error.kind());
            // The kind and status only: an upstream's message can quote the request.
            tracing::warn!(
                provider = %provider.name,
                model = %target.model.name,
                attempt = retries + 1,
                kind = error.kind(),
                status = error.status(),
                "upstream attempt failed"
            );
            if !error.is_retryable() || retries + 1 >= self.retry.max_attempts {
                return Err(error);
            }
            let retry_after = match &error {
                UpstreamError::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            if retry_after.is_some_and(|after| after > self.retry.max_retry_after) {
                return Err(error);
            }
            let wait = retry::backoff(&self.retry, retries).max(retry_after.unwrap_or_default());
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }
}

/// One attempt at one target, in one of the two shapes an answer takes.
trait Call: Sync {
    type Output: Send;

    fn call(
        &self,
        http: &reqwest::Client,
        target: &Target,
        body: Bytes,
    ) -> impl Future<Output = Result<Self::Output, UpstreamError>> + Send;
}

async fn send(
    http: &reqwest::Client,
    target: &Target,
    body: Bytes,
) -> Result<reqwest::Response, UpstreamError> {
    let response = target
        .provider
        .post(http, body)
        .send()
        .await
        .map_err(UpstreamError::from_reqwest)?;
    check_status(response).await
}

struct CompleteCall;

impl Call for CompleteCall {
    type Output = Completion;

    async fn call(
        &self,
        http: &reqwest::Client,
        target: &Target,
        body: Bytes,
    ) -> Result<Completion, UpstreamError> {
        let response = send(http, target, body).await?;
        target.provider.completion(response, &target.model).await
    }
}

struct StreamCall;

impl Call for StreamCall {
    type Output = StreamStart;

    async fn call(
        &self,
        http: &reqwest::Client,
        target: &Target,
        body: Bytes,
    ) -> Result<StreamStart, UpstreamError> {
        let response = send(http, target, body).await?;
        let mut rest = target.provider.chunks(response, &target.model);
        match rest.next().await {
            Some(Ok(first)) => Ok(StreamStart { first, rest }),
            Some(Err(e)) => Err(e),
            None => Err(UpstreamError::Interrupted(
                "the stream ended before its first chunk".to_owned(),
            )),
        }
    }
}
