//! Chapter 8 of the book: the kickoff κ (ERG Fig. 9), multi-step energy descent (Table 4) and the
//! components of I-ERG (Table 5, class-conditional part) on the shipped emoji DiT.
//!
//! ```text
//! cargo run --release --example ch08_ablations          # → results/ch08/{kappa.{png,svg}, table4.md, table5.md}
//! cargo run --release --example ch08_ablations -- --quick    # CI-sized (2 per class, 6 steps)
//! ```
use std::path::Path;

use erg::attention::Energy;
use erg::eval::report::{evaluate_variants, markdown_table, plot_metric_curves};
use erg::eval::{Bench, BenchPaths, EvalConfig, ResultsFile};
use erg::guidance::{preset, Guidance};
use erg::models::Denoiser;

/// Chapter 8 of the book: the kickoff κ (ERG Fig. 9), multi-step energy descent (Table 4) and
/// the components of I-ERG (Table 5, class-conditional part) on the shipped emoji DiT.
#[derive(clap::Parser, Debug)]
struct Args {
    /// A CI-sized run: fewer samples, seeds and steps (a minute or less).
    #[arg(long)]
    quick: bool,
}

// ANCHOR: helpers
/// I-ERG at w = 3 for a model of `depth` blocks with kickoff κ and the energy update (τ, α, γ, K).
fn ierg(kappa: f64, energy: Energy, depth: usize) -> anyhow::Result<Guidance> {
    Ok(preset("ierg", 3.0, depth)?.with_kappa(kappa)?.with_energy(energy)?)
}
// ANCHOR_END: helpers

fn main() -> anyhow::Result<()> {
    <Args as clap::Parser>::parse(); // --help, and unknown flags are errors
                                     // ANCHOR: setup
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("ERG_QUICK").is_some(); // CI-sized run
    let out = Path::new("results/ch08");
    std::fs::create_dir_all(out)?;
    let device = erg::device::best();
    let bench = Bench::from_paths(&BenchPaths::default(), &device)?;
    let cfg = EvalConfig { samples_per_class: if quick { 2 } else { 10 }, num_steps: if quick { 6 } else { 25 }, ..Default::default() };
    let mut results = ResultsFile::open(out.join("results.jsonl"))?;
    let depth = bench.model.depth();
    // The base: I-ERG at the mean-rank-selected temperature (τ = 0.5, blocks [2, 4), w = 3).
    let cfg_run = evaluate_variants(&bench, &[("CFG".into(), preset("cfg", 3.0, depth)?)], &cfg, &mut results, &device)?;
    // ANCHOR_END: setup

    // ANCHOR: kappa
    let kappas = [0.0, 0.2, 0.3, 0.4, 0.6, 0.8];
    let variants: Vec<_> = kappas.iter().map(|&k| Ok((format!("κ = {k}"), ierg(k, Energy::temperature(0.5), depth)?))).collect::<anyhow::Result<_>>()?;
    let rows = evaluate_variants(&bench, &variants, &cfg, &mut results, &device)?;
    println!("{}", markdown_table("kickoff", &rows));
    plot_metric_curves(&out.join("kappa"), "κ", &kappas, &rows, Some(&cfg_run[0].1))?;
    // ANCHOR_END: kappa

    // ANCHOR: table4
    // Multi-step descent on the energy: (K, γ) as in Table 4, τ = 0.5, α = 1, κ = 0.3.
    let steps = [(1, 1.0), (1, 1.5), (1, 0.5), (10, 0.1)];
    let variants: Vec<_> = steps
        .iter()
        .map(|&(k, gamma)| Ok((format!("K = {k}, γ = {gamma}"), ierg(0.3, Energy { tau: 0.5, alpha: 1.0, gamma, steps: k }, depth)?)))
        .collect::<anyhow::Result<_>>()?;
    let rows = evaluate_variants(&bench, &variants, &cfg, &mut results, &device)?;
    let t4 = markdown_table("energy descent", &rows);
    println!("{t4}");
    std::fs::write(out.join("table4.md"), &t4)?;
    // ANCHOR_END: table4

    // ANCHOR: table5
    // Components added one by one (C-ERG needs a text encoder: the text-to-image chapter).
    let variants = vec![
        ("CFG".to_string(), preset("cfg", 3.0, depth)?),
        ("+ denoiser entropy τ_i = 0.5".to_string(), ierg(0.3, Energy::temperature(0.5), depth)?),
        ("+ energy re-weighting α = 0.9".to_string(), ierg(0.3, Energy { tau: 0.5, alpha: 0.9, gamma: 1.0, steps: 1 }, depth)?),
    ];
    let rows = evaluate_variants(&bench, &variants, &cfg, &mut results, &device)?;
    let t5 = markdown_table("components", &rows);
    println!("{t5}");
    std::fs::write(out.join("table5.md"), &t5)?;
    // ANCHOR_END: table5
    eprintln!("→ {}", out.display());
    Ok(())
}
