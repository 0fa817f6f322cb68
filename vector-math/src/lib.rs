//! What both engines' numeric loops are written with: the router's BERT pass and the local
//! engine's llama pass.
//!
//! - [`exp`], [`largest`] and [`round_ties_even`]: scalar math written so that the loops over
//!   it run in vector registers (the C library's `expf` is a call per value: an 8-row batch of
//!   the local engine spent more time in it than in attention's products);
//! - [`cpu`]: which vector extensions this CPU has, found once at run time, so that a binary
//!   built for any x86-64 picks its fastest kernels on the machine it runs on.

pub mod cpu;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 in two parts (Cody and Waite): `n × LN2_HIGH` is exact for the `n` that occur.
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;
/// Beyond these, e^x is not a normal f32, or 2^n is not (n = 128 at 88.38).
const LOWEST: f32 = -87.33;
const HIGHEST: f32 = 88.37;

/// e^x within 2 ulp, x clamped to -87.33..=88.37 (e^x from 1.2e-38 to 2.5e38: what softmax and
/// SiLU need), with no branch and no library call. NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // e^x = 2^n × e^r, with n the integer nearest x / ln 2 and |r| ≤ ln 2 / 2.
    let x = x.clamp(LOWEST, HIGHEST);
    let n = round_ties_even(x * LOG2_E);
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    // Cephes' minimax polynomial for e^r on that range.
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // n is within -126..=127: 2^n is an f32's exponent bits.
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The largest of `values` (NaNs aside; negative infinity for none), sixteen lanes at a time:
/// a maximum does not depend on the order.
#[inline(always)]
pub fn largest(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = values.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(value);
        }
    }
    lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Rounds half to even for |value| ≤ 2²²: adding and taking away 1.5 × 2²³ leaves the default
/// rounding of the addition to do it (`f32::round_ties_even` is a library call without
/// SSE4.1).
#[inline(always)]
pub fn round_ties_even(value: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (value + MAGIC) - MAGIC
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_two_ulp_of_the_library_across_the_range() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, theirs) = (exp(x), x.exp());
            let ulp = (ours.to_bits() as i64 - theirs.to_bits() as i64).abs();
            assert!(ulp <= 2, "e^{x}: {ours} vs {theirs} ({ulp} ulp)");
            x += 0.000_37;
        }
    }

    #[test]
    fn rounding_is_half_to_even_like_the_standard_library() {
        for i in -130_000..=130_000 {
            let value = i as f32 / 1000.0;
            assert_eq!(round_ties_even(value), value.round_ties_even(), "{value}");
        }
        for value in [
            0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -127.5, 0.49999997,
        ] {
            assert_eq!(round_ties_even(value), value.round_ties_even(), "{value}");
        }
    }

    #[test]
    fn the_edges_are_finite_and_ordered() {
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1.2e-38);
        assert!(exp(f32::NEG_INFINITY) < 1.2e-38);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 2.0e38);
        assert!(exp(f32::NAN).is_nan());
    }
}
