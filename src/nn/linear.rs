//! The linear layer of every model: y = x Wᵀ + b with PyTorch's (and candle-nn's) layout, weight
//! (out, in) and bias (out), so checkpoints load unchanged. The product runs in
//! [`erg_kernels::linear()`] (one autograd node on `gemm` on CPU f32 with [`Kernels::Fused`]).
use candle_core::Tensor;
use candle_nn::{Init, VarBuilder};

use super::Kernels;
use crate::Result;

/// y = x Wᵀ + b; `x` (..., in) → (..., out).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// From a weight (out, in) and an optional bias (out,).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// The weight (out, in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias (out,), if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `x` (..., in) → (..., out) with `kernels`.
    ///
    /// Errors: `x`'s last dimension is not `in`.
    pub fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        Ok(erg_kernels::linear(x, &self.weight, self.bias.as_ref(), kernels)?)
    }
}

impl From<candle_nn::Linear> for Linear {
    fn from(l: candle_nn::Linear) -> Self {
        Self::new(l.weight().clone(), l.bias().cloned())
    }
}

/// A linear layer with candle-nn's initialisation when created fresh (weight and bias as
/// `candle_nn::linear`), loaded when `vb` holds `weight` and `bias`.
///
/// Errors: `vb` holds `weight`/`bias` of other shapes than (out, in)/(out,), or lacks them when loading.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(candle_nn::linear(in_dim, out_dim, vb)?.into())
}

/// A linear layer whose fresh weight is drawn from `init` (bias 0); ignored when `vb` holds the
/// weights.
///
/// Errors: as [`linear`].
pub fn linear_with_init(in_dim: usize, out_dim: usize, init: Init, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let b = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

/// Xavier-uniform initialisation of a (fan_out, fan_in) weight (PyTorch's
/// `nn.init.xavier_uniform_`, DiT's `initialize_weights`).
pub fn xavier_uniform(fan_in: usize, fan_out: usize) -> Init {
    let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Init::Uniform { lo: -a, up: a }
}

/// A linear layer with DiT's initialisation: xavier-uniform weight, zero bias.
pub fn xavier_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_with_init(in_dim, out_dim, xavier_uniform(in_dim, out_dim), vb)
}

/// A zero-initialised linear layer (adaLN-Zero's modulations and DiT's final layer).
pub fn zero_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_with_init(in_dim, out_dim, Init::Const(0.0), vb)
}
