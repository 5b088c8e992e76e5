//! Denoisers. Every model predicts the rectified-flow velocity v(x_t, t, c) in the crate's time
//! convention (t = 0 noise, t = 1 data) and takes a [`ForwardPlan`] saying which attention
//! rectifier each block uses for each group of batch rows.
pub mod dit;

use candle_core::Tensor;

use crate::attention::ForwardPlan;
use crate::Result;

/// A velocity-predicting denoiser D(x, c, t) with rectifiable attention.
pub trait Denoiser {
    /// Number of attention blocks (the range of `l_min`/`l_max`).
    fn depth(&self) -> usize;

    /// Image shape `(C, H, W)` the model takes.
    fn image_shape(&self) -> (usize, usize, usize);

    /// Velocity prediction.
    ///
    /// - `x`: (B, C, H, W) noisy images x_t;
    /// - `t`: (B,) times in [0, 1] (0 = noise, 1 = data);
    /// - `cond`: (B, ...) model-specific conditioning (class labels for DiT);
    /// - `plan`: attention plan per group of rows, `plan.batch() == B`.
    ///
    /// Returns (B, C, H, W).
    fn velocity(&self, x: &Tensor, t: &Tensor, cond: &Tensor, plan: &ForwardPlan) -> Result<Tensor>;

    /// The null ("unconditional") condition with the batch size and layout of `cond`.
    fn null_condition(&self, cond: &Tensor) -> Result<Tensor>;
}
