//! OpenAI-compatible upstreams (OpenAI, Azure OpenAI, vLLM, llama.cpp server, Ollama): the
//! request goes through as the client sent it, with the model renamed; answers come back as they
//! are, chunk by chunk.

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use super::sse::{SseStream, SseStreamError};
use super::{ChunkStream, Completion, StreamChunk, UpstreamError, parse_usage};
use crate::api::ChatCompletionRequest;
use crate::config::ModelConfig;

pub(super) fn body(
    model: &ModelConfig,
    request: &ChatCompletionRequest,
) -> Result<Bytes, UpstreamError> {
    let mut upstream = request.clone();
    upstream.model = model.upstream_name().to_owned();
    if upstream.max_output_tokens().is_none() {
        upstream.max_tokens = model.default_max_tokens;
    }
    if upstream.is_stream() {
        // Accounting needs the usage of every stream; the gateway drops this chunk for clients
        // that did not ask for it.
        upstream
            .stream_options
            .get_or_insert_with(Default::default)
            .include_usage = true;
    }
    serde_json::to_vec(&upstream)
        .map(Bytes::from)
        .map_err(|e| UpstreamError::Unsupported(e.to_string()))
}

pub(super) fn completion(body: Bytes) -> Result<Completion, UpstreamError> {
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    if !value.get("choices").is_some_and(Value::is_array) {
        return Err(UpstreamError::Protocol(
            "the response has no 'choices' array".to_owned(),
        ));
    }
    let usage = value.get("usage").and_then(parse_usage);
    Ok(Completion { body, usage })
}

pub(super) fn chunks(events: SseStream) -> ChunkStream {
    struct State {
        events: SseStream,
        done: bool,
        finished_choice: bool,
    }
    let state = State {
        events,
        done: false,
        finished_choice: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let item = match s.events.next().await {
            Some(Ok(event)) if event.data == "[DONE]" => return None,
            Some(Ok(event)) => chunk(event.data, &mut s.finished_choice),
            Some(Err(SseStreamError::Transport(e))) => Err(UpstreamError::from_reqwest(e)),
            Some(Err(SseStreamError::Decode(e))) => Err(UpstreamError::Protocol(e.to_string())),
            // Some servers end without `[DONE]`; that is only fine once an answer has finished.
            None if s.finished_choice => return None,
            None => Err(UpstreamError::Interrupted(
                "the stream ended before the answer finished".to_owned(),
            )),
        };
        s.done |= item.is_err();
        Some((item, s))
    }))
}

fn chunk(data: String, finished_choice: &mut bool) -> Result<StreamChunk, UpstreamError> {
    let value: Value =
        serde_json::from_str(&data).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    if value.get("error").is_some_and(|e| !e.is_null()) {
        return Err(UpstreamError::Interrupted(super::error_message(
            data.as_bytes(),
        )));
    }
    let choices = value.get("choices").and_then(Value::as_array);
    if choices.is_some_and(|c| {
        c.iter()
            .any(|choice| choice.get("finish_reason").is_some_and(|f| !f.is_null()))
    }) {
        *finished_choice = true;
    }
    let usage = value
        .get("usage")
        .filter(|u| !u.is_null())
        .and_then(parse_usage);
    let text_bytes = choices.map_or(0, |choices| {
        let content = choices
            .iter()
            .filter_map(|c| c["delta"]["content"].as_str());
        content.map(str::len).sum()
    });
    Ok(StreamChunk {
        usage_only: usage.is_some() && choices.is_none_or(Vec::is_empty),
        usage,
        text_bytes,
        json: Bytes::from(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelConfig {
        serde_yaml::from_str(
            "{name: fast, upstream_name: gpt-4o-mini-2024-07-18, price: {input_per_mtok: 1, output_per_mtok: 2}}",
        )
        .unwrap()
    }

    #[test]
    fn the_body_renames_the_model_keeps_unknown_fields_and_asks_for_stream_usage() {
        let request: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"stream":true,"logit_bias":{"1":2}}"#,
        )
        .unwrap();
        let sent: Value = serde_json::from_slice(&body(&model(), &request).unwrap()).unwrap();
        assert_eq!(sent["model"], "gpt-4o-mini-2024-07-18");
        assert_eq!(sent["logit_bias"]["1"], 2);
        assert_eq!(sent["stream_options"]["include_usage"], true);
    }

    #[test]
    fn chunks_report_usage_and_errors() {
        let mut finished = false;
        let usage = chunk(
            r#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#.into(),
            &mut finished,
        )
        .unwrap();
        assert!(usage.usage_only);
        assert_eq!(usage.usage.unwrap().total_tokens, 7);
        let content = chunk(
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}],"usage":null}"#.into(),
            &mut finished,
        )
        .unwrap();
        assert!(!content.usage_only && content.usage.is_none() && !finished);
        chunk(
            r#"{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.into(),
            &mut finished,
        )
        .unwrap();
        assert!(finished);
        assert!(matches!(
            chunk(r#"{"error":{"message":"boom"}}"#.into(), &mut finished),
            Err(UpstreamError::Interrupted(m)) if m == "boom"
        ));
        assert!(matches!(
            chunk("{not json".into(), &mut finished),
            Err(UpstreamError::Protocol(_))
        ));
    }
}
