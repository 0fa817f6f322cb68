//! Quantized products, the engine's hot loop: weight matrices in GGUF's Q4_1 and Q8_0 blocks
//! times activations quantized to 8 bits per block of 32 values (as llama.cpp does).
//!
//! GGUF stores a matrix row after row. At load, [`QuantMatrix`] repacks it, losslessly, into
//! groups of [`GROUP`] rows, block by block: a group's block is one tile in which the eight rows
//! sit in the eight lanes of a SIMD register. One `vpdpbusd` then multiplies four values of each
//! of the eight rows by the same four activations (broadcast), each row's block sum comes out
//! whole in its own lane, and one conversion, one scale and one fused add serve eight rows. A
//! tile is unpacked once for every vector of a batch, whose blocks lie side by side ([`Block`]):
//! in cache, each of eight vectors costs about 60% of a vector alone; decoding one vector from
//! memory, the product waits on the weights more than on the arithmetic.
//!
//! Every kernel (AVX-512 VNNI, AVX2, any CPU; picked once at run time, so that the release
//! binary runs on any x86-64) computes exactly [`reference`]'s arithmetic: a block's sum of
//! products is an exact integer, whatever order the lanes add it in, and the floating-point
//! steps around it are the same, so a sequence's logits are the same bit for bit decoded alone
//! or in a batch of any size, on any of the kernels.
//!
//! Q4_1 block (20 bytes): scale `d` and minimum `m` (f16), then 16 bytes whose low nibbles are
//! values 0–15 and high nibbles values 16–31; value = d·q + m. Q8_0 block (34 bytes): `d` (f16)
//! and 32 signed bytes; value = d·q.

use half::f16;
use std::ops::Range;

use std::sync::Mutex;

use crate::team;
use switchboard_vector_math::cpu::Features;
use switchboard_vector_math::round_ties_even;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Values per block, in weights and activations alike.
pub const BLOCK: usize = 32;

/// Rows per tile: one per lane of a 256-bit register of 32-bit sums.
pub const GROUP: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_1,
    Q8_0,
}

impl Format {
    /// Bytes of one row's block in GGUF.
    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
        }
    }

    /// Bytes of one tile: [`GROUP`] rows' blocks. See [`Tile`].
    const fn tile_bytes(self) -> usize {
        match self {
            Format::Q4_1 => 16 + 16 + 128,
            Format::Q8_0 => 16 + 256,
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

/// A weight matrix of `rows` rows of `columns` values, in tiles: group after group of
/// [`GROUP`] rows (the last one padded with zero rows), each group block after block.
pub struct QuantMatrix {
    format: Format,
    rows: usize,
    columns: usize,
    tiles: Vec<u8>,
}

/// One tile's bytes. The eight scales `d` (f16) come first, then for Q4_1 the eight minimums
/// (f16) and 128 bytes of nibbles, for Q8_0 256 bytes of values. Value `j` of lane `r` is at
/// byte `4r + j % 4` of the 32-byte run `j / 4` (run `k` is what a register holds for the
/// products of the block's values `4k..4k + 4`); Q4_1 keeps runs `k` and `k + 4` in the low
/// and high nibbles of the same bytes, Q8_0 adds 128 to its values so that they are unsigned
/// bytes, what `vpdpbusd` takes (see [`Q8Vector::quanta_sums`]).
struct Tile;

impl Tile {
    const Q4_1_MINIMUMS: usize = 16;
    const Q4_1_VALUES: usize = 32;
    const Q8_0_VALUES: usize = 16;
    const Q8_0_OFFSET: i32 = 128;

    fn scale(tile: &[u8], lane: usize) -> f32 {
        half_at(tile, 2 * lane)
    }

    fn minimum(tile: &[u8], lane: usize) -> f32 {
        half_at(tile, Self::Q4_1_MINIMUMS + 2 * lane)
    }

    /// Where value `j` of `lane` is kept, counted from the first run of values.
    fn at(lane: usize, j: usize) -> usize {
        32 * (j / 4) + 4 * lane + j % 4
    }

    /// Value `j` (0..32) of `lane` as the GGUF block had it: Q4_1's 0..=15, Q8_0's signed.
    fn value(format: Format, tile: &[u8], lane: usize, j: usize) -> i32 {
        match format {
            Format::Q4_1 => {
                let byte = tile[Self::Q4_1_VALUES + Self::at(lane, j % 16)];
                i32::from(if j < 16 { byte & 0x0f } else { byte >> 4 })
            }
            Format::Q8_0 => {
                i32::from(tile[Self::Q8_0_VALUES + Self::at(lane, j)]) - Self::Q8_0_OFFSET
            }
        }
    }

    /// Writes `block` (GGUF's bytes for one row's block) into `tile` as `lane`.
    fn pack(format: Format, block: &[u8], tile: &mut [u8], lane: usize) {
        tile[2 * lane..2 * lane + 2].copy_from_slice(&block[..2]);
        match format {
            Format::Q4_1 => {
                tile[Self::Q4_1_MINIMUMS + 2 * lane..][..2].copy_from_slice(&block[2..4]);
                for (j, &byte) in block[4..20].iter().enumerate() {
                    // Values j and j + 16: the low and high nibbles of one GGUF byte, and of one
                    // tile byte (runs j / 4 and j / 4 + 4).
                    tile[Self::Q4_1_VALUES + Self::at(lane, j)] = byte;
                }
            }
            Format::Q8_0 => {
                for (j, &byte) in block[2..34].iter().enumerate() {
                    tile[Self::Q8_0_VALUES + Self::at(lane, j)] = byte ^ 0x80;
                }
            }
        }
    }
}

impl QuantMatrix {
    /// The matrix in GGUF's bytes (`rows` rows of blocks), repacked into tiles.
    pub fn new(
        format: Format,
        rows: usize,
        columns: usize,
        data: Vec<u8>,
    ) -> Result<Self, QuantError> {
        if !columns.is_multiple_of(BLOCK) {
            return Err(QuantError::PartialBlock(columns));
        }
        let blocks = columns / BLOCK;
        let expected = rows * blocks * format.block_bytes();
        if data.len() != expected {
            return Err(QuantError::Size {
                format,
                rows,
                columns,
                expected,
                actual: data.len(),
            });
        }
        let groups = rows.div_ceil(GROUP);
        let mut tiles = vec![0u8; groups * blocks * format.tile_bytes()];
        if format == Format::Q8_0 {
            // The padding rows' values are zero too, stored with their offset.
            for tile in tiles.chunks_exact_mut(format.tile_bytes()) {
                tile[Tile::Q8_0_VALUES..].fill(0x80);
            }
        }
        for (row, blocks_of_row) in data.chunks_exact(blocks * format.block_bytes()).enumerate() {
            let (group, lane) = (row / GROUP, row % GROUP);
            for (b, block) in blocks_of_row.chunks_exact(format.block_bytes()).enumerate() {
                let tile = (group * blocks + b) * format.tile_bytes();
                Tile::pack(format, block, &mut tiles[tile..], lane);
            }
        }
        Ok(Self {
            format,
            rows,
            columns,
            tiles,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn columns(&self) -> usize {
        self.columns
    }

    fn blocks(&self) -> usize {
        self.columns / BLOCK
    }

    fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }

    /// A group's tiles, block after block.
    fn group(&self, group: usize) -> &[u8] {
        let bytes = self.blocks() * self.format.tile_bytes();
        &self.tiles[group * bytes..(group + 1) * bytes]
    }

    /// One row in f32 (an embedding lookup).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert!(row < self.rows && out.len() == self.columns);
        let lane = row % GROUP;
        let tiles = self
            .group(row / GROUP)
            .chunks_exact(self.format.tile_bytes());
        for (tile, values) in tiles.zip(out.chunks_exact_mut(BLOCK)) {
            let d = Tile::scale(tile, lane);
            for (j, value) in values.iter_mut().enumerate() {
                let q = Tile::value(self.format, tile, lane, j) as f32;
                *value = match self.format {
                    Format::Q4_1 => d * q + Tile::minimum(tile, lane),
                    Format::Q8_0 => d * q,
                };
            }
        }
    }
}

#[inline(always)]
fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// A vector quantized to 8 bits per block (llama.cpp's Q8_1): per block its scale, the sum of
/// its values (scale × the sum of its quanta, which Q4_1's minimum multiplies), the sum of its
/// quanta, and the quanta.
#[derive(Debug, Clone, Default)]
pub struct Q8Vector {
    scales: Vec<f32>,
    sums: Vec<f32>,
    /// What a Q8_0 tile's offset of 128 adds to a block's sum of products, divided by 128.
    quanta_sums: Vec<i32>,
    quanta: Vec<i8>,
}

impl Q8Vector {
    pub fn quantize(values: &[f32]) -> Self {
        let mut vector = Self::default();
        vector.quantize_from(values);
        vector
    }

    /// Requantizes in place (the buffers are kept between tokens).
    #[inline]
    pub fn quantize_from(&mut self, values: &[f32]) {
        assert!(values.len().is_multiple_of(BLOCK), "whole blocks only");
        let blocks = values.len() / BLOCK;
        self.scales.resize(blocks, 0.0);
        self.sums.resize(blocks, 0.0);
        self.quanta_sums.resize(blocks, 0);
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
            self.quanta_sums[b] = sum;
        }
    }

    pub fn len(&self) -> usize {
        self.quanta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.quanta.is_empty()
    }
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
        let cpu = Features::detect();
        let avx2 = cpu.avx2 && cpu.fma && cpu.f16c;
        if avx2 && cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512vnni {
            Self::Avx512Vnni
        } else if avx2 {
            Self::Avx2
        } else {
            Self::Portable
        }
    }

    /// Every level this CPU runs, best first.
    pub fn supported() -> Vec<Self> {
        let best = Self::detect();
        [Self::Avx512Vnni, Self::Avx2, Self::Portable]
            .into_iter()
            .filter(|isa| *isa <= best)
            .collect()
    }

    /// How many vectors a kernel takes past a tile at most: as many as there are registers
    /// to keep their sums in (AVX-512 has 32, AVX2 16, eight of which hold the tile).
    fn vectors_per_pass(self) -> usize {
        match self {
            Isa::Avx512Vnni => 8,
            Isa::Avx2 | Isa::Portable => 4,
        }
    }
}

/// A group's [`GROUP`] rows times each of `xs`: `out[t][r]` is row `r` · `xs[t]`.
///
/// The arithmetic every kernel reproduces: per block, the exact integer sum of the products of
/// the quanta, converted to f32 and fused-multiply-added with scale × the vector's scale (one
/// rounded product) into the row's sum; for Q4_1 the minimum times the vector's block sum
/// fused-multiply-added into a second sum, the two added at the end.
fn reference<const T: usize>(
    format: Format,
    tiles: &[u8],
    xs: [&Q8Vector; T],
) -> [[f32; GROUP]; T] {
    let mut out = [[0.0; GROUP]; T];
    for (t, x) in xs.iter().enumerate() {
        for (lane, out) in out[t].iter_mut().enumerate() {
            let (mut products, mut minimums) = (0.0f32, 0.0f32);
            for (b, tile) in tiles.chunks_exact(format.tile_bytes()).enumerate() {
                let quanta = &x.quanta[b * BLOCK..(b + 1) * BLOCK];
                let sum: i32 = (0..BLOCK)
                    .map(|j| Tile::value(format, tile, lane, j) * i32::from(quanta[j]))
                    .sum();
                let scale = Tile::scale(tile, lane) * x.scales[b];
                products = (sum as f32).mul_add(scale, products);
                if format == Format::Q4_1 {
                    minimums = Tile::minimum(tile, lane).mul_add(x.sums[b], minimums);
                }
            }
            *out = match format {
                Format::Q4_1 => products + minimums,
                Format::Q8_0 => products,
            };
        }
    }
    out
}

/// `T` vectors as the kernels read them: the vectors themselves, and their blocks side by side
/// ([`Block`]).
struct Batch<'a, const T: usize> {
    vectors: [&'a Q8Vector; T],
    blocks: Vec<Block<T>>,
}

/// Block `b` of `T` vectors, side by side: one pointer reaches everything a kernel reads of
/// them, at offsets fixed when it is compiled (with a pointer per vector, the kernels for eight
/// ran out of registers and reloaded them at every block).
#[repr(C)]
#[derive(Clone, Copy)]
struct Block<const T: usize> {
    quanta: [[i8; BLOCK]; T],
    scales: [f32; T],
    sums: [f32; T],
    quanta_sums: [i32; T],
}

impl<'a, const T: usize> Batch<'a, T> {
    fn new(vectors: [&'a Q8Vector; T]) -> Self {
        let blocks = (0..vectors[0].scales.len())
            .map(|b| Block {
                quanta: std::array::from_fn(|t| {
                    let quanta = &vectors[t].quanta[b * BLOCK..(b + 1) * BLOCK];
                    quanta.try_into().expect("a whole block")
                }),
                scales: std::array::from_fn(|t| vectors[t].scales[b]),
                sums: std::array::from_fn(|t| vectors[t].sums[b]),
                quanta_sums: std::array::from_fn(|t| vectors[t].quanta_sums[b]),
            })
            .collect();
        Self { vectors, blocks }
    }

    /// `xs` in batches of `T` from its start, as many whole ones as there are.
    fn all(xs: &'a [Q8Vector]) -> Vec<Self> {
        xs.chunks_exact(T)
            .map(|chunk| Self::new(std::array::from_fn(|t| &chunk[t])))
            .collect()
    }
}

/// One group's rows times a batch of vectors, on the best kernel `isa` allows.
#[inline(always)]
fn group_products<const T: usize>(
    isa: Isa,
    matrix: &QuantMatrix,
    group: usize,
    batch: &Batch<T>,
) -> [[f32; GROUP]; T] {
    let tiles = matrix.group(group);
    debug_assert!(batch.vectors.iter().all(|x| x.len() == matrix.columns));
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `isa` came from `Isa::detect`, so this CPU has the features each kernel
        // enables; `tiles` holds as many tiles of the matrix's format as the batch has blocks
        // (asserted by the public functions below, whose callers these are).
        unsafe {
            let blocks = &batch.blocks;
            match isa {
                Isa::Avx512Vnni => return x86::group_vnni(matrix.format, tiles, blocks),
                Isa::Avx2 => return x86::group_avx2(matrix.format, tiles, blocks),
                Isa::Portable => {}
            }
        }
    }
    reference(matrix.format, tiles, batch.vectors)
}

/// Each group in `groups` times a batch; `store(row, t, value)` takes the real rows' results,
/// not the padding's.
#[inline(always)]
fn sweep<const T: usize>(
    isa: Isa,
    matrix: &QuantMatrix,
    groups: Range<usize>,
    batch: &Batch<T>,
    mut store: impl FnMut(usize, usize, f32),
) {
    for group in groups {
        let values = group_products(isa, matrix, group, batch);
        let rows = group * GROUP..((group + 1) * GROUP).min(matrix.rows);
        for (t, values) in values.iter().enumerate() {
            for (row, &value) in rows.clone().zip(values) {
                store(row, t, value);
            }
        }
    }
}

/// `out[r] = row r · x` for every row, the rows shared among the threads.
pub fn matvec(isa: Isa, matrix: &QuantMatrix, x: &Q8Vector, out: &mut [f32]) {
    matvecs(isa, &mut [(matrix, out)], x);
}

/// Several matrices times the same vector in one parallel pass (a layer's query, key and value
/// projections): one hand-off to the threads instead of one per matrix.
pub fn matvecs(isa: Isa, products: &mut [(&QuantMatrix, &mut [f32])], x: &Q8Vector) {
    const GROUPS_PER_TASK: usize = 8;
    let mut tasks = Vec::new();
    for (matrix, out) in products.iter_mut() {
        assert_eq!(x.len(), matrix.columns);
        assert_eq!(out.len(), matrix.rows);
        let matrix: &QuantMatrix = matrix;
        for (task, chunk) in out.chunks_mut(GROUPS_PER_TASK * GROUP).enumerate() {
            let first = task * GROUPS_PER_TASK;
            tasks.push((matrix, first, Mutex::new(chunk)));
        }
    }
    let batch = Batch::new([x]);
    team::for_each(tasks.len(), |task| {
        let (matrix, first, chunk) = &tasks[task];
        let mut chunk = team::part(chunk);
        let groups = *first..(first + GROUPS_PER_TASK).min(matrix.groups());
        let first_row = first * GROUP;
        sweep(isa, matrix, groups, &batch, |row, _, value| {
            chunk[row - first_row] = value;
        });
    });
}

/// `out[t][r] = row r · xs[t]` for several vectors (a prompt's tokens, or the batch's). Each
/// task takes a few groups of rows and runs every vector past them while they are in cache,
/// several vectors per pass over a tile.
pub fn matmul(isa: Isa, matrix: &QuantMatrix, xs: &[Q8Vector], out: &mut [f32]) {
    matmuls(isa, &mut [(matrix, out)], xs);
}

/// Several matrices times the same vectors in one parallel pass (a layer's query, key and
/// value projections for a batch), as [`matmul`] each.
pub fn matmuls(isa: Isa, products: &mut [(&QuantMatrix, &mut [f32])], xs: &[Q8Vector]) {
    const GROUPS_PER_TASK: usize = 2;
    const ROWS_PER_TASK: usize = GROUPS_PER_TASK * GROUP;
    if xs.is_empty() {
        return;
    }
    // A task is two groups of one matrix; it writes their part of every vector's output row.
    // Those parts lie task after task in one list (`parts[task * xs.len() + t]`), not in a list
    // per task: an output matrix has thousands of tasks, and as many allocations a step showed.
    let mut parts: Vec<&mut [f32]> = Vec::new();
    let mut starts = Vec::new();
    for (matrix, out) in products.iter_mut() {
        let rows = matrix.rows;
        assert_eq!(out.len(), xs.len() * rows);
        assert!(xs.iter().all(|x| x.len() == matrix.columns));
        let mut outputs: Vec<_> = out
            .chunks_mut(rows.max(1))
            .map(|output| output.chunks_mut(ROWS_PER_TASK))
            .collect();
        for task in 0..rows.div_ceil(ROWS_PER_TASK) {
            starts.push((&**matrix, task * GROUPS_PER_TASK));
            parts.extend(
                outputs
                    .iter_mut()
                    .map(|o| o.next().expect("a part per task")),
            );
        }
    }
    let tasks: Vec<_> = starts
        .into_iter()
        .zip(parts.chunks_mut(xs.len()))
        .map(|((matrix, first), parts)| (matrix, first, Mutex::new(parts)))
        .collect();
    // Eight vectors per pass where there are registers for them, then four, then one by one.
    let eights = match isa.vectors_per_pass() {
        8 => Batch::<8>::all(xs),
        _ => Vec::new(),
    };
    let fours = Batch::<4>::all(&xs[eights.len() * 8..]);
    let ones = Batch::<1>::all(&xs[eights.len() * 8 + fours.len() * 4..]);
    team::for_each(tasks.len(), |task| {
        let (matrix, first, outputs) = &tasks[task];
        let mut outputs = team::part(outputs);
        let groups = *first..(first + GROUPS_PER_TASK).min(matrix.groups());
        let task = Task {
            matrix,
            groups,
            first_row: first * GROUP,
        };
        let next = task.sweep_batches(isa, &eights, &mut outputs, 0);
        let next = task.sweep_batches(isa, &fours, &mut outputs, next);
        task.sweep_batches(isa, &ones, &mut outputs, next);
    });
}

/// A task of [`matmuls`]: `groups` of `matrix`, whose first row is `first_row`.
struct Task<'m> {
    matrix: &'m QuantMatrix,
    groups: Range<usize>,
    first_row: usize,
}

impl Task<'_> {
    /// Each of `batches` past the task's groups, the batches' vectors being those from
    /// `first` on; `outputs` are the task's parts of each vector's output. Returns the vector
    /// after the last batch's.
    fn sweep_batches<const T: usize>(
        &self,
        isa: Isa,
        batches: &[Batch<T>],
        outputs: &mut [&mut [f32]],
        mut first: usize,
    ) -> usize {
        for batch in batches {
            let store = |row: usize, t: usize, value: f32| {
                outputs[first + t][row - self.first_row] = value;
            };
            sweep(isa, self.matrix, self.groups.clone(), batch, store);
            first += T;
        }
        first
    }
}

#[cfg(test)]
mod tests;
