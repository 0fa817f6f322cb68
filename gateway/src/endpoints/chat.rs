//! `POST /v1/chat/completions`: the request let in and read, answered by the pipeline, and its
//! answer sent as JSON or as a stream of server-sent events with the `x-switchboard-*` headers.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use switchboard_policies::Placement;
use tokio::time::Instant;
use tracing::Instrument;

use super::extract::{Admitted, JsonBody, Refused, RequestId, Validate};
use super::{admit, failed, tag_with_id};
use crate::api::ChatCompletionRequest;
use crate::error::ApiError;
use crate::pipeline::{self, Answer, Answerer, ClientHints, Findings, RequestRecord};
use crate::policy::Costs;
use crate::providers::{ChunkStream, StreamChunk, UpstreamError};
use crate::state::Gateway;

pub async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    RequestId(id): RequestId,
    admission: Result<Admitted, Refused>,
    hints: ClientHints,
    body: JsonBody<ChatCompletionRequest>,
) -> Response {
    let started = Instant::now();
    let metrics = gateway.metrics.clone();
    // Counted as remote until a route is chosen (a request refused before is labelled so).
    let mut record = RequestRecord::start(metrics, id.clone(), started, Placement::Remote)
        .kept_in(&gateway.ledger);
    let span = tracing::info_span!("request", request_id = %id);
    let answered = async {
        let tenant = admit(admission, &mut record)?;
        let request = body.read().await?;
        pipeline::chat(&gateway, &tenant, request, &hints, &mut record).await
    }
    .instrument(span)
    .await;
    // Read before a stream takes the record.
    let found = findings_headers(&record);
    let (mut response, unsettled) = match answered {
        Ok(Answer::Complete { body, by }) => {
            let mut response = json_response(body, &by);
            record.finished(response.status().as_u16());
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
    response.headers_mut().extend(found);
    if let Some(record) = unsettled {
        record.settle_durably().await;
    }
    response
}

/// What the gateway found and decided, as headers: private data (`x-switchboard-pii`), the
/// language, the reason, and the router's complexity and domain.
fn findings_headers(record: &RequestRecord) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let Findings {
        private_data,
        language,
        classification,
    } = record.findings();
    if !private_data.is_empty()
        && let Ok(kinds) = HeaderValue::from_str(&pipeline::classify::kinds_list(private_data))
    {
        headers.insert("x-switchboard-pii", kinds);
    }
    if let Some(code) = language {
        headers.insert("x-switchboard-language", HeaderValue::from_static(code));
    }
    if let Some(reason) = record
        .told_reason()
        .and_then(|r| HeaderValue::from_str(&r).ok())
    {
        headers.insert("x-switchboard-reason", reason);
    }
    if let Some(c) = classification {
        let complexity = HeaderValue::from_str(&format!("{:.3}", c.complexity));
        if let (Ok(complexity), Ok(domain)) = (complexity, HeaderValue::from_str(&c.domain)) {
            headers.insert("x-switchboard-complexity", complexity);
            headers.insert("x-switchboard-domain", domain);
        }
    }
    headers
}

fn json_response(body: Bytes, by: &Answerer) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    add_route_headers(response.headers_mut(), by);
    response
}

impl Validate for ChatCompletionRequest {
    fn validate(&self) -> Result<(), ApiError> {
        self.check()
            .map_err(|(param, message)| ApiError::bad_request(message, Some(param)))
    }
}

fn add_route_headers(headers: &mut HeaderMap, by: &Answerer) {
    let pairs = [
        ("x-switchboard-route", by.route.as_str()),
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

fn sse_response(body: Body, by: &Answerer) -> Response {
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
                            record.streamed(&chunk);
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
                            s.metrics.upstream_error(&s.provider, error.kind());
                            tracing::warn!(
                                request_id = %record.request_id(),
                                provider = %s.provider,
                                kind = error.kind(),
                                "upstream stream broke after the first chunk"
                            );
                            let api_error = error.into_api_error(&s.provider);
                            record.failed(&api_error);
                            frame(api_error.body().to_string().as_bytes())
                        }
                        None => {
                            record.finished(200);
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
