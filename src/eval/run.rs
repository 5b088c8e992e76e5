//! One evaluation run: sample N images per class with a method, extract features of the generated
//! and the reference images, compute every metric, and return a [`RunRecord`].
use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use ndarray::Array2;
use serde::Serialize;

use super::RunRecord;
use crate::data::Dataset;
use crate::features::classifier::{ClassifierCard, SmallCnn};
use crate::features::FeatureExtractor;
use crate::guidance::{Guidance, Models};
use crate::metrics::{frechet_distance, prdc, to_array2, Gaussian};
use crate::models::Denoiser;
use crate::sample::class_grid_labels;
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
    /// Content hash (SHA-256) of every weight file the run depends on, by role (`main`, `weak`,
    /// `classifier`, `features`, `text_encoder`); part of the run key, so records of other
    /// weights are never reused. [`Bench`] and [`super::TextBench`] fill it from what they
    /// loaded; `weak` counts only for methods that run the weak model.
    pub weights: BTreeMap<String, String>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { samples_per_class: 50, num_steps: 50, seed: 0, batch_size: 128, k_pr: 3, k_dc: 5, features: None, weights: BTreeMap::new() }
    }
}

impl EvalConfig {
    /// The settings with `weights` (role → content hash) added to [`Self::weights`].
    pub fn with_weights(&self, weights: &BTreeMap<String, String>) -> Self {
        let mut c = self.clone();
        c.weights.extend(weights.iter().map(|(k, v)| (k.clone(), v.clone())));
        c
    }
}

/// The weight hashes a run of `guidance` depends on: all of `weights` except `weak` when no
/// term runs the weak model.
pub fn weights_used(guidance: &Guidance, weights: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let uses_weak = guidance.terms.iter().any(|t| t.negative.model == crate::guidance::ModelChoice::Weak);
    weights.iter().filter(|(k, _)| uses_weak || k.as_str() != "weak").map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Features of the reference (real) images and their Gaussian fit, computed once per sweep.
pub struct Reference {
    /// (N, D) features.
    pub features: Array2<f64>,
    /// Their Gaussian fit.
    pub gaussian: Gaussian,
}

/// What scores an evaluation's samples, for the emoji models ([`Scorer`]: images, the crate's
/// classifier) and the ImageNet latent models ([`super::imagenet::LatentScorer`]: latents
/// decoded by the VAE, pretrained features, no classifier).
pub trait SampleScorer {
    /// Features (N, F) f32 on the CPU of the samples (N, ...) as the sampler returns them.
    fn sample_features(&self, samples: &Tensor, device: &Device) -> Result<Tensor>;
    /// Per sample (N,) f32: 1 where the classifier sees the `wanted` class (N,) u32; `None`
    /// without a classifier (consistency is then NaN).
    fn sample_hits(&self, samples: &Tensor, wanted: &Tensor) -> Result<Option<Tensor>>;
    /// The reference set the metrics compare with.
    fn reference(&self) -> &Reference;
}

/// FID (Fréchet distance of the features to the reference's), precision, recall (k = `cfg.k_pr`),
/// density, coverage (k = `cfg.k_dc`) of generated `features` (N, F), and consistency = 100 ×
/// mean of `hits` (N,) (NaN when `None`).
pub fn metrics_from_parts(reference: &Reference, features: &Tensor, hits: Option<&Tensor>, cfg: &EvalConfig) -> Result<BTreeMap<String, f64>> {
    let feats = to_array2(features)?;
    let fid = frechet_distance(&reference.gaussian, &Gaussian::fit(&feats)?)?;
    let p = prdc(&reference.features, &feats, cfg.k_pr, cfg.k_dc)?;
    let cons = match hits {
        Some(h) => 100.0 * h.to_dtype(candle_core::DType::F64)?.mean_all()?.to_scalar::<f64>()?,
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

/// A stable key for a run's settings (FNV-1a of the JSON of method, seed, steps, size, the
/// content hashes of the weights it uses ([`weights_used`]) and, when it is not the default
/// classifier, the feature extractor).
pub fn run_key(guidance: &Guidance, cfg: &EvalConfig) -> String {
    let mut s = serde_json::to_string(&(guidance, cfg.seed, cfg.num_steps, cfg.samples_per_class, cfg.k_pr, cfg.k_dc)).unwrap();
    if let Some(f) = &cfg.features {
        s.push_str(f);
    }
    let weights = weights_used(guidance, &cfg.weights);
    if !weights.is_empty() {
        s.push_str(&serde_json::to_string(&weights).unwrap());
    }
    let h = crate::rng::fnv1a(s.as_bytes());
    format!("{}-{h:016x}", guidance.name)
}

/// Samples `cfg.samples_per_class` images of each of `num_classes` classes with `guidance` on
/// `models` (sample i from seed stream (cfg.seed, i), labels in class order) and scores them with
/// `scorer` ([`Scorer::metrics`]: FID, precision, recall, density, coverage and consistency;
/// consistency is NaN for unconditional methods). `on_step(done, total)` reports sampling
/// progress. The record's key is [`run_key`] of `guidance` and `cfg`.
///
/// Errors: invalid guidance for the models (see [`crate::sample::sample`]); metric failures
/// (too few samples for k-NN, non-finite features).
/// Sources: the evaluation protocol of ERG Appendix A.1 (Kynkäänniemi et al. 2019 k = 3 for
/// precision/recall, Naeem et al. 2020 k = 5 for density/coverage).
pub fn evaluate<M: Denoiser>(
    models: Models<'_, M>,
    guidance: &Guidance,
    num_classes: usize,
    scorer: &dyn SampleScorer,
    cfg: &EvalConfig,
    device: &Device,
    on_step: impl FnMut(usize, usize),
) -> Result<RunRecord> {
    let labels = class_grid_labels(num_classes, cfg.samples_per_class, device)?;
    let request = Conditions { conditions: &labels, classes: &labels, key: run_key(guidance, cfg) };
    evaluate_conditions(models, guidance, &request, scorer, cfg, device, on_step)
}

/// What an evaluation samples: one image per row of `conditions` (B, ...) (class labels or
/// prompt ids), the class each should show (`classes` (B,) u32, for consistency) and the key the
/// record is stored under.
pub struct Conditions<'a> {
    /// The raw conditions (B, ...).
    pub conditions: &'a Tensor,
    /// The requested class of each row (B,) u32.
    pub classes: &'a Tensor,
    /// The record's key.
    pub key: String,
}

/// The part of an evaluation shared by classes and prompts: samples one image per row of
/// `request.conditions` with `guidance` (sample i from seed stream (cfg.seed, i)), scores them
/// with [`Scorer::metrics`] (consistency against `request.classes` when the positive branch uses
/// the given condition, NaN otherwise) and records the run under `request.key`. `wall_s` covers
/// sampling and scoring. Errors: those of sampling and of the metrics.
pub fn evaluate_conditions<M: Denoiser>(
    models: Models<'_, M>,
    guidance: &Guidance,
    request: &Conditions<'_>,
    scorer: &dyn SampleScorer,
    cfg: &EvalConfig,
    device: &Device,
    on_step: impl FnMut(usize, usize),
) -> Result<RunRecord> {
    // one shard of one: the same code as a sharded run, so merged shards equal the whole by construction
    let t0 = Instant::now();
    let whole = super::shard::Shard { index: 0, count: 1 };
    let part = super::shard::evaluate_shard(models, guidance, request, scorer, cfg, whole, device, on_step)?;
    let rec = super::shard::merge(&[part], scorer, cfg)?;
    Ok(RunRecord { wall_s: t0.elapsed().as_secs_f64(), ..rec })
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

    /// A scorer from parts (a classifier, an optional other extractor, the reference images and
    /// their features from the same extractor as the metrics use).
    pub fn from_parts(
        classifier: SmallCnn,
        classifier_card: ClassifierCard,
        extractor: Option<Box<dyn FeatureExtractor>>,
        data: Dataset,
        reference: Reference,
    ) -> Self {
        Self { classifier, classifier_card, extractor, data, reference }
    }

    /// Every metric of generated `images` (N, C, H, W) in [−1, 1]: FID (Fréchet distance of
    /// [`Self::extractor`]'s features to the reference), precision, recall (k = `cfg.k_pr`),
    /// density, coverage (k = `cfg.k_dc`) and consistency, the classifier's accuracy on the
    /// `wanted` classes (N,) u32 (NaN when `None`, for unconditional generation).
    ///
    /// Errors: images or features that are not finite; fewer images than k + 1.
    pub fn metrics(&self, images: &Tensor, wanted: Option<&Tensor>, cfg: &EvalConfig, device: &Device) -> Result<BTreeMap<String, f64>> {
        if !crate::checkpoint::all_finite(images)? {
            return Err(crate::Error::Other(
                "the images to score hold NaN or infinite values (a diverged sampler or non-finite weights); refusing to report metrics".into(),
            ));
        }
        let feats = extract(self.extractor(), images, device)?;
        let hits = match wanted {
            Some(labels) => Some(self.hits(images, labels)?),
            None => None,
        };
        self.metrics_from_parts(&feats, hits.as_ref(), cfg)
    }

    /// Per image (N,) f32: 1 where the classifier's top class is the `wanted` one (N,) u32.
    pub fn hits(&self, images: &Tensor, wanted: &Tensor) -> Result<Tensor> {
        let mut logits = Vec::new();
        for st in (0..images.dim(0)?).step_by(256) {
            logits.push(self.classifier.logits(&images.narrow(0, st, 256.min(images.dim(0)? - st))?)?);
        }
        let pred = Tensor::cat(&logits, 0)?.argmax(1)?.to_dtype(candle_core::DType::U32)?;
        Ok(pred.eq(&wanted.to_dtype(candle_core::DType::U32)?.to_device(pred.device())?)?.to_dtype(candle_core::DType::F32)?.to_device(&Device::Cpu)?)
    }

    /// The metrics of [`Self::metrics`] from generated features (N, F) and consistency hits (N,)
    /// (`None`: NaN) — what merging the shards of an evaluation computes ([`super::shard`]).
    pub fn metrics_from_parts(&self, features: &Tensor, hits: Option<&Tensor>, cfg: &EvalConfig) -> Result<BTreeMap<String, f64>> {
        metrics_from_parts(&self.reference, features, hits, cfg)
    }
}

impl SampleScorer for Scorer {
    fn sample_features(&self, samples: &Tensor, device: &Device) -> Result<Tensor> {
        extract(self.extractor(), &samples.clamp(-1.0, 1.0)?, device)
    }
    fn sample_hits(&self, samples: &Tensor, wanted: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.hits(&samples.clamp(-1.0, 1.0)?, wanted)?))
    }
    fn reference(&self) -> &Reference {
        &self.reference
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
    /// Content hash (SHA-256) of each weight file loaded, by role (see [`EvalConfig::weights`]).
    pub weights: BTreeMap<String, String>,
}

/// The files a [`Bench`] loads; [`Default`] gives the shipped checkpoints and the classifier's
/// features. (The examples' command-line flags fill it.)
#[derive(Debug, Clone)]
pub struct BenchPaths {
    /// The model (EMA weights with its JSON card).
    pub checkpoint: std::path::PathBuf,
    /// The weak model for AutoGuidance.
    pub weak_checkpoint: std::path::PathBuf,
    /// The classifier (features and consistency).
    pub classifier: std::path::PathBuf,
    /// Pretrained features for FID/precision/recall/density/coverage instead of the classifier's
    /// (inception, dinov2-vits14, dinov2-vitb14, dinov2-vitl14, clip-vit-b32) and their weights
    /// (a safetensors path or `hf://org/name/file`).
    pub features: Option<(String, String)>,
}

impl Default for BenchPaths {
    fn default() -> Self {
        Self {
            checkpoint: crate::checkpoint::SHIPPED_EMOJI_DIT.into(),
            weak_checkpoint: crate::checkpoint::SHIPPED_EMOJI_WEAK.into(),
            classifier: crate::checkpoint::SHIPPED_EMOJI_CLASSIFIER.into(),
            features: None,
        }
    }
}

impl Bench {
    /// Loads what `paths` names (see [`Bench::load`]).
    pub fn from_paths(paths: &BenchPaths, device: &Device) -> Result<Self> {
        let mut bench = Self::load(&paths.checkpoint, &paths.weak_checkpoint, &paths.classifier, device)?;
        if let Some((name, source)) = &paths.features {
            bench.weights.insert("features".into(), feature_weights_hash(source)?);
            bench.scorer.set_extractor(crate::features::load(name, source, device)?, device)?;
        }
        Ok(bench)
    }

    /// Loads the three checkpoints and the emoji data at the model's resolution.
    pub fn load(checkpoint: &std::path::Path, weak: &std::path::Path, classifier: &std::path::Path, device: &Device) -> Result<Self> {
        let (model, card) = crate::models::dit::load(checkpoint, device)?;
        let weak_file = weak;
        let (weak, _) = crate::models::dit::load(weak_file, device)?;
        let scorer = Scorer::load(classifier, model.image_shape().1, device)?;
        let weights = weight_hashes(&[("main", checkpoint), ("weak", weak_file), ("classifier", classifier)])?;
        Ok(Self { model, card, weak, scorer, weights })
    }
    /// The main and weak models.
    pub fn models(&self) -> Models<'_, crate::models::dit::Dit> {
        Models { main: &self.model, weak: Some(&self.weak) }
    }
    /// The key of a run of `guidance` with `cfg` on this bench (its weights included).
    pub fn key(&self, guidance: &Guidance, cfg: &EvalConfig) -> String {
        run_key(guidance, &cfg.with_weights(&self.weights))
    }
    /// Shard `shard` of the run of `guidance` (see [`super::shard`]), keyed by [`Self::key`].
    pub fn evaluate_shard(
        &self,
        guidance: &Guidance,
        cfg: &EvalConfig,
        shard: super::shard::Shard,
        device: &Device,
        on_step: impl FnMut(usize, usize),
    ) -> Result<super::shard::ShardPart> {
        let cfg = cfg.with_weights(&self.weights);
        let labels = class_grid_labels(self.card.classes.len(), cfg.samples_per_class, device)?;
        let request = Conditions { conditions: &labels, classes: &labels, key: run_key(guidance, &cfg) };
        super::shard::evaluate_shard(self.models(), guidance, &request, &self.scorer, &cfg, shard, device, on_step)
    }
    /// The record of a run from all its shards ([`super::shard::merge`]).
    pub fn merge(&self, parts: &[super::shard::ShardPart], cfg: &EvalConfig) -> Result<RunRecord> {
        super::shard::merge(parts, &self.scorer, &cfg.with_weights(&self.weights))
    }
    /// One evaluation run (see [`evaluate`]), keyed by [`Self::key`].
    pub fn evaluate(&self, guidance: &Guidance, cfg: &EvalConfig, device: &Device, on_step: impl FnMut(usize, usize)) -> Result<RunRecord> {
        evaluate(self.models(), guidance, self.card.classes.len(), &self.scorer, &cfg.with_weights(&self.weights), device, on_step)
    }
}

/// Content hashes of weight files by role. Errors: an unreadable file (named).
pub fn weight_hashes(files: &[(&str, &std::path::Path)]) -> Result<BTreeMap<String, String>> {
    files.iter().map(|(role, p)| Ok((role.to_string(), crate::checkpoint::file_sha256(p)?))).collect()
}

/// The content hash of a feature extractor's weights (`path` or `hf://...`, resolved as
/// [`crate::features::load`] does).
pub fn feature_weights_hash(source: &str) -> Result<String> {
    crate::checkpoint::file_sha256(&source.parse::<crate::hub::WeightSource>()?.resolve()?)
}
