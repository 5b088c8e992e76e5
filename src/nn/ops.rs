//! Operations with two implementations: candle's fused kernels (fast, no backward) for sampling,
//! and differentiable compositions for training. The choice is explicit in every forward pass.
use candle_core::{Tensor, D};

use crate::Result;

/// Which kernels a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpMode {
    /// Sampling: fused softmax / layer norm (no backward pass).
    #[default]
    Infer,
    /// Training: every op has a backward pass.
    Train,
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor, mode: OpMode) -> Result<Tensor> {
    Ok(match mode {
        OpMode::Infer => candle_nn::ops::softmax_last_dim(x)?,
        OpMode::Train => candle_nn::ops::softmax(x, D::Minus1)?,
    })
}

/// Layer norm over the last dimension without affine parameters (DiT's `elementwise_affine=False`).
/// `x`: (..., D) → (..., D), ε = `eps`. `Infer` uses candle's fused kernel (no backward pass),
/// `Train` the differentiable mean/variance composition.
pub fn layer_norm_no_affine(x: &Tensor, eps: f64, mode: OpMode) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    Ok(match mode {
        OpMode::Infer => {
            let ones = Tensor::ones(d, x.dtype(), x.device())?;
            let zeros = Tensor::zeros(d, x.dtype(), x.device())?;
            candle_nn::ops::layer_norm(&x.contiguous()?, &ones, &zeros, eps as f32)?
        }
        OpMode::Train => {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            xc.broadcast_div(&(var + eps)?.sqrt()?)?
        }
    })
}

/// adaLN modulation: `x * (1 + scale) + shift`; `x`: (B, N, D), `shift`/`scale`: (B, D).
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?.broadcast_add(&shift.unsqueeze(1)?)?)
}
