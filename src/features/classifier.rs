//! A small convolutional classifier trained on the crate's data, used as the default feature
//! extractor (penultimate layer: global-average-pooled last conv, D = last width) and to score
//! consistency (accuracy on the requested class).
//!
//! Architecture: per width, `convs_per_stage` × [conv3×3 → (GroupNorm) → ReLU], then a 2×2 max
//! pool after every stage but the last; global average pool (features), linear head. Weight
//! names: `convs.{i}` (numbered through all stages), `norms.{i}` where normalised, `head`.
use std::path::Path;

use candle_core::{DType, Device, Tensor};
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
    /// Conv widths, one per stage; all stages but the last are followed by a 2× pool.
    pub widths: Vec<usize>,
    /// Number of classes.
    pub num_classes: usize,
    /// 3×3 convolutions per stage (1 in cards written before this field).
    #[serde(default = "one")]
    pub convs_per_stage: usize,
    /// Groups of a GroupNorm (Wu & He 2018, with scale and shift) after every convolution, before
    /// its ReLU; 0 for none (cards written before this field). Each width must be a multiple.
    #[serde(default)]
    pub norm_groups: usize,
    /// Predict from the mean of the logits of each image and its mirror image (test-time
    /// augmentation; training and the features use the image alone). False in cards written
    /// before this field.
    #[serde(default)]
    pub flip_average: bool,
}

fn one() -> usize {
    1
}

impl ClassifierConfig {
    /// One conv per stage of each width in `widths`, no normalisation.
    pub fn new(in_channels: usize, widths: Vec<usize>, num_classes: usize) -> Self {
        Self { in_channels, widths, num_classes, convs_per_stage: 1, norm_groups: 0, flip_average: false }
    }
}

/// The JSON card saved beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Training steps.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Seed.
    pub seed: u64,
    /// Peak learning rate (0 in older cards).
    #[serde(default)]
    pub lr: f64,
    /// Whether the rate decayed (warm-up over 5 % of the steps, cosine to 0) or stayed constant
    /// (older cards: constant).
    #[serde(default)]
    pub cosine: bool,
    /// Random translation of the training images, in pixels (0 in older cards).
    #[serde(default)]
    pub shift: usize,
    /// Mixup of the training batches (false in older cards).
    #[serde(default)]
    pub mixup: bool,
    /// AdamW weight decay (10⁻⁴ in older cards).
    #[serde(default = "old_weight_decay")]
    pub weight_decay: f64,
    /// Side of the cutout square, in pixels (0, none, in older cards).
    #[serde(default)]
    pub cutout: usize,
    /// Label smoothing ε of the cross-entropy (0 in older cards).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Dropout probability on the pooled features before the head, in training (0 in older cards).
    #[serde(default)]
    pub dropout: f64,
}

fn old_weight_decay() -> f64 {
    1e-4
}

impl ClassifierCard {
    /// The card of an untrained classifier of `config` over `classes` (random features, as tests
    /// use): zero accuracies, no training recipe.
    pub fn untrained(config: ClassifierConfig, classes: Vec<String>) -> Self {
        Self {
            config,
            classes,
            heldout_accuracy: 0.0,
            train_accuracy: 0.0,
            steps: 0,
            batch_size: 0,
            seed: 0,
            lr: 0.0,
            cosine: false,
            shift: 0,
            mixup: false,
            weight_decay: 0.0,
            cutout: 0,
            label_smoothing: 0.0,
            dropout: 0.0,
        }
    }
}

/// The classifier.
#[derive(Debug, Clone)]
pub struct SmallCnn {
    convs: Vec<candle_nn::Conv2d>,
    /// One GroupNorm per conv (scale (C,), shift (C,)) and the group count; empty without.
    norms: Vec<(Tensor, Tensor)>,
    norm_groups: usize,
    flip_average: bool,
    convs_per_stage: usize,
    head: candle_nn::Linear,
}

impl SmallCnn {
    /// Builds from `vb` (weights `convs.{i}.{weight,bias}`, with `norm_groups` also
    /// `norms.{i}.{weight,bias}`, and `head.{weight,bias}`).
    ///
    /// Errors: no width, conv per stage or class; a width that is not a multiple of `norm_groups`.
    pub fn new(cfg: &ClassifierConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.widths.is_empty() || cfg.num_classes == 0 || cfg.convs_per_stage == 0 {
            return Err(Error::hp("the classifier needs at least one conv width, one conv per stage and one class"));
        }
        if cfg.norm_groups > 0 && cfg.widths.iter().any(|w| w % cfg.norm_groups != 0) {
            return Err(Error::hp(format!("every classifier width ({:?}) must be a multiple of norm_groups = {}", cfg.widths, cfg.norm_groups)));
        }
        let (mut convs, mut norms) = (Vec::new(), Vec::new());
        let mut c_in = cfg.in_channels;
        for &w in cfg.widths.iter().flat_map(|w| std::iter::repeat_n(w, cfg.convs_per_stage)) {
            let i = convs.len();
            convs.push(candle_nn::conv2d(c_in, w, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb.pp(format!("convs.{i}")))?);
            if cfg.norm_groups > 0 {
                let vn = vb.pp(format!("norms.{i}"));
                norms.push((vn.get_with_hints(w, "weight", candle_nn::Init::Const(1.0))?, vn.get_with_hints(w, "bias", candle_nn::Init::Const(0.0))?));
            }
            c_in = w;
        }
        Ok(Self {
            convs,
            norms,
            norm_groups: cfg.norm_groups,
            flip_average: cfg.flip_average,
            convs_per_stage: cfg.convs_per_stage,
            head: candle_nn::linear(c_in, cfg.num_classes, vb.pp("head"))?,
        })
    }

    /// Penultimate features (N, D) from images (N, C, H, W) in [−1, 1].
    ///
    /// The convolutions run channels-last as one matrix product over 3×3 patches (im2col from
    /// shifted views), whose backward is a product too: with candle's CPU `conv2d` (backward
    /// through a transposed convolution) 20 training steps of the emoji classifier and its
    /// evaluation took 28 s, this way 15 s (batch 128, two convs per stage). Same weights
    /// (`convs.{i}.weight` (out, in, 3, 3)) and values as candle's `Conv2d` (padding 1), tested.
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.permute((0, 2, 3, 1))?.contiguous()?; // (N, H, W, C)
        for (i, conv) in self.convs.iter().enumerate() {
            h = conv3x3_nhwc(&h, conv)?; // (N, H/2^stage, W/2^stage, width)
            if let Some((scale, shift)) = self.norms.get(i) {
                h = group_norm_nhwc(&h, self.norm_groups, scale, shift)?;
            }
            h = h.relu()?;
            if (i + 1) % self.convs_per_stage == 0 && i + 1 < self.convs.len() {
                h = max_pool_nhwc(&h)?; // (N, H/2, W/2, C)
            }
        }
        Ok(h.mean(2)?.mean(1)?) // (N, D)
    }

    /// Class logits (N, K) of images (N, C, H, W) in [−1, 1]: with the config's `flip_average`
    /// the mean of the logits of each image and of its mirror image, else [`Self::logits_single`].
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let single = self.logits_single(x)?;
        if !self.flip_average {
            return Ok(single);
        }
        Ok(((single + self.logits_single(&mirror(x)?)?)? * 0.5)?)
    }

    /// The same network predicting with or without the flip averaging of [`Self::logits`].
    pub fn with_flip_average(self, flip_average: bool) -> Self {
        Self { flip_average, ..self }
    }

    /// Class logits (N, K) of the images alone (what training optimises).
    pub fn logits_single(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&self.embed(x)?)?)
    }

    /// Class logits (N, K) in training: [`Self::logits_single`] with (inverted) dropout of
    /// probability `p` on the pooled features, its mask drawn from `r` (so that a run is
    /// reproducible and resumes exactly, which candle's device-seeded dropout is not).
    fn training_logits(&self, x: &Tensor, p: f64, r: &mut impl rand::Rng) -> Result<Tensor> {
        let h = self.embed(x)?; // (N, D)
        let h = if p > 0.0 {
            let keep: Vec<f32> = (0..h.elem_count()).map(|_| if r.random::<f64>() < p { 0.0 } else { (1.0 / (1.0 - p)) as f32 }).collect();
            (h.clone() * Tensor::from_vec(keep, h.shape(), h.device())?)? // (N, D)
        } else {
            h
        };
        Ok(self.head.forward(&h)?)
    }

    /// Loads weights and card (`x.safetensors` + `x.json`).
    pub fn load(weights: &Path, device: &Device) -> Result<(Self, ClassifierCard)> {
        let (tensors, card): (_, ClassifierCard) = load_checkpoint(weights, device)?;
        let model = build_strict(weights, tensors, device, |vb| Self::new(&card.config, vb))?;
        Ok((model, card))
    }
}

/// A 3×3 convolution with padding 1 on channels-last `x` (N, H, W, C) → (N, H, W, out), as
/// the product of the (N·H·W, C·9) patches with the weight (out, C·3·3) flattened.
fn conv3x3_nhwc(x: &Tensor, conv: &candle_nn::Conv2d) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let weight = conv.weight(); // (out, C, 3, 3)
    let out = weight.dim(0)?;
    let padded = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?; // (N, H+2, W+2, C)
    let shifts: Vec<Tensor> =
        (0..3).flat_map(|dy| (0..3).map(move |dx| (dy, dx))).map(|(dy, dx)| padded.narrow(1, dy, h)?.narrow(2, dx, w)).collect::<candle_core::Result<_>>()?;
    let patches = Tensor::stack(&shifts, 3)?.reshape((n * h * w, 9 * c))?; // (N·H·W, 9·C), offset-major
    let weight = weight.permute((0, 2, 3, 1))?.reshape((out, 9 * c))?; // (out, 3·3·C), same order
                                                                       // One autograd node on `gemm` with the bias (the crate's fused linear layer).
    let y = erg_kernels::linear(&patches, &weight, conv.bias(), erg_kernels::Kernels::Fused)?; // (N·H·W, out)
    Ok(y.reshape((n, h, w, out))?)
}

/// Images (N, C, H, W) mirrored left–right.
fn mirror(x: &Tensor) -> Result<Tensor> {
    let w = x.dim(3)?;
    Ok(x.index_select(&Tensor::new((0..w as u32).rev().collect::<Vec<_>>().as_slice(), x.device())?, 3)?)
}

/// GroupNorm (Wu & He 2018; eps 10⁻⁵, as `torch.nn.GroupNorm`) of channels-last `x` (N, H, W, C):
/// each image's channels in `groups` consecutive groups, normalised over (H, W, C/groups), then
/// `scale` (C,) and `shift` (C,) per channel.
fn group_norm_nhwc(x: &Tensor, groups: usize, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    // Per-channel means over HW as products with a row of 1/HW (a strided mean over HW is slow
    // in candle), then over each group's channels.
    let flat = x.reshape((n, h * w, c))?; // (N, HW, C)
    let avg = Tensor::full(1.0 / (h * w) as f32, (n, 1, h * w), x.device())?.to_dtype(x.dtype())?; // (N, 1, HW)
    let group_mean = |t: &Tensor| -> candle_core::Result<Tensor> {
        avg.matmul(t)?.reshape((n, groups, c / groups))?.mean_keepdim(2)?.repeat((1, 1, c / groups))?.reshape((n, 1, c))
    };
    let mean = group_mean(&flat)?; // (N, 1, C): each channel's group mean
    let centred = flat.broadcast_sub(&mean)?;
    let var = group_mean(&centred.sqr()?)?; // (N, 1, C)
    let normed = centred.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
    Ok(normed.broadcast_mul(scale)?.broadcast_add(shift)?.reshape((n, h, w, c))?)
}

/// 2×2 max pool of channels-last `x` (N, H, W, C) → (N, H/2, W/2, C), as element-wise maxima of
/// the four strided views (a reduction over a strided window dimension is slow in candle).
fn max_pool_nhwc(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let x = x.reshape((n, h / 2, 2, w / 2, 2 * c))?;
    let rows = x.narrow(2, 0, 1)?.maximum(&x.narrow(2, 1, 1)?)?; // (N, H/2, 1, W/2, 2C)
    let y = rows.narrow(4, 0, c)?.maximum(&rows.narrow(4, c, c)?)?; // (N, H/2, 1, W/2, C)
    Ok(y.reshape((n, h / 2, w / 2, c))?)
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
    /// Peak AdamW learning rate.
    pub lr: f64,
    /// Linear warm-up over the first 5 % of the steps, then cosine decay to 0; else a constant
    /// rate (the first shipped classifier's recipe).
    pub cosine: bool,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of weights, batches and augmentations.
    pub seed: u64,
    /// Random translation of each training image by up to this many pixels in x and y (the
    /// uncovered border white, the emoji background); 0 for none.
    pub shift: usize,
    /// Mixup (Zhang et al. 2018, α = 1): each batch blended with a permutation of itself by
    /// λ ~ U(0, 1), the loss blended with the same λ.
    pub mixup: bool,
    /// Cutout (DeVries & Taylor 2017): in each training image a square of this side (pixels),
    /// centred on a uniformly drawn pixel and clipped at the border, set to white (the emoji
    /// background); 0 for none.
    pub cutout: usize,
    /// Label smoothing ε (Szegedy et al. 2016): the target is (1 − ε)·one-hot + ε/K, i.e. the loss
    /// (1 − ε)·CE + ε·mean over classes of −log p; 0 for plain cross-entropy. In [0, 1).
    pub label_smoothing: f64,
    /// Dropout probability on the pooled features before the head, in training only; in [0, 1).
    pub dropout: f64,
    /// Show a progress bar.
    pub progress: bool,
    /// Save the training state every this many steps (0: never) to
    /// `<weights stem>.state.safetensors` ([`state_path`]), so that a stopped run can continue
    /// ([`Self::resume`]).
    pub checkpoint_every: u64,
    /// Continue from the state file of an earlier call with the same recipe (its card, beside the
    /// state, must match); without it an existing state file is an error.
    pub resume: bool,
    /// End the call after this step, with the state saved there, as an interruption would.
    pub stop_at: Option<u64>,
}

impl ClassifierTraining {
    /// The learning rate at `step`: constant, or warm-up over 5 % of the steps, then cosine
    /// decay to 0 (see [`Self::cosine`]).
    pub fn lr_at(&self, step: u64) -> f64 {
        if !self.cosine {
            return self.lr;
        }
        let warmup = (self.steps / 20).max(1);
        if step < warmup {
            self.lr * (step + 1) as f64 / warmup as f64
        } else {
            let p = (step - warmup) as f64 / (self.steps - warmup).max(1) as f64;
            0.5 * self.lr * (1.0 + (std::f64::consts::PI * p).cos())
        }
    }
}

/// Each image of `x` (N, C, H, W) translated by its own offset in [−shift, shift]², drawn from
/// `r`; the uncovered border is white (1.0).
fn translate(x: &Tensor, shift: usize, r: &mut impl rand::Rng) -> Result<Tensor> {
    if shift == 0 {
        return Ok(x.clone());
    }
    let (n, _, h, w) = x.dims4()?;
    let padded = ((x - 1.0)?.pad_with_zeros(2, shift, shift)?.pad_with_zeros(3, shift, shift)? + 1.0)?; // (N, C, H+2s, W+2s)
    let crops = (0..n)
        .map(|i| {
            let (dy, dx) = (r.random_range(0..=2 * shift), r.random_range(0..=2 * shift));
            padded.narrow(0, i, 1)?.narrow(2, dy, h)?.narrow(3, dx, w)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&crops, 0)?)
}

/// Each image of `x` (N, C, H, W) with a `side`×`side` square, centred on a pixel drawn from `r`
/// and clipped at the border, set to white (1.0); `x` itself for `side` 0.
fn cutout(x: &Tensor, side: usize, r: &mut impl rand::Rng) -> Result<Tensor> {
    if side == 0 {
        return Ok(x.clone());
    }
    let (n, _, h, w) = x.dims4()?;
    let mut mask = vec![0f32; n * h * w];
    for m in mask.chunks_mut(h * w) {
        let (cy, cx) = (r.random_range(0..h), r.random_range(0..w));
        let (y0, y1) = (cy.saturating_sub(side / 2), (cy + side - side / 2).min(h));
        let (x0, x1) = (cx.saturating_sub(side / 2), (cx + side - side / 2).min(w));
        for row in m.chunks_mut(w).take(y1).skip(y0) {
            row[x0..x1].fill(1.0);
        }
    }
    let mask = Tensor::from_vec(mask, (n, 1, h, w), x.device())?.to_dtype(x.dtype())?; // (N, 1, H, W), 1 where erased
    Ok((x.broadcast_mul(&(1.0 - &mask)?)? + mask.broadcast_as(x.shape())?)?)
}

/// Cross-entropy of `logits` (N, K) against classes `y` (N,) with label smoothing `eps`
/// ((1 − ε)·CE + ε·mean over classes of −log p); plain cross-entropy for ε = 0.
fn smoothed_cross_entropy(logits: &Tensor, y: &Tensor, eps: f64) -> Result<Tensor> {
    let ce = candle_nn::loss::cross_entropy(logits, y)?;
    if eps == 0.0 {
        return Ok(ce);
    }
    let uniform = candle_nn::ops::log_softmax(logits, 1)?.mean_all()?.neg()?; // mean over N and K of −log p
    Ok(((ce * (1.0 - eps))? + (uniform * eps)?)?)
}

/// `x.safetensors` → `x.state.safetensors`: where [`train`] keeps the state of a run in progress.
pub fn state_path(weights: &Path) -> std::path::PathBuf {
    weights.with_extension("state.safetensors")
}

/// The step to start from: 0 for a new run (refused when a state file exists without `resume`),
/// else the saved step, with the variables and AdamW's moments restored from the state file
/// ([`AdamW::restore_training_state`]), whose card must equal `recipe`.
fn resume_state(path: &Path, recipe: &ClassifierCard, resume: bool, opt: &mut AdamW, device: &Device) -> Result<u64> {
    match (path.exists(), resume) {
        (false, false) => Ok(0),
        (true, false) => Err(Error::Other(format!("{} holds a classifier run in progress; pass --resume to continue it, or remove it", path.display()))),
        (false, true) => {
            Err(Error::Missing { path: path.into(), hint: "--resume needs the state of an earlier run (written every --checkpoint-every steps)".into() })
        }
        (true, true) => {
            let (st, saved): (std::collections::HashMap<String, Tensor>, ClassifierCard) = load_checkpoint(path, device)?;
            if saved != *recipe {
                return Err(Error::Other(format!("{} was written with another recipe; resume with the same settings", path.display())));
            }
            opt.restore_training_state(&st, path)
        }
    }
}

/// Trains the classifier on the training split of `data` (cross-entropy, AdamW with warm-up and
/// cosine decay, seeded batches, random horizontal flips and translations, optional mixup) and
/// saves it to `weights` with its card, which records the held-out accuracy (percent). Returns
/// the model and card. With `how.checkpoint_every` the state is saved to [`state_path`] as it
/// goes and removed once the weights are written; a call ended by `how.stop_at` saves the state,
/// writes no weights and returns a card with NaN accuracies.
///
/// Errors: images that do not fit `cfg`; a state file without `how.resume`, `how.resume` without
/// one, or one written with another recipe; I/O errors naming the file.
pub fn train(cfg: &ClassifierConfig, data: &Dataset, how: &ClassifierTraining, device: &Device, weights: &Path) -> Result<(SmallCnn, ClassifierCard)> {
    use rand::Rng;
    let ClassifierTraining {
        steps,
        batch_size,
        lr,
        cosine,
        weight_decay,
        seed,
        shift,
        mixup,
        cutout: cutout_side,
        label_smoothing,
        dropout,
        progress,
        checkpoint_every,
        resume,
        stop_at,
    } = *how;
    if !(0.0..1.0).contains(&label_smoothing) || !(0.0..1.0).contains(&dropout) {
        return Err(Error::hp(format!("label smoothing ({label_smoothing}) and dropout ({dropout}) must lie in [0, 1)")));
    }
    let map = SeededVarMap::new(seed);
    let model = SmallCnn::new(cfg, seeded_varbuilder(&map, DType::F32, device))?;
    let mut vars: Vec<_> = map.varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = AdamW::new(vars.clone(), AdamWConfig { lr, weight_decay, ..Default::default() })?;
    let (train_idx, held_idx) = split(data.len());
    // The recipe as a card without accuracies: what a state file must have been written with.
    let recipe = ClassifierCard {
        config: cfg.clone(),
        classes: data.classes.clone(),
        heldout_accuracy: 0.0,
        train_accuracy: 0.0,
        steps,
        batch_size,
        seed,
        lr,
        cosine,
        shift,
        mixup,
        weight_decay,
        cutout: cutout_side,
        label_smoothing,
        dropout,
    };
    let state = state_path(weights);
    let start = resume_state(&state, &recipe, resume, &mut opt, device)?;
    let end = stop_at.map_or(steps, |s| s.min(steps));

    let bar = if progress { indicatif::ProgressBar::new(steps) } else { indicatif::ProgressBar::hidden() };
    bar.set_position(start);
    bar.set_style(indicatif::ProgressStyle::with_template("classifier [{bar:30}] {pos}/{len} {per_sec} loss {msg}").unwrap().progress_chars("=> "));
    let (log_to_terminal, started) = (std::io::IsTerminal::is_terminal(&std::io::stderr()), std::time::Instant::now());
    for step in start..end {
        let mut r = crate::rng::stream(seed, step);
        let idx: Vec<u32> = (0..batch_size).map(|_| train_idx[r.random_range(0..train_idx.len())]).collect();
        let it = Tensor::new(idx.as_slice(), &Device::Cpu)?;
        let mut x = data.images.index_select(&it, 0)?;
        if r.random::<bool>() {
            x = mirror(&x)?;
        }
        let x = cutout(&translate(&x, shift, &mut r)?, cutout_side, &mut r)?;
        let y: Vec<u32> = idx.iter().map(|&i| data.labels[i as usize]).collect();
        let (x, y) = (x.to_device(device)?, Tensor::new(y.as_slice(), device)?);
        let loss = if mixup {
            let lambda: f64 = r.random();
            let perm: Vec<u32> = {
                let mut p: Vec<u32> = (0..batch_size as u32).collect();
                rand::seq::SliceRandom::shuffle(p.as_mut_slice(), &mut r);
                p
            };
            let perm = Tensor::new(perm.as_slice(), device)?;
            let mixed = ((&x * lambda)? + (x.index_select(&perm, 0)? * (1.0 - lambda))?)?;
            let logits = model.training_logits(&mixed, dropout, &mut r)?;
            let a = smoothed_cross_entropy(&logits, &y, label_smoothing)?;
            let b = smoothed_cross_entropy(&logits, &y.index_select(&perm, 0)?, label_smoothing)?;
            ((a * lambda)? + (b * (1.0 - lambda))?)?
        } else {
            smoothed_cross_entropy(&model.training_logits(&x, dropout, &mut r)?, &y, label_smoothing)?
        };
        opt.cfg.lr = how.lr_at(step);
        opt.apply(&loss.backward()?)?;
        bar.inc(1);
        if step % 20 == 0 {
            bar.set_message(format!("{:.3}", loss.to_scalar::<f32>()?));
        }
        // Without a terminal (nohup, CI logs) the bar is hidden: a line every 5 % instead.
        if progress && !log_to_terminal && (step + 1) % (steps / 20).max(1) == 0 {
            eprintln!(
                "classifier step {}/{steps}: loss {:.4}, {:.2} s/step",
                step + 1,
                loss.to_scalar::<f32>()?,
                started.elapsed().as_secs_f64() / (step + 1 - start) as f64
            );
        }
        let done = step + 1;
        if (checkpoint_every > 0 && done % checkpoint_every == 0) || (done == end && end < steps) {
            save_checkpoint(&opt.training_state(done)?, &recipe, &state, DType::F32)?;
        }
    }
    bar.finish_and_clear();
    if end < steps {
        // Stopped early (stop_at): the state is saved; the weights are written when the run ends.
        let card = ClassifierCard { heldout_accuracy: f64::NAN, train_accuracy: f64::NAN, ..recipe };
        return Ok((model, card));
    }
    let card =
        ClassifierCard { heldout_accuracy: accuracy(&model, data, &held_idx, device)?, train_accuracy: accuracy(&model, data, &train_idx, device)?, ..recipe };
    let tensors = vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    save_checkpoint(&tensors, &card, weights, DType::F32)?;
    // The run is complete: its state is no longer needed (a new call starts a new run).
    for p in [state.clone(), crate::checkpoint::card_path(&state)] {
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok((model, card))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cutout whitens one `side`² square per image (clipped at the border) and nothing else.
    #[test]
    fn cutout_whitens_one_square_per_image() {
        let x = Tensor::full(-0.5f32, (64, 3, 12, 12), &Device::Cpu).unwrap();
        let mut r = crate::rng::stream(7, 0);
        let y = cutout(&x, 4, &mut r).unwrap();
        let v = y.flatten_from(1).unwrap().to_vec2::<f32>().unwrap(); // (64, 3·12·12)
        let (mut full, mut clipped) = (0, 0);
        for img in &v {
            assert!(img.iter().all(|&p| p == -0.5 || p == 1.0));
            let white = img.iter().filter(|&&p| p == 1.0).count();
            assert_eq!(white % 3, 0, "every channel erased alike");
            let per_channel = white / 3;
            assert!((4..=16).contains(&per_channel), "{per_channel} pixels");
            if per_channel == 16 {
                full += 1
            } else {
                clipped += 1
            }
        }
        assert!(full > 0 && clipped > 0, "interior and border squares both drawn");
        let same = cutout(&x, 0, &mut r).unwrap().eq(&x).unwrap().min_all().unwrap().to_scalar::<u8>().unwrap();
        assert_eq!(same, 1, "side 0 leaves the images as they are");
    }

    /// Label smoothing: ε = 0 is the cross-entropy; otherwise (1 − ε)·CE + ε·mean(−log p).
    #[test]
    fn smoothed_cross_entropy_matches_its_formula() {
        let logits = Tensor::new(&[[2.0f32, 0.0, -1.0], [0.5, 0.5, 3.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let ce = candle_nn::loss::cross_entropy(&logits, &y).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(smoothed_cross_entropy(&logits, &y, 0.0).unwrap().to_scalar::<f32>().unwrap(), ce);
        let lp = |row: [f32; 3]| {
            let z = row.iter().map(|v| v.exp()).sum::<f32>().ln();
            row.map(|v| v - z)
        };
        let (a, b) = (lp([2.0, 0.0, -1.0]), lp([0.5, 0.5, 3.0]));
        let uniform = -(a.iter().sum::<f32>() + b.iter().sum::<f32>()) / 6.0;
        let want = 0.9 * -(a[0] + b[1]) / 2.0 + 0.1 * uniform;
        let got = smoothed_cross_entropy(&logits, &y, 0.1).unwrap().to_scalar::<f32>().unwrap();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
