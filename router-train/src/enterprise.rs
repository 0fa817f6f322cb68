//! The enterprise development set (`router-train/data/enterprise/`, its labelling guide in
//! `LABELLING.md` there): messages written the way employees write to their company's assistant,
//! each labelled with its domain, whether a small local model's answer would do, its language and
//! its private data, marked inline as `⟦kind|value⟧`.
//!
//! `train-*.jsonl` files are training data like any other (split for validation by hash);
//! `test-*.jsonl` files, written by other writers, are the test split: no fit and no choice made
//! while fitting ever reads them.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;

use crate::dataset::{DatasetError, Example, Split, fail, files_in, read, split_of};
use crate::pii_benchmark::Case;
use switchboard_router::conversation::Turn;
use switchboard_router::pii::PiiKind;

/// How much a training message counts against one example of the public data sets: they are
/// few, but written as users write. Weighed on the training files' validation split against
/// MMLU's cost–quality curve: at 20 the heads read enterprise messages about as well as at 50
/// (domain 0.76, complexity AUROC 0.91) and keep more of MMLU's curve (APGR 0.633 against 0.627).
const WEIGHT: f32 = 20.0;

/// Private data: each piece's kind and byte span in the text.
pub type Spans = Vec<(PiiKind, Range<usize>)>;

/// One labelled message.
#[derive(Debug, Clone)]
pub struct Message {
    /// The file it comes from, without its extension.
    pub source: String,
    /// The message as the router sees it (marks removed).
    pub text: String,
    pub domain: &'static str,
    /// Whether a small local model's answer would not be good enough.
    pub hard: bool,
    pub language: String,
    pub private_data: Spans,
    pub test: bool,
}

impl Message {
    pub fn example(&self) -> Example {
        Example {
            source: format!("enterprise/{}", self.source),
            turns: vec![Turn::user(self.text.clone())],
            hard: self.hard,
            domain: Some(self.domain),
            outcome: None,
            split: if self.test {
                Split::Test
            } else {
                split_of(&self.text)
            },
            weight: WEIGHT,
        }
    }

    /// The message as a test case of the PII scanner.
    pub fn pii_case(&self) -> Case {
        Case {
            text: self.text.clone(),
            expected: self.private_data.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Row {
    text: String,
    domain: String,
    route: String,
    lang: String,
}

/// Every message of the `train-*` and `test-*` files in `dir`, files in name order.
pub fn load(dir: &Path) -> Result<Vec<Message>, DatasetError> {
    let mut messages = Vec::new();
    for path in files_in(dir, "jsonl")? {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let test = match name.split('-').next() {
            Some("train") => false,
            Some("test") => true,
            _ => continue,
        };
        let content = read(&path)?;
        for (n, line) in content.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |reason: String| fail(&path, format!("line {}: {reason}", n + 1));
            let row: Row = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
            let domain = switchboard_router::domain::DEFAULT_DOMAINS
                .iter()
                .find(|d| **d == row.domain)
                .copied()
                .ok_or_else(|| at(format!("unknown domain {:?}", row.domain)))?;
            let hard = match row.route.as_str() {
                "local" => false,
                "remote" => true,
                other => return Err(at(format!("route {other:?} is neither local nor remote"))),
            };
            let (text, private_data) = unmark(&row.text).map_err(at)?;
            messages.push(Message {
                source: name.clone(),
                text,
                domain,
                hard,
                language: row.lang,
                private_data,
                test,
            });
        }
    }
    // A message that a training writer and a test writer both wrote ("hiya", "thanks!") stays
    // in the test split only, so that no test message is ever trained on.
    let held_out: std::collections::HashSet<String> = messages
        .iter()
        .filter(|m| m.test)
        .map(|m| normalised(&m.text))
        .collect();
    messages.retain(|m| m.test || !held_out.contains(&normalised(&m.text)));
    Ok(messages)
}

fn normalised(text: &str) -> String {
    text.trim().to_lowercase()
}

/// The text without its `⟦kind|value⟧` marks, and each marked value's kind and span.
pub fn unmark(marked: &str) -> Result<(String, Spans), String> {
    let mut text = String::with_capacity(marked.len());
    let mut spans = Vec::new();
    let mut rest = marked;
    while let Some(open) = rest.find('⟦') {
        text.push_str(&rest[..open]);
        let inner = &rest[open + '⟦'.len_utf8()..];
        let close = inner.find('⟧').ok_or("a mark is not closed")?;
        let (kind, value) = inner[..close]
            .split_once('|')
            .ok_or("a mark has no `|` between kind and value")?;
        let kind = PiiKind::parse(kind).ok_or_else(|| format!("unknown kind {kind:?}"))?;
        spans.push((kind, text.len()..text.len() + value.len()));
        text.push_str(value);
        rest = &inner[close + '⟧'.len_utf8()..];
    }
    if rest.contains('⟧') {
        return Err("a mark is closed without being opened".to_owned());
    }
    text.push_str(rest);
    Ok((text, spans))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_become_spans_of_the_plain_text() {
        let (text, spans) =
            unmark("reset ⟦person|Maria Keller⟧'s token (⟦personal_id|E-20417⟧)").unwrap();
        assert_eq!(text, "reset Maria Keller's token (E-20417)");
        assert_eq!(
            spans,
            [(PiiKind::Person, 6..18), (PiiKind::PersonalId, 28..35)]
        );
        assert!(unmark("⟦person|Anna").is_err());
        assert!(unmark("⟦planet|Mars⟧").is_err());
    }

    #[test]
    fn the_shipped_set_loads_with_both_splits() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/enterprise");
        let messages = load(&dir).unwrap();
        assert!(messages.len() >= 1_000, "{}", messages.len());
        assert!(messages.iter().any(|m| m.test) && messages.iter().any(|m| !m.test));
        let test: std::collections::HashSet<String> = messages
            .iter()
            .filter(|m| m.test)
            .map(|m| normalised(&m.text))
            .collect();
        assert!(
            !messages
                .iter()
                .any(|m| !m.test && test.contains(&normalised(&m.text)))
        );
        for domain in switchboard_router::domain::DEFAULT_DOMAINS {
            assert!(messages.iter().filter(|m| m.domain == domain).count() >= 100);
        }
    }
}
