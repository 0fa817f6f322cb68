//! The in-process engine as a member of a local model's pool: OpenAI requests become generation
//! requests, and the engine's events become OpenAI completions and chunks, in the same shapes
//! the remote providers give, so that the gateway streams and accounts for both alike.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_local_engine::{
    Engine, Event, FinishReason, Generation, GenerationRequest, SamplingParams, SubmitError,
    TokenLogprob, Turn,
};

use super::Declined;
use crate::api::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, Delta,
    Role, Usage, unix_now,
};
use crate::error::ApiError;
use crate::providers::{ChunkStream, Completion, StreamChunk, UpstreamError};

/// Builds the engine's request, refusing what the local engine cannot do.
fn generation_request(request: &ChatCompletionRequest) -> Result<GenerationRequest, ApiError> {
    if request.n.is_some_and(|n| n > 1) {
        return Err(ApiError::bad_request(
            "'n' above 1 is not supported by local models",
            Some("n"),
        ));
    }
    let mut turns = Vec::with_capacity(request.messages.len());
    for (i, message) in request.messages.iter().enumerate() {
        let role = match message.role {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool | Role::Function => {
                return Err(ApiError::bad_request(
                    "Tool messages are not supported by local models",
                    Some(&format!("messages[{i}].role")),
                ));
            }
        };
        turns.push(Turn {
            role: role.to_owned(),
            content: message
                .content
                .as_ref()
                .map(|c| c.text())
                .unwrap_or_default(),
        });
    }
    if request.extra.get("tools").is_some_and(|t| !t.is_null()) {
        return Err(ApiError::bad_request(
            "Tools are not supported by local models",
            Some("tools"),
        ));
    }
    let number = |key: &str| request.extra.get(key).and_then(Value::as_f64);
    let sampling = SamplingParams {
        temperature: request.temperature.unwrap_or(1.0) as f32,
        top_p: request.top_p.unwrap_or(1.0) as f32,
        top_k: number("top_k").map_or(0, |k| k.max(0.0) as usize),
        presence_penalty: number("presence_penalty").unwrap_or(0.0) as f32,
        frequency_penalty: number("frequency_penalty").unwrap_or(0.0) as f32,
        seed: request.extra.get("seed").and_then(Value::as_u64),
    };
    let logprobs = match request.extra.get("logprobs").and_then(Value::as_bool) {
        Some(true) => Some(
            request
                .extra
                .get("top_logprobs")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(20) as usize,
        ),
        _ => None,
    };
    Ok(GenerationRequest {
        turns,
        sampling,
        max_tokens: request.max_output_tokens().map(|n| n as usize),
        stop: request
            .stop
            .as_ref()
            .map(|s| s.to_vec())
            .unwrap_or_default(),
        logprobs,
    })
}

/// Why the engine would not take a request; a server of the pool may still take it.
fn submit_error(error: SubmitError) -> Declined {
    Declined::TryNext(match error {
        SubmitError::Overloaded { .. } => super::overloaded(),
        SubmitError::ContextExceeded { .. } => {
            ApiError::bad_request(format!("{error}."), Some("max_tokens"))
        }
        SubmitError::Template(_) | SubmitError::Tokenizer(_) => {
            ApiError::bad_request(format!("{error}."), Some("messages"))
        }
        SubmitError::Stopped => ApiError::Unavailable {
            message: format!("{error}."),
        },
    })
}

fn logprobs_json(entries: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = entries
        .iter()
        .map(|e| {
            let top: Vec<Value> = e
                .top
                .iter()
                .map(|(token, bytes, logprob)| json!({"token": token, "logprob": logprob, "bytes": bytes}))
                .collect();
            json!({"token": e.token, "logprob": e.logprob, "bytes": e.bytes, "top_logprobs": top})
        })
        .collect();
    json!({ "content": content })
}

fn completion_id() -> String {
    format!("chatcmpl-local-{:016x}", fastrand::u64(..))
}

/// The exact number of prompt tokens `request` takes in `engine`'s template, or `None` for a
/// request this model could not take anyway (tools, n > 1). Rendering and tokenizing a long
/// conversation takes a while, so it runs on a blocking thread, not on the async workers.
pub(super) async fn prompt_tokens(
    engine: &Arc<Engine>,
    request: &ChatCompletionRequest,
) -> Result<Option<u64>, ApiError> {
    let Ok(turns) = generation_request(request).map(|g| g.turns) else {
        return Ok(None);
    };
    let engine = engine.clone();
    let prompt = tokio::task::spawn_blocking(move || engine.prompt_tokens(&turns))
        .await
        .map_err(|e| generation_failed(&e.to_string()))?
        .map_err(|e| submit_error(e).into_error())?;
    Ok(Some(prompt.len() as u64))
}

/// Queues a generation, on a blocking thread like [`prompt_tokens`].
async fn submit(engine: &Arc<Engine>, request: GenerationRequest) -> Result<Generation, Declined> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || engine.submit(request))
        .await
        .map_err(|e| Declined::Fail(generation_failed(&e.to_string())))?
        .map_err(submit_error)
}

/// Generates the whole answer of the model `name`, with the mean log-probability of its tokens
/// when `measure` asks for it (how sure the model was of it; `None` for an empty answer).
pub(super) async fn complete(
    engine: &Arc<Engine>,
    name: &str,
    request: &ChatCompletionRequest,
    measure: bool,
) -> Result<(Completion, Option<f64>), Declined> {
    let mut request = generation_request(request).map_err(Declined::TryNext)?;
    let wants_logprobs = request.logprobs.is_some();
    if measure {
        // The chosen tokens' log-probabilities; the client sees them only if it asked.
        request.logprobs.get_or_insert(0);
    }
    let mut generation = submit(engine, request).await?;
    let failed = |message: &str| Declined::Fail(generation_failed(message));
    let mut text = String::new();
    let mut logprobs = Vec::new();
    let (finish, completion_tokens) = loop {
        match generation.events.recv().await {
            Some(Event::Delta {
                text: piece,
                logprobs: entries,
            }) => {
                text.push_str(&piece);
                logprobs.extend(entries);
            }
            Some(Event::Done {
                finish,
                completion_tokens,
            }) => break (finish, completion_tokens),
            Some(Event::Failed(message)) => return Err(failed(&message)),
            None => return Err(failed("the engine dropped the request")),
        }
    };
    let usage = Usage::new(generation.prompt_tokens as u64, completion_tokens as u64);
    let answer = ChatCompletion {
        id: completion_id(),
        object: "chat.completion".to_owned(),
        created: unix_now(),
        model: name.to_owned(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: Role::Assistant,
                content: Some(text),
                tool_calls: Vec::new(),
            },
            finish_reason: Some(finish.as_str().to_owned()),
            logprobs: wants_logprobs.then(|| logprobs_json(&logprobs)),
        }],
        usage,
    };
    let body = serde_json::to_vec(&answer).map_err(|e| failed(&e.to_string()))?;
    let mean_logprob = (!logprobs.is_empty()).then(|| {
        logprobs.iter().map(|l| f64::from(l.logprob)).sum::<f64>() / logprobs.len() as f64
    });
    let completion = Completion {
        body: body.into(),
        usage: Some(usage),
    };
    Ok((completion, mean_logprob))
}

/// Starts a generation of the model `name` and returns its chunks: the assistant role first,
/// the text, the finish reason, then usage. Dropping the stream stops the generation within
/// one decode step.
pub(super) async fn stream(
    engine: &Arc<Engine>,
    name: &str,
    request: &ChatCompletionRequest,
) -> Result<ChunkStream, Declined> {
    let request = generation_request(request).map_err(Declined::TryNext)?;
    let generation = submit(engine, request).await?;
    let state = LocalStream {
        model: name.to_owned(),
        id: completion_id(),
        created: unix_now(),
        generation,
        ready: VecDeque::new(),
        started: false,
        finished: false,
    };
    Ok(Box::pin(futures_util::stream::unfold(
        state,
        |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        },
    )))
}

/// The chunks of one local generation, built as its events arrive.
struct LocalStream {
    model: String,
    id: String,
    created: u64,
    generation: Generation,
    ready: VecDeque<ChatCompletionChunk>,
    /// Whether the assistant-role chunk has been queued. It waits for the first event, so that
    /// the first chunk a client gets marks the first token (time to first token).
    started: bool,
    finished: bool,
}

impl LocalStream {
    fn chunk(
        &self,
        delta: Delta,
        finish: Option<FinishReason>,
        logprobs: Option<Value>,
    ) -> ChatCompletionChunk {
        let mut chunk = ChatCompletionChunk::new(&self.id, self.created, &self.model)
            .with_delta(delta, finish.map(FinishReason::as_str));
        chunk.choices[0].logprobs = logprobs;
        chunk
    }

    async fn next(&mut self) -> Option<Result<StreamChunk, UpstreamError>> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Some(stream_chunk(&chunk));
            }
            if self.finished {
                return None;
            }
            let event = self.generation.events.recv().await;
            if !self.started {
                self.started = true;
                let role = Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                };
                let chunk = self.chunk(role, None, None);
                self.ready.push_back(chunk);
            }
            match event {
                Some(Event::Delta { text, logprobs }) => {
                    let logprobs = (!logprobs.is_empty()).then(|| logprobs_json(&logprobs));
                    let delta = Delta {
                        content: Some(text),
                        ..Delta::default()
                    };
                    let chunk = self.chunk(delta, None, logprobs);
                    self.ready.push_back(chunk);
                }
                Some(Event::Done {
                    finish,
                    completion_tokens,
                }) => {
                    self.finished = true;
                    let end = self.chunk(Delta::default(), Some(finish), None);
                    self.ready.push_back(end);
                    let mut usage = ChatCompletionChunk::new(&self.id, self.created, &self.model);
                    usage.usage = Some(Usage::new(
                        self.generation.prompt_tokens as u64,
                        completion_tokens as u64,
                    ));
                    self.ready.push_back(usage);
                }
                Some(Event::Failed(message)) => {
                    self.finished = true;
                    return Some(Err(UpstreamError::Interrupted(message)));
                }
                None => {
                    self.finished = true;
                    return Some(Err(UpstreamError::Interrupted(
                        "the engine dropped the request".to_owned(),
                    )));
                }
            }
        }
    }
}

fn stream_chunk(chunk: &ChatCompletionChunk) -> Result<StreamChunk, UpstreamError> {
    let json = serde_json::to_vec(chunk).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    Ok(StreamChunk {
        json: Bytes::from(json),
        usage: chunk.usage,
        usage_only: chunk.usage.is_some() && chunk.choices.is_empty(),
        text_bytes: chunk.text_bytes(),
    })
}

pub(super) fn generation_failed(message: &str) -> ApiError {
    ApiError::UpstreamFailed {
        message: format!("The local model failed: {message}"),
    }
}
