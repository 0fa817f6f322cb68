//! Domains: what a request is about, as a probability per domain.
//!
//! The default domains come from the trained softmax head. Custom domains come from the policy as
//! a few example utterances each, with no retraining: a request's similarity to a custom domain
//! is its cosine to the domain's nearest example (with a handful of examples, averaging the
//! nearest few dilutes the one that matches), and the custom domains take a share of the
//! probability that grows with the best such similarity. A custom domain with a default
//! domain's name replaces it.

use crate::embedder::cosine;
use crate::heads::{sigmoid, softmax};

/// The domains the shipped head knows.
pub const DEFAULT_DOMAINS: [&str; 8] = [
    "it_helpdesk",
    "hr",
    "finance",
    "legal",
    "coding",
    "math",
    "small_talk",
    "general_knowledge",
];

/// The similarity at which custom domains hold half of the probability: all-MiniLM-L6-v2 puts
/// paraphrases above about 0.6 and unrelated sentences below about 0.3.
const HALF_SHARE_SIMILARITY: f32 = 0.45;
/// How sharply the custom share rises around [`HALF_SHARE_SIMILARITY`].
const SHARE_STEEPNESS: f32 = 15.0;
/// How sharply similarity separates custom domains from one another.
const CUSTOM_TEMPERATURE: f32 = 0.05;

/// A custom domain, embedded.
#[derive(Debug, Clone)]
pub struct CustomDomain {
    pub name: String,
    /// The examples' texts, to explain a decision.
    pub examples: Vec<String>,
    /// One unit vector per example.
    pub vectors: Vec<Vec<f32>>,
}

impl CustomDomain {
    /// The cosine of the request to the nearest example, and that example's index.
    pub fn similarity(&self, embedding: &[f32]) -> (f32, usize) {
        self.vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (cosine(embedding, v), i))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap_or((0.0, 0))
    }
}

/// Probability per domain, most likely first.
pub type DomainScores = Vec<(String, f32)>;

/// Merges the trained head's probabilities with the custom domains' similarities (see the
/// module's documentation). Both lists are in any order; the result sums to one.
pub fn combine(trained: &[(String, f32)], custom: &[(String, f32)]) -> DomainScores {
    let mut scores: DomainScores = trained
        .iter()
        .filter(|(name, _)| !custom.iter().any(|(c, _)| c == name))
        .cloned()
        .collect();
    let trained_mass: f32 = scores.iter().map(|(_, p)| p).sum();
    let best = custom
        .iter()
        .map(|(_, s)| *s)
        .fold(f32::NEG_INFINITY, f32::max);
    let custom_mass = match (custom.is_empty(), scores.is_empty()) {
        (true, _) => 0.0,
        (false, true) => 1.0,
        (false, false) => sigmoid((best - HALF_SHARE_SIMILARITY) * SHARE_STEEPNESS),
    };
    for (_, p) in &mut scores {
        *p *= (1.0 - custom_mass) / trained_mass.max(f32::MIN_POSITIVE);
    }
    let logits: Vec<f32> = custom.iter().map(|(_, s)| s / CUSTOM_TEMPERATURE).collect();
    for ((name, _), share) in custom.iter().zip(softmax(&logits)) {
        scores.push((name.clone(), custom_mass * share));
    }
    scores.sort_by(|a, b| b.1.total_cmp(&a.1));
    scores
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trained() -> Vec<(String, f32)> {
        vec![("it_helpdesk".into(), 0.7), ("hr".into(), 0.3)]
    }

    fn total(scores: &DomainScores) -> f32 {
        scores.iter().map(|(_, p)| p).sum()
    }

    #[test]
    fn without_custom_domains_the_head_decides() {
        let scores = combine(&trained(), &[]);
        assert_eq!(scores[0], ("it_helpdesk".into(), 0.7));
        assert!((total(&scores) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_close_custom_domain_wins_and_a_far_one_does_not() {
        let close = combine(&trained(), &[("payroll".into(), 0.8)]);
        assert_eq!(close[0].0, "payroll");
        assert!(close[0].1 > 0.95);
        let far = combine(&trained(), &[("payroll".into(), 0.1)]);
        assert_eq!(far[0].0, "it_helpdesk");
        assert!(far.iter().find(|(n, _)| n == "payroll").unwrap().1 < 0.01);
        assert!((total(&close) - 1.0).abs() < 1e-5 && (total(&far) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn a_custom_domain_replaces_a_default_of_the_same_name() {
        let scores = combine(&trained(), &[("hr".into(), 0.2)]);
        assert_eq!(scores.iter().filter(|(n, _)| n == "hr").count(), 1);
        assert!((total(&scores) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn similarity_is_that_of_the_nearest_example() {
        let domain = CustomDomain {
            name: "x".into(),
            examples: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            vectors: vec![
                vec![1.0, 0.0],
                vec![0.0, 1.0],
                vec![0.6, 0.8],
                vec![-1.0, 0.0],
            ],
        };
        let (similarity, nearest) = domain.similarity(&[0.8, 0.6]);
        assert!((similarity - 0.96).abs() < 1e-6);
        assert_eq!(nearest, 2);
    }
}
