//! Exponential moving average of the weights: θ_ema ← d·θ_ema + (1 − d)·θ after each step
//! (DiT uses d = 0.9999; short CPU runs use a smaller decay).
//!
//! Started from the initial weights θ₀, after n updates θ_ema = dⁿ·θ₀ + Σ_k (1 − d)·d^(n−k)·θ_k
//! still holds dⁿ of θ₀ (0.999²⁵⁰⁰ ≈ 8 %; with zero-initialised adaLN gates and output layer
//! this shrinks the prediction). [`Ema::debiased`] removes it, as Adam's bias correction does
//! for its moments (Kingma & Ba 2015): (θ_ema − dⁿ·θ₀) / (1 − dⁿ), the normalised average of
//! θ₁…θ_n alone. The trainer saves this form.
use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::nn::Kernels;
use crate::Result;

/// EMA copies of named variables (plain tensors, not tracked by autograd).
pub struct Ema {
    /// Decay d ∈ [0, 1).
    pub decay: f64,
    /// The averaged weights by name.
    pub weights: HashMap<String, Tensor>,
    /// In-place update where `erg_kernels::optim` applies ([`Kernels::Fused`]), candle's ops
    /// otherwise.
    pub kernels: Kernels,
}

impl Ema {
    /// Starts from a copy of the current weights.
    pub fn new(vars: &[(String, Var)], decay: f64) -> Result<Self> {
        let weights = vars.iter().map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?))).collect::<Result<_>>()?;
        Ok(Self { decay, weights, kernels: Kernels::Fused })
    }
    /// The bias-corrected average after `n` updates from the initial weights `init` (see the module
    /// docs); names missing from `init` are returned as they are.
    pub fn debiased(&self, init: &HashMap<String, Tensor>, n: u64) -> Result<HashMap<String, Tensor>> {
        let dn = self.decay.powf(n as f64);
        if n == 0 || dn == 0.0 {
            return Ok(self.weights.clone());
        }
        self.weights
            .iter()
            .map(|(name, w)| {
                let out = match init.get(name) {
                    Some(w0) => ((w - (w0 * dn)?)? / (1.0 - dn))?,
                    None => w.clone(),
                };
                Ok((name.clone(), out))
            })
            .collect()
    }

    /// One EMA update.
    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        for (name, var) in vars {
            if let Some(w) = self.weights.get_mut(name) {
                if erg_kernels::optim::applies(&[w, var.as_tensor()], self.kernels) {
                    *w = erg_kernels::optim::ema_step(w, var.as_tensor(), self.decay)?;
                } else {
                    *w = ((&*w * self.decay)? + (var.as_tensor().detach() * (1.0 - self.decay))?)?;
                }
            }
        }
        Ok(())
    }
}
