//! The KL autoencoder of latent diffusion (Rombach et al. 2022; diffusers' `AutoencoderKL`) on
//! candle-transformers' implementation, with the latent normalisation of the model that uses it:
//! SD3's 16-channel VAE (scaling 1.5305, shift 0.0609) and the 4-channel SD VAE of DiT/SiT
//! (`stabilityai/sd-vae-ft-{ema,mse}`, scaling 0.18215, no shift).
//!
//! Latents the denoiser sees are z = (μ − shift)·scaling; decoding inverts it:
//! image = decoder(z / scaling + shift), in [−1, 1] (diffusers' pipelines).
//!
//! Weight names: diffusers' (`encoder.down_blocks.{i}.resnets.{j}`, `…mid_block.attentions.0.to_q`,
//! `decoder.up_blocks.{i}` …), from a diffusers `vae/` folder; LDM single files
//! (`first_stage_model.encoder.down.{i}.block.{j}`, …) are renamed by [`ldm_to_diffusers`].
use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

fn three() -> usize {
    3
}

/// The fields of diffusers' `AutoencoderKL` `config.json` that matter here (others are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Channels per resolution level (SD3 and SD: [128, 256, 512, 512]).
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per level (encoder; the decoder has one more).
    pub layers_per_block: usize,
    /// Latent channels (SD3: 16, SD: 4).
    pub latent_channels: usize,
    /// Group-norm groups (32).
    pub norm_num_groups: usize,
    /// 1×1 convs around the latent (SD: yes; SD3: no).
    #[serde(default)]
    pub use_quant_conv: bool,
    /// See `use_quant_conv`.
    #[serde(default)]
    pub use_post_quant_conv: bool,
    /// Latent scaling.
    pub scaling_factor: f64,
    /// Latent shift (SD3: 0.0609; SD: none).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Image channels.
    #[serde(default = "three")]
    pub in_channels: usize,
}

impl VaeConfig {
    /// SD3 / SD3.5's VAE: 16 latent channels, no quant convs, scaling 1.5305, shift 0.0609.
    pub fn sd3() -> Self {
        Self {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 16,
            norm_num_groups: 32,
            use_quant_conv: false,
            use_post_quant_conv: false,
            scaling_factor: 1.5305,
            shift_factor: Some(0.0609),
            in_channels: 3,
        }
    }
    /// The SD VAE of DiT and SiT (`stabilityai/sd-vae-ft-ema`): 4 latent channels, scaling 0.18215.
    pub fn sd() -> Self {
        Self { latent_channels: 4, use_quant_conv: true, use_post_quant_conv: true, scaling_factor: 0.18215, shift_factor: None, ..Self::sd3() }
    }
    /// Pixels per latent position along each side: 2^(levels − 1).
    pub fn downsample(&self) -> usize {
        1 << (self.block_out_channels.len().saturating_sub(1))
    }
}

/// The autoencoder with its latent normalisation.
pub struct Vae {
    cfg: VaeConfig,
    inner: AutoEncoderKL,
    dtype: DType,
}

impl Vae {
    /// Builds from `vb` in diffusers' names. Errors: a missing or misshaped tensor, named.
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let c = AutoEncoderKLConfig {
            block_out_channels: cfg.block_out_channels.clone(),
            layers_per_block: cfg.layers_per_block,
            latent_channels: cfg.latent_channels,
            norm_num_groups: cfg.norm_num_groups,
            use_quant_conv: cfg.use_quant_conv,
            use_post_quant_conv: cfg.use_post_quant_conv,
        };
        Ok(Self { cfg: cfg.clone(), dtype: vb.dtype(), inner: AutoEncoderKL::new(vb, cfg.in_channels, cfg.in_channels, c)? })
    }

    /// Loads a diffusers `vae` folder (`config.json`, `diffusion_pytorch_model.safetensors`),
    /// local or `hf://org/name` (e.g. `hf://stabilityai/sd-vae-ft-ema`), every tensor used.
    /// Returns the VAE and the weights file (for hashing).
    pub fn load_diffusers(source: &str, dtype: DType, device: &candle_core::Device) -> Result<(Self, std::path::PathBuf)> {
        let file = |f: &str| -> Result<std::path::PathBuf> {
            Ok(match source.strip_prefix("hf://") {
                Some(repo) => format!("hf://{}/{f}", repo.trim_end_matches('/')).parse::<crate::hub::WeightSource>()?.resolve()?,
                None => std::path::Path::new(source).join(f),
            })
        };
        let cfg_path = file("config.json")?;
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let cfg: VaeConfig = serde_json::from_str(&text).map_err(|e| Error::corrupt(&cfg_path, e.to_string()))?;
        let weights = file("diffusion_pytorch_model.safetensors")?;
        let t = crate::checkpoint::load_tensors(&weights, device)?;
        let vae = crate::checkpoint::build_strict_dtype(&weights, t, dtype, device, |vb| Self::new(&cfg, vb))?;
        Ok((vae, weights))
    }

    /// The configuration.
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// Normalised latents (B, C_lat, h, w) → images (B, 3, h·f, w·f) in [−1, 1] (not clamped).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let z = ((z.to_dtype(self.dtype)? / self.cfg.scaling_factor)? + self.cfg.shift_factor.unwrap_or(0.0))?;
        Ok(self.inner.decode(&z)?.to_dtype(DType::F32)?)
    }

    /// Images (B, 3, H, W) in [−1, 1] (H, W multiples of [`VaeConfig::downsample`]) → normalised
    /// latents drawn from the encoder's Gaussian (candle's `DiagonalGaussianDistribution::sample`,
    /// as DiT's feature extraction and diffusers' training scripts do).
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = images.dims4()?;
        let f = self.cfg.downsample();
        if h % f != 0 || w % f != 0 {
            return Err(Error::shape(format!("VAE input {h}×{w} is not a multiple of {f}")));
        }
        let z = self.inner.encode(&images.to_dtype(self.dtype)?)?.sample()?.to_dtype(DType::F32)?;
        Ok(((z - self.cfg.shift_factor.unwrap_or(0.0))? * self.cfg.scaling_factor)?)
    }
}

/// Renames an LDM (`first_stage_model.`-stripped) VAE state dict to diffusers' names (the inverse
/// direction of diffusers' `convert_ldm_vae_checkpoint`): `down.{i}.block.{j}` →
/// `down_blocks.{i}.resnets.{j}`, `up.{i}` → `up_blocks.{levels−1−i}`, `mid.block_{1,2}` →
/// `mid_block.resnets.{0,1}`, `mid.attn_1.{norm,q,k,v,proj_out}` →
/// `mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}` (1×1 conv weights → linear),
/// `nin_shortcut` → `conv_shortcut`, `norm_out` → `conv_norm_out`, `{down,up}sample` →
/// `{down,up}samplers.0`. `levels`: number of resolution levels.
pub fn ldm_to_diffusers(tensors: HashMap<String, Tensor>, levels: usize) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(tensors.len());
    for (k, v) in tensors {
        let mut parts: Vec<String> = k.split('.').map(str::to_string).collect();
        if parts.len() > 2 && parts[0] == "decoder" && parts[1] == "up" {
            let i: usize = parts[2].parse().map_err(|_| Error::shape(format!("VAE key {k}: bad level")))?;
            parts[2] = (levels - 1 - i).to_string();
        }
        let mut n = parts.join(".");
        for (a, b) in [
            (".down.", ".down_blocks."),
            (".up.", ".up_blocks."),
            (".mid.block_1.", ".mid_block.resnets.0."),
            (".mid.block_2.", ".mid_block.resnets.1."),
            (".mid.attn_1.", ".mid_block.attentions.0."),
            (".norm_out.", ".conv_norm_out."),
            (".nin_shortcut.", ".conv_shortcut."),
            (".downsample.", ".downsamplers.0."),
            (".upsample.", ".upsamplers.0."),
            (".block.", ".resnets."),
        ] {
            n = n.replace(a, b);
        }
        let attn = n.contains(".mid_block.attentions.0.");
        if attn {
            for (a, b) in [(".norm.", ".group_norm."), (".q.", ".to_q."), (".k.", ".to_k."), (".v.", ".to_v."), (".proj_out.", ".to_out.0.")] {
                n = n.replace(a, b);
            }
        }
        let v = if attn && v.rank() == 4 { v.flatten_from(1)? } else { v };
        out.insert(n, v);
    }
    Ok(out)
}
