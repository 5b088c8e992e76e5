//! DiT configurations: the official presets (S, B, L, XL × patch 2/4/8) and small ones that train
//! on a 2-core CPU.
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// tanh-approximated GELU, as in the official DiT (`nn.GELU(approximate="tanh")`).
    GeluTanh,
    /// exact (erf) GELU: several times cheaper on CPU in candle; used by the small presets.
    GeluErf,
}

/// Hyperparameters of a DiT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DitConfig {
    /// Image size (H, W) in pixels (or latent cells); both multiples of `patch_size`.
    pub input_size: (usize, usize),
    /// Patch size p.
    pub patch_size: usize,
    /// Image channels C.
    pub in_channels: usize,
    /// Hidden size D.
    pub hidden_size: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads (D divisible by it).
    pub num_heads: usize,
    /// MLP hidden size = `mlp_ratio` × D.
    pub mlp_ratio: f64,
    /// Number of classes; the label `num_classes` is the null class (CFG).
    pub num_classes: usize,
    /// Output 2C channels (ε and Σ, official DDPM checkpoints); only the first C are used.
    pub learn_sigma: bool,
    /// MLP activation.
    pub activation: Activation,
}

impl DitConfig {
    fn official(depth: usize, hidden: usize, heads: usize, patch: usize) -> Self {
        Self {
            input_size: (32, 32),
            patch_size: patch,
            in_channels: 4,
            hidden_size: hidden,
            depth,
            num_heads: heads,
            mlp_ratio: 4.0,
            num_classes: 1000,
            learn_sigma: true,
            activation: Activation::GeluTanh,
        }
    }
    /// DiT-XL/2 (28 blocks, D = 1152, 16 heads, 675M parameters), 256² images → 32² latents.
    pub fn xl_2() -> Self {
        Self::official(28, 1152, 16, 2)
    }
    /// DiT-XL/4.
    pub fn xl_4() -> Self {
        Self::official(28, 1152, 16, 4)
    }
    /// DiT-L/2 (24 blocks, D = 1024, 16 heads).
    pub fn l_2() -> Self {
        Self::official(24, 1024, 16, 2)
    }
    /// DiT-B/2 (12 blocks, D = 768, 12 heads).
    pub fn b_2() -> Self {
        Self::official(12, 768, 12, 2)
    }
    /// DiT-S/2 (12 blocks, D = 384, 6 heads).
    pub fn s_2() -> Self {
        Self::official(12, 384, 6, 2)
    }
    /// DiT-S/4.
    pub fn s_4() -> Self {
        Self::official(12, 384, 6, 4)
    }

    /// The crate's default emoji model: 32×32 RGB, patch 4 (64 tokens), D = 128, 6 blocks,
    /// 4 heads, 9 classes (≈1.8M parameters). Trains on 2 CPU cores.
    pub fn emoji_tiny() -> Self {
        Self {
            input_size: (32, 32),
            patch_size: 4,
            in_channels: 3,
            hidden_size: 128,
            depth: 6,
            num_heads: 4,
            mlp_ratio: 4.0,
            num_classes: 9,
            learn_sigma: false,
            activation: Activation::GeluErf,
        }
    }

    /// The deeper emoji model (issue 16's target depth): 32×32 RGB, patch 4 (64 tokens),
    /// D = 192, 12 blocks, 6 heads (d_h = 32), 9 classes (≈8.0M parameters), so that per-block
    /// analyses (Fig. 7) and Table 7's block ranges have room.
    pub fn emoji_base() -> Self {
        Self { hidden_size: 192, depth: 12, num_heads: 6, ..Self::emoji_tiny() }
    }

    /// A very small model for tests: 28×28 grey, patch 4 (49 tokens), D = 32, 2 blocks, 2 heads.
    pub fn test_tiny() -> Self {
        Self {
            input_size: (28, 28),
            patch_size: 4,
            in_channels: 1,
            hidden_size: 32,
            depth: 2,
            num_heads: 2,
            mlp_ratio: 2.0,
            num_classes: 10,
            learn_sigma: false,
            activation: Activation::GeluErf,
        }
    }

    /// A preset by name (`emoji-tiny`, `emoji-base`, `test-tiny`, `DiT-S/2`, `DiT-S/4`, `DiT-B/2`, `DiT-L/2`,
    /// `DiT-XL/2`, `DiT-XL/4`).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "emoji-tiny" => Self::emoji_tiny(),
            "emoji-base" => Self::emoji_base(),
            "test-tiny" => Self::test_tiny(),
            "DiT-S/2" => Self::s_2(),
            "DiT-S/4" => Self::s_4(),
            "DiT-B/2" => Self::b_2(),
            "DiT-L/2" => Self::l_2(),
            "DiT-XL/2" => Self::xl_2(),
            "DiT-XL/4" => Self::xl_4(),
            _ => {
                return Err(Error::hp(format!(
                    "unknown DiT preset {name:?}; known: emoji-tiny, emoji-base, test-tiny, DiT-S/2, DiT-S/4, DiT-B/2, DiT-L/2, DiT-XL/2, DiT-XL/4"
                )))
            }
        })
    }

    /// Output channels of the final layer (2C with `learn_sigma`).
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma {
            2 * self.in_channels
        } else {
            self.in_channels
        }
    }

    /// Token grid (H/p, W/p).
    pub fn grid(&self) -> (usize, usize) {
        (self.input_size.0 / self.patch_size, self.input_size.1 / self.patch_size)
    }

    /// Head dimension D / heads.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Checks divisibility and non-zero sizes.
    pub fn validate(&self) -> Result<()> {
        let (h, w) = self.input_size;
        if self.patch_size == 0 || h % self.patch_size != 0 || w % self.patch_size != 0 || h == 0 || w == 0 {
            return Err(Error::hp(format!("input size {h}x{w} must be a non-zero multiple of patch size {}", self.patch_size)));
        }
        if self.num_heads == 0 || self.hidden_size % self.num_heads != 0 || (self.hidden_size / self.num_heads) % 2 != 0 {
            return Err(Error::hp(format!("hidden size {} must split into {} heads of even size", self.hidden_size, self.num_heads)));
        }
        if self.hidden_size % 4 != 0 {
            return Err(Error::hp("hidden size must be a multiple of 4 (2-D sin-cos positions)"));
        }
        if self.depth == 0 || self.in_channels == 0 || self.mlp_ratio <= 0.0 {
            return Err(Error::hp("depth, channels and mlp_ratio must be positive"));
        }
        Ok(())
    }

    /// Floating-point operations (multiply-adds × 2) of one forward pass of `batch` images:
    /// the matrix products of patch embedding, attention (qkv, QKᵀ, AV, projection), MLP, adaLN
    /// and the final layer. Elementwise work (norms, softmax, GELU) is not counted.
    pub fn forward_flops(&self, batch: usize) -> f64 {
        let (gh, gw) = self.grid();
        let n = (gh * gw) as f64;
        let d = self.hidden_size as f64;
        let m = (self.mlp_ratio * self.hidden_size as f64).floor();
        let b = batch as f64;
        let p2c = (self.patch_size * self.patch_size * self.in_channels) as f64;
        let per_block = b * n * (2.0 * d * 3.0 * d + 2.0 * d * d + 2.0 * 2.0 * d * m) + b * 2.0 * 2.0 * n * n * d + b * 2.0 * d * 6.0 * d;
        let embed = b * n * 2.0 * p2c * d + b * 2.0 * (256.0 * d + d * d);
        let fin = b * n * 2.0 * d * (self.patch_size * self.patch_size * self.out_channels()) as f64 + b * 2.0 * d * 2.0 * d;
        embed + self.depth as f64 * per_block + fin
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size;
        let m = (self.mlp_ratio * d as f64) as usize;
        let p2c = self.patch_size * self.patch_size * self.in_channels;
        let block = (d * 3 * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d) + (d * 6 * d + 6 * d);
        let fin = d * self.patch_size * self.patch_size * self.out_channels() + self.patch_size * self.patch_size * self.out_channels() + d * 2 * d + 2 * d;
        p2c * d + d + (256 * d + d + d * d + d) + (self.num_classes + 1) * d + self.depth * block + fin
    }
}
