//! Attention with entropy rectification (ERG, Sec. 3.1).
//!
//! One function, [`attention`], is used by every model of the crate. It takes a [`Rectifier`]:
//! - [`Rectifier::Standard`]: `softmax(β Q Kᵀ) V`, β = 1/√d_head;
//! - [`Rectifier::Energy`]: Algorithm 1 of the paper, the K-step gradient descent on the
//!   rectified Hopfield energy E(ξ; X) = ½ξᵀξ − α·lse(Xᵀξ, τβ) (Eq. 9):
//!   `Q ← Q − γ (Q − α softmax(τ β Q Kᵀ) V)`, repeated K times, the output being the final Q.
//!   With α = γ = K = 1 this is temperature scaling alone (the I-ERG/C-ERG default of Table 7),
//!   and τ = α = γ = K = 1 is standard attention.
//!
//! The temperature multiplies the logits *after* any QK-norm and rotary embedding (the caller
//! passes normalised, rotated q and k), so a QK-norm cannot undo it (a pitfall of hook-based
//! implementations that scale the q projection).
//!
//! An [`AttentionPlan`] says which blocks of a model use which rectifier: the rectifier applies
//! in blocks `l_min ≤ l < l_max` (0-based, half-open, as in Table 7 and Appendix C).
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

pub mod packed;
pub mod smooth;

use crate::nn::{ops::softmax_last_dim, OpMode};
use crate::{Error, Result};

/// Parameters of the rectified-energy attention update (Eq. 9, Algorithm 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Energy {
    /// Temperature τ > 0 multiplying the logits β·QKᵀ. τ < 1 flattens the attention (higher
    /// entropy); τ → 0 gives the uniform average of V. Paper default for I-ERG: 0.01.
    pub tau: f64,
    /// Pattern-matching weight α (any real; 1 = standard).
    pub alpha: f64,
    /// Step size γ > 0 of the gradient step on the energy (1 = the CCCP update).
    pub gamma: f64,
    /// Number K ≥ 1 of update steps.
    pub steps: usize,
}

impl Energy {
    /// Temperature scaling alone: α = γ = K = 1.
    pub fn temperature(tau: f64) -> Self {
        Self { tau, alpha: 1.0, gamma: 1.0, steps: 1 }
    }

    /// Checks the ranges of Algorithm 1: τ > 0, γ > 0, K ≥ 1, all finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.tau.is_finite() && self.tau > 0.0) {
            return Err(Error::hp(format!("tau must be finite and > 0, got {}", self.tau)));
        }
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            return Err(Error::hp(format!("gamma must be finite and > 0, got {}", self.gamma)));
        }
        if !self.alpha.is_finite() {
            return Err(Error::hp(format!("alpha must be finite, got {}", self.alpha)));
        }
        if self.steps == 0 {
            return Err(Error::hp("the number of energy steps K must be >= 1"));
        }
        Ok(())
    }

    fn is_plain_softmax(&self) -> bool {
        self.alpha == 1.0 && self.gamma == 1.0 && self.steps == 1
    }
}

/// What an attention layer computes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rectifier {
    /// `softmax(β Q Kᵀ) V`.
    #[default]
    Standard,
    /// The rectified energy update of Algorithm 1 (temperature τ, weight α, step γ, K steps).
    Energy(Energy),
    /// PAG (Ahn et al. 2024): the attention map is replaced by the identity, output = V; in
    /// joint image–text attention only the image–image block (see [`attention`]).
    Identity,
    /// SEG (Hong 2024): queries blurred over the token grid by a Gaussian of standard deviation
    /// `sigma` tokens (kernel ⌈6σ⌉ + 1 made odd, clipped to the grid, reflect padding,
    /// separable); `sigma = ∞` (JSON `null`) replaces every query by the mean query.
    SmoothedQueries {
        /// σ ≥ 0 in tokens; `f64::INFINITY` for the global mean.
        #[serde(with = "inf_as_null")]
        sigma: f64,
    },
    /// SLG (skip-layer guidance, SD3.5): the whole block is skipped (its input passes through).
    SkipBlock,
}

/// Serialises an `f64` with infinity as JSON `null` (σ = ∞ of SEG, r = ∞ of APG).
pub(crate) mod inf_as_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_infinite() {
            s.serialize_none()
        } else {
            s.serialize_some(v)
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

impl Rectifier {
    /// Temperature rectification `Energy { tau, alpha: 1, gamma: 1, steps: 1 }`.
    pub fn temperature(tau: f64) -> Self {
        Rectifier::Energy(Energy::temperature(tau))
    }
    /// Checks the hyperparameters (see [`Energy::validate`]).
    pub fn validate(&self) -> Result<()> {
        match self {
            Rectifier::Standard | Rectifier::Identity | Rectifier::SkipBlock => Ok(()),
            Rectifier::Energy(e) => e.validate(),
            Rectifier::SmoothedQueries { sigma } => {
                if sigma.is_nan() || *sigma < 0.0 {
                    Err(Error::hp(format!("SEG sigma must be >= 0 (or infinite), got {sigma}")))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Scaled dot-product attention with a rectifier.
///
/// Shapes: `q` (B, H, S, d), `k` (B, H, N, d), `v` (B, H, N, d) → (B, H, S, d).
/// β = 1/√d. `mode` picks fused kernels (sampling) or differentiable ones (training).
/// `grid` = (rows, cols) of the first rows·cols query tokens (image tokens), needed by
/// [`Rectifier::SmoothedQueries`]; other query tokens (e.g. text) are left unblurred.
/// [`Rectifier::SkipBlock`] acts at block level and is standard attention here.
///
/// Errors: mismatched shapes, invalid rectifier hyperparameters.
/// Source: ERG Algorithm 1 and Listing 2 (`multistep_attention`); PAG and SEG as cited on
/// [`Rectifier`].
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, rectifier: &Rectifier, mode: OpMode, grid: Option<(usize, usize)>) -> Result<Tensor> {
    let (_, _, _, d) = q.dims4()?;
    let beta = 1.0 / (d as f64).sqrt();
    let kt = k.transpose(2, 3)?.contiguous()?;
    let attend = |q: &Tensor, scale: f64| -> Result<Tensor> {
        let logits = (q.contiguous()?.matmul(&kt)? * scale)?; // (B, H, S, N)
        let p = softmax_last_dim(&logits, mode)?;
        Ok(p.matmul(&v.contiguous()?)?) // (B, H, S, d)
    };
    match rectifier {
        Rectifier::Standard | Rectifier::SkipBlock => attend(q, beta),
        Rectifier::Identity => {
            if q.dims() != v.dims() {
                return Err(Error::shape("PAG's identity attention needs as many queries as values (self-attention)"));
            }
            let s = q.dim(2)?;
            match grid.map(|(r, c)| r * c) {
                // Joint attention (MMDiT): only the image–image block becomes the identity; image
                // queries still attend to the text keys, text queries attend normally
                // (diffusers' `PAGJointAttnProcessor2_0`).
                Some(n) if n < s => {
                    let mask: Vec<f32> = (0..s * s).map(|i| if i / s < n && i % s < n && i / s != i % s { -1e9 } else { 0.0 }).collect();
                    let mask = Tensor::from_vec(mask, (s, s), q.device())?.to_dtype(q.dtype())?;
                    let logits = (q.contiguous()?.matmul(&kt)? * beta)?.broadcast_add(&mask)?; // (B, H, S, S)
                    Ok(softmax_last_dim(&logits, mode)?.matmul(&v.contiguous()?)?)
                }
                _ => Ok(v.clone()),
            }
        }
        Rectifier::SmoothedQueries { sigma } => {
            rectifier.validate()?;
            let grid = grid.ok_or_else(|| Error::shape("SEG needs the token grid of the queries"))?;
            attend(&crate::attention::smooth::smooth_queries(q, grid, *sigma)?, beta)
        }
        Rectifier::Energy(e) => {
            e.validate()?;
            if e.is_plain_softmax() {
                return attend(q, e.tau * beta);
            }
            if q.dims() != v.dims() {
                return Err(Error::shape(format!("the energy update needs queries and values of one shape, got {:?} and {:?}", q.dims(), v.dims())));
            }
            let mut state = q.clone();
            for _ in 0..e.steps {
                let a = attend(&state, e.tau * beta)?;
                // Q ← Q − γ (Q − α A) = (1 − γ) Q + γ α A
                state = ((&state * (1.0 - e.gamma))? + (a * (e.gamma * e.alpha))?)?;
            }
            Ok(state)
        }
    }
}

/// Which blocks of a model use which rectifier: `rectifier` in blocks `l_min ≤ l < l_max`,
/// standard attention elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct AttentionPlan {
    /// The rectifier of the blocks in range.
    pub rectifier: Rectifier,
    /// First rectified block (0-based).
    pub l_min: usize,
    /// One past the last rectified block.
    pub l_max: usize,
}

impl AttentionPlan {
    /// Standard attention everywhere.
    pub fn standard() -> Self {
        Self::default()
    }

    /// `rectifier` in blocks `[l_min, l_max)`.
    pub fn blocks(rectifier: Rectifier, l_min: usize, l_max: usize) -> Self {
        Self { rectifier, l_min, l_max }
    }

    /// The rectifier used by block `l`.
    pub fn rectifier(&self, l: usize) -> &Rectifier {
        const STANDARD: Rectifier = Rectifier::Standard;
        if l >= self.l_min && l < self.l_max {
            &self.rectifier
        } else {
            &STANDARD
        }
    }

    /// Whether every block uses standard attention.
    pub fn is_standard(&self) -> bool {
        self.rectifier == Rectifier::Standard || self.l_min >= self.l_max
    }

    /// Checks `l_min ≤ l_max ≤ depth` and the rectifier's hyperparameters.
    pub fn validate(&self, depth: usize) -> Result<()> {
        if self.l_min > self.l_max {
            return Err(Error::hp(format!("l_min ({}) must be <= l_max ({})", self.l_min, self.l_max)));
        }
        if self.l_max > depth {
            return Err(Error::hp(format!("l_max ({}) is beyond the model depth ({depth}): blocks are 0..{depth}", self.l_max)));
        }
        self.rectifier.validate()
    }
}

/// Block range `[l_min, l_max)` of a reference model of depth `ref_depth` scaled to `depth`
/// (e.g. Table 7's blocks 12–15 of DiT-XL/2's 28 for a 6-block model gives 2–4).
/// The range keeps at least one block.
pub fn scale_block_range(l_min: usize, l_max: usize, ref_depth: usize, depth: usize) -> (usize, usize) {
    let lo = ((l_min as f64) * depth as f64 / ref_depth as f64).floor() as usize;
    let hi = ((l_max as f64) * depth as f64 / ref_depth as f64).ceil() as usize;
    let lo = lo.min(depth.saturating_sub(1));
    (lo, hi.max(lo + 1).min(depth))
}

/// The attention plan of each contiguous group of rows of a batch, for one forward pass.
/// Lets a positive (standard) and negatives (rectified, perturbed) run in one batched forward:
/// blocks where all groups agree run one attention call; others split the batch.
/// It can also record the head-averaged attention map of one block for the first group
/// (Self-Attention Guidance needs it).
#[derive(Debug, Clone)]
pub struct ForwardPlan {
    /// `(rows, plan)` for consecutive groups of the batch; rows add up to the batch size.
    pub groups: Vec<(usize, AttentionPlan)>,
    /// Kernels to use.
    pub mode: OpMode,
    /// Block whose attention map (first group's rows) is recorded into [`Self::recorded`].
    pub record: Option<usize>,
    /// The recorded map, (rows, N, N) averaged over heads, after the forward.
    pub recorded: std::cell::RefCell<Option<Tensor>>,
    /// If set to p, every block records the share of (query, head) pairs of the first group
    /// whose largest standard-attention probability exceeds p (ERG Fig. 7 uses 0.95) into
    /// [`Self::certainty`]. Analysis only: it costs an extra attention map per block.
    pub certainty_threshold: Option<f64>,
    /// `(block, share above the threshold, mean largest probability)` recorded during the forward
    /// when [`Self::certainty_threshold`] is set.
    pub certainty: std::cell::RefCell<Vec<(usize, f64, f64)>>,
}

impl ForwardPlan {
    /// Groups with sampling kernels.
    pub fn new(groups: Vec<(usize, AttentionPlan)>) -> Self {
        Self { groups, mode: OpMode::Infer, record: None, recorded: Default::default(), certainty_threshold: None, certainty: Default::default() }
    }
    /// One plan for all `batch` rows, sampling kernels.
    pub fn uniform(batch: usize, plan: AttentionPlan) -> Self {
        Self::new(vec![(batch, plan)])
    }
    /// Standard attention, differentiable kernels (training).
    pub fn train(batch: usize) -> Self {
        Self { mode: OpMode::Train, ..Self::uniform(batch, AttentionPlan::standard()) }
    }
    /// Total rows.
    pub fn batch(&self) -> usize {
        self.groups.iter().map(|g| g.0).sum()
    }
    /// Checks every group's plan against the model depth.
    pub fn validate(&self, depth: usize) -> Result<()> {
        if let Some(l) = self.record {
            if l >= depth {
                return Err(Error::hp(format!("cannot record the attention of block {l}: the model has {depth} blocks")));
            }
        }
        self.groups.iter().try_for_each(|(_, p)| p.validate(depth))
    }

    /// For block `l`, which rows skip the block (SLG): `None` when no group skips it, else one
    /// flag per group.
    pub fn skipped(&self, l: usize) -> Option<Vec<bool>> {
        let flags: Vec<bool> = self.groups.iter().map(|(_, p)| *p.rectifier(l) == Rectifier::SkipBlock).collect();
        flags.iter().any(|&f| f).then_some(flags)
    }

    /// Rectified attention of block `l` over the batch, splitting rows where plans differ.
    /// Shapes as in [`attention`], with B = [`Self::batch`]; `grid` as in [`attention`].
    /// Attention of block `l` on a packed projection `qkv` (B, N, 3·H·d_h) → (B, N, H·d_h), heads
    /// side by side (the layouts of [`packed::packed_attention`]). Consecutive row groups with plain
    /// or temperature attention (the energy update with α = γ = K = 1) run as one call of the
    /// packed kernel with a logit scale τ/√d_h per row; other groups (identity, smoothed queries,
    /// multi-step energy updates) run [`attention`] on split heads. With attention recording, or
    /// where the kernel does not apply (not CPU f32, fused kernels off), everything takes
    /// [`Self::attend`]. Same values either way, up to f32 rounding (tested).
    pub fn attend_packed(&self, l: usize, qkv: &Tensor, heads: usize, grid: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, n, w) = qkv.dims3()?;
        if heads == 0 || !w.is_multiple_of(3 * heads) {
            return Err(Error::shape(format!("qkv {:?} is not (B, N, 3·H·d_h) with H = {heads}", qkv.dims())));
        }
        let dh = w / (3 * heads);
        let split = |qkv: &Tensor| -> Result<(Tensor, Tensor, Tensor)> {
            let p = qkv.reshape((qkv.dim(0)?, n, 3, heads, dh))?.permute((2, 0, 3, 1, 4))?; // (3, B, H, N, d_h)
            Ok((p.get(0)?.contiguous()?, p.get(1)?.contiguous()?, p.get(2)?.contiguous()?))
        };
        let merge = |o: Tensor| -> Result<Tensor> { Ok(o.transpose(1, 2)?.reshape((o.dim(0)?, n, heads * dh))?) }; // (B, N, D)
        if self.record == Some(l) || self.certainty_threshold.is_some() || !packed::packed_kernel_applies(qkv) {
            let (q, k, v) = split(qkv)?;
            return merge(self.attend(l, &q, &k, &v, grid)?);
        }
        let beta = 1.0 / (dh as f64).sqrt();
        let mut outs = Vec::new();
        let (mut start, mut run_start, mut run) = (0, 0, Vec::<f64>::new());
        let flush = |outs: &mut Vec<Tensor>, run: &mut Vec<f64>, run_start: usize| -> Result<()> {
            if !run.is_empty() {
                outs.push(packed::packed_attention(&qkv.narrow(0, run_start, run.len())?, heads, run)?);
                run.clear();
            }
            Ok(())
        };
        for (rows, plan) in &self.groups {
            let scale = match plan.rectifier(l) {
                Rectifier::Standard | Rectifier::SkipBlock => Some(beta),
                Rectifier::Energy(e) if e.is_plain_softmax() => Some(e.tau * beta),
                _ => None,
            };
            match scale {
                Some(s) => {
                    if run.is_empty() {
                        run_start = start;
                    }
                    run.extend(std::iter::repeat_n(s, *rows));
                }
                None => {
                    flush(&mut outs, &mut run, run_start)?;
                    let (q, k, v) = split(&qkv.narrow(0, start, *rows)?)?;
                    outs.push(merge(attention(&q, &k, &v, plan.rectifier(l), self.mode, grid)?)?);
                }
            }
            start += rows;
        }
        flush(&mut outs, &mut run, run_start)?;
        Ok(if outs.len() == 1 { outs.pop().expect("one part") } else { Tensor::cat(&outs, 0)? })
    }

    /// Attention of block `l` on q, k, v (B, H, N, d_h) → (B, H, N, d_h), each group of rows with
    /// its rectifier (one call when all groups agree), recording what the plan asks for.
    pub fn attend(&self, l: usize, q: &Tensor, k: &Tensor, v: &Tensor, grid: Option<(usize, usize)>) -> Result<Tensor> {
        if self.record == Some(l) {
            let rows = self.groups[0].0;
            let (qs, ks) = (q.narrow(0, 0, rows)?.contiguous()?, k.narrow(0, 0, rows)?.contiguous()?);
            let d = q.dim(3)?;
            let logits = (qs.matmul(&ks.transpose(2, 3)?.contiguous()?)? / (d as f64).sqrt())?;
            let probs = softmax_last_dim(&logits, self.mode)?.mean(1)?; // (rows, N, N)
            *self.recorded.borrow_mut() = Some(probs);
        }
        if let Some(p) = self.certainty_threshold {
            let rows = self.groups[0].0;
            let (qs, ks) = (q.narrow(0, 0, rows)?.contiguous()?, k.narrow(0, 0, rows)?.contiguous()?);
            let logits = (qs.matmul(&ks.transpose(2, 3)?.contiguous()?)? / (q.dim(3)? as f64).sqrt())?; // (rows, H, S, N)
            let top = softmax_last_dim(&logits, self.mode)?.max(candle_core::D::Minus1)?; // (rows, H, S)
            let share = top.gt(p)?.to_dtype(candle_core::DType::F32)?.mean_all()?.to_scalar::<f32>()? as f64;
            let mean_top = top.mean_all()?.to_scalar::<f32>()? as f64;
            self.certainty.borrow_mut().push((l, share, mean_top));
        }
        let first = *self.groups[0].1.rectifier(l);
        if self.groups.iter().all(|(_, p)| *p.rectifier(l) == first) {
            return attention(q, k, v, &first, self.mode, grid);
        }
        let mut outs = Vec::with_capacity(self.groups.len());
        let mut start = 0;
        for (rows, plan) in &self.groups {
            let (qs, ks, vs) = (q.narrow(0, start, *rows)?, k.narrow(0, start, *rows)?, v.narrow(0, start, *rows)?);
            outs.push(attention(&qs, &ks, &vs, plan.rectifier(l), self.mode, grid)?);
            start += rows;
        }
        Ok(Tensor::cat(&outs, 0)?)
    }
}

/// Keeps rows of `new` for groups that run a block and rows of `old` for groups that skip it
/// (`skipped` from [`ForwardPlan::skipped`]). Both (B, ...).
pub fn select_rows(plan: &ForwardPlan, skipped: &[bool], old: &Tensor, new: &Tensor) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(skipped.len());
    let mut start = 0;
    for ((rows, _), &skip) in plan.groups.iter().zip(skipped) {
        parts.push(if skip { old.narrow(0, start, *rows)? } else { new.narrow(0, start, *rows)? });
        start += rows;
    }
    Ok(Tensor::cat(&parts, 0)?)
}
