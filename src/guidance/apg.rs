//! Adaptive Projected Guidance (Sadat, Hilliges, Weber 2025, "Eliminating Oversaturation and
//! Artifacts of High Guidance Scales in Diffusion Models"), in the form of the paper (and of the
//! ERG paper's Appendix D): on clean estimates x̂₁, not in ε- or v-space.
//!
//! For each guidance term with difference d = x̂_pos − x̂_neg:
//! 1. momentum: b ← d + β·b (β < 0 in the paper; the buffer starts at 0 at the first step), d ← b;
//! 2. rescaling: d ← d · min(1, r / ‖d‖) (norm per sample over all pixels);
//! 3. projection on x̂_pos: d∥ = (⟨d, x̂_pos⟩ / ‖x̂_pos‖²) x̂_pos, d⊥ = d − d∥;
//!    update u = d⊥ + η·d∥;
//! 4. x̂ = x̂_pos + Σ s·u (s = w − 1), then back to a velocity v = (x̂ − x_t)/(1 − t).
//!
//! diffusers' APG guider instead forms `uncond + w·update` in ε-space; that is not this.
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// APG hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apg {
    /// Momentum β (ERG paper: −0.5). 0 disables momentum.
    pub momentum: f64,
    /// Norm threshold r > 0 (ERG paper: 5.0); `f64::INFINITY` (JSON `null`) disables rescaling.
    #[serde(with = "crate::attention::inf_as_null")]
    pub norm_threshold: f64,
    /// Weight η of the parallel component (paper: 0).
    pub eta: f64,
}

impl Default for Apg {
    fn default() -> Self {
        Self { momentum: -0.5, norm_threshold: 5.0, eta: 0.0 }
    }
}

impl Apg {
    /// Checks r > 0 and finite β, η.
    pub fn validate(&self) -> Result<()> {
        if self.norm_threshold.is_nan() || self.norm_threshold <= 0.0 || !self.momentum.is_finite() || !self.eta.is_finite() {
            return Err(Error::hp(format!("APG needs norm_threshold > 0 and finite momentum/eta, got {self:?}")));
        }
        Ok(())
    }

    /// One term's update u from the clean estimates (B, ...) and its momentum buffer
    /// (updated in place; `None` at the first step).
    pub fn update(&self, x_pos: &Tensor, x_neg: &Tensor, buffer: &mut Option<Tensor>) -> Result<Tensor> {
        let mut d = (x_pos - x_neg)?;
        if self.momentum != 0.0 {
            if let Some(b) = buffer.as_ref() {
                d = (d + (b * self.momentum)?)?;
            }
            *buffer = Some(d.clone());
        }
        let b = d.dim(0)?;
        let flat = |t: &Tensor| t.reshape((b, ())).and_then(|t| t.to_dtype(DType::F64));
        let (df, pf) = (flat(&d)?, flat(x_pos)?);
        let mut df = df;
        if self.norm_threshold.is_finite() {
            let norm = df.sqr()?.sum_keepdim(1)?.sqrt()?; // (B, 1)
            let factor = (norm.recip()? * self.norm_threshold)?.clamp(0.0, 1.0)?;
            df = df.broadcast_mul(&factor)?;
        }
        let pn = pf.sqr()?.sum_keepdim(1)?.clamp(1e-24, f64::MAX)?; // ‖x̂_pos‖²
        let par = pf.broadcast_mul(&(df.mul(&pf)?.sum_keepdim(1)? / pn)?)?;
        let orth = (&df - &par)?;
        let u = (orth + (par * self.eta)?)?;
        Ok(u.to_dtype(x_pos.dtype())?.reshape(x_pos.shape())?)
    }
}
