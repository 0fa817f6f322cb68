//! The local engine's quantized products alone, on one thread: nanoseconds per row and token
//! for one token (decoding) and for batches (prompts, batched decoding), on a SmolLM2-sized
//! feed-forward matrix of random Q4_1 and Q8_0 blocks. For comparing kernel changes; the
//! engine against llama.cpp is `bench/local_engine.sh`.
//!
//! Usage: SWITCHBOARD_LOCAL_THREADS=2 quant_kernels

use std::time::Instant;

use switchboard_local_engine::quant::{Format, Isa, Q8Vector, QuantMatrix, matmul, matvec};

const COLUMNS: usize = 576;

/// Deterministic bytes; f16 scales kept small and finite.
fn matrix(format: Format, rows: usize) -> QuantMatrix {
    let block = format.block_bytes();
    let mut state = 0x2545_f491_u32;
    let mut data: Vec<u8> = (0..rows * COLUMNS / 32 * block)
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
    QuantMatrix::new(format, rows, COLUMNS, data).expect("sizes agree")
}

fn vectors(count: usize) -> Vec<Q8Vector> {
    (0..count)
        .map(|t| {
            let values: Vec<f32> = (0..COLUMNS)
                .map(|i| ((i * 7 + t * 13) % 23) as f32 / 11.0 - 1.0)
                .collect();
            Q8Vector::quantize(&values)
        })
        .collect()
}

/// A feed-forward matrix (fits in L2) and 48 of them end to end (beyond the caches, as a
/// model's weights are when decoding).
const SIZES: [(&str, usize); 3] = [
    ("small", 576),
    ("in cache", 1536),
    ("from memory", 1536 * 48),
];

fn main() {
    let isa = Isa::detect();
    println!("kernels: {isa:?}; ns per row and token (lower is better)");
    for (place, rows) in SIZES {
        for format in [Format::Q4_1, Format::Q8_0] {
            let matrix = matrix(format, rows);
            let mut line = format!("{format:?} {place}:");
            for tokens in [1, 4, 8, 16] {
                let xs = vectors(tokens);
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
                    let ns = started.elapsed().as_nanos() as f64 / (rounds * rows * tokens) as f64;
                    best = best.min(ns);
                }
                line.push_str(&format!("  {tokens}: {best:.2}"));
            }
            println!("{line}");
        }
    }
}
