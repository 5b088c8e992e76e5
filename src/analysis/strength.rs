//! Effective guidance strength, and guidance scales matched to it.
//!
//! Methods at the same nominal scale guide with different force (a perturbed-attention negative
//! is closer to the positive than the null condition; CFG-Zero* rescales its negative; an
//! interval switches guidance off for part of sampling), so comparing them at one nominal scale
//! compares different strengths. Here the strength of a method is the size of what guidance adds
//! to the positive prediction along the method's own sampling trajectory:
//!
//! S(G) = mean over steps and samples of RMS_pixels(v_G(x_t) − v_pos(x_t)),
//!
//! with v_pos the positive prediction the method guided from at the same x_t (its positive
//! condition, CADS noise included, standard attention; [`Guider::velocity_and_positive`]). Steps a method does not evaluate (CFG-Zero*'s zero-init) are left out, as are
//! steps outside its window, which count as zero. [`match_strength`] finds the factor on a
//! method's term scales at which its strength equals a target (e.g. CFG's at w = 3).
use candle_core::Tensor;
use serde::Serialize;

use crate::flow::uniform_schedule;
use crate::guidance::{Guidance, Guider, Models};
use crate::models::Denoiser;
use crate::rng::per_sample_noise;
use crate::{Error, Result};

/// S(G) for `guidance` on `cond` (B, ...) over `num_steps` Euler steps from the seeded noise of
/// samples 0..B (the same noise as [`crate::sample::sample`] with `seed`). Units: the velocity's,
/// per pixel. Errors: those of the guidance; `num_steps` = 0.
pub fn guidance_strength<M: Denoiser>(models: Models<'_, M>, guidance: &Guidance, cond: &Tensor, num_steps: usize, seed: u64) -> Result<f64> {
    if num_steps == 0 {
        return Err(Error::hp("num_steps must be >= 1"));
    }
    let model = models.main;
    let (c, h, w) = model.image_shape();
    let b = cond.dim(0)?;
    let mut x = per_sample_noise(seed, 0, b, &[c, h, w], cond.device())?;
    let mut guider = Guider::new(guidance, models, rand::RngCore::next_u64(&mut crate::rng::stream(seed, 0)))?;
    let (mut total, mut counted) = (0.0, 0usize);
    for (i, win) in uniform_schedule(num_steps).windows(2).enumerate() {
        let t = win[0];
        // the guider's own positive prediction: no second forward
        let (v, pos, _) = guider.velocity_and_positive(&x, t, i, cond)?;
        if let Some(pos) = pos {
            let rms = (&v - &pos)?.sqr()?.flatten_from(1)?.mean(1)?.sqrt()?.mean_all()?.to_scalar::<f32>()? as f64;
            total += rms;
            counted += 1;
        }
        x = (x + (v * (win[1] - t))?)?;
    }
    Ok(if counted == 0 { 0.0 } else { total / counted as f64 })
}

/// A method's term scales multiplied by the factor that matches a target strength.
#[derive(Debug, Clone, Serialize)]
pub struct MatchedScale {
    /// λ: every term's scale s becomes λ·s.
    pub factor: f64,
    /// The first term's guidance scale after matching, 1 + λ·s.
    pub guidance_scale: f64,
    /// S at λ.
    pub strength: f64,
    /// The target S.
    pub target: f64,
}

/// Finds λ ∈ [0, `max_factor`] with S(`guidance` scaled by λ) = `target` by bisection
/// (`iterations` halvings; S is taken to grow with λ, which holds for every method here near
/// useful scales), with the same trajectory settings as [`guidance_strength`].
/// Errors: a method without terms; a target above S at `max_factor` (not reachable).
#[allow(clippy::too_many_arguments)]
pub fn match_strength<M: Denoiser>(
    models: Models<'_, M>,
    guidance: &Guidance,
    target: f64,
    max_factor: f64,
    cond: &Tensor,
    num_steps: usize,
    seed: u64,
    iterations: usize,
) -> Result<MatchedScale> {
    if guidance.terms.is_empty() {
        return Err(Error::hp(format!("{} has no guidance term to scale", guidance.name)));
    }
    let s = |f: f64| guidance_strength(models, &guidance.clone().scaled(f), cond, num_steps, seed);
    let (mut lo, mut hi) = (0.0, max_factor);
    let s_hi = s(hi)?;
    if s_hi < target {
        return Err(Error::hp(format!("{} reaches strength {s_hi:.4} at {max_factor}× its scales, below the target {target:.4}", guidance.name)));
    }
    for _ in 0..iterations {
        let mid = 0.5 * (lo + hi);
        if s(mid)? < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let factor = 0.5 * (lo + hi);
    Ok(MatchedScale { factor, guidance_scale: 1.0 + factor * guidance.terms[0].scale, strength: s(factor)?, target })
}
