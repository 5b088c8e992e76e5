//! Self-Attention Guidance (Hong, Lee, Jang, Kim 2023, ICCV), adapted to DiT as the ERG paper
//! did for its comparisons: the positive pass records the head-averaged self-attention map of one
//! middle block; the tokens that receive more than the average attention (column sum over
//! queries > 1) form a mask; the clean estimate x̂₁ is Gaussian-blurred inside the mask,
//! re-noised to the current t with the predicted noise ε̂, and passed through the model again.
//! The guidance term is s·(D_pos − D(x̃_t)). SAG's defaults: scale 0.75, blur σ = 1.
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::attention::smooth::{blur_matrix, seg_kernel_size};
use crate::flow::{clean_from_velocity, noise_from_velocity};
use crate::{Error, Result};

/// SAG settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sag {
    /// Block whose self-attention gives the mask (0-based; a middle block).
    pub block: usize,
    /// Standard deviation of the Gaussian blur, in pixels (reflect padding, kernel ⌈6σ⌉+1 odd).
    pub blur_sigma: f64,
}

impl Sag {
    /// Checks the block index and σ > 0.
    pub fn validate(&self, depth: usize) -> Result<()> {
        if self.block >= depth {
            return Err(Error::hp(format!("SAG block {} is beyond the model depth {depth}", self.block)));
        }
        if !(self.blur_sigma > 0.0 && self.blur_sigma.is_finite()) {
            return Err(Error::hp(format!("SAG blur_sigma must be > 0, got {}", self.blur_sigma)));
        }
        Ok(())
    }

    /// The token mask (B, N) ∈ {0, 1} from a head-averaged attention map (B, N, N): tokens whose
    /// received attention (sum over queries) exceeds 1, the average.
    pub fn mask(attn: &Tensor) -> Result<Tensor> {
        Ok(attn.sum(1)?.gt(1.0)?.to_dtype(DType::F32)?)
    }

    /// The mask (B, n) of the first `n` (image) tokens from a map (B, S, S) over S ≥ n tokens:
    /// [`Self::mask`] when S = n; in joint image–text attention (MMDiT) the image–image block,
    /// thresholded at its mean received attention (the image rows no longer sum to 1 over image
    /// keys).
    pub fn image_mask(attn: &Tensor, n: usize) -> Result<Tensor> {
        let s = attn.dim(1)?;
        if s == n {
            return Self::mask(attn);
        }
        if s < n {
            return Err(Error::shape(format!("SAG: attention over {s} tokens, the image has {n}")));
        }
        let received = attn.narrow(1, 0, n)?.narrow(2, 0, n)?.sum(1)?; // (B, n)
        Ok(received.broadcast_gt(&received.mean_keepdim(1)?)?.to_dtype(DType::F32)?)
    }

    /// Gaussian blur of images (B, C, H, W) over H and W (separable).
    pub fn blur(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        // diffusers' SAG blurs with 9 taps (at its σ = 1); wider σ gets SEG's ⌈6σ⌉ + 1 rule.
        let k = seg_kernel_size(self.blur_sigma, w).max(9.min(if w % 2 == 1 { w } else { w + 1 }));
        let mh = Tensor::from_vec(blur_matrix(h, k, self.blur_sigma).into_iter().map(|v| v as f32).collect::<Vec<_>>(), (h, h), x.device())?;
        let mw = Tensor::from_vec(blur_matrix(w, k, self.blur_sigma).into_iter().map(|v| v as f32).collect::<Vec<_>>(), (w, w), x.device())?;
        let y = mh.broadcast_matmul(&x.contiguous()?)?; // blur along H
        Ok(y.broadcast_matmul(&mw.t()?)?) // blur along W
    }

    /// The degraded input x̃_t: x̂₁ blurred where `token_mask` (B, N) is set (token grid `grid`,
    /// upsampled to pixels), re-noised with ε̂ at time t. `x_t`, `v_pos`: (B, C, H, W).
    pub fn degrade(&self, x_t: &Tensor, v_pos: &Tensor, t: f64, token_mask: &Tensor, grid: (usize, usize)) -> Result<Tensor> {
        let (b, _, h, w) = x_t.dims4()?;
        let tt = Tensor::full(t as f32, b, x_t.device())?;
        let x1 = clean_from_velocity(x_t, v_pos, &tt)?;
        let eps = noise_from_velocity(x_t, v_pos, &tt)?;
        let (ph, pw) = (h / grid.0, w / grid.1);
        let m = token_mask.reshape((b, 1, grid.0, 1, grid.1, 1))?.broadcast_as((b, 1, grid.0, ph, grid.1, pw))?.reshape((b, 1, h, w))?;
        let blurred = self.blur(&x1)?;
        let mixed = (blurred.broadcast_mul(&m)? + x1.broadcast_mul(&(1.0 - &m)?)?)?;
        Ok(((mixed * t)? + (eps * (1.0 - t))?)?)
    }
}
