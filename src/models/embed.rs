//! Embedders shared by the transformers (DiT's `models.py`; the MMDiT and the trainers use
//! them too): patches, timesteps, labels, and the fixed 2-D sin-cos positions.
use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::nn::{linear_with_init, ops::add_bias, xavier_uniform, Ops};
use crate::Result;

/// Patch embedding: a conv with kernel = stride = p, weight (D, C, p, p) as in the checkpoints,
/// computed as a matmul on (C, p, p)-ordered patches (same result, cheaper backward).
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    weight: Tensor, // (C·p·p, D), transposed conv weight
    bias: Tensor,   // (D,)
    patch: usize,
}

impl PatchEmbed {
    /// `c` input channels, patch `p`, width `d`; weight (D, C, p, p) and bias (D,) in `vb`.
    pub fn new(c: usize, p: usize, d: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get_with_hints((d, c, p, p), "weight", xavier_uniform(c * p * p, d))?;
        let bias = vb.get_with_hints(d, "bias", Init::Const(0.0))?;
        Ok(Self { weight: w.reshape((d, c * p * p))?.t()?, bias, patch: p })
    }

    /// (B, C, H, W) → (B, N, D), tokens in row-major order over the (H/p, W/p) grid.
    pub fn forward(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        let x = x.reshape((b, c, gh, p, gw, p))?.permute((0, 2, 4, 1, 3, 5))?; // (B, gh, gw, C, p, p)
        let x = x.reshape((b * gh * gw, c * p * p))?; // (B·N, C·p·p)
        let x = add_bias(&x.matmul(&self.weight)?, &self.bias, ops)?; // (B·N, D)
        Ok(x.reshape((b, gh * gw, ()))?)
    }
}

/// Sinusoidal timestep features `[cos(t·f), sin(t·f)]`, f = exp(−ln(10⁴)·i/half), as DiT's
/// `TimestepEmbedder.timestep_embedding`. `t`: (B,) f32 → (B, dim).
pub fn timestep_features(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half).map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32).collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t.unsqueeze(1)?.broadcast_mul(&freqs)?; // (B, half)
    Ok(Tensor::cat(&[args.cos()?, args.sin()?], 1)?)
}

/// Timestep embedder: 256 sinusoidal features → Linear → SiLU → Linear (`t_embedder.mlp.{0,2}`).
#[derive(Debug, Clone)]
pub struct TimestepEmbedder {
    fc0: crate::nn::Linear,
    fc2: crate::nn::Linear,
}

impl TimestepEmbedder {
    /// Sinusoidal features fed to the MLP.
    pub const FREQ_DIM: usize = 256;
    /// Width `d`; weights `mlp.0`, `mlp.2` in `vb` (fresh: N(0, 0.02²), as DiT initialises them).
    pub fn new(d: usize, vb: VarBuilder) -> Result<Self> {
        let n = Init::Randn { mean: 0.0, stdev: 0.02 };
        Ok(Self { fc0: linear_with_init(Self::FREQ_DIM, d, n, vb.pp("mlp.0"))?, fc2: linear_with_init(d, d, n, vb.pp("mlp.2"))? })
    }
    /// `t` (B,) in the embedder's units (DiT: 0..1000) → (B, D).
    pub fn forward(&self, t: &Tensor, ops: Ops) -> Result<Tensor> {
        let f = timestep_features(t, Self::FREQ_DIM)?.to_dtype(self.fc0.weight().dtype())?;
        self.fc2.forward(&self.fc0.forward(&f, ops.kernels)?.silu()?, ops.kernels)
    }
}

/// Label embedder with `num_classes + 1` rows, the last being the null class
/// (`y_embedder.embedding_table`). Label dropout is done by the trainer.
#[derive(Debug, Clone)]
pub struct LabelEmbedder {
    table: Tensor, // (num_classes + 1, D)
    num_classes: usize,
}

impl LabelEmbedder {
    /// `num_classes` real classes (plus the null class), width `d`; `embedding_table` in `vb`.
    pub fn new(num_classes: usize, d: usize, vb: VarBuilder) -> Result<Self> {
        let table = vb.get_with_hints((num_classes + 1, d), "embedding_table.weight", Init::Randn { mean: 0.0, stdev: 0.02 })?;
        Ok(Self { table, num_classes })
    }
    /// `y` (B,) u32 in `0..=num_classes` → (B, D).
    pub fn forward(&self, y: &Tensor) -> Result<Tensor> {
        let max = y.to_dtype(DType::U32)?.max(0)?.to_scalar::<u32>()? as usize;
        if max > self.num_classes {
            return Err(crate::Error::shape(format!(
                "label {max} out of range: labels are 0..{} and {} is the null class",
                self.num_classes, self.num_classes
            )));
        }
        Ok(self.table.embedding(&y.to_dtype(DType::U32)?)?)
    }
}

/// Fixed 2-D sin-cos positions of DiT (`get_2d_sincos_pos_embed`) for a (gh, gw) grid: the
/// first D/2 features encode the column, the last D/2 the row; each half is `[sin, cos]` with
/// frequencies 1/10000^(i/(D/4)). Returns (1, gh·gw, D) f32. Works for non-square grids.
pub fn pos_embed_2d(d: usize, gh: usize, gw: usize, device: &Device) -> Result<Tensor> {
    let quarter = d / 4;
    let omega: Vec<f64> = (0..quarter).map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64)).collect();
    let mut out = Vec::with_capacity(gh * gw * d);
    for r in 0..gh {
        for c in 0..gw {
            for pos in [c as f64, r as f64] {
                out.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                out.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    Ok(Tensor::from_vec(out, (1, gh * gw, d), device)?)
}
