//! The trained heads: small linear models over the embedding and the text features, stored as one
//! JSON file (`router/heads/heads.json`, made by `switchboard router train`).
//!
//! Both heads read the same input: the unit embedding followed by the [`features`], each
//! dimension standardised with the training set's mean and spread, so that a weight's size says
//! how much its dimension matters.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::conversation::Turn;
use crate::features;

/// The heads trained on the public data sets, shipped with the binary.
pub const DEFAULT: &str = include_str!("../heads/heads.json");

/// Bumped when the input layout changes, so that an old file is refused instead of misread.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HeadsError {
    #[error("cannot read the router heads {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the router heads are invalid: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heads {
    pub format: u32,
    /// The embedding model whose vectors the heads read.
    pub embedder: String,
    pub dimensions: usize,
    pub standardizer: Standardizer,
    /// The probability that the local model's answer is not good enough, before the blend.
    pub complexity: Logistic,
    /// How the complexity head's logit and the topic prior's are mixed.
    pub blend: Blend,
    pub domain: Softmax,
    /// Difficulty by topic, read as one more input of the heads.
    pub topics: Vec<TopicPrior>,
    /// Typical training examples per domain, to explain a request's scores by its neighbours.
    pub exemplars: Vec<Exemplar>,
    /// What the heads were trained on and how they scored on the validation split.
    pub provenance: serde_json::Value,
}

/// A unit vector stored scaled so that its largest component is ±127: a quarter of the size of
/// floats in the file, and cosines stay within about 0.001. The unit vector is decoded once, when
/// the file is read, since every request compares itself with the topics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "Vec<i8>", into = "Vec<i8>")]
pub struct QuantizedVector {
    stored: Vec<i8>,
    unit: Vec<f32>,
}

impl QuantizedVector {
    pub fn new(vector: &[f32]) -> Self {
        let largest = vector
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE);
        let stored: Vec<i8> = vector
            .iter()
            .map(|v| (v / largest * 127.0).round() as i8)
            .collect();
        stored.into()
    }

    /// The unit vector.
    pub fn unit(&self) -> &[f32] {
        &self.unit
    }

    pub fn len(&self) -> usize {
        self.stored.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }
}

impl From<Vec<i8>> for QuantizedVector {
    fn from(stored: Vec<i8>) -> Self {
        let v: Vec<f32> = stored.iter().map(|&q| f32::from(q)).collect();
        let norm = dot(&v, &v).sqrt().max(f32::MIN_POSITIVE);
        let unit = v.iter().map(|x| x / norm).collect();
        Self { stored, unit }
    }
}

impl From<QuantizedVector> for Vec<i8> {
    fn from(vector: QuantizedVector) -> Self {
        vector.stored
    }
}

/// A training example kept with its embedding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exemplar {
    pub text: String,
    pub domain: String,
    pub hard: bool,
    pub vector: QuantizedVector,
}

/// How often requests about one topic were hard, and where the topic lies in embedding space.
/// The topics are MMLU's 57 subjects: a question's nearest subjects say more about whether a
/// small model fails it than its wording does, and a linear head over the raw embedding cannot
/// express "the share of hard questions near here".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicPrior {
    pub topic: String,
    /// The share of the topic's training examples that were hard.
    pub rate: f32,
    pub centroid: QuantizedVector,
}

/// How sharply a request's similarity to the topics picks the nearest ones.
const TOPIC_TEMPERATURE: f32 = 0.03;

/// The hard rate near `embedding`: the topics' rates weighted by a softmax of their cosines.
pub fn topic_prior(topics: &[TopicPrior], embedding: &[f32]) -> f32 {
    if topics.is_empty() {
        return 0.0;
    }
    let logits: Vec<f32> = topics
        .iter()
        .map(|t| dot(t.centroid.unit(), embedding) / TOPIC_TEMPERATURE)
        .collect();
    softmax(&logits)
        .iter()
        .zip(topics)
        .map(|(w, t)| w * t.rate)
        .sum()
}

impl Heads {
    pub fn shipped() -> Self {
        Self::parse(DEFAULT).expect("the shipped router heads are valid")
    }

    pub fn load(path: &Path) -> Result<Self, HeadsError> {
        let text = std::fs::read_to_string(path).map_err(|e| HeadsError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, HeadsError> {
        let heads: Heads =
            serde_json::from_str(text).map_err(|e| HeadsError::Invalid(e.to_string()))?;
        heads.validate()?;
        Ok(heads)
    }

    fn validate(&self) -> Result<(), HeadsError> {
        let width = input_width(self.dimensions);
        let invalid = |what: &str| Err(HeadsError::Invalid(what.to_owned()));
        if self.format != FORMAT {
            return invalid(&format!(
                "format {} (this build reads {FORMAT})",
                self.format
            ));
        }
        if self.standardizer.mean.len() != width || self.standardizer.scale.len() != width {
            return invalid("the standardizer does not match the input width");
        }
        if self.complexity.weights.len() != width {
            return invalid("the complexity weights do not match the input width");
        }
        let domain = &self.domain;
        if domain.classes.is_empty()
            || domain.weights.len() != domain.classes.len()
            || domain.biases.len() != domain.classes.len()
            || domain.weights.iter().any(|w| w.len() != width)
        {
            return invalid("the domain weights do not match the classes and the input width");
        }
        Ok(())
    }

    /// Both heads' outputs for a conversation whose routing text has this embedding.
    pub fn predict(&self, embedding: &[f32], turns: &[Turn]) -> Prediction {
        let mut x = raw_input(&self.topics, embedding, turns);
        self.standardizer.apply(&mut x);
        let head = dot(&self.complexity.weights, &x) + self.complexity.bias;
        let prior = topic_prior(&self.topics, embedding);
        Prediction {
            complexity: self.blend.apply(head, prior),
            domains: self.domain.probabilities(&x),
        }
    }
}

/// complexity = σ(scale · (head · head_logit + prior · logit(topic prior)) + offset).
///
/// The linear head reads the topic prior too, but fitted for log-loss over everyday and hard
/// traffic together it leaves most of the prior's ranking of exam-style questions unused; the
/// blend's two weights are chosen by cross-validation on the training split for the best
/// cost–quality curve on MMLU that keeps everyday traffic apart from hard tasks. `scale` and
/// `offset` then make the result a probability again (Platt scaling on the same out-of-fold
/// predictions), so that a threshold of 0.6 means what it says.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Blend {
    pub head: f32,
    pub prior: f32,
    pub scale: f32,
    pub offset: f32,
}

impl Blend {
    /// The head alone.
    pub const HEAD: Blend = Blend {
        head: 1.0,
        prior: 0.0,
        scale: 1.0,
        offset: 0.0,
    };

    /// The blended logit, before calibration.
    pub fn logit(self, head_logit: f32, topic_prior: f32) -> f32 {
        let p = topic_prior.clamp(1e-4, 1.0 - 1e-4);
        self.head * head_logit + self.prior * (p / (1.0 - p)).ln()
    }

    pub fn apply(self, head_logit: f32, topic_prior: f32) -> f32 {
        sigmoid(self.scale * self.logit(head_logit, topic_prior) + self.offset)
    }
}

/// The heads' input before standardisation: the embedding, the text features, the topic prior.
pub fn raw_input(topics: &[TopicPrior], embedding: &[f32], turns: &[Turn]) -> Vec<f32> {
    let mut x: Vec<f32> = embedding
        .iter()
        .chain(&features::text_features(turns))
        .copied()
        .collect();
    x.push(topic_prior(topics, embedding));
    x
}

/// The length of the heads' input for embeddings of `dimensions`.
pub fn input_width(dimensions: usize) -> usize {
    dimensions + features::COUNT + 1
}

pub struct Prediction {
    pub complexity: f32,
    /// In the order of the domain head's classes.
    pub domains: Vec<f32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Standardizer {
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
}

impl Standardizer {
    /// The mean and standard deviation of each column of `rows`.
    pub fn fit(rows: &[Vec<f32>]) -> Self {
        let width = rows.first().map_or(0, Vec::len);
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0f64; width];
        let mut square = vec![0f64; width];
        for row in rows {
            for (i, &v) in row.iter().enumerate() {
                mean[i] += f64::from(v);
                square[i] += f64::from(v) * f64::from(v);
            }
        }
        let mean: Vec<f64> = mean.iter().map(|s| s / n).collect();
        let scale = square
            .iter()
            .zip(&mean)
            .map(|(s, m)| ((s / n - m * m).max(0.0).sqrt().max(1e-6)) as f32)
            .collect();
        Self {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            scale,
        }
    }

    pub fn apply(&self, x: &mut [f32]) {
        for ((v, m), s) in x.iter_mut().zip(&self.mean).zip(&self.scale) {
            *v = (*v - m) / s;
        }
    }
}

/// Binary logistic regression.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Logistic {
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl Logistic {
    pub fn probability(&self, x: &[f32]) -> f32 {
        sigmoid(dot(&self.weights, x) + self.bias)
    }
}

/// Multinomial logistic regression.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Softmax {
    pub classes: Vec<String>,
    pub weights: Vec<Vec<f32>>,
    pub biases: Vec<f32>,
}

impl Softmax {
    /// One probability per class, in the order of `classes`.
    pub fn probabilities(&self, x: &[f32]) -> Vec<f32> {
        let logits: Vec<f32> = self
            .weights
            .iter()
            .zip(&self.biases)
            .map(|(w, b)| dot(w, x) + b)
            .collect();
        softmax(&logits)
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_heads_load_and_cover_the_default_domains() {
        let heads = Heads::shipped();
        for domain in crate::domain::DEFAULT_DOMAINS {
            assert!(heads.domain.classes.iter().any(|c| c == domain), "{domain}");
        }
    }

    #[test]
    fn a_file_of_another_width_is_refused() {
        let mut heads = Heads::shipped();
        heads.complexity.weights.pop();
        let text = serde_json::to_string(&heads).unwrap();
        assert!(matches!(Heads::parse(&text), Err(HeadsError::Invalid(_))));
    }

    #[test]
    fn standardised_columns_have_zero_mean_and_unit_spread() {
        let rows = vec![vec![1.0, 10.0], vec![3.0, 10.0], vec![5.0, 10.0]];
        let standardizer = Standardizer::fit(&rows);
        let mut x = vec![5.0, 10.0];
        standardizer.apply(&mut x);
        assert!((x[0] - 1.2247).abs() < 1e-3);
        assert_eq!(x[1], 0.0);
    }

    #[test]
    fn quantized_vectors_keep_their_direction() {
        let embedding: Vec<f32> = (0..384)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 700.0)
            .collect();
        let norm = dot(&embedding, &embedding).sqrt();
        let unit: Vec<f32> = embedding.iter().map(|v| v / norm).collect();
        assert!(dot(&unit, QuantizedVector::new(&unit).unit()) > 0.999);
    }

    #[test]
    fn the_topic_prior_is_the_rate_of_the_nearest_topic() {
        let topic = |rate: f32, v: &[f32]| TopicPrior {
            topic: String::new(),
            rate,
            centroid: QuantizedVector::new(v),
        };
        let topics = [topic(0.9, &[1.0, 0.0]), topic(0.1, &[0.0, 1.0])];
        assert!((topic_prior(&topics, &[1.0, 0.0]) - 0.9).abs() < 1e-3);
        assert!((topic_prior(&topics, &[0.0, 1.0]) - 0.1).abs() < 1e-3);
        assert!((topic_prior(&topics, &[std::f32::consts::FRAC_1_SQRT_2; 2]) - 0.5).abs() < 1e-3);
        assert_eq!(topic_prior(&[], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn the_blend_of_the_head_alone_is_the_head() {
        assert!((Blend::HEAD.apply(1.5, 0.9) - sigmoid(1.5)).abs() < 1e-6);
        let both = Blend {
            prior: 1.0,
            ..Blend::HEAD
        };
        assert!(both.apply(0.0, 0.8) > 0.79 && both.apply(0.0, 0.2) < 0.21);
    }

    #[test]
    fn softmax_sums_to_one_even_for_large_logits() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[0] - 0.5).abs() < 1e-6);
    }
}
