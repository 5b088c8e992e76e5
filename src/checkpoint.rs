//! Weights on disk: safetensors (official key names) plus a JSON sidecar with the model config.
//! Writes are atomic (temporary file, then rename), so an interrupted save never leaves a
//! half-written checkpoint behind.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The shipped emoji DiT (EMA weights).
pub const SHIPPED_EMOJI_DIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/checkpoints/emoji-dit-ema.safetensors");
/// The shipped early checkpoint of the same run (AutoGuidance's weak model).
pub const SHIPPED_EMOJI_WEAK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/checkpoints/emoji-dit-weak.safetensors");
/// The shipped emoji classifier (features and consistency).
pub const SHIPPED_EMOJI_CLASSIFIER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/checkpoints/emoji-classifier.safetensors");

/// The JSON sidecar of a model checkpoint (`<stem>.json` beside `<stem>.safetensors`).
/// `C` is the model's configuration: [`crate::models::dit::DitConfig`] for the DiT,
/// [`crate::models::mmdit::TextToImageConfig`] for the text-to-image MMDiT, or
/// `serde_json::Value` to read any card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard<C> {
    /// Architecture: `dit` or `mmdit-t2i`.
    pub model: String,
    /// Model configuration.
    pub config: C,
    /// Training step the weights are from.
    pub step: u64,
    /// Class names (index = label); empty for a text-to-image model.
    pub classes: Vec<String>,
    /// Data set the model was trained on.
    pub dataset: String,
    /// Whether these are EMA weights.
    pub ema: bool,
}

/// Replaces `path` atomically: `write` fills a temporary file in the same folder, which is
/// synced and renamed over `path`, so a kill leaves either the old file or the new one.
/// Errors: I/O errors, naming the path.
fn replace_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let named = |e: std::io::Error| Error::Other(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(named)?;
    }
    let tmp = tmp_path(path);
    write(&tmp)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(named)?;
    std::fs::rename(&tmp, path).map_err(named)?;
    Ok(())
}

/// Writes `bytes` to `path` atomically (temporary file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_atomically(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| Error::Other(format!("{}: {e}", tmp.display()))))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Saves tensors to a safetensors file atomically, converting floats to `dtype`.
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path, dtype: DType) -> Result<()> {
    let converted: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| {
            let v = if v.dtype().is_float() { v.to_dtype(dtype)? } else { v.clone() };
            Ok((k.clone(), v.to_device(&Device::Cpu)?))
        })
        .collect::<Result<_>>()?;
    replace_atomically(path, |tmp| Ok(candle_core::safetensors::save(&converted, tmp)?))
}

/// Loads all tensors of a safetensors file onto `device`, with errors that name the file.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::Missing { path: path.into(), hint: "train one with `cargo run --release --example train` or pass the path of a checkpoint".into() });
    }
    candle_core::safetensors::load(path, device).map_err(|e| Error::corrupt(path, format!("not a readable safetensors file ({e})")))
}

/// The sidecar path of a weights file: `x.safetensors` → `x.json`.
pub fn card_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Saves a model's weights (as `dtype`) and its card atomically.
pub fn save_checkpoint<C: Serialize>(tensors: &HashMap<String, Tensor>, card: &ModelCard<C>, weights: &Path, dtype: DType) -> Result<()> {
    save_tensors(tensors, weights, dtype)?;
    let json = serde_json::to_vec_pretty(card).map_err(|e| Error::Other(e.to_string()))?;
    write_atomic(&card_path(weights), &json)
}

/// Reads a model card.
pub fn load_card<C: serde::de::DeserializeOwned>(weights: &Path) -> Result<ModelCard<C>> {
    let p = card_path(weights);
    let text = std::fs::read_to_string(&p).map_err(|_| Error::Missing { path: p.clone(), hint: "every checkpoint needs its JSON card beside it".into() })?;
    serde_json::from_str(&text).map_err(|e| Error::corrupt(&p, e))
}
