//! Condition-Annealed Diffusion Sampler (Sadat et al. 2024, ICLR): Gaussian noise on the
//! conditioning, annealed away during sampling.
//!
//! With σ = 1 − t (σ = 1 at pure noise, the CADS paper's "t"):
//! γ(σ) = 1 for σ ≤ τ₁, 0 for σ ≥ τ₂, (τ₂ − σ)/(τ₂ − τ₁) in between;
//! ŷ = √γ·y + s·√(1−γ)·n, n ~ N(0, I) fresh at each step; optionally rescaled to the mean and
//! standard deviation of y (per sample, over the embedding) and mixed: ŷ ← ψ·ŷ_rescaled + (1−ψ)·ŷ.
//! (A public SD3.5 port divides by τ₁ − τ₂ and so inverts the schedule; here γ decreases with σ.)
//! Applied to the class embedding (DiT) or text tokens (text-to-image models) of the positive branch.
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// CADS hyperparameters (defaults of the paper: τ₁ = 0.6, τ₂ = 0.9, s = 0.25, ψ = 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cads {
    /// τ₁: below this noise level the condition is clean.
    pub tau1: f64,
    /// τ₂: above this noise level the condition is pure noise (scaled by s).
    pub tau2: f64,
    /// Noise scale s ≥ 0.
    pub noise_scale: f64,
    /// Rescale mixing ψ ∈ [0, 1] (0 = no rescaling).
    pub psi: f64,
}

impl Default for Cads {
    fn default() -> Self {
        Self { tau1: 0.6, tau2: 0.9, noise_scale: 0.25, psi: 1.0 }
    }
}

impl Cads {
    /// Checks 0 ≤ τ₁ < τ₂ ≤ 1, s ≥ 0, ψ ∈ [0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(0.0 <= self.tau1 && self.tau1 < self.tau2 && self.tau2 <= 1.0) {
            return Err(Error::hp(format!("CADS needs 0 <= tau1 < tau2 <= 1, got tau1 = {}, tau2 = {}", self.tau1, self.tau2)));
        }
        if !(self.noise_scale >= 0.0 && self.noise_scale.is_finite()) || !(0.0..=1.0).contains(&self.psi) {
            return Err(Error::hp(format!("CADS needs noise_scale >= 0 and psi in [0, 1], got {self:?}")));
        }
        Ok(())
    }

    /// γ at time t (t = 0 noise, t = 1 data), through σ = 1 − t.
    pub fn gamma(&self, t: f64) -> f64 {
        let sigma = 1.0 - t;
        if sigma <= self.tau1 {
            1.0
        } else if sigma >= self.tau2 {
            0.0
        } else {
            (self.tau2 - sigma) / (self.tau2 - self.tau1)
        }
    }

    /// The annealed condition ŷ from y (B, ..., D) and noise n of the same shape.
    pub fn apply(&self, y: &Tensor, t: f64, noise: &Tensor) -> Result<Tensor> {
        let g = self.gamma(t);
        if g == 1.0 {
            return Ok(y.clone());
        }
        let noisy = ((y * g.sqrt())? + (noise * (self.noise_scale * (1.0 - g).sqrt()))?)?;
        if self.psi == 0.0 {
            return Ok(noisy);
        }
        let stats = |x: &Tensor| -> Result<(Tensor, Tensor)> {
            let m = x.mean_keepdim(D::Minus1)?;
            let s = x.broadcast_sub(&m)?.sqr()?.mean_keepdim(D::Minus1)?.sqrt()?;
            Ok((m, s))
        };
        let (my, sy) = stats(y)?;
        let (mn, sn) = stats(&noisy)?;
        let rescaled = noisy.broadcast_sub(&mn)?.broadcast_div(&(sn + 1e-12)?)?.broadcast_mul(&sy)?.broadcast_add(&my)?;
        Ok(((rescaled * self.psi)? + (noisy * (1.0 - self.psi))?)?)
    }
}
