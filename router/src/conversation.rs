//! What the router reads of a conversation.
//!
//! The embedder sees one text, at most about 150 tokens, built so that the last user turn weighs
//! most: mean pooling gives every token the same weight, so a part's share of the text is its
//! share of the embedding. The text is, in this order,
//! 1. the last user turn, up to 400 characters: its head and its tail when it is longer, because a
//!    long message states its task at one end (a question after pasted text, options after a
//!    stem) and the middle is mostly material;
//! 2. the user turn before it, up to 120 characters, so that a short follow-up ("and in Python?")
//!    keeps its subject;
//! 3. the system prompt, up to 120 characters: deployments often send the same long system prompt
//!    with every request, and read whole it would make all requests look alike, but its opening
//!    ("You are the HR assistant of …") says which desk the traffic comes from.
//!
//! Assistant and tool turns are left out: they say what was answered, not what is asked. Keeping the text
//! short also keeps routing fast, since BERT's cost grows with the square of the length.

/// Who wrote a turn, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    System,
    User,
    Assistant,
    /// Tool and function results: data for the model, scanned for private data but not read for
    /// routing.
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub speaker: Speaker,
    pub text: String,
}

impl Turn {
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            speaker: Speaker::User,
            text: text.into(),
        }
    }

    pub fn system(text: impl Into<String>) -> Self {
        Self {
            speaker: Speaker::System,
            text: text.into(),
        }
    }
}

const LAST_USER_CHARS: usize = 400;
/// How much of an over-long last user turn comes from its end.
const LAST_USER_TAIL_CHARS: usize = 150;
const EARLIER_USER_CHARS: usize = 120;
const SYSTEM_CHARS: usize = 120;

/// The last user turn: the message that is to be answered.
pub fn last_user(turns: &[Turn]) -> Option<&str> {
    turns
        .iter()
        .rev()
        .find(|t| t.speaker == Speaker::User)
        .map(|t| t.text.as_str())
}

/// The text the embedder reads for routing (see the module's documentation).
pub fn routing_text(turns: &[Turn]) -> String {
    let mut users = turns.iter().rev().filter(|t| t.speaker == Speaker::User);
    let last = users.next().map_or("", |t| t.text.as_str());
    let earlier = users.next().map_or("", |t| t.text.as_str());
    let system = turns
        .iter()
        .find(|t| t.speaker == Speaker::System)
        .map_or("", |t| t.text.as_str());

    let parts = [
        head_and_tail(last.trim(), LAST_USER_CHARS, LAST_USER_TAIL_CHARS),
        head(earlier.trim(), EARLIER_USER_CHARS).to_owned(),
        head(system.trim(), SYSTEM_CHARS).to_owned(),
    ];
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// At most `max` characters from the start, cut at a character boundary.
fn head(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// `text` itself when it fits in `max` characters, else its first `max - tail` and its last
/// `tail` characters joined by an ellipsis.
fn head_and_tail(text: &str, max: usize, tail: usize) -> String {
    let chars = text.chars().count();
    if chars <= max {
        return text.to_owned();
    }
    let tail_start = text
        .char_indices()
        .nth(chars - tail)
        .map_or(text.len(), |(at, _)| at);
    format!("{} … {}", head(text, max - tail), &text[tail_start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_user_turn_comes_first_then_the_one_before_then_the_system_prompt() {
        let turns = [
            Turn::system("You are the IT help desk of Acme."),
            Turn::user("My laptop will not boot."),
            Turn {
                speaker: Speaker::Assistant,
                text: "Try holding the power button.".into(),
            },
            Turn::user("That did not help, what next?"),
        ];
        assert_eq!(
            routing_text(&turns),
            "That did not help, what next?\nMy laptop will not boot.\nYou are the IT help desk of Acme."
        );
    }

    #[test]
    fn a_long_last_turn_keeps_its_head_and_its_tail() {
        let long = format!("QUESTION {} OPTIONS", "x".repeat(1000));
        let text = routing_text(&[Turn::user(long)]);
        assert!(text.starts_with("QUESTION"));
        assert!(text.ends_with("OPTIONS"));
        assert_eq!(
            text.chars().count(),
            LAST_USER_CHARS + " … ".chars().count()
        );
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let text = routing_text(&[Turn::user("é".repeat(1000)), Turn::system("ß".repeat(500))]);
        assert!(
            text.chars()
                .all(|c| matches!(c, 'é' | 'ß' | '…' | ' ' | '\n'))
        );
    }

    #[test]
    fn a_conversation_without_user_turns_routes_on_its_system_prompt() {
        assert_eq!(routing_text(&[Turn::system("  Be brief. ")]), "Be brief.");
        assert_eq!(routing_text(&[]), "");
    }
}
