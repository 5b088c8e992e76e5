//! Query smoothing of Smoothed Energy Guidance (SEG, Hong 2024, NeurIPS; official SEG-SDXL code):
//! a 2-D Gaussian blur of the queries over the token grid, which smooths the energy landscape of
//! attention. Kernel size ⌈6σ⌉ + 1 made odd, clipped to the grid, reflect padding (PyTorch's
//! `reflect`: the edge is not repeated), separable; σ = ∞ replaces every query by the mean query.
//! Works for non-square grids. (diffusers' SEG hook has the two σ regimes inverted.)
use candle_core::Tensor;

use crate::{Error, Result};

/// The (g × g) matrix of a 1-D Gaussian blur with reflect padding: `out = M · in`.
pub fn blur_matrix(g: usize, sigma: f64) -> Vec<f64> {
    let mut m = vec![0.0; g * g];
    if sigma.is_infinite() {
        m.iter_mut().for_each(|v| *v = 1.0 / g as f64);
        return m;
    }
    let c = (6.0 * sigma).ceil() as usize;
    let mut ks = c + 1 - c % 2; // odd
    let largest_odd = if g % 2 == 1 { g } else { g - 1 };
    ks = ks.min(largest_odd.max(1));
    let r = ks / 2;
    if r == 0 || sigma == 0.0 {
        (0..g).for_each(|i| m[i * g + i] = 1.0);
        return m;
    }
    let w: Vec<f64> = (0..ks).map(|k| (-((k as f64 - r as f64).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
    let z: f64 = w.iter().sum();
    for i in 0..g {
        for (k, wk) in w.iter().enumerate() {
            let mut j = i as i64 + k as i64 - r as i64;
            if j < 0 {
                j = -j;
            }
            if j >= g as i64 {
                j = 2 * (g as i64 - 1) - j;
            }
            m[i * g + j as usize] += wk / z;
        }
    }
    m
}

/// Blurs the first rows·cols queries of `q` (B, H, S, d) over the grid; the rest are unchanged.
pub fn smooth_queries(q: &Tensor, grid: (usize, usize), sigma: f64) -> Result<Tensor> {
    let (b, h, s, _) = q.dims4()?;
    let n = grid.0 * grid.1;
    if n > s || n == 0 {
        return Err(Error::shape(format!("token grid {grid:?} does not fit {s} query tokens")));
    }
    let (gh, gw) = grid;
    let d = q.dim(3)?;
    let mat = |g: usize| -> Result<Tensor> {
        let v: Vec<f32> = blur_matrix(g, sigma).into_iter().map(|a| a as f32).collect();
        Ok(Tensor::from_vec(v, (g, g), q.device())?.to_dtype(q.dtype())?)
    };
    // Separable: blur along grid rows, then along columns, O(N·(rows + cols)·d) rather than
    // the Kronecker operator's O(N²·d) (which SD3-sized grids cannot afford).
    let img = q.narrow(2, 0, n)?.contiguous()?.reshape((b * h, gh, gw * d))?; // (B·H, rows, cols·d)
    let img = mat(gh)?.broadcast_left(b * h)?.matmul(&img)?; // (B·H, rows, cols·d)
    let img = img.reshape((b * h * gh, gw, d))?; // (B·H·rows, cols, d)
    let img = mat(gw)?.broadcast_left(b * h * gh)?.matmul(&img)?; // (B·H·rows, cols, d)
    let blurred = img.reshape((b, h, n, d))?; // (B, H, N, d)
    if n == s {
        Ok(blurred)
    } else {
        Ok(Tensor::cat(&[blurred, q.narrow(2, n, s - n)?.contiguous()?], 2)?)
    }
}
