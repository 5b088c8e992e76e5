//! Sampling: noise from per-sample seeds, Euler integration of the guided velocity, NFE counts.
use candle_core::{Device, Tensor};
use rand::RngCore;
use serde::Serialize;

use crate::flow::euler;
use crate::guidance::{Guidance, Guider, Models};
use crate::models::Denoiser;
use crate::rng::per_sample_noise;
use crate::Result;

/// Sampling settings.
#[derive(Debug, Clone, Serialize)]
pub struct SampleConfig {
    /// Euler steps (paper: 50).
    pub num_steps: usize,
    /// Base seed; sample i draws its noise from stream (seed, first_index + i).
    pub seed: u64,
    /// Rows per forward pass (memory bound; each guided step runs 2× this).
    pub batch_size: usize,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self { num_steps: 50, seed: 0, batch_size: 64 }
    }
}

/// Samples with their cost.
#[derive(Debug, Clone)]
pub struct Samples {
    /// Images (N, C, H, W), in the model's data range (here [−1, 1]).
    pub images: Tensor,
    /// Function evaluations per sample, summed over steps.
    pub nfe: usize,
    /// Mean NFE per step.
    pub nfe_per_step: f64,
}

/// Samples one image per row of `cond` with `guidance`: Euler integration of the guided velocity
/// (ERG Eq. 10 per step, [`Guider`]) on the model's time grid ([`Denoiser::schedule`]: uniform, or
/// SD3's shifted grid) for `cfg.num_steps` steps from t = 0 (noise)
/// to t = 1 (data), in chunks of `cfg.batch_size` rows.
///
/// - `models`: the main model and, for AutoGuidance, the weak one;
/// - `cond`: raw conditions (B, ...) — class labels (B,) u32 for a DiT, prompt ids (B, L) u32 for
///   the text-to-image MMDiT;
/// - noise of sample i from seed stream (`cfg.seed`, `first_index` + i), so the same seed and
///   index give the same noise for every method and grids compare side by side;
/// - `on_step(done, total)` reports progress in steps over all chunks.
///
/// Returns the images (B, C, H, W) in the model's data range ([−1, 1] here) and the NFE per
/// sample. Errors, before any compute: invalid guidance for the models (hyperparameters, a
/// missing weak model, C-ERG without a text encoder), `num_steps` or `batch_size` of 0; after
/// sampling, images with NaN or infinite values (never returned).
/// Source: rectified-flow sampling (Liu et al. 2023) in the paper's time convention.
pub fn sample<M: Denoiser>(
    models: Models<'_, M>,
    guidance: &Guidance,
    cond: &Tensor,
    cfg: &SampleConfig,
    first_index: u64,
    device: &Device,
    mut on_step: impl FnMut(usize, usize),
) -> Result<Samples> {
    let model = models.main;
    Guider::new(guidance, models, 0)?; // validate before any work
    if cfg.num_steps == 0 || cfg.batch_size == 0 {
        return Err(crate::Error::hp("num_steps and batch_size must be >= 1"));
    }
    let n = cond.dim(0)?;
    let (c, h, w) = model.image_shape();
    let schedule = model.schedule(cfg.num_steps);
    let chunks = n.div_ceil(cfg.batch_size);
    let total = chunks * cfg.num_steps;
    let mut outs = Vec::with_capacity(chunks);
    let mut nfe_total = 0usize;
    for (ci, start) in (0..n).step_by(cfg.batch_size).enumerate() {
        let len = cfg.batch_size.min(n - start);
        let x0 = per_sample_noise(cfg.seed, first_index + start as u64, len, &[c, h, w], device)?;
        let cond_chunk = cond.narrow(0, start, len)?;
        let mut nfe = 0usize;
        let mut guider = Guider::new(guidance, models, crate::rng::stream(cfg.seed, first_index + start as u64).next_u64())?;
        let x = euler(
            x0,
            &schedule,
            |x, t, step| {
                let (v, k) = guider.velocity(x, t, step, &cond_chunk)?;
                nfe += k;
                Ok(v)
            },
            |info| {
                on_step(ci * cfg.num_steps + info.step + 1, total);
                Ok(())
            },
        )?;
        if !crate::checkpoint::all_finite(&x)? {
            return Err(crate::Error::Other(format!(
                "sampling produced NaN or infinite values (samples {start}..{}, method {}): non-finite weights or a diverging guidance setting",
                start + len,
                guidance.name
            )));
        }
        if ci == 0 {
            nfe_total = nfe; // every chunk runs the same schedule, so the same NFE per sample
        }
        outs.push(x);
    }
    Ok(Samples { images: Tensor::cat(&outs, 0)?, nfe: nfe_total, nfe_per_step: nfe_total as f64 / cfg.num_steps as f64 })
}

/// Labels for a class × seed grid: class c repeated `per_class` times, classes in order.
/// Returns (num_classes·per_class,) u32.
pub fn class_grid_labels(num_classes: usize, per_class: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = (0..num_classes as u32).flat_map(|c| std::iter::repeat_n(c, per_class)).collect();
    Ok(Tensor::new(v.as_slice(), device)?)
}
