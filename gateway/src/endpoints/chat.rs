//! `POST /v1/chat/completions`: admission, authentication, parsing, then the remote chain,
//! streamed or not.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use switchboard_router::classifier::{Classifier, language_of, private_data};
use switchboard_router::pii::Finding;
use tokio::time::Instant;
use tracing::Instrument;

use super::extract::{Admitted, JsonBody, Refused, RequestId, Validate};
use super::{admit, failed, tag_with_id};
use crate::accounting::{Classification, Findings, RequestRecord, Settlement};
use crate::api::ChatCompletionRequest;
use crate::error::ApiError;
use crate::policy::Costs;
use crate::providers::local::LocalModel;
use crate::providers::{ChainFailed, ChunkStream, StreamChunk, StreamStart, Target, UpstreamError};
use crate::routing::{self, Cascade, Route};
use crate::server::Gateway;

pub async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    RequestId(id): RequestId,
    admission: Result<Admitted, Refused>,
    headers: HeaderMap,
    body: JsonBody<ChatCompletionRequest>,
) -> Response {
    let started = Instant::now();
    let mut record =
        RequestRecord::start(gateway.metrics.clone(), id.clone(), started).kept_in(&gateway.ledger);
    let span = tracing::info_span!("request", request_id = %id);
    let answered = answer(&gateway, admission, &headers, body, &mut record)
        .instrument(span)
        .await;
    let private_data = crate::classify::header_value(&record.findings.private_data);
    let language = record.findings.language;
    let classification = record.findings.classification.clone();
    let reason = record.reason.clone();
    let (mut response, unsettled) = match answered {
        Ok(Answer::Complete(mut response)) => {
            record.status = response.status().as_u16();
            if let Some(costs) = record.costs() {
                add_cost_headers(response.headers_mut(), &costs);
            }
            (response, Some(record))
        }
        Ok(Answer::Stream {
            start,
            by,
            include_usage,
        }) => {
            let body = SseBody {
                pending: Some(start.first),
                rest: start.rest,
                deadline: started + gateway.limits.request_timeout,
                include_usage,
                provider: by.provider.clone(),
                metrics: gateway.metrics.clone(),
            };
            // From here on the stream settles the record, when it ends or is dropped.
            (sse_response(body.into_body(record), &by), None)
        }
        Err(error) => (failed(error, &mut record), Some(record)),
    };
    tag_with_id(&mut response, &id);
    if let Some(kinds) = private_data {
        response.headers_mut().insert("x-switchboard-pii", kinds);
    }
    if let Some(code) = language {
        let value = HeaderValue::from_static(code);
        response
            .headers_mut()
            .insert("x-switchboard-language", value);
    }
    if let Some(reason) = reason.and_then(|r| HeaderValue::from_str(&r).ok()) {
        response
            .headers_mut()
            .insert("x-switchboard-reason", reason);
    }
    if let Some(c) = classification {
        let headers = response.headers_mut();
        let complexity = HeaderValue::from_str(&format!("{:.3}", c.complexity));
        if let (Ok(complexity), Ok(domain)) = (complexity, HeaderValue::from_str(&c.domain)) {
            headers.insert("x-switchboard-complexity", complexity);
            headers.insert("x-switchboard-domain", domain);
        }
    }
    if let Some(record) = unsettled {
        record.settle_durably().await;
    }
    response
}

enum Answer {
    Complete(Response),
    /// The first chunk is in; the response is built around the stream by the caller, which
    /// owns the request's record.
    Stream {
        start: StreamStart,
        by: AnsweredBy,
        include_usage: bool,
    },
}

/// Who answered, for the `x-switchboard-*` headers and the request's record.
struct AnsweredBy {
    route: &'static str,
    provider: String,
    model: String,
}

impl AnsweredBy {
    fn note_in(&self, record: &mut RequestRecord) {
        record.route = self.route;
        record.provider = Some(self.provider.clone());
        record.model = self.model.clone();
    }

    fn local(model: &LocalModel) -> Self {
        Self {
            route: "local",
            provider: "local".to_owned(),
            model: model.name.clone(),
        }
    }
}

impl From<&Target> for AnsweredBy {
    fn from(target: &Target) -> Self {
        Self {
            route: "remote",
            provider: target.provider.name.clone(),
            model: target.model.name.clone(),
        }
    }
}

/// What the router finds in the request. Without a router (or when it cannot score the
/// request: its queue is full) the request is still scanned for private data, and for its
/// language when `language` asks for it (reading a language costs about half a millisecond,
/// more than the rest of the gateway's work on a request), and answered unscored.
pub(super) async fn classify(
    classifier: Option<&Classifier>,
    request: &ChatCompletionRequest,
    language: bool,
) -> Findings {
    let started = Instant::now();
    let turns = crate::classify::turns(&request.messages);
    let distinct_kinds =
        |pii: &[(usize, Finding)]| crate::classify::distinct(pii.iter().map(|(_, f)| f.kind));
    if let Some(classifier) = classifier {
        match classifier.classify(&turns).await {
            Ok(scores) => {
                return Findings {
                    private_data: distinct_kinds(&scores.pii),
                    language: scores.language.map(|l| l.code),
                    classification: Some(Classification {
                        complexity: scores.complexity,
                        domain: scores.top_domain().to_owned(),
                        took: started.elapsed(),
                    }),
                };
            }
            Err(error) => tracing::warn!(%error, "the router could not score the request"),
        }
    }
    Findings {
        private_data: distinct_kinds(&private_data(&turns)),
        language: language
            .then(|| language_of(&turns).map(|l| l.code))
            .flatten(),
        classification: None,
    }
}

async fn answer(
    gateway: &Gateway,
    admission: Result<Admitted, Refused>,
    headers: &HeaderMap,
    body: JsonBody<ChatCompletionRequest>,
    record: &mut RequestRecord,
) -> Result<Answer, ApiError> {
    let tenant = admit(admission, record)?;
    let mut request = body.read().await?;
    let policy = gateway.policy();
    let language = policy.reads_language(&request.model);
    record.findings = classify(gateway.classifier.as_ref(), &request, language).await;
    record.prompt_bytes = request.text_bytes();
    if gateway.keep_routing_text {
        let turns = crate::classify::turns(&request.messages);
        record.routing_text = Some(switchboard_router::conversation::routing_text(&turns));
    }

    if !tenant.may_use(&request.model) {
        return Err(ApiError::ModelNotFound(request.model));
    }
    let plan = routing::plan(
        gateway,
        &policy,
        &tenant,
        &request,
        headers,
        &record.findings,
    );
    let plan = plan.await?;
    note_decision(gateway, &plan, record);
    let redact = plan.decision.as_ref().is_some_and(|d| d.redact);
    record.settlement = Some(Settlement {
        policy: policy.clone(),
        reservation: plan.reservation,
    });

    let chain = match (plan.route, plan.cascade) {
        (Route::Local(local), Some(cascade)) if !request.is_stream() => {
            return answer_or_escalate(gateway, &local, cascade, request, record).await;
        }
        (Route::Local(local), _) => return answer_locally(&local, &request, record).await,
        (Route::Remote(chain), _) => chain,
    };
    // Until a target answers, the request counts against the first one (a client that goes
    // away meanwhile is recorded there).
    if let Some(first) = chain.first() {
        AnsweredBy::from(first).note_in(record);
    }
    // The local fallback sees the request as the client sent it.
    let unredacted = redact.then(|| {
        let original = request.messages.clone();
        crate::classify::redact(&mut request.messages);
        original
    });
    let failed = match answer_remotely(gateway, &chain, &request, record).await {
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
    gateway
        .metrics
        .fallbacks
        .with_label_values(&[from, &local.name, failed.error.kind()])
        .inc();
    if let Some(reason) = &mut record.reason {
        reason.push_str("; remote failed: local");
    }
    if let Some(messages) = unredacted {
        request.messages = messages;
    }
    answer_locally(&local, &request, record).await
}

/// Notes the policy's decision in the record, and counts an escalation.
fn note_decision(gateway: &Gateway, plan: &routing::Plan, record: &mut RequestRecord) {
    let Some(decision) = &plan.decision else {
        return;
    };
    record.reason = Some(decision.reason.to_string());
    record.reason_code = Some(decision.reason.label());
    if plan.reservation.as_ref().and_then(|r| r.routed()) == Some(true) {
        gateway
            .metrics
            .escalations
            .with_label_values(&[&record.tenant, decision.reason.label()])
            .inc();
    }
}

/// Asks a remote chain: its answer (streamed: from its first chunk on), or why every target
/// failed.
async fn answer_remotely(
    gateway: &Gateway,
    chain: &[Target],
    request: &ChatCompletionRequest,
    record: &mut RequestRecord,
) -> Result<Answer, ChainFailed> {
    let deadline = Instant::now() + gateway.limits.request_timeout;
    let remote = &gateway.remote;
    if request.is_stream() {
        let answered = remote.stream(chain, request, deadline).await?;
        let by = AnsweredBy::from(answered.target);
        by.note_in(record);
        return Ok(Answer::Stream {
            start: answered.value,
            by,
            include_usage: request.wants_usage_chunk(),
        });
    }
    let answered = remote.complete(chain, request, deadline).await?;
    let by = AnsweredBy::from(answered.target);
    by.note_in(record);
    record.usage = answered.value.usage;
    if record.usage.is_none() {
        record.answer_bytes = answer_bytes(&answered.value.body);
    }
    Ok(Answer::Complete(json_response(answered.value.body, &by)))
}

/// The confidence cascade: answers locally, and if the model was unsure of its answer (the
/// mean log-probability of its tokens under the floor), discards it and asks the remote chain;
/// when that fails too, the local answer stands.
async fn answer_or_escalate(
    gateway: &Gateway,
    local: &Arc<LocalModel>,
    cascade: Cascade,
    mut request: ChatCompletionRequest,
    record: &mut RequestRecord,
) -> Result<Answer, ApiError> {
    let by = AnsweredBy::local(local);
    by.note_in(record);
    let (completion, mean) = local.complete_scored(&request).await?;
    let Some(mean) = mean.filter(|&mean| mean < cascade.floor) else {
        record.usage = completion.usage;
        return Ok(Answer::Complete(json_response(completion.body, &by)));
    };
    let wasted = completion
        .usage
        .map_or(0, |u| u.prompt_tokens + u.completion_tokens);
    let metrics = &gateway.metrics;
    metrics
        .cascade_wasted_tokens
        .with_label_values(&[&local.name])
        .inc_by(wasted);
    let unsure = format!(
        "low confidence (mean logprob {mean:.2} < {:.2})",
        cascade.floor
    );
    if cascade.redact {
        crate::classify::redact(&mut request.messages);
    }
    match answer_remotely(gateway, &cascade.chain, &request, record).await {
        Ok(answer) => {
            metrics
                .escalations
                .with_label_values(&[&record.tenant, "low_confidence"])
                .inc();
            let reservation = record
                .settlement
                .as_mut()
                .and_then(|s| s.reservation.as_mut());
            if let Some(reservation) = reservation {
                reservation.escalate();
            }
            if let Some(reason) = &mut record.reason {
                reason.push_str(&format!("; {unsure}: escalated"));
            }
            Ok(answer)
        }
        Err(failed) => {
            tracing::warn!(
                kind = failed.error.kind(),
                "the cascade's remote chain failed: the local answer stands"
            );
            if let Some(reason) = &mut record.reason {
                reason.push_str(&format!("; {unsure}, remote failed: local answer kept"));
            }
            record.usage = completion.usage;
            Ok(Answer::Complete(json_response(completion.body, &by)))
        }
    }
}

async fn answer_locally(
    local: &Arc<LocalModel>,
    request: &ChatCompletionRequest,
    record: &mut RequestRecord,
) -> Result<Answer, ApiError> {
    let by = AnsweredBy::local(local);
    by.note_in(record);
    if request.is_stream() {
        let mut rest = local.stream(request).await?;
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
    let completion = local.complete(request).await?;
    record.usage = completion.usage;
    Ok(Answer::Complete(json_response(completion.body, &by)))
}

fn json_response(body: Bytes, by: &AnsweredBy) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    add_route_headers(response.headers_mut(), by);
    response
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

impl Validate for ChatCompletionRequest {
    fn validate(&self) -> Result<(), ApiError> {
        self.check()
            .map_err(|(param, message)| ApiError::bad_request(message, Some(param)))
    }
}

fn add_route_headers(headers: &mut HeaderMap, by: &AnsweredBy) {
    let pairs = [
        ("x-switchboard-route", by.route),
        ("x-switchboard-provider", &by.provider),
        ("x-switchboard-model", &by.model),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// What a complete answer cost and saved, in USD. A stream's headers leave before its tokens
/// are counted; its cost is in the metrics and the request's log line.
fn add_cost_headers(headers: &mut HeaderMap, costs: &Costs) {
    let pairs = [
        ("x-switchboard-cost-usd", costs.actual),
        ("x-switchboard-savings-usd", costs.savings()),
    ];
    for (name, amount) in pairs {
        if let Ok(value) = HeaderValue::from_str(&amount.to_string()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

fn sse_response(body: Body, by: &AnsweredBy) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies in front of us not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    add_route_headers(headers, by);
    response
}

/// An upstream stream on its way to the client as SSE frames.
struct SseBody {
    pending: Option<StreamChunk>,
    rest: ChunkStream,
    /// The request's deadline: a stream that goes on past it (an upstream that never ends
    /// it, a client that never reads it) is cut off with a timeout error.
    deadline: Instant,
    include_usage: bool,
    provider: String,
    metrics: Arc<crate::metrics::Metrics>,
}

impl SseBody {
    fn into_body(self, record: RequestRecord) -> Body {
        // The record is `None` once the last frame is out.
        let stream =
            futures_util::stream::unfold((self, Some(record)), |(mut s, record)| async move {
                let mut record = record?;
                loop {
                    let next = match s.pending.take() {
                        Some(chunk) => Some(Ok(chunk)),
                        None => tokio::time::timeout_at(s.deadline, s.rest.next())
                            .await
                            .unwrap_or(Some(Err(UpstreamError::Timeout))),
                    };
                    let frame = match next {
                        Some(Ok(chunk)) => {
                            if let Some(usage) = chunk.usage {
                                record.usage = Some(usage);
                            }
                            record.answer_bytes += chunk.text_bytes as u64;
                            if chunk.usage_only && !s.include_usage {
                                continue;
                            }
                            record.first_token_now();
                            return Some((
                                Ok::<_, Infallible>(frame(&chunk.json)),
                                (s, Some(record)),
                            ));
                        }
                        Some(Err(error)) => {
                            s.metrics
                                .upstream_errors
                                .with_label_values(&[&s.provider, error.kind()])
                                .inc();
                            tracing::warn!(
                                request_id = %record.request_id,
                                provider = %s.provider,
                                kind = error.kind(),
                                "upstream stream broke after the first chunk"
                            );
                            let api_error = error.into_api_error(&s.provider);
                            record.status = api_error.status().as_u16();
                            record.error_code = Some(api_error.code());
                            frame(api_error.body().to_string().as_bytes())
                        }
                        None => {
                            record.status = 200;
                            Bytes::from_static(b"data: [DONE]\n\n")
                        }
                    };
                    record.settle_durably().await;
                    return Some((Ok(frame), (s, None)));
                }
            });
        Body::from_stream(stream)
    }
}

fn frame(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out.into()
}
