//! Which recipe to spend the CPU on: short training runs of the emoji DiT, each given the same
//! CPU time, compared by what they give for it (FID and consistency on the classifier's
//! features, unguided and with CFG). Book chapter 2 shows the table and the loss curves.
//!
//! ```text
//! cargo run --release --example recipes                         # all recipes, 8 CPU-minutes each → results/recipes/
//! cargo run --release --example recipes -- --minutes 2 --recipes tiny-b64,base-b64
//! ```
//! Each recipe's step count is its minutes divided by its own seconds per step (measured over a
//! few steps first, then fixed, so that the run itself is deterministic and resumes exactly):
//! rerunning skips finished runs and evaluations, and a killed run continues where it stopped.
//! Runs live in `--runs` (default `runs/recipes`), the table and figure in `--out`.
mod common;

use std::path::{Path, PathBuf};

use clap::Parser;
use erg::eval::{Bench, EvalConfig};
use erg::guidance::{preset, Guidance};
use erg::models::dit::DitConfig;
use erg::train::{train, LrSchedule, RunOptions, RunPaths, TrainConfig};
use serde::{Deserialize, Serialize};

/// Short runs of the emoji DiT with the same CPU time each, compared by FID and consistency.
#[derive(Parser, Debug)]
struct Args {
    /// CPU minutes of training per recipe (wall time on this machine with nothing else running).
    #[arg(long, value_parser = common::finite, default_value_t = 8.0)]
    minutes: f64,
    /// Recipes (see `--list`).
    #[arg(long, value_delimiter = ',', default_value = "tiny-b64,base-b64,base-b64-cosine,base-b128,narrow-deep-b64,base-p2-b32")]
    recipes: Vec<String>,
    /// Print the recipes and exit.
    #[arg(long)]
    list: bool,
    /// Only measure each recipe's seconds per step and fix its step count (on a quiet machine),
    /// then exit; the training can then share the machine without changing any run.
    #[arg(long)]
    plan_only: bool,
    /// Generated images per class for the evaluation.
    #[arg(long, value_parser = common::count, default_value_t = 20)]
    samples_per_class: usize,
    /// Euler steps of the evaluation.
    #[arg(long, value_parser = common::count, default_value_t = 25)]
    steps: usize,
    /// CFG's guidance scale.
    #[arg(long, value_parser = common::finite, default_value_t = 3.0)]
    guidance_scale: f64,
    /// The classifier of the features and the consistency score.
    #[arg(long, default_value = erg::checkpoint::SHIPPED_EMOJI_CLASSIFIER)]
    classifier: PathBuf,
    /// Training runs.
    #[arg(long, default_value = "runs/recipes")]
    runs: PathBuf,
    /// Table and figure.
    #[arg(long, default_value = "results/recipes")]
    out: PathBuf,
}

/// A recipe: architecture, batch, learning rate and its schedule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Recipe {
    name: String,
    what: String,
    model: DitConfig,
    batch_size: usize,
    lr: f64,
    cosine: bool,
}

fn recipes() -> Vec<Recipe> {
    let tiny = DitConfig::emoji_tiny(); // D 128, 6 blocks, patch 4: the first shipped model
    let base = DitConfig::emoji_base(); // D 192, 12 blocks, patch 4
    let r = |name: &str, what: &str, model: &DitConfig, batch_size, lr, cosine| Recipe {
        name: name.into(),
        what: what.into(),
        model: model.clone(),
        batch_size,
        lr,
        cosine,
    };
    vec![
        r("tiny-b64", "D 128 × 6 blocks, patch 4, batch 64, lr 4e-4 (the first shipped recipe)", &tiny, 64, 4e-4, false),
        r("base-b64", "D 192 × 12 blocks, patch 4, batch 64, lr 3e-4", &base, 64, 3e-4, false),
        r("base-b64-cosine", "as base-b64, lr 4e-4 with cosine decay to 0", &base, 64, 4e-4, true),
        r("base-b128", "as base-b64, batch 128, lr 4e-4", &base, 128, 4e-4, false),
        r("narrow-deep-b64", "D 128 × 12 blocks, patch 4, batch 64, lr 4e-4", &DitConfig { depth: 12, ..tiny.clone() }, 64, 4e-4, false),
        r("base-p2-b32", "D 192 × 12 blocks, patch 2 (256 tokens), batch 32, lr 3e-4", &DitConfig { patch_size: 2, ..base.clone() }, 32, 3e-4, false),
    ]
}

/// What a finished recipe gave, stored as `<runs>/<name>/recipe.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outcome {
    recipe: Recipe,
    minutes: f64,
    s_per_step: f64,
    steps: u64,
    params_m: f64,
    final_loss: f64,
    /// Method → metric → value.
    metrics: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
}

fn train_config(r: &Recipe, steps: u64, data: &erg::data::Dataset) -> TrainConfig {
    let mut model = r.model.clone();
    model.num_classes = data.classes.len();
    let mut cfg = TrainConfig::new(model, "emoji", steps, 0);
    cfg.batch_size = r.batch_size;
    cfg.optim.lr = r.lr;
    cfg.warmup_steps = cfg.warmup_steps.min(steps / 4);
    cfg.lr_schedule = if r.cosine { LrSchedule::Cosine } else { LrSchedule::Constant };
    cfg.checkpoint_every = 100;
    cfg
}

/// Seconds per step of `r` on this machine: 3 warm-up steps, then the median of 10.
fn probe(r: &Recipe, data: &erg::data::Dataset, device: &candle_core::Device) -> anyhow::Result<f64> {
    let cfg = train_config(r, 1_000, data);
    let mut state = erg::train::TrainState::new(&erg::train::ClassConditional, &cfg, device)?;
    let mut times = vec![];
    for step in 0..13 {
        let t0 = std::time::Instant::now();
        state.step(&cfg, data, step, device)?;
        if step >= 3 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(times[times.len() / 2])
}

/// (seconds per step, steps) of `r`: measured and fixed once in `<runs>/<name>/plan.json`, so
/// that a resumed run has the same length. All plans are made before any training, so that the
/// probes see the same quiet machine.
fn plan(r: &Recipe, a: &Args, data: &erg::data::Dataset, device: &candle_core::Device) -> anyhow::Result<(f64, u64)> {
    let dir = a.runs.join(&r.name);
    let plan = dir.join("plan.json");
    if let Ok(t) = std::fs::read_to_string(&plan) {
        return Ok(serde_json::from_str(&t)?);
    }
    let s = probe(r, data, device)?;
    let steps = ((a.minutes * 60.0 / s) as u64).max(10);
    std::fs::create_dir_all(&dir)?;
    erg::checkpoint::write_atomic(&plan, serde_json::to_string(&(s, steps))?.as_bytes())?;
    eprintln!("{}: {s:.3} s/step → {steps} steps", r.name);
    Ok((s, steps))
}

fn run_recipe(r: &Recipe, a: &Args, data: &erg::data::Dataset, device: &candle_core::Device) -> anyhow::Result<Outcome> {
    let dir = a.runs.join(&r.name);
    let done = dir.join("recipe.json");
    if let Ok(text) = std::fs::read_to_string(&done) {
        let o: Outcome = serde_json::from_str(&text)?;
        if o.recipe == *r && o.minutes == a.minutes {
            eprintln!("{}: done ({} steps)", r.name, o.steps);
            return Ok(o);
        }
        anyhow::bail!("{} holds a run of another recipe or budget; remove it or choose another --runs", dir.display());
    }
    let (s_per_step, steps) = plan(r, a, data, device)?;
    eprintln!("{}: {s_per_step:.3} s/step → {steps} steps in {} min ({})", r.name, a.minutes, r.what);
    let cfg = train_config(r, steps, data);
    let paths = RunPaths::new(&dir);
    train(&cfg, data, device, &paths, RunOptions::new().resume(paths.state().exists()).progress())?;
    // The final loss from the whole log (a run finished by an earlier call logs no step in this one).
    let log = erg::train::loss_log::read(&paths.loss())?;
    anyhow::ensure!(!log.is_empty(), "{}: no steps logged", paths.loss().display());
    let final_loss = erg::train::loss_log::tail_mean(&log, (log.len() / 2).clamp(1, 100));
    // Evaluate the EMA weights (the weak model is not used by none or CFG).
    let bench = Bench::load(&paths.ema(), &paths.ema(), &a.classifier, device)?;
    let ecfg = EvalConfig { samples_per_class: a.samples_per_class, num_steps: a.steps, seed: 0, ..EvalConfig::default() };
    let mut metrics = std::collections::BTreeMap::new();
    for (name, g) in [("none", Guidance::none()), ("cfg", preset("cfg", a.guidance_scale, cfg.model.depth)?)] {
        let rec = bench.evaluate(&g, &ecfg, device, |_, _| {})?;
        eprintln!("  {name}: FID {:.2}, consistency {:.1} %", rec.metrics["fid"], rec.metrics.get("consistency").copied().unwrap_or(f64::NAN));
        metrics.insert(name.to_string(), rec.metrics);
    }
    let o = Outcome { recipe: r.clone(), minutes: a.minutes, s_per_step, steps, params_m: cfg.model.num_params() as f64 / 1e6, final_loss, metrics };
    erg::checkpoint::write_atomic(&done, serde_json::to_string_pretty(&o)?.as_bytes())?;
    Ok(o)
}

/// A run's loss as (CPU minutes, running mean of 25 steps) with the planned s/step.
fn loss_curve(dir: &Path, s_per_step: f64) -> anyhow::Result<Vec<(f64, f64)>> {
    let rows = erg::train::loss_log::read(&dir.join("loss.csv"))?;
    Ok(erg::train::loss_log::running_mean(&rows, 25).into_iter().map(|(step, l)| (step * s_per_step / 60.0, l)).collect())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let all = recipes();
    if a.list {
        for r in &all {
            println!("{:18} {}", r.name, r.what);
        }
        return Ok(());
    }
    let chosen: Vec<Recipe> = a
        .recipes
        .iter()
        .map(|n| all.iter().find(|r| &r.name == n).cloned().ok_or_else(|| anyhow::anyhow!("--recipes: unknown recipe {n:?} (see --list)")))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(a.minutes > 0.0, "--minutes must be > 0");
    anyhow::ensure!(a.classifier.exists(), "--classifier {}: not found", a.classifier.display());
    common::output_dir(&a.out)?;
    erg::imaging::register_font();
    let device = erg::device::best();
    let data = erg::data::emoji::load(erg::data::emoji::DEFAULT_DIR, 32)?;
    for r in &chosen {
        if !a.runs.join(&r.name).join("recipe.json").exists() {
            plan(r, &a, &data, &device)?;
        }
    }
    if a.plan_only {
        return Ok(());
    }
    let outcomes: Vec<Outcome> = chosen.iter().map(|r| run_recipe(r, &a, &data, &device)).collect::<anyhow::Result<_>>()?;

    let m = |o: &Outcome, method: &str, k: &str| o.metrics.get(method).and_then(|x| x.get(k)).copied().unwrap_or(f64::NAN);
    let mut md = format!(
        "# Recipes at {} CPU-minutes each\n\n{} ({}); EMA weights evaluated with {} samples per class, {} Euler steps, CFG at w = {}; FID and consistency on the classifier's features (`{}`). One seed: the spread over seeds is not measured here.\n\n| recipe | what | params | s / step | steps | final loss | FID none | FID CFG | consistency CFG % |\n|---|---|---|---|---|---|---|---|---|\n",
        a.minutes,
        std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())).unwrap_or_default(),
        erg::device::describe(&device),
        a.samples_per_class,
        a.steps,
        a.guidance_scale,
        a.classifier.display()
    );
    for o in &outcomes {
        md.push_str(&format!(
            "| {} | {} | {:.1} M | {:.3} | {} | {:.4} | {:.2} | {:.2} | {:.1} |\n",
            o.recipe.name,
            o.recipe.what,
            o.params_m,
            o.s_per_step,
            o.steps,
            o.final_loss,
            m(o, "none", "fid"),
            m(o, "cfg", "fid"),
            m(o, "cfg", "consistency")
        ));
    }
    common::write(a.out.join("recipes.md"), &md)?;
    println!("{md}");

    let curves: Vec<(String, Vec<(f64, f64)>)> =
        outcomes.iter().map(|o| Ok((o.recipe.name.clone(), loss_curve(&a.runs.join(&o.recipe.name), o.s_per_step)?))).collect::<anyhow::Result<_>>()?;
    erg::train::loss_log::plot_loss_curves(
        &a.out.join("loss"),
        &format!("training loss against CPU time ({} min per recipe)", a.minutes),
        "CPU minutes",
        "loss (running mean of 25 steps)",
        &curves,
    )?;
    eprintln!("wrote {} and loss.{{png,svg}}", a.out.join("recipes.md").display());
    Ok(())
}
