//! Denoisers. Every model predicts the rectified-flow velocity v(x_t, t, c) in the crate's time
//! convention (t = 0 noise, t = 1 data) and takes a [`ForwardPlan`] saying which attention
//! rectifier each block uses for each group of batch rows, and optionally an
//! [`AttentionProbe`] that receives the attention of chosen blocks. Models know nothing of
//! guidance, training or evaluation: a caller asks for an embedding with a [`Condition`].
pub mod dit;
pub mod embed;
pub mod imagenet;
pub mod mmdit;
pub mod sd3;
pub mod vae;

use candle_core::Tensor;

use serde::{Deserialize, Serialize};

use crate::attention::{AttentionProbe, ForwardPlan, NoProbe};
use crate::text::TextRectification;
use crate::Result;

/// Which embedding of a raw condition a forward pass needs (guidance's branches choose one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The condition asked for (class label or prompt).
    Given,
    /// The null condition (null class / empty prompt), as in CFG.
    Null,
    /// C-ERG (ERG Sec. 3.2): the prompt encoded with the text encoder's self-attention
    /// temperature τ_c in layers [l_min^c, l_max^c), φ_c^τ. Needs a model with a text encoder.
    Rectified(TextRectification),
}

/// A velocity-predicting denoiser D(x, c, t) with rectifiable attention.
pub trait Denoiser {
    /// Number of attention blocks (the range of `l_min`/`l_max`).
    fn depth(&self) -> usize;

    /// Image shape `(C, H, W)` the model takes.
    fn image_shape(&self) -> (usize, usize, usize);

    /// Token grid (rows, cols) of the image tokens, in row-major order (SEG, SAG).
    fn token_grid(&self) -> (usize, usize);

    /// The sampling time grid for `num_steps` steps (`num_steps + 1` increasing times from 0 to
    /// 1): uniform for the crate's models ([`crate::flow::uniform_schedule`]); a pipeline that
    /// mirrors a public one uses that one's grid (SD3: [`crate::flow::flow_match_schedule`]).
    fn schedule(&self, num_steps: usize) -> Vec<f64> {
        crate::flow::uniform_schedule(num_steps)
    }

    /// Embeds a raw condition (class labels for DiT: (B,) u32) into the tensor the network
    /// consumes ((B, D) for DiT). CADS perturbs this embedding.
    fn embed_condition(&self, cond: &Tensor) -> Result<Tensor>;

    /// Velocity prediction from an embedded condition, reporting attention to `probe`.
    ///
    /// - `x`: (B, C, H, W) noisy images x_t;
    /// - `t`: (B,) times in [0, 1] (0 = noise, 1 = data);
    /// - `cond_emb`: (B, ...) from [`Self::embed_condition`];
    /// - `plan`: attention plan per group of rows, `plan.batch() == B`;
    /// - `probe`: receives the attention probabilities of the blocks it wants.
    ///
    /// Returns (B, C, H, W). Errors: shapes that do not match the model; a plan beyond its depth.
    fn velocity_probed(&self, x: &Tensor, t: &Tensor, cond_emb: &Tensor, plan: &ForwardPlan, probe: &mut dyn AttentionProbe) -> Result<Tensor>;

    /// [`Self::velocity_probed`] without a probe.
    fn velocity_embedded(&self, x: &Tensor, t: &Tensor, cond_emb: &Tensor, plan: &ForwardPlan) -> Result<Tensor> {
        self.velocity_probed(x, t, cond_emb, plan, &mut NoProbe)
    }

    /// Velocity prediction from a raw condition: [`Self::velocity_embedded`] of its embedding.
    fn velocity(&self, x: &Tensor, t: &Tensor, cond: &Tensor, plan: &ForwardPlan) -> Result<Tensor> {
        self.velocity_embedded(x, t, &self.embed_condition(cond)?, plan)
    }

    /// The raw null ("unconditional") condition with the batch size and layout of `cond`.
    fn null_condition(&self, cond: &Tensor) -> Result<Tensor>;

    /// Layers of the model's text encoder (the range of C-ERG's l_min^c, l_max^c); `None` for a
    /// model without one (class-conditional DiT), which then cannot use C-ERG.
    fn text_layers(&self) -> Option<usize> {
        None
    }

    /// C-ERG's embedded condition φ_c^τ: the raw condition (a prompt's token ids) encoded with the
    /// text encoder's attention temperature (ERG Sec. 3.2). Errors for a model without a text
    /// encoder.
    fn embed_rectified_condition(&self, cond: &Tensor, rect: &TextRectification) -> Result<Tensor> {
        let _ = (cond, rect);
        Err(crate::Error::hp("C-ERG needs a text encoder; this model is not text-conditioned (use I-ERG)"))
    }

    /// The embedding `which` of the raw condition `cond`: `cond` itself, the null condition, or
    /// C-ERG's rectified encoding of `cond`.
    fn embed_request(&self, cond: &Tensor, which: Condition) -> Result<Tensor> {
        match which {
            Condition::Given => self.embed_condition(cond),
            Condition::Null => self.embed_condition(&self.null_condition(cond)?),
            Condition::Rectified(r) => self.embed_rectified_condition(cond, &r),
        }
    }
}
