//! A small convolutional classifier trained on the crate's data, used as the default feature
//! extractor (penultimate layer: global-average-pooled last conv, D = last width) and to score
//! consistency (accuracy on the requested class).
//!
//! Architecture: [conv3×3 → ReLU → 2×2 max pool] for each width but the last, conv3×3 → ReLU,
//! global average pool (features), linear head. Weight names: `convs.{i}`, `head`.
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Conv2dConfig, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use super::FeatureExtractor;
use crate::checkpoint::{build_strict, load_checkpoint, save_checkpoint};
use crate::data::Dataset;
use crate::nn::{seeded_varbuilder, SeededVarMap};
use crate::train::{AdamW, AdamWConfig};
use crate::{Error, Result};

/// Classifier hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Conv widths; all but the last are followed by a 2× pool.
    pub widths: Vec<usize>,
    /// Number of classes.
    pub num_classes: usize,
}

/// The JSON card saved beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierCard {
    /// Architecture.
    pub config: ClassifierConfig,
    /// Class names.
    pub classes: Vec<String>,
    /// Accuracy (percent) on the held-out split (every 10th image).
    pub heldout_accuracy: f64,
    /// Accuracy (percent) on the training split.
    pub train_accuracy: f64,
    /// Training steps, batch size and seed.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Seed.
    pub seed: u64,
}

/// The classifier.
#[derive(Debug, Clone)]
pub struct SmallCnn {
    convs: Vec<candle_nn::Conv2d>,
    head: candle_nn::Linear,
}

impl SmallCnn {
    /// Builds from `vb` (weights `convs.{i}.{weight,bias}`, `head.{weight,bias}`).
    pub fn new(cfg: &ClassifierConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.widths.is_empty() || cfg.num_classes == 0 {
            return Err(Error::hp("the classifier needs at least one conv width and one class"));
        }
        let mut convs = Vec::new();
        let mut c_in = cfg.in_channels;
        for (i, &w) in cfg.widths.iter().enumerate() {
            convs.push(candle_nn::conv2d(c_in, w, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb.pp(format!("convs.{i}")))?);
            c_in = w;
        }
        Ok(Self { convs, head: candle_nn::linear(c_in, cfg.num_classes, vb.pp("head"))? })
    }

    /// Penultimate features (N, D) from images (N, C, H, W) in [−1, 1].
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            h = conv.forward(&h)?.relu()?;
            if i + 1 < self.convs.len() {
                h = h.max_pool2d(2)?;
            }
        }
        Ok(h.mean(D::Minus1)?.mean(D::Minus1)?)
    }

    /// Class logits (N, K).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&self.embed(x)?)?)
    }

    /// Loads weights and card (`x.safetensors` + `x.json`).
    pub fn load(weights: &Path, device: &Device) -> Result<(Self, ClassifierCard)> {
        let (tensors, card): (_, ClassifierCard) = load_checkpoint(weights, device)?;
        let model = build_strict(weights, tensors, device, |vb| Self::new(&card.config, vb))?;
        Ok((model, card))
    }
}

impl FeatureExtractor for SmallCnn {
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        self.embed(images)
    }
    fn name(&self) -> String {
        "small-cnn".into()
    }
}

/// Indices of the held-out split: every 10th image.
pub fn split(n: usize) -> (Vec<u32>, Vec<u32>) {
    let (held, train): (Vec<u32>, Vec<u32>) = (0..n as u32).partition(|i| i % 10 == 9);
    (train, held)
}

/// Accuracy (percent) of `model` on the images at `idx`.
pub fn accuracy(model: &SmallCnn, data: &Dataset, idx: &[u32], device: &Device) -> Result<f64> {
    let mut hits = 0.0;
    for chunk in idx.chunks(256) {
        let it = Tensor::new(chunk, &Device::Cpu)?;
        let x = data.images.index_select(&it, 0)?.to_device(device)?;
        let y: Vec<u32> = chunk.iter().map(|&i| data.labels[i as usize]).collect();
        hits += super::consistency(&model.logits(&x)?, &Tensor::new(y.as_slice(), device)?)? * chunk.len() as f64 / 100.0;
    }
    Ok(100.0 * hits / idx.len().max(1) as f64)
}

/// How the classifier is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassifierTraining {
    /// Optimisation steps.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// AdamW learning rate (weight decay 10⁻⁴).
    pub lr: f64,
    /// Seed of weights, batches and flips.
    pub seed: u64,
    /// Show a progress bar.
    pub progress: bool,
}

/// Trains the classifier on the training split of `data` (cross-entropy, AdamW, seeded batches,
/// random horizontal flips) and saves it to `weights` with its card, which records the held-out
/// accuracy. Returns the model and card.
///
/// Errors: images that do not fit `cfg`; I/O errors naming the file.
pub fn train(cfg: &ClassifierConfig, data: &Dataset, how: &ClassifierTraining, device: &Device, weights: &Path) -> Result<(SmallCnn, ClassifierCard)> {
    use rand::Rng;
    let ClassifierTraining { steps, batch_size, lr, seed, progress } = *how;
    let map = SeededVarMap::new(seed);
    let model = SmallCnn::new(cfg, seeded_varbuilder(&map, DType::F32, device))?;
    let mut vars: Vec<_> = map.varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = AdamW::new(vars.clone(), AdamWConfig { lr, weight_decay: 1e-4, ..Default::default() })?;
    let (train_idx, held_idx) = split(data.len());
    let bar = if progress { indicatif::ProgressBar::new(steps) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(indicatif::ProgressStyle::with_template("classifier [{bar:30}] {pos}/{len} {per_sec} loss {msg}").unwrap().progress_chars("=> "));
    let w = data.images.dim(3)?;
    let flip = Tensor::new((0..w as u32).rev().collect::<Vec<_>>().as_slice(), &Device::Cpu)?;
    for step in 0..steps {
        let mut r = crate::rng::stream(seed, step);
        let idx: Vec<u32> = (0..batch_size).map(|_| train_idx[r.random_range(0..train_idx.len())]).collect();
        let it = Tensor::new(idx.as_slice(), &Device::Cpu)?;
        let mut x = data.images.index_select(&it, 0)?;
        if r.random::<bool>() {
            x = x.index_select(&flip, 3)?;
        }
        let y: Vec<u32> = idx.iter().map(|&i| data.labels[i as usize]).collect();
        let (x, y) = (x.to_device(device)?, Tensor::new(y.as_slice(), device)?);
        let loss = candle_nn::loss::cross_entropy(&model.logits(&x)?, &y)?;
        opt.apply(&loss.backward()?)?;
        bar.inc(1);
        if step % 20 == 0 {
            bar.set_message(format!("{:.3}", loss.to_scalar::<f32>()?));
        }
    }
    bar.finish_and_clear();
    let card = ClassifierCard {
        config: cfg.clone(),
        classes: data.classes.clone(),
        heldout_accuracy: accuracy(&model, data, &held_idx, device)?,
        train_accuracy: accuracy(&model, data, &train_idx, device)?,
        steps,
        batch_size,
        seed,
    };
    let tensors = vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    save_checkpoint(&tensors, &card, weights, DType::F32)?;
    Ok((model, card))
}
