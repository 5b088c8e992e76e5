//! Train a DiT with rectified flow on the shipped emoji (default), MNIST-5k, or an ImageNet-style
//! folder.
//!
//! ```text
//! cargo run --release --example train -- --steps 4000 --out runs/emoji
//! cargo run --release --example train -- --steps 4000 --out runs/emoji --resume   # after a kill
//! # go on from exported weights (another machine, no state file): fresh optimiser, new seed
//! cargo run --release --example train -- --init data/checkpoints/emoji-dit-ema.safetensors --seed 1 --out runs/emoji-2
//! cargo run --release --example train -- --data imagenet:/data/imagenet/train --preset DiT-S/2 --image-size 256
//! # the paper's setting: SD-VAE latents (see the prepare_latents example), on a GPU
//! cargo run --release --features cuda --example train -- --data latents:runs/in256-latents --preset DiT-S/2 --batch-size 256 --out runs/dit-s2
//! ```
mod common;
use std::path::PathBuf;

use clap::Parser;
use erg::data::{emoji, imagenet, mnist, Dataset};
use erg::models::dit::DitConfig;
use erg::train::{train, RunPaths, TrainConfig};

#[derive(Parser, Debug)]
#[command(about = "Train a DiT with the rectified-flow loss (t = 0 noise, t = 1 data).")]
struct Args {
    /// `emoji`, `mnist`, `imagenet:<folder with one sub-folder per class>` (pixels), or
    /// `latents:<folder>` (VAE latents from the `prepare_latents` example; the model's input size
    /// and channels follow the latents).
    #[arg(long, default_value = "emoji")]
    data: String,
    /// Model preset (emoji-tiny, test-tiny, DiT-S/2, DiT-B/2, DiT-L/2, DiT-XL/2, ...); default
    /// emoji-tiny, or with --init the checkpoint's own configuration.
    #[arg(long)]
    preset: Option<String>,
    /// Training resolution (the preset's by default).
    #[arg(long, value_parser = common::count)]
    image_size: Option<usize>,
    /// Optimisation steps.
    #[arg(long, value_parser = common::count_u64, default_value_t = 4000)]
    steps: u64,
    /// Images per step.
    #[arg(long, value_parser = common::count, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, value_parser = common::finite, default_value_t = 4e-4)]
    lr: f64,
    /// Learning rate after the warm-up: `constant` or `cosine` (decay to 0 at --steps).
    #[arg(long, default_value = "constant", value_parser = common::lr_schedule)]
    lr_schedule: erg::train::LrSchedule,
    /// AdamW weight decay.
    #[arg(long, value_parser = common::finite, default_value_t = 0.0)]
    weight_decay: f64,
    /// EMA decay.
    #[arg(long, value_parser = common::finite, default_value_t = 0.999)]
    ema_decay: f64,
    /// Seed of weights and batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Steps between checkpoints.
    #[arg(long, value_parser = common::count_u64, default_value_t = 250)]
    checkpoint_every: u64,
    /// Run folder.
    #[arg(long, default_value = "runs/emoji")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Warm start: begin from this checkpoint's weights (e.g. the shipped EMA, or another run's
    /// `ema.safetensors`) with fresh optimiser moments; cards count steps on from its card. Use
    /// another --seed than the run it came from, for fresh batches.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Stop, checkpointed, at the first step that ends after this many minutes of training
    /// (e.g. a lent machine's time); --resume continues exactly.
    #[arg(long, value_parser = common::finite)]
    time_limit_minutes: Option<f64>,
    /// At most this many images per class (ImageNet).
    #[arg(long, value_parser = common::count)]
    max_per_class: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut model = match (&args.preset, &args.init) {
        (Some(p), _) => DitConfig::preset(p)?,
        (None, Some(init)) => erg::checkpoint::load_card::<erg::checkpoint::ModelCard<DitConfig>>(init)?.config,
        (None, None) => DitConfig::preset("emoji-tiny")?,
    };
    if let Some(s) = args.image_size {
        model.input_size = (s, s);
    }
    let size = model.input_size.0;
    let data: Dataset = match args.data.as_str() {
        "emoji" => emoji::load(emoji::DEFAULT_DIR, size)?,
        "mnist" => mnist::load(mnist::DEFAULT_PATH, None)?,
        s if s.starts_with("imagenet:") => imagenet::load(&s["imagenet:".len()..], size, args.max_per_class)?,
        s if s.starts_with("latents:") => erg::data::latents::load_latents(std::path::Path::new(&s["latents:".len()..]))?,
        s => anyhow::bail!("unknown --data {s:?}: use emoji, mnist, imagenet:<folder> or latents:<folder from prepare_latents>"),
    };
    if args.data.starts_with("latents:") {
        let (_, h, w) = data.image_shape()?;
        model.input_size = (h, w); // the latent grid (32 × 32 for 256² images)
    }
    model.num_classes = data.classes.len();
    model.in_channels = data.image_shape()?.0;
    let mut cfg = TrainConfig::new(model, &args.data, args.steps, args.seed);
    cfg.batch_size = args.batch_size;
    cfg.optim.lr = args.lr;
    cfg.optim.weight_decay = args.weight_decay;
    cfg.lr_schedule = args.lr_schedule;
    cfg.ema_decay = args.ema_decay;
    cfg.checkpoint_every = args.checkpoint_every;
    cfg.init = args.init.as_deref().map(erg::train::InitCheckpoint::from_checkpoint).transpose()?;
    let device = erg::device::best();
    eprintln!(
        "training {} ({:.2}M parameters) on {} {} images, {} classes, {} steps of batch {}, {}",
        args.preset.as_deref().unwrap_or(if args.init.is_some() { "the --init model" } else { "emoji-tiny" }),
        cfg.model.num_params() as f64 / 1e6,
        data.len(),
        args.data,
        data.classes.len(),
        cfg.steps,
        cfg.batch_size,
        erg::device::describe(&device)
    );
    let mut opts = erg::train::RunOptions::new().resume(args.resume).progress();
    if let Some(m) = args.time_limit_minutes {
        anyhow::ensure!(m > 0.0, "--time-limit-minutes must be > 0");
        opts = opts.time_limit(std::time::Duration::from_secs_f64(m * 60.0));
    }
    let report = train(&cfg, &data, &device, &RunPaths::new(&args.out), opts)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("EMA weights: {}", RunPaths::new(&args.out).ema().display());
    Ok(())
}
