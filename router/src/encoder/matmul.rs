//! Matrix products on BF16 operands with f32 sums: the dense layers (`y = x·Wᵀ + b`, weights
//! packed once) and the attention's small products (packed per head).
//!
//! BF16 halves the weights' memory traffic, and on CPUs with AVX-512 BF16 one `vdpbf16ps` does
//! twice the multiply-adds of an f32 FMA; the embeddings stay within cosine 0.9999 of f32 (the
//! mantissa lost is noise next to the model's own). Each thread takes a contiguous run of
//! panels, so the threads read disjoint weights and write disjoint columns.

use rayon::prelude::*;

use super::cpu::{Isa, multiversion};

/// Output columns per panel: two AVX-512 registers of f32.
const COLUMNS: usize = 32;
/// Input rows per kernel call: 8 rows × 2 registers of sums leaves room for the operands in
/// AVX-512's 32 registers.
const ROWS: usize = 8;

type Block = [[f32; COLUMNS]; ROWS];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Gelu,
}

/// f32 → BF16 with rounding to nearest even.
#[inline(always)]
fn bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

#[inline(always)]
fn pair(low: f32, high: f32) -> u32 {
    u32::from(bf16(low)) | (u32::from(bf16(high)) << 16)
}

#[inline(always)]
fn unpair(word: u32) -> (f32, f32) {
    (
        f32::from_bits(word << 16),
        f32::from_bits(word & 0xffff_0000),
    )
}

/// A matrix packed as the right-hand operand of the kernels, `columns × depth` (each column a
/// weight row of a linear layer, or a key of an attention head): for each panel of 32 columns,
/// for each pair `(2p, 2p+1)` along the depth, 32 words of two BF16 halves (`m[c][2p]` low,
/// `m[c][2p+1]` high). That is the operand layout of `vdpbf16ps`; the portable kernel reads it
/// too. Missing columns and the odd depth's last half are zeros.
pub struct Packed {
    columns: usize,
    pairs: usize,
    panels: Vec<u32>,
}

impl Packed {
    /// Packs a matrix given column by column, each column `depth` values (a linear layer's
    /// weight rows, an attention head's keys).
    pub fn from_columns<'a>(
        columns: impl ExactSizeIterator<Item = &'a [f32]>,
        depth: usize,
    ) -> Self {
        let mut packed = Self::zeros(columns.len(), depth);
        for (c, column) in columns.enumerate() {
            debug_assert_eq!(column.len(), depth);
            let first = (c / COLUMNS) * packed.pairs * COLUMNS + c % COLUMNS;
            let mut values = column.chunks_exact(2);
            for (p, two) in values.by_ref().enumerate() {
                packed.panels[first + p * COLUMNS] = pair(two[0], two[1]);
            }
            if let [last] = values.remainder() {
                packed.panels[first + (packed.pairs - 1) * COLUMNS] = pair(*last, 0.0);
            }
        }
        packed
    }

    /// Packs a matrix given along its depth: `rows[k]` holds element k of every column (an
    /// attention head's values, token by token).
    pub fn from_rows<'a>(rows: impl ExactSizeIterator<Item = &'a [f32]>, columns: usize) -> Self {
        let mut packed = Self::zeros(columns, rows.len());
        let mut rows = rows.peekable();
        let mut p = 0;
        while let Some(even) = rows.next() {
            let odd = rows.next();
            for (c, &low) in even.iter().enumerate().take(columns) {
                let high = odd.map_or(0.0, |odd| odd[c]);
                let at = (c / COLUMNS) * packed.pairs * COLUMNS + p * COLUMNS + c % COLUMNS;
                packed.panels[at] = pair(low, high);
            }
            p += 1;
        }
        packed
    }

    fn zeros(columns: usize, depth: usize) -> Self {
        let pairs = depth.div_ceil(2);
        Self {
            columns,
            pairs,
            panels: vec![0; columns.div_ceil(COLUMNS) * pairs * COLUMNS],
        }
    }

    pub fn panel_count(&self) -> usize {
        self.columns.div_ceil(COLUMNS)
    }

    /// `x·Mᵀ + start` for the columns of one panel: `x` holds `rows` rows of BF16 pairs (see
    /// [`pack_rows`]), `start` is added to every row (a bias, or zeros);
    /// `sink(row, first_column, sums)` receives each row's sums for the panel's columns.
    pub fn multiply_panel(
        &self,
        isa: Isa,
        x: &[u32],
        rows: usize,
        panel: usize,
        start: &[f32; COLUMNS],
        mut sink: impl FnMut(usize, usize, &mut [f32]),
    ) {
        let weights = &self.panels[panel * self.pairs * COLUMNS..][..self.pairs * COLUMNS];
        let first_column = panel * COLUMNS;
        let columns = COLUMNS.min(self.columns - first_column);
        let mut block: Block = [[0.0; COLUMNS]; ROWS];
        for first_row in (0..rows).step_by(ROWS) {
            let count = ROWS.min(rows - first_row);
            let inputs = &x[first_row * self.pairs..(first_row + count) * self.pairs];
            dot(isa, inputs, count, weights, self.pairs, start, &mut block);
            for (r, sums) in block.iter_mut().take(count).enumerate() {
                sink(first_row + r, first_column, &mut sums[..columns]);
            }
        }
    }

    /// `x·Mᵀ` whole, into `out` (`rows × columns`, row-major), on the calling thread.
    pub fn multiply(&self, isa: Isa, x: &[u32], rows: usize, out: &mut [f32]) {
        assert_eq!(out.len(), rows * self.columns, "output shape");
        for panel in 0..self.panel_count() {
            self.multiply_panel(isa, x, rows, panel, &[0.0; COLUMNS], |row, column, sums| {
                out[row * self.columns + column..][..sums.len()].copy_from_slice(sums);
            });
        }
    }
}

multiversion! {
    /// The rows of a row-major matrix of `depth` columns as BF16 pairs, the left-hand operand
    /// of [`Packed::multiply_panel`].
    pub fn pack_rows(matrix: &[f32], depth: usize) -> Vec<u32> {
        let pairs = depth.div_ceil(2);
        let mut packed = vec![0u32; matrix.len() / depth * pairs];
        for (row, words) in matrix.chunks_exact(depth).zip(packed.chunks_exact_mut(pairs)) {
            for (word, two) in words.iter_mut().zip(row.chunks_exact(2)) {
                *word = pair(two[0], two[1]);
            }
            if depth % 2 == 1 {
                words[pairs - 1] = pair(row[depth - 1], 0.0);
            }
        }
        packed
    }
}

/// A linear layer, `y = activation(x·Wᵀ + b)`.
pub struct Linear {
    inputs: usize,
    outputs: usize,
    weights: Packed,
    /// The bias of each panel's columns, zeros past the last column.
    bias: Vec<[f32; COLUMNS]>,
}

impl Linear {
    /// `weight` is `outputs × inputs`, row-major (PyTorch's `nn.Linear` layout).
    pub fn new(weight: &[f32], bias: Vec<f32>, outputs: usize, inputs: usize) -> Self {
        assert_eq!(weight.len(), outputs * inputs, "weight shape");
        assert_eq!(bias.len(), outputs, "bias shape");
        Self {
            inputs,
            outputs,
            weights: Packed::from_columns(weight.chunks_exact(inputs), inputs),
            bias: bias
                .chunks(COLUMNS)
                .map(|values| {
                    let mut panel = [0.0; COLUMNS];
                    panel[..values.len()].copy_from_slice(values);
                    panel
                })
                .collect(),
        }
    }

    /// `out = activation(x·Wᵀ + b)` for `x` of `rows × inputs`, `out` of `rows × outputs`, split
    /// by panels over the threads of the current rayon pool.
    pub fn forward(&self, isa: Isa, x: &[f32], out: &mut [f32], activation: Activation) {
        let rows = x.len() / self.inputs;
        assert_eq!(x.len(), rows * self.inputs, "input shape");
        assert_eq!(out.len(), rows * self.outputs, "output shape");
        let x = pack_rows(isa, x, self.inputs);
        let panel_count = self.weights.panel_count();
        let parts = rayon::current_num_threads().clamp(1, panel_count);
        let out = Output(out.as_mut_ptr());
        (0..parts).into_par_iter().for_each(|part| {
            for panel in part * panel_count / parts..(part + 1) * panel_count / parts {
                let bias = &self.bias[panel];
                self.weights
                    .multiply_panel(isa, &x, rows, panel, bias, |row, column, sums| {
                        if activation == Activation::Gelu {
                            gelu(isa, sums);
                        }
                        // SAFETY: `out` holds `rows × outputs` values (asserted above), and these
                        // columns of this row lie inside it; threads take disjoint panels, so they
                        // write disjoint elements, and `for_each` returns after they all finish.
                        unsafe {
                            let start = out.start().add(row * self.outputs + column);
                            if sums.len() == COLUMNS {
                                // A constant length: a few vector moves, not a call to memcpy.
                                std::ptr::copy_nonoverlapping(sums.as_ptr(), start, COLUMNS);
                            } else {
                                std::ptr::copy_nonoverlapping(sums.as_ptr(), start, sums.len());
                            }
                        }
                    });
            }
        });
    }
}

/// The output matrix, shared by the threads that write disjoint columns of it.
struct Output(*mut f32);
// SAFETY: see `Linear::forward`: threads write disjoint elements, and it waits for them all.
unsafe impl Sync for Output {}

impl Output {
    // A method, not the field: closures then capture the `Sync` wrapper, not the raw pointer.
    fn start(&self) -> *mut f32 {
        self.0
    }
}

multiversion! {
    fn gelu(values: &mut [f32]) {
        for value in values {
            *value = super::math::gelu(*value);
        }
    }
}

/// `block[r][c] = start[c] + Σ_p a[r][p]·w[p][c]` over BF16 pairs, for the first `rows` rows.
fn dot(
    isa: Isa,
    inputs: &[u32],
    rows: usize,
    weights: &[u32],
    pairs: usize,
    start: &[f32; COLUMNS],
    block: &mut Block,
) {
    assert!(rows <= ROWS && inputs.len() >= rows * pairs && weights.len() >= pairs * COLUMNS);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Bf16 {
        // SAFETY: `isa` says the CPU has AVX-512 BF16; the slices' lengths are checked above.
        unsafe {
            match rows {
                1 => avx512::dot::<1>(inputs, weights, pairs, start, block),
                2 => avx512::dot::<2>(inputs, weights, pairs, start, block),
                3 => avx512::dot::<3>(inputs, weights, pairs, start, block),
                4 => avx512::dot::<4>(inputs, weights, pairs, start, block),
                5 => avx512::dot::<5>(inputs, weights, pairs, start, block),
                6 => avx512::dot::<6>(inputs, weights, pairs, start, block),
                7 => avx512::dot::<7>(inputs, weights, pairs, start, block),
                _ => avx512::dot::<8>(inputs, weights, pairs, start, block),
            }
        }
        return;
    }
    dot_portable(isa, inputs, rows, weights, pairs, start, block);
}

multiversion! {
    fn dot_portable(
        inputs: &[u32],
        rows: usize,
        weights: &[u32],
        pairs: usize,
        start: &[f32; COLUMNS],
        block: &mut Block,
    ) {
        for (row, sums) in inputs.chunks_exact(pairs).take(rows).zip(block.iter_mut()) {
            *sums = *start;
            for (&input, lanes) in row.iter().zip(weights.chunks_exact(COLUMNS)) {
                let (x0, x1) = unpair(input);
                for (sum, &lane) in sums.iter_mut().zip(lanes) {
                    let (w0, w1) = unpair(lane);
                    *sum += x0 * w0 + x1 * w1;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Block, COLUMNS};

    /// The BF16 kernel: `R` rows × 32 columns of f32 sums in registers, starting from `start`, one `vdpbf16ps` per
    /// row, register and pair of inputs.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512 BF16; `inputs` holds `R × pairs` words and
    /// `weights` `pairs × 32`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dot<const R: usize>(
        inputs: &[u32],
        weights: &[u32],
        pairs: usize,
        start: &[f32; COLUMNS],
        block: &mut Block,
    ) {
        let a = inputs.as_ptr();
        let w = weights.as_ptr();
        // SAFETY: `start` holds 32 f32.
        let first = unsafe {
            [
                _mm512_loadu_ps(start.as_ptr()),
                _mm512_loadu_ps(start.as_ptr().add(16)),
            ]
        };
        let mut sums = [first; R];
        for p in 0..pairs {
            // SAFETY: p < pairs, so both halves of the 32 words lie inside `weights`.
            let (low, high): (__m512bh, __m512bh) = unsafe {
                (
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        w.add(p * COLUMNS).cast(),
                    )),
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        w.add(p * COLUMNS + 16).cast(),
                    )),
                )
            };
            for (r, sum) in sums.iter_mut().enumerate() {
                // SAFETY: r < R and p < pairs: inside `inputs`.
                let x: __m512bh = unsafe {
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                        *a.add(r * pairs + p) as i32,
                    ))
                };
                sum[0] = _mm512_dpbf16_ps(sum[0], x, low);
                sum[1] = _mm512_dpbf16_ps(sum[1], x, high);
            }
        }
        for (sum, out) in sums.iter().zip(block.iter_mut()) {
            // SAFETY: each row of `block` holds 32 f32.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr(), sum[0]);
                _mm512_storeu_ps(out.as_mut_ptr().add(16), sum[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], weight: &[f32], bias: &[f32], inputs: usize) -> Vec<f32> {
        let round = |v: f32| f32::from_bits(u32::from(bf16(v)) << 16) as f64;
        let outputs = bias.len();
        x.chunks_exact(inputs)
            .flat_map(|row| {
                (0..outputs).map(move |n| {
                    let dot: f64 = (0..inputs)
                        .map(|k| round(row[k]) * round(weight[n * inputs + k]))
                        .sum();
                    (dot + bias[n] as f64) as f32
                })
            })
            .collect()
    }

    #[test]
    fn every_isa_and_shape_matches_a_plain_product() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // Shapes with odd inputs, partial panels and partial row blocks.
        for (rows, inputs, outputs) in [
            (1, 2, 32),
            (3, 7, 40),
            (8, 64, 64),
            (13, 33, 96),
            (17, 384, 33),
        ] {
            let x: Vec<f32> = (0..rows * inputs)
                .map(|i| ((i * 7919) % 201) as f32 / 50.0 - 2.0)
                .collect();
            let weight: Vec<f32> = (0..outputs * inputs)
                .map(|i| ((i * 104_729) % 199) as f32 / 400.0 - 0.25)
                .collect();
            let bias: Vec<f32> = (0..outputs).map(|i| i as f32 / 10.0).collect();
            let expected = reference(&x, &weight, &bias, inputs);
            let linear = Linear::new(&weight, bias, outputs, inputs);
            for isa in Isa::supported() {
                let mut out = vec![f32::NAN; rows * outputs];
                pool.install(|| linear.forward(isa, &x, &mut out, Activation::Identity));
                for (got, want) in out.iter().zip(&expected) {
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{isa:?} {rows}×{inputs}→{outputs}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_matrix_packs_alike_by_columns_and_by_rows() {
        // 40 columns (a partial second panel) of depth 7 (an odd last pair).
        let (columns, depth) = (40, 7);
        let element = |c: usize, k: usize| (c * 10 + k) as f32 / 8.0;
        let by_column: Vec<Vec<f32>> = (0..columns)
            .map(|c| (0..depth).map(|k| element(c, k)).collect())
            .collect();
        let by_row: Vec<Vec<f32>> = (0..depth)
            .map(|k| (0..columns).map(|c| element(c, k)).collect())
            .collect();
        let a = Packed::from_columns(by_column.iter().map(Vec::as_slice), depth);
        let b = Packed::from_rows(by_row.iter().map(Vec::as_slice), columns);
        assert_eq!(a.panels, b.panels);
        // Column 33, pair 3: its last value and a zero.
        let word = a.panels[a.pairs * COLUMNS + 3 * COLUMNS + 1];
        assert_eq!(unpair(word), (element(33, 6), 0.0));
    }

    #[test]
    fn gelu_is_applied_after_the_bias() {
        let linear = Linear::new(&[1.0, 0.0, 0.0, 1.0], vec![1.0, -3.0], 2, 2);
        for isa in Isa::supported() {
            let mut out = [0.0; 2];
            linear.forward(isa, &[0.5, 1.0], &mut out, Activation::Gelu);
            assert!((out[0] - super::super::math::gelu(1.5)).abs() < 1e-6);
            assert!((out[1] - super::super::math::gelu(-2.0)).abs() < 1e-6);
        }
    }
}
