//! The adaLN-Zero DiT block (Peebles & Xie 2023, Fig. 3): attention and MLP, each behind a
//! layer norm modulated by (shift, scale) and a gate regressed from the conditioning.
use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};

use super::config::{Activation, DitConfig};
use crate::attention::{select_rows, ForwardPlan};
use crate::nn::broadcast::{gated_residual, modulate};
use crate::nn::ops::layer_norm_no_affine;
use crate::nn::Linear;
use crate::Result;

/// A linear layer with an explicit initialisation of the weight (bias 0) when created fresh;
/// ignored when the weight is loaded.
pub(crate) fn linear_init(i: usize, o: usize, init: Init, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints((o, i), "weight", init)?;
    let b = vb.get_with_hints(o, "bias", Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

/// A linear layer with DiT's default init: xavier-uniform weight, zero bias; `zero` for the
/// adaLN-Zero modulations and the final layer.
pub(crate) fn linear(i: usize, o: usize, zero: bool, vb: VarBuilder) -> Result<Linear> {
    let init = if zero {
        Init::Const(0.0)
    } else {
        let a = (6.0 / (i + o) as f64).sqrt();
        Init::Uniform { lo: -a, up: a }
    };
    linear_init(i, o, init, vb)
}

/// One DiT block. Weight names: `attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`, `adaLN_modulation.1`.
#[derive(Debug, Clone)]
pub struct DitBlock {
    qkv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
    ada_ln: Linear,
    num_heads: usize,
    activation: Activation,
    grid: (usize, usize),
}

impl DitBlock {
    pub(crate) fn new(cfg: &DitConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let m = (cfg.mlp_ratio * d as f64) as usize;
        Ok(Self {
            qkv: linear(d, 3 * d, false, vb.pp("attn.qkv"))?,
            proj: linear(d, d, false, vb.pp("attn.proj"))?,
            fc1: linear(d, m, false, vb.pp("mlp.fc1"))?,
            fc2: linear(m, d, false, vb.pp("mlp.fc2"))?,
            ada_ln: linear(d, 6 * d, true, vb.pp("adaLN_modulation.1"))?,
            num_heads: cfg.num_heads,
            activation: cfg.activation,
            grid: cfg.grid(),
        })
    }

    /// Self-attention of block `l` with the plan's rectifier: (B, N, D) → (B, N, D).
    fn attn(&self, x: &Tensor, l: usize, plan: &ForwardPlan) -> Result<Tensor> {
        let qkv = x.apply(&self.qkv)?; // (B, N, 3D)
        let o = plan.attend_packed(l, &qkv, self.num_heads, Some(self.grid))?; // (B, N, D)
        Ok(o.apply(&self.proj)?)
    }

    fn mlp(&self, x: &Tensor) -> Result<Tensor> {
        let hdn = x.apply(&self.fc1)?; // (B, N, M)
        let hdn = match self.activation {
            Activation::GeluTanh => hdn.gelu()?,
            Activation::GeluErf => crate::nn::ops::gelu_erf(&hdn)?,
        };
        Ok(self.fc2.forward(&hdn)?)
    }

    /// `x` (B, N, D), conditioning `c` (B, D), block index `l` → (B, N, D). Rows whose plan
    /// skips block `l` (SLG) pass through unchanged.
    pub fn forward(&self, x: &Tensor, c: &Tensor, l: usize, plan: &ForwardPlan) -> Result<Tensor> {
        match plan.skipped(l) {
            None => self.forward_all(x, c, l, plan),
            Some(flags) if flags.iter().all(|&f| f) => Ok(x.clone()),
            Some(flags) => select_rows(plan, &flags, x, &self.forward_all(x, c, l, plan)?),
        }
    }

    fn forward_all(&self, x: &Tensor, c: &Tensor, l: usize, plan: &ForwardPlan) -> Result<Tensor> {
        let m = c.silu()?.apply(&self.ada_ln)?.chunk(6, 1)?; // 6 × (B, D)
        let (shift_msa, scale_msa, gate_msa) = (&m[0], &m[1], &m[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&m[3], &m[4], &m[5]);
        let hdn = modulate(&layer_norm_no_affine(x, 1e-6, plan.mode)?, shift_msa, scale_msa)?;
        let x = gated_residual(x, gate_msa, &self.attn(&hdn, l, plan)?)?;
        let hdn = modulate(&layer_norm_no_affine(&x, 1e-6, plan.mode)?, shift_mlp, scale_mlp)?;
        gated_residual(&x, gate_mlp, &self.mlp(&hdn)?)
    }
}
