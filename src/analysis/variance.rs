//! Velocity variance at the start of sampling (ERG Appendix B.1, Fig. 5, Eqs. 13–14): how much
//! the first velocity v(ε, φ, t = 0) of a negative branch varies with the noise ε (and the
//! prompt), for CFG's empty-prompt negative φ_∅ and C-ERG's rectified prompt φ_c^τ, and how much
//! the difference to the conditional prediction v(ε, φ_c, 0) varies with ε.
//!
//! - marginal variance (Eq. 13): per output position (channel, row, column), the variance of
//!   v(ε, φ_∅, 0) over N noises and of v(ε, φ_c^τ, 0) over N noises × P prompts;
//! - conditional variance (Eq. 14): per prompt and position, the variance over the N noises of
//!   v(ε, φ_c, 0) − v(ε, φ_∅, 0) and of v(ε, φ_c, 0) − v(ε, φ_c^τ, 0).
//!
//! The paper's reading: CFG's negative barely varies (low marginal variance) and is decorrelated
//! from the conditional prediction (high conditional variance); C-ERG's the reverse.
use candle_core::Tensor;
use serde::Serialize;

use crate::attention::{AttentionPlan, ForwardPlan};
use crate::guidance::Condition;
use crate::models::Denoiser;
use crate::rng::per_sample_noise;
use crate::text::TextRectification;
use crate::{Error, Result};

/// The four variance distributions, one value per position (marginal) or per prompt × position
/// (conditional).
#[derive(Debug, Clone)]
pub struct VelocityVariance {
    /// Eq. 13 with φ_∅ (CFG's negative), (C·H·W,).
    pub marginal_null: Vec<f64>,
    /// Eq. 13 with φ_c^τ (C-ERG's negative), (C·H·W,).
    pub marginal_rectified: Vec<f64>,
    /// Eq. 14 with φ_∅, (P·C·H·W,).
    pub conditional_null: Vec<f64>,
    /// Eq. 14 with φ_c^τ, (P·C·H·W,).
    pub conditional_rectified: Vec<f64>,
}

/// Quantiles of one distribution (for tables and snapshots).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Quantiles {
    /// Mean.
    pub mean: f64,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
}

impl Quantiles {
    /// Of `v` (non-empty), values rounded to `digits` decimals.
    pub fn of(v: &[f64], digits: i32) -> Self {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
        let r = |x: f64| (x * 10f64.powi(digits)).round() / 10f64.powi(digits);
        Self { mean: r(s.iter().sum::<f64>() / s.len() as f64), p10: r(q(0.1)), median: r(q(0.5)), p90: r(q(0.9)) }
    }
}

/// A serialisable summary of [`VelocityVariance`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VarianceSummary {
    /// Of `marginal_null`.
    pub marginal_null: Quantiles,
    /// Of `marginal_rectified`.
    pub marginal_rectified: Quantiles,
    /// Of `conditional_null`.
    pub conditional_null: Quantiles,
    /// Of `conditional_rectified`.
    pub conditional_rectified: Quantiles,
}

impl VelocityVariance {
    /// Quantiles of the four distributions, rounded to `digits` decimals.
    pub fn summary(&self, digits: i32) -> VarianceSummary {
        VarianceSummary {
            marginal_null: Quantiles::of(&self.marginal_null, digits),
            marginal_rectified: Quantiles::of(&self.marginal_rectified, digits),
            conditional_null: Quantiles::of(&self.conditional_null, digits),
            conditional_rectified: Quantiles::of(&self.conditional_rectified, digits),
        }
    }
}

/// Variance over dim 0 of (n, ...) → (...), unbiased.
fn var0(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(0)? as f64;
    let c = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    Ok((c.sqr()?.sum(0)? / (n - 1.0))?)
}

/// Eqs. 13–14 for `prompts` (P, ...) raw conditions (token ids) and `num_noises` noises ε drawn
/// from seed `seed` (noise i from stream (seed, i), the same for every prompt), with C-ERG's `rect`.
/// Runs one forward of batch N for the empty prompt and one of batch 2N per prompt (conditional
/// and rectified rows together), at t = 0 with standard attention; each prompt is encoded once.
/// Errors: fewer than 2 noises; a model without a text encoder.
pub fn initial_velocity_variance<M: Denoiser>(model: &M, prompts: &Tensor, rect: &TextRectification, num_noises: usize, seed: u64) -> Result<VelocityVariance> {
    if num_noises < 2 {
        return Err(Error::hp("the variance needs at least 2 noises"));
    }
    let (c, h, w) = model.image_shape();
    let dev = prompts.device();
    let n = num_noises;
    let eps = per_sample_noise(seed, 0, n, &[c, h, w], dev)?; // (N, C, H, W)
    let velocity = |embs: &[Tensor]| -> Result<Tensor> {
        // each embedding (1, ...) is repeated over the N noises
        let rows: Vec<Tensor> = embs
            .iter()
            .map(|e| e.repeat(std::iter::once(n).chain(std::iter::repeat_n(1, e.rank() - 1)).collect::<Vec<_>>()))
            .collect::<candle_core::Result<_>>()?;
        let k = embs.len();
        let x = Tensor::cat(&vec![eps.clone(); k], 0)?;
        let t = Tensor::zeros(k * n, candle_core::DType::F32, dev)?;
        model.velocity_embedded(&x, &t, &Tensor::cat(&rows, 0)?, &ForwardPlan::uniform(k * n, AttentionPlan::standard()))
    };
    // φ_∅ does not depend on the prompt: one forward, its variance over the N noises
    let vn = velocity(&[model.embed_request(&prompts.narrow(0, 0, 1)?, Condition::Null)?])?; // (N, C, H, W)
    let (mut rect_all, mut cond_null, mut cond_rect) = (vec![], vec![], vec![]);
    for p in 0..prompts.dim(0)? {
        let ids = prompts.narrow(0, p, 1)?; // (1, L)
        let both = velocity(&[model.embed_request(&ids, Condition::Given)?, model.embed_request(&ids, Condition::Rectified(*rect))?])?;
        let (vc, vr) = (both.narrow(0, 0, n)?, both.narrow(0, n, n)?); // (N, C, H, W) each
        cond_null.push(var0(&(&vc - &vn)?)?.flatten_all()?);
        cond_rect.push(var0(&(&vc - &vr)?)?.flatten_all()?);
        rect_all.push(vr);
    }
    let flat = |ts: Vec<Tensor>| -> Result<Vec<f64>> { Ok(Tensor::cat(&ts, 0)?.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1()?) };
    Ok(VelocityVariance {
        marginal_null: flat(vec![var0(&vn)?.flatten_all()?])?,
        marginal_rectified: flat(vec![var0(&Tensor::cat(&rect_all, 0)?)?.flatten_all()?])?,
        conditional_null: flat(cond_null)?,
        conditional_rectified: flat(cond_rect)?,
    })
}

/// Histogram counts of `v` over `bins` equal bins of [lo, hi] (values outside are clamped in).
pub fn histogram(v: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<usize> {
    let mut out = vec![0; bins];
    for &x in v {
        let i = (((x - lo) / (hi - lo)) * bins as f64).floor().clamp(0.0, bins as f64 - 1.0) as usize;
        out[i] += 1;
    }
    out
}
