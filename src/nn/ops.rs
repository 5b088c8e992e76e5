//! Operations with several implementations, chosen per forward pass by an [`Ops`] value: the
//! fused kernels of `erg-kernels` (CPU f32, with backward passes), candle's fused kernels (fast,
//! no backward) for sampling elsewhere, and candle's differentiable compositions.
use candle_core::{Tensor, D};
use erg_kernels::Kernels;

use crate::Result;

/// Whether a forward pass must be differentiable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpMode {
    /// Sampling: candle's fused softmax / layer norm (no backward pass) where the crate's
    /// kernels do not run.
    #[default]
    Infer,
    /// Training: every op has a backward pass.
    Train,
}

/// How a forward pass computes its operations: differentiable or not ([`OpMode`]) and with which
/// kernels ([`Kernels`]). Carried by the forward plan; `Ops::default()` samples with the fused
/// kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ops {
    /// Differentiable (training) or not (sampling).
    pub mode: OpMode,
    /// The crate's fused kernels or candle's compositions.
    pub kernels: Kernels,
}

impl Ops {
    /// Sampling with the fused kernels.
    pub fn infer() -> Self {
        Self { mode: OpMode::Infer, kernels: Kernels::Fused }
    }
    /// Training with the fused kernels.
    pub fn train() -> Self {
        Self { mode: OpMode::Train, kernels: Kernels::Fused }
    }
    /// The same mode with other kernels.
    pub fn with_kernels(self, kernels: Kernels) -> Self {
        Self { kernels, ..self }
    }
}

/// Softmax over the last dimension. The crate's kernel on CPU f32 with [`Kernels::Fused`] (faster
/// than candle's at the models' shapes, with a backward pass); elsewhere candle's fused kernel
/// when sampling and candle's composition when training.
pub fn softmax_last_dim(x: &Tensor, ops: Ops) -> Result<Tensor> {
    Ok(match ops.mode {
        _ if ops.kernels.applies(&[x]) => erg_kernels::softmax_last_dim(x, ops.kernels)?,
        OpMode::Infer => candle_nn::ops::softmax_last_dim(x)?,
        OpMode::Train => erg_kernels::softmax_last_dim(x, Kernels::Candle)?,
    })
}

/// Layer norm over the last dimension without affine parameters (DiT's `elementwise_affine=False`).
/// `x`: (..., D) → (..., D), ε = `eps`. The crate's kernel on CPU f32 with [`Kernels::Fused`];
/// elsewhere candle's fused kernel (no backward) when sampling and the differentiable
/// mean/variance composition when training.
pub fn layer_norm_no_affine(x: &Tensor, eps: f64, ops: Ops) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    Ok(match ops.mode {
        _ if ops.kernels.applies(&[x]) => erg_kernels::layer_norm_no_affine(x, eps, ops.kernels)?,
        OpMode::Infer => {
            let ones = Tensor::ones(d, x.dtype(), x.device())?;
            let zeros = Tensor::zeros(d, x.dtype(), x.device())?;
            candle_nn::ops::layer_norm(&x.contiguous()?, &ones, &zeros, eps as f32)?
        }
        OpMode::Train => erg_kernels::layer_norm_no_affine(x, eps, Kernels::Candle)?,
    })
}

/// RMS norm over the last dimension with a weight (SD3.5's QK-norm `ln_q`/`ln_k`):
/// x / √(mean(x²) + ε) ⊙ w. `Infer`: candle-nn's fused kernel; `Train`: a differentiable
/// composition (candle-nn's `ops::rms_norm` has no backward pass). `x`: (..., D), `w`: (D,).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, ops: Ops) -> Result<Tensor> {
    Ok(match ops.mode {
        OpMode::Infer => candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32)?,
        OpMode::Train => {
            let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
            x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)?
        }
    })
}

/// Exact (erf) GELU with a backward pass, for sampling and training (the crate's kernel on CPU
/// f32 with [`Kernels::Fused`], candle's `gelu_erf` otherwise).
pub fn gelu_erf(x: &Tensor, ops: Ops) -> Result<Tensor> {
    Ok(erg_kernels::gelu_erf(x, ops.kernels)?)
}

/// tanh-approximated GELU (PyTorch's `approximate="tanh"`; DiT, SiT and SD3 use it) with a
/// backward pass (the crate's kernel on CPU f32 with [`Kernels::Fused`], candle's `gelu`
/// otherwise; candle's calls libm's `tanhf` per element, which took 44 % of a DiT-S training step).
pub fn gelu_tanh(x: &Tensor, ops: Ops) -> Result<Tensor> {
    Ok(erg_kernels::gelu_tanh(x, ops.kernels)?)
}

/// adaLN modulation y = x ⊙ (1 + scale) + shift; `x` (B, N, D), `shift`/`scale` (B, D)
/// (Peebles & Xie 2023, `modulate` in DiT's `models.py`). Errors: shapes that do not match.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor, ops: Ops) -> Result<Tensor> {
    erg_kernels::modulate(x, shift, scale, ops.kernels).map_err(shape_or_candle)
}

/// adaLN-Zero's gated residual y = x + gate ⊙ h; `x`/`h` (B, N, D), `gate` (B, D).
/// Errors: shapes that do not match.
pub fn gated_residual(x: &Tensor, gate: &Tensor, h: &Tensor, ops: Ops) -> Result<Tensor> {
    erg_kernels::gated_residual(x, gate, h, ops.kernels).map_err(shape_or_candle)
}

/// y = x + b with `b` (D,) broadcast over the leading dimensions of `x` (..., D).
/// Errors: `b` not of shape (D,).
pub fn add_bias(x: &Tensor, b: &Tensor, ops: Ops) -> Result<Tensor> {
    erg_kernels::add_bias(x, b, ops.kernels).map_err(shape_or_candle)
}

/// The kernels' shape messages as the crate's shape errors.
fn shape_or_candle(e: candle_core::Error) -> crate::Error {
    match e {
        candle_core::Error::Msg(m) => crate::Error::Shape(m),
        e => e.into(),
    }
}
