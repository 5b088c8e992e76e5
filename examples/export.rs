//! Export a checkpoint from a training run folder, e.g. to ship it in `data/checkpoints/` as f16.
//!
//! ```text
//! cargo run --release --example export -- --run runs/emoji --to data/checkpoints/emoji-dit-ema.safetensors
//! cargo run --release --example export -- --run runs/emoji --which weak --to data/checkpoints/emoji-dit-weak.safetensors
//! cargo run --release --example export -- --run runs/emoji --which raw --to /tmp/raw.safetensors --dtype f32
//! cargo run --release --example export -- --rebind old/emoji-dit-ema.safetensors
//! # a shipped checkpoint with its sweep's guidance selection in the card (weights unchanged):
//! cargo run --release --example export -- --from data/checkpoints/emoji-dit-ema.safetensors \
//!     --selection results/selection.json --to data/checkpoints/emoji-dit-ema.safetensors
//! # a later sweep of more methods added to the card's selection (the others' settings kept):
//! cargo run --release --example export -- --from data/checkpoints/emoji-dit-ema.safetensors \
//!     --selection results/sweep-more/selection.json --add --to data/checkpoints/emoji-dit-ema.safetensors
//! ```
//!
//! `--rebind` embeds the JSON card in a checkpoint written before cards were bound to their
//! weights (its tensors are kept as they are); check first that the card describes the weights.
use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device};
use clap::Parser;
use erg::checkpoint::{load_card, load_checkpoint, load_tensors, save_checkpoint, GuidanceSelection, ModelCard};
use erg::train::RunPaths;

/// Export a checkpoint (weights + JSON card, bound together) from a training run folder, or bind
/// the card of an older checkpoint to its weights.
#[derive(Parser, Debug)]
struct Args {
    /// Training run folder.
    #[arg(long, required_unless_present_any = ["rebind", "from"], conflicts_with = "from")]
    run: Option<PathBuf>,
    /// Instead of a run folder: an exported checkpoint (re-exported with its card, e.g. to add
    /// --selection; `--to` may be the same file, replaced atomically).
    #[arg(long)]
    from: Option<PathBuf>,
    /// A sweep's selection to store in the card: `sweep`'s `selection.json` (reproduce and table3
    /// use it) or `table1 --sweep`'s `selection_t2i.json` (table1 and t2i use it).
    #[arg(long)]
    selection: Option<PathBuf>,
    /// Add --selection's methods to the selection already in the card (a method in both takes
    /// the new setting) instead of replacing it; the two must share rule, seeds, sample count,
    /// steps and features. For a later sweep of more methods on the same weights.
    #[arg(long, requires = "selection")]
    add: bool,
    /// Instead of exporting: embed the card `<stem>.json` into this older `.safetensors` file.
    #[arg(long, conflicts_with_all = ["run", "to"])]
    rebind: Option<PathBuf>,
    /// `ema` (EMA weights), `weak` (the early EMA for AutoGuidance) or `raw` (non-averaged weights).
    #[arg(long, default_value = "ema")]
    which: String,
    /// Destination `.safetensors` (its JSON card is written beside it).
    #[arg(long, required_unless_present = "rebind")]
    to: Option<PathBuf>,
    /// `f16` or `f32`.
    #[arg(long, default_value = "f16")]
    dtype: String,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(w) = &a.rebind {
        let n = erg::checkpoint::rebind(w)?;
        eprintln!("bound {} to its {n} tensors", erg::checkpoint::card_path(w).display());
        return Ok(());
    }
    let to = a.to.clone().expect("required by clap");
    let dtype = match a.dtype.as_str() {
        "f16" => DType::F16,
        "f32" => DType::F32,
        d => anyhow::bail!("unknown --dtype {d}: f16 or f32"),
    };
    // Read before any weights are touched, so a bad file fails first.
    let selection = match &a.selection {
        Some(p) => Some(read_selection(p)?),
        None => None,
    };
    if let Some(from) = &a.from {
        let (tensors, mut card): (_, ModelCard<serde_json::Value>) = load_checkpoint(from, &Device::Cpu)?;
        card.selection = with_selection(card.selection.take(), selection, a.add, from)?;
        save_checkpoint(&tensors, &card, &to, dtype)?;
        eprintln!(
            "wrote {} ({} tensors, step {}, {:?}{})",
            to.display(),
            tensors.len(),
            card.step,
            dtype,
            if a.selection.is_some() { ", with the selection" } else { "" }
        );
        return Ok(());
    }
    let run = a.run.clone().expect("required by clap");
    let paths = RunPaths::new(&run);
    let (tensors, mut card): (_, ModelCard<serde_json::Value>) = match a.which.as_str() {
        "ema" => load_checkpoint(&paths.ema(), &Device::Cpu)?,
        "weak" => load_checkpoint(&paths.weak(), &Device::Cpu)?,
        "raw" => {
            let st = load_tensors(&paths.state(), &Device::Cpu)?;
            let raw: HashMap<_, _> = st.iter().filter_map(|(k, v)| k.strip_prefix("model.").map(|n| (n.to_string(), v.clone()))).collect();
            let mut card: ModelCard<serde_json::Value> = load_card(&paths.ema())?;
            card.ema = false;
            card.step = st["meta.step"].to_vec1::<i64>()?[0] as u64;
            (raw, card)
        }
        w => anyhow::bail!("unknown --which {w}: ema, weak or raw"),
    };
    card.ema = a.which != "raw";
    card.selection = with_selection(card.selection.take(), selection, a.add, &run)?;
    save_checkpoint(&tensors, &card, &to, dtype)?;
    eprintln!("wrote {} ({} tensors, step {}, {:?})", to.display(), tensors.len(), card.step, dtype);
    Ok(())
}

/// A sweep's `selection.json`, each method's setting checked to be a `Guidance`.
fn read_selection(path: &std::path::Path) -> anyhow::Result<GuidanceSelection> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--selection {}: {e}", path.display()))?;
    let s: GuidanceSelection = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--selection {}: not a sweep's selection.json: {e}", path.display()))?;
    erg::guidance::from_selection(&s).map_err(|e| anyhow::anyhow!("--selection {}: {e}", path.display()))?;
    Ok(s)
}

/// The card's selection after `--selection` (`new`): replaced, or with `add` merged into the
/// card's own (`old`, read from `source`).
fn with_selection(
    old: Option<GuidanceSelection>,
    new: Option<GuidanceSelection>,
    add: bool,
    source: &std::path::Path,
) -> anyhow::Result<Option<GuidanceSelection>> {
    Ok(match (old, new) {
        (old, None) => old,
        (Some(old), Some(new)) if add => Some(old.merged(new).map_err(|e| anyhow::anyhow!("--add: {e}"))?),
        (None, Some(_)) if add => anyhow::bail!("--add: {}'s card has no selection to add to; drop --add", source.display()),
        (_, Some(new)) => Some(new),
    })
}
