//! Feature extractors for the metrics: images (N, C, H, W) in [−1, 1] → features (N, D).
//!
//! The default here is a small classifier trained by this crate on the training data
//! ([`classifier`]); its penultimate layer gives the features and its logits give the
//! class-conditional consistency score (the stand-in for CLIPScore/VQAScore).
//!
//! For users with pretrained weights (local files or hf-hub, see [`crate::hub`]): [`dinov2`]
//! (FD_DINOv2's CLS features), [`inception`] (FID's pool3 features, pytorch-fid's network) and
//! [`clip`] (image features and CLIPScore for text-to-image consistency). [`load`] picks one by
//! name for the command-line tools.
pub mod classifier;
pub mod clip;
pub mod dinov2;
pub mod inception;
pub mod resize;

use candle_core::Tensor;

use crate::Result;

/// Something that maps images to feature vectors.
pub trait FeatureExtractor {
    /// Images (N, C, H, W) in [−1, 1] → features (N, D) f32.
    fn features(&self, images: &Tensor) -> Result<Tensor>;
    /// A short name for reports.
    fn name(&self) -> String;
}

/// Consistency (percent): how often `classifier` assigns the requested class.
/// `logits` (N, K), `labels` (N,) u32.
pub fn consistency(logits: &Tensor, labels: &Tensor) -> Result<f64> {
    let pred = logits.argmax(1)?.to_dtype(candle_core::DType::U32)?;
    let hits = pred.eq(&labels.to_dtype(candle_core::DType::U32)?)?.to_dtype(candle_core::DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    Ok(100.0 * hits as f64 / labels.dim(0)? as f64)
}

/// Raw pixels bilinearly resized to `side` × `side`, flattened (N, 3·side²): no network, for smoke
/// runs of an evaluation pipeline (`pixels-8`); not a perceptual metric.
pub struct PixelFeatures {
    /// Side of the resized image.
    pub side: usize,
}

impl FeatureExtractor for PixelFeatures {
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        Ok(resize::bilinear(images, self.side, self.side)?.flatten_from(1)?.to_dtype(candle_core::DType::F32)?)
    }
    fn name(&self) -> String {
        format!("pixels-{}", self.side)
    }
}

/// A pretrained extractor by name, with weights from `source` (a path or `hf://org/name/file`):
/// `inception` (pytorch-fid Inception-v3 pool3), `dinov2-vits14` / `dinov2-vitb14` /
/// `dinov2-vitl14` (CLS token), `clip-vit-b32` (CLIP image embeddings).
pub fn load(name: &str, source: &str, device: &candle_core::Device) -> Result<Box<dyn FeatureExtractor>> {
    const NAMES: [&str; 5] = ["inception", "dinov2-vits14", "dinov2-vitb14", "dinov2-vitl14", "clip-vit-b32"];
    if !NAMES.contains(&name) {
        return Err(crate::Error::Hyperparameter(format!("unknown feature extractor {name:?}: use one of {NAMES:?}")));
    }
    let path = source.parse::<crate::hub::WeightSource>()?.resolve()?;
    Ok(match name {
        "inception" => Box::new(inception::FidInception::load(&path, device)?),
        n if n.starts_with("dinov2-") => Box::new(dinov2::Dinov2::load(&dinov2::Dinov2Config::by_name(&n["dinov2-".len()..])?, &path, device)?),
        "clip-vit-b32" => Box::new(clip::Clip::load(&candle_transformers::models::clip::ClipConfig::vit_base_patch32(), &path, None, device)?),
        _ => {
            return Err(crate::Error::Hyperparameter(format!("unknown feature extractor {name:?}: use inception, dinov2-vits14/vitb14/vitl14 or clip-vit-b32")))
        }
    })
}
