//! # erg — Entropy Rectifying Guidance on candle
//!
//! A reproduction of *Entropy Rectifying Guidance for Diffusion and Flow Models*
//! (Berrada Ifriqi et al., FAIR 2025) and the guidance methods it is compared with.
//!
//! The crate is organised as the paper's method is:
//! - [`attention`]: one attention function for every model, taking a [`attention::Rectifier`]
//!   (standard, temperature τ, or the Hopfield-energy update of Algorithm 1), and the per-block
//!   [`attention::AttentionPlan`] that says where the rectifier applies;
//! - [`models`]: the denoisers (DiT of Peebles & Xie), all behind the [`models::Denoiser`] trait;
//! - [`flow`]: rectified flow in the paper's time convention (t = 0 noise, t = 1 data), the
//!   training loss and the Euler sampler;
//! - [`guidance`]: Eq. (10), Δ = w·D(x, c) + (1−w)·D_neg(x, c_neg), with the negative branch as data;
//! - [`data`], [`train`], [`checkpoint`], [`imaging`]: the shipped data sets, training, weights on
//!   disk and image grids.
pub mod alloc;
pub mod analysis;
pub mod attention;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod features;
pub mod flow;
pub mod guidance;
pub mod hub;
pub mod imaging;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod rng;
pub mod sample;
pub mod text;
pub mod train;

pub use error::{Error, Result};
