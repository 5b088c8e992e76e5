//! Operations with several implementations: candle's fused kernels (fast, no backward) for
//! sampling, this crate's fused kernels with a backward pass ([`super::fused`], CPU f32) for
//! training, and candle's differentiable compositions (everything else, and the reference the
//! fused kernels are tested against). The mode is explicit in every forward pass.
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Tensor, D};

use crate::Result;

static FUSED: AtomicBool = AtomicBool::new(true);

/// Turns the crate's fused training kernels on or off process-wide (on by default); off gives
/// candle's differentiable compositions. For benchmarks and tests that compare the two.
pub fn set_fused_kernels(on: bool) {
    FUSED.store(on, Ordering::Relaxed);
}

/// Whether the fused training kernels are on.
pub fn fused_kernels() -> bool {
    FUSED.load(Ordering::Relaxed)
}

/// Which kernels a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpMode {
    /// Sampling: fused softmax / layer norm (no backward pass).
    #[default]
    Infer,
    /// Training: every op has a backward pass.
    Train,
}

/// Softmax over the last dimension. With fused kernels on (the default): the crate's kernel on
/// CPU f32 in both modes (faster than candle's at the models' shapes, see the `bench` example),
/// candle's fused kernel elsewhere when sampling, candle's composition elsewhere when training.
pub fn softmax_last_dim(x: &Tensor, mode: OpMode) -> Result<Tensor> {
    Ok(match mode {
        OpMode::Infer if fused_kernels() && super::fused::fast_path(&[x]) => super::fused::softmax_last_dim(x)?,
        OpMode::Infer => candle_nn::ops::softmax_last_dim(x)?,
        OpMode::Train if fused_kernels() => super::fused::softmax_last_dim(x)?,
        OpMode::Train => candle_nn::ops::softmax(x, D::Minus1)?,
    })
}

/// Layer norm over the last dimension without affine parameters (DiT's `elementwise_affine=False`).
/// `x`: (..., D) → (..., D), ε = `eps`. With fused kernels on: the crate's kernel (with backward)
/// on CPU f32 in both modes; elsewhere candle's fused kernel (no backward) when sampling and the
/// differentiable mean/variance composition when training.
pub fn layer_norm_no_affine(x: &Tensor, eps: f64, mode: OpMode) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    Ok(match mode {
        OpMode::Infer if fused_kernels() && super::fused::fast_path(&[x]) => super::fused::layer_norm_no_affine(x, eps)?,
        OpMode::Infer => {
            let ones = Tensor::ones(d, x.dtype(), x.device())?;
            let zeros = Tensor::zeros(d, x.dtype(), x.device())?;
            candle_nn::ops::layer_norm(&x.contiguous()?, &ones, &zeros, eps as f32)?
        }
        OpMode::Train if fused_kernels() => super::fused::layer_norm_no_affine(x, eps)?,
        OpMode::Train => {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            xc.broadcast_div(&(var + eps)?.sqrt()?)?
        }
    })
}

/// RMS norm over the last dimension with a weight (SD3.5's QK-norm `ln_q`/`ln_k`):
/// x / √(mean(x²) + ε) ⊙ w. `Infer`: candle-nn's fused kernel; `Train`: a differentiable
/// composition (candle-nn's `ops::rms_norm` has no backward pass). `x`: (..., D), `w`: (D,).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, mode: OpMode) -> Result<Tensor> {
    Ok(match mode {
        OpMode::Infer => candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32)?,
        OpMode::Train => {
            let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
            x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)?
        }
    })
}

/// Exact (erf) GELU with a backward pass, for sampling and training: the crate's fused kernel
/// (CPU f32; its forward is also faster than candle's `gelu_erf`, see the `bench` example) with
/// fused kernels on, candle's `gelu_erf` otherwise.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if fused_kernels() {
        super::fused::gelu_erf(x)
    } else {
        Ok(x.gelu_erf()?)
    }
}
