//! Quantized products, the engine's hot loop: weight matrices in GGUF's Q4_1 and Q8_0 blocks
//! times activations quantized to 8 bits per block of 32 values (as llama.cpp does). The block
//! dot products have kernels for AVX-512 VNNI (`vpdpbusd`), AVX2 (`vpmaddubsw`) and any CPU,
//! picked once at run time, so that the release binary runs on any x86-64; the tests hold every
//! kernel this CPU can run to the portable one.
//!
//! Q4_1 block (20 bytes): scale `d` and minimum `m` (f16), then 16 bytes whose low nibbles are
//! values 0–15 and high nibbles values 16–31; value = d·q + m. Q8_0 block (34 bytes): `d` (f16)
//! and 32 signed bytes; value = d·q.

use half::f16;
use std::ops::Range;

use std::sync::Mutex;

use crate::team;

/// Values per block, in weights and activations alike.
pub const BLOCK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_1,
    Q8_0,
}

impl Format {
    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("a row of {0} values is not whole blocks of {BLOCK}")]
    PartialBlock(usize),
    #[error("{format:?} data of {rows}×{columns} needs {expected} bytes, not {actual}")]
    Size {
        format: Format,
        rows: usize,
        columns: usize,
        expected: usize,
        actual: usize,
    },
}

/// A weight matrix as GGUF stores it: `rows` rows of `columns` values, each row a run of blocks.
pub struct QuantMatrix {
    format: Format,
    rows: usize,
    columns: usize,
    data: Vec<u8>,
}

impl QuantMatrix {
    pub fn new(
        format: Format,
        rows: usize,
        columns: usize,
        data: Vec<u8>,
    ) -> Result<Self, QuantError> {
        if !columns.is_multiple_of(BLOCK) {
            return Err(QuantError::PartialBlock(columns));
        }
        let expected = rows * columns / BLOCK * format.block_bytes();
        if data.len() != expected {
            return Err(QuantError::Size {
                format,
                rows,
                columns,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self {
            format,
            rows,
            columns,
            data,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn columns(&self) -> usize {
        self.columns
    }

    fn row(&self, row: usize) -> &[u8] {
        let bytes = self.columns / BLOCK * self.format.block_bytes();
        &self.data[row * bytes..(row + 1) * bytes]
    }

    /// Asks for `rows` (those that exist) to be brought into the cache ahead of their use.
    fn prefetch_rows(&self, rows: Range<usize>) {
        let bytes = self.columns / BLOCK * self.format.block_bytes();
        let end = (rows.end.min(self.rows) * bytes).min(self.data.len());
        let start = (rows.start * bytes).min(end);
        #[cfg(target_arch = "x86_64")]
        for line in (start..end).step_by(64) {
            // SAFETY: a prefetch of an address inside `data`; it reads nothing.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    self.data.as_ptr().add(line) as *const i8,
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (start, end);
    }

    /// One row in f32 (an embedding lookup).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let bytes = self.format.block_bytes();
        for (block, values) in self
            .row(row)
            .chunks_exact(bytes)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let d = half_at(block, 0);
            match self.format {
                Format::Q4_1 => {
                    let m = half_at(block, 2);
                    for (j, &byte) in block[4..20].iter().enumerate() {
                        values[j] = d * f32::from(byte & 0x0f) + m;
                        values[j + 16] = d * f32::from(byte >> 4) + m;
                    }
                }
                Format::Q8_0 => {
                    for (value, &q) in values.iter_mut().zip(&block[2..34]) {
                        *value = d * f32::from(q as i8);
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn half_at(block: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[at], block[at + 1]])).to_f32()
}

/// A vector quantized to 8 bits per block (llama.cpp's Q8_1): per block its scale, the sum of
/// its values (scale × the sum of its quanta, which Q4_1's minimum multiplies), and the quanta.
#[derive(Debug, Clone, Default)]
pub struct Q8Vector {
    scales: Vec<f32>,
    sums: Vec<f32>,
    quanta: Vec<i8>,
}

impl Q8Vector {
    pub fn quantize(values: &[f32]) -> Self {
        let mut vector = Self::default();
        vector.quantize_from(values);
        vector
    }

    /// Requantizes in place (the buffers are kept between tokens).
    pub fn quantize_from(&mut self, values: &[f32]) {
        assert!(values.len().is_multiple_of(BLOCK), "whole blocks only");
        let blocks = values.len() / BLOCK;
        self.scales.resize(blocks, 0.0);
        self.sums.resize(blocks, 0.0);
        self.quanta.resize(values.len(), 0);
        // As llama.cpp's x86 code does it, to the rounding: the inverse is 127 / max, halves
        // round to even, the scale and the sum are stored as f16. The model's greedy answers
        // then match llama.cpp's (small models amplify the last bit of a product).
        for (b, block) in values.chunks_exact(BLOCK).enumerate() {
            let amax = block.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inverse = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in self.quanta[b * BLOCK..(b + 1) * BLOCK]
                .iter_mut()
                .zip(block)
            {
                *q = round_ties_even(v * inverse) as i8;
                sum += i32::from(*q);
            }
            self.scales[b] = f16::from_f32(scale).to_f32();
            self.sums[b] = f16::from_f32(scale * sum as f32).to_f32();
        }
    }

    pub fn len(&self) -> usize {
        self.quanta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.quanta.is_empty()
    }
}

/// Rounds half to even for |value| ≤ 2²²: adding and taking away 1.5 × 2²³ leaves the
/// default rounding of the addition to do it (what `f32::round_ties_even` calls libm for).
#[inline(always)]
fn round_ties_even(value: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (value + MAGIC) - MAGIC
}

/// The kernels this CPU can run, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX-512 (F, BW, VL) with VNNI, on top of AVX2.
    Avx512Vnni,
}

impl Isa {
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni")
            {
                return Self::Avx512Vnni;
            }
            if avx2 {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// Every level this CPU runs, best first.
    pub fn supported() -> Vec<Self> {
        let best = Self::detect();
        [Self::Avx512Vnni, Self::Avx2, Self::Portable]
            .into_iter()
            .filter(|isa| *isa <= best)
            .collect()
    }
}

/// One weight row times a quantized vector.
pub fn dot(isa: Isa, format: Format, row: &[u8], x: &Q8Vector) -> f32 {
    tile(isa, format, [row], [x])[0][0]
}

/// `R` weight rows times `T` quantized vectors: each row's blocks are unpacked once for all
/// the vectors, and the `R × T` sums are independent chains the CPU runs side by side. Each
/// result is exactly [`dot`]'s (the same operations in the same order), whatever the tile.
#[inline(always)]
pub fn tile<const R: usize, const T: usize>(
    isa: Isa,
    format: Format,
    rows: [&[u8]; R],
    xs: [&Q8Vector; T],
) -> [[f32; T]; R] {
    debug_assert!(
        rows.iter()
            .all(|row| row.len() / format.block_bytes() * BLOCK == xs[0].len())
    );
    debug_assert!(xs.iter().all(|x| x.len() == xs[0].len()));
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `isa` came from `Isa::detect`, so this CPU has the features each kernel
        // enables; the kernels read within the rows and vectors, whose lengths agree (checked
        // above in debug builds, and by `QuantMatrix`/`Q8Vector` construction in the callers).
        unsafe {
            match isa {
                Isa::Avx512Vnni => return x86::tile_vnni(format, rows, xs),
                Isa::Avx2 => return x86::tile_avx2(format, rows, xs),
                Isa::Portable => {}
            }
        }
    }
    rows.map(|row| xs.map(|x| portable::dot(format, row, x)))
}

/// `T` vectors times `rows`, in tiles of a few rows (measured with
/// `bench/src/bin/quant_kernels.rs`): for one vector (decoding), four Q4_1 rows at once hide the
/// latency of each row's chain of sums (1.5× one row), two for rows of [`LONG_ROW`] columns or
/// more (four such rows from memory ran at half the speed of two); for four or eight vectors
/// (prompts, batches), two Q4_1 rows where AVX-512 gives 32 vector registers for the sums. Q8_0
/// rows go one at a time: interleaved, their 34-byte blocks (straddling cache lines) run at half
/// speed from memory.
const LONG_ROW: usize = 1024;

fn sweep_vectors<const T: usize>(
    isa: Isa,
    matrix: &QuantMatrix,
    rows: Range<usize>,
    xs: [&Q8Vector; T],
    store: impl FnMut(usize, usize, f32),
) {
    let format = matrix.format;
    let one = |rows: [&[u8]; 1]| tile::<1, T>(isa, format, rows, xs);
    match format {
        Format::Q4_1 if T == 1 && matrix.columns < LONG_ROW => sweep(
            matrix,
            rows,
            |r: [&[u8]; 4]| tile::<4, T>(isa, format, r, xs),
            one,
            store,
        ),
        Format::Q4_1 if T == 1 => sweep(
            matrix,
            rows,
            |r: [&[u8]; 2]| tile::<2, T>(isa, format, r, xs),
            one,
            store,
        ),
        Format::Q4_1 if isa == Isa::Avx512Vnni => sweep(
            matrix,
            rows,
            |r: [&[u8]; 2]| tile::<2, T>(isa, format, r, xs),
            one,
            store,
        ),
        Format::Q4_1 | Format::Q8_0 => sweep(matrix, rows, one, one, store),
    }
}

/// Eight vectors with their scales and sums laid side by side, block by block ([`Octet`]):
/// as [`sweep_vectors`], with the kernel that reads them.
fn sweep_octet(
    isa: Isa,
    matrix: &QuantMatrix,
    rows: Range<usize>,
    octet: &Octet,
    store: impl FnMut(usize, usize, f32),
) {
    let format = matrix.format;
    let one = |rows: [&[u8]; 1]| octet.tile::<1>(isa, format, rows);
    match format {
        Format::Q4_1 if isa == Isa::Avx512Vnni => sweep(
            matrix,
            rows,
            |r: [&[u8]; 2]| octet.tile::<2>(isa, format, r),
            one,
            store,
        ),
        Format::Q4_1 | Format::Q8_0 => sweep(matrix, rows, one, one, store),
    }
}

/// Eight vectors, and their block scales and sums eight to a block (`scales[b][t]` is vector
/// `t`'s scale of block `b`): a tile of eight reads a block's eight scales in one load instead
/// of eight, and adds eight minimum terms in one vector operation.
struct Octet<'a> {
    xs: [&'a Q8Vector; 8],
    scales: Vec<[f32; 8]>,
    sums: Vec<[f32; 8]>,
}

impl<'a> Octet<'a> {
    fn new(xs: [&'a Q8Vector; 8]) -> Self {
        let blocks = xs[0].scales.len();
        let lanes = |values: fn(&Q8Vector) -> &[f32]| -> Vec<[f32; 8]> {
            (0..blocks)
                .map(|b| std::array::from_fn(|t| values(xs[t])[b]))
                .collect()
        };
        Self {
            xs,
            scales: lanes(|x| &x.scales),
            sums: lanes(|x| &x.sums),
        }
    }

    /// `R` rows times the eight vectors: each result exactly [`dot`]'s.
    fn tile<const R: usize>(&self, isa: Isa, format: Format, rows: [&[u8]; R]) -> [[f32; 8]; R] {
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512Vnni {
            debug_assert!(
                rows.iter()
                    .all(|row| row.len() / format.block_bytes() == self.scales.len())
            );
            // SAFETY: `isa` came from `Isa::detect`; the rows hold as many blocks as the
            // vectors (checked in debug builds, and by the callers' construction).
            return unsafe { x86::octet_vnni(format, rows, self) };
        }
        tile::<R, 8>(isa, format, rows, self.xs)
    }
}

/// How far ahead of the rows being multiplied their successors are prefetched. A decoding
/// step's matrices are small (tens of microseconds each) and come from memory: without help
/// each starts at the latency of memory until the hardware's prefetchers catch on.
const PREFETCH_ROWS_AHEAD: usize = 8;

/// `out[r] = row r · x` for every row, the rows shared among the threads.
pub fn matvec(isa: Isa, matrix: &QuantMatrix, x: &Q8Vector, out: &mut [f32]) {
    matvecs(isa, &mut [(matrix, out)], x);
}

/// Several matrices times the same vector in one parallel pass (a layer's query, key and value
/// projections): one hand-off to the threads instead of one per matrix.
pub fn matvecs(isa: Isa, products: &mut [(&QuantMatrix, &mut [f32])], x: &Q8Vector) {
    const ROWS_PER_TASK: usize = 64;
    let mut tasks = Vec::new();
    for (matrix, out) in products.iter_mut() {
        assert_eq!(x.len(), matrix.columns);
        assert_eq!(out.len(), matrix.rows);
        let matrix: &QuantMatrix = matrix;
        for (task, chunk) in out.chunks_mut(ROWS_PER_TASK).enumerate() {
            tasks.push((matrix, task * ROWS_PER_TASK, Mutex::new(chunk)));
        }
    }
    team::for_each(tasks.len(), |task| {
        let (matrix, first, chunk) = &tasks[task];
        let mut chunk = team::part(chunk);
        let rows = *first..first + chunk.len();
        sweep_vectors(isa, matrix, rows, [x], |row, _, value| {
            chunk[row - first] = value;
        });
    });
}

/// `out[t][r] = row r · xs[t]` for several vectors (a prompt's tokens, or the batch's). Each
/// task takes a few rows and runs every vector past them while they are in cache, several
/// vectors per pass over a row.
pub fn matmul(isa: Isa, matrix: &QuantMatrix, xs: &[Q8Vector], out: &mut [f32]) {
    matmuls(isa, &mut [(matrix, out)], xs);
}

/// Several matrices times the same vectors in one parallel pass (a layer's query, key and
/// value projections for a batch), as [`matmul`] each.
pub fn matmuls(isa: Isa, products: &mut [(&QuantMatrix, &mut [f32])], xs: &[Q8Vector]) {
    const ROWS_PER_TASK: usize = 16;
    // A task is 16 rows of one matrix; it writes their part of every vector's output row.
    let mut tasks = Vec::new();
    for (matrix, out) in products.iter_mut() {
        let rows = matrix.rows;
        assert_eq!(out.len(), xs.len() * rows);
        assert!(xs.iter().all(|x| x.len() == matrix.columns));
        let mut parts: Vec<Vec<&mut [f32]>> = (0..rows.div_ceil(ROWS_PER_TASK))
            .map(|_| Vec::with_capacity(xs.len()))
            .collect();
        for output in out.chunks_mut(rows.max(1)) {
            for (task, part) in output.chunks_mut(ROWS_PER_TASK).enumerate() {
                parts[task].push(part);
            }
        }
        let matrix: &QuantMatrix = matrix;
        for (task, parts) in parts.into_iter().enumerate() {
            tasks.push((matrix, task * ROWS_PER_TASK, Mutex::new(parts)));
        }
    }
    // Eight vectors per pass over the rows where there are registers for them (1.1 to 1.5×
    // four), then four, then one at a time.
    let octets: Vec<Octet> = match isa {
        Isa::Avx512Vnni => xs
            .chunks_exact(8)
            .map(|x| Octet::new(std::array::from_fn(|i| &x[i])))
            .collect(),
        _ => Vec::new(),
    };
    team::for_each(tasks.len(), |task| {
        let (matrix, first, outputs) = &tasks[task];
        let mut outputs = team::part(outputs);
        let (matrix, first) = (*matrix, *first);
        let last = (first + ROWS_PER_TASK).min(matrix.rows);
        let fours = (xs.len() - octets.len() * 8) / 4;
        let mut t = 0;
        for octet in &octets {
            sweep_octet(isa, matrix, first..last, octet, |row, i, value| {
                outputs[t + i][row - first] = value;
            });
            t += 8;
        }
        for _ in 0..fours {
            let x = std::array::from_fn(|i| &xs[t + i]);
            sweep_vectors::<4>(isa, matrix, first..last, x, |row, i, value| {
                outputs[t + i][row - first] = value;
            });
            t += 4;
        }
        for x in &xs[t..] {
            sweep_vectors(isa, matrix, first..last, [x], |row, _, value| {
                outputs[t][row - first] = value;
            });
            t += 1;
        }
    });
}

/// Every row in `rows` through `tiles` (`R` rows at a time) and the last few through `one`,
/// each result handed to `store(row, vector, value)`.
#[inline(always)]
fn sweep<const R: usize, const T: usize>(
    matrix: &QuantMatrix,
    rows: Range<usize>,
    tiles: impl Fn([&[u8]; R]) -> [[f32; T]; R],
    one: impl Fn([&[u8]; 1]) -> [[f32; T]; 1],
    mut store: impl FnMut(usize, usize, f32),
) {
    let mut first = rows.start;
    while first + R <= rows.end {
        matrix.prefetch_rows(first + PREFETCH_ROWS_AHEAD..first + PREFETCH_ROWS_AHEAD + R);
        let values = tiles(std::array::from_fn(|i| matrix.row(first + i)));
        for (i, values) in values.iter().enumerate() {
            for (t, &value) in values.iter().enumerate() {
                store(first + i, t, value);
            }
        }
        first += R;
    }
    for row in first..rows.end {
        let [values] = one([matrix.row(row)]);
        for (t, &value) in values.iter().enumerate() {
            store(row, t, value);
        }
    }
}

mod portable {
    use super::*;

    pub fn dot(format: Format, row: &[u8], x: &Q8Vector) -> f32 {
        let bytes = format.block_bytes();
        let mut total = 0.0f32;
        for (b, block) in row.chunks_exact(bytes).enumerate() {
            let quanta = &x.quanta[b * BLOCK..(b + 1) * BLOCK];
            let d = half_at(block, 0);
            match format {
                Format::Q4_1 => {
                    let mut sum = 0i32;
                    for (j, &byte) in block[4..20].iter().enumerate() {
                        sum += i32::from(byte & 0x0f) * i32::from(quanta[j]);
                        sum += i32::from(byte >> 4) * i32::from(quanta[j + 16]);
                    }
                    total += d * x.scales[b] * sum as f32 + half_at(block, 2) * x.sums[b];
                }
                Format::Q8_0 => {
                    let sum: i32 = block[2..34]
                        .iter()
                        .zip(quanta)
                        .map(|(&w, &a)| i32::from(w as i8) * i32::from(a))
                        .sum();
                    total += d * x.scales[b] * sum as f32;
                }
            }
        }
        total
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK, Format, Octet, Q8Vector};

    #[inline(always)]
    unsafe fn half(block: *const u8) -> f32 {
        // SAFETY: the caller's block has its f16 at `block`; F16C is enabled by every caller.
        unsafe {
            let bits = i32::from(u16::from_le_bytes([*block, *block.add(1)]));
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
        }
    }

    #[inline(always)]
    unsafe fn sum8(v: __m256) -> f32 {
        // SAFETY: plain register arithmetic, AVX enabled by every caller.
        unsafe {
            let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
        }
    }

    /// The 32 unsigned 4-bit values of a Q4_1 block, in order, one per byte.
    #[inline(always)]
    unsafe fn nibbles(block: *const u8) -> __m256i {
        // SAFETY: a Q4_1 block has 16 bytes of nibbles at offset 4.
        unsafe {
            let packed = _mm_loadu_si128(block.add(4) as *const __m128i);
            let mask = _mm_set1_epi8(0x0f);
            let low = _mm_and_si128(packed, mask);
            let high = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
            _mm256_set_m128i(high, low)
        }
    }

    /// Turns 32 unsigned bytes and 32 signed bytes into 8 sums of 4 products.
    trait Products {
        unsafe fn products(unsigned: __m256i, signed: __m256i) -> __m256i;
    }

    struct Avx2;
    struct Vnni;

    impl Products for Avx2 {
        #[inline(always)]
        unsafe fn products(unsigned: __m256i, signed: __m256i) -> __m256i {
            // SAFETY: register arithmetic. A pair of products fits i16 without saturating: at
            // most 2 × 15 × 127 for Q4_1's nibbles, 2 × 128 × 127 for Q8_0's bytes.
            unsafe {
                _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned, signed), _mm256_set1_epi16(1))
            }
        }
    }

    impl Products for Vnni {
        #[inline(always)]
        unsafe fn products(unsigned: __m256i, signed: __m256i) -> __m256i {
            // SAFETY: register arithmetic; AVX-512 VNNI and VL are enabled by the callers.
            unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), unsigned, signed) }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile_avx2<const R: usize, const T: usize>(
        format: Format,
        rows: [&[u8]; R],
        xs: [&Q8Vector; T],
    ) -> [[f32; T]; R] {
        // SAFETY: the caller's contract.
        unsafe { tile::<Avx2, R, T>(format, rows, xs) }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn tile_vnni<const R: usize, const T: usize>(
        format: Format,
        rows: [&[u8]; R],
        xs: [&Q8Vector; T],
    ) -> [[f32; T]; R] {
        // SAFETY: the caller's contract.
        unsafe { tile::<Vnni, R, T>(format, rows, xs) }
    }

    /// Every (row, vector) sum accumulates block after block as llama.cpp's x86 kernels do:
    /// eight lanes of `scale × products` fused-multiply-added, the Q4_1 minimums' share added
    /// on the side, the lanes summed at the end.
    #[inline(always)]
    unsafe fn tile<P: Products, const R: usize, const T: usize>(
        format: Format,
        rows: [&[u8]; R],
        xs: [&Q8Vector; T],
    ) -> [[f32; T]; R] {
        // SAFETY: the caller's contract.
        unsafe {
            match format {
                Format::Q4_1 => q4_1_tile::<P, R, T>(rows, xs),
                Format::Q8_0 => q8_0_tile::<P, R, T>(rows, xs),
            }
        }
    }

    /// A tile of `R` rows by the eight vectors of `octet`, each result the same operations in
    /// the same order as [`tile`]'s: per block, `d × scale` for the eight vectors is one vector
    /// product (whose lane `t` is the scalar product) and the eight minimum terms one vector
    /// multiply and add (lane by lane the scalar ones, unfused).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn octet_vnni<const R: usize>(
        format: Format,
        rows: [&[u8]; R],
        octet: &Octet,
    ) -> [[f32; 8]; R] {
        let xs = octet.xs;
        let blocks = octet.scales.len();
        let mut acc = [[_mm256_setzero_ps(); 8]; R];
        let mut minimums = [_mm256_setzero_ps(); R];
        let lane: [__m256i; 8] = std::array::from_fn(|t| _mm256_set1_epi32(t as i32));
        for b in 0..blocks {
            // SAFETY: each row holds `blocks` blocks of `format`, each vector as many blocks.
            unsafe {
                let scales = _mm256_loadu_ps(octet.scales.get_unchecked(b).as_ptr());
                for r in 0..R {
                    let (weights, signs, d) = match format {
                        Format::Q4_1 => {
                            let block = rows[r].as_ptr().add(b * 20);
                            let m = _mm256_set1_ps(half(block.add(2)));
                            let sums = _mm256_loadu_ps(octet.sums.get_unchecked(b).as_ptr());
                            minimums[r] = _mm256_add_ps(minimums[r], _mm256_mul_ps(m, sums));
                            (nibbles(block), None, half(block))
                        }
                        Format::Q8_0 => {
                            let block = rows[r].as_ptr().add(b * 34);
                            let w = _mm256_loadu_si256(block.add(2) as *const __m256i);
                            (_mm256_sign_epi8(w, w), Some(w), half(block))
                        }
                    };
                    let ds = _mm256_mul_ps(_mm256_set1_ps(d), scales);
                    for t in 0..8 {
                        let a = _mm256_loadu_si256(
                            xs[t].quanta.as_ptr().add(b * BLOCK) as *const __m256i
                        );
                        let a = match signs {
                            Some(w) => _mm256_sign_epi8(a, w),
                            None => a,
                        };
                        let sums = Vnni::products(weights, a);
                        let scale = _mm256_permutevar8x32_ps(ds, lane[t]);
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[r][t]);
                    }
                }
            }
        }
        let mut lanes = [[0.0f32; 8]; R];
        for r in 0..R {
            // SAFETY: a store of eight floats into an array of eight.
            unsafe { _mm256_storeu_ps(lanes[r].as_mut_ptr(), minimums[r]) };
        }
        finish(acc, lanes)
    }

    /// Each sum's lanes added up, plus its minimums' share. Plain loops: a closure over the
    /// accumulators would take their address and keep them in memory instead of registers
    /// (measured: a third slower).
    #[inline(always)]
    fn finish<const R: usize, const T: usize>(
        acc: [[__m256; T]; R],
        minimums: [[f32; T]; R],
    ) -> [[f32; T]; R] {
        let mut out = [[0.0; T]; R];
        for r in 0..R {
            for t in 0..T {
                // SAFETY: register arithmetic; AVX is enabled by every caller.
                out[r][t] = unsafe { sum8(acc[r][t]) } + minimums[r][t];
            }
        }
        out
    }

    #[inline(always)]
    unsafe fn q4_1_tile<P: Products, const R: usize, const T: usize>(
        rows: [&[u8]; R],
        xs: [&Q8Vector; T],
    ) -> [[f32; T]; R] {
        let blocks = xs[0].quanta.len() / BLOCK;
        // SAFETY: register arithmetic.
        let mut acc = [[unsafe { _mm256_setzero_ps() }; T]; R];
        let mut minimums = [[0.0f32; T]; R];
        for b in 0..blocks {
            for r in 0..R {
                // SAFETY: each row holds `blocks` Q4_1 blocks of 20 bytes, each vector as
                // many blocks.
                unsafe {
                    let block = rows[r].as_ptr().add(b * 20);
                    let weights = nibbles(block);
                    let (d, m) = (half(block), half(block.add(2)));
                    for t in 0..T {
                        let x = xs[t];
                        let a =
                            _mm256_loadu_si256(x.quanta.as_ptr().add(b * BLOCK) as *const __m256i);
                        let sums = P::products(weights, a);
                        let scale = _mm256_set1_ps(d * *x.scales.get_unchecked(b));
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[r][t]);
                        minimums[r][t] += m * *x.sums.get_unchecked(b);
                    }
                }
            }
        }
        finish(acc, minimums)
    }

    #[inline(always)]
    unsafe fn q8_0_tile<P: Products, const R: usize, const T: usize>(
        rows: [&[u8]; R],
        xs: [&Q8Vector; T],
    ) -> [[f32; T]; R] {
        let blocks = xs[0].quanta.len() / BLOCK;
        // SAFETY: register arithmetic.
        let mut acc = [[unsafe { _mm256_setzero_ps() }; T]; R];
        for b in 0..blocks {
            for r in 0..R {
                // SAFETY: each row holds `blocks` Q8_0 blocks of 34 bytes, each vector as
                // many blocks.
                unsafe {
                    let block = rows[r].as_ptr().add(b * 34);
                    let w = _mm256_loadu_si256(block.add(2) as *const __m256i);
                    let magnitudes = _mm256_sign_epi8(w, w);
                    let d = half(block);
                    for t in 0..T {
                        let x = xs[t];
                        let a =
                            _mm256_loadu_si256(x.quanta.as_ptr().add(b * BLOCK) as *const __m256i);
                        // |w| × (a with w's sign): the unsigned-by-signed product the
                        // instructions take, equal to w × a.
                        let sums = P::products(magnitudes, _mm256_sign_epi8(a, w));
                        let scale = _mm256_set1_ps(d * *x.scales.get_unchecked(b));
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[r][t]);
                    }
                }
            }
        }
        finish(acc, [[0.0; T]; R])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random blocks with scales of a real model's size.
    fn random_matrix(format: Format, rows: usize, columns: usize) -> QuantMatrix {
        let blocks = rows * columns / BLOCK;
        let mut data = Vec::with_capacity(blocks * format.block_bytes());
        for _ in 0..blocks {
            let scale = f16::from_f32(fastrand::f32() * 0.02 + 0.001).to_bits();
            data.extend_from_slice(&scale.to_le_bytes());
            if format == Format::Q4_1 {
                let minimum = f16::from_f32(-fastrand::f32() * 0.1).to_bits();
                data.extend_from_slice(&minimum.to_le_bytes());
                data.extend((0..16).map(|_| fastrand::u8(..)));
            } else {
                data.extend((0..32).map(|_| fastrand::i8(-127..=127) as u8));
            }
        }
        QuantMatrix::new(format, rows, columns, data).unwrap()
    }

    fn random_vector(len: usize) -> Vec<f32> {
        (0..len).map(|_| fastrand::f32() * 4.0 - 2.0).collect()
    }

    #[test]
    fn every_kernel_agrees_with_the_portable_one() {
        for format in [Format::Q4_1, Format::Q8_0] {
            let matrix = random_matrix(format, 8, 1536);
            let x = Q8Vector::quantize(&random_vector(1536));
            for row in 0..matrix.rows() {
                let expected = portable::dot(format, matrix.row(row), &x);
                for isa in Isa::supported() {
                    let got = dot(isa, format, matrix.row(row), &x);
                    let tolerance = 1e-4 * expected.abs().max(1.0);
                    assert!(
                        (got - expected).abs() <= tolerance,
                        "{isa:?} {format:?}: {got} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn products_are_close_to_f32_ones() {
        for format in [Format::Q4_1, Format::Q8_0] {
            let matrix = random_matrix(format, 4, 576);
            let values = random_vector(576);
            let x = Q8Vector::quantize(&values);
            let mut weights = vec![0.0; 576];
            for row in 0..matrix.rows() {
                matrix.dequantize_row(row, &mut weights);
                let exact: f32 = weights.iter().zip(&values).map(|(w, v)| w * v).sum();
                let magnitude: f32 = weights
                    .iter()
                    .zip(&values)
                    .map(|(w, v)| (w * v).abs())
                    .sum();
                let got = dot(Isa::detect(), format, matrix.row(row), &x);
                // 8-bit activations: about half a percent of the products' magnitude.
                assert!(
                    (got - exact).abs() <= 0.01 * magnitude,
                    "{format:?}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn matmul_and_matvec_agree_with_the_dot_products() {
        for format in [Format::Q4_1, Format::Q8_0] {
            let matrix = random_matrix(format, 71, 64);
            // Eight at once (where AVX-512 is), then four, then one.
            let xs: Vec<Q8Vector> = (0..13)
                .map(|_| Q8Vector::quantize(&random_vector(64)))
                .collect();
            for isa in Isa::supported() {
                let mut out = vec![0.0; 13 * 71];
                matmul(isa, &matrix, &xs, &mut out);
                let mut single = vec![0.0; 71];
                for (t, x) in xs.iter().enumerate() {
                    matvec(isa, &matrix, x, &mut single);
                    assert_eq!(
                        &out[t * 71..(t + 1) * 71],
                        &single[..],
                        "{isa:?} {format:?}"
                    );
                    for (row, value) in single.iter().enumerate() {
                        assert_eq!(*value, dot(isa, format, matrix.row(row), x));
                    }
                }
            }
        }
    }

    #[test]
    fn every_tile_is_exactly_one_row_and_one_vector_at_a_time() {
        fn check<const R: usize, const T: usize>(isa: Isa, format: Format) {
            let matrix = random_matrix(format, R, 576);
            let xs: Vec<Q8Vector> = (0..T)
                .map(|_| Q8Vector::quantize(&random_vector(576)))
                .collect();
            let rows = std::array::from_fn(|r| matrix.row(r));
            let together = tile::<R, T>(isa, format, rows, std::array::from_fn(|t| &xs[t]));
            let alone = std::array::from_fn(|r| {
                std::array::from_fn(|t| dot(isa, format, matrix.row(r), &xs[t]))
            });
            assert_eq!(together, alone, "{R}x{T} {isa:?} {format:?}");
        }
        for format in [Format::Q4_1, Format::Q8_0] {
            for isa in Isa::supported() {
                check::<1, 4>(isa, format);
                check::<2, 4>(isa, format);
                check::<4, 1>(isa, format);
                check::<3, 2>(isa, format);
                check::<2, 8>(isa, format);
                check::<1, 8>(isa, format);
            }
        }
    }

    #[test]
    fn eight_vectors_side_by_side_are_exactly_one_at_a_time() {
        fn check<const R: usize>(isa: Isa, format: Format) {
            let matrix = random_matrix(format, R, 576);
            let xs: Vec<Q8Vector> = (0..8)
                .map(|_| Q8Vector::quantize(&random_vector(576)))
                .collect();
            let octet = Octet::new(std::array::from_fn(|t| &xs[t]));
            let together = octet.tile::<R>(isa, format, std::array::from_fn(|r| matrix.row(r)));
            let alone: [[f32; 8]; R] = std::array::from_fn(|r| {
                std::array::from_fn(|t| dot(isa, format, matrix.row(r), &xs[t]))
            });
            assert_eq!(together, alone, "{R} rows, {isa:?} {format:?}");
        }
        for format in [Format::Q4_1, Format::Q8_0] {
            for isa in Isa::supported() {
                check::<1>(isa, format);
                check::<2>(isa, format);
            }
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
    fn sizes_are_checked() {
        assert_eq!(
            QuantMatrix::new(Format::Q4_1, 2, 48, vec![]).err(),
            Some(QuantError::PartialBlock(48))
        );
        assert!(matches!(
            QuantMatrix::new(Format::Q8_0, 2, 64, vec![0; 10]),
            Err(QuantError::Size { expected: 136, .. })
        ));
    }
}
