//! What the router finds in a request, turned into the plain facts the gateway records and the
//! policy will decide on.

use axum::http::HeaderValue;
use switchboard_router::conversation::{Speaker, Turn};
use switchboard_router::pii::PiiKind;

use crate::api::{ChatMessage, Role};

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
