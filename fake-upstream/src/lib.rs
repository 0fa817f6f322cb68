//! A stand-in for the cloud: an axum server that speaks OpenAI's chat completions and
//! Anthropic's Messages wire formats, streaming included, and that can be scripted, request by
//! request, to be slow, to fail, to stall or to drop the connection mid-stream.
//!
//! Answers are deterministic: the reply to a conversation is `"<model> says: <last user text>"`,
//! streamed one word per chunk, and token counts are word counts, so that tests can check exactly
//! what went through a gateway.
//!
//! Scripting: each incoming request takes the next [`Behaviour`] from a queue (or behaves normally
//! when the queue is empty). In-process tests call [`FakeUpstream::push`]; other processes POST a
//! JSON list of behaviours to `/_fake/script` and read counters from `/_fake/stats`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What the fake does with one request. The default is a normal, immediate answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Wait this long before sending anything (status line included).
    pub delay_ms: u64,
    /// Answer with this error status instead (in the wire format's error body).
    pub status: Option<u16>,
    /// With `status`, send this `Retry-After` (seconds).
    pub retry_after: Option<u64>,
    /// Streaming: wait this long between chunks.
    pub chunk_delay_ms: u64,
    /// Streaming: send this many chunks, then break the connection.
    pub drop_after_chunks: Option<usize>,
    /// Streaming: send this many chunks, then go silent without ending the stream.
    pub stall_after_chunks: Option<usize>,
    /// Reply with this text instead of the echo.
    pub reply: Option<String>,
    /// OpenAI wire: report no usage (as some OpenAI-compatible servers do).
    pub omit_usage: bool,
    /// OpenAI wire: answer 200 with a body that is not the wire format (truncated JSON, or a
    /// stream whose events' data is not JSON).
    pub malformed: bool,
}

impl Behaviour {
    pub fn fail(status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    pub fn fail_with_retry_after(status: u16, secs: u64) -> Self {
        Self {
            status: Some(status),
            retry_after: Some(secs),
            ..Self::default()
        }
    }

    pub fn delay(ms: u64) -> Self {
        Self {
            delay_ms: ms,
            ..Self::default()
        }
    }

    pub fn drop_after(chunks: usize) -> Self {
        Self {
            drop_after_chunks: Some(chunks),
            ..Self::default()
        }
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Received {
    pub path: String,
    /// The value of the header that carries the key (`authorization` or `x-api-key`).
    pub credential: Option<String>,
    pub anthropic_version: Option<String>,
    /// Every `x-switchboard-*` header, by name.
    pub switchboard_headers: std::collections::BTreeMap<String, String>,
    pub body: Value,
}

/// Counters a test can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: usize,
    /// Answers that were fully sent.
    pub completed: usize,
    /// Answers abandoned because the client went away before they were complete.
    pub cancelled: usize,
    /// Answers running now.
    pub active: usize,
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Behaviour>>,
    received: Mutex<Vec<Received>>,
    requests: AtomicUsize,
    completed: AtomicUsize,
    cancelled: AtomicUsize,
    active: AtomicUsize,
    /// When set, requests must carry this key.
    key: Option<String>,
    /// Cleared: `GET /v1/models` (a health probe) answers 503, as a server that is starting or
    /// draining does; chats are still answered.
    unhealthy: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn stats(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::SeqCst),
            completed: self.completed.load(Ordering::SeqCst),
            cancelled: self.cancelled.load(Ordering::SeqCst),
            active: self.active.load(Ordering::SeqCst),
        }
    }
}

/// Counts an answer as active while it lives, and as cancelled if it is dropped before
/// [`Answering::done`] (the client went away).
struct Answering {
    shared: Arc<Shared>,
    done: bool,
}

impl Answering {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.active.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: shared.clone(),
            done: false,
        }
    }

    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
        let counter = if self.done {
            &self.shared.completed
        } else {
            &self.shared.cancelled
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// A running fake upstream.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    /// Starts on a free loopback port, accepting any key.
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), None)
            .await
            .expect("binding a loopback port")
    }

    /// Starts on a free loopback port, answering 401 to requests without `key`.
    pub async fn start_with_key(key: &str) -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), Some(key.to_owned()))
            .await
            .expect("binding a loopback port")
    }

    pub async fn start_on(addr: SocketAddr, key: Option<String>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            key,
            ..Shared::default()
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/models", get(list_models))
            .route("/v1/messages", post(anthropic_messages))
            .route("/_fake/script", post(push_script))
            .route("/_fake/stats", get(read_stats))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL for an `openai` provider (`…/v1`).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The base URL for an `anthropic` provider.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues behaviours for the next requests, in order.
    pub fn push(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        lock(&self.shared.script).extend(behaviours);
    }

    /// Whether `GET /v1/models` answers 200 (the default) or 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    /// Forgets the behaviours no request has taken yet.
    pub fn clear_script(&self) {
        lock(&self.shared.script).clear();
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Waits until no answer is running, or `timeout` passes; returns the stats then.
    pub async fn settled(&self, timeout: Duration) -> Stats {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.shared.active.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stats()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

async fn push_script(
    State(shared): State<Arc<Shared>>,
    Json(behaviours): Json<Vec<Behaviour>>,
) -> StatusCode {
    lock(&shared.script).extend(behaviours);
    StatusCode::NO_CONTENT
}

async fn read_stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(shared.stats())
}

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    OpenAi,
    Anthropic,
}

/// OpenAI's model list (one model, `fake`): what health probes of OpenAI-compatible servers
/// ask for. It takes no scripted behaviour.
async fn list_models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|c| c.trim_start_matches("Bearer "));
    if shared
        .key
        .as_deref()
        .is_some_and(|key| presented != Some(key))
    {
        return error_response(Wire::OpenAi, 401, None, "invalid api key");
    }
    if shared.unhealthy.load(Ordering::SeqCst) {
        return error_response(Wire::OpenAi, 503, None, "not ready");
    }
    Json(json!({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "fake"}]}))
        .into_response()
}

/// What every request goes through first: recording, key check, the script's delay and error.
async fn admit(
    shared: &Arc<Shared>,
    wire: Wire,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Behaviour, Value, Answering), Response> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let behaviour = lock(&shared.script).pop_front().unwrap_or_default();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let credential = match wire {
        Wire::OpenAi => header("authorization").or_else(|| header("api-key")),
        Wire::Anthropic => header("x-api-key"),
    };
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    lock(&shared.received).push(Received {
        path: match wire {
            Wire::OpenAi => "/v1/chat/completions",
            Wire::Anthropic => "/v1/messages",
        }
        .to_owned(),
        credential: credential.clone(),
        anthropic_version: header("anthropic-version"),
        switchboard_headers: headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-switchboard-"))
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
            .collect(),
        body: parsed.as_ref().cloned().unwrap_or(Value::Null),
    });

    let answering = Answering::new(shared);
    if behaviour.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.delay_ms)).await;
    }
    match check(shared, wire, behaviour, credential, parsed, &header) {
        Ok((behaviour, body)) => Ok((behaviour, body, answering)),
        Err(rejection) => {
            answering.done();
            Err(error_response(
                wire,
                rejection.status,
                rejection.retry_after,
                &rejection.message,
            ))
        }
    }
}

fn check(
    shared: &Shared,
    wire: Wire,
    behaviour: Behaviour,
    credential: Option<String>,
    parsed: Result<Value, serde_json::Error>,
    header: &dyn Fn(&str) -> Option<String>,
) -> Result<(Behaviour, Value), Rejection> {
    if let Some(expected) = &shared.key {
        let presented = credential
            .as_deref()
            .map(|c| c.trim_start_matches("Bearer "));
        if presented != Some(expected.as_str()) {
            return Err(Rejection::new(401, None, "invalid x-api-key"));
        }
    }
    if wire == Wire::Anthropic && header("anthropic-version").is_none() {
        return Err(Rejection::new(
            400,
            None,
            "anthropic-version header is required",
        ));
    }
    if let Some(status) = behaviour.status {
        return Err(Rejection::new(
            status,
            behaviour.retry_after,
            "scripted failure",
        ));
    }
    let body = parsed.map_err(|_| Rejection::new(400, None, "body is not JSON"))?;
    let required: &[&str] = match wire {
        Wire::OpenAi => &["model", "messages"],
        Wire::Anthropic => &["model", "messages", "max_tokens"],
    };
    if let Some(missing) = required.iter().find(|k| body.get(**k).is_none()) {
        let message = format!("missing field '{missing}'");
        return Err(Rejection::new(400, None, &message));
    }
    Ok((behaviour, body))
}

/// An error answer, before it is put in the wire format's shape.
struct Rejection {
    status: u16,
    retry_after: Option<u64>,
    message: String,
}

impl Rejection {
    fn new(status: u16, retry_after: Option<u64>, message: &str) -> Self {
        Self {
            status,
            retry_after,
            message: message.to_owned(),
        }
    }
}

fn error_response(wire: Wire, status: u16, retry_after: Option<u64>, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match wire {
        Wire::OpenAi => {
            json!({"error": {"message": message, "type": "fake_error", "code": status.as_u16()}})
        }
        Wire::Anthropic => {
            json!({"type": "error", "error": {"type": "fake_error", "message": message}})
        }
    };
    let mut response = (status, Json(body)).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().expect("a number"));
    }
    response
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The reply and the word counts that stand for token counts.
fn reply(body: &Value, behaviour: &Behaviour) -> (String, u64) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let mut prompt_words = messages
        .iter()
        .map(|m| text_of(&m["content"]).split_whitespace().count() as u64)
        .sum::<u64>();
    prompt_words += text_of(&body["system"]).split_whitespace().count() as u64;
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default();
    let model = body["model"].as_str().unwrap_or("fake");
    let text = behaviour
        .reply
        .clone()
        .unwrap_or_else(|| format!("{model} says: {last_user}"));
    (text, prompt_words)
}

fn words(text: &str) -> Vec<String> {
    let mut pieces: Vec<String> = text.split(' ').map(|w| format!("{w} ")).collect();
    if let Some(last) = pieces.last_mut() {
        last.pop();
    }
    pieces
}

/// Streams `events` (already framed), then ends, following the behaviour's drop, stall and
/// delay settings.
/// A 200 whose body no client can parse.
fn malformed(answering: Answering, behaviour: Behaviour, stream: bool) -> Response {
    if stream {
        let events = vec!["data: {\"choices\": [{\n\n".to_owned(); 3];
        return stream_response(answering, behaviour, events);
    }
    answering.done();
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(r#"{"id": "chatcmpl-fake", "choices": [{"#))
        .expect("a valid response")
}

fn stream_response(answering: Answering, behaviour: Behaviour, events: Vec<String>) -> Response {
    let state = (events.into_iter().enumerate(), Some(answering), behaviour);
    let body = stream::unfold(state, |(mut events, mut answering, behaviour)| async move {
        let Some((index, event)) = events.next() else {
            if let Some(answering) = answering.take() {
                answering.done();
            }
            return None;
        };
        if index > 0 && behaviour.chunk_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(behaviour.chunk_delay_ms)).await;
        }
        if behaviour.drop_after_chunks == Some(index) {
            // An error from the body makes hyper abort the connection mid-response.
            let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "scripted drop");
            return Some((Err(broken), (events, answering, behaviour)));
        }
        if behaviour.stall_after_chunks == Some(index) {
            std::future::pending::<()>().await;
        }
        Some((Ok(Bytes::from(event)), (events, answering, behaviour)))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .expect("a valid response")
}

async fn openai_chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (behaviour, body, answering) = match admit(&shared, Wire::OpenAi, &headers, &body).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    if behaviour.malformed {
        return malformed(answering, behaviour, body["stream"] == true);
    }
    let (text, prompt_tokens) = reply(&body, &behaviour);
    let model = body["model"].as_str().unwrap_or("fake").to_owned();
    let pieces = words(&text);
    let completion_tokens = pieces.len() as u64;
    let usage = match behaviour.omit_usage {
        true => Value::Null,
        false => json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}),
    };
    if body["stream"] != true {
        let answer = json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": "stop", "logprobs": null}],
            "usage": usage,
        });
        answering.done();
        return Json(answer).into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        let chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {chunk}\n\n")
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    events.extend(
        pieces
            .iter()
            .map(|w| chunk(json!({"content": w}), Value::Null)),
    );
    events.push(chunk(json!({}), json!("stop")));
    if body["stream_options"]["include_usage"] == true && !behaviour.omit_usage {
        let chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [], "usage": usage});
        events.push(format!("data: {chunk}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    stream_response(answering, behaviour, events)
}

async fn anthropic_messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (behaviour, body, answering) = match admit(&shared, Wire::Anthropic, &headers, &body).await
    {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let (text, input_tokens) = reply(&body, &behaviour);
    let model = body["model"].as_str().unwrap_or("fake").to_owned();
    let pieces = words(&text);
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(u64::MAX) as usize;
    let (pieces, stop_reason) = if pieces.len() > max_tokens {
        (pieces[..max_tokens].to_vec(), "max_tokens")
    } else {
        (pieces, "end_turn")
    };
    let output_tokens = pieces.len() as u64;
    if body["stream"] != true {
        let answer = json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": pieces.concat()}],
            "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        });
        answering.done();
        return Json(answer).into_response();
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_fake",
            "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    events.extend(pieces.iter().map(|w| {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": w}}),
        )
    }));
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    stream_response(answering, behaviour, events)
}
