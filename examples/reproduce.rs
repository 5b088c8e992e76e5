//! The main job: class-conditional samples from the shipped emoji DiT with no guidance,
//! classifier-free guidance (CFG) and I-ERG (by default), at the same seeds, side by side.
//!
//! ```text
//! cargo run --release --example reproduce                    # shipped checkpoint → results/
//! cargo run --release --example reproduce -- --guidance none,cfg,apg,cads,pag,sag,seg,autoguidance,slg,ierg,erg+apg,erg+cads
//! cargo run --release --example reproduce -- --train --train-steps 2000   # train one first
//! ```
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
    /// Guidance scale w of CFG and I-ERG.
    #[arg(long, value_parser = common::finite, default_value_t = 3.0)]
    guidance_scale: f64,
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
    nfe_per_step: f64,
    wall_s: f64,
    grid: String,
}

/// A method from a preset name (with this run's w, and τ, κ where the flags are given and the
/// method rectifies attention) or a JSON file.
fn method(name: &str, args: &Args, depth: usize) -> anyhow::Result<Guidance> {
    if name.ends_with(".json") {
        let text = std::fs::read_to_string(name).map_err(|e| anyhow::anyhow!("--guidance {name}: {e}"))?;
        return serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--guidance {name}: not a Guidance JSON: {e}"));
    }
    let mut g = preset(name, args.guidance_scale, depth)?;
    if g.has_rectified_attention() {
        if let Some(tau) = args.tau {
            g = g.with_tau(tau)?;
        }
        if let Some(kappa) = args.kappa {
            g = g.with_kappa(kappa)?;
        }
    }
    Ok(g)
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
    let methods: Vec<Guidance> = args.guidance.iter().map(|name| method(name, &args, depth)).collect::<anyhow::Result<_>>()?;
    for g in &methods {
        g.validate(depth).map_err(|e| anyhow::anyhow!("--guidance {}: {e}", g.name))?;
    }
    let stems = erg::eval::report::file_stems(&methods.iter().map(|g| g.name.as_str()).collect::<Vec<_>>());
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
        reports.push(MethodReport { method: g.name.clone(), guidance: g.clone(), nfe_per_step: s.nfe_per_step, wall_s, grid: file });
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
    md.push_str(&format!(
        "Guidance scale w = {} for the CFG-like term of every method; {} ({}; Table 7's blocks 12–15 of 28 scaled to {depth}). Full settings of each method: `summary.json`.\n\n",
        args.guidance_scale,
        if rectified.is_empty() { "no rectified method".to_string() } else { rectified.join("; ") },
        if args.tau.is_some() || args.kappa.is_some() { "τ/κ from the command line" } else { "Table 7's τ and κ" }
    ));
    md.push_str(&format!(
        "| method | NFE / step | wall time (s) | s / step | mean abs. diff. from {} | grid |\n|---|---|---|---|---|---|\n",
        reports[0].method
    ));
    for (r, d) in reports.iter().zip(&diffs) {
        md.push_str(&format!(
            "| {} | {:.2} | {:.1} | {:.3} | {:.4} | [{}]({}) |\n",
            r.method,
            r.nfe_per_step,
            r.wall_s,
            r.wall_s / args.steps as f64,
            d,
            r.grid,
            r.grid
        ));
    }
    if let Some(d) = cfg_vs_ierg {
        md.push_str(&format!("\nMean absolute pixel difference between the CFG and I-ERG samples at the same seeds: {d:.4} (images in [−1, 1]).\n"));
    }
    md.push_str(&format!("\nTotal wall time: {total_s:.1} s. Side by side: ![comparison](comparison.png)\n"));
    common::write(args.out.join("summary.md"), &md)?;
    common::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint": checkpoint, "weights": weights, "step": card.step, "num_steps": args.steps, "samples_per_class": args.samples,
            "seed": args.seed, "methods": reports, "cfg_vs_ierg_mean_abs_diff": cfg_vs_ierg, "mean_abs_diff_from_first": diffs, "total_wall_s": total_s,
        }))?,
    )?;
    println!("{md}");
    Ok(())
}
