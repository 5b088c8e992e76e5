//! The linear layer of every model: y = x Wᵀ + b with PyTorch's (and candle-nn's) layout, weight
//! (out, in) and bias (out), so checkpoints load unchanged.
//!
//! On CPU f32 (fused kernels on) it is one autograd node whose forward and backward call `gemm`
//! directly: y = x Wᵀ + b; ∂x = ∂y W, ∂W = ∂yᵀ x, ∂b = Σ_rows ∂y (column sums in a fixed order,
//! see [`super::broadcast`]). candle's composition of the same layer — reshape, transpose,
//! matmul, broadcast add — is four nodes, and candle's backward zero-fills and accumulates a
//! gradient buffer per node, differentiates the bias through a strided reduction and adds the
//! weight gradient through a transposed view; at the models' shapes that bookkeeping cost more
//! than the products. Elsewhere (CUDA, f16, fused kernels off) the candle composition runs, which
//! gives the same values (tested in `tests/fused.rs`).
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Module, Shape, Tensor};
use candle_nn::VarBuilder;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::fused::{f32_slice, fast_path};
use crate::Result;

/// y = x Wᵀ + b; `x` (..., in) → (..., out).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// From a weight (out, in) and an optional bias (out,).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// The weight (out, in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias (out,), if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl From<candle_nn::Linear> for Linear {
    fn from(l: candle_nn::Linear) -> Self {
        Self::new(l.weight().clone(), l.bias().cloned())
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let fused = super::ops::fused_kernels() && fast_path(&[x, &self.weight]) && self.bias.iter().all(|b| fast_path(&[b]));
        if fused {
            let (out, inp) = self.weight.dims2()?;
            if x.dim(candle_core::D::Minus1)? != inp {
                candle_core::bail!("linear layer expects inputs (..., {inp}), got {:?}", x.dims());
            }
            let bias = match &self.bias {
                Some(b) => b.contiguous()?,
                None => Tensor::zeros(out, x.dtype(), x.device())?,
            };
            return x.contiguous()?.apply_op3(&self.weight.contiguous()?, &bias, FusedLinear);
        }
        let w = self.weight.t()?; // (in, out)
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
        match &self.bias {
            Some(b) => super::broadcast::add_bias(&y, b).map_err(candle_core::Error::wrap),
            None => Ok(y),
        }
    }
}

/// A linear layer with candle-nn's initialisation when created fresh (weight and bias as
/// `candle_nn::linear`), loaded when `vb` holds `weight` and `bias`.
///
/// Errors: `vb` holds `weight`/`bias` of other shapes than (out, in)/(out,), or lacks them when loading.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(candle_nn::linear(in_dim, out_dim, vb)?.into())
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
        let mut y = vec![0f32; rows * out];
        // Wᵀ (in × out): row stride 1, column stride `in`.
        unsafe { product(rows, out, inp, y.as_mut_ptr(), (x.as_ptr(), inp as isize, 1), (w.as_ptr(), 1, inp as isize)) };
        y.par_chunks_mut(out * 64).for_each(|c| c.chunks_exact_mut(out).for_each(|r| r.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv)));
        let mut shape = l1.dims().to_vec();
        *shape.last_mut().expect("rank ≥ 1") = out;
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let dx = g.apply_op2_no_bwd(w, &LinearBwdInput)?;
        let dw = g.apply_op2_no_bwd(x, &LinearBwdWeight)?;
        let db = g.apply_op1_no_bwd(&super::broadcast::ColumnSums)?.reshape(b.shape())?;
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
        let mut dx = vec![0f32; rows * inp];
        unsafe { product(rows, inp, out, dx.as_mut_ptr(), (g.as_ptr(), out as isize, 1), (w.as_ptr(), inp as isize, 1)) };
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
        let mut dw = vec![0f32; out * inp];
        unsafe { product(out, inp, rows, dw.as_mut_ptr(), (g.as_ptr(), 1, out as isize), (x.as_ptr(), inp as isize, 1)) };
        Ok((CpuStorage::F32(dw), Shape::from((out, inp))))
    }
}
