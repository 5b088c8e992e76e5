//! Command-line flags shared by the evaluation examples (`table1`, `table3`, `sweep`): the
//! checkpoints a bench loads and the feature extractor, so each example declares them once.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use erg::eval::BenchPaths;

/// The model, its weak checkpoint, the classifier and optional pretrained features.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalFlags {
    /// The model (weights with their JSON card); the example's shipped model when omitted.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The weak model for AutoGuidance (an early checkpoint of the same run); the shipped one
    /// when omitted.
    #[arg(long)]
    pub weak_checkpoint: Option<PathBuf>,
    /// The classifier (features and consistency).
    #[arg(long, default_value = erg::checkpoint::SHIPPED_EMOJI_CLASSIFIER)]
    pub classifier: PathBuf,
    /// Pretrained features for FID/precision/recall/density/coverage instead of the classifier's:
    /// inception, dinov2-vits14, dinov2-vitb14, dinov2-vitl14 or clip-vit-b32 (needs --feature-weights).
    #[arg(long, requires = "feature_weights")]
    pub features: Option<String>,
    /// Their weights: a safetensors path or hf://org/name/file (fetched or read from the hf-hub cache).
    #[arg(long, requires = "features")]
    pub feature_weights: Option<String>,
}

impl EvalFlags {
    /// The bench's files, with `checkpoint` and `weak` as the defaults of the model flags.
    pub fn paths(&self, checkpoint: &Path, weak: &Path) -> BenchPaths {
        BenchPaths {
            checkpoint: self.checkpoint.clone().unwrap_or_else(|| checkpoint.into()),
            weak_checkpoint: self.weak_checkpoint.clone().unwrap_or_else(|| weak.into()),
            classifier: self.classifier.clone(),
            features: self.features.clone().zip(self.feature_weights.clone()),
        }
    }

    /// The bench's files for the class-conditional emoji DiT (shipped checkpoints by default).
    pub fn dit_paths(&self) -> BenchPaths {
        self.paths(Path::new(erg::checkpoint::SHIPPED_EMOJI_DIT), Path::new(erg::checkpoint::SHIPPED_EMOJI_WEAK))
    }
}

/// Command-line parser of `--lr-schedule`: `constant` or `cosine` (decay to 0 at `--steps`),
/// shared by `train` and `train_t2i`.
pub fn lr_schedule(s: &str) -> Result<erg::train::LrSchedule, String> {
    match s {
        "constant" => Ok(erg::train::LrSchedule::Constant),
        "cosine" => Ok(erg::train::LrSchedule::Cosine),
        _ => Err(format!("--lr-schedule {s:?}: use constant or cosine")),
    }
}

/// Command-line parser of a count that must be at least 1 (samples, steps, batch sizes).
pub fn count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// [`count`] as u64 (training steps).
pub fn count_u64(s: &str) -> Result<u64, String> {
    count(s).map(|n| n as u64)
}

/// Command-line parser of a finite number (rejects `nan` and `inf`, which would otherwise
/// surface as NaN metrics or an error after the first results).
pub fn finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(x) => Err(format!("must be a finite number, got {x}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Creates the output folder and checks that files can be written in it, before any compute.
/// Errors: naming the folder.
pub fn output_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("--out {}: cannot create the folder: {e}", dir.display()))?;
    let probe = dir.join(format!(".erg-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| anyhow::anyhow!("--out {}: cannot write there: {e}", dir.display()))?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

/// `std::fs::write`, with an error that names the file.
pub fn write(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> anyhow::Result<()> {
    let path = path.as_ref();
    std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `std::fs::create_dir_all`, with an error that names the folder.
pub fn create_dir(path: impl AsRef<Path>) -> anyhow::Result<()> {
    let path = path.as_ref();
    std::fs::create_dir_all(path).map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", path.display()))
}

/// `std::fs::read_to_string`, with an error that names the file.
pub fn read_to_string(path: impl AsRef<Path>) -> anyhow::Result<String> {
    let path = path.as_ref();
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The settings a table reports each method at, and a sentence saying where they come from:
/// `--selected` (a sweep's `selected.json`: method → Guidance), else the checkpoint card's own
/// mean-rank selection unless `presets_forced` (`--paper-defaults`, or a flag that sets a
/// preset's parameters), else none (every method at its preset). Shared by `table3` and `table1`.
///
/// Errors: an unreadable or malformed `--selected` file, or a card selection that is not made of
/// `Guidance`s (naming the file or the checkpoint).
pub fn selected_settings(
    selected: Option<&Path>,
    card_selection: Option<&erg::checkpoint::GuidanceSelection>,
    presets_forced: bool,
    checkpoint: &Path,
) -> anyhow::Result<(std::collections::BTreeMap<String, erg::guidance::Guidance>, String)> {
    Ok(match (selected, card_selection) {
        (Some(p), _) => (
            serde_json::from_str(&read_to_string(p)?).map_err(|e| anyhow::anyhow!("--selected {}: {e}", p.display()))?,
            format!("selected by mean rank in a sweep ({}) where available, presets otherwise", p.display()),
        ),
        (None, Some(sel)) if !presets_forced => (
            erg::guidance::from_selection(sel).map_err(|e| anyhow::anyhow!("{}: {e}", checkpoint.display()))?,
            format!(
                "the checkpoint's own selection where available ({}; {} images per class, {} steps, seeds {:?}), presets otherwise",
                sel.rule, sel.samples_per_class, sel.num_steps, sel.seeds
            ),
        ),
        _ => (Default::default(), "presets, see erg::guidance::presets".into()),
    })
}
