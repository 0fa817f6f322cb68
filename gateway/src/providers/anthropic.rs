//! Anthropic's Messages API, translated both ways: OpenAI requests become Messages requests
//! (system prompt lifted out, `max_tokens` always set, tools and images carried over), and
//! Messages answers and stream events become OpenAI completions and chunks.

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::sse::{SseEvent, SseStream, SseStreamError};
use super::{ChunkStream, Completion, StreamChunk, UpstreamError};
use crate::api::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage,
    Choice, ContentPart, Delta, MessageContent, Role, Usage, unix_now,
};
use crate::config::ModelConfig;

pub(super) const API_VERSION: &str = "2023-06-01";

/// Anthropic requires `max_tokens`; this is sent when neither client nor config gives one.
const FALLBACK_MAX_TOKENS: u32 = 4096;

pub(super) fn body(
    model: &ModelConfig,
    request: &ChatCompletionRequest,
) -> Result<Bytes, UpstreamError> {
    if request.n.is_some_and(|n| n > 1) {
        return Err(UpstreamError::Unsupported(
            "'n' above 1 has no Anthropic equivalent".to_owned(),
        ));
    }
    if request.extra.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(UpstreamError::Unsupported(
            "'logprobs' has no Anthropic equivalent".to_owned(),
        ));
    }
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for message in &request.messages {
        match message.role {
            Role::System | Role::Developer => {
                if let Some(content) = &message.content {
                    system.push(content.text());
                }
            }
            Role::User => push_turn(&mut messages, "user", user_content(message)),
            Role::Assistant => push_turn(&mut messages, "assistant", assistant_content(message)),
            Role::Tool | Role::Function => {
                let id = message
                    .extra
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let text = message
                    .content
                    .as_ref()
                    .map(|c| c.text())
                    .unwrap_or_default();
                let result = json!({"type": "tool_result", "tool_use_id": id, "content": text});
                push_turn(&mut messages, "user", vec![result]);
            }
        }
    }
    if messages.is_empty() {
        return Err(UpstreamError::Unsupported(
            "the conversation has no user or assistant message".to_owned(),
        ));
    }

    let mut body = Map::new();
    body.insert("model".into(), model.upstream_name().into());
    let max_tokens = request
        .max_output_tokens()
        .or(model.default_max_tokens)
        .unwrap_or(FALLBACK_MAX_TOKENS);
    body.insert("max_tokens".into(), max_tokens.into());
    body.insert("messages".into(), messages.into());
    if !system.is_empty() {
        body.insert("system".into(), system.join("\n\n").into());
    }
    if let Some(t) = request.temperature {
        // OpenAI's range is 0..2, Anthropic's 0..1.
        body.insert("temperature".into(), t.min(1.0).into());
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), p.into());
    }
    if let Some(stop) = &request.stop {
        body.insert("stop_sequences".into(), stop.to_vec().into());
    }
    if request.is_stream() {
        body.insert("stream".into(), true.into());
    }
    if let Some(user) = request.extra.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({ "user_id": user }));
    }
    if let Some(tools) = request.extra.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                json!({
                    "name": f.get("name").cloned().unwrap_or_default(),
                    "description": f.get("description").cloned().unwrap_or_default(),
                    "input_schema": f.get("parameters").cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                })
            })
            .collect();
        body.insert("tools".into(), tools.into());
    }
    if let Some(choice) = request.extra.get("tool_choice") {
        let translated = match choice {
            Value::String(s) if s == "none" => json!({"type": "none"}),
            Value::String(s) if s == "required" => json!({"type": "any"}),
            Value::Object(o) => json!({"type": "tool", "name": o.get("function")
                .and_then(|f| f.get("name")).cloned().unwrap_or_default()}),
            _ => json!({"type": "auto"}),
        };
        body.insert("tool_choice".into(), translated);
    }
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|e| UpstreamError::Unsupported(e.to_string()))
}

/// Appends content blocks as a turn, merging into the previous turn when it has the same role
/// (Anthropic wants turns to alternate; OpenAI conversations need not).
fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

fn user_content(message: &ChatMessage) -> Vec<Value> {
    match &message.content {
        None => Vec::new(),
        Some(MessageContent::Text(text)) => vec![json!({"type": "text", "text": text})],
        Some(MessageContent::Parts(parts)) => parts.iter().filter_map(content_block).collect(),
    }
}

fn content_block(part: &ContentPart) -> Option<Value> {
    match part.kind.as_str() {
        "text" => Some(json!({"type": "text", "text": part.text.clone().unwrap_or_default()})),
        "image_url" => {
            let url = part.extra.get("image_url")?.get("url")?.as_str()?;
            let source = match url
                .strip_prefix("data:")
                .and_then(|rest| rest.split_once(";base64,"))
            {
                Some((media_type, data)) => {
                    json!({"type": "base64", "media_type": media_type, "data": data})
                }
                None => json!({"type": "url", "url": url}),
            };
            Some(json!({"type": "image", "source": source}))
        }
        _ => None,
    }
}

fn assistant_content(message: &ChatMessage) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(text) = message.content.as_ref().map(MessageContent::text)
        && !text.is_empty()
    {
        blocks.push(json!({"type": "text", "text": text}));
    }
    let calls = message.extra.get("tool_calls").and_then(Value::as_array);
    for call in calls.into_iter().flatten() {
        let function = call.get("function").cloned().unwrap_or_default();
        let input = function
            .get("arguments")
            .and_then(Value::as_str)
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .unwrap_or_else(|| json!({}));
        blocks.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or_default(),
            "name": function.get("name").cloned().unwrap_or_default(),
            "input": input,
        }));
    }
    blocks
}

fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

/// Input tokens as Anthropic reports them: cached reads and writes are counted apart.
fn input_tokens(usage: &Value) -> u64 {
    [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .filter_map(|k| usage.get(*k).and_then(Value::as_u64))
    .sum()
}

fn tool_call(index: usize, id: &Value, name: &Value, arguments: String) -> Value {
    json!({
        "index": index,
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    })
}

pub(super) fn completion(body: &[u8], model: &ModelConfig) -> Result<Completion, UpstreamError> {
    let message: Value =
        serde_json::from_slice(body).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| UpstreamError::Protocol("the message has no 'content' array".into()))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(tool_call(
                tool_calls.len(),
                &block["id"],
                &block["name"],
                block["input"].to_string(),
            )),
            _ => {}
        }
    }
    let usage = message.get("usage").map(|u| {
        Usage::new(
            input_tokens(u),
            u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
        )
    });
    let stop_reason = message["stop_reason"].as_str().unwrap_or("end_turn");
    let answer = ChatCompletion {
        id: message["id"].as_str().unwrap_or("msg").to_owned(),
        object: "chat.completion".to_owned(),
        created: unix_now(),
        model: message["model"]
            .as_str()
            .unwrap_or(model.upstream_name())
            .to_owned(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: Role::Assistant,
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
                tool_calls,
            },
            finish_reason: Some(finish_reason(stop_reason).to_owned()),
            logprobs: None,
        }],
        usage: usage.unwrap_or_default(),
    };
    let body = serde_json::to_vec(&answer).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    Ok(Completion {
        body: body.into(),
        usage,
    })
}

/// The state of one translated stream.
struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    input_tokens: u64,
    output_tokens: u64,
    /// The OpenAI tool-call index of each Anthropic content block that is a tool use.
    tool_blocks: Vec<(u64, usize)>,
    stopped: bool,
}

impl StreamTranslator {
    fn chunk(&self) -> ChatCompletionChunk {
        ChatCompletionChunk::new(&self.id, self.created, &self.model)
    }

    /// Turns one Anthropic event into at most one OpenAI chunk.
    fn on_event(&mut self, event: SseEvent) -> Result<Option<StreamChunk>, UpstreamError> {
        let value: Value = serde_json::from_str(&event.data)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let kind = event
            .event
            .as_deref()
            .or_else(|| value["type"].as_str())
            .unwrap_or_default()
            .to_owned();
        let chunk = match kind.as_str() {
            "message_start" => {
                let message = &value["message"];
                if let Some(id) = message["id"].as_str() {
                    self.id = id.to_owned();
                }
                if let Some(model) = message["model"].as_str() {
                    self.model = model.to_owned();
                }
                self.input_tokens = input_tokens(&message["usage"]);
                let delta = Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                };
                self.chunk().with_delta(delta, None)
            }
            "content_block_start" if value["content_block"]["type"] == "tool_use" => {
                let block = &value["content_block"];
                let index = self.tool_blocks.len();
                self.tool_blocks
                    .push((value["index"].as_u64().unwrap_or(0), index));
                let call = tool_call(index, &block["id"], &block["name"], String::new());
                let delta = Delta {
                    tool_calls: vec![call],
                    ..Delta::default()
                };
                self.chunk().with_delta(delta, None)
            }
            "content_block_delta" => {
                let delta = &value["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let delta = Delta {
                            content: Some(delta["text"].as_str().unwrap_or_default().to_owned()),
                            ..Delta::default()
                        };
                        self.chunk().with_delta(delta, None)
                    }
                    Some("input_json_delta") => {
                        let block = value["index"].as_u64().unwrap_or(0);
                        let Some(&(_, index)) = self.tool_blocks.iter().find(|(b, _)| *b == block)
                        else {
                            return Ok(None);
                        };
                        let call = json!({"index": index, "function": {
                            "arguments": delta["partial_json"].as_str().unwrap_or_default()}});
                        let delta = Delta {
                            tool_calls: vec![call],
                            ..Delta::default()
                        };
                        self.chunk().with_delta(delta, None)
                    }
                    _ => return Ok(None), // thinking and signature deltas have no OpenAI form
                }
            }
            "message_delta" => {
                let usage = &value["usage"];
                if let Some(out) = usage["output_tokens"].as_u64() {
                    self.output_tokens = out;
                }
                if usage.get("input_tokens").is_some() {
                    self.input_tokens = self.input_tokens.max(input_tokens(usage));
                }
                let Some(reason) = value["delta"]["stop_reason"].as_str() else {
                    return Ok(None);
                };
                self.chunk()
                    .with_delta(Delta::default(), Some(finish_reason(reason)))
            }
            "message_stop" => {
                self.stopped = true;
                let mut chunk = self.chunk();
                let usage = Usage::new(self.input_tokens, self.output_tokens);
                chunk.usage = Some(usage);
                return Ok(Some(StreamChunk {
                    json: to_bytes(&chunk)?,
                    usage: Some(usage),
                    usage_only: true,
                    text_bytes: 0,
                }));
            }
            "error" => {
                return Err(UpstreamError::Interrupted(super::error_message(
                    event.data.as_bytes(),
                )));
            }
            _ => return Ok(None), // ping, content_block_stop, text block starts
        };
        Ok(Some(StreamChunk {
            json: to_bytes(&chunk)?,
            usage: None,
            usage_only: false,
            text_bytes: chunk.text_bytes(),
        }))
    }
}

fn to_bytes(chunk: &ChatCompletionChunk) -> Result<Bytes, UpstreamError> {
    serde_json::to_vec(chunk)
        .map(Bytes::from)
        .map_err(|e| UpstreamError::Protocol(e.to_string()))
}

pub(super) fn chunks(events: SseStream, model: &ModelConfig) -> ChunkStream {
    let translator = StreamTranslator {
        id: "msg".to_owned(),
        model: model.upstream_name().to_owned(),
        created: unix_now(),
        input_tokens: 0,
        output_tokens: 0,
        tool_blocks: Vec::new(),
        stopped: false,
    };
    let state = (events, translator, false);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut events, mut translator, mut failed)| async move {
            loop {
                if failed || translator.stopped {
                    return None;
                }
                let item = match events.next().await {
                    Some(Ok(event)) => match translator.on_event(event) {
                        Ok(None) => continue,
                        Ok(Some(chunk)) => Ok(chunk),
                        Err(e) => Err(e),
                    },
                    Some(Err(SseStreamError::Transport(e))) => Err(UpstreamError::from_reqwest(e)),
                    Some(Err(SseStreamError::Decode(e))) => {
                        Err(UpstreamError::Protocol(e.to_string()))
                    }
                    None => Err(UpstreamError::Interrupted(
                        "the stream ended before message_stop".to_owned(),
                    )),
                };
                failed = item.is_err();
                return Some((item, (events, translator, failed)));
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelConfig {
        serde_yaml::from_str(
            "{name: claude, upstream_name: claude-x, price: {input_per_mtok: 1, output_per_mtok: 2}, default_max_tokens: 321}",
        )
        .unwrap()
    }

    fn translate(request: &str) -> Value {
        let request: ChatCompletionRequest = serde_json::from_str(request).unwrap();
        serde_json::from_slice(&body(&model(), &request).unwrap()).unwrap()
    }

    #[test]
    fn requests_are_translated() {
        let sent = translate(
            r#"{"model":"claude","messages":[
                {"role":"system","content":"Be brief."},
                {"role":"developer","content":"Use English."},
                {"role":"user","content":"hi"},
                {"role":"user","content":[{"type":"text","text":"again"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},
                {"role":"tool","tool_call_id":"call_1","content":"42"}],
              "temperature":1.5,"top_p":0.9,"stop":"END","user":"u1",
              "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
              "tool_choice":"required"}"#,
        );
        assert_eq!(sent["model"], "claude-x");
        assert_eq!(sent["max_tokens"], 321);
        assert_eq!(sent["system"], "Be brief.\n\nUse English.");
        assert_eq!(sent["temperature"], 1.0);
        assert_eq!(sent["top_p"], 0.9);
        assert_eq!(sent["stop_sequences"], json!(["END"]));
        assert_eq!(sent["metadata"]["user_id"], "u1");
        assert_eq!(sent["tools"][0]["input_schema"]["type"], "object");
        assert_eq!(sent["tool_choice"]["type"], "any");
        let messages = sent["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(messages[0]["role"], "user");
        assert_eq!(messages[0]["content"][1]["text"], "again");
        assert_eq!(
            messages[0]["content"][2]["source"]["media_type"],
            "image/png"
        );
        assert_eq!(messages[1]["content"][0]["type"], "tool_use");
        assert_eq!(messages[1]["content"][0]["input"]["x"], 1);
        assert_eq!(messages[2]["content"][0]["tool_use_id"], "call_1");
        assert!(sent.get("stream").is_none());
    }

    #[test]
    fn untranslatable_requests_are_refused() {
        let request: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"claude","messages":[{"role":"user","content":"hi"}],"n":2}"#,
        )
        .unwrap();
        assert!(matches!(
            body(&model(), &request),
            Err(UpstreamError::Unsupported(_))
        ));
    }

    #[test]
    fn answers_are_translated() {
        let answer = completion(
            br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
                "content":[{"type":"text","text":"Hello"},{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}],
                "stop_reason":"tool_use","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":3}}"#,
            &model(),
        )
        .unwrap();
        assert_eq!(answer.usage, Some(Usage::new(15, 3)));
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["content"], "Hello");
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(body["usage"]["total_tokens"], 18);
    }

    #[test]
    fn stream_events_become_chunks() {
        let mut translator = StreamTranslator {
            id: String::new(),
            model: String::new(),
            created: 0,
            input_tokens: 0,
            output_tokens: 0,
            tool_blocks: Vec::new(),
            stopped: false,
        };
        let mut feed = |event: &str, data: Value| {
            translator
                .on_event(SseEvent {
                    event: Some(event.to_owned()),
                    data: data.to_string(),
                })
                .map(|c| c.map(|c| (serde_json::from_slice::<Value>(&c.json).unwrap(), c.usage)))
        };
        let (first, _) = feed("message_start", json!({"type":"message_start","message":{"id":"msg_9","model":"claude-x","usage":{"input_tokens":7,"output_tokens":1}}})).unwrap().unwrap();
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["id"], "msg_9");
        assert!(feed("ping", json!({"type":"ping"})).unwrap().is_none());
        let (text, _) = feed("content_block_delta", json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}})).unwrap().unwrap();
        assert_eq!(text["choices"][0]["delta"]["content"], "Hi");
        let (end, _) = feed("message_delta", json!({"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":12}})).unwrap().unwrap();
        assert_eq!(end["choices"][0]["finish_reason"], "length");
        let (usage, counted) = feed("message_stop", json!({"type":"message_stop"}))
            .unwrap()
            .unwrap();
        assert_eq!(counted, Some(Usage::new(7, 12)));
        assert_eq!(usage["usage"]["total_tokens"], 19);
        assert_eq!(usage["choices"], json!([]));
        let error = feed(
            "error",
            json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
        );
        assert!(matches!(error, Err(UpstreamError::Interrupted(m)) if m == "Overloaded"));
    }

    /// Whatever Anthropic (or something in its place) sends, whole or streamed, is translated
    /// or refused with an error: never a panic.
    #[test]
    fn any_answer_is_translated_or_refused() {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop_oneof![
                Just("text".to_owned()),
                Just("tool_use".to_owned()),
                Just("end_turn".to_owned()),
                Just("text_delta".to_owned()),
                Just("input_json_delta".to_owned()),
                ".{0,8}",
            ]
            .prop_map(Value::from),
        ];
        let keys = prop_oneof![
            Just("type"),
            Just("content"),
            Just("text"),
            Just("delta"),
            Just("usage"),
            Just("input_tokens"),
            Just("output_tokens"),
            Just("index"),
            Just("id"),
            Just("name"),
            Just("input"),
            Just("partial_json"),
            Just("stop_reason"),
            Just("message"),
            Just("content_block"),
            Just("error"),
        ];
        let value = leaf.prop_recursive(4, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::vec((keys.clone(), inner), 0..6).prop_map(|pairs| {
                    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        });
        let event_name = prop_oneof![
            Just("message_start"),
            Just("content_block_start"),
            Just("content_block_delta"),
            Just("content_block_stop"),
            Just("message_delta"),
            Just("message_stop"),
            Just("ping"),
            Just("error"),
            Just("other"),
        ];
        let events = proptest::collection::vec((event_name, value.clone()), 0..12);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 2_000,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&(value, events), |(whole, events)| {
                let _ = completion(whole.to_string().as_bytes(), &model());
                let mut translator = StreamTranslator {
                    id: "msg".to_owned(),
                    model: "claude-x".to_owned(),
                    created: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    tool_blocks: Vec::new(),
                    stopped: false,
                };
                for (name, data) in events {
                    let event = SseEvent {
                        event: Some(name.to_owned()),
                        data: data.to_string(),
                    };
                    if translator.on_event(event).is_err() {
                        break;
                    }
                }
                Ok(())
            })
            .unwrap();
    }
}
