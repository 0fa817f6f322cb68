//! The element-wise parts of a BERT layer, written as plain loops over fixed-width lane arrays so
//! that the compiler turns them into vector code (see `multiversion!`): layer normalisation,
//! GELU through a rational `erf`, and softmax with an `exp` that needs no libm.

use switchboard_vector_math::{exp, largest};

use super::cpu::multiversion;

/// Lanes of the partial sums in reductions: wide enough for one AVX-512 register.
const LANES: usize = 16;

#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, value) in lanes.iter_mut().zip(chunk) {
            *lane += value;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

#[inline(always)]
fn normalize(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    for value in row.iter_mut() {
        *value -= mean;
    }
    let mut lanes = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for chunk in chunks {
        for (lane, value) in lanes.iter_mut().zip(chunk) {
            *lane += value * value;
        }
    }
    let variance = (lanes.iter().sum::<f32>() + rest) / n;
    let scale = 1.0 / (variance + eps).sqrt();
    for ((value, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *value = *value * scale * g + b;
    }
}

multiversion! {
    /// Each row of `rows` (rows of `gamma.len()` values) becomes `layer_norm(row + residual)`.
    pub fn add_and_normalize(rows: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let width = gamma.len();
        for (row, added) in rows.chunks_exact_mut(width).zip(residual.chunks_exact(width)) {
            for (value, add) in row.iter_mut().zip(added) {
                *value += add;
            }
            normalize(row, gamma, beta, eps);
        }
    }
}

multiversion! {
    pub fn layer_norm(rows: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        for row in rows.chunks_exact_mut(gamma.len()) {
            normalize(row, gamma, beta, eps);
        }
    }
}

/// The error function, as a rational function of x² on [-4, 4] (beyond it erf is ±1 in f32);
/// the coefficients are the well-known ones of Eigen and XLA, accurate to a few ulp.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + c;
    }
    x * p / q
}

#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

multiversion! {
    /// Each row of `rows` (rows of `width` scores) becomes its softmax.
    pub fn softmax_rows(rows: &mut [f32], width: usize) {
        for row in rows.chunks_exact_mut(width) {
            let max = largest(row);
            for value in row.iter_mut() {
                *value = exp(*value - max);
            }
            let scale = 1.0 / sum(row);
            for value in row.iter_mut() {
                *value *= scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::cpu::Isa;

    /// erf by its Taylor series in f64, exact enough on [-4, 4] to judge an f32 approximation.
    fn erf_reference(x: f64) -> f64 {
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_matches_its_series_everywhere() {
        for i in -5000..=5000 {
            let x = i as f32 / 1000.0;
            let expected = erf_reference(x.clamp(-4.0, 4.0) as f64);
            let error = (erf(x) as f64 - expected).abs();
            assert!(error < 5e-7, "erf({x}) off by {error}");
        }
    }

    #[test]
    fn every_isa_normalizes_alike() {
        let gamma: Vec<f32> = (0..40).map(|i| 1.0 + i as f32 / 40.0).collect();
        let beta: Vec<f32> = (0..40).map(|i| i as f32 / 100.0).collect();
        let input: Vec<f32> = (0..120).map(|i| ((i * 37) % 17) as f32 - 8.0).collect();
        let residual: Vec<f32> = (0..120).map(|i| (i % 5) as f32).collect();
        let mut expected = input.clone();
        for (row, add) in expected.chunks_exact_mut(40).zip(residual.chunks_exact(40)) {
            let summed: Vec<f64> = row.iter().zip(add).map(|(a, b)| (a + b) as f64).collect();
            let mean = summed.iter().sum::<f64>() / 40.0;
            let var = summed.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 40.0;
            for (i, value) in row.iter_mut().enumerate() {
                *value = ((summed[i] - mean) / (var + 1e-12).sqrt() * gamma[i] as f64
                    + beta[i] as f64) as f32;
            }
        }
        for isa in Isa::supported() {
            let mut rows = input.clone();
            add_and_normalize(isa, &mut rows, &residual, &gamma, &beta, 1e-12);
            for (got, want) in rows.iter().zip(&expected) {
                assert!((got - want).abs() < 1e-5, "{isa:?}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_in_order() {
        for isa in Isa::supported() {
            let mut rows = [1.0, 2.0, 3.0, -1000.0, 0.0, 1000.0];
            softmax_rows(isa, &mut rows, 3);
            let e = [1.0f32.exp(), 2.0f32.exp(), 3.0f32.exp()];
            let total: f32 = e.iter().sum();
            for (got, want) in rows[..3].iter().zip(e.iter().map(|v| v / total)) {
                assert!((got - want).abs() < 1e-6, "{isa:?}: {got} vs {want}");
            }
            // exp saturates at e^-87, which is 0 next to 1.
            assert!(
                rows[3] < 1e-30 && rows[4] < 1e-30 && rows[5] == 1.0,
                "{rows:?}"
            );
        }
    }
}
