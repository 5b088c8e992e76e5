//! The adaLN-Zero DiT block (Peebles & Xie 2023, Fig. 3): attention and MLP, each behind a
//! layer norm modulated by (shift, scale) and a gate regressed from the conditioning.
use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::config::{Activation, DitConfig};
use crate::attention::{AttentionProbe, ForwardPlan};
use crate::nn::ops::{gated_residual, gelu_erf, gelu_tanh, layer_norm_no_affine, modulate};
use crate::nn::{xavier_linear, zero_linear, Linear, Ops};
use crate::Result;

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
            qkv: xavier_linear(d, 3 * d, vb.pp("attn.qkv"))?,
            proj: xavier_linear(d, d, vb.pp("attn.proj"))?,
            fc1: xavier_linear(d, m, vb.pp("mlp.fc1"))?,
            fc2: xavier_linear(m, d, vb.pp("mlp.fc2"))?,
            ada_ln: zero_linear(d, 6 * d, vb.pp("adaLN_modulation.1"))?,
            num_heads: cfg.num_heads,
            activation: cfg.activation,
            grid: cfg.grid(),
        })
    }

    /// Self-attention of block `l` with the plan's rectifier: (B, N, D) → (B, N, D).
    fn attn(&self, x: &Tensor, l: usize, plan: &ForwardPlan, probe: &mut dyn AttentionProbe) -> Result<Tensor> {
        let k = plan.ops.kernels;
        let qkv = self.qkv.forward(x, k)?; // (B, N, 3D)
        let o = plan.attend_packed(l, &qkv, self.num_heads, Some(self.grid), probe)?; // (B, N, D)
        self.proj.forward(&o, k)
    }

    fn mlp(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        let hdn = self.fc1.forward(x, ops.kernels)?; // (B, N, M)
        let hdn = match self.activation {
            Activation::GeluTanh => gelu_tanh(&hdn, ops)?,
            Activation::GeluErf => gelu_erf(&hdn, ops)?,
        };
        self.fc2.forward(&hdn, ops.kernels) // (B, N, D)
    }

    /// `x` (B, N, D), conditioning `c` (B, D), block index `l` → (B, N, D). Rows whose plan
    /// skips block `l` (SLG) pass through unchanged.
    pub fn forward(&self, x: &Tensor, c: &Tensor, l: usize, plan: &ForwardPlan, probe: &mut dyn AttentionProbe) -> Result<Tensor> {
        if plan.all_skip(l) {
            return Ok(x.clone());
        }
        let ops = plan.ops;
        let m = self.ada_ln.forward(&c.silu()?, ops.kernels)?.chunk(6, 1)?; // 6 × (B, D)
        let (shift_msa, scale_msa, gate_msa) = (&m[0], &m[1], &m[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&m[3], &m[4], &m[5]);
        let hdn = modulate(&layer_norm_no_affine(x, 1e-6, ops)?, shift_msa, scale_msa, ops)?; // (B, N, D)
        let h = gated_residual(x, gate_msa, &self.attn(&hdn, l, plan, probe)?, ops)?; // (B, N, D)
        let hdn = modulate(&layer_norm_no_affine(&h, 1e-6, ops)?, shift_mlp, scale_mlp, ops)?;
        plan.keep_skipped(l, x, gated_residual(&h, gate_mlp, &self.mlp(&hdn, ops)?, ops)?)
    }
}
