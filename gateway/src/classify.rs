//! What the router finds in a request, turned into the plain facts the gateway records and the
//! policy will decide on.

use axum::http::HeaderValue;
use switchboard_router::conversation::{Speaker, Turn};
use switchboard_router::language::{self, Language};
use switchboard_router::pii::{self, PiiKind};

use crate::api::{ChatCompletionRequest, ChatMessage, Role};

/// The conversation as the router reads it.
pub fn turns(messages: &[ChatMessage]) -> Vec<Turn> {
    messages
        .iter()
        .filter_map(|m| {
            let speaker = match m.role {
                Role::System | Role::Developer => Speaker::System,
                Role::User => Speaker::User,
                Role::Assistant => Speaker::Assistant,
                Role::Tool | Role::Function => Speaker::Tool,
            };
            Some(Turn {
                speaker,
                text: m.content.as_ref()?.text(),
            })
        })
        .collect()
}

/// The language of the last user message.
pub fn language(request: &ChatCompletionRequest) -> Option<Language> {
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)?;
    language::detect(&last_user.content.as_ref()?.text())
}

/// The distinct kinds of private data in the request's messages, in a fixed order.
pub fn private_data(request: &ChatCompletionRequest) -> Vec<PiiKind> {
    distinct(
        request
            .messages
            .iter()
            .filter_map(|m| m.content.as_ref())
            .flat_map(|content| pii::scan(&content.text()))
            .map(|finding| finding.kind),
    )
}

/// Kinds sorted, each once.
pub fn distinct(kinds: impl Iterator<Item = PiiKind>) -> Vec<PiiKind> {
    let mut kinds: Vec<PiiKind> = kinds.collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// `email,payment_card`: for the log line.
pub fn kinds_list(kinds: &[PiiKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The `x-switchboard-pii` header, when there is something to say.
pub fn header_value(kinds: &[PiiKind]) -> Option<HeaderValue> {
    (!kinds.is_empty())
        .then(|| HeaderValue::from_str(&kinds_list(kinds)).ok())
        .flatten()
}
