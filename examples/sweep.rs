//! Sweep each method's hyperparameters (the paper's grids), select each method's setting by mean
//! rank over all metrics (Appendix A.1), and draw Pareto fronts (Fig. 2) of density vs coverage
//! and coverage vs consistency.
//!
//! ```text
//! cargo run --release --example sweep -- --methods cfg,ierg,cads --samples-per-class 10
//! cargo run --release --example table3 -- --selected results/selected.json
//! ```
//! Runs are appended to `<out>/results.jsonl` (shared with `table3`); an interrupted sweep
//! resumes. Writes `<out>/selected.json` (method → selected `Guidance`) and `<out>/pareto.{svg,png}`.
use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use erg::eval::sweep::{grid, plot_pareto, select_per_method};
use erg::eval::{run_key, Bench, BenchPaths, EvalConfig, MetricSpec, ResultsFile};
use erg::guidance::Guidance;
use erg::models::Denoiser;

#[derive(Parser, Debug)]
struct Args {
    /// Methods to sweep (preset names).
    #[arg(long, default_value = "cfg,apg,cads,pag,sag,seg,autoguidance,ierg,erg+apg,erg+cads", value_delimiter = ',')]
    methods: Vec<String>,
    /// Guidance scales of the grid.
    #[arg(long, default_value = "1.5,2,3,4.5", value_delimiter = ',')]
    scales: Vec<f64>,
    /// Generated images per class per run.
    #[arg(long, default_value_t = 10)]
    samples_per_class: usize,
    /// Euler steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    paths: BenchPaths,
    /// Output folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let device = erg::device::best();
    let bench = Bench::from_paths(&a.paths, &device)?;
    let cfg =
        EvalConfig { samples_per_class: a.samples_per_class, num_steps: a.steps, seed: a.seed, features: bench.scorer.features_key(), ..Default::default() };
    let mut results = ResultsFile::open(a.out.join("results.jsonl"))?;
    let runs: Vec<Guidance> = a.methods.iter().map(|m| grid(m, bench.model.depth(), &a.scales)).collect::<Result<Vec<_>, _>>()?.concat();
    let todo = runs.iter().filter(|g| !results.contains(&run_key(g, &cfg))).count();
    eprintln!("{} settings, {} to run ({} already in results.jsonl)", runs.len(), todo, runs.len() - todo);
    let bar = indicatif::ProgressBar::new(todo as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("sweep [{bar:30}] {pos}/{len} runs eta {eta} {msg}").unwrap().progress_chars("=> "));
    let mut keys = Vec::new();
    for g in &runs {
        let key = run_key(g, &cfg);
        if !results.contains(&key) {
            bar.set_message(g.name.clone());
            let rec = bench.evaluate(g, &cfg, &device, |_, _| {})?;
            results.append(rec)?;
            bar.inc(1);
        }
        keys.push(key);
    }
    bar.finish_and_clear();
    let mine: Vec<_> = results.records().iter().filter(|r| keys.contains(&r.key)).cloned().collect();
    let selected = select_per_method(&mine, &MetricSpec::paper_defaults());
    let chosen: BTreeMap<String, serde_json::Value> = selected.iter().map(|(m, r)| (m.clone(), r.guidance.clone())).collect();
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("selected.json"), serde_json::to_string_pretty(&chosen)?)?;
    for (m, r) in &selected {
        println!(
            "{m:>14}: FID {:.2}, precision {:.1}, recall {:.1}, density {:.1}, coverage {:.1}, consistency {:.1}",
            r.metrics["fid"], r.metrics["precision"], r.metrics["recall"], r.metrics["density"], r.metrics["coverage"], r.metrics["consistency"]
        );
    }
    for ext in ["svg", "png"] {
        plot_pareto(&mine, &[("coverage", "density"), ("coverage", "consistency")], &a.out.join(format!("pareto.{ext}")))?;
    }
    eprintln!("→ {}, {}", a.out.join("selected.json").display(), a.out.join("pareto.{svg,png}").display());
    Ok(())
}
