//! The local engine's quantized products alone, on one thread: nanoseconds per row and token
//! for one token (decoding) and for batches (prompts, batched decoding), on a SmolLM2-sized
//! feed-forward matrix of random Q4_1 and Q8_0 blocks. For comparing kernel changes; the
//! engine against llama.cpp is `bench/local_engine.sh`.
//!
//! Usage: SWITCHBOARD_LOCAL_THREADS=2 quant_kernels

use std::time::Instant;

use switchboard_local_engine::quant::{Format, Isa, Q8Vector, QuantMatrix, matmul, matvec};

/// Deterministic bytes; f16 scales kept small and finite.
fn matrix(format: Format, rows: usize, columns: usize) -> QuantMatrix {
    let block = format.block_bytes();
    let mut state = 0x2545_f491_u32;
    let mut data: Vec<u8> = (0..rows * columns / 32 * block)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    for chunk in data.chunks_exact_mut(block) {
        chunk[..2].copy_from_slice(&0x2000u16.to_le_bytes()); // d ≈ 0.0078
        if format == Format::Q4_1 {
            chunk[2..4].copy_from_slice(&0xa000u16.to_le_bytes()); // m ≈ -0.0078
        }
    }
    QuantMatrix::new(format, rows, columns, data).expect("sizes agree")
}

fn vectors(count: usize, columns: usize) -> Vec<Q8Vector> {
    (0..count)
        .map(|t| {
            let values: Vec<f32> = (0..columns)
                .map(|i| ((i * 7 + t * 13) % 23) as f32 / 11.0 - 1.0)
                .collect();
            Q8Vector::quantize(&values)
        })
        .collect()
}

/// SmolLM2's shapes: a layer's square projection, its feed-forward up projection (fits in L2), its
/// down projection (rows three times as long), and 48 of those end to end (beyond the caches, as
/// a model's weights are when decoding). Times are per row of 576 columns.
const SIZES: [(&str, usize, usize); 5] = [
    ("576 x 576", 576, 576),
    ("1536 x 576", 1536, 576),
    ("73728 x 576, from memory", 1536 * 48, 576),
    ("576 x 1536", 576, 1536),
    ("27648 x 1536, from memory", 576 * 48, 1536),
];

fn main() {
    let isa = Isa::detect();
    println!("kernels: {isa:?}; ns per 576 columns of a row, per token (lower is better)");
    for (place, rows, columns) in SIZES {
        for format in [Format::Q4_1, Format::Q8_0] {
            let matrix = matrix(format, rows, columns);
            let mut line = format!("{format:?} {place}:");
            for tokens in [1, 4, 8, 16] {
                let xs = vectors(tokens, columns);
                let mut out = vec![0.0f32; rows * tokens];
                let rounds = (6_000_000 / (rows * tokens)).max(1);
                let mut best = f64::INFINITY;
                for _ in 0..5 {
                    let started = Instant::now();
                    for _ in 0..rounds {
                        if tokens == 1 {
                            matvec(isa, &matrix, &xs[0], &mut out);
                        } else {
                            matmul(isa, &matrix, &xs, &mut out);
                        }
                    }
                    let rows_of_576 = rounds * rows * tokens * columns / 576;
                    let ns = started.elapsed().as_nanos() as f64 / rows_of_576 as f64;
                    best = best.min(ns);
                }
                line.push_str(&format!("  {tokens}: {best:.2}"));
            }
            println!("{line}");
        }
    }
}
