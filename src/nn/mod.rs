//! Building blocks shared by the models: seeded initialisation, the linear layer, and operations
//! that pick candle's fused kernels when sampling and differentiable compositions when training.
//!
//! candle-nn's `ops::softmax_last_dim`, `ops::layer_norm` (the `LayerNorm` fast path) and
//! `ops::rms_norm` have no backward pass and silently stop gradients; [`OpMode::Train`] never
//! uses them (tested in `tests/gradients.rs`); it uses the fused kernels of [`fused`] and
//! [`broadcast`], which have backward passes (tested against candle's compositions in
//! `tests/fused.rs`).
pub mod broadcast;
pub mod fused;
pub mod init;
pub mod linear;
pub mod ops;

pub use init::{seeded_varbuilder, SeededVarMap};
pub use linear::{linear, Linear};
pub use ops::OpMode;
