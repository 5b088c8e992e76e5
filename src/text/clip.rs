//! The CLIP text transformer (Radford et al. 2021) of Stable Diffusion 3's two CLIP encoders,
//! CLIP-L (OpenAI ViT-L/14) and CLIP-G (OpenCLIP bigG/14), with C-ERG's attention temperature.
//!
//! Weight names as transformers' `CLIPTextModelWithProjection` (the diffusers layout's
//! `text_encoder{,_2}/model.safetensors`; SD3 single files put the same names below
//! `text_encoders.clip_{l,g}.transformer.`): `text_model.embeddings.{token,position}_embedding`,
//! `text_model.encoder.layers.{i}.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2,
//! mlp.fc1, mlp.fc2}`, `text_model.final_layer_norm`, `text_projection` (no bias; SD3's single
//! files have none for CLIP-L, which then uses the identity, as diffusers does).
//!
//! What SD3 takes (diffusers `StableDiffusion3Pipeline._get_clip_prompt_embeds`): the
//! penultimate hidden state (`hidden_states[-2]`, the output of layer `n − 2`, before the final
//! layer norm) as context tokens, and the projected pooled output (`text_embeds`: the final
//! layer norm of the last layer's state at the first end-of-text token, times `text_projection`).
//! No padding mask: CLIP's causal mask keeps each token from seeing the padding after it.
//!
//! C-ERG: τ_c multiplies the logits q·kᵀ/√d_h of the layers [l_min, l_max) before the causal mask
//! (no QK-norm in CLIP), so τ_c = 1 is the plain encoder. With τ_c = 1 the outputs equal
//! candle-transformers' `clip::text_model::ClipTextTransformer` and transformers' model (tests).
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::TextRectification;
use crate::{Error, Result};

/// The MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipActivation {
    /// x·σ(1.702·x) (OpenAI CLIP, CLIP-L).
    QuickGelu,
    /// erf-GELU (OpenCLIP, CLIP-G).
    Gelu,
}

fn default_eps() -> f64 {
    1e-5
}

/// CLIP text hyperparameters: the fields of transformers' `CLIPTextConfig` (`config.json`) that
/// matter here; other fields of such a file are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    /// Vocabulary size (49408 for CLIP's BPE).
    pub vocab_size: usize,
    /// Width D.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Positions (77).
    pub max_position_embeddings: usize,
    /// MLP activation (`quick_gelu` or `gelu`).
    pub hidden_act: ClipActivation,
    /// Width of the projected pooled output.
    pub projection_dim: usize,
    /// End-of-text token id; transformers' legacy value 2 means "the largest id of the row"
    /// (CLIP's end-of-text token 49407 is its largest id).
    pub eos_token_id: u32,
    /// LayerNorm ε.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

impl ClipTextConfig {
    /// CLIP-L/14 (SD3's `text_encoder`): 12 layers × 768, 12 heads, quick-GELU, projection 768.
    pub fn clip_l() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: ClipActivation::QuickGelu,
            projection_dim: 768,
            eos_token_id: 49407,
            layer_norm_eps: 1e-5,
        }
    }
    /// OpenCLIP bigG/14 (SD3's `text_encoder_2`): 32 layers × 1280, 20 heads, GELU, projection 1280.
    pub fn clip_g() -> Self {
        Self {
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 20,
            hidden_act: ClipActivation::Gelu,
            projection_dim: 1280,
            ..Self::clip_l()
        }
    }
}

struct ClipLayer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// What SD3 takes from a CLIP encoder.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// The penultimate hidden state (B, L, D).
    pub penultimate: Tensor,
    /// The projected pooled output (B, projection_dim).
    pub pooled: Tensor,
}

/// A CLIP text encoder (inference).
pub struct ClipText {
    cfg: ClipTextConfig,
    token: Embedding,
    position: Tensor, // (max_positions, D)
    layers: Vec<ClipLayer>,
    final_ln: LayerNorm,
    /// `None`: the identity (SD3 single files' CLIP-L).
    projection: Option<Linear>,
}

impl ClipText {
    /// Builds from `vb` positioned at the model root (holding `text_model.*`).
    /// Errors: a missing or misshaped tensor, named.
    pub fn new(cfg: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let (d, e) = (cfg.hidden_size, cfg.layer_norm_eps);
        let tm = vb.pp("text_model");
        let ln = |vb: VarBuilder| candle_nn::layer_norm(d, e, vb);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = tm.pp(format!("encoder.layers.{i}"));
                let a = l.pp("self_attn");
                Ok(ClipLayer {
                    ln1: ln(l.pp("layer_norm1"))?,
                    q: candle_nn::linear(d, d, a.pp("q_proj"))?,
                    k: candle_nn::linear(d, d, a.pp("k_proj"))?,
                    v: candle_nn::linear(d, d, a.pp("v_proj"))?,
                    out: candle_nn::linear(d, d, a.pp("out_proj"))?,
                    ln2: ln(l.pp("layer_norm2"))?,
                    fc1: candle_nn::linear(d, cfg.intermediate_size, l.pp("mlp.fc1"))?,
                    fc2: candle_nn::linear(cfg.intermediate_size, d, l.pp("mlp.fc2"))?,
                })
            })
            .collect::<Result<_>>()?;
        let projection = if vb.contains_tensor("text_projection.weight") {
            Some(candle_nn::linear_no_bias(d, cfg.projection_dim, vb.pp("text_projection"))?)
        } else if cfg.projection_dim == d {
            None
        } else {
            return Err(Error::shape(format!("text_projection.weight is missing and projection_dim {} != hidden_size {d}", cfg.projection_dim)));
        };
        Ok(Self {
            cfg: cfg.clone(),
            token: candle_nn::embedding(cfg.vocab_size, d, tm.pp("embeddings.token_embedding"))?,
            position: tm.pp("embeddings.position_embedding").get((cfg.max_position_embeddings, d), "weight")?,
            layers,
            final_ln: ln(tm.pp("final_layer_norm"))?,
            projection,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClipTextConfig {
        &self.cfg
    }

    /// Layers (the range of C-ERG's l_min^c, l_max^c).
    pub fn layers(&self) -> usize {
        self.cfg.num_hidden_layers
    }

    /// Position of the end-of-text token in each row of `ids` (B, L) (see
    /// [`ClipTextConfig::eos_token_id`]).
    fn eos_positions(&self, ids: &Tensor) -> Result<Vec<usize>> {
        let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        Ok(rows
            .iter()
            .map(|r| {
                let eos = if self.cfg.eos_token_id == 2 { r.iter().copied().max().unwrap_or(0) } else { self.cfg.eos_token_id };
                r.iter().position(|&t| t == eos).unwrap_or(r.len() - 1)
            })
            .collect())
    }

    /// Runs the encoder on token ids (B, L) u32 (L ≤ 77) with the C-ERG rectification `rect`
    /// (None = plain). Returns the penultimate state and the projected pooled output.
    /// Errors: too many tokens; `rect` outside the layers.
    pub fn forward(&self, ids: &Tensor, rect: Option<&TextRectification>) -> Result<ClipOutput> {
        let (b, l) = ids.dims2()?;
        if l > self.cfg.max_position_embeddings {
            return Err(Error::shape(format!("{l} tokens exceed CLIP's {} positions", self.cfg.max_position_embeddings)));
        }
        if let Some(r) = rect {
            r.validate(self.layers())?;
        }
        let n = self.layers();
        if n < 2 {
            return Err(Error::shape("SD3 takes CLIP's penultimate state: the encoder needs >= 2 layers"));
        }
        let dtype = self.position.dtype();
        let (heads, d) = (self.cfg.num_attention_heads, self.cfg.hidden_size);
        let hd = d / heads;
        let mut x = self.token.forward(ids)?.broadcast_add(&self.position.narrow(0, 0, l)?)?; // (B, L, D)
        let mask = causal_mask(l, ids.device())?.to_dtype(dtype)?; // (L, L): 0 or −inf
        let mut penultimate = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.ln1.forward(&x)?;
            let heads_of = |t: Tensor| -> Result<Tensor> { Ok(t.reshape((b, l, heads, hd))?.transpose(1, 2)?.contiguous()?) }; // (B, H, L, hd)
            let (q, k, v) = (heads_of(layer.q.forward(&h)?)?, heads_of(layer.k.forward(&h)?)?, heads_of(layer.v.forward(&h)?)?);
            let tau = rect.map_or(1.0, |r| r.tau_at(i));
            let logits = (q.matmul(&k.t()?)? * (tau / (hd as f64).sqrt()))?.broadcast_add(&mask)?; // (B, H, L, L)
            let p = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
            let a = p.matmul(&v)?.transpose(1, 2)?.reshape((b, l, d))?; // (B, L, D)
            x = (layer.out.forward(&a)? + &x)?;
            let h = layer.fc1.forward(&layer.ln2.forward(&x)?)?;
            let h = match self.cfg.hidden_act {
                ClipActivation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
                ClipActivation::Gelu => h.gelu_erf()?,
            };
            x = (layer.fc2.forward(&h)? + &x)?;
            if i + 2 == n {
                penultimate = Some(x.clone());
            }
        }
        let last = self.final_ln.forward(&x)?; // (B, L, D)
        let eos = self.eos_positions(ids)?;
        let pooled = Tensor::cat(&eos.iter().enumerate().map(|(r, &p)| last.i((r, p))?.unsqueeze(0)).collect::<candle_core::Result<Vec<_>>>()?, 0)?; // (B, D)
        let pooled = match &self.projection {
            Some(p) => p.forward(&pooled)?,
            None => pooled,
        };
        Ok(ClipOutput { penultimate: penultimate.expect("n >= 2"), pooled })
    }
}

/// The causal mask (L, L) f32: 0 on and below the diagonal, −∞ above.
pub fn causal_mask(l: usize, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..l).flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Tensor::from_vec(m, (l, l), device)?)
}
