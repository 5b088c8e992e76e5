//! The main job: class-conditional samples from the shipped emoji DiT with no guidance,
//! classifier-free guidance (CFG) and I-ERG (by default), at the same seeds, side by side.
//!
//! ```text
//! cargo run --release --example reproduce                    # shipped checkpoint → results/
//! cargo run --release --example reproduce -- --guidance none,cfg,apg,cads,pag,sag,seg,autoguidance,slg,ierg,erg+apg,erg+cads
//! cargo run --release --example reproduce -- --train --train-steps 2000   # train one first
//! cargo run --release --example reproduce -- --paper-defaults   # Table 7's settings, scaled
//! ```
//! Settings: the checkpoint's own selection where its card holds one (`sweep`, then `export
//! --selection`: each method's mean-rank setting on seeds disjoint from the tables'), Table 7's
//! scaled presets with `--paper-defaults` or where the card holds none; `--guidance-scale`,
//! `--tau` and `--kappa` modify the presets (and so also turn the selection off). The summary
//! says which were used.
//! Writes `grid_<method>.png` (rows = classes, columns = seeds), `comparison.png` (labelled,
//! side by side), `summary.md` and `summary.json` (settings, NFE, wall time) into `--out`.
mod common;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use erg::guidance::{preset, Guidance, Models};
use erg::imaging::{grid, labelled_comparison, save_png, to_rgb8, Panel};
use erg::models::Denoiser;
use erg::sample::{class_grid_labels, sample, SampleConfig};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Sample the emoji DiT with none / CFG / I-ERG at the same seeds.")]
struct Args {
    /// Model weights (safetensors with a JSON card beside it).
    #[arg(long, default_value = erg::checkpoint::SHIPPED_EMOJI_DIT)]
    checkpoint: PathBuf,
    /// The early checkpoint used as AutoGuidance's weak model.
    #[arg(long, default_value = erg::checkpoint::SHIPPED_EMOJI_WEAK)]
    weak_checkpoint: PathBuf,
    /// The classifier that checks each sample shows its requested class (the summary's
    /// "classifier agrees" column, against its held-out accuracy on real images).
    #[arg(long, default_value = erg::checkpoint::SHIPPED_EMOJI_CLASSIFIER)]
    classifier: PathBuf,
    /// Comma-separated methods (see erg::guidance::presets): none, uncond, cfg, apg, cads, pag,
    /// seg, sag, slg, autoguidance, ierg, erg, erg+apg, erg+cads, cfg+pag, cfg+seg, cfg+sag,
    /// pag-uncond, seg-uncond, sag-uncond, ierg-uncond; or a path to a JSON `Guidance`.
    #[arg(long, default_value = "none,cfg,ierg", value_delimiter = ',')]
    guidance: Vec<String>,
    /// Train a model first (into <out>/train) and sample from it instead of the shipped one.
    #[arg(long)]
    train: bool,
    /// Steps for --train.
    #[arg(long, value_parser = common::count_u64, default_value_t = 2000)]
    train_steps: u64,
    /// Euler steps.
    #[arg(long, value_parser = common::count, default_value_t = 50)]
    steps: usize,
    /// Guidance scale w of CFG and I-ERG (default 3; implies the presets, see --paper-defaults).
    #[arg(long, value_parser = common::finite)]
    guidance_scale: Option<f64>,
    /// Use the presets (Table 7's τ, κ and blocks scaled to the model's depth, w = 3) even when the
    /// checkpoint's card holds its own mean-rank selection.
    #[arg(long)]
    paper_defaults: bool,
    /// Samples (seeds) per class.
    #[arg(long, value_parser = common::count, default_value_t = 8)]
    samples: usize,
    /// Base seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// I-ERG attention temperature τ of the rectified methods (default: the preset's, Table 7: 0.01).
    #[arg(long, value_parser = common::finite)]
    tau: Option<f64>,
    /// I-ERG kickoff κ of the rectified methods (default: the preset's, Table 7: 0.3
    /// class-conditional, 0.2 unconditional).
    #[arg(long, value_parser = common::finite)]
    kappa: Option<f64>,
    /// Output folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

#[derive(Serialize)]
struct MethodReport {
    method: String,
    guidance: Guidance,
    source: Source,
    nfe_per_step: f64,
    wall_s: f64,
    /// Percent of the samples the classifier assigns to their requested class (None for
    /// unconditional methods).
    classifier_agrees: Option<f64>,
    grid: String,
}

/// Where a method's settings came from.
#[derive(Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    /// A JSON file given to --guidance.
    File,
    /// The checkpoint card's mean-rank selection.
    Selection,
    /// A preset (Table 7's settings scaled), with the command line's w, τ, κ.
    Preset,
}

/// A method from a JSON file, the card's `selection` (when given and it names the method), or a
/// preset name (with this run's w, and τ, κ where the flags are given and the method rectifies
/// attention).
fn method(name: &str, args: &Args, depth: usize, selection: Option<&std::collections::BTreeMap<String, Guidance>>) -> anyhow::Result<(Guidance, Source)> {
    if name.ends_with(".json") {
        let text = std::fs::read_to_string(name).map_err(|e| anyhow::anyhow!("--guidance {name}: {e}"))?;
        let g = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--guidance {name}: not a Guidance JSON: {e}"))?;
        return Ok((g, Source::File));
    }
    if let Some(g) = selection.and_then(|s| s.get(name)) {
        return Ok((g.clone(), Source::Selection));
    }
    let mut g = preset(name, args.guidance_scale.unwrap_or(3.0), depth)?;
    if g.has_rectified_attention() {
        if let Some(tau) = args.tau {
            g = g.with_tau(tau)?;
        }
        if let Some(kappa) = args.kappa {
            g = g.with_kappa(kappa)?;
        }
    }
    Ok((g, Source::Preset))
}

fn title(g: &Guidance) -> String {
    match g.name.as_str() {
        "none" => "no guidance".into(),
        "uncond" => "unconditional".into(),
        n if g.has_rectified_attention() => {
            let t = &g.terms[0].negative;
            let tau = match t.attention.rectifier {
                erg::attention::Rectifier::Energy(e) => e.tau,
                _ => 1.0,
            };
            format!("{}, w = {}, τ = {tau}, κ = {}", n.to_uppercase(), g.guidance_scale(), t.kappa)
        }
        n if g.terms.first().is_some_and(|t| t.negative.condition == erg::guidance::Condition::Null && g.positive == erg::guidance::Condition::Given) => {
            format!("{}, w = {}", n.to_uppercase(), g.guidance_scale())
        }
        n => format!("{}, s = {}", n.to_uppercase(), g.terms.last().map(|t| t.scale).unwrap_or(0.0)),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = erg::device::best();
    common::output_dir(&args.out)?;
    let t_all = Instant::now();

    let (checkpoint, weak_checkpoint) = if args.train {
        let data = erg::data::emoji::load(erg::data::emoji::DEFAULT_DIR, 32)?;
        let cfg = erg::train::TrainConfig::new(erg::models::dit::DitConfig::emoji_tiny(), "emoji", args.train_steps, args.seed);
        let paths = erg::train::RunPaths::new(args.out.join("train"));
        let r = erg::train::train(&cfg, &data, &device, &paths, erg::train::RunOptions::new().resume(paths.state().exists()).progress())?;
        eprintln!("trained {} steps, final loss {:.4}, {:.0} s", r.step, r.final_loss, r.wall_s);
        (paths.ema(), paths.weak()) // the run's own weak checkpoint for AutoGuidance
    } else {
        (args.checkpoint.clone(), args.weak_checkpoint.clone())
    };
    let (model, card) = erg::models::dit::load(&checkpoint, &device)?;
    let depth = model.depth();
    let flags = args.guidance_scale.is_some() || args.tau.is_some() || args.kappa.is_some();
    let selection = if args.paper_defaults || flags { None } else { card.selection.as_ref() };
    let selected = selection.map(erg::guidance::from_selection).transpose().map_err(|e| anyhow::anyhow!("{}: {e}", args.checkpoint.display()))?;
    let (methods, sources): (Vec<Guidance>, Vec<Source>) =
        args.guidance.iter().map(|name| method(name, &args, depth, selected.as_ref())).collect::<anyhow::Result<Vec<_>>>()?.into_iter().unzip();
    for g in &methods {
        g.validate(depth).map_err(|e| anyhow::anyhow!("--guidance {}: {e}", g.name))?;
    }
    let stems = erg::eval::report::file_stems(&methods.iter().map(|g| g.name.as_str()).collect::<Vec<_>>());
    let (classifier, classifier_card) = erg::features::classifier::SmallCnn::load(&args.classifier, &device)?;
    anyhow::ensure!(
        classifier_card.classes == card.classes,
        "--classifier {}: its classes {:?} are not the model's {:?}",
        args.classifier.display(),
        classifier_card.classes,
        card.classes
    );
    let weak = if methods.iter().any(|g| g.needs_weak_model()) { Some(erg::models::dit::load(&weak_checkpoint, &device)?.0) } else { None };
    // Every weight file this run reads, with its content hash (summary.json).
    let mut weights = vec![("main", checkpoint.clone())];
    if weak.is_some() {
        weights.push(("weak", weak_checkpoint.clone()));
    }
    let weights: Vec<serde_json::Value> = weights
        .into_iter()
        .map(|(role, p)| Ok(serde_json::json!({"role": role, "path": p, "sha256": erg::checkpoint::file_sha256(&p)?})))
        .collect::<erg::Result<_>>()?;
    let models = Models { main: &model, weak: weak.as_ref() };
    let labels = class_grid_labels(card.classes.len(), args.samples, &device)?;
    let cfg = SampleConfig { num_steps: args.steps, seed: args.seed, batch_size: 96 };

    let mut panels = Vec::new();
    let mut reports = Vec::new();
    let mut finals = Vec::new();
    for (g, stem) in methods.iter().zip(&stems) {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(indicatif::ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} steps {per_sec} eta {eta}").unwrap().progress_chars("=> "));
        bar.set_prefix(g.name.clone());
        let t0 = Instant::now();
        let s = sample(models, g, &labels, &cfg, 0, &device, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        let wall_s = t0.elapsed().as_secs_f64();
        let img = grid(&to_rgb8(&s.images)?, args.samples, 2, 2);
        let file = format!("grid_{stem}.png");
        save_png(&img, &args.out.join(&file))?;
        eprintln!("{:>12}: {:.1} s, {:.2} NFE/step → {}", g.name, wall_s, s.nfe_per_step, args.out.join(&file).display());
        panels.push(Panel { title: title(g), image: img });
        let conditional = g.positive == erg::guidance::Condition::Given;
        let classifier_agrees = if conditional { Some(erg::features::consistency(&classifier.logits(&s.images)?, &labels)?) } else { None };
        reports.push(MethodReport {
            method: g.name.clone(),
            guidance: g.clone(),
            source: sources[reports.len()],
            nfe_per_step: s.nfe_per_step,
            wall_s,
            classifier_agrees,
            grid: file,
        });
        finals.push(s.images);
    }
    // Mean absolute difference of each method's samples from the first method's (same seeds).
    let diffs: Vec<f32> = finals.iter().map(|f| (f - &finals[0])?.abs()?.mean_all()?.to_scalar::<f32>()).collect::<Result<_, _>>()?;
    let cfg_vs_ierg = match (args.guidance.iter().position(|n| n == "cfg"), args.guidance.iter().position(|n| n == "ierg" || n == "erg")) {
        (Some(a), Some(b)) => Some((&finals[a] - &finals[b])?.abs()?.mean_all()?.to_scalar::<f32>()?),
        _ => None,
    };
    let row = (card.config.input_size.0 as u32) * 2 + 2;
    let comparison = labelled_comparison(&panels, &card.classes, row, 2, 4)?;
    save_png(&comparison, &args.out.join("comparison.png"))?;

    let total_s = t_all.elapsed().as_secs_f64();
    let mut md = String::new();
    md.push_str("# erg reproduce: no guidance vs CFG vs I-ERG\n\n");
    md.push_str(&format!(
        "Checkpoint `{}` ({} step {}, {} blocks, trained on {}), {} classes × {} seeds, {} Euler steps, seed {}, device {}.\n\n",
        checkpoint.display(),
        card.model,
        card.step,
        depth,
        card.dataset,
        card.classes.len(),
        args.samples,
        args.steps,
        args.seed,
        erg::device::describe(&device)
    ));
    let settings = |g: &Guidance| format!("{}: {}", g.name, g.describe());
    let rectified: Vec<String> = methods.iter().filter(|g| g.has_rectified_attention()).map(settings).collect();
    md.push_str(&settings_sentence(&args, &card, &methods, &sources, depth));
    md.push_str(&format!(
        "Rectified attention: {}. Full settings of each method: `summary.json`.\n\n",
        if rectified.is_empty() { "no rectified method".to_string() } else { rectified.join("; ") },
    ));
    md.push_str(&format!(
        "| method | NFE / step | wall time (s) | s / step | mean abs. diff. from {} | classifier agrees (%) | grid |\n|---|---|---|---|---|---|---|\n",
        reports[0].method
    ));
    for (r, d) in reports.iter().zip(&diffs) {
        md.push_str(&format!(
            "| {} | {:.2} | {:.1} | {:.3} | {:.4} | {} | [{}]({}) |\n",
            r.method,
            r.nfe_per_step,
            r.wall_s,
            r.wall_s / args.steps as f64,
            d,
            r.classifier_agrees.map_or("–".to_string(), |c| format!("{c:.1}")),
            r.grid,
            r.grid
        ));
    }
    md.push_str(&format!(
        "\nClassifier agrees: the share of a method's samples that the classifier `{}` assigns to the requested class; on real held-out images it is right {:.1} % of the time, so a method at or above that makes samples it recognises as often as real ones ({} samples per method: a rough check, the tables measure it over 50 per class and 3 seeds).\n",
        args.classifier.file_name().unwrap_or_default().to_string_lossy(),
        classifier_card.heldout_accuracy,
        labels.dim(0)?
    ));
    if let Some(d) = cfg_vs_ierg {
        md.push_str(&format!("\nMean absolute pixel difference between the CFG and I-ERG samples at the same seeds: {d:.4} (images in [−1, 1]).\n"));
    }
    md.push_str(&format!("\nTotal wall time: {total_s:.1} s. Side by side: ![comparison](comparison.png)\n"));
    common::write(args.out.join("summary.md"), &md)?;
    common::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint": checkpoint, "weights": weights, "step": card.step, "num_steps": args.steps, "samples_per_class": args.samples,
            "seed": args.seed, "paper_defaults": args.paper_defaults, "selection": selection, "methods": reports, "cfg_vs_ierg_mean_abs_diff": cfg_vs_ierg, "mean_abs_diff_from_first": diffs, "total_wall_s": total_s,
        }))?,
    )?;
    println!("{md}");
    Ok(())
}

/// Which settings the run used, and why, for the summary.
fn settings_sentence(
    args: &Args,
    card: &erg::checkpoint::ModelCard<erg::models::dit::DitConfig>,
    methods: &[Guidance],
    sources: &[Source],
    depth: usize,
) -> String {
    let named = |want: Source| methods.iter().zip(sources).filter(|(_, s)| **s == want).map(|(g, _)| g.name.as_str()).collect::<Vec<_>>();
    let (selected, presets, files) = (named(Source::Selection), named(Source::Preset), named(Source::File));
    let mut parts = Vec::new();
    if !selected.is_empty() {
        let s = card.selection.as_ref().expect("a selected method implies a selection");
        parts.push(format!(
            "**the checkpoint's own selection** for {} ({}; {} images per class, {} steps, seeds {:?}, {} the tables' 0, 1, 2)",
            selected.join(", "),
            s.rule,
            s.samples_per_class,
            s.num_steps,
            s.seeds,
            if s.seeds.iter().any(|x| *x <= 2) { "overlapping" } else { "disjoint from" }
        ));
    }
    if !presets.is_empty() {
        let why = if args.paper_defaults {
            "`--paper-defaults`"
        } else if args.guidance_scale.is_some() || args.tau.is_some() || args.kappa.is_some() {
            "setting flags given"
        } else if card.selection.is_some() {
            "not in the card's selection"
        } else {
            "the card holds no selection: `sweep`, then `export --selection`"
        };
        let rectified = methods.iter().zip(sources).any(|(g, s)| *s == Source::Preset && g.has_rectified_attention());
        parts.push(format!(
            "presets for {} ({}w = {}{}{}; {why})",
            presets.join(", "),
            if rectified { format!("Table 7's τ = 0.01 and κ, blocks 12–15 of 28 scaled to {depth}, ") } else { String::new() },
            args.guidance_scale.unwrap_or(3.0),
            args.tau.map_or(String::new(), |t| format!(", τ = {t} from the command line")),
            args.kappa.map_or(String::new(), |k| format!(", κ = {k} from the command line")),
        ));
    }
    if !files.is_empty() {
        parts.push(format!("JSON files for {}", files.join(", ")));
    }
    format!("Settings: {}.\n\n", parts.join("; "))
}
