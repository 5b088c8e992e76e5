//! The public class-conditional ImageNet transformers as [`Denoiser`]s in the crate's time
//! convention (t = 0 noise, t = 1 data; v = x₁ − ε), so the Euler sampler and every guidance
//! method apply unchanged. Both are the DiT architecture ([`Dit`], official key names):
//!
//! - **SiT-XL/2** (Ma et al. 2024, willisma/SiT): velocity prediction on the linear interpolant
//!   x_t = t·x₁ + (1 − t)·ε, t = 0 noise (`transport/path.py`'s `ICPlan`: α_t = t, σ_t = 1 − t) —
//!   the crate's convention; only its time input differs (t itself, where the crate's DiT embeds
//!   1000·t).
//! - **DiT-XL/2** (Peebles & Xie 2023, facebookresearch/DiT): ε-prediction on the DDPM schedule
//!   (1000 steps, linear β from 10⁻⁴ to 0.02) with learned Σ (8 output channels; the first 4 are
//!   ε). A DDPM state x = √ᾱ·x₁ + √(1 − ᾱ)·ε is the flow state scaled: x = (√ᾱ + √(1 − ᾱ))·x_t
//!   with t = √ᾱ / (√ᾱ + √(1 − ᾱ)), i.e. ᾱ = t² / (t² + (1 − t)²). The wrapper maps t to ᾱ, ᾱ to
//!   the (fractional) DDPM index through the ᾱ table, rescales x, and returns
//!   v = x̂₁ − ε̂ with x̂₁ = (x − √(1 − ᾱ)·ε̂)/√ᾱ. Euler on [`PretrainedDit::schedule`] (DiT's
//!   respaced DDIM timesteps, converted) is then DDIM with η = 0, step for step (test). Times
//!   below the noisiest DDPM level (t < 0.0064, ᾱ₉₉₉ = 4·10⁻⁵) are evaluated at that level.
//!
//! The conversions live here and nowhere else. Both load the official PyTorch checkpoints
//! (`DiT-XL-2-256x256.pt`, a pickled state dict; `SiT-XL-2-256x256.pt`, whose `ema` entry holds the
//! weights) through candle's pickle reader, or safetensors; key mismatches are named.
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::attention::{AttentionProbe, ForwardPlan};
use crate::models::dit::{Dit, DitConfig};
use crate::models::Denoiser;
use crate::{Error, Result};

/// What the network predicts, and in which time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parametrisation {
    /// DiT: ε on DDPM's linear-β schedule, time input = DDPM index (0 = data, 999 = noise).
    DdpmEpsilon,
    /// SiT: velocity x₁ − ε on the linear interpolant, time input t ∈ [0, 1] (0 = noise).
    Velocity,
}

/// A public model by name: `sit-xl-2`, `dit-xl-2` (256²: 32² latents), `dit-xl-2-512`, and the
/// tiny random models of the tests (`tiny-sit`, `tiny-dit`: 2 blocks, D = 64, 10 classes, 8²
/// latents; weights in `tests/fixtures/imagenet/`).
pub fn preset(name: &str) -> Result<(DitConfig, Parametrisation)> {
    let tiny = DitConfig {
        input_size: (8, 8),
        patch_size: 2,
        in_channels: 4,
        hidden_size: 64,
        depth: 2,
        num_heads: 4,
        mlp_ratio: 4.0,
        num_classes: 10,
        learn_sigma: true,
        activation: crate::models::dit::Activation::GeluTanh,
    };
    Ok(match name {
        "sit-xl-2" => (DitConfig::xl_2(), Parametrisation::Velocity),
        "dit-xl-2" => (DitConfig::xl_2(), Parametrisation::DdpmEpsilon),
        "dit-xl-2-512" => (DitConfig { input_size: (64, 64), ..DitConfig::xl_2() }, Parametrisation::DdpmEpsilon),
        "tiny-sit" => (tiny, Parametrisation::Velocity),
        "tiny-dit" => (tiny, Parametrisation::DdpmEpsilon),
        o => return Err(Error::hp(format!("unknown model {o:?}: sit-xl-2, dit-xl-2, dit-xl-2-512, tiny-sit, tiny-dit"))),
    })
}

/// The tiny test models' files: (weights, VAE folder) for `tiny-sit` / `tiny-dit`.
pub fn tiny_files(p: Parametrisation) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imagenet");
    (dir.join(if p == Parametrisation::Velocity { "sit_tiny.pt" } else { "dit_tiny.pt" }), dir.join("sd_vae"))
}

/// ᾱ_i of DDPM's linear β schedule (DiT's `get_named_beta_schedule("linear", 1000)`):
/// β_i = 10⁻⁴ + (0.02 − 10⁻⁴)·i/999, ᾱ_i = Π_{j ≤ i} (1 − β_j), i = 0..999.
pub fn ddpm_alphas_cumprod() -> Vec<f64> {
    let mut acc = 1.0;
    (0..1000)
        .map(|i| {
            acc *= 1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0);
            acc
        })
        .collect()
}

/// DiT's respaced timesteps for `n` sampling steps (`space_timesteps(1000, str(n))`: one section,
/// stride (1000 − 1)/(n − 1) rounded half to even as Python's `round`), from noisiest to cleanest.
pub fn ddim_timesteps(n: usize) -> Vec<usize> {
    let stride = if n > 1 { 999.0 / (n - 1) as f64 } else { 1.0 };
    let mut cur = 0.0f64;
    let mut out: Vec<usize> = (0..n)
        .map(|_| {
            let s = cur.round_ties_even() as usize;
            cur += stride;
            s
        })
        .collect();
    out.dedup();
    out.reverse();
    out
}

/// The crate's t of a DDPM ᾱ: √ᾱ / (√ᾱ + √(1 − ᾱ)).
pub fn t_of_alpha_bar(alpha_bar: f64) -> f64 {
    let (a, s) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
    a / (a + s)
}

/// The DDPM ᾱ of the crate's t: t² / (t² + (1 − t)²).
pub fn alpha_bar_of_t(t: f64) -> f64 {
    t * t / (t * t + (1.0 - t) * (1.0 - t))
}

/// The fractional DDPM index whose ᾱ is `alpha_bar` (linear interpolation in the decreasing ᾱ
/// table; clamped to [0, 999]).
pub fn ddpm_index(alphas_cumprod: &[f64], alpha_bar: f64) -> f64 {
    let n = alphas_cumprod.len();
    if alpha_bar >= alphas_cumprod[0] {
        return 0.0;
    }
    if alpha_bar <= alphas_cumprod[n - 1] {
        return (n - 1) as f64;
    }
    let i = alphas_cumprod.partition_point(|&a| a > alpha_bar); // first index with ᾱ_i ≤ alpha_bar
    let (hi, lo) = (alphas_cumprod[i - 1], alphas_cumprod[i]);
    (i - 1) as f64 + (hi - alpha_bar) / (hi - lo)
}

/// A public ImageNet transformer with its parametrisation, as a velocity [`Denoiser`].
pub struct PretrainedDit {
    /// The network (official key names), fed its own time input (time scale 1).
    pub dit: Dit,
    /// What it predicts.
    pub parametrisation: Parametrisation,
    alphas_cumprod: Vec<f64>,
}

impl PretrainedDit {
    /// Wraps a network.
    pub fn new(dit: Dit, parametrisation: Parametrisation) -> Self {
        Self { dit: dit.with_time_scale(1.0), parametrisation, alphas_cumprod: ddpm_alphas_cumprod() }
    }

    /// Loads an official checkpoint: `.pt` (a pickled state dict, or one under `ema` as SiT's)
    /// or `.safetensors`. The official files carry the fixed `pos_embed`; it must equal the one
    /// the crate computes for `cfg`. Errors name missing, misshaped or unknown tensors.
    pub fn load(cfg: &DitConfig, parametrisation: Parametrisation, path: &Path, device: &Device) -> Result<Self> {
        let mut tensors = read_weights(path, device)?;
        let pos = tensors.remove("pos_embed");
        let dit = crate::checkpoint::build_strict(path, tensors, device, |vb| Dit::new(cfg, vb))?;
        if let Some(p) = pos {
            let ours = dit.pos_embed();
            let d = (p.to_dtype(DType::F32)?.reshape(ours.shape())? - ours)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            if d > 1e-4 {
                return Err(Error::corrupt(path, format!("its pos_embed differs from DiT's 2-D sin-cos positions for {:?} by {d}", cfg.input_size)));
            }
        }
        Ok(Self::new(dit, parametrisation))
    }

    /// The network's time input for the crate's t (B,): SiT's t, or DiT's DDPM index; and, for
    /// DiT, the per-sample (√ᾱ, √(1 − ᾱ)).
    fn network_time(&self, t: &[f32]) -> (Vec<f32>, Vec<(f64, f64)>) {
        match self.parametrisation {
            Parametrisation::Velocity => (t.to_vec(), vec![]),
            Parametrisation::DdpmEpsilon => {
                let min_ab = *self.alphas_cumprod.last().expect("1000 entries");
                t.iter()
                    .map(|&ti| {
                        let ab = alpha_bar_of_t(ti as f64).clamp(min_ab, 1.0);
                        (ddpm_index(&self.alphas_cumprod, ab) as f32, (ab.sqrt(), (1.0 - ab).sqrt()))
                    })
                    .unzip()
            }
        }
    }
}

/// Tensors of a `.pt` (pickle; an `ema` entry if present) or `.safetensors` file.
pub fn read_weights(path: &Path, device: &Device) -> Result<std::collections::HashMap<String, Tensor>> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        return crate::checkpoint::load_tensors(path, device);
    }
    if !path.exists() {
        return Err(Error::Missing { path: path.to_path_buf(), hint: "pass the official .pt (or a .safetensors) checkpoint".into() });
    }
    let entries = match candle_core::pickle::read_all_with_key(path, Some("ema")) {
        Ok(e) if !e.is_empty() => e,
        _ => candle_core::pickle::read_all(path).map_err(|e| Error::corrupt(path, format!("not a PyTorch state dict: {e}")))?,
    };
    entries.into_iter().map(|(k, t)| Ok((k, t.to_device(device)?))).collect()
}

impl Denoiser for PretrainedDit {
    fn depth(&self) -> usize {
        self.dit.depth()
    }
    fn image_shape(&self) -> (usize, usize, usize) {
        self.dit.image_shape()
    }
    fn token_grid(&self) -> (usize, usize) {
        self.dit.token_grid()
    }
    /// DiT: the respaced DDPM timesteps converted to t (the DDIM grid), then t = 1; SiT: uniform.
    fn schedule(&self, num_steps: usize) -> Vec<f64> {
        match self.parametrisation {
            Parametrisation::Velocity => crate::flow::uniform_schedule(num_steps),
            Parametrisation::DdpmEpsilon => {
                let mut s: Vec<f64> = ddim_timesteps(num_steps).into_iter().map(|i| t_of_alpha_bar(self.alphas_cumprod[i])).collect();
                s.push(1.0);
                s
            }
        }
    }
    fn embed_condition(&self, cond: &Tensor) -> Result<Tensor> {
        self.dit.embed_condition(cond)
    }
    fn velocity_probed(&self, x: &Tensor, t: &Tensor, cond_emb: &Tensor, plan: &ForwardPlan, probe: &mut dyn AttentionProbe) -> Result<Tensor> {
        let tv = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let (net_t, scales) = self.network_time(&tv);
        let t_in = Tensor::from_vec(net_t, tv.len(), x.device())?; // the network's own time input (time scale 1)
        match self.parametrisation {
            Parametrisation::Velocity => self.dit.forward_probed(x, &t_in, cond_emb, plan, probe),
            Parametrisation::DdpmEpsilon => {
                let b = tv.len();
                let col = |f: &dyn Fn(&(f64, f64)) -> f64| -> Result<Tensor> {
                    Ok(Tensor::from_vec(scales.iter().map(|s| f(s) as f32).collect::<Vec<_>>(), (b, 1, 1, 1), x.device())?)
                };
                let (sa, ss) = (col(&|s| s.0)?, col(&|s| s.1)?); // √ᾱ, √(1 − ᾱ)
                let x_vp = x.broadcast_mul(&(&sa + &ss)?)?; // DDPM state (B, C, H, W)
                let eps = self.dit.forward_probed(&x_vp, &t_in, cond_emb, plan, probe)?; // ε̂
                let x1 = (x_vp - eps.broadcast_mul(&ss)?)?.broadcast_div(&sa)?; // x̂₁
                Ok((x1 - eps)?)
            }
        }
    }
    fn null_condition(&self, cond: &Tensor) -> Result<Tensor> {
        self.dit.null_condition(cond)
    }
}
