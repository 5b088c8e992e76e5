//! Feature extractors for the metrics: images (N, C, H, W) in [−1, 1] → features (N, D).
//!
//! The default here is a small classifier trained by this crate on the training data
//! ([`classifier`]); its penultimate layer gives the features and its logits give the
//! class-conditional consistency score (the stand-in for CLIPScore/VQAScore).
pub mod classifier;

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
