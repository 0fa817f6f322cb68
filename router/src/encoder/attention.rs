//! Self-attention, one head of one text at a time: both products run on the BF16 kernels of
//! [`matmul`](super::matmul), packed per head (the packing costs one pass over the head's
//! keys and values, the products a pass per token).

use std::ops::Range;

use super::cpu::Isa;
use super::math::softmax_rows;
use super::matmul::{Packed, pack_rows};

/// Where one head of one text lies in the fused query-key-value matrix.
#[derive(Debug, Clone)]
pub struct Head {
    /// The text's rows.
    pub rows: Range<usize>,
    /// The head's first column among the queries; its keys and values lie `hidden` and
    /// `2·hidden` columns further.
    pub column: usize,
    pub width: usize,
    pub hidden: usize,
}

/// For each token i of the text, `Σ_j softmax_j(q_i·k_j/√d)·v_j`, as `rows × width` values. A
/// text holds only its real tokens, so there is no padding to mask.
pub fn attend(isa: Isa, qkv: &[f32], head: &Head) -> Vec<f32> {
    let length = head.rows.len();
    let width = head.width;
    let stride = 3 * head.hidden;
    let at =
        |token: usize, offset: usize| (head.rows.start + token) * stride + offset + head.column;
    let row = |j: usize, offset: usize| &qkv[at(j, offset)..at(j, offset) + width];
    let scale = 1.0 / (width as f32).sqrt();
    let mut queries = Vec::with_capacity(length * width);
    for i in 0..length {
        queries.extend_from_slice(row(i, 0));
    }
    queries.iter_mut().for_each(|q| *q *= scale);
    let queries = pack_rows(isa, &queries, width);
    let keys = Packed::from_columns((0..length).map(|j| row(j, head.hidden)), width);
    let mut scores = vec![0f32; length * length];
    keys.multiply(isa, &queries, length, &mut scores);
    softmax_rows(isa, &mut scores, length);
    let weights = pack_rows(isa, &scores, length);
    let values = Packed::from_rows((0..length).map(|j| row(j, 2 * head.hidden)), width);
    let mut context = vec![0f32; length * width];
    values.multiply(isa, &weights, length, &mut context);
    context
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_of_one_token_returns_its_value() {
        // hidden 4, one head of width 4: q, k, v side by side in one row.
        let qkv = [1.0, 2.0, 3.0, 4.0, 0.5, 0.5, 0.5, 0.5, 9.0, 8.0, 7.0, 6.0];
        let head = Head {
            rows: 0..1,
            column: 0,
            width: 4,
            hidden: 4,
        };
        for isa in Isa::supported() {
            assert_eq!(attend(isa, &qkv, &head), vec![9.0, 8.0, 7.0, 6.0]);
        }
    }

    #[test]
    fn attention_weighs_values_by_softmax_of_scaled_scores() {
        // hidden 2, one head of width 2, two tokens.
        let qkv = [
            1.0, 0.0, 2.0, 0.0, 1.0, 0.0, // token 0: q, k, v
            0.0, 1.0, 0.0, 2.0, 0.0, 1.0, // token 1
        ];
        let head = Head {
            rows: 0..2,
            column: 0,
            width: 2,
            hidden: 2,
        };
        let scale = 1.0 / 2f64.sqrt();
        // Token 0's scores: q0·k0 = 2, q0·k1 = 0; BF16 weights keep 3 significant digits.
        let w = 1.0 / (1.0 + (-2.0 * scale).exp());
        for isa in Isa::supported() {
            let context = attend(isa, &qkv, &head);
            let expected = [w, 1.0 - w, 1.0 - w, w];
            for (got, want) in context.iter().zip(expected) {
                assert!(
                    (*got as f64 - want).abs() < 4e-3,
                    "{isa:?}: {got} vs {want}"
                );
            }
        }
    }
}
