//! Emoji: Twemoji (Twitter, CC-BY 4.0) and Noto Emoji (Google, Apache-2.0) images from the npm
//! packages `emoji-datasource-twitter` and `emoji-datasource-google` 16.0.0, 64×64, composited
//! onto white by `data/prepare.py` and stored as one PNG atlas plus `meta.json`.
//!
//! Class = Unicode emoji category (9 classes, "Component" dropped); each item also keeps its
//! subcategory and a caption (name and short names) for text-to-image work.
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::Dataset;
use crate::{Error, Result};

/// Default location inside the crate.
pub const DEFAULT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/emoji");

/// One emoji's metadata.
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    /// `twitter` or `google`.
    pub source: String,
    /// Unicode code points.
    pub unified: String,
    /// Lower-case Unicode name.
    pub name: String,
    /// Short names.
    pub short_names: Vec<String>,
    /// Category (the class name).
    pub category: String,
    /// Subcategory.
    pub subcategory: String,
    /// Caption: name and short names.
    pub caption: String,
    /// Class index into `classes`.
    pub label: u32,
}

/// The atlas metadata file.
#[derive(Debug, Clone, Deserialize)]
pub struct Meta {
    /// Tile size in pixels.
    pub tile: usize,
    /// Tiles per atlas row.
    pub per_row: usize,
    /// Class names, sorted.
    pub classes: Vec<String>,
    /// Items in atlas order.
    pub items: Vec<Item>,
}

/// Reads `meta.json` from `dir`.
pub fn load_meta(dir: impl AsRef<Path>) -> Result<Meta> {
    let path = dir.as_ref().join("meta.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|_| Error::Missing { path: path.clone(), hint: "the emoji data ships in data/emoji; rebuild it with `python3 data/prepare.py`".into() })?;
    serde_json::from_str(&text).map_err(|e| Error::corrupt(&path, e))
}

/// Loads the emoji as RGB images of `size`×`size` (tiles resized from 64 with a Lanczos filter),
/// (N, 3, size, size) in [−1, 1], with labels and captions.
pub fn load(dir: impl AsRef<Path>, size: usize) -> Result<Dataset> {
    let dir = dir.as_ref();
    let meta = load_meta(dir)?;
    let atlas_path = dir.join("atlas.png");
    let atlas = image::open(&atlas_path)
        .map_err(|e| match e {
            image::ImageError::IoError(_) => Error::Missing { path: atlas_path.clone(), hint: "rebuild with `python3 data/prepare.py`".into() },
            e => Error::corrupt(&atlas_path, e),
        })?
        .to_rgb8();
    let t = meta.tile as u32;
    let rows_needed = meta.items.len().div_ceil(meta.per_row) as u32;
    if atlas.width() != meta.per_row as u32 * t || atlas.height() < rows_needed * t {
        return Err(Error::corrupt(
            &atlas_path,
            format!("atlas is {}x{}, meta.json expects {} tiles of {t}px, {} per row", atlas.width(), atlas.height(), meta.items.len(), meta.per_row),
        ));
    }
    let mut data = Vec::with_capacity(meta.items.len() * 3 * size * size);
    for i in 0..meta.items.len() {
        let (y, x) = ((i / meta.per_row) as u32, (i % meta.per_row) as u32);
        let tile = image::imageops::crop_imm(&atlas, x * t, y * t, t, t).to_image();
        let tile = if size as u32 == t { tile } else { image::imageops::resize(&tile, size as u32, size as u32, image::imageops::FilterType::Lanczos3) };
        // HWC → CHW
        let raw = tile.into_raw();
        for c in 0..3 {
            data.extend(raw.iter().skip(c).step_by(3).map(|&p| p as f32 / 127.5 - 1.0));
        }
    }
    let n = meta.items.len();
    Ok(Dataset {
        images: Tensor::from_vec(data, (n, 3, size, size), &Device::Cpu)?,
        labels: meta.items.iter().map(|it| it.label).collect(),
        classes: meta.classes.clone(),
        captions: Some(meta.items.iter().map(|it| it.caption.clone()).collect()),
    })
}
