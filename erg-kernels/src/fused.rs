//! Fused, row-parallel CPU kernels for the hot elementwise/row operations of the transformers,
//! each with a backward pass (unlike candle-nn's fused `softmax_last_dim` / `layer_norm`), so the
//! same fast kernel serves sampling and training:
//! - [`softmax_last_dim`]: y = exp(x − max) / Σ exp(x − max); ∂x = y ⊙ (∂y − Σ ∂y ⊙ y);
//! - [`layer_norm_no_affine`]: x̂ = (x − μ)·r, r = (σ² + ε)^−½;
//!   ∂x = r·(∂x̂ − mean(∂x̂) − x̂ ⊙ mean(∂x̂ ⊙ x̂)) (Ba et al. 2016);
//! - [`gelu_erf`]: y = x·Φ(x); ∂x = ∂y·(Φ(x) + x·φ(x));
//! - [`gelu_tanh`]: y = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³) (the "tanh" GELU of DiT, SiT,
//!   SD3); ∂x = ∂y·(½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²)).
//!
//! candle runs elementwise ops on one thread; these run rows in parallel with rayon and make one
//! pass over memory. They apply to contiguous f32 tensors on the CPU; anything else (CUDA, f16,
//! strided views) takes the differentiable candle composition, which gives the same values.
//! The backward kernels are themselves fused custom ops without a second derivative.
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use candle_core::Result;

use crate::buffer::{assume_init, uninit, written};
use crate::Kernels;

pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v,
        _ => candle_core::bail!("{op}: f32 only"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: contiguous input only"),
    }
}

/// Σ x with 8 independent accumulators, so the loop vectorises (a single f32 accumulator cannot
/// be reordered by the compiler and runs at one add per latency).
#[inline]
pub(crate) fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// Σ aᵢbᵢ, vectorisable (see [`sum8`]).
#[inline]
pub(crate) fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// max x, vectorisable.
#[inline]
pub(crate) fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().chain(rest).copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Rows per rayon task, so that tiny rows do not drown in scheduling.
fn rows_per_task(d: usize) -> usize {
    (4096 / d.max(1)).max(1)
}

struct Softmax;
struct SoftmaxBwd;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "erg-softmax-last-dim"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let d = l.dims()[l.dims().len() - 1];
        let mut y = uninit(x.len());
        y.par_chunks_mut(d * rows_per_task(d)).zip(x.par_chunks(d * rows_per_task(d))).for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
                let m = max8(xr);
                for (o, &v) in yr.iter_mut().zip(xr) {
                    o.write(exp_approx(v - m));
                }
                // SAFETY: the loop above wrote the whole row.
                let yr = unsafe { written(yr) };
                let inv = 1.0 / sum8(yr);
                yr.iter_mut().for_each(|o| *o *= inv);
            }
        });
        // SAFETY: every row was written.
        Ok((CpuStorage::F32(unsafe { assume_init(y) }), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxBwd)?))
    }
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "erg-softmax-last-dim-bwd"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, g) = (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?);
        let d = l1.dims()[l1.dims().len() - 1];
        let k = d * rows_per_task(d);
        let mut dx = uninit(y.len());
        dx.par_chunks_mut(k).zip(y.par_chunks(k).zip(g.par_chunks(k))).for_each(|(oc, (yc, gc))| {
            for ((o, yr), gr) in oc.chunks_mut(d).zip(yc.chunks(d)).zip(gc.chunks(d)) {
                let dot = dot8(yr, gr);
                for ((o, &a), &b) in o.iter_mut().zip(yr).zip(gr) {
                    o.write(a * (b - dot));
                }
            }
        });
        // SAFETY: every element was written (output and input chunks have equal lengths).
        Ok((CpuStorage::F32(unsafe { assume_init(dx) }), l1.shape().clone()))
    }
}

/// Softmax over the last dimension with a backward pass; `x` (..., D). The fused kernel where
/// `kernels` applies, else candle's composition.
pub fn softmax_last_dim(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    if !kernels.applies(&[x]) {
        return Ok(candle_nn::ops::softmax(x, D::Minus1)?);
    }
    Ok(x.contiguous()?.apply_op1(Softmax)?)
}

struct LayerNorm {
    eps: f32,
}
struct LayerNormBwd {
    eps: f32,
}

/// Mean and reciprocal standard deviation of a row (two passes: mean, then centred squares).
fn moments(r: &[f32], eps: f32) -> (f32, f32) {
    let n = r.len() as f32;
    let mean = sum8(r) / n;
    let mut acc = [0f32; 8];
    let chunks = r.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += (c[i] - mean) * (c[i] - mean);
        }
    }
    let var = (acc.iter().sum::<f32>() + rest) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "erg-layer-norm-no-affine"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let d = l.dims()[l.dims().len() - 1];
        let k = d * rows_per_task(d);
        let mut y = uninit(x.len());
        y.par_chunks_mut(k).zip(x.par_chunks(k)).for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_mut(d).zip(xc.chunks(d)) {
                let (m, r) = moments(xr, self.eps);
                for (o, &v) in yr.iter_mut().zip(xr) {
                    o.write((v - m) * r);
                }
            }
        });
        // SAFETY: every element was written (output and input chunks have equal lengths).
        Ok((CpuStorage::F32(unsafe { assume_init(y) }), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad_res.contiguous()?, &LayerNormBwd { eps: self.eps })?))
    }
}

impl CustomOp2 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "erg-layer-norm-no-affine-bwd"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?);
        let d = l1.dims()[l1.dims().len() - 1];
        let k = d * rows_per_task(d);
        let n = d as f32;
        let mut dx = uninit(x.len());
        dx.par_chunks_mut(k).zip(x.par_chunks(k).zip(g.par_chunks(k))).for_each(|(oc, (xc, gc))| {
            for ((o, xr), gr) in oc.chunks_mut(d).zip(xc.chunks(d)).zip(gc.chunks(d)) {
                let (m, r) = moments(xr, self.eps);
                // mean(g) and mean(g ⊙ x̂) with x̂ = (x − m)·r: Σ g(x − m) = Σ gx − m Σ g.
                let sg = sum8(gr);
                let (mg, mgx) = (sg / n, r * (dot8(gr, xr) - m * sg) / n);
                for ((o, &v), &gv) in o.iter_mut().zip(xr).zip(gr) {
                    o.write(r * (gv - mg - (v - m) * r * mgx));
                }
            }
        });
        // SAFETY: every element was written (output and input chunks have equal lengths).
        Ok((CpuStorage::F32(unsafe { assume_init(dx) }), l1.shape().clone()))
    }
}

/// Layer norm over the last dimension without affine parameters, with a backward pass;
/// `x` (..., D) → (..., D), ε = `eps`.
///
/// The fused kernel where `kernels` applies, else candle's mean/variance composition.
pub fn layer_norm_no_affine(x: &Tensor, eps: f64, kernels: Kernels) -> Result<Tensor> {
    if !kernels.applies(&[x]) {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        return Ok(xc.broadcast_div(&(var + eps)?.sqrt()?)?);
    }
    Ok(x.contiguous()?.apply_op1(LayerNorm { eps: eps as f32 })?)
}

struct GeluErf;
struct GeluErfBwd;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// exp(x) for f32 without a library call, so that loops over slices vectorise: x = n·ln 2 + r with
/// n rounded to nearest (the 1.5·2²³ trick), exp(r) by Cephes' `expf` polynomial on
/// |r| ≤ ln 2 / 2, times 2ⁿ built in the exponent bits. x is clamped to [−87.3, 88.7] (the normal
/// range). Relative error ≤ 2·10⁻⁷ (tested against `f32::exp`).
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³
    let x = x.clamp(-87.3, 88.7);
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4; // ln 2 = 0.693359375 − 2.12194440e−4
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5·10⁻⁷ in exact arithmetic, ≤ 6·10⁻⁷ in f32,
/// tested against `libm::erff`), branch-free so that loops vectorise.
#[inline(always)]
pub fn erf_approx(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6) * t;
    (1.0 - poly * exp_approx(-a * a)).copysign(x)
}
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// Elements per rayon task of the elementwise kernels.
const CHUNK: usize = 16 * 1024;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "erg-gelu-erf"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let mut y = uninit(x.len());
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(yc, xc)| {
            for (o, &v) in yc.iter_mut().zip(xc) {
                o.write(0.5 * v * (1.0 + erf_approx(v * FRAC_1_SQRT_2)));
            }
        });
        // SAFETY: every element was written (output and input chunks have equal lengths).
        Ok((CpuStorage::F32(unsafe { assume_init(y) }), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad_res.contiguous()?, &GeluErfBwd)?))
    }
}

impl CustomOp2 for GeluErfBwd {
    fn name(&self) -> &'static str {
        "erg-gelu-erf-bwd"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?);
        let mut dx = uninit(x.len());
        dx.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))).for_each(|(oc, (xc, gc))| {
            for ((o, &v), &gv) in oc.iter_mut().zip(xc).zip(gc) {
                let cdf = 0.5 * (1.0 + erf_approx(v * FRAC_1_SQRT_2));
                let pdf = FRAC_1_SQRT_2PI * exp_approx(-0.5 * v * v);
                o.write(gv * (cdf + v * pdf));
            }
        });
        // SAFETY: every element was written (output and input chunks have equal lengths).
        Ok((CpuStorage::F32(unsafe { assume_init(dx) }), l1.shape().clone()))
    }
}

/// GELU with the exact (erf) form, with a backward pass. The fused kernel where `kernels`
/// applies, else candle's `gelu_erf`.
pub fn gelu_erf(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    if !kernels.applies(&[x]) {
        return Ok(x.gelu_erf()?);
    }
    Ok(x.contiguous()?.apply_op1(GeluErf)?)
}

/// tanh(u) = 1 − 2 / (e^{2u} + 1) on [`exp_approx`], branch-free so that loops vectorise.
/// Absolute error ≤ 3·10⁻⁷ (tested against `f32::tanh`); exactly ±1 beyond |u| ≈ 44.
#[inline(always)]
pub fn tanh_approx(u: f32) -> f32 {
    1.0 - 2.0 / (exp_approx(2.0 * u) + 1.0)
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_TANH_C: f32 = 0.044_715;

struct GeluTanh;
struct GeluTanhBwd;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "erg-gelu-tanh"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let mut y = uninit(x.len());
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(yc, xc)| {
            for (o, &v) in yc.iter_mut().zip(xc) {
                o.write(0.5 * v * (1.0 + tanh_approx(SQRT_2_OVER_PI * v * (1.0 + GELU_TANH_C * v * v))));
            }
        });
        // SAFETY: every element was written (output and input chunks have equal lengths).
        Ok((CpuStorage::F32(unsafe { assume_init(y) }), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad_res.contiguous()?, &GeluTanhBwd)?))
    }
}

impl CustomOp2 for GeluTanhBwd {
    fn name(&self) -> &'static str {
        "erg-gelu-tanh-bwd"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?);
        let mut dx = uninit(x.len());
        dx.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))).for_each(|(oc, (xc, gc))| {
            for ((o, &v), &gv) in oc.iter_mut().zip(xc).zip(gc) {
                let v2 = v * v;
                let t = tanh_approx(SQRT_2_OVER_PI * v * (1.0 + GELU_TANH_C * v2));
                let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * v2);
                o.write(gv * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du));
            }
        });
        // SAFETY: every element was written (output and input chunks have equal lengths).
        Ok((CpuStorage::F32(unsafe { assume_init(dx) }), l1.shape().clone()))
    }
}

/// GELU with the tanh approximation (PyTorch's `approximate="tanh"`, candle's `gelu`), with a
/// backward pass. The fused kernel where `kernels` applies, else candle's `gelu`.
pub fn gelu_tanh(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    if !kernels.applies(&[x]) {
        return Ok(x.gelu()?);
    }
    Ok(x.contiguous()?.apply_op1(GeluTanh)?)
}
