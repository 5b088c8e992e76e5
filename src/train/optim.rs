//! AdamW (Loshchilov & Hutter 2019) with inspectable state, so a run can be checkpointed and
//! resumed exactly (candle-nn's `AdamW` keeps its moments private).
use std::collections::HashMap;

use candle_core::{backprop::GradStore, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::nn::Kernels;
use crate::Result;

/// AdamW hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay (set explicitly; candle-nn defaults to 0.01).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// AdamW over named variables.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Number of steps taken.
    pub step: u64,
    /// Hyperparameters (the learning rate may be changed between steps, e.g. for warm-up).
    pub cfg: AdamWConfig,
    /// [`Kernels::Fused`]: the in-place kernels of `erg_kernels::optim` where they apply (CPU
    /// f32), candle's ops elsewhere; [`Kernels::Candle`]: candle's ops always. Same values up to
    /// f32 rounding.
    pub kernels: Kernels,
}

impl AdamW {
    /// New optimizer over `vars` (sorted by name for a stable order).
    pub fn new(mut vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars.iter().map(|(_, v)| v.zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
        let v = vars.iter().map(|(_, v)| v.zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { vars, m, v, step: 0, cfg, kernels: Kernels::Fused })
    }

    /// One update from `grads`. Variables without a gradient are left unchanged.
    pub fn apply(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            // Some backward ops (e.g. candle's conv2d) return gradients that still track their
            // inputs; detach so the moments never hold a growing autograd graph.
            let g = g.detach();
            if erg_kernels::optim::applies(&[var.as_tensor(), &self.m[i], &self.v[i], &g], self.kernels) {
                let step = erg_kernels::optim::AdamWStep {
                    lr: c.lr,
                    beta1: c.beta1,
                    beta2: c.beta2,
                    eps: c.eps,
                    weight_decay: c.weight_decay,
                    bias_correction1: bc1,
                    bias_correction2: bc2,
                };
                (self.m[i], self.v[i]) = erg_kernels::optim::adamw_step(var.as_tensor(), &self.m[i], &self.v[i], &g, &step)?;
                continue;
            }
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let decayed = (var.as_tensor().detach() * (1.0 - c.lr * c.weight_decay))?;
            var.set(&(decayed - (update * c.lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// State as named tensors (`adam.m.<name>`, `adam.v.<name>`).
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("adam.m.{name}"), self.m[i].clone());
            out.insert(format!("adam.v.{name}"), self.v[i].clone());
        }
        out
    }

    /// A resumable training state as named tensors: the variables (`model.<name>`), the moments
    /// ([`Self::state`]) and `step` (`meta.step`, (1,) i64).
    pub fn training_state(&self, step: u64) -> Result<HashMap<String, Tensor>> {
        let mut out = self.state();
        for (name, var) in &self.vars {
            out.insert(format!("model.{name}"), var.as_tensor().clone());
        }
        out.insert("meta.step".into(), Tensor::new(&[step as i64], &candle_core::Device::Cpu)?);
        Ok(out)
    }

    /// Restores the variables and moments from [`Self::training_state`] output read from `path`,
    /// sets [`Self::step`] and returns it.
    /// Errors: a missing tensor (naming `path` and the tensor).
    pub fn restore_training_state(&mut self, state: &HashMap<String, Tensor>, path: &std::path::Path) -> Result<u64> {
        let get = |k: String| state.get(&k).ok_or_else(|| crate::Error::corrupt(path, format!("missing {k}")));
        for (name, var) in &self.vars {
            var.set(get(format!("model.{name}"))?)?;
        }
        self.load_state(state)?;
        self.step = get("meta.step".into())?.to_vec1::<i64>()?[0] as u64;
        Ok(self.step)
    }

    /// Restores the moments from [`Self::state`] output; `step` is set by the caller.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        for (i, (name, _)) in self.vars.iter().enumerate() {
            let get = |k: String| state.get(&k).cloned().ok_or_else(|| crate::Error::Other(format!("optimizer state lacks {k}")));
            self.m[i] = get(format!("adam.m.{name}"))?;
            self.v[i] = get(format!("adam.v.{name}"))?;
        }
        Ok(())
    }
}
