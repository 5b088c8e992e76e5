//! The Inception-v3 network of FID (Heusel et al. 2017) as pytorch-fid ships it: torchvision's
//! Inception3 layout with the TensorFlow graph's quirks (`FIDInceptionA/C/E_1`: average pools that
//! exclude padding; `FIDInceptionE_2`: max pool in the pool branch), BatchNorm ε = 0.001, inputs
//! resized to 299×299 bilinearly and scaled to [−1, 1]; features are the 2048-d global average pool
//! ("pool3"). Source: mseitzer/pytorch-fid, `src/pytorch_fid/inception.py`.
//!
//! Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` converted to safetensors (keys as
//! in the `.pth`: `Conv2d_1a_3x3.conv.weight`, `Conv2d_1a_3x3.bn.{weight, bias, running_mean,
//! running_var}`, …, `Mixed_7c.branch_pool.*`; `fc.*` is not used), e.g.
//! ```text
//! python -c "import torch, safetensors.torch as st; \
//!   st.save_file(torch.load('pt_inception-2015-12-05-6726825d.pth'), 'inception-fid.safetensors')"
//! ```
//! BatchNorm is folded into the convolutions at load time (inference only).
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Init, VarBuilder};

use super::resize::bilinear;
use super::FeatureExtractor;
use crate::Result;

/// Conv (no bias) → BatchNorm (ε = 0.001, folded) → ReLU, with (h, w) padding and stride.
struct BasicConv {
    conv: Conv2d,
    pad: (usize, usize),
}

impl BasicConv {
    fn new(cin: usize, cout: usize, k: (usize, usize), stride: usize, pad: (usize, usize), vb: VarBuilder) -> Result<Self> {
        let w = vb.get_with_hints((cout, cin, k.0, k.1), "conv.weight", Init::Randn { mean: 0.0, stdev: (1.0 / (cin * k.0 * k.1) as f64).sqrt() })?;
        let bn = vb.pp("bn");
        let gamma = bn.get_with_hints(cout, "weight", Init::Const(1.0))?;
        let beta = bn.get_with_hints(cout, "bias", Init::Const(0.0))?;
        let mean = bn.get_with_hints(cout, "running_mean", Init::Const(0.0))?;
        let var = bn.get_with_hints(cout, "running_var", Init::Const(1.0))?;
        let s = gamma.broadcast_div(&(var + 1e-3)?.sqrt()?)?; // (cout,)
        let w = w.broadcast_mul(&s.reshape((cout, 1, 1, 1))?)?;
        let b = (beta - mean.mul(&s)?)?;
        Ok(Self { conv: Conv2d::new(w, Some(b), Conv2dConfig { stride, ..Default::default() }), pad })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.pad.0 > 0 { x.pad_with_zeros(2, self.pad.0, self.pad.0)? } else { x.clone() };
        let x = if self.pad.1 > 0 { x.pad_with_zeros(3, self.pad.1, self.pad.1)? } else { x };
        Ok(self.conv.forward(&x)?.relu()?)
    }
}

fn conv(cin: usize, cout: usize, k: usize, vb: VarBuilder) -> Result<BasicConv> {
    BasicConv::new(cin, cout, (k, k), 1, (k / 2, k / 2), vb)
}

fn conv_s2(cin: usize, cout: usize, k: usize, vb: VarBuilder) -> Result<BasicConv> {
    BasicConv::new(cin, cout, (k, k), 2, (0, 0), vb)
}

/// 1×n (`horizontal`) or n×1 convolution with "same" padding.
fn conv_line(cin: usize, cout: usize, n: usize, horizontal: bool, vb: VarBuilder) -> Result<BasicConv> {
    let (k, p) = if horizontal { ((1, n), (0, n / 2)) } else { ((n, 1), (n / 2, 0)) };
    BasicConv::new(cin, cout, k, 1, p, vb)
}

/// 3×3 average pool, stride 1, padding 1, `count_include_pad = False` (the TF graph's pool).
pub fn avg_pool_3x3_exclude_pad(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let pad = |t: &Tensor| -> Result<Tensor> { Ok(t.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?) };
    let sum = pad(x)?.avg_pool2d_with_stride(3, 1)?; // Σ / 9
    let count = pad(&Tensor::ones((1, 1, h, w), x.dtype(), x.device())?)?.avg_pool2d_with_stride(3, 1)?; // (valid taps) / 9
    Ok(sum.broadcast_div(&count)?)
}

/// 3×3 max pool, stride 1, padding 1. Zero padding is exact here because every input is a ReLU
/// output (≥ 0) and each window holds at least one real element.
fn max_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    Ok(x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 1)?)
}

fn max_pool_s2(x: &Tensor) -> Result<Tensor> {
    Ok(x.max_pool2d_with_stride(3, 2)?)
}

struct InceptionA {
    b1: BasicConv,
    b5: [BasicConv; 2],
    b3: [BasicConv; 3],
    pool: BasicConv,
}

impl InceptionA {
    fn new(cin: usize, pool_features: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            b1: conv(cin, 64, 1, vb.pp("branch1x1"))?,
            b5: [conv(cin, 48, 1, vb.pp("branch5x5_1"))?, conv(48, 64, 5, vb.pp("branch5x5_2"))?],
            b3: [conv(cin, 64, 1, vb.pp("branch3x3dbl_1"))?, conv(64, 96, 3, vb.pp("branch3x3dbl_2"))?, conv(96, 96, 3, vb.pp("branch3x3dbl_3"))?],
            pool: conv(cin, pool_features, 1, vb.pp("branch_pool"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.b1.forward(x)?;
        let b = self.b5[1].forward(&self.b5[0].forward(x)?)?;
        let c = self.b3[2].forward(&self.b3[1].forward(&self.b3[0].forward(x)?)?)?;
        let d = self.pool.forward(&avg_pool_3x3_exclude_pad(x)?)?;
        Ok(Tensor::cat(&[a, b, c, d], 1)?)
    }
}

struct InceptionB {
    b3: BasicConv,
    dbl: [BasicConv; 3],
}

impl InceptionB {
    fn new(cin: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            b3: conv_s2(cin, 384, 3, vb.pp("branch3x3"))?,
            dbl: [conv(cin, 64, 1, vb.pp("branch3x3dbl_1"))?, conv(64, 96, 3, vb.pp("branch3x3dbl_2"))?, conv_s2(96, 96, 3, vb.pp("branch3x3dbl_3"))?],
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.b3.forward(x)?;
        let b = self.dbl[2].forward(&self.dbl[1].forward(&self.dbl[0].forward(x)?)?)?;
        Ok(Tensor::cat(&[a, b, max_pool_s2(x)?], 1)?)
    }
}

struct InceptionC {
    b1: BasicConv,
    b7: [BasicConv; 3],
    dbl: [BasicConv; 5],
    pool: BasicConv,
}

impl InceptionC {
    fn new(cin: usize, c7: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            b1: conv(cin, 192, 1, vb.pp("branch1x1"))?,
            b7: [
                conv(cin, c7, 1, vb.pp("branch7x7_1"))?,
                conv_line(c7, c7, 7, true, vb.pp("branch7x7_2"))?,
                conv_line(c7, 192, 7, false, vb.pp("branch7x7_3"))?,
            ],
            dbl: [
                conv(cin, c7, 1, vb.pp("branch7x7dbl_1"))?,
                conv_line(c7, c7, 7, false, vb.pp("branch7x7dbl_2"))?,
                conv_line(c7, c7, 7, true, vb.pp("branch7x7dbl_3"))?,
                conv_line(c7, c7, 7, false, vb.pp("branch7x7dbl_4"))?,
                conv_line(c7, 192, 7, true, vb.pp("branch7x7dbl_5"))?,
            ],
            pool: conv(cin, 192, 1, vb.pp("branch_pool"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.b1.forward(x)?;
        let b = self.b7.iter().try_fold(x.clone(), |t, c| c.forward(&t))?;
        let c = self.dbl.iter().try_fold(x.clone(), |t, c| c.forward(&t))?;
        let d = self.pool.forward(&avg_pool_3x3_exclude_pad(x)?)?;
        Ok(Tensor::cat(&[a, b, c, d], 1)?)
    }
}

struct InceptionD {
    b3: [BasicConv; 2],
    b7: [BasicConv; 4],
}

impl InceptionD {
    fn new(cin: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            b3: [conv(cin, 192, 1, vb.pp("branch3x3_1"))?, conv_s2(192, 320, 3, vb.pp("branch3x3_2"))?],
            b7: [
                conv(cin, 192, 1, vb.pp("branch7x7x3_1"))?,
                conv_line(192, 192, 7, true, vb.pp("branch7x7x3_2"))?,
                conv_line(192, 192, 7, false, vb.pp("branch7x7x3_3"))?,
                conv_s2(192, 192, 3, vb.pp("branch7x7x3_4"))?,
            ],
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.b3.iter().try_fold(x.clone(), |t, c| c.forward(&t))?;
        let b = self.b7.iter().try_fold(x.clone(), |t, c| c.forward(&t))?;
        Ok(Tensor::cat(&[a, b, max_pool_s2(x)?], 1)?)
    }
}

struct InceptionE {
    b1: BasicConv,
    b3_1: BasicConv,
    b3_2: [BasicConv; 2],
    dbl_1: BasicConv,
    dbl_2: BasicConv,
    dbl_3: [BasicConv; 2],
    pool: BasicConv,
    max_pool: bool,
}

impl InceptionE {
    fn new(cin: usize, max_pool: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            b1: conv(cin, 320, 1, vb.pp("branch1x1"))?,
            b3_1: conv(cin, 384, 1, vb.pp("branch3x3_1"))?,
            b3_2: [conv_line(384, 384, 3, true, vb.pp("branch3x3_2a"))?, conv_line(384, 384, 3, false, vb.pp("branch3x3_2b"))?],
            dbl_1: conv(cin, 448, 1, vb.pp("branch3x3dbl_1"))?,
            dbl_2: conv(448, 384, 3, vb.pp("branch3x3dbl_2"))?,
            dbl_3: [conv_line(384, 384, 3, true, vb.pp("branch3x3dbl_3a"))?, conv_line(384, 384, 3, false, vb.pp("branch3x3dbl_3b"))?],
            pool: conv(cin, 192, 1, vb.pp("branch_pool"))?,
            max_pool,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.b1.forward(x)?;
        let t = self.b3_1.forward(x)?;
        let b = Tensor::cat(&[self.b3_2[0].forward(&t)?, self.b3_2[1].forward(&t)?], 1)?;
        let t = self.dbl_2.forward(&self.dbl_1.forward(x)?)?;
        let c = Tensor::cat(&[self.dbl_3[0].forward(&t)?, self.dbl_3[1].forward(&t)?], 1)?;
        let p = if self.max_pool { max_pool_3x3_same(x)? } else { avg_pool_3x3_exclude_pad(x)? };
        let d = self.pool.forward(&p)?;
        Ok(Tensor::cat(&[a, b, c, d], 1)?)
    }
}

/// pytorch-fid's Inception-v3 up to the 2048-d pool3 features (inference only).
pub struct FidInception {
    stem: Vec<BasicConv>,
    mixed_5: [InceptionA; 3],
    mixed_6a: InceptionB,
    mixed_6: [InceptionC; 4],
    mixed_7a: InceptionD,
    mixed_7: [InceptionE; 2],
}

impl FidInception {
    /// Input resolution.
    pub const INPUT_SIZE: usize = 299;
    /// Feature dimension.
    pub const DIM: usize = 2048;

    /// Builds from `vb` (pytorch-fid key layout, see the module docs).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            stem: vec![
                conv_s2(3, 32, 3, vb.pp("Conv2d_1a_3x3"))?,
                BasicConv::new(32, 32, (3, 3), 1, (0, 0), vb.pp("Conv2d_2a_3x3"))?,
                conv(32, 64, 3, vb.pp("Conv2d_2b_3x3"))?,
                conv(64, 80, 1, vb.pp("Conv2d_3b_1x1"))?,
                BasicConv::new(80, 192, (3, 3), 1, (0, 0), vb.pp("Conv2d_4a_3x3"))?,
            ],
            mixed_5: [InceptionA::new(192, 32, vb.pp("Mixed_5b"))?, InceptionA::new(256, 64, vb.pp("Mixed_5c"))?, InceptionA::new(288, 64, vb.pp("Mixed_5d"))?],
            mixed_6a: InceptionB::new(288, vb.pp("Mixed_6a"))?,
            mixed_6: [
                InceptionC::new(768, 128, vb.pp("Mixed_6b"))?,
                InceptionC::new(768, 160, vb.pp("Mixed_6c"))?,
                InceptionC::new(768, 160, vb.pp("Mixed_6d"))?,
                InceptionC::new(768, 192, vb.pp("Mixed_6e"))?,
            ],
            mixed_7a: InceptionD::new(768, vb.pp("Mixed_7a"))?,
            mixed_7: [InceptionE::new(1280, false, vb.pp("Mixed_7b"))?, InceptionE::new(2048, true, vb.pp("Mixed_7c"))?],
        })
    }

    /// Loads safetensors weights from `path` (f32 on `device`); a missing or misshaped tensor is
    /// an error that names it.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let vb = VarBuilder::from_tensors(crate::checkpoint::load_tensors(path, device)?, DType::F32, device);
        Self::new(vb)
    }

    /// pool3 features of images (N, 3, 299, 299) already in [−1, 1] → (N, 2048).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, c) in self.stem.iter().enumerate() {
            x = c.forward(&x)?;
            if i == 2 || i == 4 {
                x = max_pool_s2(&x)?; // after Conv2d_2b (147 → 73) and Conv2d_4a (71 → 35)
            }
        }
        for m in &self.mixed_5 {
            x = m.forward(&x)?; // (N, 288, 35, 35)
        }
        x = self.mixed_6a.forward(&x)?; // (N, 768, 17, 17)
        for m in &self.mixed_6 {
            x = m.forward(&x)?;
        }
        x = self.mixed_7a.forward(&x)?; // (N, 1280, 8, 8)
        for m in &self.mixed_7 {
            x = m.forward(&x)?; // (N, 2048, 8, 8)
        }
        Ok(x.mean((2, 3))?) // (N, 2048)
    }
}

impl FeatureExtractor for FidInception {
    /// Images (N, C ∈ {1, 3}, H, W) in [−1, 1] → pool3 features (N, 2048): grey repeated to RGB,
    /// bilinear resize to 299×299 (pytorch-fid `resize_input`), no other normalisation.
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        let x = images.to_dtype(DType::F32)?;
        let x = if x.dim(1)? == 1 { x.repeat((1, 3, 1, 1))? } else { x };
        let s = Self::INPUT_SIZE;
        let x = if x.dim(2)? == s && x.dim(3)? == s { x } else { bilinear(&x, s, s)? };
        self.forward(&x)
    }
    fn name(&self) -> String {
        "inception-v3 (pytorch-fid pool3)".into()
    }
}
