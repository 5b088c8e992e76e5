//! The training loop: rectified-flow loss, AdamW, EMA, condition dropout, seeded batches,
//! atomic checkpoints and exact resume, for any [`TrainTask`] (the class-conditional DiT,
//! [`ClassConditional`]; the text-to-image MMDiT, [`crate::train::TextToImageTask`]).
//!
//! Every random draw of step k comes from the stream (seed, k) ([`crate::rng::stream`]), so a
//! run resumed from a checkpoint at step k continues exactly as the uninterrupted run would.
//!
//! A run may also start from another run's exported weights ([`InitCheckpoint`], a warm start):
//! when the state file cannot travel (a fresh machine, a lent GPU), training goes on from the
//! shipped EMA with fresh optimiser moments; the cards then count steps on from that checkpoint's.
//!
//! Files in the run folder:
//! - `run.json`: the [`TrainConfig`];
//! - `state.safetensors`: weights, EMA weights, optimizer moments and the step (f32, atomic);
//! - `ema.safetensors` + `ema.json`: the EMA weights (bias-corrected, [`Ema::debiased`]) and
//!   model card, for sampling;
//! - `weak.safetensors` + `weak.json`: the same at `weak_step` (AutoGuidance's weak model);
//! - `loss.csv`: `step,loss,lr,elapsed_s`.
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{AdamW, AdamWConfig, Ema};
use crate::checkpoint::{load_tensors, save_checkpoint, save_tensors, write_atomic, ModelCard};
use crate::data::Dataset;
use crate::flow::{self, TimeSampling};
use crate::models::dit::{Dit, DitConfig};
use crate::models::Denoiser;
use crate::nn::{seeded_varbuilder, Kernels, SeededVarMap};
use crate::rng;
use crate::{Error, Result};

/// What differs between training a class-conditional DiT and a text-to-image MMDiT: the network,
/// its conditions (with dropout to the null condition for classifier-free guidance) and its card.
pub trait TrainTask {
    /// The model configuration stored in `run.json` and the model card.
    type Config: Clone + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned;
    /// The network.
    type Model: Denoiser;
    /// Architecture name in the model card.
    const NAME: &'static str;
    /// Checks the configuration and that `data` fits it.
    fn check(&self, cfg: &Self::Config, data: &Dataset) -> Result<()>;
    /// Builds the network with its trainable variables in `map`.
    fn build(&self, cfg: &Self::Config, map: &SeededVarMap, device: &Device) -> Result<Self::Model>;
    /// The embedded conditions (B, ...) of the data items `idx`; item i gets the null condition
    /// where `dropped[i]`. May draw from `r` (e.g. which caption of an item).
    fn conditions(&self, model: &Self::Model, data: &Dataset, r: &mut StdRng, idx: &[u32], dropped: &[bool], device: &Device) -> Result<Tensor>;
    /// Class names for the card (empty for text conditions).
    fn classes(&self, data: &Dataset) -> Vec<String>;
}

/// The class-conditional DiT: labels, with the null class for dropped ones.
pub struct ClassConditional;

impl TrainTask for ClassConditional {
    type Config = DitConfig;
    type Model = Dit;
    const NAME: &'static str = "dit";
    fn check(&self, cfg: &DitConfig, data: &Dataset) -> Result<()> {
        cfg.validate()?;
        data.expect_image_shape((cfg.in_channels, cfg.input_size.0, cfg.input_size.1))?;
        if data.classes.len() != cfg.num_classes {
            return Err(Error::shape(format!("data has {} classes, the model {}", data.classes.len(), cfg.num_classes)));
        }
        Ok(())
    }
    fn build(&self, cfg: &DitConfig, map: &SeededVarMap, device: &Device) -> Result<Dit> {
        Dit::new(cfg, seeded_varbuilder(map, DType::F32, device))
    }
    fn conditions(&self, model: &Dit, data: &Dataset, _r: &mut StdRng, idx: &[u32], dropped: &[bool], device: &Device) -> Result<Tensor> {
        let null = model.config().num_classes as u32;
        let y: Vec<u32> = idx.iter().zip(dropped).map(|(&i, &d)| if d { null } else { data.labels[i as usize] }).collect();
        model.embed_condition(&Tensor::new(y.as_slice(), device)?)
    }
    fn classes(&self, data: &Dataset) -> Vec<String> {
        data.classes.clone()
    }
}

/// The learning rate after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The peak rate until the end (so a run can be extended on resume).
    #[default]
    Constant,
    /// Cosine decay from the peak to 0 at `steps` (Loshchilov & Hutter 2017, without restarts);
    /// extending such a run on resume changes its remaining schedule.
    Cosine,
}

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig<C = DitConfig> {
    /// Model architecture.
    pub model: C,
    /// Name of the data set (recorded in the model card).
    pub dataset: String,
    /// Total optimisation steps.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// AdamW settings (peak learning rate).
    pub optim: AdamWConfig,
    /// Linear learning-rate warm-up steps.
    pub warmup_steps: u64,
    /// The learning rate after the warm-up (constant in runs written before this field).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// EMA decay.
    pub ema_decay: f64,
    /// Probability of replacing a label by the null class (CFG training; paper/DiT: 0.1).
    pub label_dropout: f64,
    /// Distribution of t.
    pub time_sampling: TimeSampling,
    /// Seed of initial weights and of every step's randomness.
    pub seed: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Step at which the EMA weights are saved as the weak model for AutoGuidance
    /// (Karras et al. 2024 use an early checkpoint; default steps/16).
    pub weak_step: Option<u64>,
    /// Weights to start from instead of the seed's initialisation (a warm start; absent for a run
    /// from scratch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitCheckpoint>,
    /// Kernels of the training step (a speed choice, not part of the run's identity: not saved).
    #[serde(skip)]
    pub kernels: Kernels,
}

/// A warm start: the checkpoint (written by [`save_checkpoint`], e.g. a run's `ema.safetensors` or
/// a shipped one) whose weights a run begins from. Its weights initialise both the network and the
/// EMA (θ₀ of [`Ema::debiased`]); AdamW's moments start at zero, so the warm-up applies again.
/// The run's cards count steps on from the checkpoint's card (`step` = `init.step` + steps of this
/// run); batches and noise still come from (seed, step of this run), so give a continuation
/// another `seed` than its origin to draw fresh batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitCheckpoint {
    /// The weights file.
    pub path: PathBuf,
    /// SHA-256 of the weights file, checked whenever the run starts or resumes.
    pub sha256: String,
    /// The step in its card.
    pub step: u64,
}

impl InitCheckpoint {
    /// Describes the checkpoint at `path` (its file hash and its card's step).
    ///
    /// Errors: a missing or unreadable checkpoint or card, naming the file.
    pub fn from_checkpoint(path: &Path) -> Result<Self> {
        let card: ModelCard<serde_json::Value> = crate::checkpoint::load_card(path)?;
        Ok(Self { path: path.to_path_buf(), sha256: crate::checkpoint::file_sha256(path)?, step: card.step })
    }

    /// Sets `vars` to the checkpoint's weights after checking its hash, its architecture and
    /// configuration against `model`/`config`, and that its tensors are exactly `vars`.
    fn apply<C: Serialize>(&self, name: &str, config: &C, vars: &[(String, Var)], device: &Device) -> Result<()> {
        let p = &self.path;
        let sha = crate::checkpoint::file_sha256(p)?;
        if sha != self.sha256 {
            return Err(Error::corrupt(p, format!("the warm-start checkpoint changed since the run began (SHA-256 {sha}, run.json says {})", self.sha256)));
        }
        let (tensors, card): (_, ModelCard<serde_json::Value>) = crate::checkpoint::load_checkpoint(p, device)?;
        let want = serde_json::to_value(config).map_err(|e| Error::Other(e.to_string()))?;
        if card.model != name || card.config != want {
            return Err(Error::shape(format!(
                "{} is a {} with config {}, the run trains a {name} with config {want}: warm-start from a checkpoint of the same architecture",
                p.display(),
                card.model,
                card.config
            )));
        }
        if let Some(extra) = tensors.keys().find(|k| !vars.iter().any(|(n, _)| n == *k)) {
            return Err(Error::corrupt(p, format!("tensor {extra} is not a variable of the model")));
        }
        for (n, v) in vars {
            let t = tensors.get(n).ok_or_else(|| Error::corrupt(p, format!("missing tensor {n}")))?;
            v.set(&t.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }
}

impl<C> TrainConfig<C> {
    /// Defaults for a model: batch 64, AdamW lr 4e-4 (β = 0.9, 0.999, weight decay 0), 200
    /// warm-up steps, EMA 0.999, label dropout 0.1, logit-normal t, checkpoints every 250 steps,
    /// weak model at steps/16.
    pub fn new(model: C, dataset: &str, steps: u64, seed: u64) -> Self {
        Self {
            model,
            dataset: dataset.into(),
            steps,
            batch_size: 64,
            optim: AdamWConfig { lr: 4e-4, weight_decay: 0.0, ..Default::default() },
            warmup_steps: 200,
            lr_schedule: LrSchedule::Constant,
            ema_decay: 0.999,
            label_dropout: 0.1,
            time_sampling: TimeSampling::default(),
            seed,
            checkpoint_every: 250,
            weak_step: Some((steps / 16).max(1)),
            init: None,
            kernels: Kernels::Fused,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 || self.checkpoint_every == 0 {
            return Err(Error::hp("steps, batch_size and checkpoint_every must be >= 1"));
        }
        if !(0.0..1.0).contains(&self.ema_decay) || !(0.0..=1.0).contains(&self.label_dropout) {
            return Err(Error::hp("ema_decay must be in [0, 1) and label_dropout in [0, 1]"));
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            return Err(Error::hp(format!("the learning rate must be finite and > 0, got {}", self.optim.lr)));
        }
        if !(self.optim.weight_decay >= 0.0 && self.optim.weight_decay.is_finite()) {
            return Err(Error::hp(format!("weight decay must be finite and >= 0, got {}", self.optim.weight_decay)));
        }
        Ok(())
    }

    /// The learning rate of step `step` (0-based): linear warm-up to `optim.lr`, then
    /// [`Self::lr_schedule`].
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.optim.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.lr_schedule {
            LrSchedule::Constant => self.optim.lr,
            LrSchedule::Cosine => {
                let p = (step - self.warmup_steps) as f64 / self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
                0.5 * self.optim.lr * (1.0 + (std::f64::consts::PI * p.min(1.0)).cos())
            }
        }
    }
}

/// The files of a run folder.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// The folder.
    pub dir: PathBuf,
}

impl RunPaths {
    /// Paths under `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self { dir: dir.as_ref().to_path_buf() }
    }
    /// `run.json`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("run.json")
    }
    /// `state.safetensors`.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.safetensors")
    }
    /// `ema.safetensors`.
    pub fn ema(&self) -> PathBuf {
        self.dir.join("ema.safetensors")
    }
    /// `weak.safetensors`.
    pub fn weak(&self) -> PathBuf {
        self.dir.join("weak.safetensors")
    }
    /// `loss.csv`.
    pub fn loss(&self) -> PathBuf {
        self.dir.join("loss.csv")
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Step reached.
    pub step: u64,
    /// Step the run started from (0, or the resumed checkpoint's).
    pub resumed_from: u64,
    /// Mean loss over the last min(100, n/2) steps of this call's n steps.
    pub final_loss: f64,
    /// Mean loss over the first min(100, n/2) steps of this call.
    pub first_loss: f64,
    /// Wall time of this call, seconds.
    pub wall_s: f64,
    /// Mean seconds per step.
    pub s_per_step: f64,
}

fn named_vars(map: &SeededVarMap) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = map.varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The card of the weights after `step` steps of this run (its step counts on from a warm start's).
fn card<T: TrainTask>(cfg: &TrainConfig<T::Config>, classes: &[String], step: u64) -> ModelCard<T::Config> {
    let step = cfg.init.as_ref().map_or(0, |i| i.step) + step;
    ModelCard { model: T::NAME.into(), config: cfg.model.clone(), step, classes: classes.to_vec(), dataset: cfg.dataset.clone(), ema: true, selection: None }
}

/// The state file: the optimiser's training state (variables, moments, step) and the EMA
/// (`ema.<name>`).
fn save_state(paths: &RunPaths, opt: &AdamW, ema: &Ema, step: u64) -> Result<()> {
    let mut t = opt.training_state(step)?;
    for (n, w) in &ema.weights {
        t.insert(format!("ema.{n}"), w.clone());
    }
    save_tensors(&t, &paths.state(), DType::F32)
}

/// How a training call runs (not part of the run's identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunOptions {
    /// Continue the run in the folder from its last checkpoint (its `run.json` must match the
    /// config); without it, an existing run folder is an error (nothing is overwritten).
    pub resume: bool,
    /// End the call early at this step (after checkpointing), as an interruption would.
    pub stop_at: Option<u64>,
    /// End the call at the first step that finishes after this much wall time (after
    /// checkpointing there), e.g. to fit a machine lent for a fixed time; a later `resume`
    /// continues exactly.
    pub time_limit: Option<std::time::Duration>,
    /// Show a progress bar with loss and steps/s.
    pub progress: bool,
}

impl RunOptions {
    /// A new run, quietly.
    pub fn new() -> Self {
        Self::default()
    }
    /// Resume the run in the folder when `resume`.
    pub fn resume(self, resume: bool) -> Self {
        Self { resume, ..self }
    }
    /// Stop after `step`.
    pub fn stop_at(self, step: u64) -> Self {
        Self { stop_at: Some(step), ..self }
    }
    /// With a progress bar.
    pub fn progress(self) -> Self {
        Self { progress: true, ..self }
    }
    /// Stop (checkpointed) at the first step that ends after `limit` of wall time.
    pub fn time_limit(self, limit: std::time::Duration) -> Self {
        Self { time_limit: Some(limit), ..self }
    }
}

/// Trains (or resumes) a DiT on `data` with the rectified-flow loss: [`train_task`] with
/// [`ClassConditional`].
pub fn train(cfg: &TrainConfig, data: &Dataset, device: &Device, paths: &RunPaths, opts: RunOptions) -> Result<TrainReport> {
    train_task(&ClassConditional, cfg, data, device, paths, opts)
}

/// Trains (or resumes, see [`RunOptions`]) the model of `task` on `data` with the rectified-flow
/// loss, checkpointing atomically into `paths`.
///
/// Errors: invalid config; data that does not fit the model; an existing run without
/// `opts.resume`, or one whose `run.json` differs from `cfg`; I/O errors naming the file.
pub fn train_task<T: TrainTask>(
    task: &T,
    cfg: &TrainConfig<T::Config>,
    data: &Dataset,
    device: &Device,
    paths: &RunPaths,
    opts: RunOptions,
) -> Result<TrainReport> {
    let RunOptions { resume, stop_at, time_limit, progress } = opts;
    cfg.validate()?;
    task.check(&cfg.model, data)?;
    let classes = task.classes(data);
    let mut state = TrainState::new(task, cfg, device)?;
    let mut start = 0u64;

    if resume && !paths.state().exists() {
        return Err(Error::Missing {
            path: paths.state(),
            hint: "--resume needs the run's state file; without --resume a new run starts from step 0 (overwriting loss.csv and the EMA in that folder)".into(),
        });
    }
    if paths.state().exists() {
        if !resume {
            return Err(Error::Other(format!("{} already holds a run; pass --resume to continue it or choose another --out", paths.dir.display())));
        }
        let saved: TrainConfig<T::Config> = serde_json::from_str(&std::fs::read_to_string(paths.config()).map_err(|e| Error::io(paths.config(), e))?)
            .map_err(|e| Error::corrupt(paths.config(), e))?;
        // The total step count may be extended on resume; everything else must match.
        if saved.lr_schedule == LrSchedule::Cosine && saved.steps != cfg.steps {
            return Err(Error::Other(format!(
                "{} has a cosine learning-rate schedule over {} steps; it cannot be resumed with --steps {} (the schedule would change)",
                paths.config().display(),
                saved.steps,
                cfg.steps
            )));
        }
        let same = TrainConfig { steps: cfg.steps, weak_step: cfg.weak_step, ..saved } == *cfg;
        if !same {
            return Err(Error::Other(format!("{} was written with another configuration; resume with the same settings", paths.config().display())));
        }
        let st = load_tensors(&paths.state(), device)?;
        start = state.opt.restore_training_state(&st, &paths.state())?;
        for (n, _) in &state.vars {
            let e = st.get(&format!("ema.{n}")).ok_or_else(|| Error::corrupt(paths.state(), format!("missing ema.{n}")))?;
            state.ema.weights.insert(n.clone(), e.clone());
        }
        truncate_log(&paths.loss(), start)?;
        repair_exports::<T>(cfg, paths, &classes, &state.ema, &state.init, start)?;
    } else {
        std::fs::create_dir_all(&paths.dir).map_err(|e| Error::io(&paths.dir, e))?;
        write_atomic(&paths.config(), &serde_json::to_vec_pretty(cfg).map_err(|e| Error::Other(e.to_string()))?)?;
        std::fs::write(paths.loss(), "step,loss,lr,elapsed_s\n").map_err(|e| Error::io(paths.loss(), e))?;
    }

    let end = stop_at.unwrap_or(cfg.steps).min(cfg.steps);
    let bar = if progress { indicatif::ProgressBar::new(cfg.steps) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} train [{bar:30}] {pos}/{len} {per_sec} eta {eta} loss {msg}").unwrap().progress_chars("=> "),
    );
    bar.set_position(start);
    let mut log = std::fs::OpenOptions::new().append(true).open(paths.loss()).map_err(|e| Error::io(paths.loss(), e))?;
    let t0 = Instant::now();
    let mut losses = Vec::new();
    let mut last = end;
    for step in start..end {
        let l = state.step(cfg, data, step, device)?;
        losses.push(l);
        writeln!(log, "{},{l:.6},{:.3e},{:.2}", step + 1, cfg.lr_at(step), t0.elapsed().as_secs_f64())?;
        bar.inc(1);
        if step % 10 == 0 {
            let k = losses.len().min(50);
            bar.set_message(format!("{:.4}", losses[losses.len() - k..].iter().sum::<f64>() / k as f64));
        }
        let done = step + 1;
        if cfg.weak_step == Some(done) {
            save_checkpoint(&state.ema.debiased(&state.init, done)?, &card::<T>(cfg, &classes, done), &paths.weak(), DType::F32)?;
        }
        let out_of_time = time_limit.is_some_and(|l| t0.elapsed() >= l);
        if out_of_time {
            last = done;
        }
        if done % cfg.checkpoint_every == 0 || done == end || out_of_time {
            log.flush()?;
            save_state(paths, &state.opt, &state.ema, done)?;
            save_checkpoint(&state.ema.debiased(&state.init, done)?, &card::<T>(cfg, &classes, done), &paths.ema(), DType::F32)?;
        }
        if out_of_time {
            break;
        }
    }
    bar.finish_and_clear();
    let n = losses.len().max(1);
    let k = (losses.len() / 2).clamp(1, 100).min(losses.len());
    let wall_s = t0.elapsed().as_secs_f64();
    Ok(TrainReport {
        step: last.max(start),
        resumed_from: start,
        final_loss: if k > 0 { losses[losses.len() - k..].iter().sum::<f64>() / k as f64 } else { f64::NAN },
        first_loss: if k > 0 { losses[..k].iter().sum::<f64>() / k as f64 } else { f64::NAN },
        wall_s,
        s_per_step: wall_s / n as f64,
    })
}

/// The live state of a run: the network, its variables (sorted by name), θ₀ (for the EMA's bias
/// correction), AdamW and the EMA. [`TrainState::step`] is one optimisation step; [`train_task`]
/// adds checkpoints, resume and the log around it, and the `bench` example times it.
pub struct TrainState<'t, T: TrainTask> {
    task: &'t T,
    /// The network being trained.
    pub model: T::Model,
    vars: Vec<(String, Var)>,
    init: HashMap<String, Tensor>,
    opt: AdamW,
    ema: Ema,
}

impl<'t, T: TrainTask> TrainState<'t, T> {
    /// Builds the network from `cfg.seed` (or `cfg.init`'s weights) on `device`, with fresh
    /// optimizer moments and EMA.
    ///
    /// Errors: invalid config; a warm-start checkpoint that is missing, changed, or of another
    /// architecture.
    pub fn new(task: &'t T, cfg: &TrainConfig<T::Config>, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let map = SeededVarMap::new(cfg.seed);
        let model = task.build(&cfg.model, &map, device)?;
        let vars = named_vars(&map);
        if let Some(init) = &cfg.init {
            init.apply(T::NAME, &cfg.model, &vars, device)?;
        }
        let init = vars.iter().map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?))).collect::<Result<_>>()?;
        let mut opt = AdamW::new(vars.clone(), cfg.optim)?;
        opt.kernels = cfg.kernels;
        let mut ema = Ema::new(&vars, cfg.ema_decay)?;
        ema.kernels = cfg.kernels;
        Ok(Self { task, model, vars, init, opt, ema })
    }

    /// Optimisation step `step` (0-based) on `data`: batch, condition dropout, noise and t all
    /// drawn from the stream (seed, step); rectified-flow loss, backward, AdamW at the step's
    /// learning rate, EMA update. Returns the loss (read back, so the device has finished).
    ///
    /// Errors: data that does not fit the model; a non-finite loss.
    pub fn step(&mut self, cfg: &TrainConfig<T::Config>, data: &Dataset, step: u64, device: &Device) -> Result<f64> {
        let mut r = rng::stream(cfg.seed, step);
        let idx = data.batch_indices(&mut r, cfg.batch_size)?;
        let x1 = data.images_at(&idx, device)?;
        let dropped: Vec<bool> = idx.iter().map(|_| r.random::<f64>() < cfg.label_dropout).collect();
        let cond = self.task.conditions(&self.model, data, &mut r, &idx, &dropped, device)?;
        let eps = rng::randn(&mut r, x1.dims(), device)?;
        let t = Tensor::new(cfg.time_sampling.sample(&mut r, cfg.batch_size).as_slice(), device)?;
        let loss = flow::loss_embedded(&self.model, &x1, &eps, &t, &cond, cfg.kernels)?;
        let grads = loss.backward()?;
        self.opt.cfg.lr = cfg.lr_at(step);
        self.opt.apply(&grads)?;
        self.ema.update(&self.vars)?;
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() {
            return Err(Error::Other(format!("loss became {l} at step {step}; lower the learning rate")));
        }
        Ok(l)
    }
}

/// The EMA (and weak) exports are written after the state, so a kill between the writes leaves
/// an export older than the state; resume rewrites it from the state's EMA. (The weak export can
/// only be rebuilt when the state is at `weak_step` itself; the state is never past it otherwise
/// without the export having been written first.)
fn repair_exports<T: TrainTask>(
    cfg: &TrainConfig<T::Config>,
    paths: &RunPaths,
    classes: &[String],
    ema: &Ema,
    init: &HashMap<String, Tensor>,
    step: u64,
) -> Result<()> {
    let exported_step = |p: &Path| crate::checkpoint::load_card::<ModelCard<serde_json::Value>>(p).ok().map(|c| c.step);
    let mut targets = vec![paths.ema()];
    if cfg.weak_step == Some(step) {
        targets.push(paths.weak());
    }
    let card = card::<T>(cfg, classes, step);
    for p in targets {
        if exported_step(&p) != Some(card.step) || !p.exists() {
            save_checkpoint(&ema.debiased(init, step)?, &card, &p, DType::F32)?;
        }
    }
    Ok(())
}

/// Keeps the header and the rows with step ≤ `step` (rows written after the last checkpoint
/// of an interrupted run are dropped, since those steps are redone).
fn truncate_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        std::fs::write(path, "step,loss,lr,elapsed_s\n").map_err(|e| Error::io(path, e))?;
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || l.split(',').next().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s <= step))
        .map(|(_, l)| l)
        .collect();
    write_atomic(path, (kept.join("\n") + "\n").as_bytes())
}
