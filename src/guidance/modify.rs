//! Typed modifiers of a [`Guidance`]: change one hyperparameter of a preset without reaching into
//! its fields, and queries of what a method contains, instead of matching on its name.
//!
//! Each modifier changes every part of the method it applies to and is an error when there is
//! none (setting τ on CFG says so instead of silently doing nothing). Ranges are checked by
//! [`Guidance::validate`] when the method runs.
use super::{Cads, Combiner, Condition, Guidance, Window};
use crate::attention::{Energy, Rectifier};
use crate::{Error, Result};

impl Guidance {
    /// Applies every guidance term only inside `window` (a guidance interval, see
    /// [`Window::noise_interval`]); outside it the step is the positive prediction alone (1 NFE).
    /// Errors: a method without guidance terms.
    pub fn with_interval(mut self, window: Window) -> Result<Self> {
        if self.terms.is_empty() {
            return Err(Error::hp(format!("{} has no guidance term to restrict to an interval", self.name)));
        }
        for t in &mut self.terms {
            t.window = window;
        }
        Ok(self)
    }

    /// The combiner (linear, APG, CFG-Zero*, TCFG) of the method's terms.
    /// Errors: a method without guidance terms.
    pub fn with_combiner(self, combiner: Combiner) -> Result<Self> {
        if self.terms.is_empty() {
            return Err(Error::hp(format!("{} has no guidance term to combine", self.name)));
        }
        Ok(Self { combiner, ..self })
    }

    /// Every term's scale multiplied by `factor` (the strength knob of methods whose negative is
    /// not CFG's, e.g. PAG's s = 3; see [`crate::analysis::strength`]).
    pub fn scaled(mut self, factor: f64) -> Self {
        for t in &mut self.terms {
            t.scale *= factor;
        }
        self
    }

    /// The same method under another name (reports, run keys, file names).
    pub fn named(self, name: impl Into<String>) -> Self {
        Self { name: name.into(), ..self }
    }

    /// Whether a negative branch rectifies its attention with the energy update (I-ERG's
    /// temperature τ, Algorithm 1).
    pub fn has_rectified_attention(&self) -> bool {
        self.terms.iter().any(|t| matches!(t.negative.attention.rectifier, Rectifier::Energy(_)))
    }

    /// Whether a negative branch perturbs its attention (I-ERG, PAG, SEG, SLG).
    pub fn has_attention_perturbation(&self) -> bool {
        self.terms.iter().any(|t| !t.negative.attention.is_standard())
    }

    /// Whether a negative branch uses C-ERG's rectified prompt.
    pub fn has_rectified_condition(&self) -> bool {
        self.terms.iter().any(|t| matches!(t.negative.condition, Condition::Rectified(_)))
    }

    fn each_energy(mut self, what: &str, f: impl Fn(&mut Energy)) -> Result<Self> {
        if !self.has_rectified_attention() {
            return Err(Error::hp(format!("{} has no rectified attention (I-ERG) to set {what} on", self.name)));
        }
        for t in &mut self.terms {
            if let Rectifier::Energy(e) = &mut t.negative.attention.rectifier {
                f(e);
            }
        }
        Ok(self)
    }

    /// I-ERG's temperature τ in every rectified negative (Eq. 9). Errors: no rectified attention.
    pub fn with_tau(self, tau: f64) -> Result<Self> {
        self.each_energy("tau", |e| e.tau = tau)
    }

    /// I-ERG's step size γ of the energy update (Algorithm 1). Errors: no rectified attention.
    pub fn with_gamma(self, gamma: f64) -> Result<Self> {
        self.each_energy("gamma", |e| e.gamma = gamma)
    }

    /// All of I-ERG's energy parameters (τ, α, γ, K) in every rectified negative.
    /// Errors: no rectified attention.
    pub fn with_energy(self, energy: Energy) -> Result<Self> {
        self.each_energy("the energy parameters", |e| *e = energy)
    }

    fn each_perturbation(mut self, what: &str, f: impl Fn(&mut super::Branch)) -> Result<Self> {
        if !self.has_attention_perturbation() {
            return Err(Error::hp(format!("{} perturbs no attention (I-ERG, PAG, SEG, SLG) to set {what} on", self.name)));
        }
        for t in &mut self.terms {
            if !t.negative.attention.is_standard() {
                f(&mut t.negative);
            }
        }
        Ok(self)
    }

    /// The kickoff κ ∈ [0, 1] of every perturbed negative: its attention plan applies only when
    /// t > κ (ERG Sec. 3.1). Errors: no perturbed attention.
    pub fn with_kappa(self, kappa: f64) -> Result<Self> {
        self.each_perturbation("kappa", |b| b.kappa = kappa)
    }

    /// The block range [l_min, l_max) of every perturbed negative. Errors: no perturbed attention.
    pub fn with_blocks(self, l_min: usize, l_max: usize) -> Result<Self> {
        self.each_perturbation("the block range", |b| (b.attention.l_min, b.attention.l_max) = (l_min, l_max))
    }

    /// The rectifier of every perturbed negative (e.g. ERG's temperature swapped for SEG's blur
    /// in the same blocks). Errors: no perturbed attention.
    pub fn with_rectifier(self, rectifier: Rectifier) -> Result<Self> {
        self.each_perturbation("the rectifier", |b| b.attention.rectifier = rectifier)
    }

    fn each_text_rectification(mut self, what: &str, f: impl Fn(&mut crate::text::TextRectification)) -> Result<Self> {
        if !self.has_rectified_condition() {
            return Err(Error::hp(format!("{} has no C-ERG condition to set {what} on", self.name)));
        }
        for t in &mut self.terms {
            if let Condition::Rectified(r) = &mut t.negative.condition {
                f(r);
            }
        }
        Ok(self)
    }

    /// C-ERG's text-encoder temperature τ_c (ERG Sec. 3.2). Errors: no C-ERG condition.
    pub fn with_tau_c(self, tau_c: f64) -> Result<Self> {
        self.each_text_rectification("tau_c", |r| r.tau = tau_c)
    }

    /// The command-line overrides of a run, where they apply: τ_c to a method with C-ERG's
    /// rectified prompt, τ and κ to one with rectified attention; `None` keeps the preset's value.
    /// Errors: an invalid value.
    pub fn with_erg_overrides(self, tau: Option<f64>, tau_c: Option<f64>, kappa: Option<f64>) -> Result<Self> {
        let mut g = self;
        if let Some(tau_c) = tau_c.filter(|_| g.has_rectified_condition()) {
            g = g.with_tau_c(tau_c)?;
        }
        if g.has_rectified_attention() {
            if let Some(tau) = tau {
                g = g.with_tau(tau)?;
            }
            if let Some(kappa) = kappa {
                g = g.with_kappa(kappa)?;
            }
        }
        Ok(g)
    }

    /// C-ERG's text-encoder layer range [l_min^c, l_max^c), in every encoder (a model's
    /// per-encoder ranges are replaced). Errors: no C-ERG condition.
    pub fn with_text_layers(self, l_min: usize, l_max: usize) -> Result<Self> {
        self.each_text_rectification("the text layer range", |r| (r.l_min, r.l_max, r.encoder_layers) = (l_min, l_max, None))
    }

    /// Eq. (10)'s guidance scale w of the first term (s = w − 1). Errors: no guidance term.
    pub fn with_guidance_scale(mut self, w: f64) -> Result<Self> {
        let name = self.name.clone();
        self.terms.first_mut().ok_or_else(|| Error::hp(format!("{name} has no guidance term to scale")))?.scale = w - 1.0;
        Ok(self)
    }

    /// The scale s of the last term, the perturbation's own (PAG, SEG, SAG, SLG; with CFG the
    /// second term). Errors: no guidance term.
    pub fn with_perturbation_scale(mut self, s: f64) -> Result<Self> {
        let name = self.name.clone();
        self.terms.last_mut().ok_or_else(|| Error::hp(format!("{name} has no guidance term to scale")))?.scale = s;
        Ok(self)
    }

    /// CADS's schedule (τ₁, τ₂) and noise scale s. Errors: the method has no CADS.
    pub fn with_cads(mut self, tau1: f64, tau2: f64, noise_scale: f64) -> Result<Self> {
        let name = self.name.clone();
        let c: &mut Cads = self.cads.as_mut().ok_or_else(|| Error::hp(format!("{name} has no CADS to set")))?;
        (c.tau1, c.tau2, c.noise_scale) = (tau1, tau2, noise_scale);
        Ok(self)
    }

    /// CADS's noise on every negative branch's condition too, the positive's noise at each step
    /// ([`Cads::on_negatives`]; an ablation, not the papers' recipe). Errors: the method has no CADS.
    pub fn with_cads_on_negatives(mut self) -> Result<Self> {
        let name = self.name.clone();
        self.cads.as_mut().ok_or_else(|| Error::hp(format!("{name} has no CADS to extend to its negatives")))?.on_negatives = true;
        Ok(self)
    }
}
