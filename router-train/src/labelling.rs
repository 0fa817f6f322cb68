//! Labels for the local model a company actually runs: which questions with known answers it gets
//! right. `switchboard router label` runs the local engine over them; this module holds what does
//! not need the engine: the questions, their prompts, reading an answer, and the labelled file.
//!
//! - Multiple choice (MMLU style): the model reads the question with lettered options and
//!   "Answer:"; its choice is the option letter with the highest log-probability as the next
//!   token, so a model that would ramble still gets a fair reading.
//! - GSM8K: the model answers freely; the last number in its answer is compared with the
//!   reference's final number.
//!
//! The labelled file is JSON Lines, one `{"text", "hard", "domain"?, "source"?}` per question,
//! read by `router train --labels` and `router eval --labels`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dataset::{DatasetError, Example, split_of};
use switchboard_router::conversation::Turn;

/// One labelled request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labelled {
    pub text: String,
    /// Whether the local model's answer was not good enough.
    pub hard: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Reads a labelled file into examples, split for validation by the same hash as the data sets.
/// Domains outside the default ones are kept out of the domain head (custom domains need no
/// training).
pub fn load(path: &Path) -> Result<Vec<Example>, DatasetError> {
    let fail = |reason: String| DatasetError {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            let labelled: Labelled =
                serde_json::from_str(line).map_err(|e| fail(format!("line {}: {e}", n + 1)))?;
            let domain = labelled.domain.as_deref().and_then(|d| {
                switchboard_router::domain::DEFAULT_DOMAINS
                    .iter()
                    .find(|known| **known == d)
                    .copied()
            });
            Ok(Example {
                source: labelled.source.unwrap_or_else(|| "labelled".to_owned()),
                split: split_of(&labelled.text),
                turns: vec![Turn::user(labelled.text)],
                hard: labelled.hard,
                domain,
                outcome: None,
                weight: 1.0,
            })
        })
        .collect()
}

/// A multiple-choice question with its right option.
#[derive(Debug, Clone, Deserialize)]
pub struct MultipleChoice {
    pub question: String,
    pub choices: Vec<String>,
    /// The index of the right choice, or its letter.
    pub answer: AnswerKey,
    #[serde(default)]
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AnswerKey {
    Index(usize),
    Letter(String),
}

impl MultipleChoice {
    pub fn right_index(&self) -> Option<usize> {
        match &self.answer {
            AnswerKey::Index(i) => (*i < self.choices.len()).then_some(*i),
            AnswerKey::Letter(l) => letter_index(l.trim()).filter(|&i| i < self.choices.len()),
        }
    }

    /// The question as the model reads it, ending where the answer letter goes.
    pub fn prompt(&self) -> String {
        let mut prompt = self.question.trim().to_owned();
        for (i, choice) in self.choices.iter().enumerate() {
            prompt.push_str(&format!("\n{}. {}", letter(i), choice.trim()));
        }
        prompt.push_str("\nAnswer with the letter of the right option.\nAnswer:");
        prompt
    }
}

fn letter(i: usize) -> char {
    char::from(b'A' + i as u8)
}

fn letter_index(text: &str) -> Option<usize> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c @ 'A'..='Z'), None) => Some(usize::from(c as u8 - b'A')),
        _ => None,
    }
}

/// The option the model chose: among the candidate next tokens (text, log-probability), the most
/// likely one that is an option letter (with or without spaces around it).
pub fn chosen_option(candidates: &[(String, f32)], options: usize) -> Option<usize> {
    candidates
        .iter()
        .filter_map(|(token, logprob)| Some((letter_index(token.trim())?, *logprob)))
        .filter(|(i, _)| *i < options)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The final number of a GSM8K reference answer (after `####`).
pub fn reference_number(answer: &str) -> Option<String> {
    normalise_number(answer.rsplit("####").next()?.trim())
}

/// The last number in a model's answer.
pub fn last_number(answer: &str) -> Option<String> {
    let mut numbers = Vec::new();
    let mut current = String::new();
    for c in answer.chars().chain(std::iter::once(' ')) {
        let continues = c.is_ascii_digit()
            || (matches!(c, '.' | ',') && !current.is_empty())
            || (c == '-' && current.is_empty());
        if continues {
            current.push(c);
        } else if !current.is_empty() {
            numbers.push(std::mem::take(&mut current));
        }
    }
    numbers.iter().rev().find_map(|n| normalise_number(n))
}

/// `1,234.50` → `1234.5`; `-3` stays; text that is no number → `None`.
fn normalise_number(text: &str) -> Option<String> {
    let cleaned: String = text
        .trim_end_matches(['.', ','])
        .chars()
        .filter(|&c| c != ',' && c != '$')
        .collect();
    let value: f64 = cleaned.parse().ok()?;
    Some(if value.fract() == 0.0 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    })
}

/// The instruction that asks for a final number GSM8K can be scored by.
pub fn gsm8k_prompt(question: &str) -> String {
    format!(
        "{}\nSolve it step by step, then give the final answer as a number.",
        question.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_from_free_answers() {
        assert_eq!(
            reference_number("48/2 = 24\n#### 72").as_deref(),
            Some("72")
        );
        assert_eq!(reference_number("#### 1,250").as_deref(), Some("1250"));
        assert_eq!(
            last_number("She sold 48 + 24 = 72 clips. The answer is 72.").as_deref(),
            Some("72")
        );
        assert_eq!(
            last_number("It costs $1,234.50 in total").as_deref(),
            Some("1234.5")
        );
        assert_eq!(last_number("the result is -3").as_deref(), Some("-3"));
        assert_eq!(last_number("no numbers here"), None);
    }

    #[test]
    fn the_most_likely_letter_is_the_choice() {
        let candidates = vec![
            ("The".to_owned(), -0.5),
            (" B".to_owned(), -1.0),
            ("A".to_owned(), -2.0),
            (" E".to_owned(), -0.1),
        ];
        assert_eq!(chosen_option(&candidates, 4), Some(1));
        assert_eq!(chosen_option(&candidates[..1], 4), None);
    }

    #[test]
    fn prompts_letter_the_options() {
        let question: MultipleChoice = serde_json::from_str(
            r#"{"question": "2 + 2 = ?", "choices": ["3", "4"], "answer": "B"}"#,
        )
        .unwrap();
        assert_eq!(question.right_index(), Some(1));
        assert!(question.prompt().contains("\nA. 3\nB. 4\n"));
        assert!(question.prompt().ends_with("Answer:"));
    }

    #[test]
    fn labelled_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labels.jsonl");
        let rows = [
            Labelled {
                text: "What is 7 * 8?".into(),
                hard: false,
                domain: Some("math".into()),
                source: Some("gsm8k".into()),
            },
            Labelled {
                text: "Reset my badge".into(),
                hard: true,
                domain: Some("facilities".into()),
                source: None,
            },
        ];
        let text: Vec<String> = rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        let examples = load(&path).unwrap();
        assert_eq!(examples[0].domain, Some("math"));
        assert_eq!(examples[1].domain, None);
        assert!(examples[1].hard);
        std::fs::write(&path, "{not json").unwrap();
        assert!(load(&path).unwrap_err().reason.contains("line 1"));
    }
}
