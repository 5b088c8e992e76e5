//! The paper's analyses, each a library function returning a small serialisable summary that the
//! book's examples plot and `tests/` snapshot:
//! - [`hopfield`]: the Hopfield energy of attention, Algorithm 1's trajectories, entropy vs τ;
//! - [`decomposition`]: parallel / orthogonal parts of the guidance difference along sampling
//!   (Fig. 6) and the suggested κ;
//! - [`certainty`]: attention certainty per block (Fig. 7) and the suggested layer range;
//! - [`variance`]: the variance of the first velocity for CFG's and C-ERG's negatives (Fig. 5);
//! - [`strength`]: a method's effective guidance strength and scales matched to it.
pub mod certainty;
pub mod decomposition;
pub mod hopfield;
pub mod strength;
pub mod variance;
