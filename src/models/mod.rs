//! Denoisers. Every model predicts the rectified-flow velocity v(x_t, t, c) in the crate's time
//! convention (t = 0 noise, t = 1 data) and takes a [`ForwardPlan`] saying which attention
//! rectifier each block uses for each group of batch rows.
pub mod dit;
pub mod mmdit;

use candle_core::Tensor;

use crate::attention::ForwardPlan;
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
}
