//! Guidance as a composition (ERG Eq. 10 and the methods it is compared with).
//!
//! A method is data ([`Guidance`]): a positive prediction D_pos, a list of [`Term`]s each with a
//! negative [`Branch`] and a scale s_i, and a [`Combiner`]:
//!
//! - linear: Δ = D_pos + Σ_i s_i·(D_pos − D_neg,i). With one term and s = w − 1 this is Eq. (10),
//!   Δ = w·D(x, c) + (1 − w)·D_neg(x, c_neg);
//! - APG (Sadat et al. 2025): the same on clean estimates x̂₁, each difference passed through
//!   momentum, norm clipping and projection (see [`apg`]).
//!
//! A negative branch chooses its condition (null or the given one), its attention plan
//! (standard; temperature / energy update (I-ERG); identity (PAG); smoothed queries (SEG);
//! skipped blocks (SLG)) applied only when t > κ, its model (the main one, or a weak one for
//! AutoGuidance), and optionally SAG's degraded input. CADS perturbs the positive condition.
//! [`presets`] builds every method of the paper from these parts.
//!
//! [`Guider`] evaluates a method step by step: the main-model predictions of one step run in one
//! batched forward (attention splits only in blocks where the plans differ), and it reports the
//! number of function evaluations (NFE) per sample.
pub mod apg;
pub mod cads;
mod eval;
mod modify;
pub mod presets;
pub mod sag;
pub mod tcfg;
pub mod zero_star;

use serde::{Deserialize, Serialize};

pub use apg::Apg;
pub use cads::Cads;
pub use eval::{guided_velocity, Guider, Models};
pub use presets::{from_selection, preset, preset_for, preset_with_text, IErg, TextErg, PRESET_NAMES};
pub use sag::Sag;
pub use zero_star::CfgZeroStar;

use crate::attention::{AttentionPlan, Rectifier};
pub use crate::models::Condition;
pub use crate::text::TextRectification;
use crate::{Error, Result};

/// Which network a branch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModelChoice {
    /// The model being sampled.
    #[default]
    Main,
    /// A weaker model (AutoGuidance, Karras et al. 2024: an early checkpoint of the same run).
    Weak,
}

/// A negative ("weak") branch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// Its condition: `Null` for CFG-style guidance, `Given` for the same-condition variant
    /// (Eq. 10) and for PAG/SEG/SAG/SLG/AutoGuidance.
    pub condition: Condition,
    /// Its attention plan when active (t > κ).
    pub attention: AttentionPlan,
    /// Kickoff threshold κ ∈ [0, 1]: the attention plan applies only when t > κ; standard
    /// attention before. κ = 0 applies it throughout (t = 0 is the first step).
    pub kappa: f64,
    /// The network.
    #[serde(default)]
    pub model: ModelChoice,
    /// Self-Attention Guidance's degraded input instead of x_t.
    #[serde(default)]
    pub sag: Option<Sag>,
}

impl Branch {
    /// A branch with standard attention on the main model.
    pub fn plain(condition: Condition) -> Self {
        Self { condition, attention: AttentionPlan::standard(), kappa: 0.0, model: ModelChoice::Main, sag: None }
    }
    /// A branch with `rectifier` in blocks [l_min, l_max), active throughout.
    pub fn perturbed(condition: Condition, rectifier: Rectifier, l_min: usize, l_max: usize) -> Self {
        Self { attention: AttentionPlan::blocks(rectifier, l_min, l_max), ..Self::plain(condition) }
    }
    /// The attention plan at time t (the perturbation only when t > κ).
    pub fn attention_at(&self, t: f64) -> AttentionPlan {
        if t > self.kappa || (self.kappa == 0.0 && t == 0.0) {
            self.attention
        } else {
            AttentionPlan::standard()
        }
    }
}

/// The range of t ∈ [0, 1] where a term is applied: `start ≤ t ≤ stop`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// First t.
    pub start: f64,
    /// Last t.
    pub stop: f64,
}

impl Default for Window {
    fn default() -> Self {
        Self { start: 0.0, stop: 1.0 }
    }
}

impl Window {
    /// Whether t is inside.
    pub fn contains(&self, t: f64) -> bool {
        t >= self.start && t <= self.stop
    }

    /// The guidance interval of Kynkäänniemi et al. 2024 ("Applying guidance in a limited
    /// interval improves sample and distribution quality in diffusion models") given as EDM noise
    /// levels σ_lo < σ ≤ σ_hi, in this crate's time: x_t / t = x₁ + σ·ε with σ = (1 − t)/t, so
    /// t = 1/(1 + σ), and the window is [1/(1 + σ_hi), 1/(1 + σ_lo)].
    /// Errors: unless 0 ≤ σ_lo < σ_hi (σ_hi may be ∞: from t = 0).
    pub fn noise_interval(sigma_lo: f64, sigma_hi: f64) -> Result<Self> {
        if !(sigma_lo >= 0.0 && sigma_lo < sigma_hi) {
            return Err(Error::hp(format!("a guidance interval needs 0 <= sigma_lo < sigma_hi, got ({sigma_lo}, {sigma_hi}]")));
        }
        Ok(Self { start: 1.0 / (1.0 + sigma_hi), stop: 1.0 / (1.0 + sigma_lo) })
    }

    /// The interval Kynkäänniemi et al. 2024 found best for EDM2 (σ ∈ (0.28, 5.42]), in t:
    /// [0.156, 0.781].
    pub fn paper_interval() -> Self {
        Self::noise_interval(0.28, 5.42).expect("valid constants")
    }
}

/// One guidance term s·(D_pos − D_neg).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Term {
    /// The negative branch.
    pub negative: Branch,
    /// s, the coefficient of (D_pos − D_neg); Eq. (10)'s guidance scale is w = 1 + s.
    pub scale: f64,
    /// Where in t the term applies.
    #[serde(default)]
    pub window: Window,
}

/// How positive and negative predictions are combined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Combiner {
    /// Δ = D_pos + Σ s_i (D_pos − D_neg,i).
    #[default]
    Linear,
    /// Adaptive projected guidance on clean estimates (Sadat et al. 2025).
    Apg(Apg),
    /// CFG-Zero* (Fan et al. 2025): each negative scaled by the optimised s*, zero velocity for
    /// the first steps ([`zero_star`]).
    CfgZeroStar(CfgZeroStar),
    /// Tangential damping (TCFG, Kwon et al. 2025): each negative reduced to its component along
    /// the direction it shares with the positive ([`tcfg`]).
    Tcfg,
}

/// A guidance method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guidance {
    /// Short name for reports (`none`, `cfg`, `ierg`, ...).
    pub name: String,
    /// The positive branch's condition (`Null` for unconditional generation).
    pub positive: Condition,
    /// CADS noise on the positive condition's embedding.
    #[serde(default)]
    pub cads: Option<Cads>,
    /// The guidance terms (empty = no guidance).
    pub terms: Vec<Term>,
    /// The combiner.
    #[serde(default)]
    pub combiner: Combiner,
    /// Normalized Attention Guidance inside the positive prediction's attention (text-conditioned
    /// models only; no extra term, the negative context rides in the same forward).
    #[serde(default)]
    pub nag: Option<NagBranch>,
}

/// NAG's negative context and settings ([`crate::attention::nag`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NagBranch {
    /// The negative context (`Null`: the empty prompt).
    pub condition: Condition,
    /// φ, τ, α and the blocks.
    pub nag: crate::attention::Nag,
}

impl Guidance {
    /// A compact description of the hyperparameters for tables, e.g.
    /// `s=2 (w=3): τ=0.5 blocks [2,4) κ=0.4`; terms separated by `; `, CADS and APG appended.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let n = &t.negative;
                let mut d = format!("s={}", short(t.scale));
                if self.terms.len() == 1 && self.combiner == Combiner::Linear {
                    d = format!("s={} (w={})", short(t.scale), short(1.0 + t.scale));
                }
                if n.model == ModelChoice::Weak {
                    d.push_str(" weak model");
                }
                match n.condition {
                    Condition::Null if self.positive == Condition::Given => d.push_str(" null cond."),
                    Condition::Rectified(r) => d.push_str(&format!(" C-ERG τ_c={} layers [{},{})", r.tau, r.l_min, r.l_max)),
                    _ => {}
                }
                let a = &n.attention;
                let r = match a.rectifier {
                    Rectifier::Standard => String::new(),
                    Rectifier::Energy(e) if e.alpha == 1.0 && e.gamma == 1.0 && e.steps == 1 => format!("τ={}", e.tau),
                    Rectifier::Energy(e) => format!("τ={} α={} γ={} K={}", e.tau, e.alpha, e.gamma, e.steps),
                    Rectifier::Identity => "identity attn.".into(),
                    Rectifier::SmoothedQueries { sigma } => format!("blur σ={}", if sigma.is_infinite() { "∞".to_string() } else { sigma.to_string() }),
                    Rectifier::SkipBlock => "skip".into(),
                };
                if !r.is_empty() {
                    d.push_str(&format!(" {r} blocks [{},{})", a.l_min, a.l_max));
                    if n.kappa > 0.0 {
                        d.push_str(&format!(" κ={}", n.kappa));
                    }
                }
                if n.sag.is_some() {
                    d.push_str(" SAG input");
                }
                d
            })
            .collect();
        if let Some(c) = &self.cads {
            parts.push(format!("CADS τ₁={} τ₂={} s={}{}", c.tau1, c.tau2, c.noise_scale, if c.on_negatives { " on every branch" } else { "" }));
        }
        match self.combiner {
            Combiner::Apg(_) => parts.push("APG".into()),
            Combiner::CfgZeroStar(z) => {
                parts.push(format!("CFG-Zero* (s* {}, zero-init {} steps)", if z.optimize_scale { "on" } else { "off" }, z.zero_init_steps))
            }
            Combiner::Tcfg => parts.push("TCFG".into()),
            Combiner::Linear => {}
        }
        if let Some(n) = &self.nag {
            parts.push(format!("NAG φ={} τ={} α={} blocks [{},{})", short(n.nag.scale), short(n.nag.tau), short(n.nag.alpha), n.nag.l_min, n.nag.l_max));
        }
        if let Some(w) = self.terms.first().map(|t| t.window).filter(|w| *w != Window::default()) {
            parts.push(format!("interval t ∈ [{:.3}, {:.3}]", w.start, w.stop));
        }
        if parts.is_empty() {
            "–".into()
        } else {
            parts.join("; ")
        }
    }

    /// No guidance: one prediction with the given condition (NFE 1).
    pub fn none() -> Self {
        Self { name: "none".into(), positive: Condition::Given, cads: None, terms: vec![], combiner: Combiner::Linear, nag: None }
    }

    /// Unconditional sampling without guidance.
    pub fn unconditional() -> Self {
        Self { name: "uncond".into(), positive: Condition::Null, ..Self::none() }
    }

    /// Classifier-free guidance (Ho & Salimans 2021) with guidance scale w: one term with the null
    /// condition and standard attention, s = w − 1.
    pub fn cfg(guidance_scale: f64) -> Self {
        Self {
            name: "cfg".into(),
            terms: vec![Term { negative: Branch::plain(Condition::Null), scale: guidance_scale - 1.0, window: Window::default() }],
            ..Self::none()
        }
    }

    /// I-ERG as the paper applies it to class-conditional models: CFG whose null-class branch has
    /// rectified attention in blocks [l_min, l_max) when t > κ (Sec. 3.1, Appendix C).
    pub fn i_erg(guidance_scale: f64, params: IErg) -> Self {
        Self {
            name: "ierg".into(),
            terms: vec![Term { negative: params.branch(Condition::Null), scale: guidance_scale - 1.0, window: Window::default() }],
            ..Self::none()
        }
    }

    /// I-ERG with the negative conditioned on the same class as the positive (Eq. 10 with
    /// φ_c^τ = φ_c): the branches differ only by the rectified attention.
    pub fn i_erg_same_condition(guidance_scale: f64, params: IErg) -> Self {
        let mut g = Self::i_erg(guidance_scale, params);
        g.name = "ierg-same".into();
        g.terms[0].negative.condition = Condition::Given;
        g
    }

    /// Unconditional I-ERG: both branches use the null condition, the negative is rectified when
    /// t > κ (so there is no guidance before κ).
    pub fn i_erg_unconditional(guidance_scale: f64, params: IErg) -> Self {
        let mut g = Self::i_erg(guidance_scale, params);
        g.name = "ierg-uncond".into();
        g.positive = Condition::Null;
        g
    }

    /// Eq. (10)'s guidance scale of the first term, w = 1 + s (1 when there is none).
    pub fn guidance_scale(&self) -> f64 {
        self.terms.first().map(|t| 1.0 + t.scale).unwrap_or(1.0)
    }

    /// Whether any branch uses C-ERG's rectified text condition (needs a text encoder).
    pub fn needs_text_encoder(&self) -> bool {
        self.terms.iter().any(|t| matches!(t.negative.condition, Condition::Rectified(_)))
    }

    /// Whether any branch needs the weak model.
    pub fn needs_weak_model(&self) -> bool {
        self.terms.iter().any(|t| t.negative.model == ModelChoice::Weak)
    }

    /// Checks every hyperparameter against a model of `depth` blocks: finite scales, κ ∈ [0, 1],
    /// windows with start ≤ stop inside [0, 1], non-empty block ranges for perturbations, valid
    /// rectifier, SAG, CADS and APG settings.
    pub fn validate(&self, depth: usize) -> Result<()> {
        for (i, term) in self.terms.iter().enumerate() {
            let n = &term.negative;
            if !term.scale.is_finite() {
                return Err(Error::hp(format!("term {i}: scale must be finite, got {}", term.scale)));
            }
            if !(0.0..=1.0).contains(&n.kappa) {
                return Err(Error::hp(format!("term {i}: kappa must be in [0, 1], got {}", n.kappa)));
            }
            let w = term.window;
            if !(0.0..=1.0).contains(&w.start) || !(0.0..=1.0).contains(&w.stop) || w.start > w.stop {
                return Err(Error::hp(format!("term {i}: window must satisfy 0 <= start <= stop <= 1, got [{}, {}]", w.start, w.stop)));
            }
            n.attention.validate(depth)?;
            if n.attention.rectifier != Rectifier::Standard && n.attention.l_min >= n.attention.l_max {
                return Err(Error::hp(format!("term {i}: the perturbed block range [{}, {}) is empty", n.attention.l_min, n.attention.l_max)));
            }
            if let Some(s) = &n.sag {
                s.validate(depth)?;
            }
        }
        if let Some(c) = &self.cads {
            c.validate()?;
        }
        if let Some(n) = &self.nag {
            n.nag.validate(depth)?;
        }
        if let Combiner::Apg(a) = &self.combiner {
            a.validate()?;
        }
        Ok(())
    }
}

/// A number for tables: at most 4 decimals, trailing zeros dropped (2, 0.5, 1.2205).
fn short(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}
