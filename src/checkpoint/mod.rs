//! Weights on disk: safetensors (official key names) plus a JSON sidecar with the model config.
//! Writes are atomic (temporary file, then rename), so an interrupted save never leaves a
//! half-written checkpoint behind.
//!
//! Every file this crate writes carries the SHA-256 of each tensor in its header
//! (`integrity`), checked at load with the finiteness of every float; a checkpoint also embeds
//! its card, so a card edited after export (a wrong `num_heads`, other class names) no longer
//! matches the weights and is refused at load ([`load_checkpoint`]); [`build_strict`] refuses
//! weights with tensors the configured model does not use.
mod integrity;
mod strict;

pub use integrity::{all_finite, file_sha256, sha256_hex, CHECKSUMS};
pub use strict::{build_strict, build_strict_dtype};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Guidance settings selected for these weights by a sweep (`sweep`, then `export --from
    /// <weights> --selection <sweep>/selection.json`); absent until one is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<GuidanceSelection>,
}

/// Each method's setting chosen for one checkpoint by mean rank over a grid (ERG Appendix A.1),
/// with what the choice rests on, so that a table reported on other seeds can say it did not
/// select on its own samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuidanceSelection {
    /// The rule, e.g. "mean rank over fid↓ precision↑ ... (ERG Appendix A.1)".
    pub rule: String,
    /// Sampling seeds the sweep averaged over (disjoint from the reported tables' seeds).
    pub seeds: Vec<u64>,
    /// Generated images per class per setting and seed.
    pub samples_per_class: usize,
    /// Euler steps.
    pub num_steps: usize,
    /// Features the metrics were computed on (e.g. the classifier's key).
    pub features: String,
    /// Method name (a preset name of `erg::guidance::preset`) → its selected `Guidance` (JSON).
    pub methods: std::collections::BTreeMap<String, serde_json::Value>,
}

impl GuidanceSelection {
    /// This selection with `other`'s methods added (a method in both takes `other`'s setting),
    /// e.g. a later sweep of more methods added to a card's selection. Mean rank is taken within
    /// each method's own grid ([`crate::eval::sweep::select_per_method`]), so two sweeps under the
    /// same rule, seeds, sample count, steps and features select exactly what one sweep of all
    /// their methods would.
    ///
    /// Errors: the two differ in rule, seeds, samples per class, steps or features (they would not
    /// be one selection), naming the field and both values.
    pub fn merged(mut self, other: GuidanceSelection) -> Result<Self> {
        let differ = |field: &str, a: String, b: String| Error::Other(format!("cannot merge selections made with different {field}: {a} vs {b}"));
        if self.rule != other.rule {
            return Err(differ("rules", self.rule, other.rule));
        }
        if self.seeds != other.seeds {
            return Err(differ("seeds", format!("{:?}", self.seeds), format!("{:?}", other.seeds)));
        }
        if self.samples_per_class != other.samples_per_class {
            return Err(differ("samples per class", self.samples_per_class.to_string(), other.samples_per_class.to_string()));
        }
        if self.num_steps != other.num_steps {
            return Err(differ("num_steps", self.num_steps.to_string(), other.num_steps.to_string()));
        }
        if self.features != other.features {
            return Err(differ("features", self.features, other.features));
        }
        self.methods.extend(other.methods);
        Ok(self)
    }
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

/// Saves tensors to a safetensors file atomically, converting floats to `dtype`, with the
/// SHA-256 of each tensor's data in the header ([`CHECKSUMS`]).
/// Errors: I/O errors naming the path.
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path, dtype: DType) -> Result<()> {
    save_with_metadata(tensors, path, dtype, HashMap::new())
}

fn save_with_metadata(tensors: &HashMap<String, Tensor>, path: &Path, dtype: DType, mut metadata: HashMap<String, String>) -> Result<()> {
    let converted: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| {
            let v = if v.dtype().is_float() { v.to_dtype(dtype)? } else { v.clone() };
            Ok((k.clone(), v.to_device(&Device::Cpu)?))
        })
        .collect::<Result<_>>()?;
    metadata.insert(CHECKSUMS.into(), integrity::checksums(&converted));
    let bytes = safetensors::serialize(&converted, Some(metadata)).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Loads all tensors of a safetensors file onto `device`, with errors that name the file.
///
/// Errors: a missing file; one that is not safetensors; a tensor whose bytes differ from the
/// checksum in the header (see [`CHECKSUMS`]); a float tensor with NaN or infinite values (named).
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    load_with_metadata(path, device).map(|(t, _)| t)
}

fn load_with_metadata(path: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    if !path.exists() {
        return Err(Error::Missing { path: path.into(), hint: "train one with `cargo run --release --example train` or pass the path of a checkpoint".into() });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    integrity::verify_checksums(path, &bytes)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| Error::corrupt(path, format!("not a readable safetensors file ({e})")))?;
    integrity::check_finite(path, &tensors)?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::corrupt(path, e))?;
    Ok((tensors, meta.metadata().clone().unwrap_or_default()))
}

/// The sidecar path of a weights file: `x.safetensors` → `x.json`.
pub fn card_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Header metadata key of the card embedded in a checkpoint.
pub const EMBEDDED_CARD: &str = "erg.card";

/// Saves a model's weights (as `dtype`) and its card atomically; the card is also embedded in the
/// weights' header, binding the two ([`load_checkpoint`]). `card` is any serialisable card
/// ([`ModelCard`], the classifier's card).
/// Errors: I/O errors naming the path.
pub fn save_checkpoint<T: Serialize>(tensors: &HashMap<String, Tensor>, card: &T, weights: &Path, dtype: DType) -> Result<()> {
    let compact = serde_json::to_string(card).map_err(|e| Error::Other(e.to_string()))?;
    save_with_metadata(tensors, weights, dtype, HashMap::from([(EMBEDDED_CARD.to_string(), compact)]))?;
    let json = serde_json::to_vec_pretty(card).map_err(|e| Error::Other(e.to_string()))?;
    write_atomic(&card_path(weights), &json)
}

/// Loads a checkpoint written by [`save_checkpoint`]: its tensors (see [`load_tensors`]) and its
/// card, which must equal the card embedded in the weights.
///
/// Errors: a missing weights file or card (each named); a card with unknown or missing fields;
/// a card that differs from the embedded one (naming the first differing field: the card was
/// edited, or belongs to other weights); weights without an embedded card (saved before cards
/// were bound: bind them once with `cargo run --release --example export -- --rebind <weights>`).
pub fn load_checkpoint<T: serde::de::DeserializeOwned>(weights: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, T)> {
    let p = card_path(weights);
    if !weights.exists() {
        return Err(Error::Missing {
            path: weights.into(),
            hint: "train one with `cargo run --release --example train` or pass the path of a checkpoint".into(),
        });
    }
    let text =
        std::fs::read_to_string(&p).map_err(|e| Error::Missing { path: p.clone(), hint: format!("every checkpoint needs its JSON card beside it ({e})") })?;
    let sidecar: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::corrupt(&p, e))?;
    let (tensors, meta) = load_with_metadata(weights, device)?;
    let embedded = meta.get(EMBEDDED_CARD).ok_or_else(|| {
        Error::corrupt(
            weights,
            format!(
                "no card is embedded in the weights (saved before cards were bound to weights); check that {} describes them, then bind it once: cargo run --release --example export -- --rebind {}",
                p.display(),
                weights.display()
            ),
        )
    })?;
    let embedded: serde_json::Value = serde_json::from_str(embedded).map_err(|e| Error::corrupt(weights, format!("unreadable embedded card ({e})")))?;
    if let Some((field, card_says, weights_say)) = first_difference(&sidecar, &embedded, String::new()) {
        return Err(Error::corrupt(
            &p,
            format!(
                "the card does not match the weights {}: {field} is {card_says} in the card but {weights_say} in the card embedded at export (the card was edited or belongs to other weights)",
                weights.display()
            ),
        ));
    }
    let card = serde_json::from_value(sidecar).map_err(|e| Error::corrupt(&p, e))?;
    Ok((tensors, card))
}

/// Re-saves a checkpoint whose weights carry no embedded card (written before cards were bound)
/// with its current card embedded, after checking its tensors are finite. Returns the number of
/// tensors. The caller vouches that the card describes the weights.
/// Errors: missing files, unreadable card, non-finite weights.
pub fn rebind(weights: &Path) -> Result<usize> {
    let p = card_path(weights);
    let text =
        std::fs::read_to_string(&p).map_err(|e| Error::Missing { path: p.clone(), hint: format!("every checkpoint needs its JSON card beside it ({e})") })?;
    let card: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::corrupt(&p, e))?;
    let tensors = load_tensors(weights, &Device::Cpu)?;
    let dtype = tensors.values().find(|t| t.dtype().is_float()).map_or(DType::F32, |t| t.dtype());
    save_checkpoint(&tensors, &card, weights, dtype)?;
    Ok(tensors.len())
}

/// The first field (a JSON path) where `a` and `b` differ, with both values.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: String) -> Option<(String, String, String)> {
    use serde_json::Value;
    let join = |k: &str| if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => first_difference(u, v, join(k)),
                (u, v) => Some((join(k), show(u), show(v))),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (u, v))| first_difference(u, v, format!("{at}[{i}]")))
        }
        _ if a == b => None,
        _ => Some((if at.is_empty() { "the card".into() } else { at }, a.to_string(), b.to_string())),
    }
}

fn show(v: Option<&serde_json::Value>) -> String {
    v.map_or("absent".into(), |v| v.to_string())
}

/// Reads a model card alone (without its weights, so without the binding check of
/// [`load_checkpoint`]), e.g. to decide how to load the weights.
/// Errors: a missing weights file or card (each named); unknown or missing fields.
pub fn load_card<C: serde::de::DeserializeOwned>(weights: &Path) -> Result<C> {
    if !weights.exists() {
        return Err(Error::Missing {
            path: weights.into(),
            hint: "train one with `cargo run --release --example train` or pass the path of a checkpoint".into(),
        });
    }
    let p = card_path(weights);
    let text =
        std::fs::read_to_string(&p).map_err(|e| Error::Missing { path: p.clone(), hint: format!("every checkpoint needs its JSON card beside it ({e})") })?;
    serde_json::from_str(&text).map_err(|e| Error::corrupt(&p, e))
}
