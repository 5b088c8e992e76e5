//! Export a checkpoint from a training run folder, e.g. to ship it in `data/checkpoints/` as f16.
//!
//! ```text
//! cargo run --release --example export -- --run runs/emoji --to data/checkpoints/emoji-dit-ema.safetensors
//! cargo run --release --example export -- --run runs/emoji --which weak --to data/checkpoints/emoji-dit-weak.safetensors
//! cargo run --release --example export -- --run runs/emoji --which raw --to /tmp/raw.safetensors --dtype f32
//! ```
use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device};
use clap::Parser;
use erg::checkpoint::{load_card, load_tensors, save_checkpoint, ModelCard};
use erg::train::RunPaths;

#[derive(Parser, Debug)]
struct Args {
    /// Training run folder.
    #[arg(long)]
    run: PathBuf,
    /// `ema` (EMA weights), `weak` (the early EMA for AutoGuidance) or `raw` (non-averaged weights).
    #[arg(long, default_value = "ema")]
    which: String,
    /// Destination `.safetensors` (its JSON card is written beside it).
    #[arg(long)]
    to: PathBuf,
    /// `f16` or `f32`.
    #[arg(long, default_value = "f16")]
    dtype: String,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let paths = RunPaths::new(&a.run);
    let dtype = match a.dtype.as_str() {
        "f16" => DType::F16,
        "f32" => DType::F32,
        d => anyhow::bail!("unknown --dtype {d}: f16 or f32"),
    };
    let (tensors, mut card): (_, ModelCard<serde_json::Value>) = match a.which.as_str() {
        "ema" => (load_tensors(&paths.ema(), &Device::Cpu)?, load_card(&paths.ema())?),
        "weak" => (load_tensors(&paths.weak(), &Device::Cpu)?, load_card(&paths.weak())?),
        "raw" => {
            let st = load_tensors(&paths.state(), &Device::Cpu)?;
            let raw: HashMap<_, _> = st.iter().filter_map(|(k, v)| k.strip_prefix("model.").map(|n| (n.to_string(), v.clone()))).collect();
            let mut card = load_card(&paths.ema())?;
            card.ema = false;
            card.step = st["meta.step"].to_vec1::<i64>()?[0] as u64;
            (raw, card)
        }
        w => anyhow::bail!("unknown --which {w}: ema, weak or raw"),
    };
    card.ema = a.which != "raw";
    save_checkpoint(&tensors, &card, &a.to, dtype)?;
    eprintln!("wrote {} ({} tensors, step {}, {:?})", a.to.display(), tensors.len(), card.step, dtype);
    Ok(())
}
