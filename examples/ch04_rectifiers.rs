//! Chapter 4 of the book: energy smoothing (SEG) vs identity (PAG) vs temperature (I-ERG) as the
//! attention rectification of I-ERG's negative (ERG Table 6), and SEG's blur σ swept.
//!
//! ```text
//! cargo run --release --example ch04_rectifiers        # → results/ch04/{table6.md, sigma.{png,svg}}: Table 6 over seeds 0-2
//! cargo run --release --example ch04_rectifiers -- --quick   # CI-sized (2 per class, 6 steps, 2 seeds)
//! ```
use std::path::Path;

use erg::attention::Rectifier;
use erg::eval::report::{evaluate_variants, markdown_table, plot_metric_curves};
use erg::eval::seeds::{evaluate_over_seeds, table_with_separations};
use erg::eval::{Bench, BenchPaths, EvalConfig, ResultsFile};
use erg::guidance::{preset, Guidance};
use erg::models::Denoiser;

/// Chapter 4 of the book: energy smoothing (SEG) vs identity (PAG) vs temperature (I-ERG) as
/// the attention rectification of I-ERG's negative (ERG Table 6), and SEG's blur σ swept.
#[derive(clap::Parser, Debug)]
struct Args {
    /// A CI-sized run: fewer samples, seeds and steps (a minute or less).
    #[arg(long)]
    quick: bool,
}

// ANCHOR: helpers
/// I-ERG at w = 3 with the blocks and κ of the class-conditional preset for a model of `depth`
/// blocks; only the rectifier changes.
fn with(name: &str, r: Rectifier, depth: usize) -> anyhow::Result<(String, Guidance)> {
    let g = preset("ierg", 3.0, depth)?.named(format!("ierg-{name}")).with_rectifier(r)?;
    Ok((name.to_string(), g))
}
// ANCHOR_END: helpers

fn main() -> anyhow::Result<()> {
    <Args as clap::Parser>::parse(); // --help, and unknown flags are errors
                                     // ANCHOR: setup
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("ERG_QUICK").is_some(); // CI-sized run
    let out = Path::new("results/ch04");
    std::fs::create_dir_all(out)?;
    let device = erg::device::best();
    let bench = Bench::from_paths(&BenchPaths::default(), &device)?;
    // Table 6 at the statistics of the paper's tables: 50 images per class at each of three seeds
    // (independent sample sets); the σ sweep at 10 per class, one seed.
    let table_cfg = EvalConfig { samples_per_class: if quick { 2 } else { 50 }, num_steps: if quick { 6 } else { 25 }, ..Default::default() };
    let seeds: &[u64] = if quick { &[0, 1] } else { &[0, 1, 2] };
    let cfg = EvalConfig { samples_per_class: if quick { 2 } else { 10 }, ..table_cfg.clone() };
    let mut results = ResultsFile::open(out.join("results.jsonl"))?;
    let depth = bench.model.depth();
    // ANCHOR_END: setup

    // ANCHOR: table6
    let variants = vec![
        ("CFG (no rectified negative)".to_string(), preset("cfg", 3.0, depth)?),
        with("energy smoothing σ = ∞ (SEG)", Rectifier::SmoothedQueries { sigma: f64::INFINITY }, depth)?,
        with("identity mapping (PAG)", Rectifier::Identity, depth)?,
        with("temperature τ = 0.2 (I-ERG)", Rectifier::temperature(0.2), depth)?,
    ];
    let stats = evaluate_over_seeds(&bench, &variants, &table_cfg, seeds, &mut results, &device)?;
    let table = table_with_separations("rectifier", &stats, "temperature τ = 0.2 (I-ERG)");
    println!("{table}");
    std::fs::write(out.join("table6.md"), &table)?;
    // ANCHOR_END: table6

    // ANCHOR: sigma
    let sigmas = [0.5, 1.0, 2.0, 4.0, 8.0];
    let variants: Vec<_> = sigmas.iter().map(|&s| with(&format!("σ = {s}"), Rectifier::SmoothedQueries { sigma: s }, depth)).collect::<anyhow::Result<_>>()?;
    let rows = evaluate_variants(&bench, &variants, &cfg, &mut results, &device)?;
    println!("{}", markdown_table("SEG blur", &rows));
    let cfg_run = evaluate_variants(&bench, &[("CFG".into(), preset("cfg", 3.0, bench.model.depth())?)], &cfg, &mut results, &device)?;
    plot_metric_curves(&out.join("sigma"), "σ (tokens)", &sigmas, &rows, Some(&cfg_run[0].1))?;
    // ANCHOR_END: sigma
    eprintln!("→ {}", out.display());
    Ok(())
}
