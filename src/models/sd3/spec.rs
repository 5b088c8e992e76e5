//! What an SD3 pipeline is made of: the configurations of its five networks, its scheduler shift
//! and its defaults, as presets for the published models or read from a diffusers folder.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::models::mmdit::MmditConfig;
use crate::models::vae::VaeConfig;
use crate::text::{ClipTextConfig, T5Config};
use crate::{Error, Result};

/// An SD3 / SD3.5 pipeline's architecture and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sd3Spec {
    /// Preset name or source.
    pub name: String,
    /// The denoiser.
    pub mmdit: MmditConfig,
    /// CLIP-L/14.
    pub clip_l: ClipTextConfig,
    /// OpenCLIP bigG/14.
    pub clip_g: ClipTextConfig,
    /// T5-XXL encoder.
    pub t5: T5Config,
    /// The 16-channel VAE.
    pub vae: VaeConfig,
    /// FlowMatchEulerDiscreteScheduler's time shift (3.0).
    pub shift: f64,
    /// T5 tokens (diffusers' `max_sequence_length`, 256).
    pub max_sequence_length: usize,
    /// Default sampling steps.
    pub num_steps: usize,
    /// Default CFG scale w.
    pub guidance_scale: f64,
}

impl Sd3Spec {
    fn base(name: &str, mmdit: MmditConfig, num_steps: usize, guidance_scale: f64) -> Self {
        Self {
            name: name.into(),
            mmdit,
            clip_l: ClipTextConfig::clip_l(),
            clip_g: ClipTextConfig::clip_g(),
            t5: T5Config::t5_xxl(),
            vae: VaeConfig::sd3(),
            shift: 3.0,
            max_sequence_length: 256,
            num_steps,
            guidance_scale,
        }
    }
    /// SD3-medium (`stabilityai/stable-diffusion-3-medium`): 28 steps, w = 7 (diffusers; the ERG
    /// paper samples with w = 5).
    pub fn sd3_medium() -> Self {
        Self::base("sd3-medium", MmditConfig::sd3_medium(), 28, 7.0)
    }
    /// SD3.5-large: 38 blocks with QK-norm; 28 steps, w = 3.5.
    pub fn sd3_5_large() -> Self {
        Self::base("sd3.5-large", MmditConfig::sd3_5_large(), 28, 3.5)
    }
    /// SD3.5-large-turbo (distilled): 4 steps, no guidance (w = 1 is the plain model).
    pub fn sd3_5_large_turbo() -> Self {
        Self::base("sd3.5-large-turbo", MmditConfig::sd3_5_large(), 4, 1.0)
    }
    /// SD3.5-medium (MMDiT-X): 40 steps, w = 4.5.
    pub fn sd3_5_medium() -> Self {
        Self::base("sd3.5-medium", MmditConfig::sd3_5_medium(), 40, 4.5)
    }
    /// A preset by name: `sd3-medium`, `sd3.5-large`, `sd3.5-large-turbo`, `sd3.5-medium`.
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "sd3-medium" => Self::sd3_medium(),
            "sd3.5-large" => Self::sd3_5_large(),
            "sd3.5-large-turbo" => Self::sd3_5_large_turbo(),
            "sd3.5-medium" => Self::sd3_5_medium(),
            _ => return Err(Error::hp(format!("unknown SD3 model {name:?}: sd3-medium, sd3.5-large, sd3.5-large-turbo, sd3.5-medium"))),
        })
    }

    /// Reads a diffusers folder's `transformer/`, `text_encoder{,_2,_3}/`, `vae/` and `scheduler/`
    /// configs (`model_index.json`'s layout). Errors name the file.
    pub fn from_diffusers(dir: &Path) -> Result<Self> {
        fn read<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
            let s = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            serde_json::from_str(&s).map_err(|e| Error::corrupt(p, e.to_string()))
        }
        let t: DiffusersTransformer = read(&dir.join("transformer/config.json"))?;
        if t.num_attention_heads != t.num_layers || t.caption_projection_dim != t.num_attention_heads * t.attention_head_dim {
            return Err(Error::corrupt(&dir.join("transformer/config.json"), "SD3's MMDiT has as many heads as blocks and width heads × head size"));
        }
        let mmdit = MmditConfig {
            patch_size: t.patch_size,
            in_channels: t.in_channels,
            out_channels: t.out_channels.unwrap_or(t.in_channels),
            depth: t.num_layers,
            head_size: t.attention_head_dim,
            adm_in_channels: t.pooled_projection_dim,
            pos_embed_max_size: t.pos_embed_max_size,
            context_embed_size: t.joint_attention_dim,
            frequency_embedding_size: 256,
            qk_norm: match t.qk_norm.as_deref() {
                None => false,
                Some("rms_norm") => true,
                Some(o) => return Err(Error::corrupt(&dir.join("transformer/config.json"), format!("qk_norm {o:?} is not supported (rms_norm)"))),
            },
            activation: crate::models::dit::Activation::GeluTanh,
            dual_attention_layers: t.dual_attention_layers,
        };
        #[derive(Deserialize)]
        struct Sched {
            #[serde(default = "three")]
            shift: f64,
        }
        fn three() -> f64 {
            3.0
        }
        let shift = if dir.join("scheduler/scheduler_config.json").exists() { read::<Sched>(&dir.join("scheduler/scheduler_config.json"))?.shift } else { 3.0 };
        let t5_cfg = dir.join("text_encoder_3/config.json");
        Ok(Self {
            name: dir.display().to_string(),
            mmdit,
            clip_l: read(&dir.join("text_encoder/config.json"))?,
            clip_g: read(&dir.join("text_encoder_2/config.json"))?,
            t5: if t5_cfg.exists() { read(&t5_cfg)? } else { T5Config::t5_xxl() },
            vae: read(&dir.join("vae/config.json"))?,
            shift,
            max_sequence_length: 256,
            num_steps: 28,
            guidance_scale: 7.0,
        })
    }
}

/// The fields of diffusers' `SD3Transformer2DModel` config.
#[derive(Deserialize)]
struct DiffusersTransformer {
    patch_size: usize,
    in_channels: usize,
    out_channels: Option<usize>,
    num_layers: usize,
    attention_head_dim: usize,
    num_attention_heads: usize,
    joint_attention_dim: usize,
    caption_projection_dim: usize,
    pooled_projection_dim: usize,
    pos_embed_max_size: usize,
    #[serde(default)]
    qk_norm: Option<String>,
    #[serde(default)]
    dual_attention_layers: Vec<usize>,
}
