//! Image and grid resizing with PyTorch's `F.interpolate` semantics (`align_corners = False`, no
//! antialiasing), as the reference feature extractors preprocess: bilinear through candle's own
//! [`Tensor::upsample_bilinear2d`], bicubic (Keys' cubic convolution, a = −0.75, edge indices
//! clamped; PyTorch `upsample_bicubic2d`) as two separable matrix products.
use candle_core::{DType, Device, Tensor};

use crate::Result;

/// Keys' cubic convolution kernel with PyTorch's a = −0.75.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.75;
    let x = x.abs();
    if x <= 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// The (out, in) matrix of 1-D bicubic interpolation from `n_in` to `n_out` samples. `scale` is
/// PyTorch's source/destination ratio: `n_in / n_out` when a size is requested, `1 / scale_factor`
/// when a scale factor is (DINOv2's position-embedding interpolation passes one).
/// Source coordinate of output i: (i + 0.5)·scale − 0.5; taps at ⌊·⌋−1 … ⌊·⌋+2, clamped to the edge.
pub fn bicubic_matrix(n_in: usize, n_out: usize, scale: f64) -> Vec<f64> {
    let mut m = vec![0.0; n_out * n_in];
    for i in 0..n_out {
        let src = (i as f64 + 0.5) * scale - 0.5;
        let x0 = src.floor();
        let t = src - x0;
        for k in -1i64..=2 {
            let j = (x0 as i64 + k).clamp(0, n_in as i64 - 1) as usize;
            m[i * n_in + j] += cubic(t - k as f64);
        }
    }
    m
}

/// Bicubic resize of `x` (N, C, H, W) to (N, C, `h`, `w`), PyTorch `mode="bicubic"`,
/// `align_corners=False`. `scale` = (scale_h, scale_w) source/destination ratios, or `None` for
/// H/h and W/w.
pub fn bicubic(x: &Tensor, h: usize, w: usize, scale: Option<(f64, f64)>) -> Result<Tensor> {
    let (n, c, hi, wi) = x.dims4()?;
    let (sh, sw) = scale.unwrap_or((hi as f64 / h as f64, wi as f64 / w as f64));
    let mat = |n_in, n_out, s, dev: &Device| -> Result<Tensor> {
        let v: Vec<f32> = bicubic_matrix(n_in, n_out, s).into_iter().map(|a| a as f32).collect();
        Ok(Tensor::from_vec(v, (n_out, n_in), dev)?)
    };
    let dt = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let mh = mat(hi, h, sh, x.device())?; // (h, H)
    let mw = mat(wi, w, sw, x.device())?; // (w, W)
    let y = x.reshape((n * c * hi, wi))?.matmul(&mw.t()?)?; // (N·C·H, w)
    let y = y.reshape((n * c, hi, w))?.transpose(1, 2)?.contiguous()?.reshape((n * c * w, hi))?; // (N·C·w, H)
    let y = y.matmul(&mh.t()?)?.reshape((n * c, w, h))?.transpose(1, 2)?; // (N·C, h, w)
    Ok(y.contiguous()?.reshape((n, c, h, w))?.to_dtype(dt)?)
}

/// Bilinear resize (N, C, H, W) → (N, C, h, w), PyTorch `mode="bilinear"`, `align_corners=False`.
pub fn bilinear(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    Ok(x.upsample_bilinear2d(h, w, false)?)
}

/// Maps images in [−1, 1] to [0, 1] and normalises per channel: (x − mean) / std; grey images are
/// repeated to three channels first. `x`: (N, C ∈ {1, 3}, H, W).
pub fn normalize_rgb(x: &Tensor, mean: [f32; 3], std: [f32; 3]) -> Result<Tensor> {
    let x = if x.dim(1)? == 1 { x.repeat((1, 3, 1, 1))? } else { x.clone() };
    let x = ((x + 1.0)? * 0.5)?;
    let m = Tensor::new(&mean, x.device())?.reshape((1, 3, 1, 1))?;
    let s = Tensor::new(&std, x.device())?.reshape((1, 3, 1, 1))?;
    Ok(x.broadcast_sub(&m)?.broadcast_div(&s)?)
}
