//! Chapter 3 of the book: the guidance zoo — every method of the paper's comparisons at the same
//! seeds on the shipped emoji DiT, with its NFE per step.
//!
//! ```text
//! cargo run --release --example ch03_guidance          # → results/ch03/zoo.png, results/ch03/nfe.md
//! cargo run --release --example ch03_guidance -- --quick   # CI-sized (6 steps)
//! ```
use std::path::Path;

use erg::guidance::{preset, Models};
use erg::imaging::{grid, labelled_comparison, save_png, to_rgb8, Panel};
use erg::models::Denoiser;
use erg::sample::{class_grid_labels, sample, SampleConfig};

/// Chapter 3 of the book: the guidance zoo — every method of the paper's comparisons at the
/// same seeds on the shipped emoji DiT, with its NFE per step.
#[derive(clap::Parser, Debug)]
struct Args {
    /// A CI-sized run: fewer samples, seeds and steps (a minute or less).
    #[arg(long)]
    quick: bool,
}

fn main() -> anyhow::Result<()> {
    <Args as clap::Parser>::parse(); // --help, and unknown flags are errors
                                     // ANCHOR: setup
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("ERG_QUICK").is_some(); // CI-sized run
    let out = Path::new("results/ch03");
    std::fs::create_dir_all(out)?;
    let device = erg::device::best();
    let (model, card) = erg::models::dit::load(Path::new(erg::checkpoint::SHIPPED_EMOJI_DIT), &device)?;
    let (weak, _) = erg::models::dit::load(Path::new(erg::checkpoint::SHIPPED_EMOJI_WEAK), &device)?;
    // One sample of each of the 9 classes, the same noise for every method; 25 Euler steps.
    let labels = class_grid_labels(card.classes.len(), 1, &device)?;
    let cfg = SampleConfig { num_steps: if quick { 6 } else { 25 }, seed: 3, batch_size: 64 };
    let names = ["none", "cfg", "apg", "cads", "pag", "sag", "seg", "slg", "autoguidance", "ierg", "erg+apg", "erg+cads"];
    // ANCHOR_END: setup

    // ANCHOR: zoo
    let mut panels = Vec::new();
    let mut table = String::from("| method | NFE / step | s / step |\n|---|---|---|\n");
    for name in names {
        let g = preset(name, 3.0, model.depth())?;
        let t0 = std::time::Instant::now();
        let s = sample(Models { main: &model, weak: Some(&weak) }, &g, &labels, &cfg, 0, &device, |_, _| {})?;
        let per_step = t0.elapsed().as_secs_f64() / cfg.num_steps as f64;
        table.push_str(&format!("| {name} | {:.2} | {per_step:.3} |\n", s.nfe_per_step));
        panels.push(Panel { title: format!("{name} ·{:.0}", s.nfe_per_step), image: grid(&to_rgb8(&s.images)?, 1, 2, 3) });
    }
    // Titles: method · NFE per step; rows: classes.
    let zoo = labelled_comparison(&panels, &card.classes, 100, 0, panels.len())?;
    save_png(&zoo, &out.join("zoo.png"))?;
    std::fs::write(out.join("nfe.md"), &table)?;
    println!("{table}");
    // ANCHOR_END: zoo
    Ok(())
}
