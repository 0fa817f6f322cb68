//! The trained heads: small linear models over the embedding and the text features, stored as one
//! JSON file (`router/heads/heads.json`, made by `switchboard router train`).
//!
//! Both heads read the same input: the unit embedding followed by the [`features`], each
//! dimension standardised with the training set's mean and spread, so that a weight's size says
//! how much its dimension matters.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::conversation::{Turn, routing_text};
use crate::features;
use crate::lexical::{self, Lexical};
use crate::neighbours::Neighbours;

/// The heads trained on the public data sets, shipped with the binary.
pub const DEFAULT: &str = include_str!("../heads/heads.json");

/// Bumped when the input layout changes, so that an old file is refused instead of misread.
pub const FORMAT: u32 = 3;

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
    /// What messages written as users write teach beyond the public data sets (absent in heads
    /// made before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatTerms>,
    /// The chat messages' vote on the domain (absent in heads made before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbours: Option<Neighbours>,
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

/// What escalating gains in one region of topic space, and where the region lies. The regions
/// are MMLU's 57 subjects, each split by k-means into up to 8 groups of questions: a question's
/// nearest regions say more about whether the large model would answer it better than its
/// wording does, and a linear head over the raw embedding cannot express "the gain near here".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicPrior {
    /// The subject the region belongs to.
    pub topic: String,
    /// The expected gain of the strong model over the weak one on the region's training
    /// questions (share only the strong one got right, minus share only the weak one got
    /// right), shrunk toward the subject's: in [-1, 1].
    pub rate: f32,
    pub centroid: QuantizedVector,
}

/// How sharply a request's similarity to the topics picks the nearest ones.
const TOPIC_TEMPERATURE: f32 = 0.05;

/// How a request sits among the topics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopicMatch {
    /// The topics' gains weighted by a softmax of their cosines with the request.
    pub prior: f32,
    /// The cosine of the nearest topic: how much the request looks like an exam question at all.
    pub nearness: f32,
}

pub fn topic_match(topics: &[TopicPrior], embedding: &[f32]) -> TopicMatch {
    if topics.is_empty() {
        return TopicMatch {
            prior: 0.0,
            nearness: 0.0,
        };
    }
    let cosines: Vec<f32> = topics
        .iter()
        .map(|t| dot(t.centroid.unit(), embedding))
        .collect();
    let logits: Vec<f32> = cosines.iter().map(|c| c / TOPIC_TEMPERATURE).collect();
    TopicMatch {
        prior: softmax(&logits)
            .iter()
            .zip(topics)
            .map(|(w, t)| w * t.rate)
            .sum(),
        nearness: cosines.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    }
}

impl Heads {
    pub fn shipped() -> Self {
        Self::parse(DEFAULT).expect("the shipped router heads are valid")
    }

    /// The heads at `path`, or the shipped ones.
    pub fn load_or_shipped(path: Option<&Path>) -> Result<Self, HeadsError> {
        path.map_or_else(|| Ok(Self::shipped()), Self::load)
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
        if self.chat.as_ref().is_some_and(|c| {
            c.complexity.weights.len() != width || !c.words.is_valid(domain.classes.len())
        }) {
            return invalid(
                "the chat terms do not match the input width, the buckets and the classes",
            );
        }
        if self
            .neighbours
            .as_ref()
            .is_some_and(|n| !n.is_valid(self.dimensions, domain.classes.len()))
        {
            return invalid("the neighbours do not match the embedding and the classes");
        }
        Ok(())
    }

    /// Both heads' outputs for a conversation whose routing text has this embedding.
    pub fn predict(&self, embedding: &[f32], turns: &[Turn]) -> Prediction {
        let mut x = raw_input(&self.topics, embedding, turns);
        self.standardizer.apply(&mut x);
        let head = dot(&self.complexity.weights, &x) + self.complexity.bias;
        let topics = topic_match(&self.topics, embedding);
        let mut complexity = self.blend.calibrated_logit(head, topics);
        let mut domain_logits = self.domain.logits(&x);
        if let Some(chat) = &self.chat {
            let words = lexical::terms(&routing_text(turns));
            let correction = dot(&chat.complexity.weights, &x)
                + chat.complexity.bias
                + chat.words.complexity_logit(&words);
            // Learnt from chat messages, it says nothing of exam questions: where the blend
            // hands a request to the topic prior, it fades out with the same gate.
            complexity += (1.0 - self.blend.gate(topics)) * correction;
            for (logit, term) in domain_logits
                .iter_mut()
                .zip(chat.words.domain_logits(&words))
            {
                *logit += term;
            }
        }
        if let Some(neighbours) = &self.neighbours {
            let votes = neighbours.domain_logits(embedding, domain_logits.len());
            for (logit, vote) in domain_logits.iter_mut().zip(votes) {
                *logit += vote;
            }
        }
        Prediction {
            complexity: sigmoid(complexity),
            domains: softmax(&domain_logits),
        }
    }
}

/// What the messages written as users write (the enterprise set, the hand-written requests)
/// teach beyond the public data sets, fitted on them with the other heads' logits held fixed:
/// a correction of the complexity logit over the same input as the heads and over the words,
/// and the words' terms of the domain logits. The complexity head itself stays fitted on the
/// public sets, so that its blend with the topic prior keeps MMLU's cost–quality curve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatTerms {
    pub complexity: Logistic,
    pub words: Lexical,
}

/// complexity = σ(scale · max(head_logit, prior_offset + prior_weight · prior + ln g) + offset),
/// with the gate g = σ(20 · (nearness − gate_center)).
///
/// Two estimates, and the larger one counts: the head's (fitted for log-loss over everyday and
/// hard traffic together, it knows a word problem or a proof request is hard, but ranks exam
/// questions no better than chance among themselves), and the topic's gain, which ranks exam
/// questions well but means nothing far from every exam topic; the gate fades it out there, so
/// that everyday requests keep the head's low scores. The gate's center and the prior's offset
/// and weight are chosen by cross-validation on the training split for the best cost–quality
/// curve on MMLU that keeps everyday traffic apart from hard tasks and the overall ranking of
/// hard examples near the head's; `scale` and `offset` then make the result a probability again
/// (Platt scaling on the same out-of-fold predictions), so that a threshold of 0.6 means what it
/// says.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Blend {
    pub gate_center: f32,
    pub prior_offset: f32,
    pub prior_weight: f32,
    pub scale: f32,
    pub offset: f32,
}

/// How fast the gate opens with nearness.
const GATE_STEEPNESS: f32 = 20.0;

impl Blend {
    /// The head alone: a gate centred beyond any cosine stays shut, and the prior's estimate
    /// lies far below any head logit.
    pub const HEAD: Blend = Blend {
        gate_center: 2.0,
        prior_offset: -1000.0,
        prior_weight: 0.0,
        scale: 1.0,
        offset: 0.0,
    };

    /// How far the request is handed to the topic prior: 0 far from every topic, 1 near one.
    pub fn gate(self, topics: TopicMatch) -> f32 {
        sigmoid(self.gate_logit(topics))
    }

    fn gate_logit(self, topics: TopicMatch) -> f32 {
        GATE_STEEPNESS * (topics.nearness - self.gate_center)
    }

    /// The blended logit, before calibration.
    pub fn logit(self, head_logit: f32, topics: TopicMatch) -> f32 {
        let log_gate = log_sigmoid(self.gate_logit(topics));
        head_logit.max(self.prior_offset + self.prior_weight * topics.prior + log_gate)
    }

    /// The blended logit, calibrated.
    pub fn calibrated_logit(self, head_logit: f32, topics: TopicMatch) -> f32 {
        self.scale * self.logit(head_logit, topics) + self.offset
    }

    pub fn apply(self, head_logit: f32, topics: TopicMatch) -> f32 {
        sigmoid(self.calibrated_logit(head_logit, topics))
    }
}

/// The heads' input before standardisation: the embedding, the text features, the topic prior.
pub fn raw_input(topics: &[TopicPrior], embedding: &[f32], turns: &[Turn]) -> Vec<f32> {
    let mut x: Vec<f32> = embedding
        .iter()
        .chain(&features::text_features(turns))
        .copied()
        .collect();
    x.push(topic_match(topics, embedding).prior);
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
        softmax(&self.logits(x))
    }

    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        self.weights
            .iter()
            .zip(&self.biases)
            .map(|(w, b)| dot(w, x) + b)
            .collect()
    }
}

/// Σ aᵢbᵢ, in eight running sums so that the compiler can use vector instructions (a single
/// running sum fixes the order of the additions and keeps it scalar): every request takes a
/// few hundred of these against the topics and exemplars.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let (a, b) = (&a[..a.len().min(b.len())], &b[..a.len().min(b.len())]);
    let mut lanes = [0f32; LANES];
    let (whole_a, whole_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = whole_a
        .remainder()
        .iter()
        .zip(whole_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in whole_a.zip(whole_b) {
        for lane in 0..LANES {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// ln σ(z), without overflow at either end.
fn log_sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        -(-z).exp().ln_1p()
    } else {
        z - z.exp().ln_1p()
    }
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
        let topics = [topic(0.9, &[1.0, 0.0]), topic(-0.1, &[0.0, 1.0])];
        let near_first = topic_match(&topics, &[1.0, 0.0]);
        assert!((near_first.prior - 0.9).abs() < 1e-3);
        assert!((near_first.nearness - 1.0).abs() < 1e-2);
        assert!((topic_match(&topics, &[0.0, 1.0]).prior + 0.1).abs() < 1e-3);
        let between = topic_match(&topics, &[std::f32::consts::FRAC_1_SQRT_2; 2]);
        assert!((between.prior - 0.4).abs() < 1e-3);
        assert!((between.nearness - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-2);
        assert_eq!(topic_match(&[], &[1.0, 0.0]).prior, 0.0);
    }

    #[test]
    fn the_gate_hands_exam_questions_to_the_prior() {
        let far = TopicMatch {
            prior: 0.5,
            nearness: 0.1,
        };
        let near = TopicMatch {
            prior: 0.5,
            nearness: 0.9,
        };
        assert!((Blend::HEAD.apply(1.5, near) - sigmoid(1.5)).abs() < 1e-6);
        let gated = Blend {
            gate_center: 0.4,
            prior_offset: -1.0,
            prior_weight: 10.0,
            ..Blend::HEAD
        };
        // Far from every topic: the head; near one, the larger of the head and the topic's gain.
        assert!((gated.logit(1.5, far) - 1.5).abs() < 1e-3);
        assert!((gated.logit(1.5, near) - 4.0).abs() < 1e-3);
        assert!((gated.logit(6.0, near) - 6.0).abs() < 1e-3);
        assert!((log_sigmoid(-200.0) + 200.0).abs() < 1e-3 && log_sigmoid(200.0) == 0.0);
    }

    #[test]
    fn softmax_sums_to_one_even_for_large_logits() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[0] - 0.5).abs() < 1e-6);
    }
}
