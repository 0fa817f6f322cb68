//! Reading a BERT checkpoint (`model.safetensors`, Hugging Face names) into the encoder's layers.

use safetensors::{Dtype, SafeTensors};

use super::EncoderError;
use super::cpu::Isa;
use super::math;
use super::matmul::Linear;

/// The tensors of one checkpoint, found by name with or without the `bert.` prefix that some
/// exports add.
pub struct Checkpoint<'a> {
    tensors: SafeTensors<'a>,
    prefix: &'static str,
}

impl<'a> Checkpoint<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EncoderError> {
        let tensors =
            SafeTensors::deserialize(bytes).map_err(|e| EncoderError::Weights(e.to_string()))?;
        let prefix = if tensors.tensor("embeddings.word_embeddings.weight").is_ok() {
            ""
        } else {
            "bert."
        };
        Ok(Self { tensors, prefix })
    }

    /// A tensor as f32 values, checked against the shape the configuration implies.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EncoderError> {
        let full = format!("{}{name}", self.prefix);
        let view = self
            .tensors
            .tensor(&full)
            .map_err(|_| EncoderError::Weights(format!("{full} is missing")))?;
        if view.shape() != shape {
            return Err(EncoderError::Weights(format!(
                "{full} has shape {:?}, the configuration says {shape:?}",
                view.shape()
            )));
        }
        let words = |size: usize| view.data().chunks_exact(size);
        match view.dtype() {
            Dtype::F32 => Ok(words(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()),
            Dtype::BF16 => Ok(words(2)
                .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
                .collect()),
            other => Err(EncoderError::Weights(format!(
                "{full} is {other:?}; F32 and BF16 are supported"
            ))),
        }
    }

    /// `{name}.weight` (`outputs × inputs`) and `{name}.bias` as one dense layer.
    pub fn linear(
        &self,
        name: &str,
        outputs: usize,
        inputs: usize,
    ) -> Result<Linear, EncoderError> {
        let weight = self.tensor(&format!("{name}.weight"), &[outputs, inputs])?;
        let bias = self.tensor(&format!("{name}.bias"), &[outputs])?;
        Ok(Linear::new(&weight, bias, outputs, inputs))
    }

    /// Several layers that read the same input, fused into one (their outputs side by side):
    /// the query, key and value projections become one product.
    pub fn fused_linear(
        &self,
        names: &[String],
        outputs: usize,
        inputs: usize,
    ) -> Result<Linear, EncoderError> {
        let mut weight = Vec::with_capacity(names.len() * outputs * inputs);
        let mut bias = Vec::with_capacity(names.len() * outputs);
        for name in names {
            weight.extend(self.tensor(&format!("{name}.weight"), &[outputs, inputs])?);
            bias.extend(self.tensor(&format!("{name}.bias"), &[outputs])?);
        }
        Ok(Linear::new(&weight, bias, names.len() * outputs, inputs))
    }

    pub fn norm(&self, name: &str, width: usize, eps: f32) -> Result<Norm, EncoderError> {
        Ok(Norm {
            gamma: self.tensor(&format!("{name}.weight"), &[width])?,
            beta: self.tensor(&format!("{name}.bias"), &[width])?,
            eps,
        })
    }
}

/// A layer normalisation's parameters.
pub struct Norm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

impl Norm {
    /// Each row of `rows` becomes `layer_norm(row)`.
    pub fn normalize(&self, isa: Isa, rows: &mut [f32]) {
        math::layer_norm(isa, rows, &self.gamma, &self.beta, self.eps);
    }

    /// Each row of `rows` becomes `layer_norm(row + residual)`.
    pub fn add_and_normalize(&self, isa: Isa, rows: &mut [f32], residual: &[f32]) {
        math::add_and_normalize(isa, rows, residual, &self.gamma, &self.beta, self.eps);
    }
}
