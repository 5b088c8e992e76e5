//! CLIP (Radford et al. 2021) image features and CLIPScore (Hessel et al. 2021) for text-to-image
//! consistency, on candle-transformers' `clip` model (HF `transformers` key layout:
//! `text_model.*`, `vision_model.*`, `visual_projection`, `text_projection`).
//!
//! CLIPScore here is torchmetrics' convention, 100 · max(cos(E_I, E_T), 0) (Hessel et al. use
//! 2.5 · max(cos, 0); the T2I literature, the ERG paper included, reports the 100× scale).
//! Preprocessing as CLIP's: [−1, 1] → [0, 1], bicubic resize to the model's resolution (square
//! images: no crop needed), per-channel normalisation with CLIP's mean and std.
//!
//! Weights and tokenizer, e.g. `hf://openai/clip-vit-base-patch32/model.safetensors` and
//! `hf://openai/clip-vit-base-patch32/tokenizer.json` (see [`crate::hub::WeightSource`]).
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::{ClipConfig, ClipModel};

use super::resize::{bicubic, normalize_rgb};
use super::FeatureExtractor;
use crate::{Error, Result};

/// CLIP's image normalisation mean.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's image normalisation standard deviation.
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// A CLIP model with (optionally) its tokenizer.
pub struct Clip {
    model: ClipModel,
    image_size: usize,
    max_len: usize,
    tokenizer: Option<tokenizers::Tokenizer>,
}

impl Clip {
    /// Builds from `vb` with `cfg` (e.g. `ClipConfig::vit_base_patch32()`).
    pub fn new(cfg: &ClipConfig, vb: VarBuilder, tokenizer: Option<tokenizers::Tokenizer>) -> Result<Self> {
        Ok(Self { model: ClipModel::new(vb, cfg)?, image_size: cfg.image_size, max_len: cfg.text_config.max_position_embeddings, tokenizer })
    }

    /// Loads safetensors weights and, if given, a `tokenizer.json`.
    pub fn load(cfg: &ClipConfig, weights: &Path, tokenizer: Option<&Path>, device: &Device) -> Result<Self> {
        let vb = VarBuilder::from_tensors(crate::checkpoint::load_tensors(weights, device)?, DType::F32, device);
        let tok = match tokenizer {
            Some(p) => Some(tokenizers::Tokenizer::from_file(p).map_err(|e| Error::Corrupt { path: p.to_path_buf(), reason: e.to_string() })?),
            None => None,
        };
        Self::new(cfg, vb, tok)
    }

    /// L2-normalised image embeddings: images (N, C ∈ {1, 3}, H, W) in [−1, 1] → (N, P).
    pub fn image_embeddings(&self, images: &Tensor) -> Result<Tensor> {
        let s = self.image_size;
        let x = normalize_rgb(&images.to_dtype(DType::F32)?, CLIP_MEAN, CLIP_STD)?;
        let x = if x.dim(2)? == s && x.dim(3)? == s { x } else { bicubic(&x, s, s, None)? };
        l2_normalize(&self.model.get_image_features(&x)?)
    }

    /// L2-normalised text embeddings of token ids (N, L) u32 (end-of-text must be the largest id
    /// of each row, as CLIP's BPE vocabulary makes it) → (N, P).
    pub fn text_embeddings_from_ids(&self, ids: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.model.get_text_features(ids)?)
    }

    /// Token ids (N, L) of `texts`, padded with end-of-text and truncated to the model's context.
    pub fn tokenize(&self, texts: &[&str], device: &Device) -> Result<Tensor> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| Error::Hyperparameter("this CLIP was loaded without a tokenizer: pass tokenizer.json".into()))?;
        let eos = tok.token_to_id("<|endoftext|>").ok_or_else(|| Error::Other("tokenizer has no <|endoftext|> token".into()))?;
        let mut rows = Vec::new();
        for t in texts {
            let enc = tok.encode(*t, true).map_err(|e| Error::Other(format!("tokenize {t:?}: {e}")))?;
            let mut ids: Vec<u32> = enc.get_ids().to_vec();
            ids.truncate(self.max_len);
            if ids.len() == self.max_len {
                ids[self.max_len - 1] = eos; // a truncated prompt still ends with end-of-text
            }
            rows.push(ids);
        }
        let len = rows.iter().map(Vec::len).max().unwrap_or(1);
        let flat: Vec<u32> = rows
            .into_iter()
            .flat_map(|mut r| {
                r.resize(len, eos);
                r
            })
            .collect();
        Ok(Tensor::from_vec(flat, (texts.len(), len), device)?)
    }

    /// CLIPScore of each (image, text id row) pair: 100 · max(cos, 0). `images` (N, C, H, W) in
    /// [−1, 1], `ids` (N, L).
    pub fn score_ids(&self, images: &Tensor, ids: &Tensor) -> Result<Vec<f64>> {
        if images.dim(0)? != ids.dim(0)? {
            return Err(Error::Shape(format!("{} images but {} texts", images.dim(0)?, ids.dim(0)?)));
        }
        let cos = (self.image_embeddings(images)? * self.text_embeddings_from_ids(ids)?)?.sum(D::Minus1)?; // (N,)
        Ok(cos.to_vec1::<f32>()?.into_iter().map(|c| 100.0 * (c as f64).max(0.0)).collect())
    }

    /// CLIPScore of each (image, prompt) pair (needs the tokenizer).
    pub fn score(&self, images: &Tensor, texts: &[&str]) -> Result<Vec<f64>> {
        self.score_ids(images, &self.tokenize(texts, images.device())?)
    }
}

fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?)?)
}

impl FeatureExtractor for Clip {
    /// Images (N, C, H, W) in [−1, 1] → normalised image embeddings (N, P).
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        self.image_embeddings(images)
    }
    fn name(&self) -> String {
        "clip".into()
    }
}
