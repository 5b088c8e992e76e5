//! DiT: Scalable Diffusion Models with Transformers (Peebles & Xie, 2023).
//!
//! The architecture of facebookresearch/DiT `models.py`: patch embedding (a conv with
//! kernel = stride = patch, computed as a matmul on patches), fixed 2-D sin-cos positions,
//! sinusoidal timestep embedder, label embedder with a null class for classifier-free guidance,
//! adaLN-Zero blocks, adaLN final layer, zero-initialised modulations and output.
//! Weight names follow the official checkpoints (`x_embedder.proj`, `t_embedder.mlp.0`,
//! `y_embedder.embedding_table`, `blocks.{i}.attn.qkv`, `blocks.{i}.adaLN_modulation.1`,
//! `final_layer.linear`, ...), so checkpoints of that family load (see [`config::DitConfig`]).
//!
//! Differences from the reference, all configurable: the output predicts the rectified-flow
//! velocity (the official DDPM checkpoints predict ε and Σ, `learn_sigma`: the extra channels are
//! dropped); the time input t ∈ [0, 1] is embedded as 1000·t ([`Dit::with_time_scale`] changes it;
//! [`crate::models::imagenet`] wraps the official checkpoints).
pub mod block;
pub mod config;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use block::DitBlock;
pub use config::{Activation, DitConfig};

use crate::attention::{AttentionProbe, ForwardPlan, NoProbe};
use crate::checkpoint::{build_strict, card_path, load_card, load_checkpoint, ModelCard};
use crate::models::embed::{pos_embed_2d, LabelEmbedder, PatchEmbed, TimestepEmbedder};
use crate::models::Denoiser;
use crate::nn::ops::{layer_norm_no_affine, modulate};
use crate::nn::{zero_linear, Ops};
use crate::{Error, Result};

/// The adaLN final layer: LN (no affine) → modulate(shift, scale) → Linear(D, p²·C_out).
#[derive(Debug, Clone)]
pub struct FinalLayer {
    linear: crate::nn::Linear,
    ada_ln: crate::nn::Linear,
}

impl FinalLayer {
    fn new(cfg: &DitConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let out = cfg.patch_size * cfg.patch_size * cfg.out_channels();
        Ok(Self { linear: zero_linear(d, out, vb.pp("linear"))?, ada_ln: zero_linear(d, 2 * d, vb.pp("adaLN_modulation.1"))? })
    }

    fn forward(&self, x: &Tensor, c: &Tensor, ops: Ops) -> Result<Tensor> {
        let m = self.ada_ln.forward(&c.silu()?, ops.kernels)?.chunk(2, 1)?; // 2 × (B, D)
        let x = modulate(&layer_norm_no_affine(x, 1e-6, ops)?, &m[0], &m[1], ops)?; // (B, N, D)
        self.linear.forward(&x, ops.kernels) // (B, N, p²·C_out)
    }
}

/// A DiT denoiser. Build with [`Dit::new`] from a `VarBuilder` (a checkpoint, or a
/// [`crate::nn::SeededVarMap`] for training from scratch).
#[derive(Debug, Clone)]
pub struct Dit {
    cfg: DitConfig,
    x_embedder: PatchEmbed,
    t_embedder: TimestepEmbedder,
    y_embedder: LabelEmbedder,
    pos_embed: Tensor,
    blocks: Vec<DitBlock>,
    final_layer: FinalLayer,
    /// The timestep embedder's input is `time_scale`·t (1000 for the crate's models).
    time_scale: f64,
}

impl Dit {
    /// Builds the model; weights are read from (or created in) `vb` under the official names.
    ///
    /// Errors: invalid config; a missing or mis-shaped weight in `vb`.
    pub fn new(cfg: &DitConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let device = vb.device().clone();
        let (gh, gw) = cfg.grid();
        Ok(Self {
            cfg: cfg.clone(),
            x_embedder: PatchEmbed::new(cfg.in_channels, cfg.patch_size, cfg.hidden_size, vb.pp("x_embedder.proj"))?,
            t_embedder: TimestepEmbedder::new(cfg.hidden_size, vb.pp("t_embedder"))?,
            y_embedder: LabelEmbedder::new(cfg.num_classes, cfg.hidden_size, vb.pp("y_embedder"))?,
            pos_embed: pos_embed_2d(cfg.hidden_size, gh, gw, &device)?.to_dtype(vb.dtype())?,
            blocks: (0..cfg.depth).map(|i| DitBlock::new(cfg, vb.pp(format!("blocks.{i}")))).collect::<Result<_>>()?,
            final_layer: FinalLayer::new(cfg, vb.pp("final_layer"))?,
            time_scale: 1000.0,
        })
    }

    /// The same network fed `scale`·t as its timestep input (SiT: 1, its t itself; DDPM
    /// wrappers: 1, passing the DDPM index as t). The crate's models use 1000.
    pub fn with_time_scale(self, scale: f64) -> Self {
        Self { time_scale: scale, ..self }
    }

    /// The model's configuration.
    pub fn config(&self) -> &DitConfig {
        &self.cfg
    }

    /// The fixed 2-D sin-cos positions (1, N, D).
    pub fn pos_embed(&self) -> &Tensor {
        &self.pos_embed
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.pos_embed.device()
    }

    /// Tokens (B, N, p²·C_out) → images (B, C_out, H, W), DiT's `unpatchify` (channel order p, q, c).
    fn unpatchify(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, _) = x.dims3()?;
        let p = self.cfg.patch_size;
        let c = self.cfg.out_channels();
        let (gh, gw) = self.cfg.grid();
        let x = x.reshape((b, gh, gw, p, p, c))?; // n h w p q c
        let x = x.permute((0, 5, 1, 3, 2, 4))?; // n c h p w q
        Ok(x.reshape((b, c, gh * p, gw * p))?)
    }

    /// Forward with an explicit plan: `x` (B, C, H, W), `t` (B,) in [0, 1], `y` (B,) u32 labels
    /// in `0..=num_classes` (`num_classes` = null class) → velocity (B, C, H, W).
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor, plan: &ForwardPlan) -> Result<Tensor> {
        if y.dims() != [x.dim(0)?] {
            return Err(Error::shape(format!("y must have shape ({},), got {:?}", x.dim(0)?, y.dims())));
        }
        self.forward_embedded(x, t, &self.y_embedder.forward(y)?, plan)
    }

    /// Forward from label embeddings `y_emb` (B, D) (the output of `y_embedder`, possibly
    /// perturbed, e.g. by CADS).
    pub fn forward_embedded(&self, x: &Tensor, t: &Tensor, y_emb: &Tensor, plan: &ForwardPlan) -> Result<Tensor> {
        self.forward_probed(x, t, y_emb, plan, &mut NoProbe)
    }

    /// [`Self::forward_embedded`] reporting the attention of the blocks `probe` wants.
    pub fn forward_probed(&self, x: &Tensor, t: &Tensor, y_emb: &Tensor, plan: &ForwardPlan, probe: &mut dyn AttentionProbe) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (ec, eh, ew) = self.image_shape();
        if (c, h, w) != (ec, eh, ew) {
            return Err(Error::shape(format!("DiT expects images of shape (B, {ec}, {eh}, {ew}), got {:?}", x.dims())));
        }
        if t.dims() != [b] || y_emb.dims() != [b, self.cfg.hidden_size] {
            return Err(Error::shape(format!(
                "t must have shape ({b},) and the label embedding ({b}, {}), got {:?} and {:?}",
                self.cfg.hidden_size,
                t.dims(),
                y_emb.dims()
            )));
        }
        if plan.batch() != b {
            return Err(Error::shape(format!("forward plan covers {} rows, batch has {b}", plan.batch())));
        }
        plan.validate(self.cfg.depth)?;
        let ops = plan.ops;
        let x = self.x_embedder.forward(x, ops)?.broadcast_add(&self.pos_embed)?; // (B, N, D)
        let t_emb = self.t_embedder.forward(&(t.to_dtype(DType::F32)? * self.time_scale)?, ops)?; // (B, D)
        let c = (t_emb.to_dtype(x.dtype())? + y_emb)?; // (B, D)
        let mut x = x;
        for (l, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, &c, l, plan, probe)?; // (B, N, D)
        }
        let x = self.final_layer.forward(&x, &c, ops)?; // (B, N, p²·C_out)
        let x = self.unpatchify(&x)?; // (B, C_out, H, W)
        if self.cfg.learn_sigma {
            Ok(x.narrow(1, 0, self.cfg.in_channels)?)
        } else {
            Ok(x)
        }
    }
}

impl Denoiser for Dit {
    fn depth(&self) -> usize {
        self.cfg.depth
    }
    fn image_shape(&self) -> (usize, usize, usize) {
        (self.cfg.in_channels, self.cfg.input_size.0, self.cfg.input_size.1)
    }
    fn token_grid(&self) -> (usize, usize) {
        self.cfg.grid()
    }
    fn embed_condition(&self, cond: &Tensor) -> Result<Tensor> {
        self.y_embedder.forward(cond)
    }
    fn velocity_probed(&self, x: &Tensor, t: &Tensor, cond_emb: &Tensor, plan: &ForwardPlan, probe: &mut dyn AttentionProbe) -> Result<Tensor> {
        self.forward_probed(x, t, cond_emb, plan, probe)
    }
    fn null_condition(&self, cond: &Tensor) -> Result<Tensor> {
        let b = cond.dim(0)?;
        Ok(Tensor::full(self.cfg.num_classes as u32, b, cond.device())?)
    }
}

/// Loads a DiT checkpoint (`<stem>.safetensors` with its `<stem>.json` card) for sampling: plain
/// tensors (no autograd tracking), f32, on `device`.
///
/// Errors: missing weights or card, corrupt files, weights that do not match the card's config.
pub fn load(weights: &Path, device: &Device) -> Result<(Dit, ModelCard<DitConfig>)> {
    let card: ModelCard<serde_json::Value> = load_card(weights)?;
    if card.model != "dit" {
        return Err(Error::corrupt(weights, format!("the card describes a {:?} model, not a DiT (dit)", card.model)));
    }
    let (tensors, card): (_, ModelCard<DitConfig>) = load_checkpoint(weights, device)?;
    card.config.validate().map_err(|e| Error::corrupt(card_path(weights), e))?;
    let model = build_strict(weights, tensors, device, |vb| Dit::new(&card.config, vb))?;
    Ok((model, card))
}
