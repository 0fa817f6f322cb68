//! The pipeline's last step: the plan carried out by the local engine or the remote chain, with
//! the confidence cascade (a local answer the model was unsure of goes remote) and the local
//! fallback (every remote target failed).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_policies::{Afterwards, Placement};
use tokio::time::Instant;

use super::classify::redact;
use super::plan::{CascadeChain, Plan, Route};
use super::record::RequestRecord;
use crate::api::ChatCompletionRequest;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::providers::local::{LocalModel, Reach};
use crate::providers::{ChainFailed, Completion, RemoteClient, StreamStart, Target, UpstreamError};

/// A request's answer, before it is an HTTP response.
pub enum Answer {
    /// A whole OpenAI chat completion.
    Complete { body: Bytes, by: Answerer },
    /// The first chunk is in; the response is built around the stream by the caller, which
    /// owns the request's record.
    Stream {
        start: StreamStart,
        by: Answerer,
        include_usage: bool,
    },
}

/// Who answered, for the `x-switchboard-*` headers and the request's record.
pub struct Answerer {
    pub route: Placement,
    pub provider: String,
    pub model: String,
}

impl Answerer {
    /// A model of this machine: the local engine or the embedder.
    pub fn local(model: &str) -> Self {
        Self {
            route: Placement::Local,
            provider: "local".to_owned(),
            model: model.to_owned(),
        }
    }
}

impl From<&Target> for Answerer {
    fn from(target: &Target) -> Self {
        Self {
            route: Placement::Remote,
            provider: target.provider.name.clone(),
            model: target.model.name.clone(),
        }
    }
}

/// What carrying out a plan uses: the remote client, the metrics, the request's time limit,
/// which members of a local pool may answer.
#[derive(Clone, Copy)]
pub struct Executor<'g> {
    pub remote: &'g RemoteClient,
    pub metrics: &'g Metrics,
    pub timeout: Duration,
    pub local_reach: Reach,
}

impl Executor<'_> {
    /// Carries out `plan` for `request`.
    pub async fn run(
        &self,
        plan: Plan,
        mut request: ChatCompletionRequest,
        record: &mut RequestRecord,
    ) -> Result<Answer, ApiError> {
        let redact_remote = plan.decision.as_ref().is_some_and(|d| d.redact);
        let chain = match (plan.route, plan.cascade) {
            (Route::Local(local), Some(cascade)) if !request.is_stream() => {
                return self
                    .answer_or_escalate(&local, cascade, request, record)
                    .await;
            }
            (Route::Local(local), _) => return self.answer_locally(&local, &request, record).await,
            (Route::Remote(chain), _) => chain,
        };
        // Until a target answers, the request counts against the first one (a client that
        // goes away meanwhile is recorded there).
        if let Some(first) = chain.first() {
            record.answered_by(&Answerer::from(first));
        }
        // The local fallback sees the request as the client sent it.
        let unredacted = redact_remote.then(|| {
            let original = request.messages.clone();
            redact(&mut request.messages);
            original
        });
        let failed = match self.answer_remotely(&chain, &request, record).await {
            Ok(answer) => return Ok(answer),
            Err(failed) => failed,
        };
        let Some(local) = plan.local_fallback else {
            return Err(failed.error.into_api_error(&failed.provider));
        };
        let from = chain.first().map_or("", |t| t.model.name.as_str());
        tracing::warn!(
            kind = failed.error.kind(),
            from,
            to = %local.name,
            "every remote target failed: answering locally"
        );
        self.metrics
            .fell_back(from, &local.name, failed.error.kind());
        record.afterwards(Afterwards::RemoteFailed);
        if let Some(messages) = unredacted {
            request.messages = messages;
        }
        self.answer_locally(&local, &request, record).await
    }

    /// Asks a remote chain: its answer (streamed: from its first chunk on), or why every
    /// target failed.
    async fn answer_remotely(
        &self,
        chain: &[Target],
        request: &ChatCompletionRequest,
        record: &mut RequestRecord,
    ) -> Result<Answer, ChainFailed> {
        let deadline = Instant::now() + self.timeout;
        if request.is_stream() {
            let answered = self.remote.stream(chain, request, deadline).await?;
            let by = Answerer::from(answered.target);
            record.answered_by(&by);
            return Ok(Answer::Stream {
                start: answered.value,
                by,
                include_usage: request.wants_usage_chunk(),
            });
        }
        let answered = self.remote.complete(chain, request, deadline).await?;
        let by = Answerer::from(answered.target);
        record.answered_by(&by);
        record.answered(answered.value.usage, unreported_bytes(&answered.value));
        Ok(Answer::Complete {
            body: answered.value.body,
            by,
        })
    }

    /// The confidence cascade: answers locally, and if the model was unsure of its answer (the
    /// mean log-probability of its tokens under the floor), discards it and asks the remote
    /// chain; when that fails too, the local answer stands.
    async fn answer_or_escalate(
        &self,
        local: &Arc<LocalModel>,
        cascade: CascadeChain,
        mut request: ChatCompletionRequest,
        record: &mut RequestRecord,
    ) -> Result<Answer, ApiError> {
        let by = Answerer::local(&local.name);
        record.answered_by(&by);
        let (completion, mean) = local.complete_scored(&request, self.local_reach).await?;
        let Some(mean) = mean.filter(|&mean| mean < cascade.floor) else {
            record.answered(completion.usage, unreported_bytes(&completion));
            return Ok(Answer::Complete {
                body: completion.body,
                by,
            });
        };
        let wasted = completion
            .usage
            .map_or(0, |u| u.prompt_tokens + u.completion_tokens);
        self.metrics.cascade_wasted(&local.name, wasted);
        let unsure = |escalated| Afterwards::Unsure {
            mean_logprob: mean,
            floor: cascade.floor,
            escalated,
        };
        if cascade.redact {
            redact(&mut request.messages);
        }
        match self.answer_remotely(&cascade.chain, &request, record).await {
            Ok(answer) => {
                record.escalated_after_all(unsure(true));
                Ok(answer)
            }
            Err(failed) => {
                tracing::warn!(
                    kind = failed.error.kind(),
                    "the cascade's remote chain failed: the local answer stands"
                );
                record.afterwards(unsure(false));
                record.answered(completion.usage, unreported_bytes(&completion));
                Ok(Answer::Complete {
                    body: completion.body,
                    by,
                })
            }
        }
    }

    async fn answer_locally(
        &self,
        local: &Arc<LocalModel>,
        request: &ChatCompletionRequest,
        record: &mut RequestRecord,
    ) -> Result<Answer, ApiError> {
        let by = Answerer::local(&local.name);
        record.answered_by(&by);
        if request.is_stream() {
            let mut rest = local.stream(request, self.local_reach).await?;
            let first = match rest.next().await {
                Some(Ok(first)) => first,
                Some(Err(error)) => return Err(error.into_api_error("local")),
                None => {
                    return Err(
                        UpstreamError::Interrupted("no output".to_owned()).into_api_error("local")
                    );
                }
            };
            return Ok(Answer::Stream {
                start: StreamStart { first, rest },
                by,
                include_usage: request.wants_usage_chunk(),
            });
        }
        let completion = local.complete(request, self.local_reach).await?;
        record.answered(completion.usage, unreported_bytes(&completion));
        Ok(Answer::Complete {
            body: completion.body,
            by,
        })
    }
}

/// The bytes of answer text that estimate the usage of an answer that reports none (some
/// OpenAI-compatible servers): 0 for one that does.
fn unreported_bytes(completion: &Completion) -> u64 {
    match completion.usage {
        Some(_) => 0,
        None => answer_bytes(&completion.body),
    }
}

/// Bytes of answer text in a complete OpenAI answer.
fn answer_bytes(body: &[u8]) -> u64 {
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    let choices = answer["choices"].as_array().into_iter().flatten();
    let content = choices.filter_map(|c| c["message"]["content"].as_str());
    content.map(|text| text.len() as u64).sum()
}
