//! MMDiT, the joint-attention transformer of Stable Diffusion 3 (Esser et al. 2024, "Scaling
//! rectified flow transformers for high-resolution image synthesis"), on the crate's rectified
//! attention, so I-ERG (temperature after the QK-norm), PAG, SEG (image queries), SLG and the
//! energy update all apply to it through the [`ForwardPlan`].
//!
//! Weight names follow the SD3 checkpoints below `model.diffusion_model`: `x_embedder.proj`,
//! `pos_embed`, `t_embedder.mlp.{0,2}`, `y_embedder.mlp.{0,2}`, `context_embedder`,
//! `joint_blocks.{i}.{x_block,context_block}.{adaLN_modulation.1, attn.qkv, attn.proj,
//! attn.ln_q, attn.ln_k, mlp.fc1, mlp.fc2}`, `final_layer.{adaLN_modulation.1, linear}`; the last
//! block's `context_block` has only `adaLN_modulation.1` and `attn.qkv` (and `attn.ln_q/ln_k` with
//! QK-norm, as in the SD3.5 reference `mmditx.py`; candle-transformers skips those). Tests check
//! the outputs against candle-transformers' `mmdit` on the same random weights.
//!
//! Time: SD3 integrates from data to noise with σ ∈ [0, 1] and takes the timestep 1000·σ, its
//! output being dx/dσ = ε − x₀. The paper's convention (t = 0 noise, t = 1 data) has σ = 1 − t
//! and v = x₁ − ε = −(ε − x₀). [`Mmdit::velocity`] converts, here and nowhere else.
//! MMDiT-X (SD3.5-medium): `MmditConfig::dual_attention_layers` (see [`block`]).
pub mod block;
pub mod config;
pub mod t2i;

use candle_core::{DType, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

pub use block::JointBlock;
pub use config::MmditConfig;
pub use t2i::{TextToImage, TextToImageConfig};

use crate::attention::{AttentionProbe, ForwardPlan};
use crate::models::embed::timestep_features;
use crate::nn::ops::{layer_norm_no_affine, modulate};
use crate::nn::Linear;
use crate::{Error, Result};

/// The MMDiT denoiser.
pub struct Mmdit {
    cfg: MmditConfig,
    x_embedder: candle_nn::Conv2d,
    pos_embed: Tensor,
    t_mlp: (Linear, Linear),
    y_mlp: (Linear, Linear),
    context_embedder: Linear,
    blocks: Vec<JointBlock>,
    final_ada_ln: Linear,
    final_linear: Linear,
}

impl Mmdit {
    /// Builds from `vb` positioned at the model's root (for SD3 files: `vb.pp("model.diffusion_model")`).
    pub fn new(cfg: &MmditConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size();
        let p = cfg.patch_size;
        let lin = |i, o, name: &str| crate::nn::linear(i, o, vb.pp(name));
        Ok(Self {
            cfg: cfg.clone(),
            x_embedder: candle_nn::conv2d(cfg.in_channels, d, p, Conv2dConfig { stride: p, ..Default::default() }, vb.pp("x_embedder.proj"))?,
            pos_embed: vb.get((1, cfg.pos_embed_max_size * cfg.pos_embed_max_size, d), "pos_embed")?,
            t_mlp: (lin(cfg.frequency_embedding_size, d, "t_embedder.mlp.0")?, lin(d, d, "t_embedder.mlp.2")?),
            y_mlp: (lin(cfg.adm_in_channels, d, "y_embedder.mlp.0")?, lin(d, d, "y_embedder.mlp.2")?),
            context_embedder: lin(cfg.context_embed_size, d, "context_embedder")?,
            blocks: (0..cfg.depth)
                .map(|i| {
                    let dual = cfg.dual_attention_layers.contains(&i);
                    JointBlock::new(d, cfg.head_size, cfg.qk_norm, i + 1 == cfg.depth, dual, cfg.activation, vb.pp(format!("joint_blocks.{i}")))
                })
                .collect::<Result<_>>()?,
            final_ada_ln: lin(d, 2 * d, "final_layer.adaLN_modulation.1")?,
            final_linear: lin(d, p * p * cfg.out_channels, "final_layer.linear")?,
        })
    }

    /// Loads an SD3-layout safetensors file (keys under `prefix`, e.g. `model.diffusion_model`,
    /// or `""`), in f32; a missing or misshaped tensor is an error naming it.
    pub fn load(cfg: &MmditConfig, path: &std::path::Path, prefix: &str, device: &candle_core::Device) -> Result<Self> {
        let vb = VarBuilder::from_tensors(crate::checkpoint::load_tensors(path, device)?, DType::F32, device);
        let vb = if prefix.is_empty() { vb } else { vb.pp(prefix) };
        Self::new(cfg, vb)
    }

    /// The configuration.
    pub fn config(&self) -> &MmditConfig {
        &self.cfg
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.pos_embed.dtype()
    }

    /// The joint blocks.
    pub fn blocks(&self) -> &[JointBlock] {
        &self.blocks
    }

    /// The network in SD3's own convention: latents `x` (B, C, H, W), timesteps (B,) = 1000·σ,
    /// pooled vector `y` (B, adm_in_channels), context (B, L, context_embed_size) → dx/dσ
    /// (B, C_out, H, W). H and W must be multiples of the patch size.
    /// `probe` receives the attention of the blocks it wants.
    pub fn forward_sd3(
        &self,
        x: &Tensor,
        timesteps: &Tensor,
        y: &Tensor,
        context: &Tensor,
        plan: &ForwardPlan,
        probe: &mut dyn AttentionProbe,
    ) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let p = self.cfg.patch_size;
        if h % p != 0 || w % p != 0 {
            return Err(Error::shape(format!("MMDiT input {h}×{w} is not a multiple of the patch size {p}")));
        }
        let (gh, gw) = (h / p, w / p);
        let m = self.cfg.pos_embed_max_size;
        if gh > m || gw > m {
            return Err(Error::shape(format!("MMDiT input {h}×{w} needs a {gh}×{gw} position grid; the model has {m}×{m}")));
        }
        if plan.batch() != b {
            return Err(Error::shape(format!("forward plan covers {} rows, batch has {b}", plan.batch())));
        }
        plan.validate(self.cfg.depth)?;
        let d = self.cfg.hidden_size();
        let pos = self.pos_embed.reshape((1, m, m, d))?.narrow(1, (m - gh) / 2, gh)?.narrow(2, (m - gw) / 2, gw)?.reshape((1, gh * gw, d))?; // centre crop
        let xt = self.x_embedder.forward(x)?.flatten_from(2)?.transpose(1, 2)?.broadcast_add(&pos)?; // (B, N, D)
        let k = plan.ops.kernels;
        let tf = timestep_features(&timesteps.to_dtype(DType::F32)?, self.cfg.frequency_embedding_size)?.to_dtype(self.dtype())?; // (B, 256)
        let t_emb = self.t_mlp.1.forward(&self.t_mlp.0.forward(&tf, k)?.silu()?, k)?; // (B, D)
        let y_emb = self.y_mlp.1.forward(&self.y_mlp.0.forward(y, k)?.silu()?, k)?; // (B, D)
        let c = (t_emb + y_emb)?; // (B, D)
        let ctx = self.context_embedder.forward(context, k)?; // (B, L, D)
        let out = self.forward_tokens(&xt, &ctx, &c, plan, (gh, gw), probe)?; // (B, N, p²·C)
        let co = self.cfg.out_channels;
        let out = out.reshape((b, gh, gw, p, p, co))?.permute((0, 5, 1, 3, 2, 4))?; // (B, C, gh, p, gw, p)
        Ok(out.reshape((b, co, h, w))?)
    }

    /// The transformer on embedded tokens: image tokens (B, N, D) laid out on `grid` (rows, cols),
    /// text tokens (B, L, D), conditioning `c` (B, D) → per-patch outputs (B, N, p²·C_out)
    /// (candle-transformers' `MMDiTCore::forward`).
    pub fn forward_tokens(
        &self,
        x: &Tensor,
        ctx: &Tensor,
        c: &Tensor,
        plan: &ForwardPlan,
        grid: (usize, usize),
        probe: &mut dyn AttentionProbe,
    ) -> Result<Tensor> {
        let (mut xt, mut ctx) = (x.clone(), ctx.clone());
        for (l, blk) in self.blocks.iter().enumerate() {
            let (x_new, ctx_new) = blk.forward(l, &xt, &ctx, c, plan, grid, probe)?; // SLG rows keep their input
            xt = x_new;
            if let Some(cn) = ctx_new {
                ctx = cn;
            }
        }
        let (ops, k) = (plan.ops, plan.ops.kernels);
        let mods = self.final_ada_ln.forward(&c.silu()?, k)?.chunk(2, candle_core::D::Minus1)?;
        self.final_linear.forward(&modulate(&layer_norm_no_affine(&xt, 1e-6, ops)?, &mods[0], &mods[1], ops)?, k)
        // (B, N, p²·C)
    }

    /// The velocity in the paper's convention (t = 0 noise, t = 1 data; v = x₁ − ε): converts to
    /// SD3's σ = 1 − t, timestep 1000·σ, and negates the output. `t` (B,) in [0, 1].
    pub fn velocity(&self, x: &Tensor, t: &Tensor, y: &Tensor, context: &Tensor, plan: &ForwardPlan, probe: &mut dyn AttentionProbe) -> Result<Tensor> {
        let timesteps = ((1.0 - t.to_dtype(DType::F32)?)? * 1000.0)?;
        Ok(self.forward_sd3(x, &timesteps, y, context, plan, probe)?.neg()?)
    }
}
