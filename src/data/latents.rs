//! ImageNet as VAE latents, the data of the paper's class-conditional models (DiT/SiT train on SD
//! VAE latents of 256² center crops, with horizontal flips).
//!
//! [`prepare_latents`] reads an [`ImageSource`] — an ImageNet-layout folder (`train/<wnid>/*.JPEG`;
//! classes are the sorted folder names, which for ImageNet-1k is DiT's label order), or the
//! parquet shards of an image dataset (hf-hub's layout: an `image` column of {bytes, path} and an
//! integer `label`), local or fetched from the Hub through candle-datasets — crops each image as ADM does
//! ([`adm_center_crop`]), encodes it and its mirror image with the VAE, and writes sharded
//! safetensors (`shard_00000.safetensors`, … each `latents` (n, C, h, w) f16 and `labels` (n,) u32,
//! with checksums) plus `meta.json`. Shards are written atomically and skipped when already
//! complete, so a killed run resumes where it stopped without losing or duplicating images; a
//! folder prepared with other settings is refused. Latents are draws from the encoder's Gaussian
//! (DiT's `extract_features`), unseeded (candle's draw), so a re-encoded shard is a new draw.
//!
//! [`load_latents`] reads them back as a [`Dataset`] for `train --data latents:DIR` (in memory:
//! 256² ImageNet-1k with flips is ≈ 21 GB in f16 — a machine for that size streams shards; here
//! everything is loaded).
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde::{Deserialize, Serialize};

use super::imagenet::image_list;
use super::Dataset;
use crate::models::vae::Vae;
use crate::{Error, Result};

/// How the latents are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareConfig {
    /// Crop side in pixels (DiT: 256).
    pub image_size: usize,
    /// Images per shard (each shard holds twice as many latents with `flip`).
    pub shard_size: usize,
    /// Also encode the mirror image (DiT's horizontal-flip augmentation).
    pub flip: bool,
    /// At most this many images per class (None: all).
    pub max_per_class: Option<usize>,
    /// Images per VAE batch.
    pub batch_size: usize,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        Self { image_size: 256, shard_size: 1024, flip: true, max_per_class: None, batch_size: 32 }
    }
}

/// `meta.json` of a latents folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentsMeta {
    /// How they were made.
    pub config: PrepareConfig,
    /// Class names (sorted folder names).
    pub classes: Vec<String>,
    /// Images (before flips).
    pub images: usize,
    /// Shards.
    pub shards: usize,
    /// Latent shape (C, h, w).
    pub latent_shape: (usize, usize, usize),
    /// SHA-256 of the VAE weights file, when known.
    pub vae_sha256: Option<String>,
    /// Where the images came from.
    #[serde(default)]
    pub source: String,
}

/// What a call did.
#[derive(Debug, Clone, Serialize)]
pub struct PrepareReport {
    /// Shards written by this call.
    pub written: usize,
    /// Shards found complete and kept.
    pub kept: usize,
    /// Latents in the folder.
    pub latents: usize,
}

/// ADM's `center_crop_arr` (guided-diffusion, used by DiT): halve with a box filter while the short
/// side is ≥ 2·size, resize (bicubic) so the short side is `size`, crop the centre.
pub fn adm_center_crop(img: &image::DynamicImage, size: usize) -> image::RgbImage {
    let mut img = img.to_rgb8();
    while img.width().min(img.height()) as usize >= 2 * size {
        img = image::imageops::resize(&img, img.width() / 2, img.height() / 2, image::imageops::FilterType::Triangle);
    }
    let scale = size as f64 / img.width().min(img.height()) as f64;
    let (w, h) = (((img.width() as f64 * scale).round() as u32).max(size as u32), ((img.height() as f64 * scale).round() as u32).max(size as u32));
    let img = image::imageops::resize(&img, w, h, image::imageops::FilterType::CatmullRom);
    let (x0, y0) = ((w - size as u32) / 2, (h - size as u32) / 2);
    image::imageops::crop_imm(&img, x0, y0, size as u32, size as u32).to_image()
}

/// Where the images come from.
pub enum ImageSource {
    /// An ImageNet-layout folder.
    Folder(PathBuf),
    /// Parquet files (hf-hub's image-dataset layout), with what they were read from.
    Parquet(Vec<SerializedFileReader<File>>, String),
}

impl ImageSource {
    /// `hf://datasets/org/name` (the Hub's parquet conversion, through candle-datasets; gated
    /// sets such as `ILSVRC/imagenet-1k` need `HF_TOKEN`), a `.parquet` file or a folder of them,
    /// or an ImageNet-layout folder. Errors say what to do.
    pub fn open(source: &str) -> Result<Self> {
        if let Some(id) = source.strip_prefix("hf://datasets/") {
            let api = hf_hub_1::HFClientSync::new().map_err(|e| Error::Other(format!("hf-hub: {e}")))?;
            let readers = candle_datasets::hub::from_hub(&api, id.trim_end_matches('/').to_string()).map_err(|e| Error::Missing {
                path: PathBuf::from(source),
                hint: format!("candle-datasets could not fetch its parquet files ({e}); gated datasets need HF_TOKEN; offline, pass a local folder"),
            })?;
            if readers.is_empty() {
                return Err(Error::Missing { path: PathBuf::from(source), hint: "the dataset has no parquet files".into() });
            }
            return Ok(Self::Parquet(readers, source.to_string()));
        }
        let p = Path::new(source);
        let files: Vec<PathBuf> = if p.is_file() && p.extension().is_some_and(|e| e == "parquet") {
            vec![p.to_path_buf()]
        } else if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
                .collect();
            v.sort();
            v
        } else {
            return Err(Error::Missing { path: p.to_path_buf(), hint: "pass an image folder, parquet files, or hf://datasets/org/name".into() });
        };
        if files.is_empty() {
            return Ok(Self::Folder(p.to_path_buf()));
        }
        let readers = files
            .iter()
            .map(|f| SerializedFileReader::new(File::open(f).map_err(|e| Error::io(f, e))?).map_err(|e| Error::corrupt(f, e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::Parquet(readers, source.to_string()))
    }

    fn describe(&self) -> String {
        match self {
            Self::Folder(p) => p.display().to_string(),
            Self::Parquet(_, s) => s.clone(),
        }
    }
}

/// One image of a source: a file, or row `row` of row group `group` of parquet file `file`.
#[derive(Debug, Clone)]
enum Item {
    File(PathBuf),
    Row { file: usize, group: usize, row: usize },
}

/// The `image.bytes` and `label` of a parquet row (hf-hub's image-dataset layout).
fn row_fields(row: &parquet::record::Row) -> (Option<Vec<u8>>, Option<i64>) {
    let (mut bytes, mut label) = (None, None);
    for (name, f) in row.get_column_iter() {
        match (name.as_str(), f) {
            ("label", Field::Long(v)) => label = Some(*v),
            ("label", Field::Int(v)) => label = Some(*v as i64),
            ("image", Field::Group(g)) => {
                for (n, f) in g.get_column_iter() {
                    if let (Some("bytes"), Field::Bytes(b)) = (Some(n.as_str()), f) {
                        bytes = Some(b.data().to_vec());
                    }
                }
            }
            ("image", Field::Bytes(b)) => bytes = Some(b.data().to_vec()),
            _ => {}
        }
    }
    (bytes, label)
}

/// Items, labels and class names of a source, in a fixed order.
fn items(source: &ImageSource, max_per_class: Option<usize>) -> Result<(Vec<String>, Vec<(Item, u32)>)> {
    match source {
        ImageSource::Folder(root) => {
            let (classes, files) = image_list(root, max_per_class)?;
            Ok((classes, files.into_iter().map(|(p, l)| (Item::File(p), l)).collect()))
        }
        ImageSource::Parquet(readers, name) => {
            let mut out = vec![];
            let mut per_class: std::collections::BTreeMap<u32, usize> = Default::default();
            for (fi, r) in readers.iter().enumerate() {
                for g in 0..r.num_row_groups() {
                    let rg = r.get_row_group(g).map_err(|e| Error::corrupt(Path::new(name), e.to_string()))?;
                    for (ri, row) in rg.get_row_iter(None).map_err(|e| Error::corrupt(Path::new(name), e.to_string()))?.enumerate() {
                        let row = row.map_err(|e| Error::corrupt(Path::new(name), e.to_string()))?;
                        let label = row_fields(&row).1.ok_or_else(|| Error::corrupt(Path::new(name), "a row without an integer `label` column"))?;
                        let label = u32::try_from(label).map_err(|_| Error::corrupt(Path::new(name), format!("label {label} is not a class index")))?;
                        let n = per_class.entry(label).or_default();
                        if *n < max_per_class.unwrap_or(usize::MAX) {
                            *n += 1;
                            out.push((Item::Row { file: fi, group: g, row: ri }, label));
                        }
                    }
                }
            }
            if out.is_empty() {
                return Err(Error::corrupt(Path::new(name), "no rows"));
            }
            let k = per_class.keys().max().map_or(0, |m| *m as usize + 1);
            Ok(((0..k).map(|i| i.to_string()).collect(), out))
        }
    }
}

/// The images of `chunk` (in order), decoded.
fn load_items(source: &ImageSource, chunk: &[(Item, u32)]) -> Result<Vec<image::DynamicImage>> {
    let mut out: Vec<Option<image::DynamicImage>> = vec![None; chunk.len()];
    let mut groups: std::collections::BTreeMap<(usize, usize), Vec<(usize, usize)>> = Default::default(); // (file, group) → (row, slot)
    for (slot, (item, _)) in chunk.iter().enumerate() {
        match item {
            Item::File(p) => out[slot] = Some(image::open(p).map_err(|e| Error::corrupt(p, e))?),
            Item::Row { file, group, row } => groups.entry((*file, *group)).or_default().push((*row, slot)),
        }
    }
    if let ImageSource::Parquet(readers, name) = source {
        let err = |e: String| Error::corrupt(Path::new(name), e);
        for ((f, g), wanted) in groups {
            let rg = readers[f].get_row_group(g).map_err(|e| err(e.to_string()))?;
            let last = wanted.iter().map(|w| w.0).max().unwrap_or(0);
            for (ri, row) in rg.get_row_iter(None).map_err(|e| err(e.to_string()))?.enumerate().take(last + 1) {
                for &(_, slot) in wanted.iter().filter(|w| w.0 == ri) {
                    let row = row.as_ref().map_err(|e| err(e.to_string()))?;
                    let bytes = row_fields(row).0.ok_or_else(|| err(format!("file {f} group {g} row {ri}: no image bytes")))?;
                    out[slot] = Some(image::load_from_memory(&bytes).map_err(|e| err(format!("file {f} group {g} row {ri}: {e}")))?);
                }
            }
        }
    }
    out.into_iter().enumerate().map(|(i, o)| o.ok_or_else(|| Error::Other(format!("image {i} of the shard was not found in its source")))).collect()
}

fn shard_path(out: &Path, k: usize) -> PathBuf {
    out.join(format!("shard_{k:05}.safetensors"))
}

fn to_tensor(img: &image::RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let t = Tensor::from_vec(img.as_raw().clone(), (h, w, 3), &Device::Cpu)?.permute((2, 0, 1))?;
    Ok(((t.to_dtype(DType::F32)? / 127.5)? - 1.0)?.to_device(device)?) // (3, H, W) in [−1, 1]
}

/// Encodes the images of `source` into latent shards in `out` (module docs). `on_shard(done,
/// total)` reports progress. Errors, before any encoding: a folder prepared with other settings;
/// an unreadable image is named.
pub fn prepare_latents(
    source: &ImageSource,
    out: &Path,
    vae: &Vae,
    cfg: &PrepareConfig,
    vae_sha256: Option<String>,
    device: &Device,
    mut on_shard: impl FnMut(usize, usize),
) -> Result<PrepareReport> {
    if cfg.shard_size == 0 || cfg.batch_size == 0 || cfg.image_size == 0 {
        return Err(Error::hp("image_size, shard_size and batch_size must be >= 1"));
    }
    let f = vae.config().downsample();
    if cfg.image_size % f != 0 {
        return Err(Error::hp(format!("image_size {} is not a multiple of the VAE's {f}", cfg.image_size)));
    }
    let (classes, items) = items(source, cfg.max_per_class)?;
    let shards = items.len().div_ceil(cfg.shard_size);
    let meta = LatentsMeta {
        config: cfg.clone(),
        classes,
        images: items.len(),
        shards,
        latent_shape: (vae.config().latent_channels, cfg.image_size / f, cfg.image_size / f),
        vae_sha256,
        source: source.describe(),
    };
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let meta_path = out.join("meta.json");
    if meta_path.exists() {
        let old: LatentsMeta = serde_json::from_str(&std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?)
            .map_err(|e| Error::corrupt(&meta_path, e.to_string()))?;
        if old != meta {
            return Err(Error::corrupt(&meta_path, "this folder holds latents made with other settings, images or VAE: use another --out"));
        }
    } else {
        crate::checkpoint::write_atomic(&meta_path, serde_json::to_string_pretty(&meta).map_err(|e| Error::Other(e.to_string()))?.as_bytes())?;
    }
    let (mut written, mut kept) = (0, 0);
    for k in 0..shards {
        let path = shard_path(out, k);
        if path.exists() && crate::checkpoint::load_tensors(&path, &Device::Cpu).is_ok() {
            kept += 1;
            on_shard(k + 1, shards);
            continue;
        }
        let chunk = &items[k * cfg.shard_size..((k + 1) * cfg.shard_size).min(items.len())];
        let (mut lat, mut labels) = (vec![], vec![]);
        for batch in chunk.chunks(cfg.batch_size) {
            let mut imgs = vec![];
            for (img, (_, label)) in load_items(source, batch)?.iter().zip(batch) {
                let crop = adm_center_crop(img, cfg.image_size);
                imgs.push(to_tensor(&crop, device)?);
                labels.push(*label);
                if cfg.flip {
                    imgs.push(to_tensor(&image::imageops::flip_horizontal(&crop), device)?);
                    labels.push(*label);
                }
            }
            lat.push(vae.encode(&Tensor::stack(&imgs, 0)?)?.to_device(&Device::Cpu)?);
            // (b·(1+flip), C, h, w)
        }
        let n = labels.len();
        let tensors = std::collections::HashMap::from([
            ("latents".to_string(), Tensor::cat(&lat, 0)?),
            ("labels".to_string(), Tensor::from_vec(labels, n, &Device::Cpu)?),
        ]);
        crate::checkpoint::save_tensors(&tensors, &path, DType::F16)?;
        written += 1;
        on_shard(k + 1, shards);
    }
    Ok(PrepareReport { written, kept, latents: items.len() * if cfg.flip { 2 } else { 1 } })
}

/// Reads a latents folder as a [`Dataset`] (images = latents (N, C, h, w) f32). Errors: a missing
/// `meta.json` or shard, a corrupt shard (named).
pub fn load_latents(dir: &Path) -> Result<Dataset> {
    let meta_path = dir.join("meta.json");
    let meta: LatentsMeta = serde_json::from_str(&std::fs::read_to_string(&meta_path).map_err(|_| Error::Missing {
        path: meta_path.clone(),
        hint: "not a latents folder: make one with `cargo run --release --example prepare_latents`".into(),
    })?)
    .map_err(|e| Error::corrupt(&meta_path, e.to_string()))?;
    let (mut lat, mut labels) = (vec![], vec![]);
    for k in 0..meta.shards {
        let p = shard_path(dir, k);
        if !p.exists() {
            return Err(Error::Missing { path: p, hint: "the preparation did not finish: rerun prepare_latents with the same arguments".into() });
        }
        let t = crate::checkpoint::load_tensors(&p, &Device::Cpu)?;
        let get = |n: &str| t.get(n).cloned().ok_or_else(|| Error::corrupt(&p, format!("no `{n}` tensor")));
        lat.push(get("latents")?.to_dtype(DType::F32)?);
        labels.extend(get("labels")?.to_dtype(DType::U32)?.to_vec1::<u32>()?);
    }
    Ok(Dataset { images: Tensor::cat(&lat, 0)?, labels, classes: meta.classes, captions: None })
}
