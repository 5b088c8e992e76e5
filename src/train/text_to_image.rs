//! Training the text-to-image MMDiT with a frozen text encoder: every caption is encoded once
//! (packed embeddings, [`crate::text::encoder`]) and batches index into that table.
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

use super::TrainTask;
use crate::data::Dataset;
use crate::models::embed::pos_embed_2d;
use crate::models::mmdit::{TextToImage, TextToImageConfig};
use crate::nn::{seeded_varbuilder, SeededVarMap};
use crate::text::TextEncoder;
use crate::{Error, Result};

/// The prompts an item is trained on: its full caption and each `;`-separated part (the name and
/// the short names), without repeats. `"grinning face; grinning"` → `["grinning face; grinning",
/// "grinning face", "grinning"]`.
pub fn caption_variants(caption: &str) -> Vec<String> {
    let mut v = vec![caption.trim().to_string()];
    for part in caption.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if !v.iter().any(|x| x == part) {
            v.push(part.to_string());
        }
    }
    v
}

/// Text conditions for training: a table of packed embeddings and which rows belong to which
/// data item; a dropped condition is the empty prompt (ERG/SD3: 10 %).
pub struct TextToImageTask {
    /// Packed embeddings of every distinct prompt, then of the empty prompt (T + 1, L + 1, D), CPU.
    pub texts: Tensor,
    /// The prompts, row by row (the empty prompt last).
    pub prompts: Vec<String>,
    /// Rows of `texts` per data item.
    pub item_texts: Vec<Vec<u32>>,
}

impl TextToImageTask {
    /// Encodes the variants ([`caption_variants`]) of every caption of `data` with `encoder`, 64
    /// prompts at a time (progress bar if `progress`).
    /// Errors: `data` without captions.
    pub fn from_captions(data: &Dataset, encoder: &TextEncoder, progress: bool) -> Result<Self> {
        let captions = data.captions.as_ref().ok_or_else(|| Error::hp("text-to-image training needs a data set with captions (emoji)"))?;
        let mut prompts: Vec<String> = vec![];
        let mut index = std::collections::HashMap::new();
        let item_texts = captions
            .iter()
            .map(|c| {
                caption_variants(c)
                    .into_iter()
                    .map(|p| {
                        *index.entry(p.clone()).or_insert_with(|| {
                            prompts.push(p);
                            (prompts.len() - 1) as u32
                        })
                    })
                    .collect()
            })
            .collect();
        let bar = if progress { indicatif::ProgressBar::new(prompts.len() as u64) } else { indicatif::ProgressBar::hidden() };
        bar.set_style(indicatif::ProgressStyle::with_template("{spinner} encode prompts [{bar:30}] {pos}/{len} eta {eta}").unwrap().progress_chars("=> "));
        prompts.push(String::new()); // the empty prompt, for dropped conditions
        let mut rows = vec![];
        for chunk in prompts.chunks(64) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            rows.push(encoder.encode(&refs, None, &Device::Cpu)?);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(Self { texts: Tensor::cat(&rows, 0)?, prompts, item_texts })
    }
}

impl TrainTask for TextToImageTask {
    type Config = TextToImageConfig;
    type Model = TextToImage;
    const NAME: &'static str = "mmdit-t2i";

    fn check(&self, cfg: &TextToImageConfig, data: &Dataset) -> Result<()> {
        cfg.validate()?;
        data.expect_image_shape((cfg.mmdit.in_channels, cfg.image_size.0, cfg.image_size.1))?;
        let (_, rows, d) = self.texts.dims3()?;
        if rows != cfg.context_len + 1 || d != cfg.mmdit.context_embed_size {
            return Err(Error::shape(format!("text table rows are {rows}×{d}, the model takes {}×{}", cfg.context_len + 1, cfg.mmdit.context_embed_size)));
        }
        if self.item_texts.len() != data.len() {
            return Err(Error::shape(format!("{} captioned items for {} images", self.item_texts.len(), data.len())));
        }
        Ok(())
    }

    /// Seeded initialisation, then SD3/DiT-style: fixed 2-D sin-cos positions as the initial
    /// `pos_embed`, adaLN modulations and the final layer zero (each block starts as the identity).
    fn build(&self, cfg: &TextToImageConfig, map: &SeededVarMap, device: &Device) -> Result<TextToImage> {
        let model = TextToImage::new(cfg, seeded_varbuilder(map, DType::F32, device), None)?;
        let m = cfg.mmdit.pos_embed_max_size;
        let data = map.varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            if name == "pos_embed" {
                var.set(&pos_embed_2d(cfg.mmdit.hidden_size(), m, m, device)?.reshape(var.shape())?)?;
            } else if name.contains("adaLN_modulation") || name.starts_with("final_layer.linear") {
                var.set(&var.zeros_like()?)?;
            }
        }
        Ok(model)
    }

    fn conditions(&self, _model: &TextToImage, _data: &Dataset, r: &mut StdRng, idx: &[u32], dropped: &[bool], device: &Device) -> Result<Tensor> {
        let null_row = self.texts.dim(0)? as u32 - 1; // the empty prompt
        let rows: Vec<u32> = idx
            .iter()
            .zip(dropped)
            .map(|(&i, &d)| {
                let options = &self.item_texts[i as usize];
                let pick = options[r.random_range(0..options.len())];
                if d {
                    null_row
                } else {
                    pick
                }
            })
            .collect();
        Ok(self.texts.index_select(&Tensor::new(rows.as_slice(), &Device::Cpu)?, 0)?.to_device(device)?)
    }

    fn classes(&self, _data: &Dataset) -> Vec<String> {
        vec![]
    }
}
