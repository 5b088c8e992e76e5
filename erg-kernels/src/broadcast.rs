//! Row-broadcast operations of the transformers — bias add, adaLN modulation, gated residual —
//! as fused CPU kernels whose backward passes reduce over rows with vectorised loops.
//!
//! candle differentiates `broadcast_add`/`broadcast_mul` by `sum_keepdim` over the broadcast
//! dimensions, and its CPU reduction over non-trailing dimensions does two integer divisions per
//! element: in the DiT's training step these reductions (bias gradients of every linear layer,
//! shift/scale/gate gradients of every block) took more time than the whole forward pass. Here:
//! - [`add_bias`]: y = x + b, `x` (..., D), `b` (D); ∂b = Σ_rows ∂y;
//! - [`modulate`]: y = x ⊙ (1 + scale) + shift, `x` (B, N, D), `shift`/`scale` (B, D);
//!   ∂x = ∂y ⊙ (1 + scale), ∂shift = Σ_n ∂y, ∂scale = Σ_n ∂y ⊙ x (DiT's adaLN, Peebles & Xie 2023);
//! - [`gated_residual`]: y = x + gate ⊙ h, `x`/`h` (B, N, D), `gate` (B, D); ∂x = ∂y,
//!   ∂gate = Σ_n ∂y ⊙ h, ∂h = ∂y ⊙ gate (adaLN-Zero's gated residual).
//!
//! Every sum runs in a fixed order (rows in order within fixed chunks, chunks in order), so results
//! do not depend on the thread schedule and training stays bit-reproducible. The kernels apply to
//! f32 tensors on the CPU with [`crate::Kernels::Fused`]; anything else takes candle's broadcast
//! composition, which gives the same values (tested in
//! `tests/fused.rs`).
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use std::mem::MaybeUninit;

use rayon::prelude::*;

use candle_core::Result;

use crate::buffer::{assume_init, uninit};
use crate::fused::f32_slice;
use crate::{shape_error, Kernels};

/// Rows of a rank-2 view whose last dimension is contiguous: (values from the view's start, row
/// stride, rows, columns). The adaLN chunks (B, D) are such views of the (B, 6D) projection.
fn rows_view<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<(&'a [f32], usize, usize, usize)> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{op}: f32 only") };
    let (dims, stride) = (l.dims(), l.stride());
    if dims.len() != 2 || (stride[1] != 1 && dims[1] > 1) {
        candle_core::bail!("{op}: expects a (B, D) tensor with a contiguous last dimension, got dims {dims:?} strides {stride:?}");
    }
    Ok((&v[l.start_offset()..], stride[0], dims[0], dims[1]))
}

/// Rows summed per chunk before the chunks' partial sums are added in order.
const ROWS_PER_CHUNK: usize = 64;

/// Σ over the rows of `g` (rows of `d` values) → (d,), in a fixed order: rows within chunks of
/// [`ROWS_PER_CHUNK`] in parallel, then the chunks' sums in order.
fn column_sums(g: &[f32], d: usize) -> Vec<f32> {
    let partial: Vec<Vec<f32>> = g
        .par_chunks(d * ROWS_PER_CHUNK)
        .map(|c| {
            let mut acc = vec![0f32; d];
            for r in c.chunks_exact(d) {
                acc.iter_mut().zip(r).for_each(|(a, &v)| *a += v);
            }
            acc
        })
        .collect();
    let mut out = vec![0f32; d];
    for p in &partial {
        out.iter_mut().zip(p).for_each(|(a, &v)| *a += v);
    }
    out
}

/// Per batch item, Σ over its `n` rows of `g ⊙ h` (or of `g` when `h` is `None`): (B·N·D) → (B, D).
fn per_item_sums(g: &[f32], h: Option<&[f32]>, n: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; g.len() / n];
    out.par_chunks_mut(d).enumerate().for_each(|(b, acc)| {
        let gb = &g[b * n * d..(b + 1) * n * d];
        match h {
            None => gb.chunks_exact(d).for_each(|r| acc.iter_mut().zip(r).for_each(|(a, &v)| *a += v)),
            Some(h) => {
                let hb = &h[b * n * d..(b + 1) * n * d];
                for (gr, hr) in gb.chunks_exact(d).zip(hb.chunks_exact(d)) {
                    acc.iter_mut().zip(gr.iter().zip(hr)).for_each(|(a, (&x, &y))| *a += x * y);
                }
            }
        }
    });
    out
}

/// Applies `f(out_row, row_index)` to each row of a new (rows × d) buffer, rows in parallel;
/// `f` must write every slot of its row (each caller zips the row with input rows of length d).
fn map_rows(rows: usize, d: usize, f: impl Fn(&mut [MaybeUninit<f32>], usize) + Sync) -> Vec<f32> {
    let mut out = uninit(rows * d);
    let per_task = (16 * 1024 / d.max(1)).max(1);
    out.par_chunks_mut(d * per_task).enumerate().for_each(|(c, oc)| {
        for (i, o) in oc.chunks_exact_mut(d).enumerate() {
            f(o, c * per_task + i);
        }
    });
    // SAFETY: every row was written by `f` (the contract above).
    unsafe { assume_init(out) }
}

struct AddBias;
/// Σ over rows: (..., D) → (D,), in a fixed order ([`column_sums`]); no backward.
pub(crate) struct ColumnSums;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "erg-add-bias"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, b) = (f32_slice(s1, l1, self.name())?, f32_slice(s2, l2, self.name())?);
        let d = b.len();
        let y = map_rows(x.len() / d, d, |o, r| {
            for ((o, &v), &bv) in o.iter_mut().zip(&x[r * d..(r + 1) * d]).zip(b) {
                o.write(v + bv);
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let db = grad.contiguous()?.apply_op1_no_bwd(&ColumnSums)?.reshape(b.shape())?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "erg-column-sums"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l, self.name())?;
        let d = *l.dims().last().unwrap_or(&1);
        Ok((CpuStorage::F32(column_sums(g, d)), Shape::from(d)))
    }
}

/// y = x + b with `b` broadcast over the leading dimensions; `x` (..., D), `b` (D,). The bias
/// add of every linear layer ([`crate::linear`]).
///
/// Errors: `b` not of shape (D,).
pub fn add_bias(x: &Tensor, b: &Tensor, kernels: Kernels) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    if b.dims() != [d] {
        return Err(shape_error(format!("bias must have shape ({d},), got {:?}", b.dims())));
    }
    if !kernels.applies(&[x, b]) {
        return Ok(x.broadcast_add(b)?);
    }
    Ok(x.contiguous()?.apply_op2(&b.contiguous()?, AddBias)?)
}

struct Modulate;
struct ItemScale {
    offset: f32,
}
struct PerItemSums {
    n: usize,
}

impl CustomOp3 for Modulate {
    fn name(&self) -> &'static str {
        "erg-modulate"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let (shift, sh_stride, _, d) = rows_view(s2, l2, self.name())?;
        let (scale, sc_stride, _, _) = rows_view(s3, l3, self.name())?;
        let n = l1.dims()[1];
        let y = map_rows(x.len() / d, d, |o, r| {
            let b = r / n;
            let (sh, sc) = (&shift[b * sh_stride..b * sh_stride + d], &scale[b * sc_stride..b * sc_stride + d]);
            for (((o, &v), &s), &c) in o.iter_mut().zip(&x[r * d..(r + 1) * d]).zip(sh).zip(sc) {
                o.write(v * (1.0 + c) + s);
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        _shift: &Tensor,
        scale: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let dx = g.apply_op2_no_bwd(scale, &ItemScale { offset: 1.0 })?;
        let n = x.dim(1)?;
        let dshift = g.apply_op1_no_bwd(&PerItemSums { n })?;
        let dscale = g.apply_op2_no_bwd(x, &PerItemSums { n })?;
        Ok((Some(dx), Some(dshift), Some(dscale)))
    }
}

/// ∂y ⊙ (offset + v): `g` (B, N, D), `v` (B, D) a row view; ∂x of modulate (offset 1, v = scale)
/// and ∂h of the gated residual (offset 0, v = gate).
impl CustomOp2 for ItemScale {
    fn name(&self) -> &'static str {
        "erg-item-scale"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = f32_slice(s1, l1, self.name())?;
        let (v, stride, _, d) = rows_view(s2, l2, self.name())?;
        let n = l1.dims()[1];
        let out = map_rows(g.len() / d, d, |o, r| {
            let vr = &v[(r / n) * stride..(r / n) * stride + d];
            for ((o, &gv), &c) in o.iter_mut().zip(&g[r * d..(r + 1) * d]).zip(vr) {
                o.write(gv * (self.offset + c));
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// (B, N, D) → (B, D): Σ_n g (one input) or Σ_n g ⊙ h (two inputs).
impl CustomOp1 for PerItemSums {
    fn name(&self) -> &'static str {
        "erg-per-item-sums"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l, "erg-per-item-sums")?;
        let (b, d) = (l.dims()[0], l.dims()[2]);
        Ok((CpuStorage::F32(per_item_sums(g, None, self.n, d)), Shape::from((b, d))))
    }
}

impl CustomOp2 for PerItemSums {
    fn name(&self) -> &'static str {
        "erg-per-item-dot-sums"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, h) = (f32_slice(s1, l1, "erg-per-item-dot-sums")?, f32_slice(s2, l2, "erg-per-item-dot-sums")?);
        let (b, d) = (l1.dims()[0], l1.dims()[2]);
        Ok((CpuStorage::F32(per_item_sums(g, Some(h), self.n, d)), Shape::from((b, d))))
    }
}

/// Checks `x`/`h` (B, N, D) against a per-item vector (B, D).
fn check_items(x: &Tensor, v: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    let (b, n, d) = x.dims3()?;
    if v.dims() != [b, d] {
        return Err(shape_error(format!("{what} must have shape ({b}, {d}) for tokens {:?}, got {:?}", x.dims(), v.dims())));
    }
    Ok((b, n, d))
}

/// adaLN modulation y = x ⊙ (1 + scale) + shift; `x` (B, N, D), `shift`/`scale` (B, D)
/// (Peebles & Xie 2023, `modulate` in DiT's `models.py`).
///
/// Errors: shapes that do not match.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor, kernels: Kernels) -> Result<Tensor> {
    check_items(x, shift, "shift")?;
    check_items(x, scale, "scale")?;
    if !kernels.applies(&[x, shift, scale]) {
        return Ok(x.broadcast_mul(&(scale.unsqueeze(1)? + 1.0)?)?.broadcast_add(&shift.unsqueeze(1)?)?);
    }
    let lay = |t: &Tensor| -> candle_core::Result<Tensor> {
        if t.stride()[1] == 1 {
            Ok(t.clone())
        } else {
            t.contiguous()
        }
    };
    Ok(x.contiguous()?.apply_op3(&lay(shift)?, &lay(scale)?, Modulate)?)
}

struct GatedResidual;

impl CustomOp3 for GatedResidual {
    fn name(&self) -> &'static str {
        "erg-gated-residual"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let (gate, stride, _, d) = rows_view(s2, l2, self.name())?;
        let h = f32_slice(s3, l3, self.name())?;
        let n = l1.dims()[1];
        let y = map_rows(x.len() / d, d, |o, r| {
            let gt = &gate[(r / n) * stride..(r / n) * stride + d];
            for (((o, &xv), &hv), &gv) in o.iter_mut().zip(&x[r * d..(r + 1) * d]).zip(&h[r * d..(r + 1) * d]).zip(gt) {
                o.write(xv + gv * hv);
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        gate: &Tensor,
        h: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let dgate = g.apply_op2_no_bwd(h, &PerItemSums { n: x.dim(1)? })?;
        let dh = g.apply_op2_no_bwd(gate, &ItemScale { offset: 0.0 })?;
        Ok((Some(g), Some(dgate), Some(dh)))
    }
}

/// adaLN-Zero's gated residual y = x + gate ⊙ h; `x`/`h` (B, N, D), `gate` (B, D).
///
/// Errors: shapes that do not match.
pub fn gated_residual(x: &Tensor, gate: &Tensor, h: &Tensor, kernels: Kernels) -> Result<Tensor> {
    check_items(x, gate, "gate")?;
    if h.dims() != x.dims() {
        return Err(shape_error(format!("residual branch must have shape {:?}, got {:?}", x.dims(), h.dims())));
    }
    if !kernels.applies(&[x, gate, h]) {
        return Ok((x + h.broadcast_mul(&gate.unsqueeze(1)?)?)?);
    }
    let gate = if gate.stride()[1] == 1 { gate.clone() } else { gate.contiguous()? };
    Ok(x.contiguous()?.apply_op3(&gate, &h.contiguous()?, GatedResidual)?)
}
