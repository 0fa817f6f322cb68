//! What a cached answer is filed under, and whether an answer can be reused at all.
//!
//! The exact key is the SHA-256 of the canonical request: whose it is (the tenant, and the
//! user where the policy keys per user), the model asked and the model chosen, every message,
//! and every parameter but those that only shape the transport (`stream`, `stream_options`,
//! `user`, `metadata`, `store`). A parameter Switchboard does not know still changes the key:
//! an answer is reused only for a request that asks exactly the same.
//!
//! The semantic tier files an answer under its *context* (the same, without the last user
//! message) and compares the last user messages by meaning: only within one context, so that
//! another system prompt, earlier turns, parameters or model never share an answer.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::api::{ChatCompletionRequest, ChatMessage, MessageContent, Role};

/// Fields that do not change what a model answers.
const TRANSPORT_FIELDS: &[&str] = &["stream", "stream_options", "user", "metadata", "store"];

/// Fields whose presence makes an answer one that must not be replayed.
const UNREUSABLE_FIELDS: &[&str] = &[
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "logprobs",
    "top_logprobs",
    "audio",
    "modalities",
    "prediction",
];

/// The semantic tier compares conversations of at most this many messages (the system prompt
/// included): in longer ones, a short follow-up ("yes", "and for Munich?") means what the
/// conversation before it makes it mean.
pub const SEMANTIC_MAX_MESSAGES: usize = 3;

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// Where a request's answer is filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// Whose entries it sees: the tenant, and the user where the policy keys per user.
    pub scope: String,
    pub exact: Digest32,
    /// For the semantic tier: the context and the question, when the conversation is short
    /// enough and ends with a user's text.
    pub semantic: Option<SemanticKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemanticKey {
    pub context: Digest32,
    /// The last user message's text.
    pub question: String,
}

/// Why a request's answer is not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReusable {
    /// A sampled answer (a temperature above 0, or none given, which means OpenAI's 1):
    /// another ask would get another answer.
    Sampled,
    /// More than one choice asked for.
    SeveralChoices,
    /// Tools, function calls, log-probabilities or audio: the answer is more than its text.
    NotJustText,
    /// A message carries an image, audio or a file.
    NotJustTextInput,
}

impl NotReusable {
    pub fn as_str(self) -> &'static str {
        match self {
            NotReusable::Sampled => "sampled",
            NotReusable::SeveralChoices => "several_choices",
            NotReusable::NotJustText => "not_just_text",
            NotReusable::NotJustTextInput => "not_just_text_input",
        }
    }
}

/// Whether `request`'s answer could be served again: greedy (temperature 0; an omitted
/// temperature counts as greedy only where `omitted_is_greedy`), one choice, text in and out.
pub fn reusable(
    request: &ChatCompletionRequest,
    omitted_is_greedy: bool,
) -> Result<(), NotReusable> {
    match request.temperature {
        Some(0.0) => {}
        None if omitted_is_greedy => {}
        _ => return Err(NotReusable::Sampled),
    }
    if request.n.is_some_and(|n| n != 1) {
        return Err(NotReusable::SeveralChoices);
    }
    let present = |field: &&str| request.extra.get(*field).is_some_and(|v| !is_off(v));
    if UNREUSABLE_FIELDS.iter().any(present) {
        return Err(NotReusable::NotJustText);
    }
    let not_text = request.messages.iter().any(|m| {
        matches!(m.role, Role::Tool | Role::Function)
            || m.extra.contains_key("tool_calls")
            || matches!(&m.content, Some(MessageContent::Parts(parts))
                if parts.iter().any(|p| p.kind != "text"))
    });
    if not_text {
        return Err(NotReusable::NotJustTextInput);
    }
    Ok(())
}

/// A field given as null or false asks for nothing.
fn is_off(value: &Value) -> bool {
    matches!(value, Value::Null | Value::Bool(false))
}

impl RequestKey {
    /// The key of `request`, to be answered by `chosen` (the model the plan picked), for the
    /// entries of `scope`.
    pub fn of(request: &ChatCompletionRequest, chosen: &str, scope: &str) -> Self {
        let params = output_parameters(request);
        let exact = digest(scope, &request.model, chosen, &request.messages, &params);
        let last = request.messages.last();
        let question = last
            .filter(|m| m.role == Role::User)
            .and_then(|m| m.content.as_ref())
            .map(MessageContent::text)
            .filter(|text| !text.trim().is_empty());
        let semantic = question
            .filter(|_| request.messages.len() <= SEMANTIC_MAX_MESSAGES)
            .map(|question| {
                let earlier = &request.messages[..request.messages.len() - 1];
                SemanticKey {
                    context: digest(scope, &request.model, chosen, earlier, &params),
                    question,
                }
            });
        Self {
            scope: scope.to_owned(),
            exact,
            semantic,
        }
    }
}

/// Every field of the request but the model, the messages and the transport's.
fn output_parameters(request: &ChatCompletionRequest) -> Value {
    let Ok(Value::Object(mut fields)) = serde_json::to_value(request) else {
        return Value::Null;
    };
    for field in ["model", "messages"].iter().chain(TRANSPORT_FIELDS) {
        fields.remove(*field);
    }
    Value::Object(fields)
}

/// The SHA-256 of the canonical JSON of a request's parts. serde_json's maps keep their keys
/// sorted, so that the same request always gives the same bytes.
fn digest(
    scope: &str,
    asked: &str,
    chosen: &str,
    messages: &[ChatMessage],
    params: &Value,
) -> Digest32 {
    let mut canonical = Map::new();
    canonical.insert("scope".to_owned(), scope.into());
    canonical.insert("asked".to_owned(), asked.into());
    canonical.insert("chosen".to_owned(), chosen.into());
    let messages = messages.iter().map(canonical_message).collect();
    canonical.insert("messages".to_owned(), Value::Array(messages));
    canonical.insert("params".to_owned(), params.clone());
    let bytes = serde_json::to_vec(&Value::Object(canonical)).unwrap_or_default();
    Sha256::digest(&bytes).into()
}

/// A message as it counts for the answer: its role, its text (parts joined, as the models
/// read them) and its other fields (a name).
fn canonical_message(message: &ChatMessage) -> Value {
    let mut fields: Map<String, Value> = message.extra.clone();
    let role = serde_json::to_value(message.role).unwrap_or(Value::Null);
    fields.insert("role".to_owned(), role);
    let text = message.content.as_ref().map(MessageContent::text);
    fields.insert(
        "content".to_owned(),
        text.map_or(Value::Null, Value::String),
    );
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: Value) -> ChatCompletionRequest {
        serde_json::from_value(value).unwrap()
    }

    fn ask(text: &str) -> Value {
        json!({"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": text}]})
    }

    #[test]
    fn the_same_request_gets_the_same_key_and_any_change_another() {
        let key = |v: Value| RequestKey::of(&request(v), "smollm2", "acme").exact;
        let base = key(ask("reset my VPN password"));
        assert_eq!(base, key(ask("reset my VPN password")));
        // Streaming, the user field and stream options change the transport only.
        let mut streamed = ask("reset my VPN password");
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        streamed["user"] = json!("u-1");
        assert_eq!(base, key(streamed));
        // The text as parts is the same text.
        let parts = json!({"model": "auto", "temperature": 0, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "reset my VPN password"}]}]});
        assert_eq!(base, key(parts));
        for (field, value) in [
            ("max_tokens", json!(10)),
            ("seed", json!(7)),
            ("stop", json!(["\n"])),
            ("response_format", json!({"type": "json_object"})),
            ("frequency_penalty", json!(0.5)),
            ("some_new_parameter", json!(1)),
        ] {
            let mut changed = ask("reset my VPN password");
            changed[field] = value;
            assert_ne!(base, key(changed), "{field}");
        }
        assert_ne!(base, key(ask("reset my VPN password!")));
        let other_model = RequestKey::of(&request(ask("reset my VPN password")), "gpt-4o", "acme");
        assert_ne!(base, other_model.exact);
        let other_tenant =
            RequestKey::of(&request(ask("reset my VPN password")), "smollm2", "globex");
        assert_ne!(base, other_tenant.exact);
    }

    #[test]
    fn the_semantic_key_is_the_context_without_the_question() {
        let with_system = |question: &str, system: &str| {
            let value = json!({"model": "auto", "temperature": 0, "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question}]});
            RequestKey::of(&request(value), "smollm2", "acme")
                .semantic
                .unwrap()
        };
        let a = with_system("reset my VPN password", "You are IT support.");
        let b = with_system("how do I reset the VPN password", "You are IT support.");
        assert_eq!(a.context, b.context);
        assert_eq!(b.question, "how do I reset the VPN password");
        let c = with_system("reset my VPN password", "You are HR support.");
        assert_ne!(a.context, c.context);

        // A long conversation, or one that ends with the assistant, has no semantic key.
        let long = json!({"model": "auto", "temperature": 0, "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "vpn?"}, {"role": "assistant", "content": "which?"},
            {"role": "user", "content": "yes"}]});
        assert!(
            RequestKey::of(&request(long), "m", "acme")
                .semantic
                .is_none()
        );
    }

    #[test]
    fn only_greedy_text_answers_are_reusable() {
        assert_eq!(reusable(&request(ask("hi")), false), Ok(()));
        let mut sampled = ask("hi");
        sampled["temperature"] = json!(0.7);
        assert_eq!(reusable(&request(sampled), true), Err(NotReusable::Sampled));
        let mut omitted = ask("hi");
        omitted.as_object_mut().unwrap().remove("temperature");
        assert_eq!(
            reusable(&request(omitted.clone()), false),
            Err(NotReusable::Sampled)
        );
        assert_eq!(reusable(&request(omitted), true), Ok(()));
        let mut several = ask("hi");
        several["n"] = json!(2);
        assert_eq!(
            reusable(&request(several), false),
            Err(NotReusable::SeveralChoices)
        );
        for (field, value) in [
            ("tools", json!([{"type": "function"}])),
            ("logprobs", json!(true)),
        ] {
            let mut tooled = ask("hi");
            tooled[field] = value;
            assert_eq!(
                reusable(&request(tooled), false),
                Err(NotReusable::NotJustText)
            );
        }
        let mut no_logprobs = ask("hi");
        no_logprobs["logprobs"] = json!(false);
        assert_eq!(reusable(&request(no_logprobs), false), Ok(()));
        let image = json!({"model": "auto", "temperature": 0, "messages": [{"role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}]});
        assert_eq!(
            reusable(&request(image), false),
            Err(NotReusable::NotJustTextInput)
        );
    }
}
