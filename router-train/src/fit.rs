//! Fitting the linear heads: mini-batch Adam on the cross-entropy, with L2 regularisation and
//! per-example weights. Plain loops suffice: a few thousand rows of a few hundred columns train in
//! seconds, and the result is exactly reproducible.

use switchboard_router::heads::{Logistic, Softmax, dot, sigmoid, softmax};

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f32,
    /// L2 penalty on the weights (not the biases).
    pub l2: f32,
    /// Seeds the order in which rows are visited.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            epochs: 40,
            batch: 128,
            learning_rate: 3e-3,
            l2: 1e-3,
            seed: 7,
        }
    }
}

/// What a linear head is trained to predict.
pub enum Targets<'a> {
    /// One probability per row (0 or 1, or anything between).
    Binary(&'a [f32]),
    /// One class index per row, out of `classes`.
    Classes { labels: &'a [usize], classes: usize },
}

impl Targets<'_> {
    fn outputs(&self) -> usize {
        match self {
            Targets::Binary(_) => 1,
            Targets::Classes { classes, .. } => *classes,
        }
    }

    /// d(loss)/d(logits) for one row, written into `out`.
    fn gradient(&self, row: usize, logits: &[f32], out: &mut [f32]) {
        match self {
            Targets::Binary(y) => out[0] = sigmoid(logits[0]) - y[row],
            Targets::Classes { labels, .. } => {
                for (k, (o, p)) in out.iter_mut().zip(softmax(logits)).enumerate() {
                    *o = p - f32::from(u8::from(k == labels[row]));
                }
            }
        }
    }
}

/// A linear map from `width` inputs to `outputs` logits.
struct Linear {
    weights: Vec<Vec<f32>>,
    biases: Vec<f32>,
}

/// Fits weights to `rows` (already standardised) by minimising the weighted mean cross-entropy
/// plus the L2 penalty. `offsets`, when given, are added to each row's logits and held fixed:
/// the fit learns what another model's logits miss.
fn fit(
    rows: &[Vec<f32>],
    targets: &Targets,
    row_weights: &[f32],
    offsets: Option<&[Vec<f32>]>,
    settings: Settings,
) -> Linear {
    let width = rows.first().map_or(0, Vec::len);
    let outputs = targets.outputs();
    let mut model = Linear {
        weights: vec![vec![0.0; width]; outputs],
        biases: vec![0.0; outputs],
    };
    let mut adam = Adam::new(outputs * (width + 1));
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let mut random = fastrand::Rng::with_seed(settings.seed);
    let total_weight: f32 = row_weights.iter().sum::<f32>().max(f32::MIN_POSITIVE);
    let mean_weight = total_weight / rows.len().max(1) as f32;

    let mut gradient = vec![0f32; outputs * (width + 1)];
    let mut logits = vec![0f32; outputs];
    let mut delta = vec![0f32; outputs];
    for _ in 0..settings.epochs {
        random.shuffle(&mut order);
        for batch in order.chunks(settings.batch.max(1)) {
            gradient.fill(0.0);
            for &row in batch {
                let x = &rows[row];
                for (k, logit) in logits.iter_mut().enumerate() {
                    let offset = offsets.map_or(0.0, |o| o[row][k]);
                    *logit = dot(&model.weights[k], x) + model.biases[k] + offset;
                }
                targets.gradient(row, &logits, &mut delta);
                let scale = row_weights[row] / mean_weight / batch.len() as f32;
                for (k, d) in delta.iter().enumerate() {
                    let g = &mut gradient[k * (width + 1)..(k + 1) * (width + 1)];
                    for (gi, xi) in g.iter_mut().zip(x) {
                        *gi += d * scale * xi;
                    }
                    g[width] += d * scale;
                }
            }
            for (k, w) in model.weights.iter().enumerate() {
                let g = &mut gradient[k * (width + 1)..k * (width + 1) + width];
                for (gi, wi) in g.iter_mut().zip(w) {
                    *gi += settings.l2 * wi;
                }
            }
            let steps = adam.step(&gradient, settings.learning_rate);
            for (k, (w, b)) in model.weights.iter_mut().zip(&mut model.biases).enumerate() {
                let s = &steps[k * (width + 1)..(k + 1) * (width + 1)];
                for (wi, si) in w.iter_mut().zip(s) {
                    *wi -= si;
                }
                *b -= s[width];
            }
        }
    }
    model
}

pub fn fit_logistic(
    rows: &[Vec<f32>],
    labels: &[f32],
    row_weights: &[f32],
    settings: Settings,
) -> Logistic {
    fit_logistic_over(rows, labels, row_weights, None, settings)
}

/// Logistic regression whose logits add to fixed `offsets` (one per row).
pub fn fit_logistic_over(
    rows: &[Vec<f32>],
    labels: &[f32],
    row_weights: &[f32],
    offsets: Option<&[Vec<f32>]>,
    settings: Settings,
) -> Logistic {
    let mut model = fit(
        rows,
        &Targets::Binary(labels),
        row_weights,
        offsets,
        settings,
    );
    Logistic {
        weights: model.weights.pop().unwrap_or_default(),
        bias: model.biases.pop().unwrap_or_default(),
    }
}

pub fn fit_softmax(
    rows: &[Vec<f32>],
    labels: &[usize],
    classes: &[&str],
    row_weights: &[f32],
    settings: Settings,
) -> Softmax {
    fit_softmax_over(rows, labels, classes, row_weights, None, settings)
}

/// Softmax regression whose logits add to fixed `offsets` (one row of class logits per row).
pub fn fit_softmax_over(
    rows: &[Vec<f32>],
    labels: &[usize],
    classes: &[&str],
    row_weights: &[f32],
    offsets: Option<&[Vec<f32>]>,
    settings: Settings,
) -> Softmax {
    let targets = Targets::Classes {
        labels,
        classes: classes.len(),
    };
    let model = fit(rows, &targets, row_weights, offsets, settings);
    Softmax {
        classes: classes.iter().map(|c| (*c).to_owned()).collect(),
        weights: model.weights,
        biases: model.biases,
    }
}

/// Weights that give every class the same total weight.
pub fn balanced_weights(labels: &[usize], classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    for &l in labels {
        counts[l] += 1;
    }
    labels
        .iter()
        .map(|&l| labels.len() as f32 / (classes * counts[l]) as f32)
        .collect()
}

struct Adam {
    first: Vec<f32>,
    second: Vec<f32>,
    t: i32,
    steps: Vec<f32>,
}

impl Adam {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;
    const EPSILON: f32 = 1e-8;

    fn new(parameters: usize) -> Self {
        Self {
            first: vec![0.0; parameters],
            second: vec![0.0; parameters],
            t: 0,
            steps: vec![0.0; parameters],
        }
    }

    /// The amounts to subtract from the parameters for this gradient.
    fn step(&mut self, gradient: &[f32], learning_rate: f32) -> &[f32] {
        self.t += 1;
        let correct1 = 1.0 - Self::BETA1.powi(self.t);
        let correct2 = 1.0 - Self::BETA2.powi(self.t);
        for (((m, v), s), g) in self
            .first
            .iter_mut()
            .zip(&mut self.second)
            .zip(&mut self.steps)
            .zip(gradient)
        {
            *m = Self::BETA1 * *m + (1.0 - Self::BETA1) * g;
            *v = Self::BETA2 * *v + (1.0 - Self::BETA2) * g * g;
            *s = learning_rate * (*m / correct1) / ((*v / correct2).sqrt() + Self::EPSILON);
        }
        &self.steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on either side of a line, with some overlap.
    fn two_clouds() -> (Vec<Vec<f32>>, Vec<f32>) {
        let mut random = fastrand::Rng::with_seed(1);
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..400 {
            let label = (i % 2) as f32;
            let centre = if label == 1.0 { 1.0 } else { -1.0 };
            rows.push(vec![
                centre + random.f32() * 1.5 - 0.75,
                random.f32() * 2.0 - 1.0,
            ]);
            labels.push(label);
        }
        (rows, labels)
    }

    #[test]
    fn logistic_regression_learns_the_separating_direction() {
        let (rows, labels) = two_clouds();
        let weights = vec![1.0; rows.len()];
        let model = fit_logistic(&rows, &labels, &weights, Settings::default());
        let accuracy = rows
            .iter()
            .zip(&labels)
            .filter(|(x, y)| (model.probability(x) > 0.5) == (**y == 1.0))
            .count() as f32
            / rows.len() as f32;
        assert!(accuracy > 0.97, "{accuracy}");
        assert!(model.weights[0].abs() > 5.0 * model.weights[1].abs());
    }

    #[test]
    fn softmax_regression_separates_three_classes() {
        let rows: Vec<Vec<f32>> = (0..300)
            .map(|i| match i % 3 {
                0 => vec![1.0, 0.0],
                1 => vec![0.0, 1.0],
                _ => vec![-1.0, -1.0],
            })
            .collect();
        let labels: Vec<usize> = (0..300).map(|i| i % 3).collect();
        let weights = balanced_weights(&labels, 3);
        // Three steps an epoch on 300 rows: give Adam enough of them.
        let settings = Settings {
            epochs: 400,
            ..Settings::default()
        };
        let model = fit_softmax(&rows, &labels, &["a", "b", "c"], &weights, settings);
        for (x, &label) in rows.iter().zip(&labels).take(3) {
            let p = model.probabilities(x);
            assert!(p[label] > 0.9, "{p:?}");
        }
    }

    #[test]
    fn balanced_weights_equalise_classes() {
        let weights = balanced_weights(&[0, 0, 0, 1], 2);
        assert_eq!(weights, vec![2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 2.0]);
    }
}
