//! Cheap text features that the complexity head reads next to the embedding: things an embedding
//! of a truncated text blurs (how long the whole conversation is, how much code or math it holds,
//! how many things it asks for at once).

use crate::conversation::{Speaker, Turn, last_user};

/// The names of the features, in the order of [`text_features`]'s values.
pub const NAMES: [&str; 9] = [
    "log_chars_last_user",
    "log_chars_conversation",
    "log_user_turns",
    "log_lines_last_user",
    "code_share",
    "math_share",
    "digit_share",
    "log_questions",
    "log_constraints",
];

pub const COUNT: usize = NAMES.len();

/// Words that add a requirement to a task; the more of them, the more a small model tends to
/// miss one.
const CONSTRAINT_WORDS: [&str; 16] = [
    "must",
    "should",
    "exactly",
    "at least",
    "at most",
    "without",
    "only",
    "each",
    "every",
    "step by step",
    "explain",
    "prove",
    "compare",
    "why",
    "format",
    "then",
];

/// The features of a conversation, in the order of [`NAMES`].
pub fn text_features(turns: &[Turn]) -> [f32; COUNT] {
    let last = last_user(turns).unwrap_or("");
    let lower = last.to_lowercase();
    let chars = last.chars().count().max(1) as f32;
    let count = |f: fn(char) -> bool| last.chars().filter(|&c| f(c)).count() as f32;

    let conversation_chars: usize = turns.iter().map(|t| t.text.chars().count()).sum();
    let user_turns = turns.iter().filter(|t| t.speaker == Speaker::User).count();
    let code_marks = lower.matches("```").count() as f32 * 20.0
        + count(|c| matches!(c, '{' | '}' | ';' | '(' | ')' | '[' | ']' | '_' | '#'));
    let math_marks = count(|c| {
        matches!(c, '+' | '*' | '/' | '=' | '^' | '<' | '>' | '%')
            || ('\u{2200}'..='\u{22ff}').contains(&c)
    });
    let constraints: usize = CONSTRAINT_WORDS
        .iter()
        .map(|w| count_words(&lower, w))
        .sum();

    [
        chars.ln_1p(),
        (conversation_chars as f32).ln_1p(),
        (user_turns as f32).ln_1p(),
        (last.lines().count() as f32).ln_1p(),
        (code_marks / chars).min(1.0),
        (math_marks / chars).min(1.0),
        count(|c| c.is_ascii_digit()) / chars,
        count(|c| c == '?').ln_1p(),
        (constraints as f32).ln_1p(),
    ]
}

/// Occurrences of `word` in `text` that stand as whole words.
fn count_words(text: &str, word: &str) -> usize {
    text.match_indices(word)
        .filter(|&(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + word.len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features_of(text: &str) -> [f32; COUNT] {
        text_features(&[Turn::user(text)])
    }

    fn feature(values: &[f32; COUNT], name: &str) -> f32 {
        values[NAMES.iter().position(|n| *n == name).unwrap()]
    }

    /// The count behind a `log_…` feature (`ln(1 + count)`): comparing logs exactly would
    /// compare libm with the compiler's constant folding.
    fn count(values: &[f32; COUNT], name: &str) -> f32 {
        feature(values, name).exp_m1().round()
    }

    #[test]
    fn code_math_and_constraints_show() {
        let code = features_of("```rust\nfn main() { println!(\"hi\"); }\n```");
        let plain = features_of("How do I reset my VPN password");
        assert!(feature(&code, "code_share") > 0.3);
        assert_eq!(feature(&plain, "code_share"), 0.0);

        let math = features_of("Solve x^2 + 3*x = 10 for x");
        assert!(feature(&math, "math_share") > 0.1);

        let asks = features_of("Explain why, then compare each option; you must be exact?");
        assert_eq!(count(&asks, "log_constraints"), 6.0);
        assert_eq!(count(&asks, "log_questions"), 1.0);
    }

    #[test]
    fn constraint_words_count_only_as_whole_words() {
        assert_eq!(count_words("thenceforth whyever only", "then"), 0);
        assert_eq!(count_words("only, only.", "only"), 2);
    }

    #[test]
    fn the_conversation_counts_all_turns() {
        let turns = [
            Turn::system("s".repeat(99)),
            Turn::user("a"),
            Turn::user("b"),
        ];
        let values = text_features(&turns);
        assert_eq!(count(&values, "log_user_turns"), 2.0);
        assert_eq!(count(&values, "log_chars_conversation"), 101.0);
    }

    #[test]
    fn an_empty_conversation_has_finite_features() {
        assert!(text_features(&[]).iter().all(|v| v.is_finite()));
    }
}
