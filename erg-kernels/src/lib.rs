//! # erg-kernels — fused CPU kernels behind one small safe API
//!
//! The hot operations of erg's transformers as fused, row-parallel CPU kernels with backward
//! passes (candle-nn's fused `softmax_last_dim`/`layer_norm` have none), each next to the
//! differentiable candle composition it replaces and is tested against:
//! - [`softmax_last_dim`], [`layer_norm_no_affine`], [`gelu_erf`], [`gelu_tanh`] ([`fused`]);
//! - [`linear`]: y = x Wᵀ + b as one autograd node on `gemm`;
//! - [`add_bias`], [`modulate`], [`gated_residual`]: the row broadcasts of adaLN ([`broadcast`]);
//! - [`optim::adamw_step`], [`optim::ema_step`]: AdamW and the EMA in place ([`optim`]);
//! - [`packed_attention`]: multi-head softmax attention straight from a packed qkv projection,
//!   one logit scale per batch row ([`packed`]).
//!
//! Which implementation runs is an explicit [`Kernels`] value passed to every call — no global
//! state. With [`Kernels::Fused`] the kernel runs where it applies (CPU, f32: [`Kernels::applies`])
//! and the candle composition elsewhere (CUDA, f16, bf16); [`Kernels::Candle`] always composes
//! candle ops. Both give the same values up to f32 rounding (tests in `tests/kernels.rs`).
//! All `unsafe` code of erg lives in this crate.
pub mod broadcast;
mod buffer;
pub mod fused;
pub mod linear;
pub mod optim;
pub mod packed;

use candle_core::{DType, Tensor};

pub use broadcast::{add_bias, gated_residual, modulate};
pub use fused::{erf_approx, exp_approx, gelu_erf, gelu_tanh, layer_norm_no_affine, softmax_last_dim, tanh_approx};
pub use linear::linear;
pub use packed::packed_attention;

/// Which implementation of an operation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Kernels {
    /// The fused kernels of this crate where they apply (CPU, f32), candle's compositions elsewhere.
    #[default]
    Fused,
    /// candle's differentiable compositions everywhere (the reference the kernels are tested
    /// against; for benchmarks and equality tests).
    Candle,
}

impl Kernels {
    /// Whether the fused kernel runs for these operands: [`Kernels::Fused`], every tensor f32
    /// on the CPU.
    pub fn applies(self, xs: &[&Tensor]) -> bool {
        self == Kernels::Fused && xs.iter().all(|x| x.device().is_cpu() && x.dtype() == DType::F32)
    }
}

/// A shape error with a message, as candle reports them.
pub(crate) fn shape_error(msg: String) -> candle_core::Error {
    candle_core::Error::Msg(msg)
}
