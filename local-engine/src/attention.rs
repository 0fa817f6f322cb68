//! One sequence's keys and values ([`KvCache`]) and causal attention over them.
//!
//! Keys are stored in tiles of [`TILE`] positions, lane by lane (`[tile][channel][lane]`), so
//! that a query's scores against a tile's positions are [`TILE`] independent sums that run side
//! by side in vector registers. Each score still adds its products in channel order from zero,
//! exactly as a scalar dot product does: the logits do not depend on the vector width (small
//! models turn a last-bit difference into a different greedy answer). Values stay one position
//! after another (`[position][channel]`): a weighted sum runs along the channels.

use std::cell::RefCell;

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::quant::Isa;
use crate::team;
use switchboard_vector_math::{exp, largest};

/// Positions per key tile.
pub const TILE: usize = 16;

/// The shape of attention: how many query heads read each key/value head, and how wide heads
/// are.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Heads {
    /// Floats per position of the keys (and of the values).
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// One sequence's keys and values of every position so far, per layer. Buffers grow by
/// doubling.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer, `[tile][kv_dim][TILE]`; lanes past `len` in the last tile are stale.
    keys: Vec<Vec<f16>>,
    /// Per layer, `[position][kv_dim]`.
    values: Vec<Vec<f16>>,
    kv_dim: usize,
    len: usize,
}

impl KvCache {
    pub fn new(layers: usize, kv_dim: usize) -> Self {
        Self {
            keys: vec![Vec::new(); layers],
            values: vec![Vec::new(); layers],
            kv_dim,
            len: 0,
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes one layer's keys and values of the positions `start..` (whole rows of `kv_dim`),
    /// forgetting anything held beyond `start`. The positions count once [`KvCache::extend`]
    /// says so, after every layer.
    pub fn store(&mut self, layer: usize, start: usize, keys: &[f32], values: &[f32]) {
        let kv_dim = self.kv_dim;
        let end = start + keys.len() / kv_dim;
        let mut halves = vec![f16::ZERO; keys.len()];
        halves.convert_from_f32_slice(keys);
        let tiled = &mut self.keys[layer];
        tiled.resize(end.div_ceil(TILE) * TILE * kv_dim, f16::ZERO);
        for (position, row) in (start..end).zip(halves.chunks_exact(kv_dim)) {
            let tile = &mut tiled[position / TILE * TILE * kv_dim..][..TILE * kv_dim];
            let lane = position % TILE;
            for (channel, &key) in row.iter().enumerate() {
                tile[channel * TILE + lane] = key;
            }
        }
        let plain = &mut self.values[layer];
        plain.truncate(start * kv_dim);
        plain.resize(end * kv_dim, f16::ZERO);
        plain[start * kv_dim..].convert_from_f32_slice(values);
    }

    /// Counts `count` more positions, once every layer has stored them.
    pub fn extend(&mut self, count: usize) {
        self.len += count;
    }

    /// What a query at position `visible - 1` of `layer` attends to.
    pub fn context(&self, layer: usize, visible: usize) -> Context<'_> {
        Context {
            keys: &self.keys[layer],
            values: &self.values[layer],
            visible,
        }
    }
}

impl crate::prefix_cache::Prefixes for KvCache {
    fn bytes(&self) -> usize {
        let halves: usize = self
            .keys
            .iter()
            .chain(&self.values)
            .map(Vec::capacity)
            .sum();
        halves * std::mem::size_of::<f16>()
    }

    fn shrink_to_fit(&mut self) {
        for buffer in self.keys.iter_mut().chain(&mut self.values) {
            buffer.shrink_to_fit();
        }
    }

    fn prefix(&self, len: usize) -> Self {
        let len = len.min(self.len);
        let copy = |buffers: &[Vec<f16>], halves: usize| {
            buffers.iter().map(|b| b[..halves].to_vec()).collect()
        };
        Self {
            keys: copy(&self.keys, len.div_ceil(TILE) * TILE * self.kv_dim),
            values: copy(&self.values, len * self.kv_dim),
            kv_dim: self.kv_dim,
            len,
        }
    }
}

/// What one query row attends to: its sequence's keys and values up to and including its own
/// position.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    keys: &'a [f16],
    values: &'a [f16],
    visible: usize,
}

/// Causal attention of each query row (`heads × head_dim` wide) over its context, each query
/// head reading its group's key/value head. Rows and heads run in parallel on the [`team`].
pub fn attend(isa: Isa, shape: Heads, queries: &[f32], contexts: &[Context], out: &mut [f32]) {
    let head_dim = shape.head_dim;
    let group = shape.heads / shape.kv_heads;
    // With several rows a task takes several query heads of one key/value group, so that each
    // key is read once for all of them and their sums run side by side; one row (decoding)
    // would then have too few tasks to share.
    let per_task = match contexts.len() {
        rows if rows >= 4 => (1..=MAX_HEADS_PER_TASK.min(group))
            .rev()
            .find(|n| group.is_multiple_of(*n))
            .unwrap_or(1),
        _ => 1,
    };
    let width = per_task * head_dim;
    let tasks_per_row = shape.heads / per_task;
    let outputs = team::split_rows(out, width);
    team::for_each(outputs.len(), |index| {
        let mut out = team::part(&outputs[index]);
        let row = index / tasks_per_row;
        let kv_head = index % tasks_per_row * per_task / group;
        let queries = &queries[index * width..][..width];
        let context = contexts[row];
        SCORES.with_borrow_mut(|scores| {
            #[cfg(target_arch = "x86_64")]
            if isa >= Isa::Avx512Vnni {
                // SAFETY: `Isa::detect` found AVX-512 on this CPU.
                unsafe { attend_heads_avx512(shape, queries, kv_head, context, scores, &mut out) };
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if isa >= Isa::Avx2 {
                // SAFETY: `Isa::detect` found AVX2 on this CPU.
                unsafe { attend_heads_avx2(shape, queries, kv_head, context, scores, &mut out) };
                return;
            }
            let _ = isa;
            attend_heads::<Portable, 16>(shape, queries, kv_head, context, scores, &mut out);
        });
    });
}

/// At most this many query heads per task (their sums fit in registers side by side).
const MAX_HEADS_PER_TASK: usize = 4;

thread_local! {
    /// A task's attention scores, kept between tasks.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Turns f16 keys or values into f32.
trait Widen {
    /// # Safety
    /// The CPU has what the implementation uses.
    unsafe fn widen(halves: &[f16], out: &mut [f32]);
}

/// Any CPU.
struct Portable;

impl Widen for Portable {
    #[inline(always)]
    unsafe fn widen(halves: &[f16], out: &mut [f32]) {
        for (out, half) in out.iter_mut().zip(halves) {
            *out = half.to_f32();
        }
    }
}

/// F16C's conversion, eight at a time.
#[cfg(target_arch = "x86_64")]
struct F16c;

#[cfg(target_arch = "x86_64")]
impl Widen for F16c {
    #[inline(always)]
    unsafe fn widen(halves: &[f16], out: &mut [f32]) {
        use std::arch::x86_64::{_mm_loadu_si128, _mm256_cvtph_ps, _mm256_storeu_ps};
        assert_eq!(halves.len(), out.len());
        let done = out.len() / 8 * 8;
        let (eights, rest) = out.split_at_mut(done);
        for (out, halves) in eights.chunks_exact_mut(8).zip(halves.chunks_exact(8)) {
            // SAFETY: eight f16 in, eight f32 out; F16C is the caller's promise.
            unsafe {
                let wide = _mm256_cvtph_ps(_mm_loadu_si128(halves.as_ptr().cast()));
                _mm256_storeu_ps(out.as_mut_ptr(), wide);
            }
        }
        for (out, half) in rest.iter_mut().zip(&halves[done..]) {
            *out = half.to_f32();
        }
    }
}

/// [`attend_heads`] compiled for AVX2: the same operations in the same order, eight lanes wide,
/// the values' sums sixteen channels of each head at a time (16 registers hold them).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn attend_heads_avx2(
    shape: Heads,
    queries: &[f32],
    kv_head: usize,
    context: Context,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    attend_heads::<F16c, 16>(shape, queries, kv_head, context, scores, out);
}

/// [`attend_heads`] compiled for AVX-512: the same operations in the same order, sixteen lanes
/// wide (a key tile's scores in one register), the values' sums 64 channels of each head at a
/// time (32 registers hold them): a position's values are read in one pass, not four (the
/// values of a batch's sequences come from memory).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn attend_heads_avx512(
    shape: Heads,
    queries: &[f32],
    kv_head: usize,
    context: Context,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    attend_heads::<F16c, 64>(shape, queries, kv_head, context, scores, out);
}

/// The query heads in `queries` (consecutive, all reading `kv_head`) over `context`, into `out`,
/// the values' sums `CHANNELS` channels of each head at a time where the heads have them.
#[inline(always)]
fn attend_heads<W: Widen, const CHANNELS: usize>(
    shape: Heads,
    queries: &[f32],
    kv_head: usize,
    context: Context,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    // A constant number of heads, so that their sums are registers, not memory.
    match queries.len() / shape.head_dim {
        1 => attend_group::<W, 1, CHANNELS>(shape, queries, kv_head, context, scores, out),
        2 => attend_group::<W, 2, CHANNELS>(shape, queries, kv_head, context, scores, out),
        3 => attend_group::<W, 3, CHANNELS>(shape, queries, kv_head, context, scores, out),
        4 => attend_group::<W, 4, CHANNELS>(shape, queries, kv_head, context, scores, out),
        heads => unreachable!("{heads} heads per task, at most {MAX_HEADS_PER_TASK}"),
    }
}

/// [`attend_heads`] for `H` heads.
#[inline(always)]
fn attend_group<W: Widen, const H: usize, const CHANNELS: usize>(
    shape: Heads,
    queries: &[f32],
    kv_head: usize,
    context: Context,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (head_dim, kv_dim) = (shape.head_dim, shape.kv_dim());
    let offset = kv_head * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let visible = context.visible;
    let padded = visible.div_ceil(TILE) * TILE;
    scores.clear();
    scores.resize(H * padded, 0.0);
    for (t, tile) in context
        .keys
        .chunks_exact(TILE * kv_dim)
        .take(padded / TILE)
        .enumerate()
    {
        // The next tile's keys of this head, asked for ahead (they come from memory).
        prefetch(
            context.keys,
            (t + 1) * TILE * kv_dim + offset * TILE,
            head_dim * TILE,
        );
        let mut sums = [[0.0f32; TILE]; H];
        for (d, halves) in tile[offset * TILE..]
            .chunks_exact(TILE)
            .take(head_dim)
            .enumerate()
        {
            let mut keys = [0.0f32; TILE];
            // SAFETY: `W` is one this CPU runs (see `attend`).
            unsafe { W::widen(halves, &mut keys) };
            for (h, sums) in sums.iter_mut().enumerate() {
                let q = queries[h * head_dim + d];
                for (sum, &k) in sums.iter_mut().zip(&keys) {
                    *sum += q * k;
                }
            }
        }
        for (h, sums) in sums.iter().enumerate() {
            let at = h * padded + t * TILE;
            for (score, sum) in scores[at..at + TILE].iter_mut().zip(sums) {
                *score = sum * scale;
            }
        }
    }
    // Each score becomes its weight: its exponential over the head's sum of them. Separate
    // loops, so that the maximum and the exponentials run in vector registers (the sum, in
    // order, cannot).
    for h in 0..H {
        let scores = &mut scores[h * padded..][..visible];
        let max = largest(scores);
        for s in scores.iter_mut() {
            *s = exp(*s - max);
        }
        let total: f32 = scores.iter().sum();
        for s in scores.iter_mut() {
            *s /= total;
        }
    }
    // The weighted sums of the values, `CHANNELS` channels of every head at a time, then one by
    // one: each channel's sum runs position after position from zero.
    let mut first = 0;
    while first + CHANNELS <= head_dim {
        weighted_sums::<W, H, CHANNELS>(first, kv_dim, offset, context, scores, padded, out);
        first += CHANNELS;
    }
    while first < head_dim {
        weighted_sums::<W, H, 1>(first, kv_dim, offset, context, scores, padded, out);
        first += 1;
    }
}

/// How many positions ahead the values are asked for.
const PREFETCH_POSITIONS: usize = 8;

/// Asks for `data[from..from + len]` (what of it exists) to be brought into the cache.
#[inline(always)]
fn prefetch(data: &[f16], from: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(run) = data.get(from..(from + len).min(data.len())) {
        for line in run.chunks(32) {
            // SAFETY: a prefetch of an address inside `data`; it reads nothing.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    line.as_ptr() as *const i8
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, from, len);
}

/// Channels `first..first + W` of each head's weighted sum of the values.
#[inline(always)]
fn weighted_sums<V: Widen, const H: usize, const W: usize>(
    first: usize,
    kv_dim: usize,
    offset: usize,
    context: Context,
    weights: &[f32],
    padded: usize,
    out: &mut [f32],
) {
    let head_dim = out.len() / H;
    let mut sums = [[0.0f32; W]; H];
    for (p, values) in context
        .values
        .chunks_exact(kv_dim)
        .take(context.visible)
        .enumerate()
    {
        prefetch(
            context.values,
            (p + PREFETCH_POSITIONS) * kv_dim + offset + first,
            W,
        );
        let mut wide = [0.0f32; W];
        // SAFETY: `V` is one this CPU runs (see `attend`).
        unsafe { V::widen(&values[offset + first..][..W], &mut wide) };
        let values = &wide;
        for (h, sums) in sums.iter_mut().enumerate() {
            let weight = weights[h * padded + p];
            for (sum, &v) in sums.iter_mut().zip(values) {
                *sum += weight * v;
            }
        }
    }
    for (h, sums) in sums.iter().enumerate() {
        out[h * head_dim + first..][..W].copy_from_slice(sums);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: position after position, channel after channel.
    fn attend_plainly(shape: Heads, query: &[f32], keys: &[f32], values: &[f32]) -> Vec<f32> {
        let (head_dim, kv_dim) = (shape.head_dim, shape.kv_dim());
        let group = shape.heads / shape.kv_heads;
        let positions = keys.len() / kv_dim;
        let mut out = vec![0.0; shape.heads * head_dim];
        for head in 0..shape.heads {
            let q = &query[head * head_dim..][..head_dim];
            let offset = head / group * head_dim;
            let scores: Vec<f32> = (0..positions)
                .map(|p| {
                    let k = &keys[p * kv_dim + offset..][..head_dim];
                    q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>()
                        * (1.0 / (head_dim as f32).sqrt())
                })
                .collect();
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let exps: Vec<f32> = scores.iter().map(|s| exp(s - max)).collect();
            let total: f32 = exps.iter().sum();
            for (p, e) in exps.iter().enumerate() {
                for d in 0..head_dim {
                    out[head * head_dim + d] += e / total * values[p * kv_dim + offset + d];
                }
            }
        }
        out
    }

    /// Deterministic values in -1..1, each one an f16 can hold (as the cache keeps them).
    fn noise(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let x = (i ^ seed).wrapping_mul(2_654_435_761).rotate_left(13);
                f16::from_f32((x % 20_001) as f32 / 10_000.0 - 1.0).to_f32()
            })
            .collect()
    }

    #[test]
    fn tiled_attention_is_plain_attention_bit_for_bit() {
        // Heads of 72 channels: whole runs of 16 and of 64 channels and a few more.
        let shape = Heads {
            heads: 6,
            kv_heads: 2,
            head_dim: 72,
        };
        let kv_dim = shape.kv_dim();
        for positions in [1, TILE - 1, TILE, TILE + 1, 3 * TILE + 5] {
            let keys = noise(positions * kv_dim, 1);
            let values = noise(positions * kv_dim, 2);
            let query = noise(shape.heads * shape.head_dim, 3);
            // Stored in two calls, the second overwriting the first's last position.
            let mut cache = KvCache::new(1, kv_dim);
            let first = positions / 2 + 1;
            cache.store(0, 0, &keys[..first * kv_dim], &values[..first * kv_dim]);
            let again = first - 1;
            cache.store(0, again, &keys[again * kv_dim..], &values[again * kv_dim..]);
            cache.extend(positions);
            let expected = attend_plainly(shape, &query, &keys, &values);
            for isa in Isa::supported() {
                let mut out = vec![0.0; expected.len()];
                attend(isa, shape, &query, &[cache.context(0, positions)], &mut out);
                assert_eq!(out, expected, "{positions} positions, {isa:?}");
            }
            // Five rows (a batch): each task takes a group's three query heads together.
            let rows = 5;
            let queries = noise(rows * shape.heads * shape.head_dim, 7);
            let contexts = vec![cache.context(0, positions); rows];
            let width = shape.heads * shape.head_dim;
            for isa in Isa::supported() {
                let mut out = vec![0.0; queries.len()];
                attend(isa, shape, &queries, &contexts, &mut out);
                for (query, out) in queries.chunks_exact(width).zip(out.chunks_exact(width)) {
                    let expected = attend_plainly(shape, query, &keys, &values);
                    assert_eq!(
                        out,
                        &expected[..],
                        "a batch, {positions} positions, {isa:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_prefix_copy_holds_the_first_positions() {
        use crate::prefix_cache::Prefixes;
        let shape = Heads {
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
        };
        let kv_dim = shape.kv_dim();
        let positions = 2 * TILE + 3;
        let (keys, values) = (noise(positions * kv_dim, 4), noise(positions * kv_dim, 5));
        let mut cache = KvCache::new(1, kv_dim);
        cache.store(0, 0, &keys, &values);
        cache.extend(positions);
        let query = noise(shape.heads * shape.head_dim, 6);
        let visible = TILE + 2;
        let prefix = cache.prefix(visible);
        assert_eq!(prefix.len(), visible);
        let run = |cache: &KvCache| {
            let mut out = vec![0.0; shape.heads * shape.head_dim];
            attend(
                Isa::detect(),
                shape,
                &query,
                &[cache.context(0, visible)],
                &mut out,
            );
            out
        };
        assert_eq!(run(&prefix), run(&cache));
        assert!(prefix.bytes() < cache.bytes());
    }
}
