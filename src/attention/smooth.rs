//! Query smoothing of Smoothed Energy Guidance (SEG, Hong 2024, NeurIPS; official SEG-SDXL code):
//! a 2-D Gaussian blur of the queries over the token grid, which smooths the energy landscape of
//! attention. Kernel size ⌈6σ⌉ + 1 made odd, clipped to the grid, reflect padding (PyTorch's
//! `reflect`: the edge is not repeated), separable; σ = ∞ replaces every query by the mean query.
//! Works for non-square grids. (diffusers' SEG hook has the two σ regimes inverted.)
use candle_core::{Device, Tensor};

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

/// The (N × N) smoothing operator over a (rows, cols) grid of N = rows·cols tokens in row-major
/// order: the Kronecker product of the two 1-D blurs.
pub fn grid_blur_operator(grid: (usize, usize), sigma: f64, device: &Device) -> Result<Tensor> {
    let (h, w) = grid;
    let (mh, mw) = (blur_matrix(h, sigma), blur_matrix(w, sigma));
    let n = h * w;
    let mut k = vec![0f32; n * n];
    for (i1, j1) in (0..h).flat_map(|a| (0..h).map(move |b| (a, b))) {
        let a = mh[i1 * h + j1];
        if a == 0.0 {
            continue;
        }
        for i2 in 0..w {
            for j2 in 0..w {
                k[(i1 * w + i2) * n + j1 * w + j2] = (a * mw[i2 * w + j2]) as f32;
            }
        }
    }
    Ok(Tensor::from_vec(k, (n, n), device)?)
}

/// Blurs the first rows·cols queries of `q` (B, H, S, d) over the grid; the rest are unchanged.
pub fn smooth_queries(q: &Tensor, grid: (usize, usize), sigma: f64) -> Result<Tensor> {
    let (b, h, s, _) = q.dims4()?;
    let n = grid.0 * grid.1;
    if n > s || n == 0 {
        return Err(Error::shape(format!("token grid {grid:?} does not fit {s} query tokens")));
    }
    let op = grid_blur_operator(grid, sigma, q.device())?.to_dtype(q.dtype())?; // (N, N)
    let img = q.narrow(2, 0, n)?.contiguous()?; // (B, H, N, d)
    let blurred = op.broadcast_left((b, h))?.matmul(&img)?; // (B, H, N, d)
    if n == s {
        Ok(blurred)
    } else {
        Ok(Tensor::cat(&[blurred, q.narrow(2, n, s - n)?.contiguous()?], 2)?)
    }
}
