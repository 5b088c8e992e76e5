//! The joint block of MMDiT (Esser et al. 2024, Fig. 2): an image stream (`x_block`) and a text
//! stream (`context_block`), each with its own adaLN modulation, qkv, projection and MLP, and one
//! attention over the concatenated sequence. The last block's text stream is "pre-only" (qkv and
//! a 2-way modulation, no output). Keys as in the SD3 checkpoints.
//!
//! MMDiT-X (SD3.5-medium, Stability-AI `mmditx.py`; diffusers' `use_dual_attention`): the image
//! stream of the blocks in `MmditConfig::dual_attention_layers` has a second, image-only self-attention `attn2` with its own QK-norm
//! and a 9-way modulation (the extra shift, scale, gate modulate the same normalised input; its
//! gated output is added after the joint attention's, before the MLP). `attn2` uses the block's
//! rectifier of the plan (rows grouped as for the joint attention), so I-ERG, PAG and SEG act on
//! both attentions of a block; probes see only the joint attention.
use candle_core::{Tensor, D};
use candle_nn::VarBuilder;

use super::config::Activation;
use crate::attention::{merge_heads, split_heads, AttentionProbe, ForwardPlan};
use crate::nn::ops::{gated_residual, gelu_erf, gelu_tanh, layer_norm_no_affine, modulate, rms_norm};
use crate::nn::{linear, Linear, Ops};
use crate::Result;

/// One stream's projections.
pub(crate) struct Stream {
    ada_ln: Linear,
    n_mods: usize,
    qkv: Linear,
    /// QK RMS-norm weights (`attn.ln_q.weight`, `attn.ln_k.weight`), ε = 10⁻⁶.
    ln_q: Option<Tensor>,
    ln_k: Option<Tensor>,
    /// Absent for a pre-only stream.
    post: Option<(Linear, Linear, Linear)>,
    /// MMDiT-X's image-only attention: qkv, proj, ln_q, ln_k.
    attn2: Option<(Linear, Linear, Tensor, Tensor)>,
    head_size: usize,
    activation: Activation,
}

/// Per-stream state kept from before to after attention.
pub(crate) struct Pending {
    mods: Vec<Tensor>,
    /// MMDiT-X: the normalised input modulated with the second attention's shift and scale.
    h2: Option<Tensor>,
}

impl Stream {
    pub(crate) fn new(d: usize, head_size: usize, qk_norm: bool, pre_only: bool, dual: bool, activation: Activation, vb: VarBuilder) -> Result<Self> {
        let n_mods = if pre_only {
            2
        } else if dual {
            9
        } else {
            6
        };
        let post =
            if pre_only { None } else { Some((linear(d, d, vb.pp("attn.proj"))?, linear(d, 4 * d, vb.pp("mlp.fc1"))?, linear(4 * d, d, vb.pp("mlp.fc2"))?)) };
        let (ln_q, ln_k) = if qk_norm {
            let w = |n: &str| vb.pp(n).get_with_hints(head_size, "weight", candle_nn::Init::Const(1.0));
            (Some(w("attn.ln_q")?), Some(w("attn.ln_k")?))
        } else {
            (None, None)
        };
        let attn2 = if dual {
            let w = |n: &str| vb.pp(n).get_with_hints(head_size, "weight", candle_nn::Init::Const(1.0));
            Some((linear(d, 3 * d, vb.pp("attn2.qkv"))?, linear(d, d, vb.pp("attn2.proj"))?, w("attn2.ln_q")?, w("attn2.ln_k")?))
        } else {
            None
        };
        Ok(Self {
            ada_ln: linear(d, n_mods * d, vb.pp("adaLN_modulation.1"))?,
            n_mods,
            qkv: linear(d, 3 * d, vb.pp("attn.qkv"))?,
            ln_q,
            ln_k,
            post,
            attn2,
            head_size,
            activation,
        })
    }

    /// Modulated, normalised input → the packed projection qkv (B, N, 3D).
    pub(crate) fn project(&self, x: &Tensor, c: &Tensor, ops: Ops) -> Result<(Tensor, Pending)> {
        let mods = self.ada_ln.forward(&c.silu()?, ops.kernels)?.chunk(self.n_mods, D::Minus1)?; // n_mods × (B, D)
        let normed = layer_norm_no_affine(x, 1e-6, ops)?; // (B, N, D)
        let h = modulate(&normed, &mods[0], &mods[1], ops)?; // (B, N, D)
        let h2 = match self.attn2 {
            Some(_) => Some(modulate(&normed, &mods[6], &mods[7], ops)?), // MMDiT-X
            None => None,
        };
        Ok((self.qkv.forward(&h, ops.kernels)?, Pending { mods, h2 })) // (B, N, 3D)
    }

    /// qkv (B, N, 3D) → q, k, v (B, H, N, d_h), q and k RMS-normed if configured.
    pub(crate) fn split_heads(&self, qkv: &Tensor, ops: Ops) -> Result<(Tensor, Tensor, Tensor)> {
        let heads = qkv.dim(2)? / (3 * self.head_size);
        let (mut q, mut k, v) = split_heads(qkv, heads)?; // (B, H, N, d_h) each
        if let (Some(lq), Some(lk)) = (&self.ln_q, &self.ln_k) {
            q = rms_norm(&q, lq, 1e-6, ops)?;
            k = rms_norm(&k, lk, 1e-6, ops)?;
        }
        Ok((q, k, v))
    }

    /// Attention output (B, N, D) → residual updates of attention (and MMDiT-X's second
    /// attention, block `l` of `plan` on `grid`) and MLP.
    pub(crate) fn post_attention(&self, x: &Tensor, attn: &Tensor, p: &Pending, l: usize, plan: &ForwardPlan, grid: (usize, usize)) -> Result<Tensor> {
        let ops = plan.ops;
        let (proj, fc1, fc2) = self.post.as_ref().expect("post_attention on a pre-only stream");
        let (m, k) = (&p.mods, ops.kernels);
        let mut x = gated_residual(x, &m[2], &proj.forward(attn, k)?, ops)?;
        if let (Some((qkv2, proj2, lq, lk)), Some(h2)) = (&self.attn2, &p.h2) {
            let heads = x.dim(2)? / self.head_size;
            let (q, k2, v) = split_heads(&qkv2.forward(h2, k)?, heads)?; // (B, H, N, d_h) each
            let (q, k2) = (rms_norm(&q, lq, 1e-6, ops)?, rms_norm(&k2, lk, 1e-6, ops)?);
            let o = merge_heads(&plan.attend(l, &q, &k2, &v, Some(grid), &mut crate::attention::NoProbe)?)?; // (B, N, D)
            x = gated_residual(&x, &m[8], &proj2.forward(&o, k)?, ops)?;
        }
        let h = modulate(&layer_norm_no_affine(&x, 1e-6, ops)?, &m[3], &m[4], ops)?;
        let h = fc1.forward(&h, k)?; // (B, N, 4D)
        let h = match self.activation {
            Activation::GeluTanh => gelu_tanh(&h, ops)?, // SD3
            Activation::GeluErf => gelu_erf(&h, ops)?,
        };
        let h = fc2.forward(&h, k)?;
        gated_residual(&x, &m[5], &h, ops)
    }
}

/// A joint block.
pub struct JointBlock {
    pub(crate) x: Stream,
    pub(crate) context: Stream,
}

impl JointBlock {
    pub(crate) fn new(d: usize, head_size: usize, qk_norm: bool, last: bool, dual: bool, activation: Activation, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            x: Stream::new(d, head_size, qk_norm, false, dual, activation, vb.pp("x_block"))?,
            context: Stream::new(d, head_size, qk_norm, last, false, activation, vb.pp("context_block"))?,
        })
    }

    /// Block `l`: image tokens `x` (B, N, D), text tokens `ctx` (B, L, D), conditioning `c`
    /// (B, D) → new (x, ctx); ctx is `None` after the last block. Attention runs over
    /// [image; text] (image first, so SEG's `grid` (rows, cols) of image tokens covers the leading
    /// tokens) with the plan's rectifier for block `l`; the temperature acts after the QK-norm.
    ///
    /// Rows whose plan skips block `l` (SLG) keep their input, in both streams.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        l: usize,
        x: &Tensor,
        ctx: &Tensor,
        c: &Tensor,
        plan: &ForwardPlan,
        grid: (usize, usize),
        probe: &mut dyn AttentionProbe,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (n, d, ops) = (x.dim(1)?, x.dim(2)?, plan.ops);
        let (qkv_x, px) = self.x.project(x, c, ops)?; // (B, N, 3D)
        let (qkv_c, pc) = self.context.project(ctx, c, ops)?; // (B, L, 3D)
        let o = match self.x.ln_q {
            // Without QK-norm, attention runs on the packed projections of [image; text].
            None => plan.attend_packed(l, &Tensor::cat(&[&qkv_x, &qkv_c], 1)?, d / self.x.head_size, Some(grid), probe)?, // (B, N + L, D)
            Some(_) => {
                let (qx, kx, vx) = self.x.split_heads(&qkv_x, ops)?;
                let (qc, kc, vc) = self.context.split_heads(&qkv_c, ops)?;
                let q = Tensor::cat(&[&qx, &qc], 2)?; // (B, H, N + L, d_h)
                let k = Tensor::cat(&[&kx, &kc], 2)?;
                let v = Tensor::cat(&[&vx, &vc], 2)?;
                merge_heads(&plan.attend(l, &q, &k, &v, Some(grid), probe)?)? // (B, N + L, D)
            }
        };
        let s = o.dim(1)?;
        let o_img = plan.nag_outputs(l, &o.narrow(1, 0, n)?)?; // NAG's guided image outputs, if coupled
        let x_new = plan.nag_share_image(plan.keep_skipped(l, x, self.x.post_attention(x, &o_img, &px, l, plan, grid)?)?)?;
        let ctx_new = match self.context.post {
            Some(_) => Some(plan.keep_skipped(l, ctx, self.context.post_attention(ctx, &o.narrow(1, n, s - n)?, &pc, l, plan, grid)?)?),
            None => None,
        };
        Ok((x_new, ctx_new))
    }
}
