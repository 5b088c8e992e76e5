//! Chapter 8 of the book: the kickoff κ (ERG Fig. 9), multi-step energy descent (Table 4) and the
//! components of I-ERG (Table 5, class-conditional part) on the shipped emoji DiT.
//!
//! ```text
//! cargo run --release --example ch08_ablations          # → results/ch08/{kappa.{png,svg}, table4.md, table5.md}
//! cargo run --release --example ch08_ablations -- --quick    # CI-sized (2 per class, 6 steps, 2 seeds)
//! ```
//! Tables 4 and 5 are mean ± std over seeds 0, 1, 2 (50 images per class each); the base I-ERG is
//! the checkpoint's own mean-rank selection when its card holds one (`sweep`, on other seeds), and
//! CFG runs at the base's guidance scale w.
use std::path::Path;

use erg::attention::Energy;
use erg::eval::report::{evaluate_variants, markdown_table, plot_metric_curves};
use erg::eval::seeds::{evaluate_over_seeds, markdown_table_over_seeds, table_with_separations};
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
/// The base I-ERG of the ablations: the checkpoint's own selection (its card, made by `sweep` on
/// seeds apart from the tables'), else the preset at w = 3 with τ = 0.5 (the first shipped
/// model's selection).
fn base_ierg(bench: &Bench, depth: usize) -> anyhow::Result<Guidance> {
    let selected = bench.card.selection.as_ref().map(erg::guidance::from_selection).transpose()?.and_then(|mut s| s.remove("ierg"));
    match selected {
        Some(g) => Ok(g),
        None => Ok(preset("ierg", 3.0, depth)?.with_tau(0.5)?),
    }
}

/// The base's temperature τ (the first rectified term's).
fn tau_of(g: &Guidance) -> f64 {
    g.terms
        .iter()
        .find_map(|t| match t.negative.attention.rectifier {
            erg::attention::Rectifier::Energy(e) => Some(e.tau),
            _ => None,
        })
        .unwrap_or(1.0)
}

/// The base I-ERG (its blocks, κ and w) with the energy update (τ, α, γ, K).
fn ierg(base: &Guidance, energy: Energy) -> anyhow::Result<Guidance> {
    Ok(base.clone().with_energy(energy)?)
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
    let cfg = EvalConfig { samples_per_class: if quick { 2 } else { 50 }, num_steps: if quick { 6 } else { 25 }, ..Default::default() };
    let seeds: &[u64] = if quick { &[0, 1] } else { &[0, 1, 2] };
    let mut results = ResultsFile::open(out.join("results.jsonl"))?;
    let depth = bench.model.depth();
    let base = base_ierg(&bench, depth)?;
    let tau = tau_of(&base);
    eprintln!("base I-ERG: {}", base.describe());
    // CFG at the base's guidance scale, so that only the rectified negative differs.
    let cfg_at_base = preset("cfg", base.guidance_scale(), depth)?;
    let cfg_run = evaluate_variants(&bench, &[("CFG".into(), cfg_at_base.clone())], &cfg, &mut results, &device)?;
    // ANCHOR_END: setup

    // ANCHOR: kappa
    let kappas = [0.0, 0.2, 0.3, 0.4, 0.6, 0.8];
    let variants: Vec<_> = kappas.iter().map(|&k| Ok((format!("κ = {k}"), base.clone().with_kappa(k)?))).collect::<anyhow::Result<_>>()?;
    let rows = evaluate_variants(&bench, &variants, &cfg, &mut results, &device)?;
    println!("{}", markdown_table("kickoff", &rows));
    plot_metric_curves(&out.join("kappa"), "κ", &kappas, &rows, Some(&cfg_run[0].1))?;
    // ANCHOR_END: kappa

    // ANCHOR: table4
    // Multi-step descent on the energy: (K, γ) as in Table 4, the base's τ and κ, α = 1.
    let steps = [(1, 1.0), (1, 1.5), (1, 0.5), (10, 0.1)];
    let variants: Vec<_> = steps
        .iter()
        .map(|&(k, gamma)| Ok((format!("K = {k}, γ = {gamma}"), ierg(&base, Energy { tau, alpha: 1.0, gamma, steps: k })?)))
        .collect::<anyhow::Result<_>>()?;
    let stats = evaluate_over_seeds(&bench, &variants, &cfg, seeds, &mut results, &device)?;
    let t4 = markdown_table_over_seeds("energy descent", &stats);
    println!("{t4}");
    std::fs::write(out.join("table4.md"), &t4)?;
    // ANCHOR_END: table4

    // ANCHOR: table5
    // Components added one by one (C-ERG needs a text encoder: the text-to-image chapter).
    let variants = vec![
        ("CFG".to_string(), cfg_at_base),
        (format!("+ denoiser entropy τ_i = {tau}"), ierg(&base, Energy::temperature(tau))?),
        ("+ energy re-weighting α = 0.9".to_string(), ierg(&base, Energy { tau, alpha: 0.9, gamma: 1.0, steps: 1 })?),
    ];
    let stats = evaluate_over_seeds(&bench, &variants, &cfg, seeds, &mut results, &device)?;
    let t5 = table_with_separations("components", &stats, "CFG");
    println!("{t5}");
    std::fs::write(out.join("table5.md"), &t5)?;
    // ANCHOR_END: table5
    eprintln!("→ {}", out.display());
    Ok(())
}
