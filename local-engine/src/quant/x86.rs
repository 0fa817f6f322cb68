//! The tile kernels for x86-64, AVX-512 VNNI (`vpdpbusd`) and AVX2 (`vpmaddubsw`): each is
//! [`super::reference`]'s arithmetic to the bit, eight rows to a register.

use std::arch::x86_64::*;

use super::{Block, Format, GROUP, Tile};

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn group_avx2<const T: usize>(
    format: Format,
    tiles: &[u8],
    blocks: &[Block<T>],
) -> [[f32; GROUP]; T] {
    // SAFETY: the caller's contract: this CPU has the features enabled above, `tiles` holds
    // as many tiles of `format` as there are `blocks`.
    unsafe { group::<Avx2, T>(format, tiles, blocks) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn group_vnni<const T: usize>(
    format: Format,
    tiles: &[u8],
    blocks: &[Block<T>],
) -> [[f32; GROUP]; T] {
    // SAFETY: as `group_avx2`.
    unsafe { group::<Vnni, T>(format, tiles, blocks) }
}

/// A block's eight lanes of exact sums of products: a tile's values, unpacked to bytes (`w[k]`
/// holds values `4k..4k + 4` of each lane), times one vector's 32 quanta, each run of four
/// broadcast to every lane.
trait Products {
    /// Q4_1's values, 0 to 15.
    unsafe fn nibble_sums(w: &[__m256i; 8], quanta: *const i8) -> __m256i;
    /// Q8_0's values as a tile stores them, plus 128; `quanta_sum` is the block's sum of quanta.
    unsafe fn byte_sums(w: &[__m256i; 8], quanta: *const i8, quanta_sum: i32) -> __m256i;
}

struct Avx2;
struct Vnni;

/// Quanta `4k..4k + 4` in every lane.
#[inline(always)]
unsafe fn broadcast(quanta: *const i8, k: usize) -> __m256i {
    // SAFETY: the caller's block has 32 quanta; AVX is enabled by every caller.
    unsafe { _mm256_set1_epi32(quanta.add(4 * k).cast::<i32>().read_unaligned()) }
}

impl Products for Vnni {
    #[inline(always)]
    unsafe fn nibble_sums(w: &[__m256i; 8], quanta: *const i8) -> __m256i {
        // SAFETY: register arithmetic and the caller's block; AVX-512 VNNI and VL are enabled
        // by the callers. Two chains of sums, for the CPU to run side by side.
        unsafe {
            let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for k in (0..8).step_by(2) {
                even = _mm256_dpbusd_epi32(even, w[k], broadcast(quanta, k));
                odd = _mm256_dpbusd_epi32(odd, w[k + 1], broadcast(quanta, k + 1));
            }
            _mm256_add_epi32(even, odd)
        }
    }

    #[inline(always)]
    unsafe fn byte_sums(w: &[__m256i; 8], quanta: *const i8, quanta_sum: i32) -> __m256i {
        // SAFETY: as `nibble_sums`, which multiplies any unsigned bytes.
        unsafe {
            let offset = _mm256_set1_epi32(quanta_sum * Tile::Q8_0_OFFSET);
            _mm256_sub_epi32(Self::nibble_sums(w, quanta), offset)
        }
    }
}

impl Products for Avx2 {
    #[inline(always)]
    unsafe fn nibble_sums(w: &[__m256i; 8], quanta: *const i8) -> __m256i {
        // SAFETY: register arithmetic and the caller's block. A pair of products of a nibble
        // and a quantum is at most 2 × 15 × 128 in size, eight pairs 30,720: the 16-bit sums
        // cannot saturate before they are widened.
        unsafe {
            let mut pairs = _mm256_setzero_si256();
            for (k, &w) in w.iter().enumerate() {
                pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(w, broadcast(quanta, k)));
            }
            _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
        }
    }

    #[inline(always)]
    unsafe fn byte_sums(w: &[__m256i; 8], quanta: *const i8, _: i32) -> __m256i {
        // SAFETY: register arithmetic and the caller's block. 128 + w can be 255, too large
        // for pairs of 16-bit sums: the values' sign moves onto the quanta instead, and
        // |w| × (a with w's sign), at most 2 × 128 × 127 a pair, is the unsigned-by-signed
        // product the instruction takes.
        unsafe {
            let mut sums = _mm256_setzero_si256();
            for (k, &w) in w.iter().enumerate() {
                let signed = _mm256_xor_si256(w, _mm256_set1_epi8(i8::MIN));
                let pairs = _mm256_maddubs_epi16(
                    _mm256_abs_epi8(signed),
                    _mm256_sign_epi8(broadcast(quanta, k), signed),
                );
                sums = _mm256_add_epi32(sums, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
            }
            sums
        }
    }
}

/// How far ahead of the tile being multiplied the kernels ask for the weights, a few lines per
/// tile: a decoding step's matrices are small and come from memory, and without help each would
/// start at the latency of memory until the hardware's prefetchers catch on. (Asking for a whole
/// group at once stalled the kernel on the CPU's queue of misses.)
const PREFETCH_AHEAD: usize = 2048;

/// Asks for the `bytes` that lie [`PREFETCH_AHEAD`] beyond `tile`, wherever that is: a prefetch
/// reads nothing and never faults, so the last tiles of a matrix need no check.
#[inline(always)]
unsafe fn prefetch_ahead(tile: *const u8, bytes: usize) {
    for line in (0..bytes).step_by(64) {
        let at = tile.wrapping_add(PREFETCH_AHEAD + line) as *const i8;
        // SAFETY: a prefetch; SSE is enabled by every caller.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at) };
    }
}

/// Eight f16 values from `at`, in f32.
#[inline(always)]
unsafe fn halves(at: *const u8) -> __m256 {
    // SAFETY: the caller's tile has eight f16 at `at`; F16C is enabled by every caller.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(at as *const __m128i)) }
}

#[inline(always)]
unsafe fn group<P: Products, const T: usize>(
    format: Format,
    tiles: &[u8],
    blocks: &[Block<T>],
) -> [[f32; GROUP]; T] {
    debug_assert_eq!(tiles.len(), blocks.len() * format.tile_bytes());
    // SAFETY: the caller's contract.
    unsafe {
        match format {
            Format::Q4_1 => q4_1_group::<P, T>(tiles.as_ptr(), blocks),
            Format::Q8_0 => q8_0_group::<P, T>(tiles.as_ptr(), blocks),
        }
    }
}

/// The sums in `products` (plus `minimums`, for Q4_1) lane by lane. Plain loops over the
/// accumulators: a closure over them would take their address and keep them in memory
/// instead of registers.
#[inline(always)]
fn finish<const T: usize>(
    products: [__m256; T],
    minimums: Option<[__m256; T]>,
) -> [[f32; GROUP]; T] {
    let mut out = [[0.0; GROUP]; T];
    for t in 0..T {
        // SAFETY: register arithmetic and a store of eight floats into an array of eight;
        // AVX is enabled by every caller.
        unsafe {
            let sums = match minimums {
                Some(minimums) => _mm256_add_ps(products[t], minimums[t]),
                None => products[t],
            };
            _mm256_storeu_ps(out[t].as_mut_ptr(), sums);
        }
    }
    out
}

/// `$body` for each `$t` in `0..$T`, spelled out for the sizes the callers use: with constant
/// indices the vectors' sums stay in registers, where a loop LLVM will not unroll (its body is
/// large) keeps them in memory. A macro, not a function taking a closure: a closure would not
/// inherit the kernel's target features.
macro_rules! each_vector {
    ($T:ident, |$t:ident| $body:block) => {
        match $T {
            8 => {
                each_vector!(@ $t $body; 0 1 2 3 4 5 6 7);
            }
            4 => {
                each_vector!(@ $t $body; 0 1 2 3);
            }
            _ => {
                // The index reaches into several arrays (the sums, the blocks' fields).
                #[allow(clippy::needless_range_loop)]
                for $t in 0..$T $body
            }
        }
    };
    (@ $t:ident $body:block; $($index:literal)*) => {
        $({
            let $t = $index;
            $body
        })*
    };
}

#[inline(always)]
unsafe fn q4_1_group<P: Products, const T: usize>(
    tiles: *const u8,
    blocks: &[Block<T>],
) -> [[f32; GROUP]; T] {
    // SAFETY: `tiles` holds as many Q4_1 tiles as there are `blocks` (the caller's contract);
    // the rest is register arithmetic.
    unsafe {
        let mut products = [_mm256_setzero_ps(); T];
        let mut minimums = [_mm256_setzero_ps(); T];
        let mask = _mm256_set1_epi8(0x0f);
        for (b, x) in blocks.iter().enumerate() {
            let tile = tiles.add(b * Format::Q4_1.tile_bytes());
            prefetch_ahead(tile, Format::Q4_1.tile_bytes());
            let scales = halves(tile);
            let tile_minimums = halves(tile.add(Tile::Q4_1_MINIMUMS));
            let mut w = [_mm256_setzero_si256(); 8];
            for k in 0..4 {
                let at = tile.add(Tile::Q4_1_VALUES + 32 * k) as *const __m256i;
                let packed = _mm256_loadu_si256(at);
                w[k] = _mm256_and_si256(packed, mask);
                w[k + 4] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
            }
            each_vector!(T, |t| {
                let sums = P::nibble_sums(&w, x.quanta[t].as_ptr());
                let scale = _mm256_mul_ps(scales, _mm256_set1_ps(x.scales[t]));
                products[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, products[t]);
                let sum = _mm256_set1_ps(x.sums[t]);
                minimums[t] = _mm256_fmadd_ps(tile_minimums, sum, minimums[t]);
            });
        }
        finish(products, Some(minimums))
    }
}

#[inline(always)]
unsafe fn q8_0_group<P: Products, const T: usize>(
    tiles: *const u8,
    blocks: &[Block<T>],
) -> [[f32; GROUP]; T] {
    // SAFETY: as `q4_1_group`, with Q8_0 tiles.
    unsafe {
        let mut products = [_mm256_setzero_ps(); T];
        for (b, x) in blocks.iter().enumerate() {
            let tile = tiles.add(b * Format::Q8_0.tile_bytes());
            prefetch_ahead(tile, Format::Q8_0.tile_bytes());
            let scales = halves(tile);
            let mut w = [_mm256_setzero_si256(); 8];
            for (k, w) in w.iter_mut().enumerate() {
                *w = _mm256_loadu_si256(tile.add(Tile::Q8_0_VALUES + 32 * k) as *const __m256i);
            }
            each_vector!(T, |t| {
                let sums = P::byte_sums(&w, x.quanta[t].as_ptr(), x.quanta_sums[t]);
                let scale = _mm256_mul_ps(scales, _mm256_set1_ps(x.scales[t]));
                products[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, products[t]);
            });
        }
        finish(products, None)
    }
}
