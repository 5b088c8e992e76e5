//! Data sets that ship offline (emoji, MNIST-5k) and a loader for ImageNet's folder layout.
//!
//! All loaders return a [`Dataset`]: images as f32 (N, C, H, W) in [−1, 1], labels, class names,
//! and optional captions. Provenance and licences: `data/README.md`.
pub mod emoji;
pub mod imagenet;
pub mod latents;
pub mod mnist;

use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng};

use crate::{Error, Result};

/// An in-memory labelled image data set.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Images (N, C, H, W), f32 in [−1, 1], on the CPU.
    pub images: Tensor,
    /// Class label of each image, in `0..classes.len()`.
    pub labels: Vec<u32>,
    /// Class names.
    pub classes: Vec<String>,
    /// Caption of each image, where the data set has them (emoji: name and short names).
    pub captions: Option<Vec<String>>,
}

impl Dataset {
    /// A data set from images in [0, 1], e.g. from `candle-datasets` (its hf-hub loaders give
    /// MNIST/CIFAR as (N, 784) or (N, C, H, W) tensors in [0, 1] with u8/u32 labels).
    /// `images`: (N, C, H, W) or (N, H·W) (then reshaped to (N, 1, H, W) with `side` = H = W);
    /// `labels`: (N,) any integer dtype; `classes`: names (their count bounds the labels).
    ///
    /// Errors: shapes that disagree, labels out of range.
    pub fn from_unit_images(images: &Tensor, labels: &Tensor, classes: Vec<String>, side: Option<usize>) -> Result<Self> {
        let images = match (images.rank(), side) {
            (4, _) => images.clone(),
            (2, Some(s)) => images.reshape((images.dim(0)?, 1, s, s))?,
            _ => return Err(Error::shape(format!("images must be (N, C, H, W), or (N, H*W) with `side`, got {:?}", images.dims()))),
        };
        let labels: Vec<u32> = labels.to_dtype(candle_core::DType::U32)?.to_device(&Device::Cpu)?.to_vec1()?;
        if labels.len() != images.dim(0)? {
            return Err(Error::shape(format!("{} labels for {} images", labels.len(), images.dim(0)?)));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes.len()) {
            return Err(Error::shape(format!("label {bad} out of range for {} classes", classes.len())));
        }
        let images = ((images.to_dtype(candle_core::DType::F32)?.to_device(&Device::Cpu)? * 2.0)? - 1.0)?;
        Ok(Self { images, labels, classes, captions: None })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// (C, H, W).
    pub fn image_shape(&self) -> Result<(usize, usize, usize)> {
        let (_, c, h, w) = self.images.dims4()?;
        Ok((c, h, w))
    }

    /// Checks that the images are (C, H, W) = `want`; the error names both shapes.
    pub fn expect_image_shape(&self, want: (usize, usize, usize)) -> Result<()> {
        let (c, h, w) = self.image_shape()?;
        if (c, h, w) != want {
            return Err(Error::shape(format!("data images are {c}x{h}x{w}, the model expects {}x{}x{}", want.0, want.1, want.2)));
        }
        Ok(())
    }

    /// Indices of a random batch, drawn uniformly with replacement.
    pub fn batch_indices(&self, rng: &mut StdRng, batch_size: usize) -> Result<Vec<u32>> {
        if self.is_empty() {
            return Err(Error::Other("cannot draw a batch from an empty data set".into()));
        }
        Ok((0..batch_size).map(|_| rng.random_range(0..self.len() as u32)).collect())
    }

    /// The images `idx` (B, C, H, W) on `device`.
    pub fn images_at(&self, idx: &[u32], device: &Device) -> Result<Tensor> {
        Ok(self.images.index_select(&Tensor::new(idx, &Device::Cpu)?, 0)?.to_device(device)?)
    }

    /// A random batch (with replacement) moved to `device`: images (B, C, H, W), labels (B,) u32.
    pub fn batch(&self, rng: &mut StdRng, batch_size: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let idx = self.batch_indices(rng, batch_size)?;
        let labels: Vec<u32> = idx.iter().map(|&i| self.labels[i as usize]).collect();
        Ok((self.images_at(&idx, device)?, Tensor::new(labels.as_slice(), device)?))
    }

    /// The first `n` images of each class (fewer where a class has fewer), in class order.
    pub fn per_class(&self, n: usize) -> Result<(Tensor, Vec<u32>)> {
        let mut idx = Vec::new();
        for c in 0..self.classes.len() as u32 {
            idx.extend(self.labels.iter().enumerate().filter(|(_, &l)| l == c).map(|(i, _)| i as u32).take(n));
        }
        let labels = idx.iter().map(|&i| self.labels[i as usize]).collect();
        Ok((self.images.index_select(&Tensor::new(idx.as_slice(), &Device::Cpu)?, 0)?, labels))
    }
}

/// Converts an RGB/grey `image::DynamicImage` of any size to a (C, size, size) f32 tensor in
/// [−1, 1]: resize the short side to `size` (Lanczos3) and center-crop (ADM/DiT preprocessing).
pub fn image_to_tensor(img: &image::DynamicImage, size: usize, channels: usize) -> Result<Tensor> {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let s = size as f64 / w.min(h);
    let (nw, nh) = (((w * s).round() as u32).max(size as u32), ((h * s).round() as u32).max(size as u32));
    let r = img.resize_exact(nw, nh, image::imageops::FilterType::Lanczos3);
    let (x0, y0) = ((nw - size as u32) / 2, (nh - size as u32) / 2);
    let r = r.crop_imm(x0, y0, size as u32, size as u32);
    let data: Vec<u8> = match channels {
        1 => r.to_luma8().into_raw(),
        3 => r.to_rgb8().into_raw(),
        c => return Err(Error::hp(format!("images must have 1 or 3 channels, got {c}"))),
    };
    let t = Tensor::from_vec(data, (size, size, channels), &Device::Cpu)?.permute((2, 0, 1))?;
    Ok(((t.to_dtype(candle_core::DType::F32)? / 127.5)? - 1.0)?)
}
