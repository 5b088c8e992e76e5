//! Tangential damping CFG (TCFG; Kwon, Hong, Kim, Choi 2025, "TCFG: Tangential Damping
//! Classifier-free Guidance"), as a combiner of any guidance term.
//!
//! Per sample, the positive and negative predictions (flattened to N values) form a 2 × N matrix
//! A = [v_pos; v_neg] with SVD A = U Σ Vᵀ. The negative keeps only its component along the first
//! right singular vector v₁ (the direction the two predictions share), dropping the tangential
//! one: v_neg' = ⟨v_neg, v₁⟩ v₁; then v = v_pos + s·(v_pos − v_neg'). diffusers'
//! `TangentialClassifierFreeGuidance` does the same with a full SVD; for a 2 × N matrix the
//! right singular vectors follow from the 2 × 2 Gram matrix A Aᵀ, computed here in f64.
use candle_core::{DType, Tensor};

use crate::Result;

/// The damped negative v_neg' (B, …) of `neg` against `pos` (both (B, …)).
/// When both are zero the negative is returned unchanged.
pub fn damped_negative(pos: &Tensor, neg: &Tensor) -> Result<Tensor> {
    let b = pos.dim(0)?;
    let (p, n) = (pos.flatten_from(1)?.to_dtype(DType::F64)?, neg.flatten_from(1)?.to_dtype(DType::F64)?);
    let pp = p.sqr()?.sum(1)?.to_vec1::<f64>()?;
    let nn = n.sqr()?.sum(1)?.to_vec1::<f64>()?;
    let pn = (&p * &n)?.sum(1)?.to_vec1::<f64>()?;
    // Top eigenvector u = (u₀, u₁) of G = [[pp, pn], [pn, nn]] (the first left singular vector),
    // then v₁ = Aᵀu / σ₁ and ⟨v_neg, v₁⟩ v₁ = c_p·v_pos + c_n·v_neg with
    // c = (⟨v_neg, Aᵀu⟩ / σ₁²)·u, where ⟨v_neg, Aᵀu⟩ = u₀·pn + u₁·nn and σ₁² = λ_max.
    let (mut cp, mut cn) = (vec![0f64; b], vec![1f64; b]);
    for i in 0..b {
        let (a, c, d) = (pp[i], pn[i], nn[i]);
        let half_trace = 0.5 * (a + d);
        let disc = (0.25 * (a - d) * (a - d) + c * c).sqrt();
        let lambda = half_trace + disc;
        if lambda <= 0.0 {
            continue; // both predictions are zero
        }
        // eigenvector of [[a, c], [c, d]] for λ: (c, λ − a) or (λ − d, c), the better conditioned
        let (u0, u1) = if (lambda - a).abs() + c.abs() >= (lambda - d).abs() + c.abs() { (c, lambda - a) } else { (lambda - d, c) };
        let norm = (u0 * u0 + u1 * u1).sqrt();
        let (u0, u1) = if norm > 0.0 { (u0 / norm, u1 / norm) } else { (1.0, 0.0) };
        let k = (u0 * c + u1 * d) / lambda;
        cp[i] = k * u0;
        cn[i] = k * u1;
    }
    let keep: Vec<usize> = std::iter::once(b).chain(std::iter::repeat_n(1, pos.rank() - 1)).collect();
    let coef = |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(v, keep.as_slice(), pos.device())?.to_dtype(pos.dtype())?) };
    Ok((pos.broadcast_mul(&coef(cp)?)? + neg.broadcast_mul(&coef(cn)?)?)?)
}
