//! Attention certainty per block (ERG Appendix B.4, Fig. 7) and the layer range it suggests
//! for I-ERG (Fig. 8).
//!
//! For noisy inputs x_t = t·x₁ + (1 − t)·ε of real images, each block's share of (query, head)
//! pairs whose largest attention probability exceeds 0.95 (a near one-to-one match) is recorded
//! with standard attention. The paper finds three regimes through depth: high certainty in the
//! first blocks, low in the middle (tokens mix information), high again at the end, and puts the
//! rectification in the middle regime.
use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::attention::{AttentionPlan, AttentionProbe, ForwardPlan};
use crate::flow::interpolate;
use crate::models::Denoiser;
use crate::{Error, Result};

/// The probe of the analysis: in every block, the share of (query, head) pairs of the first row
/// group whose largest attention probability exceeds `threshold`, and the mean largest
/// probability, as `(block, share, mean)`.
#[derive(Debug, Clone)]
pub struct CertaintyProbe {
    /// The probability threshold p (ERG Fig. 7 uses 0.95).
    pub threshold: f64,
    /// `(block, share above the threshold, mean largest probability)`, in block order.
    pub records: Vec<(usize, f64, f64)>,
}

impl AttentionProbe for CertaintyProbe {
    fn wants(&self, _block: usize) -> bool {
        true
    }
    fn observe(&mut self, block: usize, probs: &Tensor) -> Result<()> {
        let top = probs.max(candle_core::D::Minus1)?; // (rows, H, S)
        let share = top.gt(self.threshold)?.to_dtype(candle_core::DType::F32)?.mean_all()?.to_scalar::<f32>()? as f64;
        let mean_top = top.mean_all()?.to_scalar::<f32>()? as f64;
        self.records.push((block, share, mean_top));
        Ok(())
    }
}

/// Certainty shares (0–1) per block at each t.
#[derive(Debug, Clone, Serialize)]
pub struct CertaintyProfile {
    /// The probability threshold (0.95 in the paper).
    pub threshold: f64,
    /// The times t (0 = noise, 1 = data).
    pub ts: Vec<f64>,
    /// `shares[i][l]`: share at `ts[i]` in block l.
    pub shares: Vec<Vec<f64>>,
    /// `mean_max[i][l]`: mean over (query, head) of the largest attention probability — a
    /// continuous certainty measure, informative when few tokens pass the threshold (small
    /// models with diffuse attention).
    pub mean_max: Vec<Vec<f64>>,
}

impl CertaintyProfile {
    /// Mean share of each block over the times.
    pub fn mean_per_block(&self) -> Vec<f64> {
        mean_over_rows(&self.shares)
    }

    /// The per-block certainty the layer-range suggestion uses: the mean share above the
    /// threshold, or, when no block reaches 5 % (diffuse attention), the mean largest probability.
    pub fn certainty_per_block(&self) -> Vec<f64> {
        let shares = self.mean_per_block();
        if shares.iter().copied().fold(0.0, f64::max) >= 0.05 {
            shares
        } else {
            mean_over_rows(&self.mean_max)
        }
    }
}

fn mean_over_rows(rows: &[Vec<f64>]) -> Vec<f64> {
    let depth = rows.first().map_or(0, Vec::len);
    (0..depth).map(|l| rows.iter().map(|r| r[l]).sum::<f64>() / rows.len() as f64).collect()
}

/// The certainty profile of `model` on clean images `x1` (B, C, H, W) in [−1, 1] with raw
/// conditions `cond` (B, ...), noised with `noise` (B, C, H, W) to each t of `ts`.
pub fn profile<M: Denoiser>(model: &M, x1: &Tensor, cond: &Tensor, noise: &Tensor, ts: &[f64], threshold: f64) -> Result<CertaintyProfile> {
    if !(0.0..1.0).contains(&threshold) {
        return Err(Error::hp(format!("the certainty threshold must be in [0, 1), got {threshold}")));
    }
    let b = x1.dim(0)?;
    let (mut shares, mut mean_max) = (Vec::with_capacity(ts.len()), Vec::with_capacity(ts.len()));
    for &t in ts {
        let tt = Tensor::full(t as f32, b, x1.device())?;
        let xt = interpolate(x1, noise, &tt)?; // (B, C, H, W)
        let plan = ForwardPlan::uniform(b, AttentionPlan::standard());
        let mut probe = CertaintyProbe { threshold, records: vec![] };
        model.velocity_probed(&xt, &tt, &model.embed_condition(cond)?, &plan, &mut probe)?;
        let mut rec = probe.records;
        rec.sort_by_key(|r| r.0);
        shares.push(rec.iter().map(|r| r.1).collect());
        mean_max.push(rec.iter().map(|r| r.2).collect());
    }
    Ok(CertaintyProfile { threshold, ts: ts.to_vec(), shares, mean_max })
}

/// The middle, low-certainty regime as a block range `[l_min, l_max)` from a per-block certainty
/// (e.g. [`CertaintyProfile::certainty_per_block`]): the longest run of consecutive blocks below
/// the midpoint between the lowest and highest certainty, preferring runs that leave at least one
/// block before and after. Falls back to the middle third of the depth
/// when no block is below (a flat profile).
pub fn suggest_layer_range(mean_share: &[f64]) -> (usize, usize) {
    let depth = mean_share.len();
    let hi = mean_share.iter().copied().fold(f64::MIN, f64::max);
    let lo = mean_share.iter().copied().fold(f64::MAX, f64::min);
    let cut = 0.5 * (lo + hi);
    let mut best: Option<(usize, usize, bool)> = None; // (start, len, interior)
    let mut l = 0;
    while l < depth {
        if mean_share[l] < cut {
            let start = l;
            while l < depth && mean_share[l] < cut {
                l += 1;
            }
            let (len, interior) = (l - start, start > 0 && l < depth);
            let better = match best {
                None => true,
                Some((_, bl, bi)) => (interior, len) > (bi, bl),
            };
            if better {
                best = Some((start, len, interior));
            }
        } else {
            l += 1;
        }
    }
    match best {
        Some((s, len, _)) => (s, s + len),
        None => (depth / 3, (2 * depth).div_ceil(3).max(depth / 3 + 1)),
    }
}

/// Standard-normal noise of `x`'s shape from `seed` (host RNG, reproducible).
pub fn noise_like(x: &Tensor, seed: u64) -> Result<Tensor> {
    let mut r = crate::rng::stream(seed, 0);
    crate::rng::randn(&mut r, x.dims(), &Device::Cpu)?.to_device(x.device()).map_err(Into::into)
}
