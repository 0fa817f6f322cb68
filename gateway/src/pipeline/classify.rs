//! The pipeline's first step: what the router finds in a request, turned into the plain facts
//! the gateway records and the policy decides on; and the redaction of private data before a
//! request leaves.

use std::time::Duration;

use switchboard_router::classifier::{Classifier, language_of, private_data};
use switchboard_router::conversation::{Speaker, Turn};
use switchboard_router::pii::{Finding, PiiKind};
use tokio::time::Instant;

use crate::api::{ChatCompletionRequest, ChatMessage, MessageContent, Role};

/// What was found in a request before it was answered: the facts its route is decided on.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// The kinds of private data found in the request (never the data).
    pub private_data: Vec<PiiKind>,
    /// The language of the last user message (ISO 639-1), when it could be told.
    pub language: Option<&'static str>,
    /// What the router made of the request, when it scored it.
    pub classification: Option<Classification>,
}

/// The router's scores that the record keeps: bounded values only (the domain is one of the
/// heads' or the config's).
#[derive(Debug, Clone)]
pub struct Classification {
    pub complexity: f32,
    pub domain: String,
    pub took: Duration,
}

/// What the router finds in the request. Without a router (or when it cannot score the
/// request: its queue is full) the request is still scanned for private data, and for its
/// language when `language` asks for it (reading a language costs about half a millisecond,
/// more than the rest of the gateway's work on a request), and answered unscored.
pub async fn classify(
    classifier: Option<&Classifier>,
    request: &ChatCompletionRequest,
    language: bool,
) -> Findings {
    let started = Instant::now();
    let turns = turns(&request.messages);
    let distinct_kinds = |pii: &[(usize, Finding)]| distinct(pii.iter().map(|(_, f)| f.kind));
    if let Some(classifier) = classifier {
        match classifier.classify(&turns).await {
            Ok(scores) => {
                return Findings {
                    private_data: distinct_kinds(&scores.pii),
                    language: scores.language.map(|l| l.code),
                    classification: Some(Classification {
                        complexity: scores.complexity,
                        domain: scores.top_domain().to_owned(),
                        took: started.elapsed(),
                    }),
                };
            }
            Err(error) => tracing::warn!(%error, "the router could not score the request"),
        }
    }
    Findings {
        private_data: distinct_kinds(&private_data(&turns)),
        language: language
            .then(|| language_of(&turns).map(|l| l.code))
            .flatten(),
        classification: None,
    }
}

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
fn distinct(kinds: impl Iterator<Item = PiiKind>) -> Vec<PiiKind> {
    let mut kinds: Vec<PiiKind> = kinds.collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// `email,payment_card`: for the log line and the `x-switchboard-pii` header.
pub fn kinds_list(kinds: &[PiiKind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
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
