//! What the router finds in a request, turned into the plain facts the gateway records and the
//! policy will decide on.

use axum::http::HeaderValue;
use switchboard_router::conversation::{Speaker, Turn};
use switchboard_router::pii::PiiKind;

use crate::api::{ChatMessage, MessageContent, Role};

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

/// Replaces every piece of private data in the messages' text by its kind in brackets
/// (`[EMAIL]`), before a request leaves for a remote provider. Returns how many were replaced.
pub fn redact(messages: &mut [ChatMessage]) -> usize {
    let mut replaced = 0;
    let mut redact_text = |text: &mut String| {
        let mut findings = switchboard_router::pii::scan(text);
        // From the end, so that earlier spans stay valid.
        findings.sort_by_key(|f| std::cmp::Reverse(f.span.start));
        for finding in findings {
            text.replace_range(finding.span, finding.kind.placeholder());
            replaced += 1;
        }
    };
    for message in messages {
        match &mut message.content {
            Some(MessageContent::Text(text)) => redact_text(text),
            Some(MessageContent::Parts(parts)) => {
                parts
                    .iter_mut()
                    .filter_map(|p| p.text.as_mut())
                    .for_each(&mut redact_text);
            }
            None => {}
        }
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_data_is_replaced_by_its_kind_in_every_text() {
        let mut messages: Vec<ChatMessage> = serde_json::from_str(
            r#"[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Mail jane.doe@example.com or call +1 415 555 0132 today"},
                {"role": "user", "content": [{"type": "text", "text": "card 4111 1111 1111 1111, not 4111 1111 1111 1112"}]}
            ]"#,
        )
        .unwrap();
        assert_eq!(redact(&mut messages), 3);
        let texts: Vec<String> = messages
            .iter()
            .map(|m| m.content.as_ref().unwrap().text())
            .collect();
        assert_eq!(texts[0], "Be brief.");
        assert_eq!(texts[1], "Mail [EMAIL] or call [PHONE] today");
        assert_eq!(texts[2], "card [PAYMENT_CARD], not 4111 1111 1111 1112");
    }
}
