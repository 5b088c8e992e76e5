//! SD3's weight layouts, brought to one set of names per network:
//!
//! - **single file** (`sd3_medium_incl_clips_t5xxlfp16.safetensors`, `sd3.5_*.safetensors`):
//!   `model.diffusion_model.*` (SD3 names, fused `attn.qkv`), `text_encoders.clip_l.transformer.*`,
//!   `text_encoders.clip_g.transformer.*`, `text_encoders.t5xxl.transformer.*` (transformers'
//!   names), `first_stage_model.*` (LDM names, renamed by [`crate::models::vae::ldm_to_diffusers`]).
//!   SD3.5's files carry no text encoders: they come from `text_encoders/{clip_l,clip_g,t5xxl_fp16}.safetensors`.
//! - **diffusers folder**: `transformer/` (split q, k, v; `norm_out` and the last block's
//!   `norm1_context` store (scale, shift) where the single file stores (shift, scale)) converted to
//!   SD3 names by [`diffusers_to_sd3`]; `text_encoder{,_2,_3}/`, `vae/` in transformers'/diffusers'
//!   names; sharded files (`*.safetensors.index.json`) are read whole.
//!
//! The conversion mirrors diffusers' `convert_sd3_transformer_checkpoint_to_diffusers` in reverse;
//! the reference script checks its Python twin against diffusers' converter, and the tests load
//! both layouts of the same tiny pipeline and compare outputs.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// The tensors of the five networks, each in the names its loader expects.
#[derive(Default)]
pub struct Sd3Tensors {
    /// MMDiT, SD3 names (below `model.diffusion_model`).
    pub transformer: HashMap<String, Tensor>,
    /// CLIP-L, transformers' names (`text_model.*`).
    pub clip_l: HashMap<String, Tensor>,
    /// CLIP-G, transformers' names.
    pub clip_g: HashMap<String, Tensor>,
    /// T5, transformers' names (`encoder.*`, `shared`).
    pub t5: HashMap<String, Tensor>,
    /// VAE, diffusers' names.
    pub vae: HashMap<String, Tensor>,
}

fn strip(tensors: &mut HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    let keys: Vec<String> = tensors.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
    keys.into_iter().map(|k| (k[prefix.len()..].to_string(), tensors.remove(&k).expect("listed"))).collect()
}

/// Splits a single file's tensors by prefix (module docs). Unknown tensors are an error naming
/// the first; networks the file lacks stay empty.
pub fn split_single_file(mut t: HashMap<String, Tensor>, vae_levels: usize, path: &Path) -> Result<Sd3Tensors> {
    let out = Sd3Tensors {
        transformer: strip(&mut t, "model.diffusion_model."),
        clip_l: strip(&mut t, "text_encoders.clip_l.transformer."),
        clip_g: strip(&mut t, "text_encoders.clip_g.transformer."),
        t5: strip(&mut t, "text_encoders.t5xxl.transformer."),
        vae: crate::models::vae::ldm_to_diffusers(strip(&mut t, "first_stage_model."), vae_levels)?,
    };
    if let Some(k) = t.keys().min() {
        return Err(Error::corrupt(
            path,
            format!("tensor {k:?} belongs to no SD3 network (expected model.diffusion_model., text_encoders.*, first_stage_model.)"),
        ));
    }
    if out.transformer.is_empty() {
        return Err(Error::corrupt(path, "no model.diffusion_model.* tensors: not an SD3 single file"));
    }
    Ok(out)
}

/// Every `*.safetensors` file of a diffusers component folder (shards included), merged.
/// Errors: no weights in the folder; a corrupt file, named.
pub fn load_component(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    // A folder with both full-precision and `.fp16.` variants: take the full-precision ones.
    if files.iter().any(|p| !is_variant(p)) {
        files.retain(|p| !is_variant(p));
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Missing { path: dir.to_path_buf(), hint: "no *.safetensors weights in this diffusers component folder".into() });
    }
    let mut all = HashMap::new();
    for f in files {
        all.extend(crate::checkpoint::load_tensors(&f, device)?);
    }
    Ok(all)
}

fn is_variant(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(".fp16") || n.contains(".bf16"))
}

/// diffusers `SD3Transformer2DModel` tensors → SD3 names (inverse of diffusers' single-file
/// converter): fused qkv, swapped (scale, shift) halves of `norm_out` and of the last block's
/// `norm1_context`. `depth`: number of blocks. Errors: a missing tensor, named.
pub fn diffusers_to_sd3(mut t: HashMap<String, Tensor>, depth: usize, path: &Path) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    let dual: Vec<bool> = (0..depth).map(|i| t.contains_key(&format!("transformer_blocks.{i}.attn2.to_q.weight"))).collect();
    let mut take = |k: &str| t.remove(k).ok_or_else(|| Error::corrupt(path, format!("missing tensor {k}")));
    let swap = |w: Tensor| -> Result<Tensor> {
        let c = w.chunk(2, 0)?;
        Ok(Tensor::cat(&[&c[1], &c[0]], 0)?)
    };
    out.insert("pos_embed".into(), take("pos_embed.pos_embed")?);
    for (s, d) in [
        ("x_embedder.proj", "pos_embed.proj"),
        ("context_embedder", "context_embedder"),
        ("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
        ("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
        ("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
        ("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
        ("final_layer.linear", "proj_out"),
    ] {
        for p in ["weight", "bias"] {
            out.insert(format!("{s}.{p}"), take(&format!("{d}.{p}"))?);
        }
    }
    for p in ["weight", "bias"] {
        out.insert(format!("final_layer.adaLN_modulation.1.{p}"), swap(take(&format!("norm_out.linear.{p}"))?)?);
    }
    for i in 0..depth {
        let (b, j) = (format!("transformer_blocks.{i}."), format!("joint_blocks.{i}."));
        let last = i + 1 == depth;
        for p in ["weight", "bias"] {
            let qkv = |t: &mut dyn FnMut(&str) -> Result<Tensor>, a: &str, bb: &str, c: &str| -> Result<Tensor> {
                Ok(Tensor::cat(&[t(&format!("{b}{a}.{p}"))?, t(&format!("{b}{bb}.{p}"))?, t(&format!("{b}{c}.{p}"))?], 0)?)
            };
            out.insert(format!("{j}x_block.attn.qkv.{p}"), qkv(&mut take, "attn.to_q", "attn.to_k", "attn.to_v")?);
            out.insert(format!("{j}context_block.attn.qkv.{p}"), qkv(&mut take, "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")?);
            out.insert(format!("{j}x_block.attn.proj.{p}"), take(&format!("{b}attn.to_out.0.{p}"))?);
            out.insert(format!("{j}x_block.adaLN_modulation.1.{p}"), take(&format!("{b}norm1.linear.{p}"))?);
            let ctx = take(&format!("{b}norm1_context.linear.{p}"))?;
            out.insert(format!("{j}context_block.adaLN_modulation.1.{p}"), if last { swap(ctx)? } else { ctx });
            out.insert(format!("{j}x_block.mlp.fc1.{p}"), take(&format!("{b}ff.net.0.proj.{p}"))?);
            out.insert(format!("{j}x_block.mlp.fc2.{p}"), take(&format!("{b}ff.net.2.{p}"))?);
            if !last {
                out.insert(format!("{j}context_block.attn.proj.{p}"), take(&format!("{b}attn.to_add_out.{p}"))?);
                out.insert(format!("{j}context_block.mlp.fc1.{p}"), take(&format!("{b}ff_context.net.0.proj.{p}"))?);
                out.insert(format!("{j}context_block.mlp.fc2.{p}"), take(&format!("{b}ff_context.net.2.{p}"))?);
            }
            if dual[i] {
                out.insert(format!("{j}x_block.attn2.qkv.{p}"), qkv(&mut take, "attn2.to_q", "attn2.to_k", "attn2.to_v")?);
                out.insert(format!("{j}x_block.attn2.proj.{p}"), take(&format!("{b}attn2.to_out.0.{p}"))?);
            }
        }
        for (s, d) in [
            ("x_block.attn.ln_q", "attn.norm_q"),
            ("x_block.attn.ln_k", "attn.norm_k"),
            ("context_block.attn.ln_q", "attn.norm_added_q"),
            ("context_block.attn.ln_k", "attn.norm_added_k"),
            ("x_block.attn2.ln_q", "attn2.norm_q"),
            ("x_block.attn2.ln_k", "attn2.norm_k"),
        ] {
            if let Ok(w) = take(&format!("{b}{d}.weight")) {
                out.insert(format!("{j}{s}.weight"), w);
            }
        }
    }
    drop(take);
    if let Some(k) = t.keys().min() {
        return Err(Error::corrupt(path, format!("tensor {k:?} has no place in SD3's MMDiT ({depth} blocks)")));
    }
    Ok(out)
}
