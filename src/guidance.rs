//! Guidance as a composition (ERG Eq. 10):
//!
//! Δ(x, c, t) = w · D(x, c_pos, t) + (1 − w) · D_neg(x, c_neg, t)
//!
//! where w is the `guidance_scale`. A method is a choice of **negative branch** — its condition
//! (the null class, or the same condition as the positive) and its attention plan (standard, or a
//! rectifier in blocks [l_min, l_max) applied only when t > κ) — plus a **combiner**. With
//! standard attention and the null condition this is classifier-free guidance (Ho & Salimans
//! 2021); with a rectified negative it is I-ERG (Sec. 3.1, Appendix C).
//!
//! Positive and negative are computed in one batched forward (their attention plans may differ:
//! [`ForwardPlan`] splits only the rectified blocks).
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::attention::{scale_block_range, AttentionPlan, Energy, ForwardPlan, Rectifier};
use crate::models::Denoiser;
use crate::{Error, Result};

/// Which condition a branch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The condition asked for (class label or prompt).
    Given,
    /// The null condition (null class / empty prompt), as in CFG.
    Null,
}

/// The negative ("weak") branch of a guidance method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NegativeBranch {
    /// Its condition: `Null` for CFG-style guidance, `Given` for the same-condition variant (Eq. 10).
    pub condition: Condition,
    /// Its attention plan when active.
    pub attention: AttentionPlan,
    /// Kickoff threshold κ ∈ [0, 1]: the attention plan applies only when t > κ (standard
    /// attention before). κ = 0 applies it throughout.
    pub kappa: f64,
}

impl NegativeBranch {
    /// The attention plan at time t (rectified only when t > κ).
    pub fn attention_at(&self, t: f64) -> AttentionPlan {
        if t > self.kappa { self.attention } else { AttentionPlan::standard() }
    }
}

/// How positive and negative predictions are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Combiner {
    /// Δ = w·D_pos + (1 − w)·D_neg (Eq. 10).
    #[default]
    Linear,
}

/// A guidance method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guidance {
    /// Short name for reports (`none`, `cfg`, `i-erg`, ...).
    pub name: String,
    /// Guidance scale w (1 = no guidance).
    pub guidance_scale: f64,
    /// The positive branch's condition (`Null` for unconditional generation).
    pub positive: Condition,
    /// The negative branch; `None` = no guidance.
    pub negative: Option<NegativeBranch>,
    /// The combiner.
    pub combiner: Combiner,
}

/// I-ERG hyperparameters (Table 7 names): rectifier (τ, α, γ, K) in blocks [l_min, l_max) of the
/// negative branch when t > κ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IErg {
    /// Rectified-energy parameters.
    pub energy: Energy,
    /// Kickoff threshold κ.
    pub kappa: f64,
    /// First rectified block.
    pub l_min: usize,
    /// One past the last rectified block.
    pub l_max: usize,
}

impl IErg {
    /// Table 7's class-conditional defaults (DiT-XL/2): κ = 0.3, τ = 0.01, α = γ = K = 1,
    /// blocks 12–15 of 28, scaled to a model of `depth` blocks.
    pub fn class_conditional_defaults(depth: usize) -> Self {
        let (l_min, l_max) = scale_block_range(12, 15, 28, depth);
        Self { energy: Energy::temperature(0.01), kappa: 0.3, l_min, l_max }
    }
    /// Table 7's unconditional defaults (MMDiT-B/2 with empty prompt): κ = 0.2, τ = 0.01,
    /// α = γ = K = 1, blocks 10–17 of 24 (MMDiT-B depth), scaled to `depth`.
    pub fn unconditional_defaults(depth: usize) -> Self {
        let (l_min, l_max) = scale_block_range(10, 17, 24, depth);
        Self { energy: Energy::temperature(0.01), kappa: 0.2, l_min, l_max }
    }
    fn branch(&self, condition: Condition) -> NegativeBranch {
        NegativeBranch {
            condition,
            attention: AttentionPlan::blocks(Rectifier::Energy(self.energy), self.l_min, self.l_max),
            kappa: self.kappa,
        }
    }
}

impl Guidance {
    /// No guidance: one prediction with the given condition (NFE 1).
    pub fn none() -> Self {
        Self { name: "none".into(), guidance_scale: 1.0, positive: Condition::Given, negative: None, combiner: Combiner::Linear }
    }

    /// Classifier-free guidance (Ho & Salimans 2021): negative = null condition, standard attention.
    pub fn cfg(guidance_scale: f64) -> Self {
        Self {
            name: "cfg".into(),
            guidance_scale,
            positive: Condition::Given,
            negative: Some(NegativeBranch { condition: Condition::Null, attention: AttentionPlan::standard(), kappa: 0.0 }),
            combiner: Combiner::Linear,
        }
    }

    /// I-ERG as the paper applies it to class-conditional models: CFG whose unconditional branch
    /// has rectified attention when t > κ (Sec. 3.1, Appendix C).
    pub fn i_erg(guidance_scale: f64, params: IErg) -> Self {
        Self {
            name: "i-erg".into(),
            guidance_scale,
            positive: Condition::Given,
            negative: Some(params.branch(Condition::Null)),
            combiner: Combiner::Linear,
        }
    }

    /// I-ERG with the negative conditioned on the same class as the positive (Eq. 10 with
    /// φ_c^τ = φ_c): the only difference between the branches is the rectified attention.
    pub fn i_erg_same_condition(guidance_scale: f64, params: IErg) -> Self {
        Self { name: "i-erg-same".into(), negative: Some(params.branch(Condition::Given)), ..Self::i_erg(guidance_scale, params) }
    }

    /// Unconditional I-ERG: both branches use the null condition, the negative is rectified when
    /// t > κ (so there is no guidance before κ).
    pub fn i_erg_unconditional(guidance_scale: f64, params: IErg) -> Self {
        Self {
            name: "i-erg-uncond".into(),
            guidance_scale,
            positive: Condition::Null,
            negative: Some(params.branch(Condition::Null)),
            combiner: Combiner::Linear,
        }
    }

    /// Unconditional sampling, no guidance.
    pub fn unconditional() -> Self {
        Self { name: "uncond".into(), positive: Condition::Null, ..Self::none() }
    }

    /// Checks w ≥ 0 (finite), κ ∈ [0, 1] and the negative attention plan against `depth`.
    pub fn validate(&self, depth: usize) -> Result<()> {
        if !self.guidance_scale.is_finite() || self.guidance_scale < 0.0 {
            return Err(Error::hp(format!("guidance_scale must be finite and >= 0, got {}", self.guidance_scale)));
        }
        if let Some(n) = &self.negative {
            if !(0.0..=1.0).contains(&n.kappa) {
                return Err(Error::hp(format!("kappa must be in [0, 1], got {}", n.kappa)));
            }
            n.attention.validate(depth)?;
        }
        Ok(())
    }

    /// Function evaluations per sample at time t (1 when the negative is absent or identical
    /// to the positive, 2 otherwise).
    pub fn nfe_at(&self, t: f64) -> usize {
        match self.active_negative(t) {
            Some(_) => 2,
            None => 1,
        }
    }

    /// The negative branch's (condition, attention) at time t, or `None` when no second
    /// prediction is needed (no negative, w = 1, or a negative identical to the positive).
    fn active_negative(&self, t: f64) -> Option<(Condition, AttentionPlan)> {
        let n = self.negative.as_ref()?;
        if self.guidance_scale == 1.0 {
            return None;
        }
        let plan = n.attention_at(t);
        if n.condition == self.positive && plan.is_standard() {
            return None;
        }
        Some((n.condition, plan))
    }
}

fn resolve<M: Denoiser>(model: &M, which: Condition, cond: &Tensor) -> Result<Tensor> {
    match which {
        Condition::Given => Ok(cond.clone()),
        Condition::Null => model.null_condition(cond),
    }
}

/// Eq. (10): w·pos + (1 − w)·neg.
pub fn combine(combiner: Combiner, guidance_scale: f64, pos: &Tensor, neg: &Tensor) -> Result<Tensor> {
    match combiner {
        Combiner::Linear => Ok(((pos * guidance_scale)? + (neg * (1.0 - guidance_scale))?)?),
    }
}

/// The guided velocity at `x` (B, C, H, W), scalar time `t`, conditioning `cond` (B, ...).
/// Returns the velocity (B, C, H, W) and the number of function evaluations per sample.
pub fn guided_velocity<M: Denoiser>(model: &M, guidance: &Guidance, x: &Tensor, t: f64, cond: &Tensor) -> Result<(Tensor, usize)> {
    let b = x.dim(0)?;
    let pos_cond = resolve(model, guidance.positive, cond)?;
    match guidance.active_negative(t) {
        None => {
            let tt = Tensor::full(t as f32, b, x.device())?.to_dtype(DType::F32)?;
            let v = model.velocity(x, &tt, &pos_cond, &ForwardPlan::uniform(b, AttentionPlan::standard()))?;
            Ok((v, 1))
        }
        Some((neg_which, neg_plan)) => {
            let neg_cond = resolve(model, neg_which, cond)?;
            let xx = Tensor::cat(&[x, x], 0)?; // (2B, C, H, W)
            let tt = Tensor::full(t as f32, 2 * b, x.device())?;
            let cc = Tensor::cat(&[&pos_cond, &neg_cond], 0)?;
            let plan = ForwardPlan { groups: vec![(b, AttentionPlan::standard()), (b, neg_plan)], mode: Default::default() };
            let v = model.velocity(&xx, &tt, &cc, &plan)?;
            let (pos, neg) = (v.narrow(0, 0, b)?, v.narrow(0, b, b)?);
            Ok((combine(guidance.combiner, guidance.guidance_scale, &pos, &neg)?, 2))
        }
    }
}
