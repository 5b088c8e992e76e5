//! Train the small classifier used as the default feature extractor of the metrics and as the
//! consistency scorer, on the emoji (default) or MNIST-5k, and report its held-out accuracy.
//!
//! ```text
//! cargo run --release --example train_classifier      # → data/checkpoints/emoji-classifier-v2.safetensors
//! cargo run --release --example train_classifier -- --resume   # after a stop (state every --checkpoint-every steps)
//! # the first shipped classifier (emoji-classifier.safetensors, 65.9 % held-out):
//! cargo run --release --example train_classifier -- --steps 1200 --batch-size 64 --convs-per-stage 1 --shift 0 \
//!     --mixup false --weight-decay 1e-4 --lr-schedule constant --flip-average false --out data/checkpoints/emoji-classifier.safetensors
//! ```
mod common;
use std::path::PathBuf;

use clap::Parser;
use erg::features::classifier::{train, ClassifierConfig};

/// Train the small classifier used as the default feature extractor of the metrics and as the
/// consistency scorer, on the emoji (default) or MNIST-5k, and report its held-out accuracy.
#[derive(Parser, Debug)]
struct Args {
    /// `emoji` or `mnist`.
    #[arg(long, default_value = "emoji")]
    data: String,
    /// Image size (emoji).
    #[arg(long, value_parser = common::count, default_value_t = 32)]
    image_size: usize,
    /// Conv widths, one per stage (a 2× max pool between stages).
    #[arg(long, value_parser = common::count, default_value = "32,64,128", value_delimiter = ',')]
    widths: Vec<usize>,
    /// 3×3 convolutions per stage.
    #[arg(long, value_parser = common::count, default_value_t = 2)]
    convs_per_stage: usize,
    /// Groups of a GroupNorm after every convolution (0: none; each width a multiple of it).
    #[arg(long, default_value_t = 0)]
    norm_groups: usize,
    /// Predict (held-out accuracy, consistency) from the mean logits of each image and its mirror.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    flip_average: bool,
    /// Random translation of training images, in pixels (0 for none).
    #[arg(long, default_value_t = 4)]
    shift: usize,
    /// `cosine` (5 % warm-up, then cosine decay to 0) or `constant`.
    #[arg(long, default_value = "cosine", value_parser = ["cosine", "constant"])]
    lr_schedule: String,
    /// Mixup of the training batches (`--mixup false` to turn off).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    mixup: bool,
    /// Cutout: side of the white square erased from each training image, in pixels (0: none).
    #[arg(long, default_value_t = 0)]
    cutout: usize,
    /// Label smoothing ε of the cross-entropy, in [0, 1).
    #[arg(long, value_parser = common::finite, default_value_t = 0.0)]
    label_smoothing: f64,
    /// Dropout probability on the pooled features before the head (training only), in [0, 1).
    #[arg(long, value_parser = common::finite, default_value_t = 0.0)]
    dropout: f64,
    /// AdamW weight decay.
    #[arg(long, value_parser = common::finite, default_value_t = 0.05)]
    weight_decay: f64,
    /// Optimisation steps.
    #[arg(long, value_parser = common::count_u64, default_value_t = 1500)]
    steps: u64,
    /// Images per step.
    #[arg(long, value_parser = common::count, default_value_t = 64)]
    batch_size: usize,
    /// Peak AdamW learning rate.
    #[arg(long, value_parser = common::finite, default_value_t = 2e-3)]
    lr: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the training state every this many steps (`<out stem>.state.safetensors`; 0: never).
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    /// Continue a stopped run from its state file (same flags).
    #[arg(long)]
    resume: bool,
    /// Output weights (a JSON card is written beside them).
    #[arg(long, default_value = "data/checkpoints/emoji-classifier-v2.safetensors")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let data = match a.data.as_str() {
        "emoji" => erg::data::emoji::load(erg::data::emoji::DEFAULT_DIR, a.image_size)?,
        "mnist" => erg::data::mnist::load(erg::data::mnist::DEFAULT_PATH, None)?,
        d => anyhow::bail!("unknown --data {d}"),
    };
    let cfg = ClassifierConfig {
        convs_per_stage: a.convs_per_stage,
        norm_groups: a.norm_groups,
        flip_average: a.flip_average,
        ..ClassifierConfig::new(data.image_shape()?.0, a.widths.clone(), data.classes.len())
    };
    let device = erg::device::best();
    let t0 = std::time::Instant::now();
    let how = erg::features::classifier::ClassifierTraining {
        steps: a.steps,
        batch_size: a.batch_size,
        lr: a.lr,
        cosine: a.lr_schedule == "cosine",
        weight_decay: a.weight_decay,
        seed: a.seed,
        shift: a.shift,
        mixup: a.mixup,
        cutout: a.cutout,
        label_smoothing: a.label_smoothing,
        dropout: a.dropout,
        progress: true,
        checkpoint_every: a.checkpoint_every,
        resume: a.resume,
        stop_at: None,
    };
    let (model, card) = train(&cfg, &data, &how, &device, &a.out)?;
    let single = if a.flip_average {
        let held = erg::features::classifier::split(data.len()).1;
        format!(", {:.1} % without flip averaging", erg::features::classifier::accuracy(&model.with_flip_average(false), &data, &held, &device)?)
    } else {
        String::new()
    };
    println!(
        "{}: held-out accuracy {:.1} %{single} (train {:.1} %), {} steps, {:.0} s → {}",
        a.data,
        card.heldout_accuracy,
        card.train_accuracy,
        card.steps,
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
