//! CFG-Zero* (Fan, Zheng, Wang, Wang, Chen, Liu 2025, "CFG-Zero*: Improved Classifier-Free
//! Guidance for Flow Matching Models"), as a combiner of any guidance term.
//!
//! 1. Optimised scale: per sample, s* = ⟨v_pos, v_neg⟩ / ‖v_neg‖² (the projection coefficient
//!    of the positive velocity on the negative one, over all pixels), and the term uses s*·v_neg
//!    in place of v_neg: v = v_pos + s·(v_pos − s*·v_neg) (s = w − 1; the paper's
//!    v = s*·v_u + w·(v_c − s*·v_u)). The formula is unchanged by the sign convention of v.
//! 2. Zero-init: the first `zero_init_steps` Euler steps use v = 0 (no model evaluation), since
//!    early velocities of an imperfect model point away from the data.
//!
//! Works with any negative: CFG's null condition, I-ERG's rectified attention, C-ERG's prompt.
//! With `optimize_scale = false` (s* = 1) and no zero-init it is the plain linear combination.
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::Result;

/// CFG-Zero* settings (paper defaults: optimised scale, zero-init of the first step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CfgZeroStar {
    /// Scale each negative by s* (false: s* = 1).
    pub optimize_scale: bool,
    /// Euler steps at the start of sampling (from t = 0, noise) whose velocity is 0.
    pub zero_init_steps: usize,
}

impl Default for CfgZeroStar {
    fn default() -> Self {
        Self { optimize_scale: true, zero_init_steps: 1 }
    }
}

impl CfgZeroStar {
    /// s* per sample, shaped (B, 1, …, 1) like `pos` (B, …): ⟨pos, neg⟩ / ‖neg‖² (computed in
    /// f64; 1 where ‖neg‖ = 0 or when the scale is not optimised).
    pub fn scale(&self, pos: &Tensor, neg: &Tensor) -> Result<Tensor> {
        let b = pos.dim(0)?;
        let keep: Vec<usize> = std::iter::once(b).chain(std::iter::repeat_n(1, pos.rank() - 1)).collect();
        if !self.optimize_scale {
            return Ok(Tensor::ones(keep.as_slice(), pos.dtype(), pos.device())?);
        }
        let (p, n) = (pos.flatten_from(1)?.to_dtype(DType::F64)?, neg.flatten_from(1)?.to_dtype(DType::F64)?);
        let dot = (&p * &n)?.sum_keepdim(1)?; // (B, 1)
        let nn = n.sqr()?.sum_keepdim(1)?; // (B, 1)
        let zero = nn.eq(0.0)?;
        let s = zero.where_cond(&Tensor::ones_like(&nn)?, &(dot / nn.clamp(f64::MIN_POSITIVE, f64::MAX)?)?)?;
        Ok(s.to_dtype(pos.dtype())?.reshape(keep.as_slice())?)
    }

    /// The term's contribution pos − s*·neg (B, …).
    pub fn difference(&self, pos: &Tensor, neg: &Tensor) -> Result<Tensor> {
        Ok((pos - neg.broadcast_mul(&self.scale(pos, neg)?)?)?)
    }
}
