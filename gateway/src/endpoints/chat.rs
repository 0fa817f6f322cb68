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

use super::{admit, failed, parse_json, read_body, request_id, tag_with_id};
use crate::accounting::{Classification, RequestRecord};
use crate::api::ChatCompletionRequest;
use crate::error::ApiError;
use crate::providers::local::LocalModel;
use crate::providers::{ChunkStream, StreamChunk, StreamStart, Target, UpstreamError};
use crate::server::Gateway;

pub async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let id = request_id(&headers);
    let mut record = RequestRecord::start(gateway.metrics.clone(), id.clone(), started);
    let span = tracing::info_span!("request", request_id = %id);
    let answered = answer(&gateway, &headers, body, &mut record)
        .instrument(span)
        .await;
    let private_data = crate::classify::header_value(&record.private_data);
    let language = record.language;
    let classification = record.classification.clone();
    let mut response = match answered {
        Ok(Answer::Complete(response)) => {
            record.status = response.status().as_u16();
            response
        }
        Ok(Answer::Stream {
            start,
            by,
            include_usage,
        }) => {
            let body = SseBody {
                pending: Some(start.first),
                rest: start.rest,
                include_usage,
                provider: by.provider.to_owned(),
                metrics: gateway.metrics.clone(),
            };
            // From here on the stream settles the record, when it ends or is dropped.
            sse_response(body.into_body(record), &by)
        }
        Err(error) => failed(error, &mut record),
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
    if let Some(c) = classification {
        let headers = response.headers_mut();
        let complexity = HeaderValue::from_str(&format!("{:.3}", c.complexity));
        if let (Ok(complexity), Ok(domain)) = (complexity, HeaderValue::from_str(&c.domain)) {
            headers.insert("x-switchboard-complexity", complexity);
            headers.insert("x-switchboard-domain", domain);
        }
    }
    response
}

enum Answer<'a> {
    Complete(Response),
    /// The first chunk is in; the response is built around the stream by the caller, which
    /// owns the request's record.
    Stream {
        start: StreamStart,
        by: AnsweredBy<'a>,
        include_usage: bool,
    },
}

/// Who answered, for the `x-switchboard-*` headers and the request's record.
struct AnsweredBy<'a> {
    route: &'static str,
    provider: &'a str,
    model: &'a str,
}

impl AnsweredBy<'_> {
    fn note_in(&self, record: &mut RequestRecord) {
        record.route = self.route;
        record.provider = Some(self.provider.to_owned());
    }
}

impl<'a> From<&'a Target> for AnsweredBy<'a> {
    fn from(target: &'a Target) -> Self {
        Self {
            route: "remote",
            provider: &target.provider.name,
            model: &target.model.name,
        }
    }
}

/// Notes in the record what the router finds. Without a router (or when it cannot score the
/// request: its queue is full) the request is still scanned for private data and its language,
/// and answered unscored.
async fn classify(
    classifier: Option<&Classifier>,
    request: &ChatCompletionRequest,
    record: &mut RequestRecord,
) {
    let started = Instant::now();
    let turns = crate::classify::turns(&request.messages);
    let distinct_kinds =
        |pii: &[(usize, Finding)]| crate::classify::distinct(pii.iter().map(|(_, f)| f.kind));
    if let Some(classifier) = classifier {
        match classifier.classify(&turns).await {
            Ok(scores) => {
                record.private_data = distinct_kinds(&scores.pii);
                record.language = scores.language.map(|l| l.code);
                record.classification = Some(Classification {
                    complexity: scores.complexity,
                    domain: scores.top_domain().to_owned(),
                    took: started.elapsed(),
                });
                return;
            }
            Err(error) => tracing::warn!(%error, "the router could not score the request"),
        }
    }
    record.private_data = distinct_kinds(&private_data(&turns));
    record.language = language_of(&turns).map(|l| l.code);
}

async fn answer<'a>(
    gateway: &'a Gateway,
    headers: &HeaderMap,
    body: Body,
    record: &mut RequestRecord,
) -> Result<Answer<'a>, ApiError> {
    let tenant = admit(gateway, headers, record)?;
    let bytes = read_body(body, headers, gateway.limits.max_body_bytes).await?;
    let request = parse(&bytes)?;
    drop(bytes);
    classify(gateway.classifier.as_ref(), &request, record).await;

    if !tenant.may_use(&request.model) {
        return Err(ApiError::ModelNotFound(request.model));
    }
    if let Some(local) = gateway.catalog.local(&request.model) {
        record.model = request.model.clone();
        return answer_locally(local, &request, record).await;
    }
    let Some(chain) = gateway.catalog.usable_chain(&request.model) else {
        if gateway.catalog.contains(&request.model) {
            return Err(ApiError::Unavailable {
                message: format!(
                    "The model '{}' has no provider with an API key; ask your operator to set it.",
                    request.model
                ),
            });
        }
        return Err(ApiError::ModelNotFound(request.model));
    };
    record.model = request.model.clone();

    let deadline = Instant::now() + gateway.limits.request_timeout;
    let remote = &gateway.remote;
    if request.is_stream() {
        let answered = remote
            .stream(chain, &request, deadline)
            .await
            .map_err(|f| f.error.into_api_error(&f.provider))?;
        let by = AnsweredBy::from(answered.target);
        by.note_in(record);
        return Ok(Answer::Stream {
            start: answered.value,
            by,
            include_usage: request.wants_usage_chunk(),
        });
    }

    let answered = remote
        .complete(chain, &request, deadline)
        .await
        .map_err(|f| f.error.into_api_error(&f.provider))?;
    let by = AnsweredBy::from(answered.target);
    by.note_in(record);
    record.usage = answered.value.usage;
    Ok(Answer::Complete(json_response(answered.value.body, &by)))
}

async fn answer_locally<'a>(
    local: &'a Arc<LocalModel>,
    request: &ChatCompletionRequest,
    record: &mut RequestRecord,
) -> Result<Answer<'a>, ApiError> {
    let by = AnsweredBy {
        route: "local",
        provider: "local",
        model: &local.name,
    };
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

fn json_response(body: Bytes, by: &AnsweredBy<'_>) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    add_route_headers(response.headers_mut(), by);
    response
}

/// Parses and validates a chat completion request.
fn parse(bytes: &[u8]) -> Result<ChatCompletionRequest, ApiError> {
    let request: ChatCompletionRequest = parse_json(bytes)?;
    request
        .validate()
        .map_err(|(param, message)| ApiError::bad_request(message, Some(param)))?;
    Ok(request)
}

fn add_route_headers(headers: &mut HeaderMap, by: &AnsweredBy<'_>) {
    let pairs = [
        ("x-switchboard-route", by.route),
        ("x-switchboard-provider", by.provider),
        ("x-switchboard-model", by.model),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

fn sse_response(body: Body, by: &AnsweredBy<'_>) -> Response {
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
    include_usage: bool,
    provider: String,
    metrics: Arc<crate::metrics::Metrics>,
}

impl SseBody {
    fn into_body(self, record: RequestRecord) -> Body {
        let stream = futures_util::stream::unfold(
            (self, record, false),
            |(mut s, mut record, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let next = match s.pending.take() {
                        Some(chunk) => Some(Ok(chunk)),
                        None => s.rest.next().await,
                    };
                    let frame = match next {
                        Some(Ok(chunk)) => {
                            if let Some(usage) = chunk.usage {
                                record.usage = Some(usage);
                            }
                            if chunk.usage_only && !s.include_usage {
                                continue;
                            }
                            record.first_token_now();
                            return Some((
                                Ok::<_, Infallible>(frame(&chunk.json)),
                                (s, record, false),
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
                    return Some((Ok(frame), (s, record, true)));
                }
            },
        );
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
