//! Encodes an ImageNet-layout folder into SD-VAE latent shards for `train --data latents:DIR`:
//! ADM center crops at 256², horizontal-flip copies, shards written atomically, resumable after a
//! kill (rerun the same command).
//!
//! ```text
//! cargo run --release --features cuda --example prepare_latents -- --data /data/imagenet/train --out runs/in256-latents
//! cargo run --release --example prepare_latents -- --data tiny_imagenet/ --out /tmp/lat --image-size 16 --vae tests/fixtures/imagenet/sd_vae
//! ```
mod common;
use std::path::PathBuf;

use candle_core::DType;
use clap::Parser;
use erg::data::latents::{prepare_latents, ImageSource, PrepareConfig};
use erg::models::vae::Vae;

#[derive(Parser, Debug)]
#[command(about = "Encode an ImageNet-layout folder (train/<wnid>/*.JPEG) into SD-VAE latent shards.")]
struct Args {
    /// The images: an ImageNet-layout folder (one sub-folder per class), parquet files (a file or
    /// a folder of them, hf-hub's image-dataset layout), or hf://datasets/org/name (e.g.
    /// hf://datasets/ILSVRC/imagenet-1k with HF_TOKEN) through candle-datasets.
    #[arg(long)]
    data: String,
    /// Output folder (shards + meta.json); rerun with the same arguments to resume.
    #[arg(long)]
    out: PathBuf,
    /// The VAE: a diffusers `vae` folder or hf://org/name.
    #[arg(long, default_value = "hf://stabilityai/sd-vae-ft-ema")]
    vae: String,
    /// Crop side in pixels.
    #[arg(long, value_parser = common::count, default_value_t = 256)]
    image_size: usize,
    /// Images per shard.
    #[arg(long, value_parser = common::count, default_value_t = 1024)]
    shard_size: usize,
    /// Images per VAE batch.
    #[arg(long, value_parser = common::count, default_value_t = 32)]
    batch_size: usize,
    /// At most this many images per class.
    #[arg(long, value_parser = common::count)]
    max_per_class: Option<usize>,
    /// Skip the mirror-image copies.
    #[arg(long)]
    no_flip: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let device = erg::device::best();
    let (vae, weights) = Vae::load_diffusers(&a.vae, DType::F32, &device)?;
    let cfg = PrepareConfig { image_size: a.image_size, shard_size: a.shard_size, flip: !a.no_flip, max_per_class: a.max_per_class, batch_size: a.batch_size };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template("shards [{bar:30}] {pos}/{len} eta {eta}").unwrap().progress_chars("=> "));
    let source = ImageSource::open(&a.data)?;
    let report = prepare_latents(&source, &a.out, &vae, &cfg, Some(erg::checkpoint::file_sha256(&weights)?), &device, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    eprintln!("{} latents in {} ({} shards written, {} kept)", report.latents, a.out.display(), report.written, report.kept);
    Ok(())
}
