use super::*;

/// GGUF blocks with random values and scales of a real model's size.
fn random_blocks(format: Format, rows: usize, columns: usize) -> Vec<u8> {
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
            // Every byte, -128 included (a file may hold it though llama.cpp never writes it).
            data.extend((0..32).map(|_| fastrand::u8(..)));
        }
    }
    data
}

fn random_matrix(format: Format, rows: usize, columns: usize) -> QuantMatrix {
    QuantMatrix::new(format, rows, columns, random_blocks(format, rows, columns)).unwrap()
}

fn random_vectors(count: usize, len: usize) -> Vec<Q8Vector> {
    (0..count)
        .map(|_| {
            let values: Vec<f32> = (0..len).map(|_| fastrand::f32() * 4.0 - 2.0).collect();
            Q8Vector::quantize(&values)
        })
        .collect()
}

/// Row `row` decoded straight from GGUF's blocks, without the tiles.
fn gguf_row(format: Format, data: &[u8], columns: usize, row: usize) -> Vec<f32> {
    let bytes = format.block_bytes();
    let blocks = columns / BLOCK;
    let mut out = Vec::with_capacity(columns);
    for block in data[row * blocks * bytes..][..blocks * bytes].chunks_exact(bytes) {
        let d = half_at(block, 0);
        match format {
            Format::Q4_1 => {
                let m = half_at(block, 2);
                let low = block[4..20].iter().map(|b| b & 0x0f);
                let high = block[4..20].iter().map(|b| b >> 4);
                out.extend(low.chain(high).map(|q| d * f32::from(q) + m));
            }
            Format::Q8_0 => out.extend(block[2..34].iter().map(|&q| d * f32::from(q as i8))),
        }
    }
    out
}

/// Every row times every vector by [`reference`], group by group.
fn expected(matrix: &QuantMatrix, xs: &[Q8Vector]) -> Vec<f32> {
    let mut out = vec![0.0; xs.len() * matrix.rows()];
    for (t, x) in xs.iter().enumerate() {
        for group in 0..matrix.groups() {
            let [values] = reference(matrix.format, matrix.group(group), [x]);
            for (lane, value) in values.into_iter().enumerate() {
                if let Some(out) =
                    out[t * matrix.rows()..][..matrix.rows()].get_mut(group * GROUP + lane)
                {
                    *out = value;
                }
            }
        }
    }
    out
}

#[test]
fn repacking_keeps_every_value_of_every_row() {
    for format in [Format::Q4_1, Format::Q8_0] {
        for rows in [1, 8, 13] {
            let data = random_blocks(format, rows, 96);
            let matrix = QuantMatrix::new(format, rows, 96, data.clone()).unwrap();
            let mut row_values = vec![0.0; 96];
            for row in 0..rows {
                matrix.dequantize_row(row, &mut row_values);
                assert_eq!(
                    row_values,
                    gguf_row(format, &data, 96, row),
                    "{format:?} row {row}"
                );
            }
        }
    }
}

#[test]
fn every_kernel_is_the_reference_to_the_bit() {
    for format in [Format::Q4_1, Format::Q8_0] {
        // Rows that leave the last group part padding; thirteen vectors take every pass (eight,
        // four, one).
        let matrix = random_matrix(format, 21, 1536);
        let xs = random_vectors(13, 1536);
        let expected = expected(&matrix, &xs);
        for isa in Isa::supported() {
            let mut out = vec![0.0; 13 * 21];
            matmul(isa, &matrix, &xs, &mut out);
            assert_eq!(out, expected, "{isa:?} {format:?} batch");
            for (t, x) in xs.iter().enumerate() {
                let mut single = vec![0.0; 21];
                matvec(isa, &matrix, x, &mut single);
                assert_eq!(
                    single,
                    expected[t * 21..(t + 1) * 21],
                    "{isa:?} {format:?} vector {t}"
                );
            }
        }
    }
}

#[test]
fn a_vector_gets_the_same_products_in_a_batch_of_any_size() {
    for format in [Format::Q4_1, Format::Q8_0] {
        let matrix = random_matrix(format, 71, 64);
        let xs = random_vectors(17, 64);
        let isa = Isa::detect();
        let mut alone = vec![0.0; 71];
        matvec(isa, &matrix, &xs[0], &mut alone);
        for batch in 2..=xs.len() {
            let mut out = vec![0.0; batch * 71];
            matmul(isa, &matrix, &xs[..batch], &mut out);
            assert_eq!(out[..71], alone[..], "{format:?}, batch of {batch}");
        }
    }
}

#[test]
fn products_are_close_to_f32_ones() {
    for format in [Format::Q4_1, Format::Q8_0] {
        let data = random_blocks(format, 4, 576);
        let matrix = QuantMatrix::new(format, 4, 576, data.clone()).unwrap();
        let values: Vec<f32> = (0..576).map(|_| fastrand::f32() * 4.0 - 2.0).collect();
        let x = Q8Vector::quantize(&values);
        let mut out = vec![0.0; 4];
        matvec(Isa::detect(), &matrix, &x, &mut out);
        for (row, got) in out.into_iter().enumerate() {
            let weights = gguf_row(format, &data, 576, row);
            let exact: f32 = weights.iter().zip(&values).map(|(w, v)| w * v).sum();
            let magnitude: f32 = weights
                .iter()
                .zip(&values)
                .map(|(w, v)| (w * v).abs())
                .sum();
            // 8-bit activations: about half a percent of the products' magnitude.
            assert!(
                (got - exact).abs() <= 0.01 * magnitude,
                "{format:?}: {got} vs {exact}"
            );
        }
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
