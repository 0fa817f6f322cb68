//! How good a router is: ranking quality (AUROC), RouteLLM's cost–quality measures (APGR and the
//! calls to the strong model needed for a share of its quality gain), the threshold that meets a
//! target share of escalations, and confusion matrices for domains.

use std::collections::HashMap;
use std::fmt;

use crate::dataset::{Example, Outcome};
use switchboard_router::domain::DEFAULT_DOMAINS;
use switchboard_router::embedder::cosine;
use switchboard_router::heads::{Heads, Prediction};

/// The area under the ROC curve: the probability that a random positive scores above a random
/// negative (ties count half). `None` when one class is missing.
pub fn auroc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let mut ranked: Vec<(f32, bool)> = scores
        .iter()
        .copied()
        .zip(positive.iter().copied())
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = ranked.iter().filter(|r| r.1).count() as f64;
    let negatives = ranked.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of the positives' ranks, ties sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < ranked.len() {
        let end = start
            + ranked[start..]
                .iter()
                .take_while(|r| r.0 == ranked[start].0)
                .count();
        let mean_rank = (start + end + 1) as f64 / 2.0;
        rank_sum += mean_rank * ranked[start..end].iter().filter(|r| r.1).count() as f64;
        start = end;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Quality as a function of the share of questions sent to the strong model, when the questions
/// with the highest scores go first.
#[derive(Debug, Clone)]
pub struct CostQuality {
    /// `(share sent to the strong model, performance gap recovered)`, from share 0 to 1.
    pub curve: Vec<(f64, f64)>,
    pub weak_accuracy: f64,
    pub strong_accuracy: f64,
}

impl CostQuality {
    /// `None` when the strong model is not better than the weak one on these questions.
    pub fn of(scores: &[f32], outcomes: &[Outcome]) -> Option<Self> {
        let n = outcomes.len();
        let right = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as f64;
        let weak = right(|o| o.weak_right);
        let strong = right(|o| o.strong_right);
        if n == 0 || strong <= weak {
            return None;
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut correct = weak;
        let mut curve = vec![(0.0, 0.0)];
        for (k, &i) in order.iter().enumerate() {
            let o = outcomes[i];
            correct += f64::from(u8::from(o.strong_right)) - f64::from(u8::from(o.weak_right));
            curve.push((
                (k + 1) as f64 / n as f64,
                (correct - weak) / (strong - weak),
            ));
        }
        Some(Self {
            curve,
            weak_accuracy: weak / n as f64,
            strong_accuracy: strong / n as f64,
        })
    }

    /// The average performance gap recovered over all shares (random routing: 0.5).
    pub fn apgr(&self) -> f64 {
        self.curve
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
            .sum()
    }

    /// The smallest share of calls to the strong model that recovers `gap` of its quality gain.
    pub fn calls_for(&self, gap: f64) -> f64 {
        self.curve
            .iter()
            .find(|(_, recovered)| *recovered >= gap)
            .map_or(1.0, |(share, _)| *share)
    }
}

/// The complexity threshold at or above which `share` of these scores lie.
pub fn threshold_for_share(scores: &[f32], share: f64) -> f32 {
    let mut sorted: Vec<f32> = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let above = ((share.clamp(0.0, 1.0) * sorted.len() as f64).round() as usize).min(sorted.len());
    match above {
        0 => sorted
            .first()
            .map_or(1.0, |top| top + f32::EPSILON.max(top.abs() * f32::EPSILON)),
        k => sorted[k - 1],
    }
}

/// Counts of (true class, predicted class).
#[derive(Debug, Clone)]
pub struct Confusion {
    pub classes: Vec<String>,
    pub counts: Vec<Vec<usize>>,
}

impl Confusion {
    pub fn new(classes: Vec<String>) -> Self {
        let n = classes.len();
        Self {
            classes,
            counts: vec![vec![0; n]; n],
        }
    }

    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    pub fn accuracy(&self) -> f64 {
        let total: usize = self.counts.iter().flatten().sum();
        let right: usize = (0..self.classes.len()).map(|i| self.counts[i][i]).sum();
        right as f64 / total.max(1) as f64
    }

    /// A table with the true classes as rows.
    pub fn render(&self) -> String {
        let short = |c: &str| c.chars().take(7).collect::<String>();
        let mut out = format!("{:>18}", "true \\ predicted");
        for c in &self.classes {
            out.push_str(&format!(" {:>7}", short(c)));
        }
        out.push('\n');
        for (c, row) in self.classes.iter().zip(&self.counts) {
            out.push_str(&format!("{c:>18}"));
            for n in row {
                out.push_str(&format!(" {n:>7}"));
            }
            out.push('\n');
        }
        out
    }
}

/// Shares of escalation for which `router eval` prints the threshold.
pub const SHARES: [f64; 5] = [0.1, 0.2, 0.3, 0.4, 0.5];

/// A router's scores on one set of examples, and the baselines' on the same set.
#[derive(Debug, Clone)]
pub struct Report {
    pub examples: usize,
    pub complexity: Ranking,
    /// CLINC150 and IT tickets against GSM8K, HumanEval, Vicuna and the MMLU questions the weak
    /// model got wrong.
    pub everyday_vs_hard: Ranking,
    /// On the MMLU questions with both models' outcomes.
    pub mmlu: Option<Ranking>,
    pub domain: Confusion,
    pub centroid_domain_accuracy: Option<f64>,
    /// `(share escalated, the complexity threshold that escalates it)`.
    pub thresholds: Vec<(f64, f32)>,
}

/// How well complexity orders a set of examples: by AUROC and, where the examples carry both
/// models' outcomes, by the cost–quality curve; for the heads and for the baselines.
#[derive(Debug, Clone, Default)]
pub struct Ranking {
    pub examples: usize,
    pub auroc: Option<f64>,
    pub curve: Option<CostQuality>,
    pub baselines: Vec<Baseline>,
}

/// A simpler router scored on the same examples.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub name: &'static str,
    pub auroc: Option<f64>,
    /// With both models' outcomes: its cost–quality curve.
    pub curve: Option<CostQuality>,
}

impl Ranking {
    fn of(
        scores: &[f32],
        hard: &[bool],
        outcomes: Option<&[Outcome]>,
        baselines: Vec<(&'static str, Vec<f32>)>,
    ) -> Self {
        let curve = |s: &[f32]| outcomes.and_then(|o| CostQuality::of(s, o));
        Self {
            examples: scores.len(),
            auroc: auroc(scores, hard),
            curve: curve(scores),
            baselines: baselines
                .into_iter()
                .map(|(name, s)| Baseline {
                    name,
                    auroc: auroc(&s, hard),
                    curve: curve(&s),
                })
                .collect(),
        }
    }
}

/// Whether an example is everyday traffic (`Some(false)`), clearly hard (`Some(true)`), or
/// neither (MMLU questions the weak model got right).
pub fn everyday_or_hard(example: &Example) -> Option<bool> {
    let family = example.source.split('/').next().unwrap_or_default();
    match family {
        "clinc150" | "it_tickets" => Some(false),
        "gsm8k" | "humaneval" | "vicuna" => Some(true),
        "mmlu" if example.hard => Some(true),
        _ => None,
    }
}

/// Scores the heads on the `evaluated` examples. Baselines (nearest centroid, as
/// semantic-router does; a per-subject lookup table on MMLU) are fitted on `reference`, the
/// training split, when given.
pub fn evaluate(
    heads: &Heads,
    examples: &[Example],
    embeddings: &[Vec<f32>],
    evaluated: &[usize],
    reference: &[usize],
) -> Report {
    let predictions: Vec<Prediction> = evaluated
        .iter()
        .map(|&i| heads.predict(&embeddings[i], &examples[i].turns))
        .collect();
    let complexity: Vec<f32> = predictions.iter().map(|p| p.complexity).collect();
    let centroids = Centroids::fit(examples, embeddings, reference);
    let centroid_complexity: Vec<f32> = evaluated
        .iter()
        .map(|&i| {
            centroids
                .as_ref()
                .map_or(0.5, |c| c.complexity(&embeddings[i]))
        })
        .collect();
    let baselines = |positions: &[usize], lookup: bool| {
        let mut list = Vec::new();
        if centroids.is_some() {
            list.push((
                "nearest centroid",
                positions.iter().map(|&p| centroid_complexity[p]).collect(),
            ));
        }
        if lookup && !reference.is_empty() {
            let table = SubjectLookup::fit(examples, reference);
            list.push((
                "per-subject lookup",
                positions
                    .iter()
                    .map(|&p| table.score(&examples[evaluated[p]]))
                    .collect(),
            ));
            list.push((
                "topic prior alone (a component of the head)",
                positions
                    .iter()
                    .map(|&p| {
                        switchboard_router::heads::topic_match(
                            &heads.topics,
                            &embeddings[evaluated[p]],
                        )
                        .prior
                    })
                    .collect(),
            ));
        }
        list
    };

    let all: Vec<usize> = (0..evaluated.len()).collect();
    let hard: Vec<bool> = evaluated.iter().map(|&i| examples[i].hard).collect();
    let complexity_ranking = Ranking::of(&complexity, &hard, None, baselines(&all, false));

    let contrast: Vec<(usize, bool)> = all
        .iter()
        .filter_map(|&p| Some((p, everyday_or_hard(&examples[evaluated[p]])?)))
        .collect();
    let positions: Vec<usize> = contrast.iter().map(|c| c.0).collect();
    let everyday_vs_hard = Ranking::of(
        &positions.iter().map(|&p| complexity[p]).collect::<Vec<_>>(),
        &contrast.iter().map(|c| c.1).collect::<Vec<_>>(),
        None,
        baselines(&positions, false),
    );

    let mmlu: Vec<(usize, Outcome)> = all
        .iter()
        .filter_map(|&p| Some((p, examples[evaluated[p]].outcome?)))
        .collect();
    let mmlu = (!mmlu.is_empty()).then(|| {
        let positions: Vec<usize> = mmlu.iter().map(|m| m.0).collect();
        let outcomes: Vec<Outcome> = mmlu.iter().map(|m| m.1).collect();
        Ranking::of(
            &positions.iter().map(|&p| complexity[p]).collect::<Vec<_>>(),
            &outcomes.iter().map(|o| !o.weak_right).collect::<Vec<_>>(),
            Some(&outcomes),
            baselines(&positions, true),
        )
    });

    let mut domain = Confusion::new(heads.domain.classes.clone());
    let mut centroid_right = 0usize;
    let mut centroid_total = 0usize;
    for (p, &i) in evaluated.iter().enumerate() {
        let Some(truth) = examples[i]
            .domain
            .and_then(|d| heads.domain.classes.iter().position(|c| c == d))
        else {
            continue;
        };
        domain.add(truth, argmax(&predictions[p].domains));
        if let Some(c) = &centroids {
            centroid_total += 1;
            centroid_right += usize::from(c.domain(&embeddings[i]) == examples[i].domain);
        }
    }

    Report {
        examples: evaluated.len(),
        complexity: complexity_ranking,
        everyday_vs_hard,
        mmlu,
        domain,
        centroid_domain_accuracy: (centroid_total > 0)
            .then(|| centroid_right as f64 / centroid_total as f64),
        thresholds: SHARES
            .iter()
            .map(|&s| (s, threshold_for_share(&complexity, s)))
            .collect(),
    }
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// The mean embedding of each domain and of hard and easy examples.
struct Centroids {
    domains: Vec<(&'static str, Vec<f32>)>,
    hard: Vec<f32>,
    easy: Vec<f32>,
}

impl Centroids {
    fn fit(examples: &[Example], embeddings: &[Vec<f32>], reference: &[usize]) -> Option<Self> {
        let mean = |filter: &dyn Fn(&Example) -> bool| -> Option<Vec<f32>> {
            let members: Vec<&Vec<f32>> = reference
                .iter()
                .filter(|&&i| filter(&examples[i]))
                .map(|&i| &embeddings[i])
                .collect();
            let first = members.first()?;
            let mut sum = vec![0f32; first.len()];
            for v in &members {
                for (s, x) in sum.iter_mut().zip(v.iter()) {
                    *s += x;
                }
            }
            let norm = sum
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            Some(sum.iter().map(|x| x / norm).collect())
        };
        Some(Self {
            domains: DEFAULT_DOMAINS
                .iter()
                .filter_map(|&d| Some((d, mean(&|e| e.domain == Some(d))?)))
                .collect(),
            hard: mean(&|e| e.hard)?,
            easy: mean(&|e| !e.hard)?,
        })
    }

    fn complexity(&self, embedding: &[f32]) -> f32 {
        cosine(embedding, &self.hard) - cosine(embedding, &self.easy)
    }

    fn domain(&self, embedding: &[f32]) -> Option<&'static str> {
        self.domains
            .iter()
            .max_by(|a, b| cosine(embedding, &a.1).total_cmp(&cosine(embedding, &b.1)))
            .map(|d| d.0)
    }
}

/// The share of MMLU questions of each subject that the weak model got wrong.
struct SubjectLookup {
    rates: HashMap<String, f32>,
}

impl SubjectLookup {
    fn fit(examples: &[Example], reference: &[usize]) -> Self {
        let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
        for &i in reference {
            if examples[i].outcome.is_some() {
                let entry = counts.entry(examples[i].source.clone()).or_default();
                entry.0 += usize::from(examples[i].hard);
                entry.1 += 1;
            }
        }
        Self {
            rates: counts
                .into_iter()
                .map(|(s, (h, n))| (s, h as f32 / n as f32))
                .collect(),
        }
    }

    fn score(&self, example: &Example) -> f32 {
        self.rates.get(&example.source).copied().unwrap_or(0.5)
    }
}

fn optional(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.3}"))
}

impl fmt::Display for Ranking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} examples, AUROC {}",
            self.examples,
            optional(self.auroc)
        )?;
        if let Some(curve) = &self.curve {
            write!(
                f,
                ", APGR {:.3}, CPT(50%) {:.1}%, CPT(80%) {:.1}% (weak {:.3}, strong {:.3})",
                curve.apgr(),
                curve.calls_for(0.5) * 100.0,
                curve.calls_for(0.8) * 100.0,
                curve.weak_accuracy,
                curve.strong_accuracy,
            )?;
        }
        for baseline in &self.baselines {
            write!(
                f,
                "\n    baseline {}: AUROC {}",
                baseline.name,
                optional(baseline.auroc)
            )?;
            if let Some(curve) = &baseline.curve {
                write!(f, ", APGR {:.3}", curve.apgr())?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "examples evaluated: {}", self.examples)?;
        writeln!(f, "complexity (all labels): {}", self.complexity)?;
        if self.everyday_vs_hard.examples > 0 {
            writeln!(
                f,
                "complexity (everyday vs hard): {}",
                self.everyday_vs_hard
            )?;
        }
        if let Some(mmlu) = &self.mmlu {
            writeln!(f, "complexity on MMLU (hard = weak model wrong): {mmlu}")?;
        }
        writeln!(f, "domain accuracy: {:.3}", self.domain.accuracy())?;
        if let Some(accuracy) = self.centroid_domain_accuracy {
            writeln!(f, "    baseline nearest centroid: {accuracy:.3}")?;
        }
        write!(f, "{}", self.domain.render())?;
        writeln!(f, "complexity threshold for a share of escalations:")?;
        for (share, threshold) in &self.thresholds {
            writeln!(
                f,
                "    {:>3.0}% escalated: threshold {threshold:.3}",
                share * 100.0
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_of_perfect_reversed_and_tied_rankings() {
        let positive = [false, false, true, true];
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &positive), Some(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &positive), Some(0.0));
        assert_eq!(auroc(&[0.5; 4], &positive), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.4, 0.35, 0.8], &positive), Some(0.75));
        assert_eq!(auroc(&[0.1], &[true]), None);
    }

    fn outcome(weak_right: bool, strong_right: bool) -> Outcome {
        Outcome {
            weak_right,
            strong_right,
        }
    }

    #[test]
    fn a_perfect_router_recovers_the_gap_at_the_share_of_questions_only_the_strong_gets() {
        // Two of four questions need the strong model; one both get; one neither gets.
        let outcomes = [
            outcome(false, true),
            outcome(false, true),
            outcome(true, true),
            outcome(false, false),
        ];
        let perfect = CostQuality::of(&[0.9, 0.8, 0.1, 0.2], &outcomes).unwrap();
        assert_eq!(perfect.calls_for(1.0), 0.5);
        assert_eq!(perfect.calls_for(0.5), 0.25);
        // PGR: 0, .5, 1, 1, 1 at shares 0, .25, .5, .75, 1.
        assert!((perfect.apgr() - (0.0625 + 0.1875 + 0.25 + 0.25)).abs() < 1e-12);

        let backwards = CostQuality::of(&[0.1, 0.2, 0.9, 0.8], &outcomes).unwrap();
        assert!(backwards.apgr() < 0.5);
        assert_eq!(backwards.weak_accuracy, 0.25);
        assert_eq!(backwards.strong_accuracy, 0.75);
    }

    #[test]
    fn no_curve_when_the_strong_model_is_no_better() {
        assert!(CostQuality::of(&[0.5], &[outcome(true, true)]).is_none());
    }

    #[test]
    fn thresholds_meet_the_share() {
        let scores: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let t = threshold_for_share(&scores, 0.2);
        assert_eq!(scores.iter().filter(|&&s| s >= t).count(), 20);
        let none = threshold_for_share(&scores, 0.0);
        assert_eq!(scores.iter().filter(|&&s| s >= none).count(), 0);
        assert_eq!(threshold_for_share(&scores, 1.0), 0.0);
    }

    #[test]
    fn confusion_accuracy() {
        let mut confusion = Confusion::new(vec!["a".into(), "b".into()]);
        confusion.add(0, 0);
        confusion.add(0, 1);
        confusion.add(1, 1);
        confusion.add(1, 1);
        assert_eq!(confusion.accuracy(), 0.75);
        assert!(confusion.render().contains("true \\ predicted"));
    }
}
