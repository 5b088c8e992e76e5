//! Exponential moving average of the weights: θ_ema ← d·θ_ema + (1 − d)·θ after each step
//! (DiT uses d = 0.9999; short CPU runs use a smaller decay).
use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::Result;

/// EMA copies of named variables (plain tensors, not tracked by autograd).
pub struct Ema {
    /// Decay d ∈ [0, 1).
    pub decay: f64,
    /// The averaged weights by name.
    pub weights: HashMap<String, Tensor>,
}

impl Ema {
    /// Starts from a copy of the current weights.
    pub fn new(vars: &[(String, Var)], decay: f64) -> Result<Self> {
        let weights = vars.iter().map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?))).collect::<Result<_>>()?;
        Ok(Self { decay, weights })
    }
    /// One EMA update.
    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        for (name, var) in vars {
            if let Some(w) = self.weights.get_mut(name) {
                *w = ((&*w * self.decay)? + (var.as_tensor().detach() * (1.0 - self.decay))?)?;
            }
        }
        Ok(())
    }
}
