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

pub mod nag;
pub mod probe;
pub mod smooth;

pub use nag::Nag;
pub use probe::{AttentionProbe, AttentionRecorder, NoProbe};

use crate::nn::{ops::softmax_last_dim, Ops};
use crate::{Error, Result};

/// Parameters of the rectified-energy attention update (Eq. 9, Algorithm 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
/// β = 1/√d. `ops` picks differentiable kernels (training) or not (sampling), and which ones.
/// `grid` = (rows, cols) of the first rows·cols query tokens (image tokens), needed by
/// [`Rectifier::SmoothedQueries`]; other query tokens (e.g. text) are left unblurred.
/// [`Rectifier::SkipBlock`] acts at block level and is standard attention here.
///
/// Errors: mismatched shapes, invalid rectifier hyperparameters.
/// Source: ERG Algorithm 1 and Listing 2 (`multistep_attention`); PAG and SEG as cited on
/// [`Rectifier`].
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, rectifier: &Rectifier, ops: Ops, grid: Option<(usize, usize)>) -> Result<Tensor> {
    let (_, _, _, d) = q.dims4()?;
    let beta = 1.0 / (d as f64).sqrt();
    let kt = k.transpose(2, 3)?.contiguous()?;
    let attend = |q: &Tensor, scale: f64| -> Result<Tensor> {
        let logits = (q.contiguous()?.matmul(&kt)? * scale)?; // (B, H, S, N)
        let p = softmax_last_dim(&logits, ops)?;
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
                    Ok(softmax_last_dim(&logits, ops)?.matmul(&v.contiguous()?)?)
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
#[serde(deny_unknown_fields)]
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

/// The attention plan of each contiguous group of rows of a batch, for one forward pass, and the
/// [`Ops`] the pass computes with. Lets a positive (standard) and negatives (rectified, perturbed)
/// run in one batched forward: blocks where all groups agree run one attention call; others split
/// the batch. What a forward should report about its attention goes to an [`AttentionProbe`]
/// passed beside the plan.
#[derive(Debug, Clone)]
pub struct ForwardPlan {
    /// `(rows, plan)` for consecutive groups of the batch; rows add up to the batch size.
    pub groups: Vec<(usize, AttentionPlan)>,
    /// Differentiable or not, and which kernels.
    pub ops: Ops,
    /// NAG between two groups (positive, negative context), if any: see [`Self::with_nag`].
    pub nag: Option<NagCoupling>,
}

/// NAG's coupling of two row groups of a [`ForwardPlan`]: the image-token attention outputs of
/// group `positive` become [`Nag::combine`] of theirs and group `negative`'s, and group
/// `negative`'s image stream is group `positive`'s after every block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NagCoupling {
    /// The settings.
    pub nag: Nag,
    /// Index of the positive group.
    pub positive: usize,
    /// Index of the negative-context group (same row count).
    pub negative: usize,
}

impl ForwardPlan {
    /// Groups, sampling with the fused kernels.
    pub fn new(groups: Vec<(usize, AttentionPlan)>) -> Self {
        Self { groups, ops: Ops::infer(), nag: None }
    }

    /// The plan with NAG between groups `positive` and `negative` (which must have as many rows).
    /// Errors: group indices out of range or of different sizes.
    pub fn with_nag(self, nag: Nag, positive: usize, negative: usize) -> Result<Self> {
        let rows = |g: usize| self.groups.get(g).map(|x| x.0);
        if positive == negative || rows(positive).is_none() || rows(positive) != rows(negative) {
            return Err(Error::shape(format!(
                "NAG couples two distinct groups of equal size, got groups {positive} and {negative} of {:?}",
                self.groups.iter().map(|g| g.0).collect::<Vec<_>>()
            )));
        }
        Ok(Self { nag: Some(NagCoupling { nag, positive, negative }), ..self })
    }

    fn group_start(&self, g: usize) -> usize {
        self.groups[..g].iter().map(|x| x.0).sum()
    }

    /// Image-token attention outputs `o` (B, N, D) of block `l` after NAG (unchanged without a
    /// coupling or outside its blocks).
    pub fn nag_outputs(&self, l: usize, o: &Tensor) -> Result<Tensor> {
        let Some(c) = self.nag.filter(|c| c.nag.acts_in(l)) else { return Ok(o.clone()) };
        let rows = self.groups[c.positive].0;
        let (p0, n0) = (self.group_start(c.positive), self.group_start(c.negative));
        let guided = c.nag.combine(&o.narrow(0, p0, rows)?, &o.narrow(0, n0, rows)?)?;
        replace_rows(o, p0, &guided)
    }

    /// The image stream `x` (B, N, D) after a block with the negative group's rows replaced by
    /// the positive group's (NAG shares the image tokens); unchanged without a coupling.
    pub fn nag_share_image(&self, x: Tensor) -> Result<Tensor> {
        let Some(c) = self.nag else { return Ok(x) };
        let rows = self.groups[c.positive].0;
        let positive = x.narrow(0, self.group_start(c.positive), rows)?;
        replace_rows(&x, self.group_start(c.negative), &positive)
    }

    /// One plan for all `batch` rows, sampling with the fused kernels.
    pub fn uniform(batch: usize, plan: AttentionPlan) -> Self {
        Self::new(vec![(batch, plan)])
    }
    /// Standard attention, differentiable, fused kernels (training).
    pub fn train(batch: usize) -> Self {
        Self { ops: Ops::train(), ..Self::uniform(batch, AttentionPlan::standard()) }
    }
    /// The same plan computed with other kernels.
    pub fn with_kernels(self, kernels: crate::nn::Kernels) -> Self {
        Self { ops: self.ops.with_kernels(kernels), ..self }
    }
    /// Total rows.
    pub fn batch(&self) -> usize {
        self.groups.iter().map(|g| g.0).sum()
    }
    /// Rows of the first group (the ones a probe observes).
    pub fn first_rows(&self) -> usize {
        self.groups.first().map_or(0, |g| g.0)
    }
    /// Checks every group's plan against the model depth.
    pub fn validate(&self, depth: usize) -> Result<()> {
        self.groups.iter().try_for_each(|(_, p)| p.validate(depth))
    }

    /// For block `l`, which rows skip the block (SLG): `None` when no group skips it, else one
    /// flag per group.
    pub fn skipped(&self, l: usize) -> Option<Vec<bool>> {
        let flags: Vec<bool> = self.groups.iter().map(|(_, p)| *p.rectifier(l) == Rectifier::SkipBlock).collect();
        flags.iter().any(|&f| f).then_some(flags)
    }

    /// Whether every group skips block `l` (SLG on all rows: the block need not run).
    pub fn all_skip(&self, l: usize) -> bool {
        self.skipped(l).is_some_and(|f| f.iter().all(|&s| s))
    }

    /// The output of block `l` (B, ...): rows of `new` for groups that run the block, rows of
    /// `old` (its input) for groups that skip it (SLG).
    pub fn keep_skipped(&self, l: usize, old: &Tensor, new: Tensor) -> Result<Tensor> {
        let Some(skipped) = self.skipped(l) else { return Ok(new) };
        let mut parts = Vec::with_capacity(skipped.len());
        let mut start = 0;
        for ((rows, _), &skip) in self.groups.iter().zip(&skipped) {
            parts.push(if skip { old.narrow(0, start, *rows)? } else { new.narrow(0, start, *rows)? });
            start += rows;
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Attention of block `l` on a packed projection `qkv` (B, N, 3·H·d_h) → (B, N, H·d_h), heads
    /// side by side (the layouts of [`erg_kernels::packed_attention`]; B = [`Self::batch`], `grid`
    /// as in [`attention`]).
    ///
    /// Consecutive row groups with plain or temperature attention (the energy update with
    /// α = γ = K = 1) run as one call of the packed kernel with a logit scale τ/√d_h per row;
    /// other groups (identity, smoothed queries, multi-step energy updates) run [`attention`] on
    /// split heads. When `probe` wants block `l`, or where the kernel does not apply (not CPU f32,
    /// [`crate::nn::Kernels::Candle`]), everything takes [`Self::attend`]. Same values either
    /// way, up to f32 rounding (tested in `tests/attention.rs`).
    ///
    /// Errors: `qkv` not of that shape; invalid rectifier hyperparameters.
    /// Sources: ERG Algorithm 1 (temperature), PAG and SEG as cited on [`Rectifier`].
    pub fn attend_packed(&self, l: usize, qkv: &Tensor, heads: usize, grid: Option<(usize, usize)>, probe: &mut dyn AttentionProbe) -> Result<Tensor> {
        let (_, _, w) = qkv.dims3()?;
        if heads == 0 || !w.is_multiple_of(3 * heads) {
            return Err(Error::shape(format!("qkv {:?} is not (B, N, 3·H·d_h) with H = {heads}", qkv.dims())));
        }
        if probe.wants(l) || !self.ops.kernels.applies(&[qkv]) {
            let (q, k, v) = split_heads(qkv, heads)?;
            return merge_heads(&self.attend(l, &q, &k, &v, grid, probe)?);
        }
        let beta = 1.0 / ((w / (3 * heads)) as f64).sqrt();
        let mut outs = Vec::new();
        let (mut start, mut run_start, mut run) = (0, 0, Vec::<f64>::new());
        let flush = |outs: &mut Vec<Tensor>, run: &mut Vec<f64>, run_start: usize| -> Result<()> {
            if !run.is_empty() {
                outs.push(erg_kernels::packed_attention(&qkv.narrow(0, run_start, run.len())?, heads, run, self.ops.kernels)?);
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
                    let (q, k, v) = split_heads(&qkv.narrow(0, start, *rows)?, heads)?;
                    outs.push(merge_heads(&attention(&q, &k, &v, plan.rectifier(l), self.ops, grid)?)?);
                }
            }
            start += rows;
        }
        flush(&mut outs, &mut run, run_start)?;
        Ok(if outs.len() == 1 { outs.pop().expect("one part") } else { Tensor::cat(&outs, 0)? })
    }

    /// Attention of block `l` on q, k, v (B, H, N, d_h) → (B, H, N, d_h), each group of rows with
    /// its rectifier (one call when all groups agree). When `probe` wants block `l`, it first
    /// receives the standard attention probabilities of the first group's rows.
    ///
    /// Errors: mismatched shapes; invalid rectifier hyperparameters; the probe's errors.
    pub fn attend(&self, l: usize, q: &Tensor, k: &Tensor, v: &Tensor, grid: Option<(usize, usize)>, probe: &mut dyn AttentionProbe) -> Result<Tensor> {
        if probe.wants(l) {
            let rows = self.first_rows();
            let (qs, ks) = (q.narrow(0, 0, rows)?.contiguous()?, k.narrow(0, 0, rows)?.contiguous()?);
            let logits = (qs.matmul(&ks.transpose(2, 3)?.contiguous()?)? / (q.dim(3)? as f64).sqrt())?; // (rows, H, S, N)
            probe.observe(l, &softmax_last_dim(&logits, self.ops)?)?;
        }
        let first = *self.groups[0].1.rectifier(l);
        if self.groups.iter().all(|(_, p)| *p.rectifier(l) == first) {
            return attention(q, k, v, &first, self.ops, grid);
        }
        let mut outs = Vec::with_capacity(self.groups.len());
        let mut start = 0;
        for (rows, plan) in &self.groups {
            let (qs, ks, vs) = (q.narrow(0, start, *rows)?, k.narrow(0, start, *rows)?, v.narrow(0, start, *rows)?);
            outs.push(attention(&qs, &ks, &vs, plan.rectifier(l), self.ops, grid)?);
            start += rows;
        }
        Ok(Tensor::cat(&outs, 0)?)
    }
}

/// `t` (B, ...) with rows `at..at + rows.dim(0)` replaced by `rows`.
fn replace_rows(t: &Tensor, at: usize, rows: &Tensor) -> Result<Tensor> {
    let (b, n) = (t.dim(0)?, rows.dim(0)?);
    let mut parts = Vec::with_capacity(3);
    if at > 0 {
        parts.push(t.narrow(0, 0, at)?);
    }
    parts.push(rows.clone());
    if at + n < b {
        parts.push(t.narrow(0, at + n, b - at - n)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// A packed projection `qkv` (B, N, 3·H·d_h), per token [q | k | v] of H heads each (DiT's and
/// SD3's `attn.qkv`), → q, k, v (B, H, N, d_h), contiguous.
///
/// Errors: a last dimension that is not a multiple of 3·`heads`.
pub fn split_heads(qkv: &Tensor, heads: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, n, w) = qkv.dims3()?;
    if heads == 0 || !w.is_multiple_of(3 * heads) {
        return Err(Error::shape(format!("qkv {:?} is not (B, N, 3·H·d_h) with H = {heads}", qkv.dims())));
    }
    let p = qkv.reshape((b, n, 3, heads, w / (3 * heads)))?.permute((2, 0, 3, 1, 4))?; // (3, B, H, N, d_h)
    Ok((p.get(0)?.contiguous()?, p.get(1)?.contiguous()?, p.get(2)?.contiguous()?))
}

/// Heads (B, H, N, d_h) → (B, N, H·d_h), side by side (the input of `attn.proj`).
pub fn merge_heads(o: &Tensor) -> Result<Tensor> {
    let (b, _, n, _) = o.dims4()?;
    Ok(o.transpose(1, 2)?.reshape((b, n, ()))?)
}
