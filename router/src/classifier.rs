//! The classifier: a conversation in, the scores that the policy decides on out.
//!
//! One embedding of the routing text (see [`conversation`](crate::conversation)) feeds both
//! heads and the custom domains; PII and language are read from the messages themselves.

use std::sync::Arc;

use crate::batcher::{BatchError, EmbeddingService};
use crate::conversation::{Turn, last_user, routing_text};
use crate::domain::{self, CustomDomain, DomainScores};
use crate::embedder::{EmbedderError, cosine};
use crate::heads::Heads;
use crate::language::{self, Language};
use crate::pii::{self, Finding};
use crate::recent::{RecentEmbeddings, Remembered};

/// What the router makes of a conversation.
#[derive(Debug, Clone)]
pub struct Scores {
    /// The probability that the local model's answer would not be good enough.
    pub complexity: f32,
    /// Probability per domain, most likely first; never empty.
    pub domains: DomainScores,
    /// The language of the last user turn.
    pub language: Option<Language>,
    /// Private data, per turn (the index into the conversation).
    pub pii: Vec<(usize, Finding)>,
    /// The tokens of the routing text that the embedder read.
    pub tokens: usize,
    /// The routing text's embedding, to explain the scores.
    pub embedding: Vec<f32>,
}

impl Scores {
    pub fn top_domain(&self) -> &str {
        self.domains.first().map_or("", |(name, _)| name.as_str())
    }
}

/// Private data in every turn, tool results included: `(turn index, finding)`.
pub fn private_data(turns: &[Turn]) -> Vec<(usize, Finding)> {
    turns
        .iter()
        .enumerate()
        .flat_map(|(i, t)| pii::scan(&t.text).into_iter().map(move |f| (i, f)))
        .collect()
}

/// The language of the last user turn.
pub fn language_of(turns: &[Turn]) -> Option<Language> {
    last_user(turns).and_then(language::detect)
}

/// An example that a request resembles, to explain its scores.
#[derive(Debug, Clone)]
pub struct Neighbour {
    pub text: String,
    pub domain: String,
    /// For the shipped exemplars: whether the example is hard; custom examples have no label.
    pub hard: Option<bool>,
    pub similarity: f32,
}

pub struct Classifier {
    embedder: Arc<EmbeddingService>,
    heads: Heads,
    custom: Vec<CustomDomain>,
    recent: RecentEmbeddings,
}

/// Routing texts whose embeddings are remembered: about 9 MB at most.
const RECENT_TEXTS: usize = 4096;

impl Classifier {
    /// A classifier with the given heads and custom domains, each given by a few example
    /// utterances (a default domain's name replaces that domain). Embeds the examples, blocking.
    pub fn new(
        embedder: Arc<EmbeddingService>,
        heads: Heads,
        custom_domains: Vec<(String, Vec<String>)>,
    ) -> Result<Self, EmbedderError> {
        let mut custom = Vec::new();
        for (name, examples) in custom_domains {
            let examples: Vec<String> = examples
                .into_iter()
                .filter(|e| !e.trim().is_empty())
                .collect();
            let texts: Vec<&str> = examples.iter().map(String::as_str).collect();
            let vectors = embedder.model().embed(&texts)?.vectors;
            custom.push(CustomDomain {
                name,
                examples,
                vectors,
            });
        }
        Ok(Self {
            embedder,
            heads,
            custom,
            recent: RecentEmbeddings::new(RECENT_TEXTS),
        })
    }

    pub fn heads(&self) -> &Heads {
        &self.heads
    }

    /// Lookups of routing texts among the recent ones: found, and not found.
    pub fn recent_hits_and_misses(&self) -> (u64, u64) {
        self.recent.hits_and_misses()
    }

    pub async fn classify(&self, turns: &[Turn]) -> Result<Scores, BatchError> {
        let text = routing_text(turns);
        let known = match self.recent.get(&text) {
            Some(remembered) => Ok(remembered),
            None => Err(self.embedder.submit(vec![text.clone()])?),
        };
        // The messages are read while the embedder works: language detection alone costs about
        // as much as a fifth of a short text's embedding.
        let language = language_of(turns);
        let pii = private_data(turns);
        let Remembered {
            vector: embedding,
            tokens,
        } = match known {
            Ok(remembered) => remembered,
            Err(pending) => {
                let embedded = pending.wait().await?;
                let remembered = Remembered {
                    vector: embedded.vectors.into_iter().next().unwrap_or_default(),
                    tokens: embedded.tokens.first().copied().unwrap_or(0),
                };
                self.recent.insert(text, remembered.clone());
                remembered
            }
        };
        let (complexity, domains) = self.score(&embedding, turns);
        Ok(Scores {
            complexity,
            domains,
            language,
            pii,
            tokens,
            embedding,
        })
    }

    /// Complexity and domains from an embedding of the conversation's routing text.
    pub fn score(&self, embedding: &[f32], turns: &[Turn]) -> (f32, DomainScores) {
        let prediction = self.heads.predict(embedding, turns);
        let trained: Vec<(String, f32)> = self
            .heads
            .domain
            .classes
            .iter()
            .cloned()
            .zip(prediction.domains)
            .collect();
        let custom: Vec<(String, f32)> = self
            .custom
            .iter()
            .map(|d| (d.name.clone(), d.similarity(embedding).0))
            .collect();
        (prediction.complexity, domain::combine(&trained, &custom))
    }

    /// The shipped exemplars and custom examples most like the request, most similar first.
    pub fn nearest(&self, embedding: &[f32], count: usize) -> Vec<Neighbour> {
        let exemplars = self.heads.exemplars.iter().map(|e| Neighbour {
            text: e.text.clone(),
            domain: e.domain.clone(),
            hard: Some(e.hard),
            similarity: cosine(embedding, e.vector.unit()),
        });
        let custom = self.custom.iter().flat_map(|d| {
            d.examples
                .iter()
                .zip(&d.vectors)
                .map(|(text, v)| Neighbour {
                    text: text.clone(),
                    domain: d.name.clone(),
                    hard: None,
                    similarity: cosine(embedding, v),
                })
        });
        let mut all: Vec<Neighbour> = exemplars.chain(custom).collect();
        all.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        all.truncate(count);
        all
    }
}
