//! Parallel and orthogonal parts of the guidance difference along sampling (ERG Appendix B.2,
//! Fig. 6), and the kickoff κ they suggest.
//!
//! At each Euler step of a guided trajectory, the first term's positive and negative velocities
//! D_pos and D_neg are evaluated and their difference Δ = D_pos − D_neg is split per sample into
//! its component along D_pos, Δ∥ = (⟨Δ, D_pos⟩ / ‖D_pos‖²)·D_pos, and the rest Δ⊥ = Δ − Δ∥. The
//! paper finds the parallel part peaks early and vanishes around t ≈ 0.4 for both CFG and
//! I-ERG, while I-ERG keeps a steady orthogonal part; κ is where the parallel part has vanished.
use candle_core::Tensor;
use serde::Serialize;

use crate::flow::uniform_schedule;
use crate::guidance::{Guidance, Guider, Models};
use crate::models::Denoiser;
use crate::rng::per_sample_noise;
use crate::{Error, Result};

/// Mean RMS norms of the two parts at one step.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DecompositionPoint {
    /// Time t of the step.
    pub t: f64,
    /// Mean over samples of ‖Δ∥‖ / √(C·H·W).
    pub parallel: f64,
    /// Mean over samples of ‖Δ⊥‖ / √(C·H·W).
    pub orthogonal: f64,
}

fn per_sample_dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((a * b)?.flatten_from(1)?.sum(1)?) // (B,)
}

/// Follows `guidance` from seeded noise for `num_steps` Euler steps on `cond` (B, ...) and returns
/// the decomposition of its first term's difference at every step. Errors if the guidance has no
/// term or its first term needs the weak model without one.
pub fn along_sampling<M: Denoiser>(models: Models<'_, M>, guidance: &Guidance, cond: &Tensor, num_steps: usize, seed: u64) -> Result<Vec<DecompositionPoint>> {
    let term = *guidance.terms.first().ok_or_else(|| Error::hp(format!("{} has no guidance term to decompose", guidance.name)))?;
    let model = models.main;
    let neg_model = match term.negative.model {
        crate::guidance::ModelChoice::Main => model,
        crate::guidance::ModelChoice::Weak => models.weak.ok_or_else(|| Error::hp("the first term needs the weak model"))?,
    };
    let (c, h, w) = model.image_shape();
    let b = cond.dim(0)?;
    let mut x = per_sample_noise(seed, 0, b, &[c, h, w], cond.device())?;
    let mut guider = Guider::new(guidance, models, seed)?;
    let neg_emb = neg_model.embed_request(cond, term.negative.condition)?;
    let schedule = uniform_schedule(num_steps);
    let mut out = Vec::with_capacity(num_steps);
    let norm = ((c * h * w) as f64).sqrt();
    for (i, win) in schedule.windows(2).enumerate() {
        let t = win[0];
        let tt = Tensor::full(t as f32, b, cond.device())?;
        let std_plan = crate::attention::ForwardPlan::uniform(b, crate::attention::AttentionPlan::standard());
        let pos = model.velocity(&x, &tt, cond, &std_plan)?;
        let neg = neg_model.velocity_embedded(&x, &tt, &neg_emb, &crate::attention::ForwardPlan::uniform(b, term.negative.attention_at(t)))?;
        let diff = (&pos - &neg)?;
        let coef = (per_sample_dot(&diff, &pos)? / per_sample_dot(&pos, &pos)?.clamp(1e-12, f64::MAX)?)?; // (B,)
        let par = pos.broadcast_mul(&coef.reshape((b, 1, 1, 1))?)?;
        let orth = (&diff - &par)?;
        let rms = |v: &Tensor| -> Result<f64> { Ok(per_sample_dot(v, v)?.sqrt()?.mean_all()?.to_scalar::<f32>()? as f64 / norm) };
        out.push(DecompositionPoint { t, parallel: rms(&par)?, orthogonal: rms(&orth)? });
        let (v, _) = guider.velocity(&x, t, i, cond)?;
        x = (x + (v * (win[1] - t))?)?;
    }
    Ok(out)
}

/// The kickoff suggested by a CFG decomposition (Appendix B.2: κ is where the parallel part has
/// converged after its early peak): the first t after the peak (the largest parallel norm with
/// t < 0.5; the part may rise again near t = 1) where the parallel norm has come down `fraction`
/// of the way from the peak to its later minimum (0.9 = within 10 % of the floor). `None` when
/// there is no early point or the parallel part never falls.
pub fn suggest_kappa(points: &[DecompositionPoint], fraction: f64) -> Option<f64> {
    let (peak_i, peak) = points.iter().enumerate().filter(|(_, p)| p.t < 0.5).max_by(|a, b| a.1.parallel.partial_cmp(&b.1.parallel).unwrap())?;
    let floor = points[peak_i..].iter().map(|p| p.parallel).fold(f64::INFINITY, f64::min);
    if floor >= peak.parallel {
        return None;
    }
    let level = peak.parallel - fraction.clamp(0.0, 1.0) * (peak.parallel - floor);
    points[peak_i..].iter().find(|p| p.parallel <= level).map(|p| p.t)
}
