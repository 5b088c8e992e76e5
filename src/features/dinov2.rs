//! DINOv2 ViT (Oquab et al. 2023) as a feature extractor: the final-norm CLS token, as FD_DINOv2
//! uses it (Stein et al. 2023, "Exposing flaws of generative model evaluation metrics", dgm-eval:
//! ViT-L/14, images resized to 224 with bicubic interpolation, ImageNet normalisation).
//!
//! Weight names follow the torch-hub checkpoints of facebookresearch/dinov2
//! (`dinov2_vits14_pretrain.pth` etc. converted to safetensors; the same layout as
//! candle-transformers' `dinov2` and the `lmz/candle-dino-v2` files): `patch_embed.proj`,
//! `cls_token`, `pos_embed`, `blocks.{i}.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1,
//! mlp.fc2, ls2.gamma}`, `norm`.
//!
//! Why not candle-transformers' `DinoVisionTransformer` directly: its public API returns the
//! linear-head logits or patch tokens (not the CLS token), and it differs from the reference in
//! three places that change features: tanh-GELU instead of erf-GELU, LayerNorm ε = 1e−5 instead of
//! 1e−6, nearest instead of bicubic position-embedding interpolation. This module follows the
//! reference (`dinov2/models/vision_transformer.py`); a test checks it agrees with
//! candle-transformers' on the same weights up to those differences.
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, Linear, VarBuilder};

use super::resize::{bicubic, normalize_rgb};
use super::FeatureExtractor;
use crate::Result;

/// ImageNet mean and standard deviation (torchvision), used by DINOv2's preprocessing.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// See [`IMAGENET_MEAN`].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Architecture of a DINOv2 ViT with patch 14.
#[derive(Debug, Clone, PartialEq)]
pub struct Dinov2Config {
    /// Number of blocks.
    pub depth: usize,
    /// Token width.
    pub dim: usize,
    /// Attention heads.
    pub heads: usize,
    /// Patch size (14).
    pub patch_size: usize,
    /// Resolution of the stored position embedding (518 → 37×37 patches).
    pub native_size: usize,
    /// Resolution images are resized to before the network (dgm-eval: 224).
    pub input_size: usize,
}

impl Dinov2Config {
    fn vit(depth: usize, dim: usize, heads: usize) -> Self {
        Self { depth, dim, heads, patch_size: 14, native_size: 518, input_size: 224 }
    }
    /// ViT-S/14 (21 M parameters), `dinov2_vits14`.
    pub fn vit_small() -> Self {
        Self::vit(12, 384, 6)
    }
    /// ViT-B/14 (86 M), `dinov2_vitb14`.
    pub fn vit_base() -> Self {
        Self::vit(12, 768, 12)
    }
    /// ViT-L/14 (300 M), `dinov2_vitl14`: the FD_DINOv2 network of dgm-eval.
    pub fn vit_large() -> Self {
        Self::vit(24, 1024, 16)
    }
    /// Preset by name: `vits14`, `vitb14`, `vitl14` (the giant uses a SwiGLU MLP, not supported).
    pub fn by_name(name: &str) -> Result<Self> {
        match name {
            "vits14" => Ok(Self::vit_small()),
            "vitb14" => Ok(Self::vit_base()),
            "vitl14" => Ok(Self::vit_large()),
            _ => Err(crate::Error::Hyperparameter(format!("unknown DINOv2 preset {name:?}: use vits14, vitb14 or vitl14"))),
        }
    }
}

struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ls1: Tensor,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ls2: Tensor,
    heads: usize,
}

impl Block {
    fn new(dim: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let ln = |vb: VarBuilder| candle_nn::layer_norm(dim, 1e-6, vb);
        Ok(Self {
            norm1: ln(vb.pp("norm1"))?,
            qkv: candle_nn::linear(dim, 3 * dim, vb.pp("attn.qkv"))?,
            proj: candle_nn::linear(dim, dim, vb.pp("attn.proj"))?,
            ls1: vb.get_with_hints(dim, "ls1.gamma", candle_nn::Init::Const(1.0))?,
            norm2: ln(vb.pp("norm2"))?,
            fc1: candle_nn::linear(dim, 4 * dim, vb.pp("mlp.fc1"))?,
            fc2: candle_nn::linear(4 * dim, dim, vb.pp("mlp.fc2"))?,
            ls2: vb.get_with_hints(dim, "ls2.gamma", candle_nn::Init::Const(1.0))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let hd = c / self.heads;
        let qkv = self.qkv.forward(&self.norm1.forward(x)?)?.reshape((b, n, 3, self.heads, hd))?.permute((2, 0, 3, 1, 4))?; // (3, B, heads, N, hd)
        let q = (qkv.i(0)?.contiguous()? * (hd as f64).powf(-0.5))?;
        let k = qkv.i(1)?.contiguous()?;
        let v = qkv.i(2)?.contiguous()?;
        let a = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?; // (B, heads, N, N)
        let o = a.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?; // (B, N, C)
        let x = (x + self.proj.forward(&o)?.broadcast_mul(&self.ls1)?)?;
        let h = self.fc2.forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?)?;
        Ok((x + h.broadcast_mul(&self.ls2)?)?)
    }
}

/// A DINOv2 vision transformer (inference only).
pub struct Dinov2 {
    cfg: Dinov2Config,
    patch_embed: Conv2d,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl Dinov2 {
    /// Builds from `vb` (torch-hub key layout, see the module docs).
    pub fn new(cfg: &Dinov2Config, vb: VarBuilder) -> Result<Self> {
        let p = cfg.patch_size;
        let grid = cfg.native_size / p;
        let patch_embed = candle_nn::conv2d(3, cfg.dim, p, Conv2dConfig { stride: p, ..Default::default() }, vb.pp("patch_embed.proj"))?;
        let init = candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let cls_token = vb.get_with_hints((1, 1, cfg.dim), "cls_token", init)?;
        let pos_embed = vb.get_with_hints((1, 1 + grid * grid, cfg.dim), "pos_embed", init)?;
        let blocks = (0..cfg.depth).map(|i| Block::new(cfg.dim, cfg.heads, vb.pp(format!("blocks.{i}")))).collect::<Result<Vec<_>>>()?;
        let norm = candle_nn::layer_norm(cfg.dim, 1e-6, vb.pp("norm"))?;
        Ok(Self { cfg: cfg.clone(), patch_embed, cls_token, pos_embed, blocks, norm })
    }

    /// Loads safetensors weights from `path` (f32 on `device`); a missing or misshaped tensor
    /// is an error that names it.
    pub fn load(cfg: &Dinov2Config, path: &Path, device: &Device) -> Result<Self> {
        let vb = VarBuilder::from_tensors(crate::checkpoint::load_tensors(path, device)?, DType::F32, device);
        Self::new(cfg, vb)
    }

    /// The configuration.
    pub fn config(&self) -> &Dinov2Config {
        &self.cfg
    }

    /// Position embedding for an (h, w)-patch grid: the stored one, or its bicubic interpolation
    /// with the reference's scale factor (grid + 0.1) / native grid.
    fn pos_embed_for(&self, h: usize, w: usize) -> Result<Tensor> {
        let m = self.cfg.native_size / self.cfg.patch_size;
        if h == m && w == m {
            return Ok(self.pos_embed.clone());
        }
        let d = self.cfg.dim;
        let cls = self.pos_embed.i((.., ..1))?; // (1, 1, D)
        let grid = self.pos_embed.i((.., 1..))?.reshape((1, m, m, d))?.permute((0, 3, 1, 2))?; // (1, D, M, M)
        let scale = (m as f64 / (h as f64 + 0.1), m as f64 / (w as f64 + 0.1));
        let grid = bicubic(&grid, h, w, Some(scale))?.permute((0, 2, 3, 1))?.reshape((1, h * w, d))?; // (1, h·w, D)
        Ok(Tensor::cat(&[&cls, &grid], 1)?)
    }

    /// All tokens after the final norm: images (N, 3, H, W), already normalised, H and W multiples
    /// of 14 → (N, 1 + H·W/196, D); token 0 is CLS.
    pub fn forward_tokens(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let p = self.cfg.patch_size;
        if h % p != 0 || w % p != 0 {
            return Err(crate::Error::Shape(format!("DINOv2 input {h}×{w} is not a multiple of the patch size {p}")));
        }
        let t = self.patch_embed.forward(x)?.flatten_from(2)?.transpose(1, 2)?; // (N, h·w, D)
        let cls = self.cls_token.broadcast_as((b, 1, self.cfg.dim))?;
        let mut t = Tensor::cat(&[&cls, &t], 1)?.broadcast_add(&self.pos_embed_for(h / p, w / p)?)?; // (N, 1 + h·w, D)
        for blk in &self.blocks {
            t = blk.forward(&t)?;
        }
        Ok(self.norm.forward(&t)?)
    }
}

impl FeatureExtractor for Dinov2 {
    /// Images (N, C ∈ {1, 3}, H, W) in [−1, 1] → CLS features (N, D): bicubic resize to
    /// `input_size`, ImageNet normalisation, final-norm CLS token.
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        let s = self.cfg.input_size;
        let x = normalize_rgb(&images.to_dtype(DType::F32)?, IMAGENET_MEAN, IMAGENET_STD)?;
        let x = if x.dim(2)? == s && x.dim(3)? == s { x } else { bicubic(&x, s, s, None)? };
        Ok(self.forward_tokens(&x)?.i((.., 0))?.contiguous()?)
    }
    fn name(&self) -> String {
        format!("dinov2 (d={}, depth={})", self.cfg.dim, self.cfg.depth)
    }
}
