//! The linear layer y = x Wᵀ + b with PyTorch's (and candle-nn's) layout, weight (out, in) and
//! bias (out).
//!
//! On CPU f32 (fused kernels on) it is one autograd node whose forward and backward call `gemm`
//! directly: y = x Wᵀ + b; ∂x = ∂y W, ∂W = ∂yᵀ x, ∂b = Σ_rows ∂y (column sums in a fixed order,
//! see [`crate::broadcast`]). candle's composition of the same layer — reshape, transpose,
//! matmul, broadcast add — is four nodes, and candle's backward zero-fills and accumulates a
//! gradient buffer per node, differentiates the bias through a strided reduction and adds the
//! weight gradient through a transposed view; at the models' shapes that bookkeeping cost more
//! than the products. Elsewhere (CUDA, f16, [`Kernels::Candle`]) the candle composition runs, which
//! gives the same values (tested in `tests/kernels.rs`).
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::buffer::{assume_init, uninit};
use crate::fused::f32_slice;
use crate::Kernels;

/// y = x Wᵀ + b; `x` (..., in), `weight` (out, in), `bias` (out,) → (..., out). One autograd node
/// on `gemm` where `kernels` applies (see the module docs), candle's composition elsewhere.
///
/// Errors: `x`'s last dimension is not `in`; operands candle cannot multiply.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, kernels: Kernels) -> Result<Tensor> {
    let mut operands = vec![x, weight];
    operands.extend(bias);
    if kernels.applies(&operands) {
        let (out, inp) = weight.dims2()?;
        if x.dim(candle_core::D::Minus1)? != inp {
            candle_core::bail!("linear layer expects inputs (..., {inp}), got {:?}", x.dims());
        }
        let bias = match bias {
            Some(b) => b.contiguous()?,
            None => Tensor::zeros(out, x.dtype(), x.device())?,
        };
        return x.contiguous()?.apply_op3(&weight.contiguous()?, &bias, FusedLinear);
    }
    let w = weight.t()?; // (in, out)
    let y = match x.dims() {
        // One 2-D product over all leading dimensions (a broadcast batched matmul is slower).
        [lead @ .., k] if lead.len() >= 2 && x.is_contiguous() => {
            let rows = lead.iter().product::<usize>();
            let mut out = lead.to_vec();
            out.push(w.dim(1)?);
            x.reshape((rows, *k))?.matmul(&w)?.reshape(out)?
        }
        [lead @ .., _] if lead.len() >= 2 => x.broadcast_matmul(&w)?,
        _ => x.matmul(&w)?,
    };
    match bias {
        Some(b) => crate::broadcast::add_bias(&y, b, kernels),
        None => Ok(y),
    }
}

/// `dst (m × n) = a (m × k) · b (k × n)`; each matrix as (pointer, row stride, column stride) in
/// elements; threads as candle's matmul uses them.
///
/// Safety: the pointers must cover the strided extents.
unsafe fn product(m: usize, n: usize, k: usize, dst: *mut f32, a: (*const f32, isize, isize), b: (*const f32, isize, isize)) {
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k >= 1 << 15 { Parallelism::Rayon(threads) } else { Parallelism::None };
    gemm(m, n, k, dst, 1, n as isize, false, a.0, a.2, a.1, b.0, b.2, b.1, 0.0, 1.0, false, false, false, par);
}

/// Rows and widths of x (R, in), w (out, in).
fn dims(lx: &Layout, lw: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (out, inp) = lw.shape().dims2()?;
    let rows = lx.shape().elem_count() / inp.max(1);
    Ok((rows, inp, out))
}

struct FusedLinear;
struct LinearBwdInput;
struct LinearBwdWeight;

impl CustomOp3 for FusedLinear {
    fn name(&self) -> &'static str {
        "erg-linear"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?, f32_slice(s3, l3, self.name())?);
        let (rows, inp, out) = dims(l1, l2)?;
        let mut y = uninit(rows * out);
        // Wᵀ (in × out): row stride 1, column stride `in`. The product writes all of y (β = 0).
        let mut y = unsafe {
            product(rows, out, inp, y.as_mut_ptr() as *mut f32, (x.as_ptr(), inp as isize, 1), (w.as_ptr(), 1, inp as isize));
            assume_init(y)
        };
        y.par_chunks_mut(out * 64).for_each(|c| c.chunks_exact_mut(out).for_each(|r| r.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv)));
        let mut shape = l1.dims().to_vec();
        *shape.last_mut().expect("rank ≥ 1") = out;
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let dx = g.apply_op2_no_bwd(w, &LinearBwdInput)?;
        let dw = g.apply_op2_no_bwd(x, &LinearBwdWeight)?;
        let db = g.apply_op1_no_bwd(&crate::broadcast::ColumnSums)?.reshape(b.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp2 for LinearBwdInput {
    fn name(&self) -> &'static str {
        "erg-linear-bwd-input"
    }
    /// ∂x = ∂y W: (R × out) · (out × in).
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, w) = (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?);
        let (out, inp) = l2.shape().dims2()?;
        let rows = g.len() / out.max(1);
        let mut dx = uninit(rows * inp);
        // SAFETY: the product writes all of dx (β = 0).
        let dx = unsafe {
            product(rows, inp, out, dx.as_mut_ptr() as *mut f32, (g.as_ptr(), out as isize, 1), (w.as_ptr(), inp as isize, 1));
            assume_init(dx)
        };
        let mut shape = l1.dims().to_vec();
        *shape.last_mut().expect("rank ≥ 1") = inp;
        Ok((CpuStorage::F32(dx), Shape::from(shape)))
    }
}

impl CustomOp2 for LinearBwdWeight {
    fn name(&self) -> &'static str {
        "erg-linear-bwd-weight"
    }
    /// ∂W = ∂yᵀ x: (out × R) · (R × in).
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, x) = (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?);
        let out = *l1.dims().last().expect("rank ≥ 1");
        let inp = *l2.dims().last().expect("rank ≥ 1");
        let rows = g.len() / out.max(1);
        let mut dw = uninit(out * inp);
        // SAFETY: the product writes all of dw (β = 0; with rows = 0 gemm writes zeros).
        let dw = unsafe {
            product(out, inp, rows, dw.as_mut_ptr() as *mut f32, (g.as_ptr(), 1, out as isize), (x.as_ptr(), inp as isize, 1));
            assume_init(dw)
        };
        Ok((CpuStorage::F32(dw), Shape::from((out, inp))))
    }
}
