//! The paper's analyses, each a library function returning a small serialisable summary that the
//! book's examples plot and `tests/` snapshot:
//! - [`hopfield`]: the Hopfield energy of attention, Algorithm 1's trajectories, entropy vs τ.
pub mod hopfield;
