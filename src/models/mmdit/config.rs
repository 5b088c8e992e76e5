//! MMDiT hyperparameters and named presets (Esser et al. 2024; the SD3 checkpoints).
use serde::{Deserialize, Serialize};

pub use crate::models::dit::Activation;

fn gelu_tanh() -> Activation {
    Activation::GeluTanh
}

/// Architecture of an MMDiT. Width = `head_size · depth`, heads = `depth` (SD3's rule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmditConfig {
    /// Patch size p (tokens are p × p patches of the latent).
    pub patch_size: usize,
    /// Latent channels in.
    pub in_channels: usize,
    /// Channels out (the velocity).
    pub out_channels: usize,
    /// Number of joint blocks; also the number of heads.
    pub depth: usize,
    /// Channels per head.
    pub head_size: usize,
    /// Width of the pooled text vector (`y`).
    pub adm_in_channels: usize,
    /// Side of the stored position-embedding grid (cropped to the input, centred).
    pub pos_embed_max_size: usize,
    /// Width of the context (text token) embeddings.
    pub context_embed_size: usize,
    /// Sinusoidal timestep features.
    pub frequency_embedding_size: usize,
    /// RMS-norm on q and k per head (`ln_q`, `ln_k`; SD3.5).
    pub qk_norm: bool,
    /// MLP activation: tanh-GELU in SD3 (the default); the small emoji model uses erf-GELU, whose
    /// fused kernel trains several times faster on CPU.
    #[serde(default = "gelu_tanh")]
    pub activation: Activation,
    /// MMDiT-X (SD3.5-medium): blocks whose image stream has the second, image-only attention
    /// `attn2` (blocks 0–12 in SD3.5-medium).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dual_attention_layers: Vec<usize>,
}

impl MmditConfig {
    /// Stable Diffusion 3 medium: 24 blocks × 64 = 1536 wide, patch 2, 16 latent channels,
    /// pooled 2048, context 4096, 192² position grid.
    pub fn sd3_medium() -> Self {
        Self {
            patch_size: 2,
            in_channels: 16,
            out_channels: 16,
            depth: 24,
            head_size: 64,
            adm_in_channels: 2048,
            pos_embed_max_size: 192,
            context_embed_size: 4096,
            frequency_embedding_size: 256,
            qk_norm: false,
            activation: Activation::GeluTanh,
            dual_attention_layers: vec![],
        }
    }
    /// Stable Diffusion 3.5 large (and large-turbo): 38 blocks × 64 = 2432 wide, QK RMS-norm.
    pub fn sd3_5_large() -> Self {
        Self { depth: 38, qk_norm: true, ..Self::sd3_medium() }
    }
    /// Stable Diffusion 3.5 medium (MMDiT-X): 24 blocks, QK RMS-norm, the second image attention in
    /// blocks 0–12, a 384² position grid.
    pub fn sd3_5_medium() -> Self {
        Self { qk_norm: true, pos_embed_max_size: 384, dual_attention_layers: (0..13).collect(), ..Self::sd3_medium() }
    }
    /// A tiny configuration for tests (2 blocks × 8 channels per head, 4 latent channels).
    pub fn test_tiny() -> Self {
        Self {
            patch_size: 2,
            in_channels: 4,
            out_channels: 4,
            depth: 2,
            head_size: 8,
            adm_in_channels: 12,
            pos_embed_max_size: 8,
            context_embed_size: 10,
            frequency_embedding_size: 32,
            qk_norm: false,
            activation: Activation::GeluTanh,
            dual_attention_layers: vec![],
        }
    }
    /// Token width.
    pub fn hidden_size(&self) -> usize {
        self.head_size * self.depth
    }
    /// Attention heads.
    pub fn num_heads(&self) -> usize {
        self.depth
    }
}
