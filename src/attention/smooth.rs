//! Query smoothing of Smoothed Energy Guidance (SEG, Hong 2024, NeurIPS; official SEG-SDXL code,
//! `pipeline_seg.py`): a 2-D Gaussian blur of the queries over the token grid, which smooths the
//! energy landscape of attention. Kernel size and padding follow the reference exactly
//! ([`seg_kernel_size`]): ⌈6σ⌉ + 1 made odd, then capped by the grid's last (column) dimension W
//! at W when W is odd and W + 1 when W is even, one kernel for both axes, `reflect` padding of
//! half a kernel (PyTorch's `reflect`: the edge is not repeated); applied separably. σ > 9999
//! (the reference's threshold, and σ = ∞) replaces every query by the mean query. Works for
//! non-square grids. (diffusers' SEG hook has the two σ regimes inverted.)
use candle_core::Tensor;

use crate::{Error, Result};

/// σ above which SEG replaces the queries by their mean (`inf_blur_threshold` of the reference).
pub const INFINITE_BLUR_THRESHOLD: f64 = 9999.0;

/// The reference's kernel size for blur σ on a grid whose last dimension has `width` tokens:
/// k = ⌈6σ⌉ + 1 − (⌈6σ⌉ mod 2) (the odd number ≥ 6σ + 1), then min(k, W − (W mod 2 − 1)), i.e.
/// at most W for odd W and W + 1 for even W. σ = 0 gives 1 (no blur).
/// Source: SEG-SDXL `pipeline_seg.py`, `SEGCFGSelfAttnProcessor` and `gaussian_blur_2d`.
pub fn seg_kernel_size(sigma: f64, width: usize) -> usize {
    let c = (6.0 * sigma).ceil() as usize;
    let k = c + 1 - c % 2;
    let cap = if width % 2 == 1 { width } else { width + 1 };
    k.min(cap).max(1)
}

/// Index of padded position `j` (may be outside 0..g) under reflect padding, reflecting as often
/// as needed (PyTorch allows one reflection, pad < g; a kernel from the other axis of a
/// non-square grid may need more, where this extends the same mirror pattern periodically).
fn reflect(j: i64, g: usize) -> usize {
    if g == 1 {
        return 0;
    }
    let period = 2 * (g as i64 - 1);
    let j = j.rem_euclid(period);
    (if j >= g as i64 { period - j } else { j }) as usize
}

/// The (g × g) matrix of a 1-D Gaussian blur with `kernel_size` taps (odd) and reflect padding:
/// `out = M · in`. Taps at offsets −r..=r (r = kernel_size / 2) weigh exp(−½ (x/σ)²), normalised;
/// σ = ∞ (or above [`INFINITE_BLUR_THRESHOLD`]) averages the whole axis; σ = 0 or one tap is
/// the identity.
pub fn blur_matrix(g: usize, kernel_size: usize, sigma: f64) -> Vec<f64> {
    let mut m = vec![0.0; g * g];
    if sigma > INFINITE_BLUR_THRESHOLD {
        m.iter_mut().for_each(|v| *v = 1.0 / g as f64);
        return m;
    }
    let r = kernel_size / 2;
    if r == 0 || sigma == 0.0 {
        (0..g).for_each(|i| m[i * g + i] = 1.0);
        return m;
    }
    let w: Vec<f64> = (0..2 * r + 1).map(|k| (-0.5 * ((k as f64 - r as f64) / sigma).powi(2)).exp()).collect();
    let z: f64 = w.iter().sum();
    for i in 0..g {
        for (k, wk) in w.iter().enumerate() {
            m[i * g + reflect(i as i64 + k as i64 - r as i64, g)] += wk / z;
        }
    }
    m
}

/// Blurs the first rows·cols queries of `q` (B, H, S, d) over the grid `(rows, cols)` with SEG's
/// kernel ([`seg_kernel_size`] of σ and cols); the rest (text tokens) are unchanged.
/// Errors: a grid larger than the sequence, or empty.
pub fn smooth_queries(q: &Tensor, grid: (usize, usize), sigma: f64) -> Result<Tensor> {
    let (b, h, s, _) = q.dims4()?;
    let n = grid.0 * grid.1;
    if n > s || n == 0 {
        return Err(Error::shape(format!("token grid {grid:?} does not fit {s} query tokens")));
    }
    let (gh, gw) = grid;
    let d = q.dim(3)?;
    let kernel_size = seg_kernel_size(sigma, gw); // one kernel for both axes, from the last (W)
    let mat = |g: usize| -> Result<Tensor> {
        let v: Vec<f32> = blur_matrix(g, kernel_size, sigma).into_iter().map(|a| a as f32).collect();
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
