//! OpenAI's chat completions wire format, as much of it as the gateway itself reads or writes.
//!
//! Requests keep every field they arrive with: the ones Switchboard understands are typed, the
//! rest ride along in `extra` and reach OpenAI-compatible upstreams untouched.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSequences>,
    /// Every other field (tools, response_format, seed, logit_bias, user, …), passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSequences {
    One(String),
    Many(Vec<String>),
}

impl StopSequences {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StopSequences::One(s) => vec![s.clone()],
            StopSequences::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    /// name, tool_calls, tool_call_id, refusal, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the message, parts joined; images and audio contribute nothing.
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(s) => s.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// `text().len()`, without building the text.
    pub fn text_len(&self) -> usize {
        match self {
            MessageContent::Text(s) => s.len(),
            MessageContent::Parts(parts) => {
                let texts = parts.iter().filter_map(|p| p.text.as_deref());
                let (count, bytes) = texts.fold((0usize, 0usize), |(n, b), t| (n + 1, b + t.len()));
                bytes + count.saturating_sub(1)
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletionRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn wants_usage_chunk(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// The completion length the client asked for, under either of its names.
    /// Bytes of text in every message, for bounds and estimates of its tokens.
    pub fn text_bytes(&self) -> u64 {
        let contents = self.messages.iter().filter_map(|m| m.content.as_ref());
        contents.map(|c| c.text_len() as u64).sum()
    }

    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Checks what serde's types cannot: returns the offending parameter and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.model.is_empty() {
            return Err(("model", "'model' must not be empty".to_owned()));
        }
        if self.messages.is_empty() {
            return Err((
                "messages",
                "'messages' must contain at least one message".to_owned(),
            ));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err((
                "temperature",
                format!("'temperature' must be between 0 and 2, got {t}"),
            ));
        }
        if let Some(p) = self.top_p
            && !(0.0..=1.0).contains(&p)
        {
            return Err(("top_p", format!("'top_p' must be between 0 and 1, got {p}")));
        }
        if self.n == Some(0) {
            return Err(("n", "'n' must be at least 1".to_owned()));
        }
        for (name, value) in [
            ("max_tokens", self.max_tokens),
            ("max_completion_tokens", self.max_completion_tokens),
        ] {
            if value == Some(0) {
                return Err((name, format!("'{name}' must be at least 1")));
            }
        }
        for name in ["presence_penalty", "frequency_penalty"] {
            if let Some(value) = self.extra.get(name).filter(|v| !v.is_null()) {
                match value.as_f64() {
                    Some(v) if (-2.0..=2.0).contains(&v) => {}
                    _ => return Err((name, format!("'{name}' must be a number between -2 and 2"))),
                }
            }
        }
        if let Some(value) = self.extra.get("top_logprobs").filter(|v| !v.is_null())
            && value.as_u64().is_none_or(|n| n > 20)
        {
            return Err((
                "top_logprobs",
                "'top_logprobs' must be an integer between 0 and 20".to_owned(),
            ));
        }
        if self.stream_options.is_some() && !self.is_stream() {
            return Err((
                "stream_options",
                "'stream_options' is only allowed when 'stream' is true".to_owned(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// Bytes per token, for an estimate where an upstream reports no usage: English text runs at
/// about four bytes per token in the common BPE vocabularies.
const BYTES_PER_TOKEN: u64 = 4;

impl Usage {
    /// An estimate from the bytes of the prompt's and the answer's text, for an upstream that
    /// reports no usage.
    pub fn estimated(prompt_bytes: u64, completion_bytes: u64) -> Self {
        Self::new(
            prompt_bytes.div_ceil(BYTES_PER_TOKEN),
            completion_bytes.div_ceil(BYTES_PER_TOKEN),
        )
    }

    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// A non-streamed answer, as Switchboard writes it when it is not relaying an OpenAI upstream's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: Option<String>,
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssistantMessage {
    pub role: Role,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Value>,
}

/// One streamed chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl ChatCompletionChunk {
    /// Bytes of answer text the chunk carries.
    pub fn text_bytes(&self) -> usize {
        let content = self.choices.iter().filter_map(|c| c.delta.content.as_ref());
        content.map(String::len).sum()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Value>,
}

impl ChatCompletionChunk {
    pub fn new(id: &str, created: u64, model: &str) -> Self {
        Self {
            id: id.to_owned(),
            object: "chat.completion.chunk".to_owned(),
            created,
            model: model.to_owned(),
            choices: Vec::new(),
            usage: None,
        }
    }

    pub fn with_delta(mut self, delta: Delta, finish_reason: Option<&str>) -> Self {
        self.choices.push(ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish_reason.map(str::to_owned),
            logprobs: None,
        });
        self
    }
}

/// Seconds since the Unix epoch, for `created` fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lengths_match_the_text_without_building_it() {
        let request: ChatCompletionRequest = serde_json::from_str(
            r#"{"model": "m", "messages": [
                {"role": "user", "content": "héllo"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "bc"}]},
                {"role": "user", "content": []},
                {"role": "assistant"}
            ]}"#,
        )
        .unwrap();
        for content in request.messages.iter().filter_map(|m| m.content.as_ref()) {
            assert_eq!(content.text_len(), content.text().len());
        }
        assert_eq!(request.text_bytes(), 6 + 4);
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi","name":"bob"}],
            "tools":[{"type":"function","function":{"name":"f"}}],"seed":7,"temperature":0.5}"#;
        let request: ChatCompletionRequest = serde_json::from_str(body).unwrap();
        assert_eq!(request.temperature, Some(0.5));
        let back = serde_json::to_value(&request).unwrap();
        assert_eq!(back["seed"], 7);
        assert_eq!(back["tools"][0]["function"]["name"], "f");
        assert_eq!(back["messages"][0]["name"], "bob");
        assert!(back.get("stream").is_none());
    }

    #[test]
    fn content_parts_are_read_as_text() {
        let message: ChatMessage = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(message.content.unwrap().text(), "a\nb");
    }

    #[test]
    fn validation_names_the_parameter() {
        let mut request: ChatCompletionRequest =
            serde_json::from_str(r#"{"model":"m","messages":[]}"#).unwrap();
        assert_eq!(request.check().unwrap_err().0, "messages");
        request.messages.push(ChatMessage {
            role: Role::User,
            content: None,
            extra: Map::new(),
        });
        request.temperature = Some(3.0);
        assert_eq!(request.check().unwrap_err().0, "temperature");
        request.temperature = None;
        request.extra.insert("presence_penalty".into(), 2.5.into());
        assert_eq!(request.check().unwrap_err().0, "presence_penalty");
        request
            .extra
            .insert("presence_penalty".into(), (-1.0).into());
        request.extra.insert("top_logprobs".into(), 21.into());
        assert_eq!(request.check().unwrap_err().0, "top_logprobs");
        request.extra.remove("top_logprobs");
        request.stream_options = Some(StreamOptions::default());
        assert_eq!(request.check().unwrap_err().0, "stream_options");
        request.stream = Some(true);
        assert!(request.check().is_ok());
    }
}
