//! A text-to-image [`Denoiser`]: the MMDiT conditioned on a frozen text encoder (all-MiniLM-L6-v2
//! here, as SD3 conditions on CLIP and T5), so that every guidance method of the crate runs on
//! prompts, including C-ERG.
//!
//! Conditions: the raw condition is a prompt's token ids (B, L) u32 (from
//! [`TextToImage::prompt_ids`]); the embedded condition is the packed text embedding (B, L + 1, D)
//! of [`crate::text::encoder`] (L context tokens, then the pooled vector). The null condition is
//! the empty prompt (SD3 and the ERG paper's CFG baseline), C-ERG's rectified condition the same
//! prompt encoded with τ_c ([`Denoiser::embed_rectified_condition`]), and CADS perturbs the packed
//! text tokens of the positive branch.
//!
//! The text encoder is optional: training uses precomputed embeddings and needs none; sampling
//! from prompts does.
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{Mmdit, MmditConfig};
use crate::attention::{AttentionProbe, ForwardPlan};
use crate::checkpoint::{build_strict, load_card, load_checkpoint, ModelCard};
use crate::models::Denoiser;
use crate::text::{empty_prompt_ids, TextEncoder, TextRectification};
use crate::{Error, Result};

/// The shipped text-to-image emoji MMDiT: the `emoji-base` preset (12 joint blocks, D 192,
/// 15.9 M parameters), EMA weights; its card holds its own mean-rank guidance selection.
pub const SHIPPED_EMOJI_MMDIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/checkpoints/emoji-mmdit-base-ema.safetensors");
/// AutoGuidance's weak model for it: the shipped `emoji-small` MMDiT (6 blocks, D 96, 2.04 M
/// parameters, 2,500 steps), a smaller, shorter-trained model of the same conditioning, as
/// Karras et al. (2024, "Guiding a diffusion model with a bad version of itself") recommend.
pub const SHIPPED_EMOJI_MMDIT_WEAK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/checkpoints/emoji-mmdit-ema.safetensors");

/// A text-to-image model's configuration (the model card's `config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextToImageConfig {
    /// The MMDiT (its `context_embed_size` and `adm_in_channels` equal the encoder width).
    pub mmdit: MmditConfig,
    /// Image (H, W) in pixels (or latent positions).
    pub image_size: (usize, usize),
    /// Tokens per prompt, L.
    pub context_len: usize,
    /// The text encoder's hf-hub repository.
    pub text_encoder: String,
}

impl TextToImageConfig {
    /// The emoji model: 32×32 RGB, patch 4 (64 image tokens), 6 joint blocks of 6 heads × 16
    /// (D = 96), erf-GELU, all-MiniLM-L6-v2 context (16 tokens of 384) and pooled vector (384).
    pub fn emoji_small() -> Self {
        Self {
            mmdit: MmditConfig {
                patch_size: 4,
                in_channels: 3,
                out_channels: 3,
                depth: 6,
                head_size: 16,
                adm_in_channels: 384,
                pos_embed_max_size: 8,
                context_embed_size: 384,
                frequency_embedding_size: 256,
                qk_norm: false,
                activation: super::config::Activation::GeluErf,
                dual_attention_layers: vec![],
            },
            image_size: (32, 32),
            context_len: 16,
            text_encoder: crate::text::minilm::HUB_REPO.into(),
        }
    }

    /// The deeper emoji model: as [`Self::emoji_small`] with 12 joint blocks, so (SD3's rule,
    /// width = 16 · depth) 12 heads × 16, D = 192: 8× its depth × width².
    pub fn emoji_base() -> Self {
        let mut cfg = Self::emoji_small();
        cfg.mmdit.depth = 12;
        cfg
    }

    /// A preset by name: `emoji-small`, `emoji-base`, `test-tiny`.
    ///
    /// Errors: an unknown name (the known ones are listed).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "emoji-small" => Self::emoji_small(),
            "emoji-base" => Self::emoji_base(),
            "test-tiny" => Self::test_tiny(),
            _ => return Err(Error::hp(format!("unknown text-to-image preset {name:?}; known: emoji-small, emoji-base, test-tiny"))),
        })
    }

    /// A tiny configuration for tests: [`MmditConfig::test_tiny`] (3 channels) on 8×8 images,
    /// 6 context tokens of width 12.
    pub fn test_tiny() -> Self {
        let mmdit = MmditConfig { in_channels: 3, out_channels: 3, adm_in_channels: 12, context_embed_size: 12, ..MmditConfig::test_tiny() };
        Self { mmdit, image_size: (8, 8), context_len: 6, text_encoder: "test".into() }
    }

    /// Checks that the image fits the patch and position grid and that the conditioning widths
    /// agree.
    pub fn validate(&self) -> Result<()> {
        let m = &self.mmdit;
        let (h, w) = self.image_size;
        if h % m.patch_size != 0 || w % m.patch_size != 0 || h / m.patch_size > m.pos_embed_max_size || w / m.patch_size > m.pos_embed_max_size {
            return Err(Error::hp(format!("image {h}×{w} does not fit patch {} and position grid {}", m.patch_size, m.pos_embed_max_size)));
        }
        if m.adm_in_channels != m.context_embed_size {
            return Err(Error::hp("a packed text embedding needs adm_in_channels == context_embed_size"));
        }
        if self.context_len < 2 {
            return Err(Error::hp("context_len must be >= 2"));
        }
        Ok(())
    }
}

/// The text-to-image denoiser.
pub struct TextToImage {
    /// The network.
    pub mmdit: Mmdit,
    cfg: TextToImageConfig,
    encoder: Option<TextEncoder>,
}

impl TextToImage {
    /// Builds the MMDiT from `vb` (keys as in [`super`]) with an optional text encoder of the
    /// configuration's width and context length.
    pub fn new(cfg: &TextToImageConfig, vb: VarBuilder, encoder: Option<TextEncoder>) -> Result<Self> {
        cfg.validate()?;
        if let Some(e) = &encoder {
            if e.width() != cfg.mmdit.context_embed_size || e.context_len != cfg.context_len {
                return Err(Error::shape(format!(
                    "the text encoder gives {} tokens of {}, the model takes {} of {}",
                    e.context_len,
                    e.width(),
                    cfg.context_len,
                    cfg.mmdit.context_embed_size
                )));
            }
        }
        Ok(Self { mmdit: Mmdit::new(&cfg.mmdit, vb)?, cfg: cfg.clone(), encoder })
    }

    /// Loads a checkpoint and its card (`<stem>.json`), in f32.
    /// Errors: missing or corrupt files, weights that do not match the card.
    pub fn load(weights: &Path, encoder: Option<TextEncoder>, device: &Device) -> Result<(Self, ModelCard<TextToImageConfig>)> {
        let card: ModelCard<serde_json::Value> = load_card(weights)?;
        if card.model != "mmdit-t2i" {
            return Err(Error::corrupt(weights, format!("the card describes a {:?} model, not a text-to-image MMDiT (mmdit-t2i)", card.model)));
        }
        let (tensors, card): (_, ModelCard<TextToImageConfig>) = load_checkpoint(weights, device)?;
        let m = build_strict(weights, tensors, device, |vb| Self::new(&card.config, vb, encoder))?;
        Ok((m, card))
    }

    /// Loads a checkpoint with its text encoder through hf-hub (the cache first; offline, run the
    /// `setup_minilm` example once). Errors: as [`Self::load`]; a card naming another encoder; the
    /// encoder not in the cache and no network.
    pub fn load_with_hub_encoder(weights: &Path, device: &Device) -> Result<(Self, ModelCard<TextToImageConfig>)> {
        let card: ModelCard<TextToImageConfig> = load_card(weights)?;
        if card.config.text_encoder != crate::text::minilm::HUB_REPO {
            return Err(Error::hp(format!(
                "{} was trained with the text encoder {:?}; only {} is supported",
                weights.display(),
                card.config.text_encoder,
                crate::text::minilm::HUB_REPO
            )));
        }
        let minilm = crate::text::MiniLm::from_hub(device).map_err(|e| {
            Error::Other(format!(
                "{e}\nthe text encoder is not available: on a machine without network run `cargo run --release --example setup_minilm` first (see its docs)"
            ))
        })?;
        Self::load(weights, Some(TextEncoder::new(minilm, card.config.context_len)?), device)
    }

    /// The configuration.
    pub fn config(&self) -> &TextToImageConfig {
        &self.cfg
    }

    /// The text encoder, if loaded.
    pub fn encoder(&self) -> Option<&TextEncoder> {
        self.encoder.as_ref()
    }

    fn need_encoder(&self) -> Result<&TextEncoder> {
        self.encoder.as_ref().ok_or_else(|| {
            Error::hp(format!("this text-to-image model was loaded without its text encoder ({}); pass a TextEncoder to encode prompts", self.cfg.text_encoder))
        })
    }

    /// Token ids (B, L) u32 of `prompts` (the raw conditions of this model).
    pub fn prompt_ids(&self, prompts: &[&str], device: &Device) -> Result<Tensor> {
        self.need_encoder()?.token_ids(prompts, device)
    }
}

impl Denoiser for TextToImage {
    fn depth(&self) -> usize {
        self.cfg.mmdit.depth
    }

    fn image_shape(&self) -> (usize, usize, usize) {
        (self.cfg.mmdit.in_channels, self.cfg.image_size.0, self.cfg.image_size.1)
    }

    fn token_grid(&self) -> (usize, usize) {
        let p = self.cfg.mmdit.patch_size;
        (self.cfg.image_size.0 / p, self.cfg.image_size.1 / p)
    }

    /// Token ids (B, L) u32 → packed embeddings (B, L + 1, D) with the plain encoder.
    fn embed_condition(&self, cond: &Tensor) -> Result<Tensor> {
        self.need_encoder()?.encode_ids(cond, None)
    }

    /// `cond_emb` (B, L + 1, D): rows 0..L are the context, row L the pooled vector.
    fn velocity_probed(&self, x: &Tensor, t: &Tensor, cond_emb: &Tensor, plan: &ForwardPlan, probe: &mut dyn AttentionProbe) -> Result<Tensor> {
        let (b, rows, d) = cond_emb.dims3()?;
        let l = self.cfg.context_len;
        if rows != l + 1 || d != self.cfg.mmdit.context_embed_size || b != x.dim(0)? {
            return Err(Error::shape(format!("packed text embedding {:?}, expected ({}, {}, {d})", cond_emb.dims(), x.dim(0)?, l + 1)));
        }
        let ctx = cond_emb.narrow(1, 0, l)?; // (B, L, D)
        let y = cond_emb.narrow(1, l, 1)?.squeeze(1)?; // (B, D)
        self.mmdit.velocity(x, t, &y, &ctx, plan, probe)
    }

    /// The empty prompt's ids (B, L).
    fn null_condition(&self, cond: &Tensor) -> Result<Tensor> {
        empty_prompt_ids(cond.dim(0)?, self.cfg.context_len, cond.device())
    }

    fn text_layers(&self) -> Option<usize> {
        self.encoder.as_ref().map(|e| e.layers())
    }

    fn embed_rectified_condition(&self, cond: &Tensor, rect: &TextRectification) -> Result<Tensor> {
        self.need_encoder()?.encode_ids(cond, Some(rect))
    }
}
