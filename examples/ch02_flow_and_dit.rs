//! Chapter 2 of the book: the data, rectified-flow training of the small DiT, and its samples
//! without guidance.
//!
//! ```text
//! cargo run --release --example ch02_flow_and_dit      # → results/ch02/{data,loss,samples}.png (≈ 1 min)
//! cargo run --release --example ch02_flow_and_dit -- --quick   # CI-sized (6 training steps, 10 sampling steps)
//! ```
use std::path::Path;

use erg::guidance::{Guidance, Models};
use erg::imaging::{grid, save_png, to_rgb8};
use erg::models::dit::DitConfig;
use erg::sample::{class_grid_labels, sample, SampleConfig};
use erg::train::{train, RunPaths, TrainConfig};
use plotters::prelude::*;

/// Chapter 2 of the book: the data, rectified-flow training of the small DiT, and its samples
/// without guidance.
#[derive(clap::Parser, Debug)]
struct Args {
    /// A CI-sized run: fewer samples, seeds and steps (a minute or less).
    #[arg(long)]
    quick: bool,
}

fn main() -> anyhow::Result<()> {
    <Args as clap::Parser>::parse(); // --help, and unknown flags are errors
                                     // ANCHOR: data
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("ERG_QUICK").is_some(); // CI-sized run
    let out = Path::new("results/ch02");
    std::fs::create_dir_all(out)?;
    erg::imaging::register_font();
    let device = erg::device::best();
    // 3,812 emoji at 32×32 in [−1, 1], 9 Unicode categories (the classes).
    let data = erg::data::emoji::load(erg::data::emoji::DEFAULT_DIR, 32)?;
    let (images, _) = data.per_class(8)?; // 8 of each class, class by class
    save_png(&grid(&to_rgb8(&images)?, 8, 2, 2), &out.join("data.png"))?;
    println!("{} images, classes: {:?}", data.len(), data.classes);
    // ANCHOR_END: data

    // ANCHOR: train
    // A short run of the shipped recipe (emoji-tiny, batch 64, AdamW, EMA, label dropout, logit-normal
    // t) to watch the rectified-flow loss ‖v_θ(x_t, t, c) − (x₁ − ε)‖² fall; the shipped model is
    // the same recipe run for 4,000 steps.
    let mut cfg = TrainConfig::new(DitConfig::emoji_tiny(), "emoji", if quick { 6 } else { 60 }, 0);
    cfg.checkpoint_every = 1_000; // no checkpoint in 60 steps but the final one
    let paths = RunPaths::new(out.join("run"));
    let _ = std::fs::remove_dir_all(out.join("run")); // start fresh each time
    let report = train(&cfg, &data, &device, &paths, erg::train::RunOptions::new())?;
    println!("{} steps: loss {:.3} → {:.3}, {:.2} s/step", cfg.steps, report.first_loss, report.final_loss, report.s_per_step);
    let losses: Vec<(f64, f64)> = std::fs::read_to_string(paths.loss())?
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect();
    erg::png_and_svg!(out.join("loss"), (560, 360), |root| {
        root.fill(&WHITE)?;
        let ymax = losses.iter().map(|p| p.1).fold(0.0, f64::max) * 1.05;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("rectified-flow loss, first {} steps", cfg.steps), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..losses.len() as f64 + 1.0, 0.0..ymax)?;
        chart.configure_mesh().x_desc("step").y_desc("loss").draw()?;
        chart.draw_series(LineSeries::new(losses.clone(), BLUE.stroke_width(2)))?;
        root.present()?;
    });
    // ANCHOR_END: train

    // ANCHOR: samples
    // The shipped model (EMA after 4,000 steps), no guidance: 4 seeds of each class, 50 Euler steps.
    let (model, card) = erg::models::dit::load(Path::new(erg::checkpoint::SHIPPED_EMOJI_DIT), &device)?;
    let labels = class_grid_labels(card.classes.len(), 4, &device)?;
    let s = sample(
        Models::main(&model),
        &Guidance::none(),
        &labels,
        &SampleConfig { num_steps: if quick { 10 } else { 50 }, seed: 0, batch_size: 64 },
        0,
        &device,
        |_, _| {},
    )?;
    save_png(&grid(&to_rgb8(&s.images)?, 4, 2, 2), &out.join("samples.png"))?;
    // ANCHOR_END: samples
    println!("→ {}", out.display());
    Ok(())
}
