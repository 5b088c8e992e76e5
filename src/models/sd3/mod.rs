//! Stable Diffusion 3 / 3.5 from prompt to image (Esser et al. 2024), as diffusers'
//! `StableDiffusion3Pipeline`, as a [`Denoiser`] so that every guidance method of the crate drives
//! it (I-ERG in the joint blocks, C-ERG in CLIP-L, CLIP-G and T5, PAG/SEG/SLG/SAG on the joint
//! attention, CADS on the text tokens).
//!
//! - networks: [`Mmdit`] (incl. QK-norm and MMDiT-X), [`ClipText`] ×2, [`T5Encoder`], [`Vae`];
//! - conditioning: [`text`] (diffusers' `encode_prompt`);
//! - weights: [`weights`] (single file or diffusers folder, local or `hf://`), [`spec`] (presets);
//! - schedule: [`crate::flow::flow_match_schedule`] (FlowMatchEulerDiscrete with shift 3), via
//!   [`Denoiser::schedule`]; the crate's Euler sampler on it is diffusers' scheduler step.
//!
//! Time: SD3 counts σ = 1 − t and predicts ε − x₀; [`Mmdit::velocity`] converts (the one place).
//!
//! Conditions: the raw condition is a row of packed token ids (B, 77 + 77 + T) u32
//! ([`Sd3::prompt_ids`]); its embedding is (B, 77 + T + 1, W): the context tokens, then one row
//! holding the pooled vector y (2048) zero-padded to W. The null condition is the empty prompt.
//! The denoiser works on latents (16, H/8, W/8); [`Sd3::decode`] turns them into images.
pub mod spec;
pub mod text;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tokenizers::Tokenizer;

pub use spec::Sd3Spec;
pub use text::Sd3Text;

use crate::attention::{AttentionProbe, ForwardPlan};
use crate::checkpoint::build_strict_dtype;
use crate::hub::WeightSource;
use crate::models::mmdit::Mmdit;
use crate::models::vae::Vae;
use crate::models::Denoiser;
use crate::text::{ClipText, T5Encoder, TextRectification};
use crate::{Error, Result};

/// The tiny random-weight SD3 pipeline committed with the tests (diffusers layout), made by
/// `benches/reference/sd3_reference.py` with diffusers' own classes: what `sd3` runs without weights.
pub const TINY_SD3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sd3/diffusers");

/// Tokenizers used when a source has none (single files): CLIP's (both CLIP encoders share its
/// vocabulary; CLIP-G pads with "!") and T5 v1.1's, as candle's SD3 example uses.
pub const DEFAULT_TOKENIZERS: [&str; 3] = [
    "hf://openai/clip-vit-large-patch14/tokenizer.json",
    "hf://openai/clip-vit-large-patch14/tokenizer.json",
    "hf://lmz/mt5-tokenizers/t5-v1_1-xxl.tokenizer.json",
];

/// How to load a pipeline.
#[derive(Debug, Clone)]
pub struct Sd3Options {
    /// The architecture of a single file (a preset); diffusers folders carry their own configs.
    pub spec: Option<Sd3Spec>,
    /// Weights dtype: f32 on CPU; f16 or bf16 on a GPU (T5 always runs in f32 or bf16: T5 in f16
    /// overflows).
    pub dtype: DType,
    /// Load T5 (9.5 GB in f16); without it its tokens are zeros, as diffusers without `text_encoder_3`.
    pub with_t5: bool,
    /// Image (H, W) in pixels, multiples of 16.
    pub image_size: (usize, usize),
    /// T5 tokens (256 in diffusers).
    pub max_sequence_length: usize,
    /// Text encoders of SD3.5 single files: a folder with `clip_l.safetensors`,
    /// `clip_g.safetensors` and `t5xxl_fp16.safetensors` (or an `hf://org/name/folder`).
    pub text_encoders: Option<String>,
    /// Tokenizers (CLIP-L, CLIP-G, T5) as paths or `hf://` files; default: the source's own, else
    /// [`DEFAULT_TOKENIZERS`].
    pub tokenizers: Option<[String; 3]>,
}

impl Default for Sd3Options {
    fn default() -> Self {
        Self { spec: None, dtype: DType::F32, with_t5: true, image_size: (1024, 1024), max_sequence_length: 256, text_encoders: None, tokenizers: None }
    }
}

/// The SD3 pipeline.
pub struct Sd3 {
    spec: Sd3Spec,
    /// The denoiser.
    pub mmdit: Mmdit,
    text: Sd3Text,
    vae: Vae,
    image_size: (usize, usize),
    empty_ids: Option<Tensor>,
}

fn tokenizer(src: &str) -> Result<Tokenizer> {
    let p = src.parse::<WeightSource>()?.resolve()?;
    Tokenizer::from_file(&p).map_err(|e| Error::corrupt(&p, format!("not a tokenizer.json: {e}")))
}

impl Sd3 {
    /// Loads a pipeline from `source`: a diffusers folder (with `model_index.json`), an SD3
    /// single `.safetensors` file, `hf://org/name` (a diffusers repository) or
    /// `hf://org/name/file.safetensors` (a single file); gated repositories need `HF_TOKEN`.
    /// Errors name the missing file, tensor or setting.
    pub fn load(source: &str, opts: &Sd3Options, device: &Device) -> Result<Self> {
        let local = resolve_source(source, opts.with_t5)?;
        if local.is_dir() {
            let spec = Sd3Spec::from_diffusers(&local)?;
            let comp = |c: &str| weights::load_component(&local.join(c), device);
            let t = weights::Sd3Tensors {
                transformer: weights::diffusers_to_sd3(comp("transformer")?, spec.mmdit.depth, &local.join("transformer"))?,
                clip_l: comp("text_encoder")?,
                clip_g: comp("text_encoder_2")?,
                t5: if opts.with_t5 && local.join("text_encoder_3").exists() { comp("text_encoder_3")? } else { Default::default() },
                vae: comp("vae")?,
            };
            let own = |i: usize, d: &str| {
                let p = local.join(d).join("tokenizer.json");
                opts.tokenizers.as_ref().map(|t| t[i].clone()).unwrap_or_else(|| {
                    if p.exists() {
                        p.display().to_string()
                    } else {
                        DEFAULT_TOKENIZERS[i].to_string()
                    }
                })
            };
            let toks = [own(0, "tokenizer"), own(1, "tokenizer_2"), own(2, "tokenizer_3")];
            Self::from_tensors(spec, t, Some(toks), opts, &local, device)
        } else {
            let spec = opts.spec.clone().ok_or_else(|| {
                Error::hp(format!("{source} is a single file: say which model it is (--model sd3-medium, sd3.5-large, sd3.5-large-turbo, sd3.5-medium)"))
            })?;
            let mut t = weights::split_single_file(crate::checkpoint::load_tensors(&local, device)?, spec.vae.block_out_channels.len(), &local)?;
            if let Some(te) = &opts.text_encoders {
                let file = |f: &str| -> Result<PathBuf> { format!("{}/{f}", te.trim_end_matches('/')).parse::<WeightSource>()?.resolve() };
                t.clip_l = crate::checkpoint::load_tensors(&file("clip_l.safetensors")?, device)?;
                t.clip_g = crate::checkpoint::load_tensors(&file("clip_g.safetensors")?, device)?;
                if opts.with_t5 {
                    t.t5 = crate::checkpoint::load_tensors(&file("t5xxl_fp16.safetensors")?, device)?;
                }
            }
            if !opts.with_t5 {
                t.t5.clear();
            }
            let toks = opts.tokenizers.clone().unwrap_or(DEFAULT_TOKENIZERS.map(String::from));
            Self::from_tensors(spec, t, Some(toks), opts, &local, device)
        }
    }

    /// Builds the pipeline from tensors in the names of [`weights::Sd3Tensors`], every tensor
    /// used (strict), with tokenizers (paths or `hf://`), or none to encode only token ids.
    pub fn from_tensors(
        mut spec: Sd3Spec,
        t: weights::Sd3Tensors,
        tokenizers: Option<[String; 3]>,
        opts: &Sd3Options,
        path: &Path,
        device: &Device,
    ) -> Result<Self> {
        let (h, w) = opts.image_size;
        let f = spec.vae.downsample() * spec.mmdit.patch_size;
        if h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(Error::hp(format!("image size {h}×{w} must be a positive multiple of {f} (VAE × patch)")));
        }
        if t.clip_l.is_empty() || t.clip_g.is_empty() {
            return Err(Error::Missing {
                path: path.to_path_buf(),
                hint: "no CLIP text encoders in these weights: SD3.5 files need --text-encoders <folder with clip_l/clip_g/t5xxl_fp16.safetensors>".into(),
            });
        }
        spec.max_sequence_length = opts.max_sequence_length;
        let dt = opts.dtype;
        // T5 in f16 overflows (its activations exceed 65504): f32 or bf16.
        let t5_dt = if dt == DType::F16 { DType::BF16 } else { dt };
        let clean = |mut m: std::collections::HashMap<String, Tensor>| {
            m.retain(|k, _| !k.ends_with("position_ids"));
            if m.contains_key("shared.weight") {
                m.remove("encoder.embed_tokens.weight");
            }
            m
        };
        let at = |c: &str| path.join(c);
        let mmdit = build_strict_dtype(&at("transformer"), t.transformer, dt, device, |vb| Mmdit::new(&spec.mmdit, vb))?;
        let clip_l = build_strict_dtype(&at("text_encoder"), clean(t.clip_l), dt, device, |vb| ClipText::new(&spec.clip_l, vb))?;
        let clip_g = build_strict_dtype(&at("text_encoder_2"), clean(t.clip_g), dt, device, |vb| ClipText::new(&spec.clip_g, vb))?;
        let t5 = if t.t5.is_empty() {
            None
        } else {
            Some(build_strict_dtype(&at("text_encoder_3"), clean(t.t5), t5_dt, device, |vb| T5Encoder::new(&spec.t5, vb))?)
        };
        let vae = build_strict_dtype(&at("vae"), t.vae, dt, device, |vb| Vae::new(&spec.vae, vb))?;
        let toks = match tokenizers {
            Some(ts) => Some([tokenizer(&ts[0])?, tokenizer(&ts[1])?, tokenizer(&ts[2])?]),
            None => None,
        };
        let text = Sd3Text::new(clip_l, clip_g, t5, toks, spec.max_sequence_length, spec.mmdit.context_embed_size)?;
        if text.pooled_width() != spec.mmdit.adm_in_channels {
            return Err(Error::shape(format!(
                "the CLIP projections give a pooled vector of {}, the MMDiT takes {}",
                text.pooled_width(),
                spec.mmdit.adm_in_channels
            )));
        }
        let empty_ids = text.token_ids(&[""], device).ok(); // None without tokenizers
        Ok(Self { spec, mmdit, text, vae, image_size: (h, w), empty_ids })
    }

    /// The tiny random-weight pipeline of the tests ([`TINY_SD3`]) at 128 × 128 pixels, T5
    /// sequence 16 (as its fixtures).
    pub fn tiny(device: &Device) -> Result<Self> {
        let opts = Sd3Options { image_size: (128, 128), max_sequence_length: 16, ..Default::default() };
        Self::load(TINY_SD3, &opts, device)
    }

    /// The architecture and defaults.
    pub fn spec(&self) -> &Sd3Spec {
        &self.spec
    }

    /// The text encoders.
    pub fn text(&self) -> &Sd3Text {
        &self.text
    }

    /// The VAE.
    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    /// Image (H, W) in pixels.
    pub fn image_size(&self) -> (usize, usize) {
        self.image_size
    }

    /// Packed token ids (B, 77 + 77 + T) u32 of `prompts`: the raw conditions.
    pub fn prompt_ids(&self, prompts: &[&str], device: &Device) -> Result<Tensor> {
        self.text.token_ids(prompts, device)
    }

    /// Latents (B, 16, H/8, W/8) → images (B, 3, H, W) in [−1, 1], clamped.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(self.vae.decode(latents)?.clamp(-1.0, 1.0)?)
    }

    /// Context (B, 77 + T, W) and pooled y (B, 2048) → the packed embedding (B, 77 + T + 1, W).
    pub fn pack(&self, context: &Tensor, pooled: &Tensor) -> Result<Tensor> {
        let w = context.dim(2)?;
        let y = pooled.pad_with_zeros(1, 0, w - pooled.dim(1)?)?.unsqueeze(1)?; // (B, 1, W)
        Ok(Tensor::cat(&[context, &y], 1)?)
    }

    fn encode(&self, cond: &Tensor, rect: Option<&TextRectification>) -> Result<Tensor> {
        let (ctx, y) = self.text.encode(cond, rect)?;
        self.pack(&ctx, &y)
    }
}

/// A local path for `source` (module docs of [`Sd3::load`]); `hf://org/name` downloads the
/// diffusers repository's configs, tokenizers and weights through hf-hub.
/// Without T5 its 9.5 GB are not downloaded.
fn resolve_source(source: &str, with_t5: bool) -> Result<PathBuf> {
    if let Some(rest) = source.strip_prefix("hf://") {
        if rest.split('/').filter(|s| !s.is_empty()).count() == 2 {
            let mut parts = vec!["model_index.json", "transformer/", "text_encoder/", "text_encoder_2/", "tokenizer", "vae/", "scheduler/"];
            if with_t5 {
                parts.push("text_encoder_3/");
            }
            return crate::hub::snapshot(rest.trim_end_matches('/'), &parts);
        }
    }
    let p = source.parse::<WeightSource>()?.resolve()?;
    if p.is_dir() && !p.join("model_index.json").exists() && !p.join("transformer").exists() {
        return Err(Error::Missing { path: p, hint: "not a diffusers SD3 folder (no model_index.json, no transformer/)".into() });
    }
    Ok(p)
}

impl Denoiser for Sd3 {
    fn depth(&self) -> usize {
        self.spec.mmdit.depth
    }

    fn image_shape(&self) -> (usize, usize, usize) {
        let f = self.spec.vae.downsample();
        (self.spec.mmdit.in_channels, self.image_size.0 / f, self.image_size.1 / f)
    }

    fn token_grid(&self) -> (usize, usize) {
        let (_, h, w) = self.image_shape();
        (h / self.spec.mmdit.patch_size, w / self.spec.mmdit.patch_size)
    }

    fn schedule(&self, num_steps: usize) -> Vec<f64> {
        crate::flow::flow_match_schedule(num_steps, self.spec.shift)
    }

    /// Packed ids (B, 77 + 77 + T) → (B, 77 + T + 1, W) with the plain encoders.
    fn embed_condition(&self, cond: &Tensor) -> Result<Tensor> {
        self.encode(cond, None)
    }

    fn velocity_probed(&self, x: &Tensor, t: &Tensor, cond_emb: &Tensor, plan: &ForwardPlan, probe: &mut dyn AttentionProbe) -> Result<Tensor> {
        let (b, rows, w) = cond_emb.dims3()?;
        let l = self.text.context_len();
        if rows != l + 1 || w != self.spec.mmdit.context_embed_size || b != x.dim(0)? {
            return Err(Error::shape(format!(
                "packed SD3 embedding {:?}, expected ({}, {}, {})",
                cond_emb.dims(),
                x.dim(0)?,
                l + 1,
                self.spec.mmdit.context_embed_size
            )));
        }
        let dt = self.mmdit_dtype();
        let ctx = cond_emb.narrow(1, 0, l)?.to_dtype(dt)?; // (B, 77 + T, W)
        let y = cond_emb.narrow(1, l, 1)?.squeeze(1)?.narrow(1, 0, self.spec.mmdit.adm_in_channels)?.to_dtype(dt)?; // (B, 2048)
        Ok(self.mmdit.velocity(&x.to_dtype(dt)?, t, &y, &ctx, plan, probe)?.to_dtype(DType::F32)?)
    }

    /// The empty prompt's packed ids, repeated.
    fn null_condition(&self, cond: &Tensor) -> Result<Tensor> {
        let e = self.empty_ids.as_ref().ok_or_else(|| Error::hp("the null condition (empty prompt) needs the tokenizers"))?;
        Ok(e.to_device(cond.device())?.repeat((cond.dim(0)?, 1))?)
    }

    fn text_layers(&self) -> Option<usize> {
        Some(self.text.max_layers())
    }

    fn embed_rectified_condition(&self, cond: &Tensor, rect: &TextRectification) -> Result<Tensor> {
        self.text.validate(rect)?;
        self.encode(cond, Some(rect))
    }
}

impl Sd3 {
    fn mmdit_dtype(&self) -> DType {
        self.mmdit.dtype()
    }
}
