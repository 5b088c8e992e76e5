//! Multi-head softmax attention as one CPU kernel with a backward pass, reading q, k and v
//! straight from the packed qkv projection and writing heads side by side, so no head split,
//! transpose, copy or (B, H, N, N) logits tensor appears in the autograd graph.
//!
//! For each batch row b and head h (in parallel; each a few small single-threaded `gemm`
//! products — candle runs a batched matmul as one multi-threaded product per head, whose
//! scheduling dominates at the models' 64 × 64 × 32 shapes):
//! - forward: S = s_b·Q Kᵀ, P = softmax(S) row-wise, O = P V;
//! - backward (P recomputed from Q and K, as FlashAttention does, instead of stored):
//!   dV = Pᵀ dO, dP = dO Vᵀ, dS = s_b·P ⊙ (dP − rowsum(dP ⊙ P)), dQ = dS K, dK = dSᵀ Q.
//!
//! s_b = τ_b / √d_h is a per-row scale, so the batched positive and temperature-rectified rows of
//! one ERG step (Eq. 10) share one call. Same values as split-head attention with the logits
//! scaled by s_b (erg's `attention` with a temperature rectifier) up to f32 rounding (tested in
//! `tests/kernels.rs`).
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use candle_core::Result;

use crate::buffer::{assume_init, uninit};
use crate::fused::{dot8, exp_approx, f32_slice, max8, sum8};
use crate::{shape_error, Kernels};

/// A pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer `i` elements on (a method, so closures capture the `Sync` wrapper).
    fn at(&self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

/// `dst (m × n) = a (m × k) · b (k × n)`, single-threaded; each matrix given by a pointer
/// and its (row, column) strides in elements.
///
/// Safety: the pointers must cover the strided extents.
unsafe fn matmul(m: usize, n: usize, k: usize, dst: (*mut f32, isize, isize), a: (*const f32, isize, isize), b: (*const f32, isize, isize)) {
    gemm(m, n, k, dst.0, dst.2, dst.1, false, a.0, a.2, a.1, b.0, b.2, b.1, 0.0, 1.0, false, false, false, Parallelism::None);
}

/// Geometry of a packed qkv tensor (B, N, 3·H·d_h).
#[derive(Clone, Copy)]
struct Geometry {
    b: usize,
    n: usize,
    heads: usize,
    dh: usize,
}

impl Geometry {
    fn d(&self) -> usize {
        self.heads * self.dh
    }
    /// Offset of part `p` (0 = q, 1 = k, 2 = v) of head `h` in batch row `b`.
    fn offset(&self, b: usize, p: usize, h: usize) -> usize {
        b * self.n * 3 * self.d() + p * self.d() + h * self.dh
    }
}

/// P = softmax(s·Q Kᵀ) of one (b, h) into `p` (N × N, row-major).
fn probabilities(qkv: &[f32], g: Geometry, b: usize, h: usize, scale: f32, p: &mut [f32]) {
    let (n, rs) = (g.n, 3 * g.d() as isize);
    let q = qkv[g.offset(b, 0, h)..].as_ptr();
    let k = qkv[g.offset(b, 1, h)..].as_ptr();
    // Kᵀ as a (d_h × N) matrix: row stride 1, column stride 3D.
    unsafe { matmul(n, n, g.dh, (p.as_mut_ptr(), n as isize, 1), (q, rs, 1), (k, 1, rs)) };
    for row in p.chunks_exact_mut(n) {
        let m = max8(row) * scale;
        row.iter_mut().for_each(|v| *v = exp_approx(*v * scale - m));
        let inv = 1.0 / sum8(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

struct PackedAttention {
    heads: usize,
    scales: Vec<f32>,
}

/// The geometry of `l`, checked against H = `heads` and one scale per batch row.
fn geometry(l: &Layout, heads: usize, scales: &[f32]) -> candle_core::Result<Geometry> {
    let dims = l.dims();
    if dims.len() != 3 || !dims[2].is_multiple_of(3 * heads) || scales.len() != dims[0] {
        candle_core::bail!("packed attention: qkv {dims:?} is not (B, N, 3·H·d_h) with H = {heads} and {} row scales", scales.len());
    }
    Ok(Geometry { b: dims[0], n: dims[1], heads, dh: dims[2] / (3 * heads) })
}

impl CustomOp1 for PackedAttention {
    fn name(&self) -> &'static str {
        "erg-packed-attention"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(s, l, self.name())?;
        let g = geometry(l, self.heads, &self.scales)?;
        let (n, d) = (g.n, g.d());
        let mut out = uninit(g.b * n * d);
        let dst = SharedMut(out.as_mut_ptr() as *mut f32);
        (0..g.b * g.heads).into_par_iter().for_each_init(
            || vec![0f32; n * n],
            |p, i| {
                let (b, h) = (i / g.heads, i % g.heads);
                probabilities(qkv, g, b, h, self.scales[b], p);
                let v = qkv[g.offset(b, 2, h)..].as_ptr();
                let o = dst.at(b * n * d + h * g.dh); // (N × d_h), row stride D
                unsafe { matmul(n, g.dh, n, (o, d as isize, 1), (p.as_ptr(), n as isize, 1), (v, 3 * d as isize, 1)) };
            },
        );
        // SAFETY: head h of item b wrote columns [h·d_h, (h+1)·d_h) of all N rows of item b (β = 0),
        // so every element of out.
        Ok((CpuStorage::F32(unsafe { assume_init(out) }), Shape::from((g.b, n, d))))
    }
    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = PackedAttentionBwd { heads: self.heads, scales: self.scales.clone() };
        Ok(Some(qkv.apply_op2_no_bwd(&grad.contiguous()?, &op)?))
    }
}

struct PackedAttentionBwd {
    heads: usize,
    scales: Vec<f32>,
}

impl CustomOp2 for PackedAttentionBwd {
    fn name(&self) -> &'static str {
        "erg-packed-attention-bwd"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (qkv, go) = (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?);
        let g = geometry(l1, self.heads, &self.scales)?;
        let (n, d, dh) = (g.n, g.d(), g.dh);
        let (rs, ors) = (3 * d as isize, d as isize);
        let mut dqkv = uninit(qkv.len());
        let dst = SharedMut(dqkv.as_mut_ptr() as *mut f32);
        (0..g.b * g.heads).into_par_iter().for_each_init(
            || (vec![0f32; n * n], vec![0f32; n * n]),
            |(p, dp), i| {
                let (b, h) = (i / g.heads, i % g.heads);
                let scale = self.scales[b];
                probabilities(qkv, g, b, h, scale, p);
                let (q, k, v) = (qkv[g.offset(b, 0, h)..].as_ptr(), qkv[g.offset(b, 1, h)..].as_ptr(), qkv[g.offset(b, 2, h)..].as_ptr());
                let dout = go[b * n * d + h * dh..].as_ptr(); // (N × d_h), row stride D
                let (dq, dk, dv) = (dst.at(g.offset(b, 0, h)), dst.at(g.offset(b, 1, h)), dst.at(g.offset(b, 2, h)));
                unsafe {
                    // dV = Pᵀ dO
                    matmul(n, dh, n, (dv, rs, 1), (p.as_ptr(), 1, n as isize), (dout, ors, 1));
                    // dP = dO Vᵀ
                    matmul(n, n, dh, (dp.as_mut_ptr(), n as isize, 1), (dout, ors, 1), (v, 1, rs));
                }
                // dS = s·P ⊙ (dP − rowsum(dP ⊙ P)), in place of dP
                for (dr, pr) in dp.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
                    let dot = dot8(dr, pr);
                    for (x, &pv) in dr.iter_mut().zip(pr) {
                        *x = scale * pv * (*x - dot);
                    }
                }
                unsafe {
                    // dQ = dS K, dK = dSᵀ Q
                    matmul(n, dh, n, (dq, rs, 1), (dp.as_ptr(), n as isize, 1), (k, rs, 1));
                    matmul(n, dh, n, (dk, rs, 1), (dp.as_ptr(), 1, n as isize), (q, rs, 1));
                }
            },
        );
        // SAFETY: dQ, dK, dV of head h of item b are written whole (β = 0): all of dqkv.
        Ok((CpuStorage::F32(unsafe { assume_init(dqkv) }), l1.shape().clone()))
    }
}

/// Softmax attention over a packed projection: `qkv` (B, N, 3·H·d_h), laid out per token as
/// [q | k | v], each H heads of d_h (the `(B, N, 3, H, d_h)` view of DiT's and SD3's `attn.qkv`),
/// → (B, N, H·d_h) with heads side by side (the input of `attn.proj`). Row b uses the logit
/// scale `scales[b]` = τ_b/√d_h (1/√d_h for standard attention; ERG's temperature τ multiplies
/// the logits, Eq. 9 / Algorithm 1 with α = γ = K = 1).
///
/// Differentiable. The fused kernel where `kernels` applies (see the module docs); elsewhere
/// candle ops.
/// Errors: `qkv` not (B, N, 3·H·d_h); `scales` not of length B.
pub fn packed_attention(qkv: &Tensor, heads: usize, scales: &[f64], kernels: Kernels) -> Result<Tensor> {
    let (b, n, w) = qkv.dims3()?;
    if heads == 0 || !w.is_multiple_of(3 * heads) || scales.len() != b {
        return Err(shape_error(format!("packed attention: qkv {:?} with {heads} heads and {} row scales", qkv.dims(), scales.len())));
    }
    let dh = w / (3 * heads);
    if kernels.applies(&[qkv]) {
        let op = PackedAttention { heads, scales: scales.iter().map(|&s| s as f32).collect() };
        return Ok(qkv.contiguous()?.apply_op1(op)?);
    }
    let qkv = qkv.reshape((b, n, 3, heads, dh))?.permute((2, 0, 3, 1, 4))?; // (3, B, H, N, d_h)
    let (q, k, v) = (qkv.get(0)?.contiguous()?, qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
    let s = Tensor::from_vec(scales.iter().map(|&s| s as f32).collect::<Vec<_>>(), (b, 1, 1, 1), qkv.device())?.to_dtype(qkv.dtype())?;
    let logits = q.matmul(&k.transpose(2, 3)?.contiguous()?)?.broadcast_mul(&s)?; // (B, H, N, N)
    let o = candle_nn::ops::softmax(&logits, candle_core::D::Minus1)?.matmul(&v)?; // (B, H, N, d_h)
    Ok(o.transpose(1, 2)?.reshape((b, n, heads * dh))?)
}
