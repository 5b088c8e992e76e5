//! Chapter 8 of the book, text part: the C-ERG temperature τ_c of the text encoder (ERG Fig. 4)
//! swept on the shipped text-to-image emoji MMDiT, at two guidance scales, with CFG (the same w)
//! as the reference; C-ERG alone (no I-ERG), τ_c in every text-encoder layer.
//!
//! ```text
//! cargo run --release --example ch08_tau_c        # → results/ch08/tau_c_w{2,3}.{png,svg}, tau_c.md
//! ```
use std::path::Path;

use erg::eval::report::{markdown_table, plot_metric_curves};
use erg::eval::{EvalConfig, ResultsFile, TextBench};
use erg::guidance::{preset_for, Guidance};
use erg::models::mmdit::t2i::SHIPPED_EMOJI_MMDIT;
use erg::models::Denoiser;

/// Chapter 8 of the book, text part: the C-ERG temperature τ_c of the text encoder (ERG Fig.
/// 4) swept on the shipped text-to-image emoji MMDiT, at two guidance scales, with CFG (the same
/// w) as the reference; C-ERG alone (no I-ERG), τ_c in every text-encoder layer.
#[derive(clap::Parser, Debug)]
struct Args {
    /// A CI-sized run: fewer samples, seeds and steps (a minute or less).
    #[arg(long)]
    quick: bool,
}

// ANCHOR: helpers
/// C-ERG at guidance scale w with temperature τ_c, for a model of `depth` blocks whose text
/// encoder has `layers` layers.
fn cerg(w: f64, tau_c: f64, depth: usize, layers: Option<usize>) -> anyhow::Result<Guidance> {
    Ok(preset_for("cerg", w, depth, layers)?.with_tau_c(tau_c)?)
}
// ANCHOR_END: helpers

fn main() -> anyhow::Result<()> {
    <Args as clap::Parser>::parse(); // --help, and unknown flags are errors
                                     // ANCHOR: setup
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("ERG_QUICK").is_some(); // CI-sized run
    let out = Path::new("results/ch08");
    std::fs::create_dir_all(out)?;
    let device = erg::device::best();
    let weak = Path::new(erg::models::mmdit::t2i::SHIPPED_EMOJI_MMDIT_WEAK);
    let classifier = Path::new(erg::checkpoint::SHIPPED_EMOJI_CLASSIFIER);
    // 2 emoji names per category × 4 seeds = 72 images per setting, 25 Euler steps.
    let bench = TextBench::load(Path::new(SHIPPED_EMOJI_MMDIT), &weak, classifier, if quick { 1 } else { 2 }, if quick { 2 } else { 4 }, &device)?;
    let cfg = EvalConfig { num_steps: if quick { 8 } else { 25 }, batch_size: 96, ..Default::default() };
    let mut results = ResultsFile::open(out.join("results_t2i.jsonl"))?;
    let (depth, layers) = (bench.model.depth(), bench.model.text_layers());
    // ANCHOR_END: setup

    // ANCHOR: sweep
    let taus = [0.01, 0.1, 0.3, 3.0, 10.0];
    let mut md = String::new();
    for w in [2.0, 3.0] {
        let reference = bench.evaluate_variants(&[(format!("CFG w = {w}"), preset_for("cfg", w, depth, layers)?)], &cfg, &mut results, &device)?;
        let variants: Vec<(String, Guidance)> =
            taus.iter().map(|&t| Ok((format!("w = {w}, τ_c = {t}"), cerg(w, t, depth, layers)?))).collect::<anyhow::Result<_>>()?;
        let rows = bench.evaluate_variants(&variants, &cfg, &mut results, &device)?;
        let table = markdown_table("C-ERG", &[reference.clone(), rows.clone()].concat());
        println!("{table}");
        md.push_str(&format!("## w = {w}\n\n{table}\n"));
        let xs: Vec<f64> = taus.iter().map(|t: &f64| t.log10()).collect();
        plot_metric_curves(&out.join(format!("tau_c_w{w}")), "log10 τ_c (τ_c = 1: no guidance; CFG dashed)", &xs, &rows, Some(&reference[0].1))?;
    }
    std::fs::write(out.join("tau_c.md"), md)?;
    // ANCHOR_END: sweep
    eprintln!("→ {}", out.join("tau_c_w{2,3}.{png,svg}").display());
    Ok(())
}
