//! Sweep each method's hyperparameters (the paper's grids), select each method's setting by mean
//! rank over all metrics (Appendix A.1), and draw Pareto fronts (Fig. 2) of density vs coverage
//! and coverage vs consistency.
//!
//! ```text
//! cargo run --release --example sweep -- --methods cfg,ierg,cads --samples-per-class 10
//! cargo run --release --example table3 -- --selected results/selected.json
//! # store the selection in the checkpoint's card (reproduce and table3 then use it by default):
//! cargo run --release --example export -- --from data/checkpoints/emoji-dit-ema.safetensors \
//!     --selection results/selection.json --to data/checkpoints/emoji-dit-ema.safetensors
//! ```
//! Every setting is sampled at each of `--seeds` (default 100, 101, 102: disjoint from the tables'
//! seeds 0, 1, 2, so that no table is selected on its own samples) and ranked on its metrics'
//! means over them. Runs are appended to `<out>/results.jsonl` (shared with `table3`); an
//! interrupted sweep resumes. Writes `<out>/selected.json` (method → selected `Guidance`),
//! `<out>/selection.json` (the same with the rule, seeds and sample counts, for the card) and
//! `<out>/pareto.{svg,png}`.
mod common;

use std::path::PathBuf;

use clap::Parser;
use erg::eval::report::evaluate_variants;
use erg::eval::sweep::{grid, mean_over_seeds, plot_pareto, select_per_method, selection};
use erg::eval::{Bench, EvalConfig, MetricSpec, ResultsFile};
use erg::guidance::Guidance;
use erg::models::Denoiser;

/// Sweeps each method's hyperparameters over the paper's grids on the emoji DiT, selects each
/// method's setting by mean rank over the six metrics (ERG Appendix A.1) into
/// `<out>/selected.json`, and draws the Pareto fronts of Fig. 2.
#[derive(Parser, Debug)]
struct Args {
    /// Methods to sweep (preset names).
    #[arg(long, default_value = "cfg,apg,cads,pag,sag,seg,autoguidance,ierg,erg+apg,erg+cads", value_delimiter = ',')]
    methods: Vec<String>,
    /// Guidance scales of the grid.
    #[arg(long, value_parser = common::finite, default_value = "1.5,2,3,4.5", value_delimiter = ',')]
    scales: Vec<f64>,
    /// Generated images per class per run.
    #[arg(long, value_parser = common::count, default_value_t = 10)]
    samples_per_class: usize,
    /// Euler steps.
    #[arg(long, value_parser = common::count, default_value_t = 50)]
    steps: usize,
    /// Sampling seeds (independent sample sets) whose metric means are ranked; keep them
    /// disjoint from the seeds of the tables reported with the selection.
    #[arg(long, value_delimiter = ',', default_value = "100,101,102")]
    seeds: Vec<u64>,
    #[command(flatten)]
    paths: common::EvalFlags,
    /// Output folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let device = erg::device::best();
    common::output_dir(&a.out)?;
    let bench = Bench::from_paths(&a.paths.dit_paths(), &device)?;
    let cfg = EvalConfig { samples_per_class: a.samples_per_class, num_steps: a.steps, features: bench.scorer.features_key(), ..Default::default() };
    let mut results = ResultsFile::open(a.out.join("results.jsonl"))?;
    let runs: Vec<(String, Guidance)> = a
        .methods
        .iter()
        .map(|m| Ok(grid(m, bench.model.depth(), &a.scales)?.into_iter().map(|g| (g.describe(), g)).collect::<Vec<_>>()))
        .collect::<anyhow::Result<Vec<_>>>()?
        .concat();
    eprintln!("{} settings × {} seeds", runs.len(), a.seeds.len());
    let per_seed: Vec<Vec<_>> = a
        .seeds
        .iter()
        .map(|&seed| Ok(evaluate_variants(&bench, &runs, &EvalConfig { seed, ..cfg.clone() }, &mut results, &device)?.into_iter().map(|(_, r)| r).collect()))
        .collect::<anyhow::Result<_>>()?;
    let mine = mean_over_seeds(&per_seed)?;
    let metrics = MetricSpec::paper_defaults();
    let selected = select_per_method(&mine, &metrics);
    let record = selection(&mine, &metrics, &a.seeds, &cfg);
    common::create_dir(&a.out)?;
    // selected.json: method → Guidance (table3 --selected); selection.json: the same with its provenance (the card).
    erg::checkpoint::write_atomic(&a.out.join("selected.json"), serde_json::to_string_pretty(&record.methods)?.as_bytes())?;
    erg::checkpoint::write_atomic(&a.out.join("selection.json"), serde_json::to_string_pretty(&record)?.as_bytes())?;
    for (m, r) in &selected {
        println!(
            "{m:>14}: FID {:.2}, precision {:.1}, recall {:.1}, density {:.1}, coverage {:.1}, consistency {:.1}",
            r.metrics["fid"], r.metrics["precision"], r.metrics["recall"], r.metrics["density"], r.metrics["coverage"], r.metrics["consistency"]
        );
    }
    for ext in ["svg", "png"] {
        plot_pareto(&mine, &[("coverage", "density"), ("coverage", "consistency")], &a.out.join(format!("pareto.{ext}")))?;
    }
    eprintln!(
        "→ {}, {}, {} (means over seeds {:?})",
        a.out.join("selected.json").display(),
        a.out.join("selection.json").display(),
        a.out.join("pareto.{svg,png}").display(),
        a.seeds
    );
    Ok(())
}
