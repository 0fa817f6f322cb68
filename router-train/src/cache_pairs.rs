//! How well the semantic cache tells a paraphrase from a near miss: `router/data/cache_pairs.jsonl`
//! holds pairs of questions written like employees' chat, each either a paraphrase (the cached
//! answer to one is right for the other: it should hit) or a near miss of one kind (a negation,
//! another number, name, action, order or scope: serving it would be wrong). Each pair is
//! scored as the cache scores it: the cosine of the two questions' embeddings, and whether their
//! words agree ([`Gist`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use switchboard_router::embedder::{Embed, EmbedderError, cosine};
use switchboard_router::same_question::{Disagreement, Gist};

#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    pub a: String,
    pub b: String,
    /// `hit` or `miss`.
    pub expect: String,
    /// `paraphrase`, or the near miss's kind.
    pub kind: String,
    /// `dev` (tune on it) or `test`.
    pub split: String,
}

impl Pair {
    pub fn should_hit(&self) -> bool {
        self.expect == "hit"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PairsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {source}")]
    Parse {
        path: String,
        line: usize,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Embed(#[from] EmbedderError),
}

pub fn load(path: &Path) -> Result<Vec<Pair>, PairsError> {
    let text = std::fs::read_to_string(path).map_err(|source| PairsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    lines
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|source| PairsError::Parse {
                path: path.display().to_string(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// A pair as the cache sees it.
#[derive(Debug, Clone)]
pub struct Scored {
    pub pair: Pair,
    pub similarity: f32,
    pub words: Result<(), Disagreement>,
}

impl Scored {
    /// Whether the cache would serve one's answer to the other at `threshold`.
    pub fn hits(&self, threshold: f32, guarded: bool) -> bool {
        self.similarity >= threshold && (!guarded || self.words.is_ok())
    }
}

/// Embeds every question (in batches) and scores each pair.
pub fn score(pairs: &[Pair], embedder: &dyn Embed) -> Result<Vec<Scored>, PairsError> {
    const BATCH: usize = 64;
    let texts: Vec<&str> = pairs
        .iter()
        .flat_map(|p| [p.a.as_str(), p.b.as_str()])
        .collect();
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(BATCH) {
        vectors.extend(embedder.embed(chunk)?.vectors);
    }
    Ok(pairs
        .iter()
        .zip(vectors.chunks(2))
        .map(|(pair, v)| Scored {
            similarity: cosine(&v[0], &v[1]),
            words: Gist::of(&pair.a).agrees_with(&Gist::of(&pair.b)),
            pair: pair.clone(),
        })
        .collect())
}

/// At one threshold: the share of paraphrases served, and of each kind of near miss served
/// (false hits).
#[derive(Debug, Clone)]
pub struct Rates {
    pub threshold: f32,
    pub paraphrases_hit: f64,
    /// Near misses served, of all near misses.
    pub false_hits: f64,
    pub false_hits_by_kind: BTreeMap<String, f64>,
}

pub fn rates(scored: &[&Scored], threshold: f32, guarded: bool) -> Rates {
    let share = |pairs: &[&&Scored]| {
        let hit = pairs.iter().filter(|s| s.hits(threshold, guarded)).count();
        hit as f64 / pairs.len().max(1) as f64
    };
    let (hits, misses): (Vec<&&Scored>, Vec<&&Scored>) =
        scored.iter().partition(|s| s.pair.should_hit());
    let mut kinds: BTreeMap<String, Vec<&&Scored>> = BTreeMap::new();
    for miss in &misses {
        kinds.entry(miss.pair.kind.clone()).or_default().push(miss);
    }
    Rates {
        threshold,
        paraphrases_hit: share(&hits),
        false_hits: share(&misses),
        false_hits_by_kind: kinds.into_iter().map(|(k, v)| (k, share(&v))).collect(),
    }
}

/// The curve's table: one row per threshold, with and without the guard.
pub fn report(scored: &[Scored], split: Option<&str>, thresholds: &[f32]) -> String {
    let chosen: Vec<&Scored> = scored
        .iter()
        .filter(|s| split.is_none_or(|split| s.pair.split == split))
        .collect();
    let kinds: Vec<String> = rates(&chosen, 0.0, false)
        .false_hits_by_kind
        .into_keys()
        .collect();
    let mut out = format!(
        "{} pairs ({}): paraphrases hit, near misses served overall and by kind\n",
        chosen.len(),
        split.unwrap_or("all splits"),
    );
    out.push_str(&format!(
        "{:<9} {:<7} {:>6} {:>7}",
        "cosine", "guard", "hit", "false"
    ));
    for kind in &kinds {
        out.push_str(&format!(" {:>9}", kind));
    }
    out.push('\n');
    for &threshold in thresholds {
        for guarded in [false, true] {
            let r = rates(&chosen, threshold, guarded);
            out.push_str(&format!(
                ">= {:<6.2} {:<7} {:>5.1}% {:>6.1}%",
                threshold,
                if guarded { "words" } else { "none" },
                100.0 * r.paraphrases_hit,
                100.0 * r.false_hits
            ));
            for kind in &kinds {
                out.push_str(&format!(" {:>8.1}%", 100.0 * r.false_hits_by_kind[kind]));
            }
            out.push('\n');
        }
    }
    out
}
