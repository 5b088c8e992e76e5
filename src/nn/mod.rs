//! Building blocks shared by the models: seeded initialisation, the linear layer, and the
//! operations of a forward pass with their implementation chosen by an explicit [`Ops`] value.
//!
//! candle-nn's `ops::softmax_last_dim`, `ops::layer_norm` (the `LayerNorm` fast path) and
//! `ops::rms_norm` have no backward pass and silently stop gradients; [`OpMode::Train`] never
//! uses them (tested in `tests/gradients.rs`). The fused CPU kernels with backward passes live in
//! the `erg-kernels` crate, tested there against candle's compositions.
pub mod init;
pub mod linear;
pub mod ops;

pub use erg_kernels::Kernels;
pub use init::{seeded_varbuilder, SeededVarMap};
pub use linear::{linear, linear_with_init, xavier_linear, xavier_uniform, zero_linear, Linear};
pub use ops::{OpMode, Ops};
