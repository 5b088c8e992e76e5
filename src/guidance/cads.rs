//! Condition-Annealed Diffusion Sampler (Sadat et al. 2024, ICLR): Gaussian noise on the
//! conditioning, annealed away during sampling.
//!
//! With σ = 1 − t (σ = 1 at pure noise, the CADS paper's "t"):
//! γ(σ) = 1 for σ ≤ τ₁, 0 for σ ≥ τ₂, (τ₂ − σ)/(τ₂ − τ₁) in between;
//! ŷ = √γ·y + s·√(1−γ)·n, n ~ N(0, I) fresh at each step; optionally rescaled to the mean and
//! standard deviation of y and mixed: ŷ ← ψ·ŷ_rescaled + (1−ψ)·ŷ. The statistics are scalars of
//! each sample's whole condition: over D for a class embedding (B, D), over all L·D entries for
//! text tokens (B, L, D), as the CADS paper's Algorithm (`y.mean()`, `y.std()` of one condition)
//! and the public ports (which take them over the whole tensor) do; not per token.
//! (A public SD3.5 port divides by τ₁ − τ₂ and so inverts the schedule; here γ decreases with σ.)
//! Applied to the class embedding (DiT) or text tokens (text-to-image models) of the positive
//! branch, as the CADS paper and the ERG paper's Appendix D ("ERG + CADs") do. `on_negatives`
//! also noises the negative branches' conditions with the same noise: an ablation, not a recipe
//! of either paper.
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
    /// Also noise every negative branch's condition embedding, with the positive's noise at each
    /// step (default `false`: the positive only, as both papers do). An ablation: with ERG, whose
    /// negative is the prompt itself, it keeps the guidance term from contrasting noise with the
    /// prompt. Omitted from the JSON (and so from result keys) when `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_negatives: bool,
}

impl Default for Cads {
    fn default() -> Self {
        Self { tau1: 0.6, tau2: 0.9, noise_scale: 0.25, psi: 1.0, on_negatives: false }
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

    /// The annealed condition ŷ from y (B, ..., D) and noise n of the same shape (rescaled with
    /// each sample's mean and standard deviation over all its entries, see the module docs).
    pub fn apply(&self, y: &Tensor, t: f64, noise: &Tensor) -> Result<Tensor> {
        let g = self.gamma(t);
        if g == 1.0 {
            return Ok(y.clone());
        }
        let noisy = ((y * g.sqrt())? + (noise * (self.noise_scale * (1.0 - g).sqrt()))?)?;
        if self.psi == 0.0 {
            return Ok(noisy);
        }
        // per-sample scalars (B, 1, …, 1) over every non-batch axis
        let keep: Vec<usize> = std::iter::once(y.dim(0)?).chain(std::iter::repeat_n(1, y.rank() - 1)).collect();
        let stats = |x: &Tensor| -> Result<(Tensor, Tensor)> {
            let flat = x.flatten_from(1)?; // (B, N)
            let m = flat.mean_keepdim(D::Minus1)?; // (B, 1)
            let s = flat.broadcast_sub(&m)?.sqr()?.mean_keepdim(D::Minus1)?.sqrt()?; // (B, 1)
            Ok((m.reshape(keep.as_slice())?, s.reshape(keep.as_slice())?))
        };
        let (my, sy) = stats(y)?;
        let (mn, sn) = stats(&noisy)?;
        let rescaled = noisy.broadcast_sub(&mn)?.broadcast_div(&(sn + 1e-12)?)?.broadcast_mul(&sy)?.broadcast_add(&my)?;
        Ok(((rescaled * self.psi)? + (noisy * (1.0 - self.psi))?)?)
    }
}
