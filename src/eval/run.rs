//! One evaluation run: sample N images per class with a method, extract features of the generated
//! and the reference images, compute every metric, and return a [`RunRecord`].
use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use ndarray::Array2;
use serde::Serialize;

use super::RunRecord;
use crate::data::Dataset;
use crate::features::{classifier::SmallCnn, consistency, FeatureExtractor};
use crate::guidance::{Condition, Guidance, Models};
use crate::metrics::{frechet_distance, prdc, to_array2, Gaussian};
use crate::models::Denoiser;
use crate::sample::{class_grid_labels, sample, SampleConfig};
use crate::Result;

/// Settings of an evaluation run.
#[derive(Debug, Clone, Serialize)]
pub struct EvalConfig {
    /// Generated images per class.
    pub samples_per_class: usize,
    /// Euler steps.
    pub num_steps: usize,
    /// Sampling seed.
    pub seed: u64,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// k of precision/recall (paper protocol: 3).
    pub k_pr: usize,
    /// k of density/coverage (paper protocol: 5).
    pub k_dc: usize,
    /// Name of the feature extractor when it is not the crate's classifier (part of the run key).
    pub features: Option<String>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { samples_per_class: 50, num_steps: 50, seed: 0, batch_size: 128, k_pr: 3, k_dc: 5, features: None }
    }
}

/// Features of the reference (real) images and their Gaussian fit, computed once per sweep.
pub struct Reference {
    /// (N, D) features.
    pub features: Array2<f64>,
    /// Their Gaussian fit.
    pub gaussian: Gaussian,
}

/// Features (N, D) of images (N, C, H, W) in [−1, 1], in chunks.
pub fn extract(extractor: &dyn FeatureExtractor, images: &Tensor, device: &Device) -> Result<Tensor> {
    let n = images.dim(0)?;
    let mut out = Vec::new();
    for s in (0..n).step_by(256) {
        out.push(extractor.features(&images.narrow(0, s, 256.min(n - s))?.to_device(device)?)?.to_device(&Device::Cpu)?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// The reference set: all images of `data` (or its first `max` per class).
pub fn reference(extractor: &dyn FeatureExtractor, data: &Dataset, max_per_class: Option<usize>, device: &Device) -> Result<Reference> {
    let images = match max_per_class {
        Some(k) => data.per_class(k)?.0,
        None => data.images.clone(),
    };
    let features = to_array2(&extract(extractor, &images, device)?)?;
    let gaussian = Gaussian::fit(&features)?;
    Ok(Reference { features, gaussian })
}

/// A stable key for a run's settings (FNV-1a of the JSON of method, seed, steps, size and, when
/// it is not the default classifier, the feature extractor).
pub fn run_key(guidance: &Guidance, cfg: &EvalConfig) -> String {
    let mut s = serde_json::to_string(&(guidance, cfg.seed, cfg.num_steps, cfg.samples_per_class, cfg.k_pr, cfg.k_dc)).unwrap();
    if let Some(f) = &cfg.features {
        s.push_str(f);
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}-{h:016x}", guidance.name)
}

/// Samples `samples_per_class` images of each of `num_classes` classes with `guidance` and
/// computes FID (Fréchet distance of `extractor`'s features), precision, recall, density, coverage
/// and consistency (`classifier`'s accuracy on the requested class; NaN for unconditional methods).
/// `reference` must come from the same extractor.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<M: Denoiser>(
    models: Models<'_, M>,
    guidance: &Guidance,
    extractor: &dyn FeatureExtractor,
    classifier: &SmallCnn,
    reference: &Reference,
    num_classes: usize,
    cfg: &EvalConfig,
    device: &Device,
    on_step: impl FnMut(usize, usize),
) -> Result<RunRecord> {
    let labels = class_grid_labels(num_classes, cfg.samples_per_class, device)?;
    evaluate_conditions(models, guidance, &labels, &labels, run_key(guidance, cfg), extractor, classifier, reference, cfg, device, on_step)
}

/// The part of an evaluation shared by classes and prompts: samples one image per row of
/// `conditions` (B, ...) with `guidance` (sample i from seed stream (cfg.seed, i)), scores them
/// with [`image_metrics`] (consistency against `classes` (B,) u32 when the positive branch uses
/// the given condition, NaN otherwise) and records the run under `key`. `wall_s` covers sampling
/// and scoring. Errors: those of sampling and of the metrics.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_conditions<M: Denoiser>(
    models: Models<'_, M>,
    guidance: &Guidance,
    conditions: &Tensor,
    classes: &Tensor,
    key: String,
    extractor: &dyn FeatureExtractor,
    classifier: &SmallCnn,
    reference: &Reference,
    cfg: &EvalConfig,
    device: &Device,
    on_step: impl FnMut(usize, usize),
) -> Result<RunRecord> {
    let t0 = Instant::now();
    let scfg = SampleConfig { num_steps: cfg.num_steps, seed: cfg.seed, batch_size: cfg.batch_size };
    let s = sample(models, guidance, conditions, &scfg, 0, device, on_step)?;
    let images = s.images.clamp(-1.0, 1.0)?;
    let wanted = (guidance.positive == Condition::Given).then_some(classes);
    let metrics = image_metrics(&images, wanted, extractor, classifier, reference, cfg, device)?;
    Ok(RunRecord {
        key,
        method: guidance.name.clone(),
        guidance: serde_json::to_value(guidance).unwrap(),
        seed: cfg.seed,
        steps: cfg.num_steps,
        nfe_per_step: s.nfe_per_step,
        samples: images.dim(0)?,
        wall_s: t0.elapsed().as_secs_f64(),
        metrics,
    })
}

/// Every metric of generated `images` (N, C, H, W) in [−1, 1]: FID (Fréchet distance of
/// `extractor`'s features to `reference`), precision, recall (k = `cfg.k_pr`), density, coverage
/// (k = `cfg.k_dc`) and consistency, `classifier`'s accuracy on the `wanted` classes (N,) u32
/// (NaN when `None`, for unconditional generation).
pub fn image_metrics(
    images: &Tensor,
    wanted: Option<&Tensor>,
    extractor: &dyn FeatureExtractor,
    classifier: &SmallCnn,
    reference: &Reference,
    cfg: &EvalConfig,
    device: &Device,
) -> Result<BTreeMap<String, f64>> {
    let feats = to_array2(&extract(extractor, images, device)?)?;
    let fid = frechet_distance(&reference.gaussian, &Gaussian::fit(&feats)?)?;
    let p = prdc(&reference.features, &feats, cfg.k_pr, cfg.k_dc)?;
    let cons = match wanted {
        Some(labels) => {
            let mut logits = Vec::new();
            for st in (0..images.dim(0)?).step_by(256) {
                logits.push(classifier.logits(&images.narrow(0, st, 256.min(images.dim(0)? - st))?)?);
            }
            consistency(&Tensor::cat(&logits, 0)?, labels)?
        }
        None => f64::NAN,
    };
    Ok(BTreeMap::from([
        ("fid".to_string(), fid),
        ("precision".to_string(), p.precision),
        ("recall".to_string(), p.recall),
        ("density".to_string(), p.density),
        ("coverage".to_string(), p.coverage),
        ("consistency".to_string(), cons),
    ]))
}

/// What scores generated emoji, shared by [`Bench`] and [`super::TextBench`]: the classifier
/// (consistency; features unless a pretrained extractor is set), the training images and their
/// reference features.
pub struct Scorer {
    /// The feature extractor / consistency scorer.
    pub classifier: SmallCnn,
    /// Its card (held-out accuracy).
    pub classifier_card: crate::features::classifier::ClassifierCard,
    /// A pretrained feature extractor replacing the classifier's features (FID, PRDC), if chosen.
    pub extractor: Option<Box<dyn FeatureExtractor>>,
    /// The training images (reference set).
    pub data: Dataset,
    /// Reference features.
    pub reference: Reference,
}

impl Scorer {
    /// Loads the classifier and the emoji at `image_size`² and computes the reference features.
    /// Errors: missing or corrupt classifier or data files.
    pub fn load(classifier: &std::path::Path, image_size: usize, device: &Device) -> Result<Self> {
        let (classifier, classifier_card) = SmallCnn::load(classifier, device)?;
        let data = crate::data::emoji::load(crate::data::emoji::DEFAULT_DIR, image_size)?;
        let reference = reference(&classifier, &data, None, device)?;
        Ok(Self { classifier, classifier_card, extractor: None, data, reference })
    }

    /// Uses `extractor` for the distribution metrics (the reference features are recomputed).
    pub fn set_extractor(&mut self, extractor: Box<dyn FeatureExtractor>, device: &Device) -> Result<()> {
        self.reference = reference(extractor.as_ref(), &self.data, None, device)?;
        self.extractor = Some(extractor);
        Ok(())
    }

    /// The extractor of the distribution metrics.
    pub fn extractor(&self) -> &dyn FeatureExtractor {
        match &self.extractor {
            Some(e) => e.as_ref(),
            None => &self.classifier,
        }
    }

    /// The evaluation settings' `features` field (None for the classifier).
    pub fn features_key(&self) -> Option<String> {
        self.extractor.as_ref().map(|e| e.name())
    }
}

/// Everything an evaluation of a class-conditional DiT on the emoji needs, loaded once: the model,
/// its weak early checkpoint (AutoGuidance) and the [`Scorer`].
pub struct Bench {
    /// The model being evaluated.
    pub model: crate::models::dit::Dit,
    /// Its card.
    pub card: crate::checkpoint::ModelCard<crate::models::dit::DitConfig>,
    /// The weak model.
    pub weak: crate::models::dit::Dit,
    /// Classifier, data and reference features.
    pub scorer: Scorer,
}

/// Command-line paths of the three checkpoints a [`Bench`] loads (shipped ones by default).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchPaths {
    /// The model (EMA weights with its JSON card).
    #[arg(long, default_value = crate::checkpoint::SHIPPED_EMOJI_DIT)]
    pub checkpoint: std::path::PathBuf,
    /// The weak model for AutoGuidance.
    #[arg(long, default_value = crate::checkpoint::SHIPPED_EMOJI_WEAK)]
    pub weak_checkpoint: std::path::PathBuf,
    /// The classifier (features and consistency).
    #[arg(long, default_value = crate::checkpoint::SHIPPED_EMOJI_CLASSIFIER)]
    pub classifier: std::path::PathBuf,
    /// Pretrained features for FID/precision/recall/density/coverage instead of the classifier's:
    /// inception, dinov2-vits14, dinov2-vitb14, dinov2-vitl14 or clip-vit-b32 (needs --feature-weights).
    #[arg(long, requires = "feature_weights")]
    pub features: Option<String>,
    /// Their weights: a safetensors path or hf://org/name/file (fetched or read from the hf-hub cache).
    #[arg(long)]
    pub feature_weights: Option<String>,
}

impl BenchPaths {
    /// The shipped checkpoints, the classifier's features.
    pub fn default_paths() -> Self {
        Self {
            checkpoint: crate::checkpoint::SHIPPED_EMOJI_DIT.into(),
            weak_checkpoint: crate::checkpoint::SHIPPED_EMOJI_WEAK.into(),
            classifier: crate::checkpoint::SHIPPED_EMOJI_CLASSIFIER.into(),
            features: None,
            feature_weights: None,
        }
    }
}

impl Bench {
    /// Loads what `paths` names (see [`Bench::load`]).
    pub fn from_paths(paths: &BenchPaths, device: &Device) -> Result<Self> {
        let mut bench = Self::load(&paths.checkpoint, &paths.weak_checkpoint, &paths.classifier, device)?;
        if let (Some(name), Some(weights)) = (&paths.features, &paths.feature_weights) {
            bench.scorer.set_extractor(crate::features::load(name, weights, device)?, device)?;
        }
        Ok(bench)
    }

    /// Loads the three checkpoints and the emoji data at the model's resolution.
    pub fn load(checkpoint: &std::path::Path, weak: &std::path::Path, classifier: &std::path::Path, device: &Device) -> Result<Self> {
        let (model, card) = crate::models::dit::load(checkpoint, device)?;
        let (weak, _) = crate::models::dit::load(weak, device)?;
        let scorer = Scorer::load(classifier, model.image_shape().1, device)?;
        Ok(Self { model, card, weak, scorer })
    }
    /// The main and weak models.
    pub fn models(&self) -> Models<'_, crate::models::dit::Dit> {
        Models { main: &self.model, weak: Some(&self.weak) }
    }
    /// One evaluation run (see [`evaluate`]).
    pub fn evaluate(&self, guidance: &Guidance, cfg: &EvalConfig, device: &Device, on_step: impl FnMut(usize, usize)) -> Result<RunRecord> {
        let s = &self.scorer;
        evaluate(self.models(), guidance, s.extractor(), &s.classifier, &s.reference, self.card.classes.len(), cfg, device, on_step)
    }
}
