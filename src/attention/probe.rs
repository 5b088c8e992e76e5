//! Attention probes: what a forward pass reports about its attention, passed explicitly beside
//! the [`super::ForwardPlan`] (no state written back through the plan).
//!
//! A probe names the blocks it wants; in those blocks the model hands it the standard attention
//! probabilities softmax(Q Kᵀ/√d_h) of the first row group of the batch (the positive branch of a
//! guided step), before any rectifier. Self-Attention Guidance records one block's map with
//! [`AttentionRecorder`]; the Fig. 7 certainty analysis measures every block
//! (`crate::analysis::certainty`).
use candle_core::Tensor;

use crate::Result;

/// Receives the attention probabilities of chosen blocks during a forward pass.
pub trait AttentionProbe {
    /// Whether the probe wants block `block`'s attention (0-based).
    fn wants(&self, block: usize) -> bool;
    /// Block `block`'s standard attention probabilities of the first row group,
    /// (rows, H, S, N), rows summing to one over N.
    ///
    /// Errors: the probe's own (they abort the forward pass).
    fn observe(&mut self, block: usize, probs: &Tensor) -> Result<()>;
}

/// The probe that wants nothing (every forward pass that reports nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProbe;

impl AttentionProbe for NoProbe {
    fn wants(&self, _block: usize) -> bool {
        false
    }
    fn observe(&mut self, _block: usize, _probs: &Tensor) -> Result<()> {
        Ok(())
    }
}

/// Records the head-averaged attention map (rows, S, N) of one block (SAG's mask source,
/// Hong et al. 2023).
#[derive(Debug, Clone)]
pub struct AttentionRecorder {
    /// The block to record.
    pub block: usize,
    /// The map, after the forward pass.
    pub map: Option<Tensor>,
}

impl AttentionRecorder {
    /// A recorder of block `block`.
    pub fn new(block: usize) -> Self {
        Self { block, map: None }
    }
}

impl AttentionProbe for AttentionRecorder {
    fn wants(&self, block: usize) -> bool {
        block == self.block
    }
    fn observe(&mut self, _block: usize, probs: &Tensor) -> Result<()> {
        self.map = Some(probs.mean(1)?); // (rows, S, N)
        Ok(())
    }
}
