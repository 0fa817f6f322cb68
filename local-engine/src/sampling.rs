//! Choosing the next token from the model's logits: repetition penalties, then greedy or
//! temperature / top-k / top-p sampling with a seeded generator, so that a seed reproduces an
//! answer. Also the log-probabilities that `logprobs` reports.

use std::collections::HashMap;

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

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let temperature = self.params.temperature;
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / temperature))
            .collect();
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if self.params.top_k > 0 {
            candidates.truncate(self.params.top_k);
        }
        let max = candidates[0].1;
        let mut total = 0.0f32;
        for candidate in &mut candidates {
            candidate.1 = (candidate.1 - max).exp();
            total += candidate.1;
        }
        // Keep the smallest head whose probability reaches top_p.
        let mut kept = 0.0f32;
        let mut keep = candidates.len();
        for (i, candidate) in candidates.iter().enumerate() {
            kept += candidate.1 / total;
            if kept >= self.params.top_p {
                keep = i + 1;
                break;
            }
        }
        candidates.truncate(keep);
        let kept_total: f32 = candidates.iter().map(|c| c.1).sum();
        let mut point = self.rng.f32() * kept_total;
        for &(token, weight) in &candidates {
            if point < weight {
                return token;
            }
            point -= weight;
        }
        candidates[candidates.len() - 1].0
    }
}

/// The first position of the largest logit. Two passes that run in vector registers (the
/// largest value, sixteen lanes at a time, then where it first is), where one pass comparing
/// each logit with the best so far is a chain of dependent comparisons: a batch's step waits
/// for every sequence's.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = logits.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &logit) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(logit);
        }
    }
    let max = lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &l| m.max(l));
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
