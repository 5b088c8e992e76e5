//! Denoisers. Every model predicts the rectified-flow velocity v(x_t, t, c) in the crate's time
//! convention (t = 0 noise, t = 1 data) and takes a [`ForwardPlan`] saying which attention
//! rectifier each block uses for each group of batch rows.
pub mod dit;
pub mod mmdit;

use candle_core::Tensor;

use crate::attention::ForwardPlan;
use crate::guidance::Condition;
use crate::text::TextRectification;
use crate::Result;

/// A velocity-predicting denoiser D(x, c, t) with rectifiable attention.
pub trait Denoiser {
    /// Number of attention blocks (the range of `l_min`/`l_max`).
    fn depth(&self) -> usize;

    /// Image shape `(C, H, W)` the model takes.
    fn image_shape(&self) -> (usize, usize, usize);

    /// Token grid (rows, cols) of the image tokens, in row-major order (SEG, SAG).
    fn token_grid(&self) -> (usize, usize);

    /// Embeds a raw condition (class labels for DiT: (B,) u32) into the tensor the network
    /// consumes ((B, D) for DiT). CADS perturbs this embedding.
    fn embed_condition(&self, cond: &Tensor) -> Result<Tensor>;

    /// Velocity prediction from an embedded condition.
    ///
    /// - `x`: (B, C, H, W) noisy images x_t;
    /// - `t`: (B,) times in [0, 1] (0 = noise, 1 = data);
    /// - `cond_emb`: (B, ...) from [`Self::embed_condition`];
    /// - `plan`: attention plan per group of rows, `plan.batch() == B`.
    ///
    /// Returns (B, C, H, W).
    fn velocity_embedded(&self, x: &Tensor, t: &Tensor, cond_emb: &Tensor, plan: &ForwardPlan) -> Result<Tensor>;

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

    /// The embedded condition a branch asks for: `cond` itself, the null condition, or C-ERG's
    /// rectified encoding of `cond`.
    fn embed_branch_condition(&self, cond: &Tensor, which: Condition) -> Result<Tensor> {
        match which {
            Condition::Given => self.embed_condition(cond),
            Condition::Null => self.embed_condition(&self.null_condition(cond)?),
            Condition::Rectified(r) => self.embed_rectified_condition(cond, &r),
        }
    }
}
