//! Evaluating a [`Guidance`] at one sampling step.
use candle_core::Tensor;

use super::{Combiner, Condition, Guidance, ModelChoice};
use crate::attention::{AttentionPlan, AttentionRecorder, ForwardPlan, NoProbe};
use crate::flow::{clean_from_velocity, velocity_from_clean};
use crate::models::Denoiser;
use crate::rng;
use crate::{Error, Result};

/// The networks a method may use: the model being sampled and, for AutoGuidance, a weak one.
pub struct Models<'a, M> {
    /// The model being sampled.
    pub main: &'a M,
    /// The weak model (an early checkpoint), when a method needs it.
    pub weak: Option<&'a M>,
}

impl<M> Clone for Models<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for Models<'_, M> {}

impl<'a, M> Models<'a, M> {
    /// Only the main model.
    pub fn main(main: &'a M) -> Self {
        Self { main, weak: None }
    }
}

const CADS_SALT: u64 = 0xCAD5_0000_0000_0001;

/// Evaluates a guidance method step by step, keeping the state some methods carry across steps
/// (APG's momentum buffers, CADS's noise stream). Create one per sampling run (per batch).
pub struct Guider<'a, M: Denoiser> {
    guidance: &'a Guidance,
    models: Models<'a, M>,
    noise_key: u64,
    apg_buffers: Vec<Option<Tensor>>,
    /// Embedded conditions of this run, by (raw condition tensor, branch condition, model): a
    /// text encoder runs once per prompt batch and condition, not at every step.
    embeddings: Vec<(candle_core::TensorId, Condition, ModelChoice, Tensor)>,
}

enum Where {
    Group(usize),
    Weak(usize),
    Sag,
}

impl<'a, M: Denoiser> Guider<'a, M> {
    /// Validates `guidance` against the models. `noise_key` seeds CADS's per-step noise.
    ///
    /// Errors: invalid hyperparameters; a method that needs a weak model without one.
    pub fn new(guidance: &'a Guidance, models: Models<'a, M>, noise_key: u64) -> Result<Self> {
        guidance.validate(models.main.depth())?;
        if guidance.needs_weak_model() {
            let weak = models.weak.ok_or_else(|| {
                Error::hp(format!(
                    "{} needs a weak model (AutoGuidance): pass the early checkpoint, e.g. data/checkpoints/emoji-dit-weak.safetensors",
                    guidance.name
                ))
            })?;
            if weak.image_shape() != models.main.image_shape() {
                return Err(Error::shape("the weak model takes images of another shape than the main model"));
            }
            guidance.validate(weak.depth())?;
        }
        if guidance.nag.is_some() && models.main.text_layers().is_none() {
            return Err(Error::hp(format!(
                "{} uses NAG, which extrapolates attention outputs between text contexts; this model has no text tokens in its attention (a class-conditional DiT receives its class through adaLN)",
                guidance.name
            )));
        }
        let conditions =
            std::iter::once(guidance.positive).chain(guidance.terms.iter().map(|t| t.negative.condition)).chain(guidance.nag.iter().map(|n| n.condition));
        for c in conditions {
            if let Condition::Rectified(r) = c {
                let layers = models.main.text_layers().ok_or_else(|| {
                    Error::hp(format!("{} uses C-ERG, which needs a text-conditioned model; this one has no text encoder (use I-ERG)", guidance.name))
                })?;
                r.validate(layers)?;
            }
        }
        Ok(Self { guidance, models, noise_key, apg_buffers: vec![None; guidance.terms.len()], embeddings: vec![] })
    }

    /// The embedded condition `which` of `cond` on the main or weak model, computed once per run.
    fn embedded(&mut self, cond: &Tensor, which: Condition, model: ModelChoice) -> Result<Tensor> {
        let id = cond.id();
        if let Some((.., e)) = self.embeddings.iter().find(|(i, c, m, _)| *i == id && *c == which && *m == model) {
            return Ok(e.clone());
        }
        let net = match model {
            ModelChoice::Main => self.models.main,
            ModelChoice::Weak => self.models.weak.ok_or_else(|| Error::hp("no weak model"))?,
        };
        let e = net.embed_request(cond, which)?;
        self.embeddings.push((id, which, model, e.clone()));
        Ok(e)
    }

    /// The guided velocity at `x` (B, C, H, W), time `t`, step index `step`, raw condition `cond`
    /// (B, ...). Returns the velocity (B, C, H, W) and the number of function evaluations per
    /// sample at this step.
    pub fn velocity(&mut self, x: &Tensor, t: f64, step: usize, cond: &Tensor) -> Result<(Tensor, usize)> {
        self.velocity_and_positive(x, t, step, cond).map(|(v, _, nfe)| (v, nfe))
    }

    /// [`Self::velocity`] with the positive prediction (B, C, H, W) it was guided from (the
    /// positive condition, CADS noise included, standard attention; NAG's guided attention when
    /// the method uses NAG); `None` on a step that evaluates nothing (CFG-Zero*'s zero-init).
    pub fn velocity_and_positive(&mut self, x: &Tensor, t: f64, step: usize, cond: &Tensor) -> Result<(Tensor, Option<Tensor>, usize)> {
        let g = self.guidance;
        let main = self.models.main;
        let b = x.dim(0)?;
        if cond.dim(0)? != b {
            return Err(Error::shape(format!("{} conditions for a batch of {b} images", cond.dim(0)?)));
        }
        if let Combiner::CfgZeroStar(z) = &g.combiner {
            if step < z.zero_init_steps {
                return Ok((x.zeros_like()?, None, 0)); // zero-init: v = 0, no model evaluation
            }
        }
        let mut pos_emb = self.embedded(cond, g.positive, ModelChoice::Main)?;
        // CADS: this step's noise on the positive condition, and on the negatives' when asked.
        let mut cads_negatives = None;
        if let Some(cads) = &g.cads {
            let mut r = rng::stream(self.noise_key ^ CADS_SALT, step as u64);
            let noise = rng::randn(&mut r, pos_emb.dims(), pos_emb.device())?.to_dtype(pos_emb.dtype())?;
            pos_emb = cads.apply(&pos_emb, t, &noise)?;
            if cads.on_negatives {
                cads_negatives = Some((cads, noise));
            }
        }
        let noised = |e: Tensor| -> Result<Tensor> {
            match &cads_negatives {
                None => Ok(e),
                Some((_, n)) if e.dims() != n.dims() => Err(Error::shape(format!(
                    "CADS on negatives: a negative condition of shape {:?} cannot take the positive's noise {:?}",
                    e.dims(),
                    n.dims()
                ))),
                Some((cads, n)) => cads.apply(&e, t, n),
            }
        };

        // Plan this step's predictions.
        let mut groups = vec![(b, AttentionPlan::standard())];
        let mut embs = vec![pos_emb.clone()];
        let mut weak_groups: Vec<(usize, AttentionPlan)> = vec![];
        let mut weak_embs = vec![];
        let mut jobs: Vec<(usize, Where)> = vec![];
        let mut record = None;
        for (i, term) in g.terms.iter().enumerate() {
            let n = &term.negative;
            if !term.window.contains(t) || term.scale == 0.0 {
                continue; // inactive, or contributes nothing (e.g. w = 1)
            }
            let plan = n.attention_at(t);
            // the positive's embedding, CADS noise included, when the negative would get the same
            let same_input = n.condition == g.positive && g.cads.as_ref().is_none_or(|c| c.on_negatives);
            if same_input && plan.is_standard() && n.model == ModelChoice::Main && n.sag.is_none() {
                continue; // identical to the positive: contributes nothing
            }
            match (n.model, &n.sag) {
                (ModelChoice::Weak, _) => {
                    weak_embs.push(noised(self.embedded(cond, n.condition, ModelChoice::Weak)?)?);
                    weak_groups.push((b, plan));
                    jobs.push((i, Where::Weak(weak_groups.len() - 1)));
                }
                (ModelChoice::Main, Some(sag)) => {
                    if record.is_some_and(|r| r != sag.block) {
                        return Err(Error::hp("all SAG terms of a method must use the same block"));
                    }
                    record = Some(sag.block);
                    jobs.push((i, Where::Sag));
                }
                (ModelChoice::Main, None) => {
                    embs.push(if same_input { pos_emb.clone() } else { noised(self.embedded(cond, n.condition, ModelChoice::Main)?)? });
                    groups.push((b, plan));
                    jobs.push((i, Where::Group(groups.len() - 1)));
                }
            }
        }

        // NAG: the negative context as one more group, coupled to the positive's attention.
        let nag_group = match &g.nag {
            Some(n) => {
                embs.push(self.embedded(cond, n.condition, ModelChoice::Main)?);
                groups.push((b, AttentionPlan::standard()));
                Some((n.nag, groups.len() - 1))
            }
            None => None,
        };

        // One batched forward of the main model for the positive and the plain negatives.
        let k = groups.len();
        let xs = vec![x.clone(); k];
        let plan = match nag_group {
            Some((nag, gi)) => ForwardPlan::new(groups).with_nag(nag, 0, gi)?,
            None => ForwardPlan::new(groups),
        };
        let mut recorder = record.map(AttentionRecorder::new);
        let out = match recorder.as_mut() {
            Some(r) => main.velocity_probed(&Tensor::cat(&xs, 0)?, &Tensor::full(t as f32, k * b, x.device())?, &Tensor::cat(&embs, 0)?, &plan, r)?,
            None => main.velocity_probed(&Tensor::cat(&xs, 0)?, &Tensor::full(t as f32, k * b, x.device())?, &Tensor::cat(&embs, 0)?, &plan, &mut NoProbe)?,
        };
        let pos = out.narrow(0, 0, b)?;
        let weak_out = if weak_groups.is_empty() {
            None
        } else {
            let weak = self.models.weak.expect("checked in new");
            let kw = weak_groups.len();
            let xs = vec![x.clone(); kw];
            Some(weak.velocity_embedded(
                &Tensor::cat(&xs, 0)?,
                &Tensor::full(t as f32, kw * b, x.device())?,
                &Tensor::cat(&weak_embs, 0)?,
                &ForwardPlan::new(weak_groups),
            )?)
        };
        let mut negs = Vec::with_capacity(jobs.len());
        for (i, w) in &jobs {
            let neg = match w {
                Where::Group(gi) => out.narrow(0, gi * b, b)?,
                Where::Weak(wi) => weak_out.as_ref().expect("weak forward ran").narrow(0, wi * b, b)?,
                Where::Sag => {
                    let n = &g.terms[*i].negative;
                    let sag = n.sag.as_ref().expect("SAG job");
                    let attn = recorder.as_ref().and_then(|r| r.map.clone()).ok_or_else(|| Error::Other("SAG: the attention map was not recorded".into()))?;
                    let (gh, gw) = main.token_grid();
                    let mask = super::Sag::image_mask(&attn, gh * gw)?;
                    let degraded = sag.degrade(x, &pos, t, &mask, main.token_grid())?;
                    let emb = if n.condition == g.positive { pos_emb.clone() } else { noised(self.embedded(cond, n.condition, ModelChoice::Main)?)? };
                    main.velocity_embedded(&degraded, &Tensor::full(t as f32, b, x.device())?, &emb, &ForwardPlan::uniform(b, AttentionPlan::standard()))?
                }
            };
            negs.push((*i, neg));
        }
        let nfe = 1 + negs.len() + usize::from(nag_group.is_some());
        let v = self.combine(x, t, &pos, &negs)?;
        Ok((v, Some(pos), nfe))
    }

    fn combine(&mut self, x: &Tensor, t: f64, pos: &Tensor, negs: &[(usize, Tensor)]) -> Result<Tensor> {
        let terms = &self.guidance.terms;
        match &self.guidance.combiner {
            Combiner::Linear => {
                let mut out = pos.clone();
                for (i, neg) in negs {
                    out = (out + ((pos - neg)? * terms[*i].scale)?)?;
                }
                Ok(out)
            }
            Combiner::CfgZeroStar(z) => {
                let mut out = pos.clone();
                for (i, neg) in negs {
                    out = (out + (z.difference(pos, neg)? * terms[*i].scale)?)?;
                }
                Ok(out)
            }
            Combiner::Tcfg => {
                let mut out = pos.clone();
                for (i, neg) in negs {
                    out = (out + ((pos - super::tcfg::damped_negative(pos, neg)?)? * terms[*i].scale)?)?;
                }
                Ok(out)
            }
            Combiner::Apg(apg) => {
                if negs.is_empty() {
                    return Ok(pos.clone());
                }
                let tt = Tensor::full(t as f32, x.dim(0)?, x.device())?;
                let xp = clean_from_velocity(x, pos, &tt)?;
                let mut out = xp.clone();
                for (i, neg) in negs {
                    let xn = clean_from_velocity(x, neg, &tt)?;
                    let u = apg.update(&xp, &xn, &mut self.apg_buffers[*i])?;
                    out = (out + (u * terms[*i].scale)?)?;
                }
                velocity_from_clean(x, &out, &tt)
            }
        }
    }
}

/// One step of `guidance` with fresh state (no APG momentum history, CADS noise key 0) on the
/// main model alone: the guided velocity (B, C, H, W) and NFE per sample.
pub fn guided_velocity<M: Denoiser>(model: &M, guidance: &Guidance, x: &Tensor, t: f64, cond: &Tensor) -> Result<(Tensor, usize)> {
    Guider::new(guidance, Models::main(model), 0)?.velocity(x, t, 0, cond)
}
