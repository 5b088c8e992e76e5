//! AdamW's update and the EMA as three and one passes over memory.
//!
//! Composed of candle ops, one AdamW step is ≈ 15 element-wise ops per parameter tensor, each
//! allocating its output (the moments, the bias corrections, the square root, the decay); the EMA
//! three more. Here each moment is one pass from the gradient into a new tensor, the parameter is
//! updated in place from both (as `Var::set` writes in place), and the EMA is one pass into a new
//! tensor. The moments and the average stay immutable values (a clone held elsewhere, e.g. θ₀
//! or a saved state, never changes under it). The same arithmetic (Loshchilov & Hutter 2019, Algorithm 2 with decoupled weight
//! decay), in f32, rows in parallel. CPU, contiguous f32 only: callers check [`applies`] and
//! compose candle ops otherwise (CUDA, f16), which gives the same values up to f32 rounding
//! (tested in `tests/kernels.rs`).
use candle_core::{CpuStorage, CustomOp2, DType, InplaceOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::buffer::{assume_init, uninit};
use crate::Kernels;

/// Elements per rayon task.
const CHUNK: usize = 32 * 1024;

/// One AdamW step's scalars.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// Learning rate of this step.
    pub lr: f64,
    /// β₁, β₂.
    pub beta1: f64,
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ of this step t.
    pub bias_correction1: f64,
    pub bias_correction2: f64,
}

/// Whether the in-place kernels apply to these tensors: CPU, f32, contiguous, [`Kernels::Fused`].
pub fn applies(tensors: &[&Tensor], kernels: Kernels) -> bool {
    kernels == Kernels::Fused && tensors.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous())
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    crate::fused::f32_slice(s, l, op)
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{op}: f32 only") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut v[a..b]),
        None => candle_core::bail!("{op}: contiguous only"),
    }
}

/// β m + (1 − β) g, or with g² (`square`).
struct Moment {
    beta: f32,
    square: bool,
}

/// `out = f(a, b)` element-wise into a new buffer, in parallel chunks.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = uninit(a.len());
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(oc, (ac, bc))| {
        for ((o, &x), &y) in oc.iter_mut().zip(ac).zip(bc) {
            o.write(f(x, y));
        }
    });
    // SAFETY: the chunks of `out` and of `a`, `b` (same length, checked by the callers) pair up,
    // so every slot was written.
    unsafe { assume_init(out) }
}

impl CustomOp2 for Moment {
    fn name(&self) -> &'static str {
        "erg-adamw-moment"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, g) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        if m.len() != g.len() {
            candle_core::bail!("{}: {} moments for {} gradients", self.name(), m.len(), g.len());
        }
        let (b, c) = (self.beta, 1.0 - self.beta);
        let out = if self.square { zip_map(m, g, |m, g| b * m + c * (g * g)) } else { zip_map(m, g, |m, g| b * m + c * g) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// θ ← θ (1 − lr·λ) − lr · (m / bc₁) / (√(v / bc₂) + ε).
struct Param {
    step: AdamWStep,
}

impl InplaceOp3 for Param {
    fn name(&self) -> &'static str {
        "erg-adamw-param"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<()> {
        let p = slice_mut(s1, l1, self.name())?;
        let (m, v) = (slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        if p.len() != m.len() || p.len() != v.len() {
            candle_core::bail!("{}: parameter and moments differ in size", self.name());
        }
        let s = self.step;
        let (lr, decay) = (s.lr as f32, (1.0 - s.lr * s.weight_decay) as f32);
        let (bc1, bc2, eps) = (s.bias_correction1 as f32, s.bias_correction2 as f32, s.eps as f32);
        p.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK))).for_each(|(pc, (mc, vc))| {
            for ((p, &m), &v) in pc.iter_mut().zip(mc).zip(vc) {
                *p = *p * decay - lr * ((m / bc1) / ((v / bc2).sqrt() + eps));
            }
        });
        Ok(())
    }
}

/// d e + (1 − d) θ.
struct Lerp {
    decay: f32,
}

impl CustomOp2 for Lerp {
    fn name(&self) -> &'static str {
        "erg-ema"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (e, p) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        if e.len() != p.len() {
            candle_core::bail!("{}: average and parameter differ in size", self.name());
        }
        let (d, c) = (self.decay, 1.0 - self.decay);
        Ok((CpuStorage::F32(zip_map(e, p, |e, p| d * e + c * p)), l1.shape().clone()))
    }
}

/// One AdamW step: returns the new moments (m′, v′) and updates `param` in place from them
/// (all the same shape; see [`applies`]). Errors: sizes that differ, tensors the kernels do not
/// apply to.
pub fn adamw_step(param: &Tensor, m: &Tensor, v: &Tensor, grad: &Tensor, step: &AdamWStep) -> Result<(Tensor, Tensor)> {
    let m = m.apply_op2_no_bwd(grad, &Moment { beta: step.beta1 as f32, square: false })?;
    let v = v.apply_op2_no_bwd(grad, &Moment { beta: step.beta2 as f32, square: true })?;
    param.inplace_op3(&m, &v, &Param { step: *step })?;
    Ok((m, v))
}

/// The EMA update: d·`average` + (1 − d)·`param`, a new tensor.
pub fn ema_step(average: &Tensor, param: &Tensor, decay: f64) -> Result<Tensor> {
    average.apply_op2_no_bwd(param, &Lerp { decay: decay as f32 })
}
