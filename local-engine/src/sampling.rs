//! Choosing the next token from the model's logits: repetition penalties, then greedy or
//! temperature / top-k / top-p sampling with a seeded generator, so that a seed reproduces an
//! answer. Also the log-probabilities that `logprobs` reports.

use std::collections::HashMap;

use switchboard_vector_math::{exp, largest};

/// The sampling part of a request, in OpenAI's terms (top_k is an extension).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 means no limit.
    pub top_k: usize,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// `None` draws a random seed.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }
}

/// One sequence's sampler: its parameters, its random generator and the counts of the tokens it
/// produced (for the penalties).
pub struct Sampler {
    params: SamplingParams,
    rng: fastrand::Rng,
    counts: HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Self {
            params,
            rng,
            counts: HashMap::new(),
        }
    }

    /// Picks the next token; `logits` is modified in place.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        self.apply_penalties(logits);
        let token = if self.params.temperature <= f32::EPSILON {
            argmax(logits)
        } else {
            self.draw(logits)
        };
        *self.counts.entry(token).or_default() += 1;
        token
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let (presence, frequency) = (self.params.presence_penalty, self.params.frequency_penalty);
        if presence == 0.0 && frequency == 0.0 {
            return;
        }
        for (&token, &count) in &self.counts {
            if let Some(logit) = logits.get_mut(token as usize) {
                *logit -= presence + frequency * count as f32;
            }
        }
    }

    /// A token drawn from the softmax of `logits / temperature`, cut to its `top_k` largest and
    /// then to the smallest head (largest first) whose probability reaches `top_p`. Only what
    /// the cuts need is sorted: sorting a whole vocabulary (49,152 tokens) at every token took
    /// longer than the model's step.
    fn draw(&mut self, logits: &[f32]) -> u32 {
        let (temperature, top_k, top_p) = (
            self.params.temperature,
            self.params.top_k,
            self.params.top_p,
        );
        let max = largest(logits);
        let weights: Vec<f32> = logits
            .iter()
            .map(|&l| exp(l / temperature - max / temperature))
            .collect();
        let weighted = |token: u32| (token, weights[token as usize]);
        if top_k == 0 && top_p >= 1.0 {
            return self.pick((0..logits.len() as u32).map(weighted));
        }
        let by_weight = |a: &u32, b: &u32| weights[*b as usize].total_cmp(&weights[*a as usize]);
        let mut candidates: Vec<u32> = (0..logits.len() as u32).collect();
        if top_k > 0 && top_k < candidates.len() {
            candidates.select_nth_unstable_by(top_k - 1, by_weight);
            candidates.truncate(top_k);
        }
        if top_p < 1.0 {
            let total: f32 = candidates.iter().map(|&c| weights[c as usize]).sum();
            let head = smallest_head(
                &mut candidates,
                by_weight,
                |c| weights[c as usize] / total,
                top_p,
            );
            candidates.truncate(head);
        }
        self.pick(candidates.iter().map(|&c| weighted(c)))
    }

    /// One of the `(token, weight)`s, drawn in proportion to the weights.
    fn pick(&mut self, weighted: impl Iterator<Item = (u32, f32)> + Clone) -> u32 {
        let total: f32 = weighted.clone().map(|(_, weight)| weight).sum();
        let mut point = self.rng.f32() * total;
        let mut last = 0;
        for (token, weight) in weighted {
            if point < weight {
                return token;
            }
            point -= weight;
            last = token;
        }
        last
    }
}

/// How many of `candidates`, most probable first, it takes for their probability to reach
/// `top_p`; those are sorted to the front. Heads of 64, 512, ... candidates are selected and
/// sorted in turn until one reaches it, so a typical answer sorts a few dozen.
fn smallest_head(
    candidates: &mut [u32],
    mut by_weight: impl FnMut(&u32, &u32) -> std::cmp::Ordering,
    probability: impl Fn(u32) -> f32,
    top_p: f32,
) -> usize {
    let (mut sorted, mut size, mut kept) = (0, 64, 0.0f32);
    loop {
        let end = size.min(candidates.len());
        if end < candidates.len() {
            candidates[sorted..].select_nth_unstable_by(end - sorted - 1, &mut by_weight);
        }
        candidates[sorted..end].sort_unstable_by(&mut by_weight);
        for (i, &candidate) in candidates.iter().enumerate().take(end).skip(sorted) {
            kept += probability(candidate);
            if kept >= top_p {
                return i + 1;
            }
        }
        if end == candidates.len() {
            return end;
        }
        (sorted, size) = (end, size * 8);
    }
}

/// The first position of the largest logit, in two passes that run in vector registers (the
/// largest value, then where it first is), where one pass comparing each logit with the best so
/// far is a chain of dependent comparisons: a batch's step waits for every sequence's.
pub fn argmax(logits: &[f32]) -> u32 {
    let max = largest(logits);
    logits.iter().position(|&l| l == max).unwrap_or(0) as u32
}

/// The log-probability of every token under the model's own distribution (temperature 1, no
/// penalties): what OpenAI's `logprobs` reports.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_total = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln() + max;
    logits.iter().map(|&l| l - log_total).collect()
}

/// The `n` most likely tokens with their log-probabilities, most likely first.
pub fn top_logprobs(logprobs: &[f32], n: usize) -> Vec<(u32, f32)> {
    if n == 0 {
        return Vec::new();
    }
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    for (i, &lp) in logprobs.iter().enumerate() {
        if top.len() < n || lp > top[top.len() - 1].1 {
            let at = top.partition_point(|&(_, other)| other >= lp);
            top.insert(at, (i as u32, lp));
            top.truncate(n);
        }
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 0.5, 2.9]
    }

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut sampler = Sampler::new(SamplingParams::greedy());
        assert_eq!(sampler.sample(&mut logits()), 1);
        // Anywhere in a vocabulary, the first of equals, past runs of sixteen.
        let mut vocabulary = vec![-1.0f32; 49_157];
        for at in [0, 15, 16, 40_000, 49_156] {
            vocabulary[at] = 3.0;
            vocabulary[49_156 - at / 2] = 3.0;
            assert_eq!(argmax(&vocabulary) as usize, at.min(49_156 - at / 2));
            vocabulary.fill(-1.0);
        }
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn a_seed_reproduces_the_draws() {
        let params = SamplingParams {
            temperature: 1.5,
            seed: Some(7),
            ..SamplingParams::default()
        };
        let draw = |params: &SamplingParams| {
            let mut sampler = Sampler::new(params.clone());
            (0..50)
                .map(|_| sampler.sample(&mut logits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        let distinct: std::collections::HashSet<_> = draw(&params).into_iter().collect();
        assert!(
            distinct.len() > 2,
            "a hot temperature explores: {distinct:?}"
        );
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let top_k = SamplingParams {
            top_k: 2,
            seed: Some(1),
            ..SamplingParams::default()
        };
        let mut sampler = Sampler::new(top_k);
        assert!((0..200).all(|_| matches!(sampler.sample(&mut logits()), 1 | 4)));
        let top_p = SamplingParams {
            top_p: 0.01,
            seed: Some(1),
            ..SamplingParams::default()
        };
        let mut sampler = Sampler::new(top_p);
        assert!((0..50).all(|_| sampler.sample(&mut logits()) == 1));
    }

    #[test]
    fn top_p_keeps_the_smallest_head_that_reaches_it() {
        // 2,000 tokens, each a little less likely than the one before: the head that reaches
        // 60 % is hundreds long (past the first heads that get sorted).
        let logits: Vec<f32> = (0..2_000).map(|i| -(i as f32) * 0.001).collect();
        let weights: Vec<f64> = logits.iter().map(|&l| f64::from(l).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut kept = 0.0;
        let head = weights
            .iter()
            .position(|w| {
                kept += w / total;
                kept >= 0.6
            })
            .unwrap()
            + 1;
        assert!(head > 512, "{head}");
        let mut sampler = Sampler::new(SamplingParams {
            top_p: 0.6,
            seed: Some(3),
            ..SamplingParams::default()
        });
        let draws: Vec<u32> = (0..4_000)
            .map(|_| sampler.sample(&mut logits.clone()))
            .collect();
        let last = *draws.iter().max().unwrap() as usize;
        // Never beyond the head (one token of rounding either way), and all of it reached.
        assert!(last <= head && last + 20 >= head, "{last} vs {head}");
        // Within the head, in proportion to the weights.
        let half: f64 =
            weights[..head / 2].iter().sum::<f64>() / weights[..head].iter().sum::<f64>();
        let drawn = draws.iter().filter(|&&d| (d as usize) < head / 2).count() as f64 / 4_000.0;
        assert!((drawn - half).abs() < 0.03, "{drawn} vs {half}");
    }

    #[test]
    fn penalties_push_repeated_tokens_down() {
        let mut sampler = Sampler::new(SamplingParams {
            temperature: 0.0,
            frequency_penalty: 0.2,
            presence_penalty: 0.0,
            ..SamplingParams::default()
        });
        assert_eq!(sampler.sample(&mut logits()), 1);
        // 3.0 - 0.2 = 2.8 < 2.9
        assert_eq!(sampler.sample(&mut logits()), 4);
    }

    #[test]
    fn logprobs_are_normalised_and_ranked() {
        let lp = log_softmax(&logits());
        let total: f32 = lp.iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        let top = top_logprobs(&lp, 3);
        let ids: Vec<_> = top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 4, 2]);
        // `top_logprobs: 0` (OpenAI's default with `logprobs: true`) asks for none.
        assert!(top_logprobs(&lp, 0).is_empty());
    }
}
