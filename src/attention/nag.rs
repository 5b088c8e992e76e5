//! Normalized Attention Guidance (NAG; Chen, Bai, Liu, Xie, Liang, Zhang 2025, "Normalized
//! Attention Guidance: Universal Negative Guidance for Diffusion Models"): guidance inside the
//! attention layers, between the attention outputs of the image tokens under the positive
//! context Z⁺ and under a negative context Z⁻ (the negative prompt's text tokens):
//!
//! 1. extrapolate: Z̃ = φ·Z⁺ − (φ − 1)·Z⁻ = Z⁺ + (φ − 1)(Z⁺ − Z⁻);
//! 2. normalise: per token, r = ‖Z̃‖₁ / ‖Z⁺‖₁ (L1 over channels); Z̃ ← Z̃ · min(r, τ) / r;
//! 3. blend: Ẑ = α·Z̃ + (1 − α)·Z⁺.
//!
//! φ = 1 leaves attention unchanged. The image stream is shared: the negative context runs its
//! own text stream through the blocks, but its image tokens are the positive's at every block.
//! It needs attention over text tokens (the MMDiT's joint attention); a class-conditional DiT
//! receives its class through adaLN, not attention, so NAG does not apply to it.
//! Defaults φ = 5, τ = 2.5, α = 0.25 (the paper's Flux settings).
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// NAG hyperparameters and the blocks it acts in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nag {
    /// φ ≥ 1, the extrapolation scale (1: no guidance).
    pub scale: f64,
    /// τ > 0, the largest L1-norm ratio of the guided to the positive output.
    pub tau: f64,
    /// α ∈ [0, 1], the blend of the normalised guided output with the positive one.
    pub alpha: f64,
    /// First block with NAG.
    pub l_min: usize,
    /// One past the last block with NAG.
    pub l_max: usize,
}

impl Nag {
    /// The paper's defaults in every one of `depth` blocks.
    pub fn defaults(depth: usize) -> Self {
        Self { scale: 5.0, tau: 2.5, alpha: 0.25, l_min: 0, l_max: depth }
    }

    /// Checks φ ≥ 1, τ > 0, α ∈ [0, 1], a non-empty block range within `depth`.
    pub fn validate(&self, depth: usize) -> Result<()> {
        if !(self.scale >= 1.0 && self.scale.is_finite()) || !(self.tau > 0.0 && self.tau.is_finite()) || !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::hp(format!("NAG needs scale >= 1, tau > 0 and alpha in [0, 1], got {self:?}")));
        }
        if self.l_min >= self.l_max || self.l_max > depth {
            return Err(Error::hp(format!("NAG blocks [{}, {}) must be a non-empty range within the model's {depth} blocks", self.l_min, self.l_max)));
        }
        Ok(())
    }

    /// Whether block `l` applies NAG.
    pub fn acts_in(&self, l: usize) -> bool {
        l >= self.l_min && l < self.l_max
    }

    /// Ẑ from the positive and negative attention outputs (…, D) of the same tokens.
    pub fn combine(&self, pos: &Tensor, neg: &Tensor) -> Result<Tensor> {
        let guided = ((pos * self.scale)? - (neg * (self.scale - 1.0))?)?;
        let l1 = |t: &Tensor| -> Result<Tensor> { Ok(t.abs()?.sum_keepdim(D::Minus1)?) };
        let (np, ng) = (l1(pos)?, l1(&guided)?);
        let ratio = (ng / np.clamp(1e-12, f64::MAX)?)?; // (…, 1)
        let factor = (ratio.clamp(0.0, self.tau)? / ratio.clamp(1e-12, f64::MAX)?)?; // min(r, τ)/r
        let normalised = guided.broadcast_mul(&factor)?;
        Ok(((normalised * self.alpha)? + (pos * (1.0 - self.alpha))?)?)
    }
}
