//! Evaluation of latent ImageNet models as the paper does it (Appendix A.1: samples per class of
//! every class, against real images, FID/precision/recall/density/coverage on Inception
//! features): samples are latents, decoded by the VAE before the features; the reference is a
//! folder of real images (ImageNet's validation or training set, ADM center crops), whose
//! features are computed once and cached, or a cached features file. There is no ImageNet
//! classifier here: consistency is NaN.
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::run::{extract, Reference, SampleScorer};
use crate::features::FeatureExtractor;
use crate::metrics::{to_array2, Gaussian};
use crate::models::vae::Vae;
use crate::{Error, Result};

/// Scores latent samples: VAE decode → features.
pub struct LatentScorer {
    /// The VAE.
    pub vae: Vae,
    /// Features (Inception for FID).
    pub extractor: Box<dyn FeatureExtractor>,
    /// The real images' features.
    pub reference: Reference,
    /// Latents decoded per batch.
    pub decode_batch: usize,
}

impl SampleScorer for LatentScorer {
    fn sample_features(&self, samples: &Tensor, device: &Device) -> Result<Tensor> {
        let n = samples.dim(0)?;
        let mut out = vec![];
        for s in (0..n).step_by(self.decode_batch.max(1)) {
            let images = self.vae.decode(&samples.narrow(0, s, self.decode_batch.min(n - s))?.to_device(device)?)?.clamp(-1.0, 1.0)?; // (b, 3, H, W)
            out.push(extract(self.extractor.as_ref(), &images, device)?);
        }
        Ok(Tensor::cat(&out, 0)?)
    }
    fn sample_hits(&self, _samples: &Tensor, _wanted: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    fn reference(&self) -> &Reference {
        &self.reference
    }
}

/// The images under `folder` (any depth), sorted.
fn image_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    let mut stack = vec![folder.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| ["jpeg", "jpg", "png", "webp"].contains(&x.to_string_lossy().to_lowercase().as_str())) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The reference of real images: `source` is a folder of images (ADM center crops at
/// `image_size`, at most `max_images`) whose features are cached in `cache_dir` under a key of
/// the file list (paths and sizes), the crop size and `extractor_key` (name and weights hash),
/// or a features file (`features` (N, F), as the cache writes). Errors: no images; an
/// unreadable image (named).
pub fn reference_features(
    extractor: &dyn FeatureExtractor,
    extractor_key: &str,
    source: &Path,
    image_size: usize,
    max_images: Option<usize>,
    cache_dir: &Path,
    device: &Device,
) -> Result<Reference> {
    let features = if source.is_file() {
        let t = crate::checkpoint::load_tensors(source, &Device::Cpu)?;
        t.get("features").cloned().ok_or_else(|| Error::corrupt(source, "no `features` tensor (N, F)"))?
    } else {
        let mut files = image_files(source)?;
        files.truncate(max_images.unwrap_or(usize::MAX));
        if files.is_empty() {
            return Err(Error::Missing { path: source.to_path_buf(), hint: "no images (JPEG, PNG, WEBP) in the reference folder".into() });
        }
        let mut id = format!("{extractor_key}|{image_size}|");
        for f in &files {
            id.push_str(&format!("{}:{};", f.display(), std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)));
        }
        let cache = cache_dir.join(format!("reference-{:016x}.safetensors", crate::rng::fnv1a(id.as_bytes())));
        if cache.exists() {
            eprintln!("reference features: reused {}", cache.display());
            crate::checkpoint::load_tensors(&cache, &Device::Cpu)?["features"].clone()
        } else {
            let mut feats = vec![];
            for chunk in files.chunks(64) {
                let imgs = chunk
                    .iter()
                    .map(|f| {
                        let img = image::open(f).map_err(|e| Error::corrupt(f, e))?;
                        let crop = crate::data::latents::adm_center_crop(&img, image_size);
                        let t = Tensor::from_vec(crop.into_raw(), (image_size, image_size, 3), &Device::Cpu)?.permute((2, 0, 1))?;
                        Ok(((t.to_dtype(candle_core::DType::F32)? / 127.5)? - 1.0)?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                feats.push(extract(extractor, &Tensor::stack(&imgs, 0)?, device)?);
            }
            let f = Tensor::cat(&feats, 0)?;
            std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
            crate::checkpoint::save_tensors(&std::collections::HashMap::from([("features".to_string(), f.clone())]), &cache, candle_core::DType::F32)?;
            f
        }
    };
    let features = to_array2(&features)?;
    let gaussian = Gaussian::fit(&features)?;
    Ok(Reference { features, gaussian })
}
