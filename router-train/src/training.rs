//! From labelled examples to shipped heads: embed every example's routing text (with an on-disk
//! cache, since embedding is the slow part), fit the heads on the training split, and keep a
//! few typical examples per domain to explain scores later.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use crate::dataset::Example;
use crate::dataset::{Outcome, Split};
use crate::evaluation::{CostQuality, auroc, everyday_or_hard};
use crate::fit::{self, Settings, balanced_weights};
use crate::topics::fit_topics;
use switchboard_router::conversation::routing_text;
use switchboard_router::domain::DEFAULT_DOMAINS;
use switchboard_router::embedder::{Embed, EmbedderError};
use switchboard_router::heads::{
    Blend, ChatTerms, Exemplar, FORMAT, Heads, Logistic, QuantizedVector, Softmax, Standardizer,
    TopicMatch, raw_input, topic_match,
};
use switchboard_router::lexical::{self, Lexical};
use switchboard_router::neighbours::Neighbours;

/// Texts per forward pass while embedding a data set.
const BATCH: usize = 16;
/// Exemplars kept per domain.
const EXEMPLARS_PER_DOMAIN: usize = 8;
/// Exemplar texts are cut to this many characters.
const EXEMPLAR_CHARS: usize = 160;

#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error(transparent)]
    Embedder(#[from] EmbedderError),
    #[error("embedding cache {path}: {reason}")]
    Cache { path: String, reason: String },
    #[error("no training examples")]
    Empty,
}

/// Embeddings of routing texts, keyed by a hash of the text, kept in a flat file of
/// `(u64 key, dimensions × f32)` little-endian records.
pub struct EmbeddingCache {
    dimensions: usize,
    vectors: HashMap<u64, Vec<f32>>,
}

impl EmbeddingCache {
    pub fn open(path: &Path, dimensions: usize) -> Result<Self, TrainingError> {
        let mut vectors = HashMap::new();
        let record = 8 + 4 * dimensions;
        if let Ok(mut file) = std::fs::File::open(path) {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| cache_error(path, e))?;
            for chunk in bytes.chunks_exact(record) {
                let key = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
                let vector = chunk[8..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect();
                vectors.insert(key, vector);
            }
        }
        Ok(Self {
            dimensions,
            vectors,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), TrainingError> {
        let mut bytes = Vec::with_capacity(self.vectors.len() * (8 + 4 * self.dimensions));
        for (key, vector) in &self.vectors {
            bytes.extend_from_slice(&key.to_le_bytes());
            for v in vector {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| cache_error(path, e))?;
        }
        let mut file = std::fs::File::create(path).map_err(|e| cache_error(path, e))?;
        file.write_all(&bytes).map_err(|e| cache_error(path, e))
    }
}

fn cache_error(path: &Path, e: std::io::Error) -> TrainingError {
    TrainingError::Cache {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The embedding of every example's routing text, in order; texts missing from the cache are
/// embedded (shortest first, so that batches pad little) and added to it. `progress` hears how
/// many texts are done.
pub fn embed_examples(
    embedder: &dyn Embed,
    examples: &[Example],
    cache: &mut EmbeddingCache,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<Vec<f32>>, TrainingError> {
    let texts: Vec<String> = examples.iter().map(|e| routing_text(&e.turns)).collect();
    let keys: Vec<u64> = texts
        .iter()
        .map(|t| crate::dataset::stable_hash(t))
        .collect();
    let mut missing: Vec<usize> = (0..texts.len())
        .filter(|&i| !cache.vectors.contains_key(&keys[i]))
        .collect();
    missing.sort_by_key(|&i| texts[i].len());
    missing.dedup_by_key(|i| keys[*i]);
    for (done, chunk) in missing.chunks(BATCH).enumerate() {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
        let embedded = embedder.embed(&batch)?;
        for (&i, vector) in chunk.iter().zip(embedded.vectors) {
            cache.vectors.insert(keys[i], vector);
        }
        progress(
            (done * BATCH + chunk.len()).min(missing.len()),
            missing.len(),
        );
    }
    Ok(keys.iter().map(|k| cache.vectors[k].clone()).collect())
}

/// Fits both heads on the examples outside the validation split.
pub fn train(
    examples: &[Example],
    embeddings: &[Vec<f32>],
    embedder: &str,
    settings: Settings,
) -> Result<Heads, TrainingError> {
    let training: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].split == Split::Training)
        .collect();
    if training.is_empty() {
        return Err(TrainingError::Empty);
    }
    let topics = fit_topics(examples, embeddings, &training);
    let raw: Vec<Vec<f32>> = examples
        .iter()
        .zip(embeddings)
        .map(|(e, v)| raw_input(&topics, v, &e.turns))
        .collect();
    let standardizer =
        Standardizer::fit(&training.iter().map(|&i| raw[i].clone()).collect::<Vec<_>>());
    let inputs: Vec<Vec<f32>> = raw
        .into_iter()
        .map(|mut x| {
            standardizer.apply(&mut x);
            x
        })
        .collect();

    // The complexity head and its blend learn from the public sets (and the hand-written
    // requests); what chat messages add is fitted after them (`fit_chat_terms`).
    let public: Vec<usize> = training
        .iter()
        .copied()
        .filter(|&i| !examples[i].source.starts_with("enterprise/"))
        .collect();
    let complexity = fit_complexity(examples, &inputs, &public, settings);
    let blend = choose_blend(examples, &inputs, embeddings, &public, settings);

    let with_domain: Vec<(usize, usize)> = training
        .iter()
        .filter_map(|&i| {
            let domain = examples[i].domain?;
            Some((i, DEFAULT_DOMAINS.iter().position(|d| *d == domain)?))
        })
        .collect();
    let rows: Vec<Vec<f32>> = with_domain
        .iter()
        .map(|&(i, _)| inputs[i].clone())
        .collect();
    let labels: Vec<usize> = with_domain.iter().map(|&(_, l)| l).collect();
    let weights: Vec<f32> = balanced_weights(&labels, DEFAULT_DOMAINS.len())
        .iter()
        .zip(&with_domain)
        .map(|(w, &(i, _))| w * examples[i].weight)
        .collect();
    let domain: Softmax = fit::fit_softmax(&rows, &labels, &DEFAULT_DOMAINS, &weights, settings);

    let heads_so_far = FittedHeads {
        complexity: &complexity,
        blend,
        topics: &topics,
        domain: &domain,
    };
    let chat = fit_chat_terms(
        examples,
        &inputs,
        embeddings,
        &training,
        &heads_so_far,
        settings,
    );
    let neighbours = Neighbours::new(
        with_domain
            .iter()
            .filter(|&&(i, _)| is_chat(&examples[i]))
            .map(|&(i, label)| (embeddings[i].clone(), label)),
    );
    let exemplars = exemplars(examples, embeddings, &inputs, &with_domain, &domain);
    let mut sources: Vec<(String, usize)> = Vec::new();
    for &i in &training {
        let family = examples[i].source.split('/').next().unwrap_or_default();
        match sources.iter_mut().find(|(s, _)| s == family) {
            Some((_, n)) => *n += 1,
            None => sources.push((family.to_owned(), 1)),
        }
    }
    let provenance = serde_json::json!({
        "command": "switchboard router train",
        "training_examples": training.len(),
        "by_source": sources.into_iter().map(|(s, n)| (s, n.into())).collect::<serde_json::Map<_, _>>(),
        "settings": {
            "epochs": settings.epochs,
            "batch": settings.batch,
            "learning_rate": settings.learning_rate,
            "l2": settings.l2,
            "seed": settings.seed,
        },
    });
    Ok(Heads {
        format: FORMAT,
        embedder: embedder.to_owned(),
        dimensions: embeddings.first().map_or(0, Vec::len),
        standardizer,
        complexity,
        blend,
        domain,
        chat: Some(chat),
        neighbours: Some(neighbours),
        topics,
        exemplars,
        provenance,
    })
}

/// Whether an example is worded as users write: the enterprise set and the hand-written
/// requests.
fn is_chat(example: &Example) -> bool {
    example.source.starts_with("enterprise/") || example.source.starts_with("written/")
}

/// The heads fitted before the chat terms.
struct FittedHeads<'a> {
    complexity: &'a Logistic,
    blend: Blend,
    topics: &'a [switchboard_router::heads::TopicPrior],
    domain: &'a Softmax,
}

/// The chat terms, fitted on the training messages written as users write with the fitted
/// heads' (calibrated) logits held fixed.
fn fit_chat_terms(
    examples: &[Example],
    inputs: &[Vec<f32>],
    embeddings: &[Vec<f32>],
    training: &[usize],
    heads: &FittedHeads,
    settings: Settings,
) -> ChatTerms {
    // The public sets' everyday and hard examples too (not MMLU's exam questions, which the
    // gate hands to the topic prior), each at its weight, so that the correction keeps them apart.
    let rows: Vec<usize> = training
        .iter()
        .copied()
        .filter(|&i| examples[i].outcome.is_none())
        .collect();
    // The complexity correction's rows: the heads' input, then the words' buckets.
    let width = inputs.first().map_or(0, Vec::len);
    let terms: Vec<Vec<(usize, f32)>> = rows
        .iter()
        .map(|&i| lexical::terms(&routing_text(&examples[i].turns)))
        .collect();
    let both: Vec<Vec<f32>> = rows
        .iter()
        .zip(&terms)
        .map(|(&i, terms)| {
            let words = lexical::dense(terms, lexical::WORD_BUCKETS);
            inputs[i].iter().chain(&words).copied().collect()
        })
        .collect();
    let hard: Vec<f32> = rows
        .iter()
        .map(|&i| f32::from(u8::from(examples[i].hard)))
        .collect();
    let weights: Vec<f32> = rows.iter().map(|&i| examples[i].weight).collect();
    let calibrated: Vec<Vec<f32>> = rows
        .iter()
        .map(|&i| {
            let head = switchboard_router::heads::dot(&heads.complexity.weights, &inputs[i])
                + heads.complexity.bias;
            let topics = topic_match(heads.topics, &embeddings[i]);
            vec![heads.blend.calibrated_logit(head, topics)]
        })
        .collect();
    let mut correction =
        fit::fit_logistic_over(&both, &hard, &weights, Some(&calibrated), settings);
    let complexity_words = correction.weights.split_off(width);

    let labelled: Vec<(usize, usize)> = rows
        .iter()
        .enumerate()
        .filter(|&(_, &i)| is_chat(&examples[i]))
        .filter_map(|(r, &i)| {
            let domain = examples[i].domain?;
            Some((r, DEFAULT_DOMAINS.iter().position(|d| *d == domain)?))
        })
        .collect();
    let domain_rows: Vec<Vec<f32>> = labelled
        .iter()
        .map(|&(r, _)| lexical::dense(&terms[r], lexical::BUCKETS))
        .collect();
    let labels: Vec<usize> = labelled.iter().map(|&(_, l)| l).collect();
    let domain_logits: Vec<Vec<f32>> = labelled
        .iter()
        .map(|&(r, _)| heads.domain.logits(&inputs[rows[r]]))
        .collect();
    let domain_words = fit::fit_softmax_over(
        &domain_rows,
        &labels,
        &DEFAULT_DOMAINS,
        &balanced_weights(&labels, DEFAULT_DOMAINS.len()),
        Some(&domain_logits),
        settings,
    )
    .weights;
    ChatTerms {
        complexity: correction,
        words: Lexical {
            complexity: complexity_words,
            domain: domain_words,
        },
    }
}

/// A logistic head for `hard` over `inputs`, fitted on the examples `rows`.
fn fit_complexity(
    examples: &[Example],
    inputs: &[Vec<f32>],
    rows: &[usize],
    settings: Settings,
) -> Logistic {
    let x: Vec<Vec<f32>> = rows.iter().map(|&i| inputs[i].clone()).collect();
    let hard: Vec<f32> = rows
        .iter()
        .map(|&i| f32::from(u8::from(examples[i].hard)))
        .collect();
    let weights: Vec<f32> = rows.iter().map(|&i| examples[i].weight).collect();
    fit::fit_logistic(&x, &hard, &weights, settings)
}

/// Folds of the training split for choosing the blend.
const FOLDS: u64 = 5;
/// The blends tried: where the gate opens (the nearness to a topic), and the prior's offset and
/// weight.
const GATE_CENTERS: [f32; 5] = [0.3, 0.35, 0.4, 0.45, 0.5];
const PRIOR_OFFSETS: [f32; 5] = [-2.0, -1.0, 0.0, 1.0, 2.0];
const PRIOR_WEIGHTS: [f32; 5] = [2.5, 5.0, 10.0, 20.0, 40.0];
/// What a blend must keep of the separation between everyday traffic and hard tasks.
const MIN_EVERYDAY_AUROC: f64 = 0.97;
/// How much of the head's ranking of all hard examples against all easy ones a blend may give
/// up (AUROC), so that the prior does not bury word problems and proofs under exam questions.
const MAX_OVERALL_AUROC_LOSS: f64 = 0.02;

/// The blend with the best cost–quality curve on MMLU that keeps everyday traffic and hard
/// tasks apart (AUROC ≥ [`MIN_EVERYDAY_AUROC`]) and all hard examples above easy ones nearly as
/// well as the head (within [`MAX_OVERALL_AUROC_LOSS`]), judged on out-of-fold predictions: each fold's
/// head logits and topics come from the other folds, so that the choice sees them as they will
/// be on requests they never saw (a topic's gain includes its own questions' outcomes).
fn choose_blend(
    examples: &[Example],
    inputs: &[Vec<f32>],
    embeddings: &[Vec<f32>],
    training: &[usize],
    settings: Settings,
) -> Blend {
    let fold = |i: usize| crate::dataset::stable_hash(&examples[i].turns[0].text) / 7 % FOLDS;
    let mut head_logits = vec![0f32; examples.len()];
    let mut matches = vec![
        TopicMatch {
            prior: 0.0,
            nearness: 0.0
        };
        examples.len()
    ];
    for k in 0..FOLDS {
        let fit_on: Vec<usize> = training.iter().copied().filter(|&i| fold(i) != k).collect();
        let head = fit_complexity(examples, inputs, &fit_on, settings);
        let topics = fit_topics(examples, embeddings, &fit_on);
        for &i in training.iter().filter(|&&i| fold(i) == k) {
            head_logits[i] = switchboard_router::heads::dot(&head.weights, &inputs[i]) + head.bias;
            matches[i] = topic_match(&topics, &embeddings[i]);
        }
    }

    let mmlu: Vec<usize> = training
        .iter()
        .copied()
        .filter(|&i| examples[i].outcome.is_some())
        .collect();
    let outcomes: Vec<Outcome> = mmlu.iter().filter_map(|&i| examples[i].outcome).collect();
    let contrast: Vec<(usize, bool)> = training
        .iter()
        .filter_map(|&i| Some((i, everyday_or_hard(&examples[i])?)))
        .collect();
    let labels: Vec<bool> = contrast.iter().map(|c| c.1).collect();
    let hard: Vec<bool> = training.iter().map(|&i| examples[i].hard).collect();
    let overall = |score: &dyn Fn(usize) -> f32| {
        auroc(
            &training.iter().map(|&i| score(i)).collect::<Vec<_>>(),
            &hard,
        )
        .unwrap_or(0.5)
    };
    let head_overall = overall(&|i| head_logits[i]);

    let mut best = (Blend::HEAD, f64::NEG_INFINITY);
    for gate_center in GATE_CENTERS {
        for prior_offset in PRIOR_OFFSETS {
            for prior_weight in PRIOR_WEIGHTS {
                let blend = Blend {
                    gate_center,
                    prior_offset,
                    prior_weight,
                    ..Blend::HEAD
                };
                let score = |i: usize| blend.logit(head_logits[i], matches[i]);
                let separation = auroc(
                    &contrast.iter().map(|c| score(c.0)).collect::<Vec<_>>(),
                    &labels,
                );
                if separation.is_some_and(|a| a < MIN_EVERYDAY_AUROC)
                    || overall(&score) < head_overall - MAX_OVERALL_AUROC_LOSS
                {
                    continue;
                }
                let scores: Vec<f32> = mmlu.iter().map(|&i| score(i)).collect();
                let apgr = CostQuality::of(&scores, &outcomes).map_or(0.0, |c| c.apgr());
                if apgr > best.1 {
                    best = (blend, apgr);
                }
            }
        }
    }

    // Platt scaling of the chosen blend's out-of-fold logits.
    let blend = best.0;
    let logits: Vec<Vec<f32>> = (0..examples.len())
        .map(|i| vec![blend.logit(head_logits[i], matches[i])])
        .collect();
    let calibration = fit_complexity(examples, &logits, training, settings);
    Blend {
        scale: calibration.weights[0],
        offset: calibration.bias,
        ..blend
    }
}

/// The training examples the domain head is surest of, per domain, shortest texts preferred
/// among equals so that they read well.
fn exemplars(
    examples: &[Example],
    embeddings: &[Vec<f32>],
    inputs: &[Vec<f32>],
    with_domain: &[(usize, usize)],
    head: &Softmax,
) -> Vec<Exemplar> {
    let mut out = Vec::new();
    for (class, domain) in DEFAULT_DOMAINS.iter().enumerate() {
        let mut candidates: Vec<(f32, usize)> = with_domain
            .iter()
            .filter(|&&(_, label)| label == class)
            .map(|&(i, _)| {
                let p = head.probabilities(&inputs[i])[class];
                // Round so that length breaks near-ties.
                ((p * 100.0).round(), i)
            })
            .collect();
        candidates.sort_by(|a, b| {
            b.0.total_cmp(&a.0).then(
                examples[a.1].turns[0]
                    .text
                    .len()
                    .cmp(&examples[b.1].turns[0].text.len()),
            )
        });
        for &(_, i) in candidates.iter().take(EXEMPLARS_PER_DOMAIN) {
            let text: String = examples[i].turns[0]
                .text
                .chars()
                .take(EXEMPLAR_CHARS)
                .collect();
            out.push(Exemplar {
                text,
                domain: (*domain).to_owned(),
                hard: examples[i].hard,
                vector: QuantizedVector::new(&embeddings[i]),
            });
        }
    }
    out
}
