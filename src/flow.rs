//! Rectified flow in the ERG paper's time convention.
//!
//! t ∈ [0, 1], **t = 0 is noise and t = 1 is data** (ERG Appendix D; Lipman et al. 2023):
//! - x_t = t·x₁ + (1 − t)·ε, ε ~ N(0, I);
//! - velocity v = dx_t/dt = x₁ − ε;
//! - clean estimate x̂₁ = x_t + (1 − t)·v, and back v = (x̂₁ − x_t)/(1 − t);
//! - noise estimate ε̂ = x_t − t·v.
//!
//! SD3/diffusers count σ = 1 − t the other way (x = (1−σ)x₀ + σε, v = ε − x₀); conversion for
//! those models happens once, at their boundary, never here.
use candle_core::{Tensor, D};
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::attention::ForwardPlan;
use crate::models::Denoiser;
use crate::nn::Kernels;
use crate::{Error, Result};

/// Reshapes per-sample times (B,) to broadcast against (B, ...) of rank `rank`.
fn bcast(t: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![t.dim(0)?];
    shape.extend(std::iter::repeat_n(1, rank - 1));
    Ok(t.reshape(shape)?)
}

/// x_t = t·x₁ + (1 − t)·ε. `x1`, `eps`: (B, ...); `t`: (B,) → (B, ...).
pub fn interpolate(x1: &Tensor, eps: &Tensor, t: &Tensor) -> Result<Tensor> {
    let t = bcast(t, x1.rank())?;
    Ok((x1.broadcast_mul(&t)? + eps.broadcast_mul(&(1.0 - &t)?)?)?)
}

/// Target velocity v = x₁ − ε.
pub fn velocity_target(x1: &Tensor, eps: &Tensor) -> Result<Tensor> {
    Ok((x1 - eps)?)
}

/// Clean estimate x̂₁ = x_t + (1 − t)·v. `t`: (B,).
pub fn clean_from_velocity(x_t: &Tensor, v: &Tensor, t: &Tensor) -> Result<Tensor> {
    let t = bcast(t, x_t.rank())?;
    Ok((x_t + v.broadcast_mul(&(1.0 - &t)?)?)?)
}

/// Velocity from a clean estimate, v = (x̂₁ − x_t)/(1 − t). Requires t < 1 (the Euler sampler
/// never evaluates at t = 1); errors otherwise.
pub fn velocity_from_clean(x_t: &Tensor, x1_hat: &Tensor, t: &Tensor) -> Result<Tensor> {
    let tmax = t.max(0)?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    if tmax >= 1.0 {
        return Err(Error::hp(format!("velocity_from_clean needs t < 1, got {tmax}")));
    }
    let t = bcast(t, x_t.rank())?;
    Ok((x1_hat - x_t)?.broadcast_div(&(1.0 - &t)?)?)
}

/// Noise estimate ε̂ = x_t − t·v.
pub fn noise_from_velocity(x_t: &Tensor, v: &Tensor, t: &Tensor) -> Result<Tensor> {
    let t = bcast(t, x_t.rank())?;
    Ok((x_t - v.broadcast_mul(&t)?)?)
}

/// Distribution of training times.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimeSampling {
    /// t ~ U(0, 1).
    Uniform,
    /// t = sigmoid(u), u ~ N(mean, std²): more weight on intermediate times (Esser et al. 2024,
    /// "logit-normal sampling", their best setting mean = 0, std = 1).
    LogitNormal { mean: f64, std: f64 },
}

impl Default for TimeSampling {
    fn default() -> Self {
        TimeSampling::LogitNormal { mean: 0.0, std: 1.0 }
    }
}

impl TimeSampling {
    /// `n` times in (0, 1).
    pub fn sample(&self, rng: &mut StdRng, n: usize) -> Vec<f32> {
        match *self {
            TimeSampling::Uniform => {
                use rand::Rng;
                (0..n).map(|_| rng.random::<f32>()).collect()
            }
            TimeSampling::LogitNormal { mean, std } => {
                let d = Normal::new(mean, std.max(1e-6)).unwrap();
                (0..n).map(|_| (1.0 / (1.0 + (-d.sample(rng)).exp())) as f32).collect()
            }
        }
    }
}

/// Rectified-flow loss ‖v_θ(x_t, t, c) − (x₁ − ε)‖², mean over all elements (differentiable,
/// fused kernels). `x1`, `eps`: (B, C, H, W); `t`: (B,); `cond`: the model's conditioning.
pub fn loss<M: Denoiser>(model: &M, x1: &Tensor, eps: &Tensor, t: &Tensor, cond: &Tensor) -> Result<Tensor> {
    loss_embedded(model, x1, eps, t, &model.embed_condition(cond)?, Kernels::Fused)
}

/// [`loss`] from an embedded condition (as from [`Denoiser::embed_condition`]; precomputed text
/// embeddings when training a text-to-image model with a frozen encoder), with `kernels`.
pub fn loss_embedded<M: Denoiser>(model: &M, x1: &Tensor, eps: &Tensor, t: &Tensor, cond_emb: &Tensor, kernels: Kernels) -> Result<Tensor> {
    let x_t = interpolate(x1, eps, t)?;
    let plan = ForwardPlan::train(x1.dim(0)?).with_kernels(kernels);
    let v = model.velocity_embedded(&x_t, t, cond_emb, &plan)?;
    let target = velocity_target(x1, eps)?;
    Ok((v - target)?.sqr()?.flatten_all()?.mean(D::Minus1)?)
}

/// Uniform time grid t_i = i/n, i = 0..=n (n + 1 points from noise to data).
pub fn uniform_schedule(num_steps: usize) -> Vec<f64> {
    (0..=num_steps).map(|i| i as f64 / num_steps as f64).collect()
}

/// The σ grid of diffusers' `FlowMatchEulerDiscreteScheduler.set_timesteps` (SD3, SD3.5) for
/// `num_steps` steps with time shift `shift` (SD3: 3.0) over `num_train_timesteps` (1000):
/// shift(σ) = s·σ / (1 + (s − 1)·σ); the training grid's smallest σ, 1/1000, is shifted once, the
/// inference grid runs linearly in timestep units from 1000 down to it and is shifted again, then
/// 0 is appended. Returns `num_steps + 1` values from 1 to 0 (SD3 time: σ = 1 is noise); for four
/// steps [1, 0.8577, 0.6022, 0.0089, 0]. (candle's SD3 example instead shifts
/// linspace(1, 0, N + 1); its last non-zero σ is ≈ 0.10.)
pub fn flow_match_sigmas(num_steps: usize, shift: f64, num_train_timesteps: usize) -> Vec<f64> {
    let shifted = |s: f64| shift * s / (1.0 + (shift - 1.0) * s);
    let n = num_train_timesteps as f64;
    let (t_max, t_min) = (shifted(1.0) * n, shifted(1.0 / n) * n);
    let mut sigmas: Vec<f64> = (0..num_steps)
        .map(|i| {
            let frac = if num_steps == 1 { 0.0 } else { i as f64 / (num_steps - 1) as f64 };
            shifted((t_max + (t_min - t_max) * frac) / n)
        })
        .collect();
    sigmas.push(0.0);
    sigmas
}

/// [`flow_match_sigmas`] in the crate's time (t = 1 − σ, increasing from 0 = noise to 1 = data),
/// converted here and nowhere else; Euler on it is diffusers' `FlowMatchEulerDiscreteScheduler.step`.
pub fn flow_match_schedule(num_steps: usize, shift: f64) -> Vec<f64> {
    flow_match_sigmas(num_steps, shift, 1000).into_iter().map(|s| 1.0 - s).collect()
}

/// What the sampler tells the callback after each step.
pub struct StepInfo<'a> {
    /// Step index, 0-based.
    pub step: usize,
    /// Time of the velocity evaluation.
    pub t: f64,
    /// Time after the step.
    pub t_next: f64,
    /// State before the step, x_t: (B, C, H, W).
    pub x: &'a Tensor,
    /// Velocity used for the step.
    pub v: &'a Tensor,
}

/// Euler integration of dx/dt = v(x, t) along `schedule` (increasing, from 0 to 1):
/// x_{i+1} = x_i + (t_{i+1} − t_i)·v(x_i, t_i).
///
/// `velocity(x, t, step)` returns the (guided) velocity; `callback` sees each step.
/// Returns the final state (B, ...). Errors: a schedule that is not increasing within [0, 1].
pub fn euler(
    x0: Tensor,
    schedule: &[f64],
    mut velocity: impl FnMut(&Tensor, f64, usize) -> Result<Tensor>,
    mut callback: impl FnMut(&StepInfo) -> Result<()>,
) -> Result<Tensor> {
    if schedule.len() < 2 || schedule.windows(2).any(|w| w[1] <= w[0]) || schedule[0] < 0.0 || schedule[schedule.len() - 1] > 1.0 {
        return Err(Error::hp("the time schedule must increase strictly within [0, 1] and have >= 2 points"));
    }
    let mut x = x0;
    for (i, w) in schedule.windows(2).enumerate() {
        let v = velocity(&x, w[0], i)?;
        callback(&StepInfo { step: i, t: w[0], t_next: w[1], x: &x, v: &v })?;
        x = (&x + (v * (w[1] - w[0]))?)?;
    }
    Ok(x)
}
